/* The kernel table: every hot loop of the forward, behind function pointers
 * filled once at load (kernels_dispatch.c). kernels_scalar.c is the plain-C
 * reference; kernels_avx2.c and kernels_neon.c must agree with it up to
 * float rounding (engine_c/tests/test_kernels.c checks that).
 *
 * Determinism contract (every implementation): an output element depends
 * only on its own inputs, never on nr, nt or where the element falls inside
 * a register tile. Computing a 13x7 block at once, or each element alone,
 * gives bit-identical results. The forward relies on this for outputs that
 * do not change with batch composition, chunking or thread count.
 */
#ifndef RS_KERNELS_H
#define RS_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "quant.h"

/* Quantized GEMM: y[t*ldy + r] = dot(W row r, X row t), r < nr, t < nt.
 * W: nr rows of k/32 blocks of the weight type, row r at (char*)w + r*w_stride.
 * X: nt rows of k/32 rs_block_q16, row t at x + t*(k/32).  k % 32 == 0. */
typedef void (*rs_gemm_q_fn)(int nr, int nt, int k, const void *w, size_t w_stride,
                             const rs_block_q16 *x, float *y, size_t ldy);
/* Float-weight GEMM, same shape; X: nt rows of k floats, row t at x + t*k. */
typedef void (*rs_gemm_f_fn)(int nr, int nt, int k, const void *w, size_t w_stride,
                             const float *x, float *y, size_t ldy);

typedef struct rs_kernels {
    const char *name;
    /* x[0..k) -> k/32 blocks: d = max|x|/32767, q = round(x/d) (nearest,
     * ties away from zero) clamped to [-32767, 32767] (a subnormal d can
     * overshoot), s = d * (float)sum(q); d == 0 gives q = 0, s = 0.
     * k % 32 == 0. */
    void (*quantize_q16)(const float *x, rs_block_q16 *y, int k);
    rs_gemm_q_fn gemm_q4_0;
    rs_gemm_q_fn gemm_q4_1;
    rs_gemm_q_fn gemm_q8_0;
    rs_gemm_f_fn gemm_f32;
    rs_gemm_f_fn gemm_f16;
    rs_gemm_f_fn gemm_bf16;
    /* Attention over one page of one KV head.
     * K/V rows: npos rows of hd elements, row p at k + p*stride (elements).
     * scores: out[p] = scale * dot(K row p, q), p < npos.
     * accum:  acc[i] += sum_p w[p] * V row p [i], summed in order of p. */
    void (*attn_scores_f16)(int npos, int hd, const uint16_t *k, size_t stride,
                            const float *q, float scale, float *out);
    void (*attn_accum_f16)(int npos, int hd, const uint16_t *v, size_t stride,
                           const float *w, float *acc);
    void (*attn_scores_f32)(int npos, int hd, const float *k, size_t stride,
                            const float *q, float scale, float *out);
    void (*attn_accum_f32)(int npos, int hd, const float *v, size_t stride,
                           const float *w, float *acc);
    /* The same for nq queries that read one page (q[j], out[j], w[j],
     * acc[j] for query j < nq): scores out[j][p], p < npos; accum
     * acc[j][i] += sum_{p < npos[j]} w[j][p] * V row p [i]. Each query gets
     * bit for bit what the single-query entries above give it (they are these
     * with nq == 1), whatever nq, its place in the list or the other queries:
     * SIMD scores run per (query, row) one FMA chain over hd in vector lanes,
     * then one fixed sum tree over the lanes (the row's own lane of a tree
     * over 8 rows (AVX2) or 4 (NEON); other rows never enter it), plus an
     * fmaf tail for hd % lanes, times scale; accum is the fmaf chain in p
     * order per element. The scalar table runs its loops per query. */
    void (*attn_scores_f16_multi)(int npos, int hd, const uint16_t *k, size_t stride, int nq,
                                  const float *const *q, float scale, float *const *out);
    void (*attn_accum_f16_multi)(int hd, const uint16_t *v, size_t stride, int nq, const int *npos,
                                 const float *const *w, float *const *acc);
    void (*attn_scores_f32_multi)(int npos, int hd, const float *k, size_t stride, int nq,
                                  const float *const *q, float scale, float *const *out);
    void (*attn_accum_f32_multi)(int hd, const float *v, size_t stride, int nq, const int *npos,
                                 const float *const *w, float *const *acc);
    /* float -> half, round to nearest even (writing K/V pages). */
    void (*f32_to_f16)(const float *x, uint16_t *y, int n);
    /* In place: x[i] = exp(x[i] - max) / sum, n >= 1 (one attention row,
     * or one chunk of it); returns sum and stores max in *max (the forward
     * merges chunks with them). SIMD versions use a polynomial exp within
     * ~2 ulp of expf; for a given n each element's operations are fixed. */
    float (*softmax)(float *x, int n, float *max);
    /* In place: g[i] = g[i] / (1 + exp(-g[i])) * u[i] (the FFN's gate,
     * SiLU(g) * u). Scalar: libm's expf; SIMD: the softmax's vector exp
     * (within ~2 ulp), its argument clamped to [-87, 88], the rest the same
     * operations. */
    void (*swiglu)(float *g, const float *u, int n);
} rs_kernels;

#if defined(__x86_64__)
float rs_softmax_avx2(float *x, int n, float *max);  /* softmax_avx2.c */
void rs_swiglu_avx2(float *g, const float *u, int n); /* softmax_avx2.c */
#endif
#if defined(__aarch64__)
float rs_softmax_neon(float *x, int n, float *max);  /* softmax_neon.c */
void rs_swiglu_neon(float *g, const float *u, int n); /* softmax_neon.c */
#endif

extern const rs_kernels rs_kernels_scalar;
#if defined(__x86_64__)
extern const rs_kernels rs_kernels_avx2;
extern const rs_kernels rs_kernels_avx512; /* AVX2's bits; VNNI GEMMs, f16 attention and softmax in AVX-512 */
#endif
#if defined(__aarch64__)
extern const rs_kernels rs_kernels_neon;
#endif

/* The best table this CPU runs, unless RADIXSERVE_KERNELS names another
 * ("scalar", "avx2", "avx512", "neon"); *err gets a message when the name is unknown
 * or the CPU lacks the instructions, and NULL is returned. */
const rs_kernels *rs_kernels_select(char *err, size_t err_len);

#endif
