/* kernels_double.c — the double instantiation of the model kernels.
 *
 * Same source text as kernels_float.c (see there), evaluated in double: the
 * finite-difference gradient checks of tests/test_model_grad.c run on it, so they
 * check the code that trains, not a second implementation. Not used by training.
 */
#include <cblas.h>
/* OpenBLAS pulls in <complex.h>, whose macro I would rename MrBatchView.I. */
#undef I
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"

#define R_ double
#define S_(name) name##_d
#define CBLAS_GEMM cblas_dgemm
#include "model/gemm_tmpl.h"
#include "model/layers_tmpl.h"
#include "model/towers_tmpl.h"
#include "model/retrieval_tmpl.h"
