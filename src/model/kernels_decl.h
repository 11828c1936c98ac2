/* kernels_decl.h — declarations of the model kernels for one precision.
 * Included twice by kernels.h with MR_MK_REAL / MR_MK_SFX set (float/_f,
 * double/_d); deliberately no include guard. See kernels.h. */

#define R_ MR_MK_REAL
#define S_ MR_MK_SFX

/* A batch as the kernels see it (MrBatchView with `real` row buffers). */
typedef struct S_(MrkBatch) {
    int64_t B;
    const int32_t *uslot;   /* [B] */
    const int32_t *islot;   /* [B] */
    const int64_t *tok_off; /* [B+1] */
    const int32_t *tslot;   /* tokens of example b: tslot[tok_off[b]..tok_off[b+1]) */
    const R_ *rating;       /* [B] */
    int64_t nu, ni, nt;
    const R_ *U;            /* [nu x D] */
    const R_ *I;            /* [ni x D] */
    const R_ *Tk;           /* [nt x T] */
} S_(MrkBatch);

/* Every buffer of a training step, carved from one allocation (see bufs_init).
 * Pointers for layers that do not exist are NULL; the last activation of each
 * stack aliases the stack's output (Q, Cl, pred), and with no query (candidate)
 * layers the tower input aliases Q (Cl). */
typedef struct S_(MrkBufs) {
    int64_t B_cap, G_cap, nu_cap, ni_cap, nt_cap;
    int dmax;                 /* max(qout, cout): widest d the retrieval loss accepts */
    int wmax;                 /* widest activation of any layer (backward scratch width) */
    int64_t bs;               /* retrieval row block */
    R_ *Xq;                   /* [B x qin]  query tower input (aliases Q when nq == 0) */
    R_ *Xc;                   /* [B x D]    candidate tower input (aliases Cl when nc == 0) */
    R_ *Xr;                   /* [B x (qout+cout)] rating MLP input */
    R_ *qa[MR_MAX_DENSE];     /* [B x q[l].out] activations; qa[nq-1] == Q */
    R_ *ca[MR_MAX_DENSE];     /* [B x c[l].out]; ca[nc-1] == Cl */
    R_ *ra[MR_MAX_DENSE];     /* [B x r[l].out]; ra[nr-1] == pred */
    R_ *Q, *Cl;               /* [B x qout], [B x cout] tower outputs */
    R_ *dQ, *dCl;             /* [B x qout], [B x cout] */
    R_ *pred;                 /* [B] (NULL without a rating head) */
    R_ *dpred;                /* [B] */
    R_ *g0, *g1;              /* [B x wmax] backward ping-pong */
    R_ *dU, *dI, *dTk;        /* [nu x D], [ni x D], [nt x T] */
    R_ *S;                    /* [bs x G] logit / probability block */
    R_ *Qs;                   /* [bs x dmax] row-scaled query block */
    R_ *lq;                   /* [G] log(clip(p, 1e-6, 1)) per column */
    R_ *sel;                  /* [G] hard-negative selection scratch */
    R_ *rowf;                 /* [bs] per-row gradient factor */
    int32_t *ord, *glo, *ghi; /* [G] candidate ids sorted; group range of column j */
    void *block;              /* the single allocation (owned) */
    size_t bytes;
} S_(MrkBufs);

/* Lifecycle: size every buffer for the shape and capacities (one allocation).
 * Returns MR_OK or MR_ENOMEM. *w is overwritten (call bufs_free first to reuse). */
int S_(mr_mk_bufs_init)(S_(MrkBufs) *w, const MrModelShape *s, int64_t B_cap, int64_t G_cap,
                        int64_t nu_cap, int64_t ni_cap, int64_t nt_cap, MrErr *e);
void S_(mr_mk_bufs_free)(S_(MrkBufs) *w);

/* GEMM, row-major: C[M x N] = alpha op(A) op(B) + beta C (ta/tb: 1 = transposed).
 * Handles M, N or K == 0 (K == 0 scales C by beta). */
void S_(mr_mk_gemm)(int ta, int tb, int64_t M, int64_t N, int64_t K, R_ alpha, const R_ *A,
                    int64_t lda, const R_ *Bm, int64_t ldb, R_ beta, R_ *C, int64_t ldc);

/* ---- layers (layers_tmpl.h). Forward and backward side by side. ---- */

/* out[b, 0:dim] = T[slot[b], 0:dim]  (out row stride ld_out)            out: = */
void S_(mr_mk_gather_rows)(const R_ *T, int dim, const int32_t *slot, int64_t n, R_ *out,
                           int64_t ld_out);
/* dT[slot[b], 0:dim] += g[b, 0:dim]; duplicates of a slot are summed     dT: += */
void S_(mr_mk_scatter_add_rows)(R_ *dT, int dim, const int32_t *slot, int64_t n, const R_ *g,
                                int64_t ld_g);
/* out[b] = mean of Tk[tslot[t]] over example b's tokens; 0 when it has none
 * (documented deviation from Keras's 0/0 = NaN).                        out: = */
void S_(mr_mk_masked_mean_forward)(const R_ *Tk, int T, const int64_t *off, const int32_t *tslot,
                                   int64_t n, R_ *out, int64_t ld_out);
/* dTk[tslot[t]] += g[b] / n_b for every token t of example b            dTk: += */
void S_(mr_mk_masked_mean_backward)(R_ *dTk, int T, const int64_t *off, const int32_t *tslot,
                                    int64_t n, const R_ *g, int64_t ld_g);
/* out[n x (da+db)] = [A | Bm]                                            out: = */
void S_(mr_mk_concat_cols)(const R_ *A, int da, const R_ *Bm, int db, int64_t n, R_ *out);
/* dA += g[:, 0:da]; dB += g[:, da:da+db]                            dA, dB: += */
void S_(mr_mk_split_add_cols)(const R_ *g, int64_t n, R_ *dA, int da, R_ *dB, int db);
/* Y[n x out] = act(X[n x in] W + b) with W, b at L's offsets in params    Y: = */
void S_(mr_mk_dense_forward)(const MrDense *L, const R_ *params, const R_ *X, int64_t n, R_ *Y);
/* Given dY = dLoss/dY: dZ = relu'(Y) * dY written to dZ (may equal dY);
 * grads[W] += X^T dZ, grads[b] += colsum(dZ); dX = dZ W^T when dX != NULL.
 *                                                    grads: +=, dZ: =, dX: = */
void S_(mr_mk_dense_backward)(const MrDense *L, const R_ *params, R_ *grads, const R_ *X,
                              const R_ *Y, int64_t n, const R_ *dY, R_ *dZ, R_ *dX);
/* MSE head: sse = sum (pred - r)^2; dpred = weight * 2 (pred - r) / G.  dpred: = */
void S_(mr_mk_mse)(const R_ *pred, const R_ *rating, int64_t n, int64_t G, double weight,
                   R_ *dpred, double *sse);

/* ---- towers (towers_tmpl.h), same step order and buffer rules as model.h ---- */

/* Both towers: = w->Q, = w->Cl (and the activations). */
void S_(mr_mk_towers_forward)(const MrModelShape *s, const R_ *params, const S_(MrkBatch) *b,
                              S_(MrkBufs) *w);
/* Query tower only (evaluation): = w->Q. */
void S_(mr_mk_query_forward)(const MrModelShape *s, const R_ *params, const S_(MrkBatch) *b,
                             S_(MrkBufs) *w);
/* Candidate tower on n contiguous item rows [n x D] (n <= B_cap): = out [n x cout]. */
void S_(mr_mk_candidate_forward)(const MrModelShape *s, const R_ *params, const R_ *rows,
                                 int64_t n, R_ *out, S_(MrkBufs) *w);
/* Rating MLP on given tower outputs (n <= B_cap): = pred [n]. */
void S_(mr_mk_rating_forward)(const MrModelShape *s, const R_ *params, const R_ *Q, const R_ *C,
                              int64_t n, R_ *pred, S_(MrkBufs) *w);
/* Rating step on w->Q, w->Cl: = w->pred; += w->dQ, += w->dCl, += grads. */
void S_(mr_mk_rating_step)(const MrModelShape *s, const R_ *params, R_ *grads,
                           const S_(MrkBatch) *b, int64_t G, double weight, S_(MrkBufs) *w,
                           double *sse);
/* Backward of both towers from w->dQ, w->dCl: += grads, = dU, = dI, = dTk. */
void S_(mr_mk_towers_backward)(const MrModelShape *s, const R_ *params, R_ *grads,
                               const S_(MrkBatch) *b, S_(MrkBufs) *w);

/* ---- retrieval loss (retrieval_tmpl.h): the contract of mr_retrieval_loss. ---- */
int S_(mr_mk_retrieval_loss)(const MrRetrievalOpts *o, int64_t B, int64_t G, int d, const R_ *Q,
                             const R_ *Cg, int64_t pos_offset, const int64_t *cand_ids,
                             const R_ *cand_p, double scale, R_ *dQ, R_ *dCg, double *loss,
                             S_(MrkBufs) *w, MrErr *e);

/* ---- row passes of the softmax (fastmath.c) ---- */
/* max_j (row[j] - lq[j]) (lq may be NULL = zeros) */
R_ S_(mr_mk_row_max)(const R_ *row, const R_ *lq, int64_t n);
/* row[j] = exp(row[j] - lq[j] - m); returns the sum of the new row (in double). */
double S_(mr_mk_exp_sum)(R_ *row, const R_ *lq, R_ m, int64_t n);

#undef R_
#undef S_
