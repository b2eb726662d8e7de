/* clipped-linear.h — Gemma 4's clippable linear (vision and audio towers): a weight
 * matrix with optional input and output clamps, stored by llama.cpp's converter as
 * scalars `<base>.input_min`, `.input_max`, `.output_min`, `.output_max` {1} beside
 * `<base>.weight`. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "core/gguf.h"
#include "core/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gm_clipped_linear {
    gm_matrix w;
    float in_min, in_max, out_min, out_max;  /* ±FLT_MAX when the file has no clamp */
    bool clamp_in, clamp_out;
} gm_clipped_linear;

/* Loads `base`.weight (rows outputs × cols inputs, 2-D) and whatever clamps the file has;
 * inverted bounds are a format error. */
int gm_clipped_linear_load(const gm_gguf *g, const char *base, int64_t rows, int64_t cols,
                           gm_clipped_linear *l, gm_error *err);

/* max then min, in the operand order of maxps/minps (a NaN passes through, as in
 * torch.clamp), so loops of it vectorize. */
static inline float gm_clampf(float x, float lo, float hi)
{
    x = lo > x ? lo : x;
    return hi < x ? hi : x;
}

static inline void gm_clampv(float *x, int64_t n, float lo, float hi)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = gm_clampf(x[i], lo, hi);
}

#ifdef __cplusplus
}
#endif
