/* kernels.h — private to src/model (and the tests): the numerical kernels of the
 * model, written once over a `real` type and instantiated twice:
 *
 *   *_f  float   the training path behind include/mpirec/model.h
 *   *_d  double  the same code in double, for the finite-difference gradient checks
 *                of tests/test_model_grad.c (and for debugging)
 *
 * The bodies live in layers_tmpl.h, towers_tmpl.h and retrieval_tmpl.h; the two
 * instantiations are kernels_float.c and kernels_double.c. The declarations for
 * one precision are in kernels_decl.h, included below once per precision.
 *
 * Dimension letters as in model.h: B rows, G candidates, D id-embedding dim, T text
 * dim, d tower output dim. Matrices are row-major; `ld` is the row stride in
 * elements, so a column block of a wider matrix (the concat of the query input) is
 * addressed as (pointer + column offset, ld).
 */
#ifndef MPIREC_MODEL_KERNELS_H
#define MPIREC_MODEL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "mpirec/err.h"
#include "mpirec/model.h"

/* TFRS constants (layers/loss.py L22-23): float32.max/100 and float32.min/100. */
#define MR_MK_MAX_FLOAT 3.4028234663852886e+36
#define MR_MK_MIN_FLOAT (-3.4028234663852886e+36)

/* exp in float for a whole array: the vectorised polynomial of fastmath.c (about
 * 1 ulp; results below ~2.7e-38 are flushed to 0, x > 88.72 gives +inf, NaN stays
 * NaN). Exposed for the accuracy test. */
void mr_mk_expf_array(const float *x, float *y, int64_t n);

#define MR_MK_REAL float
#define MR_MK_SFX(name) name##_f
#include "kernels_decl.h"
#undef MR_MK_REAL
#undef MR_MK_SFX

#define MR_MK_REAL double
#define MR_MK_SFX(name) name##_d
#include "kernels_decl.h"
#undef MR_MK_REAL
#undef MR_MK_SFX

#endif
