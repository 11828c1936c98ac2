/* test_optim.c — Keras Adagrad, SGD and Adam (include/mpirec/optim.h).
 *
 * Expected values are computed here in double from the formulas of SEMANTICS.md
 * section 6 / Keras 2.15 (optimizers/adagrad.py, adam.py), step by step, and compared
 * with the float implementation within float tolerance. The row-wise update is
 * checked against the dense update on a full gradient (bitwise, as Keras's sparse
 * and dense Adagrad agree), with untouched rows bitwise unchanged.
 */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mpirec/config.h"
#include "mpirec/optim.h"
#include "test_util.h"

static MrOptimizer make(MrOptName name, double lr, double init_acc, double eps)
{
    MrConfig c;
    mr_config_defaults(&c);
    c.optimizer.name = name;
    c.optimizer.lr = lr;
    c.optimizer.initial_accumulator = init_acc;
    c.optimizer.epsilon = eps;
    MrOptimizer o;
    mr_optim_from_config(&o, &c);
    return o;
}

static int close_to(float got, double want)
{
    int ok = fabs((double)got - want) <= 1e-6 * (1 + fabs(want));
    if (!ok)
        fprintf(stderr, "  got %.9g want %.9g\n", (double)got, want);
    return ok;
}

/* Defaults from the config table; Adagrad keeps one accumulator starting at
 * initial_accumulator, Adam two zeroed moments, SGD none. */
static void test_optim_config(void)
{
    MrConfig c;
    mr_config_defaults(&c);
    MrOptimizer o;
    mr_optim_from_config(&o, &c);
    CU_ASSERT_EQUAL(o.name, MR_OPT_ADAGRAD);
    CU_ASSERT_DOUBLE_EQUAL(o.lr, 0.1, 0);
    CU_ASSERT_DOUBLE_EQUAL(o.emb_lr, 0.1, 0); /* embedding_lr -1 = lr */
    CU_ASSERT_DOUBLE_EQUAL(o.init_acc, 0.1, 0);
    CU_ASSERT_DOUBLE_EQUAL(o.eps, 1e-7, 0);
    CU_ASSERT_EQUAL(mr_optim_state_per_param(&o), 1);
    CU_ASSERT_EQUAL(mr_optim_state_init(&o, 0), 0.1f);
    c.optimizer.embedding_lr = 0.5;
    c.optimizer.name = MR_OPT_ADAM;
    mr_optim_from_config(&o, &c);
    CU_ASSERT_DOUBLE_EQUAL(o.emb_lr, 0.5, 0);
    CU_ASSERT_EQUAL(mr_optim_state_per_param(&o), 2);
    CU_ASSERT_EQUAL(mr_optim_state_init(&o, 0), 0.0f);
    CU_ASSERT_EQUAL(mr_optim_state_init(&o, 1), 0.0f);
    o.name = MR_OPT_SGD;
    CU_ASSERT_EQUAL(mr_optim_state_per_param(&o), 0);
}

/* Three dense steps with w -= lr g / sqrt(acc + eps). The second parameter starts
 * with a zero accumulator and a tiny gradient, where eps inside the root
 * (sqrt(1e-8 + 1e-7)) and eps outside it (sqrt(1e-8) + 1e-7) differ by 3x. */
static void test_adagrad_dense(void)
{
    MrOptimizer o = make(MR_OPT_ADAGRAD, 0.1, 0.1, 1e-7);
    float w[2] = {1.0f, 0.5f}, acc[2] = {0.1f, 0.0f};
    double wd[2] = {1.0, 0.5}, ad[2] = {0.1, 0.0};
    const float g[3][2] = {{0.5f, 1e-4f}, {-2.0f, 1e-4f}, {0.25f, -3e-4f}};
    for (int t = 0; t < 3; t++) {
        mr_optim_dense_update(&o, w, acc, g[t], 2);
        for (int i = 0; i < 2; i++) {
            ad[i] += (double)g[t][i] * g[t][i];
            wd[i] -= 0.1 * g[t][i] / sqrt(ad[i] + 1e-7);
            CU_ASSERT(close_to(acc[i], ad[i]));
            CU_ASSERT(close_to(w[i], wd[i]));
        }
        mr_optim_step_done(&o);
    }
    /* the eps-outside variant would be far from this */
    double outside = 0.5 - 0.1 * 1e-4 / (sqrt(1e-8) + 1e-7);
    CU_ASSERT(fabs(0.5 - 0.1 * 1e-4 / sqrt(1e-8 + 1e-7) - outside) > 1e-2);
}

/* Row-wise update of rows {4, 1, 2} of a 6 x 3 table equals the dense update with
 * a full gradient that is zero elsewhere, bitwise; rows 0, 3, 5 and their
 * accumulators are bitwise unchanged. */
static void test_adagrad_rows_equal_dense(void)
{
    MrOptimizer o = make(MR_OPT_ADAGRAD, 0.1, 0.1, 1e-7);
    o.emb_lr = o.lr;
    float table[18], state[18], dtable[18], dstate[18], orig[18], full[18] = {0};
    for (int i = 0; i < 18; i++) {
        table[i] = dtable[i] = orig[i] = 0.01f * (float)(i * 7 % 11) - 0.05f;
        state[i] = dstate[i] = 0.1f + 0.01f * (float)i;
    }
    const int64_t rows[3] = {4, 1, 2};
    const float g[9] = {0.3f, -0.7f, 2.5f, 0.01f, -0.02f, 0.0f, -1.5f, 0.4f, 0.9f};
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++)
            full[rows[i] * 3 + k] = g[i * 3 + k];
    mr_optim_rows_update(&o, table, state, 6, 3, rows, g, 3);
    mr_optim_dense_update(&o, dtable, dstate, full, 18);
    CU_ASSERT_EQUAL(memcmp(table, dtable, sizeof table), 0);
    CU_ASSERT_EQUAL(memcmp(state, dstate, sizeof state), 0);
    const int untouched[3] = {0, 3, 5};
    for (int u = 0; u < 3; u++)
        for (int k = 0; k < 3; k++) {
            int i = untouched[u] * 3 + k;
            CU_ASSERT_EQUAL(memcmp(&table[i], &orig[i], sizeof(float)), 0);
            CU_ASSERT_EQUAL(state[i], 0.1f + 0.01f * (float)i);
        }
    /* touched rows moved */
    CU_ASSERT(table[4 * 3] != orig[4 * 3]);
}

/* Keras de-duplicates a row looked up twice by summing the two gradients before the
 * update: one update with g1 + g2 — which is not two updates with g1 then g2. */
static void test_adagrad_duplicates_summed_first(void)
{
    MrOptimizer o = make(MR_OPT_ADAGRAD, 0.1, 0.1, 1e-7);
    float w = 0.02f, acc = 0.1f, g = 0.3f + 0.6f;
    const int64_t row = 0;
    mr_optim_rows_update(&o, &w, &acc, 1, 1, &row, &g, 1);
    double want = 0.02 - 0.1 * 0.9 / sqrt(0.1 + 0.81 + 1e-7);
    CU_ASSERT(close_to(w, want));
    float w2 = 0.02f, acc2 = 0.1f, g1 = 0.3f, g2 = 0.6f;
    mr_optim_rows_update(&o, &w2, &acc2, 1, 1, &row, &g1, 1);
    mr_optim_rows_update(&o, &w2, &acc2, 1, 1, &row, &g2, 1);
    CU_ASSERT(fabs((double)w2 - want) > 1e-3);
}

static void test_sgd(void)
{
    MrOptimizer o = make(MR_OPT_SGD, 0.25, 0.1, 1e-7);
    o.emb_lr = 0.5;
    float w[3] = {1.0f, -2.0f, 0.5f};
    const float g[3] = {0.4f, -1.0f, 0.0f};
    mr_optim_dense_update(&o, w, NULL, g, 3);
    CU_ASSERT(close_to(w[0], 0.9));
    CU_ASSERT(close_to(w[1], -1.75));
    CU_ASSERT_EQUAL(w[2], 0.5f);
    float table[4] = {1, 1, 1, 1};
    const int64_t rows[1] = {1};
    const float gr[2] = {1.0f, -2.0f};
    mr_optim_rows_update(&o, table, NULL, 2, 2, rows, gr, 1); /* emb_lr 0.5 */
    CU_ASSERT_EQUAL(table[0], 1.0f);
    CU_ASSERT(close_to(table[2], 0.5));
    CU_ASSERT(close_to(table[3], 2.0));
}

/* Keras Adam for three steps: alpha_t = lr sqrt(1-b2^t)/(1-b1^t),
 * m += (g-m)(1-b1), v += (g^2-v)(1-b2), w -= alpha_t m / (sqrt(v) + eps).
 * Row-wise Adam is lazy: a row not updated at step 2 keeps m and v, and its next
 * update uses the global t. */
static void test_adam(void)
{
    MrOptimizer o = make(MR_OPT_ADAM, 0.01, 0.1, 1e-7);
    o.beta1 = 0.9;
    o.beta2 = 0.999;
    o.emb_lr = 0.01;
    float w[2] = {0.5f, -0.3f}, st[4] = {0, 0, 0, 0}; /* m[2], v[2] */
    double wd[2] = {0.5, -0.3}, md[2] = {0, 0}, vd[2] = {0, 0};
    const float g[3][2] = {{0.2f, -1.0f}, {0.1f, 0.5f}, {-0.4f, 0.05f}};
    /* table of 2 rows x 2: row 1 is updated at steps 1 and 3 only */
    float table[4] = {0.1f, 0.2f, 0.3f, 0.4f}, tst[8] = {0};
    double rd[2] = {0.3, 0.4}, rm[2] = {0, 0}, rv[2] = {0, 0};
    for (int t = 1; t <= 3; t++) {
        mr_optim_dense_update(&o, w, st, g[t - 1], 2);
        double alpha = 0.01 * sqrt(1 - pow(0.999, t)) / (1 - pow(0.9, t));
        for (int i = 0; i < 2; i++) {
            md[i] += (g[t - 1][i] - md[i]) * 0.1;
            vd[i] += ((double)g[t - 1][i] * g[t - 1][i] - vd[i]) * 0.001;
            wd[i] -= alpha * md[i] / (sqrt(vd[i]) + 1e-7);
            CU_ASSERT(close_to(st[i], md[i]));
            CU_ASSERT(close_to(st[2 + i], vd[i]));
            CU_ASSERT(close_to(w[i], wd[i]));
        }
        if (t != 2) {
            const int64_t row = 1;
            mr_optim_rows_update(&o, table, tst, 2, 2, &row, g[t - 1], 1);
            for (int i = 0; i < 2; i++) {
                rm[i] += (g[t - 1][i] - rm[i]) * 0.1;
                rv[i] += ((double)g[t - 1][i] * g[t - 1][i] - rv[i]) * 0.001;
                rd[i] -= alpha * rm[i] / (sqrt(rv[i]) + 1e-7);
                CU_ASSERT(close_to(table[2 + i], rd[i]));
                CU_ASSERT(close_to(tst[2 + i], rm[i]));     /* m of row 1 (slot 0) */
                CU_ASSERT(close_to(tst[4 + 2 + i], rv[i])); /* v of row 1 (slot 1) */
            }
        }
        mr_optim_step_done(&o);
    }
    CU_ASSERT_EQUAL(o.step, 3);
    /* row 0 was never touched: value and both moments as they were */
    CU_ASSERT_EQUAL(table[0], 0.1f);
    CU_ASSERT_EQUAL(table[1], 0.2f);
    CU_ASSERT_EQUAL(tst[0], 0.0f);
    CU_ASSERT_EQUAL(tst[4], 0.0f);
}

/* Long spans run in vector code with a scalar tail; one parameter at a time is all
 * scalar. Both must give bitwise the same numbers (IEEE sqrt and division are
 * correctly rounded), for Adagrad and Adam, dense and row-wise. */
static void test_vector_equals_scalar(void)
{
    const MrOptName names[2] = {MR_OPT_ADAGRAD, MR_OPT_ADAM};
    for (int a = 0; a < 2; a++) {
        MrOptimizer o = make(names[a], 0.05, 0.1, 1e-7);
        o.emb_lr = 0.07;
        enum { N = 77 };
        float w1[N], w2[N], s1[2 * N], s2[2 * N], g[80]; /* 80: also two rows of 40 */
        for (int i = 77; i < 80; i++)
            g[i] = 0.5f - 0.25f * (float)i;
        for (int i = 0; i < N; i++) {
            w1[i] = w2[i] = 0.01f * (float)((i * 13) % 17) - 0.08f;
            g[i] = 0.3f * (float)((i * 7) % 11) - 1.4f;
            s1[i] = s2[i] = a ? 0.02f * (float)(i % 5) : 0.1f + 0.001f * (float)i;
            s1[N + i] = s2[N + i] = 0.001f * (float)(i % 3);
        }
        for (int step = 0; step < 3; step++) {
            mr_optim_dense_update(&o, w1, s1, g, N); /* vector spans + tail */
            for (int i = 0; i < N; i++) {            /* scalar, one by one */
                float st[2] = {s2[i], s2[N + i]};
                mr_optim_dense_update(&o, &w2[i], st, &g[i], 1);
                s2[i] = st[0];
                s2[N + i] = st[1];
            }
            mr_optim_step_done(&o);
        }
        CU_ASSERT_EQUAL(memcmp(w1, w2, sizeof w1), 0);
        CU_ASSERT_EQUAL(memcmp(s1, s2, sizeof s1), 0);
        /* row-wise on rows 2 and 0 of a 3 x 40 table (vector spans of a row plus a
         * tail) against the same elements updated one at a time */
        float t1[120], t2[120], r1[240], r2[240];
        for (int i = 0; i < 120; i++) {
            t1[i] = t2[i] = 0.001f * (float)i;
            r1[i] = r2[i] = a ? 0.01f : 0.1f;
            r1[120 + i] = r2[120 + i] = 0.002f;
        }
        const int64_t rows[2] = {2, 0};
        mr_optim_rows_update(&o, t1, r1, 3, 40, rows, g, 2);
        for (int i = 0; i < 2; i++)
            for (int k = 0; k < 40; k++) {
                int64_t e = rows[i] * 40 + k;
                float st[2] = {r2[e], r2[120 + e]};
                const int64_t one = 0;
                mr_optim_rows_update(&o, &t2[e], st, 1, 1, &one, &g[i * 40 + k], 1);
                r2[e] = st[0];
                r2[120 + e] = st[1];
            }
        CU_ASSERT_EQUAL(memcmp(t1, t2, sizeof t1), 0);
        CU_ASSERT_EQUAL(memcmp(r1, r2, sizeof r1), 0);
        for (int k = 0; k < 40; k++) /* row 1 untouched */
            CU_ASSERT_EQUAL(t1[40 + k], 0.001f * (float)(40 + k));
    }
}

int add_suite_optim(void)
{
    CU_pSuite s = CU_add_suite("optim", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "config", test_optim_config);
    CU_add_test(s, "adagrad_dense", test_adagrad_dense);
    CU_add_test(s, "adagrad_rows_equal_dense", test_adagrad_rows_equal_dense);
    CU_add_test(s, "adagrad_duplicates_summed_first", test_adagrad_duplicates_summed_first);
    CU_add_test(s, "sgd", test_sgd);
    CU_add_test(s, "adam", test_adam);
    CU_add_test(s, "vector_equals_scalar", test_vector_equals_scalar);
    return CU_get_error() == CUE_SUCCESS ? 0 : -1;
}
