/* The harness shared by the kernel tests (test_kernels*.c): seeded random
 * data, valid weight blocks, the error-bound check and its report, and the
 * determinism helper. See test_kernels.c for the tolerances. */
#ifndef RS_KERNEL_HARNESS_H
#define RS_KERNEL_HARNESS_H

#include "kernels.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { T_Q4_0, T_Q4_1, T_Q8_0 }; /* quantized weight types, as qname[] */

extern int g_fail;      /* any check failed */
extern int g_exact_q;   /* SIMD quantized GEMMs must equal the scalar's bit for bit */
extern int g_extreme;   /* fill weights and activations at their largest magnitudes */
extern const char *qname[];
extern const char *fname[];

uint64_t rnd64(void);
uint32_t rnd32(void);
float rndu(void);
float rnds(void);
int rndi(int n);
float rnd_act(void);
uint16_t f16(float f);
uint16_t rnd_scale(float lo, float hi);
void *xmalloc(size_t n);
size_t qbsize(int type);
void fill_qrow(int type, void *row, int nb);
double qterms(int type, const void *row, const rs_block_q16 *x, int nb);

typedef struct {
    const char *name;
    int checks;
    double max_rel; /* max |a-b| / (u * S) */
    int fails;
    char shapes[160];
} stat_t;

int close_enough(stat_t *st, float a, float b, double S, double n, const char *what, int i, int j);
void det_fail(stat_t *st, const char *table, const char *what, int a, int b, int c);
void stat_print(const stat_t *st);

/* run(ctx, r0, r1, t0, t1, y, ldy): compute rows [r0, r1) x tokens [t0, t1) */
typedef void (*run_fn)(const void *ctx, int r0, int r1, int t0, int t1, float *y, size_t ldy);
int same_all_tilings(run_fn run, const void *ctx, int nr, int nt, const float *full, size_t ldy);

rs_gemm_q_fn qfn(const rs_kernels *K, int type);

/* the checks, one file each family */
void test_gemm_q(const rs_kernels *S, const rs_kernels *V, int type, stat_t *st, int nr, int nt, int k, int flags);
void test_gemm_f(const rs_kernels *S, const rs_kernels *V, int type, stat_t *st, int nr, int nt, int k);
void test_attn(const rs_kernels *S, const rs_kernels *V, int f16kv, stat_t *sc, stat_t *ac, int npos, int hd);
void test_attn_multi(const rs_kernels *S, const rs_kernels *V, int f16kv, stat_t *sc, stat_t *ac, int npos, int hd);
void test_softmax(const rs_kernels *S, const rs_kernels *V, stat_t *st);
void test_attn_same_bits(const rs_kernels *A, const rs_kernels *B, stat_t *st);
void test_swiglu(const rs_kernels *S, const rs_kernels *V, stat_t *st);
void test_quantize(const rs_kernels *S, const rs_kernels *V, stat_t *st);
void test_f16(const rs_kernels *S, const rs_kernels *V, stat_t *st);
void test_select(const rs_kernels *V);
void bench(const rs_kernels *S, const rs_kernels *V);

#endif
