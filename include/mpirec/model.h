/* model.h — two-tower retrieval / ranking model: dense parameters, forward and
 * backward passes by hand on OpenBLAS, losses. No MPI here.
 *
 * Dimension letters: B local batch rows (this rank's slice), G global batch
 * (candidates the softmax runs over), D id-embedding dim, T text dim, Q/Cd tower
 * output dims (equal for retrieval), R rating-MLP widths.
 *
 * What lives where:
 *  - Embedding tables (user, item, text tokens) are NOT in MrModel: they belong to
 *    the embedding store of dist/ (replicated or row-sharded). The model sees only
 *    compact "row buffers" of the unique rows a batch touches, plus per-example slot
 *    indices into them. Its backward writes gradients of those row buffers, with
 *    duplicates already summed (Keras's sparse de-duplication) — the store then
 *    exchanges and applies them. This keeps the model independent of sharding.
 *  - Dense parameters of all towers are one contiguous float buffer (params) with
 *    one contiguous gradient buffer (grads) of the same layout, so one allreduce
 *    moves every dense gradient.
 *
 * Layout (Keras): Dense layer kernel W is [in x out] row-major, bias b is [out].
 * Query tower: x = concat(user_row [D], masked mean of token rows [T] if text)
 *   -> Dense q0 (ReLU) -> ... -> Dense q_last (linear).  No layers: q = x.
 * Candidate tower: item_row [D] -> Dense c0 ... (same rule).
 * Rating MLP: concat(q, c) -> Dense r0 (ReLU) ... -> Dense(1) (linear).
 *
 * Step order for one batch (buffers marked = are overwritten, += accumulated):
 *   mr_model_forward_towers      = Q [B x Q], = Cl [B x Cd] (+ keeps activations)
 *   (dist: allgather Cl into Cg [G x Cd] for global negatives)
 *   mr_retrieval_loss            = dQ, = dCg     (scaled by the retrieval weight)
 *   (dist: reduce-scatter dCg into dCl)
 *   mr_model_rating_step         += dQ, += dCl, += grads (rating MLP), = pred
 *   mr_model_backward_towers     += grads (towers), = dU, = dI, = dT (row buffers)
 * zero_grad happens once per step, before the first accumulating call.
 *
 * Implementation: src/model/ (docs/model.md). Contract violations by the caller
 * (capacities exceeded, slots out of range, missing ids/probabilities) return
 * MR_EINTERNAL with a message; nothing here prints, aborts or checks finiteness
 * (the trainer checks the loss after its allreduce). None of the step functions
 * allocates. Note for includers: OpenBLAS's <cblas.h> pulls in <complex.h>, whose
 * macro `I` breaks the field MrBatchView.I; `#undef I` after including <cblas.h>.
 */
#ifndef MPIREC_MODEL_H
#define MPIREC_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "mpirec/config.h"
#include "mpirec/err.h"

#define MR_MAX_DENSE 16

typedef struct MrDense {
    int in, out;      /* kernel [in x out], bias [out] */
    int relu;         /* ReLU after this layer */
    size_t w_off;     /* offset of W in params/grads (floats) */
    size_t b_off;     /* offset of b */
    uint64_t stream;  /* init stream (SEMANTICS.md section 8) */
} MrDense;

typedef struct MrModelShape {
    MrTask task;
    int D;                 /* id embedding dim */
    int text;              /* 1 if the query tower has a text input */
    int T;                 /* text token embedding dim (when text) */
    int64_t user_rows;     /* user table rows (vocab + 1 for OOV at 0) */
    int64_t item_rows;     /* item table rows */
    int64_t text_rows;     /* text table rows (= model.text.max_tokens) */
    int nq, nc, nr;        /* number of Dense layers per tower */
    MrDense q[MR_MAX_DENSE], c[MR_MAX_DENSE], r[MR_MAX_DENSE];
    int qin;               /* D + (text ? T : 0) */
    int qout, cout;        /* tower output dims */
    size_t n_dense;        /* floats in params (= in grads) */
} MrModelShape;

typedef struct MrModel {
    MrModelShape s;
    float *params;   /* [n_dense] owned */
    float *grads;    /* [n_dense] owned */
} MrModel;

/* One rank's slice of a batch, as the model sees it. Slots index the unique-row
 * buffers produced by the embedding store. All arrays are borrowed. */
typedef struct MrBatchView {
    int64_t B;                 /* local rows (may be 0) */
    const int32_t *uslot;      /* [B] row of each example in U */
    const int32_t *islot;      /* [B] row of each example in I */
    const int64_t *tok_off;    /* [B+1] token list of example b: tslot[tok_off[b]..tok_off[b+1]) */
    const int32_t *tslot;      /* non-padding tokens only (OOV id 1 is a real row) */
    const float *rating;       /* [B] */
    int64_t nu, ni, nt;        /* rows in the U, I, Tk buffers */
    const float *U;            /* [nu x D] unique user rows */
    const float *I;            /* [ni x D] unique item rows */
    const float *Tk;           /* [nt x T] unique token rows */
} MrBatchView;

/* Activations and scratch, sized once (mr_model_work_init); the step loop never
 * allocates. */
typedef struct MrModelWork {
    int64_t B_cap, G_cap, nu_cap, ni_cap, nt_cap;
    float *Q;          /* [B x qout] query tower output */
    float *Cl;         /* [B x cout] local candidate tower output */
    float *dQ;         /* [B x qout] */
    float *dCl;        /* [B x cout] */
    float *pred;       /* [B] rating predictions */
    float *dU;         /* [nu x D] gradient of the unique user rows (duplicates summed) */
    float *dI;         /* [ni x D] */
    float *dTk;        /* [nt x T] */
    void *impl;        /* owned: per-layer activations, softmax blocks, etc. */
} MrModelWork;

/* Options of the retrieval loss, in TFRS's order of application. */
typedef struct MrRetrievalOpts {
    double temperature;        /* 0 = none */
    int remove_accidental_hits;
    int num_hard_negatives;    /* 0 = none */
    int logq;                  /* subtract log(clip(p_j, 1e-6, 1)) */
} MrRetrievalOpts;

/* Lifecycle */
/* Compute the shape from the config and vocabulary sizes (user/item rows include
 * the OOV row 0). */
int mr_model_shape(MrModelShape *s, const MrConfig *c, int64_t user_rows, int64_t item_rows,
                   MrErr *e);
/* Allocate params/grads and initialise dense layers (Glorot uniform with the
 * counter-based rule, zero biases). */
int mr_model_init(MrModel *m, const MrModelShape *s, uint64_t seed, MrErr *e);
void mr_model_free(MrModel *m);
/* Size the work buffers for at most B_cap local rows, G_cap global candidates, and
 * the given unique-row capacities. Re-callable with larger capacities (reallocates;
 * call it outside the step loop). *w must be zero-initialised ({0}) before the first
 * call, or hold a previous initialisation (which is freed). One allocation; its
 * large parts are the activations (B_cap x each layer width), the row-buffer
 * gradients (caps x dims) and the softmax block (64 x G_cap floats).
 * Errors: MR_ENOMEM, MR_EINTERNAL (negative capacity, G_cap > 2^31 - 1). */
int mr_model_work_init(MrModelWork *w, const MrModelShape *s, int64_t B_cap, int64_t G_cap,
                       int64_t nu_cap, int64_t ni_cap, int64_t nt_cap, MrErr *e);
void mr_model_work_free(MrModelWork *w);

/* Initial values of embedding rows [row_lo, row_hi) of a table with `dim` columns:
 * element (r, j) gets the counter-based uniform(-init, init) draw for index r*dim+j
 * of `stream`. Independent of which rank asks, so every sharding agrees. */
void mr_embedding_init_rows(float *out, uint64_t seed, uint64_t stream, int64_t row_lo,
                            int64_t row_hi, int dim, double init);
/* Same for an arbitrary list of global rows: out[i] = row rows[i]. */
void mr_embedding_init_list(float *out, uint64_t seed, uint64_t stream, const int64_t *rows,
                            int64_t n, int dim, double init);

/* Operations */
void mr_model_zero_grad(MrModel *m);
/* Forward both towers for the batch view: fills w->Q and w->Cl. Validates the
 * batch against the work capacities and every slot against nu/ni/nt
 * (MR_EINTERNAL naming the example). */
int mr_model_forward_towers(const MrModel *m, const MrBatchView *b, MrModelWork *w, MrErr *e);
/* Rating head: pred = MLP(concat(Q, Cl)); adds rating_weight * d(MSE)/d(.) into
 * w->dQ, w->dCl and m->grads, where MSE = sum over the batch of (pred - r)^2
 * divided by G (the GLOBAL batch size, so partial sums over ranks add up to the
 * Keras mean). Returns the local sum of squared errors in *sse. The caller zeroes
 * dQ/dCl first when there is no retrieval term. Needs a rating head (task ranking or
 * multitask) and G >= B, else MR_EINTERNAL. */
int mr_model_rating_step(MrModel *m, const MrBatchView *b, int64_t G, double rating_weight,
                         MrModelWork *w, double *sse, MrErr *e);
/* Backward both towers from w->dQ and w->dCl: accumulates dense grads and writes
 * the row-buffer gradients w->dU, w->dI, w->dTk (overwritten, duplicates summed). */
int mr_model_backward_towers(MrModel *m, const MrBatchView *b, MrModelWork *w, MrErr *e);
/* Forward only, for evaluation and serving: query embeddings of the b->B examples
 * into Q [B x qout] (caller-owned). B may exceed B_cap: it runs in chunks of B_cap.
 * Reads uslot, tok_off, tslot, U, Tk only. */
int mr_model_query_forward(const MrModel *m, const MrBatchView *b, float *Q, MrModelWork *w,
                           MrErr *e);
/* Candidate tower over n item rows [n x D] (all items, for evaluation and the
 * index) into C [n x cout]; chunks of B_cap rows. */
int mr_model_candidate_forward(const MrModel *m, const float *item_rows, int64_t n, float *C,
                               MrModelWork *w, MrErr *e);
/* Rating predictions for given tower outputs Q [n x qout], C [n x cout] into
 * pred [n] (serving, evaluation); chunks of B_cap rows. MR_EINTERNAL without a
 * rating head. */
int mr_model_rating_forward(const MrModel *m, const float *Q, const float *C, int64_t n,
                            float *pred, MrModelWork *w, MrErr *e);

/* In-batch softmax retrieval loss over the local query rows against G candidates.
 *   Q [B x d], Cg [G x d]; the positive of row i is column pos_offset + i.
 *   cand_ids [G] item ids of the candidates (needed by remove_accidental_hits),
 *   cand_p [G] sampling probabilities (needed by logq), both may be NULL otherwise.
 * Loss = scale * sum_i (logsumexp_j S_ij - S_i,pos), S = Q Cg^T with the options.
 * Writes dQ [B x d] (overwritten) and dCg [G x d] (overwritten), both already
 * multiplied by `scale`. *loss gets the (scaled) local sum in double. Rows are
 * processed in blocks: the [B x G] logit matrix is never held in full.
 * Requires G <= w->G_cap, d <= max(qout, cout) of the work's shape, pos_offset + B
 * <= G; B itself is not bounded by B_cap. B = 0 zeroes dCg and gives *loss = 0 (Q,
 * dQ may then be NULL). Errors: MR_EINTERNAL (shape, capacity, missing ids/p). */
int mr_retrieval_loss(const MrRetrievalOpts *o, int64_t B, int64_t G, int d, const float *Q,
                      const float *Cg, int64_t pos_offset, const int64_t *cand_ids,
                      const float *cand_p, double scale, float *dQ, float *dCg, double *loss,
                      MrModelWork *w, MrErr *e);

/* Queries */
/* Name of the dense tensor containing float offset `off` (e.g. "query dense 0 kernel"),
 * for messages about non-finite values. */
void mr_model_param_name(const MrModelShape *s, size_t off, char *buf, size_t n);

#endif
