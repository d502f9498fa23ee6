/* NEON kernels (AArch64, baseline ARMv8.0: no dotprod, no fp16 arithmetic).
 *
 * Determinism (kernels.h): every GEMM output element owns one float32x4
 * accumulator that receives exactly one FMA per block (quantized) or per 4
 * elements (float), in order, then one fixed horizontal sum; Q4_1's offset
 * term m_w * x.s goes into a float of its own with one fmaf per block. The
 * register tile (R rows x T tokens) never changes an element's sequence.
 *
 * Integer dot products: the weights of a block are widened to int16 once
 * per row and reused for every token of the tile; vmull_s16 / vmlal_s16
 * (and their _high forms) multiply them with the int16 activations into
 * two int32x4 chains, added at the end (exact, see dot32). */
#if defined(__aarch64__)

#include "kernels.h"

#include <arm_neon.h>
#include <math.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))
/* tile loops have constant trip counts after inlining: unroll them fully so
 * the accumulators live in registers */
#define UNROLL _Pragma("GCC unroll 16")

#define TOK_CHUNK 64
/* rows ahead to prefetch: one row group */
#define PF_ROWS 4

AI uint16_t ld16(const void *p) {
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

AI float hsum4(float32x4_t v) {
    float32x2_t a = vadd_f32(vget_low_f32(v), vget_high_f32(v)); /* (0+2, 1+3) */
    return vget_lane_f32(a, 0) + vget_lane_f32(a, 1);
}

AI float h2f(uint16_t h) {
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
}

/* ---------------------------------------------------------------- quantize */

static void quantize_q16(const float *x, rs_block_q16 *y, int k) {
    const float32x4_t qmax = vdupq_n_f32(32767.0f), qmin = vdupq_n_f32(-32767.0f);
    for (int b = 0; b < k / RS_QK; b++) {
        const float *xb = x + b * RS_QK;
        float32x4_t v[8];
        float32x4_t m = vdupq_n_f32(0.0f);
        UNROLL
        for (int j = 0; j < 8; j++) {
            v[j] = vld1q_f32(xb + 4 * j);
            m = vmaxq_f32(m, vabsq_f32(v[j]));
        }
        float d = vmaxvq_f32(m) / 32767.0f;
        y[b].d = d;
        if (d == 0.0f) {
            memset(y[b].qs, 0, sizeof y[b].qs);
            y[b].s = 0.0f * d;
            continue;
        }
        const float32x4_t dv = vdupq_n_f32(d);
        int32x4_t sum = vdupq_n_s32(0);
        UNROLL
        for (int j = 0; j < 4; j++) {
            /* vrndaq: round to nearest, ties away from zero (= roundf) */
            float32x4_t r0 = vrndaq_f32(vdivq_f32(v[2 * j], dv));
            float32x4_t r1 = vrndaq_f32(vdivq_f32(v[2 * j + 1], dv));
            int32x4_t i0 = vcvtq_s32_f32(vminq_f32(vmaxq_f32(r0, qmin), qmax));
            int32x4_t i1 = vcvtq_s32_f32(vminq_f32(vmaxq_f32(r1, qmin), qmax));
            sum = vaddq_s32(sum, vaddq_s32(i0, i1));
            vst1q_s16(y[b].qs + 8 * j, vcombine_s16(vmovn_s32(i0), vmovn_s32(i1)));
        }
        y[b].s = d * (float)vaddvq_s32(sum);
    }
}

/* ------------------------------------------------------- quantized GEMMs */

enum { K_Q4_0, K_Q4_1, K_Q8_0 };

/* w[0..3]: the block's weights as int16 (elements 8j..8j+7 in w[j]), x: the
 * activations. Lane l sums the 8 products of elements 4i + l, i < 8: exact
 * in int32 (|w| <= 128, |q| <= 32767). Converted to float it is exact for
 * Q4 weights (8 * 15 * 32767 < 2^24); a Q8_0 lane can exceed 2^24 and round
 * once there, well inside the tested bound, and the same for every tile. */
AI int32x4_t dot32(const int16x8_t w[4], const int16_t *x) {
    int16x8_t x0 = vld1q_s16(x), x1 = vld1q_s16(x + 8), x2 = vld1q_s16(x + 16), x3 = vld1q_s16(x + 24);
    int32x4_t a = vmull_s16(vget_low_s16(w[0]), vget_low_s16(x0));
    int32x4_t c = vmull_s16(vget_low_s16(w[2]), vget_low_s16(x2));
    a = vmlal_high_s16(a, w[0], x0);
    c = vmlal_high_s16(c, w[2], x2);
    a = vmlal_s16(a, vget_low_s16(w[1]), vget_low_s16(x1));
    c = vmlal_s16(c, vget_low_s16(w[3]), vget_low_s16(x3));
    a = vmlal_high_s16(a, w[1], x1);
    c = vmlal_high_s16(c, w[3], x3);
    return vaddq_s32(a, c);
}

AI void qtile(const int kind, const int R, const int T, int nb, const char *w, size_t ws,
              const rs_block_q16 *x, float *y, size_t ldy) {
    const size_t bs = kind == K_Q4_0 ? sizeof(rs_block_q4_0)
                      : kind == K_Q4_1 ? sizeof(rs_block_q4_1) : sizeof(rs_block_q8_0);
    float32x4_t acc[4][4];
    float macc[4][4];
    UNROLL
    for (int r = 0; r < R; r++)
        UNROLL
        for (int t = 0; t < T; t++) {
            acc[r][t] = vdupq_n_f32(0.0f);
            macc[r][t] = 0.0f;
        }
    for (int b = 0; b < nb; b++) {
        UNROLL
        for (int r = 0; r < R; r++) {
            const char *wb = w + r * ws + b * bs;
            /* the weights stream from DRAM: ask for the next row group now
             * (integer arithmetic: past the last row it is a harmless hint) */
            __builtin_prefetch((const char *)((uintptr_t)wb + PF_ROWS * ws));
            int16x8_t wv[4];
            float dw, mw = 0.0f;
            dw = h2f(ld16(wb));
            if (kind == K_Q8_0) {
                int8x16_t q0 = vld1q_s8((const int8_t *)(wb + 2));
                int8x16_t q1 = vld1q_s8((const int8_t *)(wb + 18));
                wv[0] = vmovl_s8(vget_low_s8(q0));
                wv[1] = vmovl_high_s8(q0);
                wv[2] = vmovl_s8(vget_low_s8(q1));
                wv[3] = vmovl_high_s8(q1);
            } else {
                const int qoff = kind == K_Q4_1 ? 4 : 2;
                if (kind == K_Q4_1) mw = h2f(ld16(wb + 2));
                uint8x16_t q = vld1q_u8((const uint8_t *)(wb + qoff));
                /* low nibbles are elements 0..15, high nibbles 16..31 */
                uint8x16_t lo = vandq_u8(q, vdupq_n_u8(0x0f)), hi = vshrq_n_u8(q, 4);
                wv[0] = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(lo)));
                wv[1] = vreinterpretq_s16_u16(vmovl_high_u8(lo));
                wv[2] = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(hi)));
                wv[3] = vreinterpretq_s16_u16(vmovl_high_u8(hi));
                if (kind == K_Q4_0) {
                    UNROLL
                    for (int j = 0; j < 4; j++) wv[j] = vsubq_s16(wv[j], vdupq_n_s16(8));
                }
            }
            UNROLL
            for (int t = 0; t < T; t++) {
                const rs_block_q16 *xb = x + (size_t)t * nb + b;
                int32x4_t i = dot32(wv, xb->qs);
                acc[r][t] = vfmaq_n_f32(acc[r][t], vcvtq_f32_s32(i), dw * xb->d);
                if (kind == K_Q4_1) macc[r][t] = fmaf(mw, xb->s, macc[r][t]);
            }
        }
    }
    UNROLL
    for (int r = 0; r < R; r++)
        UNROLL
        for (int t = 0; t < T; t++) {
            float v = hsum4(acc[r][t]);
            if (kind == K_Q4_1) v += macc[r][t];
            y[(size_t)t * ldy + r] = v;
        }
}

#define QTILE_FN(kind, R, T) \
    static void qtile_##kind##_##R##_##T(int nb, const char *w, size_t ws, const rs_block_q16 *x, \
                                         float *y, size_t ldy) { \
        qtile(kind, R, T, nb, w, ws, x, y, ldy); \
    }
#define QTILE_SET(kind) \
    QTILE_FN(kind, 1, 1) QTILE_FN(kind, 2, 1) QTILE_FN(kind, 3, 1) QTILE_FN(kind, 4, 1) \
    QTILE_FN(kind, 1, 2) QTILE_FN(kind, 2, 2) QTILE_FN(kind, 3, 2) QTILE_FN(kind, 4, 2) \
    QTILE_FN(kind, 1, 3) QTILE_FN(kind, 2, 3) QTILE_FN(kind, 1, 4) QTILE_FN(kind, 2, 4) \
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
        case 33: qtile_##kind##_1_4(nb, w, ws, x, y, ldy); break; \
        case 34: qtile_##kind##_2_4(nb, w, ws, x, y, ldy); break; \
        default: break; \
        } \
    }

QTILE_SET(K_Q4_0)
QTILE_SET(K_Q4_1)
QTILE_SET(K_Q8_0)

typedef void (*qtile_fn)(int R, int T, int nb, const char *w, size_t ws, const rs_block_q16 *x,
                         float *y, size_t ldy);

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
                if (T <= 2) {
                    tile(rg, T, nb, (const char *)w + r0 * ws, ws, xt, yt + r0, ldy);
                } else {
                    for (int r = r0; r < r0 + rg; r += 2) {
                        const int R = r0 + rg - r < 2 ? r0 + rg - r : 2;
                        tile(R, T, nb, (const char *)w + r * ws, ws, xt, yt + r, ldy);
                    }
                }
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

AI float32x4_t load_w4(const int kind, const char *p) {
    if (kind == K_F32) return vld1q_f32((const float *)p);
    uint16x4_t h = vld1_u16((const uint16_t *)p);
    if (kind == K_F16) return vcvt_f32_f16(vreinterpret_f16_u16(h));
    return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
}

AI float load_w1(const int kind, const char *p) {
    if (kind == K_F32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    if (kind == K_F16) return h2f(ld16(p));
    return rs_bf16_to_f32(ld16(p));
}

AI void ftile(const int kind, const int R, const int T, int k, const char *w, size_t ws,
              const float *x, float *y, size_t ldy) {
    const size_t es = kind == K_F32 ? 4 : 2;
    float32x4_t acc[4][4];
    UNROLL
    for (int r = 0; r < R; r++)
        UNROLL
        for (int t = 0; t < T; t++) acc[r][t] = vdupq_n_f32(0.0f);
    const int k4 = k & ~3;
    for (int i = 0; i < k4; i += 4) {
        UNROLL
        for (int r = 0; r < R; r++) {
            __builtin_prefetch((const char *)((uintptr_t)(w + r * ws + i * es) + (size_t)R * ws));
            float32x4_t wv = load_w4(kind, w + r * ws + i * es);
            UNROLL
            for (int t = 0; t < T; t++)
                acc[r][t] = vfmaq_f32(acc[r][t], wv, vld1q_f32(x + (size_t)t * k + i));
        }
    }
    UNROLL
    for (int r = 0; r < R; r++)
        UNROLL
        for (int t = 0; t < T; t++) {
            float tail = 0.0f;
            for (int i = k4; i < k; i++)
                tail = fmaf(load_w1(kind, w + r * ws + i * es), x[(size_t)t * k + i], tail);
            y[(size_t)t * ldy + r] = hsum4(acc[r][t]) + tail;
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
    FTILE_FN(kind, 4, 1) FTILE_FN(kind, 4, 2) FTILE_FN(kind, 4, 3) FTILE_FN(kind, 4, 4) \
    static void ftile_##kind(int R, int T, int k, const char *w, size_t ws, const float *x, float *y, \
                             size_t ldy) { \
        switch (T * 8 + R) { \
        case 9: ftile_##kind##_1_1(k, w, ws, x, y, ldy); break; \
        case 10: ftile_##kind##_2_1(k, w, ws, x, y, ldy); break; \
        case 11: ftile_##kind##_3_1(k, w, ws, x, y, ldy); break; \
        case 12: ftile_##kind##_4_1(k, w, ws, x, y, ldy); break; \
        case 17: ftile_##kind##_1_2(k, w, ws, x, y, ldy); break; \
        case 18: ftile_##kind##_2_2(k, w, ws, x, y, ldy); break; \
        case 19: ftile_##kind##_3_2(k, w, ws, x, y, ldy); break; \
        case 20: ftile_##kind##_4_2(k, w, ws, x, y, ldy); break; \
        case 25: ftile_##kind##_1_3(k, w, ws, x, y, ldy); break; \
        case 26: ftile_##kind##_2_3(k, w, ws, x, y, ldy); break; \
        case 27: ftile_##kind##_3_3(k, w, ws, x, y, ldy); break; \
        case 28: ftile_##kind##_4_3(k, w, ws, x, y, ldy); break; \
        case 33: ftile_##kind##_1_4(k, w, ws, x, y, ldy); break; \
        case 34: ftile_##kind##_2_4(k, w, ws, x, y, ldy); break; \
        case 35: ftile_##kind##_3_4(k, w, ws, x, y, ldy); break; \
        case 36: ftile_##kind##_4_4(k, w, ws, x, y, ldy); break; \
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
    int tc = (int)((256 * 1024) / ((size_t)k * 4 + 1));
    tc = tc < 4 ? 4 : tc & ~3;
    for (int t0 = 0; t0 < nt; t0 += tc) {
        const int t1 = nt - t0 < tc ? nt : t0 + tc;
        for (int r = 0; r < nr; r += 4) {
            const int R = nr - r < 4 ? nr - r : 4;
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

/* 4 rows' accumulators -> one vector, lane r = row r's sum, the same tree
 * for every lane: (x0+x1)+(x2+x3). */
AI float32x4_t hsum4x4(float32x4_t a0, float32x4_t a1, float32x4_t a2, float32x4_t a3) {
    return vpaddq_f32(vpaddq_f32(a0, a1), vpaddq_f32(a2, a3));
}

/* Scores of one query against R <= 8 rows. Per row: one accumulator, one
 * FMA per 4 elements in order, hsum4x4 (absent rows are zero lanes that
 * never meet a present one), plus a scalar fmaf tail when hd % 4 != 0,
 * times scale. kind K_F32 also reads the converted scratch rows: f16 -> f32
 * is exact, so both paths give the same bits. */
AI void sblock(const int kind, const int R, int hd, const char *k, size_t sb, const float *q, float scale,
               float *out) {
    const size_t es = kind == K_F32 ? 4 : 2;
    float32x4_t acc[8];
    UNROLL
    for (int r = 0; r < 8; r++) acc[r] = vdupq_n_f32(0.0f);
    const int h4 = hd & ~3;
    for (int i = 0; i < h4; i += 4) {
        float32x4_t qv = vld1q_f32(q + i);
        UNROLL
        for (int r = 0; r < R; r++) acc[r] = vfmaq_f32(acc[r], load_w4(kind, k + r * sb + i * es), qv);
    }
    float32x4_t s0 = hsum4x4(acc[0], acc[1], acc[2], acc[3]), s1 = hsum4x4(acc[4], acc[5], acc[6], acc[7]);
    if (h4 < hd) {
        float tail[8] = {0};
        for (int r = 0; r < R; r++)
            for (int i = h4; i < hd; i++) tail[r] = fmaf(load_w1(kind, k + r * sb + i * es), q[i], tail[r]);
        s0 = vaddq_f32(s0, vld1q_f32(tail));
        s1 = vaddq_f32(s1, vld1q_f32(tail + 4));
    }
    s0 = vmulq_n_f32(s0, scale);
    s1 = vmulq_n_f32(s1, scale);
    if (R == 8) {
        vst1q_f32(out, s0);
        vst1q_f32(out + 4, s1);
    } else {
        float tmp[8];
        vst1q_f32(tmp, s0);
        vst1q_f32(tmp + 4, s1);
        memcpy(out, tmp, (size_t)R * 4);
    }
}

AI void sblock_any(const int kind, int R, int hd, const char *k, size_t sb, const float *q, float scale,
                   float *out) {
    if (R == 8) sblock(kind, 8, hd, k, sb, q, scale, out);
    else sblock(kind, R, hd, k, sb, q, scale, out);
}

/* Scores of many queries: an 8-row block converted once into a scratch
 * (hd <= SCR_HD) that every query then reads. Measured (Zen 4, hd 64, rows
 * in L1): pays from about 8 queries on; below that converting on the fly per
 * query is as fast. Accum never pays (FMA-bound either way), so it runs the
 * single-query loop per query with the page's rows hot in L1. */
enum { SCR_HD = 256, SCR_MINQ = 8 };

static void cvt_rows(int n, int hd, const char *k, size_t sb, float *dst) {
    const int h4 = hd & ~3;
    for (int r = 0; r < n; r++) {
        const char *kr = k + r * sb;
        float *d = dst + (size_t)r * hd;
        int i = 0;
        for (; i < h4; i += 4) vst1q_f32(d + i, load_w4(K_F16, kr + i * 2));
        for (; i < hd; i++) d[i] = load_w1(K_F16, kr + i * 2);
    }
}

AI void scores_multi(const int kind, int npos, int hd, const char *k, size_t sb, int nq, const float *const *q,
                     float scale, float *const *out) {
    if (kind == K_F32 || nq < SCR_MINQ || hd > SCR_HD) {
        for (int p = 0; p < npos; p += 8) {
            const int R = npos - p < 8 ? npos - p : 8;
            for (int j = 0; j < nq; j++) sblock_any(kind, R, hd, k + p * sb, sb, q[j], scale, out[j] + p);
        }
        return;
    }
    float buf[8 * SCR_HD];
    for (int p = 0; p < npos; p += 8) {
        const int R = npos - p < 8 ? npos - p : 8;
        cvt_rows(R, hd, k + p * sb, sb, buf);
        for (int j = 0; j < nq; j++) sblock_any(K_F32, R, hd, (const char *)buf, (size_t)hd * 4, q[j], scale, out[j] + p);
    }
}

static void attn_scores_f16(int npos, int hd, const uint16_t *k, size_t stride,
                            const float *q, float scale, float *out) {
    scores_multi(K_F16, npos, hd, (const char *)k, stride * 2, 1, &q, scale, &out);
}
static void attn_scores_f32(int npos, int hd, const float *k, size_t stride,
                            const float *q, float scale, float *out) {
    scores_multi(K_F32, npos, hd, (const char *)k, stride * 4, 1, &q, scale, &out);
}
static void attn_scores_f16_multi(int npos, int hd, const uint16_t *k, size_t stride, int nq,
                                  const float *const *q, float scale, float *const *out) {
    scores_multi(K_F16, npos, hd, (const char *)k, stride * 2, nq, q, scale, out);
}
static void attn_scores_f32_multi(int npos, int hd, const float *k, size_t stride, int nq,
                                  const float *const *q, float scale, float *const *out) {
    scores_multi(K_F32, npos, hd, (const char *)k, stride * 4, nq, q, scale, out);
}

AI void accum(const int kind, int npos, int hd, const char *v, size_t stride_bytes, const float *w,
              float *acc) {
    const size_t es = kind == K_F32 ? 4 : 2;
    const int h4 = hd & ~3;
    int i0 = 0;
    for (; i0 + 64 <= h4; i0 += 64) {
        float32x4_t a[16];
        UNROLL
        for (int j = 0; j < 16; j++) a[j] = vld1q_f32(acc + i0 + 4 * j);
        for (int p = 0; p < npos; p++) {
            const char *vr = v + p * stride_bytes + i0 * es;
            UNROLL
            for (int j = 0; j < 16; j++) a[j] = vfmaq_n_f32(a[j], load_w4(kind, vr + 4 * j * es), w[p]);
        }
        UNROLL
        for (int j = 0; j < 16; j++) vst1q_f32(acc + i0 + 4 * j, a[j]);
    }
    for (; i0 < h4; i0 += 4) {
        float32x4_t a = vld1q_f32(acc + i0);
        for (int p = 0; p < npos; p++) a = vfmaq_n_f32(a, load_w4(kind, v + p * stride_bytes + i0 * es), w[p]);
        vst1q_f32(acc + i0, a);
    }
    for (int i = h4; i < hd; i++) {
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

/* Each query: accum over its npos[j] rows (the page's rows stay in L1). */
AI void accum_multi(const int kind, int hd, const char *v, size_t sb, int nq, const int *npos,
                    const float *const *w, float *const *acc) {
    for (int j = 0; j < nq; j++) accum(kind, npos[j], hd, v, sb, w[j], acc[j]);
}

static void attn_accum_f16_multi(int hd, const uint16_t *v, size_t stride, int nq, const int *npos,
                                 const float *const *w, float *const *acc) {
    accum_multi(K_F16, hd, (const char *)v, stride * 2, nq, npos, w, acc);
}
static void attn_accum_f32_multi(int hd, const float *v, size_t stride, int nq, const int *npos,
                                 const float *const *w, float *const *acc) {
    accum_multi(K_F32, hd, (const char *)v, stride * 4, nq, npos, w, acc);
}

/* ----------------------------------------------------------- conversions */

static void f32_to_f16(const float *x, uint16_t *y, int n) {
    int i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(y + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
    if (i < n) {
        float tmp[4] = {0};
        uint16_t out[4];
        memcpy(tmp, x + i, (size_t)(n - i) * 4);
        vst1_u16(out, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(tmp))));
        memcpy(y + i, out, (size_t)(n - i) * 2);
    }
}

const rs_kernels rs_kernels_neon = {
    .name = "neon",
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
    .softmax = rs_softmax_neon,
    .swiglu = rs_swiglu_neon,
};

#else
typedef int rs_kernels_neon_unused; /* an ISO C translation unit must not be empty */
#endif
