/* pool.h — a persistent thread pool.
 *
 * Workers are created once and park between jobs (brief spin, then a futex/condvar
 * sleep), so per-kernel dispatch costs microseconds, not a thread start.
 * The calling thread takes part as worker 0.
 */
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gm_pool gm_pool;

/* Job body: called once on each of nth workers with ith = 0..nth-1. */
typedef void (*gm_pool_fn)(void *ctx, int ith, int nth);

/* n_threads <= 0 picks the number of online CPUs. Returns NULL on failure. */
gm_pool *gm_pool_create(int n_threads);
void gm_pool_destroy(gm_pool *pool);
int gm_pool_size(const gm_pool *pool);

/* Runs fn on every worker and returns when all are done. pool may be NULL
 * (runs fn(ctx, 0, 1) inline). Not reentrant: do not call from inside a job. */
void gm_pool_run(gm_pool *pool, gm_pool_fn fn, void *ctx);

/* Row-parallel loop body: handles rows [r0, r1). */
typedef void (*gm_rows_fn)(void *arg, int64_t r0, int64_t r1);

/* Runs fn over [0, n) split into one contiguous range per worker (inline when pool is
 * NULL, has one thread, or n < 2). */
void gm_pool_run_rows(gm_pool *pool, int64_t n, gm_rows_fn fn, void *arg);

/* Splits [0, n) into nth near-equal contiguous ranges; range of worker ith. */
static inline void gm_pool_range(long n, int ith, int nth, long *begin, long *end)
{
    long per = n / nth, rem = n % nth;
    *begin = ith * per + (ith < rem ? ith : rem);
    *end = *begin + per + (ith < rem ? 1 : 0);
}

#ifdef __cplusplus
}
#endif
