/* test-util.h — minimal assertion helpers for the C unit tests.
 * Each test binary prints one line per failure and a closing "N passed, N failed". */
#pragma once

#include <math.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int gm_test_passed, gm_test_failed;

#define CHECK(cond) do { \
    if (cond) { gm_test_passed++; } \
    else { gm_test_failed++; fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); } \
} while (0)

#define CHECKF(cond, ...) do { \
    if (cond) { gm_test_passed++; } \
    else { gm_test_failed++; fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond); \
           fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } \
} while (0)

#define CHECK_NEAR(a, b, tol) CHECKF(fabs((double)(a) - (double)(b)) <= (tol), \
    "%s = %.9g, %s = %.9g, tol %.3g", #a, (double)(a), #b, (double)(b), (double)(tol))

#define CHECK_EQ_INT(a, b) CHECKF((long long)(a) == (long long)(b), "%s = %lld, %s = %lld", \
    #a, (long long)(a), #b, (long long)(b))

/* Path of a file under tests/data (GEMMAD_TEST_DATA), in a static buffer. */
static inline const char *gm_test_data(const char *name)
{
    static char buf[4096];
    const char *dir = getenv("GEMMAD_TEST_DATA");
    snprintf(buf, sizeof buf, "%s/%s", dir ? dir : "tests/data", name);
    return buf;
}

/* Reads a whole file (malloc'd, with a NUL after the last byte so text can be used as a
 * string); NULL when it cannot be opened or read. */
static inline void *gm_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = (size_t)n;
    }
    return buf;
}

/* The conformance fixtures folder (GEMMAD_CONFORMANCE_DIR, else tests/conformance). */
static inline const char *gm_test_conformance_dir(void)
{
    const char *d = getenv("GEMMAD_CONFORMANCE_DIR");
    return d ? d : "tests/conformance";
}

/* ||a − ref|| / ||ref|| (Frobenius, in double); ||a − ref|| when ref is all zeros. */
static inline double gm_test_rel_frobenius(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * (double)ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static inline int gm_test_finish(void)
{
    printf("%d passed, %d failed\n", gm_test_passed, gm_test_failed);
    return gm_test_failed ? 1 : 0;
}

#ifdef GM_TEST_RERUN_ISAS
#include "core/cpu.h"
#include "core/gguf.h"

/* The tensor exists with this type and shape (ggml order, unused dims 1). */
static inline void gm_test_check_shape(const gm_gguf *g, const char *name, gm_type type, int64_t e0,
                                       int64_t e1, int64_t e2, int64_t e3)
{
    const gm_gguf_tensor *t = gm_gguf_find_tensor(g, name);
    CHECKF(t != NULL, "missing %s", name);
    if (!t)
        return;
    CHECKF(t->type == type && t->ne[0] == e0 && t->ne[1] == e1 && t->ne[2] == e2 && t->ne[3] == e3,
           "%s: %s {%lld,%lld,%lld,%lld}, expected %s {%lld,%lld,%lld,%lld}", name, gm_type_name(t->type),
           (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2], (long long)t->ne[3], gm_type_name(type),
           (long long)e0, (long long)e1, (long long)e2, (long long)e3);
}

/* Runs this binary again with GEMMAD_ISA forced to each ISA below the best one this CPU
 * has (kernels and ops are chosen from it), so every code path meets the same checks.
 * Returns non-zero if any child run failed. */
static inline int gm_test_rerun_lower_isas(const char *what, char **argv)
{
    static const struct { const char *name; gm_isa isa; } lower[] = {
        { "avx2", GM_ISA_AVX2 }, { "scalar", GM_ISA_SCALAR },
    };
    int rc = 0;
    for (size_t i = 0; i < sizeof lower / sizeof lower[0]; i++) {
        if (gm_cpu_best_isa() <= lower[i].isa)
            continue;
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            setenv("GEMMAD_ISA", lower[i].name, 1);
            execv("/proc/self/exe", argv);
            _exit(127);
        }
        int st = 0;
        if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "%s with GEMMAD_ISA=%s failed\n", what, lower[i].name);
            rc = 1;
        }
    }
    return rc;
}
#endif
