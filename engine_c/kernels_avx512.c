/* AVX-512 kernels (F, BW, VL and VNNI: Zen 4, Ice Lake and later) for the
 * quantized GEMMs of several tokens: prefill chunks and batched decode.
 *
 * One vpdpwssd multiplies 16 rows x 2 int16 pairs and adds them into the
 * int32 block sums: a quarter of the AVX2 path's vector instructions per
 * product (vpmaddwd + vpaddd over 8 rows), the part that bounds a GEMM whose
 * weights sit in cache. Lane i is row i: Q4_0/Q4_1 are packed by a word
 * transpose that keeps their nibbles (qrows16 widens them), Q8_0 by AVX2's
 * 8-row pack for two halves side by side (kernels_avx2_q.h).
 *
 * Every output equals the scalar reference bit for bit, as AVX2's do: exact
 * int32 block sums (vpdpwssd wraps, never saturates; |sum| < 2^31 as in
 * kernels_avx2.c), then the scalar's float step per block in its order. So
 * this table, AVX2's and the scalar one are interchangeable mid-run, and one
 * or two tokens (decode, weights streamed once: memory-bound) go through
 * AVX2's qdec8 unchanged. The f16 attention and the softmax are AVX-512
 * too, with AVX2's bits (kernels_avx512_attn.c, softmax_avx512.c); the rest
 * of the table (quantize, float GEMMs, f32 attention) is AVX2's. */
#if defined(__x86_64__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))), \
                             apply_to = function)
#else
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")
#endif

#define RS_TU_AVX512VNNI 1 /* for kernels_avx2_q.h's madd2 */
#include "kernels_avx2_q.h"
#include "kernels_avx512.h"

/* Per 16-row group and block: 16 pairs x 16 int32 (rows 0..7 in the low
 * 32 bytes of each 64, rows 8..15 in the high), then d[16] and m[16]. */
enum { PK16_PAIR = 64, PK16_D = 16 * 64, PK16_M = 16 * 64 + 64, PK16_BYTES = 16 * 64 + 2 * 64 };
/* Q4_0 / Q4_1 keep their nibbles in the pack: per block, 8 vectors of
 * 32 bytes, byte vector j holding elements (2j, 2j+1) of the 16 rows in its
 * low nibbles (pair j) and (2j+16, 2j+17) in its high ones (pair j+8), then
 * d[16] and m[16]. qrows16 widens each once for all its tokens. A quarter
 * of the bytes that int16 pairs take, stored once and read once per pass:
 * 8 tokens x 16 rows of Q4_1 in L1, 75 against 68 GMAC/s per thread. */
enum { PKN_VEC = 32, PKN_D = 8 * 32, PKN_M = 8 * 32 + 64, PKN_BYTES = 8 * 32 + 2 * 64 };

/* Word-transpose indices (vpermt2w): the 16 rows' qs bytes sit as 4
 * vectors of 4 rows x 8 words (word j' = bytes 2j', 2j'+1); stage 1 makes,
 * from two of them, [word j' of rows 0..7] for 4 words, stage 2 from two of
 * those [word j' of rows 0..15] for 2 words. */
static const int16_t TW1[2][32] = { /* [h][j * 8 + r] = (r < 4 ? 0 : 32) + 8 * (r % 4) + 4 * h + j */
    {0, 8, 16, 24, 32, 40, 48, 56, 1, 9, 17, 25, 33, 41, 49, 57, 2, 10, 18, 26, 34, 42, 50, 58, 3, 11, 19, 27, 35, 43, 51, 59},
    {4, 12, 20, 28, 36, 44, 52, 60, 5, 13, 21, 29, 37, 45, 53, 61, 6, 14, 22, 30, 38, 46, 54, 62, 7, 15, 23, 31, 39, 47, 55, 63}};
static const int16_t TW2[2][32] = { /* [k][jj * 16 + r] = (r < 8 ? 0 : 32) + (2 * k + jj) * 8 + r % 8 */
    {0, 1, 2, 3, 4, 5, 6, 7, 32, 33, 34, 35, 36, 37, 38, 39, 8, 9, 10, 11, 12, 13, 14, 15, 40, 41, 42, 43, 44, 45, 46, 47},
    {16, 17, 18, 19, 20, 21, 22, 23, 48, 49, 50, 51, 52, 53, 54, 55, 24, 25, 26, 27, 28, 29, 30, 31, 56, 57, 58, 59, 60, 61, 62, 63}};

/* Q4_0 / Q4_1, 16 rows: a word transpose (two vpermt2w stages), whose
 * word vectors are the byte vectors above (byte j of a row holds elements
 * j and j + 16), stored as they are. */
AI void qpack16_nib(const int kind, int nv, int nb, const char *w, size_t ws, char *pk) {
    const size_t bs = qbs(kind), qo = kind == K_Q4_1 ? 4 : 2;
    const char *row[16];
    UNROLL
    for (int r = 0; r < 16; r++) row[r] = w + (size_t)(r < nv ? r : nv - 1) * ws;
    const __m512i i1a = _mm512_loadu_si512(TW1[0]), i1b = _mm512_loadu_si512(TW1[1]);
    const __m512i i2a = _mm512_loadu_si512(TW2[0]), i2b = _mm512_loadu_si512(TW2[1]);
    const __m256i unsigma = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    for (int b = 0; b < nb; b++) {
        char *P = pk + (size_t)b * PKN_BYTES;
        __m512i q[4];
        UNROLL
        for (int g = 0; g < 4; g++) {
            const char *r0 = row[4 * g] + b * bs + qo;
            __m512i v = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)r0));
            v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(row[4 * g + 1] + b * bs + qo)), 1);
            v = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(row[4 * g + 2] + b * bs + qo)), 2);
            q[g] = _mm512_inserti32x4(v, _mm_loadu_si128((const __m128i *)(row[4 * g + 3] + b * bs + qo)), 3);
        }
        const __m512i s1[4] = {_mm512_permutex2var_epi16(q[0], i1a, q[1]), _mm512_permutex2var_epi16(q[0], i1b, q[1]),
                               _mm512_permutex2var_epi16(q[2], i1a, q[3]), _mm512_permutex2var_epi16(q[2], i1b, q[3])};
        UNROLL
        for (int k = 0; k < 4; k++) { /* words 2k, 2k+1 of all 16 rows */
            /* byte vectors 2k (low 32 bytes) and 2k + 1 */
            _mm512_store_si512((void *)(P + 2 * k * PKN_VEC), _mm512_permutex2var_epi16(s1[k / 2], k % 2 ? i2b : i2a, s1[2 + k / 2]));
        }
        UNROLL
        for (int h = 0; h < 2; h++) { /* d and m of rows 8h..8h+7: lane i is row SIGMA(i), put back */
            const char *blk[8];
            UNROLL
            for (int i = 0; i < 8; i++) blk[i] = row[8 * h + i] + b * bs;
            __m256 d, m;
            scales8(blk, &d, &m);
            _mm256_store_ps((float *)(P + PKN_D) + 8 * h, _mm256_permutevar8x32_ps(d, unsigma));
            _mm256_store_ps((float *)(P + PKN_M) + 8 * h, _mm256_permutevar8x32_ps(m, unsigma));
        }
    }
}

/* nv < 16 rows: the missing lanes repeat the last row (never stored). */
AI void qpack16(const int kind, int nv, int nb, const char *w, size_t ws, char *pk) {
    if (kind != K_Q8_0) {
        qpack16_nib(kind, nv, nb, w, ws, pk);
        return;
    }
    /* no prefetch here: qrows16 fetches the next group */
    qpack8_into(kind, nv < 8 ? nv : 8, nb, w, ws, pk, PK16_BYTES, PK16_PAIR, PK16_D, PK16_M, 0);
    if (nv > 8)
        qpack8_into(kind, nv - 8, nb, w + 8 * ws, ws, pk + 32, PK16_BYTES, PK16_PAIR, PK16_D, PK16_M, 0);
    else
        qpack8_into(kind, 1, nb, w + (size_t)(nv - 1) * ws, ws, pk + 32, PK16_BYTES, PK16_PAIR, PK16_D, PK16_M, 0);
}

/* qstep (kernels_avx2_q.h) over 16 lanes: the same operations per lane. */
AI __m512 qstep16(const int kind, __m512 acc, __m512i isum, __m512 d, __m512 xd, __m512 m, __m512 xs) {
    __m512 v = _mm512_mul_ps(_mm512_mul_ps(d, xd), _mm512_cvtepi32_ps(isum));
    if (kind == K_Q4_1) v = _mm512_add_ps(v, _mm512_mul_ps(m, xs));
    return _mm512_add_ps(acc, v);
}

/* s + pj . (the int16 pair at m, broadcast): vpdpwssd with its broadcast
 * embedded in the memory operand. Compilers emit a separate vpbroadcastd
 * for _mm512_set1_epi32 of a load, which measured 20 % slower in qrows16 on
 * Zen 5 (150 -> 183 GMAC/s per thread at 8 tokens, in L1). */
AI __m512i dpwssd_b(__m512i s, __m512i pj, const void *m) {
    __asm__("vpdpwssd %[m]%{1to16%}, %[p], %[s]" : [s] "+v"(s) : [p] "v"(pj), [m] "m"(*(const int16_t(*)[2])m));
    return s;
}

/* 16 packed rows x T tokens, T <= 8: T int32 sums and T float accumulators
 * in registers (32 of them), each pair vector loaded once for the T. */
AI void qrows16(const int kind, const int T, int nv, int nb, const char *pk, const rs_block_q16 *x, float *y,
                size_t ldy, const char *pf, size_t ahead) {
    __m512 acc[8];
    UNROLL
    for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_ps();
    const int nib = kind != K_Q8_0;
    const size_t pkb = nib ? PKN_BYTES : PK16_BYTES;
    const __m512i low4 = _mm512_set1_epi16(0x0f), eight = _mm512_set1_epi16(8);
    for (int b = 0; b < nb; b++) {
        const char *P = pk + (size_t)b * pkb;
        const rs_block_q16 *xb[8];
        __m512i s[8];
        UNROLL
        for (int t = 0; t < T; t++) xb[t] = x + (size_t)t * nb + b, s[t] = _mm512_setzero_si512();
        if (pf) prefetch_group(pf, ahead, b, ahead / (size_t)nb);
        if (nib) {
            UNROLL
            for (int j = 0; j < 8; j++) { /* pairs j and j + 8 from byte vector j */
                const __m512i v = _mm512_cvtepu8_epi16(_mm256_load_si256((const __m256i *)(P + j * PKN_VEC)));
                __m512i lo = _mm512_and_si512(v, low4), hi = _mm512_srli_epi16(v, 4);
                if (kind == K_Q4_0) lo = _mm512_sub_epi16(lo, eight), hi = _mm512_sub_epi16(hi, eight);
                UNROLL
                for (int t = 0; t < T; t++) s[t] = dpwssd_b(s[t], lo, xb[t]->qs + 2 * j);
                UNROLL
                for (int t = 0; t < T; t++) s[t] = dpwssd_b(s[t], hi, xb[t]->qs + 2 * j + 16);
            }
        } else {
            UNROLL
            for (int j = 0; j < 16; j++) {
                const __m512i pj = _mm512_load_si512((const void *)(P + j * PK16_PAIR));
                UNROLL
                for (int t = 0; t < T; t++) s[t] = dpwssd_b(s[t], pj, xb[t]->qs + 2 * j);
            }
        }
        const __m512 d = _mm512_load_ps((const void *)(P + (nib ? PKN_D : PK16_D)));
        const __m512 m = _mm512_load_ps((const void *)(P + (nib ? PKN_M : PK16_M)));
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

static void gemm_q16(gemm_q_fn few, qpack_fn pack, qrows_fn rows, size_t pk_bytes, int nr, int nt, int k,
                     const void *w, size_t ws, const rs_block_q16 *x, float *y, size_t ldy) {
    if (nt >= NT_PACK16 && gemm_packed(pack, rows, 16, 8, pk_bytes, nr, nt, k, w, ws, x, y, ldy)) return;
    few(nr, nt, k, w, ws, x, y, ldy); /* few tokens (or no memory) */
}

#define QKERNELS16(name, kind) \
    static void qpack16_##name(int nv, int nb, const char *w, size_t ws, char *pk) { \
        qpack16(kind, nv, nb, w, ws, pk); \
    } \
    static void qrows16_##name(int T, int nv, int nb, const char *pk, const rs_block_q16 *x, float *y, size_t ldy, \
                               const char *pf, size_t ahead) { \
        switch (T) { \
        case 1: qrows16(kind, 1, nv, nb, pk, x, y, ldy, pf, ahead); break; \
        case 2: qrows16(kind, 2, nv, nb, pk, x, y, ldy, pf, ahead); break; \
        case 3: qrows16(kind, 3, nv, nb, pk, x, y, ldy, pf, ahead); break; \
        case 4: qrows16(kind, 4, nv, nb, pk, x, y, ldy, pf, ahead); break; \
        case 5: qrows16(kind, 5, nv, nb, pk, x, y, ldy, pf, ahead); break; \
        case 6: qrows16(kind, 6, nv, nb, pk, x, y, ldy, pf, ahead); break; \
        case 7: qrows16(kind, 7, nv, nb, pk, x, y, ldy, pf, ahead); break; \
        default: qrows16(kind, 8, nv, nb, pk, x, y, ldy, pf, ahead); break; \
        } \
    } \
    static void few_##name(int nr, int nt, int k, const void *w, size_t ws, const rs_block_q16 *x, float *y, \
                           size_t ldy) { /* AVX2's, with AVX-512VL's 32 registers */ \
        gemm_few(kind, nr, nt, k, w, ws, x, y, ldy); \
    } \
    static void gemm16_##name(int nr, int nt, int k, const void *w, size_t w_stride, const rs_block_q16 *x, \
                              float *y, size_t ldy) { \
        gemm_q16(few_##name, qpack16_##name, qrows16_##name, kind == K_Q8_0 ? PK16_BYTES : PKN_BYTES, nr, nt, k, w, \
                 w_stride, x, y, ldy); \
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
    .swiglu = rs_swiglu_avx512,
    RS_AVX2_SHARED_ENTRIES,
};

#if defined(__clang__)
#pragma clang attribute pop
#endif

#else
typedef int rs_kernels_avx512_unused; /* an ISO C translation unit must not be empty */
#endif
