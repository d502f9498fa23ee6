/* The AVX-512 table's own attention kernels (kernels_avx512_attn.c), for
 * the table in kernels_avx512.c. */
#ifndef RS_KERNELS_AVX512_H
#define RS_KERNELS_AVX512_H

#include "kernels.h"

void rs_avx512_attn_scores_f16(int npos, int hd, const uint16_t *k, size_t stride, const float *q, float scale, float *out);
void rs_avx512_attn_scores_f16_multi(int npos, int hd, const uint16_t *k, size_t stride, int nq, const float *const *q, float scale, float *const *out);
void rs_avx512_attn_accum_f16(int npos, int hd, const uint16_t *v, size_t stride, const float *w, float *acc);
void rs_avx512_attn_accum_f16_multi(int hd, const uint16_t *v, size_t stride, int nq, const int *npos, const float *const *w, float *const *acc);

#endif
