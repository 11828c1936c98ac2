/* test_index.c — the candidate index (include/mpirec/index.h): exact top-k against
 * a naive double-precision reference, IVF recall on planted data built so that a
 * direction-only (cosine) partition would miss norm-heavy items, the quantized
 * path, determinism across threads, the INDEX.h5 round trip, and damaged files.
 *
 * References are computed here, independently of the index code: a plain double
 * loop over every item with the documented order (score descending, then item
 * index ascending). Integer-valued vectors make every float dot product exact, so
 * on them the index must agree bit for bit (ids, order, scores, ties included).
 *
 * The MovieLens test (ml100k_recall) is registered only when MPIREC_INDEX_USERS and
 * MPIREC_INDEX_ITEMS name .npy files; tests/e2e/index_ml100k.sh produces them from a
 * model that `mpirec train` trains on MovieLens 100K and runs it (and fails if it
 * did not run).
 */
#include <CUnit/CUnit.h>
#include <cblas.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mpirec/ckpt.h"
#include "mpirec/hash.h"
#include "mpirec/index.h"
#include "test_util.h"

/* ---- data ---------------------------------------------------------------------- */

static double unif(uint64_t seed, uint64_t i)
{
    return mr_hash_unit(mr_mix(seed, i));
}

static double gauss(uint64_t seed, uint64_t i)
{
    double u1 = unif(seed, 2 * i), u2 = unif(seed, 2 * i + 1);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* Integer-valued vectors in [-lim, lim]: every dot product is exact in float. */
static float *int_vectors(int64_t n, int d, int lim, uint64_t seed)
{
    float *x = malloc((size_t)(n * d) * sizeof *x);
    for (int64_t i = 0; i < n * d; i++)
        x[i] = (float)((int64_t)(unif(seed, (uint64_t)i) * (2 * lim + 1)) - lim);
    return x;
}

static float *gauss_vectors(int64_t n, int d, uint64_t seed)
{
    float *x = malloc((size_t)(n * d) * sizeof *x);
    for (int64_t i = 0; i < n * d; i++)
        x[i] = (float)gauss(seed, (uint64_t)i);
    return x;
}

/* Planted data: items in `nc` direction clusters with log-normal norms; queries
 * from the same clusters. The last `heavy` items are norm-heavy: each points
 * loosely towards one cluster (cosine about 0.4 with its centre) but is several
 * times longer than any ordinary item, so it wins those queries on inner product
 * while hundreds of ordinary items beat it on cosine. */
typedef struct Planted {
    int64_t n, nq;
    int d, nc, heavy;
    float *X, *Q;
    int *heavy_cluster; /* [heavy] */
    int *q_cluster;     /* [nq] */
} Planted;

static void planted_make(Planted *p, int64_t n, int64_t nq, int d, int nc, int heavy, uint64_t seed)
{
    p->n = n;
    p->nq = nq;
    p->d = d;
    p->nc = nc;
    p->heavy = heavy;
    p->X = malloc((size_t)(n * d) * sizeof(float));
    p->Q = malloc((size_t)(nq * d) * sizeof(float));
    p->heavy_cluster = malloc((size_t)(heavy > 0 ? heavy : 1) * sizeof(int));
    p->q_cluster = malloc((size_t)nq * sizeof(int));
    double *mu = malloc((size_t)nc * (size_t)d * sizeof *mu);
    for (int c = 0; c < nc; c++) {
        double s = 0;
        for (int t = 0; t < d; t++) {
            mu[c * d + t] = gauss(mr_mix(seed, 1), (uint64_t)(c * d + t));
            s += mu[c * d + t] * mu[c * d + t];
        }
        for (int t = 0; t < d; t++)
            mu[c * d + t] /= sqrt(s);
    }
    double *v = malloc((size_t)d * sizeof *v);
    double maxnorm = 0;
    for (int64_t i = 0; i < n; i++) {
        int is_heavy = i >= n - heavy;
        int c = is_heavy ? (int)(mr_mix(mr_mix(seed, 5), (uint64_t)i) % (uint64_t)nc)
                         : (int)(mr_mix(mr_mix(seed, 2), (uint64_t)i) % (uint64_t)nc);
        double noise = is_heavy ? 2.2 / sqrt((double)d) : 0.16;
        double s = 0;
        for (int t = 0; t < d; t++) {
            v[t] = mu[c * d + t] + noise * gauss(mr_mix(seed, 3), (uint64_t)(i * d + t));
            s += v[t] * v[t];
        }
        double norm = exp(0.5 * gauss(mr_mix(seed, 4), (uint64_t)i));
        if (is_heavy) {
            norm = 1.5 * maxnorm;
            p->heavy_cluster[i - (n - heavy)] = c;
        } else if (norm > maxnorm) {
            maxnorm = norm;
        }
        for (int t = 0; t < d; t++)
            p->X[i * d + t] = (float)(v[t] / sqrt(s) * norm);
    }
    for (int64_t q = 0; q < nq; q++) {
        int c = (int)(mr_mix(mr_mix(seed, 6), (uint64_t)q) % (uint64_t)nc);
        p->q_cluster[q] = c;
        double qn = 0.5 + unif(mr_mix(seed, 8), (uint64_t)q);
        for (int t = 0; t < d; t++)
            p->Q[q * d + t] =
                (float)(qn * (mu[c * d + t] + 0.1 * gauss(mr_mix(seed, 7), (uint64_t)(q * d + t))));
    }
    free(mu);
    free(v);
}

static void planted_free(Planted *p)
{
    free(p->X);
    free(p->Q);
    free(p->heavy_cluster);
    free(p->q_cluster);
}

/* ---- naive reference --------------------------------------------------------------- */

static int excluded_naive(const MrExclusions *ex, int64_t q, int64_t it)
{
    if (!ex)
        return 0;
    for (int64_t j = ex->excl_off[q]; j < ex->excl_off[q + 1]; j++)
        if (ex->excl[j] == it)
            return 1;
    return 0;
}

/* Top k by (double score desc, index asc); -1 / -inf padding. */
static void naive_topk(const float *X, int64_t n, int d, const float *Q, int64_t nq, int k,
                       const MrExclusions *ex, int64_t *items, double *scores)
{
    for (int64_t q = 0; q < nq; q++) {
        int64_t *it = items + q * k;
        double *sc = scores + q * k;
        int m = 0;
        for (int64_t i = 0; i < n; i++) {
            if (excluded_naive(ex, q, i))
                continue;
            double s = 0;
            for (int t = 0; t < d; t++)
                s += (double)Q[q * d + t] * (double)X[i * d + t];
            /* insert if it beats the current last (ties: the earlier index stays) */
            if (m == k && !(s > sc[k - 1]))
                continue;
            int pos = m < k ? m : k - 1;
            while (pos > 0 && s > sc[pos - 1]) {
                sc[pos] = sc[pos - 1];
                it[pos] = it[pos - 1];
                pos--;
            }
            sc[pos] = s;
            it[pos] = i;
            if (m < k)
                m++;
        }
        for (int j = m; j < k; j++) {
            it[j] = -1;
            sc[j] = -INFINITY;
        }
    }
}

static double recall_vs(const int64_t *ref, int kref, const int64_t *got, int kgot, int64_t nq,
                        int k)
{
    int64_t hit = 0, tot = 0;
    for (int64_t q = 0; q < nq; q++)
        for (int a = 0; a < k; a++) {
            int64_t r = ref[q * kref + a];
            if (r < 0)
                continue;
            tot++;
            for (int b = 0; b < k; b++)
                if (got[q * kgot + b] == r) {
                    hit++;
                    break;
                }
        }
    return tot ? (double)hit / (double)tot : 1.0;
}

static MrIndexParams params(MrIndexKind kind)
{
    MrConfig c;
    mr_config_defaults(&c);
    c.index.kind = kind;
    MrIndexParams p;
    mr_index_params_from_config(&p, &c, 42);
    return p;
}

/* Count of differences between an index result and the exact reference. */
static int64_t mismatches(const int64_t *it, const float *sc, const int64_t *rit, const double *rsc,
                          int64_t m)
{
    int64_t bad = 0;
    for (int64_t j = 0; j < m; j++) {
        int same_score = rit[j] < 0 ? isinf(sc[j]) && sc[j] < 0 : (double)sc[j] == rsc[j];
        if (it[j] != rit[j] || !same_score) {
            if (bad < 5)
                fprintf(stderr, "  mismatch at %lld: got item %lld score %.9g, want %lld %.9g\n",
                        (long long)j, (long long)it[j], (double)sc[j], (long long)rit[j], rsc[j]);
            bad++;
        }
    }
    return bad;
}

/* ---- exact ------------------------------------------------------------------------- */

/* Integer vectors (exact dot products, many exact ties), duplicated items, a
 * corpus that is not a multiple of the corpus block and a query count that is not
 * a multiple of the query block: ids, order and scores equal the naive reference. */
static void test_exact_ties(void)
{
    int64_t n = 2600, nq = 300;
    int d = 13, k = 17;
    float *X = int_vectors(n, d, 3, 11);
    for (int t = 0; t < d; t++)
        X[100 * d + t] = 3; /* the unique best match of a query equal to it */
    /* exact duplicates: items 5, 900, 2599 copy item 100; 2000 copies 7 */
    memcpy(X + 5 * d, X + 100 * d, (size_t)d * sizeof *X);
    memcpy(X + 900 * d, X + 100 * d, (size_t)d * sizeof *X);
    memcpy(X + 2599 * d, X + 100 * d, (size_t)d * sizeof *X);
    memcpy(X + 2000 * d, X + 7 * d, (size_t)d * sizeof *X);
    float *Q = int_vectors(nq, d, 2, 12);
    /* a query equal to item 100 ranks its copies first, lowest index first */
    memcpy(Q, X + 100 * d, (size_t)d * sizeof *Q);
    MrIndexParams p = params(MR_INDEX_EXACT);
    MrIndex ix;
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(mr_index_build(&ix, &p, X, n, d, NULL, NULL, Q, 20, 10, &e), MR_OK);
    int64_t *it = malloc((size_t)(nq * k) * sizeof *it),
            *rit = malloc((size_t)(nq * k) * sizeof *rit);
    float *sc = malloc((size_t)(nq * k) * sizeof *sc);
    double *rsc = malloc((size_t)(nq * k) * sizeof *rsc);
    CU_ASSERT_EQUAL(mr_index_search(&ix, Q, nq, k, 0, NULL, it, sc, &e), MR_OK);
    naive_topk(X, n, d, Q, nq, k, NULL, rit, rsc);
    CU_ASSERT_EQUAL(mismatches(it, sc, rit, rsc, nq * k), 0);
    CU_ASSERT_EQUAL(it[0], 5);
    CU_ASSERT_EQUAL(it[1], 100);
    CU_ASSERT_EQUAL(it[2], 900);
    CU_ASSERT_EQUAL(it[3], 2599);
    /* ties are really exercised: some query has equal scores inside its top k */
    int ties = 0;
    for (int64_t q = 0; q < nq; q++)
        for (int j = 1; j < k; j++)
            ties += rsc[q * k + j] == rsc[q * k + j - 1];
    CU_ASSERT(ties > 100);
    /* the same through the exact entry point and for a single query */
    CU_ASSERT_EQUAL(mr_index_search_exact(&ix, Q + 7 * d, 1, k, NULL, it, sc, &e), MR_OK);
    CU_ASSERT_EQUAL(mismatches(it, sc, rit + 7 * k, rsc + 7 * k, k), 0);
    CU_ASSERT_EQUAL(ix.stats.recall, 1.0);
    CU_ASSERT(ix.stats.qps_exact > 0);
    mr_index_free(&ix);
    free(X);
    free(Q);
    free(it);
    free(rit);
    free(sc);
    free(rsc);
}

/* Gaussian float data: float sgemm against double reference. Ids must match
 * except where two reference scores are closer than float rounding can resolve;
 * scores must match to float accuracy. */
static void test_exact_float(void)
{
    int64_t n = 5000, nq = 257;
    int d = 32, k = 10;
    float *X = gauss_vectors(n, d, 21), *Q = gauss_vectors(nq, d, 22);
    MrIndexParams p = params(MR_INDEX_EXACT);
    MrIndex ix;
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(mr_index_build(&ix, &p, X, n, d, NULL, NULL, NULL, 0, 10, &e), MR_OK);
    CU_ASSERT_EQUAL(ix.stats.queries, 0);
    CU_ASSERT_EQUAL(ix.stats.recall, -1);
    int64_t it[257 * 10], rit[257 * 10];
    float sc[257 * 10];
    double rsc[257 * 10];
    CU_ASSERT_EQUAL(mr_index_search(&ix, Q, nq, k, 0, NULL, it, sc, &e), MR_OK);
    naive_topk(X, n, d, Q, nq, k, NULL, rit, rsc);
    int bad = 0;
    for (int64_t q = 0; q < nq; q++)
        for (int j = 0; j < k; j++) {
            double r = rsc[q * k + j];
            double gap_prev = j > 0 ? rsc[q * k + j - 1] - r : INFINITY;
            double gap_next = j + 1 < k ? r - rsc[q * k + j + 1] : INFINITY;
            int resolvable = gap_prev > 1e-4 && gap_next > 1e-4;
            if (fabs(sc[q * k + j] - r) > 1e-4 * (1 + fabs(r)) ||
                (resolvable && it[q * k + j] != rit[q * k + j]))
                bad++;
        }
    CU_ASSERT_EQUAL(bad, 0);
    mr_index_free(&ix);
    free(X);
    free(Q);
}

/* k larger than the corpus: clamped to n, the rest -1 with -inf scores. */
static void test_exact_k_clamp(void)
{
    int64_t n = 7;
    int d = 3, k = 10;
    float *X = int_vectors(n, d, 2, 31), Q[3] = {1, -1, 2};
    MrIndexParams p = params(MR_INDEX_EXACT);
    MrIndex ix;
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(mr_index_build(&ix, &p, X, n, d, NULL, NULL, Q, 1, 50, &e), MR_OK);
    CU_ASSERT_EQUAL(ix.stats.k, 7);
    int64_t it[10], rit[10];
    float sc[10];
    double rsc[10];
    CU_ASSERT_EQUAL(mr_index_search(&ix, Q, 1, k, 0, NULL, it, sc, &e), MR_OK);
    naive_topk(X, n, d, Q, 1, k, NULL, rit, rsc);
    CU_ASSERT_EQUAL(mismatches(it, sc, rit, rsc, k), 0);
    for (int j = 7; j < 10; j++) {
        CU_ASSERT_EQUAL(it[j], -1);
        CU_ASSERT(isinf(sc[j]) && sc[j] < 0);
    }
    mr_index_free(&ix);
    free(X);
}

/* Exclusions: the reference's own top items, out-of-range and repeated indices,
 * unsorted lists, a query with every item excluded (all -1), a query with none. */
static void test_exact_exclusions(void)
{
    int64_t n = 1500, nq = 5;
    int d = 8, k = 6;
    float *X = int_vectors(n, d, 4, 41), *Q = int_vectors(nq, d, 3, 42);
    int64_t rit0[5 * 6];
    double rsc0[5 * 6];
    naive_topk(X, n, d, Q, nq, k, NULL, rit0, rsc0);
    int64_t *ex = malloc((size_t)(n + 64) * sizeof *ex), off[6];
    int64_t m = 0;
    off[0] = 0; /* q0: its top 3 in reverse order, a repeat and junk */
    ex[m++] = rit0[2];
    ex[m++] = rit0[0];
    ex[m++] = rit0[1];
    ex[m++] = rit0[0];
    ex[m++] = -5;
    ex[m++] = n + 3;
    off[1] = m; /* q1: nothing */
    off[2] = m; /* q2: every item */
    for (int64_t i = n - 1; i >= 0; i--)
        ex[m++] = i;
    off[3] = m; /* q3: its top item */
    ex[m++] = rit0[3 * k];
    off[4] = m; /* q4: its 6th item */
    ex[m++] = rit0[4 * k + 5];
    off[5] = m;
    MrExclusions excl = {off, ex};
    MrIndexParams p = params(MR_INDEX_EXACT);
    MrIndex ix;
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(mr_index_build(&ix, &p, X, n, d, NULL, NULL, NULL, 0, 10, &e), MR_OK);
    int64_t it[5 * 6], rit[5 * 6];
    float sc[5 * 6];
    double rsc[5 * 6];
    CU_ASSERT_EQUAL(mr_index_search(&ix, Q, nq, k, 0, &excl, it, sc, &e), MR_OK);
    naive_topk(X, n, d, Q, nq, k, &excl, rit, rsc);
    CU_ASSERT_EQUAL(mismatches(it, sc, rit, rsc, nq * k), 0);
    for (int j = 0; j < k; j++)
        CU_ASSERT_EQUAL(it[2 * k + j], -1);
    CU_ASSERT_NOT_EQUAL(it[0], rit0[0]);
    /* a negative offset step is a usage error, not a crash */
    int64_t badoff[6] = {0, 3, 2, 4, 5, 6};
    MrExclusions bad = {badoff, ex};
    CU_ASSERT_EQUAL(mr_index_search(&ix, Q, nq, k, 0, &bad, it, sc, &e), MR_EUSAGE);
    mr_index_free(&ix);
    free(X);
    free(Q);
    free(ex);
}

/* Threads: the same results, bit for bit, with 1 and 2 threads, for exact (both
 * ways of sharing the work: by queries, and by corpus for a few queries) and ivf,
 * and the same ivf build. */
static void test_threads_deterministic(void)
{
    int64_t n = 6000, nq = 600;
    int d = 16, k = 10;
    float *X = gauss_vectors(n, d, 51), *Q = gauss_vectors(nq, d, 52);
    MrIndexParams p = params(MR_INDEX_IVF);
    p.nprobe = 8;
    MrIndex ix;
    MrErr e;
    int saved = openblas_get_num_threads();
    openblas_set_num_threads(1);
    CU_ASSERT_EQUAL_FATAL(mr_index_build(&ix, &p, X, n, d, NULL, NULL, Q, 50, k, &e), MR_OK);
    size_t m = (size_t)(nq * k);
    int64_t *a1 = malloc(m * 8), *a2 = malloc(m * 8), *b1 = malloc(m * 8), *b2 = malloc(m * 8);
    float *s1 = malloc(m * 4), *s2 = malloc(m * 4), *t1 = malloc(m * 4), *t2 = malloc(m * 4);
    CU_ASSERT_EQUAL(mr_index_search_exact(&ix, Q, nq, k, NULL, a1, s1, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_index_search(&ix, Q, nq, k, 0, NULL, b1, t1, &e), MR_OK);
    /* few queries: the threads share the corpus instead of the queries */
    int64_t f1[50], f2[50];
    float g1[50], g2[50];
    CU_ASSERT_EQUAL(mr_index_search_exact(&ix, Q + 17 * d, 5, k, NULL, f1, g1, &e), MR_OK);
    openblas_set_num_threads(2);
    CU_ASSERT_EQUAL(mr_index_search_exact(&ix, Q + 17 * d, 5, k, NULL, f2, g2, &e), MR_OK);
    CU_ASSERT(memcmp(f1, f2, sizeof f1) == 0 && memcmp(g1, g2, sizeof g1) == 0);
    CU_ASSERT_EQUAL(openblas_get_num_threads(), 2); /* the search restored it */
    CU_ASSERT_EQUAL(mr_index_search_exact(&ix, Q, nq, k, NULL, a2, s2, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_index_search(&ix, Q, nq, k, 0, NULL, b2, t2, &e), MR_OK);
    /* a second build with 2 threads is the same index */
    MrIndex ix2;
    CU_ASSERT_EQUAL_FATAL(mr_index_build(&ix2, &p, X, n, d, NULL, NULL, Q, 50, k, &e), MR_OK);
    openblas_set_num_threads(saved);
    CU_ASSERT(memcmp(a1, a2, m * 8) == 0 && memcmp(s1, s2, m * 4) == 0);
    CU_ASSERT(memcmp(b1, b2, m * 8) == 0 && memcmp(t1, t2, m * 4) == 0);
    CU_ASSERT_EQUAL(ix.nlist, ix2.nlist);
    CU_ASSERT(memcmp(ix.list_items, ix2.list_items, (size_t)n * 8) == 0);
    CU_ASSERT(memcmp(ix.centroids, ix2.centroids, (size_t)(ix.nlist * d) * 4) == 0);
    mr_index_free(&ix);
    mr_index_free(&ix2);
    free(X);
    free(Q);
    free(a1);
    free(a2);
    free(b1);
    free(b2);
    free(s1);
    free(s2);
    free(t1);
    free(t2);
}

/* ---- ivf --------------------------------------------------------------------------- */

/* A batch gives each query the results it gets alone. Within a batch the probe
 * selection starts from a guess taken from the previous query's cut-off (only
 * the speed may depend on it), and the scan's state is shared by the batch; a
 * query alone in its batch has neither. Queries with different directions (cut-offs
 * that jump between neighbours, so that guesses leave too few and too many
 * candidates), duplicates, a zero and a NaN query; float and quantized lists;
 * nprobe from 1 to nlist - 1. */
static void test_ivf_batch_equals_single(void)
{
    int64_t n = 5000, nq = 240;
    int d = 16, k = 10;
    float *X = gauss_vectors(n, d, 71), *Q = gauss_vectors(nq, d, 72);
    for (int64_t q = 0; q < nq; q++) {
        if (q % 9 == 4) /* a query far off the data's scale and direction */
            for (int t = 0; t < d; t++)
                Q[q * d + t] = t == q % d ? 50.0f : 0.0f;
        if (q % 17 == 16) /* a duplicate of the previous query */
            memcpy(Q + q * d, Q + (q - 1) * d, (size_t)d * sizeof *Q);
    }
    memset(Q + 30 * d, 0, (size_t)d * sizeof *Q);
    Q[31 * d + 5] = NAN;
    for (int quant = 0; quant < 2; quant++) {
        MrIndexParams p = params(MR_INDEX_IVF);
        p.nprobe = 4;
        p.quantize = quant;
        MrIndex ix;
        MrErr e;
        CU_ASSERT_EQUAL_FATAL(mr_index_build(&ix, &p, X, n, d, NULL, NULL, Q, 50, k, &e), MR_OK);
        int64_t nps[4] = {1, 5, ix.nlist / 4, ix.nlist - 1};
        size_t m = (size_t)(nq * k);
        int64_t *a = malloc(m * 8), b[64];
        float *s = malloc(m * 4), t[64];
        for (int pi = 0; pi < 4; pi++) {
            CU_ASSERT_EQUAL(mr_index_search(&ix, Q, nq, k, nps[pi], NULL, a, s, &e), MR_OK);
            int64_t diff = 0;
            for (int64_t q = 0; q < nq; q++) {
                CU_ASSERT_EQUAL(mr_index_search(&ix, Q + q * d, 1, k, nps[pi], NULL, b, t, &e),
                                MR_OK);
                diff += memcmp(a + q * k, b, (size_t)k * 8) != 0 ||
                        memcmp(s + q * k, t, (size_t)k * 4) != 0;
            }
            CU_ASSERT_EQUAL(diff, 0);
            if (diff)
                printf("\n  quantize %d nprobe %lld: %lld queries differ ", quant,
                       (long long)nps[pi], (long long)diff);
        }
        free(a);
        free(s);
        mr_index_free(&ix);
    }
    free(X);
    free(Q);
}


/* Probing every list makes ivf exact: on integer data (exact dot products in any
 * order) the results equal the reference bit for bit, exclusions included; the
 * same for the quantized path when every candidate is rescored. */
static void test_ivf_all_lists_exact(void)
{
    int64_t n = 3000, nq = 40;
    int d = 12, k = 10;
    float *X = int_vectors(n, d, 5, 61), *Q = int_vectors(nq, d, 3, 62);
    int64_t off[41], ex[40];
    for (int q = 0; q <= nq; q++)
        off[q] = q;
    for (int q = 0; q < nq; q++)
        ex[q] = (q * 997) % n;
    MrExclusions excl = {off, ex};
    int64_t it[400], rit[400];
    float sc[400];
    double rsc[400];
    naive_topk(X, n, d, Q, nq, k, &excl, rit, rsc);
    for (int quant = 0; quant <= 1; quant++) {
        MrIndexParams p = params(MR_INDEX_IVF);
        p.nlist = 37;
        p.nprobe = 5;
        p.quantize = quant;
        p.rescore = n;
        MrIndex ix;
        MrErr e;
        CU_ASSERT_EQUAL_FATAL(mr_index_build(&ix, &p, X, n, d, NULL, NULL, Q, nq, k, &e), MR_OK);
        CU_ASSERT_EQUAL(ix.nlist, 37);
        CU_ASSERT_EQUAL(ix.stats.nprobe, 5);
        CU_ASSERT_EQUAL(mr_index_search(&ix, Q, nq, k, 37, &excl, it, sc, &e), MR_OK);
        CU_ASSERT_EQUAL(mismatches(it, sc, rit, rsc, nq * k), 0);
        /* nprobe beyond nlist is clamped */
        CU_ASSERT_EQUAL(mr_index_search(&ix, Q, nq, k, 1000, &excl, it, sc, &e), MR_OK);
        CU_ASSERT_EQUAL(mismatches(it, sc, rit, rsc, nq * k), 0);
        /* lists partition the items */
        CU_ASSERT_EQUAL(ix.list_off[ix.nlist], n);
        mr_index_free(&ix);
    }
    free(X);
    free(Q);
}

/* The probing rule of docs/index.md, checked from the index's public fields: a
 * query probes the nprobe lists with the largest (M/|q|) q.c + bias, and gets the
 * exact top k of the items in those lists (exclusions honoured). The reference
 * ranks lists in double precision and skips queries whose nprobe-th and next
 * list are too close to call; integer vectors make the item scores exact. */
static void test_ivf_probe_rule(void)
{
    int64_t n = 4000, nq = 120;
    int d = 10, k = 8;
    float *X = int_vectors(n, d, 6, 65), *Q = int_vectors(nq, d, 4, 66);
    MrIndexParams p = params(MR_INDEX_IVF);
    p.nlist = 50;
    p.nprobe = 7;
    MrIndex ix;
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(mr_index_build(&ix, &p, X, n, d, NULL, NULL, Q, 10, k, &e), MR_OK);
    int64_t off[121], exl[120];
    for (int q = 0; q <= nq; q++)
        off[q] = q;
    for (int q = 0; q < nq; q++)
        exl[q] = (q * 31) % n;
    MrExclusions excl = {off, exl};
    int64_t *it = malloc((size_t)(nq * k) * 8);
    float *sc = malloc((size_t)(nq * k) * 4);
    CU_ASSERT_EQUAL(mr_index_search(&ix, Q, nq, k, 0, &excl, it, sc, &e), MR_OK);
    int64_t *list_of = malloc((size_t)n * 8);
    for (int64_t l = 0; l < ix.nlist; l++)
        for (int64_t pos = ix.list_off[l]; pos < ix.list_off[l + 1]; pos++)
            list_of[ix.list_items[pos]] = l;
    double ps[50];
    int64_t checked = 0, bad = 0;
    for (int64_t q = 0; q < nq; q++) {
        const float *qq = Q + q * d;
        double qn = 0;
        for (int t = 0; t < d; t++)
            qn += (double)qq[t] * qq[t];
        double alpha = ix.aug_norm / sqrt(qn);
        for (int64_t l = 0; l < ix.nlist; l++) {
            double dot = 0;
            for (int t = 0; t < d; t++)
                dot += (double)qq[t] * ix.centroids[l * d + t];
            ps[l] = alpha * dot + ix.probe_bias[l];
        }
        /* the 7th and 8th best probe scores */
        double sorted[50];
        memcpy(sorted, ps, sizeof sorted);
        for (int a = 0; a < 8; a++)
            for (int b = a + 1; b < 50; b++)
                if (sorted[b] > sorted[a]) {
                    double t = sorted[a];
                    sorted[a] = sorted[b];
                    sorted[b] = t;
                }
        if (sorted[6] - sorted[7] < 1e-3 * (1 + fabs(sorted[6])))
            continue;
        checked++;
        /* reference: exact top k over the items of lists scoring >= the 7th */
        int64_t rit[8];
        double rsc[8];
        int m = 0;
        for (int64_t i = 0; i < n; i++) {
            if (ps[list_of[i]] < sorted[6] || i == exl[q])
                continue;
            double v = 0;
            for (int t = 0; t < d; t++)
                v += (double)qq[t] * X[i * d + t];
            if (m == k && !(v > rsc[k - 1]))
                continue;
            int pos = m < k ? m : k - 1;
            while (pos > 0 && v > rsc[pos - 1]) {
                rsc[pos] = rsc[pos - 1];
                rit[pos] = rit[pos - 1];
                pos--;
            }
            rsc[pos] = v;
            rit[pos] = i;
            if (m < k)
                m++;
        }
        for (int j = m; j < k; j++) {
            rit[j] = -1;
            rsc[j] = -INFINITY;
        }
        bad += mismatches(it + q * k, sc + q * k, rit, rsc, k) != 0;
    }
    CU_ASSERT(checked >= nq * 3 / 4);
    CU_ASSERT_EQUAL(bad, 0);
    free(list_of);
    free(it);
    free(sc);
    mr_index_free(&ix);
    free(X);
    free(Q);
}

/* Planted clusters with varied norms and norm-heavy items; the default settings
 * (nlist ~ 4 sqrt(n), nprobe chosen for recall 0.95 on a build sample) reach recall@10
 * >= 0.95 on held-out queries, and every held-out query whose exact top-1 is a
 * heavy item (with hundreds of items ahead of it by cosine) gets it at rank 1. */
static void test_ivf_planted(void)
{
    Planted P;
    int64_t n = 20000, ns = 400, nh = 600;
    int d = 32, k = 10;
    planted_make(&P, n, ns + nh, d, 60, 8, 71);
    const float *Qs = P.Q, *Qh = P.Q + ns * d;
    for (int quant = 0; quant <= 1; quant++) {
        MrIndexParams p = params(MR_INDEX_IVF);
        p.quantize = quant;
        MrIndex ix;
        MrErr e;
        CU_ASSERT_EQUAL_FATAL(mr_index_build(&ix, &p, P.X, n, d, NULL, NULL, Qs, ns, k, &e), MR_OK);
        CU_ASSERT_EQUAL(ix.nlist, (int64_t)llround(4 * sqrt((double)n)));
        CU_ASSERT(ix.stats.recall >= 0.95);
        CU_ASSERT(ix.stats.nprobe >= 1 && ix.stats.nprobe < ix.nlist / 4);
        int64_t *it = malloc((size_t)(nh * k) * 8), *rit = malloc((size_t)(nh * k) * 8);
        float *sc = malloc((size_t)(nh * k) * 4);
        double *rsc = malloc((size_t)(nh * k) * 8);
        CU_ASSERT_EQUAL(mr_index_search(&ix, Qh, nh, k, 0, NULL, it, sc, &e), MR_OK);
        naive_topk(P.X, n, d, Qh, nh, k, NULL, rit, rsc);
        double rec = recall_vs(rit, k, it, k, nh, k);
        fprintf(stderr,
                "  planted quantize=%d: nlist %lld nprobe %lld build recall %.4f "
                "held-out recall %.4f\n",
                quant, (long long)ix.nlist, (long long)ix.stats.nprobe, ix.stats.recall, rec);
        CU_ASSERT(rec >= 0.95);
        /* heavy items */
        int64_t *list_of = malloc((size_t)n * 8);
        for (int64_t l = 0; l < ix.nlist; l++)
            for (int64_t pos = ix.list_off[l]; pos < ix.list_off[l + 1]; pos++)
                list_of[ix.list_items[pos]] = l;
        int64_t heavy_top = 0, found = 0, min_cos_rank = INT64_MAX, cos_probe_miss = 0;
        for (int64_t q = 0; q < nh; q++) {
            int64_t top = rit[q * k];
            if (top < n - P.heavy)
                continue;
            heavy_top++;
            found += it[q * k] == top;
            /* how many items beat it on cosine for this query */
            const float *qq = Qh + q * d;
            double tn = 0;
            for (int t = 0; t < d; t++)
                tn += (double)P.X[top * d + t] * P.X[top * d + t];
            double cos_top = rsc[q * k] / sqrt(tn);
            int64_t ahead = 0;
            for (int64_t i = 0; i < n; i++) {
                double dot = 0, nn = 0;
                for (int t = 0; t < d; t++) {
                    dot += (double)qq[t] * P.X[i * d + t];
                    nn += (double)P.X[i * d + t] * P.X[i * d + t];
                }
                ahead += dot / sqrt(nn) > cos_top;
            }
            min_cos_rank = ahead < min_cos_rank ? ahead : min_cos_rank;
            /* where a direction-only probe of the same lists (q . c / |c|) ranks the
             * heavy item's list */
            int64_t lh = list_of[top], crank = 0;
            double cos_lh = 0;
            double *cosl = malloc((size_t)ix.nlist * sizeof *cosl);
            for (int64_t l = 0; l < ix.nlist; l++) {
                double dot = 0, nn = 0;
                for (int t = 0; t < d; t++) {
                    dot += (double)qq[t] * ix.centroids[l * d + t];
                    nn += (double)ix.centroids[l * d + t] * ix.centroids[l * d + t];
                }
                cosl[l] = dot / sqrt(nn);
            }
            cos_lh = cosl[lh];
            for (int64_t l = 0; l < ix.nlist; l++)
                crank += cosl[l] > cos_lh;
            free(cosl);
            cos_probe_miss += crank >= ix.stats.nprobe;
        }
        free(list_of);
        fprintf(stderr,
                "  heavy: %lld queries with a heavy top-1, %lld found at rank 1, "
                "at least %lld items ahead by cosine; a cosine probe at the same "
                "nprobe misses its list for %lld\n",
                (long long)heavy_top, (long long)found, (long long)min_cos_rank,
                (long long)cos_probe_miss);
        CU_ASSERT(heavy_top >= 20);
        CU_ASSERT_EQUAL(found, heavy_top);
        CU_ASSERT(min_cos_rank >= 100);
        CU_ASSERT(cos_probe_miss > heavy_top / 2); /* direction-only probing would fail */
        mr_index_free(&ix);
        free(it);
        free(rit);
        free(sc);
        free(rsc);
    }
    planted_free(&P);
}

/* Quantized codes reconstruct every residual to half a step, and a fixed nprobe
 * with the default rescore loses little against the float lists. */
static void test_ivf_quantized_codes(void)
{
    Planted P;
    int64_t n = 8000;
    int d = 24;
    planted_make(&P, n, 300, d, 30, 0, 81);
    MrIndexParams p = params(MR_INDEX_IVF);
    p.quantize = 1;
    p.nprobe = 12;
    MrIndex ix;
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(mr_index_build(&ix, &p, P.X, n, d, NULL, NULL, P.Q, 300, 10, &e), MR_OK);
    CU_ASSERT_PTR_NULL(ix.list_emb);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ix.codes);
    double worst = 0;
    for (int64_t l = 0; l < ix.nlist; l++)
        for (int64_t pos = ix.list_off[l]; pos < ix.list_off[l + 1]; pos++) {
            int64_t r = pos - ix.list_off[l], b = ix.list_blk[l] + r / MR_INDEX_LANES;
            int lane = (int)(r % MR_INDEX_LANES);
            int64_t item = ix.list_items[pos];
            for (int t = 0; t < d; t++) {
                uint8_t c = ix.codes[MR_INDEX_CODE_AT(d, b, t, lane)];
                double rec =
                    ix.centroids[l * d + t] + ix.code_offset[t] + (double)ix.code_scale[t] * c;
                double err = fabs(rec - P.X[item * d + t]) / (ix.code_scale[t] + 1e-30);
                worst = err > worst ? err : worst;
            }
        }
    CU_ASSERT(worst <= 0.5 + 1e-3);
    /* against the float ivf at the same nprobe */
    MrIndexParams pf = p;
    pf.quantize = 0;
    MrIndex fx;
    CU_ASSERT_EQUAL_FATAL(mr_index_build(&fx, &pf, P.X, n, d, NULL, NULL, P.Q, 300, 10, &e), MR_OK);
    int64_t a[3000], b[3000];
    float sa[3000], sb[3000];
    CU_ASSERT_EQUAL(mr_index_search(&ix, P.Q, 300, 10, 0, NULL, a, sa, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_index_search(&fx, P.Q, 300, 10, 0, NULL, b, sb, &e), MR_OK);
    double agree = recall_vs(b, 10, a, 10, 300, 10);
    CU_ASSERT(agree >= 0.99);
    /* rescored scores are exact scores: equal to the float path's for shared items */
    mr_index_free(&ix);
    mr_index_free(&fx);
    planted_free(&P);
}

/* ---- ids ----------------------------------------------------------------------------- */

static void test_find_item(void)
{
    /* sorted by bytes, prefixes and an empty id included */
    const char *ids[] = {"", "a", "ab", "abc", "b", "b\x01", "zz", "\xc3\xa9t\xc3\xa9"};
    int64_t n = 8, off[9];
    char bytes[64];
    off[0] = 0;
    for (int i = 0; i < n; i++) {
        size_t l = strlen(ids[i]);
        memcpy(bytes + off[i], ids[i], l);
        off[i + 1] = off[i] + (int64_t)l;
    }
    float *X = gauss_vectors(n, 4, 91);
    MrIndexParams p = params(MR_INDEX_EXACT);
    MrIndex ix;
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(mr_index_build(&ix, &p, X, n, 4, bytes, off, NULL, 0, 10, &e), MR_OK);
    CU_ASSERT_PTR_NULL(ix.id_order);
    for (int i = 0; i < n; i++)
        CU_ASSERT_EQUAL(mr_index_find_item(&ix, ids[i], strlen(ids[i])), i);
    CU_ASSERT_EQUAL(mr_index_find_item(&ix, "aa", 2), -1);
    CU_ASSERT_EQUAL(mr_index_find_item(&ix, "zzz", 3), -1);
    CU_ASSERT_EQUAL(mr_index_find_item(&ix, "ab", 1), 1); /* length counts, not NUL */
    mr_index_free(&ix);
    /* generated ids "0".."n-1" are not in byte order; lookup still works */
    float *Y = gauss_vectors(123, 4, 92);
    CU_ASSERT_EQUAL_FATAL(mr_index_build(&ix, &p, Y, 123, 4, NULL, NULL, NULL, 0, 10, &e), MR_OK);
    CU_ASSERT_PTR_NOT_NULL(ix.id_order);
    char buf[16];
    for (int i = 0; i < 123; i++) {
        snprintf(buf, sizeof buf, "%d", i);
        CU_ASSERT_EQUAL(mr_index_find_item(&ix, buf, strlen(buf)), i);
    }
    CU_ASSERT_EQUAL(mr_index_find_item(&ix, "123", 3), -1);
    CU_ASSERT_EQUAL(mr_index_find_item(&ix, "007", 3), -1);
    mr_index_free(&ix);
    /* duplicate ids are refused */
    int64_t doff[4] = {0, 1, 2, 3};
    CU_ASSERT_EQUAL(mr_index_build(&ix, &p, X, 3, 4, "xyx", doff, NULL, 0, 10, &e), MR_EDATA);
    CU_ASSERT(strstr(e.msg, "'x'") != NULL);
    free(X);
    free(Y);
}

/* Bad input is an error code with a message, never a crash. */
static void test_build_errors(void)
{
    float X[8] = {1, 2, 3, 4, 5, NAN, 7, 8};
    MrIndexParams p = params(MR_INDEX_EXACT);
    MrIndex ix;
    MrErr e;
    CU_ASSERT_EQUAL(mr_index_build(&ix, &p, X, 4, 2, NULL, NULL, NULL, 0, 10, &e), MR_EDATA);
    CU_ASSERT(strstr(e.msg, "item 2") != NULL);
    X[5] = 6;
    CU_ASSERT_EQUAL(mr_index_build(&ix, &p, X, 4, 2, NULL, NULL, NULL, 0, 0, &e), MR_EUSAGE);
    CU_ASSERT_EQUAL(mr_index_build(&ix, &p, X, 0, 2, NULL, NULL, NULL, 0, 10, &e), MR_EDATA);
    MrIndexParams pi = params(MR_INDEX_IVF);
    CU_ASSERT_EQUAL(mr_index_build(&ix, &pi, X, 4, 2, NULL, NULL, NULL, 0, 10, &e), MR_EUSAGE);
    CU_ASSERT(strstr(e.msg, "nprobe") != NULL);
    pi.target_recall = 1.5;
    CU_ASSERT_EQUAL(mr_index_build(&ix, &pi, X, 4, 2, NULL, NULL, X, 1, 10, &e), MR_ECONFIG);
    CU_ASSERT_EQUAL(mr_index_build(&ix, &p, X, 4, 2, NULL, NULL, NULL, 0, 10, &e), MR_OK);
    int64_t it[4];
    float sc[4];
    CU_ASSERT_EQUAL(mr_index_search(&ix, X, 1, 0, 0, NULL, it, sc, &e), MR_EUSAGE);
    CU_ASSERT_EQUAL(mr_index_search(&ix, X, 1, 4, -1, NULL, it, sc, &e), MR_EUSAGE);
    CU_ASSERT_EQUAL(mr_index_search(&ix, X, 0, 4, 0, NULL, it, sc, &e), MR_OK);
    /* a query with a NaN scores NaN everywhere: no candidates, no crash */
    float qn[2] = {NAN, 1};
    CU_ASSERT_EQUAL(mr_index_search(&ix, qn, 1, 4, 0, NULL, it, sc, &e), MR_OK);
    CU_ASSERT(it[0] == -1 && it[3] == -1);
    mr_index_free(&ix);
    mr_index_free(&ix); /* idempotent */
}

/* ---- files ------------------------------------------------------------------------------ */

static const char *tmp_path(const char *name)
{
    static char buf[4][1024];
    static int k;
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof buf[k], "%s/%s", test_tmp_dir(), name);
    return buf[k];
}

#define SAME(a, b, bytes) ((a) == (b) || ((a) && (b) && memcmp((a), (b), (bytes)) == 0))

static int index_equal(const MrIndex *a, const MrIndex *b)
{
    int d = a->d;
    size_t cells = (size_t)a->nblk * (size_t)d * MR_INDEX_LANES;
    const MrIndexParams *p = &a->p, *q = &b->p;
    const MrIndexStats *s = &a->stats, *t = &b->stats;
    return a->n == b->n && a->d == b->d && a->nlist == b->nlist && p->kind == q->kind &&
           p->nlist == q->nlist && p->nprobe == q->nprobe && p->target_recall == q->target_recall &&
           p->kmeans_iters == q->kmeans_iters && p->quantize == q->quantize &&
           p->rescore == q->rescore && p->seed == q->seed && s->k == t->k &&
           s->queries == t->queries && s->recall == t->recall && s->qps_exact == t->qps_exact &&
           s->qps == t->qps && s->nprobe == t->nprobe && s->threads == t->threads &&
           a->aug_norm == b->aug_norm && a->model_hash == b->model_hash &&
           strcmp(a->source, b->source) == 0 && a->source_step == b->source_step &&
           SAME(a->emb, b->emb, (size_t)(a->n * d) * 4) &&
           SAME(a->ids_off, b->ids_off, (size_t)(a->n + 1) * 8) &&
           SAME(a->ids, b->ids, (size_t)a->ids_off[a->n]) &&
           SAME(a->id_order, b->id_order, (size_t)a->n * 8) &&
           SAME(a->centroids, b->centroids, (size_t)(a->nlist * d) * 4) &&
           SAME(a->probe_bias, b->probe_bias, (size_t)a->nlist * 4) &&
           SAME(a->list_off, b->list_off, (size_t)(a->nlist + 1) * 8) &&
           SAME(a->list_items, b->list_items, (size_t)a->n * 8) && a->nblk == b->nblk &&
           SAME(a->list_blk, b->list_blk, (size_t)(a->nlist + 1) * 8) &&
           SAME(a->list_emb, b->list_emb, cells * 4) && SAME(a->codes, b->codes, (size_t)a->nblk * MR_INDEX_CODE_AT(d, 1, 0, 0)) &&
           SAME(a->code_mean, b->code_mean, (size_t)d * 4) &&
           SAME(a->code_scale, b->code_scale, (size_t)d * 4) &&
           SAME(a->code_offset, b->code_offset, (size_t)d * 4);
}

/* Build the three kinds of index used by the file tests. */
static void build_kind(MrIndex *ix, int kind, int64_t n, int d)
{
    float *X = gauss_vectors(n, d, 101 + (uint64_t)kind), *Q = gauss_vectors(50, d, 201);
    MrIndexParams p = params(kind == 0 ? MR_INDEX_EXACT : MR_INDEX_IVF);
    p.quantize = kind == 2;
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(mr_index_build(ix, &p, X, n, d, NULL, NULL, Q, 50, 10, &e), MR_OK);
    ix->model_hash = 0xfedcba9876543210ULL;
    snprintf(ix->source, sizeof ix->source, "runs/x/checkpoints/ckpt-%d.h5", 120 + kind);
    ix->source_step = 120 + kind;
    free(X);
    free(Q);
}

/* Save and load exact, ivf and quantized ivf indexes: every array and value comes
 * back bitwise, and searches give the same answers. */
static void test_file_roundtrip(void)
{
    for (int kind = 0; kind < 3; kind++) {
        MrIndex ix, back;
        MrErr e;
        build_kind(&ix, kind, 1000, 12);
        const char *path = tmp_path("roundtrip.h5");
        CU_ASSERT_EQUAL_FATAL(mr_index_save(&ix, path, &e), MR_OK);
        CU_ASSERT_EQUAL_FATAL(mr_index_load(&back, path, &e), MR_OK);
        CU_ASSERT(index_equal(&ix, &back));
        float *Q = gauss_vectors(30, 12, 301);
        int64_t a[300], b[300];
        float sa[300], sb[300];
        CU_ASSERT_EQUAL(mr_index_search(&ix, Q, 30, 10, 0, NULL, a, sa, &e), MR_OK);
        CU_ASSERT_EQUAL(mr_index_search(&back, Q, 30, 10, 0, NULL, b, sb, &e), MR_OK);
        CU_ASSERT(memcmp(a, b, sizeof a) == 0 && memcmp(sa, sb, sizeof sa) == 0);
        CU_ASSERT_EQUAL(mr_index_find_item(&back, "999", 3), 999);
        /* no temporary left behind */
        char tmp[1100];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        CU_ASSERT_NOT_EQUAL(access(tmp, F_OK), 0);
        free(Q);
        mr_index_free(&ix);
        mr_index_free(&back);
    }
    /* every HDF5 object the index opened is closed again */
    CU_ASSERT_EQUAL(H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL), 0);
}

static unsigned char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

static void write_all(const char *path, const unsigned char *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(b, 1, n, f);
        fclose(f);
    }
}

/* stderr into a file while damaged files are loaded: HDF5 must print nothing. */
static int stderr_begin(const char *path)
{
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    close(fd);
    return saved;
}

static long stderr_end(int saved, const char *path)
{
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* Load must fail with EFORMAT or EIO and a message naming the file, or succeed
 * with exactly the original content. */
static int load_damaged(const char *path, const MrIndex *orig, int *failed)
{
    MrIndex back;
    MrErr e;
    mr_err_clear(&e);
    int rc = mr_index_load(&back, path, &e);
    *failed = rc != MR_OK;
    if (rc == MR_OK) {
        int same = index_equal(orig, &back);
        mr_index_free(&back);
        return same;
    }
    return (rc == MR_EFORMAT || rc == MR_EIO) && strstr(e.msg, path) != NULL;
}

/* What the child of test_file_damaged found. */
typedef struct DamageReport {
    int rc_missing, missing_named, trunc_ok, flips_ok, flips, flips_failed;
    long first_bad, noise;
} DamageReport;

/* Missing, truncated and bit-flipped files: a clean error naming the file (or,
 * for a flip in bytes HDF5 never reads, an identical index), nothing on stderr,
 * no crash. The damaged loads run in a child process: HDF5 1.10 leaks a little
 * internal memory whenever it meets a corrupt object header (HDF5 issue #3790,
 * fixed in 1.14.5) and LeakSanitizer would charge it to this test binary. The
 * child's exit status also proves no load crashed. */
static void test_file_damaged(void)
{
    MrIndex ix;
    MrErr e;
    build_kind(&ix, 2, 600, 8);
    const char *good = tmp_path("good.h5"), *bad = tmp_path("bad.h5"),
               *errf = tmp_path("stderr.txt");
    CU_ASSERT_EQUAL_FATAL(mr_index_save(&ix, good, &e), MR_OK);
    size_t n = 0;
    unsigned char *b = read_all(good, &n);
    CU_ASSERT_FATAL(b != NULL && n > 1000);
    int pfd[2];
    CU_ASSERT_FATAL(pipe(pfd) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        DamageReport r = {0};
        r.first_bad = -1;
        int saved = stderr_begin(errf);
        MrIndex back;
        r.rc_missing = mr_index_load(&back, tmp_path("does-not-exist.h5"), &e);
        r.missing_named = strstr(e.msg, "does-not-exist.h5") != NULL;
        int failed;
        r.trunc_ok = 1;
        r.flips_ok = 1;
        size_t cuts[] = {0, 7, 100, 512, n / 3, n / 2, n - 100, n - 1};
        for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
            write_all(bad, b, cuts[c]);
            r.trunc_ok &= load_damaged(bad, &ix, &failed) && failed;
        }
        /* every byte of the first 4 KiB (superblock, object headers, attributes),
         * then every 61st byte of the rest (data and later metadata) */
        for (size_t pos = 0; pos < n; pos += pos < 4096 ? 1 : 61) {
            b[pos] ^= 0x5a;
            write_all(bad, b, n);
            b[pos] ^= 0x5a;
            int ok = load_damaged(bad, &ix, &failed);
            if (!ok && r.flips_ok)
                r.first_bad = (long)pos;
            r.flips_ok &= ok;
            r.flips_failed += failed;
            r.flips++;
        }
        r.noise = stderr_end(saved, errf);
        ssize_t w = write(pfd[1], &r, sizeof r);
        _exit(w == (ssize_t)sizeof r ? 0 : 3);
    }
    close(pfd[1]);
    DamageReport r;
    ssize_t got = read(pfd[0], &r, sizeof r);
    close(pfd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    CU_ASSERT_FATAL(WIFEXITED(status) && WEXITSTATUS(status) == 0 && got == (ssize_t)sizeof r);
    CU_ASSERT_EQUAL(r.rc_missing, MR_EIO);
    CU_ASSERT(r.missing_named);
    CU_ASSERT(r.trunc_ok);
    CU_ASSERT(r.flips_ok);
    if (!r.flips_ok)
        fprintf(stderr, "  flip at byte %ld: not detected, or a bad message\n", r.first_bad);
    CU_ASSERT(r.flips_failed > r.flips / 2); /* most flips land on checked bytes */
    CU_ASSERT_EQUAL(r.noise, 0);
    fprintf(stderr, "  %d flips, %d detected, the rest harmless\n", r.flips, r.flips_failed);

    MrIndex back;
    /* a flip inside the embedding data is caught by its checksum */
    hid_t f = H5Fopen(good, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, "emb", H5P_DEFAULT);
    haddr_t at = H5Dget_offset(ds);
    H5Dclose(ds);
    H5Fclose(f);
    CU_ASSERT_FATAL(at != HADDR_UNDEF && at + 40 < n);
    b[at + 37] ^= 0x01;
    write_all(bad, b, n);
    b[at + 37] ^= 0x01;
    CU_ASSERT_EQUAL(mr_index_load(&back, bad, &e), MR_EFORMAT);
    CU_ASSERT(strstr(e.msg, "/emb") != NULL && strstr(e.msg, "checksum") != NULL);
    free(b);
    mr_index_free(&ix);
}

/* Rewrite a root attribute of a saved file through HDF5 (a well-formed file with
 * the wrong identity). */
static void set_root_attr(const char *path, const char *name, const char *sval, int ival)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    H5Adelete(f, name);
    hid_t sp = H5Screate(H5S_SCALAR), t = sval ? H5Tcopy(H5T_C_S1) : H5Tcopy(H5T_STD_I32LE);
    if (sval)
        H5Tset_size(t, strlen(sval) + 1);
    hid_t a = H5Acreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (sval)
        H5Awrite(a, t, sval);
    else
        H5Awrite(a, H5T_NATIVE_INT, &ival);
    H5Aclose(a);
    H5Tclose(t);
    H5Sclose(sp);
    H5Fclose(f);
}

static void test_file_identity(void)
{
    MrIndex ix, back;
    MrErr e;
    build_kind(&ix, 0, 50, 4);
    const char *p1 = tmp_path("magic.h5"), *p2 = tmp_path("version.h5"), *p3 = tmp_path("ckpt.h5");
    CU_ASSERT_EQUAL_FATAL(mr_index_save(&ix, p1, &e), MR_OK);
    CU_ASSERT_EQUAL_FATAL(mr_index_save(&ix, p2, &e), MR_OK);
    CU_ASSERT_EQUAL_FATAL(mr_index_save(&ix, p3, &e), MR_OK);
    set_root_attr(p1, "magic", "NOT-AN-INDEX", 0);
    set_root_attr(p2, "format_version", NULL, MR_INDEX_VERSION + 1);
    set_root_attr(p3, "magic", "MPIREC-CKPT", 0);
    CU_ASSERT_EQUAL(mr_index_load(&back, p1, &e), MR_EFORMAT);
    CU_ASSERT(strstr(e.msg, p1) && strstr(e.msg, "NOT-AN-INDEX") && strstr(e.msg, MR_INDEX_MAGIC));
    CU_ASSERT_EQUAL(mr_index_load(&back, p2, &e), MR_EFORMAT);
    CU_ASSERT(strstr(e.msg, p2) && strstr(e.msg, "version 2"));
    CU_ASSERT_EQUAL(mr_index_load(&back, p3, &e), MR_EFORMAT);
    CU_ASSERT(strstr(e.msg, "checkpoint") != NULL);
    /* a text file is not HDF5 */
    const char *p4 = tmp_path("text.h5");
    write_all(p4, (const unsigned char *)"hello, world\n", 13);
    CU_ASSERT_EQUAL(mr_index_load(&back, p4, &e), MR_EFORMAT);
    CU_ASSERT(strstr(e.msg, p4) != NULL);
    /* saving into a directory that does not exist is an I/O error */
    CU_ASSERT_EQUAL(mr_index_save(&ix, tmp_path("no/such/dir/x.h5"), &e), MR_EIO);
    CU_ASSERT(strstr(e.msg, "no/such/dir") != NULL);
    CU_ASSERT_EQUAL(H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL), 0);
    mr_index_free(&ix);
}

/* Replace attribute `name` of object `obj` ("/" or "meta") by a string of the given
 * storage: var = variable-length (width ignored), else fixed-length of `width`
 * bytes (0: strlen + 1) with padding `pad`; character set `cs`. */
static void put_str_attr(const char *path, const char *obj, const char *name, const char *v,
                         int var, H5T_cset_t cs, H5T_str_t pad, size_t width)
{
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t o = H5Oopen(f, obj, H5P_DEFAULT);
    CU_ASSERT_FATAL(f >= 0 && o >= 0);
    H5Adelete(o, name);
    size_t w = width ? width : strlen(v) + 1, len = strlen(v) < w ? strlen(v) : w;
    /* the stored bytes: the string, then the padding its kind calls for */
    char *buf = malloc(w);
    memset(buf, pad == H5T_STR_SPACEPAD ? ' ' : '\0', w);
    memcpy(buf, v, len);
    hid_t sp = H5Screate(H5S_SCALAR), t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, var ? H5T_VARIABLE : w);
    H5Tset_cset(t, cs);
    if (!var)
        H5Tset_strpad(t, pad);
    hid_t a = H5Acreate2(o, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    CU_ASSERT(a >= 0 && (var ? H5Awrite(a, t, &v) : H5Awrite(a, t, buf)) >= 0);
    free(buf);
    H5Aclose(a);
    H5Tclose(t);
    H5Sclose(sp);
    H5Oclose(o);
    H5Fclose(f);
}

/* String attributes of every storage other tools and modules use load: the index
 * writer's fixed ASCII, the checkpoint module's fixed UTF-8, h5py's
 * variable-length UTF-8, variable-length ASCII, a NUL-padded string that fills its
 * whole width, a space-padded one; the values come back byte for byte (the /meta
 * checksum covers them; the source holds non-ASCII bytes). A number where a string
 * belongs and an over-long string are errors. Then a real checkpoint, written by
 * the checkpoint module (UTF-8 magic and attributes), given as an index: its magic
 * is read and the error says it is a checkpoint (it used to fail with "cannot
 * read string attribute"). */
static void test_file_string_attrs(void)
{
    MrIndex ix, back;
    MrErr e;
    build_kind(&ix, 1, 300, 6);
    const char *src = "runs/caf\xc3\xa9 \xe2\x82\xac/checkpoints/ckpt-000000121.h5";
    snprintf(ix.source, sizeof ix.source, "%s", src);
    const char *path = tmp_path("strings.h5");
    static const struct {
        int var;
        H5T_cset_t cs;
        H5T_str_t pad;
        int extra; /* width beyond strlen: 0 = exactly the bytes, no terminator */
    } kinds[] = {
        {0, H5T_CSET_ASCII, H5T_STR_NULLTERM, 1}, {0, H5T_CSET_UTF8, H5T_STR_NULLTERM, 1},
        {1, H5T_CSET_UTF8, H5T_STR_NULLTERM, 0},  {1, H5T_CSET_ASCII, H5T_STR_NULLTERM, 0},
        {0, H5T_CSET_UTF8, H5T_STR_NULLPAD, 0},   {0, H5T_CSET_ASCII, H5T_STR_NULLPAD, 7},
        {0, H5T_CSET_UTF8, H5T_STR_SPACEPAD, 0},
    };
    for (size_t j = 0; j < sizeof kinds / sizeof kinds[0]; j++) {
        CU_ASSERT_EQUAL_FATAL(mr_index_save(&ix, path, &e), MR_OK);
        int var = kinds[j].var;
        H5T_cset_t cs = kinds[j].cs;
        H5T_str_t pad = kinds[j].pad;
        put_str_attr(path, "/", "magic", MR_INDEX_MAGIC, var, cs, pad,
                     strlen(MR_INDEX_MAGIC) + (size_t)kinds[j].extra);
        put_str_attr(path, "meta", "kind", "ivf", var, cs, pad, 3 + (size_t)kinds[j].extra);
        put_str_attr(path, "meta", "source", src, var, cs, pad,
                     strlen(src) + (size_t)kinds[j].extra);
        int rc = mr_index_load(&back, path, &e);
        CU_ASSERT_EQUAL(rc, MR_OK);
        if (rc != MR_OK) {
            fprintf(stderr, "  string kind %zu: %s\n", j, e.msg);
            continue;
        }
        CU_ASSERT_STRING_EQUAL(back.source, src);
        CU_ASSERT(index_equal(&ix, &back));
        mr_index_free(&back);
    }
    /* a number where a string belongs; a string longer than any the reader keeps */
    CU_ASSERT_EQUAL_FATAL(mr_index_save(&ix, path, &e), MR_OK);
    set_root_attr(path, "magic", NULL, 7);
    CU_ASSERT_EQUAL(mr_index_load(&back, path, &e), MR_EFORMAT);
    ASSERT_HAS(e.msg, "magic: expected a string attribute");
    char longs[700];
    memset(longs, 'x', sizeof longs - 1);
    longs[sizeof longs - 1] = '\0';
    for (int var = 0; var <= 1; var++) {
        CU_ASSERT_EQUAL_FATAL(mr_index_save(&ix, path, &e), MR_OK);
        put_str_attr(path, "meta", "source", longs, var, H5T_CSET_UTF8, H5T_STR_NULLTERM, 0);
        CU_ASSERT_EQUAL(mr_index_load(&back, path, &e), MR_EFORMAT);
        ASSERT_HAS(e.msg, "source");
        ASSERT_HAS(e.msg, var ? "too long" : "impossible length");
    }
    mr_index_free(&ix);

    /* a real checkpoint (and an mpirec file of another kind) given as an index */
    char dir[1100], ck[1200];
    snprintf(dir, sizeof dir, "%s/strings_ckpt", test_tmp_dir());
    MrCkptWriter *w = NULL;
    int64_t x[2] = {1, 2};
    const char *kinds2[2][2] = {{"ckpt-1", MR_CKPT_MAGIC}, {"index.seen", "MPIREC-SEEN"}};
    for (int j = 0; j < 2; j++) {
        CU_ASSERT_EQUAL_FATAL(mr_ckpt_writer_open(&w, NULL, dir, kinds2[j][0], kinds2[j][1], 1, &e),
                              MR_OK);
        CU_ASSERT_EQUAL(mr_ckpt_write_attr_str(w, "note", "caf\xc3\xa9", &e), MR_OK);
        CU_ASSERT_EQUAL(mr_ckpt_write_root(w, "x", MR_I64, 2, 0, x, &e), MR_OK);
        CU_ASSERT_EQUAL_FATAL(mr_ckpt_writer_commit(&w, NULL, 0, &e), MR_OK);
        snprintf(ck, sizeof ck, "%s/%s.h5", dir, kinds2[j][0]);
        CU_ASSERT_EQUAL(mr_index_load(&back, ck, &e), MR_EFORMAT);
        ASSERT_HAS(e.msg, ck);
        char want[80];
        snprintf(want, sizeof want, "magic is '%s', expected '%s'", kinds2[j][1], MR_INDEX_MAGIC);
        ASSERT_HAS(e.msg, want);
        ASSERT_HAS(e.msg, j == 0 ? "this is a checkpoint, not an index: give it as --checkpoint"
                                 : "this is an exclude-seen file, not an index");
        CU_ASSERT(strstr(e.msg, "cannot read") == NULL);
    }
    CU_ASSERT_EQUAL(H5Fget_obj_count((hid_t)H5F_OBJ_ALL, H5F_OBJ_ALL), 0);
}

/* The checksum convention of ckpt.h on a hand-computed case: rows are elements of
 * a 1-D dataset, mix(i, fnv1a64(bytes)), summed. */
static void test_file_checksums(void)
{
    MrIndex ix;
    MrErr e;
    build_kind(&ix, 0, 5, 2);
    const char *path = tmp_path("ck.h5");
    CU_ASSERT_EQUAL_FATAL(mr_index_save(&ix, path, &e), MR_OK);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t ds = H5Dopen2(f, "ids/offsets", H5P_DEFAULT);
    hid_t a = H5Aopen(ds, "checksum", H5P_DEFAULT);
    uint64_t got = 0;
    H5Aread(a, H5T_NATIVE_UINT64, &got);
    H5Aclose(a);
    H5Dclose(ds);
    H5Fclose(f);
    /* offsets of "0".."4" are 0..5; FNV-1a of each 8-byte little-endian value */
    uint64_t want = 0;
    for (int64_t i = 0; i <= 5; i++) {
        uint64_t h = 0xcbf29ce484222325ULL;
        for (int byte = 0; byte < 8; byte++) {
            h ^= (uint64_t)((uint64_t)i >> (8 * byte)) & 0xff;
            h *= 0x100000001b3ULL;
        }
        want += mr_mix((uint64_t)i, h);
    }
    CU_ASSERT_EQUAL(got, want);
    mr_index_free(&ix);
}

/* ---- MovieLens 100K (via tests/e2e/index_ml100k.sh) ------------------------------- */

/* A .npy v1/v2 float32 C-order 2-D array; NULL on anything else. */
static float *read_npy(const char *path, int64_t *rows, int *cols)
{
    size_t n = 0;
    unsigned char *b = read_all(path, &n);
    if (!b || n < 12 || memcmp(b, "\x93NUMPY", 6) != 0) {
        free(b);
        return NULL;
    }
    size_t hl = b[6] == 1 ? (size_t)(b[8] | b[9] << 8) : (size_t)(b[8] | b[9] << 8 | b[10] << 16);
    size_t start = b[6] == 1 ? 10 : 12;
    if (start + hl > n) {
        free(b);
        return NULL;
    }
    char *h = strndup((const char *)b + start, hl);
    long long r = 0, c = 0;
    char *sh = strstr(h, "'shape': (");
    int ok = strstr(h, "'descr': '<f4'") && strstr(h, "'fortran_order': False") && sh &&
             sscanf(sh, "'shape': (%lld, %lld)", &r, &c) == 2;
    free(h);
    if (!ok || (size_t)(r * c) * 4 + start + hl > n) {
        free(b);
        return NULL;
    }
    float *x = malloc((size_t)(r * c) * 4);
    memcpy(x, b + start + hl, (size_t)(r * c) * 4);
    free(b);
    *rows = r;
    *cols = (int)c;
    return x;
}

/* Item embeddings trained by `mpirec train` on MovieLens 100K (index_ml100k.sh),
 * queries the user embeddings of the same model: even users are the build sample,
 * odd users held out. Default ivf settings (float and quantized) reach recall@10
 * >= 0.95 on the sample and on the held-out users. */
static void test_ml100k_recall(void)
{
    int64_t nu = 0, ni = 0;
    int du = 0, di = 0;
    float *U = read_npy(getenv("MPIREC_INDEX_USERS"), &nu, &du);
    float *Itm = read_npy(getenv("MPIREC_INDEX_ITEMS"), &ni, &di);
    CU_ASSERT_FATAL(U != NULL && Itm != NULL && du == di && nu > 100 && ni > 1000);
    int d = du;
    int64_t ns = (nu + 1) / 2, nh = nu / 2;
    float *S = malloc((size_t)(ns * d) * 4), *H = malloc((size_t)(nh * d) * 4);
    for (int64_t u = 0; u < nu; u++)
        memcpy((u % 2 ? H + (u / 2) * d : S + (u / 2) * d), U + u * d, (size_t)d * 4);
    int k = 10;
    int64_t *rit = malloc((size_t)(nh * k) * 8), *it = malloc((size_t)(nh * k) * 8);
    double *rsc = malloc((size_t)(nh * k) * 8);
    float *sc = malloc((size_t)(nh * k) * 4);
    naive_topk(Itm, ni, d, H, nh, k, NULL, rit, rsc);
    for (int quant = 0; quant <= 1; quant++) {
        MrIndexParams p = params(MR_INDEX_IVF);
        p.quantize = quant;
        MrIndex ix;
        MrErr e;
        CU_ASSERT_EQUAL_FATAL(mr_index_build(&ix, &p, Itm, ni, d, NULL, NULL, S, ns, k, &e), MR_OK);
        CU_ASSERT_EQUAL(mr_index_search(&ix, H, nh, k, 0, NULL, it, sc, &e), MR_OK);
        double rec = recall_vs(rit, k, it, k, nh, k);
        fprintf(stderr,
                "  ml100k quantize=%d: %lld items, nlist %lld, nprobe %lld, build recall "
                "%.4f, held-out recall %.4f (%lld users), qps %.0f vs exact %.0f\n",
                quant, (long long)ni, (long long)ix.nlist, (long long)ix.stats.nprobe,
                ix.stats.recall, rec, (long long)nh, ix.stats.qps, ix.stats.qps_exact);
        CU_ASSERT(ix.stats.recall >= 0.95);
        CU_ASSERT(rec >= 0.95);
        mr_index_free(&ix);
    }
    free(U);
    free(Itm);
    free(S);
    free(H);
    free(rit);
    free(it);
    free(rsc);
    free(sc);
}

int add_suite_index(void)
{
    CU_pSuite s = CU_add_suite("index", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "exact_ties", test_exact_ties);
    CU_add_test(s, "exact_float", test_exact_float);
    CU_add_test(s, "exact_k_clamp", test_exact_k_clamp);
    CU_add_test(s, "exact_exclusions", test_exact_exclusions);
    CU_add_test(s, "threads_deterministic", test_threads_deterministic);
    CU_add_test(s, "ivf_all_lists_exact", test_ivf_all_lists_exact);
    CU_add_test(s, "ivf_probe_rule", test_ivf_probe_rule);
    CU_add_test(s, "ivf_batch_equals_single", test_ivf_batch_equals_single);
    CU_add_test(s, "ivf_planted", test_ivf_planted);
    CU_add_test(s, "ivf_quantized_codes", test_ivf_quantized_codes);
    CU_add_test(s, "find_item", test_find_item);
    CU_add_test(s, "build_errors", test_build_errors);
    CU_add_test(s, "file_roundtrip", test_file_roundtrip);
    CU_add_test(s, "file_damaged", test_file_damaged);
    CU_add_test(s, "file_identity", test_file_identity);
    CU_add_test(s, "file_string_attrs", test_file_string_attrs);
    CU_add_test(s, "file_checksums", test_file_checksums);
    if (getenv("MPIREC_INDEX_USERS") && getenv("MPIREC_INDEX_ITEMS"))
        CU_add_test(s, "ml100k_recall", test_ml100k_recall);
    return 0;
}
