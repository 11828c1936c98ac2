/* ckpt_state.h — private to src/train: the training checkpoint schema. */
#ifndef MPIREC_CKPT_STATE_H
#define MPIREC_CKPT_STATE_H

#include "mpirec/ckpt.h"
#include "mpirec/dataset.h"
#include "mpirec/train.h"

typedef struct MrCkptMeta {
    int64_t step;            /* completed steps */
    int64_t epoch;           /* epoch of the cursor */
    int64_t batch;           /* next global batch of `epoch` */
    uint64_t seed;
    int64_t ranks;
    int64_t optimizer_step;
    uint64_t model_hash;
    uint64_t user_vocab_hash, item_vocab_hash;
    uint64_t text_vocab_hash; /* 0: no text feature, or a file written without it */
    double epoch_loss_sum;   /* sum of batch losses of the epoch so far */
    int64_t epoch_batches;
    double train_seconds;    /* training wall time so far (all segments) */
    double last_loss;        /* loss of the last completed step (the next evaluation
                                line's train_loss_last); 0 in files without it */
    int64_t final;           /* 1: written after the run's final evaluation (the end
                                of training); 0: periodic or stop checkpoint */
    const char *config_json; /* for saving */
    const char *metrics_jsonl;
} MrCkptMeta;

/* Write DIR/ckpt-<step>.h5 atomically and point DIR/latest at it. Collective. */
int mr_ckpt_state_save(MrComm *c, const char *dir, const MrCkptMeta *meta, const MrState *s,
                       const MrDataset *d, int keep, char *saved, size_t saved_n, MrErr *e);
/* Read the /meta attributes (config and metrics: malloc'd, may be NULL).
 * last_loss, final and text_vocab_hash are optional (files written before they
 * existed read as 0). */
int mr_ckpt_state_read_meta(MrCkptReader *r, MrCkptMeta *m, char **config_json, char **metrics,
                            MrErr *e);
/* Load parameters and optimizer state into an initialised state of the same
 * shape (any P, any sharding). Collective when r was opened with a comm. */
int mr_ckpt_state_load(MrCkptReader *r, MrComm *c, MrState *s, MrErr *e);

#endif
