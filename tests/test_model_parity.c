/* test_model_parity.c — function-level parity with the PyTorch reference.
 *
 * The fixture is written by tests/parity/model_parity.py, which runs
 * ../shared/reference/ref_torch.py's own Model, retrieval_loss, MSE and KerasAdagrad
 * on small configurations (see the script). This suite replays every case through
 * include/mpirec/model.h and optim.h and compares:
 *   - initial tables and dense kernels: bitwise (same counter-based rule),
 *   - tower outputs, the loss, every dense gradient, the embedding-row gradients
 *     (and that rows outside the batch get none): float tolerance,
 *   - parameters and tables after one Adagrad step (untouched rows bitwise).
 *
 * Which fixture: $MPIREC_PARITY_FILE when set (tests/parity/model_parity.sh
 * regenerates it from the live reference: ctest label `parity`), otherwise the copy
 * committed at tests/parity/model_parity_fixture.txt (found through $MPIREC_SRC, set
 * by ctest), so the unit run checks parity without needing torch. A missing fixture
 * or a missing case is a failure, never a skip.
 */
#include <CUnit/CUnit.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpirec/config.h"
#include "mpirec/hash.h"
#include "mpirec/model.h"
#include "mpirec/optim.h"
#include "test_util.h"

/* ---- fixture ---- */

typedef struct {
    char name[64];
    int64_t n;
    double *v;
} Entry;

typedef struct {
    char name[64];
    int ne;
    Entry e[64];
} Case;

static Case g_cases[16];
static int g_ncases = -1;
static char g_path[4200];

static void load_fixture(void)
{
    if (g_ncases >= 0)
        return;
    g_ncases = 0;
    const char *f = getenv("MPIREC_PARITY_FILE");
    const char *src = getenv("MPIREC_SRC");
    if (f && *f)
        snprintf(g_path, sizeof g_path, "%s", f);
    else if (src && *src)
        snprintf(g_path, sizeof g_path, "%s/tests/parity/model_parity_fixture.txt", src);
    else {
        fprintf(stderr, "model_parity: set MPIREC_PARITY_FILE or MPIREC_SRC (ctest sets it)\n");
        return;
    }
    FILE *fp = fopen(g_path, "r");
    if (!fp) {
        fprintf(stderr, "model_parity: cannot open %s\n", g_path);
        return;
    }
    size_t cap = 1 << 20;
    char *line = malloc(cap);
    Case *cur = NULL;
    while (fgets(line, (int)cap, fp)) {
        if (strncmp(line, "case ", 5) == 0 && g_ncases < 16) {
            cur = &g_cases[g_ncases++];
            memset(cur, 0, sizeof *cur);
            sscanf(line + 5, "%63s", cur->name);
        } else if (strncmp(line, "end", 3) == 0) {
            cur = NULL;
        } else if (cur && (line[0] == 'f' || line[0] == 'i') && line[1] == ' ' && cur->ne < 64) {
            Entry *en = &cur->e[cur->ne++];
            char *p = line + 2, *q;
            int used = 0;
            long long n = 0;
            sscanf(p, "%63s %lld%n", en->name, &n, &used);
            p += used;
            en->n = n;
            en->v = malloc((size_t)(n ? n : 1) * sizeof(double));
            for (int64_t i = 0; i < n; i++) {
                en->v[i] = strtod(p, &q);
                p = q;
            }
        }
    }
    free(line);
    fclose(fp);
}

static int free_fixture(void)
{
    for (int i = 0; i < g_ncases; i++)
        for (int j = 0; j < g_cases[i].ne; j++)
            free(g_cases[i].e[j].v);
    g_ncases = -1;
    return 0;
}

static const Case *find_case(const char *name)
{
    load_fixture();
    for (int i = 0; i < g_ncases; i++)
        if (strcmp(g_cases[i].name, name) == 0)
            return &g_cases[i];
    fprintf(stderr, "model_parity: case %s not in %s\n", name, g_path[0] ? g_path : "(no fixture)");
    return NULL;
}

static const Entry *get(const Case *k, const char *name)
{
    for (int i = 0; i < k->ne; i++)
        if (strcmp(k->e[i].name, name) == 0)
            return &k->e[i];
    return NULL;
}

static const Entry *need(const Case *k, const char *name)
{
    const Entry *e = get(k, name);
    if (!e)
        fprintf(stderr, "model_parity: %s has no '%s'\n", k->name, name);
    return e;
}

static int ival(const Case *k, const char *name)
{
    const Entry *e = need(k, name);
    return e && e->n > 0 ? (int)e->v[0] : 0;
}

/* ---- comparisons ---- */

static int cmp_exact(const char *what, const float *got, const Entry *ref, int64_t n)
{
    if (!ref || ref->n != n) {
        fprintf(stderr, "  %s: reference has %lld values, expected %lld\n", what,
                ref ? (long long)ref->n : -1LL, (long long)n);
        return 1;
    }
    int bad = 0;
    for (int64_t i = 0; i < n; i++)
        if (got[i] != (float)ref->v[i]) {
            if (bad < 5)
                fprintf(stderr, "  %s[%lld]: %.9g vs reference %.9g\n", what, (long long)i,
                        (double)got[i], ref->v[i]);
            bad++;
        }
    if (bad)
        fprintf(stderr, "  %s: %d of %lld differ\n", what, bad, (long long)n);
    return bad;
}

/* |got - ref| <= atol + rtol |ref|, atol = afrac * max|ref| + afloor. */
static int cmp_tol(const char *what, const float *got, const double *ref, int64_t n, double afrac,
                   double afloor, double rtol)
{
    double mx = 0, maxd = 0;
    for (int64_t i = 0; i < n; i++)
        mx = fabs(ref[i]) > mx ? fabs(ref[i]) : mx;
    double atol = afrac * mx + afloor;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]);
        maxd = d > maxd ? d : maxd;
        if (!(d <= atol + rtol * fabs(ref[i]))) {
            if (bad < 5)
                fprintf(stderr, "  %s[%lld]: %.9g vs reference %.9g\n", what, (long long)i,
                        (double)got[i], ref[i]);
            bad++;
        }
    }
    if (bad)
        fprintf(stderr, "  %s: %d of %lld mismatch (max diff %.3g, atol %.3g)\n", what, bad,
                (long long)n, maxd, atol);
    return bad;
}

/* ---- batch from global ids ---- */

typedef struct {
    int64_t n;
    int64_t rows[64]; /* sorted unique global rows */
    int32_t slot[64]; /* per example / token */
} Uniq;

static void uniq(Uniq *u, const double *ids, int64_t n)
{
    u->n = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t id = (int64_t)ids[i];
        int64_t j = 0;
        while (j < u->n && u->rows[j] < id)
            j++;
        if (j == u->n || u->rows[j] != id) {
            memmove(u->rows + j + 1, u->rows + j, (size_t)(u->n - j) * sizeof(int64_t));
            u->rows[j] = id;
            u->n++;
        }
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < u->n; j++)
            if (u->rows[j] == (int64_t)ids[i])
                u->slot[i] = (int32_t)j;
}

/* ---- one model case ---- */

static void run_model_case(const char *name)
{
    const Case *k = find_case(name);
    CU_ASSERT_FATAL(k != NULL);
    MrConfig c;
    mr_config_defaults(&c);
    c.model.task = (MrTask)ival(k, "task");
    c.model.embedding_dim = ival(k, "dim");
    c.model.text.enabled = ival(k, "text");
    c.model.text.dim = ival(k, "text_dim");
    c.model.text.max_tokens = ival(k, "max_tokens");
    const char *lists[3] = {"query_layers", "candidate_layers", "ranking_layers"};
    MrIntList *dst[3] = {&c.model.query_layers, &c.model.candidate_layers,
                         &c.model.ranking_layers};
    for (int i = 0; i < 3; i++) {
        const Entry *e = need(k, lists[i]);
        CU_ASSERT_FATAL(e != NULL);
        dst[i]->n = (int)e->n;
        for (int64_t j = 0; j < e->n; j++)
            dst[i]->v[j] = (int)e->v[j];
    }
    int text = c.model.text.enabled, D = c.model.embedding_dim;
    int64_t nU = ival(k, "n_users") + 1, nI = ival(k, "n_items") + 1;
    MrErr e;
    MrModelShape s;
    CU_ASSERT_FATAL(mr_model_shape(&s, &c, nU, nI, &e) == MR_OK);
    MrModel m;
    CU_ASSERT_FATAL(mr_model_init(&m, &s, (uint64_t)ival(k, "seed"), &e) == MR_OK);
    int T = s.T;
    int64_t nTk = s.text_rows;

    /* initial values: bitwise */
    CU_ASSERT_EQUAL(cmp_exact("init dense", m.params, need(k, "init_params"), (int64_t)s.n_dense), 0);
    float *tabU = malloc((size_t)(nU * D) * sizeof(float));
    float *tabI = malloc((size_t)(nI * D) * sizeof(float));
    float *tabT = malloc((size_t)((nTk ? nTk : 1) * (T ? T : 1)) * sizeof(float));
    mr_embedding_init_rows(tabU, 42, MR_STREAM_USER, 0, nU, D, c.model.embedding_init);
    mr_embedding_init_rows(tabI, 42, MR_STREAM_ITEM, 0, nI, D, c.model.embedding_init);
    CU_ASSERT_EQUAL(cmp_exact("init user table", tabU, need(k, "init_user_emb"), nU * D), 0);
    CU_ASSERT_EQUAL(cmp_exact("init item table", tabI, need(k, "init_item_emb"), nI * D), 0);
    if (text) {
        mr_embedding_init_rows(tabT, 42, MR_STREAM_TEXT, 0, nTk, T, c.model.embedding_init);
        CU_ASSERT_EQUAL(cmp_exact("init text table", tabT, need(k, "init_text_emb"), nTk * T), 0);
    }

    /* the step's parameters (biases moved off zero by the script) */
    const Entry *P = need(k, "params");
    CU_ASSERT_FATAL(P && P->n == (int64_t)s.n_dense);
    for (size_t i = 0; i < s.n_dense; i++)
        m.params[i] = (float)P->v[i];

    /* batch: unique rows, slots, token lists */
    const Entry *uid = need(k, "uid"), *iid = need(k, "iid"), *rat = need(k, "rating"),
                *ip = need(k, "item_p");
    CU_ASSERT_FATAL(uid && iid && rat && ip);
    int64_t B = uid->n;
    Uniq uu, ui, ut;
    uniq(&uu, uid->v, B);
    uniq(&ui, iid->v, B);
    float U[64 * 8], I[64 * 8], Tk[64 * 8], rating[64], p[64];
    int64_t ids[64], tok_off[65] = {0};
    for (int64_t j = 0; j < uu.n; j++)
        memcpy(U + j * D, tabU + uu.rows[j] * D, (size_t)D * sizeof(float));
    for (int64_t j = 0; j < ui.n; j++)
        memcpy(I + j * D, tabI + ui.rows[j] * D, (size_t)D * sizeof(float));
    for (int64_t b = 0; b < B; b++) {
        rating[b] = (float)rat->v[b];
        ids[b] = (int64_t)iid->v[b];
        p[b] = (float)ip->v[ids[b]];
    }
    ut.n = 0;
    if (text) {
        const Entry *tl = need(k, "tok_len"), *tk = need(k, "tok");
        CU_ASSERT_FATAL(tl && tk);
        for (int64_t b = 0; b < B; b++)
            tok_off[b + 1] = tok_off[b] + (int64_t)tl->v[b];
        uniq(&ut, tk->v, tk->n);
        for (int64_t j = 0; j < ut.n; j++)
            memcpy(Tk + j * T, tabT + ut.rows[j] * T, (size_t)T * sizeof(float));
    }
    MrBatchView v = {.B = B, .uslot = uu.slot, .islot = ui.slot, .tok_off = tok_off,
                     .tslot = ut.slot, .rating = rating, .nu = uu.n, .ni = ui.n, .nt = ut.n,
                     .U = U, .I = I, .Tk = Tk};
    MrModelWork w = {0};
    CU_ASSERT_FATAL(mr_model_work_init(&w, &s, B, B, uu.n, ui.n, ut.n, &e) == MR_OK);

    /* the step */
    const Entry *wts = need(k, "weights");
    double wr = wts->v[0], wrat = wts->v[1];
    MrRetrievalOpts o = {.temperature = need(k, "temperature")->v[0],
                         .logq = ival(k, "logq"),
                         .remove_accidental_hits = ival(k, "remove_accidental_hits"),
                         .num_hard_negatives = ival(k, "num_hard_negatives")};
    mr_model_zero_grad(&m);
    CU_ASSERT_FATAL(mr_model_forward_towers(&m, &v, &w, &e) == MR_OK);
    CU_ASSERT_EQUAL(cmp_tol("Q", w.Q, need(k, "Q")->v, B * s.qout, 0, 1e-6, 1e-5), 0);
    CU_ASSERT_EQUAL(cmp_tol("C", w.Cl, need(k, "C")->v, B * s.cout, 0, 1e-6, 1e-5), 0);
    double loss = 0, rl = 0, sse = 0;
    if (s.task != MR_TASK_RANKING) {
        CU_ASSERT_FATAL(mr_retrieval_loss(&o, B, B, s.qout, w.Q, w.Cl, 0, ids, p, wr, w.dQ, w.dCl,
                                          &rl, &w, &e) == MR_OK);
        loss += rl;
    } else {
        memset(w.dQ, 0, (size_t)(B * s.qout) * sizeof(float));
        memset(w.dCl, 0, (size_t)(B * s.cout) * sizeof(float));
    }
    if (s.task != MR_TASK_RETRIEVAL) {
        CU_ASSERT_FATAL(mr_model_rating_step(&m, &v, B, wrat, &w, &sse, &e) == MR_OK);
        loss += wrat * sse / (double)B;
        CU_ASSERT_EQUAL(cmp_tol("pred", w.pred, need(k, "pred")->v, B, 0, 1e-5, 1e-5), 0);
    }
    double want = need(k, "loss")->v[0];
    if (!(fabs(loss - want) <= 2e-5 * fabs(want))) {
        fprintf(stderr, "  %s: loss %.9g, reference %.9g\n", name, loss, want);
        CU_FAIL("loss differs from the reference");
    }
    CU_ASSERT_FATAL(mr_model_backward_towers(&m, &v, &w, &e) == MR_OK);
    CU_ASSERT_EQUAL(cmp_tol("dense grads", m.grads, need(k, "grad_params")->v, (int64_t)s.n_dense,
                            1e-5, 0, 1e-4), 0);

    /* embedding-row gradients, scattered back to the full table shape */
    struct {
        const char *name;
        const Uniq *u;
        const float *g;
        int64_t rows;
        int dim;
        float *tab;
    } t[3] = {{"user_emb", &uu, w.dU, nU, D, tabU},
              {"item_emb", &ui, w.dI, nI, D, tabI},
              {"text_emb", &ut, w.dTk, nTk, T, tabT}};
    MrOptimizer opt;
    mr_optim_from_config(&opt, &c); /* Keras Adagrad: lr 0.1, acc 0.1, eps 1e-7 */
    for (int ti = 0; ti < (text ? 3 : 2); ti++) {
        char gname[64], nname[64];
        snprintf(gname, sizeof gname, "grad_%s", t[ti].name);
        snprintf(nname, sizeof nname, "new_%s", t[ti].name);
        const Entry *gref = need(k, gname), *nref = need(k, nname);
        CU_ASSERT_FATAL(gref && nref && gref->n == t[ti].rows * t[ti].dim);
        float *full = calloc((size_t)gref->n, sizeof(float));
        for (int64_t j = 0; j < t[ti].u->n; j++)
            memcpy(full + t[ti].u->rows[j] * t[ti].dim, t[ti].g + j * t[ti].dim,
                   (size_t)t[ti].dim * sizeof(float));
        CU_ASSERT_EQUAL(cmp_tol(gname, full, gref->v, gref->n, 1e-5, 0, 1e-4), 0);
        /* one Adagrad step on the touched rows of the whole table */
        float *state = malloc((size_t)gref->n * sizeof(float));
        for (int64_t i = 0; i < gref->n; i++)
            state[i] = mr_optim_state_init(&opt, 0);
        mr_optim_rows_update(&opt, t[ti].tab, state, t[ti].rows, t[ti].dim, t[ti].u->rows,
                             t[ti].g, t[ti].u->n);
        CU_ASSERT_EQUAL(cmp_tol(nname, t[ti].tab, nref->v, nref->n, 0, 2e-6, 1e-5), 0);
        /* rows outside the batch: no gradient in the reference, bitwise unchanged here */
        int moved = 0;
        for (int64_t r = 0; r < t[ti].rows; r++) {
            int in = 0;
            for (int64_t j = 0; j < t[ti].u->n; j++)
                in |= t[ti].u->rows[j] == r;
            for (int d = 0; d < t[ti].dim && !in; d++) {
                moved += gref->v[r * t[ti].dim + d] != 0.0;
                moved += t[ti].tab[r * t[ti].dim + d] != (float)nref->v[r * t[ti].dim + d];
            }
        }
        CU_ASSERT_EQUAL(moved, 0);
        free(state);
        free(full);
    }
    float *dstate = malloc(s.n_dense * sizeof(float));
    for (size_t i = 0; i < s.n_dense; i++)
        dstate[i] = mr_optim_state_init(&opt, 0);
    mr_optim_dense_update(&opt, m.params, dstate, m.grads, s.n_dense);
    CU_ASSERT_EQUAL(cmp_tol("new dense", m.params, need(k, "new_params")->v, (int64_t)s.n_dense, 0,
                            2e-6, 1e-5), 0);
    free(dstate);
    free(tabU);
    free(tabI);
    free(tabT);
    mr_model_work_free(&w);
    mr_model_free(&m);
}

/* retrieval_loss alone with G > B (positives at columns 0..B-1). */
static void run_global_case(const char *name)
{
    const Case *k = find_case(name);
    CU_ASSERT_FATAL(k != NULL);
    const Entry *q = need(k, "q"), *cg = need(k, "c"), *idv = need(k, "ids"), *pv = need(k, "p");
    CU_ASSERT_FATAL(q && cg && idv && pv);
    int d = 4;
    int64_t B = q->n / d, G = cg->n / d;
    MrConfig c;
    mr_config_defaults(&c);
    c.model.embedding_dim = d;
    MrModelShape s;
    MrErr e;
    CU_ASSERT_FATAL(mr_model_shape(&s, &c, 2, 2, &e) == MR_OK);
    MrModelWork w = {0};
    CU_ASSERT_FATAL(mr_model_work_init(&w, &s, B, G, 1, 1, 0, &e) == MR_OK);
    float Q[64], C[64], P[16], dQ[64], dC[64];
    int64_t ids[16];
    for (int64_t i = 0; i < B * d; i++)
        Q[i] = (float)q->v[i];
    for (int64_t i = 0; i < G * d; i++)
        C[i] = (float)cg->v[i];
    for (int64_t j = 0; j < G; j++) {
        ids[j] = (int64_t)idv->v[j];
        P[j] = (float)pv->v[j];
    }
    MrRetrievalOpts o = {.temperature = need(k, "temperature")->v[0],
                         .logq = ival(k, "logq"),
                         .remove_accidental_hits = ival(k, "remove_accidental_hits"),
                         .num_hard_negatives = ival(k, "num_hard_negatives")};
    double loss;
    CU_ASSERT_FATAL(mr_retrieval_loss(&o, B, G, d, Q, C, 0, ids, P, 1.0, dQ, dC, &loss, &w, &e) ==
                    MR_OK);
    double want = need(k, "loss")->v[0];
    if (!(fabs(loss - want) <= 2e-5 * fabs(want))) {
        fprintf(stderr, "  %s: loss %.9g, reference %.9g\n", name, loss, want);
        CU_FAIL("loss differs from the reference");
    }
    CU_ASSERT_EQUAL(cmp_tol("dq", dQ, need(k, "dq")->v, B * d, 1e-5, 0, 1e-4), 0);
    CU_ASSERT_EQUAL(cmp_tol("dc", dC, need(k, "dc")->v, G * d, 1e-5, 0, 1e-4), 0);
    mr_model_work_free(&w);
}

static void test_retrieval_text_layers(void) { run_model_case("retrieval_text_layers"); }
static void test_retrieval_options(void) { run_model_case("retrieval_options"); }
static void test_retrieval_hard_negatives(void) { run_model_case("retrieval_hard_negatives"); }
static void test_multitask_text(void) { run_model_case("multitask_text"); }
static void test_ranking(void) { run_model_case("ranking"); }
static void test_global_options(void) { run_global_case("global_options"); }
static void test_global_hard_negatives(void) { run_global_case("global_hard_negatives"); }

int add_suite_model_parity(void)
{
    CU_pSuite s = CU_add_suite("model_parity", NULL, free_fixture);
    if (!s)
        return -1;
    CU_add_test(s, "retrieval_text_layers", test_retrieval_text_layers);
    CU_add_test(s, "retrieval_options", test_retrieval_options);
    CU_add_test(s, "retrieval_hard_negatives", test_retrieval_hard_negatives);
    CU_add_test(s, "multitask_text", test_multitask_text);
    CU_add_test(s, "ranking", test_ranking);
    CU_add_test(s, "global_options", test_global_options);
    CU_add_test(s, "global_hard_negatives", test_global_hard_negatives);
    return CU_get_error() == CUE_SUCCESS ? 0 : -1;
}
