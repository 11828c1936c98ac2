/* ix_ivf.c — the inverted-file (IVF) index for maximum inner product search:
 * k-means partitions, probing, optional 8-bit codes with exact rescoring.
 *
 * MIPS is reduced to L2 nearest-neighbour search (docs/index.md has the argument):
 * with M = max |x|, item x becomes x' = [x, sqrt(M^2 - |x|^2)] (every x' has norm
 * M) and query q becomes q' = [M q/|q|, 0], so |q' - x'|^2 = 2 M^2 - 2 M (q.x)/|q|
 * and the L2 order of the items is exactly their inner-product order. The
 * partitions are plain L2 k-means cells of the x', and a query probes the cells
 * whose centroids c' are nearest to q', i.e. the largest
 *     (M/|q|) q.c~ - |c'|^2/2          (c~ = the first D coordinates of c')
 * — one dot product per centroid plus a per-list bias. A norm-heavy item lands
 * in a cell of high-norm centroids that large-q.c queries probe first, which is
 * what a cosine (direction-only) partition gets wrong.
 *
 * k-means: a training sample of at most TRAIN_PER_LIST points per list, k-means++
 * seeding (D^2 sampling) on at most INIT_PER_LIST points per list, then Lloyd
 * iterations whose assignment step is an sgemm; empty cells take the training
 * point farthest from its centroid. Every random choice is a counter-based hash
 * of (seed, tag, counter) (include/mpirec/hash.h), so builds are reproducible.
 *
 * Search: each thread takes a share of a block of queries, scores every query's
 * centroids with the 16-lane kernel below (so a query's probe scores do not depend
 * on the other queries in the batch), picks its nprobe lists (select_top), then scans
 * list-major: each 16-item block of a list is loaded once and scored for every
 * query of the share that probes that list. Per query the scan would be bound by
 * memory (each list block used once); list-major it runs from cache. Lists are
 * stored in blocks of 16 items laid out dimension-major, so the 16 lanes of a
 * vector register each accumulate one item's dot product in the fixed order
 * t = 0 .. D-1 (no reassociation, identical to ix_dot's scalar order).
 * Quantized: codes of the residual x - c~ with a per-dimension affine scale; the
 * approximate score is q.c~ + q.offset + sum_t (q_t scale_t) code_t (q.c~ is the
 * centroid dot product of probing), the best `rescore` are rescored with the float
 * rows.
 *
 * Not done: no product quantization, no anisotropic (ScaNN) loss, no spherical
 * variant, no multi-assignment of items to several lists.
 */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "index/ix_internal.h"
#include "index/ix_sq8.h"
#include "mpirec/hash.h"

/* 256 training points per list is FAISS's default (max_points_per_centroid). It
 * was 64 until 2026-11-24: on the benchmark data (log-normal item norms) the
 * smaller sample left out a third of the few large-norm items that inner-product
 * queries are after, and recall@10 = 0.95 needed nprobe 222 of 1549 lists at
 * 150K items (151 with every item trained on) and 422 of 4000 at 1M (148). The
 * cost is build time: 1M x 32 builds in 96 s instead of 29 s on one core. */
#define TRAIN_PER_LIST 256
#define INIT_PER_LIST  16
#define TAG_TRAIN      0x6976667472ULL /* "ivftr": training sample */
#define TAG_INIT       0x697666696eULL /* "ivfin": k-means++ */

/* A hash-driven uniform integer in [0, m) (m < 2^32 here, bias < 2^-32). */
static int64_t rand_below(uint64_t base, uint64_t ctr, int64_t m)
{
    return (int64_t)((mr_mix(base, ctr) >> 32) * (uint64_t)m >> 32);
}

/* First `take` entries of a hash-driven Fisher-Yates shuffle of 0 .. m-1. */
static int64_t *sample_indices(int64_t m, int64_t take, uint64_t base)
{
    int64_t *p = malloc((size_t)m * sizeof *p);
    if (!p)
        return NULL;
    for (int64_t i = 0; i < m; i++)
        p[i] = i;
    for (int64_t i = 0; i < take && i < m - 1; i++) {
        int64_t j = i + rand_below(base, (uint64_t)i, m - i);
        int64_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    return p;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* x' = [x, sqrt(M^2 - |x|^2)] into out[D+1]. */
static void augment(const float *x, int d, double M2, float *out)
{
    double s = 0;
    for (int t = 0; t < d; t++) {
        out[t] = x[t];
        s += (double)x[t] * x[t];
    }
    out[d] = (float)sqrt(M2 - s > 0 ? M2 - s : 0);
}

/* ---- assignment (shared by Lloyd and the final pass) ----------------------------- */

typedef struct AssignCtx {
    const float *X;   /* [m x Da] augmented points, or NULL: augment emb on the fly */
    const float *emb; /* [m x D] */
    int d;
    double M2;
    int64_t m, pb, L;
    const float *C;  /* [L x Da] */
    const float *cn; /* [L] |c|^2 */
    float **S;       /* [threads] -> [pb x L] dots */
    float **Xb;      /* [threads] -> [pb x Da] augmented block (X == NULL) */
    int64_t *a;      /* [m] nearest centroid */
    float *dist;     /* [m] |c|^2 - 2 x.c of it (|x'|^2 = M^2 left out) */
} AssignCtx;

/* min over j of cn[j] - 2 s[j], and the first j reaching it. 2 s is exact, so
 * cn - 2 s is one rounding whether computed fused (SIMD) or not (scalar); and the
 * minimum of a set does not depend on the order it is taken in: the SIMD pass
 * and the first-match pass agree exactly with a plain scalar loop (ties: lower j). */
static int64_t argmin_dist(const float *cn, const float *s, int64_t L, float *best)
{
    int64_t j = 0;
    float m = INFINITY;
#if defined(__AVX512F__)
    __m512 vm = _mm512_set1_ps(INFINITY), two = _mm512_set1_ps(2.0f);
    for (; j + 16 <= L; j += 16)
        vm = _mm512_min_ps(vm,
                           _mm512_fnmadd_ps(two, _mm512_loadu_ps(s + j), _mm512_loadu_ps(cn + j)));
    m = _mm512_reduce_min_ps(vm);
#endif
    for (; j < L; j++) {
        float v = cn[j] - 2.0f * s[j];
        m = v < m ? v : m;
    }
    *best = m;
    for (j = 0; j < L; j++)
        if (cn[j] - 2.0f * s[j] == m)
            return j;
    return 0;
}

/* Thread tid takes blocks tid, tid + nth, ... of a fixed grid of pb points, each
 * one sgemm (OpenBLAS single-threaded here) + argmin: the same call shapes for
 * any thread count, hence the same assignment. */
static void assign_blocks(void *arg, int tid, int nth)
{
    AssignCtx *c = arg;
    int Da = c->d + 1;
    for (int64_t p0 = (int64_t)tid * c->pb; p0 < c->m; p0 += (int64_t)nth * c->pb) {
        int64_t nb = c->m - p0 < c->pb ? c->m - p0 : c->pb;
        const float *A = c->X ? c->X + p0 * Da : c->Xb[tid];
        if (!c->X)
            for (int64_t r = 0; r < nb; r++)
                augment(c->emb + (p0 + r) * c->d, c->d, c->M2, c->Xb[tid] + r * Da);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)c->L, Da, 1.0f, A, Da,
                    c->C, Da, 0.0f, c->S[tid], (int)c->L);
        for (int64_t r = 0; r < nb; r++)
            c->a[p0 + r] = argmin_dist(c->cn, c->S[tid] + r * c->L, c->L, &c->dist[p0 + r]);
    }
}

/* Assign m augmented points (rows of X [m x Da], or, when X is NULL, the items
 * emb[0 .. m) augmented on the fly) to the nearest of L centroids C [L x Da]. */
static int assign_all(const float *X, const float *emb, int d, double M2, int64_t m, const float *C,
                      int64_t L, int64_t *a, float *dist, IxTeam *team, MrErr *e)
{
    int Da = d + 1, nth = team->n, rc = MR_OK;
    int64_t pb = (1 << 20) / L;
    pb = pb < 16 ? 16 : pb > 4096 ? 4096 : pb;
    float *S[IX_MAX_THREADS] = {0}, *Xb[IX_MAX_THREADS] = {0}; /* team.n <= IX_MAX_THREADS */
    float *cn = malloc((size_t)L * sizeof *cn);
    for (int t = 0; t < nth; t++) {
        S[t] = malloc((size_t)(pb * L) * sizeof *S[t]);
        Xb[t] = X ? NULL : malloc((size_t)(pb * Da) * sizeof *Xb[t]);
        if (!S[t] || (!X && !Xb[t]))
            rc = MR_ENOMEM;
    }
    if (!cn || rc) {
        rc = mr_err_set(e, MR_ENOMEM, "ivf build: no memory for the assignment buffers");
        goto out;
    }
    for (int64_t j = 0; j < L; j++) {
        double s = 0;
        for (int t = 0; t < Da; t++)
            s += (double)C[j * Da + t] * C[j * Da + t];
        cn[j] = (float)s;
    }
    AssignCtx c = {X, emb, d, M2, m, pb, L, C, cn, S, Xb, a, dist};
    int prev = ix_blas_single_begin(team->n);
    ix_team_run(team, assign_blocks, &c);
    ix_blas_single_end(team->n, prev);
out:
    for (int t = 0; t < nth; t++) {
        free(S[t]);
        free(Xb[t]);
    }
    free(cn);
    return rc;
}

/* ---- k-means ------------------------------------------------------------------- */

/* k-means++ seeding on the ni points P [ni x Da] (row-major): C [L x Da]. */
static int kmeanspp(const float *P, int64_t ni, int Da, int64_t L, uint64_t seed, float *C,
                    MrErr *e)
{
    /* Dimension-major copy so the distance update vectorises over points. */
    float *PT = malloc((size_t)(ni * Da) * sizeof *PT);
    float *d2 = malloc((size_t)ni * sizeof *d2);
    float *tmp = malloc((size_t)ni * sizeof *tmp);
    if (!PT || !d2 || !tmp) {
        free(PT);
        free(d2);
        free(tmp);
        return mr_err_set(e, MR_ENOMEM, "ivf build: no memory for k-means++ (%lld points)",
                          (long long)ni);
    }
    for (int64_t i = 0; i < ni; i++)
        for (int t = 0; t < Da; t++)
            PT[(int64_t)t * ni + i] = P[i * Da + t];
    uint64_t base = mr_mix(seed, TAG_INIT);
    int64_t first = rand_below(base, 0, ni);
    for (int64_t i = 0; i < ni; i++)
        d2[i] = INFINITY;
    int64_t pick = first;
    for (int64_t c = 0; c < L; c++) {
        memcpy(C + c * Da, P + pick * Da, (size_t)Da * sizeof *C);
        if (c == L - 1)
            break;
        /* d2[i] = min(d2[i], |P_i - C_c|^2) */
        memset(tmp, 0, (size_t)ni * sizeof *tmp);
        for (int t = 0; t < Da; t++) {
            const float *row = PT + (int64_t)t * ni;
            float ct = C[c * Da + t];
            for (int64_t i = 0; i < ni; i++) {
                float df = row[i] - ct;
                tmp[i] += df * df;
            }
        }
        double total = 0;
        for (int64_t i = 0; i < ni; i++) {
            if (tmp[i] < d2[i])
                d2[i] = tmp[i];
            total += d2[i];
        }
        /* D^2 sampling; when every point coincides with a centre (duplicates),
         * fall back to a uniform pick — the empty-cell repair handles the rest. */
        double u = mr_hash_unit(mr_mix(base, (uint64_t)c + 1)) * total;
        if (total > 0) {
            double acc = 0;
            pick = ni - 1;
            for (int64_t i = 0; i < ni; i++) {
                acc += d2[i];
                if (acc > u && d2[i] > 0) {
                    pick = i;
                    break;
                }
            }
        } else {
            pick = rand_below(base, (uint64_t)c + 1, ni);
        }
    }
    free(PT);
    free(d2);
    free(tmp);
    return MR_OK;
}

/* Lloyd iterations on the nt training points X [nt x Da]; C in/out. */
static int lloyd(const float *X, int64_t nt, int d, float *C, int64_t L, int iters, IxTeam *team,
                 MrErr *e)
{
    int Da = d + 1;
    int64_t *a = malloc((size_t)nt * sizeof *a);
    int64_t *prev = malloc((size_t)nt * sizeof *prev);
    float *dist = malloc((size_t)nt * sizeof *dist);
    double *sum = malloc((size_t)(L * Da) * sizeof *sum);
    int64_t *cnt = malloc((size_t)L * sizeof *cnt);
    int64_t *far = malloc((size_t)nt * sizeof *far);
    int rc = MR_OK;
    if (!a || !prev || !dist || !sum || !cnt || !far) {
        rc = mr_err_set(e, MR_ENOMEM, "ivf build: no memory for k-means (%lld points)",
                        (long long)nt);
        goto out;
    }
    for (int it = 0; it < iters; it++) {
        rc = assign_all(X, NULL, d, 0, nt, C, L, a, dist, team, e);
        if (rc)
            goto out;
        if (it > 0 && memcmp(a, prev, (size_t)nt * sizeof *a) == 0)
            break; /* converged: the centroids would not move */
        memcpy(prev, a, (size_t)nt * sizeof *a);
        memset(sum, 0, (size_t)(L * Da) * sizeof *sum);
        memset(cnt, 0, (size_t)L * sizeof *cnt);
        for (int64_t i = 0; i < nt; i++) {
            cnt[a[i]]++;
            for (int t = 0; t < Da; t++)
                sum[a[i] * Da + t] += X[i * Da + t];
        }
        int64_t nempty = 0;
        for (int64_t j = 0; j < L; j++) {
            if (cnt[j] == 0) {
                nempty++;
                continue;
            }
            for (int t = 0; t < Da; t++)
                C[j * Da + t] = (float)(sum[j * Da + t] / (double)cnt[j]);
        }
        if (nempty) {
            /* Empty cells restart at the points worst served by their centroid
             * (largest |x' - c'|^2 = M^2 + dist): order points by dist, descending,
             * ties by index, and hand them out. */
            for (int64_t i = 0; i < nt; i++)
                far[i] = i;
            /* partial selection of the nempty farthest: simple repeated scan */
            int64_t used = 0;
            for (int64_t j = 0; j < L && used < nempty; j++) {
                if (cnt[j] != 0)
                    continue;
                int64_t best = -1;
                for (int64_t i = 0; i < nt; i++)
                    if (far[i] >= 0 && (best < 0 || dist[i] > dist[best]))
                        best = i;
                if (best < 0)
                    break;
                far[best] = -1;
                memcpy(C + j * Da, X + best * Da, (size_t)Da * sizeof *C);
                used++;
            }
        }
    }
out:
    free(a);
    free(prev);
    free(dist);
    free(sum);
    free(cnt);
    free(far);
    return rc;
}

/* ---- build ------------------------------------------------------------------------ */

int ix_ivf_train(MrIndex *ix, MrErr *e)
{
    int64_t n = ix->n;
    int d = ix->d, Da = d + 1;
    int64_t L = ix->p.nlist > 0 ? ix->p.nlist : (int64_t)llround(4.0 * sqrt((double)n));
    if (L < 1)
        L = 1;
    if (L > n)
        L = n;
    ix->nlist = L;

    double M2 = 0;
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int t = 0; t < d; t++)
            s += (double)ix->emb[i * d + t] * ix->emb[i * d + t];
        if (s > M2)
            M2 = s;
    }
    ix->aug_norm = (float)sqrt(M2);
    /* The float radius, squared, is what the on-the-fly augmentation uses: a
     * loaded index recomputes nothing from it except probe scaling. */
    M2 = (double)ix->aug_norm * ix->aug_norm;

    int64_t nt = TRAIN_PER_LIST * L < n ? TRAIN_PER_LIST * L : n;
    int64_t ni = INIT_PER_LIST * L < nt ? INIT_PER_LIST * L : nt;
    int rc = MR_OK;
    IxTeam team;
    ix_team_start(&team, ix_threads());
    int64_t *sel = NULL, *sel2 = NULL, *a = NULL, *cnt = NULL;
    float *X = NULL, *P = NULL, *C = NULL, *dist = NULL;

    sel = sample_indices(n, nt, mr_mix(ix->p.seed, TAG_TRAIN));
    X = malloc((size_t)(nt * Da) * sizeof *X);
    P = malloc((size_t)(ni * Da) * sizeof *P);
    C = malloc((size_t)(L * Da) * sizeof *C);
    if (!sel || !X || !P || !C) {
        rc = mr_err_set(e, MR_ENOMEM, "ivf build: no memory for k-means on %lld x %d",
                        (long long)nt, Da);
        goto out;
    }
    /* Sorted sample: the rows of X follow memory order of emb. */
    qsort(sel, (size_t)nt, sizeof *sel, cmp_i64);
    for (int64_t i = 0; i < nt; i++)
        augment(ix->emb + sel[i] * d, d, M2, X + i * Da);
    sel2 = sample_indices(nt, ni, mr_mix(ix->p.seed, TAG_INIT + 1));
    if (!sel2) {
        rc = mr_err_set(e, MR_ENOMEM, "ivf build: no memory for the k-means++ sample");
        goto out;
    }
    for (int64_t i = 0; i < ni; i++)
        memcpy(P + i * Da, X + sel2[i] * Da, (size_t)Da * sizeof *P);
    rc = kmeanspp(P, ni, Da, L, ix->p.seed, C, e);
    if (rc)
        goto out;
    rc = lloyd(X, nt, d, C, L, ix->p.kmeans_iters > 0 ? ix->p.kmeans_iters : 20, &team, e);
    if (rc)
        goto out;

    /* Final assignment of every item, then the lists (stable: increasing items). */
    a = malloc((size_t)n * sizeof *a);
    dist = malloc((size_t)n * sizeof *dist);
    cnt = calloc((size_t)L + 1, sizeof *cnt);
    ix->centroids = malloc((size_t)(L * d) * sizeof *ix->centroids);
    ix->probe_bias = malloc((size_t)L * sizeof *ix->probe_bias);
    ix->list_off = malloc((size_t)(L + 1) * sizeof *ix->list_off);
    ix->list_items = malloc((size_t)n * sizeof *ix->list_items);
    if (!a || !dist || !cnt || !ix->centroids || !ix->probe_bias || !ix->list_off ||
        !ix->list_items) {
        rc = mr_err_set(e, MR_ENOMEM, "ivf build: no memory for %lld lists", (long long)L);
        goto out;
    }
    rc = assign_all(NULL, ix->emb, d, M2, n, C, L, a, dist, &team, e);
    if (rc)
        goto out;
    for (int64_t i = 0; i < n; i++)
        cnt[a[i] + 1]++;
    ix->list_off[0] = 0;
    for (int64_t j = 0; j < L; j++)
        ix->list_off[j + 1] = ix->list_off[j] + cnt[j + 1];
    for (int64_t j = 0; j < L; j++)
        cnt[j] = ix->list_off[j];
    for (int64_t i = 0; i < n; i++)
        ix->list_items[cnt[a[i]]++] = i;
    for (int64_t j = 0; j < L; j++) {
        double s = 0;
        for (int t = 0; t < Da; t++)
            s += (double)C[j * Da + t] * C[j * Da + t];
        ix->probe_bias[j] = (float)(-0.5 * s);
        memcpy(ix->centroids + j * d, C + j * Da, (size_t)d * sizeof *C);
    }

    if (ix->p.quantize) {
        /* Per-dimension affine range of the residuals x - c~ over all items. */
        uint8_t *codes = malloc((size_t)(n * d));
        float *lo = malloc((size_t)d * sizeof *lo), *hi = malloc((size_t)d * sizeof *hi);
        ix->code_scale = malloc((size_t)d * sizeof *ix->code_scale);
        ix->code_offset = malloc((size_t)d * sizeof *ix->code_offset);
        if (!codes || !lo || !hi || !ix->code_scale || !ix->code_offset) {
            free(codes);
            free(lo);
            free(hi);
            rc = mr_err_set(e, MR_ENOMEM, "ivf build: no memory for %lld x %d codes", (long long)n,
                            d);
            goto out;
        }
        for (int t = 0; t < d; t++) {
            lo[t] = INFINITY;
            hi[t] = -INFINITY;
        }
        for (int64_t j = 0; j < L; j++)
            for (int64_t p = ix->list_off[j]; p < ix->list_off[j + 1]; p++)
                for (int t = 0; t < d; t++) {
                    float r = ix->emb[ix->list_items[p] * d + t] - ix->centroids[j * d + t];
                    lo[t] = r < lo[t] ? r : lo[t];
                    hi[t] = r > hi[t] ? r : hi[t];
                }
        for (int t = 0; t < d; t++) {
            ix->code_offset[t] = lo[t];
            ix->code_scale[t] = (hi[t] - lo[t]) / 255.0f;
        }
        for (int64_t j = 0; j < L; j++)
            for (int64_t p = ix->list_off[j]; p < ix->list_off[j + 1]; p++)
                for (int t = 0; t < d; t++) {
                    float r = ix->emb[ix->list_items[p] * d + t] - ix->centroids[j * d + t];
                    float s = ix->code_scale[t];
                    long v = s > 0 ? lrintf((r - ix->code_offset[t]) / s) : 0;
                    codes[p * d + t] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
        free(lo);
        free(hi);
        rc = ix_ivf_layout(ix, codes, e);
        free(codes);
    } else {
        rc = ix_ivf_layout(ix, NULL, e);
    }
out:
    ix_team_stop(&team);
    free(sel);
    free(sel2);
    free(X);
    free(P);
    free(C);
    free(a);
    free(dist);
    free(cnt);
    return rc;
}

typedef struct ListKey {
    double key;
    int64_t list;
} ListKey;

/* Decreasing key, ties: lower list first. */
static int cmp_list_key(const void *a, const void *b)
{
    const ListKey *x = a, *y = b;
    if (x->key != y->key)
        return x->key > y->key ? -1 : 1;
    return (x->list > y->list) - (x->list < y->list);
}

/* The order the search scans lists in: largest item norm first. Only the speed
 * depends on it (a query's candidates are kept in (score, item) order, whatever
 * the order they arrive in): the items of large norm win most inner products, so
 * when their lists come first each query's candidate threshold rises early and
 * fewer of the items scanned later reach it (each one that does costs a heap
 * insertion and, usually, a mispredicted branch). */
static int list_scan_order(MrIndex *ix, MrErr *e)
{
    int64_t L = ix->nlist;
    int d = ix->d;
    ListKey *k = malloc((size_t)(L ? L : 1) * sizeof *k);
    ix->scan_order = malloc((size_t)(L ? L : 1) * sizeof *ix->scan_order);
    if (!k || !ix->scan_order) {
        free(k);
        return mr_err_set(e, MR_ENOMEM, "ivf: no memory for the scan order");
    }
    for (int64_t j = 0; j < L; j++) {
        double mx = 0;
        for (int64_t p = ix->list_off[j]; p < ix->list_off[j + 1]; p++) {
            const float *x = ix->emb + ix->list_items[p] * d;
            double s = 0;
            for (int t = 0; t < d; t++)
                s += (double)x[t] * x[t];
            mx = s > mx ? s : mx;
        }
        k[j] = (ListKey){mx, j};
    }
    qsort(k, (size_t)L, sizeof *k, cmp_list_key);
    for (int64_t j = 0; j < L; j++)
        ix->scan_order[j] = k[j].list;
    free(k);
    return MR_OK;
}

int ix_ivf_layout(MrIndex *ix, const uint8_t *codes_flat, MrErr *e)
{
    int64_t L = ix->nlist;
    int d = ix->d;
    ix->list_blk = malloc((size_t)(L + 1) * sizeof *ix->list_blk);
    int64_t cb = (L + IX_LANES - 1) / IX_LANES;
    ix->cent_blk = calloc((size_t)(cb * d * IX_LANES), sizeof *ix->cent_blk);
    if (!ix->list_blk || !ix->cent_blk)
        return mr_err_set(e, MR_ENOMEM, "ivf: no memory for the list layout");
    for (int64_t j = 0; j < L; j++)
        for (int t = 0; t < d; t++)
            ix->cent_blk[((j / IX_LANES) * d + t) * IX_LANES + j % IX_LANES] =
                ix->centroids[j * d + t];
    ix->list_blk[0] = 0;
    for (int64_t j = 0; j < L; j++) {
        int64_t sz = ix->list_off[j + 1] - ix->list_off[j];
        ix->list_blk[j + 1] = ix->list_blk[j] + (sz + IX_LANES - 1) / IX_LANES;
    }
    ix->nblk = ix->list_blk[L];
    size_t cells = (size_t)ix->nblk * (size_t)d * IX_LANES;
    if (ix->p.quantize) {
        size_t bytes = (size_t)ix->nblk * ix_sq8_block_bytes(d);
        ix->codes = calloc(bytes ? bytes : 1, 1);
        ix->code_mean = malloc((size_t)d * sizeof *ix->code_mean);
        if (!ix->codes || !ix->code_mean)
            return mr_err_set(e, MR_ENOMEM, "ivf: no memory for %zu codes", bytes);
        /* mean code per dimension (the kernel's correction of the query rounding) */
        for (int t = 0; t < d; t++) {
            double s = 0;
            for (int64_t p = 0; p < ix->n; p++)
                s += codes_flat[p * d + t];
            ix->code_mean[t] = ix->n > 0 ? (float)(s / (double)ix->n) : 0.0f;
        }
    } else {
        ix->list_emb = calloc(cells ? cells : 1, sizeof *ix->list_emb);
        if (!ix->list_emb)
            return mr_err_set(e, MR_ENOMEM, "ivf: no memory for %zu list floats", cells);
    }
    for (int64_t j = 0; j < L; j++)
        for (int64_t p = ix->list_off[j]; p < ix->list_off[j + 1]; p++) {
            int64_t r = p - ix->list_off[j];
            size_t b = (size_t)(ix->list_blk[j] + r / IX_LANES);
            int lane = (int)(r % IX_LANES);
            for (int t = 0; t < d; t++) {
                if (ix->p.quantize)
                    ix->codes[ix_sq8_at(d, (int64_t)b, t, lane)] = codes_flat[p * d + t];
                else
                    ix->list_emb[(b * (size_t)d + (size_t)t) * IX_LANES + (size_t)lane] =
                        ix->emb[ix->list_items[p] * d + t];
            }
        }
    return list_scan_order(ix, e);
}

uint8_t *ix_ivf_codes_flat(const MrIndex *ix)
{
    int d = ix->d;
    size_t cells = (size_t)ix->n * (size_t)d;
    uint8_t *out = malloc(cells ? cells : 1);
    if (!out)
        return NULL;
    for (int64_t j = 0; j < ix->nlist; j++)
        for (int64_t p = ix->list_off[j]; p < ix->list_off[j + 1]; p++) {
            int64_t r = p - ix->list_off[j];
            size_t b = (size_t)(ix->list_blk[j] + r / IX_LANES);
            int lane = (int)(r % IX_LANES);
            for (int t = 0; t < d; t++)
                out[p * d + t] = ix->codes[ix_sq8_at(d, (int64_t)b, t, lane)];
        }
    return out;
}

/* ---- search ------------------------------------------------------------------------ */

/* 16 items' dot products with q, block layout [D][16]. Every lane is one fused
 * multiply-add chain over t = 0 .. D-1, the same operations as ix_dot. */
static inline void kern_f32(const float *q, const float *blk, int d, float *out)
{
#if defined(__AVX512F__)
    __m512 acc = _mm512_setzero_ps();
    for (int t = 0; t < d; t++)
        acc =
            _mm512_fmadd_ps(_mm512_set1_ps(q[t]), _mm512_loadu_ps(blk + (size_t)t * IX_LANES), acc);
    _mm512_storeu_ps(out, acc);
#elif defined(__AVX2__) && defined(__FMA__)
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (int t = 0; t < d; t++) {
        __m256 qt = _mm256_set1_ps(q[t]);
        a0 = _mm256_fmadd_ps(qt, _mm256_loadu_ps(blk + (size_t)t * IX_LANES), a0);
        a1 = _mm256_fmadd_ps(qt, _mm256_loadu_ps(blk + (size_t)t * IX_LANES + 8), a1);
    }
    _mm256_storeu_ps(out, a0);
    _mm256_storeu_ps(out + 8, a1);
#else
    float acc[IX_LANES];
    for (int l = 0; l < IX_LANES; l++)
        acc[l] = 0.0f;
    for (int t = 0; t < d; t++)
        for (int l = 0; l < IX_LANES; l++)
            acc[l] = IX_MADD(q[t], blk[(size_t)t * IX_LANES + l], acc[l]);
    for (int l = 0; l < IX_LANES; l++)
        out[l] = acc[l];
#endif
}

/* Four queries against one block: the block's rows are loaded once for all four
 * and the four accumulator chains are independent (the single-query kernel is a
 * chain of D dependent fused multiply-adds, latency-bound). Each lane still sums
 * its products in the order t = 0 .. D-1: results equal kern_f32's bit for bit. */
static inline void kern_f32_x4(const float *const q[4], const float *blk, int d,
                               float out[4][IX_LANES])
{
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int t = 0; t < d; t++) {
        __m512 x = _mm512_loadu_ps(blk + (size_t)t * IX_LANES);
        a0 = _mm512_fmadd_ps(_mm512_set1_ps(q[0][t]), x, a0);
        a1 = _mm512_fmadd_ps(_mm512_set1_ps(q[1][t]), x, a1);
        a2 = _mm512_fmadd_ps(_mm512_set1_ps(q[2][t]), x, a2);
        a3 = _mm512_fmadd_ps(_mm512_set1_ps(q[3][t]), x, a3);
    }
    _mm512_storeu_ps(out[0], a0);
    _mm512_storeu_ps(out[1], a1);
    _mm512_storeu_ps(out[2], a2);
    _mm512_storeu_ps(out[3], a3);
#else
    for (int i = 0; i < 4; i++)
        kern_f32(q[i], blk, d, out[i]);
#endif
}

/* One query against four consecutive blocks (independent chains, as above). */
static inline void kern_f32_4blk(const float *q, const float *blk, int d, float *out)
{
#if defined(__AVX512F__)
    const size_t bs = (size_t)d * IX_LANES;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int t = 0; t < d; t++) {
        __m512 qt = _mm512_set1_ps(q[t]);
        const float *r = blk + (size_t)t * IX_LANES;
        a0 = _mm512_fmadd_ps(qt, _mm512_loadu_ps(r), a0);
        a1 = _mm512_fmadd_ps(qt, _mm512_loadu_ps(r + bs), a1);
        a2 = _mm512_fmadd_ps(qt, _mm512_loadu_ps(r + 2 * bs), a2);
        a3 = _mm512_fmadd_ps(qt, _mm512_loadu_ps(r + 3 * bs), a3);
    }
    _mm512_storeu_ps(out, a0);
    _mm512_storeu_ps(out + IX_LANES, a1);
    _mm512_storeu_ps(out + 2 * IX_LANES, a2);
    _mm512_storeu_ps(out + 3 * IX_LANES, a3);
#else
    for (int i = 0; i < 4; i++)
        kern_f32(q, blk + (size_t)i * (size_t)d * IX_LANES, d, out + i * IX_LANES);
#endif
}

/* Probe scores ps [L] of query q from its centroid dot products dots. */
static void probe_finish(const MrIndex *ix, const float *q, const float *dots, float *ps)
{
    int d = ix->d;
    int64_t L = ix->nlist;
    double qn = 0;
    for (int t = 0; t < d; t++)
        qn += (double)q[t] * q[t];
    qn = sqrt(qn);
    /* q' = M q / |q|: scaling q does not change the item order, but it fixes the
     * balance between q.c~ and the bias; a zero or non-finite q gets scale 1. */
    float alpha = qn > 0 && isfinite(qn) ? (float)(ix->aug_norm / qn) : 1.0f;
    /* restrict: without it the compiler assumes ps may alias its inputs and keeps
     * the loop scalar (same multiply and add either way: no contraction in C11) */
    const float *restrict dv = dots, *restrict bias = ix->probe_bias;
    float *restrict o = ps;
    for (int64_t j = 0; j < L; j++)
        o[j] = alpha * dv[j] + bias[j];
}

/* Probe score of every list for query q: dots [L rounded up to LANES] gets
 * q . c~ of every centroid (the blocked kernel, so the values do not depend on
 * which other queries are searched with q), ps [L] the probe scores. */
static void probe_scores(const MrIndex *ix, const float *q, float *dots, float *ps)
{
    int d = ix->d;
    int64_t L = ix->nlist;
    int64_t nb = (L + IX_LANES - 1) / IX_LANES, b = 0;
    for (; b + 4 <= nb; b += 4)
        kern_f32_4blk(q, ix->cent_blk + (size_t)b * (size_t)d * IX_LANES, d, dots + b * IX_LANES);
    for (; b < nb; b++)
        kern_f32(q, ix->cent_blk + (size_t)b * (size_t)d * IX_LANES, d, dots + b * IX_LANES);
    probe_finish(ix, q, dots, ps);
}

/* The centroid dot products of four queries at once (dots[u], as probe_scores
 * computes them: every lane is the same chain, so the values are bit-identical to
 * one query at a time). Each centroid block is read once for the four: the
 * centroids (L x D floats, 194 KiB at 150K items) come from L2, whose bandwidth
 * bounded the one-query loop. */
static __attribute__((noinline)) void probe_dots_x4(const MrIndex *ix, const float *const q[4], float *const dots[4])
{
    int d = ix->d;
    int64_t nb = (ix->nlist + IX_LANES - 1) / IX_LANES;
    float out[4][IX_LANES];
    for (int64_t b = 0; b < nb; b++) {
        kern_f32_x4(q, ix->cent_blk + (size_t)b * (size_t)d * IX_LANES, d, out);
        for (int u = 0; u < 4; u++)
            memcpy(dots[u] + b * IX_LANES, out[u], sizeof out[u]);
    }
}

/* Per-thread buffers of the search; qmax = the most queries one thread takes from
 * a block. */
typedef struct IvfScratch {
    float *dots;    /* [4 x (L rounded up to LANES)] q . c~ of four queries */
    float *ps;      /* [L] its probe scores */
    uint32_t *key;  /* [L] bins / sortable keys of the probe scores */
    int64_t *tie;   /* [L + 16] select_top scratch */
    float *ts;      /* [L + 16] */
    int64_t *tout;  /* [L] */
    int64_t *sel;   /* [L + 16] select_top's vector output */
    int32_t *cidx;  /* [L + 16] select_probes' candidates: indices */
    float *cval;    /* [L + 16] and scores */
    float cut, margin; /* select_probes' guess: the last cut-off, and the margin below it */
    int cut_ok;
    int64_t *probe; /* [qmax x nprobe] lists each query probes (list order) */
    float *pdot;    /* [qmax x nprobe] q . c~ of those lists */
    int64_t *nprb;  /* [qmax] how many */
    IxTop *tops;    /* [qmax] candidates (k, or rescore when quantized) */
    float *qthr;    /* [qmax] ix_top_thr of each: the scan reads it for every block and
                     * query, a compact array instead of a walk to each heap's root */
    float *hs;      /* [qmax x cap] */
    int64_t *hi;    /* [qmax x cap] */
    float *fs;      /* [k] final heap of the rescoring */
    int64_t *fi;
    int8_t *qi;    /* [qmax x 4 ceil(D/4)] int8 queries of the kernel (quantized) */
    float *qstep;  /* [qmax] their steps */
    float *qoff;   /* [qmax] q . code_offset + rounding correction (quantized) */
    int64_t *icnt; /* [L + 1] inverted: offsets of each list's queries */
    int32_t *iq;   /* [qmax x nprobe] inverted: queries by list (qmax <= 1024) */
    float *idot;   /* [qmax x nprobe] inverted: their q . c~ */
} IvfScratch;

typedef struct IvfCtx {
    const MrIndex *ix;
    const float *Q; /* this block's queries [qb x D] */
    int64_t q0, qb;
    int64_t nprobe;
    int k;       /* requested (row stride of the outputs) */
    int64_t kk;  /* clamped */
    int64_t cap; /* candidate heap size (kk, or rescore when quantized) */
    const IxExcl *ex;
    int64_t *out_items;
    float *out_scores;
    IvfScratch *scr; /* [threads] */
} IvfCtx;

/* Offer item `it` with score v to query q's candidates, honouring exclusions. */
static inline void offer(IxTop *t, float v, int64_t it, const IxExcl *ex, int64_t q)
{
    if (ix_top_wants(t, v, it) && !ix_excluded(ex, q, it))
        ix_top_push(t, v, it);
}

/* Order-preserving map of a float to 32 bits (larger float -> larger key); NaN
 * maps below everything, like a score that can never be chosen first. */
static inline uint32_t fkey(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if (f != f)
        return 0;
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

/* Indices of the m largest of s[0 .. L) (ties: lower index), in index order, by a
 * most-significant-byte-first radix select on the keys: each pass histograms one
 * byte of the candidates still tied with the threshold, so the cost is a few
 * linear passes instead of the ~m log(L/m) heap operations a heap would need (the
 * heap was half of the ivf search time at nprobe in the hundreds). */
static int64_t radix_select(const float *s, int64_t L, int64_t m, uint32_t *key, int64_t *out)
{
    if (m >= L) {
        for (int64_t j = 0; j < L; j++)
            out[j] = j;
        return L;
    }
    for (int64_t j = 0; j < L; j++)
        key[j] = fkey(s[j]);
    uint32_t prefix = 0, mask = 0;
    int64_t need = m; /* how many still to take among keys matching prefix under mask */
    int shift = 24, exact = 0;
    for (; shift >= 0; shift -= 8) {
        int64_t cnt[256] = {0};
        for (int64_t j = 0; j < L; j++)
            if ((key[j] & mask) == prefix)
                cnt[(key[j] >> shift) & 0xff]++;
        int b = 255;
        while (cnt[b] < need) {
            need -= cnt[b];
            b--;
        }
        prefix |= (uint32_t)b << shift;
        mask |= 0xffu << shift;
        if (cnt[b] == need) { /* the whole bucket is in: no need to split it */
            exact = 1;
            break;
        }
    }
    int64_t n = 0;
    if (exact) {
        /* keys whose bits above `shift` reach the prefix's are exactly the top m */
        for (int64_t j = 0; j < L; j++)
            if ((key[j] >> shift) >= (prefix >> shift))
                out[n++] = j;
        return n;
    }
    /* all 32 bits fixed: key == prefix is the threshold; take `need` of those,
     * lowest indices first */
    for (int64_t j = 0; j < L; j++) {
        if (key[j] > prefix)
            out[n++] = j;
        else if (key[j] == prefix && need > 0) {
            out[n++] = j;
            need--;
        }
    }
    return n;
}

/* Scratch of select_top, [L] each. */
typedef struct SelScr {
    uint32_t *key;
    int64_t *tie; /* [L + 16]: the vector path stores whole registers */
    float *ts;    /* [L + 16] */
    int64_t *tout;
    int64_t *sel; /* [L + 16] */
} SelScr;

/* Indices of the m largest of s[0 .. L) (ties: lower index), as a set. One pass
 * finds the range, one bins every value into 256 equal-width bins (binning is
 * monotone: a larger value never lands in a lower bin), the bin holding the m-th
 * largest is found from the counts, everything above it is taken, and only that
 * bin's few members are ranked exactly (radix_select). Non-finite values, rare
 * (a query with NaN or Inf), go to radix_select directly. */
static __attribute__((noinline)) int64_t select_top(const float *s, int64_t L, int64_t m,
                                                    SelScr *w, int64_t *out)
{
    if (m >= L) {
        for (int64_t j = 0; j < L; j++)
            out[j] = j;
        return L;
    }
    float mn = INFINITY, mx = -INFINITY;
    int finite = 1;
    int64_t j0 = 0;
#if defined(__AVX512F__)
    /* min and max do not depend on the order they are taken in */
    __m512 vmn = _mm512_set1_ps(INFINITY), vmx = _mm512_set1_ps(-INFINITY);
    __mmask16 fin = 0xffff;
    for (; j0 + 16 <= L; j0 += 16) {
        __m512 v = _mm512_loadu_ps(s + j0);
        /* v - v is 0 exactly when v is finite (Inf - Inf and NaN give NaN) */
        fin &= _mm512_cmp_ps_mask(_mm512_sub_ps(v, v), _mm512_setzero_ps(), _CMP_EQ_OQ);
        vmn = _mm512_min_ps(vmn, v);
        vmx = _mm512_max_ps(vmx, v);
    }
    finite = fin == 0xffff;
    mn = _mm512_reduce_min_ps(vmn);
    mx = _mm512_reduce_max_ps(vmx);
#endif
    for (int64_t j = j0; j < L; j++) {
        float v = s[j];
        finite &= v > -INFINITY && v < INFINITY;
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    float scale = 255.0f / (mx - mn);
    if (!finite || !(scale < INFINITY) || !(scale > 0))
        return radix_select(s, L, m, w->key, out);
    /* four histograms, summed after: neighbouring values often share a bin, and
     * one table would chain every increment on the previous one's store */
    int32_t cnt4[4][256];
    memset(cnt4, 0, sizeof cnt4);
    j0 = 0;
#if defined(__AVX512F__)
    /* the same operations as the scalar loop, 16 at a time (truncation of a
     * non-negative value = the C cast) */
    for (; j0 + 16 <= L; j0 += 16) {
        __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(s + j0), _mm512_set1_ps(mn)),
                                 _mm512_set1_ps(scale));
        __m512i b = _mm512_min_epi32(_mm512_cvttps_epi32(v), _mm512_set1_epi32(255));
        _mm512_storeu_si512(w->key + j0, b);
    }
#endif
    for (int64_t j = j0; j < L; j++) {
        int b = (int)((s[j] - mn) * scale);
        b = b > 255 ? 255 : b;
        w->key[j] = (uint32_t)b;
    }
    int64_t j4 = 0;
    for (; j4 + 4 <= L; j4 += 4) {
        cnt4[0][w->key[j4]]++;
        cnt4[1][w->key[j4 + 1]]++;
        cnt4[2][w->key[j4 + 2]]++;
        cnt4[3][w->key[j4 + 3]]++;
    }
    for (; j4 < L; j4++)
        cnt4[0][w->key[j4]]++;
    int b = 255;
    int64_t need = m, cb;
    while ((cb = (int64_t)cnt4[0][b] + cnt4[1][b] + cnt4[2][b] + cnt4[3][b]) < need) {
        need -= cb;
        b--;
    }
    /* branch-free: every index is written, the counters advance on a match (the
     * outcome of these comparisons is unpredictable, about m of L are taken) */
    int64_t n = 0, nt = 0, jc = 0;
    int64_t *sel = out;
#if defined(__AVX512F__)
    /* the same, 16 at a time: compress the indices (as two halves of 8 int64) and
     * the tie scores of the lanes that match. Compressed in registers and stored
     * whole (the buffers have 16 entries of slack): the memory form of
     * vpcompress is microcoded on some CPUs (AMD Zen 4: it was a fifth of the
     * search time at recall 0.95). */
    sel = w->sel;
    __m512i vb = _mm512_set1_epi32(b), lane = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    for (; jc + 16 <= L; jc += 16) {
        __m512i kv = _mm512_loadu_si512(w->key + jc);
        __mmask16 gt = _mm512_cmpgt_epu32_mask(kv, vb), eq = _mm512_cmpeq_epu32_mask(kv, vb);
        __m512i i0 = _mm512_add_epi64(lane, _mm512_set1_epi64(jc)),
                i1 = _mm512_add_epi64(i0, _mm512_set1_epi64(8));
        if (gt) {
            _mm512_storeu_si512(sel + n, _mm512_maskz_compress_epi64((__mmask8)gt, i0));
            n += __builtin_popcount(gt & 0xffu);
            _mm512_storeu_si512(sel + n, _mm512_maskz_compress_epi64((__mmask8)(gt >> 8), i1));
            n += __builtin_popcount(gt >> 8);
        }
        if (eq) {
            _mm512_storeu_ps(w->ts + nt, _mm512_maskz_compress_ps(eq, _mm512_loadu_ps(s + jc)));
            _mm512_storeu_si512(w->tie + nt, _mm512_maskz_compress_epi64((__mmask8)eq, i0));
            nt += __builtin_popcount(eq & 0xffu);
            _mm512_storeu_si512(w->tie + nt, _mm512_maskz_compress_epi64((__mmask8)(eq >> 8), i1));
            nt += __builtin_popcount(eq >> 8);
        }
    }
#endif
    for (int64_t j = jc; j < L; j++) {
        uint32_t kj = w->key[j];
        sel[n] = j;
        n += kj > (uint32_t)b;
        w->tie[nt] = j;
        w->ts[nt] = s[j];
        nt += kj == (uint32_t)b;
    }
    if (sel != out)
        memcpy(out, sel, (size_t)n * sizeof *out);
    if (need == nt) {
        for (int64_t t = 0; t < nt; t++)
            out[n++] = w->tie[t];
        return n;
    }
    /* the tie list is in index order, so its own ties still go to lower indices */
    int64_t got = radix_select(w->ts, nt, need, w->key, w->tout);
    for (int64_t t = 0; t < got; t++)
        out[n++] = w->tie[w->tout[t]];
    return n;
}

/* The indices (idx) and values (val) of the entries of s[0 .. L) that are >= g,
 * in index order; returns how many. idx and val have 16 entries of slack. */
static int64_t compress_ge(const float *s, int64_t L, float g, int32_t *idx, float *val)
{
    int64_t n = 0, j = 0;
#if defined(__AVX512F__)
    __m512 vg = _mm512_set1_ps(g);
    __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; j + 16 <= L; j += 16) {
        __m512 v = _mm512_loadu_ps(s + j);
        __mmask16 k = _mm512_cmp_ps_mask(v, vg, _CMP_GE_OQ);
        /* register compress, whole stores: see select_top */
        _mm512_storeu_si512(idx + n, _mm512_maskz_compress_epi32(
                                         k, _mm512_add_epi32(lane, _mm512_set1_epi32((int)j))));
        _mm512_storeu_ps(val + n, _mm512_maskz_compress_ps(k, v));
        n += __builtin_popcount(k);
    }
#endif
    for (; j < L; j++) {
        idx[n] = (int32_t)j;
        val[n] = s[j];
        n += s[j] >= g;
    }
    return n;
}

/* The lists query r probes: the nprobe best probe scores (ties: lower list),
 * with their q . c~.
 *
 * The selection is done among the scores >= a guess, when that is enough of
 * them: the queries of a batch have similar probe-score distributions, so the
 * previous query's cut-off (its nprobe-th best) minus a margin usually leaves
 * between nprobe and 1.5 nprobe of the L scores (about 300 of 1549 at nprobe
 * 222), and selecting among those is a fraction of selecting among all. Every
 * score left out is below every candidate, so the result is the same set as a
 * selection among all L, ties included (the candidates keep their index order).
 * When the guess leaves fewer than nprobe or more than 4 nprobe, the full
 * selection runs. The margin adapts: doubled after a guess that left too few,
 * shrunk after one that left more than 1.5 nprobe. Only the speed depends on
 * the guess, not the result. */
static int64_t select_probes(const IvfCtx *c, IvfScratch *w, int64_t r, const float *dots,
                             int64_t *probe, float *pdot)
{
    const MrIndex *ix = c->ix;
    int64_t L = ix->nlist, m = c->nprobe, np = -1;
    probe_finish(ix, c->Q + r * ix->d, dots, w->ps);
    SelScr ss = {w->key, w->tie, w->ts, w->tout, w->sel};
    if (m < L && w->cut_ok) {
        int64_t n = compress_ge(w->ps, L, w->cut - w->margin, w->cidx, w->cval);
        if (n >= m && n <= 4 * m) {
            np = select_top(w->cval, n, m, &ss, probe);
            for (int64_t p = 0; p < np; p++)
                probe[p] = w->cidx[probe[p]];
        }
        if (n < m)
            w->margin *= 2;
        else if (2 * n > 3 * m)
            w->margin *= 0.75f;
    }
    if (np < 0)
        np = select_top(w->ps, L, m, &ss, probe);
    float cut = INFINITY;
    for (int64_t p = 0; p < np; p++) {
        pdot[p] = dots[probe[p]];
        cut = w->ps[probe[p]] < cut ? w->ps[probe[p]] : cut;
    }
    if (np == m && m < L && isfinite(cut)) {
        if (!w->cut_ok || !(w->margin > 0) || !isfinite(w->margin))
            w->margin = 0.01f * fabsf(cut) + 1e-6f;
        w->cut = cut;
        w->cut_ok = 1;
    }
    return np;
}

/* Prefetch the rows of emb of the candidates in h (random rows: cache misses). */
static void rescore_prefetch(const MrIndex *ix, const IxTop *h)
{
    int d = ix->d;
    for (int64_t j = 0; j < h->n; j++) {
        const char *row = (const char *)(ix->emb + h->i[j] * d);
        for (int64_t at = 0; at < (int64_t)d * 4; at += 64)
            __builtin_prefetch(row + at);
    }
}

/* Exact scores of the candidates in h (rows prefetched by the caller, a few
 * queries ahead) into f, 16 at a time with gathered loads; every lane is the
 * same fused multiply-add chain as ix_dot (the scalar fallback), so the scores
 * are the ones the float lists would give. */
static void rescore(const MrIndex *ix, const float *q, const IxTop *h, IxHeap *f)
{
    int d = ix->d;
    int64_t j = 0;
#if defined(__AVX512F__)
    if (ix->n * (int64_t)d < INT32_MAX) { /* 32-bit gather offsets */
        float sc[IX_LANES];
        for (; j < h->n; j += IX_LANES) {
            int m = h->n - j < IX_LANES ? (int)(h->n - j) : IX_LANES;
            int32_t off[IX_LANES];
            for (int l = 0; l < IX_LANES; l++)
                off[l] = (int32_t)(h->i[j + (l < m ? l : 0)] * d);
            __m512i vo = _mm512_loadu_si512(off);
            __m512 acc = _mm512_setzero_ps();
            for (int t = 0; t < d; t++)
                acc = _mm512_fmadd_ps(_mm512_set1_ps(q[t]), _mm512_i32gather_ps(vo, ix->emb + t, 4),
                                      acc);
            _mm512_storeu_ps(sc, acc);
            for (int l = 0; l < m; l++)
                ix_heap_push(f, sc[l], h->i[j + l]);
        }
    }
#endif
    for (; j < h->n; j++)
        ix_heap_push(f, ix_dot(q, ix->emb + h->i[j] * d, d), h->i[j]);
}

/* Phase 1 of a share: for queries lo .. hi-1, the probed lists and their q . c~
 * (w->probe, w->pdot, w->nprb), the per-list query counts (w->icnt[l + 1]), the
 * candidate structures and, when quantized, the int8 queries. */
static __attribute__((noinline)) void share_probe(const IvfCtx *c, IvfScratch *w, int64_t lo,
                                                  int64_t hi)
{
    const MrIndex *ix = c->ix;
    int d = ix->d;
    int64_t L = ix->nlist;
    int g4 = 4 * ix_sq8_groups(d);
    for (int64_t j = 0; j <= L; j++)
        w->icnt[j] = 0;
    int64_t Lr = (L + IX_LANES - 1) / IX_LANES * IX_LANES;
    for (int64_t r = lo; r < hi; r++) {
        int64_t a = r - lo, u4 = a % 4;
        if (u4 == 0) {
            /* centroid dot products of this query and the next three */
            const float *qv[4];
            float *dv[4];
            for (int u = 0; u < 4; u++) {
                int64_t ru = r + u < hi ? r + u : hi - 1; /* a short tail repeats its last */
                qv[u] = c->Q + ru * d;
                dv[u] = w->dots + (ru - r) * Lr;
            }
            probe_dots_x4(ix, qv, dv);
        }
        w->nprb[a] = select_probes(c, w, r, w->dots + u4 * Lr, w->probe + a * c->nprobe,
                                   w->pdot + a * c->nprobe);
        for (int64_t p = 0; p < w->nprb[a]; p++)
            w->icnt[w->probe[a * c->nprobe + p] + 1]++;
        ix_top_init(&w->tops[a], w->hs + a * ix_top_slots(c->cap), w->hi + a * ix_top_slots(c->cap),
                    c->cap);
        w->qthr[a] = ix_top_thr(&w->tops[a]);
        if (ix->p.quantize)
            ix_sq8_query(c->Q + r * d, ix->code_scale, ix->code_offset, ix->code_mean, d,
                         w->qi + a * g4, &w->qstep[a], &w->qoff[a]);
    }
}

/* Phase 2: invert (query -> lists) into (list -> queries): afterwards list l's
 * queries are w->iq[icnt[l-1] .. icnt[l]) (icnt[-1] = 0), with (quantized lists
 * only) their q . c~ in w->idot. */
static __attribute__((noinline)) void share_group(const IvfCtx *c, IvfScratch *w, int64_t m)
{
    int64_t L = c->ix->nlist;
    for (int64_t j = 0; j < L; j++)
        w->icnt[j + 1] += w->icnt[j];
    if (c->ix->p.quantize) {
        for (int64_t a = 0; a < m; a++)
            for (int64_t p = 0; p < w->nprb[a]; p++) {
                int64_t at = w->icnt[w->probe[a * c->nprobe + p]]++;
                w->iq[at] = (int32_t)a;
                w->idot[at] = w->pdot[a * c->nprobe + p];
            }
        return;
    }
    /* the float scan does not use q . c~ */
    for (int64_t a = 0; a < m; a++)
        for (int64_t p = 0; p < w->nprb[a]; p++)
            w->iq[w->icnt[w->probe[a * c->nprobe + p]]++] = (int32_t)a;
}

/* Offer the lanes of scores v (one block, items from position pos) that reach
 * the threshold of candidates h; returns the new threshold. */
static inline float offer_block(const IvfCtx *c, IxTop *h, const float *v, unsigned msk,
                                int64_t pos, int64_t qg)
{
    const MrIndex *ix = c->ix;
    float thr = ix_top_thr(h);
    while (msk) {
        int t = __builtin_ctz(msk);
        msk &= msk - 1;
        if (v[t] >= thr) {
            offer(h, v[t], ix->list_items[pos + t], c->ex, qg);
            thr = ix_top_thr(h);
        }
    }
    return thr;
}

/* Phase 3: the list-major scan. Each block of a list is loaded once and scored
 * for every query of the share that probes the list, four queries at a time.
 * Inlined once per common dimension (scan_dim below), so that the kernels' loops
 * over dimensions unroll with d a constant. */
static inline __attribute__((always_inline)) void share_scan_d(const IvfCtx *c, IvfScratch *w,
                                                               int64_t lo, const int d)
{
    const MrIndex *ix = c->ix;
    int64_t L = ix->nlist;
    int g4 = 4 * ix_sq8_groups(d);
    float sc[4][IX_LANES];
    for (int64_t li = 0; li < L; li++) {
        int64_t l = ix->scan_order[li];
        int64_t e0 = l ? w->icnt[l - 1] : 0, e1 = w->icnt[l];
        if (e0 == e1)
            continue;
        int64_t p0 = ix->list_off[l], p1 = ix->list_off[l + 1];
        for (int64_t b = ix->list_blk[l]; b < ix->list_blk[l + 1]; b++) {
            int64_t pos = p0 + (b - ix->list_blk[l]) * IX_LANES;
            int valid = p1 - pos < IX_LANES ? (int)(p1 - pos) : IX_LANES;
            unsigned vmask = (1u << valid) - 1u; /* padding lanes never count */
            for (int64_t j = e0; j < e1; j += 4) {
                /* four queries at a time; a short tail repeats its last query,
                 * whose extra copies are not offered */
                int nj = e1 - j < 4 ? (int)(e1 - j) : 4;
                if (ix->p.quantize) {
                    const int8_t *qv[IX_SQ8_Q];
                    float step[IX_SQ8_Q], base[IX_SQ8_Q];
                    for (int u = 0; u < IX_SQ8_Q; u++) {
                        int64_t ju = j + (u < nj ? u : nj - 1), a = w->iq[ju];
                        qv[u] = w->qi + a * g4;
                        step[u] = w->qstep[a];
                        base[u] = w->idot[ju] + w->qoff[a];
                    }
                    ix_sq8_scores(qv, ix->codes + (size_t)b * ix_sq8_block_bytes(d), d, step, base,
                                  sc);
                } else {
                    const float *qv[4];
                    for (int u = 0; u < 4; u++)
                        qv[u] = c->Q + (lo + w->iq[j + (u < nj ? u : nj - 1)]) * d;
                    kern_f32_x4(qv, ix->list_emb + (size_t)b * (size_t)d * IX_LANES, d, sc);
                }
                for (int u = 0; u < nj; u++) {
                    int64_t a = w->iq[j + u];
                    unsigned msk = ix_mask16_ge(sc[u], w->qthr[a]) & vmask;
                    if (msk)
                        w->qthr[a] = offer_block(c, &w->tops[a], sc[u], msk, pos, c->q0 + lo + a);
                }
            }
        }
    }
}

static __attribute__((noinline)) void share_scan(const IvfCtx *c, IvfScratch *w, int64_t lo)
{
    switch (c->ix->d) {
    case 16: share_scan_d(c, w, lo, 16); break;
    case 32: share_scan_d(c, w, lo, 32); break;
    case 64: share_scan_d(c, w, lo, 64); break;
    default: share_scan_d(c, w, lo, c->ix->d); break;
    }
}

/* Phase 4: each query's candidates to its output row (rescored exactly first
 * when the lists are quantized). */
static __attribute__((noinline)) void share_finish(const IvfCtx *c, IvfScratch *w, int64_t lo,
                                                   int64_t m)
{
    const MrIndex *ix = c->ix;
    int d = ix->d;
    for (int64_t a = 0; a < m; a++) {
        int64_t qg = c->q0 + lo + a;
        int64_t *oi = c->out_items + qg * c->k;
        float *os = c->out_scores + qg * c->k;
        IxTop *h = &w->tops[a];
        if (!ix->p.quantize) {
            ix_top_drain(h, oi, os, c->k);
            continue;
        }
        /* Rescore the best approximate candidates with the float rows. Those of
         * the next two queries are prefetched now, so that their cache misses
         * overlap with this query's work. */
        if (a == 0)
            for (int64_t u = 0; u < 2 && u < m; u++) {
                ix_top_compact(&w->tops[u]);
                rescore_prefetch(ix, &w->tops[u]);
            }
        if (a + 2 < m) {
            ix_top_compact(&w->tops[a + 2]);
            rescore_prefetch(ix, &w->tops[a + 2]);
        }
        IxHeap f = {w->fs, w->fi, 0, c->kk};
        rescore(ix, c->Q + (lo + a) * d, h, &f);
        ix_heap_drain(&f, oi, os, c->k);
    }
}

/* One thread's share of a query block, scanned list-major: list data is read from
 * cache instead of memory once per query. Scores and the candidates' full
 * (score, item) order make the result independent of the scan order and of how
 * queries are shared out. */
static void search_share(void *arg, int tid, int nth)
{
    IvfCtx *c = arg;
    IvfScratch *w = &c->scr[tid];
    int64_t lo = c->qb * tid / nth, hi = c->qb * (tid + 1) / nth, m = hi - lo;
    if (m <= 0)
        return;
    share_probe(c, w, lo, hi);
    share_group(c, w, m);
    share_scan(c, w, lo);
    share_finish(c, w, lo, m);
}

static void scratch_free(IvfScratch *w)
{
    free(w->dots);
    free(w->pdot);
    free(w->idot);
    free(w->qthr);
    free(w->cidx);
    free(w->cval);
    free(w->ps);
    free(w->key);
    free(w->tie);
    free(w->sel);
    free(w->ts);
    free(w->tout);
    free(w->probe);
    free(w->nprb);
    free(w->tops);
    free(w->hs);
    free(w->hi);
    free(w->fs);
    free(w->fi);
    free(w->qi);
    free(w->qstep);
    free(w->qoff);
    free(w->icnt);
    free(w->iq);
}

int ix_ivf_search(const MrIndex *ix, const float *Q, int64_t nq, int k, int64_t nprobe,
                  const IxExcl *ex, int64_t *out_items, float *out_scores, int nthreads, MrErr *e)
{
    int64_t L = ix->nlist, n = ix->n;
    int d = ix->d;
    int64_t kk = k < n ? k : n;
    if (nprobe <= 0)
        nprobe = ix->stats.nprobe > 0 ? ix->stats.nprobe : 1;
    if (nprobe > L)
        nprobe = L;
    int64_t cap = kk;
    if (ix->p.quantize) {
        cap = ix->p.rescore > 0 ? ix->p.rescore : 2 * kk;
        cap = cap < kk ? kk : cap > n ? n : cap;
    }
    /* Query block: big enough that a list is probed by many queries of a thread's
     * share (reuse of the list data from cache), small enough that the per-query
     * probe lists stay within a few MiB per thread. */
    int nth = nq > 1 ? nthreads : 1;
    IxTeam team;
    ix_team_start(&team, nth);
    nth = team.n; /* fewer if a helper could not start: shares are sized from this */
    int64_t qmax = ((int64_t)1 << 19) / nprobe;
    qmax = qmax < 16 ? 16 : qmax > 1024 ? 1024 : qmax;

    int64_t qbmax = qmax * nth < nq ? qmax * nth : nq;
    qmax = (qbmax + nth - 1) / nth;
    int64_t Lr = (L + IX_LANES - 1) / IX_LANES * IX_LANES;
    IvfScratch *scr = calloc((size_t)nth, sizeof *scr);
    int rc = MR_OK;
    if (!scr) {
        rc = mr_err_set(e, MR_ENOMEM, "ivf search: no memory for per-thread buffers");
        goto out;
    }
    for (int t = 0; t < nth; t++) {
        IvfScratch *w = &scr[t];
        w->dots = malloc((size_t)(4 * Lr) * sizeof *w->dots);
        w->pdot = malloc((size_t)(qmax * nprobe) * sizeof *w->pdot);
        w->idot = malloc((size_t)(qmax * nprobe) * sizeof *w->idot);
        w->qthr = malloc((size_t)qmax * sizeof *w->qthr);
        w->cidx = malloc((size_t)(L + 16) * sizeof *w->cidx);
        w->cval = malloc((size_t)(L + 16) * sizeof *w->cval);
        w->ps = malloc((size_t)L * sizeof *w->ps);
        w->key = malloc((size_t)L * sizeof *w->key);
        w->tie = malloc((size_t)(L + 16) * sizeof *w->tie);
        w->ts = malloc((size_t)(L + 16) * sizeof *w->ts);
        w->sel = malloc((size_t)(L + 16) * sizeof *w->sel);
        w->tout = malloc((size_t)L * sizeof *w->tout);
        w->probe = malloc((size_t)(qmax * nprobe) * sizeof *w->probe);
        w->nprb = malloc((size_t)qmax * sizeof *w->nprb);
        w->tops = malloc((size_t)qmax * sizeof *w->tops);
        w->hs = malloc((size_t)(qmax * ix_top_slots(cap)) * sizeof *w->hs);
        w->hi = malloc((size_t)(qmax * ix_top_slots(cap)) * sizeof *w->hi);
        w->fs = malloc((size_t)kk * sizeof *w->fs);
        w->fi = malloc((size_t)kk * sizeof *w->fi);
        w->qi = malloc((size_t)(qmax * 4 * ix_sq8_groups(d)));
        w->qstep = malloc((size_t)qmax * sizeof *w->qstep);
        w->qoff = malloc((size_t)qmax * sizeof *w->qoff);
        w->icnt = malloc((size_t)(L + 1) * sizeof *w->icnt);
        w->iq = malloc((size_t)(qmax * nprobe) * sizeof *w->iq);
        if (!w->dots || !w->pdot || !w->idot || !w->qthr || !w->cidx || !w->cval || !w->ps || !w->key || !w->tie || !w->ts || !w->sel ||
            !w->tout || !w->probe || !w->nprb || !w->tops || !w->hs || !w->hi || !w->fs || !w->fi ||
            !w->qi || !w->qstep || !w->qoff || !w->icnt || !w->iq) {
            rc = mr_err_set(e, MR_ENOMEM, "ivf search: no memory for per-thread buffers");
            goto out;
        }
    }
    for (int64_t q0 = 0; q0 < nq; q0 += qbmax) {
        int64_t qb = nq - q0 < qbmax ? nq - q0 : qbmax;
        IvfCtx c = {ix, Q + q0 * d, q0, qb, nprobe, k, kk, cap, ex, out_items, out_scores, scr};
        ix_team_run(&team, search_share, &c);
    }
out:
    ix_team_stop(&team);
    if (scr)
        for (int t = 0; t < nth; t++)
            scratch_free(&scr[t]);
    free(scr);
    return rc;
}

int ix_ivf_list_ranks(const MrIndex *ix, const float *Q, int64_t nq, const int64_t *want, int kw,
                      int64_t *out, MrErr *e)
{
    int64_t L = ix->nlist, n = ix->n;
    int d = ix->d;
    int64_t Lr = (L + IX_LANES - 1) / IX_LANES * IX_LANES;
    int64_t *list_of = malloc((size_t)n * sizeof *list_of);
    float *dots = malloc((size_t)Lr * sizeof *dots), *ps = malloc((size_t)L * sizeof *ps);
    if (!list_of || !dots || !ps) {
        free(list_of);
        free(dots);
        free(ps);
        return mr_err_set(e, MR_ENOMEM, "ivf: no memory for list ranks");
    }
    for (int64_t j = 0; j < L; j++)
        for (int64_t p = ix->list_off[j]; p < ix->list_off[j + 1]; p++)
            list_of[ix->list_items[p]] = j;
    for (int64_t q = 0; q < nq; q++) {
        /* exactly the probe scores the search computes for this query */
        probe_scores(ix, Q + q * d, dots, ps);
        for (int w = 0; w < kw; w++) {
            int64_t it = want[q * kw + w];
            if (it < 0 || it >= n) {
                out[q * kw + w] = INT64_MAX;
                continue;
            }
            int64_t lw = list_of[it], rank = 0;
            for (int64_t j = 0; j < L; j++)
                rank += ix_worse(ps[lw], lw, ps[j], j);
            out[q * kw + w] = rank;
        }
    }
    free(list_of);
    free(dots);
    free(ps);
    return MR_OK;
}
