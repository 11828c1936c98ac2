/* csvscan_sse2.c — the csv fast path's kernels compiled with neither AVX2 nor
 * BMI2 (tests/CMakeLists.txt adds -mno-avx2 -mno-avx512f -mno-bmi2 to this file
 * alone): the 16-byte SSE2 masks and the plain bit-clearing select, as on an
 * older x86-64. */
#define CSVSCAN_NAME(x) x##_sse2
#include "variants/csvscan_variant.h"
