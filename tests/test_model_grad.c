/* test_model_grad.c — finite-difference gradient checks, in double, of every layer
 * and loss of the model, and of the full towers.
 *
 * The kernels under test are the double instantiation of the same source text that
 * trains in float (src/model/kernels.h), so these checks cover the training code.
 * Each check defines a scalar objective, computes its analytic gradient with the
 * kernels' backward, and compares it with central differences (h = 1e-5) under
 * |analytic - numeric| <= atol + rtol * |numeric|; a failure prints the first
 * mismatches and the largest difference. Inputs come from a fixed hash-based
 * generator; pre-activations are kept away from the ReLU kink so that the numeric
 * derivative is well defined.
 *
 * The retrieval loss value is also compared with a naive oracle written here from
 * SEMANTICS.md section 1 (full [B x G] matrix, options in TFRS order, hard negatives
 * by sorting), independent of the blocked implementation.
 */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"
#include "mpirec/config.h"
#include "mpirec/hash.h"
#include "test_util.h"

#define FD_H 1e-5
#define FD_ATOL 1e-6
#define FD_RTOL 1e-5

/* ---- helpers ---- */

static uint64_t g_rng = 12345;
static double urand(double lo, double hi)
{
    g_rng = mr_splitmix64(g_rng);
    return lo + (hi - lo) * mr_hash_unit(g_rng);
}
static void fill(double *x, int64_t n, double lo, double hi)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = urand(lo, hi);
}

/* Compare; print the first mismatches and the max difference. Returns mismatches. */
static int compare(const char *what, const double *got, const double *want, int64_t n,
                   double atol, double rtol)
{
    int bad = 0;
    double maxd = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(got[i] - want[i]);
        if (!(d <= maxd))
            maxd = d;
        if (!(d <= atol + rtol * fabs(want[i]))) {
            if (bad < 5)
                fprintf(stderr, "  %s[%lld]: analytic %.10g numeric %.10g (diff %.3g)\n", what,
                        (long long)i, got[i], want[i], d);
            bad++;
        }
    }
    if (bad)
        fprintf(stderr, "  %s: %d of %lld mismatch, max diff %.3g\n", what, bad, (long long)n, maxd);
    return bad;
}

typedef double (*Objective)(void *ctx);

/* Central differences of f over x[0..n) (x is perturbed and restored). */
static void numeric_grad(Objective f, void *ctx, double *x, int64_t n, double *out)
{
    for (int64_t i = 0; i < n; i++) {
        double x0 = x[i];
        x[i] = x0 + FD_H;
        double fp = f(ctx);
        x[i] = x0 - FD_H;
        double fm = f(ctx);
        x[i] = x0;
        out[i] = (fp - fm) / (2 * FD_H);
    }
}

static int fd_check(const char *what, Objective f, void *ctx, double *x, int64_t n,
                    const double *analytic)
{
    double *num = malloc((size_t)(n ? n : 1) * sizeof(double));
    numeric_grad(f, ctx, x, n, num);
    int bad = compare(what, analytic, num, n, FD_ATOL, FD_RTOL);
    free(num);
    return bad;
}

static double dot(const double *a, const double *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* ---- embedding gather / scatter-add ---- */

typedef struct {
    double T[5 * 3], out[5 * 5], R[5 * 5];
    int32_t slot[5];
} GatherCtx;

static double gather_obj(void *p)
{
    GatherCtx *c = p;
    memset(c->out, 0, sizeof c->out);
    /* rows land in columns 1..3 of a 5-wide matrix, as in the query tower's concat */
    mr_mk_gather_rows_d(c->T, 3, c->slot, 5, c->out + 1, 5);
    return dot(c->out, c->R, 25);
}

/* Rows 2 and 0 repeat, rows 1 and 3 are never looked up: the scatter-add must sum the
 * repeats and leave the others at exactly zero. */
static void test_grad_gather_scatter(void)
{
    GatherCtx c = {.slot = {2, 0, 2, 4, 0}};
    fill(c.T, 15, -1, 1);
    fill(c.R, 25, -1, 1);
    double dT[15] = {0};
    mr_mk_scatter_add_rows_d(dT, 3, c.slot, 5, c.R + 1, 5);
    CU_ASSERT_EQUAL(fd_check("dT", gather_obj, &c, c.T, 15, dT), 0);
    for (int k = 0; k < 3; k++) {
        CU_ASSERT_EQUAL(dT[1 * 3 + k], 0.0);
        CU_ASSERT_EQUAL(dT[3 * 3 + k], 0.0);
    }
}

/* ---- masked mean ---- */

typedef struct {
    double Tk[6 * 4], out[4 * 6], R[4 * 6];
    int64_t off[5];
    int32_t tslot[7];
} MeanCtx;

static double mean_obj(void *p)
{
    MeanCtx *c = p;
    memset(c->out, 0, sizeof c->out);
    mr_mk_masked_mean_forward_d(c->Tk, 4, c->off, c->tslot, 4, c->out + 2, 6);
    return dot(c->out, c->R, 24);
}

/* Example 0 has tokens {0, 1, 1, 5} (a repeated token counts twice, like Keras's
 * padded sequence), example 1 {3}, example 2 none (zero vector, no gradient),
 * example 3 {2, 4}. Token row 1 is the OOV row: an ordinary row. */
static void test_grad_masked_mean(void)
{
    MeanCtx c = {.off = {0, 4, 5, 5, 7}, .tslot = {0, 1, 1, 5, 3, 2, 4}};
    fill(c.Tk, 24, -1, 1);
    fill(c.R, 24, -1, 1);
    mean_obj(&c);
    for (int k = 0; k < 4; k++)
        CU_ASSERT_EQUAL(c.out[2 * 6 + 2 + k], 0.0); /* zero-token example */
    /* example 1 has one token: its mean is the row itself */
    for (int k = 0; k < 4; k++)
        CU_ASSERT_DOUBLE_EQUAL(c.out[1 * 6 + 2 + k], c.Tk[3 * 4 + k], 1e-15);
    double dTk[24] = {0};
    mr_mk_masked_mean_backward_d(dTk, 4, c.off, c.tslot, 4, c.R + 2, 6);
    CU_ASSERT_EQUAL(fd_check("dTk", mean_obj, &c, c.Tk, 24, dTk), 0);
}

/* ---- concat ---- */

typedef struct {
    double A[4 * 2], B[4 * 3], out[4 * 5], R[4 * 5];
} CatCtx;

static double cat_obj(void *p)
{
    CatCtx *c = p;
    mr_mk_concat_cols_d(c->A, 2, c->B, 3, 4, c->out);
    return dot(c->out, c->R, 20);
}

static void test_grad_concat(void)
{
    CatCtx c;
    fill(c.A, 8, -1, 1);
    fill(c.B, 12, -1, 1);
    fill(c.R, 20, -1, 1);
    double dA[8], dB[12];
    fill(dA, 8, -1, 1); /* split_add accumulates: start from known values */
    fill(dB, 12, -1, 1);
    double dA0[8], dB0[12];
    memcpy(dA0, dA, sizeof dA);
    memcpy(dB0, dB, sizeof dB);
    mr_mk_split_add_cols_d(c.R, 4, dA, 2, dB, 3);
    for (int i = 0; i < 8; i++)
        dA[i] -= dA0[i];
    for (int i = 0; i < 12; i++)
        dB[i] -= dB0[i];
    CU_ASSERT_EQUAL(fd_check("dA", cat_obj, &c, c.A, 8, dA), 0);
    CU_ASSERT_EQUAL(fd_check("dB", cat_obj, &c, c.B, 12, dB), 0);
}

/* ---- Dense (+ ReLU) ---- */

typedef struct {
    MrDense L;
    double params[4 * 3 + 3], X[5 * 4], Y[5 * 3], R[5 * 3];
} DenseCtx;

static double dense_obj(void *p)
{
    DenseCtx *c = p;
    mr_mk_dense_forward_d(&c->L, c->params, c->X, 5, c->Y);
    return dot(c->Y, c->R, 15);
}

/* Draw until every pre-activation is at least 0.05 away from the kink. */
static void dense_setup(DenseCtx *c, int relu)
{
    memset(c, 0, sizeof *c);
    c->L = (MrDense){.in = 4, .out = 3, .relu = relu, .w_off = 0, .b_off = 12};
    for (;;) {
        fill(c->params, 15, -1, 1);
        fill(c->X, 20, -1, 1);
        MrDense lin = c->L;
        lin.relu = 0;
        double Z[15];
        mr_mk_dense_forward_d(&lin, c->params, c->X, 5, Z);
        int ok = 1, pos = 0;
        for (int i = 0; i < 15; i++) {
            ok &= fabs(Z[i]) > 0.05;
            pos += Z[i] > 0;
        }
        if (ok && pos > 3 && pos < 12) /* both sides of the ReLU are exercised */
            break;
    }
    fill(c->R, 15, -1, 1);
}

static void check_dense(int relu, int in_place)
{
    DenseCtx c;
    dense_setup(&c, relu);
    dense_obj(&c);
    double grads[15], gstart[15], dX[20], dY[15], dZ[15];
    fill(grads, 15, -1, 1); /* dense_backward accumulates: start from known values */
    memcpy(gstart, grads, sizeof grads);
    memcpy(dY, c.R, sizeof dY);
    mr_mk_dense_backward_d(&c.L, c.params, grads, c.X, c.Y, 5, dY, in_place ? dY : dZ, dX);
    for (int i = 0; i < 15; i++)
        grads[i] -= gstart[i];
    char name[32];
    snprintf(name, sizeof name, "dW/db relu=%d", relu);
    CU_ASSERT_EQUAL(fd_check(name, dense_obj, &c, c.params, 15, grads), 0);
    snprintf(name, sizeof name, "dX relu=%d", relu);
    CU_ASSERT_EQUAL(fd_check(name, dense_obj, &c, c.X, 20, dX), 0);
}

static void test_grad_dense_linear(void) { check_dense(0, 0); }
static void test_grad_dense_relu(void)
{
    check_dense(1, 0);
    check_dense(1, 1); /* dZ written over dY */
}

/* ---- MSE ---- */

typedef struct {
    double pred[4], r[4];
} MseCtx;

static double mse_obj(void *p)
{
    MseCtx *c = p;
    double dp[4], sse;
    mr_mk_mse_d(c->pred, c->r, 4, 7, 0.3, dp, &sse);
    return 0.3 * sse / 7.0;
}

/* 4 local rows of a global batch of 7, rating weight 0.3: the gradient uses the
 * global denominator. */
static void test_grad_mse(void)
{
    MseCtx c;
    fill(c.pred, 4, 0, 5);
    fill(c.r, 4, 1, 5);
    double dp[4], sse;
    mr_mk_mse_d(c.pred, c.r, 4, 7, 0.3, dp, &sse);
    double want = 0;
    for (int i = 0; i < 4; i++)
        want += (c.pred[i] - c.r[i]) * (c.pred[i] - c.r[i]);
    CU_ASSERT_DOUBLE_EQUAL(sse, want, 1e-12);
    CU_ASSERT_EQUAL(fd_check("dpred", mse_obj, &c, c.pred, 4, dp), 0);
}

/* ---- retrieval loss ---- */

typedef struct {
    MrRetrievalOpts o;
    int64_t B, G, d, pos_offset;
    double scale;
    double *Q, *C, *p;
    int64_t *ids;
    MrkBufs_d w;
    double *dQ, *dC;
} RetCtx;

static double ret_obj(void *p)
{
    RetCtx *c = p;
    double loss;
    MrErr e;
    int rc = mr_mk_retrieval_loss_d(&c->o, c->B, c->G, (int)c->d, c->Q, c->C, c->pos_offset,
                                    c->ids, c->p, c->scale, c->dQ, c->dC, &loss, &c->w, &e);
    CU_ASSERT_EQUAL(rc, MR_OK);
    return loss;
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? 1 : (x > y ? -1 : 0);
}

/* SEMANTICS.md section 1, written out naively on the full logit matrix. */
static double naive_loss(const RetCtx *c)
{
    double total = 0;
    double *S = malloc((size_t)c->G * sizeof(double)), *neg = malloc((size_t)c->G * sizeof(double));
    for (int64_t i = 0; i < c->B; i++) {
        int64_t pc = c->pos_offset + i;
        for (int64_t j = 0; j < c->G; j++) {
            double s = dot(c->Q + i * c->d, c->C + j * c->d, c->d);
            if (c->o.temperature > 0)
                s /= c->o.temperature;
            if (c->o.logq) {
                double pj = c->p[j] < 1e-6 ? 1e-6 : (c->p[j] > 1 ? 1 : c->p[j]);
                s -= log(pj);
            }
            if (c->o.remove_accidental_hits && j != pc && c->ids[j] == c->ids[pc])
                s += MR_MK_MIN_FLOAT;
            S[j] = s;
        }
        int64_t keep = c->G - 1;
        if (c->o.num_hard_negatives > 0 && c->o.num_hard_negatives + 1 < c->G)
            keep = c->o.num_hard_negatives;
        int64_t k = 0;
        for (int64_t j = 0; j < c->G; j++)
            if (j != pc)
                neg[k++] = S[j];
        qsort(neg, (size_t)k, sizeof(double), cmp_desc);
        double m = S[pc];
        for (int64_t j = 0; j < keep; j++)
            m = neg[j] > m ? neg[j] : m;
        double sum = exp(S[pc] - m);
        for (int64_t j = 0; j < keep; j++)
            sum += exp(neg[j] - m);
        total += m + log(sum) - S[pc];
    }
    free(S);
    free(neg);
    return c->scale * total;
}

/* One configuration: value against the oracle, dQ and dCg against finite
 * differences, over blocks of 2 rows (bs forced small so block edges are crossed). */
static void check_retrieval(const char *name, MrRetrievalOpts o, int64_t B, int64_t G, int d,
                            int64_t pos_offset, double scale, const int64_t *ids, const double *p)
{
    MrConfig cfg;
    mr_config_defaults(&cfg);
    cfg.model.embedding_dim = d;
    MrModelShape s;
    MrErr e;
    CU_ASSERT_FATAL(mr_model_shape(&s, &cfg, 10, 10, &e) == MR_OK);
    RetCtx c = {.o = o, .B = B, .G = G, .d = d, .pos_offset = pos_offset, .scale = scale};
    CU_ASSERT_FATAL(mr_mk_bufs_init_d(&c.w, &s, B, G, 1, 1, 1, &e) == MR_OK);
    c.w.bs = 2;
    c.Q = malloc((size_t)(B * d) * sizeof(double));
    c.C = malloc((size_t)(G * d) * sizeof(double));
    c.dQ = malloc((size_t)(B * d) * sizeof(double));
    c.dC = malloc((size_t)(G * d) * sizeof(double));
    c.ids = (int64_t *)ids;
    c.p = (double *)p;
    fill(c.Q, B * d, -1, 1);
    fill(c.C, G * d, -1, 1);
    double loss;
    CU_ASSERT_EQUAL(mr_mk_retrieval_loss_d(&o, B, G, d, c.Q, c.C, pos_offset, ids, p, scale, c.dQ,
                                           c.dC, &loss, &c.w, &e),
                    MR_OK);
    double want = naive_loss(&c);
    if (!(fabs(loss - want) <= 1e-10 * (1 + fabs(want)))) {
        fprintf(stderr, "  %s: loss %.15g, oracle %.15g\n", name, loss, want);
        CU_FAIL("retrieval loss differs from the naive oracle");
    }
    double *gQ = malloc((size_t)(B * d) * sizeof(double)), *gC = malloc((size_t)(G * d) * sizeof(double));
    memcpy(gQ, c.dQ, (size_t)(B * d) * sizeof(double));
    memcpy(gC, c.dC, (size_t)(G * d) * sizeof(double));
    char what[96];
    snprintf(what, sizeof what, "%s dQ", name);
    CU_ASSERT_EQUAL(fd_check(what, ret_obj, &c, c.Q, B * d, gQ), 0);
    snprintf(what, sizeof what, "%s dCg", name);
    CU_ASSERT_EQUAL(fd_check(what, ret_obj, &c, c.C, G * d, gC), 0);
    free(gQ);
    free(gC);
    free(c.Q);
    free(c.C);
    free(c.dQ);
    free(c.dC);
    mr_mk_bufs_free_d(&c.w);
}

static void test_grad_retrieval_plain(void)
{
    MrRetrievalOpts o = {0};
    check_retrieval("plain", o, 5, 5, 3, 0, 1.0, NULL, NULL);
}

static void test_grad_retrieval_temperature(void)
{
    MrRetrievalOpts o = {.temperature = 0.3};
    check_retrieval("temperature", o, 5, 5, 3, 0, 1.0, NULL, NULL);
}

/* p below the 1e-6 clip and above 1 exercise both ends of clip(p, 1e-6, 1). */
static void test_grad_retrieval_logq(void)
{
    MrRetrievalOpts o = {.logq = 1};
    const double p[6] = {0.2, 1e-9, 0.05, 0.5, 2.0, 0.01};
    check_retrieval("logq", o, 6, 6, 3, 0, 1.0, NULL, p);
}

/* Ids with duplicates: columns sharing the positive's id get MIN_FLOAT except the
 * positive itself. */
static void test_grad_retrieval_accidental_hits(void)
{
    MrRetrievalOpts o = {.remove_accidental_hits = 1};
    const int64_t ids[7] = {3, 1, 3, 2, 1, 3, 9};
    check_retrieval("accidental hits", o, 7, 7, 3, 0, 1.0, ids, NULL);
}

static void test_grad_retrieval_hard_negatives(void)
{
    MrRetrievalOpts o = {.num_hard_negatives = 2};
    check_retrieval("hard negatives 2", o, 6, 7, 3, 0, 1.0, NULL, NULL);
    o.num_hard_negatives = 1;
    check_retrieval("hard negatives 1", o, 5, 5, 4, 0, 1.0, NULL, NULL);
    /* n * 16 <= G: the threshold comes from the heap pass instead of quickselect */
    o.num_hard_negatives = 3;
    check_retrieval("hard negatives 3 of 60 (heap)", o, 6, 60, 3, 0, 1.0, NULL, NULL);
    MrRetrievalOpts ol = {.num_hard_negatives = 2, .logq = 1, .temperature = 0.5};
    double p[48];
    for (int j = 0; j < 48; j++)
        p[j] = 0.001 * (double)(j + 1);
    check_retrieval("hard negatives 2 of 48 + logq (heap)", ol, 5, 48, 3, 0, 1.0, NULL, p);
}

/* n + 1 >= G is exactly the full loss (value and gradients). */
static void test_retrieval_hard_negatives_full(void)
{
    MrConfig cfg;
    mr_config_defaults(&cfg);
    cfg.model.embedding_dim = 3;
    MrModelShape s;
    MrErr e;
    CU_ASSERT_FATAL(mr_model_shape(&s, &cfg, 10, 10, &e) == MR_OK);
    MrkBufs_d w;
    CU_ASSERT_FATAL(mr_mk_bufs_init_d(&w, &s, 6, 6, 1, 1, 1, &e) == MR_OK);
    double Q[18], C[18], dQ0[18], dC0[18], dQ1[18], dC1[18], l0, l1;
    fill(Q, 18, -1, 1);
    fill(C, 18, -1, 1);
    MrRetrievalOpts full = {0}, hard = {.num_hard_negatives = 5};
    CU_ASSERT_EQUAL(mr_mk_retrieval_loss_d(&full, 6, 6, 3, Q, C, 0, NULL, NULL, 1, dQ0, dC0, &l0, &w, &e), 0);
    CU_ASSERT_EQUAL(mr_mk_retrieval_loss_d(&hard, 6, 6, 3, Q, C, 0, NULL, NULL, 1, dQ1, dC1, &l1, &w, &e), 0);
    CU_ASSERT_EQUAL(l0, l1);
    CU_ASSERT_EQUAL(memcmp(dQ0, dQ1, sizeof dQ0), 0);
    CU_ASSERT_EQUAL(memcmp(dC0, dC1, sizeof dC0), 0);
    hard.num_hard_negatives = 100;
    CU_ASSERT_EQUAL(mr_mk_retrieval_loss_d(&hard, 6, 6, 3, Q, C, 0, NULL, NULL, 1, dQ1, dC1, &l1, &w, &e), 0);
    CU_ASSERT_EQUAL(l0, l1);
    /* n = 4 < G - 1 drops one negative per row: a strictly smaller loss */
    hard.num_hard_negatives = 4;
    CU_ASSERT_EQUAL(mr_mk_retrieval_loss_d(&hard, 6, 6, 3, Q, C, 0, NULL, NULL, 1, dQ1, dC1, &l1, &w, &e), 0);
    CU_ASSERT(l1 < l0);
    mr_mk_bufs_free_d(&w);
}

/* Ties at the selection threshold: candidates 5, 9, 20, 30, 33 are identical and
 * are the hardest negatives of the single query. With n = 2 (heap path, n*16 <= G)
 * the copies at 5 and 9 are kept, with n = 4 (quickselect path) 5, 9, 20, 30: the
 * lowest indices, the rest masked. Checked through the gradient rows of dCg (zero
 * exactly for masked columns) and the loss value in closed form. */
static void test_retrieval_hard_negative_ties(void)
{
    MrConfig cfg;
    mr_config_defaults(&cfg);
    cfg.model.embedding_dim = 2;
    MrModelShape s;
    MrErr e;
    CU_ASSERT_FATAL(mr_model_shape(&s, &cfg, 10, 10, &e) == MR_OK);
    MrkBufs_d w;
    CU_ASSERT_FATAL(mr_mk_bufs_init_d(&w, &s, 1, 40, 1, 1, 1, &e) == MR_OK);
    double Q[2] = {1.0, 0.0}, C[80], dQ[2], dC[80], loss;
    const int copies[5] = {5, 9, 20, 30, 33};
    for (int j = 0; j < 40; j++) {
        C[2 * j] = urand(-1, 1.5); /* other negatives score below 1.5 */
        C[2 * j + 1] = urand(-1, 1);
    }
    C[0] = 0.5; /* the positive's logit */
    for (int c = 0; c < 5; c++) {
        C[2 * copies[c]] = 2.0;
        C[2 * copies[c] + 1] = 0.3;
    }
    for (int pass = 0; pass < 2; pass++) {
        int n = pass ? 4 : 2;
        MrRetrievalOpts o = {.num_hard_negatives = n};
        CU_ASSERT_EQUAL(mr_mk_retrieval_loss_d(&o, 1, 40, 2, Q, C, 0, NULL, NULL, 1, dQ, dC, &loss, &w, &e), 0);
        double want = log(exp(0.5) + n * exp(2.0)) - 0.5;
        CU_ASSERT_DOUBLE_EQUAL(loss, want, 1e-12);
        for (int j = 1; j < 40; j++) {
            int kept = 0;
            for (int c = 0; c < n; c++)
                kept |= copies[c] == j;
            int moved = dC[2 * j] != 0.0 || dC[2 * j + 1] != 0.0;
            if (moved != kept)
                fprintf(stderr, "  n=%d column %d: kept %d but gradient %g\n", n, j, kept, dC[2 * j]);
            CU_ASSERT_EQUAL(moved, kept);
        }
    }
    mr_mk_bufs_free_d(&w);
}

/* The positive far into the row (column 45 of 50, inside the heap pass's vector
 * region) with the highest logit of its row: it must never be offered to the heap of
 * negatives. Loss against the naive oracle, for both selection paths. */
static void test_retrieval_hard_negatives_late_positive(void)
{
    MrConfig cfg;
    mr_config_defaults(&cfg);
    cfg.model.embedding_dim = 2;
    MrModelShape s;
    MrErr e;
    CU_ASSERT_FATAL(mr_model_shape(&s, &cfg, 10, 10, &e) == MR_OK);
    RetCtx c = {.B = 2, .G = 50, .d = 2, .pos_offset = 45, .scale = 1.0};
    CU_ASSERT_FATAL(mr_mk_bufs_init_d(&c.w, &s, 2, 50, 1, 1, 1, &e) == MR_OK);
    double Q[4] = {1.0, 0.0, 0.0, 1.0}, C[100], dQ[4], dC[100];
    for (int j = 0; j < 100; j++)
        C[j] = urand(-1, 1);
    C[90] = 3.0; /* column 45: row 0's positive scores 3 */
    C[93] = 2.5; /* column 46: row 1's positive scores 2.5 */
    c.Q = Q;
    c.C = C;
    c.dQ = dQ;
    c.dC = dC;
    for (int n = 2; n <= 6; n += 4) { /* 2: heap (2*16 <= 50), 6: quickselect */
        c.o = (MrRetrievalOpts){.num_hard_negatives = n};
        double loss = ret_obj(&c), want = naive_loss(&c);
        if (!(fabs(loss - want) <= 1e-12 * (1 + fabs(want))))
            fprintf(stderr, "  n=%d: loss %.15g, oracle %.15g\n", n, loss, want);
        CU_ASSERT(fabs(loss - want) <= 1e-12 * (1 + fabs(want)));
    }
    mr_mk_bufs_free_d(&c.w);
}

/* Global negatives: 4 local rows whose positives are columns 2..5 of 9 candidates. */
static void test_grad_retrieval_global(void)
{
    MrRetrievalOpts o = {0};
    check_retrieval("G > B", o, 4, 9, 3, 2, 1.0, NULL, NULL);
}

/* Every option at once, a loss weight, and G > B with an offset. */
static void test_grad_retrieval_all(void)
{
    MrRetrievalOpts o = {.temperature = 0.7, .logq = 1, .remove_accidental_hits = 1,
                         .num_hard_negatives = 3};
    const int64_t ids[8] = {5, 5, 2, 7, 5, 2, 1, 0};
    const double p[8] = {0.1, 0.3, 1e-7, 0.02, 0.4, 0.05, 0.9, 0.2};
    check_retrieval("all options", o, 5, 8, 4, 1, 2.5, ids, p);
}

/* B = 0: no loss, dCg zeroed. */
static void test_retrieval_empty(void)
{
    MrConfig cfg;
    mr_config_defaults(&cfg);
    cfg.model.embedding_dim = 2;
    MrModelShape s;
    MrErr e;
    CU_ASSERT_FATAL(mr_model_shape(&s, &cfg, 10, 10, &e) == MR_OK);
    MrkBufs_d w;
    CU_ASSERT_FATAL(mr_mk_bufs_init_d(&w, &s, 4, 4, 1, 1, 1, &e) == MR_OK);
    double C[8] = {1, 2, 3, 4, 5, 6, 7, 8}, dC[8], loss = 7;
    for (int i = 0; i < 8; i++)
        dC[i] = 99;
    MrRetrievalOpts o = {0};
    CU_ASSERT_EQUAL(mr_mk_retrieval_loss_d(&o, 0, 4, 2, NULL, C, 0, NULL, NULL, 1, NULL, dC, &loss, &w, &e), 0);
    CU_ASSERT_EQUAL(loss, 0.0);
    for (int i = 0; i < 8; i++)
        CU_ASSERT_EQUAL(dC[i], 0.0);
    /* contract violations are errors, not crashes */
    CU_ASSERT_EQUAL(mr_mk_retrieval_loss_d(&o, 3, 2, 2, C, C, 0, NULL, NULL, 1, dC, dC, &loss, &w, &e),
                    MR_EINTERNAL);
    o.remove_accidental_hits = 1;
    CU_ASSERT_EQUAL(mr_mk_retrieval_loss_d(&o, 2, 4, 2, C, C, 0, NULL, NULL, 1, dC, dC, &loss, &w, &e),
                    MR_EINTERNAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "ids"));
    mr_mk_bufs_free_d(&w);
}

/* ---- full towers ---- */

typedef struct {
    MrModelShape s;
    double *params, *gscratch;
    double U[3 * 4], I[4 * 4], Tk[6 * 3], rating[5];
    int32_t uslot[5], islot[5], tslot[9];
    int64_t tok_off[6], ids[5];
    MrkBatch_d b;
    MrkBufs_d w;
    double wr, wrat; /* loss weights; 0 = term absent */
    MrRetrievalOpts o;
} FullCtx;

static double full_obj(void *p)
{
    FullCtx *c = p;
    MrErr e;
    mr_mk_towers_forward_d(&c->s, c->params, &c->b, &c->w);
    double L = 0, loss = 0, sse = 0;
    if (c->wr > 0) {
        CU_ASSERT_EQUAL(mr_mk_retrieval_loss_d(&c->o, c->b.B, c->b.B, c->s.qout, c->w.Q, c->w.Cl,
                                               0, c->ids, NULL, c->wr, c->w.dQ, c->w.dCl, &loss,
                                               &c->w, &e),
                        MR_OK);
        L += loss;
    } else {
        memset(c->w.dQ, 0, (size_t)(c->b.B * c->s.qout) * sizeof(double));
        memset(c->w.dCl, 0, (size_t)(c->b.B * c->s.cout) * sizeof(double));
    }
    if (c->wrat > 0) {
        memset(c->gscratch, 0, c->s.n_dense * sizeof(double));
        mr_mk_rating_step_d(&c->s, c->params, c->gscratch, &c->b, c->b.B, c->wrat, &c->w, &sse);
        L += c->wrat * sse / (double)c->b.B;
    }
    return L;
}

/* The whole step (forward, retrieval loss, rating step, backward) against finite
 * differences of the total loss over every dense parameter and every row of the U,
 * I and Tk buffers. The batch repeats users (slots 0 and 1) and items (slot 1), has
 * a zero-token example and a repeated token. */
static void check_full(const char *name, MrTask task, int text, const int *ql, int nq,
                       const int *cl, int nc, double wr, double wrat)
{
    MrConfig cfg;
    mr_config_defaults(&cfg);
    cfg.model.task = task;
    cfg.model.embedding_dim = 4;
    cfg.model.text.enabled = text;
    cfg.model.text.dim = 3;
    cfg.model.text.max_tokens = 6;
    cfg.model.query_layers.n = nq;
    memcpy(cfg.model.query_layers.v, ql, (size_t)nq * sizeof(int));
    cfg.model.candidate_layers.n = nc;
    memcpy(cfg.model.candidate_layers.v, cl, (size_t)nc * sizeof(int));
    cfg.model.ranking_layers.n = 1;
    cfg.model.ranking_layers.v[0] = 5;
    FullCtx c = {.wr = wr, .wrat = wrat,
                 .uslot = {0, 1, 0, 2, 1}, .islot = {1, 0, 3, 1, 2},
                 .tok_off = {0, 3, 3, 5, 6, 9}, .tslot = {0, 1, 1, 5, 2, 3, 4, 0, 1},
                 .ids = {11, 10, 13, 11, 12}};
    c.o.remove_accidental_hits = 1; /* items 0 and 3 share slot 1: a real accidental hit */
    MrErr e;
    CU_ASSERT_FATAL(mr_model_shape(&c.s, &cfg, 3, 4, &e) == MR_OK);
    c.params = calloc(c.s.n_dense, sizeof(double));
    c.gscratch = calloc(c.s.n_dense, sizeof(double));
    double *grads = calloc(c.s.n_dense, sizeof(double));
    fill(c.params, (int64_t)c.s.n_dense, -0.8, 0.8);
    fill(c.U, 12, -1, 1);
    fill(c.I, 16, -1, 1);
    fill(c.Tk, 18, -1, 1);
    fill(c.rating, 5, 1, 5);
    c.b = (MrkBatch_d){.B = 5, .uslot = c.uslot, .islot = c.islot, .tok_off = c.tok_off,
                       .tslot = c.tslot, .rating = c.rating, .nu = 3, .ni = 4, .nt = 6,
                       .U = c.U, .I = c.I, .Tk = c.Tk};
    CU_ASSERT_FATAL(mr_mk_bufs_init_d(&c.w, &c.s, 5, 5, 3, 4, 6, &e) == MR_OK);
    /* analytic: the step as the trainer runs it */
    full_obj(&c);
    if (wrat > 0)
        memcpy(grads, c.gscratch, c.s.n_dense * sizeof(double));
    mr_mk_towers_backward_d(&c.s, c.params, grads, &c.b, &c.w);
    double dU[12], dI[16], dTk[18];
    memcpy(dU, c.w.dU, sizeof dU);
    memcpy(dI, c.w.dI, sizeof dI);
    memcpy(dTk, c.w.dTk, sizeof dTk);
    char what[96];
    snprintf(what, sizeof what, "%s dense", name);
    CU_ASSERT_EQUAL(fd_check(what, full_obj, &c, c.params, (int64_t)c.s.n_dense, grads), 0);
    snprintf(what, sizeof what, "%s dU", name);
    CU_ASSERT_EQUAL(fd_check(what, full_obj, &c, c.U, 12, dU), 0);
    snprintf(what, sizeof what, "%s dI", name);
    CU_ASSERT_EQUAL(fd_check(what, full_obj, &c, c.I, 16, dI), 0);
    if (text) {
        snprintf(what, sizeof what, "%s dTk", name);
        CU_ASSERT_EQUAL(fd_check(what, full_obj, &c, c.Tk, 18, dTk), 0);
    }
    free(c.params);
    free(c.gscratch);
    free(grads);
    mr_mk_bufs_free_d(&c.w);
}

static void test_grad_towers_retrieval(void)
{
    const int ql[2] = {6, 3}, cl[2] = {5, 3};
    check_full("retrieval text q[6,3] c[5,3]", MR_TASK_RETRIEVAL, 1, ql, 2, cl, 2, 1.0, 0);
    check_full("retrieval no layers", MR_TASK_RETRIEVAL, 0, ql, 0, cl, 0, 1.0, 0);
}

static void test_grad_towers_multitask(void)
{
    const int ql[2] = {6, 3}, cl[1] = {3};
    check_full("multitask text", MR_TASK_MULTITASK, 1, ql, 2, cl, 1, 0.5, 0.7);
    check_full("ranking", MR_TASK_RANKING, 0, ql, 1, cl, 1, 0, 1.0);
}

int add_suite_model_grad(void)
{
    CU_pSuite s = CU_add_suite("model_grad", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "gather_scatter", test_grad_gather_scatter);
    CU_add_test(s, "masked_mean", test_grad_masked_mean);
    CU_add_test(s, "concat", test_grad_concat);
    CU_add_test(s, "dense_linear", test_grad_dense_linear);
    CU_add_test(s, "dense_relu", test_grad_dense_relu);
    CU_add_test(s, "mse", test_grad_mse);
    CU_add_test(s, "retrieval_plain", test_grad_retrieval_plain);
    CU_add_test(s, "retrieval_temperature", test_grad_retrieval_temperature);
    CU_add_test(s, "retrieval_logq", test_grad_retrieval_logq);
    CU_add_test(s, "retrieval_accidental_hits", test_grad_retrieval_accidental_hits);
    CU_add_test(s, "retrieval_hard_negatives", test_grad_retrieval_hard_negatives);
    CU_add_test(s, "retrieval_hard_negatives_full", test_retrieval_hard_negatives_full);
    CU_add_test(s, "retrieval_hard_negative_ties", test_retrieval_hard_negative_ties);
    CU_add_test(s, "retrieval_hard_negatives_late_positive",
                test_retrieval_hard_negatives_late_positive);
    CU_add_test(s, "retrieval_global", test_grad_retrieval_global);
    CU_add_test(s, "retrieval_all_options", test_grad_retrieval_all);
    CU_add_test(s, "retrieval_empty", test_retrieval_empty);
    CU_add_test(s, "towers_retrieval", test_grad_towers_retrieval);
    CU_add_test(s, "towers_multitask", test_grad_towers_multitask);
    return CU_get_error() == CUE_SUCCESS ? 0 : -1;
}
