/* kernels-impl.h — private interface between the matmul driver (kernels.c) and the
 * per-ISA kernels (kernels-avx2.c, kernels-avx512.c). Not part of the public API.
 *
 * The driver quantizes the activations once per call (gm_quantize_row_q8_0 / _q8_K, the
 * same numerics as gm_vec_dot_ref) and unpacks them into plain arrays that SIMD code can
 * broadcast from directly:
 *
 *   q[t][k]     the int8 activation quants of token t (rows of q_stride bytes);
 *   d[t][b]     the activation scale of each 32 columns, as float (a Q8_K super-block's
 *               d repeated over its 8 sub-blocks);
 *   corr[t][g]  -bias * sum(q over group g) where the group is 32 columns (16 for Q6_K)
 *               and bias is the offset that makes the weight quants unsigned (Q4_0: 8,
 *               Q5_0: 16, Q8_0: 128, Q6_K: 32, others 0) — an exact int32, so
 *               dot(q_unsigned, a) + corr == dot(q_signed, a) exactly;
 *   dsum[t][b]  d[t][b] * sum(q over the 32 columns), for weight types with a min
 *               (Q4_1, Q4_K, Q5_K).
 *
 * Float weight types (F32/F16/BF16) get the float activations x unchanged. BF16 weights
 * on a CPU with AVX512_BF16 also get each activation split into two bf16 halves,
 * hi = bf16(x) and lo = bf16(x - hi), so that two vdpbf16ps products w·hi + w·lo give
 * the fp32 product to ~2^-16 relative (weights are exact in bf16):
 *
 *   xbf[t][c]       hi of token t, column c, for c < kp = cols rounded up to 32;
 *   xbf[t][kp + c]  lo; columns cols..kp-1 of both halves are zero.
 *
 * A kernel computes y[t][r] for all n tokens and rows r0 <= r < r1; the driver splits
 * rows over threads. Kernels read weights in place (unaligned) and never read beyond a
 * block's bytes.
 */
#pragma once

#include <stdint.h>

#include "kernels.h"

typedef struct gm_act {
    int64_t n, k;
    const int8_t *q;
    int64_t q_stride;     /* bytes per token row of q */
    const float *d;       /* n x d_stride */
    int64_t d_stride;     /* = k / 32 */
    const int32_t *corr;  /* n x corr_stride */
    int64_t corr_stride;  /* k / 32, or k / 16 for Q6_K */
    const float *dsum;    /* n x d_stride, or NULL */
    const float *x;       /* float activations (float weight types) */
    int64_t ldx;
    const uint16_t *xbf;  /* bf16 hi/lo split (BF16 weights with AVX512_BF16), or NULL */
    int64_t xbf_stride;   /* uint16 per token row = 2 * kp */
} gm_act;

typedef void (*gm_kernel_fn)(const gm_matrix *w, const gm_act *a, int64_t r0, int64_t r1,
                             float *y, int64_t ldy);

/* Pointers into the quantized activations of tokens t0..t0+T-1, starting at block kb0:
 * quants, block scales, bias corrections (nsc per block) and, when with_min, the block
 * sums that K-quant / Q4_1 minimums multiply. Shared by the per-ISA micro-kernels. */
static inline void gm_act_block_ptrs(const gm_act *a, int64_t t0, int T, int64_t kb0, int nsc,
                                     int with_min, const int8_t **aq, const float **ad,
                                     const int32_t **ac, const float **am)
{
    for (int t = 0; t < T; t++) {
        aq[t] = a->q + (t0 + t) * a->q_stride + kb0 * 32;
        ad[t] = a->d + (t0 + t) * a->d_stride + kb0;
        ac[t] = a->corr + (t0 + t) * a->corr_stride + kb0 * nsc;
        am[t] = with_min ? a->dsum + (t0 + t) * a->d_stride + kb0 : NULL;
    }
}

/* Tokens per block so that a block's activations (bytes_per_token each) fit the ISA's
 * cache budget: a multiple of the token tile, at least one tile, at most n. */
static inline int64_t gm_token_block(int64_t budget_bytes, int64_t n, int64_t bytes_per_token, int tile)
{
    int64_t tb = budget_bytes / (bytes_per_token > 0 ? bytes_per_token : 1);
    tb = tb / tile * tile;
    if (tb < tile)
        tb = tile;
    return tb < n ? tb : n;
}

/* Weight-quant offset that makes the stored quants unsigned for the SIMD dot products. */
static inline int gm_kernel_bias(gm_type t)
{
    switch (t) {
    case GM_TYPE_Q4_0: return 8;
    case GM_TYPE_Q5_0: return 16;
    case GM_TYPE_Q8_0: return 128;
    case GM_TYPE_Q6_K: return 32;
    default: return 0;
    }
}

/* Columns per corr entry. */
static inline int gm_kernel_corr_group(gm_type t)
{
    return t == GM_TYPE_Q6_K ? 16 : 32;
}

/* Kernel for weight type t, or NULL when the ISA has none. */
gm_kernel_fn gm_kernel_avx2(gm_type t);
gm_kernel_fn gm_kernel_avx512(gm_type t);

/* AMX-INT8 tile kernels (quantized types; NULL when the CPU or OS lacks AMX). They need
 * the activation arrays padded with zero rows to a multiple of 16 tokens. */
gm_kernel_fn gm_kernel_amx(gm_type t);
int gm_amx_available(void);

/* Quantizes one activation row (k floats) straight into the unpacked arrays above
 * (q: k bytes, d and dsum: k/32 floats, corr: k/group ints; dsum may be NULL), bit for
 * bit as gm_quantize_row_q8_0 / _q8_K followed by unpacking would. Inputs must not hold
 * NaN. */
void gm_act_quant_avx512(gm_type wtype, const float *x, int64_t k, int8_t *q, float *d,
                         int32_t *corr, float *dsum);

/* AVX512_BF16 kernel for BF16 weights (needs a->xbf) and the split that fills xbf for
 * one token: hi and lo get kp = k rounded up to 32 values each, zero past k. Only call
 * them where gm_cpu_get_features()->avx512bf16. */
gm_kernel_fn gm_kernel_avx512_bf16(void);
void gm_act_split_bf16_avx512(const float *x, int64_t k, uint16_t *hi, uint16_t *lo);

/* Preferred row granularity of an ISA's kernels (row ranges handed to a kernel start
 * at multiples of it, except that the last range ends at rows). */
int gm_kernel_rows_avx2(void);
int gm_kernel_rows_avx512(void);
