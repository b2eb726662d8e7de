/* vision-encoder.h — the gemma4v vision encoder (mmproj GGUF, projector_type gemma4v).
 *
 * Patches (gm_image_patches from image-preprocess.h) of one image → n_soft_tokens rows
 * of projection_dim floats, the text-width embeddings spliced in for the image
 * placeholders. Math as transformers 5.17.0 Gemma4 get_image_features (see
 * tests/conformance/generate_vision_tower.py, gguf_forward). Plain C, fp32 activations;
 * weights of any type gm_matmul supports, used in place from the mapping.
 */
#pragma once

#include <stdint.h>

#include "core/gm-error.h"
#include "core/pool.h"
#include "vision/image-preprocess.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gm_vision_model gm_vision_model;

/* Opens an mmproj GGUF and checks every key and tensor shape the encoder uses; NULL with
 * err naming the file and the key / tensor on failure. */
gm_vision_model *gm_vision_model_load(const char *mmproj_path, gm_error *err);
void gm_vision_model_free(gm_vision_model *m);

uint32_t gm_vision_model_projection_dim(const gm_vision_model *m); /* text width */
uint32_t gm_vision_model_hidden(const gm_vision_model *m);         /* vision width */

/* Optional intermediate results (each NULL or sized by the caller):
 * patch_embd / layer0 / encoder_out: n_patches × hidden; pooled (3×3 average × sqrt(H)) /
 * vision_out (after optional standardisation): n_soft_tokens × hidden. */
typedef struct gm_vision_checkpoints {
    float *patch_embd;
    float *layer0;
    float *encoder_out;
    float *pooled;
    float *vision_out;
} gm_vision_checkpoints;

/* Encodes one image: out holds n_soft_tokens × projection_dim floats. pool may be NULL.
 * Returns GM_OK or an error code (bad grid / positions give GM_ERR_INVALID). */
int gm_vision_encode(const gm_vision_model *m, gm_pool *pool, const gm_image_patches *patches,
                     float *soft_tokens_out, gm_error *err);
int gm_vision_encode_checkpoints(const gm_vision_model *m, gm_pool *pool,
                                 const gm_image_patches *patches, float *soft_tokens_out,
                                 const gm_vision_checkpoints *ck, gm_error *err);

#ifdef __cplusplus
}
#endif
