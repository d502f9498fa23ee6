/* AVX2 + FMA + F16C kernels (x86-64). The rest of the engine is compiled
 * without -mavx2: the pragma gives this file its own instruction set, and
 * kernels_dispatch.c only hands this table out when the CPU has all three.
 *
 * Quantized GEMMs equal the scalar reference bit for bit: per element and
 * block the exact int32 block sum (vpmaddwd lanes summed in any order, exact:
 * |w| <= 128, |q| <= 32767 never -32768, |isum| < 2^31), then the scalar's
 * float step in its order, no FMA (qstep). 1-2 tokens: qdec8 (two tokens
 * share each unpacked row), rows in a horizontal-sum tile. More: qpack8 +
 * qrows, rows in lanes, no horizontal sums. Both end in qstep with the same
 * operands, so any path, tile or edge gives the same bits (kernels.h
 * determinism). qdec8, the pack and their helpers are in kernels_avx2_q.h
 * (the AVX-512 table compiles them too); float GEMMs and attention in
 * kernels_avx2_float.c. */
#if defined(__x86_64__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,f16c")
#endif

#include "kernels_avx2_q.h"

/* ---------------------------------------------------------------- quantize */

void rs_avx2_quantize_q16(const float *x, rs_block_q16 *y, int k) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 half = _mm256_set1_ps(0.5f);
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 qmax = _mm256_set1_ps(32767.0f);
    const __m256 qmin = _mm256_set1_ps(-32767.0f);
    for (int b = 0; b < k / RS_QK; b++) {
        const float *xb = x + b * RS_QK;
        __m256 v[4];
        UNROLL
        for (int j = 0; j < 4; j++) v[j] = _mm256_loadu_ps(xb + 8 * j);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 32767.0f;
        y[b].d = d;
        if (d == 0.0f) {
            memset(y[b].qs, 0, sizeof y[b].qs);
            y[b].s = 0.0f * d; /* the scalar's d * 0 */
            continue;
        }
        const __m256 dv = _mm256_set1_ps(d);
        __m256i qi[4];
        UNROLL
        for (int j = 0; j < 4; j++) {
            /* round(x / d), ties away from zero: trunc, then step away
             * from zero when the (exact) remainder is >= 0.5 */
            __m256 t = _mm256_div_ps(v[j], dv);
            __m256 r = _mm256_round_ps(t, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(t, r));
            __m256 step = _mm256_or_ps(_mm256_and_ps(t, sign), one);
            r = _mm256_add_ps(r, _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ), step));
            r = _mm256_min_ps(_mm256_max_ps(r, qmin), qmax);
            qi[j] = _mm256_cvttps_epi32(r);
        }
        __m256i sum = _mm256_add_epi32(_mm256_add_epi32(qi[0], qi[1]), _mm256_add_epi32(qi[2], qi[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        int isum = _mm_cvtsi128_si32(s4);
        /* packs works per 128-bit lane: [a0-3 b0-3 | a4-7 b4-7] -> qwords 0,2,1,3 */
        __m256i p0 = _mm256_permute4x64_epi64(_mm256_packs_epi32(qi[0], qi[1]), 0xd8);
        __m256i p1 = _mm256_permute4x64_epi64(_mm256_packs_epi32(qi[2], qi[3]), 0xd8);
        _mm256_storeu_si256((__m256i *)y[b].qs, p0);
        _mm256_storeu_si256((__m256i *)(y[b].qs + 16), p1);
        y[b].s = d * (float)isum;
    }
}

/* ------------------------------------------------------- quantized GEMMs */

/* Several tokens: rows in lanes (kernels_avx2_q.h packs them). Per 8-row
 * group and block: 16 pairs x 8 int32 (512 bytes), then d and m. */
enum { PK_BYTES = 16 * 32 + 16 * 4 };

AI void qpack8(const int kind, int nv, int nb, const char *w, size_t ws, char *pk) {
    qpack8_into(kind, nv, nb, w, ws, pk, PK_BYTES, 32, 16 * 32, 16 * 32 + 32, 8 * ws);
}

/* 8 packed rows x T tokens (T <= 4: T int32 sums + T float accumulators
 * + the pair vector + temporaries fit the 16 registers). */
AI void qrows(const int kind, const int T, int nv, int nb, const char *pk, const rs_block_q16 *x, float *y,
              size_t ldy, const char *pf, size_t ahead) {
    (void)pf, (void)ahead; /* the pack fetches the next group (qpack8_into) */
    __m256 acc[4];
    UNROLL
    for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const __m256i *P = (const __m256i *)(pk + (size_t)b * PK_BYTES);
        const rs_block_q16 *xb[4];
        __m256i s[4];
        UNROLL
        for (int t = 0; t < T; t++) xb[t] = x + (size_t)t * nb + b, s[t] = _mm256_setzero_si256();
        UNROLL
        for (int j = 0; j < 16; j++) {
            const __m256i pj = _mm256_load_si256(P + j);
            UNROLL
            for (int t = 0; t < T; t++) {
                s[t] = _mm256_add_epi32(s[t], _mm256_madd_epi16(pj, _mm256_set1_epi32((int)ld32(xb[t]->qs + 2 * j))));
                /* keep the running sum in a register: left alone, GCC
                 * reassociates the 16 adds into all-madds-first and spills */
                __asm__("" : "+x"(s[t]));
            }
        }
        const __m256 d = _mm256_load_ps((const float *)(P + 16)), m = _mm256_load_ps((const float *)(P + 16) + 8);
        UNROLL
        for (int t = 0; t < T; t++)
            acc[t] = qstep(kind, acc[t], s[t], d, _mm256_set1_ps(xb[t]->d), m, _mm256_set1_ps(xb[t]->s));
    }
    UNROLL
    for (int t = 0; t < T; t++) {
        if (nv == 8) {
            _mm256_storeu_ps(y + (size_t)t * ldy, acc[t]);
        } else {
            float out[8];
            _mm256_storeu_ps(out, acc[t]);
            memcpy(y + (size_t)t * ldy, out, sizeof(float) * (size_t)nv);
        }
    }
}

#define QKERNELS(name, kind) \
    static void few_##name(int nr, int nt, int k, const void *w, size_t ws, const rs_block_q16 *x, float *y, \
                           size_t ldy) { \
        gemm_few(kind, nr, nt, k, w, ws, x, y, ldy); \
    } \
    static void qpack8_##name(int nv, int nb, const char *w, size_t ws, char *pk) { \
        qpack8(kind, nv, nb, w, ws, pk); \
    } \
    static void qrows_##name(int T, int nv, int nb, const char *pk, const rs_block_q16 *x, float *y, size_t ldy, \
                             const char *pf, size_t ahead) { \
        switch (T) { \
        case 1: qrows(kind, 1, nv, nb, pk, x, y, ldy, pf, ahead); break; \
        case 2: qrows(kind, 2, nv, nb, pk, x, y, ldy, pf, ahead); break; \
        case 3: qrows(kind, 3, nv, nb, pk, x, y, ldy, pf, ahead); break; \
        default: qrows(kind, 4, nv, nb, pk, x, y, ldy, pf, ahead); break; \
        } \
    } \
    static void gemm_##name(int nr, int nt, int k, const void *w, size_t w_stride, const rs_block_q16 *x, \
                            float *y, size_t ldy) { \
        gemm_q(few_##name, qpack8_##name, qrows_##name, nr, nt, k, w, w_stride, x, y, ldy); \
    }

typedef void (*few_fn)(int nr, int nt, int k, const void *w, size_t ws, const rs_block_q16 *x, float *y, size_t ldy);

/* Tokens below which each token's rows go through qdec8 (no packing). */
#ifndef NT_PACK
#define NT_PACK 3
#endif

static void gemm_q(few_fn few, qpack_fn pack, qrows_fn rows, int nr, int nt, int k, const void *w, size_t ws,
                   const rs_block_q16 *x, float *y, size_t ldy) {
    if (nt >= NT_PACK && gemm_packed(pack, rows, 8, 4, PK_BYTES, nr, nt, k, w, ws, x, y, ldy)) return;
    few(nr, nt, k, w, ws, x, y, ldy); /* few tokens (or no memory) */
}

QKERNELS(q4_0, K_Q4_0)
QKERNELS(q4_1, K_Q4_1)
QKERNELS(q8_0, K_Q8_0)

/* ----------------------------------------------------------- conversions */

void rs_avx2_f32_to_f16(const float *x, uint16_t *y, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    if (i < n) {
        float tmp[8] = {0};
        uint16_t out[8];
        memcpy(tmp, x + i, (size_t)(n - i) * 4);
        _mm_storeu_si128((__m128i *)out, _mm256_cvtps_ph(_mm256_loadu_ps(tmp), _MM_FROUND_TO_NEAREST_INT));
        memcpy(y + i, out, (size_t)(n - i) * 2);
    }
}

const rs_kernels rs_kernels_avx2 = {
    .name = "avx2",
    .gemm_q4_0 = gemm_q4_0,
    .gemm_q4_1 = gemm_q4_1,
    .gemm_q8_0 = gemm_q8_0,
    .attn_scores_f16 = rs_avx2_attn_scores_f16, .attn_accum_f16 = rs_avx2_attn_accum_f16,
    .attn_scores_f16_multi = rs_avx2_attn_scores_f16_multi, .attn_accum_f16_multi = rs_avx2_attn_accum_f16_multi,
    .softmax = rs_softmax_avx2,
    .swiglu = rs_swiglu_avx2,
    RS_AVX2_SHARED_ENTRIES,
};

#if defined(__clang__)
#pragma clang attribute pop
#endif

#else
typedef int rs_kernels_avx2_unused; /* an ISO C translation unit must not be empty */
#endif
