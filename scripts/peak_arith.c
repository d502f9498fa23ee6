/* Peak arithmetic rates of this CPU, for bench_engine.py's compute floor.
 *
 * Batched decode and prefill are bound by arithmetic, not by memory: their
 * physical limit is the instruction throughput of the multiply-adds the
 * engine's kernels use. This measures it with register-only loops (12
 * independent accumulators, no loads; an input made opaque each iteration
 * so that nothing is hoisted), on 1..T threads at once:
 *   int16: the quantized GEMM's products. avx512: vpdpwssd zmm (32 products
 *          per instruction); avx2: vpmaddwd ymm + vpaddd (16 per pair).
 *   f32:   attention's FMAs. avx512: zmm; avx2: ymm.
 * Usage: peak_arith ISA THREADS; prints one JSON object:
 *   {"isa": ..., "threads": T, "int16_macs": ..., "f32_macs": ...}
 * rates summed over the threads, multiply-adds per second. Built by
 * bench_engine.py with the machine's cc; no -march: the loops pick their
 * instruction sets by target attribute. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

enum { ITERS = 20000000 };

#if defined(__x86_64__)
#include <immintrin.h>

/* Each returns multiply-adds per second of one thread. The asm barrier keeps
 * the accumulators in registers and the loop from being folded. */
#define CHAINS(T, init, step, keep)                                   \
    T a0 = init, a1 = init, a2 = init, a3 = init, a4 = init, a5 = init; \
    T a6 = init, a7 = init, a8 = init, a9 = init, a10 = init, a11 = init; \
    double t0 = now();                                                \
    for (long i = 0; i < ITERS; i++) {                                \
        step(a0); step(a1); step(a2); step(a3); step(a4); step(a5);   \
        step(a6); step(a7); step(a8); step(a9); step(a10); step(a11); \
        keep(a0); keep(a1); keep(a2); keep(a3); keep(a4); keep(a5);   \
        keep(a6); keep(a7); keep(a8); keep(a9); keep(a10); keep(a11); \
        keep(x);                                                      \
    }                                                                 \
    double dt = now() - t0;

__attribute__((target("avx512f,avx512bw,avx512vnni"))) static double int16_avx512(void) {
    __m512i x = _mm512_set1_epi16(3); const __m512i y = _mm512_set1_epi16(5);
#define STEP(a) a = _mm512_dpwssd_epi32(a, x, y)
#define KEEP(a) __asm__ volatile("" : "+v"(a))
    CHAINS(__m512i, _mm512_setzero_si512(), STEP, KEEP)
#undef STEP
#undef KEEP
    return 12.0 * 32.0 * ITERS / dt;
}

__attribute__((target("avx512f"))) static double f32_avx512(void) {
    __m512 x = _mm512_set1_ps(0.999f); const __m512 y = _mm512_set1_ps(0.001f);
#define STEP(a) a = _mm512_fmadd_ps(a, x, y)
#define KEEP(a) __asm__ volatile("" : "+v"(a))
    CHAINS(__m512, _mm512_setzero_ps(), STEP, KEEP)
#undef STEP
#undef KEEP
    return 12.0 * 16.0 * ITERS / dt;
}

__attribute__((target("avx2"))) static double int16_avx2(void) {
    __m256i x = _mm256_set1_epi16(3); const __m256i y = _mm256_set1_epi16(5);
#define STEP(a) a = _mm256_add_epi32(a, _mm256_madd_epi16(a, y))
#define KEEP(a) __asm__ volatile("" : "+x"(a))
    CHAINS(__m256i, _mm256_setzero_si256(), STEP, KEEP)
#undef STEP
#undef KEEP
    return 12.0 * 16.0 * ITERS / dt;
}

__attribute__((target("avx2,fma"))) static double f32_avx2(void) {
    __m256 x = _mm256_set1_ps(0.999f); const __m256 y = _mm256_set1_ps(0.001f);
#define STEP(a) a = _mm256_fmadd_ps(a, x, y)
#define KEEP(a) __asm__ volatile("" : "+x"(a))
    CHAINS(__m256, _mm256_setzero_ps(), STEP, KEEP)
#undef STEP
#undef KEEP
    return 12.0 * 8.0 * ITERS / dt;
}
#endif

typedef struct run {
    double (*fn)(void);
    double rate;
    pthread_barrier_t *start;
} run;

/* after every thread has started, so that the timed loops overlap (rates
 * timed one after another would add up to more than the CPU does at once) */
static void *run_one(void *arg) {
    run *r = arg;
    pthread_barrier_wait(r->start);
    r->rate = r->fn();
    return NULL;
}

/* fn on `threads` threads at once; the sum of their rates */
static double concurrent(double (*fn)(void), int threads) {
    run r[64] = {{0}};
    pthread_t th[64];
    pthread_barrier_t start;
    if (pthread_barrier_init(&start, NULL, (unsigned)threads) != 0) return -1.0;
    for (int i = 0; i < threads; i++) r[i].fn = fn, r[i].start = &start;
    for (int i = 1; i < threads; i++)
        if (pthread_create(&th[i], NULL, run_one, &r[i]) != 0) return -1.0; /* main then exits, ending the threads held at the barrier */
    run_one(&r[0]);
    double sum = r[0].rate;
    for (int i = 1; i < threads; i++) {
        pthread_join(th[i], NULL);
        sum += r[i].rate;
    }
    pthread_barrier_destroy(&start);
    return sum;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s avx512|avx2 THREADS\n", argv[0]);
        return 2;
    }
    const char *isa = argv[1];
    int threads = atoi(argv[2]);
    if (threads < 1 || threads > 64) {
        fprintf(stderr, "THREADS must be 1..64, not %s\n", argv[2]);
        return 2;
    }
    double (*i16)(void) = NULL, (*f32)(void) = NULL;
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (!strcmp(isa, "avx512") && __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw"))
        i16 = int16_avx512, f32 = f32_avx512;
    else if (!strcmp(isa, "avx2") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        i16 = int16_avx2, f32 = f32_avx2;
#endif
    if (!i16) {
        fprintf(stderr, "no peak loop for kernels '%s' on this CPU\n", isa);
        return 1;
    }
    double a = concurrent(i16, threads), b = concurrent(f32, threads);
    if (a < 0 || b < 0) {
        fprintf(stderr, "could not start %d threads\n", threads);
        return 1;
    }
    printf("{\"isa\": \"%s\", \"threads\": %d, \"int16_macs\": %.6g, \"f32_macs\": %.6g}\n", isa, threads, a, b);
    return 0;
}
