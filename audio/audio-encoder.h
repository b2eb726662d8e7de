/* audio-encoder.h — the gemma4a audio encoder (mmproj GGUF, clip.audio.projector_type
 * gemma4a): log-mel features of one clip → soft tokens in the text width.
 *
 * Two stride-2 Conv2d layers with channel LayerNorm and ReLU, the input projection,
 * conformer blocks (half-step SiLU FFNs, chunked local attention with relative positions,
 * per-dim query scale, logit cap 50, light conv module with GLU and causal depthwise conv,
 * clipped linears), the output norm, then the two-stage projection: the tower's
 * output_proj (1024→1536, with bias) and the embedder's weightless RMSNorm and projection
 * to the text width. Math as transformers 5.17.0 Gemma4 get_audio_features (see
 * gemma4-model.md §5.2–5.5). Plain C, fp32 activations; weights of any type gm_matmul
 * supports, used in place from the mapping. One soft token per 4 frames (40 ms). */
#pragma once

#include <stdint.h>

#include "core/gm-error.h"
#include "core/pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gm_audio_model gm_audio_model;

/* Opens an mmproj GGUF and checks every key and tensor the encoder uses; NULL with err
 * naming the file and the key / tensor (also when the file has no gemma4a encoder). */
gm_audio_model *gm_audio_model_load(const char *mmproj_path, gm_error *err);
void gm_audio_model_free(gm_audio_model *m);

uint32_t gm_audio_model_projection_dim(const gm_audio_model *m); /* text width */
uint32_t gm_audio_model_hidden(const gm_audio_model *m);         /* conformer width */

/* Soft tokens for n_frames feature frames: ⌈⌈n_frames/2⌉/2⌉. */
uint32_t gm_audio_n_soft_tokens(uint32_t n_frames);

/* Optional intermediate results (each NULL or sized by the caller, n_tokens rows):
 * subsampled (after input_proj) / layer0 / encoder_out (after the last block): × hidden;
 * tower_out (after output_proj): × output_proj width. */
typedef struct gm_audio_checkpoints {
    float *subsampled;
    float *layer0;
    float *encoder_out;
    float *tower_out;
} gm_audio_checkpoints;

/* Encodes one clip's features (n_frames × 128): out holds gm_audio_n_soft_tokens(n_frames)
 * × projection_dim floats. pool may be NULL. */
int gm_audio_encode(const gm_audio_model *m, gm_pool *pool, const float *features,
                    uint32_t n_frames, float *soft_tokens_out, gm_error *err);
int gm_audio_encode_checkpoints(const gm_audio_model *m, gm_pool *pool, const float *features,
                                uint32_t n_frames, float *soft_tokens_out,
                                const gm_audio_checkpoints *ck, gm_error *err);

#ifdef __cplusplus
}
#endif
