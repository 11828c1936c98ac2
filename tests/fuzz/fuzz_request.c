/* fuzz_request — libFuzzer target for the request lines of `mpirec recommend`
 * (src/serve/serve_request.c) and the JSON string writer of its answers.
 *
 * Input: one line (byte 0 picks the text field name: "text" or "review"). Oracle:
 * a parsed request has a user; the answer writer turns any bytes (the parsed user
 * and text, and the raw input) into a JSON string that is valid UTF-8, has no raw
 * control byte, and starts and ends with a quote.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpirec/serve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF). */
static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t k;
        unsigned cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + k >= n)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

static void check_json_string(const char *s, size_t n)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (mr_serve_json_string(&buf, &len, &cap, s, n) != 0) {
        free(buf);
        return; /* out of memory */
    }
    if (len < 2 || buf[0] != '"' || buf[len - 1] != '"' || buf[len] != '\0')
        abort();
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)buf[i] < 0x20)
            abort();
    if (!valid_utf8((const unsigned char *)buf, len))
        abort();
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *field = data[0] & 1 ? "review" : "text";
    size_t n = size - 1;
    char *line = malloc(n ? n : 1); /* exact size: no NUL after the line */
    if (!line)
        return 0;
    memcpy(line, data + 1, n);
    MrServeRequest r;
    MrErr e;
    mr_err_clear(&e);
    memset(&r, 0, sizeof r);
    int rc = mr_serve_parse_request(line, n, field, &r, &e);
    if (rc == MR_OK) {
        if (!r.user || r.user[r.user_len] != '\0')
            abort();
        check_json_string(r.user, r.user_len);
        if (r.text)
            check_json_string(r.text, r.text_len);
    } else if ((rc != MR_EDATA && rc != MR_ENOMEM) || !e.msg[0]) {
        abort();
    }
    mr_serve_request_free(&r);
    check_json_string(line, n);
    free(line);
    return 0;
}
