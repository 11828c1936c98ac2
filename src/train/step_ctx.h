/* step_ctx.h — private: the step/evaluation context shared by step.c and
 * eval.c (src/train and src/eval use the same buffers and settings). */
#ifndef MPIREC_STEP_CTX_H
#define MPIREC_STEP_CTX_H

#include "mpirec/train.h"

struct MrStepCtx {
    MrConfig cfg;
    int P, rank;
    int retrieval, rating, global_neg;
    MrRetrievalOpts opts;
    double w_ret, w_rat;
    int d;                 /* tower output dim */
    MrModelWork w;
    int64_t bs_cap, ts_cap, G_cap;
    int32_t *uslot, *islot, *tslot; /* [bs_cap], [bs_cap], [ts_cap] */
    int64_t *tok_ids;      /* [ts_cap] token ids of the slice */
    int64_t *tok_rel;      /* [bs_cap + 1] token offsets relative to the slice */
    float *Cg, *dCg;       /* [G_cap x d] global candidates and their gradients */
    int64_t *cand_ids;     /* [G_cap] */
    float *cand_p;         /* [G_cap] */
    float *item_p;         /* [item rows] training frequencies (logQ), or NULL */
    int64_t *counts;       /* [2P] per-rank counts for the v-collectives */
};

#endif
