/* text.c — the default TextVectorization standardise + split, byte by byte.
 *
 * One pass with a 256-entry class table: whitespace ends a token, punctuation is
 * dropped without ending it, A-Z are lowered, every other byte is copied.
 */
#include "mpirec/text.h"

enum { C_KEEP = 0, C_SPACE = 1, C_PUNCT = 2, C_UPPER = 3 };

static unsigned char cls[256];
static int cls_ready;

static void init_cls(void)
{
    const char *punct = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
    for (const char *p = punct; *p; p++)
        cls[(unsigned char)*p] = C_PUNCT;
    const char *ws = " \t\n\v\f\r";
    for (const char *p = ws; *p; p++)
        cls[(unsigned char)*p] = C_SPACE;
    for (int c = 'A'; c <= 'Z'; c++)
        cls[c] = C_UPPER;
    cls_ready = 1;
}

int mr_text_tokenize(const char *p, size_t n, char *scratch, MrTokenFn fn, void *userdata)
{
    if (!cls_ready)
        init_cls();
    size_t start = 0, w = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        switch (cls[ch]) {
        case C_SPACE:
            if (w > start) {
                int rc = fn(scratch + start, w - start, userdata);
                if (rc)
                    return rc;
            }
            start = w;
            break;
        case C_PUNCT: break;
        case C_UPPER: scratch[w++] = (char)(ch + 32); break;
        default: scratch[w++] = (char)ch; break;
        }
    }
    if (w > start)
        return fn(scratch + start, w - start, userdata);
    return 0;
}
