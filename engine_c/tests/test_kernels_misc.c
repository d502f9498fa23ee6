/* Activation quantization, half conversion, the kernel-table choice, and
 * the --bench timings (kernel_harness.h). */
#define _POSIX_C_SOURCE 200809L
#include "kernel_harness.h"

/* -------------------------------------------------------------- quantize */

void test_quantize(const rs_kernels *S, const rs_kernels *V, stat_t *st) {
    const int k = 32 * 64;
    float *x = xmalloc(sizeof(float) * k);
    rs_block_q16 *ys = xmalloc(sizeof(rs_block_q16) * (k / 32)), *yv = xmalloc(sizeof(rs_block_q16) * (k / 32));
    for (int rep = 0; rep < 200; rep++) {
        for (int b = 0; b < k / 32; b++) {
            float *xb = x + 32 * b;
            int kind = rndi(8);
            for (int j = 0; j < 32; j++) {
                switch (kind) {
                case 0: /* exact ties: amax 32767 gives d = 1, x = n + 0.5 */
                    xb[j] = (float)(rndi(65534) - 32767) + 0.5f;
                    break;
                case 1: xb[j] = 0.0f; break;
                case 2: xb[j] = rnds() * 1e-42f; break; /* subnormal: d underflows */
                case 3: xb[j] = rnds() * 1e30f; break;
                case 4: /* ties at d = 2^-12: amax 32767 * 2^-12 */
                    xb[j] = ((float)(rndi(65534) - 32767) + 0.5f) * 0x1p-12f;
                    break;
                default: xb[j] = rnd_act(); break;
                }
            }
            if (kind == 0) xb[rndi(32)] = rndi(2) ? 32767.0f : -32767.0f;
            if (kind == 4) xb[rndi(32)] = (rndi(2) ? 32767.0f : -32767.0f) * 0x1p-12f;
            if (kind == 1 && rndi(2)) xb[rndi(32)] = -0.0f;
        }
        S->quantize_q16(x, ys, k);
        V->quantize_q16(x, yv, k);
        for (int b = 0; b < k / 32; b++) {
            st->checks++;
            if (memcmp(&ys[b], &yv[b], sizeof(rs_block_q16))) {
                if (st->fails++ < 5) {
                    fprintf(stderr, "FAIL quantize_q16 block %d: d %.9g/%.9g s %.9g/%.9g\n", b, (double)ys[b].d,
                            (double)yv[b].d, (double)ys[b].s, (double)yv[b].s);
                    for (int j = 0; j < 32; j++)
                        if (ys[b].qs[j] != yv[b].qs[j])
                            fprintf(stderr, "  q[%d]: x %.9g scalar %d simd %d\n", j, (double)x[32 * b + j],
                                    ys[b].qs[j], yv[b].qs[j]);
                }
                g_fail = 1;
            }
        }
        /* the scalar reference against the definition in kernels.h */
        for (int b = 0; b < k / 32; b++) {
            float amax = 0;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[32 * b + j]));
            float d = amax / 32767.0f;
            int sum = 0, bad = ys[b].d != d;
            for (int j = 0; j < 32; j++) {
                float qf = d != 0 ? roundf(x[32 * b + j] / d) : 0.0f;
                qf = fminf(fmaxf(qf, -32767.0f), 32767.0f);
                bad |= ys[b].qs[j] != (int16_t)qf;
                sum += (int)qf;
            }
            bad |= ys[b].s != d * (float)sum;
            if (bad) {
                if (st->fails++ < 5) fprintf(stderr, "FAIL quantize_q16 (scalar) block %d disagrees with the definition\n", b);
                g_fail = 1;
            }
        }
    }
    snprintf(st->shapes, sizeof st->shapes, "200 x %d floats: ties, zeros, subnormals, 1e30; exact match", k);
    free(x), free(ys), free(yv);
}

static uint32_t fbits(float f) {
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

void test_f16(const rs_kernels *S, const rs_kernels *V, stat_t *st) {
    const int n = 4096 + 7;
    float *x = xmalloc(sizeof(float) * n);
    uint16_t *ys = xmalloc(2 * n), *yv = xmalloc(2 * n);
    for (int rep = 0; rep < 300; rep++) {
        for (int i = 0; i < n; i++) {
            uint32_t bits;
            switch (rndi(6)) {
            case 0: bits = rnd32(); break; /* anything: nan, inf, huge, tiny */
            case 1: bits = (rnd32() & 0x80000000u) | (0x33000000u + rnd32() % (0x38800000u - 0x33000000u)); break;
            case 2: bits = (rnd32() & 0x80000000u) | (0x477fe000u + rnd32() % 0x4000u); break; /* near 65504..inf */
            case 3: bits = (rnd32() & 0xffffe000u) | 0x1000u; break;                            /* exact ties */
            case 4: bits = (rnd32() & 0x80000000u) | (0x38000000u + rnd32() % 0x0f800000u); break; /* normal halves */
            default: bits = (rnd32() & 0x80000000u) | (rnd32() % 0x00800000u); break;           /* f32 subnormal */
            }
            memcpy(&x[i], &bits, 4);
        }
        int len = rep < 20 ? rep : n - rndi(9); /* tails */
        memset(ys, 0, 2 * (size_t)n);
        memset(yv, 0, 2 * (size_t)n);
        S->f32_to_f16(x, ys, len);
        V->f32_to_f16(x, yv, len);
        for (int i = 0; i < len; i++) {
            uint16_t want = rs_f32_to_f16(x[i]);
            st->checks++;
            int ok;
            if (isnan(x[i]))
                ok = (ys[i] & 0x7c00) == 0x7c00 && (ys[i] & 0x3ff) && (yv[i] & 0x7c00) == 0x7c00 && (yv[i] & 0x3ff);
            else
                ok = ys[i] == want && yv[i] == want;
            if (!ok) {
                if (st->fails++ < 5)
                    fprintf(stderr, "FAIL f32_to_f16(%.9g = 0x%08x): want 0x%04x scalar 0x%04x simd 0x%04x\n",
                            (double)x[i], (unsigned)fbits(x[i]), want, ys[i], yv[i]);
                g_fail = 1;
            }
        }
        for (int i = len; i < n; i++)
            if (ys[i] || yv[i]) {
                if (st->fails++ < 5) fprintf(stderr, "FAIL f32_to_f16 wrote past n=%d\n", len);
                g_fail = 1;
                break;
            }
    }
    snprintf(st->shapes, sizeof st->shapes, "300 x ~%d floats: subnormal, overflow, inf, nan, ties; exact", n);
    free(x), free(ys), free(yv);
}


/* ---------------------------------------------------------------- select */

void test_select(const rs_kernels *V) {
    char err[256];
    const char *old = getenv("RADIXSERVE_KERNELS");
    char *saved = old ? strcpy(xmalloc(strlen(old) + 1), old) : NULL;
    int ok = 1;
    unsetenv("RADIXSERVE_KERNELS");
    err[0] = 0;
    const rs_kernels *k = rs_kernels_select(err, sizeof err);
    ok &= k == V;
    setenv("RADIXSERVE_KERNELS", "scalar", 1);
    ok &= rs_kernels_select(err, sizeof err) == &rs_kernels_scalar;
    setenv("RADIXSERVE_KERNELS", "bogus", 1);
    err[0] = 0;
    ok &= rs_kernels_select(err, sizeof err) == NULL && strstr(err, "bogus") != NULL;
    setenv("RADIXSERVE_KERNELS", V == &rs_kernels_scalar ? "avx2" : V->name, 1);
    ok &= rs_kernels_select(err, sizeof err) == (V == &rs_kernels_scalar ? NULL : V);
#if defined(__x86_64__)
    setenv("RADIXSERVE_KERNELS", "neon", 1);
#else
    setenv("RADIXSERVE_KERNELS", "avx2", 1);
#endif
    err[0] = 0;
    ok &= rs_kernels_select(err, sizeof err) == NULL && err[0] != 0;
    if (saved) {
        setenv("RADIXSERVE_KERNELS", saved, 1);
        free(saved);
    } else {
        unsetenv("RADIXSERVE_KERNELS");
    }
    printf("%-6s %-18s best = %s, RADIXSERVE_KERNELS scalar/bogus/foreign\n", ok ? "ok" : "FAIL", "rs_kernels_select",
           k ? k->name : "NULL");
    if (!ok) g_fail = 1;
}


/* ----------------------------------------------------------------- bench */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void bench_one(const rs_kernels *K, int type, int nr, int nt, int k, const char *w, size_t ws,
                      const rs_block_q16 *x, float *y) {
    rs_gemm_q_fn fn = qfn(K, type);
    fn(nr, nt, k, w, ws, x, y, (size_t)nr); /* warm */
    int iters = 0;
    double t0 = now(), t;
    do {
        fn(nr, nt, k, w, ws, x, y, (size_t)nr);
        iters++;
        t = now() - t0;
    } while (t < 0.25);
    double per = t / iters;
    double bytes = (double)ws * nr;
    printf("%-9s %-7s %5d x %-4d nt=%-3d %9.1f us  %7.2f GB/s weights  %7.2f GOP/s\n", qname[type], K->name, nr, k,
           nt, per * 1e6, bytes / per * 1e-9, 2.0 * nr * (double)k * nt / per * 1e-9);
}

void bench(const rs_kernels *S, const rs_kernels *V) {
    struct {
        int type, nr, k;
    } cases[] = {{T_Q4_1, 1536, 576}, {T_Q4_1, 576, 1536}, {T_Q8_0, 1536, 576}, {T_Q4_0, 1536, 576}, {T_Q8_0, 49152, 576}};
    int nts[] = {1, 2, 4, 8, 16, 64, 256};
    enum { NT_MAX = 256 };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int type = cases[c].type, nr = cases[c].nr, k = cases[c].k, nb = k / RS_QK;
        size_t ws = qbsize(type) * (size_t)nb;
        char *w = xmalloc(ws * (size_t)nr);
        for (int r = 0; r < nr; r++) fill_qrow(type, w + (size_t)r * ws, nb);
        float *xf = xmalloc(sizeof(float) * (size_t)k * NT_MAX);
        for (size_t i = 0; i < (size_t)k * NT_MAX; i++) xf[i] = rnd_act();
        rs_block_q16 *x = xmalloc(sizeof(rs_block_q16) * (size_t)nb * NT_MAX);
        for (int t = 0; t < NT_MAX; t++) S->quantize_q16(xf + (size_t)t * k, x + (size_t)t * nb, k);
        float *y = xmalloc(sizeof(float) * (size_t)nr * NT_MAX);
        for (size_t i = 0; i < sizeof nts / sizeof nts[0]; i++) {
            if (type == T_Q8_0 && nts[i] > 16) continue;
            if (nr > 4096 && nts[i] != 1 && nts[i] != 4 && nts[i] != 8) continue; /* the output matrix: decode */
            if (nts[i] == 1 || (nts[i] == 64 && nr <= 4096)) bench_one(S, type, nr, nts[i], k, w, ws, x, y);
            if (V != S) bench_one(V, type, nr, nts[i], k, w, ws, x, y);
        }
        free(w), free(xf), free(x), free(y);
    }
}

/* SwiGLU: SIMD against scalar (a vector exp within ~2 ulp of expf, then
 * the same add, divide and multiply), over gates of every size the FFN
 * sees and row lengths with every tail; far outside the exp's range the
 * result must still be ~0 (gate very negative) or g * u (very positive). */
void test_swiglu(const rs_kernels *S, const rs_kernels *V, stat_t *st) {
    static const int lens[] = {1, 3, 7, 8, 9, 15, 16, 17, 31, 100, 1536, 1537};
    static const float scales[] = {0.5f, 4.0f, 30.0f, 80.0f};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (size_t si = 0; si < sizeof scales / sizeof scales[0]; si++) {
            const int n = lens[li];
            float *gs = xmalloc(4 * (size_t)n + 4), *gv = xmalloc(4 * (size_t)n + 4), *u = xmalloc(4 * (size_t)n);
            for (int i = 0; i < n; i++) gs[i] = gv[i] = rnds() * scales[si], u[i] = rnds() * 3.0f;
            gs[n] = gv[n] = 12345.0f; /* a guard past the row */
            double *ref = xmalloc(8 * (size_t)n);
            for (int i = 0; i < n; i++) ref[i] = fabs((double)gs[i] / (1.0 + exp(-(double)gs[i])) * u[i]);
            S->swiglu(gs, u, n);
            V->swiglu(gv, u, n);
            for (int i = 0; i < n; i++) close_enough(st, gv[i], gs[i], ref[i], 8.0, "swiglu", n, i);
            if (gv[n] != 12345.0f) det_fail(st, V->name, "swiglu wrote past n", n, 1, 1);
            free(gs), free(gv), free(u), free(ref);
        }
    float g[4] = {-1e4f, -200.0f, 200.0f, 1e4f}, u[4] = {2.0f, -3.0f, 0.5f, -1.0f};
    V->swiglu(g, u, 4);
    st->checks++;
    if (!(fabsf(g[0]) < 1e-30f && fabsf(g[1]) < 1e-30f && g[2] == 100.0f && g[3] == -1e4f))
        det_fail(st, V->name, "swiglu far outside exp's range", 4, 1, 1);
}
