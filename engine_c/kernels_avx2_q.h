/* Quantized-block helpers shared by the AVX2 GEMMs (kernels_avx2.c) and the
 * AVX-512 ones (kernels_avx512.c): unpacking a block's weights to int16, the
 * scales of 8 rows, the scalar reference's float step, and the pack that puts
 * 8 rows' weights in vector lanes. Include after a `#pragma GCC target` that
 * enables at least AVX2, FMA and F16C. */
#ifndef RS_KERNELS_AVX2_Q_H
#define RS_KERNELS_AVX2_Q_H

#include "kernels_avx2.h"
#include "scratch.h"

/* Bytes ahead of its position that decode (qdec8), streaming its weights
 * from DRAM, prefetches along the rows' span:
 * far enough to cover DRAM latency at its pace, near enough to stay in
 * L1/L2 (best of 4-16 KB measured on the dev VM). The hardware prefetcher
 * does not follow 8 interleaved row streams; prefetching each row's next
 * group instead measured ~1.7x slower. */
#ifndef PF_AHEAD
#define PF_AHEAD 8192
#endif
/* Non-temporal: weights are read once per step, and keeping them out of the
 * cache's recently-used places leaves L3 to the K/V pages that every
 * sequence of a batch re-reads (A/B, 4 alternations: decode 2 threads +3-7 %,
 * 8 streams over a shared 1,024 prompt up to +20 %, 1 thread unchanged). */
#ifndef PF_HINT
#define PF_HINT _MM_HINT_NTA
#endif

/* Prefetch, for step b of a walk that eats 8 blocks of bs bytes per step
 * from the 8 consecutive rows at w (one contiguous span: GGUF rows are
 * packed), the lines PF_AHEAD bytes ahead of the walk's pace. Integer
 * arithmetic: past the end of the mapping it is only a hint. */
AI void prefetch_span(const char *w, int b, size_t bs) {
    for (size_t l = 0; l < 8 * bs + 64; l += 64)
        _mm_prefetch((const char *)((uintptr_t)w + PF_AHEAD + (size_t)b * 8 * bs + l), PF_HINT);
}

/* Several tokens: the multiply of a group of packed rows fetches the next
 * group's rows (`ahead` bytes past w, the group's weights) in step with
 * itself: at block b, share b of that group's span, so the next pack finds
 * them in L2. A whole group ahead covers DRAM latency whatever the row
 * length (PF_AHEAD's fixed 8 KB left half of a 1,536-wide group unfetched),
 * and the multiply is the long phase: issued from the pack, the requests
 * crowded a short window. Into L2 (T1): the next pack reads every line
 * soon. Single-thread microbenchmark, 8 tokens, weights from DRAM, Zen 4,
 * per 1,536 rows: Q4_1 x 576 119 -> 96 us from the pack, -> 91 from the
 * multiply (in L2 throughout: 87); x 1,536 140 -> 97 -> 91; the Q8_0
 * output matrix 4.9 -> 3.6 ms; AVX2's Q8_0 5.5 -> 4.3 ms (NTA at this
 * distance: no gain). */
#ifndef PF_GROUP_HINT
#define PF_GROUP_HINT _MM_HINT_T1
#endif
AI void prefetch_group(const char *w, size_t ahead, int b, size_t per_block) {
    /* integer arithmetic: past the last group, only a hint past the mapping */
    const uintptr_t next = (uintptr_t)w + ahead;
    for (size_t o = (size_t)b * per_block; o < (size_t)(b + 1) * per_block; o += 64)
        _mm_prefetch((const char *)(next + o), PF_GROUP_HINT);
}

enum { K_Q4_0, K_Q4_1, K_Q8_0 };

AI size_t qbs(const int kind) {
    return kind == K_Q4_0 ? sizeof(rs_block_q4_0) : kind == K_Q4_1 ? sizeof(rs_block_q4_1) : sizeof(rs_block_q8_0);
}

/* The block's 32 weights as int16: elements 0..15 in *lo, 16..31 in *hi
 * (Q4_1: nibbles 0..15, Q4_0: nibble - 8, Q8_0: sign-extended). */
AI void unpack(const int kind, const char *blk, __m256i *lo, __m256i *hi) {
    if (kind == K_Q8_0) {
        *lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 2)));
        *hi = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(blk + 18)));
        return;
    }
    /* byte j holds element j (low nibble) and j + 16 (high nibble) */
    __m256i w16 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(blk + (kind == K_Q4_1 ? 4 : 2))));
    *lo = _mm256_and_si256(w16, _mm256_set1_epi16(0x0f));
    *hi = _mm256_srli_epi16(w16, 4);
    if (kind == K_Q4_0) {
        *lo = _mm256_sub_epi16(*lo, _mm256_set1_epi16(8));
        *hi = _mm256_sub_epi16(*hi, _mm256_set1_epi16(8));
    }
}

/* The f16 scales of 8 rows' blocks, r[i] the block of row i: Q4_1 reads
 * [d, m] pairs, the others d plus two bytes of qs they ignore. Returns d in
 * *d and (Q4_1) m in *m, lane i holding row SIGMA(i): shuffle_ps splitting
 * the two converted 4-row halves interleaves them as (0,1,4,5, 2,3,6,7). One 32-bit load per
 * row and two conversions, not eight 16-bit inserts. */
#define SIGMA(i) ((int[]){0, 1, 4, 5, 2, 3, 6, 7}[i])
AI void scales8(const char *const r[8], __m256 *d, __m256 *m) {
    __m256 a = _mm256_cvtph_ps(_mm_setr_epi32((int)ld32(r[0]), (int)ld32(r[1]), (int)ld32(r[2]), (int)ld32(r[3])));
    __m256 c = _mm256_cvtph_ps(_mm_setr_epi32((int)ld32(r[4]), (int)ld32(r[5]), (int)ld32(r[6]), (int)ld32(r[7])));
    *d = _mm256_shuffle_ps(a, c, 0x88);
    *m = _mm256_shuffle_ps(a, c, 0xdd);
}

/* The scalar reference's float step for one block, lane by lane:
 *   q4_0, q8_0: acc = acc + (d_w * x.d) * float(isum)
 *   q4_1:       acc = acc + ((d_w * x.d) * float(isum) + m_w * x.s)
 * separate multiplies and adds, in the scalar's order (this file is built
 * with -std=c11, so nothing is contracted into an FMA): every path below
 * ends in this function, so results equal the scalar's bit for bit. */
AI __m256 qstep(const int kind, __m256 acc, __m256i isum, __m256 d, __m256 xd, __m256 m, __m256 xs) {
    __m256 v = _mm256_mul_ps(_mm256_mul_ps(d, xd), _mm256_cvtepi32_ps(isum));
    if (kind == K_Q4_1) v = _mm256_add_ps(v, _mm256_mul_ps(m, xs));
    return _mm256_add_ps(acc, v);
}

/* Several tokens: rows in lanes. A group of 8 rows is packed once per token
 * chunk: per block, 16 vectors P[j] = (pair j of rows 0..7), pair j being
 * int16 elements 2j, 2j+1 (an 8x8 transpose of 32-bit pairs of the unpacked
 * weights), plus d and m of the 8 rows as floats. Then for every token,
 * per block: broadcast the token's pair j, multiply-add it with P[j]
 * (vpmaddwd, or vpdpwssd over two packs side by side): after 16 pairs the
 * lanes hold the rows' exact block sums, with no horizontal sum, and d, m,
 * x.d, x.s are already in lane order. */

AI void transpose8(__m256i a[8]) {
    __m256i t[8], u[8];
    UNROLL
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_epi32(a[2 * i], a[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_epi32(a[2 * i], a[2 * i + 1]);
    }
    UNROLL
    for (int i = 0; i < 2; i++) {
        u[4 * i + 0] = _mm256_unpacklo_epi64(t[4 * i + 0], t[4 * i + 2]);
        u[4 * i + 1] = _mm256_unpackhi_epi64(t[4 * i + 0], t[4 * i + 2]);
        u[4 * i + 2] = _mm256_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm256_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    UNROLL
    for (int i = 0; i < 4; i++) {
        a[i] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x20);
        a[i + 4] = _mm256_permute2x128_si256(u[i], u[i + 4], 0x31);
    }
}

/* Q4_0 / Q4_1, block b of 8 rows into pairs 0..15 at P + j * pair: the
 * rows' 16 qs bytes (byte j holds elements j and j + 16) transposed as 8
 * words (bytes 2j', 2j'+1) by in-lane unpacks on 128 bits, then each word
 * vector widened once: its low nibbles are pair j', its high ones pair
 * j' + 8. Each row is read and widened once, where unpacking rows and
 * transposing dwords read and widened it per half (AVX2's pack was a fifth
 * of 8 streams' decode step). */
AI void qpack8_nib_block(const int kind, const char *const row[8], int b, char *P, size_t pair) {
    const size_t bs = qbs(kind), qo = kind == K_Q4_1 ? 4 : 2;
    __m128i r[8], s1[8], s2[8];
    UNROLL
    for (int i = 0; i < 8; i++) r[i] = _mm_loadu_si128((const __m128i *)(row[i] + (size_t)b * bs + qo));
    UNROLL
    for (int i = 0; i < 4; i++) { /* words 0-3 (then 4-7) of rows 2i, 2i + 1, interleaved */
        s1[2 * i] = _mm_unpacklo_epi16(r[2 * i], r[2 * i + 1]);
        s1[2 * i + 1] = _mm_unpackhi_epi16(r[2 * i], r[2 * i + 1]);
    }
    UNROLL
    for (int i = 0; i < 2; i++)
        UNROLL
        for (int h = 0; h < 2; h++) { /* words 4h + 0, 1 (lo) and 4h + 2, 3 (hi) of rows 4i..4i+3 */
            s2[4 * i + 2 * h] = _mm_unpacklo_epi32(s1[4 * i + h], s1[4 * i + 2 + h]);
            s2[4 * i + 2 * h + 1] = _mm_unpackhi_epi32(s1[4 * i + h], s1[4 * i + 2 + h]);
        }
    const __m256i low4 = _mm256_set1_epi16(0x0f), eight = _mm256_set1_epi16(8);
    UNROLL
    for (int j = 0; j < 8; j++) { /* word j of rows 0..7 */
        const __m128i a = s2[(j / 4) * 2 + (j / 2) % 2], c = s2[4 + (j / 4) * 2 + (j / 2) % 2];
        const __m128i wj = j % 2 ? _mm_unpackhi_epi64(a, c) : _mm_unpacklo_epi64(a, c);
        const __m256i v = _mm256_cvtepu8_epi16(wj);
        __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_srli_epi16(v, 4);
        if (kind == K_Q4_0) lo = _mm256_sub_epi16(lo, eight), hi = _mm256_sub_epi16(hi, eight);
        _mm256_store_si256((__m256i *)(P + (size_t)j * pair), lo);
        _mm256_store_si256((__m256i *)(P + (size_t)(j + 8) * pair), hi);
    }
}

/* The pack of 8 rows into any layout: block b's pair j at
 * dst + b*blk + j*pair, its d and m (8 floats each) at + d_off and + m_off;
 * pf_ahead > 0: fetching the next group's rows (prefetch_group), for a
 * multiply that does not (AVX2's: prefetching from its passes of 4 tokens
 * measured 3-5 % slower).
 * nv < 8 rows: the missing lanes repeat the last row (never stored). */
AI void qpack8_into(const int kind, int nv, int nb, const char *w, size_t ws, char *dst, size_t blk, size_t pair,
                    size_t d_off, size_t m_off, size_t pf_ahead) {
    const size_t bs = qbs(kind);
    const char *row[8];
    UNROLL
    for (int r = 0; r < 8; r++) row[r] = w + (size_t)(r < nv ? r : nv - 1) * ws;
    for (int b = 0; b < nb; b++) {
        char *P = dst + (size_t)b * blk;
        if (pf_ahead) prefetch_group(w, pf_ahead, b, pf_ahead / (size_t)nb); /* the weights stream from DRAM once */
        if (kind != K_Q8_0) {
            qpack8_nib_block(kind, row, b, P, pair);
        } else {
            UNROLL
            for (int half = 0; half < 2; half++) { /* Q8_0: elements 0..15, then 16..31 */
                __m256i a[8];
                UNROLL
                for (int r = 0; r < 8; r++) {
                    __m256i lo, hi;
                    unpack(kind, row[r] + b * bs, &lo, &hi);
                    a[r] = half ? hi : lo;
                }
                transpose8(a);
                UNROLL
                for (int j = 0; j < 8; j++) _mm256_store_si256((__m256i *)(P + (8 * (size_t)half + j) * pair), a[j]);
            }
        }
        const char *blk[8];
        UNROLL
        for (int i = 0; i < 8; i++) blk[i] = row[i] + b * bs;
        __m256 d, m; /* lane i is row SIGMA(i): put lane r back to row r */
        scales8(blk, &d, &m);
        const __m256i unsigma = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7); /* SIGMA is its own inverse */
        _mm256_store_ps((float *)(P + d_off), _mm256_permutevar8x32_ps(d, unsigma));
        _mm256_store_ps((float *)(P + m_off), _mm256_permutevar8x32_ps(m, unsigma));
    }
}

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


/* a . b + c . d in 8 int32 lanes (pairs of int16 products): one VNNI
 * instruction per product in the AVX-512 table's file (which defines
 * RS_TU_AVX512VNNI: clang's target attribute defines no feature macros),
 * else vpmaddwd twice and an add. Exact either way. */
AI __m256i madd2(__m256i a, __m256i b, __m256i c, __m256i d) {
#if defined(RS_TU_AVX512VNNI)
    return _mm256_dpwssd_epi32(_mm256_madd_epi16(a, b), c, d);
#else
    return _mm256_add_epi32(_mm256_madd_epi16(a, b), _mm256_madd_epi16(c, d));
#endif
}

/* Decode (one or two tokens): 8 rows x TT tokens, weights used once. Per
 * block each row's weights are unpacked once for the TT tokens, each
 * (row, token)'s 32 products land in 8 int32 lanes (2 vpmaddwd + add), one
 * hsum8x8 per token gives the 8 block sums, and 8 scale pairs come from
 * scales8. Token t reads x + t*nb and writes y + t*ldy; each token's
 * operations are those of TT == 1 (the same bits). Two tokens need 16
 * accumulators: they stay in registers where AVX-512VL gives 32 (the
 * AVX-512 table compiles this too). nv < 8 rows: the missing rows repeat
 * the last one and are not stored. */
AI void qdec8(const int kind, const int TT, int nv, int nb, const char *w, size_t ws, const rs_block_q16 *x,
              float *y, size_t ldy) {
    const size_t bs = qbs(kind);
    const char *row[8];
    UNROLL
    for (int i = 0; i < 8; i++) row[i] = w + (size_t)(i < nv ? i : nv - 1) * ws;
    __m256 acc[2];
    UNROLL
    for (int t = 0; t < TT; t++) acc[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; b++) {
        __m256i xlo[2], xhi[2];
        UNROLL
        for (int t = 0; t < TT; t++) {
            xlo[t] = _mm256_loadu_si256((const __m256i *)x[(size_t)t * nb + b].qs);
            xhi[t] = _mm256_loadu_si256((const __m256i *)(x[(size_t)t * nb + b].qs + 16));
        }
        const char *blk[8]; /* by row; p[t][i] is row SIGMA(i), as scales8's lanes */
        __m256i p[2][8];
        UNROLL
        for (int i = 0; i < 8; i++) blk[i] = row[i] + b * bs;
        /* the weights stream from DRAM once: prefetch along the group's
         * span, on past the task's rows into the next ones, which this
         * thread usually takes next (threadpool.c) */
        prefetch_span(w, b, bs);
        UNROLL
        for (int i = 0; i < 8; i++) {
            __m256i lo, hi;
            unpack(kind, blk[SIGMA(i)], &lo, &hi);
            UNROLL
            for (int t = 0; t < TT; t++)
                p[t][i] = madd2(lo, xlo[t], hi, xhi[t]);
        }
        __m256 d, m;
        scales8(blk, &d, &m);
        UNROLL
        for (int t = 0; t < TT; t++) {
            const rs_block_q16 *xb = x + (size_t)t * nb + b;
            acc[t] = qstep(kind, acc[t], hsum8x8(p[t]), d, _mm256_set1_ps(xb->d), m, _mm256_set1_ps(xb->s));
        }
    }
    UNROLL
    for (int t = 0; t < TT; t++) {
        float out[8];
        _mm256_storeu_ps(out, acc[t]);
        UNROLL
        for (int i = 0; i < 8; i++)
            if (SIGMA(i) < nv) y[(size_t)t * ldy + SIGMA(i)] = out[i];
    }
}

/* Few tokens: pairs through qdec8 (TT = 2), a last odd one alone. The
 * task's first PF_AHEAD bytes are asked for at once: qdec8 prefetches that
 * far ahead of itself, and a thread's next task is usually the rows right
 * after these (threadpool.c). */
AI void gemm_few(const int kind, int nr, int nt, int k, const void *w, size_t ws, const rs_block_q16 *x, float *y,
                 size_t ldy) {
    const int nb = k / RS_QK;
    const size_t head = (size_t)nr * ws < PF_AHEAD ? (size_t)nr * ws : PF_AHEAD;
    for (size_t l = 0; l < head; l += 64) _mm_prefetch((const char *)w + l, _MM_HINT_T0);
    for (int r = 0; r < nr; r += 8) {
        const int nv = nr - r < 8 ? nr - r : 8;
        const char *wr = (const char *)w + (size_t)r * ws;
        int t = 0;
        for (; t + 2 <= nt; t += 2) qdec8(kind, 2, nv, nb, wr, ws, x + (size_t)t * nb, y + (size_t)t * ldy + r, ldy);
        if (t < nt) qdec8(kind, 1, nv, nb, wr, ws, x + (size_t)t * nb, y + (size_t)t * ldy + r, ldy);
    }
}

typedef void (*qpack_fn)(int nv, int nb, const char *w, size_t ws, char *pk);
/* pf: the group's weights, whose next group's rows (`ahead` bytes on) the
 * multiply fetches (prefetch_group; AVX-512's does, AVX2's pack instead);
 * NULL: none (a later pass). */
typedef void (*qrows_fn)(int T, int nv, int nb, const char *pk, const rs_block_q16 *x, float *y, size_t ldy,
                         const char *pf, size_t ahead);

/* Several tokens through a pack (AVX2: 8 rows, AVX-512: 16): per chunk of
 * TOK_CHUNK tokens, each group of `group` rows is packed once (pk_bytes per
 * block) and multiplied with up to tmax tokens per pass. Returns 0, having
 * done nothing, when the pack buffer cannot be had: the caller then runs the
 * tokens one by one. */
static inline int gemm_packed(qpack_fn pack, qrows_fn rows, int group, int tmax, size_t pk_bytes, int nr, int nt,
                              int k, const void *w, size_t ws, const rs_block_q16 *x, float *y, size_t ldy) {
    const int nb = k / RS_QK;
    char *pk = rs_scratch((size_t)nb * pk_bytes);
    if (!pk) return 0;
    for (int t0 = 0; t0 < nt; t0 += TOK_CHUNK) {
        const int t1 = nt - t0 < TOK_CHUNK ? nt : t0 + TOK_CHUNK;
        for (int r = 0; r < nr; r += group) {
            const int nv = nr - r < group ? nr - r : group;
            const char *wr = (const char *)w + (size_t)r * ws;
            pack(nv, nb, wr, ws, pk);
            for (int t = t0; t < t1; t += tmax)
                rows(t1 - t < tmax ? t1 - t : tmax, nv, nb, pk, x + (size_t)t * nb, y + (size_t)t * ldy + r, ldy,
                     t == t0 ? wr : NULL, (size_t)group * ws);
        }
    }
    return 1;
}

#endif
