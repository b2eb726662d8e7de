/* test-ops.c — core/ops.c against straightforward double-precision computations.
 *
 * The SIMD paths are picked once per process from gm_cpu_best_isa(); to hold every path
 * to the reference, the test re-runs itself with GEMMAD_ISA=avx2 and =scalar. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/cpu.h"
#include "core/ops.h"
#define GM_TEST_RERUN_ISAS
#include "test-util.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static double urand(void) /* [0, 1) */
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}

static float frand(float lo, float hi)
{
    return lo + (hi - lo) * (float)urand();
}

static const int64_t k_lens[] = { 1, 2, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 256, 1536 };
#define N_LENS (sizeof k_lens / sizeof k_lens[0])

static void test_rmsnorm(void)
{
    float x[1536], w[1536], out[1536], alias[1536];
    for (size_t li = 0; li < N_LENS; li++) {
        int64_t n = k_lens[li];
        for (int64_t i = 0; i < n; i++) {
            x[i] = frand(-4.0f, 4.0f);
            w[i] = frand(0.5f, 1.5f);
        }
        double ss = 0;
        for (int64_t i = 0; i < n; i++)
            ss += (double)x[i] * x[i];
        double r = pow(ss / n + 1e-6, -0.5);
        gm_rmsnorm(out, x, w, n, 1e-6f);
        double maxerr = 0;
        for (int64_t i = 0; i < n; i++) {
            double ref = x[i] * r * w[i];
            double e = fabs(out[i] - ref) / (fabs(ref) + 1e-6);
            if (e > maxerr)
                maxerr = e;
        }
        CHECKF(maxerr < 1e-6, "rmsnorm n=%lld rel err %g", (long long)n, maxerr);
        /* no weight, in place */
        memcpy(alias, x, (size_t)n * sizeof(float));
        gm_rmsnorm(alias, alias, NULL, n, 1e-6f);
        maxerr = 0;
        for (int64_t i = 0; i < n; i++) {
            double ref = x[i] * r;
            double e = fabs(alias[i] - ref) / (fabs(ref) + 1e-6);
            if (e > maxerr)
                maxerr = e;
        }
        CHECKF(maxerr < 1e-6, "rmsnorm (no w, aliased) n=%lld rel err %g", (long long)n, maxerr);
    }
    /* The scale is w, not 1 + w: a zero weight zeroes the output. */
    float one[4] = { 1, 2, 3, 4 }, zw[4] = { 0, 0, 0, 0 }, o4[4];
    gm_rmsnorm(o4, one, zw, 4, 1e-6f);
    CHECK(o4[0] == 0.0f && o4[3] == 0.0f);
    /* eps matters for a zero vector: output stays finite (0). */
    float z4[4] = { 0 };
    gm_rmsnorm(o4, z4, NULL, 4, 1e-6f);
    CHECK(o4[0] == 0.0f && isfinite(o4[1]));
}

static void test_layernorm(void)
{
    float x[256], w[256], b[256], out[256];
    int64_t n = 256;
    for (int64_t i = 0; i < n; i++) {
        x[i] = frand(-2.0f, 6.0f);
        w[i] = frand(0.5f, 1.5f);
        b[i] = frand(-0.5f, 0.5f);
    }
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; i++)
        mean += x[i];
    mean /= n;
    for (int64_t i = 0; i < n; i++)
        var += (x[i] - mean) * (x[i] - mean);
    var /= n;
    gm_layernorm(out, x, w, b, n, 1e-5f);
    double maxerr = 0;
    for (int64_t i = 0; i < n; i++) {
        double ref = (x[i] - mean) / sqrt(var + 1e-5) * w[i] + b[i];
        maxerr = fmax(maxerr, fabs(out[i] - ref));
    }
    CHECKF(maxerr < 2e-6, "layernorm abs err %g", maxerr);
    gm_layernorm(out, x, NULL, NULL, n, 1e-5f);
    maxerr = 0;
    for (int64_t i = 0; i < n; i++)
        maxerr = fmax(maxerr, fabs(out[i] - (x[i] - mean) / sqrt(var + 1e-5)));
    CHECKF(maxerr < 2e-6, "layernorm (no w/b) abs err %g", maxerr);
}

static void test_rope(void)
{
    enum { D = 64 };
    float v[D], orig[D], inv[D / 2];
    for (int i = 0; i < D / 2; i++)
        inv[i] = i < 8 ? (float)pow(10000.0, -2.0 * i / D) : 0.0f; /* proportional: 8 of 32 rotate */
    for (int i = 0; i < D; i++)
        orig[i] = v[i] = frand(-1.0f, 1.0f);
    int64_t pos = 37;
    gm_rope_neox(v, D, pos, inv);
    double maxerr = 0;
    int passthrough_exact = 1;
    for (int i = 0; i < D / 2; i++) {
        if (inv[i] == 0.0f) {
            if (v[i] != orig[i] || v[i + D / 2] != orig[i + D / 2])
                passthrough_exact = 0;
            continue;
        }
        double ang = (double)pos * inv[i];
        double a = orig[i], b = orig[i + D / 2];
        maxerr = fmax(maxerr, fabs(v[i] - (a * cos(ang) - b * sin(ang))));
        maxerr = fmax(maxerr, fabs(v[i + D / 2] - (b * cos(ang) + a * sin(ang))));
    }
    CHECKF(maxerr < 1e-5, "rope abs err %g", maxerr);
    CHECK(passthrough_exact);
    /* position 0 is the identity */
    memcpy(v, orig, sizeof v);
    gm_rope_neox(v, D, 0, inv);
    CHECK(memcmp(v, orig, sizeof v) == 0);
    /* rotation preserves the norm of each pair */
    memcpy(v, orig, sizeof v);
    gm_rope_neox(v, D, 123456, inv);
    double e2 = 0;
    for (int i = 0; i < D / 2; i++) {
        double n0 = orig[i] * orig[i] + orig[i + D / 2] * orig[i + D / 2];
        double n1 = v[i] * v[i] + v[i + D / 2] * v[i + D / 2];
        e2 = fmax(e2, fabs(n0 - n1));
    }
    CHECKF(e2 < 1e-5, "rope norm drift %g", e2);
}

static void test_softmax(void)
{
    float x[1536];
    for (size_t li = 0; li < N_LENS; li++) {
        int64_t n = k_lens[li];
        for (int64_t i = 0; i < n; i++)
            x[i] = frand(-30.0f, 30.0f);
        if (n > 3) {
            x[1] = -INFINITY;
            x[n - 1] = -INFINITY;
        }
        double m = -INFINITY, s = 0;
        for (int64_t i = 0; i < n; i++)
            m = fmax(m, x[i]);
        double ref[1536];
        for (int64_t i = 0; i < n; i++) {
            ref[i] = exp((double)x[i] - m);
            s += ref[i];
        }
        gm_softmax(x, n);
        double maxerr = 0, sum = 0;
        for (int64_t i = 0; i < n; i++) {
            maxerr = fmax(maxerr, fabs(x[i] - ref[i] / s));
            sum += x[i];
        }
        CHECKF(maxerr < 1e-6, "softmax n=%lld abs err %g", (long long)n, maxerr);
        CHECKF(fabs(sum - 1.0) < 1e-5, "softmax n=%lld sum %g", (long long)n, sum);
        if (n > 3)
            CHECK(x[1] == 0.0f && x[n - 1] == 0.0f);
    }
    /* large logits (attention scale is 1): no overflow */
    float big[3] = { 1000.0f, 999.0f, -1000.0f };
    gm_softmax(big, 3);
    CHECK_NEAR(big[0], 1.0 / (1.0 + exp(-1.0)), 1e-6);
    CHECK(big[2] == 0.0f);
    /* all masked: zeros, not NaN */
    float none[5] = { -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY };
    gm_softmax(none, 5);
    CHECK(none[0] == 0.0f && none[4] == 0.0f);
    float one[1] = { 3.0f };
    gm_softmax(one, 1);
    CHECK(one[0] == 1.0f);
}

static double gelu_ref(double z)
{
    return 0.5 * z * (1.0 + tanh(sqrt(2.0 / M_PI) * (z + 0.044715 * z * z * z)));
}

static void test_activations(void)
{
    enum { N = 4099 };
    static float x[N], y[N];
    for (int i = 0; i < N; i++)
        x[i] = (i % 5 == 0) ? frand(-0.6f, 0.6f) : frand(-12.0f, 12.0f);
    x[0] = 0.0f;
    x[1] = -100.0f;
    x[2] = 100.0f;

    memcpy(y, x, sizeof y);
    gm_gelu_tanh(y, N);
    double maxerr = 0;
    for (int i = 0; i < N; i++) {
        double r = gelu_ref(x[i]);
        maxerr = fmax(maxerr, fabs(y[i] - r) / (fabs(r) + 1e-3));
    }
    CHECKF(maxerr < 2e-6, "gelu rel err %g", maxerr);
    CHECK(y[0] == 0.0f && fabs(y[1]) < 1e-30 && y[2] == 100.0f);

    memcpy(y, x, sizeof y);
    gm_silu(y, N);
    maxerr = 0;
    for (int i = 0; i < N; i++) {
        double r = x[i] / (1.0 + exp(-(double)x[i]));
        maxerr = fmax(maxerr, fabs(y[i] - r) / (fabs(r) + 1e-3));
    }
    CHECKF(maxerr < 2e-6, "silu rel err %g", maxerr);

    for (int i = 0; i < N; i++)
        x[i] = (i % 3 == 0) ? frand(-10.0f, 10.0f) : frand(-200.0f, 200.0f);
    memcpy(y, x, sizeof y);
    gm_softcap(y, N, 30.0f);
    maxerr = 0;
    for (int i = 0; i < N; i++) {
        double r = 30.0 * tanh((double)x[i] / 30.0);
        maxerr = fmax(maxerr, fabs(y[i] - r) / (fabs(r) + 1e-2));
    }
    CHECKF(maxerr < 2e-6, "softcap rel err %g", maxerr);
    /* odd and bounded */
    float s2[2] = { 1e6f, -1e6f };
    gm_softcap(s2, 2, 30.0f);
    CHECK(s2[0] == 30.0f && s2[1] == -30.0f);
}

static void test_vec(void)
{
    float a[1536], b[1536], y[1536], y0[1536];
    for (size_t li = 0; li < N_LENS; li++) {
        int64_t n = k_lens[li];
        double ref = 0;
        for (int64_t i = 0; i < n; i++) {
            a[i] = frand(-1.0f, 1.0f);
            b[i] = frand(-1.0f, 1.0f);
            ref += (double)a[i] * b[i];
        }
        CHECKF(fabs(gm_vec_dot_f32(a, b, n) - ref) < 1e-5 * sqrt((double)n) + 1e-6, "dot n=%lld",
               (long long)n);
        for (int64_t i = 0; i < n; i++)
            y[i] = y0[i] = frand(-1.0f, 1.0f);
        gm_vec_axpy(y, 0.37f, a, n);
        double maxerr = 0;
        for (int64_t i = 0; i < n; i++)
            maxerr = fmax(maxerr, fabs(y[i] - (y0[i] + 0.37 * a[i])));
        CHECKF(maxerr < 1e-6, "axpy n=%lld err %g", (long long)n, maxerr);
        /* axpy must not write past n */
        if (n > 1) {
            y[n - 1] = 12345.0f;
            gm_vec_axpy(y, 1.0f, a, n - 1);
            CHECK(y[n - 1] == 12345.0f);
        }
    }
    CHECK(gm_vec_dot_f32(a, b, 0) == 0.0f);

    float u[5] = { 1, 2, 3, 4, 5 }, v[5] = { 5, 4, 3, 2, 1 };
    gm_vec_add(u, v, 5);
    CHECK(u[0] == 6 && u[4] == 6);
    gm_vec_mul(u, v, 5);
    CHECK(u[0] == 30 && u[4] == 6);
    gm_vec_scale(u, 0.5f, 5);
    CHECK(u[0] == 15 && u[4] == 3);
}

static int run_all(void)
{
    test_rmsnorm();
    test_layernorm();
    test_rope();
    test_softmax();
    test_activations();
    test_vec();
    return gm_test_finish();
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *isa = getenv("GEMMAD_ISA");
    printf("ops: isa %s\n", gm_isa_name(gm_cpu_best_isa()));
    int rc = run_all();
    if (isa && *isa)
        return rc; /* a child run (or the caller forced one path) */

    return rc | gm_test_rerun_lower_isas("ops", argv);
}
