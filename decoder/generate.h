/* generate.h — the generate loop: prefill a prompt, then sample and stream text until
 * an end-of-generation token, a stop string, max tokens, or cancellation. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chat.h"
#include "context.h"
#include "sampler.h"
#include "tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gm_stop_reason {
    GM_STOP_EOG = 0,          /* end-of-generation token */
    GM_STOP_STRING = 1,       /* a stop string matched (it is not emitted) */
    GM_STOP_MAX_TOKENS = 2,
    GM_STOP_CANCELLED = 3,
    GM_STOP_CONTEXT_FULL = 4,
    GM_STOP_ERROR = 5,
} gm_stop_reason;

const char *gm_stop_reason_name(gm_stop_reason r);

typedef struct gm_generate_params {
    gm_sampler_params sampling;
    int32_t max_tokens;             /* <= 0: until the context is full */
    const char *const *stop_strings;
    size_t n_stop_strings;
    bool render_special;            /* stream CONTROL tokens' text too */
    bool reuse_prefix;              /* keep the common prefix already in the context */
} gm_generate_params;

/* Called with each new piece of valid UTF-8 text; return non-zero to cancel. */
typedef int (*gm_piece_fn)(void *ud, const char *text, size_t len);
/* Called after each sampled token (may be NULL); return non-zero to cancel. */
typedef int (*gm_token_fn)(void *ud, int32_t id);

typedef struct gm_generate_result {
    gm_stop_reason stop_reason;
    int32_t n_prompt;          /* positions in the prompt */
    int32_t n_prompt_reused;   /* of those, reused from the cache */
    int32_t n_generated;
    double prefill_seconds;
    double decode_seconds;
} gm_generate_result;

int gm_generate(gm_context *ctx, const gm_tokenizer *tok, const gm_prompt *prompt,
                const gm_generate_params *params, gm_piece_fn on_piece, gm_token_fn on_token,
                void *ud, gm_generate_result *result, gm_error *err);

#ifdef __cplusplus
}
#endif
