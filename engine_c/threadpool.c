/* Thread pool: workers spin briefly on a generation counter (a decode step
 * dispatches a few hundred small jobs, so waking through a condition
 * variable each time would cost more than the work), then sleep. */
#define _DEFAULT_SOURCE
#include "threadpool.h"
#include "rs_engine.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

enum { SPIN_ITERS = 20000 };

typedef struct worker {
    rs_pool *pool;
    int index;
    pthread_t thread;
} worker;

struct rs_pool {
    int n;
    worker *workers;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    pthread_cond_t done_cv;
    atomic_uint generation;  /* bumped for each job */
    atomic_int next_task;
    atomic_int n_done_workers;
    atomic_int stop;
    int n_sleeping;
    int n_tasks;
    rs_task_fn fn;
    void *ctx;
};

static void run_tasks(rs_pool *p, int thread) {
    for (;;) {
        int t = atomic_fetch_add_explicit(&p->next_task, 1, memory_order_relaxed);
        if (t >= p->n_tasks) break;
        p->fn(p->ctx, t, thread);
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    rs_pool *p = w->pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen &&
               !atomic_load(&p->stop)) {
            if (++spins < SPIN_ITERS) {
                CPU_RELAX();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            p->n_sleeping++;
            while (atomic_load(&p->generation) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->wake, &p->mu);
            p->n_sleeping--;
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = g;
        run_tasks(p, w->index);
        if (atomic_fetch_add_explicit(&p->n_done_workers, 1, memory_order_acq_rel) + 1 == p->n - 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
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
    p->fn = fn;
    p->ctx = ctx;
    p->n_tasks = n_tasks;
    atomic_store_explicit(&p->next_task, 0, memory_order_relaxed);
    atomic_store_explicit(&p->n_done_workers, 0, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    if (p->n_sleeping) pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_tasks(p, 0);
    /* wait for every worker to finish its last task (spin, then sleep) */
    int spins = 0;
    while (atomic_load_explicit(&p->n_done_workers, memory_order_acquire) < p->n - 1) {
        if (++spins < SPIN_ITERS) {
            CPU_RELAX();
            continue;
        }
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->n_done_workers) < p->n - 1) pthread_cond_wait(&p->done_cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
