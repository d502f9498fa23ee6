/* Shared by the AVX2 kernel files (kernels_avx2.c: quantized GEMMs and the
 * table; kernels_avx2_float.c: float GEMMs and attention). Include it after
 * the file's `#pragma GCC target("avx2,fma,f16c")`: the inline helpers use
 * AVX2 intrinsics. */
#ifndef RS_KERNELS_AVX2_H
#define RS_KERNELS_AVX2_H

#include "kernels.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))
/* tile loops have constant trip counts after inlining: unroll them fully so
 * the accumulators live in registers */
#define UNROLL _Pragma("GCC unroll 16")

/* Tokens per chunk: the chunk's activations stay in L2 while every row
 * of the weights streams past them once. */
#define TOK_CHUNK 64

AI uint32_t ld32(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

AI uint16_t ld16(const void *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* The one horizontal sum every kernel uses: (lo+hi), then (0+2, 1+3), then 0+1. */
AI float hsum8(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

/* The entries of the AVX2 table that the AVX-512 one shares (designated
 * initializers; each table adds its name, quantized GEMMs, f16 attention,
 * softmax and SwiGLU). */
#define RS_AVX2_SHARED_ENTRIES \
    .quantize_q16 = rs_avx2_quantize_q16, \
    .gemm_f32 = rs_avx2_gemm_f32, .gemm_f16 = rs_avx2_gemm_f16, .gemm_bf16 = rs_avx2_gemm_bf16, \
    .attn_scores_f32 = rs_avx2_attn_scores_f32, .attn_accum_f32 = rs_avx2_attn_accum_f32, \
    .attn_scores_f32_multi = rs_avx2_attn_scores_f32_multi, .attn_accum_f32_multi = rs_avx2_attn_accum_f32_multi, \
    .f32_to_f16 = rs_avx2_f32_to_f16

/* kernels_avx2.c (in RS_AVX2_SHARED_ENTRIES) */
void rs_avx2_quantize_q16(const float *x, rs_block_q16 *y, int k);
void rs_avx2_f32_to_f16(const float *x, uint16_t *y, int n);
/* kernels_avx2_float.c */
void rs_avx2_gemm_f32(int nr, int nt, int k, const void *w, size_t w_stride, const float *x, float *y, size_t ldy);
void rs_avx2_gemm_f16(int nr, int nt, int k, const void *w, size_t w_stride, const float *x, float *y, size_t ldy);
void rs_avx2_gemm_bf16(int nr, int nt, int k, const void *w, size_t w_stride, const float *x, float *y, size_t ldy);
void rs_avx2_attn_scores_f16(int npos, int hd, const uint16_t *k, size_t stride, const float *q, float scale, float *out);
void rs_avx2_attn_scores_f32(int npos, int hd, const float *k, size_t stride, const float *q, float scale, float *out);
void rs_avx2_attn_scores_f16_multi(int npos, int hd, const uint16_t *k, size_t stride, int nq, const float *const *q, float scale, float *const *out);
void rs_avx2_attn_scores_f32_multi(int npos, int hd, const float *k, size_t stride, int nq, const float *const *q, float scale, float *const *out);
void rs_avx2_attn_accum_f16(int npos, int hd, const uint16_t *v, size_t stride, const float *w, float *acc);
void rs_avx2_attn_accum_f32(int npos, int hd, const float *v, size_t stride, const float *w, float *acc);
void rs_avx2_attn_accum_f16_multi(int hd, const uint16_t *v, size_t stride, int nq, const int *npos, const float *const *w, float *const *acc);
void rs_avx2_attn_accum_f32_multi(int hd, const float *v, size_t stride, int nq, const int *npos, const float *const *w, float *const *acc);

#endif
