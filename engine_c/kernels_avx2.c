/* AVX2 + FMA + F16C kernels (x86-64). The rest of the engine is compiled
 * without -mavx2: the pragma gives this file its own instruction set, and
 * kernels_dispatch.c only hands this table out when the CPU has all three.
 *
 * Determinism (kernels.h): in a quantized GEMM, element (r, t) owns one
 * float lane of an accumulator; per block it gets the exact integer block
 * sum isum (an integer tree over the vpmaddwd lanes, exact in any order),
 * then acc = fma(float(isum), d_r * x.d_t, acc), Q4_1 then
 * acc = fma(m_r, x.s_t, acc), blocks in order. In the float GEMMs every
 * element owns one __m256 accumulator that receives one FMA per 8 elements,
 * in order, and one fixed horizontal sum at the end. The register tile
 * (R rows x T tokens) only decides which lanes live together; every tile
 * shape, edges included, runs the same per-element operation sequence, so
 * results do not depend on nr, nt or where the element falls.
 *
 * Integer dot products: the weights of a block are widened to int16 once
 * per tile (Q4_1: nibbles 0..15, Q4_0: nibble - 8, Q8_0: sign-extended),
 * then reused for every token of the tile: two _mm256_madd_epi16 against
 * the int16 activations (elements 0..15 and 16..31) and one add give 8
 * int32 lanes of 4 products each. Exact: |w| <= 128, |q| <= 32767 (never
 * -32768, so vpmaddwd's one overflow case cannot occur), a block sum is at
 * most 32 * 128 * 32767 < 2^31. */
#if defined(__x86_64__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,f16c")
#endif

#include "kernels.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))
/* tile loops have constant trip counts after inlining: unroll them fully so
 * the accumulators live in registers */
#define UNROLL _Pragma("GCC unroll 16")

/* Tokens per chunk: the chunk's activations stay in L2 while every row
 * of the weights streams past them once. */
#define TOK_CHUNK 64
/* rows ahead to prefetch: one row group */
#define PF_ROWS 4

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

/* ---------------------------------------------------------------- quantize */

static void quantize_q16(const float *x, rs_block_q16 *y, int k) {
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

enum { K_Q4_0, K_Q4_1, K_Q8_0 };

/* The 8 int32 lanes of each of p[0..7], summed: lane i of the result is
 * the sum of p[i] (exact integer sums, any order). Pairs, then quads, then
 * the two 128-bit halves. */
AI __m256i hsum8x8(const __m256i p[8]) {
    __m256i t[4], u[2];
    UNROLL
    for (int j = 0; j < 4; j++)
        t[j] = _mm256_add_epi32(_mm256_unpacklo_epi32(p[2 * j], p[2 * j + 1]),
                                _mm256_unpackhi_epi32(p[2 * j], p[2 * j + 1]));
    UNROLL
    for (int j = 0; j < 2; j++)
        u[j] = _mm256_add_epi32(_mm256_unpacklo_epi64(t[2 * j], t[2 * j + 1]),
                                _mm256_unpackhi_epi64(t[2 * j], t[2 * j + 1]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(u[0], u[1], 0x20),
                            _mm256_permute2x128_si256(u[0], u[1], 0x31));
}

/* The same for p[0..3] into 4 lanes. */
AI __m128i hsum8x4(const __m256i p[4]) {
    __m256i t0 = _mm256_add_epi32(_mm256_unpacklo_epi32(p[0], p[1]), _mm256_unpackhi_epi32(p[0], p[1]));
    __m256i t1 = _mm256_add_epi32(_mm256_unpacklo_epi32(p[2], p[3]), _mm256_unpackhi_epi32(p[2], p[3]));
    __m256i u = _mm256_add_epi32(_mm256_unpacklo_epi64(t0, t1), _mm256_unpackhi_epi64(t0, t1));
    return _mm_add_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1));
}

/* One R x T register tile over all nb blocks: rows w (stride ws bytes),
 * tokens x (stride nb blocks), out y[t*ldy + r]. R, T, kind are constants
 * after inlining; R, T <= 4. Element i = r*T + t owns lane i % 8 of float
 * accumulator i / 8 (__m256, or __m128 when R*T <= 4).
 *
 * Per block: the weights of each row are widened to int16 once, two
 * vpmaddwd + one add per element give 8 int32 lanes, a shuffle/add tree
 * turns 8 such vectors into one vector of exact block sums isum_i, and
 *   acc_i = fma(float(isum_i), d_r * x.d_t, acc_i)
 *   Q4_1:  acc_i = fma(m_r, x.s_t, acc_i)
 * float(isum_i) is the scalar's (float)isum, and d_r * x.d_t one rounding,
 * so element i sees the same operations whatever the tile (unused lanes
 * compute values nobody reads). */
AI void qtile(const int kind, const int R, const int T, int nb, const char *w, size_t ws,
              const rs_block_q16 *x, float *y, size_t ldy) {
    const size_t bs = kind == K_Q4_0 ? sizeof(rs_block_q4_0)
                      : kind == K_Q4_1 ? sizeof(rs_block_q4_1) : sizeof(rs_block_q8_0);
    const int E = R * T;
    const int NV = (E + 7) / 8;
    const __m256i lo4 = _mm256_set1_epi16(0x0f);
    const __m256i eight = _mm256_set1_epi16(8);
    const __m256i one = _mm256_set1_epi32(1);
    /* Q4_1: [d_r, m_r] pairs -> lanes 2r, 2r+1; [x.d_t, x.s_t] -> 2t, 2t+1.
     * Otherwise d_r -> lane r, x.d_t -> lane t. */
    const int pr = kind == K_Q4_1 ? 2 : 1;
    __m256i idx_d[2], idx_x[2];
    UNROLL
    for (int h = 0; h < NV; h++) {
#define LR(j) (8 * h + (j) < E ? pr * ((8 * h + (j)) / T) : 0)
#define LT(j) (8 * h + (j) < E ? pr * ((8 * h + (j)) % T) : 0)
        idx_d[h] = _mm256_setr_epi32(LR(0), LR(1), LR(2), LR(3), LR(4), LR(5), LR(6), LR(7));
        idx_x[h] = _mm256_setr_epi32(LT(0), LT(1), LT(2), LT(3), LT(4), LT(5), LT(6), LT(7));
#undef LR
#undef LT
    }
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    __m128 acc4 = _mm_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m256 dmv, xpv;
        if (kind == K_Q4_1) {
            uint32_t dm[4] = {0, 0, 0, 0}; /* raw f16 pairs [d, m] of each row */
            long long xp[4] = {0, 0, 0, 0}; /* raw f32 pairs [x.d, x.s] of each token */
            UNROLL
            for (int r = 0; r < R; r++) dm[r] = ld32(w + r * ws + b * bs);
            UNROLL
            for (int t = 0; t < T; t++) memcpy(&xp[t], &x[(size_t)t * nb + b].d, 8);
            dmv = _mm256_cvtph_ps(_mm_setr_epi32((int)dm[0], (int)dm[1], (int)dm[2], (int)dm[3]));
            xpv = _mm256_castsi256_ps(_mm256_setr_epi64x(xp[0], xp[1], xp[2], xp[3]));
        } else {
            short dr[4] = {0, 0, 0, 0};
            float xd[4] = {0, 0, 0, 0};
            UNROLL
            for (int r = 0; r < R; r++) dr[r] = (short)ld16(w + r * ws + b * bs);
            UNROLL
            for (int t = 0; t < T; t++) xd[t] = x[(size_t)t * nb + b].d;
            dmv = _mm256_cvtph_ps(_mm_setr_epi16(dr[0], dr[1], dr[2], dr[3], 0, 0, 0, 0));
            xpv = _mm256_castps128_ps256(_mm_setr_ps(xd[0], xd[1], xd[2], xd[3]));
        }
        __m256i wlo[4], whi[4];
        UNROLL
        for (int h = 0; h < NV; h++) {
            __m256i p[8];
            UNROLL
            for (int j = 0; j < 8; j++) {
                const int i = 8 * h + j, r = i / T, t = i % T;
                if (i >= E) {
                    p[j] = _mm256_setzero_si256();
                    continue;
                }
                if (t == 0) {
                    const char *wb = w + r * ws + b * bs;
                    /* the weights stream from DRAM: ask for the next row group
                     * now (integer arithmetic: past the last row it is a
                     * harmless hint) */
                    _mm_prefetch((const char *)((uintptr_t)wb + PF_ROWS * ws), _MM_HINT_T0);
                    /* the block's weights as int16: elements 0..15 in wlo, 16..31 in whi */
                    if (kind == K_Q8_0) {
                        wlo[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wb + 2)));
                        whi[r] = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(wb + 18)));
                    } else {
                        /* nibbles: low halves are elements 0..15, high halves 16..31 */
                        __m256i w16 = _mm256_cvtepu8_epi16(
                            _mm_loadu_si128((const __m128i *)(wb + (kind == K_Q4_1 ? 4 : 2))));
                        wlo[r] = _mm256_and_si256(w16, lo4);
                        whi[r] = _mm256_srli_epi16(w16, 4);
                        if (kind == K_Q4_0) {
                            wlo[r] = _mm256_sub_epi16(wlo[r], eight);
                            whi[r] = _mm256_sub_epi16(whi[r], eight);
                        }
                    }
                }
                const int16_t *xq = x[(size_t)t * nb + b].qs;
                p[j] = _mm256_add_epi32(_mm256_madd_epi16(wlo[r], _mm256_loadu_si256((const __m256i *)xq)),
                                        _mm256_madd_epi16(whi[r], _mm256_loadu_si256((const __m256i *)(xq + 16))));
            }
            __m256 sc = _mm256_mul_ps(_mm256_permutevar8x32_ps(dmv, idx_d[h]), _mm256_permutevar8x32_ps(xpv, idx_x[h]));
            if (E <= 4) {
                __m128 f = _mm_cvtepi32_ps(hsum8x4(p));
                acc4 = _mm_fmadd_ps(f, _mm256_castps256_ps128(sc), acc4);
                if (kind == K_Q4_1)
                    acc4 = _mm_fmadd_ps(_mm256_castps256_ps128(_mm256_permutevar8x32_ps(dmv, _mm256_add_epi32(idx_d[h], one))),
                                        _mm256_castps256_ps128(_mm256_permutevar8x32_ps(xpv, _mm256_add_epi32(idx_x[h], one))),
                                        acc4);
            } else {
                __m256 f = _mm256_cvtepi32_ps(hsum8x8(p));
                acc[h] = _mm256_fmadd_ps(f, sc, acc[h]);
                if (kind == K_Q4_1)
                    acc[h] = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(dmv, _mm256_add_epi32(idx_d[h], one)),
                                             _mm256_permutevar8x32_ps(xpv, _mm256_add_epi32(idx_x[h], one)), acc[h]);
            }
        }
    }
    float out[16];
    if (E <= 4) {
        _mm_storeu_ps(out, acc4);
    } else {
        _mm256_storeu_ps(out, acc[0]);
        _mm256_storeu_ps(out + 8, acc[1]);
    }
    UNROLL
    for (int r = 0; r < R; r++)
        UNROLL
        for (int t = 0; t < T; t++) y[(size_t)t * ldy + r] = out[r * T + t];
}

#define QTILE_FN(kind, R, T) \
    static void qtile_##kind##_##R##_##T(int nb, const char *w, size_t ws, const rs_block_q16 *x, \
                                         float *y, size_t ldy) { \
        qtile(kind, R, T, nb, w, ws, x, y, ldy); \
    }
#define QTILE_SET(kind) \
    QTILE_FN(kind, 1, 1) QTILE_FN(kind, 2, 1) QTILE_FN(kind, 3, 1) QTILE_FN(kind, 4, 1) \
    QTILE_FN(kind, 1, 2) QTILE_FN(kind, 2, 2) QTILE_FN(kind, 3, 2) QTILE_FN(kind, 4, 2) \
    QTILE_FN(kind, 1, 3) QTILE_FN(kind, 2, 3) QTILE_FN(kind, 3, 3) QTILE_FN(kind, 4, 3) \
    QTILE_FN(kind, 1, 4) QTILE_FN(kind, 2, 4) QTILE_FN(kind, 3, 4) QTILE_FN(kind, 4, 4) \
    static void qtile_##kind(int R, int T, int nb, const char *w, size_t ws, const rs_block_q16 *x, \
                             float *y, size_t ldy) { \
        switch (T * 8 + R) { \
        case 9: qtile_##kind##_1_1(nb, w, ws, x, y, ldy); break; \
        case 10: qtile_##kind##_2_1(nb, w, ws, x, y, ldy); break; \
        case 11: qtile_##kind##_3_1(nb, w, ws, x, y, ldy); break; \
        case 12: qtile_##kind##_4_1(nb, w, ws, x, y, ldy); break; \
        case 17: qtile_##kind##_1_2(nb, w, ws, x, y, ldy); break; \
        case 18: qtile_##kind##_2_2(nb, w, ws, x, y, ldy); break; \
        case 19: qtile_##kind##_3_2(nb, w, ws, x, y, ldy); break; \
        case 20: qtile_##kind##_4_2(nb, w, ws, x, y, ldy); break; \
        case 25: qtile_##kind##_1_3(nb, w, ws, x, y, ldy); break; \
        case 26: qtile_##kind##_2_3(nb, w, ws, x, y, ldy); break; \
        case 27: qtile_##kind##_3_3(nb, w, ws, x, y, ldy); break; \
        case 28: qtile_##kind##_4_3(nb, w, ws, x, y, ldy); break; \
        case 33: qtile_##kind##_1_4(nb, w, ws, x, y, ldy); break; \
        case 34: qtile_##kind##_2_4(nb, w, ws, x, y, ldy); break; \
        case 35: qtile_##kind##_3_4(nb, w, ws, x, y, ldy); break; \
        case 36: qtile_##kind##_4_4(nb, w, ws, x, y, ldy); break; \
        default: break; \
        } \
    }

QTILE_SET(K_Q4_0)
QTILE_SET(K_Q4_1)
QTILE_SET(K_Q8_0)

typedef void (*qtile_fn)(int R, int T, int nb, const char *w, size_t ws, const rs_block_q16 *x,
                         float *y, size_t ldy);

/* Rows in groups of 4 (their weights stay in L1 across the token groups),
 * tokens in groups of 4, one tile of up to 4 x 4. */
static void gemm_q(qtile_fn tile, int nr, int nt, int k, const void *w, size_t ws,
                   const rs_block_q16 *x, float *y, size_t ldy) {
    const int nb = k / RS_QK;
    for (int t0 = 0; t0 < nt; t0 += TOK_CHUNK) {
        const int t1 = nt - t0 < TOK_CHUNK ? nt : t0 + TOK_CHUNK;
        for (int r0 = 0; r0 < nr; r0 += 4) {
            const int rg = nr - r0 < 4 ? nr - r0 : 4;
            for (int t = t0; t < t1; t += 4) {
                const int T = t1 - t < 4 ? t1 - t : 4;
                const rs_block_q16 *xt = x + (size_t)t * nb;
                float *yt = y + (size_t)t * ldy;
                tile(rg, T, nb, (const char *)w + r0 * ws, ws, xt, yt + r0, ldy);
            }
        }
    }
}

static void gemm_q4_0(int nr, int nt, int k, const void *w, size_t w_stride,
                      const rs_block_q16 *x, float *y, size_t ldy) {
    gemm_q(qtile_K_Q4_0, nr, nt, k, w, w_stride, x, y, ldy);
}
static void gemm_q4_1(int nr, int nt, int k, const void *w, size_t w_stride,
                      const rs_block_q16 *x, float *y, size_t ldy) {
    gemm_q(qtile_K_Q4_1, nr, nt, k, w, w_stride, x, y, ldy);
}
static void gemm_q8_0(int nr, int nt, int k, const void *w, size_t w_stride,
                      const rs_block_q16 *x, float *y, size_t ldy) {
    gemm_q(qtile_K_Q8_0, nr, nt, k, w, w_stride, x, y, ldy);
}

/* ----------------------------------------------------------- float GEMMs */

enum { K_F32, K_F16, K_BF16 };

AI __m256 load_w8(const int kind, const char *p) {
    if (kind == K_F32) return _mm256_loadu_ps((const float *)p);
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    if (kind == K_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AI float load_w1(const int kind, const char *p) {
    if (kind == K_F32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    if (kind == K_F16) return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(ld16(p))));
    return rs_bf16_to_f32(ld16(p));
}

/* R x T tile over k: 8 elements per FMA, then the k % 8 tail with scalar
 * FMAs into a float of its own; y = hsum8(acc) + tail. */
AI void ftile(const int kind, const int R, const int T, int k, const char *w, size_t ws,
              const float *x, float *y, size_t ldy) {
    const size_t es = kind == K_F32 ? 4 : 2;
    __m256 acc[3][4];
    UNROLL
    for (int r = 0; r < R; r++)
        UNROLL
        for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
    const int k8 = k & ~7;
    for (int i = 0; i < k8; i += 8) {
        UNROLL
        for (int r = 0; r < R; r++) {
            _mm_prefetch((const char *)((uintptr_t)(w + r * ws + i * es) + (size_t)R * ws), _MM_HINT_T0);
            __m256 wv = load_w8(kind, w + r * ws + i * es);
            UNROLL
            for (int t = 0; t < T; t++)
                acc[r][t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + (size_t)t * k + i), acc[r][t]);
        }
    }
    UNROLL
    for (int r = 0; r < R; r++)
        UNROLL
        for (int t = 0; t < T; t++) {
            float tail = 0.0f;
            for (int i = k8; i < k; i++)
                tail = fmaf(load_w1(kind, w + r * ws + i * es), x[(size_t)t * k + i], tail);
            y[(size_t)t * ldy + r] = hsum8(acc[r][t]) + tail;
        }
}

#define FTILE_FN(kind, R, T) \
    static void ftile_##kind##_##R##_##T(int k, const char *w, size_t ws, const float *x, float *y, \
                                         size_t ldy) { \
        ftile(kind, R, T, k, w, ws, x, y, ldy); \
    }
#define FTILE_SET(kind) \
    FTILE_FN(kind, 1, 1) FTILE_FN(kind, 1, 2) FTILE_FN(kind, 1, 3) FTILE_FN(kind, 1, 4) \
    FTILE_FN(kind, 2, 1) FTILE_FN(kind, 2, 2) FTILE_FN(kind, 2, 3) FTILE_FN(kind, 2, 4) \
    FTILE_FN(kind, 3, 1) FTILE_FN(kind, 3, 2) FTILE_FN(kind, 3, 3) FTILE_FN(kind, 3, 4) \
    static void ftile_##kind(int R, int T, int k, const char *w, size_t ws, const float *x, float *y, \
                             size_t ldy) { \
        switch (T * 8 + R) { \
        case 9: ftile_##kind##_1_1(k, w, ws, x, y, ldy); break; \
        case 10: ftile_##kind##_2_1(k, w, ws, x, y, ldy); break; \
        case 11: ftile_##kind##_3_1(k, w, ws, x, y, ldy); break; \
        case 17: ftile_##kind##_1_2(k, w, ws, x, y, ldy); break; \
        case 18: ftile_##kind##_2_2(k, w, ws, x, y, ldy); break; \
        case 19: ftile_##kind##_3_2(k, w, ws, x, y, ldy); break; \
        case 25: ftile_##kind##_1_3(k, w, ws, x, y, ldy); break; \
        case 26: ftile_##kind##_2_3(k, w, ws, x, y, ldy); break; \
        case 27: ftile_##kind##_3_3(k, w, ws, x, y, ldy); break; \
        case 33: ftile_##kind##_1_4(k, w, ws, x, y, ldy); break; \
        case 34: ftile_##kind##_2_4(k, w, ws, x, y, ldy); break; \
        case 35: ftile_##kind##_3_4(k, w, ws, x, y, ldy); break; \
        default: break; \
        } \
    }

FTILE_SET(K_F32)
FTILE_SET(K_F16)
FTILE_SET(K_BF16)

typedef void (*ftile_fn)(int R, int T, int k, const char *w, size_t ws, const float *x, float *y,
                         size_t ldy);

static void gemm_f(ftile_fn tile, int nr, int nt, int k, const void *w, size_t ws, const float *x,
                   float *y, size_t ldy) {
    /* chunk tokens so the chunk's activations stay in L2 */
    int tc = (int)((256 * 1024) / ((size_t)k * 4 + 1));
    tc = tc < 4 ? 4 : tc & ~3;
    for (int t0 = 0; t0 < nt; t0 += tc) {
        const int t1 = nt - t0 < tc ? nt : t0 + tc;
        for (int r = 0; r < nr; r += 3) {
            const int R = nr - r < 3 ? nr - r : 3;
            for (int t = t0; t < t1; t += 4) {
                const int T = t1 - t < 4 ? t1 - t : 4;
                tile(R, T, k, (const char *)w + r * ws, ws, x + (size_t)t * k, y + (size_t)t * ldy + r, ldy);
            }
        }
    }
}

static void gemm_f32(int nr, int nt, int k, const void *w, size_t w_stride,
                     const float *x, float *y, size_t ldy) {
    gemm_f(ftile_K_F32, nr, nt, k, w, w_stride, x, y, ldy);
}
static void gemm_f16(int nr, int nt, int k, const void *w, size_t w_stride,
                     const float *x, float *y, size_t ldy) {
    gemm_f(ftile_K_F16, nr, nt, k, w, w_stride, x, y, ldy);
}
static void gemm_bf16(int nr, int nt, int k, const void *w, size_t w_stride,
                      const float *x, float *y, size_t ldy) {
    gemm_f(ftile_K_BF16, nr, nt, k, w, w_stride, x, y, ldy);
}

/* ------------------------------------------------------------- attention */

/* scores: 4 positions at a time (independent FMA chains), each position
 * with the same sequence: one accumulator, FMA per 8 elements, hsum8,
 * scalar FMA tail, times scale. */
AI void scores_rows(const int kind, const int P, int hd, const char *k, size_t stride_bytes,
                    const float *q, float scale, float *out) {
    const size_t es = kind == K_F32 ? 4 : 2;
    __m256 acc[4];
    UNROLL
    for (int p = 0; p < P; p++) acc[p] = _mm256_setzero_ps();
    const int h8 = hd & ~7;
    for (int i = 0; i < h8; i += 8) {
        __m256 qv = _mm256_loadu_ps(q + i);
        UNROLL
        for (int p = 0; p < P; p++)
            acc[p] = _mm256_fmadd_ps(load_w8(kind, k + p * stride_bytes + i * es), qv, acc[p]);
    }
    UNROLL
    for (int p = 0; p < P; p++) {
        float tail = 0.0f;
        for (int i = h8; i < hd; i++) tail = fmaf(load_w1(kind, k + p * stride_bytes + i * es), q[i], tail);
        out[p] = scale * (hsum8(acc[p]) + tail);
    }
}

AI void scores(const int kind, int npos, int hd, const char *k, size_t stride_bytes, const float *q,
               float scale, float *out) {
    int p = 0;
    for (; p + 4 <= npos; p += 4) scores_rows(kind, 4, hd, k + p * stride_bytes, stride_bytes, q, scale, out + p);
    for (; p < npos; p++) scores_rows(kind, 1, hd, k + p * stride_bytes, stride_bytes, q, scale, out + p);
}

static void attn_scores_f16(int npos, int hd, const uint16_t *k, size_t stride,
                            const float *q, float scale, float *out) {
    scores(K_F16, npos, hd, (const char *)k, stride * 2, q, scale, out);
}
static void attn_scores_f32(int npos, int hd, const float *k, size_t stride,
                            const float *q, float scale, float *out) {
    scores(K_F32, npos, hd, (const char *)k, stride * 4, q, scale, out);
}

/* accum: acc[i] = fma(w[p], V[p][i], acc[i]) for p in order, 64 elements
 * of acc held in registers at a time; the hd % 8 tail the same, scalar. */
AI void accum(const int kind, int npos, int hd, const char *v, size_t stride_bytes, const float *w,
              float *acc) {
    const size_t es = kind == K_F32 ? 4 : 2;
    const int h8 = hd & ~7;
    int i0 = 0;
    for (; i0 + 64 <= h8; i0 += 64) {
        __m256 a[8];
        UNROLL
        for (int j = 0; j < 8; j++) a[j] = _mm256_loadu_ps(acc + i0 + 8 * j);
        for (int p = 0; p < npos; p++) {
            __m256 wp = _mm256_broadcast_ss(w + p);
            const char *vr = v + p * stride_bytes + i0 * es;
            UNROLL
            for (int j = 0; j < 8; j++) a[j] = _mm256_fmadd_ps(wp, load_w8(kind, vr + 8 * j * es), a[j]);
        }
        UNROLL
        for (int j = 0; j < 8; j++) _mm256_storeu_ps(acc + i0 + 8 * j, a[j]);
    }
    for (; i0 < h8; i0 += 8) {
        __m256 a = _mm256_loadu_ps(acc + i0);
        for (int p = 0; p < npos; p++)
            a = _mm256_fmadd_ps(_mm256_broadcast_ss(w + p), load_w8(kind, v + p * stride_bytes + i0 * es), a);
        _mm256_storeu_ps(acc + i0, a);
    }
    for (int i = h8; i < hd; i++) {
        float a = acc[i];
        for (int p = 0; p < npos; p++) a = fmaf(w[p], load_w1(kind, v + p * stride_bytes + i * es), a);
        acc[i] = a;
    }
}

static void attn_accum_f16(int npos, int hd, const uint16_t *v, size_t stride,
                           const float *w, float *acc) {
    accum(K_F16, npos, hd, (const char *)v, stride * 2, w, acc);
}
static void attn_accum_f32(int npos, int hd, const float *v, size_t stride,
                           const float *w, float *acc) {
    accum(K_F32, npos, hd, (const char *)v, stride * 4, w, acc);
}

/* ----------------------------------------------------------- conversions */

static void f32_to_f16(const float *x, uint16_t *y, int n) {
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
    .f32_to_f16 = f32_to_f16,
};

#if defined(__clang__)
#pragma clang attribute pop
#endif

#else
typedef int rs_kernels_avx2_unused; /* an ISO C translation unit must not be empty */
#endif
