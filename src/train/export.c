/* export.c — the candidate index written at the end of training.
 *
 * Every rank runs the candidate tower over its slice of the items; rank 0 gathers
 * the outputs (placing them by item id: row-sharded slices are strided), gathers
 * the item id strings from the vocabulary owners, and collects a sample of real
 * query embeddings: training records chosen by a keyed hash of their record
 * number (so the sample is the same for every P), embedded on the ranks that hold
 * them. Rank 0 then builds, self-measures and saves the index.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpirec/hash.h"
#include "mpirec/index.h"
#include "mpirec/log.h"
#include "mpirec/train.h"

int mr_export_index(MrComm *c, const MrConfig *cfg, const MrDataset *d, MrState *s,
                    const char *path, const char *source_ckpt, int64_t step, MrErr *e)
{
    int P = c->size, rank0 = c->rank == 0, rc;
    int dd = s->shape.cout;
    int64_t V = s->item.rows - 1;
    int64_t *ids = NULL, n = 0, *rb = malloc((size_t)P * 2 * 8), *all_ids = NULL;
    float *C = NULL, *all_C = NULL, *emb = NULL, *Qs = NULL, *Qall = NULL;
    char *vb = NULL;
    int64_t *voff = NULL, *vcnt = NULL, *rec = NULL;
    rc = rb ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory");
    if (!rc)
        rc = mr_candidates_slice(c, s, &ids, &C, &n, e);
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    int64_t nn = n;
    if ((rc = mr_comm_allgather(c, &nn, 8, rb, e)))
        goto out;
    if (rank0) {
        all_ids = malloc((size_t)(V + 1) * 8);
        all_C = malloc((size_t)(V + 1) * (size_t)dd * 4);
        emb = malloc((size_t)(V + 1) * (size_t)dd * 4);
        if (!all_ids || !all_C || !emb)
            rc = mr_err_set(e, MR_ENOMEM, "out of memory gathering %lld candidate embeddings",
                            (long long)V);
    }
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    for (int q = 0; q < P; q++) {
        rb[P + q] = rb[q] * dd * 4;
        rb[q] *= 8;
    }
    if ((rc = mr_comm_gatherv(c, ids, (size_t)n * 8, all_ids, rb, 0, e)) ||
        (rc = mr_comm_gatherv(c, C, (size_t)(n * dd * 4), all_C, rb + P, 0, e)))
        goto out;
    if (rank0)
        for (int64_t k = 0; k < V; k++)
            memcpy(emb + (all_ids[k] - 1) * dd, all_C + k * dd, (size_t)dd * 4);
    if ((rc = mr_vocab_gather(&d->items, c, 0, &vb, &voff, &vcnt, e)))
        goto out;
    /* Sample of training users, chosen by record hash (independent of P). */
    int64_t want = cfg->index.recall_queries, ntrain = d->sum.train_records;
    double frac = ntrain > 0 ? (double)want / (double)ntrain : 0;
    uint64_t thr = frac >= 1 ? UINT64_MAX : (uint64_t)(frac * 18446744073709551615.0);
    uint64_t base = mr_mix(cfg->train.seed, MR_TAG_SAMPLE);
    rec = malloc((size_t)(d->n + 1) * 8);
    rc = rec ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory");
    if ((rc = mr_comm_agree(c, rc, e)))
        goto out;
    int64_t ns = 0;
    for (int64_t i = 0; i < d->n; i++)
        if (!d->is_test[i] && mr_mix(base, (uint64_t)(d->first + i)) <= thr)
            rec[ns++] = i;
    int64_t cap = ns;
    if ((rc = mr_comm_allreduce_i64(c, &cap, 1, MR_MAX, e)))
        goto out;
    int qd = s->shape.qout;
    Qs = malloc((size_t)(cap + 1) * (size_t)qd * 4);
    rc = Qs ? 0 : mr_err_set(e, MR_ENOMEM, "out of memory");
    if ((rc = mr_comm_agree(c, rc, e)) ||
        (rc = mr_queries_forward(c, s, d, rec, ns, cap, Qs, e)))
        goto out;
    int64_t nsv = ns;
    if ((rc = mr_comm_allgather(c, &nsv, 8, rb, e)))
        goto out;
    int64_t tot = 0;
    for (int q = 0; q < P; q++) {
        tot += rb[q];
        rb[q] *= qd * 4;
    }
    if (rank0) {
        Qall = malloc((size_t)(tot + 1) * (size_t)qd * 4);
        if (!Qall)
            rc = mr_err_set(e, MR_ENOMEM, "out of memory");
    }
    if ((rc = mr_comm_agree(c, rc, e)) ||
        (rc = mr_comm_gatherv(c, Qs, (size_t)(ns * qd * 4), Qall, rb, 0, e)))
        goto out;
    if (rank0) {
        MrIndex ix;
        memset(&ix, 0, sizeof ix);
        MrIndexParams p;
        mr_index_params_from_config(&p, cfg, cfg->train.seed);
        rc = mr_index_build(&ix, &p, emb, V, dd, vb, voff, Qall, tot, cfg->index.k, e);
        if (!rc) {
            ix.model_hash = mr_config_model_hash(cfg);
            snprintf(ix.source, sizeof ix.source, "%s", source_ckpt ? source_ckpt : "");
            ix.source_step = step;
            rc = mr_index_save(&ix, path, e);
        }
        if (!rc)
            mr_log(MR_LOG_INFO,
                   "index %s: %s, %lld items, recall@%d %.4f on %lld training users, %.0f "
                   "queries/s (exact %.0f)",
                   path, cfg->index.kind == MR_INDEX_IVF ? "ivf" : "exact", (long long)V,
                   ix.stats.k, ix.stats.recall, (long long)ix.stats.queries, ix.stats.qps,
                   ix.stats.qps_exact);
        mr_index_free(&ix);
    }
    rc = mr_comm_agree(c, rc, e);
out:
    free(rb);
    free(ids);
    free(C);
    free(all_ids);
    free(all_C);
    free(emb);
    free(vb);
    free(voff);
    free(vcnt);
    free(rec);
    free(Qs);
    free(Qall);
    return rc;
}
