/* csvscan_avx2.c — the csv fast path's kernels compiled without AVX-512
 * (tests/CMakeLists.txt adds -mno-avx512f to this file alone): the AVX2 masks,
 * BMI2's pdep for the bit select, as on an AVX2-only x86. */
#define CSVSCAN_NAME(x) x##_avx2
#include "variants/csvscan_variant.h"
