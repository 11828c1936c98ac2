/* bench_model.c — single-process speed of the model's training step.
 *
 * 1. The sgemm rate on this machine for the three GEMMs of the retrieval loss at
 *    B = G = 8192 (logits Q C^T, dQ = P C, dC = P^T Q), both as the loss runs them
 *    (row blocks of bs rows) and as three whole B x B x d products. The GEMM bound of
 *    a step is the time of the three blocked GEMMs: the loss cannot be faster than
 *    its own matrix products.
 * 2. Full training steps, one process, as the trainer runs them minus MPI: sample a
 *    batch with Zipf-ish user and item ids from synthetic tables, de-duplicate rows
 *    and gather them, towers forward, retrieval loss, rating step (multitask),
 *    towers backward, Adagrad on the dense buffer and on the touched table rows.
 *    Retrieval: no Dense layers (id embeddings only); multitask: rating MLP
 *    [32, 16] + Dense(1), weights 1/1. B = 32 and 8192, d = 16/32/64.
 *    Printed: median step time over the repeats, examples/s, and for B = 8192 the
 *    bound and the fraction of it reached (also for the loss alone). The bound is
 *    re-measured right after every step (the three blocked GEMMs on that step's
 *    Q and C), so load from other processes affects both sides of the ratio alike.
 * 3. The retrieval loss alone at B = 8192, d = 32, with its options.
 *
 * Single-core figures need OPENBLAS_NUM_THREADS=1 (the bench says what it ran with).
 * Usage: OPENBLAS_NUM_THREADS=1 bench_model [--repeats N] [--big-only | --small-only]
 */
#include <cblas.h>
#undef I /* <complex.h> via cblas.h; model.h has a field named I */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/kernels.h"
#include "mpirec/config.h"
#include "mpirec/hash.h"
#include "mpirec/model.h"
#include "mpirec/optim.h"
#include "bench_util.h"

static void die(const char *what, const MrErr *e)
{
    fprintf(stderr, "bench_model: %s: %s\n", what, e->msg);
    exit(1);
}

/* ---- 1. GEMM rates ---- */

typedef struct {
    double blocked_s, full_s; /* time of the three GEMMs */
} GemmTimes;

static GemmTimes gemm_rates(int64_t B, int d, int64_t bs, int repeats)
{
    float *Q = malloc((size_t)(B * d) * sizeof(float)), *C = malloc((size_t)(B * d) * sizeof(float));
    float *dQ = malloc((size_t)(B * d) * sizeof(float)), *dC = malloc((size_t)(B * d) * sizeof(float));
    float *S = malloc((size_t)(bs * B) * sizeof(float));
    for (int64_t i = 0; i < B * d; i++) {
        Q[i] = (float)mr_hash_unit(mr_mix(1, (uint64_t)i)) - 0.5f;
        C[i] = (float)mr_hash_unit(mr_mix(2, (uint64_t)i)) - 0.5f;
    }
    for (int64_t i = 0; i < bs * B; i++)
        S[i] = 1e-4f;
    double *tb = malloc((size_t)repeats * sizeof(double));
    for (int r = 0; r < repeats; r++) {
        double t0 = bench_now();
        for (int64_t i0 = 0; i0 < B; i0 += bs) {
            int64_t nb = B - i0 < bs ? B - i0 : bs;
            mr_mk_gemm_f(0, 1, nb, B, d, 1.0f, Q + i0 * d, d, C, d, 0.0f, S, B);
            mr_mk_gemm_f(0, 0, nb, d, B, 1.0f, S, B, C, d, 0.0f, dQ + i0 * d, d);
            mr_mk_gemm_f(1, 0, B, d, nb, 1.0f, S, B, Q + i0 * d, d, 1.0f, dC, d);
        }
        tb[r] = bench_now() - t0;
    }
    GemmTimes g = {bench_median(tb, repeats), 0};
    free(S);
    /* whole products: needs the full [B x B] matrix (256 MiB at 8192) */
    float *Sf = malloc((size_t)(B * B) * sizeof(float));
    if (Sf) {
        for (int64_t i = 0; i < B * B; i++)
            Sf[i] = 1e-4f;
        int rf = repeats < 3 ? repeats : 3;
        for (int r = 0; r < rf; r++) {
            double t0 = bench_now();
            mr_mk_gemm_f(0, 1, B, B, d, 1.0f, Q, d, C, d, 0.0f, Sf, B);
            mr_mk_gemm_f(0, 0, B, d, B, 1.0f, Sf, B, C, d, 0.0f, dQ, d);
            mr_mk_gemm_f(1, 0, B, d, B, 1.0f, Sf, B, Q, d, 0.0f, dC, d);
            tb[r] = bench_now() - t0;
        }
        g.full_s = bench_median(tb, rf);
        free(Sf);
    }
    free(tb);
    free(Q);
    free(C);
    free(dQ);
    free(dC);
    return g;
}

/* ---- 2. training steps ---- */

#define TABLE_ROWS 100000

/* Inverse CDF of a Zipf(1.0) over `n` rows, sampled with hash-based uniforms. */
typedef struct {
    double *cdf;
    int64_t n;
} Zipf;

static void zipf_init(Zipf *z, int64_t n, double s)
{
    z->n = n;
    z->cdf = malloc((size_t)n * sizeof(double));
    double acc = 0;
    for (int64_t r = 0; r < n; r++) {
        acc += 1.0 / pow((double)(r + 1), s);
        z->cdf[r] = acc;
    }
    for (int64_t r = 0; r < n; r++)
        z->cdf[r] /= acc;
}

static int64_t zipf_draw(const Zipf *z, uint64_t h)
{
    double u = mr_hash_unit(h);
    int64_t lo = 0, hi = z->n - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (z->cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* scatter popular ranks over the table so hot rows are not adjacent */
    return (int64_t)(mr_mix(99, (uint64_t)lo) % (uint64_t)z->n);
}

/* Unique rows of a batch via a stamp array over the table (O(B), no sort). */
typedef struct {
    int32_t *stamp_slot; /* [rows] slot of the row in this step, valid if stamp == step */
    int64_t *stamp;      /* [rows] */
    int64_t *rows;       /* [B] unique rows in first-seen order */
    int64_t n;
} Dedup;

static void dedup(Dedup *d, const int64_t *ids, int64_t B, int64_t step, int32_t *slot)
{
    d->n = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t r = ids[b];
        if (d->stamp[r] != step) {
            d->stamp[r] = step;
            d->stamp_slot[r] = (int32_t)d->n;
            d->rows[d->n++] = r;
        }
        slot[b] = d->stamp_slot[r];
    }
}

typedef struct {
    double step_s, loss_s; /* medians */
    double gemm_s;         /* median of the paired GEMM-bound timings (B >= 4096) */
    double unique_users, unique_items;
} StepTimes;

static StepTimes run_steps(MrTask task, int64_t B, int d, int repeats)
{
    MrConfig c;
    mr_config_defaults(&c);
    c.model.task = task;
    c.model.embedding_dim = d;
    MrErr e;
    MrModelShape s;
    if (mr_model_shape(&s, &c, TABLE_ROWS, TABLE_ROWS, &e) != MR_OK)
        die("shape", &e);
    MrModel m;
    if (mr_model_init(&m, &s, 42, &e) != MR_OK)
        die("init", &e);
    MrModelWork w = {0};
    if (mr_model_work_init(&w, &s, B, B, B, B, 0, &e) != MR_OK)
        die("work", &e);
    MrOptimizer opt;
    mr_optim_from_config(&opt, &c);
    float *tabU = malloc((size_t)TABLE_ROWS * (size_t)d * sizeof(float));
    float *tabI = malloc((size_t)TABLE_ROWS * (size_t)d * sizeof(float));
    float *accU = malloc((size_t)TABLE_ROWS * (size_t)d * sizeof(float));
    float *accI = malloc((size_t)TABLE_ROWS * (size_t)d * sizeof(float));
    float *accD = malloc(s.n_dense * sizeof(float) + 4);
    mr_embedding_init_rows(tabU, 42, MR_STREAM_USER, 0, TABLE_ROWS, d, 0.05);
    mr_embedding_init_rows(tabI, 42, MR_STREAM_ITEM, 0, TABLE_ROWS, d, 0.05);
    for (size_t i = 0; i < (size_t)TABLE_ROWS * (size_t)d; i++)
        accU[i] = accI[i] = mr_optim_state_init(&opt, 0);
    for (size_t i = 0; i < s.n_dense; i++)
        accD[i] = mr_optim_state_init(&opt, 0);

    Zipf zu, zi;
    zipf_init(&zu, TABLE_ROWS, 0.8);
    zipf_init(&zi, TABLE_ROWS, 1.0);
    Dedup du = {calloc(TABLE_ROWS, sizeof(int32_t)), malloc(TABLE_ROWS * sizeof(int64_t)),
                malloc((size_t)B * sizeof(int64_t)), 0};
    Dedup di = {calloc(TABLE_ROWS, sizeof(int32_t)), malloc(TABLE_ROWS * sizeof(int64_t)),
                malloc((size_t)B * sizeof(int64_t)), 0};
    for (int64_t r = 0; r < TABLE_ROWS; r++)
        du.stamp[r] = di.stamp[r] = -1;
    /* a few distinct batches, drawn before timing and cycled */
    int nbatch = 4;
    int64_t *uid = malloc((size_t)(nbatch * B) * sizeof(int64_t));
    int64_t *iid = malloc((size_t)(nbatch * B) * sizeof(int64_t));
    float *rating = malloc((size_t)B * sizeof(float));
    for (int64_t i = 0; i < nbatch * B; i++) {
        uid[i] = zipf_draw(&zu, mr_mix(7, (uint64_t)i));
        iid[i] = zipf_draw(&zi, mr_mix(8, (uint64_t)i));
    }
    for (int64_t b = 0; b < B; b++)
        rating[b] = 1.0f + (float)(b % 5);
    int32_t *uslot = malloc((size_t)B * sizeof(int32_t)), *islot = malloc((size_t)B * sizeof(int32_t));
    int64_t *ids = malloc((size_t)B * sizeof(int64_t));
    float *U = malloc((size_t)(B * d) * sizeof(float)), *Ib = malloc((size_t)(B * d) * sizeof(float));
    int64_t tok_off[1] = {0};

    int warm = B >= 4096 ? 2 : 50;
    int reps = B >= 4096 ? repeats : repeats * 200;
    double *ts = malloc((size_t)reps * sizeof(double)), *tl = malloc((size_t)reps * sizeof(double));
    double *tg = malloc((size_t)reps * sizeof(double));
    /* At large B, the bound is measured right after each step (same inputs, same
     * block shapes, same moment's machine load) so that the ratio is not skewed by
     * other processes on a shared machine. */
    int64_t bs = ((MrkBufs_f *)w.impl)->bs;
    float *Sb = B >= 4096 ? malloc((size_t)(bs * B) * sizeof(float)) : NULL;
    float *gq = B >= 4096 ? malloc((size_t)(B * d) * sizeof(float)) : NULL;
    float *gc = B >= 4096 ? calloc((size_t)(B * d), sizeof(float)) : NULL;
    double su = 0, si = 0;
    MrRetrievalOpts o = {0};
    for (int it = -warm; it < reps; it++) {
        int64_t step = it + warm;
        const int64_t *bu = uid + (step % nbatch) * B, *bi = iid + (step % nbatch) * B;
        double t0 = bench_now();
        dedup(&du, bu, B, step, uslot);
        dedup(&di, bi, B, step, islot);
        for (int64_t j = 0; j < du.n; j++)
            memcpy(U + j * d, tabU + du.rows[j] * d, (size_t)d * sizeof(float));
        for (int64_t j = 0; j < di.n; j++)
            memcpy(Ib + j * d, tabI + di.rows[j] * d, (size_t)d * sizeof(float));
        memcpy(ids, bi, (size_t)B * sizeof(int64_t));
        MrBatchView v = {.B = B, .uslot = uslot, .islot = islot, .tok_off = tok_off,
                         .rating = rating, .nu = du.n, .ni = di.n, .U = U, .I = Ib};
        mr_model_zero_grad(&m);
        if (mr_model_forward_towers(&m, &v, &w, &e) != MR_OK)
            die("forward", &e);
        double loss, sse;
        double tl0 = bench_now();
        if (mr_retrieval_loss(&o, B, B, s.qout, w.Q, w.Cl, 0, ids, NULL, 1.0, w.dQ, w.dCl, &loss,
                              &w, &e) != MR_OK)
            die("loss", &e);
        double tl1 = bench_now();
        if (task == MR_TASK_MULTITASK && mr_model_rating_step(&m, &v, B, 1.0, &w, &sse, &e) != MR_OK)
            die("rating", &e);
        if (mr_model_backward_towers(&m, &v, &w, &e) != MR_OK)
            die("backward", &e);
        mr_optim_dense_update(&opt, m.params, accD, m.grads, s.n_dense);
        mr_optim_rows_update(&opt, tabU, accU, TABLE_ROWS, d, du.rows, w.dU, du.n);
        mr_optim_rows_update(&opt, tabI, accI, TABLE_ROWS, d, di.rows, w.dI, di.n);
        mr_optim_step_done(&opt);
        double t1 = bench_now();
        double tg0 = bench_now();
        for (int64_t i0 = 0; Sb && i0 < B; i0 += bs) {
            int64_t nb = B - i0 < bs ? B - i0 : bs;
            mr_mk_gemm_f(0, 1, nb, B, d, 1.0f, w.Q + i0 * d, d, w.Cl, d, 0.0f, Sb, B);
            mr_mk_gemm_f(0, 0, nb, d, B, 1.0f, Sb, B, w.Cl, d, 0.0f, gq + i0 * d, d);
            mr_mk_gemm_f(1, 0, B, d, nb, 1.0f, Sb, B, w.Q + i0 * d, d, 1.0f, gc, d);
        }
        double tg1 = bench_now();
        if (it >= 0) {
            ts[it] = t1 - t0;
            tl[it] = tl1 - tl0;
            tg[it] = tg1 - tg0;
            su += (double)du.n;
            si += (double)di.n;
        }
        if (!isfinite(loss)) {
            fprintf(stderr, "bench_model: non-finite loss\n");
            exit(1);
        }
    }
    StepTimes r = {bench_median(ts, reps), bench_median(tl, reps), bench_median(tg, reps), su / reps, si / reps};
    free(ts);
    free(tl);
    free(tg);
    free(Sb);
    free(gq);
    free(gc);
    free(uid);
    free(iid);
    free(rating);
    free(uslot);
    free(islot);
    free(ids);
    free(U);
    free(Ib);
    free(du.stamp_slot);
    free(du.stamp);
    free(du.rows);
    free(di.stamp_slot);
    free(di.stamp);
    free(di.rows);
    free(zu.cdf);
    free(zi.cdf);
    free(tabU);
    free(tabI);
    free(accU);
    free(accI);
    free(accD);
    mr_model_work_free(&w);
    mr_model_free(&m);
    return r;
}

/* ---- 3. the loss with its options ---- */

/* Median time of the retrieval loss alone at B = G, with the given options
 * (ids: Zipf-ish items, so accidental hits occur; p: their frequencies). */
static double loss_with(const MrRetrievalOpts *o, int64_t B, int d, int repeats)
{
    MrConfig c;
    mr_config_defaults(&c);
    c.model.embedding_dim = d;
    MrModelShape s;
    MrErr e;
    if (mr_model_shape(&s, &c, 2, 2, &e) != MR_OK)
        die("shape", &e);
    MrModelWork w = {0};
    if (mr_model_work_init(&w, &s, 1, B, 1, 1, 0, &e) != MR_OK)
        die("work", &e);
    float *Q = malloc((size_t)(B * d) * sizeof(float)), *C = malloc((size_t)(B * d) * sizeof(float));
    float *dQ = malloc((size_t)(B * d) * sizeof(float)), *dC = malloc((size_t)(B * d) * sizeof(float));
    float *p = malloc((size_t)B * sizeof(float));
    int64_t *ids = malloc((size_t)B * sizeof(int64_t));
    Zipf z;
    zipf_init(&z, TABLE_ROWS, 1.0);
    for (int64_t i = 0; i < B * d; i++) {
        Q[i] = 0.2f * ((float)mr_hash_unit(mr_mix(5, (uint64_t)i)) - 0.5f);
        C[i] = 0.2f * ((float)mr_hash_unit(mr_mix(6, (uint64_t)i)) - 0.5f);
    }
    for (int64_t b = 0; b < B; b++) {
        ids[b] = zipf_draw(&z, mr_mix(8, (uint64_t)b));
        p[b] = (float)(z.cdf[0] / (double)(1 + ids[b] % 1000));
    }
    double *t = malloc((size_t)repeats * sizeof(double)), loss;
    for (int r = -1; r < repeats; r++) {
        double t0 = bench_now();
        if (mr_retrieval_loss(o, B, B, d, Q, C, 0, ids, p, 1.0, dQ, dC, &loss, &w, &e) != MR_OK)
            die("loss", &e);
        if (r >= 0)
            t[r] = bench_now() - t0;
    }
    double m = bench_median(t, repeats);
    free(t);
    free(Q);
    free(C);
    free(dQ);
    free(dC);
    free(p);
    free(ids);
    free(z.cdf);
    mr_model_work_free(&w);
    return m;
}

int main(int argc, char **argv)
{
    int repeats = 7, big = 1, small = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--repeats") == 0 && i + 1 < argc)
            repeats = atoi(argv[++i]);
        else if (strcmp(argv[i], "--big-only") == 0)
            small = 0;
        else if (strcmp(argv[i], "--small-only") == 0)
            big = 0;
        else {
            fprintf(stderr, "usage: %s [--repeats N] [--big-only | --small-only]\n", argv[0]);
            return 2;
        }
    }
    if (repeats < 1)
        repeats = 1;
    const char *thr = getenv("OPENBLAS_NUM_THREADS");
    printf("bench_model: OPENBLAS_NUM_THREADS=%s (openblas reports %d), repeats %d\n",
           thr ? thr : "(unset)", openblas_get_num_threads(), repeats);
    printf("reproduce: OPENBLAS_NUM_THREADS=1 %s --repeats %d%s\n\n", argv[0], repeats,
           big && !small ? " --big-only" : (!big && small ? " --small-only" : ""));
    const int dims[3] = {16, 32, 64};
    const int64_t Bbig = 8192;
    GemmTimes g[3];
    int64_t bs = 0;
    if (big) {
        MrConfig c;
        mr_config_defaults(&c);
        MrModelShape s;
        MrErr e;
        c.model.embedding_dim = 32;
        if (mr_model_shape(&s, &c, 2, 2, &e) != MR_OK)
            die("shape", &e);
        MrModelWork w = {0};
        if (mr_model_work_init(&w, &s, 1, Bbig, 1, 1, 0, &e) != MR_OK)
            die("work", &e);
        bs = ((MrkBufs_f *)w.impl)->bs;
        mr_model_work_free(&w);
        printf("1. sgemm, the three GEMMs of the retrieval loss at B = G = %lld "
               "(2*B*G*d flops each)\n", (long long)Bbig);
        printf("   %4s  %22s  %22s\n", "d", "blocked (bs rows)", "whole B x B x d");
        for (int k = 0; k < 3; k++) {
            g[k] = gemm_rates(Bbig, dims[k], bs, repeats);
            double fl = 3.0 * 2.0 * (double)Bbig * (double)Bbig * dims[k];
            printf("   %4d  %8.3f s %6.1f GF/s  %8.3f s %6.1f GF/s   (bs = %lld)\n", dims[k],
                   g[k].blocked_s, fl / g[k].blocked_s / 1e9, g[k].full_s,
                   g[k].full_s > 0 ? fl / g[k].full_s / 1e9 : 0.0, (long long)bs);
        }
        printf("\n");
    }
    printf("2. training step (median of %d repeats at B=8192, %d at B=32)\n", repeats,
           repeats * 200);
    printf("   %-10s %5s %3s %11s %12s %10s %12s %12s %8s %8s\n", "task", "B", "d", "step",
           "examples/s", "loss", "bound ex/s", "step/bound", "loss/b", "uniq u/i");
    for (int t = 0; t < 2; t++) {
        MrTask task = t ? MR_TASK_MULTITASK : MR_TASK_RETRIEVAL;
        for (int bi = 0; bi < 2; bi++) {
            int64_t B = bi ? Bbig : 32;
            if ((B == Bbig && !big) || (B == 32 && !small))
                continue;
            for (int k = 0; k < 3; k++) {
                StepTimes r = run_steps(task, B, dims[k], repeats);
                printf("   %-10s %5lld %3d %9.1f us %12.0f %7.1f us", mr_task_name(task),
                       (long long)B, dims[k], r.step_s * 1e6, (double)B / r.step_s,
                       r.loss_s * 1e6);
                if (B == Bbig)
                    printf(" %12.0f %11.1f%% %7.1f%%", (double)B / r.gemm_s,
                           100.0 * r.gemm_s / r.step_s, 100.0 * r.gemm_s / r.loss_s);
                else
                    printf(" %12s %12s %8s", "-", "-", "-");
                printf(" %4.0f/%-4.0f\n", r.unique_users, r.unique_items);
                fflush(stdout);
            }
        }
    }
    if (big) {
        printf("\n3. retrieval loss alone at B = G = %lld, d = 32, by option\n", (long long)Bbig);
        struct {
            const char *name;
            MrRetrievalOpts o;
        } cases[] = {{"none", {.temperature = 0}},
                     {"temperature 0.1 + logq", {.temperature = 0.1, .logq = 1}},
                     {"+ remove_accidental_hits",
                      {.temperature = 0.1, .logq = 1, .remove_accidental_hits = 1}},
                     {"+ num_hard_negatives 100",
                      {.temperature = 0.1, .logq = 1, .remove_accidental_hits = 1,
                       .num_hard_negatives = 100}}};
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            double tl = loss_with(&cases[i].o, Bbig, 32, repeats);
            printf("   %-28s %9.1f ms %10.0f examples/s\n", cases[i].name, tl * 1e3,
                   (double)Bbig / tl);
            fflush(stdout);
        }
    }
    return 0;
}
