/* fuzz_reader_common.h — the reader harness shared by fuzz_reader_csv and
 * fuzz_reader_jsonl (included once per target; everything is static).
 *
 * Oracle: besides "no crash, no sanitizer report", the parse of the whole file
 * in one call (the serial reference) must equal, record for record (offset, line,
 * bad reason and column, every field's kind and bytes), the parse that
 * data/ingest.c's driver recipe gives with the file cut into 2 or 3 byte ranges
 * at fuzzer-chosen points and read through small windows that double when a
 * record does not fit (reader.h); for csv/delimited also the serial parse without
 * the fast path (reader_csv.c csv_fast), i.e. the record loop alone. Any difference
 * is a finding (abort). Each good record's rating and timestamp go through the
 * strict number and date parsers and its text through the tokenizer, as
 * ingestion does.
 */
#ifndef MPIREC_FUZZ_READER_COMMON_H
#define MPIREC_FUZZ_READER_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/reader_impl.h"
#include "mpirec/dataset.h"
#include "mpirec/reader.h"
#include "mpirec/text.h"

typedef struct FzRecs {
    uint64_t *h; /* one hash per record */
    size_t n, cap;
    int64_t last_offset;
    char *scratch;
    size_t scratch_cap;
} FzRecs;

static uint64_t fz_mix(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static int fz_token(const char *tok, size_t len, void *ud)
{
    (void)ud;
    if (len == 0) /* the tokenizer promises no empty tokens */
        abort();
    volatile char c = tok[0];
    (void)c;
    return 0;
}

static int fz_on_record(const MrRecord *r, void *ud)
{
    FzRecs *t = ud;
    if (r->offset <= t->last_offset || r->line < 1) /* records come in file order */
        abort();
    t->last_offset = r->offset;
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fz_mix(h, &r->offset, sizeof r->offset);
    h = fz_mix(h, &r->line, sizeof r->line);
    h = fz_mix(h, &r->bad_col, sizeof r->bad_col);
    if (r->bad_reason)
        h = fz_mix(h, r->bad_reason, strlen(r->bad_reason) + 1);
    for (int c = 0; c < MR_NCOLS; c++) {
        const MrField *f = &r->f[c];
        h = fz_mix(h, &f->kind, sizeof f->kind);
        h = fz_mix(h, &f->len, sizeof f->len);
        if (f->len)
            h = fz_mix(h, f->p, f->len); /* ASan checks the bytes are readable */
    }
    if (!r->bad_reason) {
        double v;
        const MrField *rt = &r->f[MR_COL_RATING], *ts = &r->f[MR_COL_TIME],
                      *tx = &r->f[MR_COL_TEXT];
        if (rt->kind == MR_VAL_TEXT || rt->kind == MR_VAL_NUMBER)
            mr_parse_double(rt->p, rt->len, &v);
        if (ts->kind == MR_VAL_TEXT || ts->kind == MR_VAL_NUMBER)
            mr_parse_timestamp(ts->p, ts->len, &v);
        if (tx->kind == MR_VAL_TEXT && tx->len) {
            if (tx->len > t->scratch_cap) {
                free(t->scratch);
                t->scratch_cap = tx->len;
                t->scratch = malloc(t->scratch_cap);
                if (!t->scratch)
                    abort();
            }
            mr_text_tokenize(tx->p, tx->len, t->scratch, fz_token, NULL);
        }
    }
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        t->h = realloc(t->h, t->cap * sizeof *t->h);
        if (!t->h)
            abort();
    }
    t->h[t->n++] = h;
    return 0;
}

static void fz_recs_free(FzRecs *t)
{
    free(t->h);
    free(t->scratch);
    memset(t, 0, sizeof *t);
}

static int64_t fz_newlines(const char *p, size_t n)
{
    int64_t q, nl;
    mr_shard_count(p, n, 0, &q, &nl);
    return nl;
}

/* The serial reference: header from the whole file, then one parse call. fast:
 * how csv/delimited parsing uses its fast path (MR_CSV_FAST_OFF: the record loop
 * alone). */
static int fz_parse_serial(const MrReaderSpec *spec, const char *buf, size_t len, FzRecs *out,
                           int fast)
{
    MrReader *r = NULL;
    MrErr e;
    if (mr_reader_create(&r, spec, &e) != MR_OK)
        abort(); /* the harness builds only valid specs */
    mr_reader_csv_fast_mode(r, fast);
    int64_t ds = -1;
    int more = -1;
    int rc = mr_reader_header(r, "fuzz-input", buf, len, 1, &ds, &more, &e);
    if (rc == MR_OK) {
        if (more || ds < 0 || (size_t)ds > len)
            abort();
        size_t consumed = 0;
        int64_t next_line = 0;
        int done = 0;
        out->last_offset = -1;
        int prc =
            mr_reader_parse(r, buf + ds, len - (size_t)ds, ds, 1 + fz_newlines(buf, (size_t)ds),
                            INT64_MAX, 1, fz_on_record, out, &consumed, &next_line, &done);
        if (prc != 0 || !done || consumed != len - (size_t)ds ||
            next_line != 1 + fz_newlines(buf, len))
            abort(); /* a whole file at EOF is always consumed */
    } else if (!e.msg[0]) {
        abort(); /* an error must say what is wrong */
    }
    mr_reader_destroy(&r);
    return rc;
}

/* data/ingest.c's recipe for P ranks with ranges [b[r], b[r+1]) and windows that
 * start at `chunk` bytes. Returns the header code. */
static int fz_parse_ranges(const MrReaderSpec *spec, const char *buf, size_t len, const int64_t *b,
                           int P, size_t chunk, FzRecs *out)
{
    int64_t qb = 0, nlb = 0;
    int rc = MR_OK;
    out->last_offset = -1;
    for (int r = 0; r < P && rc == MR_OK; r++) {
        MrReader *rd = NULL;
        MrErr e;
        if (mr_reader_create(&rd, spec, &e) != MR_OK)
            abort();
        int64_t ds = 0;
        int more = 1;
        for (size_t w = 8; more; w *= 2) {
            size_t avail = w < len ? w : len;
            rc = mr_reader_header(rd, "fuzz-input", buf, avail, avail == len, &ds, &more, &e);
            if (rc || (more && avail == len))
                break;
        }
        if (rc == MR_OK && more)
            abort(); /* asked for more bytes than the file has */
        const int64_t lo = b[r], hi = b[r + 1];
        int64_t start = ds;
        if (rc == MR_OK && lo > ds) {
            int64_t k = -1;
            for (size_t w = 16;; w *= 2) {
                size_t avail = w < len - (size_t)lo ? w : len - (size_t)lo;
                k = mr_shard_first_record(buf + lo, avail, spec->quote, (int)(qb & 1),
                                          buf[lo - 1] == '\n');
                if (k >= 0 || avail == len - (size_t)lo)
                    break;
            }
            start = k < 0 ? (int64_t)len : lo + k;
        }
        if (rc == MR_OK && start < (int64_t)len) {
            int64_t line = 1 + nlb + fz_newlines(buf + lo, (size_t)(start - lo));
            size_t pos = (size_t)start, w = chunk;
            for (int stuck = 0;;) {
                size_t avail = len - pos < w ? len - pos : w;
                int eof = pos + avail == len, done = 0;
                size_t consumed = 0;
                int64_t next_line = 0;
                int prc = mr_reader_parse(rd, buf + pos, avail, (int64_t)pos, line, hi, eof,
                                          fz_on_record, out, &consumed, &next_line, &done);
                if (prc)
                    abort();
                pos += consumed;
                line = next_line;
                if (done)
                    break;
                if (consumed == 0) {
                    /* no record fits: the window doubles, up to the end of the file */
                    if (eof || ++stuck > 60)
                        abort();
                    w *= 2;
                } else {
                    stuck = 0;
                }
            }
        }
        mr_reader_destroy(&rd);
        int64_t q, nl;
        mr_shard_count(buf + lo, (size_t)(hi - lo), spec->quote, &q, &nl);
        qb += q;
        nlb += nl;
    }
    return rc;
}

static void fz_compare(const FzRecs *a, int rca, const FzRecs *b, int rcb, const char *what)
{
    if (rca != rcb || a->n != b->n) {
        fprintf(stderr, "%s: serial gave code %d and %zu records, this %d and %zu\n", what, rca,
                a->n, rcb, b->n);
        abort();
    }
    for (size_t i = 0; i < a->n; i++)
        if (a->h[i] != b->h[i]) {
            fprintf(stderr, "%s: record %zu differs from the serial parse\n", what, i);
            abort();
        }
}

/* Run the serial parse and one sharded parse whose cut points and window size come
 * from the bytes ctl[0..3). */
static void fz_check(const MrReaderSpec *spec, const uint8_t *ctl, const char *buf, size_t len)
{
    FzRecs ser = {0}, par = {0};
    int rs = fz_parse_serial(spec, buf, len, &ser, MR_CSV_FAST_AUTO);
    if (spec->format != MR_FMT_JSONL) {
        FzRecs loop = {0}, always = {0};
        int rl = fz_parse_serial(spec, buf, len, &loop, MR_CSV_FAST_OFF);
        fz_compare(&ser, rs, &loop, rl, "record loop alone (csv fast path off)");
        int ra = fz_parse_serial(spec, buf, len, &always, MR_CSV_FAST_ALWAYS);
        fz_compare(&ser, rs, &always, ra, "csv fast path never given up");
        fz_recs_free(&loop);
        fz_recs_free(&always);
    }
    int P = 2 + (ctl[0] & 1);
    int64_t b[4];
    b[0] = 0;
    b[P] = (int64_t)len;
    b[1] = len ? (int64_t)(ctl[1] * (uint64_t)len / 255) : 0;
    b[2] = P == 3 ? b[1] + (int64_t)(ctl[2] * (uint64_t)(len - (size_t)b[1]) / 255) : b[2];
    size_t chunk = (size_t)1 << (ctl[0] >> 1 & 7);
    int rp = fz_parse_ranges(spec, buf, len, b, P, chunk, &par);
    fz_compare(&ser, rs, &par, rp, "sharded parse");
    fz_recs_free(&ser);
    fz_recs_free(&par);
}

static void fz_col_name(MrReaderSpec *s, int c, const char *name)
{
    snprintf(s->cols[c].name, sizeof s->cols[c].name, "%s", name);
    s->cols[c].index = -1;
}

#endif
