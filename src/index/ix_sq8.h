/* ix_sq8.h — the integer kernel of the quantized ivf scan (index.quantize).
 *
 * Items: 8-bit codes c_t in 0..255 of the residual x - c~ (item minus its list's
 * centroid), r_t ~ code_offset[t] + code_scale[t] c_t. Query: qs_t = q_t scale_t,
 * quantized symmetrically to int8, qs_t ~ step qi_t with step = max|qs| / 127. Then
 *
 *   q . x  ~  q . c~  +  q . code_offset  +  sum_t qs_t c_t
 *          =  q . c~  +  q . code_offset  +  sum_t e_t mean_t  +  step sum_t qi_t c_t
 *                                         +  sum_t e_t (c_t - mean_t)
 *
 * with e_t = qs_t - step qi_t the query's rounding error and mean_t the mean code of
 * dimension t over all items. The first three terms are per (query, list)
 * constants (`base`), the fourth is the integer kernel, and the last, left out, has
 * mean zero over the items: the approximate score base + step * acc is an unbiased
 * estimate of q . x up to the items' own rounding (at most half a code step per
 * dimension).
 *
 * Block layout: a block holds 16 items; its codes are [G = ceil(D/4)][16 lanes][4]
 * bytes (dimension t of lane l at byte (t/4)*64 + l*4 + t%4, dimensions past D are
 * 0), so one 64-byte row feeds one AVX-512 VNNI `vpdpbusd`: 16 lanes x 4 u8*s8
 * products added into 16 int32 sums.
 *
 * Three implementations chosen at compile time compute the same integer sums (they
 * are exact: |acc| <= 255 * 127 * D) and convert them with the same single rounding
 * IX_MADD(step, (float)acc, base), so they return bit-identical scores:
 * AVX-512 VNNI, AVX2 (AVX-VNNI vpdpbusd when available, else widening to int16 and
 * vpmaddwd), and plain C (ix_sq8_scores_ref, always compiled: the tests compare it
 * against the vector kernel).
 */
#ifndef MPIREC_IX_SQ8_H
#define MPIREC_IX_SQ8_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "index/ix_internal.h"

#define IX_SQ8_Q 4 /* queries per kernel call */

static inline int ix_sq8_groups(int d)
{
    return (d + 3) / 4;
}

/* Bytes of one 16-item block. */
static inline size_t ix_sq8_block_bytes(int d)
{
    return (size_t)ix_sq8_groups(d) * 4 * IX_LANES;
}

/* Byte offset of dimension t of lane `lane` inside block b. */
static inline size_t ix_sq8_at(int d, int64_t b, int t, int lane)
{
    return (size_t)b * ix_sq8_block_bytes(d) + (size_t)(t / 4) * 4 * IX_LANES + (size_t)lane * 4 +
           (size_t)(t % 4);
}

/* The int8 query of the kernel: qi [4 G] (padded with 0), its step, and the
 * per-query part of the base, q . code_offset + sum_t e_t mean_t (computed in
 * double, rounded once). A query with a non-finite value (or one whose scaled
 * values overflow) gets qi = 0 and corr = NaN, so every approximate score is NaN
 * and it takes no candidates, like the float path. */
static inline void ix_sq8_query(const float *q, const float *scale, const float *offset,
                                const float *mean, int d, int8_t *qi, float *step, float *corr)
{
    int g4 = 4 * ix_sq8_groups(d);
    memset(qi, 0, (size_t)g4);
    float m = 0.0f;
    int finite = 1;
    for (int t = 0; t < d; t++) {
        float v = q[t] * scale[t];
        finite &= v - v == 0.0f; /* false for NaN and +-Inf */
        float a = fabsf(v);
        m = a > m ? a : m;
    }
    if (!finite) {
        *step = 0.0f;
        *corr = NAN;
        return;
    }
    float st = m / 127.0f;
    double c = 0;
    for (int t = 0; t < d; t++) {
        float v = q[t] * scale[t];
        long r = st > 0 ? lrintf(v / st) : 0;
        r = r < -127 ? -127 : r > 127 ? 127 : r;
        qi[t] = (int8_t)r;
        c += (double)q[t] * offset[t] + ((double)v - (double)st * (double)r) * mean[t];
    }
    *step = st;
    *corr = (float)c;
}

/* Reference kernel, plain C: out[u][l] = IX_MADD(step[u], (float)acc, base[u]) with
 * acc = sum_t qi[u][t] * code(l, t), for the IX_SQ8_Q queries qi[u] [4 G]. */
static inline void ix_sq8_scores_ref(const int8_t *const qi[IX_SQ8_Q], const uint8_t *blk, int d,
                                     const float step[IX_SQ8_Q], const float base[IX_SQ8_Q],
                                     float out[IX_SQ8_Q][IX_LANES])
{
    int G = ix_sq8_groups(d);
    for (int u = 0; u < IX_SQ8_Q; u++)
        for (int l = 0; l < IX_LANES; l++) {
            int32_t acc = 0;
            for (int g = 0; g < G; g++)
                for (int j = 0; j < 4; j++)
                    acc += (int32_t)blk[(size_t)g * 64 + (size_t)l * 4 + (size_t)j] *
                           (int32_t)qi[u][4 * g + j];
            out[u][l] = IX_MADD(step[u], (float)acc, base[u]);
        }
}

static inline int32_t ix_sq8_word(const int8_t *p)
{
    int32_t w;
    memcpy(&w, p, sizeof w);
    return w;
}

#if defined(__AVX512F__) && defined(__AVX512VNNI__)
#define IX_SQ8_KERNEL "avx512-vnni"
#elif defined(__AVX2__) && defined(__FMA__) && defined(__AVXVNNI__)
#define IX_SQ8_KERNEL "avx2-vnni"
#elif defined(__AVX2__) && defined(__FMA__)
#define IX_SQ8_KERNEL "avx2"
#else
#define IX_SQ8_KERNEL "c"
#endif

#if (defined(__AVX2__) && defined(__FMA__)) && !(defined(__AVX512F__) && defined(__AVX512VNNI__))
/* AVX2: 16 int32 sums of lane l's 4-byte groups against the query words, in two
 * registers of 8 lanes each. */
static inline void ix_sq8_acc_avx2(const int8_t *qi, const uint8_t *blk, int G, __m256i *lo,
                                   __m256i *hi)
{
#if defined(__AVXVNNI__)
    __m256i a0 = _mm256_setzero_si256(), a1 = a0;
    for (int g = 0; g < G; g++) {
        __m256i w = _mm256_set1_epi32(ix_sq8_word(qi + 4 * g));
        const __m256i *row = (const __m256i *)(blk + (size_t)g * 64);
        a0 = _mm256_dpbusd_avx_epi32(a0, _mm256_loadu_si256(row), w);
        a1 = _mm256_dpbusd_avx_epi32(a1, _mm256_loadu_si256(row + 1), w);
    }
    *lo = a0;
    *hi = a1;
#else
    /* Without VNNI: codes widened to int16 (0..255) and vpmaddwd with the query
     * widened the same way; pair sums are exact (no saturation, unlike vpmaddubsw
     * with a full-range query). Chunk c (16 bytes = lanes 4c .. 4c+3) gives 8 pair
     * sums [l0 (d0+d1), l0 (d2+d3), l1 .., l1 .., ...]. */
    __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
    for (int g = 0; g < G; g++) {
        __m256i w = _mm256_cvtepi8_epi16(_mm_set1_epi32(ix_sq8_word(qi + 4 * g)));
        const __m128i *row = (const __m128i *)(blk + (size_t)g * 64);
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(row)), w));
        s1 = _mm256_add_epi32(s1,
                              _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(row + 1)), w));
        s2 = _mm256_add_epi32(s2,
                              _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(row + 2)), w));
        s3 = _mm256_add_epi32(s3,
                              _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(row + 3)), w));
    }
    /* hadd within 128-bit halves gives lanes [0 1 4 5 | 2 3 6 7]; reorder the
     * 64-bit pairs to [0 1 2 3 | 4 5 6 7] */
    *lo = _mm256_permute4x64_epi64(_mm256_hadd_epi32(s0, s1), _MM_SHUFFLE(3, 1, 2, 0));
    *hi = _mm256_permute4x64_epi64(_mm256_hadd_epi32(s2, s3), _MM_SHUFFLE(3, 1, 2, 0));
#endif
}
#endif

/* The vector kernel (same contract and results as ix_sq8_scores_ref). */
static inline void ix_sq8_scores(const int8_t *const qi[IX_SQ8_Q], const uint8_t *blk, int d,
                                 const float step[IX_SQ8_Q], const float base[IX_SQ8_Q],
                                 float out[IX_SQ8_Q][IX_LANES])
{
#if defined(__AVX512F__) && defined(__AVX512VNNI__)
    int G = ix_sq8_groups(d);
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (int g = 0; g < G; g++) {
        __m512i x = _mm512_loadu_si512(blk + (size_t)g * 64);
        a0 = _mm512_dpbusd_epi32(a0, x, _mm512_set1_epi32(ix_sq8_word(qi[0] + 4 * g)));
        a1 = _mm512_dpbusd_epi32(a1, x, _mm512_set1_epi32(ix_sq8_word(qi[1] + 4 * g)));
        a2 = _mm512_dpbusd_epi32(a2, x, _mm512_set1_epi32(ix_sq8_word(qi[2] + 4 * g)));
        a3 = _mm512_dpbusd_epi32(a3, x, _mm512_set1_epi32(ix_sq8_word(qi[3] + 4 * g)));
    }
    _mm512_storeu_ps(out[0], _mm512_fmadd_ps(_mm512_set1_ps(step[0]), _mm512_cvtepi32_ps(a0),
                                             _mm512_set1_ps(base[0])));
    _mm512_storeu_ps(out[1], _mm512_fmadd_ps(_mm512_set1_ps(step[1]), _mm512_cvtepi32_ps(a1),
                                             _mm512_set1_ps(base[1])));
    _mm512_storeu_ps(out[2], _mm512_fmadd_ps(_mm512_set1_ps(step[2]), _mm512_cvtepi32_ps(a2),
                                             _mm512_set1_ps(base[2])));
    _mm512_storeu_ps(out[3], _mm512_fmadd_ps(_mm512_set1_ps(step[3]), _mm512_cvtepi32_ps(a3),
                                             _mm512_set1_ps(base[3])));
#elif defined(__AVX2__) && defined(__FMA__)
    int G = ix_sq8_groups(d);
    for (int u = 0; u < IX_SQ8_Q; u++) {
        __m256i lo, hi;
        ix_sq8_acc_avx2(qi[u], blk, G, &lo, &hi);
        __m256 st = _mm256_set1_ps(step[u]), b = _mm256_set1_ps(base[u]);
        _mm256_storeu_ps(out[u], _mm256_fmadd_ps(st, _mm256_cvtepi32_ps(lo), b));
        _mm256_storeu_ps(out[u] + 8, _mm256_fmadd_ps(st, _mm256_cvtepi32_ps(hi), b));
    }
#else
    ix_sq8_scores_ref(qi, blk, d, step, base, out);
#endif
}

#endif
