/* sq8_avx2.c — the quantized ivf kernel of src/index/ix_sq8.h compiled for AVX2
 * without AVX-512 (tests/CMakeLists.txt adds -mno-avx512f to this file alone), so
 * that test_index_sq8.c can compare the AVX2 path against the plain-C reference on
 * an AVX-512 machine. Returns the name of the path compiled. */
#include "index/ix_sq8.h"

const char *sq8_avx2_scores(const int8_t *const qi[IX_SQ8_Q], const uint8_t *blk, int d,
                            const float step[IX_SQ8_Q], const float base[IX_SQ8_Q],
                            float out[IX_SQ8_Q][IX_LANES]);

const char *sq8_avx2_scores(const int8_t *const qi[IX_SQ8_Q], const uint8_t *blk, int d,
                            const float step[IX_SQ8_Q], const float base[IX_SQ8_Q],
                            float out[IX_SQ8_Q][IX_LANES])
{
    ix_sq8_scores(qi, blk, d, step, base, out);
    return IX_SQ8_KERNEL;
}
