/* image-preprocess.h — Gemma4ImageProcessor of transformers 5.17.0 (gemma4-model.md §4.1):
 * aspect-preserving target size on the 48-pixel grid for a soft-token budget, bicubic
 * resize with antialiasing as the reference computes it, rescale to [0, 1], 16×16 patches
 * in HWC order with their (x, y) positions. Padding patches are not produced. */
#pragma once

#include <stdint.h>

#include "core/gm-error.h"
#include "image-decode.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GM_IMAGE_PATCH 16
#define GM_IMAGE_PATCH_VALUES (GM_IMAGE_PATCH * GM_IMAGE_PATCH * 3)   /* 768 */

/* True for the budgets the processor accepts: 70, 140, 280, 560, 1120. */
int gm_image_budget_valid(int max_soft_tokens);

/* Target size (th, tw) for an h×w image and a budget, as §4.1 (multiples of 48). */
int gm_image_target_size(uint32_t width, uint32_t height, int max_soft_tokens,
                         uint32_t *target_width, uint32_t *target_height, gm_error *err);

typedef struct gm_image_patches {
    uint32_t grid_w, grid_h;   /* patches per row / column (target size / 16) */
    uint32_t n_patches;        /* grid_w * grid_h */
    uint32_t n_soft_tokens;    /* (grid_w / 3) * (grid_h / 3) */
    float *values;             /* n_patches rows of 768 floats in [0, 1], processor order */
    int32_t *pos;              /* n_patches pairs (x = column, y = row) */
} gm_image_patches;

/* The reference's resize on its own: RGB8 sw×sh → dw×dh (dst holds dw*dh*3 bytes), bicubic
 * (a = -0.5) with antialiasing, the uint8 fixed-point separable scheme of torchvision /
 * ATen (horizontal pass, rounded to uint8, then vertical). Equal sizes copy. */
int gm_image_resize_bicubic_aa(const uint8_t *src, uint32_t sw, uint32_t sh, uint8_t *dst,
                               uint32_t dw, uint32_t dh, gm_error *err);

int gm_image_preprocess(const gm_image *img, int max_soft_tokens, gm_image_patches *out,
                        gm_error *err);
void gm_image_patches_free(gm_image_patches *p);

#ifdef __cplusplus
}
#endif
