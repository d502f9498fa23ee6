/* The kernel tests' shared harness (kernel_harness.h). */
#define _POSIX_C_SOURCE 200809L
#include "kernel_harness.h"

int g_fail;
/* set where the SIMD quantized GEMMs must equal the scalar's bit for bit
 * (avx2: same per-block float operations; NEON keeps m*s apart: bounded) */
int g_exact_q;

/* ------------------------------------------------------------ random data */

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

uint64_t rnd64(void) {
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
uint32_t rnd32(void) { return (uint32_t)(rnd64() >> 32); }
float rndu(void) { return (float)(rnd64() >> 40) / 16777216.0f; } /* [0, 1) */
float rnds(void) { return 2.0f * rndu() - 1.0f; }                 /* [-1, 1) */
int rndi(int n) { return (int)(rnd64() % (uint64_t)n); }

/* extreme inputs: every weight at its largest magnitude and every
 * activation at +-1 (so q = +-32767): the integer sums at their limits */
int g_extreme;

/* activations: mostly moderate, some outliers, like hidden states */
float rnd_act(void) {
    if (g_extreme) return rndi(2) ? 1.0f : -1.0f;
    float v = rnds();
    if (rndi(64) == 0) v *= 20.0f;
    return v;
}

uint16_t f16(float f) { return rs_f32_to_f16(f); }

/* a random f16 scale of either sign, magnitude in [lo, hi) */
uint16_t rnd_scale(float lo, float hi) {
    float v = lo + (hi - lo) * rndu();
    return f16(rndi(2) ? v : -v);
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* ------------------------------------------------------------ weight rows */

const char *qname[] = {"gemm_q4_0", "gemm_q4_1", "gemm_q8_0"};
size_t qbsize(int type) {
    return type == T_Q4_0 ? sizeof(rs_block_q4_0) : type == T_Q4_1 ? sizeof(rs_block_q4_1) : sizeof(rs_block_q8_0);
}

void fill_qrow(int type, void *row, int nb) {
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
double qterms(int type, const void *row, const rs_block_q16 *x, int nb) {
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


/* |a - b| <= n * u * S (S > 0), records the ratio */
int close_enough(stat_t *st, float a, float b, double S, double n, const char *what, int i, int j) {
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

void det_fail(stat_t *st, const char *table, const char *what, int a, int b, int c) {
    if (st->fails++ < 5)
        fprintf(stderr, "FAIL %s determinism (%s): %s differs, shape %d x %d, k %d\n", st->name, table, what, a, b, c);
    g_fail = 1;
}

void stat_print(const stat_t *st) {
    printf("%-6s %-18s %7d checks  max err %6.2f u*S  [%s]\n", st->fails ? "FAIL" : "ok", st->name, st->checks,
           st->max_rel, st->shapes);
}

/* ---------------------------------------------------- determinism helpers */

/* Run gemm on the block [r0,r1) x [t0,t1) writing into y (ldy), for the
 * tiling checks. */

static void blank(float *y, const float *full, int nr, int nt, size_t ldy) {
    memcpy(y, full, sizeof(float) * ldy * (size_t)nt);
    for (int t = 0; t < nt; t++)
        for (int r = 0; r < nr; r++) y[(size_t)t * ldy + r] = NAN;
}

int same_all_tilings(run_fn run, const void *ctx, int nr, int nt, const float *full, size_t ldy) {
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

