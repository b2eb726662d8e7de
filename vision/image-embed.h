/* image-embed.h — one image file's bytes to the soft-token embeddings spliced into a
 * prompt: decode (image-decode.h) → preprocess (image-preprocess.h) → encode
 * (vision-encoder.h), with the time each stage took. The three stages stay separate
 * functions for callers that run them on different threads (the service decodes and
 * preprocesses while rendering the prompt and encodes on its engine thread). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "core/gm-error.h"
#include "core/pool.h"
#include "vision/image-decode.h"
#include "vision/vision-encoder.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gm_image_embedding {
    uint32_t width, height;        /* decoded size (after EXIF orientation) */
    uint32_t grid_w, grid_h;       /* patch grid after resizing for the budget */
    uint32_t n_soft_tokens;
    uint32_t n_embd;               /* = gm_vision_model_projection_dim */
    float *embd;                   /* n_soft_tokens × n_embd (malloc'd) */
    double decode_s, preprocess_s, encode_s;   /* wall time of each stage */
} gm_image_embedding;

/* Decodes, preprocesses for max_soft_tokens (a valid budget: 70, 140, 280, 560, 1120)
 * and encodes one image. lim and pool may be NULL. On error out is left empty and err
 * names the stage's problem ("JPEG: …", "image: …", "vision encoder: …"). */
int gm_image_embed(const gm_vision_model *m, gm_pool *pool, const uint8_t *data, size_t len,
                   const gm_image_limits *lim, int max_soft_tokens, gm_image_embedding *out,
                   gm_error *err);
void gm_image_embedding_free(gm_image_embedding *e);

#ifdef __cplusplus
}
#endif
