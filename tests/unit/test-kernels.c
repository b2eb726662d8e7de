/* test-kernels.c — every matmul kernel (scalar, AVX2, AVX-512) against gm_vec_dot_ref and
 * against dequantize-then-multiply; threading; padding; CPU detection. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "core/kernels-impl.h"
#include "core/kernels.h"
#include "core/pool.h"
#include "core/quant.h"
#include "test-util.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint32_t rnd_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static float rnd_uniform(void) /* [-1, 1) */
{
    return (float)(rnd_u32() & 0xFFFFFF) / 8388608.0f - 1.0f;
}

/* Roughly bell-shaped values with occasional outliers and some all-zero blocks. */
static void fill_values(float *v, int64_t n, int zero_blocks)
{
    for (int64_t i = 0; i < n; i++) {
        float s = rnd_uniform() + rnd_uniform() + rnd_uniform();
        if ((rnd_u32() & 63) == 0)
            s *= 8.0f;
        v[i] = s;
    }
    if (zero_blocks && n >= 64)
        for (int64_t i = 32; i < 64; i++)
            v[i] = 0.0f;
}

static int isa_available(gm_isa isa)
{
    const gm_cpu_features *f = gm_cpu_get_features();
    switch (isa) {
    case GM_ISA_SCALAR: return 1;
    case GM_ISA_AVX2: return f->avx2 && f->fma && f->f16c;
    case GM_ISA_AVX512:
        return f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq && f->avx512vnni &&
               f->avx2 && f->fma && f->f16c;
    }
    return 0;
}

/* Reference outputs: activations quantized exactly as the driver does, then one
 * gm_vec_dot_ref per output. Also the float result of the dequantized weights and a
 * bound for the error that activation quantization may cause. */
static void reference(const gm_matrix *w, const float *x, int64_t n, int64_t ldx, float *ref,
                      double *deq, double *bound)
{
    const int64_t k = w->cols;
    const gm_type vdt = gm_vec_dot_type(w->type);
    const int bs = vdt == GM_TYPE_Q8_0 ? 32 : vdt == GM_TYPE_Q8_K ? 256 : 1;
    size_t arow = vdt == GM_TYPE_Q8_0 ? (size_t)(k / 32) * sizeof(gm_block_q8_0)
                : vdt == GM_TYPE_Q8_K ? (size_t)(k / 256) * sizeof(gm_block_q8_K) : 0;
    void *act = arow ? malloc(arow) : NULL;
    float *wd = malloc((size_t)(k * w->rows) * sizeof(float));
    double *amax = malloc((size_t)k * sizeof(double));
    for (int64_t r = 0; r < w->rows; r++)
        gm_dequantize_row(w->type, (const uint8_t *)w->data + (size_t)r * w->row_bytes,
                          wd + r * k, k);
    for (int64_t t = 0; t < n; t++) {
        const float *xt = x + t * ldx;
        if (vdt == GM_TYPE_Q8_0)
            gm_quantize_row_q8_0(xt, act, k);
        else if (vdt == GM_TYPE_Q8_K)
            gm_quantize_row_q8_K(xt, act, k);
        /* |x - dequant(quant(x))| <= amax/127 * (0.5 + fp16 rounding of d) per block */
        for (int64_t b0 = 0; b0 < k; b0 += bs) {
            double m = 0.0;
            for (int64_t i = b0; i < b0 + bs; i++)
                if (fabs(xt[i]) > m)
                    m = fabs(xt[i]);
            for (int64_t i = b0; i < b0 + bs; i++)
                amax[i] = bs > 1 ? m / 127.0 * 0.6 : 0.0;
        }
        for (int64_t r = 0; r < w->rows; r++) {
            const uint8_t *row = (const uint8_t *)w->data + (size_t)r * w->row_bytes;
            const float *wr = wd + r * k;
            ref[t * w->rows + r] = gm_vec_dot_ref(w->type, row, act ? act : (const void *)xt, k);
            double s = 0.0, b = 0.0;
            for (int64_t c = 0; c < k; c++) {
                s += (double)wr[c] * xt[c];
                b += fabs(wr[c]) * amax[c] + 1e-4 * fabs((double)wr[c] * xt[c]);
            }
            deq[t * w->rows + r] = s;
            bound[t * w->rows + r] = b + 1e-6;
        }
    }
    free(amax);
    free(act);
    free(wd);
}

static const gm_type all_types[] = {
    GM_TYPE_F32, GM_TYPE_F16, GM_TYPE_BF16, GM_TYPE_Q4_0, GM_TYPE_Q4_1,
    GM_TYPE_Q5_0, GM_TYPE_Q8_0, GM_TYPE_Q4_K, GM_TYPE_Q5_K, GM_TYPE_Q6_K,
};

static int skipped_noted[3];

static void test_case(gm_type type, int64_t rows, int64_t cols, int64_t n, gm_pool *pool2,
                      gm_pool *pool3)
{
    const size_t row_bytes = gm_row_size(type, cols);
    CHECK(row_bytes > 0);
    /* Exact-size allocation so a kernel reading past the matrix trips ASan. */
    uint8_t *wdata = malloc(row_bytes * (size_t)rows);
    float *wf = malloc((size_t)cols * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        fill_values(wf, cols, r % 5 == 1);
        CHECK(gm_quantize_row(type, wf, wdata + (size_t)r * row_bytes, cols) == 0);
    }
    gm_matrix w = { .type = type, .rows = rows, .cols = cols, .row_bytes = row_bytes,
                    .data = wdata, .name = "test" };

    const int64_t ldx = cols + 5, ldy = rows + 3;
    float *x = malloc((size_t)(n * ldx) * sizeof(float));
    for (int64_t t = 0; t < n; t++) {
        fill_values(x + t * ldx, cols, t % 3 == 2);
        for (int64_t c = cols; c < ldx; c++)
            x[t * ldx + c] = NAN; /* padding must never be read */
        if (t == 1 && n > 2)
            memset(x + t * ldx, 0, (size_t)cols * sizeof(float)); /* an all-zero token */
    }
    float *ref = malloc((size_t)(n * rows) * sizeof(float));
    double *deq = malloc((size_t)(n * rows) * sizeof(double));
    double *bound = malloc((size_t)(n * rows) * sizeof(double));
    reference(&w, x, n, ldx, ref, deq, bound);
    double maxref = 0.0;
    for (int64_t i = 0; i < n * rows; i++)
        if (fabs(ref[i]) > maxref)
            maxref = fabs(ref[i]);

    float *y = malloc((size_t)(n * ldy) * sizeof(float));
    float *y1 = malloc((size_t)(n * ldy) * sizeof(float));
    const float sentinel = -12345.5f;
    /* AVX-512 runs twice where the CPU has AMX: tile kernels on, then off. */
    for (int pass = 0; pass <= GM_ISA_AVX512 + 1; pass++) {
        const int isa = pass <= GM_ISA_AVX512 ? pass : GM_ISA_AVX512;
        const int amx_off = pass == GM_ISA_AVX512 + 1;
        if (amx_off && !(isa_available(GM_ISA_AVX512) && gm_amx_available()))
            continue;
        setenv("GEMMAD_AMX", amx_off ? "0" : "1", 1);
        const char *isa_label = amx_off ? "avx512(no amx)" : gm_isa_name((gm_isa)isa);
        if (!isa_available((gm_isa)isa)) {
            if (!skipped_noted[isa]) {
                printf("note: %s not available on this CPU, skipped (counted as passed)\n",
                       gm_isa_name((gm_isa)isa));
                skipped_noted[isa] = 1;
            }
            CHECK(1);
            continue;
        }
        for (int64_t i = 0; i < n * ldy; i++)
            y1[i] = sentinel;
        gm_matmul_isa((gm_isa)isa, NULL, &w, x, n, ldx, y1, ldy);
        /* Tight: same integer sums, only float order may differ. */
        double worst = 0.0, worst_deq = 0.0;
        int pad_ok = 1, finite = 1;
        for (int64_t t = 0; t < n; t++) {
            for (int64_t r = 0; r < rows; r++) {
                const float v = y1[t * ldy + r];
                if (!isfinite(v))
                    finite = 0;
                const double e = fabs((double)v - ref[t * rows + r]);
                if (e > worst)
                    worst = e;
                const double ed = fabs((double)v - deq[t * rows + r]) / bound[t * rows + r];
                if (ed > worst_deq)
                    worst_deq = ed;
            }
            for (int64_t r = rows; r < ldy; r++)
                if (y1[t * ldy + r] != sentinel)
                    pad_ok = 0;
        }
        const double tol = 2e-5 * maxref + 1e-30;
        CHECKF(finite && worst <= tol, "%s %s rows=%lld cols=%lld n=%lld: max err %.3g vs ref (tol %.3g)",
               isa_label, gm_type_name(type), (long long)rows, (long long)cols,
               (long long)n, worst, tol);
        CHECKF(worst_deq <= 1.0, "%s %s rows=%lld cols=%lld n=%lld: err vs dequantized %.3g x bound",
               isa_label, gm_type_name(type), (long long)rows, (long long)cols,
               (long long)n, worst_deq);
        CHECKF(pad_ok, "%s %s: wrote into y padding", isa_label, gm_type_name(type));

        /* Threads split rows only: results must be bit-identical. */
        gm_pool *pools[2] = { pool2, pool3 };
        for (int p = 0; p < 2; p++) {
            if (!pools[p])
                continue;
            for (int64_t i = 0; i < n * ldy; i++)
                y[i] = sentinel;
            gm_matmul_isa((gm_isa)isa, pools[p], &w, x, n, ldx, y, ldy);
            CHECKF(memcmp(y, y1, (size_t)(n * ldy) * sizeof(float)) == 0,
                   "%s %s rows=%lld cols=%lld n=%lld: %d threads differ from 1",
                   isa_label, gm_type_name(type), (long long)rows,
                   (long long)cols, (long long)n, gm_pool_size(pools[p]));
        }
    }
    free(wdata);
    free(wf);
    free(x);
    free(ref);
    free(deq);
    free(bound);
    free(y);
    free(y1);
    unsetenv("GEMMAD_AMX");
}

static void test_all_types(gm_pool *pool2, gm_pool *pool3)
{
    static const int64_t ns[] = { 1, 3, 7, 16, 33 };
    for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
        const gm_type t = all_types[ti];
        const gm_type_traits *tr = gm_type_get_traits((uint32_t)t);
        const int bs = tr->block_size;
        CHECK(gm_matmul_supports(t));
        /* Column counts: one block, several K chunks, and for float types odd sizes. */
        int64_t cols_list[3];
        if (bs == 256) {
            cols_list[0] = 256; cols_list[1] = 768; cols_list[2] = 1280;
        } else if (bs == 32) {
            cols_list[0] = 32; cols_list[1] = 96; cols_list[2] = 800;
        } else {
            cols_list[0] = 7; cols_list[1] = 48; cols_list[2] = 300;
        }
        static const int64_t rows_list[] = { 1, 17, 45, 67 };
        for (int ci = 0; ci < 3; ci++)
            for (int ri = 0; ri < 4; ri++)
                for (int ni = 0; ni < 5; ni++) {
                    /* Keep the run short: the largest shapes with fewer token counts. */
                    if (ci == 2 && ri < 2 && ni != 2)
                        continue;
                    test_case(t, rows_list[ri], cols_list[ci], ns[ni], pool2, pool3);
                }
    }
    /* A K large enough that kernels split the batch into token blocks. */
    test_case(GM_TYPE_Q8_0, 40, 12800, 33, pool2, pool3);
    test_case(GM_TYPE_Q4_K, 33, 12800, 33, pool2, pool3);
    test_case(GM_TYPE_F16, 20, 3200, 33, pool2, pool3);
    /* Many rows (several chunks per thread). */
    test_case(GM_TYPE_Q4_0, 1000, 64, 2, pool2, pool3);
    test_case(GM_TYPE_Q6_K, 300, 256, 9, pool2, pool3);
}

/* The AVX-512 activation quantizer must match gm_quantize_row_q8_0/_q8_K bit for bit. */
static void test_act_quant(void)
{
    if (!isa_available(GM_ISA_AVX512)) {
        printf("note: avx512 not available, activation quantizer test skipped\n");
        CHECK(1);
        return;
    }
    const gm_type wtypes[] = { GM_TYPE_Q4_0, GM_TYPE_Q4_1, GM_TYPE_Q8_0, GM_TYPE_Q4_K, GM_TYPE_Q6_K };
    enum { k = 1024 };
    float *x = malloc(k * sizeof(float));
    int8_t *q = malloc(k);
    float d[k / 32], dsum[k / 32];
    int32_t corr[k / 16];
    gm_block_q8_0 b0[k / 32];
    gm_block_q8_K bk[k / 256];
    for (int trial = 0; trial < 40; trial++) {
        fill_values(x, k, trial & 1);
        if (trial % 4 == 2) {
            /* exact rounding ties: amax 127 gives d = 1 (q8_0) and iscale = -1 (q8_K) */
            for (int64_t i = 0; i < k; i++)
                x[i] = (float)((int)(rnd_u32() % 253) - 126) + ((rnd_u32() & 1) ? 0.5f : 0.0f);
            for (int64_t i = 0; i < k; i += 32)
                x[i] = 127.0f;
        }
        if (trial % 4 == 3) {
            /* equal magnitudes of both signs: the first one sets q8_K's sign */
            for (int64_t i = 0; i < k; i++)
                x[i] = (rnd_u32() & 1) ? 2.0f : -2.0f;
        }
        if (trial == 5)
            memset(x, 0, 300 * sizeof(float)); /* zero blocks and a zero super-block */
        for (size_t ti = 0; ti < sizeof wtypes / sizeof wtypes[0]; ti++) {
            const gm_type wt = wtypes[ti];
            const int bias = gm_kernel_bias(wt), g16 = gm_kernel_corr_group(wt) == 16;
            gm_act_quant_avx512(wt, x, k, q, d, corr, dsum);
            int ok = 1;
            if (gm_vec_dot_type(wt) == GM_TYPE_Q8_0) {
                gm_quantize_row_q8_0(x, b0, k);
                for (int64_t b = 0; b < k / 32; b++) {
                    int s = 0;
                    for (int l = 0; l < 32; l++) {
                        s += b0[b].qs[l];
                        if (q[32 * b + l] != b0[b].qs[l])
                            ok = 0;
                    }
                    float df = gm_fp16_to_fp32(b0[b].d);
                    if (d[b] != df || corr[b] != -bias * s || dsum[b] != df * (float)s)
                        ok = 0;
                }
            } else {
                gm_quantize_row_q8_K(x, bk, k);
                for (int64_t b = 0; b < k / 256; b++) {
                    if (memcmp(q + 256 * b, bk[b].qs, 256) != 0)
                        ok = 0;
                    for (int s = 0; s < 8; s++) {
                        int a0 = bk[b].bsums[2 * s], a1 = bk[b].bsums[2 * s + 1];
                        if (d[8 * b + s] != bk[b].d || dsum[8 * b + s] != bk[b].d * (float)(a0 + a1))
                            ok = 0;
                        if (g16 ? (corr[16 * b + 2 * s] != -bias * a0 || corr[16 * b + 2 * s + 1] != -bias * a1)
                                : corr[8 * b + s] != -bias * (a0 + a1))
                            ok = 0;
                    }
                }
            }
            CHECKF(ok, "activation quantizer differs: trial %d, weights %s", trial, gm_type_name(wt));
        }
    }
    free(x);
    free(q);
}

static void test_invalid(void)
{
    /* Columns that are not a multiple of the block: no crash, NaN outputs. */
    uint8_t wdata[64] = { 0 };
    gm_matrix w = { .type = GM_TYPE_Q4_0, .rows = 2, .cols = 40, .row_bytes = 18,
                    .data = wdata, .name = "bad" };
    float x[40] = { 0 }, y[2] = { 1, 1 };
    gm_matmul(NULL, &w, x, 1, 40, y, 2);
    CHECK(isnan(y[0]) && isnan(y[1]));
    /* Unsupported type. */
    w.type = GM_TYPE_Q2_K;
    w.cols = 256;
    y[0] = y[1] = 1;
    gm_matmul(NULL, &w, x, 1, 256, y, 2);
    CHECK(isnan(y[0]) && isnan(y[1]));
    CHECK(!gm_matmul_supports(GM_TYPE_Q2_K));
    /* n = 0 writes nothing. */
    w.type = GM_TYPE_F32;
    w.cols = 2;
    w.row_bytes = 8;
    y[0] = y[1] = 7;
    gm_matmul(NULL, &w, x, 0, 2, y, 2);
    CHECK(y[0] == 7 && y[1] == 7);
}

static void test_cpu(void)
{
    const gm_cpu_features *f = gm_cpu_get_features();
    CHECK(f == gm_cpu_get_features());
    const char *d = gm_cpu_describe();
    CHECK(d != NULL && d[0] != '\0');
    printf("cpu: %s; best isa %s\n", d, gm_isa_name(gm_cpu_best_isa()));
    /* Implications that must hold whatever the CPU. */
    if (f->avx512bw || f->avx512vnni)
        CHECK(f->avx512f);
    CHECK(!strcmp(gm_isa_name(GM_ISA_SCALAR), "scalar"));
    CHECK(!strcmp(gm_isa_name(GM_ISA_AVX2), "avx2"));
    CHECK(!strcmp(gm_isa_name(GM_ISA_AVX512), "avx512"));

    /* GEMMAD_ISA can only lower the choice. */
    const char *old = getenv("GEMMAD_ISA");
    char *saved = old ? strdup(old) : NULL;
    unsetenv("GEMMAD_ISA");
    gm_isa best = gm_cpu_best_isa();
    setenv("GEMMAD_ISA", "scalar", 1);
    CHECK_EQ_INT(gm_cpu_best_isa(), GM_ISA_SCALAR);
    setenv("GEMMAD_ISA", "avx512", 1);
    CHECK_EQ_INT(gm_cpu_best_isa(), best);
    setenv("GEMMAD_ISA", "avx2", 1);
    CHECK_EQ_INT(gm_cpu_best_isa(), best < GM_ISA_AVX2 ? best : GM_ISA_AVX2);
    setenv("GEMMAD_ISA", "bogus", 1);
    CHECK_EQ_INT(gm_cpu_best_isa(), best);
    if (saved) {
        setenv("GEMMAD_ISA", saved, 1);
        free(saved);
    } else {
        unsetenv("GEMMAD_ISA");
    }
}

int main(void)
{
    test_cpu();
    test_invalid();
    test_act_quant();
    gm_pool *pool2 = gm_pool_create(2);
    gm_pool *pool3 = gm_pool_create(3);
    CHECK(pool2 && pool3);
    test_all_types(pool2, pool3);
    gm_pool_destroy(pool2);
    gm_pool_destroy(pool3);
    return gm_test_finish();
}
