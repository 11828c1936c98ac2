/* index.c — the candidate index's public face: build, search dispatch, the
 * build-time self-measurement, and id lookup.
 *
 * Build copies the embeddings and ids, trains the ivf layout when asked
 * (ix_ivf.c), then measures itself on the caller's sample of real query
 * embeddings: the exact top k is the reference, its batch time gives qps_exact;
 * the ivf search at the chosen nprobe gives recall@k and qps. With nprobe = 0 the
 * smallest nprobe reaching target_recall is found without a search per candidate
 * nprobe: for every sample query and every one of its exact top-k items we know
 * at which probe rank that item's list is reached, and a list-exact ivf search at
 * nprobe p finds exactly the items whose rank is < p (it scores probed lists
 * exactly, so a true top-k item it sees always beats the rest). The predicted
 * nprobe is then confirmed by a real search (quantized codes, rounding and ties
 * can cost a little) and raised until the measured recall reaches the target.
 * "Reaches" is judged with a margin of two standard errors of the per-query
 * recall (see reaches()), because the index serves other users than the sample.
 *
 * Rates: each measurement repeats the batch search of all sample queries until
 * 0.1 s of wall-clock time have passed (at least once) and reports queries over
 * the total time, so tiny samples still give a usable figure. The recall stored is
 * measured on the same sample that chose nprobe (the tests check held-out queries).
 *
 * Ids: stored sorted by bytes when they come from a vocabulary; otherwise (e.g.
 * the generated "0", "1", ..., "10") a sorted permutation is kept for the lookup.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/ix_internal.h"

#define MEASURE_SECONDS 0.1

void mr_index_params_from_config(MrIndexParams *p, const MrConfig *c, uint64_t seed)
{
    memset(p, 0, sizeof *p);
    p->kind = c->index.kind;
    p->nlist = c->index.nlist;
    p->nprobe = c->index.nprobe;
    p->target_recall = c->index.target_recall;
    p->kmeans_iters = c->index.kmeans_iters;
    p->quantize = c->index.quantize;
    p->rescore = c->index.rescore;
    p->seed = seed;
}

void mr_index_free(MrIndex *ix)
{
    if (!ix)
        return;
    free(ix->emb);
    free(ix->ids);
    free(ix->ids_off);
    free(ix->centroids);
    free(ix->probe_bias);
    free(ix->list_off);
    free(ix->list_items);
    free(ix->list_blk);
    free(ix->cent_blk);
    free(ix->list_emb);
    free(ix->scan_order);
    free(ix->codes);
    free(ix->code_scale);
    free(ix->code_offset);
    free(ix->code_mean);
    free(ix->id_order);
    memset(ix, 0, sizeof *ix);
}

/* Compare two byte strings as memcmp would on the shorter, shorter first on a tie. */
static int cmp_bytes(const char *a, size_t na, const char *b, size_t nb)
{
    size_t m = na < nb ? na : nb;
    int c = m ? memcmp(a, b, m) : 0;
    if (c)
        return c;
    return (na > nb) - (na < nb);
}

static int cmp_ids(const void *pa, const void *pb, void *arg)
{
    const MrIndex *ix = arg;
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    int c = cmp_bytes(ix->ids + ix->ids_off[a], (size_t)(ix->ids_off[a + 1] - ix->ids_off[a]),
                      ix->ids + ix->ids_off[b], (size_t)(ix->ids_off[b + 1] - ix->ids_off[b]));
    return c ? c : (a > b) - (a < b);
}

static int id_cmp_at(const MrIndex *ix, int64_t a, int64_t b)
{
    return cmp_bytes(ix->ids + ix->ids_off[a], (size_t)(ix->ids_off[a + 1] - ix->ids_off[a]),
                     ix->ids + ix->ids_off[b], (size_t)(ix->ids_off[b + 1] - ix->ids_off[b]));
}

int ix_ids_order(MrIndex *ix, MrErr *e)
{
    free(ix->id_order);
    ix->id_order = NULL;
    int64_t n = ix->n, i = 1;
    while (i < n && id_cmp_at(ix, i - 1, i) < 0)
        i++;
    if (i >= n)
        return MR_OK; /* strictly increasing: the ids are their own search order */
    ix->id_order = malloc((size_t)n * sizeof *ix->id_order);
    if (!ix->id_order)
        return mr_err_set(e, MR_ENOMEM, "index: no memory for the id order of %lld items",
                          (long long)n);
    for (i = 0; i < n; i++)
        ix->id_order[i] = i;
    qsort_r(ix->id_order, (size_t)n, sizeof *ix->id_order, cmp_ids, ix);
    for (i = 1; i < n; i++)
        if (id_cmp_at(ix, ix->id_order[i - 1], ix->id_order[i]) == 0) {
            int64_t a = ix->id_order[i - 1];
            return mr_err_set(e, MR_EDATA,
                              "index: item id '%.*s' appears twice (items %lld and %lld)",
                              (int)(ix->ids_off[a + 1] - ix->ids_off[a]), ix->ids + ix->ids_off[a],
                              (long long)a, (long long)ix->id_order[i]);
        }
    return MR_OK;
}

int64_t mr_index_find_item(const MrIndex *ix, const char *id, size_t len)
{
    if (!ix || !ix->ids_off || (!id && len))
        return -1;
    int64_t lo = 0, hi = ix->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        int64_t it = ix->id_order ? ix->id_order[mid] : mid;
        int c = cmp_bytes(ix->ids + ix->ids_off[it],
                          (size_t)(ix->ids_off[it + 1] - ix->ids_off[it]), id, len);
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo >= ix->n)
        return -1;
    int64_t it = ix->id_order ? ix->id_order[lo] : lo;
    return cmp_bytes(ix->ids + ix->ids_off[it], (size_t)(ix->ids_off[it + 1] - ix->ids_off[it]), id,
                     len) == 0
               ? it
               : -1;
}

static int check_search_args(const MrIndex *ix, const float *Q, int64_t nq, int k,
                             const int64_t *out_items, const float *out_scores, MrErr *e)
{
    if (!ix || !ix->emb || ix->n < 1)
        return mr_err_set(e, MR_EUSAGE, "index search: the index is empty or not built");
    if (k < 1)
        return mr_err_set(e, MR_EUSAGE, "index search: k must be >= 1 (got %d)", k);
    if (nq < 0)
        return mr_err_set(e, MR_EUSAGE, "index search: negative query count %lld", (long long)nq);
    if (nq > 0 && (!Q || !out_items || !out_scores))
        return mr_err_set(e, MR_EUSAGE, "index search: NULL query or output array");
    return MR_OK;
}

int mr_index_search_exact(const MrIndex *ix, const float *Q, int64_t nq, int k,
                          const MrExclusions *excl, int64_t *out_items, float *out_scores, MrErr *e)
{
    int rc = check_search_args(ix, Q, nq, k, out_items, out_scores, e);
    if (rc || nq == 0)
        return rc;
    IxExcl ex;
    rc = ix_excl_prepare(&ex, excl, nq, e);
    if (rc)
        return rc;
    rc = ix_exact_search(ix->emb, ix->n, ix->d, Q, nq, k, &ex, out_items, out_scores, ix_threads(),
                         e);
    ix_excl_free(&ex);
    return rc;
}

int mr_index_search(const MrIndex *ix, const float *Q, int64_t nq, int k, int64_t nprobe,
                    const MrExclusions *excl, int64_t *out_items, float *out_scores, MrErr *e)
{
    int rc = check_search_args(ix, Q, nq, k, out_items, out_scores, e);
    if (rc || nq == 0)
        return rc;
    if (nprobe < 0)
        return mr_err_set(e, MR_EUSAGE, "index search: nprobe must be >= 0 (got %lld)",
                          (long long)nprobe);
    IxExcl ex;
    rc = ix_excl_prepare(&ex, excl, nq, e);
    if (rc)
        return rc;
    if (ix->p.kind == MR_INDEX_IVF)
        rc = ix_ivf_search(ix, Q, nq, k, nprobe, &ex, out_items, out_scores, ix_threads(), e);
    else
        rc = ix_exact_search(ix->emb, ix->n, ix->d, Q, nq, k, &ex, out_items, out_scores,
                             ix_threads(), e);
    ix_excl_free(&ex);
    return rc;
}

/* ---- self-measurement ------------------------------------------------------------ */

/* Recall of got against the reference, both [nq x k] with -1 padding: the
 * overall fraction found, and the mean and sum of squares of the per-query
 * recalls (queries whose reference is empty are left out) for the margin test. */
typedef struct Recall {
    double overall;
    double sum, sumsq; /* of per-query recalls */
    int64_t m;         /* queries counted */
} Recall;

static Recall recall_of(const int64_t *ref, const int64_t *got, int64_t nq, int k)
{
    Recall r = {1.0, 0, 0, 0};
    int64_t hit = 0, tot = 0;
    for (int64_t q = 0; q < nq; q++) {
        int64_t h = 0, v = 0;
        for (int a = 0; a < k; a++) {
            int64_t x = ref[q * k + a];
            if (x < 0)
                continue;
            v++;
            for (int b = 0; b < k; b++)
                if (got[q * k + b] == x) {
                    h++;
                    break;
                }
        }
        if (v == 0)
            continue;
        double rq = (double)h / (double)v;
        r.sum += rq;
        r.sumsq += rq * rq;
        r.m++;
        hit += h;
        tot += v;
    }
    if (tot)
        r.overall = (double)hit / (double)tot;
    return r;
}

/* Does a sample with these per-query recalls show the target is reached? The
 * sample mean must clear it by two standard errors, so that other queries from the
 * same population (the users the index will serve) reach it too, not just the
 * sample: with 1000 sample queries that is a margin of a few thousandths. */
static int reaches(double sum, double sumsq, int64_t m, double target)
{
    if (m == 0)
        return 1;
    double mean = sum / (double)m;
    double var = m > 1 ? (sumsq - (double)m * mean * mean) / (double)(m - 1) : 0;
    double se = var > 0 ? sqrt(var / (double)m) : 0;
    return mean - 2.0 * se >= target - 1e-12;
}

/* Repeat one batch search until MEASURE_SECONDS have passed; queries per second. */
static int timed(const MrIndex *ix, int exact, const float *Q, int64_t nq, int k, int64_t nprobe,
                 int64_t *items, float *scores, double *qps, MrErr *e)
{
    double t0 = ix_now(), t;
    int64_t reps = 0;
    do {
        int rc = exact ? mr_index_search_exact(ix, Q, nq, k, NULL, items, scores, e)
                       : mr_index_search(ix, Q, nq, k, nprobe, NULL, items, scores, e);
        if (rc)
            return rc;
        reps++;
        t = ix_now() - t0;
    } while (t < MEASURE_SECONDS);
    *qps = t > 0 ? (double)(reps * nq) / t : 0;
    return MR_OK;
}

static int measure(MrIndex *ix, const float *Qs, int64_t ns, int k, MrErr *e)
{
    MrIndexStats *st = &ix->stats;
    int kk = k < ix->n ? k : (int)ix->n;
    st->k = kk;
    st->queries = ns;
    st->threads = ix_threads();
    st->nprobe = ix->p.kind == MR_INDEX_IVF ? ix->p.nprobe : 0;
    if (st->nprobe > ix->nlist)
        st->nprobe = ix->nlist;
    if (ns == 0) {
        st->recall = -1;
        st->qps = st->qps_exact = 0;
        if (ix->p.kind == MR_INDEX_IVF && ix->p.nprobe == 0)
            return mr_err_set(e, MR_EUSAGE,
                              "index build: nprobe = 0 (automatic) needs sample queries");
        return MR_OK;
    }
    int64_t *ref = malloc((size_t)(ns * kk) * sizeof *ref);
    int64_t *got = malloc((size_t)(ns * kk) * sizeof *got);
    float *sc = malloc((size_t)(ns * kk) * sizeof *sc);
    int64_t *rank = NULL;
    int rc = MR_OK;
    if (!ref || !got || !sc) {
        rc = mr_err_set(e, MR_ENOMEM, "index build: no memory for %lld sample results",
                        (long long)ns);
        goto out;
    }
    rc = timed(ix, 1, Qs, ns, kk, 0, ref, sc, &st->qps_exact, e);
    if (rc)
        goto out;
    if (ix->p.kind != MR_INDEX_IVF) {
        st->recall = 1.0;
        st->qps = st->qps_exact;
        goto out;
    }
    int64_t np = st->nprobe;
    if (np == 0) {
        /* Predict per-query recall at every nprobe from the probe ranks of the
         * reference items' lists: raising nprobe past rank r finds that item. */
        int64_t L = ix->nlist, m = ns * kk;
        rank = malloc((size_t)m * sizeof *rank);
        int64_t *byrank = malloc((size_t)m * sizeof *byrank);
        int64_t *start = calloc((size_t)L + 1, sizeof *start);
        int64_t *hits = calloc((size_t)ns, sizeof *hits),
                *valid = calloc((size_t)ns, sizeof *valid);
        if (!rank || !byrank || !start || !hits || !valid) {
            free(byrank);
            free(start);
            free(hits);
            free(valid);
            rc = mr_err_set(e, MR_ENOMEM, "index build: no memory for the nprobe search");
            goto out;
        }
        rc = ix_ivf_list_ranks(ix, Qs, ns, ref, kk, rank, e);
        for (int64_t i = 0; rc == MR_OK && i < m; i++)
            if (rank[i] != INT64_MAX) {
                start[rank[i] + 1]++;
                valid[i / kk]++;
            }
        for (int64_t j = 0; j < L; j++)
            start[j + 1] += start[j];
        for (int64_t i = 0; rc == MR_OK && i < m; i++)
            if (rank[i] != INT64_MAX)
                byrank[start[rank[i]]++] = i / kk; /* the query of each item, by rank */
        int64_t mq = 0;
        for (int64_t q = 0; q < ns; q++)
            mq += valid[q] > 0;
        double sum = 0, sumsq = 0;
        np = L;
        /* start[j] now ends rank j's run; rank j's entries are [start[j-1], start[j]) */
        for (int64_t p = 1; rc == MR_OK && p <= L; p++) {
            for (int64_t i = p >= 2 ? start[p - 2] : 0; i < start[p - 1]; i++) {
                int64_t q = byrank[i];
                double before = (double)hits[q] / (double)valid[q];
                double after = (double)++hits[q] / (double)valid[q];
                sum += after - before;
                sumsq += after * after - before * before;
            }
            if (reaches(sum, sumsq, mq, ix->p.target_recall)) {
                np = p;
                break;
            }
        }
        free(byrank);
        free(start);
        free(hits);
        free(valid);
        if (rc)
            goto out;
        /* Confirm with real searches (codes, rounding and ties can cost a little). */
        for (;;) {
            rc = mr_index_search(ix, Qs, ns, kk, np, NULL, got, sc, e);
            if (rc)
                goto out;
            Recall r = recall_of(ref, got, ns, kk);
            if (reaches(r.sum, r.sumsq, r.m, ix->p.target_recall) || np >= L)
                break;
            int64_t next = np + np / 8;
            np = next > np ? next : np + 1;
            if (np > L)
                np = L;
        }
    }
    st->nprobe = np;
    rc = timed(ix, 0, Qs, ns, kk, np, got, sc, &st->qps, e);
    if (rc)
        goto out;
    st->recall = recall_of(ref, got, ns, kk).overall;
out:
    free(ref);
    free(got);
    free(sc);
    free(rank);
    return rc;
}

/* ---- build ------------------------------------------------------------------------ */

static int check_params(const MrIndexParams *p, MrErr *e)
{
    if (p->kind != MR_INDEX_EXACT && p->kind != MR_INDEX_IVF)
        return mr_err_set(e, MR_ECONFIG, "index.kind: unknown kind %d (exact or ivf)",
                          (int)p->kind);
    if (p->nlist < 0)
        return mr_err_set(e, MR_ECONFIG, "index.nlist: must be >= 0 (got %lld)",
                          (long long)p->nlist);
    if (p->nprobe < 0)
        return mr_err_set(e, MR_ECONFIG, "index.nprobe: must be >= 0 (got %lld)",
                          (long long)p->nprobe);
    if (!(p->target_recall > 0 && p->target_recall <= 1))
        return mr_err_set(e, MR_ECONFIG, "index.target_recall: must be in (0, 1] (got %g)",
                          p->target_recall);
    if (p->kmeans_iters < 0)
        return mr_err_set(e, MR_ECONFIG, "index.kmeans_iters: must be >= 1 (got %d)",
                          p->kmeans_iters);
    if (p->rescore < 0)
        return mr_err_set(e, MR_ECONFIG, "index.rescore: must be >= 0 (got %lld)",
                          (long long)p->rescore);
    return MR_OK;
}

static int copy_ids(MrIndex *ix, const char *ids, const int64_t *ids_off, MrErr *e)
{
    int64_t n = ix->n;
    ix->ids_off = malloc((size_t)(n + 1) * sizeof *ix->ids_off);
    if (!ix->ids_off)
        return mr_err_set(e, MR_ENOMEM, "index build: no memory for %lld ids", (long long)n);
    if (ids_off) {
        if (ids_off[0] < 0)
            return mr_err_set(e, MR_EDATA, "index build: id offsets start at %lld",
                              (long long)ids_off[0]);
        for (int64_t i = 0; i < n; i++)
            if (ids_off[i + 1] < ids_off[i])
                return mr_err_set(e, MR_EDATA, "index build: id offsets decrease at item %lld",
                                  (long long)i);
        int64_t base = ids_off[0], total = ids_off[n] - base;
        if (total > 0 && !ids)
            return mr_err_set(e, MR_EDATA, "index build: id bytes are NULL");
        ix->ids = malloc((size_t)(total > 0 ? total : 1));
        if (!ix->ids)
            return mr_err_set(e, MR_ENOMEM, "index build: no memory for %lld id bytes",
                              (long long)total);
        if (total > 0)
            memcpy(ix->ids, ids + base, (size_t)total);
        for (int64_t i = 0; i <= n; i++)
            ix->ids_off[i] = ids_off[i] - base;
        return MR_OK;
    }
    /* generated: the decimal item index */
    ix->ids = malloc((size_t)n * 20 + 1);
    if (!ix->ids)
        return mr_err_set(e, MR_ENOMEM, "index build: no memory for %lld ids", (long long)n);
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        ix->ids_off[i] = at;
        at += snprintf(ix->ids + at, 21, "%lld", (long long)i);
    }
    ix->ids_off[n] = at;
    return MR_OK;
}

int mr_index_build(MrIndex *ix, const MrIndexParams *p, const float *emb, int64_t n, int d,
                   const char *ids, const int64_t *ids_off, const float *sample_queries, int64_t ns,
                   int k, MrErr *e)
{
    memset(ix, 0, sizeof *ix);
    int rc = check_params(p, e);
    if (rc)
        return rc;
    if (n < 1 || d < 1 || !emb)
        return mr_err_set(e, MR_EDATA,
                          "index build: need at least one item of dim >= 1 (got %lld x %d)",
                          (long long)n, d);
    if (k < 1)
        return mr_err_set(e, MR_EUSAGE, "index build: k must be >= 1 (got %d)", k);
    if (ns < 0 || (ns > 0 && !sample_queries))
        return mr_err_set(e, MR_EUSAGE, "index build: bad sample query count %lld", (long long)ns);
    for (int64_t i = 0; i < n * d; i++)
        if (!isfinite(emb[i]))
            return mr_err_set(e, MR_EDATA, "index build: embedding of item %lld, dim %lld is %g",
                              (long long)(i / d), (long long)(i % d), (double)emb[i]);
    ix->p = *p;
    if (ix->p.kmeans_iters == 0)
        ix->p.kmeans_iters = 20;
    ix->n = n;
    ix->d = d;
    ix->emb = malloc((size_t)(n * d) * sizeof *ix->emb);
    if (!ix->emb) {
        rc = mr_err_set(e, MR_ENOMEM, "index build: no memory for %lld x %d embeddings",
                        (long long)n, d);
        goto fail;
    }
    memcpy(ix->emb, emb, (size_t)(n * d) * sizeof *ix->emb);
    rc = copy_ids(ix, ids, ids_off, e);
    if (rc)
        goto fail;
    rc = ix_ids_order(ix, e);
    if (rc)
        goto fail;
    if (p->kind == MR_INDEX_IVF) {
        rc = ix_ivf_train(ix, e);
        if (rc)
            goto fail;
    }
    rc = measure(ix, sample_queries, ns, k, e);
    if (rc)
        goto fail;
    return MR_OK;
fail:
    mr_index_free(ix);
    return rc;
}
