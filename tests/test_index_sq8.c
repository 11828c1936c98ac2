/* test_index_sq8.c — the integer kernel of the quantized ivf scan (src/index/ix_sq8.h):
 * the compiled vector paths against the plain-C reference, the approximate scores
 * against the exact dot products within the quantisation error bound, and the
 * quantized search with a large enough rescore set against exact search.
 */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/ix_sq8.h"
#include "mpirec/config.h"
#include "mpirec/hash.h"
#include "mpirec/index.h"

/* tests/variants/sq8_avx2.c: the same kernel compiled without AVX-512 */
const char *sq8_avx2_scores(const int8_t *const qi[IX_SQ8_Q], const uint8_t *blk, int d,
                            const float step[IX_SQ8_Q], const float base[IX_SQ8_Q],
                            float out[IX_SQ8_Q][IX_LANES]);

static double unit(uint64_t seed, uint64_t i)
{
    return mr_hash_unit(mr_mix(seed, i));
}

static MrIndexParams qparams(void)
{
    MrConfig c;
    mr_config_defaults(&c);
    c.index.kind = MR_INDEX_IVF;
    MrIndexParams p;
    mr_index_params_from_config(&p, &c, 7);
    p.quantize = 1;
    return p;
}

/* Random blocks and int8 queries (extremes included, dimensions that are not a
 * multiple of 4): the native kernel, the AVX2 build and the reference agree bit
 * for bit, and the reference's integer sums equal a plain double computation. */
static void test_kernels_agree(void)
{
    static const int dims[] = {1, 2, 3, 4, 5, 7, 8, 12, 31, 32, 33, 64, 100};
    uint64_t ctr = 0;
    const char *native = IX_SQ8_KERNEL, *avx2 = NULL;
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++) {
        int d = dims[di], g4 = 4 * ix_sq8_groups(d);
        size_t bb = ix_sq8_block_bytes(d);
        uint8_t *blk = calloc(bb, 1);
        int8_t *q = calloc((size_t)(IX_SQ8_Q * g4), 1);
        for (int rep = 0; rep < 40; rep++) {
            int extreme = rep % 4 == 0;
            for (int l = 0; l < IX_LANES; l++)
                for (int t = 0; t < d; t++)
                    blk[ix_sq8_at(d, 0, t, l)] =
                        extreme ? 255 : (uint8_t)(unit(11, ctr++) * 256.0);
            const int8_t *qv[IX_SQ8_Q];
            float step[IX_SQ8_Q], base[IX_SQ8_Q];
            for (int u = 0; u < IX_SQ8_Q; u++) {
                for (int t = 0; t < d; t++)
                    q[u * g4 + t] = extreme ? (int8_t)(u % 2 ? -127 : 127)
                                            : (int8_t)((int)(unit(12, ctr++) * 255.0) - 127);
                qv[u] = q + u * g4;
                step[u] = (float)(1e-3 * (1 + unit(13, ctr++)));
                base[u] = (float)(unit(14, ctr++) * 10 - 5);
            }
            float a[IX_SQ8_Q][IX_LANES], b[IX_SQ8_Q][IX_LANES], r[IX_SQ8_Q][IX_LANES];
            ix_sq8_scores(qv, blk, d, step, base, a);
            avx2 = sq8_avx2_scores(qv, blk, d, step, base, b);
            ix_sq8_scores_ref(qv, blk, d, step, base, r);
            CU_ASSERT(memcmp(a, r, sizeof a) == 0);
            CU_ASSERT(memcmp(b, r, sizeof b) == 0);
            for (int u = 0; u < IX_SQ8_Q; u++)
                for (int l = 0; l < IX_LANES; l++) {
                    double acc = 0;
                    for (int t = 0; t < d; t++)
                        acc += (double)blk[ix_sq8_at(d, 0, t, l)] * qv[u][t];
                    CU_ASSERT_EQUAL(r[u][l], fmaf(step[u], (float)acc, base[u]));
                }
        }
        free(blk);
        free(q);
    }
    printf("  kernels: native %s, variant %s, reference c ", native, avx2 ? avx2 : "?");
}

/* Every item's approximate score (the kernel on its codes, as the scan computes it)
 * is within the quantisation error bound of q . x:
 *   item rounding   sum_t |q_t| scale_t / 2        (codes are within half a step)
 *   query rounding  |sum_t e_t (code_t - mean_t)|  (e_t = q_t scale_t - step qi_t)
 * plus float rounding; and the errors average out (the estimate is unbiased: the
 * query-rounding term is centred by the per-dimension mean code). */
static void test_approx_bound(void)
{
    int64_t n = 4000;
    int d = 22, nq = 40;
    float *X = malloc((size_t)(n * d) * sizeof *X), *Q = malloc((size_t)(nq * d) * sizeof *Q);
    for (int64_t i = 0; i < n * d; i++)
        X[i] = (float)(unit(21, (uint64_t)i) * 2 - 1) * (i % 7 == 0 ? 3.0f : 1.0f);
    for (int64_t i = 0; i < nq * d; i++)
        Q[i] = (float)(unit(22, (uint64_t)i) * 2 - 1);
    MrIndexParams p = qparams();
    p.nprobe = 4;
    MrIndex ix;
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(mr_index_build(&ix, &p, X, n, d, NULL, NULL, Q, nq, 10, &e), MR_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ix.code_mean);
    int g4 = 4 * ix_sq8_groups(d);
    int8_t *qi = calloc((size_t)(IX_SQ8_Q * g4), 1);
    int64_t bad = 0, count = 0;
    double sum_err = 0, sum_sq = 0;
    for (int a = 0; a < nq; a++) {
        const float *q = Q + a * d;
        float step, corr;
        ix_sq8_query(q, ix.code_scale, ix.code_offset, ix.code_mean, d, qi, &step, &corr);
        const int8_t *qv[IX_SQ8_Q] = {qi, qi, qi, qi};
        double item_bound = 0;
        for (int t = 0; t < d; t++)
            item_bound += fabs(q[t]) * ix.code_scale[t] * 0.5;
        for (int64_t l = 0; l < ix.nlist; l++) {
            double qc = 0;
            for (int t = 0; t < d; t++)
                qc += (double)q[t] * ix.centroids[l * d + t];
            float st[IX_SQ8_Q] = {step, step, step, step};
            float bs[IX_SQ8_Q];
            for (int u = 0; u < IX_SQ8_Q; u++)
                bs[u] = (float)qc + corr;
            for (int64_t b = ix.list_blk[l]; b < ix.list_blk[l + 1]; b++) {
                float out[IX_SQ8_Q][IX_LANES];
                ix_sq8_scores(qv, ix.codes + (size_t)b * ix_sq8_block_bytes(d), d, st, bs, out);
                for (int lane = 0; lane < IX_LANES; lane++) {
                    int64_t pos = ix.list_off[l] + (b - ix.list_blk[l]) * IX_LANES + lane;
                    if (pos >= ix.list_off[l + 1])
                        break;
                    int64_t item = ix.list_items[pos];
                    double exact = 0, qround = 0, mag = fabs(qc) + fabs(corr);
                    for (int t = 0; t < d; t++) {
                        exact += (double)q[t] * X[item * d + t];
                        double c = ix.codes[MR_INDEX_CODE_AT(d, b, t, lane)];
                        double et = (double)q[t] * ix.code_scale[t] - (double)step * qi[t];
                        qround += et * (c - ix.code_mean[t]);
                        mag += fabs((double)step * qi[t] * c);
                    }
                    double err = out[0][lane] - exact;
                    double bound = item_bound + fabs(qround) + 1e-5 * (1 + mag);
                    bad += fabs(err) > bound;
                    sum_err += err;
                    sum_sq += err * err;
                    count++;
                }
            }
        }
    }
    CU_ASSERT_EQUAL(count, n * nq);
    CU_ASSERT_EQUAL(bad, 0);
    double mean = sum_err / (double)count, rms = sqrt(sum_sq / (double)count);
    printf("  approx error: rms %.3g, mean %.3g over %lld scores ", rms, mean, (long long)count);
    CU_ASSERT(fabs(mean) < 0.1 * rms);
    free(qi);
    free(X);
    free(Q);
    mr_index_free(&ix);
}

/* Integer data (every float dot product exact, many ties): with every list probed
 * and a rescore set large enough to hold the true top k, the quantized search
 * returns exactly the exact search's ids, order (ties to the lower index) and
 * scores; a NaN query gets no candidates. */
static void test_rescore_exact(void)
{
    int64_t n = 3000;
    int d = 13, nq = 60, k = 10;
    float *X = malloc((size_t)(n * d) * sizeof *X), *Q = malloc((size_t)(nq * d) * sizeof *Q);
    for (int64_t i = 0; i < n * d; i++)
        X[i] = (float)((int)(unit(31, (uint64_t)i) * 7) - 3);
    for (int64_t i = 0; i < nq * d; i++)
        Q[i] = (float)((int)(unit(32, (uint64_t)i) * 5) - 2);
    Q[5 * d + 3] = NAN;
    MrIndexParams p = qparams();
    p.nprobe = 1;
    p.rescore = 300;
    MrIndex ix;
    MrErr e;
    CU_ASSERT_EQUAL_FATAL(mr_index_build(&ix, &p, X, n, d, NULL, NULL, Q, 4, k, &e), MR_OK);
    int64_t *a = malloc((size_t)(nq * k) * sizeof *a), *b = malloc((size_t)(nq * k) * sizeof *b);
    float *sa = malloc((size_t)(nq * k) * sizeof *sa), *sb = malloc((size_t)(nq * k) * sizeof *sb);
    CU_ASSERT_EQUAL(mr_index_search(&ix, Q, nq, k, ix.nlist, NULL, a, sa, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_index_search_exact(&ix, Q, nq, k, NULL, b, sb, &e), MR_OK);
    int64_t diff = 0;
    for (int64_t j = 0; j < nq * k; j++)
        if (j / k != 5)
            diff += a[j] != b[j] || sa[j] != sb[j];
    CU_ASSERT_EQUAL(diff, 0);
    for (int j = 0; j < k; j++)
        CU_ASSERT_EQUAL(a[5 * k + j], -1);
    /* default rescore (2 k) at a partial nprobe: the scores returned are exact */
    CU_ASSERT_EQUAL(mr_index_search(&ix, Q, nq, k, ix.nlist / 2, NULL, a, sa, &e), MR_OK);
    int64_t wrong = 0;
    for (int64_t j = 0; j < nq * k; j++) {
        if (a[j] < 0)
            continue;
        double s = 0;
        for (int t = 0; t < d; t++)
            s += (double)Q[(j / k) * d + t] * X[a[j] * d + t];
        wrong += (double)sa[j] != s;
    }
    CU_ASSERT_EQUAL(wrong, 0);
    free(a);
    free(b);
    free(sa);
    free(sb);
    free(X);
    free(Q);
    mr_index_free(&ix);
}

int add_suite_index_sq8(void)
{
    CU_pSuite s = CU_add_suite("index_sq8", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "kernels_agree", test_kernels_agree);
    CU_add_test(s, "approx_bound", test_approx_bound);
    CU_add_test(s, "rescore_exact", test_rescore_exact);
    return 0;
}
