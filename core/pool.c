/* pool.c — persistent thread pool.
 *
 * Workers wait for a job generation counter to move: first a short spin (jobs arrive
 * back to back during a forward pass), then a futex sleep so idle workers cost nothing.
 * The caller runs worker 0 itself and then waits the same way for the others.
 */
#include "pool.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Spin iterations before sleeping (a pause is ~25 ns on Sapphire Rapids: ~100 us). */
#define GM_POOL_SPIN 4000

struct gm_pool {
    int n;                    /* workers including the caller */
    pthread_t *threads;       /* n - 1 */
    /* Written by the caller before gen is bumped; read by workers after seeing it. */
    gm_pool_fn fn;
    void *ctx;
    _Alignas(64) atomic_uint gen;   /* job generation (futex word for workers) */
    atomic_int sleepers;            /* workers inside futex_wait on gen */
    atomic_int stop;
    _Alignas(64) atomic_uint pending; /* workers still running the current job (futex word) */
    atomic_int caller_waiting;
};

struct worker_arg {
    gm_pool *pool;
    int ith;
};

static void futex_wait(atomic_uint *addr, unsigned val)
{
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(atomic_uint *addr)
{
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* Waits until *gen differs from seen; returns the new value. */
static unsigned wait_gen(gm_pool *p, unsigned seen)
{
    unsigned g;
    for (int i = 0; i < GM_POOL_SPIN; i++) {
        g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen)
            return g;
        cpu_relax();
    }
    for (;;) {
        atomic_fetch_add(&p->sleepers, 1);
        /* seq_cst pairs with the caller's bump-then-read-sleepers: one of us sees the other. */
        g = atomic_load(&p->gen);
        if (g == seen)
            futex_wait(&p->gen, seen);
        atomic_fetch_sub(&p->sleepers, 1);
        g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen)
            return g;
    }
}

static void *worker_main(void *arg)
{
    struct worker_arg *wa = arg;
    gm_pool *p = wa->pool;
    int ith = wa->ith;
    free(wa);
    unsigned seen = 0;
    for (;;) {
        seen = wait_gen(p, seen);
        if (atomic_load_explicit(&p->stop, memory_order_acquire))
            break;
        p->fn(p->ctx, ith, p->n);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->caller_waiting))
            futex_wake(&p->pending);
    }
    return NULL;
}

gm_pool *gm_pool_create(int n_threads)
{
    if (n_threads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = c > 0 ? (int)c : 1;
    }
    if (n_threads > 1024)
        n_threads = 1024;
    gm_pool *p = aligned_alloc(64, (sizeof *p + 63) / 64 * 64);
    if (!p)
        return NULL;
    p->n = n_threads;
    p->fn = NULL;
    p->ctx = NULL;
    atomic_init(&p->gen, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->stop, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->caller_waiting, 0);
    p->threads = NULL;
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
        if (!p->threads) {
            free(p);
            return NULL;
        }
    }
    for (int i = 1; i < n_threads; i++) {
        struct worker_arg *wa = malloc(sizeof *wa);
        int rc = ENOMEM;
        if (wa) {
            wa->pool = p;
            wa->ith = i;
            rc = pthread_create(&p->threads[i - 1], NULL, worker_main, wa);
        }
        if (rc != 0) {
            free(wa);
            p->n = i; /* threads 1..i-1 exist: shut them down */
            gm_pool_destroy(p);
            return NULL;
        }
    }
    return p;
}

void gm_pool_destroy(gm_pool *pool)
{
    if (!pool)
        return;
    atomic_store(&pool->stop, 1);
    atomic_fetch_add(&pool->gen, 1);
    futex_wake(&pool->gen);
    for (int i = 1; i < pool->n; i++)
        pthread_join(pool->threads[i - 1], NULL);
    free(pool->threads);
    free(pool);
}

int gm_pool_size(const gm_pool *pool)
{
    return pool ? pool->n : 1;
}

void gm_pool_run(gm_pool *pool, gm_pool_fn fn, void *ctx)
{
    if (!pool || pool->n <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    pool->fn = fn;
    pool->ctx = ctx;
    atomic_store_explicit(&pool->pending, (unsigned)(pool->n - 1), memory_order_relaxed);
    atomic_fetch_add(&pool->gen, 1); /* seq_cst: publishes fn/ctx/pending */
    if (atomic_load(&pool->sleepers) > 0)
        futex_wake(&pool->gen);

    fn(ctx, 0, pool->n);

    for (int i = 0; i < GM_POOL_SPIN; i++) {
        if (atomic_load_explicit(&pool->pending, memory_order_acquire) == 0)
            return;
        cpu_relax();
    }
    atomic_store(&pool->caller_waiting, 1);
    for (;;) {
        unsigned left = atomic_load(&pool->pending);
        if (left == 0)
            break;
        futex_wait(&pool->pending, left);
    }
    atomic_store(&pool->caller_waiting, 0);
    atomic_thread_fence(memory_order_acquire);
}

typedef struct rows_job {
    gm_rows_fn fn;
    void *arg;
    int64_t n;
} rows_job;

static void rows_worker(void *ctx, int ith, int nth)
{
    const rows_job *j = ctx;
    long b, e;
    gm_pool_range((long)j->n, ith, nth, &b, &e);
    if (b < e)
        j->fn(j->arg, b, e);
}

void gm_pool_run_rows(gm_pool *pool, int64_t n, gm_rows_fn fn, void *arg)
{
    rows_job j = { .fn = fn, .arg = arg, .n = n };
    if (pool && n > 1 && gm_pool_size(pool) > 1)
        gm_pool_run(pool, rows_worker, &j);
    else if (n > 0)
        fn(arg, 0, n);
}
