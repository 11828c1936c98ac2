/* test_reader.c — the interaction-file readers and the byte-range sharding rules
 * (include/mpirec/reader.h).
 *
 * Three kinds of oracle:
 *  - exact values: hand-written inputs with the fields, kinds, offsets, lines and
 *    bad-record reasons they must give, and known facts about the real files in
 *    $MPIREC_DATA (record counts, first records, a Latin-1 id, doubled quotes);
 *  - generated files whose intended fields are known (the generator writes the
 *    truth next to the bytes): the serial parse must give back exactly the truth;
 *  - parallel = serial: ranks are simulated in one process with the pure sharding
 *    functions, exactly as data/ingest.c drives them (counts, exclusive scans,
 *    first record start, windows that double when a record does not fit), and the
 *    concatenated records must equal the serial parse, for P = 1..8 on every real
 *    file and for every boundary position (2 and 3 ranks) on small adversarial
 *    files, good and bad.
 */
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpirec/config.h"
#include "mpirec/hash.h"
#include "mpirec/reader.h"
#include "test_util.h"

/* ===========================================================================
 * Helpers: collected records, specs, serial and sharded parses
 * ========================================================================= */

typedef struct TRec {
    int64_t offset, line;
    int bad_col;
    int64_t reason; /* offset of the reason text in bytes, -1 for a good record */
    MrValKind kind[MR_NCOLS];
    size_t off[MR_NCOLS], len[MR_NCOLS];
} TRec;

typedef struct TList {
    TRec *v;
    size_t n, cap;
    char *bytes;
    size_t nb, cb;
    int64_t nbad;
    int64_t stop_at; /* the callback returns 7 on this record (0-based); -1 never */
} TList;

static void tl_init(TList *l)
{
    memset(l, 0, sizeof *l);
    l->stop_at = -1;
}

static void tl_free(TList *l)
{
    free(l->v);
    free(l->bytes);
    tl_init(l);
}

static size_t tl_push(TList *l, const void *p, size_t n)
{
    if (l->nb + n + 1 > l->cb) {
        size_t cb = l->cb ? l->cb : 4096;
        while (l->nb + n + 1 > cb)
            cb *= 2;
        char *b = realloc(l->bytes, cb);
        if (!b)
            abort();
        l->bytes = b;
        l->cb = cb;
    }
    size_t at = l->nb;
    if (n)
        memcpy(l->bytes + at, p, n);
    l->nb += n;
    l->bytes[l->nb] = '\0';
    return at;
}

static int collect(const MrRecord *rec, void *ud)
{
    TList *l = ud;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v)
            abort();
    }
    TRec *t = &l->v[l->n];
    t->offset = rec->offset;
    t->line = rec->line;
    t->bad_col = rec->bad_col;
    t->reason = -1;
    if (rec->bad_reason) {
        t->reason = (int64_t)tl_push(l, rec->bad_reason, strlen(rec->bad_reason) + 1);
        l->nbad++;
    } else {
        CU_ASSERT_EQUAL(rec->bad_col, -1);
    }
    for (int c = 0; c < MR_NCOLS; c++) {
        t->kind[c] = rec->f[c].kind;
        t->len[c] = rec->f[c].len;
        t->off[c] = 0;
        if (rec->f[c].kind != MR_VAL_ABSENT) {
            CU_ASSERT(rec->f[c].p != NULL || rec->f[c].len == 0);
            t->off[c] = tl_push(l, rec->f[c].p, rec->f[c].len);
        }
    }
    return (int64_t)l->n++ == l->stop_at ? 7 : 0;
}

static const char *tl_reason(const TList *l, size_t i)
{
    return l->v[i].reason < 0 ? NULL : l->bytes + l->v[i].reason;
}

/* Field c of record i equals the n bytes s with kind k. */
static int tl_is(const TList *l, size_t i, int c, const char *s, size_t n, MrValKind k)
{
    if (i >= l->n)
        return 0;
    const TRec *t = &l->v[i];
    return t->kind[c] == k && t->len[c] == n && memcmp(l->bytes + t->off[c], s, n) == 0;
}
#define FIELD_IS(l, i, c, lit)      tl_is(l, i, c, lit, sizeof lit - 1, MR_VAL_TEXT)
#define FIELD_KIND(l, i, c, lit, k) tl_is(l, i, c, lit, sizeof lit - 1, k)

/* Same records, byte for byte; prints the first difference. */
static int tl_equal(const TList *a, const TList *b, const char *what)
{
    if (a->n != b->n) {
        fprintf(stderr, "\n%s: %zu records vs %zu\n", what, a->n, b->n);
        return 0;
    }
    for (size_t i = 0; i < a->n; i++) {
        const TRec *x = &a->v[i], *y = &b->v[i];
        int same = x->offset == y->offset && x->line == y->line && x->bad_col == y->bad_col &&
                   (x->reason < 0) == (y->reason < 0) &&
                   (x->reason < 0 || strcmp(tl_reason(a, i), tl_reason(b, i)) == 0);
        for (int c = 0; c < MR_NCOLS && same; c++)
            same = x->kind[c] == y->kind[c] && x->len[c] == y->len[c] &&
                   memcmp(a->bytes + x->off[c], b->bytes + y->off[c], x->len[c]) == 0;
        if (!same) {
            fprintf(stderr, "\n%s: record %zu differs: offset %lld/%lld line %lld/%lld\n", what, i,
                    (long long)x->offset, (long long)y->offset, (long long)x->line,
                    (long long)y->line);
            return 0;
        }
    }
    return 1;
}

static MrReaderSpec mkspec(MrFormat f, const char *sep, char quote, int header)
{
    MrReaderSpec s;
    memset(&s, 0, sizeof s);
    s.format = f;
    snprintf(s.sep, sizeof s.sep, "%s", sep);
    s.sep_len = strlen(s.sep);
    s.quote = quote;
    s.header = header;
    for (int c = 0; c < MR_NCOLS; c++)
        s.cols[c].index = -1;
    return s;
}

static void col_name(MrReaderSpec *s, int c, const char *name)
{
    snprintf(s->cols[c].name, sizeof s->cols[c].name, "%s", name);
    s->cols[c].index = -1;
}

static void col_index(MrReaderSpec *s, int c, int idx)
{
    s->cols[c].name[0] = '\0';
    s->cols[c].index = idx;
}

static int64_t count_nl(const char *p, size_t n)
{
    int64_t q, nl;
    mr_shard_count(p, n, 0, &q, &nl);
    return nl;
}

/* The serial reference: header, then one parse call over all the data. Returns
 * the header's code (e holds its message). */
static int parse_serial(const MrReaderSpec *spec, const char *buf, size_t len, TList *out, MrErr *e)
{
    MrReader *r = NULL;
    int rc = mr_reader_create(&r, spec, e);
    if (rc)
        return rc;
    int64_t ds = -1;
    int more = -1;
    rc = mr_reader_header(r, "test-input", buf, len, 1, &ds, &more, e);
    if (rc == MR_OK) {
        CU_ASSERT_EQUAL(more, 0);
        size_t consumed = 0;
        int64_t next_line = 0;
        int done = 0;
        int prc = mr_reader_parse(r, buf + ds, len - (size_t)ds, ds, 1 + count_nl(buf, (size_t)ds),
                                  INT64_MAX, 1, collect, out, &consumed, &next_line, &done);
        if (out->stop_at < 0) {
            CU_ASSERT_EQUAL(prc, 0);
            CU_ASSERT_EQUAL(done, 1);
            CU_ASSERT_EQUAL(consumed, len - (size_t)ds);
            CU_ASSERT_EQUAL(next_line, 1 + count_nl(buf, len));
        }
    }
    mr_reader_destroy(&r);
    CU_ASSERT_PTR_NULL(r);
    return rc;
}

/* Simulate P ranks with byte ranges [b[r], b[r+1]) the way data/ingest.c drives
 * the reader: every rank parses the header from offset 0 (fed a growing prefix),
 * counts quotes and newlines in its range, learns from the exclusive scans of
 * those counts whether it starts inside quotes and on which line, finds its first
 * record start, then parses records whose first byte is in its range from windows
 * of `chunk` bytes that double whenever a record does not fit. Returns the header
 * code (MR_OK, or the error every rank got). */
static int parse_bounds(const MrReaderSpec *spec, const char *buf, size_t len, const int64_t *b,
                        int P, size_t chunk, TList *out)
{
    int64_t *q = calloc((size_t)P, sizeof *q), *nl = calloc((size_t)P, sizeof *nl);
    for (int r = 0; r < P; r++)
        mr_shard_count(buf + b[r], (size_t)(b[r + 1] - b[r]), spec->quote, &q[r], &nl[r]);
    int64_t q_before = 0, nl_before = 0, rc = MR_OK;
    for (int r = 0; r < P && rc == MR_OK; r++) {
        MrReader *rd = NULL;
        MrErr e;
        CU_ASSERT_EQUAL_FATAL(mr_reader_create(&rd, spec, &e), MR_OK);
        int64_t ds = 0;
        int more = 1;
        for (size_t w = 8; more; w *= 2) {
            size_t avail = w < len ? w : len;
            rc = mr_reader_header(rd, "test-input", buf, avail, avail == len, &ds, &more, &e);
            if (rc)
                break;
        }
        if (rc) {
            mr_reader_destroy(&rd);
            break;
        }
        const int64_t lo = b[r], hi = b[r + 1];
        /* A range that starts at or before data_start (rank 0, an empty range, one
         * inside the BOM or the header) begins at data_start: no record starts
         * earlier. */
        int64_t start = ds;
        if (lo > ds) {
            int64_t k = -1;
            for (size_t w = 16;; w *= 2) {
                size_t avail = w < len - (size_t)lo ? w : len - (size_t)lo;
                k = mr_shard_first_record(buf + lo, avail, spec->quote, (int)(q_before & 1),
                                          buf[lo - 1] == '\n');
                if (k >= 0 || avail == len - (size_t)lo)
                    break;
            }
            start = k < 0 ? (int64_t)len : lo + k;
        }
        int64_t line = 1 + nl_before + count_nl(buf + lo, (size_t)(start - lo));
        size_t pos = (size_t)start, w = chunk;
        for (int guard = 0;; guard++) {
            size_t avail = len - pos < w ? len - pos : w;
            int eof = pos + avail == len, done = 0;
            size_t consumed = 0;
            int64_t next_line = 0;
            int prc = mr_reader_parse(rd, buf + pos, avail, (int64_t)pos, line, hi, eof, collect,
                                      out, &consumed, &next_line, &done);
            CU_ASSERT_EQUAL(prc, 0);
            pos += consumed;
            line = next_line;
            if (done || prc)
                break;
            if (consumed == 0) {
                if (eof || guard > 10000) {
                    CU_FAIL("parse made no progress");
                    break;
                }
                w *= 2;
            }
        }
        mr_reader_destroy(&rd);
        q_before += q[r];
        nl_before += nl[r];
    }
    free(q);
    free(nl);
    return (int)rc;
}

static int parse_sharded(const MrReaderSpec *spec, const char *buf, size_t len, int P, size_t chunk,
                         TList *out)
{
    int64_t b[65];
    for (int r = 0; r < P; r++)
        mr_shard_range((int64_t)len, r, P, &b[r], &b[r + 1]);
    return parse_bounds(spec, buf, len, b, P, chunk, out);
}

/* Parallel = serial for P = 1..8 and, when the input is small, for every split
 * point with 2 ranks and every pair of split points with 3 ranks. */
static void check_all_splits(const MrReaderSpec *spec, const char *buf, size_t len,
                             const char *what)
{
    TList ser, par;
    tl_init(&ser);
    MrErr e;
    int hrc = parse_serial(spec, buf, len, &ser, &e);
    char label[256];
    int all_ok = 1;
    for (int P = 1; P <= 8; P++) {
        tl_init(&par);
        int rc = parse_sharded(spec, buf, len, P, (size_t)1 << (P % 4 * 3), &par);
        snprintf(label, sizeof label, "%s P=%d", what, P);
        CU_ASSERT_EQUAL(rc, hrc);
        int ok = rc == hrc && tl_equal(&ser, &par, label);
        CU_ASSERT(ok);
        all_ok &= ok;
        tl_free(&par);
    }
    if (len <= 400) {
        for (size_t s1 = 0; s1 <= len; s1++) {
            int64_t b[3] = {0, (int64_t)s1, (int64_t)len};
            tl_init(&par);
            parse_bounds(spec, buf, len, b, 2, 4, &par);
            snprintf(label, sizeof label, "%s split at %zu", what, s1);
            int ok = tl_equal(&ser, &par, label);
            CU_ASSERT(ok);
            all_ok &= ok;
            tl_free(&par);
            if (!ok)
                break;
        }
    }
    if (len <= 160) {
        int ok = 1;
        for (size_t s1 = 0; s1 <= len && ok; s1++)
            for (size_t s2 = s1; s2 <= len && ok; s2++) {
                int64_t b[4] = {0, (int64_t)s1, (int64_t)s2, (int64_t)len};
                tl_init(&par);
                parse_bounds(spec, buf, len, b, 3, 1, &par);
                snprintf(label, sizeof label, "%s split at %zu,%zu", what, s1, s2);
                ok = tl_equal(&ser, &par, label);
                CU_ASSERT(ok);
                all_ok &= ok;
                tl_free(&par);
            }
    }
    if (!all_ok)
        test_dump_bytes(what, buf, len);
    tl_free(&ser);
}

static char *load_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Parse a literal string serially (header code must be OK). */
static void parse_str(const MrReaderSpec *spec, const char *s, TList *out)
{
    MrErr e;
    int rc = parse_serial(spec, s, strlen(s), out, &e);
    CU_ASSERT_EQUAL(rc, MR_OK);
    if (rc)
        fprintf(stderr, "\nunexpected header error: %s\n", e.msg);
}

static MrReaderSpec csv4(int header)
{
    MrReaderSpec s = mkspec(MR_FMT_CSV, ",", '"', header);
    if (header) {
        col_name(&s, MR_COL_USER, "user");
        col_name(&s, MR_COL_ITEM, "item");
        col_name(&s, MR_COL_RATING, "rating");
        col_name(&s, MR_COL_TIME, "ts");
    } else {
        for (int c = 0; c < 3; c++)
            col_index(&s, c, c);
        col_index(&s, MR_COL_TIME, 3);
    }
    return s;
}

/* ===========================================================================
 * CSV and delimited: exact values
 * ========================================================================= */

/* RFC 4180 basics: header by name, quoted separators, doubled quotes, a quoted
 * newline (one record, two physical lines), CRLF, empty fields, columns in any
 * order, a missing final newline; offsets and line numbers exact. */
static void test_csv_rfc4180(void)
{
    const char *in = "ts,rating,item,user\r\n"
                     "100,5.0,\"i,1\",u1\r\n"
                     "200,,\"say \"\"hi\"\"\",\"u\n2\"\r\n"
                     "300,1,i3,\r\n"
                     "400,\"\",\"\",u4";
    MrReaderSpec s = csv4(1);
    TList l;
    tl_init(&l);
    parse_str(&s, in, &l);
    CU_ASSERT_EQUAL_FATAL(l.n, 4);
    CU_ASSERT_EQUAL(l.nbad, 0);
    CU_ASSERT_EQUAL(l.v[0].offset, 21);
    CU_ASSERT_EQUAL(l.v[0].line, 2);
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_USER, "u1"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_ITEM, "i,1"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_RATING, "5.0"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_TIME, "100"));
    CU_ASSERT_EQUAL(l.v[0].kind[MR_COL_TEXT], MR_VAL_ABSENT);
    CU_ASSERT_EQUAL(l.v[1].line, 3);
    CU_ASSERT(FIELD_IS(&l, 1, MR_COL_ITEM, "say \"hi\""));
    CU_ASSERT(FIELD_IS(&l, 1, MR_COL_USER, "u\n2"));
    CU_ASSERT(FIELD_IS(&l, 1, MR_COL_RATING, ""));
    CU_ASSERT_EQUAL(l.v[2].line, 5); /* the quoted newline took a line */
    CU_ASSERT(FIELD_IS(&l, 2, MR_COL_USER, ""));
    CU_ASSERT_EQUAL(l.v[3].line, 6);
    CU_ASSERT(FIELD_IS(&l, 3, MR_COL_USER, "u4"));
    CU_ASSERT(FIELD_IS(&l, 3, MR_COL_ITEM, ""));
    CU_ASSERT(FIELD_IS(&l, 3, MR_COL_RATING, ""));
    tl_free(&l);
}

/* Blank lines ("" and "\r") are skipped and not numbered as records; a BOM before
 * the header is skipped; a quoted header name with a doubled quote resolves. */
static void test_csv_blank_lines_bom(void)
{
    const char *in = "\xEF\xBB\xBF\n\"us\"\"er\",item\n\n\r\nu1,i1\n\r\n\nu2,i2\n\n";
    MrReaderSpec s = mkspec(MR_FMT_CSV, ",", '"', 1);
    col_name(&s, MR_COL_USER, "us\"er");
    col_name(&s, MR_COL_ITEM, "item");
    TList l;
    tl_init(&l);
    parse_str(&s, in, &l);
    CU_ASSERT_EQUAL_FATAL(l.n, 2);
    CU_ASSERT_EQUAL(l.v[0].line, 5);
    CU_ASSERT_EQUAL(l.v[0].offset, 21);
    CU_ASSERT_EQUAL(l.v[1].line, 8);
    CU_ASSERT(FIELD_IS(&l, 1, MR_COL_USER, "u2"));
    CU_ASSERT(FIELD_IS(&l, 1, MR_COL_ITEM, "i2"));
    tl_free(&l);
}

/* Delimited text: a multi-byte separator with lone ':' inside fields and a run of
 * three ':' (leftmost match, like str.split), tab without quoting where quotes are
 * plain bytes, Latin-1 bytes passed through, columns by index, extra fields. */
static void test_delimited(void)
{
    MrReaderSpec s = mkspec(MR_FMT_DELIMITED, "::", 0, 0);
    col_index(&s, MR_COL_USER, 0);
    col_index(&s, MR_COL_ITEM, 1);
    col_index(&s, MR_COL_RATING, 2);
    TList l;
    tl_init(&l);
    parse_str(&s, "1::a:b::5::978300760\n2:::x::3\n\xE9t\xE9::\"q::4\n", &l);
    CU_ASSERT_EQUAL_FATAL(l.n, 3);
    CU_ASSERT_EQUAL(l.nbad, 0);
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_ITEM, "a:b"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_RATING, "5"));
    CU_ASSERT(FIELD_IS(&l, 1, MR_COL_USER, "2"));
    CU_ASSERT(FIELD_IS(&l, 1, MR_COL_ITEM, ":x"));
    CU_ASSERT(FIELD_IS(&l, 2, MR_COL_USER, "\xE9t\xE9"));
    CU_ASSERT(FIELD_IS(&l, 2, MR_COL_ITEM, "\"q"));
    tl_free(&l);

    s = mkspec(MR_FMT_DELIMITED, "\t", 0, 0);
    col_index(&s, MR_COL_USER, 2);
    col_index(&s, MR_COL_ITEM, 0);
    tl_init(&l);
    parse_str(&s, "a\t\"b\tc\"\td\r\n", &l);
    CU_ASSERT_EQUAL_FATAL(l.n, 1);
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_ITEM, "a"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_USER, "c\""));
    tl_free(&l);

    /* Same field for two columns; a header file with a column given by index. */
    s = mkspec(MR_FMT_CSV, ";", '"', 1);
    col_index(&s, MR_COL_USER, 1);
    col_name(&s, MR_COL_ITEM, "b");
    col_name(&s, MR_COL_TEXT, "a");
    tl_init(&l);
    parse_str(&s, "a;b\n\"x;y\";z\n", &l);
    CU_ASSERT_EQUAL_FATAL(l.n, 1);
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_USER, "z"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_ITEM, "z"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_TEXT, "x;y"));
    tl_free(&l);
}

/* Bad CSV records: the reason text, the column, the line; the next record is
 * still read. Decisions: text after a closing quote and a quote inside an unquoted
 * field are errors; a quote never closed runs to the end of the file. */
static void test_csv_bad_records(void)
{
    MrReaderSpec s = csv4(0);
    TList l;
    tl_init(&l);
    parse_str(&s, "u1,i1,5,1\nu2,i2\nu3,\"i3\"x,4,3\nu4,i\"4,4,4\nu5,i5,5,5\n", &l);
    CU_ASSERT_EQUAL_FATAL(l.n, 4);
    CU_ASSERT_EQUAL(l.nbad, 3);
    CU_ASSERT_PTR_NULL(tl_reason(&l, 0));
    CU_ASSERT_STRING_EQUAL(tl_reason(&l, 1),
                           "expected at least 4 fields, found 2 (data.columns.timestamp is "
                           "field index 3)");
    CU_ASSERT_EQUAL(l.v[1].bad_col, MR_COL_TIME);
    CU_ASSERT_EQUAL(l.v[1].line, 2);
    CU_ASSERT(strstr(tl_reason(&l, 2), "text after the closing quote of field 2") != NULL);
    CU_ASSERT_EQUAL(l.v[2].bad_col, MR_COL_ITEM);
    CU_ASSERT(strstr(tl_reason(&l, 3), "quote character inside unquoted field 2") != NULL);
    CU_ASSERT_EQUAL(l.v[3].bad_col, MR_COL_ITEM);
    /* "i\"4" left an odd quote count, so by the parity rule the record runs on
     * over the line break to the next quote... there is none: it ends at EOF. */
    CU_ASSERT_EQUAL(l.v[3].line, 4);
    tl_free(&l);

    /* The same stray quote, closed again by a later one: one bad record spans the
     * two lines, the record after it is good. */
    tl_init(&l);
    parse_str(&s, "u4,i\"4,4,4\nu5,i5,5,5\"\nu6,i6,6,6\n", &l);
    CU_ASSERT_EQUAL_FATAL(l.n, 2);
    CU_ASSERT_NOT_EQUAL(l.v[0].reason, -1);
    CU_ASSERT_EQUAL(l.v[1].line, 3);
    CU_ASSERT(FIELD_IS(&l, 1, MR_COL_USER, "u6"));
    tl_free(&l);

    /* Unclosed quote at EOF: reported with its line, nothing after it. */
    tl_init(&l);
    parse_str(&s, "u1,i1,5,1\nu2,\"i2,5,1\nu3,i3,5,1\n", &l);
    CU_ASSERT_EQUAL_FATAL(l.n, 2);
    CU_ASSERT_STRING_EQUAL(tl_reason(&l, 1), "quote never closed: field 2 opens a quoted value "
                                             "that runs to the end of the file");
    CU_ASSERT_EQUAL(l.v[1].bad_col, MR_COL_ITEM);
    CU_ASSERT_EQUAL(l.v[1].line, 2);
    tl_free(&l);

    /* A problem in a field no column uses: bad_col -1. */
    s = mkspec(MR_FMT_CSV, ",", '"', 0);
    col_index(&s, MR_COL_USER, 0);
    tl_init(&l);
    parse_str(&s, "u1,\"x\"y\n", &l);
    CU_ASSERT_EQUAL_FATAL(l.n, 1);
    CU_ASSERT_EQUAL(l.v[0].bad_col, -1);
    CU_ASSERT(strstr(tl_reason(&l, 0), "field 2") != NULL);
    tl_free(&l);
}

/* ===========================================================================
 * JSON Lines: exact values
 * ========================================================================= */

static MrReaderSpec jspec(void)
{
    MrReaderSpec s = mkspec(MR_FMT_JSONL, "", 0, 0);
    col_name(&s, MR_COL_USER, "user");
    col_name(&s, MR_COL_ITEM, "item");
    col_name(&s, MR_COL_RATING, "rating");
    col_name(&s, MR_COL_TEXT, "text");
    col_name(&s, MR_COL_TIME, "ts");
    return s;
}

/* Value kinds, escapes (\uXXXX to UTF-8, surrogate pair combined, lone surrogate
 * to U+FFFD), nested values of every shape skipped, an escaped key, a duplicate
 * key (last wins), missing fields, CRLF, blank lines, no final newline. */
static void test_jsonl_values(void)
{
    const char *in =
        "{\"user\":\"a\\\"b\\\\c\\/d\\n\\u00e9\\ud83d\\ude00\\ud800x\",\"item\":12.5e3,"
        "\"rating\":null,\"text\":true,\"ts\":-0}\r\n"
        "\n"
        "  { \"skip\" : {\"a\":[1,{\"b\":\"}]\\\"\"},[],{}],\"c\":\"]\"} , \"us\\u0065r\" : \"u2\","
        "\"item\":\"first\",\"item\":\"second\",\"rating\":4, \"x\":[[[]]] }  \r\n"
        "\r\n"
        "{}\n"
        "{\"user\":\"\\u0041\\u00DF\",\"rating\":false,\"text\":\"\"}";
    MrReaderSpec s = jspec();
    TList l;
    tl_init(&l);
    parse_str(&s, in, &l);
    CU_ASSERT_EQUAL_FATAL(l.n, 4);
    CU_ASSERT_EQUAL(l.nbad, 0);
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_USER, "a\"b\\c/d\n\xC3\xA9\xF0\x9F\x98\x80\xEF\xBF\xBDx"));
    CU_ASSERT(FIELD_KIND(&l, 0, MR_COL_ITEM, "12.5e3", MR_VAL_NUMBER));
    CU_ASSERT_EQUAL(l.v[0].kind[MR_COL_RATING], MR_VAL_NULL);
    CU_ASSERT(FIELD_KIND(&l, 0, MR_COL_TEXT, "true", MR_VAL_BOOL));
    CU_ASSERT(FIELD_KIND(&l, 0, MR_COL_TIME, "-0", MR_VAL_NUMBER));
    CU_ASSERT_EQUAL(l.v[1].line, 3);
    CU_ASSERT(FIELD_IS(&l, 1, MR_COL_USER, "u2"));
    CU_ASSERT(FIELD_IS(&l, 1, MR_COL_ITEM, "second"));
    CU_ASSERT(FIELD_KIND(&l, 1, MR_COL_RATING, "4", MR_VAL_NUMBER));
    CU_ASSERT_EQUAL(l.v[1].kind[MR_COL_TEXT], MR_VAL_ABSENT);
    CU_ASSERT_EQUAL(l.v[2].line, 5);
    for (int c = 0; c < MR_NCOLS; c++)
        CU_ASSERT_EQUAL(l.v[2].kind[c], MR_VAL_ABSENT);
    CU_ASSERT_EQUAL(l.v[3].line, 6);
    CU_ASSERT(FIELD_IS(&l, 3, MR_COL_USER, "A\xC3\x9F"));
    CU_ASSERT(FIELD_KIND(&l, 3, MR_COL_RATING, "false", MR_VAL_BOOL));
    CU_ASSERT(FIELD_IS(&l, 3, MR_COL_TEXT, ""));
    tl_free(&l);
}

/* Bad JSON lines: each reason checked; the good line after each is still read. */
static void test_jsonl_bad_records(void)
{
    static const struct {
        const char *line;
        const char *reason; /* substring */
        int col;
    } cases[] = {
        {"[1,2]", "not a JSON object: the line holds an array", -1},
        {"\"user\"", "not a JSON object: the line holds a string", -1},
        {"42", "not a JSON object: the line holds a number", -1},
        {"   ", "not a JSON object: the line holds only blanks", -1},
        {"{\"user\" \"u\"}",
         "JSON syntax error at byte 9 of the line: expected ':' after a key, "
         "found '\"'",
         -1},
        {"{\"user\":\"u\",}", "JSON syntax error at byte 13 of the line: expected a string key",
         -1},
        {"{\"user\":\"u\"} x", "text after the JSON object at byte 14", -1},
        {"{\"user\":\"u\\q\"}", "expected an escape character", -1},
        {"{\"user\":01}", "expected ',' or '}', found '1'", -1},
        {"{\"user\":NaN}", "JSON syntax error at byte 9", -1},
        {"{\"user\":tru}", "expected a value", -1},
        {"{\"a\":[1,2}", "expected ',' or ']', found '}'", -1},
        {"{\"user\":\"u\",\"item\":{\"id\":1}}",
         "field 'item' (data.columns.item) is a JSON object; expected a string, number, boolean "
         "or null",
         MR_COL_ITEM},
        {"{\"user\":\"u\",\"text\":[\"a\"]}", "field 'text' (data.columns.text) is a JSON array",
         MR_COL_TEXT},
        {"{\"user\":\"u\",\"item\":\"i",
         "truncated JSON: unterminated string (the string that "
         "starts at byte 20 runs to the end of the line)",
         -1},
        {"{\"user\":\"u\",\"item\":",
         "truncated JSON: the line ends (after 19 bytes) where a "
         "value was expected",
         -1},
        {"{\"user\":\"u\"", "truncated JSON", -1},
        {"{\"user\":nul", "truncated JSON", -1},
        {"{\"a\":{\"b\":[1,", "truncated JSON", -1},
    };
    MrReaderSpec s = jspec();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char in[256];
        snprintf(in, sizeof in, "%s\n{\"user\":\"ok\"}\n", cases[i].line);
        TList l;
        tl_init(&l);
        parse_str(&s, in, &l);
        CU_ASSERT_EQUAL_FATAL(l.n, 2);
        const char *why = tl_reason(&l, 0);
        int ok = why && strstr(why, cases[i].reason) != NULL;
        if (!ok)
            fprintf(stderr, "\ncase %zu: got reason \"%s\"\n", i, why ? why : "(none)");
        CU_ASSERT(ok);
        CU_ASSERT_EQUAL(l.v[0].bad_col, cases[i].col);
        CU_ASSERT_PTR_NULL(tl_reason(&l, 1));
        CU_ASSERT(FIELD_IS(&l, 1, MR_COL_USER, "ok"));
        if (cases[i].col == MR_COL_ITEM)
            CU_ASSERT(FIELD_KIND(&l, 0, MR_COL_ITEM, "{\"id\":1}", MR_VAL_OTHER));
        tl_free(&l);
    }

    /* Nesting deeper than the scanner's stack: a reason, not a crash. */
    size_t n = 5000;
    char *deep = malloc(2 * n + 64);
    size_t o = (size_t)sprintf(deep, "{\"x\":");
    memset(deep + o, '[', n);
    o += n;
    memset(deep + o, ']', n);
    o += n;
    strcpy(deep + o, "}\n");
    TList l;
    tl_init(&l);
    parse_str(&s, deep, &l);
    CU_ASSERT_EQUAL(l.n, 1);
    CU_ASSERT(l.n == 1 && strstr(tl_reason(&l, 0), "nested deeper than 1024 levels") != NULL);
    tl_free(&l);
    free(deep);
}

/* ===========================================================================
 * Header errors and edge files
 * ========================================================================= */

/* A missing column names the file and lists the columns that exist (the real
 * amazon_reviews.csv header, whose first column is unnamed). */
static void test_header_missing_column(void)
{
    const char *path = test_data_path("amazon_reviews.csv");
    size_t len;
    char *buf = load_file(path, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    MrReaderSpec s = mkspec(MR_FMT_CSV, ",", '"', 1);
    col_name(&s, MR_COL_USER, "reviewerID");
    col_name(&s, MR_COL_ITEM, "asin");
    col_name(&s, MR_COL_RATING, "rating");
    MrReader *r = NULL;
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(mr_reader_create(&r, &s, &e), MR_OK);
    int64_t ds;
    int more;
    CU_ASSERT_EQUAL(mr_reader_header(r, path, buf, 4096, 0, &ds, &more, &e), MR_EDATA);
    char want[8192];
    snprintf(want, sizeof want,
             "column 'rating' (data.columns.rating) not found in header of %s; columns are: "
             ",asin,helpful,overall,reviewText,reviewTime,reviewerID,reviewerName,summary,"
             "unixReviewTime",
             path);
    CU_ASSERT_STRING_EQUAL(e.msg, want);
    /* Parsing before a successful header is refused, not guessed. */
    size_t consumed;
    int64_t nl;
    int done;
    TList l;
    tl_init(&l);
    CU_ASSERT_EQUAL(
        mr_reader_parse(r, buf, len, 0, 1, INT64_MAX, 1, collect, &l, &consumed, &nl, &done),
        MR_EINTERNAL);
    CU_ASSERT_EQUAL(l.n, 0);
    mr_reader_destroy(&r);

    /* An index past the header's width. */
    s = mkspec(MR_FMT_CSV, ",", '"', 1);
    col_index(&s, MR_COL_USER, 0);
    col_index(&s, MR_COL_ITEM, 2);
    CU_ASSERT_EQUAL_FATAL(mr_reader_create(&r, &s, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_reader_header(r, "f.csv", "a,b\n1,2\n", 8, 1, &ds, &more, &e), MR_EDATA);
    CU_ASSERT_STRING_EQUAL(e.msg,
                           "data.columns.item = 2, but the header of f.csv has 2 columns: a,b");
    mr_reader_destroy(&r);
    mr_reader_destroy(&r); /* NULL-safe */
    free(buf);
}

/* Empty file, blank-only file, header-only file, header without newline, need
 * for more bytes, a malformed header. */
static void test_header_edge_files(void)
{
    MrReaderSpec specs[3] = {csv4(1), csv4(0), jspec()};
    for (int k = 0; k < 3; k++) {
        MrReader *r = NULL;
        MrErr e;
        int64_t ds;
        int more;
        CU_ASSERT_EQUAL_FATAL(mr_reader_create(&r, &specs[k], &e), MR_OK);
        CU_ASSERT_EQUAL(mr_reader_header(r, "e.csv", "", 0, 1, &ds, &more, &e), MR_EDATA);
        CU_ASSERT_STRING_EQUAL(e.msg, "empty file: e.csv has no data (0 bytes)");
        CU_ASSERT_EQUAL(mr_reader_header(r, "e.csv", "\xEF\xBB\xBF", 3, 1, &ds, &more, &e),
                        MR_EDATA);
        CU_ASSERT(strstr(e.msg, "empty file") != NULL);
        CU_ASSERT_EQUAL(mr_reader_header(r, "b.csv", "\n\r\n\n", 4, 1, &ds, &more, &e), MR_EDATA);
        CU_ASSERT_STRING_EQUAL(e.msg, "empty file: b.csv holds only blank lines");
        /* Not at EOF: ask for more rather than guess. */
        CU_ASSERT_EQUAL(mr_reader_header(r, "b.csv", "\n\r\n\n", 4, 0, &ds, &more, &e), MR_OK);
        CU_ASSERT_EQUAL(more, 1);
        mr_reader_destroy(&r);
    }

    MrReaderSpec s = csv4(1);
    const char *hdr = "user,item,rating,\"ts\"\r\n";
    TList l;
    tl_init(&l);
    parse_str(&s, hdr, &l);
    CU_ASSERT_EQUAL(l.n, 0);
    parse_str(&s, "user,item,rating,ts", &l);
    CU_ASSERT_EQUAL(l.n, 0);

    MrReader *r = NULL;
    MrErr e;
    int64_t ds = -1;
    int more = -1;
    CU_ASSERT_EQUAL_FATAL(mr_reader_create(&r, &s, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_reader_header(r, "h.csv", hdr, strlen(hdr), 1, &ds, &more, &e), MR_OK);
    CU_ASSERT_EQUAL(more, 0);
    CU_ASSERT_EQUAL(ds, (int64_t)strlen(hdr));
    /* The header line is incomplete in every shorter prefix (not at EOF). */
    for (size_t n = 0; n < strlen(hdr); n++) {
        more = 0;
        CU_ASSERT_EQUAL(mr_reader_header(r, "h.csv", hdr, n, 0, &ds, &more, &e), MR_OK);
        CU_ASSERT_EQUAL(more, 1);
    }
    CU_ASSERT_EQUAL(mr_reader_header(r, "m.csv", "user,\"item\"x\n", 13, 1, &ds, &more, &e),
                    MR_EDATA);
    CU_ASSERT(strstr(e.msg, "malformed header line in m.csv: text after the closing quote of "
                            "field 2") != NULL);
    mr_reader_destroy(&r);
    tl_free(&l);
}

/* Spec checks and the config mapping. */
static void test_spec_and_create(void)
{
    MrConfig c;
    mr_config_defaults(&c);
    MrReaderSpec s;
    mr_reader_spec_from_config(&s, &c);
    CU_ASSERT_EQUAL(s.format, MR_FMT_CSV);
    CU_ASSERT_EQUAL(s.sep_len, 1);
    CU_ASSERT_EQUAL(s.sep[0], ',');
    CU_ASSERT_EQUAL(s.quote, '"');
    CU_ASSERT_EQUAL(s.header, 1);
    CU_ASSERT_STRING_EQUAL(s.cols[MR_COL_USER].name, "user");
    c.data.format = MR_FMT_JSONL;
    mr_reader_spec_from_config(&s, &c);
    CU_ASSERT_EQUAL(s.quote, 0); /* JSON Lines shards on newlines only */
    CU_ASSERT_EQUAL(s.header, 0);
    c.data.format = MR_FMT_DELIMITED;
    strcpy(c.data.separator, "::");
    c.data.quote[0] = '\0';
    c.data.header = 0;
    c.data.columns.user.name[0] = '\0';
    c.data.columns.user.index = 0;
    mr_reader_spec_from_config(&s, &c);
    CU_ASSERT_EQUAL(s.sep_len, 2);
    CU_ASSERT_EQUAL(memcmp(s.sep, "::", 2), 0);
    CU_ASSERT_EQUAL(s.quote, 0);
    CU_ASSERT_EQUAL(s.cols[MR_COL_USER].index, 0);

    MrReader *r = NULL;
    MrErr e;
    MrReaderSpec bad = jspec();
    col_index(&bad, MR_COL_ITEM, 1);
    CU_ASSERT_EQUAL(mr_reader_create(&r, &bad, &e), MR_ECONFIG);
    CU_ASSERT(strstr(e.msg, "data.columns.item = 1: JSON Lines fields are named") != NULL);
    CU_ASSERT_PTR_NULL(r);
    bad = csv4(0);
    col_name(&bad, MR_COL_TEXT, "summary");
    CU_ASSERT_EQUAL(mr_reader_create(&r, &bad, &e), MR_ECONFIG);
    CU_ASSERT(strstr(e.msg, "no header") != NULL);
    bad = mkspec(MR_FMT_CSV, ",\"", '"', 0);
    CU_ASSERT_EQUAL(mr_reader_create(&r, &bad, &e), MR_ECONFIG);
    bad = mkspec(MR_FMT_CSV, "", '"', 0);
    CU_ASSERT_EQUAL(mr_reader_create(&r, &bad, &e), MR_ECONFIG);
    bad = jspec();
    bad.quote = '"';
    CU_ASSERT_EQUAL(mr_reader_create(&r, &bad, &e), MR_ECONFIG);
}

/* ===========================================================================
 * Incremental parsing: need-more has no side effects, callback stop, long records
 * ========================================================================= */

/* Every prefix of an input parses to exactly the complete records in it; an
 * incomplete record gives consumed 0, no callback, done 0, the line unchanged. */
static void test_incremental_prefixes(void)
{
    const char *csv = "u1,\"a\"\"\nb\",5,1\r\nu2,i2,4,2\r\n\r\nu3,\"x,y\",3,3\r\n";
    const char *jl =
        "{\"user\":\"a\\\"\\n\",\"item\":[1,{\"b\":\"\\\"}\"}]}\r\n\n{\"user\":\"b\"}\n";
    MrReaderSpec specs[2] = {csv4(0), jspec()};
    const char *ins[2] = {csv, jl};
    for (int k = 0; k < 2; k++) {
        const char *in = ins[k];
        size_t len = strlen(in);
        TList full;
        tl_init(&full);
        parse_str(&specs[k], in, &full);
        MrReader *r = NULL;
        MrErr e;
        CU_ASSERT_EQUAL_FATAL(mr_reader_create(&r, &specs[k], &e), MR_OK);
        for (size_t n = 0; n <= len; n++) {
            TList l;
            tl_init(&l);
            size_t consumed = 99;
            int64_t nl = -1;
            int done = -1;
            CU_ASSERT_EQUAL(
                mr_reader_parse(r, in, n, 0, 1, INT64_MAX, 0, collect, &l, &consumed, &nl, &done),
                0);
            CU_ASSERT_EQUAL(done, 0);
            /* The records delivered are a prefix of the full parse and end where
             * consumed says; the next record (if any) starts there. */
            CU_ASSERT(l.n <= full.n);
            for (size_t i = 0; i < l.n; i++)
                CU_ASSERT_EQUAL(l.v[i].offset, full.v[i].offset);
            if (l.n < full.n)
                CU_ASSERT(consumed <= (size_t)full.v[l.n].offset);
            CU_ASSERT_EQUAL(nl, 1 + count_nl(in, consumed));
            /* Feeding the rest from there completes the parse identically. */
            size_t c2;
            int64_t nl2;
            CU_ASSERT_EQUAL(mr_reader_parse(r, in + consumed, len - consumed, (int64_t)consumed, nl,
                                            INT64_MAX, 1, collect, &l, &c2, &nl2, &done),
                            0);
            CU_ASSERT_EQUAL(done, 1);
            CU_ASSERT(tl_equal(&full, &l, "prefix then rest"));
            tl_free(&l);
        }
        mr_reader_destroy(&r);
        tl_free(&full);
    }
}

/* A non-zero callback value stops the parse and is returned; consumed covers the
 * record just delivered, so a caller can resume after it. */
static void test_callback_stop(void)
{
    const char *in = "a,b,1,1\nc,d,2,2\ne,f,3,3\n";
    MrReaderSpec s = csv4(0);
    MrReader *r = NULL;
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(mr_reader_create(&r, &s, &e), MR_OK);
    TList l;
    tl_init(&l);
    l.stop_at = 1;
    size_t consumed;
    int64_t nl;
    int done;
    CU_ASSERT_EQUAL(
        mr_reader_parse(r, in, strlen(in), 0, 1, INT64_MAX, 1, collect, &l, &consumed, &nl, &done),
        7);
    CU_ASSERT_EQUAL(l.n, 2);
    CU_ASSERT_EQUAL(consumed, 16);
    CU_ASSERT_EQUAL(nl, 3);
    CU_ASSERT_EQUAL(done, 0);
    /* stop_offset: records whose first byte is at or after it are left alone. */
    tl_free(&l);
    tl_init(&l);
    CU_ASSERT_EQUAL(
        mr_reader_parse(r, in, strlen(in), 0, 1, 9, 0, collect, &l, &consumed, &nl, &done), 0);
    CU_ASSERT_EQUAL(l.n, 2); /* records at 0 and 8 */
    CU_ASSERT_EQUAL(consumed, 16);
    CU_ASSERT_EQUAL(done, 1);
    tl_free(&l);
    mr_reader_destroy(&r);
}

/* Feed [buf, buf+len) from windows that start at `w` bytes and double whenever a
 * record does not fit, as the ingest layer does. Returns the number of calls. */
static int feed_doubling(MrReader *r, const char *buf, size_t len, size_t w, TList *out)
{
    size_t pos = 0;
    int64_t line = 1;
    int calls = 0;
    for (;;) {
        size_t avail = len - pos < w ? len - pos : w;
        int eof = pos + avail == len, done;
        size_t consumed;
        int64_t nl;
        calls++;
        CU_ASSERT_EQUAL(mr_reader_parse(r, buf + pos, avail, (int64_t)pos, line, INT64_MAX, eof,
                                        collect, out, &consumed, &nl, &done),
                        0);
        pos += consumed;
        line = nl;
        if (done)
            break;
        if (consumed == 0)
            w *= 2;
    }
    return calls;
}

/* A 100 MB record (quoted CSV field with doubled quotes and newlines; a JSON string
 * with escapes) parses through doubling windows: a handful of calls, exact bytes. */
static void test_huge_record(void)
{
    const size_t big = (size_t)100 << 20;
    char *buf = malloc(big + 256);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);

    size_t o = (size_t)sprintf(buf, "u1,\"");
    size_t field = 0, nls = 0;
    memset(buf + o, 'x', big);
    for (size_t i = 1000; i + 2 < big; i += 7919) {
        if (i % 2) {
            buf[o + i] = '"';
            buf[o + i + 1] = '"';
            i++;
        } else {
            buf[o + i] = '\n';
            nls++;
        }
    }
    o += big;
    o += (size_t)sprintf(buf + o, "\",5,1\nu2,i2,4,2\n");
    field = big;
    for (size_t i = 4; i < 4 + big; i++)
        if (buf[i] == '"')
            field--, i++;
    MrReaderSpec s = csv4(0);
    MrReader *r = NULL;
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(mr_reader_create(&r, &s, &e), MR_OK);
    TList l;
    tl_init(&l);
    int calls = feed_doubling(r, buf, o, 65536, &l);
    CU_ASSERT(calls <= 14);
    CU_ASSERT_EQUAL_FATAL(l.n, 2);
    CU_ASSERT_EQUAL(l.nbad, 0);
    CU_ASSERT_EQUAL(l.v[0].len[MR_COL_ITEM], field);
    CU_ASSERT_EQUAL(l.v[1].line, (int64_t)(2 + nls));
    CU_ASSERT(FIELD_IS(&l, 1, MR_COL_USER, "u2"));
    tl_free(&l);
    mr_reader_destroy(&r);

    /* JSON: a string of 100 MB with \" and \u00e9 escapes sprinkled in. */
    o = (size_t)sprintf(buf, "{\"user\":\"");
    memset(buf + o, 'y', big);
    size_t out_len = big;
    for (size_t i = 1000; i + 6 < big; i += 10007) {
        if (i % 2) {
            memcpy(buf + o + i, "\\\"", 2);
            out_len -= 1;
            i += 1;
        } else {
            memcpy(buf + o + i, "\\u00e9", 6);
            out_len -= 4;
            i += 5;
        }
    }
    o += big;
    o += (size_t)sprintf(buf + o, "\",\"item\":1}\n{\"user\":\"z\"}\n");
    s = jspec();
    CU_ASSERT_EQUAL_FATAL(mr_reader_create(&r, &s, &e), MR_OK);
    tl_init(&l);
    calls = feed_doubling(r, buf, o, 65536, &l);
    CU_ASSERT(calls <= 14);
    CU_ASSERT_EQUAL_FATAL(l.n, 2);
    CU_ASSERT_EQUAL(l.nbad, 0);
    CU_ASSERT_EQUAL(l.v[0].len[MR_COL_USER], out_len);
    CU_ASSERT(FIELD_IS(&l, 1, MR_COL_USER, "z"));
    CU_ASSERT_EQUAL(l.v[1].line, 2);
    tl_free(&l);
    mr_reader_destroy(&r);
    free(buf);
}

/* ===========================================================================
 * Numbers
 * ========================================================================= */

/* A NUL-terminated string of lo..hi random decimal digits in d; returns its length. */
static int random_digits(char *d, int lo, int hi, uint64_t *st)
{
    *st = *st * 6364136223846793005ULL + 1442695040888963407ULL;
    int n = lo + (int)((*st >> 33) % (uint64_t)(hi - lo + 1));
    for (int j = 0; j < n; j++) {
        *st = *st * 6364136223846793005ULL + 1442695040888963407ULL;
        d[j] = (char)('0' + (*st >> 33) % 10);
    }
    d[n] = '\0';
    return n;
}

static void test_parse_double(void)
{
    static const struct {
        const char *s;
        double v;
    } good[] = {
        {"5", 5.0},
        {"5.0", 5.0},
        {"1370131200.0", 1370131200.0},
        {" 4 ", 4.0},
        {"\t-2.5e-1 ", -0.25},
        {"+3", 3.0},
        {".5", 0.5},
        {"5.", 5.0},
        {"0.1", 0.1},
        {"4.35", 4.35},
        {"1e22", 1e22},
        {"1E+2", 100.0},
        {"-0", -0.0},
        {"123456789012345678901234567890", 123456789012345678901234567890.0},
        {"3.141592653589793238462643383279", 3.141592653589793238462643383279},
        {"2.2250738585072014e-308", 2.2250738585072014e-308},
        {"1e-400", 0.0},
        {"1500000262", 1500000262.0},
        {"000000000000005", 5.0},
        {"999999999999999", 999999999999999.0},
        {"1234567890123456", 1234567890123456.0},
        {"9007199254740993", 9007199254740992.0}, /* 2^53 + 1 rounds to even */
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        double v = -123;
        int rc = mr_parse_double(good[i].s, strlen(good[i].s), &v);
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT_EQUAL(memcmp(&v, &good[i].v, sizeof v), 0); /* bitwise, signs included */
        if (rc || v != good[i].v)
            fprintf(stderr, "\nmr_parse_double(\"%s\") -> rc %d, %.17g\n", good[i].s, rc, v);
    }
    static const char *bad[] = {"",      " ",      "abc",  "nan", "NaN",  "inf", "-inf", "Infinity",
                                "1e999", "-1e999", "4x",   "4 5", "0x10", "1e",  "1e+",  ".",
                                "-",     "+",      "5..0", "1,5", "--1",  "e5",  "\n5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        double v = 42;
        int rc = mr_parse_double(bad[i], strlen(bad[i]), &v);
        CU_ASSERT_NOT_EQUAL(rc, 0);
        CU_ASSERT_EQUAL(v, 42); /* untouched on failure */
        if (!rc)
            fprintf(stderr, "\nmr_parse_double(\"%s\") accepted: %g\n", bad[i], v);
    }
    /* Digit strings of every length 1..20 (the integer fast path covers up to 15):
     * the same double as strtod. */
    uint64_t st = 7;
    for (int rep = 0; rep < 2000; rep++) {
        char d[24];
        int n = random_digits(d, 1, 20, &st);
        double got = -1, want = strtod(d, NULL);
        CU_ASSERT_EQUAL(mr_parse_double(d, (size_t)n, &got), 0);
        CU_ASSERT_EQUAL(memcmp(&got, &want, sizeof got), 0);
    }
    /* The 8-digit step of the fast path: a near-digit byte at any of the first 8
     * places of a 8..15-digit string ('/' and ':' border the digits, 0xB0 is a
     * digit with the high bit set) is refused, or read as the general grammar
     * reads it (a '.'; a space at either end). */
    static const char near[] = {'/', ':', '.', ' ', 'a', (char)0xB0, (char)0xB9, '\x06', 'P'};
    for (int rep = 0; rep < 400; rep++) {
        char d[24];
        int n = random_digits(d, 8, 15, &st);
        int at = rep % 8;
        char c = near[(rep / 8) % (int)sizeof near];
        d[at] = c;
        int ok = c == '.' || (c == ' ' && (at == 0 || at == n - 1));
        double got = 42, want = ok ? strtod(d, NULL) : 42;
        int rc = mr_parse_double(d, (size_t)n, &got);
        CU_ASSERT_EQUAL(rc == 0, ok);
        CU_ASSERT_EQUAL(memcmp(&got, &want, sizeof got), 0);
        if ((rc == 0) != ok || got != want)
            fprintf(stderr, "\nmr_parse_double(\"%s\") -> rc %d, %.17g\n", d, rc, got);
    }
    /* Only `len` bytes are looked at (fields are not NUL-terminated). */
    double v = 0;
    CU_ASSERT_EQUAL(mr_parse_double("4.5xyz", 3, &v), 0);
    CU_ASSERT_EQUAL(v, 4.5);
    CU_ASSERT_NOT_EQUAL(mr_parse_double("4.5xyz", 4, &v), 0);
}

/* ===========================================================================
 * Sharding functions
 * ========================================================================= */

/* Ranges are floor(r*S/P), contiguous, cover [0, S), also for huge S. */
static void test_shard_range(void)
{
    const int64_t sizes[] = {0, 1, 7, 100, 1000003, ((int64_t)1 << 40) + 3, INT64_MAX / 3};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        for (int P = 1; P <= 9; P++) {
            int64_t prev = 0;
            for (int r = 0; r < P; r++) {
                int64_t lo, hi;
                mr_shard_range(sizes[i], r, P, &lo, &hi);
                CU_ASSERT_EQUAL(lo, prev);
                CU_ASSERT(hi >= lo);
                CU_ASSERT_EQUAL(lo, (int64_t)((__int128)r * sizes[i] / P));
                prev = hi;
            }
            CU_ASSERT_EQUAL(prev, sizes[i]);
        }
}

/* Counts equal a plain loop at every length and alignment; quote 0 counts none. */
static void test_shard_count(void)
{
    char buf[1200];
    uint64_t st = 7;
    for (size_t i = 0; i < sizeof buf; i++) {
        uint64_t x = mr_splitmix64(st++) % 6;
        buf[i] = x == 0 ? '"' : x == 1 ? '\n' : x == 2 ? '\0' : (char)('a' + x);
    }
    for (size_t a = 0; a < 40; a++)
        for (size_t n = 0; a + n <= sizeof buf; n += (n < 80 ? 1 : 97)) {
            int64_t q = -1, nl = -1, wq = 0, wn = 0;
            for (size_t i = a; i < a + n; i++) {
                wq += buf[i] == '"';
                wn += buf[i] == '\n';
            }
            mr_shard_count(buf + a, n, '"', &q, &nl);
            CU_ASSERT_EQUAL(q, wq);
            CU_ASSERT_EQUAL(nl, wn);
            mr_shard_count(buf + a, n, 0, &q, &nl);
            CU_ASSERT_EQUAL(q, 0);
            CU_ASSERT_EQUAL(nl, wn);
        }
}

static void test_shard_first_record(void)
{
    const char *b = "ab\"c\nd\"\nxy\n";
    /* Not in quotes: the quote at 2 opens, so the '\n' at 4 is quoted; the one at 7
     * (after the closing quote at 6) ends a record. */
    CU_ASSERT_EQUAL(mr_shard_first_record(b, strlen(b), '"', 0, 0), 8);
    /* Inside quotes: the quote at 2 closes them, the '\n' at 4 ends a record. */
    CU_ASSERT_EQUAL(mr_shard_first_record(b, strlen(b), '"', 1, 0), 5);
    /* Starting after the first quote, inside quotes: "c\nd" is quoted. */
    CU_ASSERT_EQUAL(mr_shard_first_record(b + 3, strlen(b) - 3, '"', 1, 0), 5);
    CU_ASSERT_EQUAL(mr_shard_first_record(b + 3, strlen(b) - 3, '"', 0, 0), 2);
    /* Right after a record-ending newline: offset 0; inside quotes it does not count. */
    CU_ASSERT_EQUAL(mr_shard_first_record(b, strlen(b), '"', 0, 1), 0);
    CU_ASSERT_EQUAL(mr_shard_first_record(b + 3, strlen(b) - 3, '"', 1, 1), 5);
    /* Without quoting quotes mean nothing. */
    CU_ASSERT_EQUAL(mr_shard_first_record(b + 3, strlen(b) - 3, 0, 1, 0), 2);
    /* None within len: -1 (the caller reads further); the last byte: len. */
    CU_ASSERT_EQUAL(mr_shard_first_record(b, 4, '"', 0, 0), -1);
    CU_ASSERT_EQUAL(mr_shard_first_record(b, 5, '"', 0, 0), -1);
    CU_ASSERT_EQUAL(mr_shard_first_record(b, 5, '"', 1, 0), 5);
    CU_ASSERT_EQUAL(mr_shard_first_record(b, 0, '"', 0, 0), -1);
}

/* ===========================================================================
 * Parallel = serial on generated files
 * ========================================================================= */

typedef struct Gen {
    char *buf;
    size_t len, cap;
    TList truth; /* the intended records (offset, line, fields) */
    uint64_t st;
} Gen;

static uint64_t rnd(Gen *g, uint64_t n)
{
    return mr_splitmix64(g->st++) % n;
}

static void put(Gen *g, const char *s, size_t n)
{
    if (g->len + n + 1 > g->cap) {
        g->cap = (g->len + n + 1) * 2;
        g->buf = realloc(g->buf, g->cap);
    }
    memcpy(g->buf + g->len, s, n);
    g->len += n;
    g->buf[g->len] = '\0';
}
static void puts_(Gen *g, const char *s)
{
    put(g, s, strlen(s));
}

static void put1(Gen *g, char c)
{
    put(g, &c, 1);
}

/* A CSV/delimited file of 5-field records whose fields are known: plain fields
 * (with lone ':' when the separator is "::"), quoted fields holding separators,
 * doubled quotes, LF and CRLF; LF/CRLF line ends; blank lines; maybe no final
 * newline. The truth records are appended to g->truth. */
static void gen_csv(Gen *g, int nrec, const char *sep, char q, int final_nl)
{
    int64_t line = 1;
    for (int r = 0; r < nrec; r++) {
        while (rnd(g, 5) == 0) {
            puts_(g, rnd(g, 2) ? "\n" : "\r\n");
            line++;
        }
        TRec t;
        memset(&t, 0, sizeof t);
        t.offset = (int64_t)g->len;
        t.line = line;
        t.bad_col = -1;
        t.reason = -1;
        for (int f = 0; f < MR_NCOLS; f++) {
            if (f)
                puts_(g, sep);
            char val[64];
            size_t vn = 0;
            int kind = q ? (int)rnd(g, 3) : 0;
            if (kind == 0) { /* plain */
                size_t n = rnd(g, 5);
                for (size_t i = 0; i < n; i++) {
                    char c = "ab\xE9:"[rnd(g, sep[0] == ':' ? 4 : 3)];
                    /* no "::", no ':' at the end (it would join the separator) */
                    if (c == ':' && (i + 1 == n || (vn && val[vn - 1] == ':')))
                        c = 'z';
                    val[vn++] = c;
                }
                put(g, val, vn);
            } else {
                put1(g, q);
                size_t n = rnd(g, 6);
                for (size_t i = 0; i < n; i++) {
                    switch (rnd(g, 5)) {
                    case 0:
                        puts_(g, sep);
                        memcpy(val + vn, sep, strlen(sep));
                        vn += strlen(sep);
                        break;
                    case 1:
                        put1(g, q);
                        put1(g, q);
                        val[vn++] = q;
                        break;
                    case 2:
                        puts_(g, "\n");
                        val[vn++] = '\n';
                        line++;
                        break;
                    case 3:
                        puts_(g, "\r\n");
                        val[vn++] = '\r';
                        val[vn++] = '\n';
                        line++;
                        break;
                    default:
                        puts_(g, "w");
                        val[vn++] = 'w';
                    }
                }
                put1(g, q);
            }
            t.kind[f] = MR_VAL_TEXT;
            t.len[f] = vn;
            t.off[f] = tl_push(&g->truth, val, vn);
        }
        if (r + 1 < nrec || final_nl) {
            puts_(g, rnd(g, 2) ? "\n" : "\r\n");
            line++;
        }
        if (g->truth.n == g->truth.cap) {
            g->truth.cap = g->truth.cap ? 2 * g->truth.cap : 64;
            g->truth.v = realloc(g->truth.v, g->truth.cap * sizeof *g->truth.v);
        }
        g->truth.v[g->truth.n++] = t;
    }
}

static MrReaderSpec spec5(MrFormat f, const char *sep, char q)
{
    MrReaderSpec s = mkspec(f, sep, q, 0);
    for (int c = 0; c < MR_NCOLS; c++)
        col_index(&s, c, c);
    return s;
}

/* Generated CSV, delimited "::" (quoted and not) and tab: the serial parse gives
 * the generator's truth, and every split gives the serial parse. */
static void test_generated_csv_all_splits(void)
{
    static const struct {
        const char *sep;
        char q;
        MrFormat f;
    } kinds[] = {{",", '"', MR_FMT_CSV},
                 {"::", '"', MR_FMT_DELIMITED},
                 {"::", 0, MR_FMT_DELIMITED},
                 {"\t", 0, MR_FMT_DELIMITED},
                 {";", '\'', MR_FMT_DELIMITED}};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        for (uint64_t seed = 1; seed <= 6; seed++) {
            Gen g;
            memset(&g, 0, sizeof g);
            tl_init(&g.truth);
            g.st = seed * 1000 + k;
            /* small files get every split; one bigger file per kind gets P=1..8 */
            gen_csv(&g, seed == 6 ? 400 : (int)(2 + seed), kinds[k].sep, kinds[k].q,
                    (int)(seed % 2));
            MrReaderSpec s = spec5(kinds[k].f, kinds[k].sep, kinds[k].q);
            TList ser;
            tl_init(&ser);
            MrErr e;
            CU_ASSERT_EQUAL(parse_serial(&s, g.buf, g.len, &ser, &e), MR_OK);
            char what[96];
            snprintf(what, sizeof what, "generated sep '%s' quote %d seed %llu", kinds[k].sep,
                     kinds[k].q, (unsigned long long)seed);
            CU_ASSERT_EQUAL(ser.nbad, 0);
            int ok = tl_equal(&g.truth, &ser, what);
            CU_ASSERT(ok);
            if (!ok)
                test_dump_bytes(what, g.buf, g.len);
            check_all_splits(&s, g.buf, g.len, what);
            tl_free(&ser);
            tl_free(&g.truth);
            free(g.buf);
        }
}

/* Hand-made adversarial inputs, good and bad; every split must equal serial.
 * Quotes, doubled quotes, CR/LF pairs and separators land on every boundary. */
static void test_adversarial_all_splits(void)
{
    static const char *csv[] = {
        "",
        "\n",
        "a",
        "\"",
        "\"\"",
        "\"\"\"\"\n\"\n\"\r\n",
        "u,i\n",
        "u,i",
        "u,i\r\n\r\n",
        "\"u\"\"\n\"\"\",\"\n\"\n\"\",\"\"\n",
        "a,\"b\r\nc\"\r\n\"d\"\"\",e\r\n\"\"\"\"\"\",\"\r\"\r\n",
        "a,b\"c\nd,e\nf\"g,h\n",     /* stray quotes */
        "a,\"b\"c\nd,e\n",           /* text after closing quote */
        "a,b\n\"c,d\ne,f\n",         /* unclosed quote at EOF */
        "x,y\n1,2\n3,\"4\n5\"\n6,7", /* fewer records than ranks */
        "\xEF\xBB\xBF\"a\",b\r\n\r\nc,d",
    };
    MrReaderSpec s = mkspec(MR_FMT_CSV, ",", '"', 0);
    col_index(&s, MR_COL_USER, 0);
    col_index(&s, MR_COL_ITEM, 1);
    for (size_t i = 0; i < sizeof csv / sizeof csv[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "csv case %zu", i);
        check_all_splits(&s, csv[i], strlen(csv[i]), what);
    }
    /* With a header: ranges that start inside the header; header-only files. */
    static const char *hcsv[] = {"u,\"i\ni\"\n\"1\n\",2\n3,4\n", "u,\"i\ni\"\n", "u,\"i\ni\""};
    MrReaderSpec h = mkspec(MR_FMT_CSV, ",", '"', 1);
    col_name(&h, MR_COL_USER, "u");
    col_name(&h, MR_COL_ITEM, "i\ni");
    for (size_t i = 0; i < sizeof hcsv / sizeof hcsv[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "header csv case %zu", i);
        check_all_splits(&h, hcsv[i], strlen(hcsv[i]), what);
    }
    static const char *multi[] = {"a::b::c\r\nd:::e::f\n::\n:\n", "a::\"::\"\"\n::\"::b\n"};
    MrReaderSpec m = mkspec(MR_FMT_DELIMITED, "::", '"', 0);
    col_index(&m, MR_COL_USER, 0);
    col_index(&m, MR_COL_ITEM, 1);
    for (size_t i = 0; i < sizeof multi / sizeof multi[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "'::' case %zu", i);
        check_all_splits(&m, multi[i], strlen(multi[i]), what);
    }
    static const char *jl[] = {
        "{\"user\":\"a\\\"\\n\\\"\",\"item\":\"\\\"\"}\n\n{\"user\":\"\\\\\"}\r\n",
        "{\"user\":\"x\",\"z\":{\"a\":[\"]\\\"}\",{}]}}\n[1]\n{\"user\":\"y\"",
        "{\"user\":\"x\"}\n{\"user\":\"trunc",
        "{\"user\":\"\\ud83d\\ude00\",\"item\":null}\r\n\r\n{\"item\":{\"a\":1}}\n",
    };
    MrReaderSpec j = jspec();
    for (size_t i = 0; i < sizeof jl / sizeof jl[0]; i++) {
        char what[64];
        snprintf(what, sizeof what, "jsonl case %zu", i);
        check_all_splits(&j, jl[i], strlen(jl[i]), what);
    }
}

/* Random short inputs over an alphabet of every byte the grammars care about
 * (quotes, separators, CR, LF, braces, brackets, backslash, 'u', digits), read as
 * CSV, as headered "::" text, as JSON Lines and as unquoted ":;" text: whatever
 * they are (mostly malformed), every split gives the serial parse, and nothing
 * crashes (the suite also runs under ASan/UBSan). */
static void test_random_inputs_all_splits(void)
{
    static const char alpha[] = "a,\"\n\r:{}[]\\u0 ;";
    MrReaderSpec specs[4];
    specs[0] = spec5(MR_FMT_CSV, ",", '"');
    specs[1] = mkspec(MR_FMT_DELIMITED, "::", '"', 1);
    col_name(&specs[1], MR_COL_USER, "a");
    col_index(&specs[1], MR_COL_ITEM, 1);
    specs[2] = jspec();
    specs[3] = spec5(MR_FMT_DELIMITED, ":;", 0);
    uint64_t st = 2026;
    char buf[64];
    for (int it = 0; it < 80; it++) {
        size_t n = mr_splitmix64(st++) % 40;
        for (size_t i = 0; i < n; i++)
            buf[i] = alpha[mr_splitmix64(st++) % (sizeof alpha - 1)];
        if (it % 3 == 0 && n > 9)
            memcpy(buf, "{\"user\":\"", 9);
        char what[48];
        snprintf(what, sizeof what, "random input %d", it);
        for (int k = 0; k < 4; k++)
            check_all_splits(&specs[k], buf, n, what);
    }
}

/* ===========================================================================
 * The real files
 * ========================================================================= */

typedef struct RealFile {
    const char *rel;
    MrFormat fmt;
    const char *sep;
    char quote;
    int header;
    const char *names[MR_NCOLS]; /* by name (header / JSON) */
    int idx[MR_NCOLS];           /* by index (no header); -1 unset */
    int64_t records, bad;
} RealFile;

static const RealFile real_files[] = {
    {"amazon_reviews.csv",
     MR_FMT_CSV,
     ",",
     '"',
     1,
     {"reviewerID", "asin", "overall", "summary", "unixReviewTime"},
     {-1, -1, -1, -1, -1},
     999,
     0},
    {"ml-100k/u.data", MR_FMT_DELIMITED, "\t", 0, 0, {0}, {0, 1, 2, -1, 3}, 100000, 0},
    {"ml-100k/u.item", MR_FMT_DELIMITED, "|", 0, 0, {0}, {0, 1, -1, -1, -1}, 1682, 0},
    {"bookcrossing-39k/BX-Book-Ratings.csv",
     MR_FMT_DELIMITED,
     ";",
     '"',
     0,
     {0},
     {0, 1, 2, -1, -1},
     39268,
     1},
    {"amazon-electronics-50k/ratings_Electronics.csv",
     MR_FMT_CSV,
     ",",
     '"',
     1,
     {"UserId", "ItemId", "rating", NULL, "timestamp"},
     {-1, -1, -1, -1, -1},
     50698,
     0},
    {"yelp-999/yelp_academic_dataset_review.json",
     MR_FMT_JSONL,
     "",
     0,
     0,
     {"user_id", "business_id", "stars", "text", "date"},
     {-1, -1, -1, -1, -1},
     999,
     0},
    {"amazon-fashion-5core/AMAZON_FASHION_5.json",
     MR_FMT_JSONL,
     "",
     0,
     0,
     {"reviewerID", "asin", "overall", "summary", "unixReviewTime"},
     {-1, -1, -1, -1, -1},
     3176,
     0},
    {"yelp-truncated/yelp_academic_dataset_review.json",
     MR_FMT_JSONL,
     "",
     0,
     0,
     {"user_id", "business_id", "stars", "text", "date"},
     {-1, -1, -1, -1, -1},
     3611,
     1},
};

static MrReaderSpec real_spec(const RealFile *f)
{
    MrReaderSpec s = mkspec(f->fmt, f->sep, f->quote, f->header);
    for (int c = 0; c < MR_NCOLS; c++) {
        if (f->names[c])
            col_name(&s, c, f->names[c]);
        else if (f->idx[c] >= 0)
            col_index(&s, c, f->idx[c]);
    }
    return s;
}

/* Serial parse of real file k into l (exact count and bad count checked). */
static char *parse_real(size_t k, TList *l, size_t *len)
{
    const RealFile *f = &real_files[k];
    char *buf = load_file(test_data_path(f->rel), len);
    CU_ASSERT_PTR_NOT_NULL(buf);
    if (!buf)
        return NULL;
    MrReaderSpec s = real_spec(f);
    MrErr e;
    tl_init(l);
    int rc = parse_serial(&s, buf, *len, l, &e);
    CU_ASSERT_EQUAL(rc, MR_OK);
    CU_ASSERT_EQUAL(l->n, (size_t)f->records);
    CU_ASSERT_EQUAL(l->nbad, f->bad);
    if (rc || l->n != (size_t)f->records || l->nbad != f->bad)
        fprintf(stderr, "\n%s: rc %d (%s), %zu records, %lld bad\n", f->rel, rc, rc ? e.msg : "",
                l->n, (long long)l->nbad);
    return buf;
}

/* Every real file: P = 1..8 simulated ranks give exactly the serial records. */
static void test_real_files_parallel(void)
{
    for (size_t k = 0; k < sizeof real_files / sizeof real_files[0]; k++) {
        TList ser;
        size_t len;
        char *buf = parse_real(k, &ser, &len);
        if (!buf)
            continue;
        MrReaderSpec s = real_spec(&real_files[k]);
        for (int P = 1; P <= 8; P++) {
            TList par;
            tl_init(&par);
            CU_ASSERT_EQUAL(parse_sharded(&s, buf, len, P, (size_t)4096 << (P % 3), &par), MR_OK);
            char what[128];
            snprintf(what, sizeof what, "%s P=%d", real_files[k].rel, P);
            CU_ASSERT(tl_equal(&ser, &par, what));
            tl_free(&par);
        }
        tl_free(&ser);
        free(buf);
    }
}

/* amazon_reviews.csv: first and last records, a summary with doubled quotes, the
 * float-looking timestamp, CRLF stripped. */
static void test_real_amazon_reviews(void)
{
    TList l;
    size_t len;
    char *buf = parse_real(0, &l, &len);
    if (!buf)
        return;
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_USER, "AO94DHGC771SJ"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_ITEM, "0528881469"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_RATING, "5.0"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_TEXT, "Gotta have GPS!"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_TIME, "1370131200.0"));
    CU_ASSERT_EQUAL(l.v[0].line, 2);
    CU_ASSERT_EQUAL(l.v[0].offset, 92);
    CU_ASSERT(FIELD_IS(&l, 52, MR_COL_TEXT, "For 22\" LCD"));
    CU_ASSERT(FIELD_IS(&l, 998, MR_COL_USER, "A2UFAKH7Y8VH5N"));
    CU_ASSERT(FIELD_IS(&l, 998, MR_COL_TEXT, "Perfect for Canon EOS 7d"));
    CU_ASSERT_EQUAL(l.v[998].line, 1000);
    tl_free(&l);
    free(buf);
}

/* MovieLens: u.data first record; u.item record 543 holds a Latin-1 byte. */
static void test_real_movielens(void)
{
    TList l;
    size_t len;
    char *buf = parse_real(1, &l, &len);
    if (buf) {
        CU_ASSERT(FIELD_IS(&l, 0, MR_COL_USER, "196"));
        CU_ASSERT(FIELD_IS(&l, 0, MR_COL_ITEM, "242"));
        CU_ASSERT(FIELD_IS(&l, 0, MR_COL_RATING, "3"));
        CU_ASSERT(FIELD_IS(&l, 0, MR_COL_TIME, "881250949"));
        CU_ASSERT_EQUAL(l.v[99999].line, 100000);
        tl_free(&l);
        free(buf);
    }
    buf = parse_real(2, &l, &len);
    if (buf) {
        CU_ASSERT(FIELD_IS(&l, 0, MR_COL_ITEM, "Toy Story (1995)"));
        CU_ASSERT(FIELD_IS(&l, 542, MR_COL_USER, "543"));
        CU_ASSERT(FIELD_IS(&l, 542, MR_COL_ITEM, "Mis\xE9rables, Les (1995)"));
        tl_free(&l);
        free(buf);
    }
}

/* Book-Crossing: all fields quoted, ';', CRLF, no final newline, one Latin-1 ISBN,
 * and one record with backslash-escaped quotes ("\"8804501367\"", a MySQL dump
 * habit, not CSV): reported as bad, not turned into a made-up ISBN. */
static void test_real_bookcrossing(void)
{
    TList l;
    size_t len;
    char *buf = parse_real(3, &l, &len);
    if (!buf)
        return;
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_USER, "43842"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_ITEM, "0739432540"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_RATING, "0"));
    CU_ASSERT(FIELD_IS(&l, 38356, MR_COL_USER, "54828"));
    CU_ASSERT(FIELD_IS(&l, 38356, MR_COL_ITEM,
                       "393\xDF"
                       "704064"));
    CU_ASSERT(FIELD_IS(&l, 38356, MR_COL_RATING, "10"));
    CU_ASSERT_EQUAL(l.v[38356].line, 38357);
    CU_ASSERT(FIELD_IS(&l, 39267, MR_COL_USER, "55178"));
    CU_ASSERT(FIELD_IS(&l, 39267, MR_COL_ITEM, "0312976828"));
    CU_ASSERT(FIELD_IS(&l, 39267, MR_COL_RATING, "0"));
    CU_ASSERT_EQUAL(l.v[12803].line, 12804);
    CU_ASSERT_EQUAL(l.v[12803].bad_col, MR_COL_ITEM);
    CU_ASSERT(l.v[12803].reason >= 0 &&
              strstr(tl_reason(&l, 12803), "text after the closing quote of field 2") != NULL);
    CU_ASSERT(FIELD_IS(&l, 12804, MR_COL_USER, "48822"));
    tl_free(&l);
    free(buf);
}

static void test_real_electronics(void)
{
    TList l;
    size_t len;
    char *buf = parse_real(4, &l, &len);
    if (!buf)
        return;
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_USER, "AKM1MP6P0OYPR"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_ITEM, "0132793040"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_RATING, "5.0"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_TIME, "1365811200"));
    CU_ASSERT(FIELD_IS(&l, 50697, MR_COL_USER, "A1HM47832XYN8S"));
    CU_ASSERT(FIELD_IS(&l, 50697, MR_COL_TIME, "975196800"));
    tl_free(&l);
    free(buf);
}

/* Yelp: ids, stars as a JSON number, a text with \" escapes unescaped. */
static void test_real_yelp(void)
{
    TList l;
    size_t len;
    char *buf = parse_real(5, &l, &len);
    if (!buf)
        return;
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_USER, "OyoGAe7OKpv6SyGZT5g77Q"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_ITEM, "7ATYjTIgM3jUlt4UM3IypQ"));
    CU_ASSERT(FIELD_KIND(&l, 0, MR_COL_RATING, "5.0", MR_VAL_NUMBER));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_TIME, "2012-01-03 15:28:18"));
    const char *want = "In a word... \"OVERRATED!\".  The food took forever to come ou";
    CU_ASSERT_EQUAL(l.v[43].len[MR_COL_TEXT], 363);
    CU_ASSERT(memcmp(l.bytes + l.v[43].off[MR_COL_TEXT], want, strlen(want)) == 0);
    tl_free(&l);
    free(buf);
}

/* Amazon Fashion: one "overall": null (kind NULL, not a bad record); the "style"
 * objects are skipped. */
static void test_real_fashion(void)
{
    TList l;
    size_t len;
    char *buf = parse_real(6, &l, &len);
    if (!buf)
        return;
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_USER, "ALJ66O1Y6SLHA"));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_ITEM, "B000K2PJ4K"));
    CU_ASSERT(FIELD_KIND(&l, 0, MR_COL_RATING, "5.0", MR_VAL_NUMBER));
    CU_ASSERT(FIELD_IS(&l, 0, MR_COL_TEXT, "Five Stars"));
    CU_ASSERT(FIELD_KIND(&l, 0, MR_COL_TIME, "1441324800", MR_VAL_NUMBER));
    int64_t nulls = 0;
    for (size_t i = 0; i < l.n; i++)
        nulls += l.v[i].kind[MR_COL_RATING] == MR_VAL_NULL;
    CU_ASSERT_EQUAL(nulls, 1);
    CU_ASSERT(FIELD_KIND(&l, 1, MR_COL_RATING, "null", MR_VAL_NULL));
    tl_free(&l);
    free(buf);
}

/* The cut-off Yelp file: 3,610 good records, then one bad record on line 3,611
 * whose reason says the JSON is truncated. */
static void test_real_yelp_truncated(void)
{
    TList l;
    size_t len;
    char *buf = parse_real(7, &l, &len);
    if (!buf)
        return;
    CU_ASSERT_EQUAL_FATAL(l.n, 3611);
    for (size_t i = 0; i + 1 < l.n; i++)
        CU_ASSERT_PTR_NULL(tl_reason(&l, i));
    CU_ASSERT_EQUAL(l.v[3610].line, 3611);
    const char *why = tl_reason(&l, 3610);
    CU_ASSERT_PTR_NOT_NULL_FATAL(why);
    CU_ASSERT(strstr(why, "truncated JSON: unterminated string") != NULL);
    CU_ASSERT(FIELD_IS(&l, 3609, MR_COL_USER, "Vrw87-eNLfC8QxfWbYeTwg"));
    tl_free(&l);
    free(buf);
}

int add_suite_reader(void)
{
    CU_pSuite s = CU_add_suite("reader", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "csv_rfc4180", test_csv_rfc4180);
    CU_add_test(s, "csv_blank_lines_bom", test_csv_blank_lines_bom);
    CU_add_test(s, "delimited", test_delimited);
    CU_add_test(s, "csv_bad_records", test_csv_bad_records);
    CU_add_test(s, "jsonl_values", test_jsonl_values);
    CU_add_test(s, "jsonl_bad_records", test_jsonl_bad_records);
    CU_add_test(s, "header_missing_column", test_header_missing_column);
    CU_add_test(s, "header_edge_files", test_header_edge_files);
    CU_add_test(s, "spec_and_create", test_spec_and_create);
    CU_add_test(s, "incremental_prefixes", test_incremental_prefixes);
    CU_add_test(s, "callback_stop", test_callback_stop);
    CU_add_test(s, "huge_record", test_huge_record);
    CU_add_test(s, "parse_double", test_parse_double);
    CU_add_test(s, "shard_range", test_shard_range);
    CU_add_test(s, "shard_count", test_shard_count);
    CU_add_test(s, "shard_first_record", test_shard_first_record);
    CU_add_test(s, "generated_csv_all_splits", test_generated_csv_all_splits);
    CU_add_test(s, "adversarial_all_splits", test_adversarial_all_splits);
    CU_add_test(s, "random_inputs_all_splits", test_random_inputs_all_splits);
    CU_add_test(s, "real_files_parallel", test_real_files_parallel);
    CU_add_test(s, "real_amazon_reviews", test_real_amazon_reviews);
    CU_add_test(s, "real_movielens", test_real_movielens);
    CU_add_test(s, "real_bookcrossing", test_real_bookcrossing);
    CU_add_test(s, "real_electronics", test_real_electronics);
    CU_add_test(s, "real_yelp", test_real_yelp);
    CU_add_test(s, "real_fashion", test_real_fashion);
    CU_add_test(s, "real_yelp_truncated", test_real_yelp_truncated);
    return 0;
}
