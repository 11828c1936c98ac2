/* reader_jsonl.c — JSON Lines records: one JSON object per line, fields by name.
 *
 * Approach: a validating single-pass scanner over the line, not a tree. Top-level
 * keys are compared with the configured names; the value of a configured key is
 * kept as a slice (string, number, true/false, null, or the raw text of an object
 * or array, reported as MR_VAL_OTHER); every other value is skipped, containers
 * with an explicit depth stack (no recursion: a hostile line cannot overflow the C
 * stack; nesting is capped at MAX_DEPTH and reported). Strings are scanned with
 * the vector scanner for '"' and '\\', so long review texts cost little. Only a
 * configured string that holds escapes is unescaped, into the reader's scratch
 * buffer, after the whole line has been validated.
 *
 * Decisions (documented in docs/formats.md):
 *  - the whole line must be valid JSON (RFC 8259) and an object; anything else is a
 *    bad record with the byte position of the problem; a line that ends early is
 *    reported as "truncated JSON" (a file cut in the middle of a record);
 *  - a duplicate key: the last value wins (as Python's json does);
 *  - NaN/Infinity literals are syntax errors (they are not JSON);
 *  - raw control bytes inside strings are passed through (lenient), bytes are not
 *    checked to be UTF-8;
 *  - \uXXXX becomes UTF-8, surrogate pairs are combined, a lone surrogate becomes
 *    U+FFFD (it has no UTF-8 form).
 */
#include <stdio.h>
#include <string.h>

#include "data/reader_impl.h"

#define MAX_DEPTH 1024

typedef struct JLine {
    MrReader *r;
    const char *s; /* first byte of the line (for byte positions in messages) */
    const char *e; /* end of the line (its '\n', or the end of the file) */
} JLine;

static inline const char *jws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

static inline int isdig(char c)
{
    return c >= '0' && c <= '9';
}

static inline int ishex(char c)
{
    return isdig(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* Record a syntax problem at `at` (where `what` was expected); returns NULL so
 * that scanners can `return jfail(...)`. Running off the end of the line is
 * truncation, anything else a syntax error. */
static const char *jfail(JLine *L, const char *at, const char *what)
{
    if (at >= L->e) {
        snprintf(L->r->reason, sizeof L->r->reason,
                 "truncated JSON: the line ends (after %lld bytes) where %s was expected",
                 (long long)(L->e - L->s), what);
    } else {
        unsigned char c = (unsigned char)*at;
        char shown[8];
        if (c >= 0x20 && c < 0x7f)
            snprintf(shown, sizeof shown, "'%c'", c);
        else
            snprintf(shown, sizeof shown, "0x%02x", c);
        snprintf(L->r->reason, sizeof L->r->reason,
                 "JSON syntax error at byte %lld of the line: expected %s, found %s",
                 (long long)(at - L->s) + 1, what, shown);
    }
    return NULL;
}

static const char *unterminated(JLine *L, const char *open)
{
    snprintf(L->r->reason, sizeof L->r->reason,
             "truncated JSON: unterminated string (the string that starts at byte %lld runs "
             "to the end of the line)",
             (long long)(open - L->s) + 1);
    return NULL;
}

/* p: just after an opening '"'. Returns the closing '"' or NULL. *esc = 1 when the
 * string holds escapes. */
static __attribute__((noinline)) const char *jstr_slow(JLine *L, const char *p, int *esc)
{
    const char *e = L->e, *open = p - 1;
    for (;;) {
        const char *x = mr_find2(p, e, '"', '\\');
        if (x == e)
            return unterminated(L, open);
        if (*x == '"')
            return x;
        *esc = 1;
        if (x + 1 >= e)
            return unterminated(L, open);
        switch (x[1]) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            p = x + 2;
            break;
        case 'u':
            for (int i = 2; i < 6; i++) {
                if (x + i >= e)
                    return unterminated(L, open);
                if (!ishex(x[i]))
                    return jfail(L, x + i, "a hex digit of a \\u escape");
            }
            p = x + 6;
            break;
        default:
            return jfail(L, x + 1, "an escape character (one of \"\\/bfnrtu) after '\\'");
        }
    }
}

/* The common case inline (no escape before the closing quote), the rest out of line. */
static inline const char *jstr(JLine *L, const char *p, int *esc)
{
    const char *x = mr_find2(p, L->e, '"', '\\');
    if (x < L->e && *x == '"')
        return x;
    return jstr_slow(L, p, esc);
}

static const char *jnum(JLine *L, const char *p)
{
    const char *e = L->e;
    if (p < e && *p == '-')
        p++;
    if (p >= e)
        return jfail(L, p, "a digit");
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < e && isdig(*p))
            p++;
    } else {
        return jfail(L, p, "a value (string, number, object, array, true, false or null)");
    }
    if (p < e && *p == '.') {
        p++;
        if (p >= e || !isdig(*p))
            return jfail(L, p, "a digit after the decimal point");
        while (p < e && isdig(*p))
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || !isdig(*p))
            return jfail(L, p, "a digit in the exponent");
        while (p < e && isdig(*p))
            p++;
    }
    return p;
}

static const char *jlit(JLine *L, const char *p, const char *word)
{
    size_t n = strlen(word), avail = (size_t)(L->e - p);
    if (avail >= n && memcmp(p, word, n) == 0)
        return p + n;
    if (avail < n && memcmp(p, word, avail) == 0)
        return jfail(L, L->e, word[0] == 'n' ? "the rest of null" : "the rest of a boolean");
    return jfail(L, p, "a value (string, number, object, array, true, false or null)");
}

/* Skip one value of any shape that starts at p (whitespace already skipped).
 * Returns the byte after it, or NULL with the reason set. */
static const char *jskip(JLine *L, const char *p)
{
    const char *e = L->e;
    uint64_t is_obj[MAX_DEPTH / 64]; /* bit d: container at depth d is an object */
    int depth = 0;
    for (;;) {
        /* A value starts at p. */
        if (p >= e)
            return jfail(L, p, "a value");
        int want_key = 0;
        char c = *p;
        if (c == '{' || c == '[') {
            if (depth == MAX_DEPTH) {
                snprintf(L->r->reason, sizeof L->r->reason,
                         "JSON nested deeper than %d levels at byte %lld of the line", MAX_DEPTH,
                         (long long)(p - L->s) + 1);
                return NULL;
            }
            uint64_t bit = 1ULL << (depth & 63);
            if (c == '{')
                is_obj[depth >> 6] |= bit;
            else
                is_obj[depth >> 6] &= ~bit;
            depth++;
            p = jws(p + 1, e);
            if (p < e && *p == (c == '{' ? '}' : ']')) {
                depth--;
                p++;
            } else if (c == '{') {
                want_key = 1;
            } else {
                continue; /* the array's first value */
            }
        } else if (c == '"') {
            int esc = 0;
            const char *x = jstr(L, p + 1, &esc);
            if (!x)
                return NULL;
            p = x + 1;
        } else if (c == 't' || c == 'f' || c == 'n') {
            p = jlit(L, p, c == 't' ? "true" : c == 'f' ? "false" : "null");
            if (!p)
                return NULL;
        } else {
            p = jnum(L, p);
            if (!p)
                return NULL;
        }
        /* After a value: close containers, or move on to the next member. */
        while (!want_key) {
            if (depth == 0)
                return p;
            int obj = (int)((is_obj[(depth - 1) >> 6] >> ((depth - 1) & 63)) & 1);
            p = jws(p, e);
            if (p < e && *p == ',') {
                p = jws(p + 1, e);
                if (obj)
                    want_key = 1;
                break;
            }
            if (p < e && *p == (obj ? '}' : ']')) {
                p++;
                depth--;
                continue;
            }
            return jfail(L, p, obj ? "',' or '}'" : "',' or ']'");
        }
        if (want_key) {
            if (p >= e || *p != '"')
                return jfail(L, p, "a string key");
            int esc = 0;
            const char *x = jstr(L, p + 1, &esc);
            if (!x)
                return NULL;
            p = jws(x + 1, e);
            if (p >= e || *p != ':')
                return jfail(L, p, "':' after a key");
            p = jws(p + 1, e);
        }
    }
}

static int hexval(char c)
{
    return isdig(c) ? c - '0' : (c | 0x20) - 'a' + 10;
}

static unsigned hex4(const char *p)
{
    return (unsigned)(hexval(p[0]) << 12 | hexval(p[1]) << 8 | hexval(p[2]) << 4 | hexval(p[3]));
}

static size_t utf8_put(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Unescape the (validated) contents of a JSON string into out, which has room for
 * len bytes: every escape is at least as long as what it stands for. */
static size_t junescape(char *out, const char *p, size_t len)
{
    const char *e = p + len;
    char *o = out;
    while (p < e) {
        const char *x = memchr(p, '\\', (size_t)(e - p));
        if (!x)
            x = e;
        memcpy(o, p, (size_t)(x - p));
        o += x - p;
        p = x;
        if (p == e)
            break;
        char c = p[1];
        p += 2;
        switch (c) {
        case 'b':
            *o++ = '\b';
            break;
        case 'f':
            *o++ = '\f';
            break;
        case 'n':
            *o++ = '\n';
            break;
        case 'r':
            *o++ = '\r';
            break;
        case 't':
            *o++ = '\t';
            break;
        case 'u': {
            unsigned cp = hex4(p);
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && e - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                unsigned lo = hex4(p + 2);
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                } else {
                    cp = 0xFFFD; /* high surrogate without its low half */
                }
            } else if (cp >= 0xD800 && cp <= 0xDFFF) {
                cp = 0xFFFD;
            }
            o += utf8_put(o, cp);
            break;
        }
        default:
            *o++ = c;
            break; /* '"', '\\', '/' */
        }
    }
    return (size_t)(o - out);
}

/* Field names are short: a byte loop beats a call to memcmp for each key. */
static inline int same_bytes(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

/* Bit c set when key [k, k+n) (raw, escapes when esc) names column c. */
static unsigned key_cols(const MrReader *r, const char *k, size_t n, int esc)
{
    /* An escape shrinks at most 6:1, so a raw key longer than this cannot unescape
     * to a configured name (< MR_NAME_MAX bytes). */
    char kb[6 * MR_NAME_MAX];
    if (esc) {
        if (n > sizeof kb)
            return 0;
        n = junescape(kb, k, n);
        k = kb;
    }
    unsigned m = 0;
    for (int c = 0; c < MR_NCOLS; c++)
        if (r->name_len[c] == n && same_bytes(r->spec.cols[c].name, k, n))
            m |= 1u << c;
    return m;
}

typedef struct JVal {
    const char *p;
    size_t len;
    MrValKind kind;
    int esc;
} JVal;

static const char *what_value(char c)
{
    switch (c) {
    case '[':
        return "an array";
    case '"':
        return "a string";
    case 't':
    case 'f':
        return "a boolean";
    case 'n':
        return "null";
    default:
        return isdig(c) || c == '-' ? "a number" : NULL;
    }
}

static inline int jsonl_record(MrReader *r, void *ctx, const char *buf, size_t len, size_t s,
                               int at_eof, MrRecord *rec, size_t *next, int64_t *nl)
{
    (void)ctx;
    const char *b = buf + s, *end = buf + len;
    const char *e = memchr(b, '\n', len - s);
    if (e) {
        *next = (size_t)(e - buf) + 1;
        *nl = 1;
    } else {
        if (!at_eof)
            return 0;
        e = end;
        *next = len;
        *nl = 0;
    }
    JLine L = {r, b, e};
    JVal v[MR_NCOLS];
    for (int c = 0; c < MR_NCOLS; c++)
        v[c] = (JVal){NULL, 0, MR_VAL_ABSENT, 0};
    rec->bad_reason = NULL;
    rec->bad_col = -1;

    const char *p = jws(b, e);
    if (p >= e || *p != '{') {
        const char *what = p < e ? what_value(*p) : "only blanks";
        if (what)
            snprintf(r->reason, sizeof r->reason,
                     "not a JSON object: the line holds %s (each line must be one JSON object)",
                     what);
        else
            jfail(&L, p, "'{' (each line must be one JSON object)");
        goto bad;
    }
    p = jws(p + 1, e);
    if (p < e && *p == '}') {
        p++;
    } else {
        for (;;) {
            if (p >= e || *p != '"') {
                jfail(&L, p, "a string key");
                goto bad;
            }
            int kesc = 0;
            const char *ks = p + 1, *ke = jstr(&L, ks, &kesc);
            if (!ke)
                goto bad;
            p = jws(ke + 1, e);
            if (p >= e || *p != ':') {
                jfail(&L, p, "':' after a key");
                goto bad;
            }
            p = jws(p + 1, e);
            unsigned cols = key_cols(r, ks, (size_t)(ke - ks), kesc);
            JVal val = {p, 0, MR_VAL_OTHER, 0};
            if (p < e && *p == '"') {
                const char *x = jstr(&L, p + 1, &val.esc);
                if (!x)
                    goto bad;
                val.p = p + 1;
                val.len = (size_t)(x - val.p);
                val.kind = MR_VAL_TEXT;
                p = x + 1;
            } else {
                /* Scalars directly; containers (and errors) through the skipper. */
                const char *x = p >= e                   ? jskip(&L, p)
                                : *p == '-' || isdig(*p) ? jnum(&L, p)
                                : *p == 't'              ? jlit(&L, p, "true")
                                : *p == 'f'              ? jlit(&L, p, "false")
                                : *p == 'n'              ? jlit(&L, p, "null")
                                                         : jskip(&L, p);
                if (!x)
                    goto bad;
                val.len = (size_t)(x - p);
                val.kind = *p == '{' || *p == '['   ? MR_VAL_OTHER
                           : *p == 'n'              ? MR_VAL_NULL
                           : *p == 't' || *p == 'f' ? MR_VAL_BOOL
                                                    : MR_VAL_NUMBER;
                p = x;
            }
            for (int c = 0; cols; c++, cols >>= 1)
                if (cols & 1)
                    v[c] = val; /* a later duplicate key replaces an earlier one */
            p = jws(p, e);
            if (p < e && *p == ',') {
                p = jws(p + 1, e);
                continue;
            }
            if (p < e && *p == '}') {
                p++;
                break;
            }
            jfail(&L, p, "',' or '}'");
            goto bad;
        }
    }
    p = jws(p, e);
    if (p < e) {
        snprintf(r->reason, sizeof r->reason,
                 "text after the JSON object at byte %lld of the line (one object per line)",
                 (long long)(p - b) + 1);
        goto bad;
    }

    size_t need = 0;
    for (int c = 0; c < MR_NCOLS; c++) {
        if (v[c].kind == MR_VAL_OTHER && !rec->bad_reason) {
            snprintf(r->reason, sizeof r->reason,
                     "field '%s' (data.columns.%s) is a JSON %s; expected a string, number, "
                     "boolean or null",
                     r->spec.cols[c].name, mr_reader_col_key[c],
                     v[c].p[0] == '{' ? "object" : "array");
            rec->bad_reason = r->reason;
            rec->bad_col = c;
        }
        if (v[c].esc)
            need += v[c].len;
    }
    if (need) {
        /* Sized once for all columns, so earlier columns' pointers stay valid. */
        if (mr_reader_scratch(r, need) != 0)
            return -1;
        char *o = r->scratch;
        for (int c = 0; c < MR_NCOLS; c++) {
            if (!v[c].esc)
                continue;
            size_t n = junescape(o, v[c].p, v[c].len);
            v[c].p = o;
            v[c].len = n;
            o += n;
        }
    }
    for (int c = 0; c < MR_NCOLS; c++)
        rec->f[c] = (MrField){v[c].p, v[c].len, v[c].kind};
    return 1;

bad:
    rec->bad_reason = r->reason;
    rec->bad_col = -1;
    for (int c = 0; c < MR_NCOLS; c++)
        rec->f[c] = (MrField){NULL, 0, MR_VAL_ABSENT};
    return 1;
}

int mr_reader_jsonl_record(MrReader *r, const char *buf, size_t len, size_t s, int at_eof,
                           MrRecord *rec, size_t *next, int64_t *nl)
{
    return jsonl_record(r, NULL, buf, len, s, at_eof, rec, next, nl);
}

int mr_reader_jsonl_parse(MrReader *r, const char *buf, size_t len, int64_t buf_offset,
                          int64_t line, int64_t stop_offset, int at_eof, MrRecordFn fn,
                          void *userdata, size_t *consumed, int64_t *next_line, int *done)
{
    return mr_reader_loop(r, buf, len, buf_offset, line, stop_offset, at_eof, fn, userdata,
                          consumed, next_line, done, jsonl_record, NULL, NULL, NULL, NULL);
}
