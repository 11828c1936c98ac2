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

/* The update of n contiguous parameters with learning rate lr (alpha: Adam's step
 * size). s0/s1: the state slots of these parameters. */
static void update(const MrOptimizer *o, double lr_d, float alpha, float *w, float *s0, float *s1,
                   const float *g, size_t n)
{
    float lr = (float)lr_d, eps = (float)o->eps;
    switch (o->name) {
    case MR_OPT_ADAGRAD:
        for (size_t i = 0; i < n; i++) {
            float acc = s0[i] + g[i] * g[i];
            s0[i] = acc;
            w[i] = w[i] - (lr * g[i]) / sqrtf(acc + eps);
        }
        break;
    case MR_OPT_SGD:
        for (size_t i = 0; i < n; i++)
            w[i] = w[i] - lr * g[i];
        break;
    case MR_OPT_ADAM: {
        float c1 = (float)(1.0 - o->beta1), c2 = (float)(1.0 - o->beta2);
        for (size_t i = 0; i < n; i++) {
            float m = s0[i] + (g[i] - s0[i]) * c1;
            float v = s1[i] + (g[i] * g[i] - s1[i]) * c2;
            s0[i] = m;
            s1[i] = v;
            w[i] = w[i] - (m * alpha) / (sqrtf(v) + eps);
        }
        break;
    }
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
