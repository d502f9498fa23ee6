/* Softmax over one attention row, AVX2+FMA: the exp of every score was the
 * cost that grew with context (one libm expf per position, per head, per
 * layer). Vector exp: Cody-Waite range reduction x = n ln2 + r, a degree-6
 * polynomial for e^r (Cephes' expf coefficients), 2^n through the exponent
 * bits; within ~2 ulp of expf. Each element's result depends only on its own
 * score and the row's max and sum, and the sum runs in a fixed lane order for
 * a given length, so a row's weights never depend on batch or threads. */
#if defined(__x86_64__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif

#include "kernels.h"
#include "kernels_avx512.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

static inline __m256 exp8(__m256 x) {
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f)); /* inputs are <= 0; below this exp is ~0 */
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r);
    p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* From element i0 on (the AVX-512 kernel's 16-wide loop ends there): the
 * exps of 8 at a time, the last n % 8 through a padded copy, the sum's lanes
 * folded, then x[i0..n) scaled by 1/sum. Returns the sum. */
float rs_softmax_avx2_tail(float *x, int i0, int n, float mx, __m256 sum) {
    const __m256 m = _mm256_set1_ps(mx);
    int i = i0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
        _mm256_storeu_ps(x + i, e);
        sum = _mm256_add_ps(sum, e);
        /* 16 registers hold exp8's 11 constants, the max and temporaries:
         * left alone, GCC spills the sum, and its add chain then runs
         * through a store and a reload per 8 elements (about 3x slower).
         * Pinning it in a register spills a constant instead, which the
         * ops read from memory at no latency cost. */
        __asm__("" : "+x"(sum));
    }
    if (i < n) { /* the tail through a padded copy; lanes past n add exactly 0 */
        float t[8];
        int k = n - i;
        memcpy(t, x + i, (size_t)k * sizeof(float));
        for (int j = k; j < 8; j++) t[j] = mx;
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(t), m));
        const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(k), idx));
        e = _mm256_and_ps(e, keep);
        _mm256_storeu_ps(t, e);
        memcpy(x + i, t, (size_t)k * sizeof(float));
        sum = _mm256_add_ps(sum, e);
    }
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    const float total = _mm_cvtss_f32(s4);
    const __m256 inv = _mm256_set1_ps(1.0f / total);
    for (i = i0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    for (; i < n; i++) x[i] *= _mm_cvtss_f32(_mm256_castps256_ps128(inv));
    return total;
}

float rs_softmax_avx2(float *x, int n, float *max) {
    *max = -INFINITY;
    if (n <= 0) return 0.0f;
    __m256 mv = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(x + i));
    float mx = -INFINITY;
    float lanes[8];
    _mm256_storeu_ps(lanes, mv);
    for (int j = 0; j < 8; j++) mx = lanes[j] > mx ? lanes[j] : mx;
    for (int j = i; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    const float total = rs_softmax_avx2_tail(x, 0, n, mx, _mm256_setzero_ps());
    *max = mx;
    return total;
}

/* SiLU(g) * u, 8 at a time; the last n % 8 through a padded copy, so every
 * element takes the same operations (the AVX-512 kernel ends here). */
static inline __m256 swiglu8(__m256 g, __m256 u) {
    __m256 e = exp8(_mm256_min_ps(_mm256_sub_ps(_mm256_setzero_ps(), g), _mm256_set1_ps(88.0f)));
    return _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), u);
}

void rs_swiglu_avx2(float *g, const float *u, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(g + i, swiglu8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));
    if (i < n) {
        float tg[8] = {0}, tu[8] = {0};
        memcpy(tg, g + i, (size_t)(n - i) * sizeof(float));
        memcpy(tu, u + i, (size_t)(n - i) * sizeof(float));
        _mm256_storeu_ps(tg, swiglu8(_mm256_loadu_ps(tg), _mm256_loadu_ps(tu)));
        memcpy(g + i, tg, (size_t)(n - i) * sizeof(float));
    }
}

#if defined(__clang__)
#pragma clang attribute pop
#endif

#else
typedef int rs_softmax_avx2_unused; /* ISO C: a translation unit is never empty */
#endif
