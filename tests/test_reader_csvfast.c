/* test_reader_csvfast.c — the csv/delimited fast path (src/data/reader_csv.c,
 * csv_fast) against the record loop it leaves everything unusual to.
 *
 * Oracle: the same reader with the fast path switched off (MR_CSV_FAST_OFF) runs
 * the record loop alone, i.e. the parser as it was before the fast path. On
 * random files mixing ordinary records (fields and line ends on every position of
 * a 64-byte block) with everything the fast path must refuse (quotes, quoted
 * newlines, doubled and stray quotes, multi-byte separators, CR line ends and lone
 * CRs, empty and "\r" lines, missing fields, records of 64 bytes and more, a BOM,
 * no final newline, an unclosed quote), both must give the same records (offset,
 * line, every field's kind and bytes, bad reason and column), return code,
 * consumed bytes, next line and done flag: for the whole file; for every prefix as
 * a buffer that ends there, with and without at_eof (the "need more" answers);
 * from record starts inside the file with stop offsets; and with a callback that
 * stops; with the fast path as parsing uses it (it gives up on buffers where it
 * finds little to do) and never given up (MR_CSV_FAST_ALWAYS). Buffers are
 * exact-size copies, so ASan sees any read past the end. The fast path must also
 * have delivered many records, else the comparison proves nothing. The block kernels compiled three
 * ways (native, AVX2 without AVX-512, SSE2 without BMI2: tests/variants/csvscan_*.c) must agree
 * with the plain-C reference.
 */
#include <CUnit/CUnit.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/reader_impl.h"
#include "test_util.h"
#include "mpirec/hash.h"
#include "mpirec/reader.h"

/* tests/variants/csvscan_avx2.c and csvscan_sse2.c */
const char *csvscan_masks_avx2(const char *p, char s0, char q, MrCsvMasks *out);
int csvscan_select_avx2(uint64_t x, int n);
int csvscan_has_pdep_avx2(void);
const char *csvscan_masks_sse2(const char *p, char s0, char q, MrCsvMasks *out);
int csvscan_select_sse2(uint64_t x, int n);
int csvscan_has_pdep_sse2(void);

/* Whether the fast path runs at all in this build (reader_csv.c: not without
 * vector compares); the counts of fast records are checked only where it does. */
#define VEC (strcmp(MR_CSV_MASKS_KIND, "c") != 0)

static uint64_t rnd(uint64_t *st)
{
    return mr_splitmix64((*st)++);
}

/* ---- a growing byte buffer ---- */

typedef struct Buf {
    char *p;
    size_t n, cap;
} Buf;

static void bput(Buf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->n + n > cap)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q)
            abort();
        b->p = q;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void bputc(Buf *b, char c)
{
    bput(b, &c, 1);
}

/* ---- one parse call, everything it tells recorded ---- */

typedef struct Run {
    Buf rec;            /* every record serialized: offset, line, bad, fields */
    Buf at;             /* size_t: where record i starts in rec */
    Buf starts;         /* int64_t pairs: offset and line of record i */
    int64_t stop_at;    /* the callback returns 5 on this record (0-based); -1 never */
    int64_t nrec, fast; /* records, and how many the fast path delivered */
    int rc, done;
    size_t consumed;
    int64_t next_line;
} Run;

static void run_free(Run *r)
{
    free(r->rec.p);
    free(r->at.p);
    free(r->starts.p);
    memset(r, 0, sizeof *r);
}

static int on_rec(const MrRecord *x, void *ud)
{
    Run *r = ud;
    size_t at = r->rec.n;
    bput(&r->at, &at, sizeof at);
    bput(&r->starts, &x->offset, sizeof x->offset);
    bput(&r->starts, &x->line, sizeof x->line);
    bput(&r->rec, &x->offset, sizeof x->offset);
    bput(&r->rec, &x->line, sizeof x->line);
    bput(&r->rec, &x->bad_col, sizeof x->bad_col);
    if (x->bad_reason)
        bput(&r->rec, x->bad_reason, strlen(x->bad_reason) + 1);
    else
        bputc(&r->rec, '-');
    for (int c = 0; c < MR_NCOLS; c++) {
        const MrField *f = &x->f[c];
        bput(&r->rec, &f->kind, sizeof f->kind);
        bput(&r->rec, &f->len, sizeof f->len);
        if (f->len)
            bput(&r->rec, f->p, f->len);
    }
    return r->nrec++ == r->stop_at ? 5 : 0;
}

/* Parse buf (file bytes from buf_offset, on line `line`) with the fast path in
 * mode `fast` (MR_CSV_FAST_*). A header spec reads its header from file[0..flen)
 * first. */
static void run(const MrReaderSpec *spec, int fast, const char *file, size_t flen, const char *buf,
                size_t len, int64_t buf_offset, int64_t line, int64_t stop, int at_eof,
                int64_t stop_at, Run *out)
{
    memset(out, 0, sizeof *out);
    out->stop_at = stop_at;
    MrReader *r = NULL;
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(mr_reader_create(&r, spec, &e), MR_OK);
    mr_reader_csv_fast_mode(r, fast);
    if (spec->header) {
        int64_t ds = 0;
        int more = 0;
        CU_ASSERT_EQUAL_FATAL(mr_reader_header(r, "t", file, flen, 1, &ds, &more, &e), MR_OK);
    }
    out->rc = mr_reader_parse(r, buf, len, buf_offset, line, stop, at_eof, on_rec, out,
                              &out->consumed, &out->next_line, &out->done);
    out->fast = r->csv_fast_records;
    if (fast == MR_CSV_FAST_OFF)
        CU_ASSERT_EQUAL(out->fast, 0);
    mr_reader_destroy(&r);
}

/* Same outcome, byte for byte; prints the first difference. */
static int same(const Run *a, const Run *b, const char *what, const char *buf, size_t len)
{
    int ok = a->rc == b->rc && a->done == b->done && a->consumed == b->consumed &&
             a->next_line == b->next_line && a->nrec == b->nrec && a->rec.n == b->rec.n &&
             (a->rec.n == 0 || memcmp(a->rec.p, b->rec.p, a->rec.n) == 0);
    if (!ok) {
        int64_t i = 0;
        const size_t *ia = (const size_t *)a->at.p, *ib = (const size_t *)b->at.p;
        while (i < a->nrec && i < b->nrec) {
            size_t ea = i + 1 < a->nrec ? ia[i + 1] : a->rec.n;
            size_t eb = i + 1 < b->nrec ? ib[i + 1] : b->rec.n;
            if (ea - ia[i] != eb - ib[i] || memcmp(a->rec.p + ia[i], b->rec.p + ib[i], ea - ia[i]))
                break;
            i++;
        }
        fprintf(stderr,
                "\n%s: fast/loop differ: rc %d/%d done %d/%d consumed %zu/%zu next_line "
                "%lld/%lld records %lld/%lld, first different record %lld\n",
                what, a->rc, b->rc, a->done, b->done, a->consumed, b->consumed,
                (long long)a->next_line, (long long)b->next_line, (long long)a->nrec,
                (long long)b->nrec, (long long)i);
        test_dump_bytes("  input", buf, len);
    }
    return ok;
}

/* Parse with the fast path as used, never given up, and off; CU-asserts the same
 * outcome. Returns the records the fast path delivered when never given up, *n the
 * records. */
static int64_t compare(const MrReaderSpec *spec, const char *file, size_t flen, const char *buf,
                       size_t len, int64_t buf_offset, int64_t line, int64_t stop, int at_eof,
                       int64_t stop_at, const char *what, int64_t *n)
{
    /* An exact-size copy: a read past len is an ASan report. */
    char *copy = malloc(len ? len : 1);
    if (!copy)
        abort();
    if (len)
        memcpy(copy, buf, len);
    Run f, a, s;
    run(spec, MR_CSV_FAST_AUTO, file, flen, copy, len, buf_offset, line, stop, at_eof, stop_at, &f);
    run(spec, MR_CSV_FAST_ALWAYS, file, flen, copy, len, buf_offset, line, stop, at_eof, stop_at,
        &a);
    run(spec, MR_CSV_FAST_OFF, file, flen, copy, len, buf_offset, line, stop, at_eof, stop_at, &s);
    CU_ASSERT(same(&f, &s, what, buf, len));
    CU_ASSERT(same(&a, &s, what, buf, len));
    int64_t fast = a.fast;
    if (n)
        *n = s.nrec;
    run_free(&f);
    run_free(&a);
    run_free(&s);
    free(copy);
    return fast;
}

/* ===========================================================================
 * Kernels
 * ========================================================================= */

/* Random blocks at every alignment, drawn mostly from the bytes that matter (the
 * separator, '\n', the quote, NUL, '\r', bytes >= 0x80): the native masks, the
 * AVX2 and SSE2 builds and the plain-C reference agree, for quotes and for no
 * quoting (a NUL must then not count as a quote); and the bit select of every
 * build gives the n-th set bit. */
static void test_kernels_agree(void)
{
    static const char seps[] = {',', '\t', ';', (char)0xa7, (char)0xff, '|'};
    static const char quotes[] = {'"', 0, '\'', (char)0x80};
    uint64_t st = 64;
    char area[192];
    const char *kn = NULL, *k2 = NULL, *k1 = NULL;
    for (size_t si = 0; si < sizeof seps; si++)
        for (size_t qi = 0; qi < sizeof quotes; qi++) {
            const char s0 = seps[si], q = quotes[qi];
            const char pick[] = {s0, '\n', q, 0, '\r', (char)0x80, (char)0xff, 'a'};
            for (int it = 0; it < 200; it++) {
                for (size_t i = 0; i < sizeof area; i++) {
                    uint64_t x = rnd(&st);
                    area[i] = x % 3 ? pick[(x >> 8) % sizeof pick] : (char)(x >> 16);
                }
                const char *p = area + it % 128;
                MrCsvMasks ref = mr_csv_masks_c(p, s0, q), nat = mr_csv_masks(p, s0, q), a2, a1;
                k2 = csvscan_masks_avx2(p, s0, q, &a2);
                k1 = csvscan_masks_sse2(p, s0, q, &a1);
                kn = MR_CSV_MASKS_KIND;
                int ok = 1;
                for (int i = 0; i < 64; i++) {
                    ok &= (int)(ref.sep >> i & 1) == (p[i] == s0);
                    ok &= (int)(ref.nl >> i & 1) == (p[i] == '\n');
                    ok &= (int)(ref.quote >> i & 1) == (q && p[i] == q);
                }
                CU_ASSERT(ok);
                const MrCsvMasks *v[] = {&nat, &a2, &a1};
                for (int k = 0; k < 3; k++) {
                    int eq = v[k]->sep == ref.sep && v[k]->nl == ref.nl && v[k]->quote == ref.quote;
                    if (!eq)
                        fprintf(stderr, "\nmasks differ: build %d, sep %02x quote %02x\n", k,
                                (unsigned char)s0, (unsigned char)q);
                    CU_ASSERT(eq);
                }
            }
        }
    for (int it = 0; it < 2000; it++) {
        uint64_t x = rnd(&st);
        if (it % 4 == 0)
            x &= rnd(&st); /* sparser */
        if (it < 64)
            x = ~0ULL;
        int n = 0;
        for (int i = 0; i < 64; i++) {
            if (!(x >> i & 1))
                continue;
            int a = mr_bit_select(x, n), b = csvscan_select_avx2(x, n),
                c = csvscan_select_sse2(x, n);
            CU_ASSERT(a == i && b == i && c == i);
            n++;
        }
    }
    printf("  kernels: native %s, variants %s (pdep %d), %s (pdep %d) ", kn, k2,
           csvscan_has_pdep_avx2(), k1, csvscan_has_pdep_sse2());
}

/* ===========================================================================
 * Parses
 * ========================================================================= */

typedef struct Dialect {
    const char *sep;
    char q;
    int fast; /* the fast path can run (one-byte separator) */
} Dialect;

static const Dialect dialects[] = {
    {",", '"', 1},  {"\t", 0, 1},     {";", '\'', 1},
    {"|", '"', 1},  {"\xa7", '"', 1}, /* a byte >= 0x80: signed compares */
    {"::", '"', 0}, {"ab", 0, 0},     /* multi-byte: the letters are also field text */
};

/* Column layouts (field index per MR_COL_*, -1 = none). */
static const int layouts[][MR_NCOLS] = {
    {0, 1, 2, -1, 3},                         /* the benchmark's user,item,rating,timestamp */
    {2, 0, -1, 4, 6},                         /* sparse and out of order */
    {0, 0, -1, -1, -1},                       /* one field, two columns */
    {1, 5, -1, -1, -1},  {0, 63, -1, -1, -1}, /* the widest the fast path takes */
    {0, 64, -1, -1, -1},                      /* too wide: record loop only */
};

static MrReaderSpec mkspec(const Dialect *d, const int *lay, int header)
{
    MrReaderSpec s;
    memset(&s, 0, sizeof s);
    s.format = strcmp(d->sep, ",") == 0 ? MR_FMT_CSV : MR_FMT_DELIMITED;
    snprintf(s.sep, sizeof s.sep, "%s", d->sep);
    s.sep_len = strlen(s.sep);
    s.quote = d->q;
    s.header = header;
    for (int c = 0; c < MR_NCOLS; c++) {
        s.cols[c].index = -1;
        if (lay[c] < 0)
            continue;
        if (header)
            snprintf(s.cols[c].name, sizeof s.cols[c].name, "f%d", lay[c]);
        else
            s.cols[c].index = lay[c];
    }
    return s;
}

static void put_text(Buf *b, uint64_t *st, size_t n)
{
    static const char al[] = "abcxyz0123456789";
    for (size_t i = 0; i < n; i++)
        bputc(b, al[rnd(st) % (sizeof al - 1)]);
}

/* Field length: mostly short, some that push a record past 64 bytes. */
static size_t flen(uint64_t *st)
{
    uint64_t x = rnd(st) % 100;
    return x < 70   ? (size_t)(rnd(st) % 9)
           : x < 95 ? 9 + (size_t)(rnd(st) % 17)
                    : 26 + (size_t)(rnd(st) % 50);
}

/* A random file: ordinary records (minf or minf + 1 fields of random length, "\n"
 * or "\r\n") with `odd` percent of them made unusual in one of many ways. With a header, the
 * first line names fields f0..f7. */
static void gen_file(Buf *b, uint64_t *st, const Dialect *d, int header, int nrec, int odd,
                     int minf)
{
    const char *sep = d->sep;
    const size_t sl = strlen(sep);
    const char q = d->q;
    if (rnd(st) % 8 == 0)
        bput(b, "\xEF\xBB\xBF", 3);
    if (header) {
        for (int i = 0; i < 8; i++) {
            if (i)
                bput(b, sep, sl);
            char nm[8];
            snprintf(nm, sizeof nm, "f%d", i);
            bput(b, nm, strlen(nm));
        }
        bputc(b, '\n');
    }
    for (int r = 0; r < nrec; r++) {
        int kind = (int)(rnd(st) % 100) < odd ? 1 + (int)(rnd(st) % 12) : 0;
        if (kind == 1) {
            bputc(b, '\n'); /* an empty line */
            continue;
        }
        if (kind == 2) {
            bput(b, "\r\n", 2);
            continue;
        }
        int nf = kind == 3 ? 1 + (int)(rnd(st) % 3) : minf + (int)(rnd(st) % 2);
        int odd_field = kind >= 4 ? (int)(rnd(st) % (uint64_t)nf) : -1;
        for (int f = 0; f < nf; f++) {
            if (f)
                bput(b, sep, sl);
            if (f != odd_field) {
                put_text(b, st, flen(st));
                continue;
            }
            switch (kind) {
            case 4: /* a quoted field, maybe with separators, newlines, doubled quotes */
                if (!q) {
                    put_text(b, st, 70); /* long instead */
                    break;
                }
                bputc(b, q);
                for (int i = 0, n = (int)(rnd(st) % 12); i < n; i++) {
                    uint64_t x = rnd(st) % 6;
                    if (x == 0)
                        bput(b, sep, sl);
                    else if (x == 1)
                        bputc(b, '\n');
                    else if (x == 2)
                        bput(b, "\r\n", 2);
                    else if (x == 3) {
                        bputc(b, q);
                        bputc(b, q);
                    } else
                        put_text(b, st, 1 + rnd(st) % 4);
                }
                bputc(b, q);
                if (rnd(st) % 6 == 0)
                    put_text(b, st, 1); /* text after the closing quote */
                break;
            case 5: /* a stray quote (or the separator's first byte alone) */
                put_text(b, st, rnd(st) % 3);
                bputc(b, q ? q : sep[0]);
                put_text(b, st, rnd(st) % 3);
                break;
            case 6: /* a lone CR inside, or ending, a field */
                put_text(b, st, rnd(st) % 3);
                bputc(b, '\r');
                put_text(b, st, rnd(st) % 2);
                break;
            case 7: /* a field starting with CR (the fast path leaves it) */
                bputc(b, '\r');
                put_text(b, st, rnd(st) % 3);
                break;
            case 8: /* a record of 64 bytes and more */
                put_text(b, st, 60 + rnd(st) % 70);
                break;
            case 9: /* NUL and high bytes */
                bputc(b, 0);
                bputc(b, (char)0xff);
                bputc(b, (char)0xa7);
                break;
            case 10: /* the separator's first byte (or the whole separator) doubled */
                bput(b, sep, 1);
                bput(b, sep, sl);
                break;
            default: /* empty field */
                break;
            }
        }
        if (rnd(st) % 6 == 0)
            bputc(b, '\r');
        if (r + 1 < nrec || rnd(st) % 2)
            bputc(b, '\n');
    }
    if (q && rnd(st) % 10 == 0) {
        bputc(b, q); /* a quote never closed */
        put_text(b, st, 5);
        bputc(b, '\n');
    }
}

/* Record starts of the whole-file parse: offsets and lines. */
static void data_start(const MrReaderSpec *s, const char *buf, size_t len, int64_t *ds,
                       int64_t *line)
{
    MrReader *r = NULL;
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(mr_reader_create(&r, s, &e), MR_OK);
    int more = 0;
    CU_ASSERT_EQUAL_FATAL(mr_reader_header(r, "t", buf, len, 1, ds, &more, &e), MR_OK);
    mr_reader_destroy(&r);
    int64_t q, nl;
    mr_shard_count(buf, (size_t)*ds, 0, &q, &nl);
    *line = 1 + nl;
}

/* One random file, all the comparisons. Adds to *fast and *total the records of
 * the whole-file parse and how many the fast path took. */
static void check_file(const MrReaderSpec *s, const char *buf, size_t len, uint64_t *st,
                       int every_prefix, const char *what, int64_t *fast, int64_t *total)
{
    int64_t ds, line;
    data_start(s, buf, len, &ds, &line);
    const char *d = buf + ds;
    const size_t dl = len - (size_t)ds;
    int64_t n = 0;
    *fast += compare(s, buf, len, d, dl, ds, line, INT64_MAX, 1, -1, what, &n);
    *total += n;
    /* Every buffer end (or a sample), at_eof or not. */
    for (size_t l = 0; l <= dl; l += every_prefix ? 1 : 1 + rnd(st) % 95) {
        compare(s, buf, len, d, l, ds, line, INT64_MAX, 0, -1, what, NULL);
        compare(s, buf, len, d, l, ds, line, INT64_MAX, 1, -1, what, NULL);
    }
    /* A callback that stops. */
    for (int k = 0; k < 4 && n > 0; k++)
        compare(s, buf, len, d, dl, ds, line, INT64_MAX, 1, (int64_t)(rnd(st) % (uint64_t)n), what,
                NULL);
    /* From record starts inside the file, with stop offsets and shorter buffers. */
    Run ref;
    run(s, MR_CSV_FAST_OFF, buf, len, d, dl, ds, line, INT64_MAX, 1, -1, &ref);
    const int64_t *rs = (const int64_t *)ref.starts.p;
    for (int k = 0; k < 12 && ref.nrec > 0; k++) {
        int64_t i = (int64_t)(rnd(st) % (uint64_t)ref.nrec), off = rs[2 * i], ln = rs[2 * i + 1];
        size_t rest = len - (size_t)off;
        int64_t stop = off + (int64_t)(rnd(st) % (rest + 1));
        size_t l = k % 2 ? rest : (size_t)(rnd(st) % (rest + 1));
        compare(s, buf, len, buf + off, l, off, ln, stop, l == rest, -1, what, NULL);
    }
    run_free(&ref);
}

/* Random files in every dialect and column layout, headers or not, mostly
 * ordinary records plus unusual ones: the fast path equals the record loop. */
static void test_random_files(void)
{
    uint64_t st = 2411;
    for (size_t di = 0; di < sizeof dialects / sizeof dialects[0]; di++)
        for (size_t li = 0; li < sizeof layouts / sizeof layouts[0]; li++) {
            int64_t fast = 0, total = 0;
            for (int it = 0; it < 6; it++) {
                int header = it % 3 == 2 && layouts[li][1] < 8;
                MrReaderSpec s = mkspec(&dialects[di], layouts[li], header);
                Buf b = {0};
                /* small files get every prefix; bigger ones a sample */
                int small = it < 2;
                int minf = 2;
                for (int c = 0; c < MR_NCOLS; c++)
                    if (layouts[li][c] >= minf)
                        minf = layouts[li][c] + 1;
                gen_file(&b, &st, &dialects[di], header, small ? 12 : 120, it == 5 ? 60 : 15,
                         minf < 8 ? minf : 4);
                char what[96];
                snprintf(what, sizeof what, "dialect %zu layout %zu file %d", di, li, it);
                check_file(&s, b.p, b.n, &st, small, what, &fast, &total);
                free(b.p);
            }
            const int can = VEC && dialects[di].fast && layouts[li][1] < 64;
            if (!can)
                CU_ASSERT_EQUAL(fast, 0);
            /* Layout 4 needs 64 fields: the fast path runs but never finds them. */
            if (can && li != 4 && fast * 4 < total) {
                fprintf(stderr, "\ndialect %zu layout %zu: fast path took %lld of %lld\n", di, li,
                        (long long)fast, (long long)total);
                CU_FAIL("the fast path took fewer than a quarter of the records");
            }
        }
}

/* Ordinary records of every length up to 70 bytes after every shift in a
 * 64-byte block, "\n" and "\r\n": the fast path takes exactly the records it
 * should (those shorter than 64 bytes that start 64 bytes or more before the end
 * of the buffer), and gives what the record loop gives. */
static void test_block_boundaries(void)
{
    const Dialect d = {",", '"', 1};
    MrReaderSpec s = mkspec(&d, layouts[0], 0);
    uint64_t st = 7;
    for (int crlf = 0; crlf < 2; crlf++)
        for (int shift = 0; shift < 64; shift++) {
            Buf b = {0};
            put_text(&b, &st, (size_t)shift);
            bputc(&b, '\n'); /* one field: a bad record, from the record loop */
            int64_t want = 0;
            size_t starts[80];
            int n = 0;
            for (int l = 1; l <= 70; l++) {
                starts[n++] = b.n;
                /* four fields, l - 4 - crlf bytes of text spread over them (records of
                 * 4 + crlf to 70 bytes with their '\n') */
                int t = l - 4 - crlf;
                if (t < 0)
                    t = 0;
                for (int f = 0; f < 4; f++) {
                    if (f)
                        bputc(&b, ',');
                    put_text(&b, &st, (size_t)(t / 4 + (f < t % 4)));
                }
                if (crlf)
                    bputc(&b, '\r');
                bputc(&b, '\n');
            }
            /* expected fast records: '\n' within 64 bytes of the start, start <= len - 64 */
            for (int i = 0; i < n; i++) {
                size_t end = i + 1 < n ? starts[i + 1] : b.n; /* after the '\n' */
                if (end - starts[i] <= 64 && starts[i] + 64 <= b.n)
                    want++;
            }
            char what[64];
            snprintf(what, sizeof what, "shift %d crlf %d", shift, crlf);
            int64_t got = compare(&s, b.p, b.n, b.p, b.n, 0, 1, INT64_MAX, 1, -1, what, NULL);
            if (!VEC)
                want = 0;
            CU_ASSERT_EQUAL(got, want);
            if (got != want)
                fprintf(stderr, "\n%s: fast path took %lld records, expected %lld\n", what,
                        (long long)got, (long long)want);
            for (size_t l = b.n > 200 ? b.n - 200 : 0; l <= b.n; l++)
                compare(&s, b.p, b.n, b.p, l, 0, 1, INT64_MAX, 0, -1, what, NULL);
            free(b.p);
        }
}

/* A buffer that starts with quoted records (the fast path finds nothing to do and
 * gives up; the record loop parses the rest) and goes on with ordinary ones: the
 * same records as the record loop alone, at every buffer end near the switch,
 * with fewer fast records than when it never gives up (so it did give up), and
 * all of the ordinary ones in a buffer of ordinary records alone. */
static void test_give_up(void)
{
    const Dialect d = {",", '"', 1};
    MrReaderSpec s = mkspec(&d, layouts[0], 0);
    uint64_t st = 99;
    Buf b = {0};
    for (int i = 0; i < 100; i++) {
        put_text(&b, &st, 1 + rnd(&st) % 8);
        bput(&b, ",\"q,", 4);
        put_text(&b, &st, rnd(&st) % 4);
        bput(&b, "\",5,1500000000\n", 15);
    }
    const size_t switch_at = b.n;
    for (int i = 0; i < 200; i++) {
        put_text(&b, &st, 1 + rnd(&st) % 8);
        bputc(&b, ',');
        put_text(&b, &st, 1 + rnd(&st) % 8);
        bput(&b, ",4,1500000001\n", 14);
    }
    Run a, f;
    run(&s, MR_CSV_FAST_AUTO, b.p, b.n, b.p, b.n, 0, 1, INT64_MAX, 1, -1, &a);
    run(&s, MR_CSV_FAST_ALWAYS, b.p, b.n, b.p, b.n, 0, 1, INT64_MAX, 1, -1, &f);
    CU_ASSERT_EQUAL(a.fast, 0);
    CU_ASSERT(f.fast >= 190 || !VEC);
    run_free(&a);
    run_free(&f);
    compare(&s, b.p, b.n, b.p, b.n, 0, 1, INT64_MAX, 1, -1, "give up", NULL);
    for (size_t l = switch_at - 100; l < switch_at + 300; l++)
        compare(&s, b.p, b.n, b.p, l, 0, 1, INT64_MAX, 0, -1, "give up", NULL);
    /* The ordinary part alone: all but the last 63 bytes' records go fast. */
    run(&s, MR_CSV_FAST_AUTO, b.p, b.n, b.p + switch_at, b.n - switch_at, (int64_t)switch_at, 101,
        INT64_MAX, 1, -1, &a);
    CU_ASSERT(a.fast >= 195 || !VEC);
    run_free(&a);
    free(b.p);
}

int add_suite_reader_csvfast(void)
{
    CU_pSuite s = CU_add_suite("reader_csvfast", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "kernels_agree", test_kernels_agree);
    CU_add_test(s, "random_files", test_random_files);
    CU_add_test(s, "block_boundaries", test_block_boundaries);
    CU_add_test(s, "give_up", test_give_up);
    return 0;
}
