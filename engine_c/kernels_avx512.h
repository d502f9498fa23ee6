/* The AVX-512 table's own attention kernels (kernels_avx512_attn.c,
 * softmax_avx512.c), for the table in kernels_avx512.c. */
#ifndef RS_KERNELS_AVX512_H
#define RS_KERNELS_AVX512_H

#include "kernels.h"

#include <immintrin.h>

void rs_avx512_attn_scores_f16(int npos, int hd, const uint16_t *k, size_t stride, const float *q, float scale, float *out);
void rs_avx512_attn_scores_f16_multi(int npos, int hd, const uint16_t *k, size_t stride, int nq, const float *const *q, float scale, float *const *out);
void rs_avx512_attn_accum_f16(int npos, int hd, const uint16_t *v, size_t stride, const float *w, float *acc);
void rs_avx512_attn_accum_f16_multi(int hd, const uint16_t *v, size_t stride, int nq, const int *npos, const float *const *w, float *const *acc);

/* softmax_avx512.c, and the part of AVX2's softmax it ends with */
float rs_softmax_avx512(float *x, int n, float *max);
float rs_softmax_avx2_tail(float *x, int i0, int n, float mx, __m256 sum);
void rs_swiglu_avx512(float *g, const float *u, int n);

#endif
