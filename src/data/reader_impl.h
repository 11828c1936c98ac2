/* reader_impl.h — private to src/data/reader*.c: the reader object, the byte
 * scanners every format shares, and the record loop.
 *
 * The scanners find the first of one to three byte values with 16/32-byte vector
 * compares (SSE2 is always there on x86-64, AVX2 when the build targets it) and a
 * plain loop for the last few bytes and for other architectures. They never read
 * past `end`, so a caller may hand them any slice of a buffer. The csv fast path's
 * block kernel (mr_csv_masks) is the exception: it reads exactly 64 bytes, with
 * AVX-512BW when the build targets it, and its caller keeps it inside the buffer.
 */
#ifndef MPIREC_READER_IMPL_H
#define MPIREC_READER_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mpirec/reader.h"

#if defined(__AVX2__) || defined(__AVX512BW__) || defined(__BMI2__)
#include <immintrin.h>
#endif

#if defined(__AVX2__)
#define MR_VW 32
typedef __m256i MrVec;
static inline MrVec mr_vsplat(char c)
{
    return _mm256_set1_epi8(c);
}
static inline MrVec mr_vload(const char *p)
{
    return _mm256_loadu_si256((const __m256i *)p);
}
static inline MrVec mr_veq(MrVec a, MrVec b)
{
    return _mm256_cmpeq_epi8(a, b);
}
static inline MrVec mr_vor(MrVec a, MrVec b)
{
    return _mm256_or_si256(a, b);
}
static inline uint32_t mr_vmask(MrVec a)
{
    return (uint32_t)_mm256_movemask_epi8(a);
}
#elif defined(__SSE2__)
#include <emmintrin.h>
#define MR_VW 16
typedef __m128i MrVec;
static inline MrVec mr_vsplat(char c)
{
    return _mm_set1_epi8(c);
}
static inline MrVec mr_vload(const char *p)
{
    return _mm_loadu_si128((const __m128i *)p);
}
static inline MrVec mr_veq(MrVec a, MrVec b)
{
    return _mm_cmpeq_epi8(a, b);
}
static inline MrVec mr_vor(MrVec a, MrVec b)
{
    return _mm_or_si128(a, b);
}
static inline uint32_t mr_vmask(MrVec a)
{
    return (uint32_t)_mm_movemask_epi8(a);
}
#endif

/* First byte in [p, end) equal to a, b or c; end when there is none. Callers that
 * look for fewer values repeat one. */
static inline const char *mr_find3(const char *p, const char *end, char a, char b, char c)
{
#ifdef MR_VW
    const MrVec va = mr_vsplat(a), vb = mr_vsplat(b), vc = mr_vsplat(c);
    while (end - p >= MR_VW) {
        MrVec x = mr_vload(p);
        uint32_t m = mr_vmask(mr_vor(mr_vor(mr_veq(x, va), mr_veq(x, vb)), mr_veq(x, vc)));
        if (m)
            return p + __builtin_ctz(m);
        p += MR_VW;
    }
#endif
    for (; p < end; p++)
        if (*p == a || *p == b || *p == c)
            return p;
    return end;
}

static inline const char *mr_find2(const char *p, const char *end, char a, char b)
{
#ifdef MR_VW
    const MrVec va = mr_vsplat(a), vb = mr_vsplat(b);
    while (end - p >= MR_VW) {
        MrVec x = mr_vload(p);
        uint32_t m = mr_vmask(mr_vor(mr_veq(x, va), mr_veq(x, vb)));
        if (m)
            return p + __builtin_ctz(m);
        p += MR_VW;
    }
#endif
    for (; p < end; p++)
        if (*p == a || *p == b)
            return p;
    return end;
}

/* A forward-only cursor over the "structural" bytes (up to three values) of a
 * buffer: one 64-byte block is compared at a time and its hits kept as a bit mask,
 * so consecutive short fields cost a bit-scan each instead of a fresh vector
 * search. Positions passed to mr_scan_next must never decrease. */
typedef struct MrScan {
    const char *base; /* start of the current block */
    const char *end;
    uint64_t m;         /* hits in [base, base+64) not yet passed */
    const char *resume; /* csv: where the next record starts if the last one ended at
                         * the scanner's last hit ('\n'); NULL otherwise */
    char a, b, c;
#ifdef MR_VW
    MrVec va, vb, vc;
#endif
} MrScan;

static inline uint64_t mr_scan_block(const MrScan *s, const char *p)
{
    uint64_t m = 0;
#ifdef MR_VW
    if (s->end - p >= 64) {
        for (int i = 0; i < 64; i += MR_VW) {
            MrVec x = mr_vload(p + i);
            uint64_t k =
                mr_vmask(mr_vor(mr_vor(mr_veq(x, s->va), mr_veq(x, s->vb)), mr_veq(x, s->vc)));
            m |= k << i;
        }
        return m;
    }
#endif
    ptrdiff_t n = s->end - p < 64 ? s->end - p : 64;
    for (ptrdiff_t i = 0; i < n; i++)
        if (p[i] == s->a || p[i] == s->b || p[i] == s->c)
            m |= 1ULL << i;
    return m;
}

static inline void mr_scan_init(MrScan *s, const char *p, const char *end, char a, char b, char c)
{
    s->end = end;
    s->a = a;
    s->b = b;
    s->c = c;
#ifdef MR_VW
    s->va = mr_vsplat(a);
    s->vb = mr_vsplat(b);
    s->vc = mr_vsplat(c);
#endif
    s->base = p;
    s->m = mr_scan_block(s, p);
    s->resume = NULL;
}

/* First structural byte at or after p, or end. */
static inline const char *mr_scan_next(MrScan *s, const char *p)
{
    for (;;) {
        ptrdiff_t d = p - s->base;
        if (d < 64) {
            uint64_t m = s->m & (~0ULL << d);
            if (m) {
                s->m = m;
                return s->base + __builtin_ctzll(m);
            }
            p = s->base + 64;
        }
        if (p >= s->end)
            return s->end;
        s->base = p;
        s->m = mr_scan_block(s, p);
    }
}

/* The hit after the one returned last, for a caller that goes on right after it
 * (a one-byte separator or a line end): the same as mr_scan_next(s, x + 1), but
 * computed from the mask alone, so that the search for the next field does not
 * wait for the address of this one (about 8% on a 4-column CSV). */
static inline const char *mr_scan_after(MrScan *s)
{
    uint64_t m = s->m & (s->m - 1);
    if (m) {
        s->m = m;
        return s->base + __builtin_ctzll(m);
    }
    return mr_scan_next(s, s->base + 64);
}

/* The csv fast path's view of one 64-byte block at p: bit i of `sep`, `nl` and
 * `quote` is set when p[i] is the separator's first byte, '\n' and the quote
 * (`quote` is 0 when q is 0: no quoting). Reads exactly p[0..63]. Three versions
 * that must give the same masks: AVX-512BW (one compare per mask into a mask
 * register), the 16/32-byte vectors above, and plain C (the reference, and what
 * other architectures get); tests/test_reader_csvfast.c compares them, with the
 * AVX2 and SSE2 ones compiled apart (tests/variants/csvscan_*.c). */
typedef struct MrCsvMasks {
    uint64_t sep, nl, quote;
} MrCsvMasks;

static inline MrCsvMasks mr_csv_masks_c(const char *p, char s0, char q)
{
    MrCsvMasks m = {0, 0, 0};
    for (int i = 0; i < 64; i++) {
        m.sep |= (uint64_t)(p[i] == s0) << i;
        m.nl |= (uint64_t)(p[i] == '\n') << i;
        m.quote |= (uint64_t)(q && p[i] == q) << i;
    }
    return m;
}

#if defined(__AVX512BW__)
#define MR_CSV_MASKS_KIND "avx512bw"
#elif defined(MR_VW)
#define MR_CSV_MASKS_KIND (MR_VW == 32 ? "avx2" : "sse2")
#else
#define MR_CSV_MASKS_KIND "c"
#endif

static inline MrCsvMasks mr_csv_masks(const char *p, char s0, char q)
{
#if defined(__AVX512BW__)
    const __m512i x = _mm512_loadu_si512((const void *)p);
    /* Without quoting q is 0 and would match NUL bytes: the AND drops those. */
    const uint64_t qon = q ? ~0ULL : 0;
    return (MrCsvMasks){_mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8(s0)),
                        _mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8('\n')),
                        _mm512_cmpeq_epi8_mask(x, _mm512_set1_epi8(q)) & qon};
#elif defined(MR_VW)
    const MrVec vs = mr_vsplat(s0), vn = mr_vsplat('\n'), vq = mr_vsplat(q);
    MrCsvMasks m = {0, 0, 0};
    for (int i = 0; i < 64; i += MR_VW) {
        MrVec x = mr_vload(p + i);
        m.sep |= (uint64_t)mr_vmask(mr_veq(x, vs)) << i;
        m.nl |= (uint64_t)mr_vmask(mr_veq(x, vn)) << i;
        m.quote |= (uint64_t)mr_vmask(mr_veq(x, vq)) << i;
    }
    if (!q)
        m.quote = 0;
    return m;
#else
    return mr_csv_masks_c(p, s0, q);
#endif
}

/* Position of set bit n (0-based) of x, which has more than n bits set, given
 * bit = 1 << n. BMI2's pdep deposits that bit onto the n-th set bit of x in one
 * instruction (fast on Zen 3+ and Intel; microcoded, tens of cycles, on Zen 1/2,
 * which -march=native names, so those clear n bits instead, as does any CPU
 * without BMI2). */
static inline int mr_bit_deposit(uint64_t x, uint64_t bit)
{
#if defined(__BMI2__) && !defined(__znver1__) && !defined(__znver2__)
    return __builtin_ctzll(_pdep_u64(bit, x));
#else
    for (; bit > 1; bit >>= 1)
        x &= x - 1;
    return __builtin_ctzll(x);
#endif
}

static inline int mr_bit_select(uint64_t x, int n)
{
    return mr_bit_deposit(x, 1ULL << n);
}

static inline const char *mr_find1(const char *p, const char *end, char a)
{
    const char *x = p < end ? memchr(p, a, (size_t)(end - p)) : NULL;
    return x ? x : end;
}

#define MR_REASON_SIZE 512

struct MrReader {
    MrReaderSpec spec;
    int ready;              /* columns resolved: mr_reader_parse may run */
    int col_idx[MR_NCOLS];  /* csv/delimited: field index of each column, -1 = not configured */
    int col_slot[MR_NCOLS]; /* csv/delimited: slot of the column in need[], -1 = none */
    int need[MR_NCOLS];     /* csv/delimited: sorted distinct field indices the columns use */
    int nneed;
    size_t name_len[MR_NCOLS]; /* jsonl: length of spec.cols[c].name, 0 = not configured */
    char *scratch;             /* unescaped field bytes of the current record */
    size_t scratch_cap;
    char reason[MR_REASON_SIZE]; /* bad_reason text of the current record */
    /* csv/delimited fast path (reader_csv.c csv_fast): fields it delimits per record
     * (the last configured field index + 1), 0 when it cannot run (a multi-byte
     * separator, a field index of 64 or more, columns not resolved yet) or is
     * switched off (MR_CSV_FAST_OFF: tests compare with the record loop). */
    int csv_nfast;
    int csv_fast_mode;        /* MR_CSV_FAST_* */
    int64_t csv_fast_records; /* records the fast path delivered (tests check it ran) */
};

/* Recompute r->csv_nfast from the spec and need[] (after plan_fields). Without
 * vector compares (neither SSE2 nor AVX-512BW) the fast path is off: a 64-byte
 * plain-C block per record is unlikely to beat the record loop (not measured). */
void mr_reader_csv_plan(MrReader *r);

/* Tests only: how csv/delimited parsing uses the fast path. AUTO (the default)
 * gives it up for the rest of a buffer where it finds little to do; OFF: the record
 * loop alone (the reference); ALWAYS: never given up (the most fast records). */
enum { MR_CSV_FAST_AUTO = 0, MR_CSV_FAST_OFF, MR_CSV_FAST_ALWAYS };
void mr_reader_csv_fast_mode(MrReader *r, int mode);

/* The config key of a column, for messages ("rating" -> data.columns.rating). */
extern const char *const mr_reader_col_key[MR_NCOLS];

/* Make r->scratch hold at least n bytes (its old contents are not kept).
 * Returns 0, or -1 when memory runs out. */
int mr_reader_scratch(MrReader *r, size_t n);

/* A header field seen by the csv scanner in "all fields" mode (header lines). */
typedef struct MrHdrField {
    const char *p; /* raw bytes, quotes removed but "" not yet undoubled */
    size_t len;
    int dq; /* 1 when the field holds doubled quotes */
} MrHdrField;

typedef struct MrHdrSink {
    MrHdrField *f;
    int n, cap;
    int oom; /* an allocation failed */
} MrHdrSink;

/* Scan one record that starts at buf[s] (not an empty line). Returns 1 and sets
 * *next (index after the record and its line break) and *nl (line breaks inside
 * it, terminator included) when the record is complete; 0 when it continues past
 * len and !at_eof (nothing else is touched); -1 when memory runs out. With a
 * non-NULL `all`, every field is appended to it instead of filling rec. */
int mr_reader_csv_record(MrReader *r, const char *buf, size_t len, size_t s, int at_eof,
                         MrRecord *rec, size_t *next, int64_t *nl, MrHdrSink *all);
int mr_reader_jsonl_record(MrReader *r, const char *buf, size_t len, size_t s, int at_eof,
                           MrRecord *rec, size_t *next, int64_t *nl);

/* Undouble the quotes of a quoted csv field into out (room for len bytes); returns
 * the new length. */
size_t mr_reader_csv_undouble(char *out, const char *p, size_t len, char quote);

int mr_reader_csv_parse(MrReader *r, const char *buf, size_t len, int64_t buf_offset, int64_t line,
                        int64_t stop_offset, int at_eof, MrRecordFn fn, void *userdata,
                        size_t *consumed, int64_t *next_line, int *done);
int mr_reader_jsonl_parse(MrReader *r, const char *buf, size_t len, int64_t buf_offset,
                          int64_t line, int64_t stop_offset, int at_eof, MrRecordFn fn,
                          void *userdata, size_t *consumed, int64_t *next_line, int *done);

/* ctx: the format's per-call scanning state (reader_csv.c: an MrScan, unused for
 * jsonl). */
typedef int (*MrRecScanFn)(MrReader *r, void *ctx, const char *buf, size_t len, size_t s,
                           int at_eof, MrRecord *rec, size_t *next, int64_t *nl);

/* A format's fast path for runs of ordinary records (NULL: none), with its own
 * state (ctx): parses records from buf[pos] while it can, delivering them to fn,
 * and returns the position of the first one it leaves to the record loop (pos
 * itself when it parses none). *line: the line of buf[pos], advanced past what it
 * parsed; *rc: the callback's non-zero value, when one stopped it; *quit = 1: the
 * loop is to stop there (done = 0) and let its caller go on without the fast
 * path. It must give exactly what the loop would (records, offsets, lines), and
 * stop before a record start >= stop_offset. */
typedef size_t (*MrRecFastFn)(MrReader *r, void *ctx, const char *buf, size_t len, size_t pos,
                              int64_t buf_offset, int64_t stop_offset, int64_t *line, MrRecordFn fn,
                              void *userdata, int *rc, int *quit);

/* The record loop of mr_reader_parse, instantiated once per format so that the
 * record scanner is called directly (and can be inlined) in the hot loop. */
static inline int mr_reader_loop(MrReader *r, const char *buf, size_t len, int64_t buf_offset,
                                 int64_t line, int64_t stop_offset, int at_eof, MrRecordFn fn,
                                 void *userdata, size_t *consumed, int64_t *next_line, int *done,
                                 MrRecScanFn scan, void *ctx, MrRecFastFn fast, void *fast_ctx,
                                 int *quit)
{
    size_t pos = 0;
    int rc = 0;
    *done = 0;
    /* A BOM is never part of a record, even when a caller starts at offset 0
     * instead of at the data_start the header function returned. */
    if (buf_offset == 0 && len >= 3 && (unsigned char)buf[0] == 0xEF &&
        (unsigned char)buf[1] == 0xBB && (unsigned char)buf[2] == 0xBF)
        pos = 3;
    for (;;) {
        if (fast) {
            pos = fast(r, fast_ctx, buf, len, pos, buf_offset, stop_offset, &line, fn, userdata,
                       &rc, quit);
            if (rc != 0 || *quit)
                break;
        }
        if (pos >= len) {
            if (at_eof || buf_offset + (int64_t)pos >= stop_offset)
                *done = 1;
            break;
        }
        if (buf_offset + (int64_t)pos >= stop_offset) {
            *done = 1;
            break;
        }
        /* Empty lines ("" or "\r") are not records. */
        if (buf[pos] == '\n') {
            pos++;
            line++;
            continue;
        }
        if (buf[pos] == '\r') {
            if (pos + 1 < len) {
                if (buf[pos + 1] == '\n') {
                    pos += 2;
                    line++;
                    continue;
                }
            } else if (!at_eof) {
                break; /* "\r" then the end of buf: empty line or not, we cannot tell yet */
            } else {
                pos++; /* a lone "\r" as the file's last line */
                continue;
            }
        }
        MrRecord rec;
        size_t next;
        int64_t nl;
        int k = scan(r, ctx, buf, len, pos, at_eof, &rec, &next, &nl);
        if (k == 0)
            break;
        if (k < 0) {
            rc = MR_ENOMEM;
            break;
        }
        rec.offset = buf_offset + (int64_t)pos;
        rec.line = line;
        rc = fn(&rec, userdata);
        pos = next;
        line += nl;
        if (rc != 0)
            break;
    }
    *consumed = pos;
    *next_line = line;
    return rc;
}

#endif
