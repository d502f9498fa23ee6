/* AVX-512 attention kernels over f16 K/V pages: the same bits as AVX2's
 * (kernels_avx2_float.c), in half the instructions.
 *
 * Why: batched decode over a shared prompt and prefill over a long context
 * are many queries per page, where AVX2's attention runs at about two thirds
 * of its FMA rate and is ~30 % of a step. Where the vector unit is 512 bits
 * wide (Zen 5, Intel) a zmm FMA does twice a ymm's work; where it is split
 * (Zen 4) it still halves the instructions to issue.
 *
 * Same bits: kernels.h fixes each output's operations, and these kernels
 * perform exactly AVX2's, only two of them per instruction:
 * - scores: a zmm holds two rows' 8-lane FMA chains side by side (lanes 0-7
 *   row r, 8-15 row r+1), over the same query elements in the same order;
 *   the sum tree adds the same pairs as hsum8x8f, ((x0+x1)+(x2+x3)) +
 *   ((x4+x5)+(x6+x7)) per row, then times scale. From SCORES_T_NQ queries
 *   on (a shared prompt's page) the rows are transposed once instead, and
 *   each chain is a vector with a row per lane (ttile): the same adds,
 *   between vectors, with no shuffles per query (24 queries: 41 -> 46
 *   GMAC/s per thread on Zen 4).
 * - accum: the per-element fmaf chain in row order, 16 elements per zmm
 *   (8 queries x 32 elements a tile where 8 or more read a page),
 *   the weight broadcast inside the FMA (fma_b: 3 queries 43 -> 48 GMAC/s).
 * A query's results never depend on the others in the call: the queries of
 * a tile share loads and conversions, never arithmetic.
 *
 * Shapes outside the fast paths (hd % 8 or % 16, very wide heads, f32 K/V)
 * go to the AVX2 kernels, which give the same bits by the same contract. */
#if defined(__x86_64__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl"))), \
                             apply_to = function)
#else
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl")
#endif

#include "kernels_avx2.h"
#include "kernels_avx512.h"

enum {
    QT_MAX = 4,     /* queries per tile: 4 x 4 accumulators (scores) or 4 x 4 (accum, 64 elements) */
    S_HD_MAX = 256, /* widest head the scores fast path takes */
    SCORES_T_NQ = 6, /* queries from which scores transpose the rows (3 x 16 rows: 32 against 22 GMAC/s) */
    TT_Q = 3,        /* queries per transposed tile: 3 x 8 accumulators */
    AQ_MAX = 8,      /* accum, where 8 queries read the same rows: 8 queries x 2 blocks a tile */
    AQ_C = 2,
};

/* ---------------------------------------------------------------- scores */

/* Elements [8b, 8b+8) of rows r0 and r1 (f16) as one zmm: r0 low, r1 high. */
AI __m512 pair8(const uint16_t *r0, const uint16_t *r1, int b) {
    __m256i h = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(r0 + 8 * b))),
                                        _mm_loadu_si128((const __m128i *)(r1 + 8 * b)), 1);
    return _mm512_cvtph_ps(h);
}

/* q's elements [8b, 8b+8) in both halves (a 256-bit broadcast load) */
AI __m512 qdup8(const float *q, int b) {
    return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(q + 8 * b))));
}

/* hsum8x8f's tree over 4 row pairs: lane r of the result is row r's sum. */
AI __m256 tree8(const __m512 P[4]) {
    __m512 h01 = _mm512_add_ps(_mm512_shuffle_ps(P[0], P[1], 0x88), _mm512_shuffle_ps(P[0], P[1], 0xdd));
    __m512 h23 = _mm512_add_ps(_mm512_shuffle_ps(P[2], P[3], 0x88), _mm512_shuffle_ps(P[2], P[3], 0xdd));
    /* 128-bit block k: [x(P0) x(P1) x(P2) x(P3)] with x = (l0+l1)+(l2+l3) of
     * lanes 4k..4k+3: block 0 is the even rows' low halves, 1 their high
     * halves, 2 and 3 the odd rows' */
    __m512 h = _mm512_add_ps(_mm512_shuffle_ps(h01, h23, 0x88), _mm512_shuffle_ps(h01, h23, 0xdd));
    __m512 lo = _mm512_shuffle_f32x4(h, h, _MM_SHUFFLE(2, 0, 2, 0)), hi = _mm512_shuffle_f32x4(h, h, _MM_SHUFFLE(3, 1, 3, 1));
    __m256 s = _mm512_castps512_ps256(_mm512_add_ps(lo, hi)); /* rows 0,2,4,6,1,3,5,7 */
    return _mm256_permutevar8x32_ps(s, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* QT queries x rows [p, p + 2NP) (R of them present; the rest repeat the
 * last row and are not stored), hd = 8 * nb. QT * NP accumulators: at least
 * 8 keep both FMA pipes busy through their latency. */
AI void stile(const int QT, const int NP, int R, int nb, const uint16_t *k, size_t stride, const float *const *q,
              float scale, float *const *out, int p) {
    const uint16_t *row[16];
    UNROLL
    for (int r = 0; r < 2 * NP; r++) row[r] = k + (size_t)(p + (r < R ? r : R - 1)) * stride;
    __m512 acc[QT_MAX][8];
    UNROLL
    for (int j = 0; j < QT; j++)
        UNROLL
        for (int i = 0; i < NP; i++) acc[j][i] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m512 kv[8];
        UNROLL
        for (int i = 0; i < NP; i++) kv[i] = pair8(row[2 * i], row[2 * i + 1], b);
        UNROLL
        for (int j = 0; j < QT; j++) {
            const __m512 qd = qdup8(q[j], b);
            UNROLL
            for (int i = 0; i < NP; i++) acc[j][i] = _mm512_fmadd_ps(kv[i], qd, acc[j][i]);
        }
    }
    UNROLL
    for (int j = 0; j < QT; j++)
        UNROLL
        for (int e = 0; e < NP / 4; e++) { /* 8 rows per tree */
            const int Re = R - 8 * e;
            if (Re <= 0) break;
            const __mmask8 keep = (__mmask8)(Re >= 8 ? 0xff : (1u << Re) - 1);
            _mm256_mask_storeu_ps(out[j] + p + 8 * e, keep,
                                  _mm256_mul_ps(_mm256_set1_ps(scale), tree8(&acc[j][4 * e])));
        }
}

/* Rows in lanes: 16 rows of the page transposed once, so that kT[d] holds
 * element d of the 16 rows (f32; the conversion is exact). Then per query
 * the 8 chains of AVX2's lanes (element d goes to chain d % 8, in order of
 * d) are 8 accumulators with one row per lane, and AVX2's sum tree over
 * lanes becomes the same adds between accumulators: no shuffles per query,
 * and the transpose is paid once for all the queries that read the page. */

/* r[0..15] (row i: 16 elements) -> r[i] = element i of the 16 rows */
AI void transpose16(__m512 r[16]) {
    __m512 t[16];
    UNROLL
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    UNROLL
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    UNROLL
    for (int h = 0; h < 2; h++)
        UNROLL
        for (int i = 0; i < 4; i++) {
            t[8 * h + i] = _mm512_shuffle_f32x4(r[8 * h + i], r[8 * h + 4 + i], 0x88);
            t[8 * h + 4 + i] = _mm512_shuffle_f32x4(r[8 * h + i], r[8 * h + 4 + i], 0xdd);
        }
    UNROLL
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0x88);
        r[8 + i] = _mm512_shuffle_f32x4(t[i], t[8 + i], 0xdd);
    }
}

/* a + k * (the float at m, broadcast), with the broadcast embedded in the
 * FMA's memory operand: compilers load the broadcast into a register and
 * take the kT vector from memory instead, two loads per FMA. */
AI __m512 fma_b(__m512 a, __m512 k, const float *m) {
    __asm__("vfmadd231ps %[m]%{1to16%}, %[k], %[a]" : [a] "+v"(a) : [k] "v"(k), [m] "m"(*m));
    return a;
}

/* QT <= TT_Q queries x the 16 rows of kT (R present), hd = 8 * nb */
AI void ttile(const int QT, int nb, const __m512 *kT, const float *const *q, float scale, float *const *out, int p,
              int R) {
    __m512 a[TT_Q][8];
    UNROLL
    for (int j = 0; j < QT; j++)
        UNROLL
        for (int i = 0; i < 8; i++) a[j][i] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        UNROLL
        for (int i = 0; i < 8; i++) {
            const __m512 kv = kT[8 * b + i];
            UNROLL
            for (int j = 0; j < QT; j++) a[j][i] = fma_b(a[j][i], kv, q[j] + 8 * b + i);
        }
    }
    const __mmask16 keep = (__mmask16)(R >= 16 ? 0xffff : (1u << R) - 1);
    UNROLL
    for (int j = 0; j < QT; j++) {
        __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a[j][0], a[j][1]), _mm512_add_ps(a[j][2], a[j][3])),
                                 _mm512_add_ps(_mm512_add_ps(a[j][4], a[j][5]), _mm512_add_ps(a[j][6], a[j][7])));
        _mm512_mask_storeu_ps(out[j] + p, keep, _mm512_mul_ps(_mm512_set1_ps(scale), s));
    }
}

/* hd % 8 == 0: a head of 16c + 8 elements reads its last 8 by a masked
 * load (no access past the row), and the zeros above them are never used */
static void scores_t(int npos, int hd, const uint16_t *k, size_t stride, int nq, const float *const *q, float scale,
                     float *const *out) {
    _Alignas(64) __m512 kT[S_HD_MAX];
    for (int p = 0; p < npos; p += 16) {
        const int R = npos - p < 16 ? npos - p : 16;
        const uint16_t *row[16];
        for (int r = 0; r < 16; r++) row[r] = k + (size_t)(p + (r < R ? r : R - 1)) * stride;
        for (int c = 0; 16 * c < hd; c++) {
            const __mmask16 m = (__mmask16)(hd - 16 * c >= 16 ? 0xffff : 0x00ff);
            __m512 r16[16];
            UNROLL
            for (int r = 0; r < 16; r++) r16[r] = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, row[r] + 16 * c));
            transpose16(r16);
            UNROLL
            for (int i = 0; i < 16; i++) kT[16 * c + i] = r16[i];
        }
        int j = 0;
        for (; j + TT_Q <= nq; j += TT_Q) ttile(TT_Q, hd / 8, kT, q + j, scale, out + j, p, R);
        if (nq - j == 2) ttile(2, hd / 8, kT, q + j, scale, out + j, p, R);
        if (nq - j == 1) ttile(1, hd / 8, kT, q + j, scale, out + j, p, R);
    }
}

void rs_avx512_attn_scores_f16_multi(int npos, int hd, const uint16_t *k, size_t stride, int nq,
                                     const float *const *q, float scale, float *const *out) {
    if (hd % 8 || hd > S_HD_MAX) {
        rs_avx2_attn_scores_f16_multi(npos, hd, k, stride, nq, q, scale, out);
        return;
    }
    if (nq >= SCORES_T_NQ) { /* the page's rows shared by many queries: transposed once */
        scores_t(npos, hd, k, stride, nq, q, scale, out);
        return;
    }
    const int nb = hd / 8;
    if (nq == 1) { /* one query: 16 rows a tile, for 8 accumulators */
        for (int p = 0; p < npos; p += 16) stile(1, 8, npos - p < 16 ? npos - p : 16, nb, k, stride, q, scale, out, p);
        return;
    }
    for (int p = 0; p < npos; p += 8) {
        const int R = npos - p < 8 ? npos - p : 8;
        int j = 0;
        for (; j + QT_MAX <= nq; j += QT_MAX) stile(QT_MAX, 4, R, nb, k, stride, q + j, scale, out + j, p);
        switch (nq - j) {
        case 1: stile(1, 4, R, nb, k, stride, q + j, scale, out + j, p); break;
        case 2: stile(2, 4, R, nb, k, stride, q + j, scale, out + j, p); break;
        case 3: stile(3, 4, R, nb, k, stride, q + j, scale, out + j, p); break;
        default: break;
        }
    }
}

void rs_avx512_attn_scores_f16(int npos, int hd, const uint16_t *k, size_t stride, const float *q, float scale,
                               float *out) {
    rs_avx512_attn_scores_f16_multi(npos, hd, k, stride, 1, &q, scale, &out);
}

/* ----------------------------------------------------------------- accum */

/* acc_j[i0 .. i0+16C) += w_j[p] * V row p, rows [p0, p1), for QT queries
 * (the chain of each element in row order, as AVX2's). */
AI void atile(const int QT, const int C, int p0, int p1, int i0, const uint16_t *v, size_t stride,
              const float *const *w, float *const *acc) {
    __m512 a[AQ_MAX][4];
    UNROLL
    for (int j = 0; j < QT; j++)
        UNROLL
        for (int c = 0; c < C; c++) a[j][c] = _mm512_loadu_ps(acc[j] + i0 + 16 * c);
    for (int p = p0; p < p1; p++) {
        const uint16_t *vr = v + (size_t)p * stride + i0;
        __m512 vv[4];
        UNROLL
        for (int c = 0; c < C; c++) vv[c] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(vr + 16 * c)));
        UNROLL
        for (int j = 0; j < QT; j++) {
            UNROLL
            for (int c = 0; c < C; c++) a[j][c] = fma_b(a[j][c], vv[c], w[j] + p);
        }
    }
    UNROLL
    for (int j = 0; j < QT; j++)
        UNROLL
        for (int c = 0; c < C; c++) _mm512_storeu_ps(acc[j] + i0 + 16 * c, a[j][c]);
}

/* every 16-element block of the head, 4 blocks per pass */
AI void atile_all(const int QT, int hd, int p0, int p1, const uint16_t *v, size_t stride, const float *const *w,
                  float *const *acc) {
    int i0 = 0;
    for (; i0 + 64 <= hd; i0 += 64) atile(QT, 4, p0, p1, i0, v, stride, w, acc);
    switch ((hd - i0) / 16) {
    case 1: atile(QT, 1, p0, p1, i0, v, stride, w, acc); break;
    case 2: atile(QT, 2, p0, p1, i0, v, stride, w, acc); break;
    case 3: atile(QT, 3, p0, p1, i0, v, stride, w, acc); break;
    default: break;
    }
}

/* Eight queries: 8 x 2 blocks a tile, each V row converted once per 8
 * queries (against once per 4 with 4 x 4): 24 queries over a shared page,
 * 44 -> 51 GMAC/s per thread on Zen 4. */
AI void atile8_all(int hd, int p0, int p1, const uint16_t *v, size_t stride, const float *const *w,
                   float *const *acc) {
    for (int i0 = 0; i0 < hd; i0 += 16 * AQ_C) atile(AQ_MAX, AQ_C, p0, p1, i0, v, stride, w, acc);
}

/* Up to AQ_MAX queries: the rows all of them read together, then each
 * query's own further rows alone, so every chain stays in row order. */
static void accum_group(int qt, int hd, const uint16_t *v, size_t stride, const int *npos, const float *const *w,
                        float *const *acc) {
    int common = npos[0];
    for (int j = 1; j < qt; j++) common = npos[j] < common ? npos[j] : common;
    switch (qt) {
    case AQ_MAX: atile8_all(hd, 0, common, v, stride, w, acc); break; /* hd % (16 * AQ_C) == 0 */
    case 4: atile_all(4, hd, 0, common, v, stride, w, acc); break;
    case 3: atile_all(3, hd, 0, common, v, stride, w, acc); break;
    case 2: atile_all(2, hd, 0, common, v, stride, w, acc); break;
    default: atile_all(1, hd, 0, common, v, stride, w, acc); break;
    }
    for (int j = 0; j < qt; j++)
        if (npos[j] > common) atile_all(1, hd, common, npos[j], v, stride, w + j, acc + j);
}

void rs_avx512_attn_accum_f16_multi(int hd, const uint16_t *v, size_t stride, int nq, const int *npos,
                                    const float *const *w, float *const *acc) {
    if (hd % 16) {
        rs_avx2_attn_accum_f16_multi(hd, v, stride, nq, npos, w, acc);
        return;
    }
    int j = 0;
    if (hd % (16 * AQ_C) == 0)
        for (; j + AQ_MAX <= nq; j += AQ_MAX) accum_group(AQ_MAX, hd, v, stride, npos + j, w + j, acc + j);
    for (; j < nq; j += QT_MAX)
        accum_group(nq - j < QT_MAX ? nq - j : QT_MAX, hd, v, stride, npos + j, w + j, acc + j);
}

void rs_avx512_attn_accum_f16(int npos, int hd, const uint16_t *v, size_t stride, const float *w, float *acc) {
    rs_avx512_attn_accum_f16_multi(hd, v, stride, 1, &npos, &w, &acc);
}

#if defined(__clang__)
#pragma clang attribute pop
#endif

#else
typedef int rs_kernels_avx512_attn_unused; /* an ISO C translation unit must not be empty */
#endif
