/* Softmax over one attention row, NEON (ARMv8.0): the same vector exp as
 * softmax_avx2.c (Cody-Waite reduction, Cephes' degree-6 polynomial, 2^n by
 * exponent bits), 4 lanes; lanes past the row's end add exactly 0. */
#if defined(__aarch64__)

#include "kernels.h"

#include <arm_neon.h>
#include <math.h>
#include <string.h>

static inline float32x4_t exp4(float32x4_t x) {
    x = vmaxq_f32(x, vdupq_n_f32(-87.0f));
    float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    p = vfmaq_f32(r, p, vmulq_f32(r, r));
    p = vaddq_f32(p, vdupq_n_f32(1.0f));
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

float rs_softmax_neon(float *x, int n, float *max) {
    *max = -INFINITY;
    if (n <= 0) return 0.0f;
    float32x4_t mv = vdupq_n_f32(-INFINITY);
    int i = 0;
    for (; i + 4 <= n; i += 4) mv = vmaxq_f32(mv, vld1q_f32(x + i));
    float mx = vmaxvq_f32(mv);
    for (int j = i; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    const float32x4_t m = vdupq_n_f32(mx);
    float32x4_t sum = vdupq_n_f32(0.0f);
    for (i = 0; i + 4 <= n; i += 4) {
        float32x4_t e = exp4(vsubq_f32(vld1q_f32(x + i), m));
        vst1q_f32(x + i, e);
        sum = vaddq_f32(sum, e);
    }
    if (i < n) {
        float t[4];
        int k = n - i;
        memcpy(t, x + i, (size_t)k * sizeof(float));
        for (int j = k; j < 4; j++) t[j] = mx;
        float32x4_t e = exp4(vsubq_f32(vld1q_f32(t), m));
        const int32_t idx[4] = {0, 1, 2, 3};
        uint32x4_t keep = vcltq_s32(vld1q_s32(idx), vdupq_n_s32(k));
        e = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(e), keep));
        vst1q_f32(t, e);
        memcpy(x + i, t, (size_t)k * sizeof(float));
        sum = vaddq_f32(sum, e);
    }
    /* fixed order: (0+2, 1+3), then their sum */
    float32x2_t s2 = vadd_f32(vget_low_f32(sum), vget_high_f32(sum));
    const float total = vget_lane_f32(s2, 0) + vget_lane_f32(s2, 1);
    const float inv = 1.0f / total;
    const float32x4_t iv = vdupq_n_f32(inv);
    for (i = 0; i + 4 <= n; i += 4) vst1q_f32(x + i, vmulq_f32(vld1q_f32(x + i), iv));
    for (; i < n; i++) x[i] *= inv;
    *max = mx;
    return total;
}

/* SiLU(g) * u with the same exp, 4 at a time; the last n % 4 through a
 * padded copy. */
static inline float32x4_t swiglu4(float32x4_t g, float32x4_t u) {
    float32x4_t e = exp4(vminq_f32(vnegq_f32(g), vdupq_n_f32(88.0f)));
    return vmulq_f32(vdivq_f32(g, vaddq_f32(vdupq_n_f32(1.0f), e)), u);
}

void rs_swiglu_neon(float *g, const float *u, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(g + i, swiglu4(vld1q_f32(g + i), vld1q_f32(u + i)));
    if (i < n) {
        float tg[4] = {0}, tu[4] = {0};
        memcpy(tg, g + i, (size_t)(n - i) * sizeof(float));
        memcpy(tu, u + i, (size_t)(n - i) * sizeof(float));
        vst1q_f32(tg, swiglu4(vld1q_f32(tg), vld1q_f32(tu)));
        memcpy(g + i, tg, (size_t)(n - i) * sizeof(float));
    }
}

#else
typedef int rs_softmax_neon_unused; /* ISO C: a translation unit is never empty */
#endif
