/* gmd-model.h — a loaded model bundle: the decoder weights and the tokenizer, with what
 * the Manager properties show about them.
 *
 * Refcounted with atomic counts: the engine thread computes with it, prompt workers
 * tokenize with it, the main loop reads its description; a model switch only drops the
 * service's reference, so nobody's copy is freed under them. Immutable once loaded. */
#pragma once

#include <glib.h>

#include "decoder/model.h"
#include "decoder/tokenizer.h"
#include "audio/audio-encoder.h"
#include "vision/vision-encoder.h"

G_BEGIN_DECLS

typedef struct {
  gint ref;
  gm_model *model;
  gm_tokenizer *tokenizer;
  char *path;
  char *mmproj_path;         /* NULL: text only */
  gm_vision_model *vision;   /* the mmproj's image encoder; NULL: no "image" modality */
  gm_audio_model *audio;     /* the mmproj's audio encoder; NULL: no "audio" modality */
  char *name;                /* general.name, or the file name */
  char *architecture;        /* general.architecture */
  char *quantization;        /* predominant type of the layer matrices ("Q8_0"), or "mixed" */
  guint32 context_size;      /* window of one request: the configured one, or
                                min(n_ctx_train, 4096) */
  guint32 n_ctx_train;
  guint64 n_params;
  guint64 file_bytes;
  gint32 channel_open;       /* id of "<|channel>", -1 when absent */
  gint32 channel_close;      /* id of "<channel|>", -1 when absent */
} GmdModel;

/* Loads path (blocking: call off the main loop). mmproj_path (NULL or "": none) is the
 * multimodal projector: its vision tower (gemma4v) and its audio tower (gemma4a) are
 * loaded when it has them (a real mmproj holds both in one file), and each must project
 * to the text model's width. context_size 0 = min(n_ctx_train, 4096).
 * Errors: GMD_ERROR_INVALID_ARGUMENT naming the file (unreadable, not a GGUF, wrong
 * architecture, bad tensor, no encoder at all, projection width ≠ the model's). */
GmdModel *gmd_model_load (const char *path, const char *mmproj_path, guint32 context_size,
                          GError **error);

/* "text", plus "image" with a vision encoder and "audio" with an audio encoder (static
 * strings, NULL-terminated). */
const char *const *gmd_model_modalities (const GmdModel *m);
/* The MIME types of the modalities above. */
const char *const *gmd_model_media_types (const GmdModel *m);

GmdModel *gmd_model_ref (GmdModel *m);
void gmd_model_unref (GmdModel *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GmdModel, gmd_model_unref)

G_END_DECLS
