/* test_model.c — the float model API of include/mpirec/model.h: shapes and
 * parameter layout, initial values against the reference's test vectors, the
 * vectorised exp, the float training step against the double kernels, duplicate
 * rows, the evaluation paths and the contract checks.
 *
 * Gradients themselves are checked by finite differences in test_model_grad.c (on
 * the double instantiation); here the float path is compared with that double path
 * on the same inputs, at sizes that cross the retrieval row blocks and the 16-lane
 * tails of the softmax passes.
 */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"
#include "mpirec/config.h"
#include "mpirec/hash.h"
#include "mpirec/model.h"
#include "test_util.h"

static uint64_t g_rng = 777;
static double urand(double lo, double hi)
{
    g_rng = mr_splitmix64(g_rng);
    return lo + (hi - lo) * mr_hash_unit(g_rng);
}

/* Mismatches of a float result against a double one under atol + rtol |want|;
 * prints the first few and the largest difference. */
static int compare_fd(const char *what, const float *got, const double *want, int64_t n,
                      double atol, double rtol)
{
    int bad = 0;
    double maxd = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= maxd))
            maxd = d;
        if (!(d <= atol + rtol * fabs(want[i]))) {
            if (bad < 5)
                fprintf(stderr, "  %s[%lld]: float %.9g double %.9g\n", what, (long long)i,
                        (double)got[i], want[i]);
            bad++;
        }
    }
    if (bad)
        fprintf(stderr, "  %s: %d of %lld mismatch, max diff %.3g\n", what, bad, (long long)n, maxd);
    return bad;
}

/* Float against float: the same computation through different chunkings may round
 * differently inside BLAS, so allow a few ulps. */
static int compare_ff(const char *what, const float *got, const float *want, int64_t n)
{
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (!(fabsf(got[i] - want[i]) <= 1e-6f + 1e-5f * fabsf(want[i]))) {
            if (bad < 5)
                fprintf(stderr, "  %s[%lld]: %.9g vs %.9g\n", what, (long long)i, (double)got[i],
                        (double)want[i]);
            bad++;
        }
    return bad;
}

static void base_config(MrConfig *c, MrTask task, int D)
{
    mr_config_defaults(c);
    c->model.task = task;
    c->model.embedding_dim = D;
}

/* ---- initial values ---- */

/* Values copied from ../shared/reference/test_vectors.jsonl ("init user_emb stream 1,
 * dim 4, rows 0..1" and "init q-dense 0 (stream 100) W[0,0:4] for in=64,out=32"),
 * produced by ref_torch.py --print-test-vectors. */
static const float want_user[8] = {-0.02452269196510315f, 0.012546330690383911f,
                                   0.035563189536333084f, 0.033626604825258255f,
                                   -0.007330792956054211f, 0.027346109971404076f,
                                   0.009293818846344948f, 0.04000140354037285f};
static const float want_q0[4] = {-0.19532325863838196f, 0.11881542205810547f,
                                 0.16587406396865845f, 0.16214004158973694f};

static void test_init_embedding_vectors(void)
{
    float rows[8];
    mr_embedding_init_rows(rows, 42, MR_STREAM_USER, 0, 2, 4, 0.05);
    for (int j = 0; j < 8; j++)
        CU_ASSERT_EQUAL(rows[j], want_user[j]);
    /* a later range starts at the right counter: row 1 alone */
    mr_embedding_init_rows(rows, 42, MR_STREAM_USER, 1, 2, 4, 0.05);
    for (int j = 0; j < 4; j++)
        CU_ASSERT_EQUAL(rows[j], want_user[4 + j]);
    /* the list form gives the same rows in the asked order */
    const int64_t list[3] = {1, 0, 1};
    float got[12];
    mr_embedding_init_list(got, 42, MR_STREAM_USER, list, 3, 4, 0.05);
    for (int j = 0; j < 4; j++) {
        CU_ASSERT_EQUAL(got[j], want_user[4 + j]);
        CU_ASSERT_EQUAL(got[4 + j], want_user[j]);
        CU_ASSERT_EQUAL(got[8 + j], want_user[4 + j]);
    }
}

/* A query tower whose first Dense is 64 -> 32 (id dim 64, no text): its kernel's
 * first row starts with the reference's vector; the bias is zero. */
static void test_init_dense_vector(void)
{
    MrConfig c;
    base_config(&c, MR_TASK_RETRIEVAL, 64);
    c.model.query_layers.n = 1;
    c.model.query_layers.v[0] = 32;
    c.model.candidate_layers.n = 1;
    c.model.candidate_layers.v[0] = 32;
    MrModelShape s;
    MrErr e;
    CU_ASSERT_FATAL(mr_model_shape(&s, &c, 100, 100, &e) == MR_OK);
    MrModel m;
    CU_ASSERT_FATAL(mr_model_init(&m, &s, 42, &e) == MR_OK);
    for (int j = 0; j < 4; j++)
        CU_ASSERT_EQUAL(m.params[s.q[0].w_off + (size_t)j], want_q0[j]);
    for (int k = 0; k < 32; k++) {
        CU_ASSERT_EQUAL(m.params[s.q[0].b_off + (size_t)k], 0.0f);
        CU_ASSERT_EQUAL(m.params[s.c[0].b_off + (size_t)k], 0.0f);
    }
    /* Glorot limit sqrt(6/96) bounds every kernel entry; both towers differ (streams). */
    double lim = sqrt(6.0 / 96.0);
    int differ = 0;
    for (size_t j = 0; j < 64 * 32; j++) {
        CU_ASSERT(fabs(m.params[s.q[0].w_off + j]) <= lim);
        differ += m.params[s.q[0].w_off + j] != m.params[s.c[0].w_off + j];
    }
    CU_ASSERT(differ > 2000);
    mr_model_free(&m);
}

/* ---- shape ---- */

static void test_shape_layout(void)
{
    MrConfig c;
    base_config(&c, MR_TASK_MULTITASK, 8);
    c.model.text.enabled = 1;
    c.model.text.dim = 5;
    c.model.text.max_tokens = 50;
    c.model.query_layers.n = 2;
    c.model.query_layers.v[0] = 16;
    c.model.query_layers.v[1] = 6;
    c.model.candidate_layers.n = 1;
    c.model.candidate_layers.v[0] = 6;
    c.model.ranking_layers.n = 2;
    c.model.ranking_layers.v[0] = 7;
    c.model.ranking_layers.v[1] = 3;
    MrModelShape s;
    MrErr e;
    CU_ASSERT_FATAL(mr_model_shape(&s, &c, 11, 12, &e) == MR_OK);
    CU_ASSERT_EQUAL(s.qin, 13);
    CU_ASSERT_EQUAL(s.text_rows, 50);
    CU_ASSERT_EQUAL(s.qout, 6);
    CU_ASSERT_EQUAL(s.cout, 6);
    CU_ASSERT_EQUAL(s.nq, 2);
    CU_ASSERT_EQUAL(s.nc, 1);
    CU_ASSERT_EQUAL(s.nr, 3);
    /* ReLU between layers, none after the last; the rating head ends in Dense(1). */
    CU_ASSERT(s.q[0].relu && !s.q[1].relu && !s.c[0].relu);
    CU_ASSERT(s.r[0].relu && s.r[1].relu && !s.r[2].relu);
    CU_ASSERT_EQUAL(s.r[0].in, 12);
    CU_ASSERT_EQUAL(s.r[2].out, 1);
    CU_ASSERT_EQUAL(s.q[1].stream, 101u);
    CU_ASSERT_EQUAL(s.c[0].stream, 200u);
    CU_ASSERT_EQUAL(s.r[2].stream, 302u);
    /* contiguous: q0 W, q0 b, q1 W, q1 b, c0 W, c0 b, r0 ... */
    size_t off = 0;
    const MrDense *all[6] = {&s.q[0], &s.q[1], &s.c[0], &s.r[0], &s.r[1], &s.r[2]};
    for (int i = 0; i < 6; i++) {
        CU_ASSERT_EQUAL(all[i]->w_off, off);
        off += (size_t)all[i]->in * (size_t)all[i]->out;
        CU_ASSERT_EQUAL(all[i]->b_off, off);
        off += (size_t)all[i]->out;
    }
    CU_ASSERT_EQUAL(s.n_dense, off);
    CU_ASSERT_EQUAL(off, (size_t)(13 * 16 + 16 + 16 * 6 + 6 + 8 * 6 + 6 + 12 * 7 + 7 + 7 * 3 + 3 + 3 + 1));

    char name[96];
    mr_model_param_name(&s, s.q[1].w_off + 7, name, sizeof name);
    CU_ASSERT_STRING_EQUAL(name, "query dense 1 kernel [1, 1]");
    mr_model_param_name(&s, s.r[2].b_off, name, sizeof name);
    CU_ASSERT_STRING_EQUAL(name, "rating dense 2 bias [0]");
    mr_model_param_name(&s, s.n_dense + 3, name, sizeof name);
    CU_ASSERT_PTR_NOT_NULL(strstr(name, "not a dense parameter"));
}

static void test_shape_errors(void)
{
    MrConfig c;
    MrModelShape s;
    MrErr e;
    base_config(&c, MR_TASK_RETRIEVAL, 8);
    c.model.query_layers.n = 1;
    c.model.query_layers.v[0] = 4;
    CU_ASSERT_EQUAL(mr_model_shape(&s, &c, 5, 5, &e), MR_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "query 4 and candidate 8"));
    c.model.task = MR_TASK_RANKING; /* ranking concatenates: unequal sizes are fine */
    CU_ASSERT_EQUAL(mr_model_shape(&s, &c, 5, 5, &e), MR_OK);
    CU_ASSERT_EQUAL(s.r[0].in, 12);
    c.model.ranking_layers.n = MR_MAX_DENSE; /* + Dense(1) is one too many */
    for (int l = 0; l < MR_MAX_DENSE; l++)
        c.model.ranking_layers.v[l] = 2;
    CU_ASSERT_EQUAL(mr_model_shape(&s, &c, 5, 5, &e), MR_ECONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "at most"));
    base_config(&c, MR_TASK_RETRIEVAL, 8);
    CU_ASSERT_EQUAL(mr_model_shape(&s, &c, 0, 5, &e), MR_ECONFIG);
}

/* ---- exp ---- */

/* Max error over a dense sweep of the softmax's domain, against libm in double. */
static void test_fast_exp(void)
{
    int64_t n = 2000003; /* odd: the 16-lane tail is exercised */
    float *x = malloc((size_t)n * sizeof(float)), *y = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        x[i] = -86.4f + 175.0f * (float)((double)i / (double)n); /* [-86.4, 88.6] */
    mr_mk_expf_array(x, y, n);
    double maxu = 0;
    for (int64_t i = 0; i < n; i++) {
        double ref = exp((double)x[i]);
        float rf = (float)ref;
        double ulp = (double)nextafterf(rf, INFINITY) - (double)rf;
        double u = fabs((double)y[i] - ref) / ulp;
        maxu = u > maxu ? u : maxu;
    }
    if (maxu > 1.5)
        fprintf(stderr, "  fast exp: max error %.3f ulp\n", maxu);
    CU_ASSERT(maxu <= 1.5);
    free(x);
    free(y);
    const float sx[9] = {0.0f, -INFINITY, -87.0f, -1000.0f, 88.8f, 1000.0f, NAN, 1.0f, -1.0f};
    float sy[9];
    mr_mk_expf_array(sx, sy, 9);
    CU_ASSERT_EQUAL(sy[0], 1.0f);
    CU_ASSERT_EQUAL(sy[1], 0.0f);
    CU_ASSERT_EQUAL(sy[2], 0.0f); /* flushed: documented */
    CU_ASSERT_EQUAL(sy[3], 0.0f);
    CU_ASSERT(isinf(sy[4]) && sy[4] > 0);
    CU_ASSERT(isinf(sy[5]) && sy[5] > 0);
    CU_ASSERT(isnan(sy[6]));
    CU_ASSERT(fabsf(sy[7] - 2.7182817f) <= 3e-7f);
    CU_ASSERT(fabsf(sy[8] - 0.36787945f) <= 3e-8f);
}

/* ---- the float step against the double kernels ---- */

typedef struct {
    MrModelShape s;
    int64_t B, nu, ni, nt;
    double *Pd, *Ud, *Id, *Tkd, *rd;
    float *Pf, *Uf, *If, *Tkf, *rf;
    int32_t *uslot, *islot, *tslot;
    int64_t *tok_off, *ids;
    double *pd;
    float *pf;
} Fixture;

/* Inputs drawn in double and rounded to float; the double copy is the rounded value,
 * so both precisions start from identical numbers. */
static void rnd_pair(double *d, float *f, int64_t n, double lo, double hi)
{
    for (int64_t i = 0; i < n; i++) {
        f[i] = (float)urand(lo, hi);
        d[i] = f[i];
    }
}

static void fixture_make(Fixture *x, const MrConfig *c, int64_t B, int64_t nu, int64_t ni, int64_t nt)
{
    memset(x, 0, sizeof *x);
    MrErr e;
    CU_ASSERT_FATAL(mr_model_shape(&x->s, c, nu, ni, &e) == MR_OK);
    x->B = B;
    x->nu = nu;
    x->ni = ni;
    x->nt = nt;
    size_t P = x->s.n_dense;
    int D = x->s.D, T = x->s.T > 0 ? x->s.T : 1;
    x->Pd = malloc(P * sizeof(double));
    x->Pf = malloc(P * sizeof(float));
    rnd_pair(x->Pd, x->Pf, (int64_t)P, -0.4, 0.4);
    x->Ud = malloc((size_t)(nu * D) * sizeof(double));
    x->Uf = malloc((size_t)(nu * D) * sizeof(float));
    rnd_pair(x->Ud, x->Uf, nu * D, -0.5, 0.5);
    x->Id = malloc((size_t)(ni * D) * sizeof(double));
    x->If = malloc((size_t)(ni * D) * sizeof(float));
    rnd_pair(x->Id, x->If, ni * D, -0.5, 0.5);
    x->Tkd = malloc((size_t)(nt * T) * sizeof(double));
    x->Tkf = malloc((size_t)(nt * T) * sizeof(float));
    rnd_pair(x->Tkd, x->Tkf, nt * T, -0.5, 0.5);
    x->rd = malloc((size_t)B * sizeof(double));
    x->rf = malloc((size_t)B * sizeof(float));
    rnd_pair(x->rd, x->rf, B, 1, 5);
    x->uslot = malloc((size_t)B * sizeof(int32_t));
    x->islot = malloc((size_t)B * sizeof(int32_t));
    x->ids = malloc((size_t)B * sizeof(int64_t));
    x->tok_off = malloc((size_t)(B + 1) * sizeof(int64_t));
    x->tslot = malloc((size_t)(B * 6 + 1) * sizeof(int32_t));
    x->pd = malloc((size_t)B * sizeof(double));
    x->pf = malloc((size_t)B * sizeof(float));
    int64_t t = 0;
    for (int64_t b = 0; b < B; b++) {
        x->uslot[b] = (int32_t)(mr_mix(1, (uint64_t)b) % (uint64_t)nu);
        x->islot[b] = (int32_t)(mr_mix(2, (uint64_t)b) % (uint64_t)ni);
        x->ids[b] = 1000 + x->islot[b]; /* repeated items are accidental hits */
        x->tok_off[b] = t;
        int ntok = (int)(mr_mix(3, (uint64_t)b) % 6); /* 0..5 tokens, some examples none */
        for (int k = 0; k < ntok; k++)
            x->tslot[t++] = (int32_t)(mr_mix(4, (uint64_t)(b * 8 + k)) % (uint64_t)nt);
        x->pf[b] = (float)urand(1e-7, 0.05);
        x->pd[b] = x->pf[b];
    }
    x->tok_off[B] = t;
}

static void fixture_free(Fixture *x)
{
    void *p[] = {x->Pd, x->Pf, x->Ud, x->Uf, x->Id, x->If, x->Tkd, x->Tkf, x->rd, x->rf,
                 x->uslot, x->islot, x->tslot, x->tok_off, x->ids, x->pd, x->pf};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        free(p[i]);
}

static MrBatchView fixture_view(const Fixture *x)
{
    MrBatchView v = {.B = x->B, .uslot = x->uslot, .islot = x->islot, .tok_off = x->tok_off,
                     .tslot = x->tslot, .rating = x->rf, .nu = x->nu, .ni = x->ni, .nt = x->nt,
                     .U = x->Uf, .I = x->If, .Tk = x->Tkf};
    return v;
}

/* One training step through the public float API. Returns the retrieval loss. */
static double float_step(const Fixture *x, const MrRetrievalOpts *o, double wr, double wrat,
                         MrModel *m, MrModelWork *w, double *sse)
{
    MrErr e;
    MrBatchView v = fixture_view(x);
    memcpy(m->params, x->Pf, x->s.n_dense * sizeof(float));
    mr_model_zero_grad(m);
    CU_ASSERT_FATAL(mr_model_forward_towers(m, &v, w, &e) == MR_OK);
    double loss = 0;
    *sse = 0;
    if (wr > 0) {
        CU_ASSERT_FATAL(mr_retrieval_loss(o, x->B, x->B, x->s.qout, w->Q, w->Cl, 0, x->ids, x->pf,
                                          wr, w->dQ, w->dCl, &loss, w, &e) == MR_OK);
    } else { /* no retrieval term: the caller zeroes dQ/dCl (model.h) */
        memset(w->dQ, 0, (size_t)(x->B * x->s.qout) * sizeof(float));
        memset(w->dCl, 0, (size_t)(x->B * x->s.cout) * sizeof(float));
    }
    if (wrat > 0)
        CU_ASSERT_FATAL(mr_model_rating_step(m, &v, x->B, wrat, w, sse, &e) == MR_OK);
    CU_ASSERT_FATAL(mr_model_backward_towers(m, &v, w, &e) == MR_OK);
    return loss;
}

static void check_float_vs_double(MrTask task, const MrRetrievalOpts *o, double wr, double wrat)
{
    MrConfig c;
    base_config(&c, task, 24);
    c.model.text.enabled = 1;
    c.model.text.dim = 8;
    c.model.text.max_tokens = 40;
    c.model.query_layers.n = 2;
    c.model.query_layers.v[0] = 40;
    c.model.query_layers.v[1] = 20;
    c.model.candidate_layers.n = 1;
    c.model.candidate_layers.v[0] = 20;
    Fixture x;
    fixture_make(&x, &c, 150, 60, 90, 40); /* 150 = 2 full row blocks of 64 + 22; 150 % 16 = 6 */
    MrErr e;
    MrModel m;
    CU_ASSERT_FATAL(mr_model_init(&m, &x.s, 1, &e) == MR_OK);
    MrModelWork w = {0};
    CU_ASSERT_FATAL(mr_model_work_init(&w, &x.s, x.B, x.B, x.nu, x.ni, x.nt, &e) == MR_OK);
    double sse_f;
    double loss_f = float_step(&x, o, wr, wrat, &m, &w, &sse_f);

    /* the same step in double */
    MrkBufs_d wd;
    CU_ASSERT_FATAL(mr_mk_bufs_init_d(&wd, &x.s, x.B, x.B, x.nu, x.ni, x.nt, &e) == MR_OK);
    MrkBatch_d bd = {.B = x.B, .uslot = x.uslot, .islot = x.islot, .tok_off = x.tok_off,
                     .tslot = x.tslot, .rating = x.rd, .nu = x.nu, .ni = x.ni, .nt = x.nt,
                     .U = x.Ud, .I = x.Id, .Tk = x.Tkd};
    double *gd = calloc(x.s.n_dense, sizeof(double));
    mr_mk_towers_forward_d(&x.s, x.Pd, &bd, &wd);
    double loss_d = 0, sse_d = 0;
    if (wr > 0) {
        CU_ASSERT_FATAL(mr_mk_retrieval_loss_d(o, x.B, x.B, x.s.qout, wd.Q, wd.Cl, 0, x.ids, x.pd, wr,
                                               wd.dQ, wd.dCl, &loss_d, &wd, &e) == MR_OK);
    } else {
        memset(wd.dQ, 0, (size_t)(x.B * x.s.qout) * sizeof(double));
        memset(wd.dCl, 0, (size_t)(x.B * x.s.cout) * sizeof(double));
    }
    if (wrat > 0)
        mr_mk_rating_step_d(&x.s, x.Pd, gd, &bd, x.B, wrat, &wd, &sse_d);
    mr_mk_towers_backward_d(&x.s, x.Pd, gd, &bd, &wd);

    CU_ASSERT(fabs(loss_f - loss_d) <= 1e-5 * (1 + fabs(loss_d)));
    CU_ASSERT(fabs(sse_f - sse_d) <= 1e-5 * (1 + fabs(sse_d)));
    if (fabs(loss_f - loss_d) > 1e-5 * (1 + fabs(loss_d)))
        fprintf(stderr, "  loss float %.9g double %.9g\n", loss_f, loss_d);
    /* gradients: absolute tolerance scaled by the largest entry of each tensor */
    struct {
        const char *name;
        const float *f;
        const double *d;
        int64_t n;
    } t[] = {{"Q", w.Q, wd.Q, x.B * x.s.qout},        {"dQ", w.dQ, wd.dQ, x.B * x.s.qout},
             {"dCl", w.dCl, wd.dCl, x.B * x.s.cout},  {"grads", m.grads, gd, (int64_t)x.s.n_dense},
             {"dU", w.dU, wd.dU, x.nu * x.s.D},       {"dI", w.dI, wd.dI, x.ni * x.s.D},
             {"dTk", w.dTk, wd.dTk, x.nt * x.s.T}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        double mx = 0;
        for (int64_t j = 0; j < t[i].n; j++)
            mx = fabs(t[i].d[j]) > mx ? fabs(t[i].d[j]) : mx;
        CU_ASSERT(mx > 0);
        CU_ASSERT_EQUAL(compare_fd(t[i].name, t[i].f, t[i].d, t[i].n, 2e-5 * mx, 1e-4), 0);
    }
    if (wrat > 0)
        CU_ASSERT_EQUAL(compare_fd("pred", w.pred, wd.pred, x.B, 1e-5, 1e-5), 0);
    free(gd);
    mr_mk_bufs_free_d(&wd);
    mr_model_work_free(&w);
    mr_model_free(&m);
    fixture_free(&x);
}

static void test_float_step_retrieval(void)
{
    MrRetrievalOpts o = {0};
    check_float_vs_double(MR_TASK_RETRIEVAL, &o, 1.0, 0);
    MrRetrievalOpts all = {.temperature = 0.2, .logq = 1, .remove_accidental_hits = 1,
                           .num_hard_negatives = 30};
    check_float_vs_double(MR_TASK_RETRIEVAL, &all, 1.0, 0);
    all.num_hard_negatives = 5; /* heap threshold path */
    check_float_vs_double(MR_TASK_RETRIEVAL, &all, 1.0, 0);
}

static void test_float_step_multitask(void)
{
    MrRetrievalOpts o = {.remove_accidental_hits = 1};
    check_float_vs_double(MR_TASK_MULTITASK, &o, 0.5, 0.5);
    check_float_vs_double(MR_TASK_RANKING, &o, 0, 1.0);
}

/* ---- duplicates ---- */

/* A batch that looks up user row 0 twice (slots 0, 0) gives dU[0] equal to the sum
 * of the two per-slot gradients of the same batch with the row stored twice
 * (slots 0, 1): the model's backward does Keras's de-duplication sum. */
static void test_duplicate_user_rows_summed(void)
{
    MrConfig c;
    base_config(&c, MR_TASK_MULTITASK, 6);
    c.model.query_layers.n = 1;
    c.model.query_layers.v[0] = 6;
    Fixture x;
    fixture_make(&x, &c, 4, 3, 4, 1);
    const int32_t dup[4] = {0, 0, 1, 2};
    memcpy(x.uslot, dup, sizeof dup);
    MrErr e;
    MrModel m;
    CU_ASSERT_FATAL(mr_model_init(&m, &x.s, 1, &e) == MR_OK);
    MrModelWork w = {0};
    CU_ASSERT_FATAL(mr_model_work_init(&w, &x.s, 4, 4, 4, 4, 1, &e) == MR_OK);
    MrRetrievalOpts o = {0};
    double sse;
    float_step(&x, &o, 1.0, 1.0, &m, &w, &sse);
    float dU_dup[3 * 6];
    memcpy(dU_dup, w.dU, sizeof dU_dup);
    CU_ASSERT_EQUAL(x.nu, 3);

    /* the same users with row 0 stored twice: U' = [u0, u0, u1, u2] */
    float U2[4 * 6];
    memcpy(U2, x.Uf, 6 * sizeof(float));
    memcpy(U2 + 6, x.Uf, 3 * 6 * sizeof(float));
    const int32_t split[4] = {0, 1, 2, 3};
    float *Uold = x.Uf;
    x.Uf = U2;
    memcpy(x.uslot, split, sizeof split);
    x.nu = 4;
    float_step(&x, &o, 1.0, 1.0, &m, &w, &sse);
    x.Uf = Uold;
    for (int k = 0; k < 6; k++) {
        CU_ASSERT_EQUAL(dU_dup[k], w.dU[k] + w.dU[6 + k]);
        CU_ASSERT_EQUAL(dU_dup[6 + k], w.dU[12 + k]);
        CU_ASSERT(w.dU[k] != 0.0f);
    }
    mr_model_work_free(&w);
    mr_model_free(&m);
    fixture_free(&x);
}

/* ---- evaluation paths and contract checks ---- */

/* query_forward / candidate_forward / rating_forward over more rows than the work
 * capacity (chunked) reproduce the training forward; B = 0 is a valid step. */
static void test_eval_paths(void)
{
    MrConfig c;
    base_config(&c, MR_TASK_MULTITASK, 8);
    c.model.text.enabled = 1;
    c.model.text.dim = 4;
    c.model.text.max_tokens = 20;
    c.model.query_layers.n = 1;
    c.model.query_layers.v[0] = 5;
    c.model.candidate_layers.n = 2;
    c.model.candidate_layers.v[0] = 7;
    c.model.candidate_layers.v[1] = 5;
    Fixture x;
    fixture_make(&x, &c, 37, 10, 12, 20);
    MrErr e;
    MrModel m;
    CU_ASSERT_FATAL(mr_model_init(&m, &x.s, 3, &e) == MR_OK);
    MrModelWork big = {0}, small = {0};
    CU_ASSERT_FATAL(mr_model_work_init(&big, &x.s, 37, 37, 10, 12, 20, &e) == MR_OK);
    CU_ASSERT_FATAL(mr_model_work_init(&small, &x.s, 8, 8, 10, 12, 20, &e) == MR_OK);
    MrBatchView v = fixture_view(&x);
    CU_ASSERT_FATAL(mr_model_forward_towers(&m, &v, &big, &e) == MR_OK);
    double sse;
    memset(big.dQ, 0, 37 * 5 * sizeof(float));
    memset(big.dCl, 0, 37 * 5 * sizeof(float));
    CU_ASSERT_FATAL(mr_model_rating_step(&m, &v, 37, 1.0, &big, &sse, &e) == MR_OK);
    float Q[37 * 5], C[37 * 5], rows[37 * 8], pred[37];
    CU_ASSERT_EQUAL(mr_model_query_forward(&m, &v, Q, &small, &e), MR_OK);
    CU_ASSERT_EQUAL(compare_ff("Q", Q, big.Q, 37 * 5), 0);
    for (int b = 0; b < 37; b++)
        memcpy(rows + b * 8, x.If + x.islot[b] * 8, 8 * sizeof(float));
    CU_ASSERT_EQUAL(mr_model_candidate_forward(&m, rows, 37, C, &small, &e), MR_OK);
    CU_ASSERT_EQUAL(compare_ff("C", C, big.Cl, 37 * 5), 0);
    CU_ASSERT_EQUAL(mr_model_rating_forward(&m, Q, C, 37, pred, &small, &e), MR_OK);
    CU_ASSERT_EQUAL(compare_ff("pred", pred, big.pred, 37), 0);

    /* B = 0 */
    MrBatchView z = v;
    z.B = 0;
    float dC[5];
    double loss = 1;
    MrRetrievalOpts o = {0};
    CU_ASSERT_EQUAL(mr_model_forward_towers(&m, &z, &big, &e), MR_OK);
    CU_ASSERT_EQUAL(mr_retrieval_loss(&o, 0, 0, 5, big.Q, big.Cl, 0, NULL, NULL, 1, big.dQ, dC, &loss, &big, &e), MR_OK);
    CU_ASSERT_EQUAL(loss, 0.0);
    CU_ASSERT_EQUAL(mr_model_backward_towers(&m, &z, &big, &e), MR_OK);
    for (int i = 0; i < 10 * 8; i++)
        CU_ASSERT_EQUAL(big.dU[i], 0.0f);

    /* contract violations: errors with a message, no crash */
    MrBatchView bad = v;
    CU_ASSERT_EQUAL(mr_model_forward_towers(&m, &bad, &small, &e), MR_EINTERNAL); /* B > cap */
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "capacity"));
    int32_t us[37];
    memcpy(us, x.uslot, sizeof us);
    us[5] = 10;
    bad.uslot = us;
    CU_ASSERT_EQUAL(mr_model_forward_towers(&m, &bad, &big, &e), MR_EINTERNAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "example 5: user slot 10"));
    CU_ASSERT_EQUAL(mr_retrieval_loss(&o, 37, 38, 5, big.Q, big.Cl, 0, NULL, NULL, 1, big.dQ, big.dCl, &loss, &big, &e),
                    MR_EINTERNAL); /* G > G_cap */
    MrModelWork none = {0};
    CU_ASSERT_EQUAL(mr_model_forward_towers(&m, &v, &none, &e), MR_EINTERNAL);

    /* a retrieval-only model has no rating head */
    MrConfig rc;
    base_config(&rc, MR_TASK_RETRIEVAL, 4);
    MrModelShape rs;
    CU_ASSERT_FATAL(mr_model_shape(&rs, &rc, 3, 3, &e) == MR_OK);
    MrModel rm;
    CU_ASSERT_FATAL(mr_model_init(&rm, &rs, 1, &e) == MR_OK);
    MrModelWork rw = {0};
    CU_ASSERT_FATAL(mr_model_work_init(&rw, &rs, 4, 4, 3, 3, 0, &e) == MR_OK);
    /* re-callable with larger capacities */
    CU_ASSERT_FATAL(mr_model_work_init(&rw, &rs, 40, 40, 30, 30, 0, &e) == MR_OK);
    CU_ASSERT_EQUAL(rw.B_cap, 40);
    CU_ASSERT_EQUAL(mr_model_rating_step(&rm, &v, 4, 1.0, &rw, &sse, &e), MR_EINTERNAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "no rating head"));
    mr_model_work_free(&rw);
    mr_model_free(&rm);

    mr_model_work_free(&big);
    mr_model_work_free(&small);
    mr_model_free(&m);
    fixture_free(&x);
}

/* The deepest model the shape allows (16 query, 16 candidate and 15 + 1 rating
 * Dense layers): the work arena carves its largest buffer list and a whole step runs
 * (under ASan this catches any overrun of the carving). */
static void test_max_layers_step(void)
{
    MrConfig c;
    base_config(&c, MR_TASK_MULTITASK, 4);
    c.model.query_layers.n = MR_MAX_DENSE;
    c.model.candidate_layers.n = MR_MAX_DENSE;
    c.model.ranking_layers.n = MR_MAX_DENSE - 1;
    for (int l = 0; l < MR_MAX_DENSE; l++)
        c.model.query_layers.v[l] = c.model.candidate_layers.v[l] = c.model.ranking_layers.v[l] =
            3 + l % 3;
    Fixture x;
    fixture_make(&x, &c, 6, 4, 5, 1);
    CU_ASSERT_EQUAL(x.s.nq + x.s.nc + x.s.nr, 3 * MR_MAX_DENSE);
    MrErr e;
    MrModel m;
    CU_ASSERT_FATAL(mr_model_init(&m, &x.s, 5, &e) == MR_OK);
    MrModelWork w = {0};
    CU_ASSERT_FATAL(mr_model_work_init(&w, &x.s, 6, 6, 4, 5, 1, &e) == MR_OK);
    MrRetrievalOpts o = {0};
    double sse;
    double loss = float_step(&x, &o, 1.0, 1.0, &m, &w, &sse);
    CU_ASSERT(isfinite(loss) && loss > 0);
    CU_ASSERT(isfinite(sse));
    mr_model_work_free(&w);
    mr_model_free(&m);
    fixture_free(&x);
}

int add_suite_model(void)
{
    CU_pSuite s = CU_add_suite("model", NULL, NULL);
    if (!s)
        return -1;
    CU_add_test(s, "init_embedding_vectors", test_init_embedding_vectors);
    CU_add_test(s, "init_dense_vector", test_init_dense_vector);
    CU_add_test(s, "shape_layout", test_shape_layout);
    CU_add_test(s, "shape_errors", test_shape_errors);
    CU_add_test(s, "fast_exp", test_fast_exp);
    CU_add_test(s, "float_step_retrieval", test_float_step_retrieval);
    CU_add_test(s, "float_step_multitask", test_float_step_multitask);
    CU_add_test(s, "duplicate_user_rows_summed", test_duplicate_user_rows_summed);
    CU_add_test(s, "eval_paths", test_eval_paths);
    CU_add_test(s, "max_layers_step", test_max_layers_step);
    return CU_get_error() == CUE_SUCCESS ? 0 : -1;
}
