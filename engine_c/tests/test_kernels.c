/* The SIMD kernel table of the build target (avx2 on x86-64, neon on
 * AArch64) against the scalar reference, on random inputs at many shapes,
 * plus the determinism contract of kernels.h for every table: a whole
 * nr x nt block is bit-identical to each element computed alone and to
 * other tilings.
 *
 * Tolerances: the integer parts of the quantized dot products are exact in
 * every implementation; only the float accumulation order differs (and FMA
 * versus separate multiply-add). With u = FLT_EPSILON / 2, a sum of n
 * terms computed in any order is within about n * u * S of the exact sum,
 * S = sum of |terms|. Each check bounds |simd - scalar| by
 * (n_scalar + n_simd) * u * S, n counting the roundings one term can see in
 * each implementation's chain (plus a few for the horizontal sums), with S
 * computed in double from the very inputs the kernels saw. (A SIMD lane of
 * integer products is converted to float exactly, except NEON's Q8_0 lanes
 * of 8 products, which can exceed 2^24 and round once: at most u * S more,
 * inside the slack.) quantize_q16 and f32_to_f16 must match the scalar
 * reference exactly, and so must AVX2's quantized GEMMs (g_exact_q).
 *
 * Usage: test_kernels          run the checks (exit status 1 on a failure)
 *        test_kernels --bench  time gemm_q4_1 / gemm_q8_0, scalar vs SIMD */
#define _POSIX_C_SOURCE 200809L
#include "kernel_harness.h"

/* ------------------------------------------------------- quantized GEMMs */

typedef struct {
    rs_gemm_q_fn fn;
    int k;
    const char *w;
    size_t ws;
    const rs_block_q16 *x;
} qctx;

static void qrun(const void *c, int r0, int r1, int t0, int t1, float *y, size_t ldy) {
    const qctx *q = c;
    q->fn(r1 - r0, t1 - t0, q->k, q->w + (size_t)r0 * q->ws, q->ws, q->x + (size_t)t0 * (q->k / RS_QK),
          y + (size_t)t0 * ldy + r0, ldy);
}

rs_gemm_q_fn qfn(const rs_kernels *K, int type) {
    return type == T_Q4_0 ? K->gemm_q4_0 : type == T_Q4_1 ? K->gemm_q4_1 : K->gemm_q8_0;
}

void test_gemm_q(const rs_kernels *S, const rs_kernels *V, int type, stat_t *st, int nr, int nt, int k,
                        int pad_blocks) {
    const int nb = k / RS_QK;
    const size_t bs = qbsize(type);
    const size_t ws = bs * (size_t)(nb + pad_blocks);
    const size_t ldy = (size_t)nr + (size_t)rndi(3);
    char *w = xmalloc(ws * (size_t)nr);
    memset(w, 0xa5, ws * (size_t)nr); /* padding: garbage the kernels must not read as data */
    for (int r = 0; r < nr; r++) fill_qrow(type, w + (size_t)r * ws, nb);
    float *xf = xmalloc(sizeof(float) * (size_t)k * (size_t)nt);
    for (size_t i = 0; i < (size_t)k * (size_t)nt; i++) xf[i] = rnd_act();
    rs_block_q16 *x = xmalloc(sizeof(rs_block_q16) * (size_t)nb * (size_t)nt);
    for (int t = 0; t < nt; t++) S->quantize_q16(xf + (size_t)t * k, x + (size_t)t * nb, k);
    float *ys = xmalloc(sizeof(float) * ldy * (size_t)nt);
    float *yv = xmalloc(sizeof(float) * ldy * (size_t)nt);
    for (size_t i = 0; i < ldy * (size_t)nt; i++) ys[i] = yv[i] = -7.0f; /* gaps between rows stay */
    qfn(S, type)(nr, nt, k, w, ws, x, ys, ldy);
    qfn(V, type)(nr, nt, k, w, ws, x, yv, ldy);
    /* scalar: nb products + nb adds per element (q4_1: nb more);
     * SIMD: one FMA per block per lane, lane partials, 3 hsum adds, 1 add */
    const double n = 2.0 * nb + 2.0 * nb + 16.0;
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < nr; r++) {
            double S_ = qterms(type, w + (size_t)r * ws, x + (size_t)t * nb, nb);
            close_enough(st, yv[(size_t)t * ldy + r], ys[(size_t)t * ldy + r], S_, n, "value", r, t);
        }
    if (g_exact_q) /* the SIMD table promises the scalar's very bits */
        for (int t = 0; t < nt; t++)
            for (int r = 0; r < nr; r++)
                if (memcmp(&yv[(size_t)t * ldy + r], &ys[(size_t)t * ldy + r], sizeof(float))) {
                    if (st->fails++ < 5)
                        fprintf(stderr, "FAIL %s not bit-identical [%d,%d] (%d x %d x %d): simd %.9g scalar %.9g\n",
                                st->name, r, t, nr, nt, k, (double)yv[(size_t)t * ldy + r],
                                (double)ys[(size_t)t * ldy + r]);
                    g_fail = 1;
                    t = nt;
                    break;
                }
    for (size_t t = 0; t < (size_t)nt; t++)
        for (size_t r = (size_t)nr; r < ldy; r++)
            if (ys[t * ldy + r] != -7.0f || yv[t * ldy + r] != -7.0f) {
                det_fail(st, "both", "write outside nr", nr, nt, k);
                t = (size_t)nt;
                break;
            }
    qctx cs = {qfn(S, type), k, w, ws, x}, cv = {qfn(V, type), k, w, ws, x};
    if (!same_all_tilings(qrun, &cs, nr, nt, ys, ldy)) det_fail(st, S->name, "tiling", nr, nt, k);
    if (!same_all_tilings(qrun, &cv, nr, nt, yv, ldy)) det_fail(st, V->name, "tiling", nr, nt, k);
    free(w), free(xf), free(x), free(ys), free(yv);
}

/* ----------------------------------------------------------- float GEMMs */

enum { T_F32, T_F16, T_BF16 };
const char *fname[] = {"gemm_f32", "gemm_f16", "gemm_bf16"};

typedef struct {
    rs_gemm_f_fn fn;
    int k;
    const char *w;
    size_t ws;
    const float *x;
} fctx;

static void frun(const void *c, int r0, int r1, int t0, int t1, float *y, size_t ldy) {
    const fctx *f = c;
    f->fn(r1 - r0, t1 - t0, f->k, f->w + (size_t)r0 * f->ws, f->ws, f->x + (size_t)t0 * f->k,
          y + (size_t)t0 * ldy + r0, ldy);
}

static rs_gemm_f_fn ffn(const rs_kernels *K, int type) {
    return type == T_F32 ? K->gemm_f32 : type == T_F16 ? K->gemm_f16 : K->gemm_bf16;
}

float wval(int type, const char *row, int i) {
    if (type == T_F32) {
        float f;
        memcpy(&f, row + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, row + 2 * i, 2);
    return type == T_F16 ? rs_f16_to_f32(h) : rs_bf16_to_f32(h);
}

void test_gemm_f(const rs_kernels *S, const rs_kernels *V, int type, stat_t *st, int nr, int nt, int k) {
    const size_t es = type == T_F32 ? 4 : 2;
    const size_t ws = es * (size_t)(k + rndi(4) * 4);
    const size_t ldy = (size_t)nr + (size_t)rndi(3);
    char *w = xmalloc(ws * (size_t)nr);
    memset(w, 0x5a, ws * (size_t)nr);
    for (int r = 0; r < nr; r++)
        for (int i = 0; i < k; i++) {
            float v = rnds() * 0.1f;
            char *p = w + (size_t)r * ws + es * (size_t)i;
            if (type == T_F32) {
                memcpy(p, &v, 4);
            } else {
                uint32_t bits;
                memcpy(&bits, &v, 4);
                uint16_t h = type == T_F16 ? f16(v) : (uint16_t)(bits >> 16);
                memcpy(p, &h, 2);
            }
        }
    float *x = xmalloc(sizeof(float) * (size_t)k * (size_t)nt);
    for (size_t i = 0; i < (size_t)k * (size_t)nt; i++) x[i] = rnd_act();
    float *ys = xmalloc(sizeof(float) * ldy * (size_t)nt);
    float *yv = xmalloc(sizeof(float) * ldy * (size_t)nt);
    for (size_t i = 0; i < ldy * (size_t)nt; i++) ys[i] = yv[i] = -7.0f;
    ffn(S, type)(nr, nt, k, w, ws, x, ys, ldy);
    ffn(V, type)(nr, nt, k, w, ws, x, yv, ldy);
    /* scalar: k products, k adds in a chain; SIMD: k/lanes FMAs, tail, hsum */
    const double n = 2.0 * k + 16.0;
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < nr; r++) {
            double S_ = 0;
            for (int i = 0; i < k; i++) S_ += fabs((double)wval(type, w + (size_t)r * ws, i) * x[(size_t)t * k + i]);
            close_enough(st, yv[(size_t)t * ldy + r], ys[(size_t)t * ldy + r], S_, n, "value", r, t);
        }
    fctx cs = {ffn(S, type), k, w, ws, x}, cv = {ffn(V, type), k, w, ws, x};
    if (!same_all_tilings(frun, &cs, nr, nt, ys, ldy)) det_fail(st, S->name, "tiling", nr, nt, k);
    if (!same_all_tilings(frun, &cv, nr, nt, yv, ldy)) det_fail(st, V->name, "tiling", nr, nt, k);
    free(w), free(x), free(ys), free(yv);
}


/* ------------------------------------------------------------------ main */

/* Every check, one SIMD table V against the scalar S. */
static void check_table(const rs_kernels *S, const rs_kernels *V) {
    printf("kernels: %s against %s\n", V->name, S->name);

    stat_t st;
    /* quantized GEMMs */
    static const int ks[] = {32, 64, 576, 1536};
    static const int shapes[][2] = {{1, 1}, {3, 5}, {7, 3}, {5, 7}, {13, 17}, {17, 13}, {2, 1}, {4, 2},
                                    {1, 16}, {9, 4}, {6, 70}, {37, 1}, {33, 19}, {16, 8}};
    for (int type = 0; type < 3; type++) {
        memset(&st, 0, sizeof st);
        st.name = qname[type];
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
            for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
                int nr = shapes[si][0], nt = shapes[si][1];
                if (ks[ki] == 1536 && nr * nt > 200) continue; /* keep the sanitizer run short */
                test_gemm_q(S, V, type, &st, nr, nt, ks[ki], (int)(si % 2));
            }
        test_gemm_q(S, V, type, &st, 192, 1, 576, 0);
        test_gemm_q(S, V, type, &st, 8, 130, 64, 0); /* crosses token chunks */
        test_gemm_q(S, V, type, &st, 48, 67, 64, 0); /* whole 16-row groups, 8-token steps, a chunk edge */
        g_extreme = 1; /* integer sums at their limits */
        test_gemm_q(S, V, type, &st, 5, 7, 1536, 1);
        test_gemm_q(S, V, type, &st, 4, 4, 64, 0);
        g_extreme = 0;
        snprintf(st.shapes, sizeof st.shapes,
                 "nr x nt x k: 1..37 x 1..70 x {32,64,576,1536}, 192x1x576, 8x130x64, 48x67x64, extremes");
        stat_print(&st);
    }
    /* float GEMMs */
    static const int fks[] = {1, 7, 13, 32, 64, 100, 576};
    for (int type = 0; type < 3; type++) {
        memset(&st, 0, sizeof st);
        st.name = fname[type];
        for (size_t ki = 0; ki < sizeof fks / sizeof fks[0]; ki++)
            for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si += 2)
                test_gemm_f(S, V, type, &st, shapes[si][0], shapes[si][1], fks[ki]);
        test_gemm_f(S, V, type, &st, 13, 17, 1536);
        snprintf(st.shapes, sizeof st.shapes, "nr x nt x k: 1..13 x 1..17 x {1,7,13,32,64,100,576}, 13x17x1536");
        stat_print(&st);
    }
    /* attention */
    static const int hds[] = {64, 128, 8, 16, 3, 13, 80, 1};
    static const int nposs[] = {1, 3, 4, 5, 17, 64, 0};
    for (int f = 1; f >= 0; f--) {
        stat_t sc, ac;
        memset(&sc, 0, sizeof sc);
        memset(&ac, 0, sizeof ac);
        sc.name = f ? "attn_scores_f16" : "attn_scores_f32";
        ac.name = f ? "attn_accum_f16" : "attn_accum_f32";
        for (size_t h = 0; h < sizeof hds / sizeof hds[0]; h++)
            for (size_t p = 0; p < sizeof nposs / sizeof nposs[0]; p++) test_attn(S, V, f, &sc, &ac, nposs[p], hds[h]);
        snprintf(sc.shapes, sizeof sc.shapes, "npos x hd: {0,1,3,4,5,17,64} x {1,3,8,13,16,64,80,128}");
        snprintf(ac.shapes, sizeof ac.shapes, "npos x hd: {0,1,3,4,5,17,64} x {1,3,8,13,16,64,80,128}");
        stat_print(&sc);
        stat_print(&ac);
    }
    static const int mhds[] = {64, 128, 8, 13, 80, 1, 300};
    static const int mnposs[] = {16, 1, 7, 8, 9, 15, 33, 0};
    for (int f = 1; f >= 0; f--) {
        stat_t sc, ac;
        memset(&sc, 0, sizeof sc);
        memset(&ac, 0, sizeof ac);
        sc.name = f ? "attn_scores_f16_multi" : "attn_scores_f32_multi";
        ac.name = f ? "attn_accum_f16_multi" : "attn_accum_f32_multi";
        for (size_t h = 0; h < sizeof mhds / sizeof mhds[0]; h++)
            for (size_t p = 0; p < sizeof mnposs / sizeof mnposs[0]; p++)
                test_attn_multi(S, V, f, &sc, &ac, mnposs[p], mhds[h]);
        snprintf(sc.shapes, sizeof sc.shapes, "npos x hd x nq: {0,1,7,8,9,15,16,33} x {1,8,13,64,80,128,300} x 1..12, = 1 query");
        snprintf(ac.shapes, sizeof ac.shapes, "npos x hd x nq: {0,1,7,8,9,15,16,33} x {1,8,13,64,80,128,300} x 1..12, = 1 query");
        stat_print(&sc);
        stat_print(&ac);
    }
    memset(&st, 0, sizeof st);
    st.name = "softmax";
    test_softmax(S, V, &st);
    snprintf(st.shapes, sizeof st.shapes, "n in 1..4099: wide, ties, below exp's range");
    stat_print(&st);
    memset(&st, 0, sizeof st);
    st.name = "swiglu";
    test_swiglu(S, V, &st);
    snprintf(st.shapes, sizeof st.shapes, "n in 1..1537, |g| up to 80; 1e4 and 200 beyond exp's range");
    stat_print(&st);
    memset(&st, 0, sizeof st);
    st.name = "quantize_q16";
    test_quantize(S, V, &st);
    stat_print(&st);
    memset(&st, 0, sizeof st);
    st.name = "f32_to_f16";
    test_f16(S, V, &st);
    stat_print(&st);
}

int main(int argc, char **argv) {
    const rs_kernels *S = &rs_kernels_scalar;
    const rs_kernels *tables[2];
    int n = 0;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
        tables[n++] = &rs_kernels_avx2;
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
            tables[n++] = &rs_kernels_avx512;
        else
            printf("note: this CPU lacks AVX-512 F/BW/VL/VNNI: the avx512 table is not checked\n");
    } else {
        printf("note: this CPU lacks AVX2/FMA/F16C: only the scalar table is checked\n");
    }
    g_exact_q = 1; /* both x86 tables promise the scalar's bits */
#elif defined(__aarch64__)
    tables[n++] = &rs_kernels_neon;
#endif
    const rs_kernels *best = n ? tables[n - 1] : S;
    if (argc > 1 && !strcmp(argv[1], "--bench")) {
        bench(S, best);
        return 0;
    }
    if (!n) check_table(S, S);
    for (int i = 0; i < n; i++) check_table(S, tables[i]);
    for (int i = 1; i < n; i++) { /* the x86 tables' f16 attention: one contract, the same bits */
        stat_t st;
        memset(&st, 0, sizeof st);
        st.name = "attn_f16, softmax, swiglu";
        snprintf(st.shapes, sizeof st.shapes, "%s = %s, npos x hd x nq: {0..33} x {8..264} x 1..64; softmax, swiglu n 1..4099", tables[i]->name,
                 tables[0]->name);
        test_attn_same_bits(tables[0], tables[i], &st);
        stat_print(&st);
    }
    test_select(best);

    printf("%s\n", g_fail ? "test_kernels: FAILED" : "test_kernels: all passed");
    return g_fail ? 1 : 0;
}

