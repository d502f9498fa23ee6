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
#include "kernels.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int g_fail;
/* set where the SIMD quantized GEMMs must equal the scalar's bit for bit
 * (avx2: same per-block float operations; NEON keeps m*s apart: bounded) */
static int g_exact_q;

/* ------------------------------------------------------------ random data */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd64(void) {
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static uint32_t rnd32(void) { return (uint32_t)(rnd64() >> 32); }
static float rndu(void) { return (float)(rnd64() >> 40) / 16777216.0f; } /* [0, 1) */
static float rnds(void) { return 2.0f * rndu() - 1.0f; }                 /* [-1, 1) */
static int rndi(int n) { return (int)(rnd64() % (uint64_t)n); }

/* extreme inputs: every weight at its largest magnitude and every
 * activation at +-1 (so q = +-32767): the integer sums at their limits */
static int g_extreme;

/* activations: mostly moderate, some outliers, like hidden states */
static float rnd_act(void) {
    if (g_extreme) return rndi(2) ? 1.0f : -1.0f;
    float v = rnds();
    if (rndi(64) == 0) v *= 20.0f;
    return v;
}

static uint16_t f16(float f) { return rs_f32_to_f16(f); }

/* a random f16 scale of either sign, magnitude in [lo, hi) */
static uint16_t rnd_scale(float lo, float hi) {
    float v = lo + (hi - lo) * rndu();
    return f16(rndi(2) ? v : -v);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* ------------------------------------------------------------ weight rows */

enum { T_Q4_0, T_Q4_1, T_Q8_0 };
static const char *qname[] = {"gemm_q4_0", "gemm_q4_1", "gemm_q8_0"};
static size_t qbsize(int type) {
    return type == T_Q4_0 ? sizeof(rs_block_q4_0) : type == T_Q4_1 ? sizeof(rs_block_q4_1) : sizeof(rs_block_q8_0);
}

static void fill_qrow(int type, void *row, int nb) {
    for (int b = 0; b < nb; b++) {
        if (type == T_Q4_0) {
            rs_block_q4_0 *blk = (rs_block_q4_0 *)row + b;
            blk->d = rnd_scale(1e-3f, 5e-2f);
            for (int j = 0; j < RS_QK / 2; j++) blk->qs[j] = g_extreme ? 0x00 : (uint8_t)rnd32(); /* -8 */
        } else if (type == T_Q4_1) {
            rs_block_q4_1 *blk = (rs_block_q4_1 *)row + b;
            blk->d = f16(1e-3f + 5e-2f * rndu());
            blk->m = rnd_scale(1e-2f, 0.5f);
            for (int j = 0; j < RS_QK / 2; j++) blk->qs[j] = g_extreme ? 0xff : (uint8_t)rnd32(); /* 15 */
        } else {
            rs_block_q8_0 *blk = (rs_block_q8_0 *)row + b;
            blk->d = rnd_scale(1e-4f, 1e-2f);
            /* ggml never writes -128, but a file may hold it: the kernels take |w| <= 128 */
            for (int j = 0; j < RS_QK; j++)
                blk->qs[j] = g_extreme ? (int8_t)(rndi(2) ? -128 : 127) : (int8_t)(rndi(256) - 128);
        }
    }
}

/* sum over blocks of |d_w x.d| sum|q_w q_x| + |m_w x.s|, in double */
static double qterms(int type, const void *row, const rs_block_q16 *x, int nb) {
    double s = 0.0;
    for (int b = 0; b < nb; b++) {
        double isum = 0.0, dw, extra = 0.0;
        if (type == T_Q4_0) {
            const rs_block_q4_0 *blk = (const rs_block_q4_0 *)row + b;
            dw = rs_f16_to_f32(blk->d);
            for (int j = 0; j < RS_QK / 2; j++)
                isum += abs(((blk->qs[j] & 15) - 8) * x[b].qs[j]) + abs(((blk->qs[j] >> 4) - 8) * x[b].qs[j + 16]);
        } else if (type == T_Q4_1) {
            const rs_block_q4_1 *blk = (const rs_block_q4_1 *)row + b;
            dw = rs_f16_to_f32(blk->d);
            extra = fabs((double)rs_f16_to_f32(blk->m) * x[b].s);
            for (int j = 0; j < RS_QK / 2; j++)
                isum += abs((blk->qs[j] & 15) * x[b].qs[j]) + abs((blk->qs[j] >> 4) * x[b].qs[j + 16]);
        } else {
            const rs_block_q8_0 *blk = (const rs_block_q8_0 *)row + b;
            dw = rs_f16_to_f32(blk->d);
            for (int j = 0; j < RS_QK; j++) isum += abs(blk->qs[j] * x[b].qs[j]);
        }
        s += fabs(dw * x[b].d) * isum + extra;
    }
    return s;
}

/* -------------------------------------------------------------- reporting */

typedef struct {
    const char *name;
    int checks;
    double max_rel; /* max |a-b| / (u * S) */
    int fails;
    char shapes[160];
} stat_t;

/* |a - b| <= n * u * S (S > 0), records the ratio */
static int close_enough(stat_t *st, float a, float b, double S, double n, const char *what, int i, int j) {
    const double u = FLT_EPSILON / 2;
    double err = fabs((double)a - (double)b);
    double ratio = S > 0 ? err / (u * S) : (err == 0 ? 0 : INFINITY);
    st->checks++;
    if (ratio > st->max_rel) st->max_rel = ratio;
    if (!(err <= n * u * S) && !(a == b)) {
        if (st->fails++ < 5)
            fprintf(stderr, "FAIL %s %s [%d,%d]: simd %.9g scalar %.9g err %.3g > bound %.3g\n", st->name, what, i, j,
                    (double)a, (double)b, err, n * u * S);
        g_fail = 1;
        return 0;
    }
    return 1;
}

static void det_fail(stat_t *st, const char *table, const char *what, int a, int b, int c) {
    if (st->fails++ < 5)
        fprintf(stderr, "FAIL %s determinism (%s): %s differs, shape %d x %d, k %d\n", st->name, table, what, a, b, c);
    g_fail = 1;
}

static void stat_print(const stat_t *st) {
    printf("%-6s %-18s %7d checks  max err %6.2f u*S  [%s]\n", st->fails ? "FAIL" : "ok", st->name, st->checks,
           st->max_rel, st->shapes);
}

/* ---------------------------------------------------- determinism helpers */

/* Run gemm on the block [r0,r1) x [t0,t1) writing into y (ldy), for the
 * tiling checks. */
typedef void (*run_fn)(const void *ctx, int r0, int r1, int t0, int t1, float *y, size_t ldy);

static void blank(float *y, const float *full, int nr, int nt, size_t ldy) {
    memcpy(y, full, sizeof(float) * ldy * (size_t)nt);
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < nr; r++) y[(size_t)t * ldy + r] = NAN;
}

static int same_all_tilings(run_fn run, const void *ctx, int nr, int nt, const float *full, size_t ldy) {
    const size_t bytes = sizeof(float) * ldy * (size_t)nt;
    float *y = xmalloc(bytes);
    int ok = 1;
    /* each element alone */
    blank(y, full, nr, nt, ldy);
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < nr; r++) run(ctx, r, r + 1, t, t + 1, y, ldy);
    ok &= !memcmp(y, full, bytes);
    /* one row at a time with all tokens; all rows, one token at a time */
    blank(y, full, nr, nt, ldy);
    for (int r = 0; r < nr; r++) run(ctx, r, r + 1, 0, nt, y, ldy);
    ok &= !memcmp(y, full, bytes);
    blank(y, full, nr, nt, ldy);
    for (int t = 0; t < nt; t++) run(ctx, 0, nr, t, t + 1, y, ldy);
    ok &= !memcmp(y, full, bytes);
    /* random 2 x 2 splits */
    for (int rep = 0; rep < 3; rep++) {
        int rs = rndi(nr + 1), ts = rndi(nt + 1);
        blank(y, full, nr, nt, ldy);
        if (rs > 0 && ts > 0) run(ctx, 0, rs, 0, ts, y, ldy);
        if (rs < nr && ts > 0) run(ctx, rs, nr, 0, ts, y, ldy);
        if (rs > 0 && ts < nt) run(ctx, 0, rs, ts, nt, y, ldy);
        if (rs < nr && ts < nt) run(ctx, rs, nr, ts, nt, y, ldy);
        ok &= !memcmp(y, full, bytes);
    }
    free(y);
    return ok;
}

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

static rs_gemm_q_fn qfn(const rs_kernels *K, int type) {
    return type == T_Q4_0 ? K->gemm_q4_0 : type == T_Q4_1 ? K->gemm_q4_1 : K->gemm_q8_0;
}

static void test_gemm_q(const rs_kernels *S, const rs_kernels *V, int type, stat_t *st, int nr, int nt, int k,
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
static const char *fname[] = {"gemm_f32", "gemm_f16", "gemm_bf16"};

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

static float wval(int type, const char *row, int i) {
    if (type == T_F32) {
        float f;
        memcpy(&f, row + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, row + 2 * i, 2);
    return type == T_F16 ? rs_f16_to_f32(h) : rs_bf16_to_f32(h);
}

static void test_gemm_f(const rs_kernels *S, const rs_kernels *V, int type, stat_t *st, int nr, int nt, int k) {
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

/* ------------------------------------------------------------- attention */

static void test_attn(const rs_kernels *S, const rs_kernels *V, int f16kv, stat_t *sc, stat_t *ac, int npos,
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

static void test_attn_multi(const rs_kernels *S, const rs_kernels *V, int f16kv, stat_t *sc, stat_t *ac, int npos,
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

/* -------------------------------------------------------------- quantize */

static void test_quantize(const rs_kernels *S, const rs_kernels *V, stat_t *st) {
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

static void test_f16(const rs_kernels *S, const rs_kernels *V, stat_t *st) {
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

static void test_select(const rs_kernels *V) {
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

static void bench(const rs_kernels *S, const rs_kernels *V) {
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

/* Softmax rows: SIMD (polynomial exp, lane-order sum) against scalar
 * (expf, position-order sum). Per element |a - b| <= (8 + n) u * max(b, 1e-30):
 * a few ulp for exp, and the sum of n terms taken in another order. Nothing
 * past x[n] is written. */
static void test_softmax(const rs_kernels *S, const rs_kernels *V, stat_t *st) {
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
            S->softmax(b, n);
            V->softmax(a, n);
            double total = 0;
            for (int i = 0; i < n; i++) {
                double ref = b[i] > 1e-30 ? b[i] : 1e-30;
                close_enough(st, a[i], b[i], ref, 8.0 + n, "softmax", n, i);
                total += a[i];
            }
            if (fabs(total - 1.0) > 1e-5 || a[n] != 12345.0f) {
                if (st->fails++ < 5) fprintf(stderr, "FAIL softmax n=%d: sum %.9g, guard %g\n", n, total, a[n]);
                g_fail = 1;
            }
            free(a), free(b);
        }
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv) {
    const rs_kernels *S = &rs_kernels_scalar, *V = S;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
        V = &rs_kernels_avx2, g_exact_q = 1;
    else
        printf("note: this CPU lacks AVX2/FMA/F16C: only the scalar table is checked\n");
#elif defined(__aarch64__)
    V = &rs_kernels_neon;
#endif
    if (argc > 1 && !strcmp(argv[1], "--bench")) {
        bench(S, V);
        return 0;
    }
    printf("kernels: %s against %s\n", V->name, S->name);

    stat_t st;
    /* quantized GEMMs */
    static const int ks[] = {32, 64, 576, 1536};
    static const int shapes[][2] = {{1, 1}, {3, 5}, {7, 3}, {5, 7}, {13, 17}, {17, 13}, {2, 1}, {4, 2},
                                    {1, 16}, {9, 4}, {6, 70}, {37, 1}};
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
        g_extreme = 1; /* integer sums at their limits */
        test_gemm_q(S, V, type, &st, 5, 7, 1536, 1);
        test_gemm_q(S, V, type, &st, 4, 4, 64, 0);
        g_extreme = 0;
        snprintf(st.shapes, sizeof st.shapes,
                 "nr x nt x k: 1..37 x 1..70 x {32,64,576,1536}, 192x1x576, 8x130x64, extremes");
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
    st.name = "quantize_q16";
    test_quantize(S, V, &st);
    stat_print(&st);
    memset(&st, 0, sizeof st);
    st.name = "f32_to_f16";
    test_f16(S, V, &st);
    stat_print(&st);
    test_select(V);

    printf("%s\n", g_fail ? "test_kernels: FAILED" : "test_kernels: all passed");
    return g_fail ? 1 : 0;
}
