/* A fixed pool of worker threads that run one parallel-for at a time.
 *
 * The caller joins the work as thread 0, so a pool of n threads starts n-1
 * workers. Each thread runs its contiguous share of the tasks, then steals
 * from the others (threadpool.c); which thread runs a
 * task never changes what the task computes (the forward keeps every output
 * element inside one task), so results do not depend on the thread count. */
#ifndef RS_THREADPOOL_H
#define RS_THREADPOOL_H

typedef void (*rs_task_fn)(void *ctx, int task, int thread);

typedef struct rs_pool rs_pool;

int rs_pool_create(int n_threads, rs_pool **out);
void rs_pool_free(rs_pool *p);
int rs_pool_size(const rs_pool *p);
/* Runs fn(ctx, t, thread) for t in [0, n_tasks); returns when all are done.
 * One job at a time: a task must never call rs_pool_run itself. */
void rs_pool_run(rs_pool *p, int n_tasks, rs_task_fn fn, void *ctx);

#endif
