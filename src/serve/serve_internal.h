/* serve_internal.h — private to src/serve: what its files share. */
#ifndef MPIREC_SERVE_INTERNAL_H
#define MPIREC_SERVE_INTERNAL_H

#include <stdint.h>

#include "mpirec/ckpt.h"
#include "mpirec/err.h"

/* The /meta values of a training checkpoint that serving needs (plain data, so it
 * can be broadcast as bytes). */
typedef struct MrServeCkptMeta {
    int64_t step, epoch, batch, ranks;
    uint64_t model_hash, user_vocab_hash, item_vocab_hash;
} MrServeCkptMeta;

/* Read the training checkpoint's /meta (and its config JSON when config is not
 * NULL: malloc'd). Errors name `path`. */
int serve_read_ckpt_meta(MrCkptReader *r, const char *path, MrServeCkptMeta *m, char **config,
                         MrErr *e);

/* The exclude-seen data of an index, decoded into an in-memory CSR. */
typedef struct ServeSeen {
    int64_t users; /* U: rows 1..U (row 0, OOV, is empty) */
    int64_t items; /* V */
    int64_t pairs;
    int64_t file_bytes;
    int64_t *off;  /* [U + 2] items of user u: item[off[u] .. off[u+1]) */
    int64_t *item; /* [pairs] index items, ascending per user */
} ServeSeen;

/* Open, verify and decode the seen file `path`; it must belong to the checkpoint
 * described by m (model and vocabulary hashes) and to an index of `items` items.
 * MR_EIO when it cannot be read (with a hint that train/index write it),
 * MR_EFORMAT when it is damaged or belongs to something else. */
int serve_seen_load(ServeSeen *s, const char *path, const MrServeCkptMeta *m, int64_t users,
                    int64_t items, MrErr *e);
void serve_seen_free(ServeSeen *s);

#endif
