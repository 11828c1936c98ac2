/* reader_csv.c — CSV (RFC 4180) and delimited records: any separator string,
 * optional quoting, columns by field index.
 *
 * Two paths, one behaviour:
 *  - The fast path (csv_fast) takes runs of ordinary records: one-byte separator,
 *    no quote, '\n' within 64 bytes of the record's start, every configured field
 *    present, not at the last 63 bytes of the buffer. At each record start it
 *    compares one 64-byte block three times (AVX-512BW: a load and three compares
 *    into mask registers; AVX2 and SSE2 give the same masks, and so does plain C,
 *    which is only the tests' reference: without vector compares the fast path is
 *    off): bits of the separator, '\n' and quote. The lowest newline bit ends the record; the
 *    separator bits below it, plus one at the line end ("\r\n" moves it back by
 *    one), are the field ends, and field f ends at the f-th of them (pdep + tzcnt)
 *    and starts one past the (f-1)-th: a few bit operations per column, no byte
 *    looked at twice, and no branch that depends on where the fields fall. Why
 *    not the simdjson way (one pass over the buffer building a structural index,
 *    then a walk over it)? Measured here, what costs is per record (the callback,
 *    filling MrRecord) and a mispredicted branch whenever a record crosses the
 *    block of the previous one; a block per record start is branch-free and loads
 *    only bytes the record needs anyway (and a few after). On the benchmark's
 *    26-byte records it parses about 2x faster than the record loop alone. Where
 *    it finds little to do (fewer than 4 records per call, after 32 calls: mostly
 *    quoted or long records), it gives up for the rest of the buffer, which then
 *    costs what it did without it.
 *  - Everything else goes to the record loop (reader_impl.h's mr_reader_loop with
 *    csv_record): one pass per record that jumps from one interesting byte to the
 *    next (separator's first byte, '\n', quote) with the scanners of
 *    reader_impl.h. It is the reference: tests/test_reader_csvfast.c and the
 *    fuzz_reader_csv harness compare both paths on random input.
 * Fields are slices of the caller's buffer; only a configured field that holds
 * doubled quotes is copied (undoubled) into the reader's scratch buffer, once the
 * record is known to be complete, so an incomplete record ("need more") changes
 * nothing.
 *
 * Where a record ends is decided by the quote-parity rule of reader.h alone (the
 * first '\n' after an even number of quotes), because that is what ranks agree on
 * without a serial pass. The RFC 4180 field grammar is then checked inside that
 * record; input that breaks it is reported as a bad record, never re-split:
 *  - a quote inside an unquoted field (`ab"c`) is an error (RFC 4180 section 2.5;
 *    Python's csv would keep it literally, but an odd number of such quotes would
 *    make the parity rule join lines, so we refuse them all rather than accept
 *    only some);
 *  - text after a closing quote (`"ab"c,`) is an error (Python keeps "abc");
 *  - a quote never closed before the end of the file is an error.
 * A final "\r" before end of file ends the line like "\r\n" does.
 * Not done here: skipping blank lines and the BOM (the record loop does that).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/reader_impl.h"

/* Format the bad_reason text. Out of line and cold: keeping the formatting out of
 * the record loop leaves the hot path its registers. */
static __attribute__((cold, noinline, format(printf, 2, 3))) void set_reason(MrReader *r,
                                                                             const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->reason, sizeof r->reason, fmt, ap);
    va_end(ap);
}

/* The separator (sl bytes, first already matched) at p. Separators are a few
 * bytes: a loop is cheaper than a memcmp call per candidate. */
static inline int sep_at(const char *p, const char *sep, size_t sl)
{
    for (size_t i = 1; i < sl; i++)
        if (p[i] != sep[i])
            return 0;
    return 1;
}

/* Column of field k for messages and bad_col (the first one that uses it). */
static int field_col(const MrReader *r, int k)
{
    for (int c = 0; c < MR_NCOLS; c++)
        if (r->col_idx[c] == k)
            return c;
    return -1;
}

size_t mr_reader_csv_undouble(char *out, const char *p, size_t len, char quote)
{
    const char *e = p + len;
    char *o = out;
    while (p < e) {
        const char *x = memchr(p, quote, (size_t)(e - p));
        if (!x) {
            memcpy(o, p, (size_t)(e - p));
            o += e - p;
            break;
        }
        /* Inside a well-formed quoted field quotes come in pairs: keep one. */
        memcpy(o, p, (size_t)(x - p + 1));
        o += x - p + 1;
        p = x + 2;
    }
    return (size_t)(o - out);
}

typedef struct Slot {
    const char *p;
    size_t len;
    int dq;
} Slot;

/* sc: a scanner over [buf, buf+len) for (separator's first byte, '\n', quote), at or
 * before buf+s. */
static inline __attribute__((always_inline)) int csv_record(MrReader *r, MrScan *sc,
                                                            const char *buf, size_t len, size_t s,
                                                            int at_eof, MrRecord *rec, size_t *next,
                                                            int64_t *nl_out, MrHdrSink *all)
{
    const char q = r->spec.quote;
    const char *const sep = r->spec.sep;
    const size_t sl = r->spec.sep_len;
    const char s0 = sep[0];
    const char *const end = buf + len;
    const char *p = buf + s;
    const char *rec_end;
    Slot sp[MR_NCOLS];
    int k = 0;    /* current field index */
    int slot = 0; /* next entry of r->need to fill */
    int anydq = 0;
    int bad = 0, bad_field = -1;
    int par = 0;                 /* quotes seen in the record, mod 2, when resynchronising */
    int after = p == sc->resume; /* p is just after the scanner's last hit */
    sc->resume = NULL;
    int64_t nl = 0;

    for (;;) {
        const char *fs, *fe;
        int dq = 0, last;
        if (q && p < end && *p == q) {
            const char *c = p + 1, *x;
            after = 0;
            for (;;) {
                x = mr_find2(c, end, q, '\n');
                if (x == end) {
                    if (!at_eof)
                        return 0;
                    bad = 1;
                    bad_field = k;
                    set_reason(r,
                               "quote never closed: field %d opens a quoted value that runs to "
                               "the end of the file",
                               k + 1);
                    rec_end = end;
                    goto finish;
                }
                if (*x == '\n') {
                    nl++;
                    c = x + 1;
                    continue;
                }
                if (x + 1 == end && !at_eof)
                    return 0; /* closing quote or the first of a doubled pair? */
                if (x + 1 < end && x[1] == q) {
                    dq = 1;
                    c = x + 2;
                    continue;
                }
                break;
            }
            fs = p + 1;
            fe = x;
            p = x + 1;
            if (p == end) { /* at_eof here: the case !at_eof returned above */
                rec_end = end;
                last = 1;
            } else if (*p == '\n') {
                rec_end = p + 1;
                nl++;
                last = 1;
            } else if (*p == '\r' && p + 1 < end && p[1] == '\n') {
                rec_end = p + 2;
                nl++;
                last = 1;
            } else if (*p == '\r' && p + 1 == end) {
                if (!at_eof)
                    return 0;
                rec_end = end;
                last = 1;
            } else if (*p == s0 && (size_t)(end - p) >= sl && sep_at(p, sep, sl)) {
                p += sl;
                last = 0;
            } else if (*p == s0 && (size_t)(end - p) < sl && !at_eof &&
                       memcmp(p, sep, (size_t)(end - p)) == 0) {
                return 0; /* the buffer ends inside what may be a separator */
            } else {
                bad = 1;
                bad_field = k;
                set_reason(r,
                           "text after the closing quote of field %d (a quoted field must be "
                           "followed by the separator or the end of the line)",
                           k + 1);
                par = 0; /* every quote so far was part of a well-formed quoted field */
                goto skip;
            }
        } else {
            const char *c = p;
            fs = p;
            for (;;) {
                const char *x = after ? mr_scan_after(sc) : mr_scan_next(sc, c);
                if (x == end) {
                    if (!at_eof)
                        return 0;
                    fe = end;
                    if (fe > fs && fe[-1] == '\r')
                        fe--;
                    rec_end = end;
                    last = 1;
                    break;
                }
                if (*x == '\n') {
                    fe = x;
                    if (fe > fs && fe[-1] == '\r')
                        fe--;
                    rec_end = x + 1;
                    sc->resume = x + 1;
                    nl++;
                    last = 1;
                    break;
                }
                if (*x == s0) {
                    if (sl == 1) {
                        fe = x;
                        p = x + 1;
                        last = 0;
                        after = 1;
                        break;
                    }
                    if ((size_t)(end - x) >= sl && sep_at(x, sep, sl)) {
                        fe = x;
                        p = x + sl;
                        last = 0;
                        after = 0;
                        break;
                    }
                    /* Not a whole separator (or cut by the end of buf: then no '\n'
                     * follows in buf either, and the next scan says so). */
                    c = x + 1;
                    after = 1;
                    continue;
                }
                bad = 1;
                bad_field = k;
                set_reason(r,
                           "quote character inside unquoted field %d (RFC 4180: a field that "
                           "contains quotes must be quoted, with its quotes doubled)",
                           k + 1);
                p = x + 1;
                par = 1;
                goto skip;
            }
        }
        if (all) {
            if (all->n == all->cap) {
                int cap = all->cap ? 2 * all->cap : 16;
                MrHdrField *f = realloc(all->f, (size_t)cap * sizeof *f);
                if (!f) {
                    all->oom = 1;
                    return -1;
                }
                all->f = f;
                all->cap = cap;
            }
            all->f[all->n++] = (MrHdrField){fs, (size_t)(fe - fs), dq};
        } else if (slot < r->nneed && r->need[slot] == k) {
            sp[slot] = (Slot){fs, (size_t)(fe - fs), dq};
            anydq |= dq;
            slot++;
        }
        if (last)
            goto finish;
        k++;
    }

skip:
    /* Resynchronise on the parity rule: the record ends at the first '\n' after an
     * even number of quotes counted from its start (par holds the count so far). */
    {
        for (;;) {
            const char *x = mr_find2(p, end, '\n', q);
            if (x == end) {
                if (!at_eof)
                    return 0;
                rec_end = end;
                break;
            }
            if (*x == '\n') {
                nl++;
                if (!par) {
                    rec_end = x + 1;
                    break;
                }
            } else {
                par ^= 1;
            }
            p = x + 1;
        }
    }

finish:
    *next = (size_t)(rec_end - buf);
    *nl_out = nl;
    rec->bad_reason = NULL;
    rec->bad_col = -1;
    if (bad) {
        rec->bad_reason = r->reason;
        rec->bad_col = all ? -1 : field_col(r, bad_field);
    }
    if (all)
        return 1;
    if (!bad && slot < r->nneed) {
        int want = r->need[r->nneed - 1];
        int c = field_col(r, want);
        set_reason(r, "expected at least %d fields, found %d (data.columns.%s is field index %d)",
                   want + 1, k + 1, mr_reader_col_key[c], want);
        rec->bad_reason = r->reason;
        rec->bad_col = c;
    }
    if (anydq) {
        /* Undoubling only shrinks, so the record's length bounds all slots together;
         * sizing once keeps earlier slots' pointers valid. */
        if (mr_reader_scratch(r, (size_t)(rec_end - (buf + s))) != 0)
            return -1;
        char *o = r->scratch;
        for (int i = 0; i < slot; i++) {
            if (!sp[i].dq)
                continue;
            size_t n = mr_reader_csv_undouble(o, sp[i].p, sp[i].len, q);
            sp[i].p = o;
            sp[i].len = n;
            o += n;
        }
    }
    for (int c = 0; c < MR_NCOLS; c++) {
        int i = r->col_slot[c];
        if (i >= 0 && i < slot)
            rec->f[c] = (MrField){sp[i].p, sp[i].len, MR_VAL_TEXT};
        else
            rec->f[c] = (MrField){NULL, 0, MR_VAL_ABSENT};
    }
    return 1;
}

static void scan_init(MrScan *sc, const MrReader *r, const char *p, const char *end)
{
    /* Without quoting the quote slot repeats '\n'. */
    mr_scan_init(sc, p, end, r->spec.sep[0], '\n', r->spec.quote ? r->spec.quote : '\n');
}

int mr_reader_csv_record(MrReader *r, const char *buf, size_t len, size_t s, int at_eof,
                         MrRecord *rec, size_t *next, int64_t *nl, MrHdrSink *all)
{
    MrScan sc;
    scan_init(&sc, r, buf + s, buf + len);
    return csv_record(r, &sc, buf, len, s, at_eof, rec, next, nl, all);
}

/* Per-call state of csv_fast: calls made and records they parsed. */
typedef struct CsvFast {
    int64_t calls, records;
    int keep; /* never give up (MR_CSV_FAST_ALWAYS) */
} CsvFast;

/* Inlined into both record loops of mr_reader_csv_parse (GCC stops inlining it
 * into the second one by itself: 18% slower on "::" files). */
static inline __attribute__((always_inline)) int csv_scan(MrReader *r, void *ctx, const char *buf,
                                                          size_t len, size_t s, int at_eof,
                                                          MrRecord *rec, size_t *next, int64_t *nl)
{
    return csv_record(r, ctx, buf, len, s, at_eof, rec, next, nl, NULL);
}

/* The fast path (see the note at the top): parses ordinary records from buf[pos]
 * on and returns where it stopped (a record start, or an empty line). An ordinary
 * record starts with neither '\r' nor '\n' (an empty "\r\n" line is not a record),
 * has its '\n' within 64 bytes of its start, no quote before that '\n', and every
 * configured field. The record loop does everything else (the records this stops
 * at, the last 63 bytes of buf, whose block would read past buf), so behaviour is
 * that loop's by construction. Sets *rc to the callback's non-zero value, that
 * record counted as parsed, like the loop. Noinline: it is called once per run of
 * records, and inlined into the record loop it would take that loop's registers. */
static __attribute__((noinline)) size_t csv_fast_run(MrReader *r, CsvFast *x, const char *buf,
                                                     size_t len, size_t pos, int64_t buf_offset,
                                                     int64_t stop_offset, int64_t *line_io,
                                                     MrRecordFn fn, void *userdata, int *rc)
{
    if (len < 64 || buf_offset + (int64_t)pos >= stop_offset)
        return pos;
    size_t lim = len - 63; /* records start before lim: their block is inside buf */
    if (stop_offset - buf_offset < (int64_t)lim)
        lim = (size_t)(stop_offset - buf_offset);
    const char s0 = r->spec.sep[0], q = r->spec.quote;
    const int nf = r->csv_nfast; /* fields to delimit: the last configured one + 1 */
    /* The configured columns: where they go, and bit f set for field f (the bit
     * select's argument). Locals, not state kept in x: x is reachable from the
     * callback, so the compiler would reload them after every record. */
    MrRecord rec;
    MrField *dst[MR_NCOLS];
    uint64_t sel[MR_NCOLS];
    int ncols = 0;
    for (int c = 0; c < MR_NCOLS; c++) {
        const int f = r->col_idx[c];
        rec.f[c] = (MrField){NULL, 0, f >= 0 ? MR_VAL_TEXT : MR_VAL_ABSENT};
        if (f >= 0) {
            dst[ncols] = &rec.f[c];
            sel[ncols++] = 1ULL << f;
        }
    }
    rec.bad_reason = NULL;
    rec.bad_col = -1;
    int64_t line = *line_io;
    while (pos < lim) {
        const char *const p = buf + pos;
        if (*p == '\r')
            break; /* maybe an empty "\r\n" line */
        const MrCsvMasks m = mr_csv_masks(p, s0, q);
        if (!m.nl) /* 64 bytes or longer */
            break;
        const int e = __builtin_ctzll(m.nl); /* p[e] is the '\n' */
        if (e == 0)
            break; /* an empty line */
        const uint64_t below = (1ULL << e) - 1;
        if (m.quote & below)
            break;
        /* The last field ends before a final '\r' ("\r\n" line end). p[e-1] is in the
         * record and is not a separator (those never hold '\r'), so it is part of
         * the last field, which is then not empty: csv_record's "fe > fs" holds. */
        const int eadj = e - (p[e - 1] == '\r');
        const uint64_t ends = (m.sep & below) | 1ULL << eadj; /* bit i: a field ends at i */
        if (__builtin_popcountll(ends) < nf)
            break; /* too few fields: a bad record, csv_record reports it */
        /* bit i: a field starts at i, so field f starts at the f-th set bit (a bit
         * 63 of ends is lost: it would start a field after the last one) */
        const uint64_t starts = ends << 1 | 1;
        for (int j = 0; j < ncols; j++) {
            const int fs = mr_bit_deposit(starts, sel[j]), fe = mr_bit_deposit(ends, sel[j]);
            dst[j]->p = p + fs;
            dst[j]->len = (size_t)(fe - fs);
        }
        rec.offset = buf_offset + (int64_t)pos;
        rec.line = line;
        const int k = fn(&rec, userdata);
        pos += (size_t)e + 1;
        line++;
        if (k != 0) {
            *rc = k;
            break;
        }
    }
    x->calls++;
    x->records += line - *line_io;
    r->csv_fast_records += line - *line_io; /* one line per record here */
    *line_io = line;
    return pos;
}

/* The record loop's hook. It gives up (*quit) where it finds little to do: a file
 * of mostly quoted or long records, where each call costs more than the records
 * it parses save (3 quoted records in 5: 10-15% slower than the record loop
 * alone). The rest of the buffer then goes to the record loop alone. */
static inline __attribute__((always_inline)) size_t
csv_fast(MrReader *r, void *ctx, const char *buf, size_t len, size_t pos, int64_t buf_offset,
         int64_t stop_offset, int64_t *line, MrRecordFn fn, void *userdata, int *rc, int *quit)
{
    CsvFast *const x = ctx;
    if (x->calls >= 32 && x->records < 4 * x->calls && !x->keep) {
        *quit = 1;
        return pos;
    }
    return csv_fast_run(r, x, buf, len, pos, buf_offset, stop_offset, line, fn, userdata, rc);
}

void mr_reader_csv_plan(MrReader *r)
{
    const int last = r->nneed > 0 ? r->need[r->nneed - 1] : -1;
#if defined(MR_VW) || defined(__AVX512BW__)
    const int vec = 1;
#else
    const int vec = 0;
#endif
    r->csv_nfast = vec && r->spec.format != MR_FMT_JSONL && r->spec.sep_len == 1 && last >= 0 &&
                           last < 64 && r->csv_fast_mode != MR_CSV_FAST_OFF
                       ? last + 1
                       : 0;
}

void mr_reader_csv_fast_mode(MrReader *r, int mode)
{
    r->csv_fast_mode = mode;
    mr_reader_csv_plan(r);
}

/* The record loop alone, and the record loop with the fast path: two functions,
 * so that each is compiled as if it were the only one (with both loops in one
 * function, "::" files parsed 13-18% slower). */
static __attribute__((noinline)) int csv_parse_plain(MrReader *r, const char *buf, size_t len,
                                                     int64_t buf_offset, int64_t line,
                                                     int64_t stop_offset, int at_eof, MrRecordFn fn,
                                                     void *userdata, size_t *consumed,
                                                     int64_t *next_line, int *done)
{
    MrScan sc;
    scan_init(&sc, r, buf, buf + len);
    return mr_reader_loop(r, buf, len, buf_offset, line, stop_offset, at_eof, fn, userdata,
                          consumed, next_line, done, csv_scan, &sc, NULL, NULL, NULL);
}

static __attribute__((noinline)) int csv_parse_fast(MrReader *r, const char *buf, size_t len,
                                                    int64_t buf_offset, int64_t line,
                                                    int64_t stop_offset, int at_eof, MrRecordFn fn,
                                                    void *userdata, size_t *consumed,
                                                    int64_t *next_line, int *done, int *quit)
{
    MrScan sc;
    scan_init(&sc, r, buf, buf + len);
    CsvFast x;
    x.calls = x.records = 0;
    x.keep = r->csv_fast_mode == MR_CSV_FAST_ALWAYS;
    return mr_reader_loop(r, buf, len, buf_offset, line, stop_offset, at_eof, fn, userdata,
                          consumed, next_line, done, csv_scan, &sc, csv_fast, &x, quit);
}

int mr_reader_csv_parse(MrReader *r, const char *buf, size_t len, int64_t buf_offset, int64_t line,
                        int64_t stop_offset, int at_eof, MrRecordFn fn, void *userdata,
                        size_t *consumed, int64_t *next_line, int *done)
{
    if (r->csv_nfast <= 0)
        return csv_parse_plain(r, buf, len, buf_offset, line, stop_offset, at_eof, fn, userdata,
                               consumed, next_line, done);
    int quit = 0;
    int rc = csv_parse_fast(r, buf, len, buf_offset, line, stop_offset, at_eof, fn, userdata,
                            consumed, next_line, done, &quit);
    if (!quit)
        return rc;
    /* The fast path gave up at a record start (or an empty line) after *consumed
     * bytes: the record loop goes on from there as if called there. Its BOM check
     * cannot fire again: it needs buf_offset 0 and nothing consumed, and then the
     * first loop had nothing to skip either. */
    const size_t c0 = *consumed;
    rc = csv_parse_plain(r, buf + c0, len - c0, buf_offset + (int64_t)c0, *next_line, stop_offset,
                         at_eof, fn, userdata, consumed, next_line, done);
    *consumed += c0;
    return rc;
}
