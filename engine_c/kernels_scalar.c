/* The plain-C reference for every kernel of the table (kernels.h).
 * Written to be obviously right, not fast: the SIMD tables are tested
 * against it (engine_c/tests/test_kernels.c).
 *
 * Quantized dot products (weights x int16 activations): per 32-element
 * block, the integer products are summed exactly as int32 (|w| <= 128,
 * |q| <= 32767: |isum| <= 32 * 128 * 32767 < 2^31), then scaled in float;
 * blocks in order:
 *   q4_0, q8_0: acc += (d_w * x.d) * (float)isum
 *   q4_1:       acc += (d_w * x.d) * (float)isum + m_w * x.s
 * Every output element is computed alone by the same loop, so the
 * determinism contract holds trivially. */
#include "kernels.h"

#include <math.h>
#include <string.h>

static uint16_t ld16(const void *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static void quantize_q16(const float *x, rs_block_q16 *y, int k) {
    for (int b = 0; b < k / RS_QK; b++) {
        const float *xb = x + b * RS_QK;
        float amax = 0.0f;
        for (int j = 0; j < RS_QK; j++) {
            float a = fabsf(xb[j]);
            if (a > amax) amax = a;
        }
        float d = amax / 32767.0f;
        int32_t sum = 0;
        for (int j = 0; j < RS_QK; j++) {
            float q = 0.0f;
            if (d != 0.0f) {
                q = roundf(xb[j] / d); /* nearest, ties away from zero */
                /* a subnormal d can make x/d overshoot 32767: clamp (SIMD does the same) */
                if (q > 32767.0f) q = 32767.0f;
                if (q < -32767.0f) q = -32767.0f;
            }
            y[b].qs[j] = (int16_t)q;
            sum += (int32_t)q;
        }
        y[b].d = d;
        y[b].s = d * (float)sum; /* |sum| <= 32 * 32767 < 2^24: exact */
    }
}

static void gemm_q4_0(int nr, int nt, int k, const void *w, size_t w_stride,
                      const rs_block_q16 *x, float *y, size_t ldy) {
    int nb = k / RS_QK;
    for (int t = 0; t < nt; t++) {
        const rs_block_q16 *xr = x + (size_t)t * nb;
        for (int r = 0; r < nr; r++) {
            const rs_block_q4_0 *wr = (const rs_block_q4_0 *)((const char *)w + r * w_stride);
            float acc = 0.0f;
            for (int b = 0; b < nb; b++) {
                int32_t isum = 0;
                for (int j = 0; j < RS_QK / 2; j++) {
                    int lo = (wr[b].qs[j] & 0x0f) - 8;
                    int hi = (wr[b].qs[j] >> 4) - 8;
                    isum += lo * xr[b].qs[j] + hi * xr[b].qs[j + RS_QK / 2];
                }
                float dw = rs_f16_to_f32(ld16(&wr[b].d));
                acc += (dw * xr[b].d) * (float)isum;
            }
            y[(size_t)t * ldy + r] = acc;
        }
    }
}

static void gemm_q4_1(int nr, int nt, int k, const void *w, size_t w_stride,
                      const rs_block_q16 *x, float *y, size_t ldy) {
    int nb = k / RS_QK;
    for (int t = 0; t < nt; t++) {
        const rs_block_q16 *xr = x + (size_t)t * nb;
        for (int r = 0; r < nr; r++) {
            const rs_block_q4_1 *wr = (const rs_block_q4_1 *)((const char *)w + r * w_stride);
            float acc = 0.0f;
            for (int b = 0; b < nb; b++) {
                int32_t isum = 0;
                for (int j = 0; j < RS_QK / 2; j++) {
                    int lo = wr[b].qs[j] & 0x0f;
                    int hi = wr[b].qs[j] >> 4;
                    isum += lo * xr[b].qs[j] + hi * xr[b].qs[j + RS_QK / 2];
                }
                float dw = rs_f16_to_f32(ld16(&wr[b].d));
                float mw = rs_f16_to_f32(ld16(&wr[b].m));
                acc += (dw * xr[b].d) * (float)isum + mw * xr[b].s;
            }
            y[(size_t)t * ldy + r] = acc;
        }
    }
}

static void gemm_q8_0(int nr, int nt, int k, const void *w, size_t w_stride,
                      const rs_block_q16 *x, float *y, size_t ldy) {
    int nb = k / RS_QK;
    for (int t = 0; t < nt; t++) {
        const rs_block_q16 *xr = x + (size_t)t * nb;
        for (int r = 0; r < nr; r++) {
            const rs_block_q8_0 *wr = (const rs_block_q8_0 *)((const char *)w + r * w_stride);
            float acc = 0.0f;
            for (int b = 0; b < nb; b++) {
                int32_t isum = 0;
                for (int j = 0; j < RS_QK; j++) isum += wr[b].qs[j] * xr[b].qs[j];
                float dw = rs_f16_to_f32(ld16(&wr[b].d));
                acc += (dw * xr[b].d) * (float)isum;
            }
            y[(size_t)t * ldy + r] = acc;
        }
    }
}

static void gemm_f32(int nr, int nt, int k, const void *w, size_t w_stride,
                     const float *x, float *y, size_t ldy) {
    for (int t = 0; t < nt; t++) {
        const float *xr = x + (size_t)t * k;
        for (int r = 0; r < nr; r++) {
            const float *wr = (const float *)((const char *)w + r * w_stride);
            float acc = 0.0f;
            for (int i = 0; i < k; i++) acc += wr[i] * xr[i];
            y[(size_t)t * ldy + r] = acc;
        }
    }
}

static void gemm_f16(int nr, int nt, int k, const void *w, size_t w_stride,
                     const float *x, float *y, size_t ldy) {
    for (int t = 0; t < nt; t++) {
        const float *xr = x + (size_t)t * k;
        for (int r = 0; r < nr; r++) {
            const uint16_t *wr = (const uint16_t *)((const char *)w + r * w_stride);
            float acc = 0.0f;
            for (int i = 0; i < k; i++) acc += rs_f16_to_f32(ld16(wr + i)) * xr[i];
            y[(size_t)t * ldy + r] = acc;
        }
    }
}

static void gemm_bf16(int nr, int nt, int k, const void *w, size_t w_stride,
                      const float *x, float *y, size_t ldy) {
    for (int t = 0; t < nt; t++) {
        const float *xr = x + (size_t)t * k;
        for (int r = 0; r < nr; r++) {
            const uint16_t *wr = (const uint16_t *)((const char *)w + r * w_stride);
            float acc = 0.0f;
            for (int i = 0; i < k; i++) acc += rs_bf16_to_f32(ld16(wr + i)) * xr[i];
            y[(size_t)t * ldy + r] = acc;
        }
    }
}

static void attn_scores_f16(int npos, int hd, const uint16_t *k, size_t stride,
                            const float *q, float scale, float *out) {
    for (int p = 0; p < npos; p++) {
        const uint16_t *kr = k + (size_t)p * stride;
        float acc = 0.0f;
        for (int i = 0; i < hd; i++) acc += rs_f16_to_f32(kr[i]) * q[i];
        out[p] = scale * acc;
    }
}

static void attn_accum_f16(int npos, int hd, const uint16_t *v, size_t stride,
                           const float *w, float *acc) {
    for (int p = 0; p < npos; p++) {
        const uint16_t *vr = v + (size_t)p * stride;
        for (int i = 0; i < hd; i++) acc[i] += w[p] * rs_f16_to_f32(vr[i]);
    }
}

static void attn_scores_f32(int npos, int hd, const float *k, size_t stride,
                            const float *q, float scale, float *out) {
    for (int p = 0; p < npos; p++) {
        const float *kr = k + (size_t)p * stride;
        float acc = 0.0f;
        for (int i = 0; i < hd; i++) acc += kr[i] * q[i];
        out[p] = scale * acc;
    }
}

static void attn_accum_f32(int npos, int hd, const float *v, size_t stride,
                           const float *w, float *acc) {
    for (int p = 0; p < npos; p++) {
        const float *vr = v + (size_t)p * stride;
        for (int i = 0; i < hd; i++) acc[i] += w[p] * vr[i];
    }
}

/* nq queries: each one exactly the single-query kernel */
static void attn_scores_f16_multi(int npos, int hd, const uint16_t *k, size_t stride, int nq,
                                  const float *const *q, float scale, float *const *out) {
    for (int j = 0; j < nq; j++) attn_scores_f16(npos, hd, k, stride, q[j], scale, out[j]);
}
static void attn_accum_f16_multi(int hd, const uint16_t *v, size_t stride, int nq, const int *npos,
                                 const float *const *w, float *const *acc) {
    for (int j = 0; j < nq; j++) attn_accum_f16(npos[j], hd, v, stride, w[j], acc[j]);
}
static void attn_scores_f32_multi(int npos, int hd, const float *k, size_t stride, int nq,
                                  const float *const *q, float scale, float *const *out) {
    for (int j = 0; j < nq; j++) attn_scores_f32(npos, hd, k, stride, q[j], scale, out[j]);
}
static void attn_accum_f32_multi(int hd, const float *v, size_t stride, int nq, const int *npos,
                                 const float *const *w, float *const *acc) {
    for (int j = 0; j < nq; j++) attn_accum_f32(npos[j], hd, v, stride, w[j], acc[j]);
}

/* libm's expf, max first so every exponent is <= 0; sum in position order. */
static float softmax(float *x, int n, float *max) {
    float mx = -INFINITY, sum = 0.0f;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++) x[i] *= inv;
    *max = mx;
    return sum;
}

static void swiglu(float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void f32_to_f16(const float *x, uint16_t *y, int n) {
    for (int i = 0; i < n; i++) y[i] = rs_f32_to_f16(x[i]);
}

const rs_kernels rs_kernels_scalar = {
    .name = "scalar",
    .quantize_q16 = quantize_q16,
    .gemm_q4_0 = gemm_q4_0,
    .gemm_q4_1 = gemm_q4_1,
    .gemm_q8_0 = gemm_q8_0,
    .gemm_f32 = gemm_f32,
    .gemm_f16 = gemm_f16,
    .gemm_bf16 = gemm_bf16,
    .attn_scores_f16 = attn_scores_f16,
    .attn_accum_f16 = attn_accum_f16,
    .attn_scores_f32 = attn_scores_f32,
    .attn_accum_f32 = attn_accum_f32,
    .attn_scores_f16_multi = attn_scores_f16_multi,
    .attn_accum_f16_multi = attn_accum_f16_multi,
    .attn_scores_f32_multi = attn_scores_f32_multi,
    .attn_accum_f32_multi = attn_accum_f32_multi,
    .f32_to_f16 = f32_to_f16,
    .softmax = softmax,
    .swiglu = swiglu,
};
