/* fast_exp.h — the vectorisable exp of the fast CPU kernels (internal to kernels/cpu). */
#ifndef KS_FAST_EXP_H
#define KS_FAST_EXP_H

#include <stdint.h>

/* exp(x) for x <= 0 (larger x are clamped to 0), vectorisable: 2^n * p(r) with n = round(x / ln 2),
 * r = x - n ln 2 (Cody-Waite split) and Cephes' expf polynomial, about 1e-7 relative error. Below -87 the
 * result is ~1e-38 instead of 0, which no softmax sum can notice. libm's expf is scalar without -ffast-math
 * and was the bottleneck of prefill attention. */
static inline float ks_exp_nonpos(float x) {
    x = x > 0.0f ? 0.0f : x < -87.0f ? -87.0f : x;
    float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f; /* round to nearest via the 1.5 * 2^23 trick */
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } two_n = {.i = ((int32_t)n + 127) << 23};
    return p * two_n.f;
}

#endif
