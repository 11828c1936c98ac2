/* towers_tmpl.h — body of the tower kernels and of the step's buffer arena over
 * `real` (see kernels_decl.h for the prototypes and buffer shapes).
 *
 * Query tower:     Xq = [U[uslot] | masked mean of Tk[tslot]]  -> Dense stack -> Q
 * Candidate tower: Xc = I[islot]                               -> Dense stack -> Cl
 * Rating MLP:      Xr = [Q | Cl] -> Dense stack (ReLU ... , last Dense(1) linear) -> pred
 *
 * A Dense stack keeps every activation (the last one is the tower output), which is
 * all its backward needs: relu' comes from the activation's sign, the kernel
 * gradient from the layer input. Backward runs the stack in exact reverse through
 * two ping-pong scratch buffers; the stack's input gradient then goes to the row
 * buffers by scatter-add (duplicates summed) and, for text, by the mean's backward.
 *
 * Buffer rules: forward overwrites Q, Cl, pred and the activations; rating_step adds
 * into dQ, dCl and grads; towers_backward adds into grads and overwrites dU, dI, dTk.
 * Nothing allocates after bufs_init.
 */

/* ---- buffer arena ---- */

static size_t S_(round_up)(size_t n) { return (n + 15) & ~(size_t)15; } /* 64-byte multiples */

/* The retrieval row block: big enough for efficient GEMMs (measured by bench_model:
 * 64 rows reach the best rates of the three block GEMMs at d = 16..64), small enough
 * that the [bs x G] logit block stays in the L2/L3 caches between its passes. */
static int64_t S_(pick_block)(int64_t G)
{
    int64_t bs = 64;
    if (G > 0 && (int64_t)sizeof(R_) * bs * G > ((int64_t)4 << 20))
        bs = ((int64_t)4 << 20) / ((int64_t)sizeof(R_) * G);
    return bs < 8 ? 8 : bs;
}

int S_(mr_mk_bufs_init)(S_(MrkBufs) *w, const MrModelShape *s, int64_t B_cap, int64_t G_cap,
                        int64_t nu_cap, int64_t ni_cap, int64_t nt_cap, MrErr *e)
{
    memset(w, 0, sizeof *w);
    if (B_cap < 0 || G_cap < 0 || nu_cap < 0 || ni_cap < 0 || nt_cap < 0 || G_cap > INT32_MAX)
        return mr_err_set(e, MR_EINTERNAL,
                          "model work: bad capacities B=%lld G=%lld nu=%lld ni=%lld nt=%lld",
                          (long long)B_cap, (long long)G_cap, (long long)nu_cap,
                          (long long)ni_cap, (long long)nt_cap);
    w->B_cap = B_cap;
    w->G_cap = G_cap;
    w->nu_cap = nu_cap;
    w->ni_cap = ni_cap;
    w->nt_cap = nt_cap;
    w->dmax = s->qout > s->cout ? s->qout : s->cout;
    int wmax = s->qin > s->D ? s->qin : s->D;
    if (s->qout + s->cout > wmax)
        wmax = s->qout + s->cout;
    for (int l = 0; l < s->nq; l++)
        wmax = s->q[l].out > wmax ? s->q[l].out : wmax;
    for (int l = 0; l < s->nc; l++)
        wmax = s->c[l].out > wmax ? s->c[l].out : wmax;
    for (int l = 0; l < s->nr; l++)
        wmax = s->r[l].out > wmax ? s->r[l].out : wmax;
    w->wmax = wmax;
    w->bs = S_(pick_block)(G_cap);
    int64_t bs = G_cap > 0 ? w->bs : 0;

    /* Two passes over the same list: first add up the sizes, then carve. */
    /* At most 11 fixed buffers, 6 tower inputs/outputs and 3 * MR_MAX_DENSE stacks. */
    size_t sz[3 * MR_MAX_DENSE + 24];
    R_ **dst[3 * MR_MAX_DENSE + 24];
    int nb = 0;
#define WANT(ptr, count) (dst[nb] = &(ptr), sz[nb++] = (size_t)(count))
    WANT(w->Q, B_cap * s->qout);
    WANT(w->Cl, B_cap * s->cout);
    WANT(w->dQ, B_cap * s->qout);
    WANT(w->dCl, B_cap * s->cout);
    if (s->nq)
        WANT(w->Xq, B_cap * s->qin);
    if (s->nc)
        WANT(w->Xc, B_cap * s->D);
    for (int l = 0; l + 1 < s->nq; l++)
        WANT(w->qa[l], B_cap * s->q[l].out);
    for (int l = 0; l + 1 < s->nc; l++)
        WANT(w->ca[l], B_cap * s->c[l].out);
    if (s->nr) {
        WANT(w->Xr, B_cap * (s->qout + s->cout));
        for (int l = 0; l < s->nr; l++)
            WANT(w->ra[l], B_cap * s->r[l].out);
    }
    WANT(w->dpred, B_cap);
    WANT(w->g0, B_cap * wmax);
    WANT(w->g1, B_cap * wmax);
    WANT(w->dU, nu_cap * s->D);
    WANT(w->dI, ni_cap * s->D);
    WANT(w->dTk, s->text ? nt_cap * s->T : 0);
    WANT(w->S, bs * G_cap);
    WANT(w->Qs, bs * w->dmax);
    WANT(w->lq, G_cap);
    WANT(w->sel, G_cap);
    WANT(w->rowf, bs);
#undef WANT
    size_t total = 0;
    for (int i = 0; i < nb; i++)
        total += S_(round_up)(sz[i]) * sizeof(R_);
    size_t ints = S_(round_up)((size_t)G_cap) * sizeof(int32_t);
    total += 3 * ints + 64;
    w->block = aligned_alloc(64, (total + 63) & ~(size_t)63);
    if (!w->block)
        return mr_err_set(e, MR_ENOMEM, "model work: cannot allocate %.1f MiB",
                          (double)total / 1048576.0);
    w->bytes = total;
    char *p = w->block;
    for (int i = 0; i < nb; i++) {
        *dst[i] = (R_ *)(void *)p;
        p += S_(round_up)(sz[i]) * sizeof(R_);
    }
    w->ord = (int32_t *)(void *)p;
    w->glo = (int32_t *)(void *)(p + ints);
    w->ghi = (int32_t *)(void *)(p + 2 * ints);
    /* Aliases: a stack's last activation is the tower output. */
    if (s->nq)
        w->qa[s->nq - 1] = w->Q;
    else
        w->Xq = w->Q;
    if (s->nc)
        w->ca[s->nc - 1] = w->Cl;
    else
        w->Xc = w->Cl;
    w->pred = s->nr ? w->ra[s->nr - 1] : NULL;
    return MR_OK;
}

void S_(mr_mk_bufs_free)(S_(MrkBufs) *w)
{
    if (!w)
        return;
    free(w->block);
    memset(w, 0, sizeof *w);
}

/* ---- Dense stacks ---- */

/* act[l] = layer l of the stack applied to act[l-1] (act[-1] = X0). */
static void S_(stack_forward)(const MrDense *L, int n, const R_ *params, const R_ *X0, int64_t B,
                              R_ *const *act)
{
    const R_ *x = X0;
    for (int l = 0; l < n; l++) {
        S_(mr_mk_dense_forward)(&L[l], params, x, B, act[l]);
        x = act[l];
    }
}

/* Reverse of stack_forward from dOut = dLoss/d(act[n-1]) (not modified). Adds the
 * parameter gradients; returns dLoss/dX0 in g0 or g1 (or dOut itself when n == 0),
 * or NULL when !need_dx. */
static const R_ *S_(stack_backward)(const MrDense *L, int n, const R_ *params, R_ *grads,
                                    const R_ *X0, R_ *const *act, int64_t B, const R_ *dOut,
                                    R_ *g0, R_ *g1, int need_dx)
{
    const R_ *cur = dOut;
    for (int l = n - 1; l >= 0; l--) {
        const R_ *X = l ? act[l - 1] : X0;
        /* A ReLU layer's dZ goes in place when cur is scratch, else into scratch; a
         * linear layer's dZ is cur itself (dense_backward does not write it then). */
        R_ *dZ = (R_ *)cur;
        if (L[l].relu && cur != g0 && cur != g1)
            dZ = g0;
        R_ *spare = dZ == g0 ? g1 : g0;
        R_ *dX = (l > 0 || need_dx) ? spare : NULL;
        S_(mr_mk_dense_backward)(&L[l], params, grads, X, act[l], B, cur, dZ, dX);
        cur = dX;
    }
    return need_dx || n == 0 ? cur : NULL;
}

/* ---- towers ---- */

void S_(mr_mk_query_forward)(const MrModelShape *s, const R_ *params, const S_(MrkBatch) *b,
                             S_(MrkBufs) *w)
{
    S_(mr_mk_gather_rows)(b->U, s->D, b->uslot, b->B, w->Xq, s->qin);
    if (s->text)
        S_(mr_mk_masked_mean_forward)(b->Tk, s->T, b->tok_off, b->tslot, b->B, w->Xq + s->D,
                                      s->qin);
    S_(stack_forward)(s->q, s->nq, params, w->Xq, b->B, w->qa);
}

void S_(mr_mk_towers_forward)(const MrModelShape *s, const R_ *params, const S_(MrkBatch) *b,
                              S_(MrkBufs) *w)
{
    S_(mr_mk_query_forward)(s, params, b, w);
    S_(mr_mk_gather_rows)(b->I, s->D, b->islot, b->B, w->Xc, s->D);
    S_(stack_forward)(s->c, s->nc, params, w->Xc, b->B, w->ca);
}

void S_(mr_mk_candidate_forward)(const MrModelShape *s, const R_ *params, const R_ *rows,
                                 int64_t n, R_ *out, S_(MrkBufs) *w)
{
    if (s->nc == 0) {
        memcpy(out, rows, (size_t)(n * s->D) * sizeof(R_));
        return;
    }
    R_ *act[MR_MAX_DENSE];
    memcpy(act, w->ca, sizeof act);
    act[s->nc - 1] = out; /* last layer writes straight into the caller's buffer */
    S_(stack_forward)(s->c, s->nc, params, rows, n, act);
}

void S_(mr_mk_rating_forward)(const MrModelShape *s, const R_ *params, const R_ *Q, const R_ *C,
                              int64_t n, R_ *pred, S_(MrkBufs) *w)
{
    R_ *act[MR_MAX_DENSE];
    memcpy(act, w->ra, sizeof act);
    act[s->nr - 1] = pred;
    S_(mr_mk_concat_cols)(Q, s->qout, C, s->cout, n, w->Xr);
    S_(stack_forward)(s->r, s->nr, params, w->Xr, n, act);
}

void S_(mr_mk_rating_step)(const MrModelShape *s, const R_ *params, R_ *grads,
                           const S_(MrkBatch) *b, int64_t G, double weight, S_(MrkBufs) *w,
                           double *sse)
{
    int64_t B = b->B;
    S_(mr_mk_concat_cols)(w->Q, s->qout, w->Cl, s->cout, B, w->Xr);
    S_(stack_forward)(s->r, s->nr, params, w->Xr, B, w->ra);
    S_(mr_mk_mse)(w->pred, b->rating, B, G, weight, w->dpred, sse);
    const R_ *dXr = S_(stack_backward)(s->r, s->nr, params, grads, w->Xr, w->ra, B, w->dpred,
                                       w->g0, w->g1, 1);
    /* += : dQ/dCl already hold the retrieval gradient (or zeros). */
    S_(mr_mk_split_add_cols)(dXr, B, w->dQ, s->qout, w->dCl, s->cout);
}

void S_(mr_mk_towers_backward)(const MrModelShape *s, const R_ *params, R_ *grads,
                               const S_(MrkBatch) *b, S_(MrkBufs) *w)
{
    int64_t B = b->B;
    const R_ *dXq = S_(stack_backward)(s->q, s->nq, params, grads, w->Xq, w->qa, B, w->dQ, w->g0,
                                       w->g1, 1);
    memset(w->dU, 0, (size_t)(b->nu * s->D) * sizeof(R_));
    S_(mr_mk_scatter_add_rows)(w->dU, s->D, b->uslot, B, dXq, s->qin);
    if (s->text) {
        memset(w->dTk, 0, (size_t)(b->nt * s->T) * sizeof(R_));
        S_(mr_mk_masked_mean_backward)(w->dTk, s->T, b->tok_off, b->tslot, B, dXq + s->D, s->qin);
    }
    /* The query tower's scratch is consumed; the candidate stack may reuse g0/g1. */
    const R_ *dXc = S_(stack_backward)(s->c, s->nc, params, grads, w->Xc, w->ca, B, w->dCl,
                                       w->g0, w->g1, 1);
    memset(w->dI, 0, (size_t)(b->ni * s->D) * sizeof(R_));
    S_(mr_mk_scatter_add_rows)(w->dI, s->D, b->islot, B, dXc, s->D);
}
