/* audio-decode.h — a sound file's bytes to mono float samples at 16 kHz, the input of
 * Gemma 4's audio feature extractor.
 *
 * Decoding goes through libsndfile's virtual-I/O interface on the bytes in memory (every
 * format and sample type libsndfile reads: WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, AU, …);
 * channels are averaged to mono; the rate is converted to 16 kHz with libsoxr at its
 * high-quality setting (SOXR_HQ, what librosa's default "soxr_hq" uses). Errors never
 * abort; messages start with "audio: " and name what is wrong. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "core/gm-error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GM_AUDIO_SAMPLE_RATE 16000

typedef struct gm_audio_limits {
    double max_seconds;        /* longest accepted duration; 0 = 600 s */
    uint32_t max_channels;     /* 0 = 64 */
    uint32_t min_rate, max_rate; /* accepted source rates in Hz; 0 = 1000 / 384000 */
} gm_audio_limits;

/* Decoded sound at its own rate, downmixed to mono. */
typedef struct gm_audio_pcm {
    uint32_t rate;             /* source sample rate */
    uint32_t channels;         /* source channel count (before the downmix) */
    size_t n_samples;          /* mono samples */
    float *samples;            /* malloc'd, nominally in [-1, 1] */
    char format[32];           /* container/codec as libsndfile names it, e.g. "WAV PCM_16" */
} gm_audio_pcm;

/* Decodes data (len bytes). Refuses unknown or corrupt files, zero-length audio, sample
 * rates or channel counts outside the limits and durations beyond max_seconds (that one
 * GM_ERR_LIMIT: a policy, not a bad file) — reading
 * in blocks, never allocating from the header's frame count first. lim may be NULL. */
int gm_audio_decode(const uint8_t *data, size_t len, const gm_audio_limits *lim,
                    gm_audio_pcm *out, gm_error *err);
void gm_audio_pcm_free(gm_audio_pcm *pcm);

/* Resamples mono samples from rate_in to rate_out with libsoxr (SOXR_HQ, float32).
 * *out is malloc'd with *n_out samples (the full output, flushed). rate_in == rate_out
 * copies. */
int gm_audio_resample(const float *in, size_t n_in, uint32_t rate_in, uint32_t rate_out,
                      float **out, size_t *n_out, gm_error *err);

/* decode → downmix → resample to 16 kHz; timing of each stage (may be NULL). */
typedef struct gm_audio_timing {
    double decode_s, resample_s;
} gm_audio_timing;

int gm_audio_load_16k(const uint8_t *data, size_t len, const gm_audio_limits *lim,
                      gm_audio_pcm *out, gm_audio_timing *timing, gm_error *err);

#ifdef __cplusplus
}
#endif
