/* optim.c — Keras Adagrad, SGD and Adam over flat dense buffers and embedding rows
 * (include/mpirec/optim.h; SEMANTICS.md section 6).
 *
 * Every update is elementwise and evaluated in float with the same operation order
 * as Keras (and as ref_torch's KerasAdagrad), so ranks that apply the same gradients
 * stay bitwise equal and the reference is matched to the last bit or two:
 *   Adagrad  acc = acc + g*g;  w = w - (lr*g) / sqrt(acc + eps)      (eps inside)
 *   SGD      w = w - lr*g
 *   Adam     m = m + (g - m)(1-b1);  v = v + (g*g - v)(1-b2);
 *            w = w - (m*alpha) / (sqrt(v) + eps),  alpha = lr sqrt(1-b2^t)/(1-b1^t)
 * (Keras 2.15 optimizers/adam.py writes the moment updates in this "+= (g - m)(1-b)"
 * form; alpha is computed once per call in double and rounded to float.)
 *
 * Row-wise updates touch only the listed rows and their state; the caller has summed
 * duplicate rows already (the model's scatter-add does it for a batch). For Adagrad
 * and SGD a row with zero gradient would not move, so sparse and dense updates agree
 * exactly; Adam's row-wise update is "lazy" (untouched rows keep m and v), which
 * differs from Keras's dense decay of every row.
 */
#include "mpirec/optim.h"

#include <math.h>
#include <string.h>

/* Vector sqrt. sqrtf under the default -fmath-errno keeps loops scalar (a libm
 * fallback sets errno for negative inputs), and GCC ignores no-math-errno given as a
 * function attribute, so the hot loops use vector extensions with the ISA's square
 * root instruction. IEEE sqrt and division are correctly rounded in vector and
 * scalar form alike, so the results are bitwise those of the scalar formula (the
 * tail of each span runs the scalar code). */
#if defined(__AVX512F__)
#include <immintrin.h>
#define OW 16
typedef float ovec __attribute__((vector_size(64)));
#define OSQRT(v) ((ovec)_mm512_sqrt_ps((__m512)(v)))
#elif defined(__AVX__)
#include <immintrin.h>
#define OW 8
typedef float ovec __attribute__((vector_size(32)));
#define OSQRT(v) ((ovec)_mm256_sqrt_ps((__m256)(v)))
#elif defined(__SSE2__)
#include <immintrin.h>
#define OW 4
typedef float ovec __attribute__((vector_size(16)));
#define OSQRT(v) ((ovec)_mm_sqrt_ps((__m128)(v)))
#else
#define OW 0
#endif

void mr_optim_from_config(MrOptimizer *o, const MrConfig *c)
{
    memset(o, 0, sizeof *o);
    o->name = c->optimizer.name;
    o->lr = c->optimizer.lr;
    o->emb_lr = c->optimizer.embedding_lr < 0 ? c->optimizer.lr : c->optimizer.embedding_lr;
    o->init_acc = c->optimizer.initial_accumulator;
    o->eps = c->optimizer.epsilon;
    o->beta1 = c->optimizer.beta1;
    o->beta2 = c->optimizer.beta2;
    o->step = 0;
}

int mr_optim_state_per_param(const MrOptimizer *o)
{
    switch (o->name) {
    case MR_OPT_ADAGRAD:
        return 1;
    case MR_OPT_ADAM:
        return 2;
    case MR_OPT_SGD:
    default:
        return 0;
    }
}

float mr_optim_state_init(const MrOptimizer *o, int k)
{
    return o->name == MR_OPT_ADAGRAD && k == 0 ? (float)o->init_acc : 0.0f;
}

/* Adam's step size for learning rate lr at step o->step + 1 (rounded to float once). */
static float adam_alpha(const MrOptimizer *o, double lr)
{
    double t = (double)(o->step + 1);
    return (float)(lr * sqrt(1.0 - pow(o->beta2, t)) / (1.0 - pow(o->beta1, t)));
}

static void adagrad_span(float lr, float eps, float *w, float *acc, const float *g, size_t n)
{
    size_t i = 0;
#if OW
    for (; i + OW <= n; i += OW) {
        ovec gv, av, wv;
        memcpy(&gv, g + i, sizeof gv);
        memcpy(&av, acc + i, sizeof av);
        memcpy(&wv, w + i, sizeof wv);
        av = av + gv * gv;
        wv = wv - (lr * gv) / OSQRT(av + eps);
        memcpy(acc + i, &av, sizeof av);
        memcpy(w + i, &wv, sizeof wv);
    }
#endif
    for (; i < n; i++) {
        float a = acc[i] + g[i] * g[i];
        acc[i] = a;
        w[i] = w[i] - (lr * g[i]) / sqrtf(a + eps);
    }
}

static void adam_span(float alpha, float c1, float c2, float eps, float *w, float *m, float *v,
                      const float *g, size_t n)
{
    size_t i = 0;
#if OW
    for (; i + OW <= n; i += OW) {
        ovec gv, mv, vv, wv;
        memcpy(&gv, g + i, sizeof gv);
        memcpy(&mv, m + i, sizeof mv);
        memcpy(&vv, v + i, sizeof vv);
        memcpy(&wv, w + i, sizeof wv);
        mv = mv + (gv - mv) * c1;
        vv = vv + (gv * gv - vv) * c2;
        wv = wv - (mv * alpha) / (OSQRT(vv) + eps);
        memcpy(m + i, &mv, sizeof mv);
        memcpy(v + i, &vv, sizeof vv);
        memcpy(w + i, &wv, sizeof wv);
    }
#endif
    for (; i < n; i++) {
        float mi = m[i] + (g[i] - m[i]) * c1;
        float vi = v[i] + (g[i] * g[i] - v[i]) * c2;
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] - (mi * alpha) / (sqrtf(vi) + eps);
    }
}

/* The update of n contiguous parameters with learning rate lr (alpha: Adam's step
 * size). s0/s1: the state slots of these parameters. */
static void update(const MrOptimizer *o, double lr, float alpha, float *w, float *s0, float *s1,
                   const float *g, size_t n)
{
    switch (o->name) {
    case MR_OPT_ADAGRAD:
        adagrad_span((float)lr, (float)o->eps, w, s0, g, n);
        break;
    case MR_OPT_SGD: {
        float lrf = (float)lr;
        for (size_t i = 0; i < n; i++)
            w[i] = w[i] - lrf * g[i];
        break;
    }
    case MR_OPT_ADAM:
        adam_span(alpha, (float)(1.0 - o->beta1), (float)(1.0 - o->beta2), (float)o->eps, w, s0,
                  s1, g, n);
        break;
    }
}

void mr_optim_dense_update(const MrOptimizer *o, float *w, float *state, const float *g, size_t n)
{
    float alpha = o->name == MR_OPT_ADAM ? adam_alpha(o, o->lr) : 0.0f;
    update(o, o->lr, alpha, w, state, state ? state + n : NULL, g, n);
}

void mr_optim_rows_update(const MrOptimizer *o, float *table, float *state, int64_t table_rows,
                          int dim, const int64_t *rows_local, const float *g, int64_t nrows)
{
    size_t slot = (size_t)table_rows * (size_t)dim; /* floats per state slot */
    float alpha = o->name == MR_OPT_ADAM ? adam_alpha(o, o->emb_lr) : 0.0f;
    for (int64_t i = 0; i < nrows; i++) {
        size_t off = (size_t)rows_local[i] * (size_t)dim;
        float *s0 = state ? state + off : NULL;
        float *s1 = state && mr_optim_state_per_param(o) > 1 ? state + slot + off : NULL;
        update(o, o->emb_lr, alpha, table + off, s0, s1, g + (size_t)i * (size_t)dim, (size_t)dim);
    }
}

void mr_optim_step_done(MrOptimizer *o) { o->step++; }
