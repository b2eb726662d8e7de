/* audio-features.h — Gemma4AudioFeatureExtractor of transformers 5.17.0 (gemma4-model.md
 * §5.1): 16 kHz mono samples → log-mel features, 128 per 10 ms frame.
 *
 * Semicausal padding (160 zeros in front), 320-sample periodic Hann frames with hop 160,
 * 512-point FFT magnitude, 128-bin HTK mel bank (0–8000 Hz, no area normalisation),
 * ln(mel + 1e-3). Transformers truncates at 30 s; gemmad instead splits longer sound into
 * consecutive 30 s clips (480 000 samples), each featurised on its own exactly as
 * transformers would featurise that clip, and each becomes its own audio block in the
 * prompt. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "core/gm-error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GM_AUDIO_MEL_BINS 128
#define GM_AUDIO_CLIP_SAMPLES 480000   /* 30 s at 16 kHz */

typedef struct gm_audio_clip_features {
    uint32_t n_frames;        /* frames of the clip: all valid (no batch padding) */
    float *values;            /* n_frames × 128, frame-major (malloc'd) */
} gm_audio_clip_features;

typedef struct gm_audio_features {
    size_t n_clips;
    gm_audio_clip_features *clips;   /* malloc'd array */
} gm_audio_features;

/* Frames of a clip of n samples: ⌊(n − 161)/160⌋ + 1 for n ≥ 161, else 0 (such a clip
 * has no frame: callers refuse it as too short). */
uint32_t gm_audio_n_frames(size_t n_samples);

/* Features of one clip (n ≤ GM_AUDIO_CLIP_SAMPLES samples); out->values malloc'd. */
int gm_audio_clip_featurize(const float *samples, size_t n, gm_audio_clip_features *out,
                            gm_error *err);

/* Splits samples into 30 s clips and featurises each. A final clip too short to give a
 * frame (< 161 samples) is dropped when there are earlier clips; sound shorter than that
 * alone is an error ("audio: … too short"). */
int gm_audio_featurize(const float *samples, size_t n, gm_audio_features *out, gm_error *err);
void gm_audio_features_free(gm_audio_features *f);

#ifdef __cplusplus
}
#endif
