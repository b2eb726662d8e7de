/* audio-embed.h — one sound file's bytes to the soft-token embeddings spliced into a
 * prompt: decode + downmix + resample (audio-decode.h) → log-mel features of each 30 s
 * clip (audio-features.h) → the conformer and its two-stage projection (audio-encoder.h),
 * with the time each stage took. Each clip becomes its own audio block (begin marker,
 * soft tokens, end marker) in the prompt. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "audio/audio-decode.h"
#include "audio/audio-encoder.h"
#include "core/gm-error.h"
#include "core/pool.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gm_audio_clip_embedding {
    uint32_t n_frames;        /* log-mel frames of the clip */
    uint32_t n_soft_tokens;
    float *embd;              /* n_soft_tokens × n_embd (malloc'd) */
} gm_audio_clip_embedding;

typedef struct gm_audio_embedding {
    uint32_t src_rate, src_channels;
    char format[32];
    double seconds;           /* duration at 16 kHz */
    uint32_t n_embd;          /* = gm_audio_model_projection_dim */
    size_t n_clips;
    gm_audio_clip_embedding *clips;   /* malloc'd array */
    double decode_s, resample_s, features_s, encode_s;
} gm_audio_embedding;

/* Decodes, splits into 30 s clips and encodes every clip. lim and pool may be NULL. On
 * error out is left empty and err says what is wrong ("audio: …"). */
int gm_audio_embed(const gm_audio_model *m, gm_pool *pool, const uint8_t *data, size_t len,
                   const gm_audio_limits *lim, gm_audio_embedding *out, gm_error *err);
void gm_audio_embedding_free(gm_audio_embedding *e);

#ifdef __cplusplus
}
#endif
