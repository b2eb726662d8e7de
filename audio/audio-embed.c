/* audio-embed.c — decode → features → encode for one sound file, timing each stage. */
#define _POSIX_C_SOURCE 200809L
#include "audio/audio-embed.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audio/audio-features.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int gm_audio_embed(const gm_audio_model *m, gm_pool *pool, const uint8_t *data, size_t len,
                   const gm_audio_limits *lim, gm_audio_embedding *out, gm_error *err)
{
    memset(out, 0, sizeof *out);
    gm_audio_pcm pcm = { 0 };
    gm_audio_timing t = { 0 };
    int rc = gm_audio_load_16k(data, len, lim, &pcm, &t, err);
    if (rc != GM_OK)
        return rc;

    double t0 = now_s();
    gm_audio_features feats = { 0 };
    rc = gm_audio_featurize(pcm.samples, pcm.n_samples, &feats, err);
    double t1 = now_s();
    gm_audio_embedding e = { .src_rate = pcm.rate, .src_channels = pcm.channels,
                             .seconds = (double)pcm.n_samples / GM_AUDIO_SAMPLE_RATE,
                             .n_embd = gm_audio_model_projection_dim(m),
                             .decode_s = t.decode_s, .resample_s = t.resample_s,
                             .features_s = t1 - t0 };
    memcpy(e.format, pcm.format, sizeof e.format);
    gm_audio_pcm_free(&pcm);
    if (rc != GM_OK)
        return rc;

    e.clips = calloc(feats.n_clips, sizeof *e.clips);
    if (e.clips == NULL) {
        gm_audio_features_free(&feats);
        return gm_set_error(err, GM_ERR_NOMEM, "audio: out of memory for %zu clips", feats.n_clips);
    }
    e.n_clips = feats.n_clips;
    for (size_t k = 0; k < feats.n_clips && rc == GM_OK; k++) {
        const gm_audio_clip_features *c = &feats.clips[k];
        gm_audio_clip_embedding *ce = &e.clips[k];
        ce->n_frames = c->n_frames;
        ce->n_soft_tokens = gm_audio_n_soft_tokens(c->n_frames);
        ce->embd = malloc((size_t)ce->n_soft_tokens * e.n_embd * sizeof *ce->embd);
        if (ce->embd == NULL) {
            rc = gm_set_error(err, GM_ERR_NOMEM, "audio: out of memory for %u soft tokens",
                              ce->n_soft_tokens);
            break;
        }
        rc = gm_audio_encode(m, pool, c->values, c->n_frames, ce->embd, err);
        if (rc != GM_OK && e.n_clips > 1)
            gm_error_prefix(err, "audio: clip %zu", k);
    }
    e.encode_s = now_s() - t1;
    gm_audio_features_free(&feats);
    if (rc != GM_OK) {
        gm_audio_embedding_free(&e);
        return rc;
    }
    *out = e;
    return GM_OK;
}

void gm_audio_embedding_free(gm_audio_embedding *e)
{
    if (e == NULL)
        return;
    for (size_t k = 0; k < e->n_clips; k++)
        free(e->clips[k].embd);
    free(e->clips);
    memset(e, 0, sizeof *e);
}
