/* kernel-bench.c — micro-benchmark for the matmul kernels and the thread pool.
 *
 *   kernel-bench bw [-t THREADS]                 streaming read bandwidth, 1 GiB buffer
 *   kernel-bench mm TYPE ROWS COLS N [-t THREADS] [-i ISA] [-s SECONDS]
 *   kernel-bench pool [-t THREADS]               empty-job dispatch latency
 *   kernel-bench suite [-t THREADS]              the acceptance set (bw, n=1 and n=512)
 *
 * GMAC/s counts ROWS*COLS*N multiply-adds per call; GB/s counts the weight bytes read
 * per call (the activations are small next to them for n=1).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/cpu.h"
#include "core/kernels.h"
#include "core/pool.h"
#include "core/quant.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU time of the whole process: on a shared machine, wall time / threads overstates
 * the cost when our threads were not running; CPU time does not. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------ bandwidth */

struct bw_job {
    const uint8_t *buf;
    size_t size;
    double sums[64];
};

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static double read_avx512(const uint8_t *p, size_t n)
{
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t o = 0; o + 256 <= n; o += 256) {
        s0 = _mm512_add_ps(s0, _mm512_load_ps((const float *)(p + o)));
        s1 = _mm512_add_ps(s1, _mm512_load_ps((const float *)(p + o + 64)));
        s2 = _mm512_add_ps(s2, _mm512_load_ps((const float *)(p + o + 128)));
        s3 = _mm512_add_ps(s3, _mm512_load_ps((const float *)(p + o + 192)));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}
#endif

static double read_plain(const uint8_t *p, size_t n)
{
    const float *f = (const float *)p;
    float s[8] = { 0 };
    for (size_t i = 0; i + 8 <= n / 4; i += 8)
        for (int j = 0; j < 8; j++)
            s[j] += f[i + j];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

static void bw_worker(void *ctx, int ith, int nth)
{
    struct bw_job *j = ctx;
    long b, e;
    gm_pool_range((long)(j->size / 4096), ith, nth, &b, &e);
    const uint8_t *p = j->buf + (size_t)b * 4096;
    size_t n = (size_t)(e - b) * 4096;
#if defined(__x86_64__)
    if (gm_cpu_get_features()->avx512f)
        j->sums[ith & 63] += read_avx512(p, n);
    else
#endif
        j->sums[ith & 63] += read_plain(p, n);
}

static double bench_bw(gm_pool *pool)
{
    const size_t size = (size_t)1 << 30;
    uint8_t *buf = aligned_alloc(4096, size);
    if (!buf) {
        fprintf(stderr, "out of memory\n");
        return 0;
    }
    memset(buf, 1, size); /* fault every page in before timing */
    struct bw_job j = { .buf = buf, .size = size };
    double best = 0;
    for (int rep = 0; rep < 6; rep++) {
        double t0 = now_s();
        gm_pool_run(pool, bw_worker, &j);
        double gbs = (double)size / (now_s() - t0) / 1e9;
        if (rep > 0 && gbs > best) /* first pass warms up */
            best = gbs;
    }
    printf("read bandwidth (%d threads, 1 GiB, AVX-512 loads): %.2f GB/s (best of 5)\n",
           gm_pool_size(pool), best);
    free(buf);
    return best;
}

/* ------------------------------------------------------------ matmul */

static uint64_t rng = 0x1234567887654321ull;
static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) & 0xFFFFFF) / 8388608.0f - 1.0f;
}

/* Weights: 64 distinct rows quantized by the reference quantizer, repeated. */
static void *make_weights(gm_type type, int64_t rows, int64_t cols, size_t *row_bytes)
{
    *row_bytes = gm_row_size(type, cols);
    uint8_t *w = aligned_alloc(64, (*row_bytes * (size_t)rows + 63) / 64 * 64);
    float *f = malloc((size_t)cols * sizeof(float));
    if (!w || !f) {
        free(w);
        free(f);
        return NULL;
    }
    const int64_t distinct = rows < 64 ? rows : 64;
    for (int64_t r = 0; r < distinct; r++) {
        for (int64_t c = 0; c < cols; c++)
            f[c] = frand();
        gm_quantize_row(type, f, w + (size_t)r * *row_bytes, cols);
    }
    for (int64_t r = distinct; r < rows; r++)
        memcpy(w + (size_t)r * *row_bytes, w + (size_t)(r % distinct) * *row_bytes, *row_bytes);
    free(f);
    return w;
}

static int bench_mm(gm_pool *pool, gm_isa isa, gm_type type, int64_t rows, int64_t cols,
                    int64_t n, double seconds)
{
    size_t row_bytes;
    void *wd = make_weights(type, rows, cols, &row_bytes);
    float *x = malloc((size_t)(n * cols) * sizeof(float));
    float *y = malloc((size_t)(n * rows) * sizeof(float));
    if (!wd || !x || !y) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (int64_t i = 0; i < n * cols; i++)
        x[i] = frand();
    gm_matrix w = { .type = type, .rows = rows, .cols = cols, .row_bytes = row_bytes,
                    .data = wd, .name = "bench" };
    gm_matmul_isa(isa, pool, &w, x, n, cols, y, rows); /* warm-up */
    int iters = 0;
    double best = 1e30, total = 0;
    double t_start = now_s(), c_start = cpu_s();
    while (now_s() - t_start < seconds || iters < 3) {
        double t0 = now_s();
        gm_matmul_isa(isa, pool, &w, x, n, cols, y, rows);
        double dt = now_s() - t0;
        total += dt;
        if (dt < best)
            best = dt;
        iters++;
    }
    const double cpu = cpu_s() - c_start;
    const double macs = (double)rows * (double)cols * (double)n;
    const double bytes = (double)row_bytes * (double)rows;
    const double avg = total / iters;
    printf("%-5s %7lld x %-6lld n=%-4lld %-6s %d thr: %8.3f ms avg %8.3f ms best | %7.1f GMAC/s "
           "(best %7.1f) | %6.2f GB/s (best %6.2f) | per CPU-s %6.1f GMAC\n",
           gm_type_name(type), (long long)rows, (long long)cols, (long long)n, gm_isa_name(isa),
           gm_pool_size(pool), avg * 1e3, best * 1e3, macs / avg / 1e9, macs / best / 1e9,
           bytes / avg / 1e9, bytes / best / 1e9, macs * iters / cpu / 1e9);
    free(wd);
    free(x);
    free(y);
    return 0;
}

static void noop(void *ctx, int ith, int nth)
{
    (void)ctx;
    (void)ith;
    (void)nth;
}

static void bench_pool(gm_pool *pool)
{
    for (int i = 0; i < 1000; i++)
        gm_pool_run(pool, noop, NULL);
    const int iters = 100000;
    double t0 = now_s();
    for (int i = 0; i < iters; i++)
        gm_pool_run(pool, noop, NULL);
    double hot = (now_s() - t0) / iters;
    /* Cold: workers asleep past their spin. */
    double cold = 0;
    for (int i = 0; i < 20; i++) {
        usleep(5000);
        double t1 = now_s();
        gm_pool_run(pool, noop, NULL);
        cold += now_s() - t1;
    }
    printf("pool %d threads: %.2f us per job hot, %.1f us after sleeping\n", gm_pool_size(pool),
           hot * 1e6, cold / 20 * 1e6);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: kernel-bench bw|pool|suite [-t THREADS]\n"
            "       kernel-bench mm TYPE ROWS COLS N [-t THREADS] [-i scalar|avx2|avx512] [-s SEC]\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return 2;
    }
    int threads = 0;
    double seconds = 1.0;
    gm_isa isa = gm_cpu_best_isa();
    char *pos[8];
    int npos = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "-t") && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "-s") && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else if (!strcmp(argv[i], "-i") && i + 1 < argc) {
            const char *s = argv[++i];
            isa = !strcmp(s, "scalar") ? GM_ISA_SCALAR : !strcmp(s, "avx2") ? GM_ISA_AVX2 : GM_ISA_AVX512;
        } else if (npos < 8) {
            pos[npos++] = argv[i];
        }
    }
    gm_pool *pool = gm_pool_create(threads);
    if (!pool) {
        fprintf(stderr, "cannot create thread pool\n");
        return 1;
    }
    printf("cpu: %s\n", gm_cpu_describe());
    int rc = 0;
    if (!strcmp(argv[1], "bw")) {
        bench_bw(pool);
    } else if (!strcmp(argv[1], "pool")) {
        bench_pool(pool);
    } else if (!strcmp(argv[1], "mm") && npos == 4) {
        int t = gm_type_from_name(pos[0]);
        if (t < 0 || !gm_matmul_supports((gm_type)t)) {
            fprintf(stderr, "unsupported type %s\n", pos[0]);
            rc = 2;
        } else {
            rc = bench_mm(pool, isa, (gm_type)t, atoll(pos[1]), atoll(pos[2]), atoll(pos[3]), seconds);
        }
    } else if (!strcmp(argv[1], "suite")) {
        bench_bw(pool);
        bench_pool(pool);
        static const gm_type types[] = { GM_TYPE_Q4_0, GM_TYPE_Q8_0, GM_TYPE_Q4_K, GM_TYPE_Q5_K,
                                         GM_TYPE_Q6_K, GM_TYPE_Q4_1, GM_TYPE_Q5_0, GM_TYPE_F16,
                                         GM_TYPE_BF16, GM_TYPE_F32 };
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
            rc |= bench_mm(pool, isa, types[i], 6144, 1536, 1, seconds);
            rc |= bench_mm(pool, isa, types[i], 6144, 1536, 512, seconds);
        }
        rc |= bench_mm(pool, isa, GM_TYPE_Q4_0, 262144, 1536, 1, seconds);
        rc |= bench_mm(pool, isa, GM_TYPE_Q8_0, 262144, 1536, 1, seconds);
        rc |= bench_mm(pool, isa, GM_TYPE_Q4_K, 262144, 1536, 1, seconds);
    } else {
        usage();
        rc = 2;
    }
    gm_pool_destroy(pool);
    return rc;
}
