/* reader.c — the reader object, header resolution, the sharding helpers and the
 * strict number conversion. The record grammars live in reader_csv.c and
 * reader_jsonl.c.
 *
 * Sharding is three pure functions so that the MPI driver (data/ingest.c) and the
 * unit tests run the very same code: ranges by integer arithmetic, a vectorised
 * count of quotes and newlines (the exclusive scans of these counts tell a rank
 * whether it starts inside quotes and on which line), and a search for the first
 * record start after the range start. Nothing here reads files or calls MPI.
 *
 * mr_parse_double accepts exactly a decimal number with optional sign, fraction
 * and exponent (surrounding blanks allowed) and refuses everything strtod would
 * also take but a rating must not be: hex, inf, nan, partial parses, overflow.
 * Short inputs are converted exactly without strtod (Clinger's fast path); the
 * rest goes to strtod_l in the C locale, so a caller's setlocale cannot turn
 * "4.5" into 4.
 */
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/reader_impl.h"

const char *const mr_reader_col_key[MR_NCOLS] = {"user", "item", "rating", "text", "timestamp"};

/* ---------------------------------------------------------------------------
 * Lifecycle
 * ------------------------------------------------------------------------- */

void mr_reader_spec_from_config(MrReaderSpec *s, const MrConfig *c)
{
    memset(s, 0, sizeof *s);
    s->format = c->data.format;
    size_t n = strnlen(c->data.separator, sizeof c->data.separator);
    if (n >= sizeof s->sep)
        n = sizeof s->sep - 1;
    memcpy(s->sep, c->data.separator, n);
    s->sep_len = n;
    /* JSON Lines: every '\n' ends a record (a JSON string holds no raw newline, and
     * its \" escapes would break quote parity), so sharding must not count quotes. */
    s->quote = s->format == MR_FMT_JSONL ? 0 : c->data.quote[0];
    s->header = s->format == MR_FMT_JSONL ? 0 : c->data.header;
    s->cols[MR_COL_USER] = c->data.columns.user;
    s->cols[MR_COL_ITEM] = c->data.columns.item;
    s->cols[MR_COL_RATING] = c->data.columns.rating;
    s->cols[MR_COL_TEXT] = c->data.columns.text;
    s->cols[MR_COL_TIME] = c->data.columns.timestamp;
}

/* need[]: the sorted distinct field indices the columns use; col_slot[c]: where. */
static void plan_fields(MrReader *r)
{
    r->nneed = 0;
    for (int c = 0; c < MR_NCOLS; c++) {
        r->col_slot[c] = -1;
        int k = r->col_idx[c];
        if (k < 0)
            continue;
        int i = 0;
        while (i < r->nneed && r->need[i] < k)
            i++;
        if (i < r->nneed && r->need[i] == k)
            continue;
        memmove(r->need + i + 1, r->need + i, (size_t)(r->nneed - i) * sizeof *r->need);
        r->need[i] = k;
        r->nneed++;
    }
    for (int c = 0; c < MR_NCOLS; c++)
        for (int i = 0; i < r->nneed; i++)
            if (r->col_idx[c] >= 0 && r->need[i] == r->col_idx[c])
                r->col_slot[c] = i;
    mr_reader_csv_plan(r);
}

int mr_reader_create(MrReader **out, const MrReaderSpec *spec, MrErr *e)
{
    *out = NULL;
    const int jsonl = spec->format == MR_FMT_JSONL;
    if (spec->format != MR_FMT_CSV && spec->format != MR_FMT_DELIMITED && !jsonl)
        return mr_err_set(e, MR_ECONFIG, "reader: unknown data.format %d", (int)spec->format);
    if (jsonl && spec->quote)
        return mr_err_set(e, MR_ECONFIG,
                          "reader: JSON Lines needs quote = 0 (every newline ends a record)");
    if (!jsonl) {
        if (spec->sep_len == 0 || spec->sep_len >= sizeof spec->sep)
            return mr_err_set(e, MR_ECONFIG, "reader: the separator must be 1 to %d bytes",
                              (int)sizeof spec->sep - 1);
        for (size_t i = 0; i < spec->sep_len; i++) {
            char c = spec->sep[i];
            if (c == '\n' || c == '\r' || c == '\0' || (spec->quote && c == spec->quote))
                return mr_err_set(e, MR_ECONFIG,
                                  "reader: the separator must not contain a NUL, a line break "
                                  "or the quote character");
        }
        if (spec->quote == '\n' || spec->quote == '\r')
            return mr_err_set(e, MR_ECONFIG, "reader: the quote cannot be a line break");
    }
    for (int c = 0; c < MR_NCOLS; c++) {
        const MrColumn *col = &spec->cols[c];
        if (jsonl && col->index >= 0 && !col->name[0])
            return mr_err_set(e, MR_ECONFIG,
                              "data.columns.%s = %d: JSON Lines fields are named, not indexed",
                              mr_reader_col_key[c], col->index);
        if (!jsonl && !spec->header && col->name[0])
            return mr_err_set(e, MR_ECONFIG,
                              "data.columns.%s = \"%s\": the file has no header, so columns "
                              "are 0-based indices",
                              mr_reader_col_key[c], col->name);
    }
    MrReader *r = calloc(1, sizeof *r);
    if (!r)
        return mr_err_set(e, MR_ENOMEM, "reader: out of memory");
    r->spec = *spec;
    for (int c = 0; c < MR_NCOLS; c++) {
        const MrColumn *col = &spec->cols[c];
        r->col_idx[c] = !jsonl && !col->name[0] && col->index >= 0 ? col->index : -1;
        r->name_len[c] = jsonl ? strnlen(col->name, sizeof col->name) : 0;
    }
    plan_fields(r);
    /* A header file's named columns are resolved by mr_reader_header. */
    r->ready = jsonl || !spec->header;
    *out = r;
    return MR_OK;
}

void mr_reader_destroy(MrReader **r)
{
    if (!r || !*r)
        return;
    free((*r)->scratch);
    free(*r);
    *r = NULL;
}

int mr_reader_scratch(MrReader *r, size_t n)
{
    if (n <= r->scratch_cap)
        return 0;
    /* Grow at least geometrically: a caller retrying ever longer records must not
     * pay a reallocation for each. */
    size_t cap = r->scratch_cap * 2 > n ? r->scratch_cap * 2 : n;
    char *p = malloc(cap);
    if (!p)
        return -1;
    free(r->scratch);
    r->scratch = p;
    r->scratch_cap = cap;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Header
 * ------------------------------------------------------------------------- */

static int is_bom(const char *b, size_t len)
{
    return len >= 3 && (unsigned char)b[0] == 0xEF && (unsigned char)b[1] == 0xBB &&
           (unsigned char)b[2] == 0xBF;
}

/* "a,b,c" into out (cap bytes), ending in ",..." when it does not fit. */
static void join_names(char *out, size_t cap, char **names, int n)
{
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if (o + len + (i ? 1 : 0) + 5 > cap) {
            snprintf(out + o, cap - o, "%s...", i ? "," : "");
            return;
        }
        if (i)
            out[o++] = ',';
        memcpy(out + o, names[i], len);
        o += len;
        out[o] = '\0';
    }
}

static int resolve_header(MrReader *r, const char *path, char **names, int n, MrErr *e)
{
    for (int c = 0; c < MR_NCOLS; c++) {
        const MrColumn *col = &r->spec.cols[c];
        if (col->name[0]) {
            int k = -1;
            /* First match wins: with a duplicate name, pandas calls the second "x.1". */
            for (int i = 0; i < n && k < 0; i++)
                if (strcmp(names[i], col->name) == 0)
                    k = i;
            if (k < 0) {
                char list[640];
                join_names(list, sizeof list, names, n);
                return mr_err_set(e, MR_EDATA,
                                  "column '%s' (data.columns.%s) not found in header of %s; "
                                  "columns are: %s",
                                  col->name, mr_reader_col_key[c], path, list);
            }
            r->col_idx[c] = k;
        } else if (col->index >= 0) {
            if (col->index >= n) {
                char list[640];
                join_names(list, sizeof list, names, n);
                return mr_err_set(e, MR_EDATA,
                                  "data.columns.%s = %d, but the header of %s has %d column%s: "
                                  "%s",
                                  mr_reader_col_key[c], col->index, path, n, n == 1 ? "" : "s",
                                  list);
            }
            r->col_idx[c] = col->index;
        } else {
            r->col_idx[c] = -1;
        }
    }
    plan_fields(r);
    return MR_OK;
}

int mr_reader_header(MrReader *r, const char *path, const char *buf, size_t len, int at_eof,
                     int64_t *data_start, int *need_more, MrErr *e)
{
    *need_more = 0;
    *data_start = 0;
    if (!path)
        path = "(input)";
    if (len < 3 && !at_eof) {
        *need_more = 1; /* cannot tell a BOM from data yet */
        return MR_OK;
    }
    size_t bom = is_bom(buf, len) ? 3 : 0, pos = bom;
    while (pos < len) {
        if (buf[pos] == '\n') {
            pos++;
        } else if (buf[pos] == '\r' && pos + 1 < len && buf[pos + 1] == '\n') {
            pos += 2;
        } else if (buf[pos] == '\r' && pos + 1 == len) {
            if (!at_eof) {
                *need_more = 1;
                return MR_OK;
            }
            pos++;
        } else {
            break;
        }
    }
    if (pos >= len) {
        if (!at_eof) {
            *need_more = 1;
            return MR_OK;
        }
        if (len == bom)
            return mr_err_set(e, MR_EDATA, "empty file: %s has no data (%zu bytes)", path, len);
        return mr_err_set(e, MR_EDATA, "empty file: %s holds only blank lines", path);
    }
    if (!r->spec.header) {
        *data_start = (int64_t)bom;
        return MR_OK;
    }

    MrHdrSink sink = {NULL, 0, 0, 0};
    MrRecord rec;
    size_t next = 0;
    int64_t nl = 0;
    char **names = NULL;
    int rc = MR_OK;
    int k = mr_reader_csv_record(r, buf, len, pos, at_eof, &rec, &next, &nl, &sink);
    if (k == 0) {
        *need_more = 1;
        goto out;
    }
    if (k < 0) {
        rc = mr_err_set(e, MR_ENOMEM, "reading the header of %s: out of memory", path);
        goto out;
    }
    if (rec.bad_reason) {
        rc = mr_err_set(e, MR_EDATA, "malformed header line in %s: %s", path, rec.bad_reason);
        goto out;
    }
    names = calloc((size_t)sink.n, sizeof *names);
    if (!names) {
        rc = mr_err_set(e, MR_ENOMEM, "reading the header of %s: out of memory", path);
        goto out;
    }
    for (int i = 0; i < sink.n; i++) {
        const MrHdrField *f = &sink.f[i];
        names[i] = malloc(f->len + 1);
        if (!names[i]) {
            rc = mr_err_set(e, MR_ENOMEM, "reading the header of %s: out of memory", path);
            goto out;
        }
        size_t n = f->dq ? mr_reader_csv_undouble(names[i], f->p, f->len, r->spec.quote)
                         : (memcpy(names[i], f->p, f->len), f->len);
        names[i][n] = '\0';
    }
    rc = resolve_header(r, path, names, sink.n, e);
    if (rc == MR_OK) {
        *data_start = (int64_t)next;
        r->ready = 1;
    }
out:
    if (names)
        for (int i = 0; i < sink.n; i++)
            free(names[i]);
    free(names);
    free(sink.f);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Records
 * ------------------------------------------------------------------------- */

int mr_reader_parse(MrReader *r, const char *buf, size_t len, int64_t buf_offset, int64_t line,
                    int64_t stop_offset, int at_eof, MrRecordFn fn, void *userdata,
                    size_t *consumed, int64_t *next_line, int *done)
{
    if (!r->ready) {
        /* Named columns are not resolved: mr_reader_header was not called. */
        *consumed = 0;
        *next_line = line;
        *done = 0;
        return MR_EINTERNAL;
    }
    if (r->spec.format == MR_FMT_JSONL)
        return mr_reader_jsonl_parse(r, buf, len, buf_offset, line, stop_offset, at_eof, fn,
                                     userdata, consumed, next_line, done);
    return mr_reader_csv_parse(r, buf, len, buf_offset, line, stop_offset, at_eof, fn, userdata,
                               consumed, next_line, done);
}

/* ---------------------------------------------------------------------------
 * Sharding
 * ------------------------------------------------------------------------- */

/* floor(r * S / P) without the overflow of r * S: S = qP + m gives rq + floor(rm/P). */
static int64_t split_point(int64_t S, int64_t r, int64_t P)
{
    return (S / P) * r + (S % P) * r / P;
}

void mr_shard_range(int64_t size, int r, int P, int64_t *lo, int64_t *hi)
{
    if (P < 1 || size < 0 || r < 0 || r >= P) { /* programmer error: an empty range */
        *lo = *hi = 0;
        return;
    }
    *lo = split_point(size, r, P);
    *hi = split_point(size, (int64_t)r + 1, P);
}

void mr_shard_count(const char *buf, size_t len, char quote, int64_t *quotes, int64_t *newlines)
{
    int64_t nq = 0, nn = 0;
    size_t i = 0;
#ifdef MR_VW
    /* Byte-wide counters (cmpeq gives -1 per hit, so subtracting adds one), folded
     * into 64-bit sums before they can wrap at 255. */
    const MrVec vq = mr_vsplat(quote), vn = mr_vsplat('\n');
#if MR_VW == 32
    const __m256i zero = _mm256_setzero_si256();
    __m256i tq = zero, tn = zero;
    while (len - i >= 32) {
        size_t blocks = (len - i) / 32;
        if (blocks > 255)
            blocks = 255;
        __m256i aq = zero, an = zero;
        for (size_t b = 0; b < blocks; b++, i += 32) {
            __m256i x = mr_vload(buf + i);
            aq = _mm256_sub_epi8(aq, _mm256_cmpeq_epi8(x, vq));
            an = _mm256_sub_epi8(an, _mm256_cmpeq_epi8(x, vn));
        }
        tq = _mm256_add_epi64(tq, _mm256_sad_epu8(aq, zero));
        tn = _mm256_add_epi64(tn, _mm256_sad_epu8(an, zero));
    }
    int64_t sq[4], sn[4];
    _mm256_storeu_si256((__m256i *)sq, tq);
    _mm256_storeu_si256((__m256i *)sn, tn);
    nq = sq[0] + sq[1] + sq[2] + sq[3];
    nn = sn[0] + sn[1] + sn[2] + sn[3];
#else
    const __m128i zero = _mm_setzero_si128();
    __m128i tq = zero, tn = zero;
    while (len - i >= 16) {
        size_t blocks = (len - i) / 16;
        if (blocks > 255)
            blocks = 255;
        __m128i aq = zero, an = zero;
        for (size_t b = 0; b < blocks; b++, i += 16) {
            __m128i x = mr_vload(buf + i);
            aq = _mm_sub_epi8(aq, _mm_cmpeq_epi8(x, vq));
            an = _mm_sub_epi8(an, _mm_cmpeq_epi8(x, vn));
        }
        tq = _mm_add_epi64(tq, _mm_sad_epu8(aq, zero));
        tn = _mm_add_epi64(tn, _mm_sad_epu8(an, zero));
    }
    int64_t sq[2], sn[2];
    _mm_storeu_si128((__m128i *)sq, tq);
    _mm_storeu_si128((__m128i *)sn, tn);
    nq = sq[0] + sq[1];
    nn = sn[0] + sn[1];
#endif
#endif
    for (; i < len; i++) {
        nq += buf[i] == quote;
        nn += buf[i] == '\n';
    }
    *quotes = quote ? nq : 0;
    *newlines = nn;
}

int64_t mr_shard_first_record(const char *buf, size_t len, char quote, int in_quotes,
                              int prev_is_newline)
{
    if (!quote)
        in_quotes = 0;
    if (prev_is_newline && !in_quotes)
        return 0;
    const char *end = buf + len, *p = buf;
    const char qs = quote ? quote : '\n';
    int par = in_quotes;
    for (;;) {
        const char *x = mr_find2(p, end, '\n', qs);
        if (x == end)
            return -1;
        if (*x == '\n') {
            if (!par)
                return x + 1 - buf;
        } else {
            par ^= 1;
        }
        p = x + 1;
    }
}

/* ---------------------------------------------------------------------------
 * Numbers
 * ------------------------------------------------------------------------- */

static locale_t c_locale(void)
{
    static locale_t loc = (locale_t)0;
    locale_t l = __atomic_load_n(&loc, __ATOMIC_ACQUIRE);
    if (l)
        return l;
    locale_t fresh = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    if (!fresh)
        return (locale_t)0;
    locale_t expected = (locale_t)0;
    if (!__atomic_compare_exchange_n(&loc, &expected, fresh, 0, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        freelocale(fresh); /* another thread won the race */
        return expected;
    }
    return fresh;
}

/* Mantissas below this times 10 plus a digit stay below 2^53 (exact in a double). */
#define MANT_LIMIT ((1ULL << 53) / 10 - 1)

/* If p[0..8) are 8 ASCII digits, their value (p[0] most significant) in *v. All
 * eight at once: a byte is a digit when its high nibble is 3 and adding 6 keeps
 * it there; then neighbouring digits are combined in pairs, pairs into fours,
 * fours into the eight (multiplications that add shifted copies in one step). */
static inline int digits8(const char *p, uint64_t *v)
{
    uint64_t w;
    memcpy(&w, p, 8); /* little-endian: p[0] is the low byte */
    const uint64_t hi = 0xF0F0F0F0F0F0F0F0ULL;
    if (((w & hi) | (((w + 0x0606060606060606ULL) & hi) >> 4)) != 0x3333333333333333ULL)
        return 0;
    w -= 0x3030303030303030ULL;
    w = w * 10 + (w >> 8); /* byte 2k: 10 * d[2k] + d[2k+1] */
    uint64_t pairs01 = w & 0x000000FF000000FFULL, pairs23 = (w >> 16) & 0x000000FF000000FFULL;
    *v = (pairs01 * (100 + (1000000ULL << 32)) + pairs23 * (1 + (10000ULL << 32))) >> 32;
    return 1;
}

int mr_parse_double(const char *p, size_t len, double *out)
{
    /* Fast path: an unsigned integer of at most 15 digits (ratings, Unix times) is
     * exact in a double; the same value the general path below gives. */
    if (len - 1 < 15) {
        uint64_t m = 0;
        size_t i = 0;
        if (len >= 8 && digits8(p, &m))
            i = 8;
        for (; i < len; i++) {
            unsigned d = (unsigned)(unsigned char)p[i] - '0';
            if (d > 9)
                break;
            m = m * 10 + d;
        }
        if (i == len) {
            *out = (double)m;
            return MR_OK;
        }
    }
    const char *s = p, *e = p + len;
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    const char *q = s;
    int neg = 0;
    if (q < e && (*q == '+' || *q == '-'))
        neg = *q++ == '-';
    /* Grammar: digits [. digits] [e [sign] digits], at least one mantissa digit.
     * The mantissa is accumulated while it stays exact (< 2^53). */
    uint64_t m = 0;
    int digits = 0, exact = 1, frac = 0;
    for (; q < e && *q >= '0' && *q <= '9'; q++, digits++) {
        if (m < MANT_LIMIT)
            m = m * 10 + (uint64_t)(*q - '0');
        else
            exact = 0;
    }
    if (q < e && *q == '.') {
        q++;
        for (; q < e && *q >= '0' && *q <= '9'; q++, digits++, frac++) {
            if (m < MANT_LIMIT)
                m = m * 10 + (uint64_t)(*q - '0');
            else
                exact = 0;
        }
    }
    if (digits == 0)
        return MR_EDATA;
    long ex = 0;
    if (q < e && (*q == 'e' || *q == 'E')) {
        q++;
        int eneg = 0;
        if (q < e && (*q == '+' || *q == '-'))
            eneg = *q++ == '-';
        if (q >= e || *q < '0' || *q > '9')
            return MR_EDATA;
        for (; q < e && *q >= '0' && *q <= '9'; q++)
            if (ex < 100000)
                ex = ex * 10 + (*q - '0');
        if (eneg)
            ex = -ex;
    }
    if (q != e)
        return MR_EDATA;
    long e10 = ex - frac;
    static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    double v;
    if (exact && e10 >= -22 && e10 <= 22) {
        /* m and 10^|e10| are exact doubles, so one IEEE operation rounds correctly. */
        v = e10 >= 0 ? (double)m * pow10[e10] : (double)m / pow10[-e10];
        if (neg)
            v = -v;
    } else {
        size_t n = (size_t)(e - s);
        char small[128];
        char *tmp = n < sizeof small ? small : malloc(n + 1);
        if (!tmp)
            return MR_ENOMEM;
        memcpy(tmp, s, n);
        tmp[n] = '\0';
        locale_t loc = c_locale();
        char *stop = NULL;
        v = loc ? strtod_l(tmp, &stop, loc) : strtod(tmp, &stop);
        int whole = stop == tmp + n;
        if (tmp != small)
            free(tmp);
        if (!whole)
            return MR_EDATA;
    }
    if (!isfinite(v))
        return MR_EDATA;
    *out = v;
    return MR_OK;
}
