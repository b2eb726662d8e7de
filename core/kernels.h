/* kernels.h — matrix products of quantized weights with float activations.
 *
 * One interface, with a scalar reference and AVX2 / AVX-512 (VNNI, BF16) versions
 * chosen at run time from CPUID (core/cpu.h). Activations are quantized the way a fast
 * CPU engine does (Q8_0 for Q4_0/Q4_1/Q5_0/Q8_0 weights, Q8_K for K-quants); F32, F16
 * and BF16 weights are multiplied against float activations. Weights are used in place
 * (from the mmap); nothing is repacked at load time.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "cpu.h"
#include "gm-types.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A weight matrix W of `rows` outputs by `cols` inputs, stored row after row
 * (ggml shape {cols, rows}); y = W·x. */
typedef struct gm_matrix {
    gm_type type;
    int64_t rows;
    int64_t cols;
    size_t row_bytes;   /* gm_row_size(type, cols) */
    const void *data;
    const char *name;   /* tensor name, for messages; may be NULL */
} gm_matrix;

/* Y[t][r] = sum_c W[r][c] * X[t][c] for t < n tokens, r < rows.
 * X: n rows of cols floats (leading dimension ldx >= cols); Y: n rows (ldy >= rows).
 * Threads over the pool (NULL = single-threaded). Uses gm_cpu_best_isa(). */
void gm_matmul(gm_pool *pool, const gm_matrix *w, const float *x, int64_t n, int64_t ldx,
               float *y, int64_t ldy);

/* Same with a forced ISA (tests hold each ISA to the scalar reference). Falls back to
 * the next lower ISA when the requested one lacks a kernel for w->type. */
void gm_matmul_isa(gm_isa isa, gm_pool *pool, const gm_matrix *w, const float *x, int64_t n,
                   int64_t ldx, float *y, int64_t ldy);

/* True when this build multiplies weights of type t (dequantize + kernels exist). */
int gm_matmul_supports(gm_type t);

#ifdef __cplusplus
}
#endif
