/* train.h — the trainable state, one distributed training step, evaluation, and
 * the training driver that `mpirec train` runs.
 *
 * MrState: dense parameters (replicated on every rank, one buffer, updated
 * identically after one allreduce of their gradients), the three embedding tables
 * (dist.h: replicated or row-sharded), and the optimizer.
 *
 * A step on global batch b (every rank, same b):
 *   lookups (user, item, tokens) -> model towers -> [allgather candidates] ->
 *   retrieval loss -> [reduce-scatter candidate grads] -> rating head -> backward
 *   -> one allreduce of {loss parts, non-finite flags, stop signal} -> dense
 *   gradient allreduce (non-blocking, overlapped with) embedding exchanges and
 *   row updates -> dense update.
 * A non-finite loss or gradient stops the step before any parameter changes, so
 * the state (and any checkpoint written from it) holds only finite values.
 */
#ifndef MPIREC_TRAIN_H
#define MPIREC_TRAIN_H

#include <stdint.h>

#include "mpirec/comm.h"
#include "mpirec/config.h"
#include "mpirec/dataset.h"
#include "mpirec/dist.h"
#include "mpirec/model.h"
#include "mpirec/optim.h"

typedef struct MrState {
    MrModelShape shape;
    MrModel model;         /* dense params and grads */
    float *dense_state;    /* [slots x n_dense] optimizer state of the dense params */
    MrOptimizer opt;
    MrEmbTable user, item, text; /* text.rows = 0 without a text feature */
    int has_text;
} MrState;

/* Per-step figures (global, identical on every rank unless noted). */
typedef struct MrStepStats {
    double loss;           /* total loss of the global batch (what Keras reports) */
    double retrieval_loss; /* retrieval part (sum over the batch, weighted) */
    double mse;            /* rating MSE of the batch */
    int64_t examples;      /* global batch size */
    double seconds;        /* wall time of the step (this rank) */
    double comm_seconds;   /* of which inside collectives (this rank) */
    int64_t bytes_sent;    /* payload bytes sent (this rank) */
    int stop_requested;    /* some rank saw SIGTERM/SIGUSR1 before the step's agreement */
    int ckpt_requested;    /* some rank asked for a checkpoint (time-based trigger) */
} MrStepStats;

/* Flags a rank brings into a step's agreement. */
enum { MR_STEP_STOP = 1, MR_STEP_CHECKPOINT = 2 };

typedef struct MrMetrics {
    int64_t n;             /* evaluated examples */
    int nk;
    int ks[MR_MAX_KS];
    double topk[MR_MAX_KS];
    int has_topk, has_rmse;
    double rmse;
} MrMetrics;

/* Opaque per-run context of the step and evaluation (buffers sized once). */
typedef struct MrStepCtx MrStepCtx;

/* Lifecycle */
/* Model shape from the config and the vocabulary sizes; dense init and tables. */
int mr_state_init(MrState *s, MrComm *c, const MrConfig *cfg, int64_t users, int64_t items,
                  MrErr *e);
void mr_state_free(MrState *s);
/* item_count: [items + 1] training-split frequencies (for the logQ correction),
 * may be NULL when loss.logq is off. Copied. */
int mr_step_ctx_create(MrStepCtx **x, MrComm *c, const MrConfig *cfg, const MrState *s,
                       const int64_t *item_count, MrErr *e);
void mr_step_ctx_destroy(MrStepCtx **x);
/* Size the step buffers for an epoch plan (call after each mr_epoch_plan, before
 * its steps; never inside the step loop). Collective. */
int mr_step_reserve(MrStepCtx *x, MrComm *c, MrState *s, const MrEpochPlan *p, MrErr *e);

/* Operations */
/* One step on batch b of the plan. `flags` (MR_STEP_*) are this rank's requests;
 * the agreed values (any rank) come back in st. `step` (1-based) names the step
 * in messages. Collective. */
int mr_train_step(MrStepCtx *x, MrComm *c, MrState *s, const MrEpochPlan *p, int64_t b,
                  int flags, MrStepStats *st, int64_t step, MrErr *e);
/* Factorized top-k accuracy (against all items 1..V, TFRS's strict-greater rule
 * with the positive scored by the same sgemm as the candidates) and/or RMSE on
 * the test (split = 1) or train (split = 0) records. Collective. */
int mr_evaluate(MrStepCtx *x, MrComm *c, MrState *s, const MrDataset *d, int split,
                MrMetrics *m, MrErr *e);

/* Candidate tower outputs of this rank's slice of the items 1..V (replicated:
 * a contiguous id range; row-sharded: the rows it owns): *ids [n] ascending and
 * *C [n x cout], malloc'd. Local (no communication). */
int mr_candidates_slice(MrComm *c, MrState *s, int64_t **ids, float **C, int64_t *n, MrErr *e);
/* Query tower outputs [n x qout] of local dataset records rec[0..n) (user row and
 * text). Collective (row-sharded lookups): every rank calls it, possibly n = 0;
 * n must not exceed `cap`, the same on every rank. */
int mr_queries_forward(MrComm *c, MrState *s, const MrDataset *d, const int64_t *rec, int64_t n,
                       int64_t cap, float *Q, MrErr *e);

/* Per-rank memory estimate (bytes) of a run: tables, optimizer state, step
 * buffers; used by the pre-flight check. */
int64_t mr_state_bytes_estimate(const MrConfig *cfg, int64_t users, int64_t items, int P);

/* ---- the driver (train.c) --------------------------------------------------- */

typedef struct MrTrainOptions {
    const char *out_dir;            /* run directory (exists, writable) */
    const char *resume;             /* NULL/"": fresh; "auto": newest valid checkpoint in
                                       out_dir/checkpoints (fresh if none); else a path */
    volatile const int *stop_flag;  /* set asynchronously by a signal handler (may be NULL) */
} MrTrainOptions;

typedef struct MrTrainResult {
    int64_t steps;                  /* completed steps in total (incl. before a resume) */
    int stopped;                    /* 1: stopped by a signal after writing a checkpoint */
    MrMetrics last;                 /* the last test evaluation */
    double train_seconds;           /* training time of all segments */
    double examples_per_sec;        /* of this segment */
    double seconds;                 /* wall time of this call */
    char checkpoint[4200];          /* last checkpoint written ("" if none) */
} MrTrainResult;

/* Train per the config on an ingested dataset; writes DIR/{metrics,steps}.jsonl,
 * DIR/checkpoints/, DIR/index.h5. Collective. */
int mr_train_run(MrComm *c, const MrConfig *cfg, MrDataset *d, const MrTrainOptions *o,
                 MrTrainResult *res, MrErr *e);

/* Rank 0 writes the candidate index of the current model to `path`: the candidate
 * tower over every item (rows gathered from the ranks), the item ids, and a sample
 * of training users' query embeddings to measure recall and speed. Collective. */
int mr_export_index(MrComm *c, const MrConfig *cfg, const MrDataset *d, MrState *s,
                    const char *path, const char *source_ckpt, int64_t step, MrErr *e);

#endif
