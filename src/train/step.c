/* step.c — the trainable state and one data-parallel training step.
 *
 * Order of a step (see train.h): lookups, towers, [allgather of the candidate
 * tower outputs of the whole global batch], retrieval loss over the local query
 * rows against all G candidates, [reduce-scatter of the candidate gradients back
 * to the ranks that own those rows], rating head, tower backward, one small
 * allreduce that agrees on the loss, on non-finite values and on a pending stop
 * signal, then the dense-gradient allreduce (started non-blocking and overlapped
 * with the embedding exchanges when dist.overlap) and the updates.
 *
 * Why the agreement comes before any update: a NaN on one rank must stop every
 * rank before any parameter moves, so the last good state (and checkpoint) stays
 * finite; and a signal must be seen by all ranks at the same step boundary.
 *
 * Buffers: everything is sized by mr_step_reserve from the epoch plan; the step
 * itself never allocates (the communicator's wrappers do not either).
 *
 * Fault injection (tests; docs/robustness.md): MPIREC_FAULT_INJECT, the variable
 * src/ckpt reads (ckpt.h), may also hold  V_WHAT_at_step:N[@R]  with V = nan | inf
 * and WHAT = loss | grad (the first dense gradient, or the user table's when the
 * model has no dense layer) | user_grad | item_grad: at step N rank R (every rank
 * if omitted) overwrites that value just before the agreement, so the real
 * detection path reports it. Read once, by mr_step_ctx_create.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpirec/hash.h"
#include "mpirec/log.h"
#include "mpirec/train.h"
#include "step_ctx.h"

static struct {
    int64_t step; /* 0: no fault */
    int rank;     /* -1: every rank */
    int what;     /* 0 loss, 1 grad, 2 user_grad, 3 item_grad */
    float value;
} g_fault;

static int fault_load(MrErr *e)
{
    static const char *const whats[] = {"loss", "grad", "user_grad", "item_grad"};
    memset(&g_fault, 0, sizeof g_fault);
    const char *env = getenv("MPIREC_FAULT_INJECT");
    for (const char *p = env; p && *p; p += p[strcspn(p, ",")] ? strcspn(p, ",") + 1 : strlen(p)) {
        size_t n = strcspn(p, ",");
        if (n < 4 || (strncmp(p, "nan_", 4) && strncmp(p, "inf_", 4)))
            continue; /* another module's fault (ckpt_...) */
        char item[128], name[64] = "";
        snprintf(item, sizeof item, "%.*s", (int)n, p);
        long long step = 0;
        int rank = -1, used = 0;
        int ok = sscanf(item + 4, "%63[a-z_]:%lld%n@%d%n", name, &step, &used, &rank, &used) >= 2 &&
                 item[4 + used] == '\0' && step > 0 && rank >= -1;
        size_t nl = strlen(name);
        ok = ok && nl > 8 && strcmp(name + nl - 8, "_at_step") == 0;
        name[ok ? nl - 8 : 0] = '\0';
        g_fault.what = -1;
        for (int k = 0; ok && k < 4; k++)
            if (strcmp(name, whats[k]) == 0)
                g_fault.what = k;
        if (g_fault.what < 0)
            return mr_err_set(e, MR_ECONFIG,
                              "MPIREC_FAULT_INJECT: bad item '%s' (known: "
                              "nan|inf_loss|grad|user_grad|item_grad_at_step:N[@R])",
                              item);
        g_fault.step = step;
        g_fault.rank = rank;
        g_fault.value = item[0] == 'n' ? NAN : INFINITY;
    }
    return MR_OK;
}

int mr_state_init(MrState *s, MrComm *c, const MrConfig *cfg, int64_t users, int64_t items,
                  MrErr *e)
{
    memset(s, 0, sizeof *s);
    int rc = mr_model_shape(&s->shape, cfg, users + 1, items + 1, e);
    if (!rc)
        rc = mr_model_init(&s->model, &s->shape, cfg->train.seed, e);
    mr_optim_from_config(&s->opt, cfg);
    int slots = mr_optim_state_per_param(&s->opt);
    if (!rc) {
        size_t n = s->shape.n_dense;
        s->dense_state = malloc(n * (size_t)slots * sizeof *s->dense_state + 4);
        if (!s->dense_state)
            rc = mr_err_set(e, MR_ENOMEM, "out of memory for the dense optimizer state");
        else
            for (int k = 0; k < slots; k++)
                for (size_t i = 0; i < n; i++)
                    s->dense_state[(size_t)k * n + i] = mr_optim_state_init(&s->opt, k);
    }
    if ((rc = mr_comm_agree(c, rc, e))) {
        mr_state_free(s);
        return rc;
    }
    MrSharding mode = cfg->dist.embedding_sharding;
    double init = cfg->model.embedding_init;
    if ((rc = mr_emb_init(&s->user, c, "user", users + 1, cfg->model.embedding_dim, mode,
                          cfg->train.seed, MR_STREAM_USER, init, &s->opt, e)) ||
        (rc = mr_emb_init(&s->item, c, "item", items + 1, cfg->model.embedding_dim, mode,
                          cfg->train.seed, MR_STREAM_ITEM, init, &s->opt, e))) {
        mr_state_free(s);
        return rc;
    }
    s->has_text = cfg->model.text.enabled;
    if (s->has_text &&
        (rc = mr_emb_init(&s->text, c, "text", cfg->model.text.max_tokens, cfg->model.text.dim,
                          mode, cfg->train.seed, MR_STREAM_TEXT, init, &s->opt, e))) {
        mr_state_free(s);
        return rc;
    }
    return MR_OK;
}

void mr_state_free(MrState *s)
{
    if (!s)
        return;
    mr_model_free(&s->model);
    free(s->dense_state);
    mr_emb_free(&s->user);
    mr_emb_free(&s->item);
    mr_emb_free(&s->text);
    memset(s, 0, sizeof *s);
}

int mr_step_ctx_create(MrStepCtx **px, MrComm *c, const MrConfig *cfg, const MrState *s,
                       const int64_t *item_count, MrErr *e)
{
    MrStepCtx *x = calloc(1, sizeof *x);
    int rc = x ? fault_load(e) : mr_err_set(e, MR_ENOMEM, "out of memory");
    if (!rc) {
        x->cfg = *cfg;
        x->P = c->size;
        x->rank = c->rank;
        x->retrieval = cfg->model.task != MR_TASK_RANKING;
        x->rating = cfg->model.task != MR_TASK_RETRIEVAL;
        x->global_neg = cfg->dist.negatives == MR_NEG_GLOBAL;
        x->opts.temperature = cfg->loss.temperature;
        x->opts.remove_accidental_hits = cfg->loss.remove_accidental_hits;
        x->opts.num_hard_negatives = cfg->loss.num_hard_negatives;
        x->opts.logq = cfg->loss.logq;
        x->w_ret = cfg->model.task == MR_TASK_MULTITASK ? cfg->loss.retrieval_weight : 1.0;
        x->w_rat = cfg->model.task == MR_TASK_MULTITASK ? cfg->loss.rating_weight : 1.0;
        x->d = s->shape.cout;
        x->counts = malloc((size_t)x->P * 2 * sizeof *x->counts);
        if (!x->counts)
            rc = mr_err_set(e, MR_ENOMEM, "out of memory");
    }
    /* A k of at least the candidate count is always a hit (TFRS Streaming top-k,
     * SEMANTICS.md section 2): legal, but worth saying once per run. */
    for (int k = 0; !rc && x->retrieval && c->rank == 0 && k < cfg->eval.ks.n; k++)
        if (cfg->eval.ks.v[k] >= s->item.rows - 1) {
            mr_log(MR_LOG_WARN,
                   "eval.ks: k = %d is not smaller than the number of candidate items "
                   "(%lld): top_%d is 1 by definition",
                   cfg->eval.ks.v[k], (long long)(s->item.rows - 1), cfg->eval.ks.v[k]);
            break;
        }
    if (!rc && cfg->loss.logq) {
        /* p_j = count_j / total in float32, as the reference computes it. */
        int64_t rows = s->item.rows;
        x->item_p = malloc((size_t)rows * sizeof *x->item_p);
        if (!x->item_p || !item_count)
            rc = mr_err_set(e, MR_ENOMEM, "out of memory for item frequencies");
        else {
            float total = 0;
            for (int64_t i = 0; i < rows; i++)
                total += (float)item_count[i];
            for (int64_t i = 0; i < rows; i++)
                x->item_p[i] = total > 0 ? (float)item_count[i] / total : 0.0f;
        }
    }
    if (rc) {
        mr_step_ctx_destroy(&x);
        return rc;
    }
    *px = x;
    return MR_OK;
}

void mr_step_ctx_destroy(MrStepCtx **px)
{
    MrStepCtx *x = px ? *px : NULL;
    if (!x)
        return;
    mr_model_work_free(&x->w);
    free(x->uslot);
    free(x->islot);
    free(x->tslot);
    free(x->tok_ids);
    free(x->tok_rel);
    free(x->Cg);
    free(x->dCg);
    free(x->cand_ids);
    free(x->cand_p);
    free(x->item_p);
    free(x->counts);
    free(x);
    *px = NULL;
}

#define REGROW(p, n)                                                                               \
    do {                                                                                           \
        void *q_ = realloc((p), (size_t)(n) + 8);                                                  \
        if (!q_)                                                                                   \
            rc = MR_ENOMEM;                                                                        \
        else                                                                                       \
            (p) = q_;                                                                              \
    } while (0)

int mr_step_reserve(MrStepCtx *x, MrComm *c, MrState *s, const MrEpochPlan *p, MrErr *e)
{
    int64_t caps[2] = {p->max_slice, p->max_slice_tokens};
    int rc = mr_comm_allreduce_i64(c, caps, 2, MR_MAX, e);
    if (rc)
        return rc;
    int64_t bs = caps[0] < 1 ? 1 : caps[0], ts = caps[1] < 1 ? 1 : caps[1];
    int64_t G = p->B < 1 ? 1 : p->B;
    if (bs > x->bs_cap || ts > x->ts_cap || G > x->G_cap) {
        bs = bs > x->bs_cap ? bs : x->bs_cap;
        ts = ts > x->ts_cap ? ts : x->ts_cap;
        G = G > x->G_cap ? G : x->G_cap;
        int d = x->d;
        REGROW(x->uslot, bs * 4);
        REGROW(x->islot, bs * 4);
        REGROW(x->tslot, ts * 4);
        REGROW(x->tok_ids, ts * 8);
        REGROW(x->tok_rel, (bs + 1) * 8);
        REGROW(x->Cg, G * d * 4);
        REGROW(x->dCg, G * d * 4);
        REGROW(x->cand_ids, G * 8);
        REGROW(x->cand_p, G * 4);
        if (rc)
            rc = mr_err_set(e, MR_ENOMEM, "out of memory for the step buffers");
        int64_t nt = s->has_text ? (ts < s->text.rows ? ts : s->text.rows) : 0;
        if (!rc)
            rc = mr_model_work_init(&x->w, &s->shape, bs, G, bs, bs, nt, e);
        x->bs_cap = bs;
        x->ts_cap = ts;
        x->G_cap = G;
    }
    if ((rc = mr_comm_agree(c, rc, e)))
        return rc;
    /* Tables: per-rank lookups of at most a slice; summed over ranks at most a
     * global batch (tokens: the sum of the ranks' largest slices). */
    if ((rc = mr_emb_reserve(&s->user, c, bs, G, e)) ||
        (rc = mr_emb_reserve(&s->item, c, bs, G, e)))
        return rc;
    if (s->has_text) {
        int64_t tot = ts * c->size;
        if ((rc = mr_emb_reserve(&s->text, c, ts, tot, e)))
            return rc;
    }
    return MR_OK;
}

static int all_finite(const float *v, int64_t n)
{
    float acc = 0;
    for (int64_t i = 0; i < n; i++)
        acc += v[i] * 0.0f; /* NaN/Inf propagate; finite values give 0 */
    return acc == 0.0f;
}

int mr_train_step(MrStepCtx *x, MrComm *c, MrState *s, const MrEpochPlan *p, int64_t b,
                  int flags, MrStepStats *st, int64_t step, MrErr *e)
{
    double t0 = mr_comm_wtime(), c0 = c->comm_seconds;
    int64_t by0 = c->bytes_sent;
    int P = x->P, d = x->d, rc;
    int64_t a, bnd, G, off;
    mr_epoch_plan_batch(p, c->rank, P, b, &a, &bnd, &G, &off);
    int64_t Br = bnd - a;
    MrModel *m = &s->model;
    MrModelWork *w = &x->w;

    /* lookups */
    if ((rc = mr_emb_lookup(&s->user, c, p->user + a, Br, x->uslot, e)) ||
        (rc = mr_emb_lookup(&s->item, c, p->item + a, Br, x->islot, e)))
        return rc;
    MrBatchView v = {0};
    v.B = Br;
    v.uslot = x->uslot;
    v.islot = x->islot;
    v.rating = p->rating + a;
    v.nu = s->user.nu;
    v.ni = s->item.nu;
    v.U = s->user.rows_buf;
    v.I = s->item.rows_buf;
    if (s->has_text) {
        int64_t t0k = p->tok_off[a], nt = p->tok_off[bnd] - t0k;
        for (int64_t k = 0; k < nt; k++)
            x->tok_ids[k] = p->tok[t0k + k];
        for (int64_t i = 0; i <= Br; i++)
            x->tok_rel[i] = p->tok_off[a + i] - t0k;
        if ((rc = mr_emb_lookup(&s->text, c, x->tok_ids, nt, x->tslot, e)))
            return rc;
        v.tok_off = x->tok_rel;
        v.tslot = x->tslot;
        v.nt = s->text.nu;
        v.Tk = s->text.rows_buf;
    }

    /* forward, loss, backward */
    mr_model_zero_grad(m);
    if ((rc = mr_model_forward_towers(m, &v, w, e)))
        return rc;
    double ret_loss = 0, sse = 0;
    if (x->retrieval) {
        const float *Cg = w->Cl;
        float *dCg = w->dCl;
        int64_t Gc = Br, pos_off = 0;
        const int64_t *ids = p->item + a;
        if (x->global_neg && P > 1) {
            for (int q = 0; q < P; q++) {
                int64_t g, lo, hi;
                mr_batch_slice(p->N, p->B, b, q, P, &g, &lo, &hi);
                x->counts[q] = (hi - lo) * d;               /* floats */
                x->counts[P + q] = (hi - lo) * d * 4;       /* bytes */
            }
            if ((rc = mr_comm_allgatherv(c, w->Cl, (size_t)(Br * d * 4), x->Cg, x->counts + P, e)))
                return rc;
            if (x->opts.remove_accidental_hits || x->opts.logq) {
                for (int q = 0; q < P; q++)
                    x->counts[P + q] = x->counts[q] / d * 8;
                if ((rc = mr_comm_allgatherv(c, p->item + a, (size_t)(Br * 8), x->cand_ids,
                                             x->counts + P, e)))
                    return rc;
                ids = x->cand_ids;
            }
            Cg = x->Cg;
            dCg = x->dCg;
            Gc = G;
            pos_off = off;
        }
        const float *cp = NULL;
        if (x->opts.logq) {
            for (int64_t j = 0; j < Gc; j++)
                x->cand_p[j] = x->item_p[ids[j]];
            cp = x->cand_p;
        }
        if ((rc = mr_retrieval_loss(&x->opts, Br, Gc, d, w->Q, Cg, pos_off, ids, cp, x->w_ret,
                                    w->dQ, dCg, &ret_loss, w, e)))
            return rc;
        if (dCg != w->dCl &&
            (rc = mr_comm_reduce_scatter_f32(c, x->dCg, w->dCl, x->counts, e)))
            return rc;
    } else {
        memset(w->dQ, 0, (size_t)(Br * s->shape.qout) * sizeof(float));
        memset(w->dCl, 0, (size_t)(Br * s->shape.cout) * sizeof(float));
    }
    if (x->rating && (rc = mr_model_rating_step(m, &v, G, x->w_rat, w, &sse, e)))
        return rc;
    if ((rc = mr_model_backward_towers(m, &v, w, e)))
        return rc;

    if (g_fault.step == step && (g_fault.rank < 0 || g_fault.rank == c->rank)) {
        size_t nd0 = s->shape.n_dense;
        if (g_fault.what == 0)
            ret_loss = g_fault.value;
        else if (g_fault.what == 1 && nd0 > 0)
            m->grads[0] = g_fault.value;
        else if (g_fault.what == 3 && v.ni > 0)
            w->dI[0] = g_fault.value;
        else if (v.nu > 0)
            w->dU[0] = g_fault.value;
    }

    /* agreement: loss parts, local non-finite gradients, stop signal. Local dense
     * gradients are checked here too, so that the dense allreduce below can overlap
     * the embedding updates: if every rank's part is finite, only an overflow of
     * their sum can still be non-finite, and that is caught before the dense update
     * (the run then stops without writing a checkpoint of this state). */
    size_t nd = s->shape.n_dense;
    /* bad_emb: bit 0 user, 1 item, 2 text table (summed per table in agree[6..8]) */
    int bad_emb = (all_finite(w->dU, v.nu * s->shape.D) ? 0 : 1) |
                  (all_finite(w->dI, v.ni * s->shape.D) ? 0 : 2) |
                  (s->has_text && !all_finite(w->dTk, v.nt * s->shape.T) ? 4 : 0);
    int bad_dense = !all_finite(m->grads, (int64_t)nd);
    double agree[9] = {ret_loss,
                       sse,
                       (double)(bad_emb != 0),
                       (double)bad_dense,
                       (double)((flags & MR_STEP_STOP) != 0),
                       (double)((flags & MR_STEP_CHECKPOINT) != 0),
                       (double)(bad_emb & 1),
                       (double)(bad_emb >> 1 & 1),
                       (double)(bad_emb >> 2)};
    if ((rc = mr_comm_allreduce_f64(c, agree, 9, MR_SUM, e)))
        return rc;
    double loss = agree[0] + (x->rating ? x->w_rat * agree[1] / (double)G : 0);
    if (!isfinite(loss))
        return mr_err_set(e, MR_ENUMERIC,
                          "step %lld: the loss is %s (retrieval part %g, rating squared error %g); "
                          "no parameter was updated",
                          (long long)step, isnan(loss) ? "NaN" : "infinite", agree[0], agree[1]);
    if (agree[2] > 0)
        return mr_err_set(e, MR_ENUMERIC,
                          "step %lld: non-finite gradient of the %s embedding table on %d "
                          "rank(s); no parameter was updated",
                          (long long)step,
                          agree[6] > 0 ? "user" : agree[7] > 0 ? "item" : "text token",
                          (int)agree[2]);
    if (agree[3] > 0) {
        /* The lowest rank with a bad dense gradient names its first bad entry
         * (key = rank * (nd + 1) + offset; every rank has the same shapes). */
        size_t at = 0;
        while (bad_dense && at < nd && isfinite(m->grads[at]))
            at++;
        int64_t key = bad_dense ? (int64_t)c->rank * (int64_t)(nd + 1) + (int64_t)at : INT64_MAX;
        if ((rc = mr_comm_allreduce_i64(c, &key, 1, MR_MIN, e)))
            return rc;
        char name[128];
        mr_model_param_name(&s->shape, (size_t)(key % (int64_t)(nd + 1)), name, sizeof name);
        return mr_err_set(e, MR_ENUMERIC,
                          "step %lld: non-finite gradient in %s (rank %lld); no parameter was "
                          "updated",
                          (long long)step, name, (long long)(key / (int64_t)(nd + 1)));
    }

    /* dense allreduce overlapped with the embedding exchanges and updates */
    MrCommRequest req = {0};
    int overlap = x->cfg.dist.overlap && P > 1 && nd > 0;
    if (overlap) {
        if ((rc = mr_comm_iallreduce_f32_start(c, m->grads, nd, &req, e)))
            return rc;
    } else if (P > 1 && nd > 0 && (rc = mr_comm_allreduce_f32(c, m->grads, nd, MR_SUM, e))) {
        return rc;
    }
    if ((rc = mr_emb_apply(&s->user, c, w->dU, &s->opt, e)) ||
        (rc = mr_emb_apply(&s->item, c, w->dI, &s->opt, e)) ||
        (s->has_text && (rc = mr_emb_apply(&s->text, c, w->dTk, &s->opt, e)))) {
        if (overlap)
            mr_comm_iallreduce_wait(c, &req, NULL);
        return rc;
    }
    if (overlap && (rc = mr_comm_iallreduce_wait(c, &req, e)))
        return rc;
    if (!all_finite(m->grads, (int64_t)nd))
        return mr_err_set(e, MR_ENUMERIC,
                          "step %lld: the summed dense gradient overflowed to a non-finite value",
                          (long long)step);
    if (nd)
        mr_optim_dense_update(&s->opt, m->params, s->dense_state, m->grads, nd);
    mr_optim_step_done(&s->opt);

    st->loss = loss;
    st->retrieval_loss = agree[0];
    st->mse = x->rating ? agree[1] / (double)G : 0;
    st->examples = G;
    st->stop_requested = agree[4] > 0;
    st->ckpt_requested = agree[5] > 0;
    st->seconds = mr_comm_wtime() - t0;
    st->comm_seconds = c->comm_seconds - c0;
    st->bytes_sent = c->bytes_sent - by0;
    return MR_OK;
}
