/* Attention kernels and softmax: SIMD against scalar, and the per-query
 * determinism of the multi-query kernels (kernel_harness.h). */
#define _POSIX_C_SOURCE 200809L
#include "kernel_harness.h"

/* ------------------------------------------------------------- attention */

void test_attn(const rs_kernels *S, const rs_kernels *V, int f16kv, stat_t *sc, stat_t *ac, int npos,
                      int hd) {
    const size_t stride = (size_t)hd + (size_t)rndi(3) * 8 + (size_t)rndi(2);
    const size_t n = stride * (size_t)(npos > 0 ? npos : 1);
    uint16_t *kh = xmalloc(2 * n), *vh = xmalloc(2 * n);
    float *kf = xmalloc(4 * n), *vf = xmalloc(4 * n);
    for (size_t i = 0; i < n; i++) {
        kh[i] = f16(rnds());
        vh[i] = f16(rnds());
        kf[i] = rs_f16_to_f32(kh[i]);
        vf[i] = rs_f16_to_f32(vh[i]);
    }
    float *q = xmalloc(4 * (size_t)hd), *wp = xmalloc(4 * (size_t)(npos + 1));
    for (int i = 0; i < hd; i++) q[i] = rnd_act();
    for (int p = 0; p < npos; p++) wp[p] = rndu() / (float)npos;
    const float scale = 0.125f + 0.01f * rndu();

    /* scores */
    float *os = xmalloc(4 * (size_t)(npos + 1)), *ov = xmalloc(4 * (size_t)(npos + 1));
    float *o1 = xmalloc(4 * (size_t)(npos + 1));
    if (f16kv) {
        S->attn_scores_f16(npos, hd, kh, stride, q, scale, os);
        V->attn_scores_f16(npos, hd, kh, stride, q, scale, ov);
    } else {
        S->attn_scores_f32(npos, hd, kf, stride, q, scale, os);
        V->attn_scores_f32(npos, hd, kf, stride, q, scale, ov);
    }
    for (int p = 0; p < npos; p++) {
        double S_ = 0;
        for (int i = 0; i < hd; i++) S_ += fabs((double)kf[(size_t)p * stride + i] * q[i]);
        close_enough(sc, ov[p], os[p], S_ * scale, 2.0 * hd + 16.0, "score", p, 0);
    }
    for (int which = 0; which < 2; which++) {
        const rs_kernels *K = which ? V : S;
        const float *full = which ? ov : os;
        for (int p = 0; p < npos; p++) {
            if (f16kv)
                K->attn_scores_f16(1, hd, kh + (size_t)p * stride, stride, q, scale, o1 + p);
            else
                K->attn_scores_f32(1, hd, kf + (size_t)p * stride, stride, q, scale, o1 + p);
        }
        if (npos && memcmp(o1, full, 4 * (size_t)npos)) det_fail(sc, K->name, "one position at a time", npos, 1, hd);
    }

    /* accum */
    float *a0 = xmalloc(4 * (size_t)hd), *as = xmalloc(4 * (size_t)hd), *av = xmalloc(4 * (size_t)hd);
    float *a1 = xmalloc(4 * (size_t)hd);
    for (int i = 0; i < hd; i++) a0[i] = rnds();
    memcpy(as, a0, 4 * (size_t)hd);
    memcpy(av, a0, 4 * (size_t)hd);
    if (f16kv) {
        S->attn_accum_f16(npos, hd, vh, stride, wp, as);
        V->attn_accum_f16(npos, hd, vh, stride, wp, av);
    } else {
        S->attn_accum_f32(npos, hd, vf, stride, wp, as);
        V->attn_accum_f32(npos, hd, vf, stride, wp, av);
    }
    for (int i = 0; i < hd; i++) {
        double S_ = fabs(a0[i]);
        for (int p = 0; p < npos; p++) S_ += fabs((double)wp[p] * vf[(size_t)p * stride + i]);
        close_enough(ac, av[i], as[i], S_, 2.0 * npos + 8.0, "accum", i, 0);
    }
    /* determinism: split the positions in two calls and the head dim in two */
    for (int which = 0; which < 2; which++) {
        const rs_kernels *K = which ? V : S;
        const float *full = which ? av : as;
        int ps = rndi(npos + 1), hs = rndi(hd + 1);
        memcpy(a1, a0, 4 * (size_t)hd);
        for (int part = 0; part < 4; part++) {
            int p0 = part & 1 ? ps : 0, p1 = part & 1 ? npos : ps;
            int i0 = part & 2 ? hs : 0, i1 = part & 2 ? hd : hs;
            if (p1 <= p0 || i1 <= i0) continue;
            if (f16kv)
                K->attn_accum_f16(p1 - p0, i1 - i0, vh + (size_t)p0 * stride + i0, stride, wp + p0, a1 + i0);
            else
                K->attn_accum_f32(p1 - p0, i1 - i0, vf + (size_t)p0 * stride + i0, stride, wp + p0, a1 + i0);
        }
        if (memcmp(a1, full, 4 * (size_t)hd)) det_fail(ac, K->name, "split positions / head dim", npos, 1, hd);
    }
    free(kh), free(vh), free(kf), free(vf), free(q), free(wp), free(os), free(ov), free(o1);
    free(a0), free(as), free(av), free(a1);
}

/* Multi-query attention: nq queries against one page. (1) SIMD against the
 * scalar reference, per query, with the single-query bounds. (2) For every
 * table and nq = 1..12 (queries in a rotated order, each with its own
 * position count for accum): every query's scores and sums bit-identical to
 * the single-query entry's, so grouping queries can never change an output.
 * (3) The multi path sees no rows past npos: scores write exactly npos
 * values per query. */
enum { MQ = 12 };

static void multi_call(const rs_kernels *K, int f16kv, int scores, int npos, int hd, const uint16_t *kh,
                       const float *kf, size_t stride, int nq, const float *const *in, float scale,
                       const int *nps, float *const *out) {
    if (scores) {
        if (f16kv) K->attn_scores_f16_multi(npos, hd, kh, stride, nq, in, scale, out);
        else K->attn_scores_f32_multi(npos, hd, kf, stride, nq, in, scale, out);
    } else {
        if (f16kv) K->attn_accum_f16_multi(hd, kh, stride, nq, nps, in, out);
        else K->attn_accum_f32_multi(hd, kf, stride, nq, nps, in, out);
    }
}

void test_attn_multi(const rs_kernels *S, const rs_kernels *V, int f16kv, stat_t *sc, stat_t *ac, int npos,
                            int hd) {
    const size_t stride = (size_t)hd + (size_t)rndi(3) * 8 + (size_t)rndi(2);
    const size_t n = stride * (size_t)(npos > 0 ? npos : 1);
    uint16_t *kh = xmalloc(2 * n);
    float *kf = xmalloc(4 * n);
    for (size_t i = 0; i < n; i++) {
        kh[i] = f16(rnds());
        kf[i] = rs_f16_to_f32(kh[i]);
    }
    const float scale = 0.125f + 0.01f * rndu();
    const size_t W = (size_t)npos + 9; /* a guard past npos */
    float *q = xmalloc(4 * (size_t)hd * MQ), *w = xmalloc(4 * W * MQ), *a0 = xmalloc(4 * (size_t)hd * MQ);
    int nps[MQ];
    for (int j = 0; j < MQ; j++) {
        for (int i = 0; i < hd; i++) q[(size_t)j * hd + i] = rnd_act(), a0[(size_t)j * hd + i] = rnds();
        nps[j] = j == 0 ? npos : rndi(npos + 1);
        for (size_t p = 0; p < W; p++) w[(size_t)j * W + p] = rndu() / (float)(npos ? npos : 1);
    }
    /* single-query results of each table: [table][query] */
    float *one = xmalloc(4 * 2 * MQ * W), *oneacc = xmalloc(4 * 2 * MQ * (size_t)hd);
    float *got = xmalloc(4 * MQ * W), *gotacc = xmalloc(4 * MQ * (size_t)hd);
    for (int tb = 0; tb < 2; tb++) {
        const rs_kernels *K = tb ? V : S;
        for (int j = 0; j < MQ; j++) {
            float *o = one + ((size_t)tb * MQ + j) * W, *a = oneacc + ((size_t)tb * MQ + j) * hd;
            const float *qj = q + (size_t)j * hd, *wj = w + (size_t)j * W;
            memcpy(a, a0 + (size_t)j * hd, 4 * (size_t)hd);
            if (f16kv) {
                K->attn_scores_f16(npos, hd, kh, stride, qj, scale, o);
                K->attn_accum_f16(nps[j], hd, kh, stride, wj, a);
            } else {
                K->attn_scores_f32(npos, hd, kf, stride, qj, scale, o);
                K->attn_accum_f32(nps[j], hd, kf, stride, wj, a);
            }
        }
    }
    /* (1) SIMD vs scalar, per query */
    for (int j = 0; j < MQ; j++) {
        const float *os = one + (size_t)j * W, *ov = one + ((size_t)MQ + j) * W;
        const float *as = oneacc + (size_t)j * hd, *av = oneacc + ((size_t)MQ + j) * hd;
        for (int p = 0; p < npos; p++) {
            double S_ = 0;
            for (int i = 0; i < hd; i++) S_ += fabs((double)kf[(size_t)p * stride + i] * q[(size_t)j * hd + i]);
            close_enough(sc, ov[p], os[p], S_ * scale, 2.0 * hd + 16.0, "multi score", p, j);
        }
        for (int i = 0; i < hd; i++) {
            double S_ = fabs(a0[(size_t)j * hd + i]);
            for (int p = 0; p < nps[j]; p++) S_ += fabs((double)w[(size_t)j * W + p] * kf[(size_t)p * stride + i]);
            close_enough(ac, av[i], as[i], S_, 2.0 * nps[j] + 8.0, "multi accum", i, j);
        }
    }
    /* (2) + (3): every nq, a rotated subset of the queries */
    for (int tb = 0; tb < 2; tb++) {
        const rs_kernels *K = tb ? V : S;
        for (int nq = 1; nq <= MQ; nq++) {
            const int rot = rndi(MQ);
            const float *qin[MQ], *win[MQ];
            float *out[MQ], *acc[MQ];
            int np[MQ], idx[MQ];
            for (int k = 0; k < nq; k++) {
                int j = idx[k] = (k + rot) % MQ;
                qin[k] = q + (size_t)j * hd;
                win[k] = w + (size_t)j * W;
                out[k] = got + (size_t)k * W;
                acc[k] = gotacc + (size_t)k * hd;
                np[k] = nps[j];
                for (size_t p = 0; p < W; p++) out[k][p] = -3.0f;
                memcpy(acc[k], a0 + (size_t)j * hd, 4 * (size_t)hd);
            }
            multi_call(K, f16kv, 1, npos, hd, kh, kf, stride, nq, qin, scale, NULL, out);
            multi_call(K, f16kv, 0, npos, hd, kh, kf, stride, nq, win, scale, np, acc);
            for (int k = 0; k < nq; k++) {
                const float *ref = one + ((size_t)tb * MQ + idx[k]) * W;
                const float *refa = oneacc + ((size_t)tb * MQ + idx[k]) * hd;
                if (npos && memcmp(out[k], ref, 4 * (size_t)npos)) det_fail(sc, K->name, "multi-query scores vs one query", npos, nq, hd);
                for (size_t p = (size_t)npos; p < W; p++)
                    if (out[k][p] != -3.0f) det_fail(sc, K->name, "multi-query scores wrote past npos", npos, nq, hd);
                if (memcmp(acc[k], refa, 4 * (size_t)hd)) det_fail(ac, K->name, "multi-query accum vs one query", npos, nq, hd);
            }
        }
    }
    free(kh), free(kf), free(q), free(w), free(a0), free(one), free(oneacc), free(got), free(gotacc);
}

/* Softmax rows: SIMD (polynomial exp, lane-order sum) against scalar
 * (expf, position-order sum). Per element |a - b| <= (8 + n) u * max(b, 1e-30):
 * a few ulp for exp, and the sum of n terms taken in another order. Nothing
 * past x[n] is written. */
void test_softmax(const rs_kernels *S, const rs_kernels *V, stat_t *st) {
    static const int lens[] = {1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 100, 257, 1000, 4099};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (int kind = 0; kind < 3; kind++) {
            int n = lens[li];
            float *a = malloc(sizeof(float) * (size_t)(n + 1)), *b = malloc(sizeof(float) * (size_t)(n + 1));
            for (int i = 0; i < n; i++) {
                float v = kind == 0 ? rnds() * 20.0f               /* wide: many tiny weights */
                          : kind == 1 ? (float)(rnd64() % 5) * 0.5f /* ties */
                                      : rnds() * 100.0f;         /* exponents far below -87 */
                a[i] = b[i] = v;
            }
            a[n] = b[n] = 12345.0f;
            float ms, mv;
            float ss = S->softmax(b, n, &ms);
            float sv = V->softmax(a, n, &mv);
            double total = 0;
            for (int i = 0; i < n; i++) {
                double ref = b[i] > 1e-30 ? b[i] : 1e-30;
                close_enough(st, a[i], b[i], ref, 8.0 + n, "softmax", n, i);
                total += a[i];
            }
            /* the returned max is exact; the sum one of n rounded terms */
            if (fabs(total - 1.0) > 1e-5 || a[n] != 12345.0f || mv != ms || !(ss >= 1.0f) ||
                fabs((double)sv - ss) > 1e-6 * (8.0 + n) * ss) {
                if (st->fails++ < 5)
                    fprintf(stderr, "FAIL softmax n=%d: weights sum %.9g, guard %g, max %g/%g, sum %.9g/%.9g\n", n,
                            total, a[n], (double)mv, (double)ms, (double)sv, (double)ss);
                g_fail = 1;
            }
            free(a), free(b);
        }
}


/* Two tables whose f16 attention, softmax and SwiGLU promise the same bits (AVX2
 * and AVX-512: kernels.h's per-query sequence): every query of every multi
 * call equal bit for bit, over head widths inside and outside the AVX-512
 * fast paths, partial row tiles and 1..64 queries (attention.c's most a call) with their own row
 * counts; every softmax weight, max and sum, and every SwiGLU output,
 * over lengths 1..4099. */
enum { SQ = 64 }; /* attention.c's ATTN_QCAP: up to 16 tiles of 4 queries, 21 transposed tiles of 3 */

void test_attn_same_bits(const rs_kernels *A, const rs_kernels *B, stat_t *st) {
    static const int hds[] = {64, 128, 8, 16, 24, 48, 80, 96, 112, 13, 256, 264};
    static const int nposs[] = {16, 1, 5, 8, 9, 15, 17, 33, 0};
    for (size_t h = 0; h < sizeof hds / sizeof hds[0]; h++)
        for (size_t pi = 0; pi < sizeof nposs / sizeof nposs[0]; pi++) {
            const int hd = hds[h], npos = nposs[pi];
            const size_t stride = (size_t)hd + (size_t)rndi(3) * 8 + (size_t)rndi(2);
            const size_t n = stride * (size_t)(npos > 0 ? npos : 1);
            uint16_t *kv = xmalloc(2 * n);
            for (size_t i = 0; i < n; i++) kv[i] = f16(rnds());
            const size_t W = (size_t)npos + 9; /* a guard past npos */
            float *q = xmalloc(4 * (size_t)hd * SQ), *w = xmalloc(4 * W * SQ), *a0 = xmalloc(4 * (size_t)hd * SQ);
            float *out[2][SQ], *acc[2][SQ];
            const float *qin[SQ], *win[SQ];
            int np[SQ];
            for (int j = 0; j < SQ; j++) {
                for (int i = 0; i < hd; i++) q[(size_t)j * hd + i] = rnd_act(), a0[(size_t)j * hd + i] = rnds();
                for (size_t p = 0; p < W; p++) w[(size_t)j * W + p] = rnds();
                qin[j] = q + (size_t)j * hd, win[j] = w + (size_t)j * W;
                np[j] = rndi(2) ? npos : rndi(npos + 1);
                for (int t = 0; t < 2; t++) out[t][j] = xmalloc(4 * W), acc[t][j] = xmalloc(4 * (size_t)hd);
            }
            const float scale = 0.125f + 0.01f * rndu();
            for (int nq = 1; nq <= SQ; nq = nq < 12 ? nq + 1 : nq < SQ && nq + 3 > SQ ? SQ : nq + 3) { /* ..63, 64 */
                for (int t = 0; t < 2; t++) {
                    const rs_kernels *K = t ? B : A;
                    for (int j = 0; j < nq; j++) {
                        memcpy(acc[t][j], a0 + (size_t)j * hd, 4 * (size_t)hd);
                        for (size_t p = 0; p < W; p++) out[t][j][p] = -3.0f;
                    }
                    K->attn_scores_f16_multi(npos, hd, kv, stride, nq, qin, scale, out[t]);
                    K->attn_accum_f16_multi(hd, kv, stride, nq, np, win, acc[t]);
                }
                for (int j = 0; j < nq; j++) {
                    st->checks++;
                    if (npos && memcmp(out[0][j], out[1][j], 4 * (size_t)npos))
                        det_fail(st, B->name, "f16 scores differ from the other table's", npos, nq, hd);
                    for (size_t p = (size_t)npos; p < W; p++)
                        if (out[1][j][p] != -3.0f) det_fail(st, B->name, "f16 scores wrote past npos", npos, nq, hd);
                    if (memcmp(acc[0][j], acc[1][j], 4 * (size_t)hd))
                        det_fail(st, B->name, "f16 accum differs from the other table's", npos, nq, hd);
                }
            }
            for (int j = 0; j < SQ; j++)
                for (int t = 0; t < 2; t++) free(out[t][j]), free(acc[t][j]);
            free(kv), free(q), free(w), free(a0);
        }
    /* softmax: every weight, the max and the sum */
    for (int n = 1; n <= 4099; n = n < 80 ? n + 1 : n * 2 + 3) {
        float *x[2] = {xmalloc(4 * (size_t)n), xmalloc(4 * (size_t)n)}, mx[2], sum[2];
        for (int i = 0; i < n; i++) x[0][i] = x[1][i] = 8.0f * rnds() - (i % 7 == 3 ? 30.0f : 0.0f);
        sum[0] = A->softmax(x[0], n, &mx[0]);
        sum[1] = B->softmax(x[1], n, &mx[1]);
        st->checks++;
        if (memcmp(x[0], x[1], 4 * (size_t)n) || memcmp(mx, mx + 1, 4) || memcmp(sum, sum + 1, 4))
            det_fail(st, B->name, "softmax differs from the other table's", n, 1, 1);
        free(x[0]), free(x[1]);
    }
    /* swiglu: every output */
    for (int n = 1; n <= 4099; n = n < 40 ? n + 1 : n * 2 + 3) {
        float *g[2] = {xmalloc(4 * (size_t)n), xmalloc(4 * (size_t)n)}, *u = xmalloc(4 * (size_t)n);
        for (int i = 0; i < n; i++) g[0][i] = g[1][i] = 100.0f * rnds(), u[i] = rnds();
        A->swiglu(g[0], u, n);
        B->swiglu(g[1], u, n);
        st->checks++;
        if (memcmp(g[0], g[1], 4 * (size_t)n)) det_fail(st, B->name, "swiglu differs from the other table's", n, 1, 1);
        free(g[0]), free(g[1]), free(u);
    }
}
