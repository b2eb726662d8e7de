/* sampler.h — token sampling: greedy, temperature, top-k, top-p, min-p, repetition /
 * presence / frequency penalties, seeded (same seed => same tokens). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gm_sampler_params {
    float temperature;        /* <= 0: greedy */
    int32_t top_k;            /* <= 0: off */
    float top_p;              /* >= 1: off */
    float min_p;              /* <= 0: off */
    float repeat_penalty;     /* 1: off (llama.cpp semantics: divide positive logits) */
    int32_t repeat_last_n;    /* window for penalties; -1 = whole history, 0 = off */
    float presence_penalty;   /* 0: off */
    float frequency_penalty;  /* 0: off */
    uint64_t seed;
} gm_sampler_params;

/* Defaults: greedy off, temperature 1.0, top_k 64, top_p 0.95 (Gemma 4's generation config),
 * min_p 0, penalties off, repeat_last_n 64, seed 0. */
gm_sampler_params gm_sampler_default_params(void);

typedef struct gm_sampler gm_sampler;

gm_sampler *gm_sampler_new(const gm_sampler_params *p, int32_t n_vocab);
void gm_sampler_free(gm_sampler *s);
void gm_sampler_reset(gm_sampler *s);  /* forget history, re-seed */

/* Picks a token from logits (n_vocab floats; may be modified in place). */
int32_t gm_sampler_sample(gm_sampler *s, float *logits);
/* Records a token in the penalty history (prompt tokens too, if wanted). */
void gm_sampler_accept(gm_sampler *s, int32_t id);

#ifdef __cplusplus
}
#endif
