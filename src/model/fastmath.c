/* fastmath.c — the two row passes of the softmax (row max, exp + sum) and a
 * vectorisable exp in float.
 *
 * Why: the retrieval loss at B = G = 8192 evaluates 67M exponentials per step. A
 * libm call per element would cost more than the three GEMMs together, so the float
 * path uses its own exp, written with GCC/clang vector extensions (16 lanes; the
 * compiler maps them to AVX-512, AVX2 or SSE, no intrinsics, no libm in the loop):
 *
 *   x = k ln2 + r, k = round(x / ln2), |r| <= ln2/2   (Cody-Waite: ln2 = HI + LO,
 *       HI = 355/512 has 9 significant bits so k*HI is exact for |k| <= 128)
 *   e^r = degree-7 Taylor polynomial (truncation error < 4e-9 relative, below
 *       half an ulp, so the result is within ~1 ulp; tests/test_model.c measures it)
 *   2^k = exponent bits; computed as 2^(k-1) * 2 so that k = 128 (x up to 88.72)
 *       still has a valid exponent field.
 *
 * Domain: results below ~2.7e-38 (x < -86.5) are flushed to 0 (the softmax adds them
 * to a sum >= 1, where they vanish anyway); x > 88.72 gives +inf; NaN stays NaN, so a
 * non-finite logit poisons the row sum and the caller's finiteness check sees it.
 *
 * The row passes: max_j (s_j - lq_j), then e_j = exp(s_j - lq_j - m) written in place
 * with the sum accumulated in 16 float lanes (reduced in double). The logQ column
 * shift lq is applied on the fly, so the logit block is never rewritten for it.
 * The tail of a row (n % 16) goes through the same vector code on a padded copy,
 * so every element gets exactly the same arithmetic.
 *
 * The double instantiation (used only by the gradient checks) is plain libm.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "model/kernels.h"

#define VW 16
typedef float vf __attribute__((vector_size(VW * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(VW * sizeof(float))));
typedef uint32_t vu __attribute__((vector_size(VW * sizeof(float))));

/* Vector helpers are macros, not functions: functions taking or returning vector
 * types change the ABI when the ISA lacks them (-Wpsabi). */
#define SPLAT(c) ((vf){0} + (float)(c))
#define VSEL(m, a, b) ((vf)(((vi)(a) & (m)) | ((vi)(b) & ~(m))))
#define VLOAD(v, p) memcpy(&(v), (p), sizeof(vf))
#define VSTORE(p, v) memcpy((p), &(v), sizeof(vf))

#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693359375f          /* 355/512 */
#define EXP_LN2_LO -2.12194440054690583e-4f /* ln2 - 355/512 */
#define EXP_MAGIC 12582912.0f            /* 1.5 * 2^23: adding it rounds to an integer */

/* y = exp(x) for one vector (see the design note for the domain). */
#define VEXP(y, x)                                                                          \
    do {                                                                                    \
        vf x_ = (x);                                                                        \
        vf xc_ = VSEL(x_ < SPLAT(-88.0f), SPLAT(-88.0f), x_); /* NaN compares false: kept */ \
        xc_ = VSEL(xc_ > SPLAT(89.0f), SPLAT(89.0f), xc_);                                  \
        vf t_ = xc_ * EXP_LOG2E + EXP_MAGIC;                                                \
        vf k_ = t_ - EXP_MAGIC;                                                             \
        vf r_ = xc_ - k_ * EXP_LN2_HI;                                                      \
        r_ = r_ - k_ * EXP_LN2_LO;                                                          \
        vf p_ = SPLAT(1.0f / 5040.0f);                                                      \
        p_ = p_ * r_ + (1.0f / 720.0f);                                                     \
        p_ = p_ * r_ + (1.0f / 120.0f);                                                     \
        p_ = p_ * r_ + (1.0f / 24.0f);                                                      \
        p_ = p_ * r_ + (1.0f / 6.0f);                                                       \
        p_ = p_ * r_ + 0.5f;                                                                \
        p_ = p_ * r_ + 1.0f;                                                                \
        p_ = p_ * r_ + 1.0f;                                                                \
        /* k = bits(t) - bits(MAGIC); exponent field of 2^(k-1) is k + 126 */              \
        vu e_ = ((vu)t_ - 0x4B400000u + 126u) << 23;                                        \
        vf y_ = p_ * (vf)e_ * 2.0f;                                                         \
        (y) = VSEL(x_ < SPLAT(-86.5f), SPLAT(0.0f), y_);                                    \
    } while (0)

/* GCC in ISO C mode does not contract a*b+c into FMAs; allow it here (clang
 * contracts within an expression by default). */
#if defined(__GNUC__) && !defined(__clang__)
#define FASTMATH_FN __attribute__((optimize("fp-contract=fast")))
#else
#define FASTMATH_FN
#endif

FASTMATH_FN void mr_mk_expf_array(const float *x, float *y, int64_t n)
{
    int64_t j = 0;
    for (; j + VW <= n; j += VW) {
        vf v, r;
        VLOAD(v, x + j);
        VEXP(r, v);
        VSTORE(y + j, r);
    }
    if (j < n) {
        float buf[VW];
        for (int k = 0; k < VW; k++)
            buf[k] = j + k < n ? x[j + k] : 0.0f;
        vf v, r;
        VLOAD(v, buf);
        VEXP(r, v);
        VSTORE(buf, r);
        for (int k = 0; j + k < n; k++)
            y[j + k] = buf[k];
    }
}

FASTMATH_FN float mr_mk_row_max_f(const float *row, const float *lq, int64_t n)
{
    vf m = SPLAT(-INFINITY);
    int64_t j = 0;
    if (lq) {
        for (; j + VW <= n; j += VW) {
            vf a, b;
            VLOAD(a, row + j);
            VLOAD(b, lq + j);
            a = a - b;
            m = VSEL(a > m, a, m);
        }
    } else {
        for (; j + VW <= n; j += VW) {
            vf a;
            VLOAD(a, row + j);
            m = VSEL(a > m, a, m);
        }
    }
    float r = -INFINITY;
    for (int k = 0; k < VW; k++)
        r = m[k] > r ? m[k] : r;
    for (; j < n; j++) {
        float v = lq ? row[j] - lq[j] : row[j];
        r = v > r ? v : r;
    }
    return r;
}

FASTMATH_FN double mr_mk_exp_sum_f(float *row, const float *lq, float m, int64_t n)
{
    vf acc = SPLAT(0.0f), M = SPLAT(m);
    int64_t j = 0;
    if (lq) {
        for (; j + VW <= n; j += VW) {
            vf a, b, y;
            VLOAD(a, row + j);
            VLOAD(b, lq + j);
            VEXP(y, (a - b) - M);
            VSTORE(row + j, y);
            acc += y;
        }
    } else {
        for (; j + VW <= n; j += VW) {
            vf a, y;
            VLOAD(a, row + j);
            VEXP(y, a - M);
            VSTORE(row + j, y);
            acc += y;
        }
    }
    if (j < n) {
        /* Padded with -inf, which exponentiates to 0 and adds nothing. */
        float buf[VW];
        for (int k = 0; k < VW; k++)
            buf[k] = j + k < n ? (lq ? row[j + k] - lq[j + k] : row[j + k]) : -INFINITY;
        vf a, y;
        VLOAD(a, buf);
        VEXP(y, a - M);
        VSTORE(buf, y);
        for (int k = 0; j + k < n; k++)
            row[j + k] = buf[k];
        acc += y;
    }
    double s = 0.0;
    for (int k = 0; k < VW; k++)
        s += (double)acc[k];
    return s;
}

double mr_mk_row_max_d(const double *row, const double *lq, int64_t n)
{
    double r = -INFINITY;
    for (int64_t j = 0; j < n; j++) {
        double v = lq ? row[j] - lq[j] : row[j];
        r = v > r ? v : r;
    }
    return r;
}

double mr_mk_exp_sum_d(double *row, const double *lq, double m, int64_t n)
{
    double s = 0.0;
    for (int64_t j = 0; j < n; j++) {
        double v = lq ? row[j] - lq[j] : row[j];
        row[j] = exp(v - m);
        s += row[j];
    }
    return s;
}
