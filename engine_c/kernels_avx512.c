/* AVX-512 kernels (F, BW, VL and VNNI: Zen 4, Ice Lake and later) for the
 * quantized GEMMs of several tokens: prefill chunks and batched decode.
 *
 * One vpdpwssd multiplies 16 rows x 2 int16 pairs and adds them into the
 * int32 block sums: a quarter of the AVX2 path's vector instructions per
 * product (vpmaddwd + vpaddd over 8 rows), the part that bounds a GEMM whose
 * weights sit in cache. The pack is AVX2's for two 8-row halves side by side
 * (kernels_avx2_q.h), so lane i is row i with no extra shuffles.
 *
 * Every output equals the scalar reference bit for bit, as AVX2's do: exact
 * int32 block sums (vpdpwssd wraps, never saturates; |sum| < 2^31 as in
 * kernels_avx2.c), then the scalar's float step per block in its order. So
 * this table, AVX2's and the scalar one are interchangeable mid-run, and one
 * or two tokens (decode, weights streamed once: memory-bound) go through
 * AVX2's qdec8 unchanged. The rest of the table (quantize, float GEMMs,
 * attention, softmax) is AVX2's. */
#if defined(__x86_64__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))), \
                             apply_to = function)
#else
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
#endif

#include "kernels_avx2_q.h"
#include "kernels_avx512.h"

/* Per 16-row group and block: 16 pairs x 16 int32 (rows 0..7 in the low
 * 32 bytes of each 64, rows 8..15 in the high), then d[16] and m[16]. */
enum { PK16_PAIR = 64, PK16_D = 16 * 64, PK16_M = 16 * 64 + 64, PK16_BYTES = 16 * 64 + 2 * 64 };

/* nv < 16 rows: the missing lanes repeat the last row (never stored). */
AI void qpack16(const int kind, int nv, int nb, const char *w, size_t ws, char *pk) {
    qpack8_into(kind, nv < 8 ? nv : 8, nb, w, ws, pk, PK16_BYTES, PK16_PAIR, PK16_D, PK16_M);
    if (nv > 8)
        qpack8_into(kind, nv - 8, nb, w + 8 * ws, ws, pk + 32, PK16_BYTES, PK16_PAIR, PK16_D, PK16_M);
    else
        qpack8_into(kind, 1, nb, w + (size_t)(nv - 1) * ws, ws, pk + 32, PK16_BYTES, PK16_PAIR, PK16_D, PK16_M);
}

/* qstep (kernels_avx2_q.h) over 16 lanes: the same operations per lane. */
AI __m512 qstep16(const int kind, __m512 acc, __m512i isum, __m512 d, __m512 xd, __m512 m, __m512 xs) {
    __m512 v = _mm512_mul_ps(_mm512_mul_ps(d, xd), _mm512_cvtepi32_ps(isum));
    if (kind == K_Q4_1) v = _mm512_add_ps(v, _mm512_mul_ps(m, xs));
    return _mm512_add_ps(acc, v);
}

/* 16 packed rows x T tokens, T <= 8: T int32 sums and T float accumulators
 * in registers (32 of them), each pair vector loaded once for the T. */
AI void qrows16(const int kind, const int T, int nv, int nb, const char *pk, const rs_block_q16 *x, float *y,
                size_t ldy) {
    __m512 acc[8];
    UNROLL
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const char *P = pk + (size_t)b * PK16_BYTES;
        const rs_block_q16 *xb[8];
        __m512i s[8];
        UNROLL
        for (int t = 0; t < T; t++) xb[t] = x + (size_t)t * nb + b, s[t] = _mm512_setzero_si512();
        UNROLL
        for (int j = 0; j < 16; j++) {
            const __m512i pj = _mm512_load_si512((const void *)(P + j * PK16_PAIR));
            UNROLL
            for (int t = 0; t < T; t++)
                s[t] = _mm512_dpwssd_epi32(s[t], pj, _mm512_set1_epi32((int)ld32(xb[t]->qs + 2 * j)));
        }
        const __m512 d = _mm512_load_ps((const void *)(P + PK16_D)), m = _mm512_load_ps((const void *)(P + PK16_M));
        UNROLL
        for (int t = 0; t < T; t++)
            acc[t] = qstep16(kind, acc[t], s[t], d, _mm512_set1_ps(xb[t]->d), m, _mm512_set1_ps(xb[t]->s));
    }
    const __mmask16 keep = (__mmask16)(nv >= 16 ? 0xffff : (1u << nv) - 1);
    UNROLL
    for (int t = 0; t < T; t++) _mm512_mask_storeu_ps(y + (size_t)t * ldy, keep, acc[t]);
}

/* Tokens below which the AVX2 GEMM (qdec8: rows in a horizontal-sum tile,
 * no packing) runs instead. */
#ifndef NT_PACK16
#define NT_PACK16 3
#endif

typedef void (*gemm_q_fn)(int nr, int nt, int k, const void *w, size_t ws, const rs_block_q16 *x, float *y,
                          size_t ldy);

static void gemm_q16(gemm_q_fn few, qpack_fn pack, qrows_fn rows, int nr, int nt, int k, const void *w, size_t ws,
                     const rs_block_q16 *x, float *y, size_t ldy) {
    if (nt >= NT_PACK16 && gemm_packed(pack, rows, 16, 8, PK16_BYTES, nr, nt, k, w, ws, x, y, ldy)) return;
    few(nr, nt, k, w, ws, x, y, ldy); /* few tokens (or no memory) */
}

#define QKERNELS16(name, kind) \
    static void qpack16_##name(int nv, int nb, const char *w, size_t ws, char *pk) { \
        qpack16(kind, nv, nb, w, ws, pk); \
    } \
    static void qrows16_##name(int T, int nv, int nb, const char *pk, const rs_block_q16 *x, float *y, size_t ldy) { \
        switch (T) { \
        case 1: qrows16(kind, 1, nv, nb, pk, x, y, ldy); break; \
        case 2: qrows16(kind, 2, nv, nb, pk, x, y, ldy); break; \
        case 3: qrows16(kind, 3, nv, nb, pk, x, y, ldy); break; \
        case 4: qrows16(kind, 4, nv, nb, pk, x, y, ldy); break; \
        case 5: qrows16(kind, 5, nv, nb, pk, x, y, ldy); break; \
        case 6: qrows16(kind, 6, nv, nb, pk, x, y, ldy); break; \
        case 7: qrows16(kind, 7, nv, nb, pk, x, y, ldy); break; \
        default: qrows16(kind, 8, nv, nb, pk, x, y, ldy); break; \
        } \
    } \
    static void few_##name(int nr, int nt, int k, const void *w, size_t ws, const rs_block_q16 *x, float *y, \
                           size_t ldy) { /* AVX2's, with AVX-512VL's 32 registers */ \
        gemm_few(kind, nr, nt, k, w, ws, x, y, ldy); \
    } \
    static void gemm16_##name(int nr, int nt, int k, const void *w, size_t w_stride, const rs_block_q16 *x, \
                              float *y, size_t ldy) { \
        gemm_q16(few_##name, qpack16_##name, qrows16_##name, nr, nt, k, w, w_stride, x, y, ldy); \
    }

QKERNELS16(q4_0, K_Q4_0)
QKERNELS16(q4_1, K_Q4_1)
QKERNELS16(q8_0, K_Q8_0)

const rs_kernels rs_kernels_avx512 = {
    .name = "avx512",
    .gemm_q4_0 = gemm16_q4_0,
    .gemm_q4_1 = gemm16_q4_1,
    .gemm_q8_0 = gemm16_q8_0,
    .attn_scores_f16 = rs_avx512_attn_scores_f16, .attn_accum_f16 = rs_avx512_attn_accum_f16,
    .attn_scores_f16_multi = rs_avx512_attn_scores_f16_multi, .attn_accum_f16_multi = rs_avx512_attn_accum_f16_multi,
    .softmax = rs_softmax_avx512,
    RS_AVX2_SHARED_ENTRIES,
};

#if defined(__clang__)
#pragma clang attribute pop
#endif

#else
typedef int rs_kernels_avx512_unused; /* an ISO C translation unit must not be empty */
#endif
