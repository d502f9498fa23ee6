/* Softmax over one attention row, AVX-512: the AVX2 kernel's bits
 * (softmax_avx2.c), 16 exps per instruction. Every element goes through
 * the same operations as there (max, the same range reduction and
 * polynomial, the same scale by 1/sum), and the sum keeps AVX2's order: each
 * 16-element exp vector is added to the 8-lane sum as its low half, then its
 * high half, so lane l still adds elements l, l + 8, l + 16, ... in turn. The
 * last n % 16 elements are AVX2's own tail. */
#if defined(__x86_64__)

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,avx512f,avx512vl"))), apply_to = function)
#else
#pragma GCC target("avx2,fma,avx512f,avx512vl")
#endif

#include "kernels_avx512.h"

#include <immintrin.h>
#include <math.h>

/* softmax_avx2.c's exp8, lane for lane */
static inline __m512 exp16(__m512 x) {
    const __m512 log2e = _mm512_set1_ps(1.44269504088896341f);
    x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

float rs_softmax_avx512(float *x, int n, float *max) {
    if (n < 16) return rs_softmax_avx2(x, n, max);
    const int n16 = n & ~15;
    /* the max is exact in any order; its 8-lane fold matches AVX2's */
    __m512 mv = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < n16; i += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(x + i));
    __m256 m8 = _mm256_max_ps(_mm512_castps512_ps256(mv), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(mv), 1)));
    float lanes[8], mx = -INFINITY;
    for (int i = n16; i + 8 <= n; i += 8) m8 = _mm256_max_ps(m8, _mm256_loadu_ps(x + i));
    _mm256_storeu_ps(lanes, m8);
    for (int j = 0; j < 8; j++) mx = lanes[j] > mx ? lanes[j] : mx;
    for (int j = n & ~7; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    /* exps and their sum, AVX2's lane order */
    const __m512 m = _mm512_set1_ps(mx);
    __m256 sum = _mm256_setzero_ps();
    for (int i = 0; i < n16; i += 16) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), m));
        _mm512_storeu_ps(x + i, e);
        sum = _mm256_add_ps(sum, _mm512_castps512_ps256(e));
        sum = _mm256_add_ps(sum, _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1)));
    }
    const float total = rs_softmax_avx2_tail(x, n16, n, mx, sum);
    const __m512 inv = _mm512_set1_ps(1.0f / total);
    for (int i = 0; i < n16; i += 16) _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
    *max = mx;
    return total;
}

/* softmax_avx2.c's SiLU(g) * u, 16 at a time, lane for lane; the rest is
 * AVX2's. */
void rs_swiglu_avx512(float *g, const float *u, int n) {
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 gv = _mm512_loadu_ps(g + i);
        __m512 e = exp16(_mm512_min_ps(_mm512_sub_ps(_mm512_setzero_ps(), gv), _mm512_set1_ps(88.0f)));
        _mm512_storeu_ps(g + i, _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.0f), e)),
                                              _mm512_loadu_ps(u + i)));
    }
    rs_swiglu_avx2(g + i, u + i, n - i);
}

#if defined(__clang__)
#pragma clang attribute pop
#endif

#else
typedef int rs_softmax_avx512_unused; /* ISO C: a translation unit is never empty */
#endif
