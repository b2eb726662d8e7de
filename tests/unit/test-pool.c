/* test-pool.c — persistent thread pool: ranges, every worker runs once per job, many jobs
 * back to back, sleeping/waking workers, NULL pool. */
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "core/pool.h"
#include "test-util.h"

#define MAX_T 8

struct count_ctx {
    atomic_int calls[MAX_T];
    atomic_int bad_nth;
    int expect_nth;
};

static void count_job(void *vctx, int ith, int nth)
{
    struct count_ctx *c = vctx;
    if (nth != c->expect_nth || ith < 0 || ith >= nth || ith >= MAX_T)
        atomic_fetch_add(&c->bad_nth, 1);
    else
        atomic_fetch_add(&c->calls[ith], 1);
}

/* Each worker fills its range of an array; every element must be written exactly once. */
struct fill_ctx {
    long n;
    int *hits;
    long round;
};

static void fill_job(void *vctx, int ith, int nth)
{
    struct fill_ctx *c = vctx;
    long b, e;
    gm_pool_range(c->n, ith, nth, &b, &e);
    for (long i = b; i < e; i++)
        c->hits[i] += 1;
}

static void test_ranges(void)
{
    /* Ranges cover [0,n) contiguously with sizes differing by at most one. */
    for (long n = 0; n <= 67; n++) {
        for (int nth = 1; nth <= 9; nth++) {
            long prev_end = 0, mn = n + 1, mx = -1;
            int ok = 1;
            for (int i = 0; i < nth; i++) {
                long b, e;
                gm_pool_range(n, i, nth, &b, &e);
                if (b != prev_end || e < b)
                    ok = 0;
                prev_end = e;
                if (e - b < mn) mn = e - b;
                if (e - b > mx) mx = e - b;
            }
            CHECKF(ok && prev_end == n && mx - mn <= 1, "n=%ld nth=%d", n, nth);
        }
    }
}

static void test_pool(int nthreads)
{
    gm_pool *pool = gm_pool_create(nthreads);
    CHECK(pool != NULL);
    if (!pool)
        return;
    CHECK_EQ_INT(gm_pool_size(pool), nthreads);

    struct count_ctx cc = { .expect_nth = nthreads };
    const int jobs = 2000;
    for (int j = 0; j < jobs; j++)
        gm_pool_run(pool, count_job, &cc);
    CHECK_EQ_INT(atomic_load(&cc.bad_nth), 0);
    for (int i = 0; i < nthreads; i++)
        CHECK_EQ_INT(atomic_load(&cc.calls[i]), jobs);

    /* Several array sizes, including fewer elements than threads. */
    long sizes[] = { 0, 1, 3, 1000, 100003 };
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        struct fill_ctx fc = { .n = sizes[s] };
        fc.hits = calloc((size_t)fc.n + 1, sizeof *fc.hits);
        for (int r = 0; r < 5; r++)
            gm_pool_run(pool, fill_job, &fc);
        int ok = 1;
        for (long i = 0; i < fc.n; i++)
            if (fc.hits[i] != 5)
                ok = 0;
        CHECKF(ok, "fill n=%ld threads=%d", fc.n, nthreads);
        free(fc.hits);
    }

    /* Let workers fall asleep (past the spin), then wake them with a job. */
    struct count_ctx c2 = { .expect_nth = nthreads };
    for (int r = 0; r < 3; r++) {
        usleep(20000);
        gm_pool_run(pool, count_job, &c2);
    }
    for (int i = 0; i < nthreads; i++)
        CHECK_EQ_INT(atomic_load(&c2.calls[i]), 3);
    CHECK_EQ_INT(atomic_load(&c2.bad_nth), 0);

    gm_pool_destroy(pool);
}

static void noop_job(void *ctx, int ith, int nth)
{
    (void)ctx; (void)ith; (void)nth;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* gm_pool_run_rows: every row visited exactly once, with and without a pool, n of 0 and 1. */
typedef struct {
    int *hits;
} rows_ctx;

static void mark_rows(void *arg, int64_t r0, int64_t r1)
{
    rows_ctx *c = arg;
    for (int64_t r = r0; r < r1; r++)
        __atomic_add_fetch(&c->hits[r], 1, __ATOMIC_RELAXED);
}

static void test_run_rows(gm_pool *pool)
{
    static const int64_t sizes[] = { 0, 1, 2, 3, 7, 1000 };
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int64_t n = sizes[k];
        rows_ctx c = { .hits = calloc((size_t)n + 1, sizeof(int)) };
        gm_pool_run_rows(pool, n, mark_rows, &c);
        int bad = 0;
        for (int64_t r = 0; r < n; r++)
            bad += c.hits[r] != 1;
        CHECKF(bad == 0 && c.hits[n] == 0, "run_rows n=%lld: %d rows not visited once", (long long)n, bad);
        free(c.hits);
    }
}

int main(void)
{
    test_ranges();

    /* NULL pool runs inline once as worker 0 of 1. */
    struct count_ctx c0 = { .expect_nth = 1 };
    gm_pool_run(NULL, count_job, &c0);
    CHECK_EQ_INT(atomic_load(&c0.calls[0]), 1);
    CHECK_EQ_INT(gm_pool_size(NULL), 1);
    gm_pool_destroy(NULL);

    test_pool(1);
    test_pool(2);
    test_pool(4);

    /* Default size: online CPUs. */
    gm_pool *p = gm_pool_create(0);
    CHECK(p != NULL);
    if (p) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        CHECK_EQ_INT(gm_pool_size(p), cpus > 0 ? cpus : 1);
        /* Hot dispatch cost, informational (not a pass/fail: the machine may be shared). */
        for (int i = 0; i < 1000; i++)
            gm_pool_run(p, noop_job, NULL);
        /* time-bounded: on a loaded machine each job may wait for a time slice */
        int iters = 0;
        double t0 = now_s(), dt;
        do {
            for (int i = 0; i < 100; i++)
                gm_pool_run(p, noop_job, NULL);
            iters += 100;
            dt = now_s() - t0;
        } while (iters < 20000 && dt < 0.2);
        printf("pool of %d: %.2f us per empty job (hot)\n", gm_pool_size(p), dt / iters * 1e6);
        gm_pool_destroy(p);
    }
    test_run_rows(NULL);
    gm_pool *rp = gm_pool_create(3);
    test_run_rows(rp);
    gm_pool_destroy(rp);
    return gm_test_finish();
}
