/* Thread pool for one parallel-for at a time.
 *
 * Each thread owns a contiguous share of the tasks, [front, back) packed in
 * one 64-bit word: it claims its own tasks from the front, in order, and when
 * they are gone steals single tasks from the back of the others' shares, by
 * compare-and-swap. Contiguous shares matter for decode: a thread's
 * consecutive tasks are consecutive rows of a matrix, so its weights arrive
 * from DRAM as one prefetchable stream (tasks of 48 rows handed out in turn
 * measured ~25 % slower). Stealing matters on a loaded machine: a worker the
 * OS has descheduled costs nothing when the others (the caller included)
 * have already run its share.
 *
 * A claim is valid by construction: front < back is checked inside the word
 * the CAS replaces, so a worker that wakes late can only claim a task of the
 * job that word belongs to now, and it reads fn and ctx after the claim (that
 * job cannot end before the claimed task counts itself done).
 *
 * Waiting: spin briefly (a decode step runs a few hundred small jobs; a
 * futex wake per job would cost more than the work), then yield the core
 * (another runnable thread may be the one we wait for), then sleep. */
#define _DEFAULT_SOURCE
#include "threadpool.h"
#include "rs_engine.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

enum { SPIN_ITERS = 4000, YIELD_ITERS = 200 };

typedef struct worker {
    struct rs_pool *pool;
    int index;
    pthread_t thread;
} worker;

/* One thread's share of the current job: front << 32 | back, alone on its
 * cache line (its owner claims from it at every task). */
typedef struct share {
    _Alignas(64) _Atomic uint64_t range;
} share;

struct rs_pool {
    int n;
    worker *workers;
    share *shares;            /* [n] */
    pthread_mutex_t mu;
    pthread_cond_t wake;      /* a new job, or stop */
    pthread_cond_t done_cv;   /* the last task of a job finished */
    _Atomic uint32_t gen;     /* bumped once per job: what workers wait on */
    atomic_int n_done;        /* tasks of the current job finished */
    atomic_int stop;
    /* Sleepers announce themselves here before their last check, and a
     * waker reads these after its change, both seq_cst (Dekker): either the
     * waker sees the sleeper and signals under mu, or the sleeper's check
     * sees the change. So a job start and a job end take mu only when
     * someone sleeps, not twice per job (~1.5 % of a decode token). */
    atomic_int n_sleeping;
    atomic_int caller_sleeping;
    atomic_int n_tasks;       /* of the current job; stable while any of its tasks runs */
    rs_task_fn fn;
    void *ctx;
};

/* One task of share s: its front one (the owner) or its back one (a thief);
 * -1 when the share is empty. */
static int claim(share *s, int steal) {
    uint64_t r = atomic_load_explicit(&s->range, memory_order_acquire);
    for (;;) {
        uint32_t front = (uint32_t)(r >> 32), back = (uint32_t)r;
        if (front >= back) return -1;
        uint64_t next = steal ? r - 1 : r + ((uint64_t)1 << 32);
        if (atomic_compare_exchange_weak_explicit(&s->range, &r, next, memory_order_acq_rel,
                                                  memory_order_acquire))
            return (int)(steal ? back - 1 : front);
    }
}

static void run_one(rs_pool *p, int task, int thread) {
    int n_tasks = atomic_load_explicit(&p->n_tasks, memory_order_relaxed);
    p->fn(p->ctx, task, thread);
    if (atomic_fetch_add(&p->n_done, 1) + 1 == n_tasks && atomic_load(&p->caller_sleeping)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_signal(&p->done_cv);
        pthread_mutex_unlock(&p->mu);
    }
}

/* This thread's share in order, then the others' from their backs, until
 * every share is empty. */
static void run_tasks(rs_pool *p, int thread) {
    int t;
    while ((t = claim(&p->shares[thread], 0)) >= 0) run_one(p, t, thread);
    for (int k = 1; k < p->n; k++) {
        share *s = &p->shares[(thread + k) % p->n];
        while ((t = claim(s, 1)) >= 0) run_one(p, t, thread);
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    rs_pool *p = w->pool;
    uint32_t seen = 0;
    for (;;) {
        uint32_t g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen && !atomic_load(&p->stop)) {
            if (++spins < SPIN_ITERS) {
                CPU_RELAX();
            } else if (spins < SPIN_ITERS + YIELD_ITERS) {
                sched_yield();
            } else {
                pthread_mutex_lock(&p->mu);
                atomic_fetch_add(&p->n_sleeping, 1);
                while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop)) pthread_cond_wait(&p->wake, &p->mu);
                atomic_fetch_sub(&p->n_sleeping, 1);
                pthread_mutex_unlock(&p->mu);
            }
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = g;
        run_tasks(p, w->index);
    }
}

int rs_pool_create(int n_threads, rs_pool **out) {
    if (n_threads < 1) return RS_ERR_ARG;
    rs_pool *p = calloc(1, sizeof(*p));
    if (!p) return RS_ERR_NOMEM;
    p->n = n_threads;
    p->workers = calloc((size_t)n_threads, sizeof(worker));
    p->shares = aligned_alloc(64, (size_t)n_threads * sizeof(share));
    if (!p->workers || !p->shares) {
        free(p->workers);
        free(p->shares);
        free(p);
        return RS_ERR_NOMEM;
    }
    for (int i = 0; i < n_threads; i++) atomic_init(&p->shares[i].range, 0);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    for (int i = 1; i < n_threads; i++) {
        p->workers[i].pool = p;
        p->workers[i].index = i;
        if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0) {
            p->n = i; /* only workers 1..i-1 exist */
            rs_pool_free(p);
            return RS_ERR_NOMEM;
        }
    }
    *out = p;
    return RS_OK;
}

void rs_pool_free(rs_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->workers[i].thread, NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done_cv);
    free(p->workers);
    free(p->shares);
    free(p);
}

int rs_pool_size(const rs_pool *p) { return p->n; }

void rs_pool_run(rs_pool *p, int n_tasks, rs_task_fn fn, void *ctx) {
    if (n_tasks <= 0) return;
    if (p->n == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        return;
    }
    /* every task of the previous job is done: no thread reads these now,
     * and every share is empty, so no claim can succeed until it is set */
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->n_tasks, n_tasks, memory_order_relaxed);
    atomic_store_explicit(&p->n_done, 0, memory_order_relaxed);
    for (int i = 0; i < p->n; i++) {
        uint64_t front = (uint64_t)n_tasks * (uint64_t)i / (uint64_t)p->n;
        uint64_t back = (uint64_t)n_tasks * (uint64_t)(i + 1) / (uint64_t)p->n;
        atomic_store_explicit(&p->shares[i].range, front << 32 | back, memory_order_release);
    }
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->n_sleeping)) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }
    run_tasks(p, 0);
    int spins = 0;
    while (atomic_load_explicit(&p->n_done, memory_order_acquire) < n_tasks) {
        if (++spins < SPIN_ITERS) {
            CPU_RELAX();
        } else if (spins < SPIN_ITERS + YIELD_ITERS) {
            sched_yield();
        } else {
            pthread_mutex_lock(&p->mu);
            atomic_store(&p->caller_sleeping, 1);
            while (atomic_load(&p->n_done) < n_tasks) pthread_cond_wait(&p->done_cv, &p->mu);
            atomic_store(&p->caller_sleeping, 0);
            pthread_mutex_unlock(&p->mu);
        }
    }
}
