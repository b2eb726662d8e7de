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
                      double *deq, double *bound, double *sabs)
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
            double s = 0.0, b = 0.0, sa = 0.0;
            for (int64_t c = 0; c < k; c++) {
                s += (double)wr[c] * xt[c];
                sa += fabs((double)wr[c] * xt[c]);
                b += fabs(wr[c]) * amax[c] + 1e-4 * fabs((double)wr[c] * xt[c]);
            }
            deq[t * w->rows + r] = s;
            if (sabs)
                sabs[t * w->rows + r] = sa;
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

static int bf16dp_available(void)
{
    return isa_available(GM_ISA_AVX512) && gm_cpu_get_features()->avx512bf16;
}

/* Error bound of the AVX512_BF16 path (weights exact in bf16, x split into
 * hi = bf16(x), lo = bf16(x - hi)) against the exact dot product, S = sum |w*x|:
 *  - representation: |x - hi| <= 2^-8 |x| (bf16 keeps 8 significant bits, round to
 *    nearest) and |x - hi - lo| <= 2^-8 |x - hi| <= 2^-16 |x|, so <= 2^-16 S;
 *  - fp32 accumulation: per output lane at most 2 roundings per vdpbf16ps, 2 per 32
 *    columns (hi, lo), plus 4 levels of the horizontal sum: m = 4 ceil(k/32) + 4
 *    roundings of terms totalling <= S (1 + 2^-7), i.e. <= 1.01 m 2^-24 S.
 * It is sound (not a fit to observed errors) yet tight enough to catch a lost lo half:
 * that leaves errors near 2^-9 |w*x| per term. */
static double bf16dp_bound(int64_t k, double sabs)
{
    const double m = 4.0 * (double)((k + 31) / 32) + 4.0;
    return (ldexp(1.0, -16) + 1.01 * m * ldexp(1.0, -24)) * sabs + 1e-30;
}

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
    double *sabs = malloc((size_t)(n * rows) * sizeof(double));
    reference(&w, x, n, ldx, ref, deq, bound, sabs);
    double maxref = 0.0;
    for (int64_t i = 0; i < n * rows; i++)
        if (fabs(ref[i]) > maxref)
            maxref = fabs(ref[i]);

    float *y = malloc((size_t)(n * ldy) * sizeof(float));
    float *y1 = malloc((size_t)(n * ldy) * sizeof(float));
    const float sentinel = -12345.5f;
    /* AVX-512 runs again where the CPU has AMX (tile kernels off) and, for BF16 weights
     * on a CPU with AVX512_BF16, with that kernel off (the fp32 FMA path). */
    for (int pass = 0; pass <= GM_ISA_AVX512 + 2; pass++) {
        const int isa = pass <= GM_ISA_AVX512 ? pass : GM_ISA_AVX512;
        const int amx_off = pass == GM_ISA_AVX512 + 1;
        const int bf16_off = pass == GM_ISA_AVX512 + 2;
        if (amx_off && !(isa_available(GM_ISA_AVX512) && gm_amx_available()))
            continue;
        if (bf16_off && !(type == GM_TYPE_BF16 && bf16dp_available()))
            continue;
        setenv("GEMMAD_AMX", amx_off ? "0" : "1", 1);
        setenv("GEMMAD_AVX512BF16", bf16_off ? "0" : "1", 1);
        /* the hi/lo split path: held to its own bound against the exact product */
        const int split = type == GM_TYPE_BF16 && isa == GM_ISA_AVX512 && !bf16_off &&
                          bf16dp_available();
        const char *isa_label = amx_off ? "avx512(no amx)" : bf16_off ? "avx512(no bf16)"
                                                                     : gm_isa_name((gm_isa)isa);
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
        double worst = 0.0, worst_deq = 0.0, worst_split = 0.0;
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
                const double es = fabs((double)v - deq[t * rows + r]) /
                                  bf16dp_bound(cols, sabs[t * rows + r]);
                if (es > worst_split)
                    worst_split = es;
            }
            for (int64_t r = rows; r < ldy; r++)
                if (y1[t * ldy + r] != sentinel)
                    pad_ok = 0;
        }
        const double tol = 2e-5 * maxref + 1e-30;
        if (split)
            CHECKF(finite && worst_split <= 1.0,
                   "%s bf16 split rows=%lld cols=%lld n=%lld: err vs exact %.3g x bound",
                   isa_label, (long long)rows, (long long)cols, (long long)n, worst_split);
        else
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
    free(sabs);
    free(y);
    free(y1);
    unsetenv("GEMMAD_AMX");
    unsetenv("GEMMAD_AVX512BF16");
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

/* Batch invariance: for every type and every path, one call with n tokens must give
 * the bits of n one-token calls (decode), of calls in chunks of 3, 5 and 16 tokens
 * (chunked prefill) and of the same call on 2 threads, at shapes where rows are not a
 * multiple of the kernels' 8/16-row groups and K spans one or several chunks. Each
 * layer re-quantizes its activations, so a last-bit difference here grows into visibly
 * different decode and prefill results. */
static void test_batch_invariance(gm_pool *pool2)
{
    enum { NTOK = 40 };
    static const int64_t rows_list[] = { 13, 37 };
    for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
        const gm_type type = all_types[ti];
        const int bs = gm_type_get_traits((uint32_t)type)->block_size;
        /* one block / several K chunks (the kernels chunk K by 16 blocks of 32) */
        const int64_t cols_list[2] = { bs == 256 ? 256 : bs == 32 ? 64 : 23,
                                       bs == 256 ? 1280 : bs == 32 ? 608 : 531 };
        for (int ci = 0; ci < 2; ci++)
            for (int ri = 0; ri < 2; ri++) {
                const int64_t rows = rows_list[ri], cols = cols_list[ci];
                const size_t rb = gm_row_size(type, cols);
                uint8_t *wd = malloc(rb * (size_t)rows);
                float *wf = malloc((size_t)cols * sizeof(float));
                for (int64_t r = 0; r < rows; r++) {
                    fill_values(wf, cols, r % 4 == 2);
                    gm_quantize_row(type, wf, wd + (size_t)r * rb, cols);
                }
                gm_matrix w = { .type = type, .rows = rows, .cols = cols, .row_bytes = rb,
                                .data = wd, .name = "inv" };
                const int64_t ldx = cols + 1, ldy = rows + 1;
                float *x = malloc((size_t)(NTOK * ldx) * sizeof(float));
                for (int64_t t = 0; t < NTOK; t++)
                    fill_values(x + t * ldx, cols, t % 7 == 3);
                float *yd = malloc((size_t)(NTOK * ldy) * sizeof(float));
                float *yb = malloc((size_t)(NTOK * ldy) * sizeof(float));
                float *yc = malloc((size_t)(NTOK * ldy) * sizeof(float));
                for (int pass = 0; pass <= GM_ISA_AVX512 + 2; pass++) {
                    const int isa = pass <= GM_ISA_AVX512 ? pass : GM_ISA_AVX512;
                    const int amx_off = pass == GM_ISA_AVX512 + 1;
                    const int bf16_off = pass == GM_ISA_AVX512 + 2;
                    if (!isa_available((gm_isa)isa))
                        continue;
                    if (amx_off && !gm_amx_available())
                        continue;
                    if (bf16_off && !(type == GM_TYPE_BF16 && bf16dp_available()))
                        continue;
                    setenv("GEMMAD_AMX", amx_off ? "0" : "1", 1);
                    setenv("GEMMAD_AVX512BF16", bf16_off ? "0" : "1", 1);
                    const char *label = amx_off ? "avx512(no amx)" : bf16_off ? "avx512(no bf16)"
                                                                              : gm_isa_name((gm_isa)isa);
                    /* decode: one token per call */
                    for (int64_t t = 0; t < NTOK; t++)
                        gm_matmul_isa((gm_isa)isa, NULL, &w, x + t * ldx, 1, ldx, yd + t * ldy, ldy);
                    int bad_n = 0, bad_chunk = 0, bad_thr = 0;
                    for (int64_t n = 1; n <= NTOK; n++) {
                        gm_matmul_isa((gm_isa)isa, NULL, &w, x, n, ldx, yb, ldy);
                        for (int64_t t = 0; t < n; t++) {
                            if (memcmp(yb + t * ldy, yd + t * ldy, (size_t)rows * sizeof(float)) != 0)
                                bad_n = bad_n ? bad_n : (int)n;
                        }
                    }
                    /* yb holds the NTOK batch: chunked prefill and 2 threads */
                    static const int64_t chunks[] = { 3, 5, 16 };
                    for (int c = 0; c < 3; c++) {
                        for (int64_t t0 = 0; t0 < NTOK; t0 += chunks[c]) {
                            const int64_t m = NTOK - t0 < chunks[c] ? NTOK - t0 : chunks[c];
                            gm_matmul_isa((gm_isa)isa, NULL, &w, x + t0 * ldx, m, ldx, yc + t0 * ldy, ldy);
                            for (int64_t t = t0; t < t0 + m; t++)
                                if (memcmp(yc + t * ldy, yb + t * ldy, (size_t)rows * sizeof(float)) != 0)
                                    bad_chunk = (int)chunks[c];
                        }
                    }
                    if (pool2) {
                        gm_matmul_isa((gm_isa)isa, pool2, &w, x, NTOK, ldx, yc, ldy);
                        for (int64_t t = 0; t < NTOK; t++)
                            if (memcmp(yc + t * ldy, yb + t * ldy, (size_t)rows * sizeof(float)) != 0)
                                bad_thr = 1;
                        for (int64_t t = 0; t < NTOK; t++)
                            gm_matmul_isa((gm_isa)isa, pool2, &w, x + t * ldx, 1, ldx, yc + t * ldy, ldy);
                        for (int64_t t = 0; t < NTOK; t++)
                            if (memcmp(yc + t * ldy, yd + t * ldy, (size_t)rows * sizeof(float)) != 0)
                                bad_thr = 1;
                    }
                    CHECKF(!bad_n, "%s %s rows=%lld cols=%lld: batch of %d != decode",
                           label, gm_type_name(type), (long long)rows, (long long)cols, bad_n);
                    CHECKF(!bad_chunk, "%s %s rows=%lld cols=%lld: chunks of %d != one batch",
                           label, gm_type_name(type), (long long)rows, (long long)cols, bad_chunk);
                    CHECKF(!bad_thr, "%s %s rows=%lld cols=%lld: 2 threads != 1",
                           label, gm_type_name(type), (long long)rows, (long long)cols);
                }
                unsetenv("GEMMAD_AMX");
                unsetenv("GEMMAD_AVX512BF16");
                free(wd);
                free(wf);
                free(x);
                free(yd);
                free(yb);
                free(yc);
            }
    }
}

/* Runs the matmul on rows x k BF16 weights for tokens [t0, t0 + n) of x. */
static void mm_tokens(gm_pool *pool, const gm_matrix *w, const float *x, int64_t ldx, int64_t t0,
                      int64_t n, float *y, int64_t ldy)
{
    gm_matmul_isa(GM_ISA_AVX512, pool, w, x + t0 * ldx, n, ldx, y + t0 * ldy, ldy);
}

/* The AVX512_BF16 path for BF16 weights: bound against the exact product, awkward
 * sizes, every n from 1 to 33, decode (one token at a time) and chunked prefill
 * bit-identical to one batch, threads bit-identical, and the fallback. */
static void test_bf16_dp(gm_pool *pool2, gm_pool *pool3)
{
    if (!bf16dp_available()) {
        printf("note: avx512bf16 not available, BF16 dot-product kernel test skipped\n");
        CHECK(1);
        return;
    }
    unsetenv("GEMMAD_AVX512BF16");

    /* The split itself: hi is bf16(x) rounded to nearest even, lo the bf16 of the rest,
     * zero padding to 32, and no inf - inf. */
    {
        enum { k = 45, kp = 64 };
        float xs[k];
        uint16_t hl[2 * kp];
        fill_values(xs, k, 0);
        xs[3] = 1.0f + 0x1p-8f + 0x1p-10f; /* rounds up; lo = -3 * 2^-10 exactly */
        xs[4] = __builtin_inff();
        xs[5] = -__builtin_inff();
        memset(hl, 0xAB, sizeof hl);
        gm_act_split_bf16_avx512(xs, k, hl, hl + kp);
        int ok = 1;
        for (int c = 0; c < kp; c++) {
            if (c >= k) {
                ok &= hl[c] == 0 && hl[kp + c] == 0;
                continue;
            }
            ok &= hl[c] == gm_fp32_to_bf16(xs[c]);
            const double h = gm_bf16_to_fp32(hl[c]), l = gm_bf16_to_fp32(hl[kp + c]);
            if (isinf(xs[c]))
                ok &= h == xs[c] && l == 0.0;
            else
                ok &= fabs(h + l - xs[c]) <= ldexp(fabs(xs[c]), -16);
        }
        CHECKF(ok, "bf16 hi/lo split wrong");
        CHECK(gm_bf16_to_fp32(hl[3]) == 1.0f + 0x1p-7f && gm_bf16_to_fp32(hl[kp + 3]) == -0x3p-10f);
    }

    static const int64_t ks[] = { 1, 7, 31, 32, 33, 63, 65, 300, 2049 };
    static const int64_t rows_list[] = { 1, 5, 17, 67 };
    enum { NMAX = 33 };
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
        for (size_t ri = 0; ri < sizeof rows_list / sizeof rows_list[0]; ri++) {
            const int64_t k = ks[ki], rows = rows_list[ri];
            if (k == 2049 && rows == 67)
                continue; /* keep the run short */
            const size_t rb = gm_row_size(GM_TYPE_BF16, k);
            uint8_t *wd = malloc(rb * (size_t)rows); /* exact size: ASan sees overreads */
            float *wf = malloc((size_t)k * sizeof(float));
            for (int64_t r = 0; r < rows; r++) {
                fill_values(wf, k, 0);
                gm_quantize_row(GM_TYPE_BF16, wf, wd + (size_t)r * rb, k);
            }
            gm_matrix w = { .type = GM_TYPE_BF16, .rows = rows, .cols = k, .row_bytes = rb,
                            .data = wd, .name = "bf16" };
            const int64_t ldx = k + 3, ldy = rows + 2;
            float *x = malloc((size_t)(NMAX * ldx) * sizeof(float));
            for (int64_t t = 0; t < NMAX; t++) {
                fill_values(x + t * ldx, k, 0);
                for (int64_t c = k; c < ldx; c++)
                    x[t * ldx + c] = NAN;
            }
            float *ref = malloc((size_t)(NMAX * rows) * sizeof(float));
            double *deq = malloc((size_t)(NMAX * rows) * sizeof(double));
            double *bound = malloc((size_t)(NMAX * rows) * sizeof(double));
            double *sabs = malloc((size_t)(NMAX * rows) * sizeof(double));
            reference(&w, x, NMAX, ldx, ref, deq, bound, sabs);
            float *yb = malloc((size_t)(NMAX * ldy) * sizeof(float));
            float *y = malloc((size_t)(NMAX * ldy) * sizeof(float));
            /* decode: one token per call */
            float *yd = malloc((size_t)(NMAX * ldy) * sizeof(float));
            for (int64_t t = 0; t < NMAX; t++)
                mm_tokens(NULL, &w, x, ldx, t, 1, yd, ldy);
            for (int64_t n = 1; n <= NMAX; n++) {
                mm_tokens(NULL, &w, x, ldx, 0, n, yb, ldy);
                double worst = 0.0;
                int same_decode = 1;
                for (int64_t t = 0; t < n; t++)
                    for (int64_t r = 0; r < rows; r++) {
                        const double e = fabs((double)yb[t * ldy + r] - deq[t * rows + r]) /
                                         bf16dp_bound(k, sabs[t * rows + r]);
                        worst = e > worst || isnan(e) ? e : worst;
                        same_decode &= yb[t * ldy + r] == yd[t * ldy + r];
                    }
                CHECKF(worst <= 1.0, "bf16 split rows=%lld k=%lld n=%lld: err %.3g x bound",
                       (long long)rows, (long long)k, (long long)n, worst);
                CHECKF(same_decode, "bf16 split rows=%lld k=%lld n=%lld: batch != decode",
                       (long long)rows, (long long)k, (long long)n);
                /* chunked prefill (chunks of 5) and threads: bit-identical */
                gm_pool *pools[3] = { NULL, pool2, pool3 };
                for (int p = 0; p < 3; p++) {
                    if (p > 0 && !pools[p])
                        continue;
                    if (p == 0) {
                        for (int64_t t0 = 0; t0 < n; t0 += 5)
                            mm_tokens(NULL, &w, x, ldx, t0, n - t0 < 5 ? n - t0 : 5, y, ldy);
                    } else {
                        mm_tokens(pools[p], &w, x, ldx, 0, n, y, ldy);
                    }
                    int same = 1;
                    for (int64_t t = 0; t < n; t++)
                        same &= memcmp(y + t * ldy, yb + t * ldy, (size_t)rows * sizeof(float)) == 0;
                    CHECKF(same, "bf16 split rows=%lld k=%lld n=%lld: %s differs from one batch",
                           (long long)rows, (long long)k, (long long)n,
                           p == 0 ? "chunked prefill" : "threaded");
                }
            }

            /* Dispatch: the driver's result is the AVX512_BF16 kernel's, and with
             * GEMMAD_AVX512BF16=0 (as on a CPU without it) the fp32 FMA kernel's. */
            const int64_t n = 9, kp = (k + 31) / 32 * 32;
            uint16_t *xbf = aligned_alloc(64, (size_t)(n * 2 * kp) * sizeof(uint16_t));
            for (int64_t t = 0; t < n; t++)
                gm_act_split_bf16_avx512(x + t * ldx, k, xbf + t * 2 * kp, xbf + t * 2 * kp + kp);
            gm_act act = { .n = n, .k = k, .x = x, .ldx = ldx, .xbf = xbf, .xbf_stride = 2 * kp };
            gm_kernel_avx512_bf16()(&w, &act, 0, rows, y, ldy);
            mm_tokens(NULL, &w, x, ldx, 0, n, yb, ldy);
            int same_dp = 1, same_fma = 1;
            for (int64_t t = 0; t < n; t++)
                same_dp &= memcmp(y + t * ldy, yb + t * ldy, (size_t)rows * sizeof(float)) == 0;
            act.xbf = NULL;
            act.xbf_stride = 0;
            gm_kernel_avx512(GM_TYPE_BF16)(&w, &act, 0, rows, y, ldy);
            setenv("GEMMAD_AVX512BF16", "0", 1);
            mm_tokens(NULL, &w, x, ldx, 0, n, yb, ldy);
            unsetenv("GEMMAD_AVX512BF16");
            for (int64_t t = 0; t < n; t++)
                same_fma &= memcmp(y + t * ldy, yb + t * ldy, (size_t)rows * sizeof(float)) == 0;
            CHECKF(same_dp && same_fma, "bf16 rows=%lld k=%lld: dispatch (bf16 %d, fallback %d)",
                   (long long)rows, (long long)k, same_dp, same_fma);
            free(xbf);
            free(wd);
            free(wf);
            free(x);
            free(ref);
            free(deq);
            free(bound);
            free(sabs);
            free(yb);
            free(y);
            free(yd);
        }
    }

    /* Same-signed rounding errors: every x rounds to bf16 with error 2^-8 - 2^-10 in
     * one direction, so hi alone would be off by ~3e-3 of the sum; with lo the split is
     * exact and only fp32 accumulation error remains. */
    {
        enum { k = 1000, rows = 3 };
        const size_t rb = gm_row_size(GM_TYPE_BF16, k);
        uint8_t *wd = malloc(rb * rows);
        float wf[k], x[k], y[rows];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < k; c++)
                wf[c] = r == 0 ? 1.0f : 0.25f + 0.5f * fabsf(rnd_uniform());
            gm_quantize_row(GM_TYPE_BF16, wf, wd + (size_t)r * rb, k);
        }
        for (int c = 0; c < k; c++)
            x[c] = 1.0f + 0x1p-8f + 0x1p-10f;
        gm_matrix w = { .type = GM_TYPE_BF16, .rows = rows, .cols = k, .row_bytes = rb,
                        .data = wd, .name = "bf16" };
        gm_matmul_isa(GM_ISA_AVX512, NULL, &w, x, 1, k, y, rows);
        for (int r = 0; r < rows; r++) {
            double s = 0.0;
            for (int c = 0; c < k; c++)
                s += (double)gm_bf16_to_fp32(((const uint16_t *)(wd + (size_t)r * rb))[c]) * x[c];
            CHECKF(fabs(y[r] - s) <= 1e-6 * s, "bf16 coherent row %d: %.9g vs %.9g", r, y[r], s);
        }
        free(wd);
    }
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
    test_batch_invariance(pool2);
    test_bf16_dp(pool2, pool3);
    gm_pool_destroy(pool2);
    gm_pool_destroy(pool3);
    return gm_test_finish();
}
