/* context.h — an inference context: the KV cache of one sequence and the forward pass.
 *
 * Input is a list of spans: token ids, or a block of external embeddings (soft tokens)
 * typed image / video / audio. The context builds the masks itself (causal, sliding
 * window, and bidirectional image/video blocks on sliding layers when the model asks
 * for it); a media block is never split across prefill chunks.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/gm-error.h"
#include "core/pool.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gm_span_type {
    GM_SPAN_TEXT = 0,
    GM_SPAN_IMAGE = 1,
    GM_SPAN_VIDEO = 2,
    GM_SPAN_AUDIO = 3,
} gm_span_type;

typedef struct gm_span {
    gm_span_type type;
    int32_t n;            /* positions in the span */
    const int32_t *ids;   /* TEXT: n token ids. Media: ignored (PLE uses the pad row) */
    const float *embd;    /* media: n rows of n_embd floats (already in text space) */
} gm_span;

typedef enum gm_logits_mode {
    GM_LOGITS_NONE = 0,   /* no logits (prefill of history) */
    GM_LOGITS_LAST = 1,   /* one row: the last position */
    GM_LOGITS_ALL = 2,    /* one row per evaluated position */
} gm_logits_mode;

typedef struct gm_context_params {
    int32_t n_ctx;        /* max positions (<= 0: min(n_ctx_train, 4096)) */
    int32_t n_batch;      /* max positions per prefill chunk (<= 0: 512) */
    gm_pool *pool;        /* kernels' thread pool (may be NULL) */
    /* Polled between layers and chunks; non-zero cancels eval with GM_ERR_CANCELLED. */
    int (*should_cancel)(void *ud);
    void *cancel_ud;
} gm_context_params;

typedef struct gm_context gm_context;

gm_context *gm_context_new(const gm_model *model, const gm_context_params *params, gm_error *err);
void gm_context_free(gm_context *ctx);

const gm_model *gm_context_model(const gm_context *ctx);
int32_t gm_context_n_past(const gm_context *ctx);
int32_t gm_context_n_ctx(const gm_context *ctx);

/* Evaluates the spans as the positions following the ones already in the cache.
 * logits (when mode != NONE) receives rows of n_vocab floats (after the final softcap):
 * one row for LAST, one per evaluated position for ALL. On error (including
 * GM_ERR_RANGE when n_past + n would exceed n_ctx) the cache is left as it was
 * before the call. */
int gm_context_eval(gm_context *ctx, const gm_span *spans, size_t n_spans, gm_logits_mode mode,
                    float *logits, gm_error *err);

/* Keeps the first n_keep positions and forgets the rest, so a chat turn can reuse its
 * common prefix. Returns GM_ERR_RANGE (cache unchanged) when the sliding-window caches
 * no longer hold what position n_keep needs; then the caller must clear and re-evaluate. */
int gm_context_truncate(gm_context *ctx, int32_t n_keep, gm_error *err);
void gm_context_clear(gm_context *ctx);

/* How many leading positions of spans equal what the cache already holds (text by id,
 * media by type and a hash of the embeddings): the prefix a new request can reuse. */
int32_t gm_context_common_prefix(const gm_context *ctx, const gm_span *spans, size_t n_spans);

/* Bytes held by the KV cache. */
size_t gm_context_kv_bytes(const gm_context *ctx);

#ifdef __cplusplus
}
#endif
