/* gmd-engine.h — the engine thread: the only thread that computes with the model.
 *
 * It owns the kernels' thread pool (core/pool.h), the one-shot context (whose cache is
 * reused for the common prefix of consecutive requests) and the cached contexts of chat
 * sessions (at most cache_slots of them, least recently used dropped first). Commands
 * arrive through a queue; every result goes back through the service's mailbox, so the
 * callbacks below run in the main context, in order. The engine never touches service
 * state: what it needs travels in a GmdJob. */
#pragma once

#include <glib.h>

#include "decoder/chat.h"
#include "decoder/sampler.h"
#include "gmd-error.h"
#include "gmd-mailbox.h"
#include "gmd-model.h"
#include "gmd-prompt.h"
#include "gmd-service.h"

G_BEGIN_DECLS

typedef struct _GmdEngine GmdEngine;

/* One generation, shared by the service (main loop) and the engine. Everything but
 * cancel and owner is set before gmd_engine_run() and read-only afterwards. */
typedef struct {
  gint ref;
  GmdPromptSpec *spec;
  GmdModel *prompt_model;     /* the model prompt was rendered with; NULL: not yet */
  gm_prompt prompt;
  GPtrArray *images;          /* GmdImage* of the new turn's image parts, in order, once
                                 prepared (by the prompt worker, or by the engine when the
                                 request was accepted while the model loaded); the engine
                                 encodes them and the prompt's image spans then point at
                                 their embeddings */
  GPtrArray *audio;           /* GmdAudio* of the new turn's audio parts, in order, prepared
                                 with images (NULL exactly when images is); the engine
                                 encodes each 30 s clip for its audio span */
  guint32 image_tokens;       /* soft-token budget per image */
  guint64 max_image_pixels;   /* decoder cap (limits.max_image_pixels) */
  guint32 max_audio_seconds;  /* all audio parts together (limits.max_audio_seconds) */
  guint32 max_prompt_tokens;  /* for a re-render by the engine (0 = the window) */
  guint64 session_id;         /* 0: one-shot (the shared context) */
  guint32 context_size;       /* sessions: their window */
  guint32 cache_slots;        /* session contexts to keep */
  gm_sampler_params sampling;
  gint32 max_tokens;          /* <= 0: until the context is full */
  GStrv stop;                 /* NULL or stop strings */
  gboolean thinking;          /* split the thought channel off into thinking pieces */
  gint cancel;                /* atomic: non-zero stops at the next layer/token */
  gpointer owner;             /* the service's request; main context only */
} GmdJob;

GmdJob *gmd_job_new (void);
GmdJob *gmd_job_ref (GmdJob *job);
void gmd_job_unref (GmdJob *job);
void gmd_job_cancel (GmdJob *job);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GmdJob, gmd_job_unref)

typedef struct {
  GmdStopReason stop_reason;
  guint32 prompt_tokens, cached_tokens, generated_tokens, thinking_tokens, pieces;
  guint32 context_used, context_size;
  double encode_seconds, prefill_seconds, decode_seconds;
  char *matched_stop;         /* STOP_STRING */
  GmdErrorCode error_code;    /* ERROR */
  char *error_message;        /* ERROR */
  char *answer;               /* the answer text sent (thinking excluded) */
} GmdJobResult;

typedef struct {
  void (*progress) (GmdJob *job, const GmdProgress *progress, gpointer user_data);
  void (*piece) (GmdJob *job, guint32 seq, gboolean thinking, const char *text,
                 gpointer user_data);
  void (*finished) (GmdJob *job, const GmdJobResult *result, gpointer user_data);
} GmdEngineCallbacks;

/* Starts the thread. Callbacks are posted to mailbox, which must outlive the engine. */
GmdEngine *gmd_engine_new (GmdMailbox *mailbox, const GmdEngineCallbacks *callbacks,
                           gpointer user_data, GError **error);
/* Stops after the current command (cancel running jobs first to make that quick), joins
 * the thread, frees the contexts, pool and model reference. */
void gmd_engine_free (GmdEngine *engine);

/* Switches to model (NULL: none), dropping every context; n_threads for the kernels'
 * pool, batch for prefill chunks. Queued after commands already sent. */
void gmd_engine_set_model (GmdEngine *engine, GmdModel *model, guint n_threads, guint batch);
/* Runs a job: progress (encoding when it has images or audio: media_done counts images
 * and 30 s audio clips, in prompt order; prefill, generating), pieces, then exactly one
 * finished. */
void gmd_engine_run (GmdEngine *engine, GmdJob *job);
/* Frees the cached context of a session. */
void gmd_engine_drop_session (GmdEngine *engine, guint64 session_id);

/* Tests only: called on the engine thread after each image or audio clip of a job is
 * encoded (done of total), before the cancel check that precedes the next one. NULL:
 * none. */
typedef void (*GmdEngineImageHook) (GmdJob *job, guint done, guint total, gpointer user_data);
void gmd_engine_set_image_hook (GmdEngineImageHook hook, gpointer user_data);

G_END_DECLS
