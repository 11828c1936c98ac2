/* model.c — the public model API of include/mpirec/model.h: shapes from the config,
 * parameter layout and initialisation, the work arena, and thin wrappers over the
 * float kernels (kernels_float.c).
 *
 * Parameter layout: one float buffer in the order query Dense 0..nq-1, candidate
 * Dense 0..nc-1, rating Dense 0..nr-1, each layer as kernel W [in x out] (Keras
 * layout) then bias b [out]. This is also the order of ref_torch's dense_params(),
 * which keeps the parity test's bookkeeping trivial. Initial values follow
 * SEMANTICS.md section 8: W ~ U(-sqrt(6/(in+out)), +sqrt(6/(in+out))) with the
 * counter-based draw of stream 100+l / 200+l / 300+l (element index j row-major over
 * [in x out]), biases 0; embedding rows use streams 1/2/3 with index r*dim + k.
 *
 * The wrappers validate what comes from outside the model (capacities, slot ranges)
 * and return MR_EINTERNAL with a message when a caller breaks the contract; they
 * never print or abort. The training path allocates nothing: every buffer is carved
 * in mr_model_work_init.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"
#include "mpirec/hash.h"
#include "mpirec/model.h"

/* ---- shape ---- */

/* Append a stack of Dense layers (sizes[0..n)) starting at input width `in`; ReLU on
 * all but the last. Returns the output width. */
static int add_stack(MrModelShape *s, MrDense *L, const int *sizes, int n, int in,
                     uint64_t stream0)
{
    for (int l = 0; l < n; l++) {
        L[l].in = in;
        L[l].out = sizes[l];
        L[l].relu = l + 1 < n;
        L[l].stream = stream0 + (uint64_t)l;
        L[l].w_off = s->n_dense;
        s->n_dense += (size_t)in * (size_t)sizes[l];
        L[l].b_off = s->n_dense;
        s->n_dense += (size_t)sizes[l];
        in = sizes[l];
    }
    return in;
}

int mr_model_shape(MrModelShape *s, const MrConfig *c, int64_t user_rows, int64_t item_rows,
                   MrErr *e)
{
    memset(s, 0, sizeof *s);
    s->task = c->model.task;
    s->D = c->model.embedding_dim;
    s->text = c->model.text.enabled ? 1 : 0;
    s->T = s->text ? c->model.text.dim : 0;
    s->user_rows = user_rows;
    s->item_rows = item_rows;
    s->text_rows = s->text ? c->model.text.max_tokens : 0;
    if (s->D < 1 || (s->text && (s->T < 1 || s->text_rows < 2)) || user_rows < 1 || item_rows < 1)
        return mr_err_set(e, MR_ECONFIG,
                          "model: embedding_dim %d, text.dim %d, text.max_tokens %lld, "
                          "%lld user rows, %lld item rows: all must be positive",
                          s->D, s->T, (long long)s->text_rows, (long long)user_rows,
                          (long long)item_rows);
    const MrIntList *ql = &c->model.query_layers, *cl = &c->model.candidate_layers,
                    *rl = &c->model.ranking_layers;
    int has_rating = s->task != MR_TASK_RETRIEVAL;
    if (ql->n > MR_MAX_DENSE || cl->n > MR_MAX_DENSE ||
        (has_rating && rl->n + 1 > MR_MAX_DENSE))
        return mr_err_set(e, MR_ECONFIG,
                          "model: at most %d Dense layers per tower (the rating MLP adds its "
                          "Dense(1)): query %d, candidate %d, ranking %d",
                          MR_MAX_DENSE, ql->n, cl->n, rl->n);
    for (int l = 0; l < ql->n; l++)
        if (ql->v[l] < 1)
            return mr_err_set(e, MR_ECONFIG, "model.query_layers[%d] = %d: must be >= 1", l,
                              ql->v[l]);
    for (int l = 0; l < cl->n; l++)
        if (cl->v[l] < 1)
            return mr_err_set(e, MR_ECONFIG, "model.candidate_layers[%d] = %d: must be >= 1", l,
                              cl->v[l]);
    for (int l = 0; l < rl->n; l++)
        if (rl->v[l] < 1)
            return mr_err_set(e, MR_ECONFIG, "model.ranking_layers[%d] = %d: must be >= 1", l,
                              rl->v[l]);
    s->qin = s->D + s->T;
    s->nq = ql->n;
    s->nc = cl->n;
    s->qout = add_stack(s, s->q, ql->v, ql->n, s->qin, MR_STREAM_QDENSE);
    s->cout = add_stack(s, s->c, cl->v, cl->n, s->D, MR_STREAM_CDENSE);
    if (s->task != MR_TASK_RANKING && s->qout != s->cout)
        return mr_err_set(e, MR_ECONFIG,
                          "model: the retrieval score q.c needs equal tower outputs, got query "
                          "%d and candidate %d (set model.query_layers / model.candidate_layers)",
                          s->qout, s->cout);
    if (has_rating) {
        int sizes[MR_MAX_DENSE];
        for (int l = 0; l < rl->n; l++)
            sizes[l] = rl->v[l];
        sizes[rl->n] = 1;
        s->nr = rl->n + 1;
        add_stack(s, s->r, sizes, s->nr, s->qout + s->cout, MR_STREAM_RDENSE);
    }
    return MR_OK;
}

/* ---- parameters ---- */

static void init_dense(float *params, const MrDense *L, uint64_t seed)
{
    double lim = sqrt(6.0 / (double)(L->in + L->out));
    uint64_t base = mr_init_base(seed, L->stream);
    size_t n = (size_t)L->in * (size_t)L->out;
    float *W = params + L->w_off;
    for (size_t j = 0; j < n; j++)
        W[j] = mr_init_value(base, (uint64_t)j, -lim, lim);
    memset(params + L->b_off, 0, (size_t)L->out * sizeof(float));
}

int mr_model_init(MrModel *m, const MrModelShape *s, uint64_t seed, MrErr *e)
{
    memset(m, 0, sizeof *m);
    m->s = *s;
    size_t n = s->n_dense ? s->n_dense : 1;
    size_t bytes = (n * sizeof(float) + 63) & ~(size_t)63;
    m->params = aligned_alloc(64, bytes);
    m->grads = aligned_alloc(64, bytes);
    if (!m->params || !m->grads) {
        mr_model_free(m);
        return mr_err_set(e, MR_ENOMEM, "model: cannot allocate 2 x %.1f MiB of dense parameters",
                          (double)bytes / 1048576.0);
    }
    memset(m->params, 0, bytes);
    memset(m->grads, 0, bytes);
    for (int l = 0; l < s->nq; l++)
        init_dense(m->params, &s->q[l], seed);
    for (int l = 0; l < s->nc; l++)
        init_dense(m->params, &s->c[l], seed);
    for (int l = 0; l < s->nr; l++)
        init_dense(m->params, &s->r[l], seed);
    return MR_OK;
}

void mr_model_free(MrModel *m)
{
    if (!m)
        return;
    free(m->params);
    free(m->grads);
    m->params = m->grads = NULL;
}

void mr_embedding_init_rows(float *out, uint64_t seed, uint64_t stream, int64_t row_lo,
                            int64_t row_hi, int dim, double init)
{
    uint64_t base = mr_init_base(seed, stream);
    for (int64_t r = row_lo; r < row_hi; r++)
        for (int k = 0; k < dim; k++)
            out[(r - row_lo) * dim + k] =
                mr_init_value(base, (uint64_t)r * (uint64_t)dim + (uint64_t)k, -init, init);
}

void mr_embedding_init_list(float *out, uint64_t seed, uint64_t stream, const int64_t *rows,
                            int64_t n, int dim, double init)
{
    uint64_t base = mr_init_base(seed, stream);
    for (int64_t i = 0; i < n; i++)
        for (int k = 0; k < dim; k++)
            out[i * dim + k] =
                mr_init_value(base, (uint64_t)rows[i] * (uint64_t)dim + (uint64_t)k, -init, init);
}

/* ---- work ---- */

static MrkBufs_f *bufs(const MrModelWork *w) { return (MrkBufs_f *)w->impl; }

static void mirror(MrModelWork *w)
{
    MrkBufs_f *b = bufs(w);
    w->B_cap = b->B_cap;
    w->G_cap = b->G_cap;
    w->nu_cap = b->nu_cap;
    w->ni_cap = b->ni_cap;
    w->nt_cap = b->nt_cap;
    w->Q = b->Q;
    w->Cl = b->Cl;
    w->dQ = b->dQ;
    w->dCl = b->dCl;
    w->pred = b->pred;
    w->dU = b->dU;
    w->dI = b->dI;
    w->dTk = b->dTk;
}

int mr_model_work_init(MrModelWork *w, const MrModelShape *s, int64_t B_cap, int64_t G_cap,
                       int64_t nu_cap, int64_t ni_cap, int64_t nt_cap, MrErr *e)
{
    mr_model_work_free(w);
    MrkBufs_f *b = calloc(1, sizeof *b);
    if (!b)
        return mr_err_set(e, MR_ENOMEM, "model work: out of memory");
    int rc = mr_mk_bufs_init_f(b, s, B_cap, G_cap, nu_cap, ni_cap, nt_cap, e);
    if (rc != MR_OK) {
        free(b);
        return rc;
    }
    w->impl = b;
    mirror(w);
    return MR_OK;
}

void mr_model_work_free(MrModelWork *w)
{
    if (!w)
        return;
    if (w->impl) {
        mr_mk_bufs_free_f(bufs(w));
        free(w->impl);
    }
    memset(w, 0, sizeof *w);
}

/* ---- operations ---- */

void mr_model_zero_grad(MrModel *m) { memset(m->grads, 0, m->s.n_dense * sizeof(float)); }

static MrkBatch_f batch_of(const MrBatchView *v)
{
    MrkBatch_f b = {v->B,  v->uslot, v->islot, v->tok_off, v->tslot, v->rating,
                    v->nu, v->ni,    v->nt,    v->U,       v->I,     v->Tk};
    return b;
}

static int check_work(const MrModelWork *w, const char *what, MrErr *e)
{
    if (!w || !w->impl)
        return mr_err_set(e, MR_EINTERNAL, "%s: work buffers not initialised", what);
    return MR_OK;
}

/* Capacities and slot ranges of a batch view (ids are validated at the boundary). */
static int check_batch(const MrModelShape *s, const MrBatchView *b, const MrModelWork *w,
                       int need_items, MrErr *e)
{
    if (b->B < 0 || b->B > w->B_cap || b->nu > w->nu_cap || b->ni > w->ni_cap ||
        (s->text && b->nt > w->nt_cap))
        return mr_err_set(e, MR_EINTERNAL,
                          "model: batch B=%lld nu=%lld ni=%lld nt=%lld exceeds the work "
                          "capacity B=%lld nu=%lld ni=%lld nt=%lld",
                          (long long)b->B, (long long)b->nu, (long long)b->ni, (long long)b->nt,
                          (long long)w->B_cap, (long long)w->nu_cap, (long long)w->ni_cap,
                          (long long)w->nt_cap);
    for (int64_t i = 0; i < b->B; i++) {
        if (b->uslot[i] < 0 || b->uslot[i] >= b->nu)
            return mr_err_set(e, MR_EINTERNAL, "model: example %lld: user slot %d not in [0, %lld)",
                              (long long)i, b->uslot[i], (long long)b->nu);
        if (need_items && (b->islot[i] < 0 || b->islot[i] >= b->ni))
            return mr_err_set(e, MR_EINTERNAL, "model: example %lld: item slot %d not in [0, %lld)",
                              (long long)i, b->islot[i], (long long)b->ni);
    }
    if (s->text && b->B > 0 && (!b->tok_off || (b->tok_off[b->B] > b->tok_off[0] && !b->tslot)))
        return mr_err_set(e, MR_EINTERNAL, "model: the query tower has text but the batch has no "
                                           "token lists");
    if (s->text) {
        for (int64_t i = 0; i < b->B; i++)
            if (b->tok_off[i + 1] < b->tok_off[i])
                return mr_err_set(e, MR_EINTERNAL, "model: example %lld: token offsets decrease",
                                  (long long)i);
        if (b->B > 0)
            for (int64_t t = b->tok_off[0]; t < b->tok_off[b->B]; t++)
                if (b->tslot[t] < 0 || b->tslot[t] >= b->nt)
                    return mr_err_set(e, MR_EINTERNAL, "model: token %lld: slot %d not in [0, %lld)",
                                      (long long)t, b->tslot[t], (long long)b->nt);
    }
    return MR_OK;
}

int mr_model_forward_towers(const MrModel *m, const MrBatchView *b, MrModelWork *w, MrErr *e)
{
    int rc = check_work(w, "forward_towers", e);
    if (rc == MR_OK)
        rc = check_batch(&m->s, b, w, 1, e);
    if (rc != MR_OK)
        return rc;
    MrkBatch_f kb = batch_of(b);
    mr_mk_towers_forward_f(&m->s, m->params, &kb, bufs(w));
    return MR_OK;
}

int mr_model_rating_step(MrModel *m, const MrBatchView *b, int64_t G, double rating_weight,
                         MrModelWork *w, double *sse, MrErr *e)
{
    *sse = 0.0;
    int rc = check_work(w, "rating_step", e);
    if (rc != MR_OK)
        return rc;
    if (m->s.nr == 0)
        return mr_err_set(e, MR_EINTERNAL, "rating_step: the model has no rating head (task %s)",
                          mr_task_name(m->s.task));
    if (b->B > w->B_cap || G < b->B)
        return mr_err_set(e, MR_EINTERNAL, "rating_step: B=%lld, G=%lld, capacity %lld",
                          (long long)b->B, (long long)G, (long long)w->B_cap);
    MrkBatch_f kb = batch_of(b);
    mr_mk_rating_step_f(&m->s, m->params, m->grads, &kb, G, rating_weight, bufs(w), sse);
    return MR_OK;
}

int mr_model_backward_towers(MrModel *m, const MrBatchView *b, MrModelWork *w, MrErr *e)
{
    int rc = check_work(w, "backward_towers", e);
    if (rc != MR_OK)
        return rc;
    if (b->B > w->B_cap || b->nu > w->nu_cap || b->ni > w->ni_cap ||
        (m->s.text && b->nt > w->nt_cap))
        return mr_err_set(e, MR_EINTERNAL, "backward_towers: batch exceeds the work capacity");
    MrkBatch_f kb = batch_of(b);
    mr_mk_towers_backward_f(&m->s, m->params, m->grads, &kb, bufs(w));
    return MR_OK;
}

int mr_model_query_forward(const MrModel *m, const MrBatchView *b, float *Q, MrModelWork *w,
                           MrErr *e)
{
    int rc = check_work(w, "query_forward", e);
    if (rc != MR_OK)
        return rc;
    /* Evaluation batches may exceed the training capacity: go in chunks of B_cap. */
    if (w->B_cap < 1 && b->B > 0)
        return mr_err_set(e, MR_EINTERNAL, "query_forward: work has no rows");
    for (int64_t i0 = 0; i0 < b->B; i0 += w->B_cap) {
        MrBatchView c = *b;
        c.B = b->B - i0 < w->B_cap ? b->B - i0 : w->B_cap;
        c.uslot = b->uslot + i0;
        c.islot = b->islot ? b->islot + i0 : NULL;
        c.tok_off = b->tok_off ? b->tok_off + i0 : NULL;
        c.rating = NULL;
        if ((rc = check_batch(&m->s, &c, w, 0, e)) != MR_OK)
            return rc;
        MrkBatch_f kb = batch_of(&c);
        mr_mk_query_forward_f(&m->s, m->params, &kb, bufs(w));
        memcpy(Q + i0 * m->s.qout, w->Q, (size_t)(c.B * m->s.qout) * sizeof(float));
    }
    return MR_OK;
}

int mr_model_candidate_forward(const MrModel *m, const float *item_rows, int64_t n, float *C,
                               MrModelWork *w, MrErr *e)
{
    int rc = check_work(w, "candidate_forward", e);
    if (rc != MR_OK)
        return rc;
    if (n > 0 && w->B_cap < 1)
        return mr_err_set(e, MR_EINTERNAL, "candidate_forward: work has no rows");
    for (int64_t i0 = 0; i0 < n; i0 += w->B_cap) {
        int64_t c = n - i0 < w->B_cap ? n - i0 : w->B_cap;
        mr_mk_candidate_forward_f(&m->s, m->params, item_rows + i0 * m->s.D, c,
                                  C + i0 * m->s.cout, bufs(w));
    }
    return MR_OK;
}

int mr_model_rating_forward(const MrModel *m, const float *Q, const float *C, int64_t n,
                            float *pred, MrModelWork *w, MrErr *e)
{
    int rc = check_work(w, "rating_forward", e);
    if (rc != MR_OK)
        return rc;
    if (m->s.nr == 0)
        return mr_err_set(e, MR_EINTERNAL, "rating_forward: the model has no rating head");
    if (n > 0 && w->B_cap < 1)
        return mr_err_set(e, MR_EINTERNAL, "rating_forward: work has no rows");
    for (int64_t i0 = 0; i0 < n; i0 += w->B_cap) {
        int64_t c = n - i0 < w->B_cap ? n - i0 : w->B_cap;
        mr_mk_rating_forward_f(&m->s, m->params, Q + i0 * m->s.qout, C + i0 * m->s.cout, c,
                               pred + i0, bufs(w));
    }
    return MR_OK;
}

int mr_retrieval_loss(const MrRetrievalOpts *o, int64_t B, int64_t G, int d, const float *Q,
                      const float *Cg, int64_t pos_offset, const int64_t *cand_ids,
                      const float *cand_p, double scale, float *dQ, float *dCg, double *loss,
                      MrModelWork *w, MrErr *e)
{
    *loss = 0.0;
    int rc = check_work(w, "retrieval_loss", e);
    if (rc != MR_OK)
        return rc;
    return mr_mk_retrieval_loss_f(o, B, G, d, Q, Cg, pos_offset, cand_ids, cand_p, scale, dQ, dCg,
                                  loss, bufs(w), e);
}

/* ---- queries ---- */

void mr_model_param_name(const MrModelShape *s, size_t off, char *buf, size_t n)
{
    static const char *const tower[3] = {"query", "candidate", "rating"};
    const MrDense *stacks[3] = {s->q, s->c, s->r};
    int counts[3] = {s->nq, s->nc, s->nr};
    for (int t = 0; t < 3; t++)
        for (int l = 0; l < counts[t]; l++) {
            const MrDense *L = &stacks[t][l];
            if (off >= L->w_off && off < L->b_off) {
                size_t j = off - L->w_off;
                snprintf(buf, n, "%s dense %d kernel [%zu, %zu]", tower[t], l, j / (size_t)L->out,
                         j % (size_t)L->out);
                return;
            }
            if (off >= L->b_off && off < L->b_off + (size_t)L->out) {
                snprintf(buf, n, "%s dense %d bias [%zu]", tower[t], l, off - L->b_off);
                return;
            }
        }
    snprintf(buf, n, "offset %zu (not a dense parameter)", off);
}
