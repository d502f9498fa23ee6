/* AVX2 + FMA + F16C float-weight GEMMs and attention kernels (x86-64); the
 * quantized GEMMs and the table are in kernels_avx2.c.
 *
 * Float GEMMs: each element owns one __m256 accumulator, one FMA per 8
 * elements in order, one fixed horizontal sum at the end; the tile only
 * decides which lanes live together. Attention: per (query, row) one fixed
 * sequence whatever the number of queries in a call (kernels.h). */
#if defined(__x86_64__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,f16c")
#endif

#include "kernels_avx2.h"

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

void rs_avx2_gemm_f32(int nr, int nt, int k, const void *w, size_t w_stride,
                     const float *x, float *y, size_t ldy) {
    gemm_f(ftile_K_F32, nr, nt, k, w, w_stride, x, y, ldy);
}
void rs_avx2_gemm_f16(int nr, int nt, int k, const void *w, size_t w_stride,
                     const float *x, float *y, size_t ldy) {
    gemm_f(ftile_K_F16, nr, nt, k, w, w_stride, x, y, ldy);
}
void rs_avx2_gemm_bf16(int nr, int nt, int k, const void *w, size_t w_stride,
                      const float *x, float *y, size_t ldy) {
    gemm_f(ftile_K_BF16, nr, nt, k, w, w_stride, x, y, ldy);
}

/* ------------------------------------------------------------- attention */

/* 8 rows' accumulators -> one vector, lane r = row r's sum, the same tree
 * for every lane: ((x0+x1)+(x2+x3)) + ((x4+x5)+(x6+x7)). */
AI __m256 hadd8(__m256 a, __m256 b) { /* vhaddps's sums, as two shuffles and an add */
    return _mm256_add_ps(_mm256_shuffle_ps(a, b, 0x88), _mm256_shuffle_ps(a, b, 0xdd));
}

AI __m256 hsum8x8f(const __m256 a[8]) {
    __m256 h01 = hadd8(a[0], a[1]), h23 = hadd8(a[2], a[3]);
    __m256 h45 = hadd8(a[4], a[5]), h67 = hadd8(a[6], a[7]);
    __m256 h0123 = hadd8(h01, h23), h4567 = hadd8(h45, h67);
    return _mm256_add_ps(_mm256_permute2f128_ps(h0123, h4567, 0x20), _mm256_permute2f128_ps(h0123, h4567, 0x31));
}

/* Scores of one query against R <= 8 rows. Per row: one accumulator, one
 * FMA per 8 elements in order, hsum8x8f (absent rows are zero lanes that
 * never meet a present one), plus a scalar fmaf tail when hd % 8 != 0,
 * times scale. kind K_F32 also reads the converted scratch rows: f16 -> f32
 * is exact, so both paths give the same bits. */
AI void sblock(const int kind, const int R, int hd, const char *k, size_t sb, const float *q, float scale,
               float *out) {
    const size_t es = kind == K_F32 ? 4 : 2;
    __m256 acc[8];
    UNROLL
    for (int r = 0; r < 8; r++) acc[r] = _mm256_setzero_ps();
    const int h8 = hd & ~7;
    for (int i = 0; i < h8; i += 8) {
        __m256 qv = _mm256_loadu_ps(q + i);
        UNROLL
        for (int r = 0; r < R; r++) acc[r] = _mm256_fmadd_ps(load_w8(kind, k + r * sb + i * es), qv, acc[r]);
    }
    __m256 s = hsum8x8f(acc);
    if (h8 < hd) {
        float tail[8] = {0};
        for (int r = 0; r < R; r++)
            for (int i = h8; i < hd; i++) tail[r] = fmaf(load_w1(kind, k + r * sb + i * es), q[i], tail[r]);
        s = _mm256_add_ps(s, _mm256_loadu_ps(tail));
    }
    s = _mm256_mul_ps(_mm256_set1_ps(scale), s);
    if (R == 8) {
        _mm256_storeu_ps(out, s);
    } else {
        float tmp[8];
        _mm256_storeu_ps(tmp, s);
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
 * query is as fast. Accum shares conversions without a scratch: 3-4 queries
 * go through atile together (below), fewer run the single-query loop with
 * the page's rows hot in L1. */
enum { SCR_HD = 256, SCR_MINQ = 8 };

/* f16 rows -> f32, n rows of hd at dst + r*hd */
static void cvt_rows(int n, int hd, const char *k, size_t sb, float *dst) {
    const int h8 = hd & ~7;
    for (int r = 0; r < n; r++) {
        const char *kr = k + r * sb;
        float *d = dst + (size_t)r * hd;
        int i = 0;
        for (; i < h8; i += 8) _mm256_storeu_ps(d + i, load_w8(K_F16, kr + i * 2));
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

void rs_avx2_attn_scores_f16(int npos, int hd, const uint16_t *k, size_t stride,
                            const float *q, float scale, float *out) {
    scores_multi(K_F16, npos, hd, (const char *)k, stride * 2, 1, &q, scale, &out);
}
void rs_avx2_attn_scores_f32(int npos, int hd, const float *k, size_t stride,
                            const float *q, float scale, float *out) {
    scores_multi(K_F32, npos, hd, (const char *)k, stride * 4, 1, &q, scale, &out);
}
void rs_avx2_attn_scores_f16_multi(int npos, int hd, const uint16_t *k, size_t stride, int nq,
                                  const float *const *q, float scale, float *const *out) {
    scores_multi(K_F16, npos, hd, (const char *)k, stride * 2, nq, q, scale, out);
}
void rs_avx2_attn_scores_f32_multi(int npos, int hd, const float *k, size_t stride, int nq,
                                  const float *const *q, float scale, float *const *out) {
    scores_multi(K_F32, npos, hd, (const char *)k, stride * 4, nq, q, scale, out);
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

void rs_avx2_attn_accum_f16(int npos, int hd, const uint16_t *v, size_t stride,
                           const float *w, float *acc) {
    accum(K_F16, npos, hd, (const char *)v, stride * 2, w, acc);
}
void rs_avx2_attn_accum_f32(int npos, int hd, const float *v, size_t stride,
                           const float *w, float *acc) {
    accum(K_F32, npos, hd, (const char *)v, stride * 4, w, acc);
}

/* f16 V, QT queries x 8C elements from i0, rows [p0, p1): each row's
 * elements converted once for the QT queries (AVX2 converts at most as
 * fast as it multiplies), each element's chain in row order as accum's. */
AI void atile(const int QT, const int C, int p0, int p1, int i0, const char *v, size_t sb, const float *const *w,
              float *const *acc) {
    __m256 a[4][2];
    UNROLL
    for (int j = 0; j < QT; j++)
        UNROLL
        for (int c = 0; c < C; c++) a[j][c] = _mm256_loadu_ps(acc[j] + i0 + 8 * c);
    for (int p = p0; p < p1; p++) {
        __m256 vv[2];
        UNROLL
        for (int c = 0; c < C; c++) vv[c] = load_w8(K_F16, v + p * sb + (size_t)(i0 + 8 * c) * 2);
        UNROLL
        for (int j = 0; j < QT; j++) {
            const __m256 wp = _mm256_broadcast_ss(w[j] + p);
            UNROLL
            for (int c = 0; c < C; c++) a[j][c] = _mm256_fmadd_ps(wp, vv[c], a[j][c]);
        }
    }
    UNROLL
    for (int j = 0; j < QT; j++)
        UNROLL
        for (int c = 0; c < C; c++) _mm256_storeu_ps(acc[j] + i0 + 8 * c, a[j][c]);
}

/* 3 or 4 queries over rows [p0, p1): 16 elements a pass (QT x 2
 * accumulators: 6-8 chains in flight), then 8, then accum's scalar tail. */
AI void atile_all(const int QT, int hd, int p0, int p1, const char *v, size_t sb, const float *const *w,
                  float *const *acc) {
    const int h8 = hd & ~7;
    int i0 = 0;
    for (; i0 + 16 <= h8; i0 += 16) atile(QT, 2, p0, p1, i0, v, sb, w, acc);
    if (i0 < h8) atile(QT, 1, p0, p1, i0, v, sb, w, acc);
    for (int j = 0; j < QT; j++)
        for (int i = h8; i < hd; i++) {
            float a = acc[j][i];
            for (int p = p0; p < p1; p++) a = fmaf(w[j][p], load_w1(K_F16, v + p * sb + (size_t)i * 2), a);
            acc[j][i] = a;
        }
}

/* Each query: accum over its npos[j] rows (the page's rows stay in L1).
 * f16 V, 3-4 queries together: the rows they all read through atile, each
 * query's further rows alone (every chain stays in row order); fewer
 * queries, or f32 V (nothing to convert), one query at a time. */
AI void accum_multi(const int kind, int hd, const char *v, size_t sb, int nq, const int *npos,
                    const float *const *w, float *const *acc) {
    int j = 0, qt;
    for (; kind == K_F16 && j + 3 <= nq; j += qt) {
        qt = nq - j < 4 ? nq - j : 4;
        int common = npos[j];
        for (int k = 1; k < qt; k++) common = npos[j + k] < common ? npos[j + k] : common;
        if (qt == 4) atile_all(4, hd, 0, common, v, sb, w + j, acc + j);
        else atile_all(3, hd, 0, common, v, sb, w + j, acc + j);
        for (int k = 0; k < qt; k++)
            if (npos[j + k] > common)
                accum(kind, npos[j + k] - common, hd, v + (size_t)common * sb, sb, w[j + k] + common, acc[j + k]);
    }
    for (; j < nq; j++) accum(kind, npos[j], hd, v, sb, w[j], acc[j]);
}

void rs_avx2_attn_accum_f16_multi(int hd, const uint16_t *v, size_t stride, int nq, const int *npos,
                                 const float *const *w, float *const *acc) {
    accum_multi(K_F16, hd, (const char *)v, stride * 2, nq, npos, w, acc);
}
void rs_avx2_attn_accum_f32_multi(int hd, const float *v, size_t stride, int nq, const int *npos,
                                 const float *const *w, float *const *acc) {
    accum_multi(K_F32, hd, (const char *)v, stride * 4, nq, npos, w, acc);
}

#if defined(__clang__)
#pragma clang attribute pop
#endif

#else
typedef int rs_kernels_avx2_float_unused; /* an ISO C translation unit must not be empty */
#endif
