/* optim.h — optimizers: Keras Adagrad, SGD, Adam; dense and row-wise.
 *
 * Dense parameters are one flat buffer updated elementwise. Embedding tables are
 * updated row-wise: only rows that received a gradient this step move, and their
 * optimizer state is stored per row next to the table (same row layout), so a
 * row-sharded table carries its own state.
 *
 * Keras >= 2.11 Adagrad (SEMANTICS.md section 6): acc starts at
 * initial_accumulator; acc += g^2; w -= lr * g / sqrt(acc + eps)   (eps INSIDE).
 * SGD: w -= lr * g. Adam (Keras formula): t += 1; m = b1 m + (1-b1) g;
 * v = b2 v + (1-b2) g^2; w -= lr * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + eps).
 * For embeddings Adam is "lazy": untouched rows keep m and v (Keras would decay
 * every row's moments each step), and t is the global step count.
 *
 * Determinism: every update is a pure elementwise function of (w, state, g), so
 * ranks applying the same gradients in the same order stay bitwise equal.
 */
#ifndef MPIREC_OPTIM_H
#define MPIREC_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "mpirec/config.h"
#include "mpirec/err.h"

typedef struct MrOptimizer {
    MrOptName name;
    double lr;           /* dense learning rate */
    double emb_lr;       /* embedding learning rate */
    double init_acc;     /* Adagrad accumulator start */
    double eps;
    double beta1, beta2;
    int64_t step;        /* completed steps (Adam bias correction uses step + 1) */
} MrOptimizer;

/* Lifecycle */
void mr_optim_from_config(MrOptimizer *o, const MrConfig *c);
/* Number of state floats per parameter: Adagrad 1, SGD 0, Adam 2. */
int mr_optim_state_per_param(const MrOptimizer *o);
/* Initial value of state slot k (Adagrad: init_acc; Adam: 0). */
float mr_optim_state_init(const MrOptimizer *o, int k);

/* Operations */
/* Dense update of n parameters. state: [state_per_param][n] (slot-major). */
void mr_optim_dense_update(const MrOptimizer *o, float *w, float *state, const float *g, size_t n);
/* Row-wise update: for i < nrows, row rows_local[i] of the table (dim columns,
 * row-major, local row index) gets gradient g[i*dim ..]. state: [slots][table rows
 * x dim] with `table_rows` local rows. Rows must be distinct. */
void mr_optim_rows_update(const MrOptimizer *o, float *table, float *state, int64_t table_rows,
                          int dim, const int64_t *rows_local, const float *g, int64_t nrows);
/* Call once per completed step, after all updates (advances Adam's t). */
void mr_optim_step_done(MrOptimizer *o);

#endif
