/* serve_request.c — one input line of `mpirec recommend` into a request.
 *
 * A line is a plain user id, or a JSON object (RFC 8259) when its first
 * non-blank byte is '{'. cJSON stays inside cli/config.c (STYLE.md), and a
 * request needs so little of JSON that a small strict recursive-descent reader
 * is simpler than routing it there: it validates the whole line (nested values
 * of other members are parsed and skipped, depth-limited), decodes string
 * escapes including \u surrogate pairs into UTF-8, and keeps only the "user"
 * member (a string, or a number taken literally, e.g. 196 -> "196") and the
 * text member (a string, or null = no text). A repeated member: the last wins,
 * as in most JSON readers.
 *
 * Also here: the two helpers that write the JSON Lines answers (a growable
 * buffer, strings escaped per RFC 8259 with invalid UTF-8 replaced).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpirec/serve.h"

#define MAX_DEPTH 64

typedef struct Rd {
    const char *p, *s, *end;
    MrErr *e;
} Rd;

static int bad(Rd *r, const char *what)
{
    return mr_err_set(r->e, MR_EDATA, "bad JSON at byte %td: %s", r->p - r->s + 1, what);
}

static void ws(Rd *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static int hex4(Rd *r, unsigned *v)
{
    if (r->end - r->p < 4)
        return bad(r, "truncated \\u escape");
    unsigned x = 0;
    for (int i = 0; i < 4; i++) {
        char ch = r->p[i];
        x <<= 4;
        if (ch >= '0' && ch <= '9')
            x |= (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f')
            x |= (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F')
            x |= (unsigned)(ch - 'A' + 10);
        else
            return bad(r, "bad \\u escape");
    }
    r->p += 4;
    *v = x;
    return MR_OK;
}

/* A string at r->p (the opening quote). When out is not NULL, the decoded bytes
 * go to a malloc'd *out (NUL-terminated) and *olen. Decoded strings are never
 * longer than their source. */
static int string(Rd *r, char **out, size_t *olen)
{
    r->p++;
    const char *start = r->p;
    char *o = NULL;
    size_t n = 0;
    if (out) {
        /* decoded bytes never outnumber the source bytes (\uXXXX: 6 -> at most 3,
         * a surrogate pair: 12 -> 4) */
        o = malloc((size_t)(r->end - start) + 1);
        if (!o)
            return mr_err_set(r->e, MR_ENOMEM, "out of memory");
    }
#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (o)                                                                                     \
            o[n] = (char)(ch);                                                                     \
        n++;                                                                                       \
    } while (0)
    int rc = MR_OK;
    for (;;) {
        if (r->p >= r->end) {
            rc = bad(r, "unterminated string");
            break;
        }
        unsigned char ch = (unsigned char)*r->p;
        if (ch == '"') {
            r->p++;
            break;
        }
        if (ch < 0x20) {
            rc = bad(r, "control character in a string");
            break;
        }
        if (ch != '\\') {
            PUT(ch);
            r->p++;
            continue;
        }
        r->p++;
        if (r->p >= r->end) {
            rc = bad(r, "truncated escape");
            break;
        }
        char esc = *r->p++;
        unsigned cp = 0;
        switch (esc) {
        case '"':
            PUT('"');
            continue;
        case '\\':
            PUT('\\');
            continue;
        case '/':
            PUT('/');
            continue;
        case 'b':
            PUT('\b');
            continue;
        case 'f':
            PUT('\f');
            continue;
        case 'n':
            PUT('\n');
            continue;
        case 'r':
            PUT('\r');
            continue;
        case 't':
            PUT('\t');
            continue;
        case 'u':
            break;
        default:
            rc = bad(r, "unknown escape");
            break;
        }
        if (rc || (rc = hex4(r, &cp)))
            break;
        if (cp >= 0xd800 && cp <= 0xdbff) {
            unsigned lo;
            if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u') {
                rc = bad(r, "unpaired surrogate in \\u escape");
                break;
            }
            r->p += 2;
            if ((rc = hex4(r, &lo)))
                break;
            if (lo < 0xdc00 || lo > 0xdfff) {
                rc = bad(r, "unpaired surrogate in \\u escape");
                break;
            }
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        } else if (cp >= 0xdc00 && cp <= 0xdfff) {
            rc = bad(r, "unpaired surrogate in \\u escape");
            break;
        }
        if (cp < 0x80) {
            PUT(cp);
        } else if (cp < 0x800) {
            PUT(0xc0 | (cp >> 6));
            PUT(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            PUT(0xe0 | (cp >> 12));
            PUT(0x80 | ((cp >> 6) & 0x3f));
            PUT(0x80 | (cp & 0x3f));
        } else {
            PUT(0xf0 | (cp >> 18));
            PUT(0x80 | ((cp >> 12) & 0x3f));
            PUT(0x80 | ((cp >> 6) & 0x3f));
            PUT(0x80 | (cp & 0x3f));
        }
    }
#undef PUT
    if (rc) {
        free(o);
        return rc;
    }
    if (out) {
        o[n] = '\0';
        *out = o;
        *olen = n;
    }
    return MR_OK;
}

/* A number (RFC 8259 grammar); [*a, *b) is its text. */
static int number(Rd *r, const char **a, const char **b)
{
    const char *p = r->p;
    *a = p;
    if (p < r->end && *p == '-')
        p++;
    if (p >= r->end || *p < '0' || *p > '9')
        return bad(r, "expected a value");
    if (*p == '0')
        p++;
    else
        while (p < r->end && *p >= '0' && *p <= '9')
            p++;
    if (p < r->end && *p == '.') {
        p++;
        if (p >= r->end || *p < '0' || *p > '9')
            return bad(r, "bad number");
        while (p < r->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < r->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < r->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= r->end || *p < '0' || *p > '9')
            return bad(r, "bad number");
        while (p < r->end && *p >= '0' && *p <= '9')
            p++;
    }
    r->p = p;
    *b = p;
    return MR_OK;
}

static int literal(Rd *r, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
        return bad(r, "expected a value");
    r->p += n;
    return MR_OK;
}

/* Parse and discard any value. */
static int skip_value(Rd *r, int depth)
{
    if (depth > MAX_DEPTH)
        return bad(r, "nested too deeply");
    ws(r);
    if (r->p >= r->end)
        return bad(r, "expected a value");
    const char *a, *b;
    int rc;
    switch (*r->p) {
    case '"':
        return string(r, NULL, NULL);
    case 't':
        return literal(r, "true");
    case 'f':
        return literal(r, "false");
    case 'n':
        return literal(r, "null");
    case '[':
        r->p++;
        ws(r);
        if (r->p < r->end && *r->p == ']') {
            r->p++;
            return MR_OK;
        }
        for (;;) {
            if ((rc = skip_value(r, depth + 1)))
                return rc;
            ws(r);
            if (r->p < r->end && *r->p == ',') {
                r->p++;
                continue;
            }
            if (r->p < r->end && *r->p == ']') {
                r->p++;
                return MR_OK;
            }
            return bad(r, "expected ',' or ']'");
        }
    case '{':
        r->p++;
        ws(r);
        if (r->p < r->end && *r->p == '}') {
            r->p++;
            return MR_OK;
        }
        for (;;) {
            ws(r);
            if (r->p >= r->end || *r->p != '"')
                return bad(r, "expected a member name");
            if ((rc = string(r, NULL, NULL)))
                return rc;
            ws(r);
            if (r->p >= r->end || *r->p != ':')
                return bad(r, "expected ':'");
            r->p++;
            if ((rc = skip_value(r, depth + 1)))
                return rc;
            ws(r);
            if (r->p < r->end && *r->p == ',') {
                r->p++;
                continue;
            }
            if (r->p < r->end && *r->p == '}') {
                r->p++;
                return MR_OK;
            }
            return bad(r, "expected ',' or '}'");
        }
    default:
        return number(r, &a, &b);
    }
}

static int copy_text(const char *a, size_t n, char **out, size_t *olen, MrErr *e)
{
    char *o = malloc(n + 1);
    if (!o)
        return mr_err_set(e, MR_ENOMEM, "out of memory");
    memcpy(o, a, n);
    o[n] = '\0';
    free(*out);
    *out = o;
    *olen = n;
    return MR_OK;
}

static int parse_object(Rd *r, const char *text_field, MrServeRequest *q)
{
    int rc, have_user = 0;
    r->p++; /* '{' */
    ws(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
    } else {
        for (;;) {
            ws(r);
            if (r->p >= r->end || *r->p != '"')
                return bad(r, "expected a member name");
            char *name = NULL;
            size_t nl = 0;
            if ((rc = string(r, &name, &nl)))
                return rc;
            int is_user = nl == 4 && memcmp(name, "user", 4) == 0;
            int is_text = strlen(text_field) == nl && memcmp(name, text_field, nl) == 0;
            free(name);
            ws(r);
            if (r->p >= r->end || *r->p != ':')
                return bad(r, "expected ':'");
            r->p++;
            ws(r);
            if (r->p >= r->end)
                return bad(r, "expected a value");
            if (is_user) {
                char *v = NULL;
                size_t vl = 0;
                if (*r->p == '"') {
                    if ((rc = string(r, &v, &vl)))
                        return rc;
                    free(q->user);
                    q->user = v;
                    q->user_len = vl;
                } else if (*r->p == '-' || (*r->p >= '0' && *r->p <= '9')) {
                    const char *a, *b;
                    if ((rc = number(r, &a, &b)) ||
                        (rc = copy_text(a, (size_t)(b - a), &q->user, &q->user_len, r->e)))
                        return rc;
                } else {
                    return bad(r, "\"user\" must be a string or a number");
                }
                have_user = 1;
            } else if (is_text) {
                if (*r->p == '"') {
                    char *v = NULL;
                    size_t vl = 0;
                    if ((rc = string(r, &v, &vl)))
                        return rc;
                    free(q->text);
                    q->text = v;
                    q->text_len = vl;
                } else if ((rc = literal(r, "null")) == MR_OK) {
                    free(q->text);
                    q->text = NULL;
                    q->text_len = 0;
                } else {
                    return mr_err_set(r->e, MR_EDATA,
                                      "bad JSON at byte %td: \"%s\" must be a "
                                      "string or null",
                                      r->p - r->s + 1, text_field);
                }
            } else if ((rc = skip_value(r, 1))) {
                return rc;
            }
            ws(r);
            if (r->p < r->end && *r->p == ',') {
                r->p++;
                continue;
            }
            if (r->p < r->end && *r->p == '}') {
                r->p++;
                break;
            }
            return bad(r, "expected ',' or '}'");
        }
    }
    ws(r);
    if (r->p != r->end)
        return bad(r, "text after the object");
    if (!have_user)
        return mr_err_set(r->e, MR_EDATA, "the request object has no \"user\" member");
    return MR_OK;
}

int mr_serve_parse_request(const char *line, size_t len, const char *text_field, MrServeRequest *q,
                           MrErr *e)
{
    memset(q, 0, sizeof *q);
    const char *a = line, *b = line + len;
    while (a < b && (*a == ' ' || *a == '\t' || *a == '\r' || *a == '\n'))
        a++;
    while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r' || b[-1] == '\n'))
        b--;
    int rc;
    if (a < b && *a == '{') {
        Rd r = {a, a, b, e};
        rc = parse_object(&r, text_field ? text_field : "text", q);
    } else if (a == b) {
        rc = mr_err_set(e, MR_EDATA, "empty request (no user id)");
    } else if (memchr(a, '\0', (size_t)(b - a))) {
        rc = mr_err_set(e, MR_EDATA, "a NUL byte in the user id");
    } else {
        rc = copy_text(a, (size_t)(b - a), &q->user, &q->user_len, e);
    }
    if (rc)
        mr_serve_request_free(q);
    return rc;
}

void mr_serve_request_free(MrServeRequest *q)
{
    if (!q)
        return;
    free(q->user);
    free(q->text);
    memset(q, 0, sizeof *q);
}

/* ---- output ------------------------------------------------------------------ */

static int reserve(char **buf, size_t *len, size_t *cap, size_t more)
{
    if (*len + more + 1 <= *cap && *buf)
        return 0;
    size_t c = *cap ? *cap : 1024;
    while (c < *len + more + 1)
        c *= 2;
    char *p = realloc(*buf, c);
    if (!p)
        return -1;
    *buf = p;
    *cap = c;
    return 0;
}

/* Length of the valid UTF-8 sequence at s (of at most n bytes), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0], min;
    size_t k;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0) {
        k = 2;
        min = 0x80;
        c &= 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
        k = 3;
        min = 0x800;
        c &= 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
        k = 4;
        min = 0x10000;
        c &= 0x07;
    } else {
        return 0;
    }
    if (k > n)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    return k;
}

int mr_serve_json_string(char **buf, size_t *len, size_t *cap, const char *str, size_t n)
{
    /* worst case: every byte becomes \u00XX or \ufffd (6 bytes), plus quotes */
    if (reserve(buf, len, cap, 6 * n + 2))
        return -1;
    const unsigned char *s = (const unsigned char *)str, *end = s + n;
    char *o = *buf + *len;
    *o++ = '"';
    while (s < end) {
        unsigned c = *s;
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
            s++;
        } else if (c < 0x20 || c == 0x7f) {
            const char *esc = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : NULL;
            if (esc) {
                memcpy(o, esc, 2);
                o += 2;
            } else {
                o += sprintf(o, "\\u%04x", c);
            }
            s++;
        } else {
            size_t k = utf8_len(s, (size_t)(end - s));
            if (k == 0) {
                memcpy(o, "\\ufffd", 6);
                o += 6;
                s++;
            } else {
                memcpy(o, s, k);
                o += k;
                s += k;
            }
        }
    }
    *o++ = '"';
    *o = '\0';
    *len = (size_t)(o - *buf);
    return 0;
}

int mr_serve_buf_printf(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || reserve(buf, len, cap, (size_t)n))
        return -1;
    va_start(ap, fmt);
    vsnprintf(*buf + *len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    *len += (size_t)n;
    return 0;
}
