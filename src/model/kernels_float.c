/* kernels_float.c — the float instantiation of the model kernels: the training path.
 *
 * The bodies are written once over `real` in gemm_tmpl.h, layers_tmpl.h,
 * towers_tmpl.h and retrieval_tmpl.h; kernels_double.c instantiates the same text in
 * double for the gradient checks. See kernels.h for why.
 */
#include <cblas.h>
/* OpenBLAS pulls in <complex.h>, whose macro I would rename MrBatchView.I. */
#undef I
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"

#define R_ float
#define S_(name) name##_f
#define CBLAS_GEMM cblas_sgemm
#include "model/gemm_tmpl.h"
#include "model/layers_tmpl.h"
#include "model/towers_tmpl.h"
#include "model/retrieval_tmpl.h"
