/* test-util.h — minimal assertion helpers for the C unit tests.
 * Each test binary prints one line per failure and a closing "N passed, N failed". */
#pragma once

#include <math.h>
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

static inline int gm_test_finish(void)
{
    printf("%d passed, %d failed\n", gm_test_passed, gm_test_failed);
    return gm_test_failed ? 1 : 0;
}
