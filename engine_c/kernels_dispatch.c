/* Picking the kernel table: the best this CPU runs, or the one named by
 * RADIXSERVE_KERNELS ("scalar", "avx2", "avx512", "neon"). No printing, no
 * abort. */
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
static int cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
}

/* libgcc's checks include the OS saving the zmm state (XCR0) */
static int cpu_has_avx512(void) {
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}
#endif

#define SET_ERR(...) \
    do { \
        if (err && err_len) snprintf(err, err_len, __VA_ARGS__); \
    } while (0)

const rs_kernels *rs_kernels_select(char *err, size_t err_len) {
    const char *want = getenv("RADIXSERVE_KERNELS");
    if (want && !*want) want = NULL;
    if (want && !strcmp(want, "scalar")) return &rs_kernels_scalar;
    if (want && strcmp(want, "avx2") && strcmp(want, "avx512") && strcmp(want, "neon")) {
        SET_ERR("RADIXSERVE_KERNELS=%s: unknown kernel table (want scalar, avx2, avx512 or neon)", want);
        return NULL;
    }
#if defined(__x86_64__)
    if (!want || !strcmp(want, "avx512")) {
        if (cpu_has_avx512()) return &rs_kernels_avx512;
        if (want) {
            SET_ERR("RADIXSERVE_KERNELS=%s: this CPU lacks AVX-512 F/BW/VL/VNNI (or AVX2, FMA, F16C)", want);
            return NULL;
        }
    }
    if (!want || !strcmp(want, "avx2")) {
        if (cpu_has_avx2()) return &rs_kernels_avx2;
        if (want) {
            SET_ERR("RADIXSERVE_KERNELS=%s: this CPU lacks AVX2, FMA or F16C", want);
            return NULL;
        }
        return &rs_kernels_scalar;
    }
#elif defined(__aarch64__)
    if (!want || !strcmp(want, "neon")) return &rs_kernels_neon;
#else
    if (!want) return &rs_kernels_scalar;
#endif
    SET_ERR("RADIXSERVE_KERNELS=%s: not available on this CPU architecture", want);
    return NULL;
}
