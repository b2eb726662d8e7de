/* chat.h — the Gemma 4 chat format: turns, history, media placeholders expanded to
 * begin marker + N soft tokens + end marker, thinking off unless asked. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "context.h"
#include "tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gm_role {
    GM_ROLE_SYSTEM = 0,
    GM_ROLE_USER = 1,
    GM_ROLE_MODEL = 2,   /* "assistant" */
} gm_role;

typedef enum gm_part_type {
    GM_PART_TEXT = 0,
    GM_PART_IMAGE = 1,
    GM_PART_AUDIO = 2,
    GM_PART_VIDEO = 3,
} gm_part_type;

typedef struct gm_chat_part {
    gm_part_type type;
    const char *text;        /* TEXT */
    int32_t n_soft_tokens;   /* media: number of soft tokens */
    const float *embd;       /* media: n_soft_tokens rows of n_embd (may be NULL when only
                                counting tokens, e.g. for tokenize-only tools) */
} gm_chat_part;

typedef struct gm_chat_message {
    gm_role role;
    const gm_chat_part *parts;
    size_t n_parts;
} gm_chat_message;

typedef struct gm_chat_options {
    bool thinking;               /* put <|think|> in the system turn */
    bool add_generation_prompt;  /* end with "<|turn>model\n" */
} gm_chat_options;

/* A rendered prompt: spans over ids the prompt owns. */
typedef struct gm_prompt {
    gm_span *spans;
    size_t n_spans, cap_spans;
    gm_tokens ids;      /* storage for all text spans' ids (spans point into it after finish) */
    int32_t n_positions;
    /* private: span start offsets into ids, fixed up by gm_prompt_finish */
    size_t *text_off;
} gm_prompt;

void gm_prompt_init(gm_prompt *p);
void gm_prompt_free(gm_prompt *p);
/* Appends text (tokenized, with special tokens parsed when parse_special). */
int gm_prompt_add_text(gm_prompt *p, const gm_tokenizer *tok, const char *text, bool parse_special,
                       gm_error *err);
int gm_prompt_add_ids(gm_prompt *p, const int32_t *ids, size_t n, gm_error *err);
/* Appends begin marker + media span + end marker. */
int gm_prompt_add_media(gm_prompt *p, const gm_tokenizer *tok, gm_part_type type, int32_t n,
                        const float *embd, gm_error *err);
/* Must be called after the last add, before the spans are used. */
void gm_prompt_finish(gm_prompt *p);

/* Renders messages as the Gemma 4 template does (BOS first). */
int gm_chat_build(const gm_tokenizer *tok, const gm_chat_message *msgs, size_t n_msgs,
                  const gm_chat_options *opts, gm_prompt *out, gm_error *err);

/* The same rendering as text (media shown as their placeholder runs collapsed to
 * "<|image|>" / "<|audio|>"), for inspection. malloc'd. */
char *gm_chat_render_text(const gm_chat_message *msgs, size_t n_msgs, const gm_chat_options *opts);

#ifdef __cplusplus
}
#endif
