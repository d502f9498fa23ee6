/* A per-thread scratch buffer for the kernels (the GEMM's pack): kept from
 * one call to the next and grown as needed. A malloc and a free per GEMM
 * call (some 1,800 per 8-stream decode step) measured ~1.8 % of the step in
 * glibc's allocator. Freed when its thread exits. */
#include "scratch.h"

#include <pthread.h>
#include <stdlib.h>

/* Under AddressSanitizer the part past what the caller asked for is
 * poisoned, so that a kernel that overruns its buffer is caught though the
 * buffer kept a larger size from an earlier call. */
#if defined(__SANITIZE_ADDRESS__)
#define RS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RS_ASAN 1
#endif
#endif
#ifdef RS_ASAN
#include <sanitizer/asan_interface.h>
#endif

typedef struct scratch {
    void *p;
    size_t n;
} scratch;

static pthread_key_t key;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int key_ok;

static void scratch_free(void *v) {
    scratch *s = v;
    free(s->p);
    free(s);
}

static void make_key(void) { key_ok = pthread_key_create(&key, scratch_free) == 0; }

void *rs_scratch(size_t n) {
    pthread_once(&once, make_key);
    if (!key_ok) return NULL;
    scratch *s = pthread_getspecific(key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) return NULL;
        if (pthread_setspecific(key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->n < n) {
        size_t m = (n + 63) / 64 * 64;
        void *p = aligned_alloc(64, m);
        if (!p) return NULL;
        free(s->p);
        s->p = p, s->n = m;
    }
#ifdef RS_ASAN
    ASAN_UNPOISON_MEMORY_REGION(s->p, n);
    ASAN_POISON_MEMORY_REGION((char *)s->p + n, s->n - n);
#endif
    return s->p;
}
