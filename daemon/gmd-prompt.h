/* gmd-prompt.h — what a request asks the model (its parts, system prompt, earlier turns)
 * and its rendering to token ids with the model's tokenizer.
 *
 * A GmdPromptSpec is built on the main loop at submission and never changes afterwards,
 * so prompt workers and the engine thread read it without locks (atomic refcount). */
#pragma once

#include <glib.h>

#include "decoder/chat.h"
#include "gmd-model.h"

G_BEGIN_DECLS

typedef struct {
  gint ref;
  gboolean raw;            /* BOS + the text parts, special tokens parsed */
  gboolean thinking;
  char *system;            /* NULL: no system turn */
  GPtrArray *history;      /* GmdMessage* before this turn (sessions), never NULL */
  GPtrArray *parts;        /* GmdPart* of the new user turn, or NULL (measuring a session) */
} GmdPromptSpec;

/* Takes parts (a reference); copies system and history. */
GmdPromptSpec *gmd_prompt_spec_new (gboolean raw, gboolean thinking, const char *system,
                                    GPtrArray *history, GPtrArray *parts);
GmdPromptSpec *gmd_prompt_spec_ref (GmdPromptSpec *spec);
void gmd_prompt_spec_unref (GmdPromptSpec *spec);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GmdPromptSpec, gmd_prompt_spec_unref)

/* Renders spec into out (initialised here; free with gm_prompt_free even on error).
 * With parts and no answer: the prompt for generating (ending with the model turn's
 * header); with an answer: the conversation with it as the model's reply; with neither:
 * the conversation so far (both to measure what a session holds). Errors: GMD_ERROR_UNSUPPORTED_MEDIA for a media part (no encoder yet),
 * GMD_ERROR_INTERNAL for a tokenizer failure. */
gboolean gmd_prompt_render (const GmdModel *model, const GmdPromptSpec *spec,
                            const char *answer, gm_prompt *out, GError **error);

/* The window check of a rendered prompt: LIMIT_EXCEEDED when it is longer than
 * max_prompt_tokens (0 = the window) and that cap is below the window, else
 * CONTEXT_EXCEEDED when it leaves no room for one generated token. */
gboolean gmd_prompt_check_fit (guint32 n_positions, guint32 context_size,
                               guint32 max_prompt_tokens, GError **error);

G_END_DECLS
