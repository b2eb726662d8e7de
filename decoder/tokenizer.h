/* tokenizer.h — the Gemma 4 tokenizer (tokenizer.ggml.model = "gemma4"): BPE with merges
 * on raw UTF-8 after spaces become U+2581, newline-run splitting, special-token
 * partition, byte fallback; and a streaming detokenizer that emits valid UTF-8 only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/gguf.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gm_tokenizer gm_tokenizer;

/* A growable list of token ids. */
typedef struct gm_tokens {
    int32_t *ids;
    size_t n, cap;
} gm_tokens;

int gm_tokens_push(gm_tokens *t, int32_t id);  /* 0 or GM_ERR_NOMEM */
void gm_tokens_free(gm_tokens *t);

/* Token types (tokenizer.ggml.token_type). */
enum {
    GM_TOKEN_NORMAL = 1,
    GM_TOKEN_UNKNOWN = 2,
    GM_TOKEN_CONTROL = 3,
    GM_TOKEN_USER_DEFINED = 4,
    GM_TOKEN_UNUSED = 5,
    GM_TOKEN_BYTE = 6,
};

/* Loads the vocabulary from any GGUF with tokenizer.ggml.* keys (a model file or a
 * vocabulary-only file). Strings point into g's mapping: keep g open. */
gm_tokenizer *gm_tokenizer_load(const gm_gguf *g, gm_error *err);
void gm_tokenizer_free(gm_tokenizer *tok);

int32_t gm_tokenizer_n_vocab(const gm_tokenizer *tok);
int32_t gm_tokenizer_bos(const gm_tokenizer *tok);
int32_t gm_tokenizer_eos(const gm_tokenizer *tok);
int32_t gm_tokenizer_pad(const gm_tokenizer *tok);
/* Id of a token whose text is exactly s, or -1. */
int32_t gm_tokenizer_find(const gm_tokenizer *tok, const char *s);
/* Raw vocabulary text of id (with U+2581 for spaces), or NULL if out of range. */
const char *gm_tokenizer_text(const gm_tokenizer *tok, int32_t id, size_t *len);
int gm_tokenizer_type(const gm_tokenizer *tok, int32_t id);
/* End-of-generation set: <eos>, <turn|>, <|tool_response> when present. */
bool gm_tokenizer_is_eog(const gm_tokenizer *tok, int32_t id);

/* Appends the ids of text[0..len) to out. add_bos prepends BOS. parse_special matches
 * CONTROL tokens written as text (e.g. "<|turn>"); USER_DEFINED tokens always match. */
int gm_tokenize(const gm_tokenizer *tok, const char *text, size_t len, bool add_bos,
                bool parse_special, gm_tokens *out, gm_error *err);

/* Streaming detokenizer: holds back incomplete UTF-8 sequences so every piece it
 * returns is valid UTF-8; invalid bytes become U+FFFD. */
typedef struct gm_detok {
    uint8_t pending[4];
    int n_pending;
    bool render_special;  /* render CONTROL tokens' text (off: they produce nothing) */
} gm_detok;

void gm_detok_init(gm_detok *d, bool render_special);
/* Appends the text of id to out (NUL-terminated); returns bytes written or -1 if cap
 * is too small (cap >= 64 + longest token is always enough). */
int gm_detok_push(gm_detok *d, const gm_tokenizer *tok, int32_t id, char *out, size_t cap);
/* Flushes held bytes (as U+FFFD) at the end of a stream. */
int gm_detok_flush(gm_detok *d, char *out, size_t cap);

/* Whole-sequence convenience: malloc'd NUL-terminated text. */
char *gm_detokenize(const gm_tokenizer *tok, const int32_t *ids, size_t n, bool render_special);

#ifdef __cplusplus
}
#endif
