/* quant.h — block formats: dequantize, quantize (reference), activation quantization.
 *
 * Scalar reference code. The SIMD kernels in kernels-*.c are held to these by tests.
 */
#pragma once

#include <stdint.h>

#include "gm-types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Dequantizes n elements (a multiple of the type's block size) of `type` at src into dst.
 * Handles F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K. Returns 0, or -1
 * for an unsupported type. */
int gm_dequantize_row(gm_type type, const void *src, float *dst, int64_t n);

/* Quantizes n floats into `type` (reference, round-to-nearest quantizers in the style
 * of ggml's `quantize_row_*_ref`; used by the model generator and tests).
 * Returns 0 or -1 for an unsupported type. dst must hold gm_row_size(type, n) bytes. */
int gm_quantize_row(gm_type type, const float *src, void *dst, int64_t n);

/* Activation quantization, as a fast CPU engine does it:
 * Q8_0 activations (per 32: d = max|x|/127, q = round(x/d)) for Q4_0/Q4_1/Q5_0/Q8_0 weights,
 * Q8_K activations (per 256, with 16-element group sums) for Q4_K/Q5_K/Q6_K weights. */
void gm_quantize_row_q8_0(const float *x, gm_block_q8_0 *y, int64_t n);
void gm_quantize_row_q8_K(const float *x, gm_block_q8_K *y, int64_t n);

/* The activation type used against weights of type t (GM_TYPE_Q8_0, GM_TYPE_Q8_K, or
 * GM_TYPE_F32 for float weight types). */
gm_type gm_vec_dot_type(gm_type t);

/* Scalar reference dot products of one weight row (n elements, type t) with one
 * activation row already in gm_vec_dot_type(t) format (F32 for float types).
 * These define the expected numerics of every SIMD kernel. */
float gm_vec_dot_ref(gm_type t, const void *w_row, const void *act_row, int64_t n);

#ifdef __cplusplus
}
#endif
