/* eval.c — factorized top-k accuracy and RMSE, distributed.
 *
 * TFRS's rule (SEMANTICS.md section 2): query i hits at k iff fewer than k
 * candidates score STRICTLY above the positive's score p_i; the candidates are
 * the unique items 1..V (not OOV). We take p_i from the same sgemm that scores
 * the candidates (the positive's own column), so the positive never loses to its
 * own copy by a rounding difference (documented in docs/training.md).
 *
 * Distribution: each rank scores a slice of the corpus (replicated tables: a
 * contiguous id range; row-sharded: the rows it owns), so the candidate tower runs
 * once per item. Queries are processed in rounds: each rank contributes up to
 * eval.batch_size / P of its test queries, the round's queries are allgathered,
 * and every rank scores them against its slice in column blocks with sgemm,
 * keeping per query the top K = max(ks) scores of its slice and, when the
 * positive is in its slice, p_i. Then p is combined with a MAX allreduce, each
 * rank counts its kept scores above p_i, and the counts are summed. Keeping the
 * top K is exact: a score above p_i is above the final heap minimum whenever the
 * count is below K, so it was never evicted.
 * No [queries x items] matrix is ever held: one [queries x block] tile at a time.
 */
#include <cblas.h>
/* OpenBLAS's cblas.h pulls in <complex.h>, whose macro I would clash with
 * MrBatchView's member of that name. */
#undef I
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../train/step_ctx.h"
#include "mpirec/log.h"
#include "mpirec/train.h"

#define COL_BLOCK 1024

typedef struct Heap {
    float *v; /* [K] min-heap */
    int n;
} Heap;

static void heap_push(Heap *h, int K, float x)
{
    float *v = h->v;
    if (h->n < K) {
        int i = h->n++;
        while (i > 0) {
            int p = (i - 1) / 2;
            if (v[p] <= x)
                break;
            v[i] = v[p];
            i = p;
        }
        v[i] = x;
        return;
    }
    if (x <= v[0])
        return;
    int i = 0;
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        float mv = x;
        if (l < K && v[l] < mv) {
            m = l;
            mv = v[l];
        }
        if (r < K && v[r] < mv)
            m = r;
        if (m == i)
            break;
        v[i] = v[m];
        i = m;
    }
    v[i] = x;
}

typedef struct Eval {
    int64_t nloc;      /* candidates in this rank's slice */
    int64_t *cid;      /* [nloc] their item ids */
    float *C;          /* [nloc x d] candidate tower outputs */
    float *Coov;       /* [d] OOV candidate (rank 0) */
    float *rows;       /* scratch [chunk x D] */
    float *Q;          /* [chunk x qout] local queries of a round */
    float *Cpos;       /* [chunk x cout] positives' candidate outputs */
    float *pred;
    float *Qall;       /* [round x d] */
    int64_t *pos_all;  /* [round] positive item ids */
    float *S;          /* [round x COL_BLOCK] */
    float *p;          /* [round] */
    float *heapv;      /* [round x K] */
    int *heapn;
    int64_t *cnt;
    int64_t *counts;   /* [2P] */
    int64_t *ids;      /* [chunk] */
    int64_t *tok_ids;  /* [chunk tokens] */
    int64_t *tok_rel;  /* [chunk + 1] */
    int32_t *uslot, *islot, *tslot;
    MrModelWork w;
} Eval;

static void eval_free(Eval *v)
{
    free(v->cid);
    free(v->C);
    free(v->Coov);
    free(v->rows);
    free(v->Q);
    free(v->Cpos);
    free(v->pred);
    free(v->Qall);
    free(v->pos_all);
    free(v->S);
    free(v->p);
    free(v->heapv);
    free(v->heapn);
    free(v->cnt);
    free(v->counts);
    free(v->ids);
    free(v->tok_ids);
    free(v->tok_rel);
    free(v->uslot);
    free(v->islot);
    free(v->tslot);
    mr_model_work_free(&v->w);
}

/* Candidate tower over this rank's slice of items 1..V. */
static int slice_candidates(Eval *v, MrComm *c, MrState *s, int64_t chunk, MrErr *e)
{
    MrEmbTable *t = &s->item;
    int D = t->dim, d = s->shape.cout;
    int64_t V = t->rows - 1;
    int64_t first_local, n;
    if (t->mode == MR_SHARD_REPLICATED) {
        int64_t lo = 1 + V * c->rank / c->size, hi = 1 + V * (c->rank + 1) / c->size;
        first_local = lo;
        n = hi - lo;
    } else {
        first_local = c->rank == 0 ? 1 : 0; /* row 0 (OOV) is on rank 0 */
        n = t->local_rows - first_local;
        if (n < 0)
            n = 0;
    }
    v->nloc = n;
    v->cid = malloc((size_t)(n + 1) * sizeof *v->cid);
    v->C = malloc((size_t)(n + 1) * (size_t)d * sizeof *v->C);
    if (!v->cid || !v->C)
        return mr_err_set(e, MR_ENOMEM, "out of memory for %lld candidate embeddings",
                          (long long)n);
    for (int64_t k = 0; k < n; k++)
        v->cid[k] = mr_emb_global_row(t, first_local + k);
    for (int64_t a = 0; a < n; a += chunk) {
        int64_t b = a + chunk < n ? a + chunk : n;
        int rc = mr_model_candidate_forward(&s->model, t->w + (first_local + a) * D, b - a,
                                            v->C + a * d, &v->w, e);
        if (rc)
            return rc;
    }
    if (c->rank == 0) {
        v->Coov = malloc((size_t)d * sizeof *v->Coov);
        if (!v->Coov)
            return mr_err_set(e, MR_ENOMEM, "out of memory");
        return mr_model_candidate_forward(&s->model, t->w, 1, v->Coov, &v->w, e);
    }
    return MR_OK;
}

int mr_evaluate(MrStepCtx *x, MrComm *c, MrState *s, const MrDataset *ds, int split,
                MrMetrics *out, MrErr *e)
{
    memset(out, 0, sizeof *out);
    int P = c->size, rc = MR_OK;
    int D = s->shape.D, d = s->shape.cout, qout = s->shape.qout;
    const MrConfig *cfg = &x->cfg;
    Eval v;
    memset(&v, 0, sizeof v);
    /* Local queries of the split. */
    int64_t nq_loc = 0;
    for (int64_t i = 0; i < ds->n; i++)
        nq_loc += ds->is_test[i] == (split ? 1 : 0);
    int64_t *qi = malloc((size_t)(nq_loc + 1) * sizeof *qi);
    int64_t chunk = cfg->eval.batch_size / P;
    if (chunk < 1)
        chunk = 1;
    int K = 0;
    for (int k = 0; k < cfg->eval.ks.n; k++)
        K = cfg->eval.ks.v[k] > K ? cfg->eval.ks.v[k] : K;
    int64_t round_cap = chunk * P;
    int64_t max_tok = 1;
    if (qi) {
        int64_t k = 0;
        for (int64_t i = 0; i < ds->n; i++)
            if (ds->is_test[i] == (split ? 1 : 0))
                qi[k++] = i;
        if (s->has_text)
            for (int64_t a = 0; a < nq_loc; a += chunk) {
                int64_t b = a + chunk < nq_loc ? a + chunk : nq_loc, t = 0;
                for (int64_t j = a; j < b; j++)
                    t += ds->tok_off[qi[j] + 1] - ds->tok_off[qi[j]];
                max_tok = t > max_tok ? t : max_tok;
            }
    }
    v.counts = malloc((size_t)P * 2 * sizeof *v.counts);
    v.rows = malloc((size_t)chunk * D * 4);
    v.Q = malloc((size_t)chunk * qout * 4);
    v.Cpos = malloc((size_t)chunk * d * 4);
    v.pred = malloc((size_t)chunk * 4);
    v.ids = malloc((size_t)chunk * 8);
    v.uslot = malloc((size_t)chunk * 4);
    v.islot = malloc((size_t)chunk * 4);
    v.tslot = malloc((size_t)max_tok * 4);
    v.tok_ids = malloc((size_t)max_tok * 8);
    v.tok_rel = malloc((size_t)(chunk + 1) * 8);
    if (x->retrieval) {
        v.Qall = malloc((size_t)round_cap * d * 4);
        v.pos_all = malloc((size_t)round_cap * 8);
        v.S = malloc((size_t)round_cap * COL_BLOCK * 4);
        v.p = malloc((size_t)round_cap * 4);
        v.heapv = malloc((size_t)round_cap * (size_t)(K ? K : 1) * 4);
        v.heapn = malloc((size_t)round_cap * sizeof *v.heapn);
        v.cnt = malloc((size_t)round_cap * 8);
    }
    if (!qi || !v.counts || !v.rows || !v.Q || !v.Cpos || !v.pred || !v.ids || !v.uslot ||
        !v.islot || !v.tslot || !v.tok_ids || !v.tok_rel ||
        (x->retrieval && (!v.Qall || !v.pos_all || !v.S || !v.p || !v.heapv || !v.heapn || !v.cnt)))
        rc = mr_err_set(e, MR_ENOMEM, "out of memory for evaluation buffers");
    if (!rc)
        rc = mr_model_work_init(&v.w, &s->shape, chunk, 1, chunk, chunk,
                                s->has_text ? (max_tok < s->text.rows ? max_tok : s->text.rows) : 0,
                                e);
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    /* Table step buffers must hold an evaluation chunk too. */
    if ((rc = mr_emb_reserve(&s->user, c, chunk, chunk * P, e)) ||
        (rc = mr_emb_reserve(&s->item, c, chunk, chunk * P, e)) ||
        (s->has_text && (rc = mr_emb_reserve(&s->text, c, max_tok, max_tok * P, e))))
        goto out;
    if (x->retrieval) {
        rc = slice_candidates(&v, c, s, chunk, e);
        if ((rc = mr_comm_agree(c, rc, e)))
            goto out;
    }
    int64_t rounds = (nq_loc + chunk - 1) / chunk, N = nq_loc;
    int64_t tmp[2] = {rounds, 0};
    if ((rc = mr_comm_allreduce_i64(c, tmp, 1, MR_MAX, e)) ||
        (rc = mr_comm_allreduce_i64(c, &N, 1, MR_SUM, e)))
        goto out;
    rounds = tmp[0];
    double sse = 0;
    int64_t hits[MR_MAX_KS] = {0};
    for (int64_t r = 0; r < rounds; r++) {
        int64_t a = r * chunk, b = a + chunk < nq_loc ? a + chunk : nq_loc;
        int64_t n = b > a ? b - a : 0;
        for (int64_t j = 0; j < n; j++)
            v.ids[j] = ds->user[qi[a + j]];
        if ((rc = mr_emb_lookup(&s->user, c, v.ids, n, v.uslot, e)))
            goto out;
        MrBatchView bv = {0};
        bv.B = n;
        bv.uslot = v.uslot;
        bv.U = s->user.rows_buf;
        bv.nu = s->user.nu;
        if (s->has_text) {
            int64_t t = 0;
            for (int64_t j = 0; j < n; j++) {
                int64_t i = qi[a + j];
                v.tok_rel[j] = t;
                for (int64_t k = ds->tok_off[i]; k < ds->tok_off[i + 1]; k++)
                    v.tok_ids[t++] = ds->tok[k];
            }
            v.tok_rel[n] = t;
            if ((rc = mr_emb_lookup(&s->text, c, v.tok_ids, t, v.tslot, e)))
                goto out;
            bv.tok_off = v.tok_rel;
            bv.tslot = v.tslot;
            bv.Tk = s->text.rows_buf;
            bv.nt = s->text.nu;
        }
        if ((rc = mr_model_query_forward(&s->model, &bv, v.Q, &v.w, e)))
            goto out;
        for (int64_t j = 0; j < n; j++)
            v.ids[j] = ds->item[qi[a + j]];
        if (x->rating) {
            if ((rc = mr_emb_lookup(&s->item, c, v.ids, n, v.islot, e)))
                goto out;
            for (int64_t j = 0; j < n; j++)
                memcpy(v.rows + j * D, s->item.rows_buf + (int64_t)v.islot[j] * D, (size_t)D * 4);
            if ((rc = mr_model_candidate_forward(&s->model, v.rows, n, v.Cpos, &v.w, e)) ||
                (rc = mr_model_rating_forward(&s->model, v.Q, v.Cpos, n, v.pred, &v.w, e)))
                goto out;
            for (int64_t j = 0; j < n; j++) {
                double dr = (double)v.pred[j] - ds->rating[qi[a + j]];
                sse += dr * dr;
            }
        }
        if (!x->retrieval)
            continue;
        /* Allgather the round's queries and their positives. */
        int64_t nmine = n;
        if ((rc = mr_comm_allgather(c, &nmine, 8, v.counts, e)))
            goto out;
        int64_t nr = 0;
        for (int q = 0; q < P; q++) {
            nr += v.counts[q];
            v.counts[P + q] = v.counts[q] * 8;
            v.counts[q] *= (int64_t)d * 4;
        }
        if ((rc = mr_comm_allgatherv(c, v.Q, (size_t)(n * d * 4), v.Qall, v.counts, e)) ||
            (rc = mr_comm_allgatherv(c, v.ids, (size_t)(n * 8), v.pos_all, v.counts + P, e)))
            goto out;
        for (int64_t i = 0; i < nr; i++) {
            v.p[i] = -INFINITY;
            v.heapn[i] = 0;
        }
        for (int64_t j0 = 0; j0 < v.nloc; j0 += COL_BLOCK) {
            int64_t cb = v.nloc - j0 < COL_BLOCK ? v.nloc - j0 : COL_BLOCK;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)cb, d, 1.0f,
                        v.Qall, d, v.C + j0 * d, d, 0.0f, v.S, (int)cb);
            for (int64_t i = 0; i < nr; i++) {
                const float *row = v.S + i * cb;
                Heap h = {v.heapv + i * K, v.heapn[i]};
                int64_t pid = v.pos_all[i];
                /* The positive's column, if it is in this block (ids are ascending). */
                if (pid >= v.cid[j0] && pid <= v.cid[j0 + cb - 1]) {
                    for (int64_t j = 0; j < cb; j++)
                        if (v.cid[j0 + j] == pid) {
                            v.p[i] = row[j];
                            break;
                        }
                }
                float thr = h.n < K ? -INFINITY : h.v[0];
                for (int64_t j = 0; j < cb; j++)
                    if (row[j] > thr) {
                        heap_push(&h, K, row[j]);
                        thr = h.n < K ? -INFINITY : h.v[0];
                    }
                v.heapn[i] = h.n;
            }
        }
        if (c->rank == 0 && v.Coov) {
            /* OOV positives are not in the corpus: score them against the OOV row. */
            for (int64_t i = 0; i < nr; i++)
                if (v.pos_all[i] == 0) {
                    float sc = 0;
                    for (int k = 0; k < d; k++)
                        sc += v.Qall[i * d + k] * v.Coov[k];
                    v.p[i] = sc;
                }
        }
        if ((rc = mr_comm_allreduce_f32(c, v.p, (size_t)nr, MR_MAX, e)))
            goto out;
        for (int64_t i = 0; i < nr; i++) {
            int64_t cnt = 0;
            for (int k = 0; k < v.heapn[i]; k++)
                cnt += v.heapv[i * K + k] > v.p[i];
            /* A non-finite score is a miss (TF's in_top_k). */
            v.cnt[i] = isfinite(v.p[i]) ? cnt : K;
        }
        if ((rc = mr_comm_allreduce_i64(c, v.cnt, (size_t)nr, MR_SUM, e)))
            goto out;
        for (int64_t i = 0; i < nr; i++)
            for (int k = 0; k < cfg->eval.ks.n; k++)
                hits[k] += v.cnt[i] < cfg->eval.ks.v[k];
    }
    if ((rc = mr_comm_allreduce_f64(c, &sse, 1, MR_SUM, e)))
        goto out;
    out->n = N;
    if (x->retrieval) {
        out->has_topk = 1;
        out->nk = cfg->eval.ks.n;
        for (int k = 0; k < out->nk; k++) {
            out->ks[k] = cfg->eval.ks.v[k];
            out->topk[k] = N ? (double)hits[k] / (double)N : 0;
        }
    }
    if (x->rating) {
        out->has_rmse = 1;
        out->rmse = N ? sqrt(sse / (double)N) : 0;
    }
out:
    free(qi);
    eval_free(&v);
    return rc;
}

int mr_candidates_slice(MrComm *c, MrState *s, int64_t **ids, float **C, int64_t *n, MrErr *e)
{
    Eval v;
    memset(&v, 0, sizeof v);
    *ids = NULL;
    *C = NULL;
    *n = 0;
    int64_t chunk = 1024;
    int rc = mr_model_work_init(&v.w, &s->shape, chunk, 1, 1, chunk, 0, e);
    if (!rc)
        rc = slice_candidates(&v, c, s, chunk, e);
    if (!rc) {
        *ids = v.cid;
        *C = v.C;
        *n = v.nloc;
        v.cid = NULL;
        v.C = NULL;
    }
    eval_free(&v);
    return rc;
}

int mr_queries_forward(MrComm *c, MrState *s, const MrDataset *d, const int64_t *rec, int64_t n,
                       int64_t cap, float *Q, MrErr *e)
{
    Eval v;
    memset(&v, 0, sizeof v);
    int64_t nt = 0;
    if (s->has_text)
        for (int64_t j = 0; j < n; j++)
            nt += d->tok_off[rec[j] + 1] - d->tok_off[rec[j]];
    int64_t tcap = nt;
    int rc = mr_comm_allreduce_i64(c, &tcap, 1, MR_MAX, e);
    if (rc)
        return rc;
    v.ids = malloc((size_t)(cap + 1) * 8);
    v.uslot = malloc((size_t)(cap + 1) * 4);
    v.tslot = malloc((size_t)(tcap + 1) * 4);
    v.tok_ids = malloc((size_t)(tcap + 1) * 8);
    v.tok_rel = malloc((size_t)(cap + 2) * 8);
    rc = (v.ids && v.uslot && v.tslot && v.tok_ids && v.tok_rel)
             ? 0
             : mr_err_set(e, MR_ENOMEM, "out of memory for query embeddings");
    if (!rc)
        rc = mr_model_work_init(&v.w, &s->shape, cap, 1, cap, 1,
                                s->has_text ? (tcap < s->text.rows ? tcap + 1 : s->text.rows) : 0,
                                e);
    if ((rc = mr_comm_agree(c, rc, e)) || (rc = mr_emb_reserve(&s->user, c, cap, cap * c->size, e)) ||
        (s->has_text && (rc = mr_emb_reserve(&s->text, c, tcap, tcap * c->size, e))))
        goto out;
    for (int64_t j = 0; j < n; j++)
        v.ids[j] = d->user[rec[j]];
    if ((rc = mr_emb_lookup(&s->user, c, v.ids, n, v.uslot, e)))
        goto out;
    MrBatchView bv = {0};
    bv.B = n;
    bv.uslot = v.uslot;
    bv.U = s->user.rows_buf;
    bv.nu = s->user.nu;
    if (s->has_text) {
        int64_t t = 0;
        for (int64_t j = 0; j < n; j++) {
            v.tok_rel[j] = t;
            for (int64_t k = d->tok_off[rec[j]]; k < d->tok_off[rec[j] + 1]; k++)
                v.tok_ids[t++] = d->tok[k];
        }
        v.tok_rel[n] = t;
        if ((rc = mr_emb_lookup(&s->text, c, v.tok_ids, t, v.tslot, e)))
            goto out;
        bv.tok_off = v.tok_rel;
        bv.tslot = v.tslot;
        bv.Tk = s->text.rows_buf;
        bv.nt = s->text.nu;
    }
    rc = mr_model_query_forward(&s->model, &bv, Q, &v.w, e);
out:
    eval_free(&v);
    return rc;
}
