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

/* Prepares the media parts of spec (blocking: a prompt worker or the engine thread), in
 * order: images are decoded and preprocessed for image_tokens soft tokens each (pixel cap
 * max_pixels); audio is decoded, mixed to mono, resampled to 16 kHz and turned into the
 * log-mel features of each 30 s clip, all the parts together at most max_audio_seconds
 * long. *images gets one GmdImage* per image part and *audio one GmdAudio* per audio
 * part, in order (empty arrays without them). Errors name the part (content[i]):
 * UNSUPPORTED_MEDIA when the model has no encoder for it or the file does not decode
 * (the decoder's message), LIMIT_EXCEEDED above max_pixels or max_audio_seconds. */
gboolean gmd_prompt_prepare_media (const GmdModel *model, const GmdPromptSpec *spec,
                                   guint32 image_tokens, guint64 max_pixels,
                                   guint32 max_audio_seconds, GPtrArray **images,
                                   GPtrArray **audio, GError **error);

/* Renders spec into out (initialised here; free with gm_prompt_free even on error).
 * With parts and no answer: the prompt for generating (ending with the model turn's
 * header); with an answer: the conversation with it as the model's reply; with neither:
 * the conversation so far (both to measure what a session holds). images and audio are
 * the new turn's (gmd_prompt_prepare_media; NULL when it has none): each image, and each
 * 30 s clip of an audio part, is one media block taking its soft tokens' positions,
 * pointing at its embeddings once encoded (NULL before; the engine fills them in).
 * History media come with their embeddings. Errors: GMD_ERROR_UNSUPPORTED_MEDIA for
 * video parts, GMD_ERROR_INTERNAL for a tokenizer failure or media that do not match the
 * parts. */
gboolean gmd_prompt_render (const GmdModel *model, const GmdPromptSpec *spec,
                            GPtrArray *images, GPtrArray *audio, const char *answer,
                            gm_prompt *out, GError **error);

/* The window check of a rendered prompt: LIMIT_EXCEEDED when it is longer than
 * max_prompt_tokens (0 = the window) and that cap is below the window, else
 * CONTEXT_EXCEEDED when it leaves no room for one generated token. */
gboolean gmd_prompt_check_fit (guint32 n_positions, guint32 context_size,
                               guint32 max_prompt_tokens, GError **error);

G_END_DECLS
