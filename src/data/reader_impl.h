/* reader_impl.h — private to src/data/reader*.c: the reader object, the byte
 * scanners every format shares, and the record loop.
 *
 * The scanners find the first of one to three byte values with 16/32-byte vector
 * compares (SSE2 is always there on x86-64, AVX2 when the build targets it) and a
 * plain loop for the last few bytes and for other architectures. They never read
 * past `end`, so a caller may hand them any slice of a buffer.
 */
#ifndef MPIREC_READER_IMPL_H
#define MPIREC_READER_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mpirec/reader.h"

#if defined(__AVX2__)
#include <immintrin.h>
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
};

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

/* ctx: the format's per-call scanning state (an MrScan for csv, unused for jsonl). */
typedef int (*MrRecScanFn)(MrReader *r, void *ctx, const char *buf, size_t len, size_t s,
                           int at_eof, MrRecord *rec, size_t *next, int64_t *nl);

/* The record loop of mr_reader_parse, instantiated once per format so that the
 * record scanner is called directly (and can be inlined) in the hot loop. */
static inline int mr_reader_loop(MrReader *r, const char *buf, size_t len, int64_t buf_offset,
                                 int64_t line, int64_t stop_offset, int at_eof, MrRecordFn fn,
                                 void *userdata, size_t *consumed, int64_t *next_line, int *done,
                                 MrRecScanFn scan, void *ctx)
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
