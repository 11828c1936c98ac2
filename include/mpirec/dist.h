/* dist.h — data parallelism: rank-count-invariant global batches, and embedding
 * tables that are replicated or row-sharded.
 *
 * Distribution contract (DESIGN.md): the global batch sequence does not depend
 * on P; the retrieval loss and all gradients are sums over the global batch;
 * embedding rows are updated from contributions merged in a fixed order (row id,
 * then source rank = global position); so P = 1, 2, 4 give the same model up to
 * float rounding, and a fixed P gives bitwise the same run twice.
 *
 * Epoch plan (mr_epoch_plan): training records are ordered by the keyed hash of
 * SEMANTICS.md section 8. Positions are computed with a sample sort of (key,
 * record) pairs whose splitters are simply equal slices of the 64-bit key space
 * (the keys are uniform hashes); positions travel back to the record holders,
 * and each record then moves once (one MPI_Alltoallv of records per epoch) to the
 * rank whose slice of its global batch contains it. Global batch b is positions
 * [bB, min((b+1)B, N)); rank q's slice of a batch of size G is
 * [floor(qG/P), floor((q+1)G/P)).
 *
 * Embedding tables (MrEmbTable): `replicated` keeps every row on every rank; the
 * touched rows' summed gradients are allgathered and every rank merges and
 * applies them identically. `row` keeps row i on rank i mod P with its optimizer
 * state; lookups and gradients travel by alltoallv to the owner. Both merge the
 * contributions of a row in source-rank order with the same arithmetic, so they
 * produce the same model.
 */
#ifndef MPIREC_DIST_H
#define MPIREC_DIST_H

#include <stdint.h>

#include "mpirec/comm.h"
#include "mpirec/config.h"
#include "mpirec/dataset.h"
#include "mpirec/err.h"
#include "mpirec/optim.h"

/* ---- epoch plan -------------------------------------------------------------- */

typedef struct MrEpochPlan {
    int64_t N;            /* training records (global) */
    int64_t B;            /* global batch size */
    int64_t n_batches;    /* ceil(N / B) */
    int64_t n;            /* records this rank trains on this epoch (all batches) */
    int64_t *pos;         /* [n] global position (ascending) */
    int64_t *user, *item; /* [n] */
    float *rating;        /* [n] */
    int64_t *tok_off;     /* [n + 1] (NULL without text) */
    int32_t *tok;
    int64_t max_slice;    /* largest local slice of any batch */
    int64_t max_slice_tokens;
} MrEpochPlan;

/* Size of batch b and this rank's slice [*lo, *hi) of it (offsets within the batch). */
void mr_batch_slice(int64_t N, int64_t B, int64_t b, int rank, int P, int64_t *G, int64_t *lo,
                    int64_t *hi);
/* Build the plan of `epoch` from the dataset's training records. Collective. */
int mr_epoch_plan(MrEpochPlan *p, MrComm *c, const MrDataset *d, uint64_t seed, int64_t epoch,
                  int64_t B, MrErr *e);
void mr_epoch_plan_free(MrEpochPlan *p);
/* Index range [*a, *b) into the plan's arrays of batch b's local slice. */
void mr_epoch_plan_batch(const MrEpochPlan *p, int rank, int P, int64_t b, int64_t *a, int64_t *bnd,
                         int64_t *G, int64_t *offset);

/* ---- embedding tables ---------------------------------------------------------- */

typedef struct MrEmbTable {
    char name[32];        /* "user", "item", "text" (messages, checkpoint paths) */
    int64_t rows;         /* global rows */
    int dim;
    MrSharding mode;
    int rank, P;
    int64_t local_rows;   /* rows stored here */
    float *w;             /* [local_rows x dim] */
    float *state;         /* [slots x local_rows x dim] optimizer state */
    int slots;
    /* per-step (sized by mr_emb_reserve; never allocated in the step) */
    int64_t cap;          /* max unique ids per lookup on this rank */
    int64_t nu;           /* unique ids of the current lookup */
    int64_t *uid;         /* [cap] unique global ids, first-occurrence order */
    float *rows_buf;      /* [cap x dim] their rows (the model's U/I/Tk buffer) */
    void *impl;           /* owned: hash maps, exchange buffers */
} MrEmbTable;

/* Lifecycle */
/* Create a table and initialise its rows with the counter-based uniform rule
 * (stream, seed, +-init) and its optimizer state. */
int mr_emb_init(MrEmbTable *t, MrComm *c, const char *name, int64_t rows, int dim,
                MrSharding mode, uint64_t seed, uint64_t stream, double init,
                const MrOptimizer *opt, MrErr *e);
void mr_emb_free(MrEmbTable *t);
/* Size the per-step buffers: at most `ids_cap` ids per lookup on any rank, and at
 * most `global_cap` ids per lookup summed over ranks. Collective. */
int mr_emb_reserve(MrEmbTable *t, MrComm *c, int64_t ids_cap, int64_t global_cap, MrErr *e);

/* Operations (Collective: every rank calls them for every step, possibly with n = 0) */
/* Deduplicate ids[0..n), fetch their rows into t->rows_buf (row mode: from their
 * owners) and write each id's slot (index into rows_buf) to slots[0..n). */
int mr_emb_lookup(MrEmbTable *t, MrComm *c, const int64_t *ids, int64_t n, int32_t *slots,
                  MrErr *e);
/* Apply the gradient rows grad[nu x dim] of the current lookup's unique ids: merge
 * every rank's contributions per row in source-rank order, then the optimizer's
 * row-wise update. */
int mr_emb_apply(MrEmbTable *t, MrComm *c, const float *grad, const MrOptimizer *opt, MrErr *e);

/* Queries */
/* Local index of global row `id` if stored here, else -1. */
int64_t mr_emb_local_index(const MrEmbTable *t, int64_t id);
/* Global row of local row k. */
int64_t mr_emb_global_row(const MrEmbTable *t, int64_t k);
/* Bytes held by the table (weights + state + step buffers), for the memory report. */
int64_t mr_emb_bytes(const MrEmbTable *t);

#endif
