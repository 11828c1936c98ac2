/* serve_seen.c — reading the exclude-seen file that train/export.c writes beside
 * an index (format there and in docs/serving.md).
 *
 * The file is small (about one byte per user and per distinct training pair), so
 * it is read whole, verified (checksum + header digest through the checkpoint
 * reader) and decoded once into a CSR of int64 item numbers; a query then costs
 * a slice of that array. Decoding checks every varint (length, range of the
 * resulting item, strictly increasing items, the stated counts), so a file that
 * passes its checksum but lies cannot make the search read out of bounds.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve_internal.h"

/* Checklist, the seen-file format (2 of 2, with train/export.c). */
#define SEEN_MAGIC   "MPIREC-SEEN"
#define SEEN_VERSION 1

/* LEB128 at *p (< end): 0 on success, -1 when truncated or longer than 64 bits. */
static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return -1;
        uint8_t b = *(*p)++;
        if (shift == 63 && b > 1)
            return -1;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

void serve_seen_free(ServeSeen *s)
{
    if (!s)
        return;
    free(s->off);
    free(s->item);
    memset(s, 0, sizeof *s);
}

static int attr_i64(MrCkptReader *r, const char *path, const char *name, int64_t *v, MrErr *e)
{
    int rc = mr_ckpt_read_attr_i64(r, name, v, e);
    return rc ? mr_err_prefix(e, "exclude-seen file %s", path) : MR_OK;
}

int serve_seen_load(ServeSeen *s, const char *path, const MrServeCkptMeta *m, int64_t users,
                    int64_t items, MrErr *e)
{
    memset(s, 0, sizeof *s);
    FILE *f = fopen(path, "rb");
    if (!f)
        return mr_err_set(e, MR_EIO,
                          "exclude-seen file %s: cannot open: %s (mpirec train and mpirec index "
                          "write it beside the index; rebuild the index with `mpirec index`)",
                          path, strerror(errno));
    fseek(f, 0, SEEK_END);
    s->file_bytes = ftell(f);
    fclose(f);
    MrCkptReader *r = NULL;
    uint8_t *buf = NULL;
    int rc = mr_ckpt_open(&r, NULL, path, SEEN_MAGIC, SEEN_VERSION, e);
    if (rc) {
        if (!strstr(e ? e->msg : "", path))
            mr_err_prefix(e, "exclude-seen file %s", path);
        return rc;
    }
    int64_t U = 0, V = 0, pairs = 0, mh = 0, uh = 0, ih = 0, rows = 0, cols = 0;
    /* Small: verify all of it (data checksums and the digest over the metadata). */
    if ((rc = mr_ckpt_verify(r, e)))
        goto out;
    if ((rc = attr_i64(r, path, "users", &U, e)) || (rc = attr_i64(r, path, "items", &V, e)) ||
        (rc = attr_i64(r, path, "pairs", &pairs, e)) ||
        (rc = attr_i64(r, path, "model_hash", &mh, e)) ||
        (rc = attr_i64(r, path, "user_vocab_hash", &uh, e)) ||
        (rc = attr_i64(r, path, "item_vocab_hash", &ih, e)))
        goto out;
    if ((uint64_t)mh != m->model_hash || (uint64_t)uh != m->user_vocab_hash ||
        (uint64_t)ih != m->item_vocab_hash || U != users || V != items) {
        rc = mr_err_set(e, MR_EFORMAT,
                        "exclude-seen file %s belongs to another model or data than the "
                        "checkpoint (%s differs: file has %lld users, %lld items; the checkpoint "
                        "%lld users, %lld items): rebuild the index with `mpirec index`",
                        path,
                        (uint64_t)mh != m->model_hash        ? "model hash"
                        : (uint64_t)uh != m->user_vocab_hash ? "user vocabulary"
                        : (uint64_t)ih != m->item_vocab_hash ? "item vocabulary"
                                                             : "size",
                        (long long)U, (long long)V, (long long)users, (long long)items);
        goto out;
    }
    if ((rc = mr_ckpt_dims(r, "seen/bytes", &rows, &cols, e))) {
        mr_err_prefix(e, "exclude-seen file %s", path);
        goto out;
    }
    if (cols != 0 || rows < U || pairs < 0) {
        rc = mr_err_set(e, MR_EFORMAT, "exclude-seen file %s: /seen/bytes has impossible shape",
                        path);
        goto out;
    }
    buf = malloc((size_t)rows + 1);
    s->off = malloc((size_t)(U + 2) * sizeof *s->off);
    s->item = malloc((size_t)(pairs + 1) * sizeof *s->item);
    if (!buf || !s->off || !s->item) {
        rc = mr_err_set(e, MR_ENOMEM, "exclude-seen file %s: out of memory for %lld pairs", path,
                        (long long)pairs);
        goto out;
    }
    if ((rc = mr_ckpt_read_all(r, "seen/bytes", MR_U8, buf, e))) {
        mr_err_prefix(e, "exclude-seen file %s", path);
        goto out;
    }
    const uint8_t *p = buf, *end = buf + rows;
    int64_t k = 0;
    s->off[0] = s->off[1] = 0;
    for (int64_t u = 1; u <= U && !rc; u++) {
        uint64_t n = 0, g = 0;
        if (get_varint(&p, end, &n) || n > (uint64_t)(pairs - k)) {
            rc = mr_err_set(e, MR_EFORMAT, "exclude-seen file %s: bad count of user %lld", path,
                            (long long)u);
            break;
        }
        int64_t prev = -1;
        for (uint64_t j = 0; j < n; j++) {
            if (get_varint(&p, end, &g) || g >= (uint64_t)(V - prev - 1)) {
                rc = mr_err_set(e, MR_EFORMAT, "exclude-seen file %s: bad item list of user %lld",
                                path, (long long)u);
                break;
            }
            prev += (int64_t)g + 1;
            s->item[k++] = prev;
        }
        s->off[u + 1] = k;
    }
    if (!rc && (p != end || k != pairs))
        rc = mr_err_set(e, MR_EFORMAT,
                        "exclude-seen file %s: %lld pairs decoded, %lld stated, %lld bytes left "
                        "over",
                        path, (long long)k, (long long)pairs, (long long)(end - p));
    s->users = U;
    s->items = V;
    s->pairs = pairs;
out:
    free(buf);
    mr_ckpt_close(&r);
    if (rc) {
        int64_t fb = s->file_bytes;
        serve_seen_free(s);
        s->file_bytes = fb;
    }
    return rc;
}
