/* Thread pool for one parallel-for at a time.
 *
 * Tasks are claimed from a single 64-bit word, generation << 32 | next task,
 * by compare-and-swap: a worker that wakes late can never claim a task of a
 * newer job, and the caller waits for its job's tasks to be done, not for
 * every worker to check in. That matters on a loaded machine: a worker that
 * the OS has descheduled costs nothing when the others (the caller included)
 * have already run every task.
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
    rs_pool *pool;
    int index;
    pthread_t thread;
} worker;

struct rs_pool {
    int n;
    worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t wake;      /* a new job, or stop */
    pthread_cond_t done_cv;   /* the last task of a job finished */
    _Atomic uint64_t state;   /* generation << 32 | next task index */
    atomic_int n_done;        /* tasks of the current job finished */
    atomic_int stop;
    int n_sleeping;
    int caller_sleeping;
    atomic_int n_tasks;       /* of the current job; stable while any of its tasks runs */
    rs_task_fn fn;
    void *ctx;
};

static uint32_t gen_of(uint64_t s) { return (uint32_t)(s >> 32); }

/* Claim and run tasks of generation g until none are left. */
static void run_tasks(rs_pool *p, uint32_t g, int thread) {
    for (;;) {
        uint64_t s = atomic_load_explicit(&p->state, memory_order_acquire);
        /* n_tasks may already belong to a newer job; the CAS then fails */
        int n_tasks = atomic_load_explicit(&p->n_tasks, memory_order_relaxed);
        if (gen_of(s) != g || (int)(uint32_t)s >= n_tasks) return;
        if (!atomic_compare_exchange_weak_explicit(&p->state, &s, s + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        /* the claim succeeded: job g cannot end (nor fn, ctx, n_tasks change)
         * before this task counts itself done */
        n_tasks = atomic_load_explicit(&p->n_tasks, memory_order_relaxed);
        p->fn(p->ctx, (int)(uint32_t)s, thread);
        if (atomic_fetch_add_explicit(&p->n_done, 1, memory_order_acq_rel) + 1 == n_tasks) {
            pthread_mutex_lock(&p->mu);
            if (p->caller_sleeping) pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    rs_pool *p = w->pool;
    uint32_t seen = 0;
    for (;;) {
        uint32_t g;
        int spins = 0;
        while ((g = gen_of(atomic_load_explicit(&p->state, memory_order_acquire))) == seen &&
               !atomic_load(&p->stop)) {
            if (++spins < SPIN_ITERS) {
                CPU_RELAX();
            } else if (spins < SPIN_ITERS + YIELD_ITERS) {
                sched_yield();
            } else {
                pthread_mutex_lock(&p->mu);
                p->n_sleeping++;
                while (gen_of(atomic_load(&p->state)) == seen && !atomic_load(&p->stop))
                    pthread_cond_wait(&p->wake, &p->mu);
                p->n_sleeping--;
                pthread_mutex_unlock(&p->mu);
            }
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = g;
        run_tasks(p, g, w->index);
    }
}

int rs_pool_create(int n_threads, rs_pool **out) {
    if (n_threads < 1) return RS_ERR_ARG;
    rs_pool *p = calloc(1, sizeof(*p));
    if (!p) return RS_ERR_NOMEM;
    p->n = n_threads;
    p->workers = calloc((size_t)n_threads, sizeof(worker));
    if (!p->workers) {
        free(p);
        return RS_ERR_NOMEM;
    }
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
    free(p);
}

int rs_pool_size(const rs_pool *p) { return p->n; }

void rs_pool_run(rs_pool *p, int n_tasks, rs_task_fn fn, void *ctx) {
    if (n_tasks <= 0) return;
    if (p->n == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t, 0);
        return;
    }
    /* every task of the previous job is done, so no worker reads these now */
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->n_tasks, n_tasks, memory_order_relaxed);
    atomic_store_explicit(&p->n_done, 0, memory_order_relaxed);
    uint32_t g = gen_of(atomic_load_explicit(&p->state, memory_order_relaxed)) + 1;
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->state, (uint64_t)g << 32, memory_order_release);
    if (p->n_sleeping) pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_tasks(p, g, 0);
    int spins = 0;
    while (atomic_load_explicit(&p->n_done, memory_order_acquire) < n_tasks) {
        if (++spins < SPIN_ITERS) {
            CPU_RELAX();
        } else if (spins < SPIN_ITERS + YIELD_ITERS) {
            sched_yield();
        } else {
            pthread_mutex_lock(&p->mu);
            p->caller_sleeping = 1;
            while (atomic_load(&p->n_done) < n_tasks) pthread_cond_wait(&p->done_cv, &p->mu);
            p->caller_sleeping = 0;
            pthread_mutex_unlock(&p->mu);
        }
    }
}
