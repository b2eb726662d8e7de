/* gmd-engine.c — the engine thread: prefill in reported chunks, generate, split the
 * thought channel, merge pieces, post everything back to the main context. */
#include "gmd-engine.h"

#include <string.h>

#include "core/pool.h"
#include "decoder/context.h"
#include "decoder/generate.h"
#include "gmd-audio.h"
#include "gmd-image.h"
#include "gmd-thought.h"

/* Pieces are merged so a request sends at most about 50 per second. */
#define PIECE_INTERVAL_US (20 * 1000)
/* Prefill progress at most 4 times per second. */
#define PROGRESS_INTERVAL_US (250 * 1000)

/* ---- jobs ---------------------------------------------------------------------------- */

GmdJob *
gmd_job_new (void)
{
  GmdJob *job = g_new0 (GmdJob, 1);
  job->ref = 1;
  gm_prompt_init (&job->prompt);
  return job;
}

GmdJob *
gmd_job_ref (GmdJob *job)
{
  g_atomic_int_inc (&job->ref);
  return job;
}

void
gmd_job_unref (GmdJob *job)
{
  if (job == NULL || !g_atomic_int_dec_and_test (&job->ref))
    return;
  gmd_prompt_spec_unref (job->spec);
  if (job->prompt_model)
    gmd_model_unref (job->prompt_model);
  gm_prompt_free (&job->prompt);
  if (job->images)
    g_ptr_array_unref (job->images);
  if (job->audio)
    g_ptr_array_unref (job->audio);
  g_strfreev (job->stop);
  g_free (job);
}

void
gmd_job_cancel (GmdJob *job)
{
  g_atomic_int_set (&job->cancel, 1);
}

static gboolean
job_cancelled (GmdJob *job)
{
  return g_atomic_int_get (&job->cancel) != 0;
}

/* ---- commands -------------------------------------------------------------------------- */

typedef enum {
  CMD_QUIT,
  CMD_SET_MODEL,
  CMD_RUN,
  CMD_DROP_SESSION,
} CmdKind;

typedef struct {
  CmdKind kind;
  GmdModel *model;
  guint n_threads, batch;
  GmdJob *job;
  guint64 session_id;
} Cmd;

static void
cmd_free (gpointer p)
{
  Cmd *c = p;
  if (c->model)
    gmd_model_unref (c->model);
  if (c->job)
    gmd_job_unref (c->job);
  g_free (c);
}

typedef struct {
  gm_context *ctx;
  guint64 last_used;
} SessionContext;

static void
session_context_free (gpointer p)
{
  SessionContext *sc = p;
  gm_context_free (sc->ctx);
  g_free (sc);
}

struct _GmdEngine {
  GThread *thread;
  GAsyncQueue *commands;
  GmdMailbox *mailbox;
  GmdEngineCallbacks callbacks;
  gpointer user_data;

  /* engine thread only */
  GmdModel *model;
  gm_pool *pool;
  guint n_threads;
  guint batch;
  gm_context *shared;              /* one-shot requests */
  GHashTable *sessions;            /* guint64* → SessionContext* */
  guint64 use_clock;
  GmdJob *current;                 /* read by should_cancel during a run */
};

/* ---- posting results ---------------------------------------------------------------- */

typedef enum { EV_PROGRESS, EV_PIECE, EV_FINISHED } EventKind;

typedef struct {
  EventKind kind;
  GmdJob *job;
  GmdEngineCallbacks callbacks;
  gpointer user_data;
  GmdProgress progress;
  guint32 seq;
  gboolean thinking;
  char *text;
  GmdJobResult result;
} Event;

static void
event_free (gpointer p)
{
  Event *ev = p;
  gmd_job_unref (ev->job);
  g_free (ev->text);
  g_free (ev->result.matched_stop);
  g_free (ev->result.error_message);
  g_free (ev->result.answer);
  g_free (ev);
}

static void
event_deliver (gpointer p)
{
  Event *ev = p;
  switch (ev->kind)
    {
    case EV_PROGRESS:
      ev->callbacks.progress (ev->job, &ev->progress, ev->user_data);
      break;
    case EV_PIECE:
      ev->callbacks.piece (ev->job, ev->seq, ev->thinking, ev->text, ev->user_data);
      break;
    case EV_FINISHED:
      ev->callbacks.finished (ev->job, &ev->result, ev->user_data);
      break;
    }
}

static Event *
event_new (GmdEngine *e, EventKind kind, GmdJob *job)
{
  Event *ev = g_new0 (Event, 1);
  ev->kind = kind;
  ev->job = gmd_job_ref (job);
  ev->callbacks = e->callbacks;
  ev->user_data = e->user_data;
  return ev;
}

static void
post (GmdEngine *e, Event *ev)
{
  gmd_mailbox_post (e->mailbox, event_deliver, ev, event_free);
}

static void
post_encoding (GmdEngine *e, GmdJob *job, guint32 done, guint32 total)
{
  Event *ev = event_new (e, EV_PROGRESS, job);
  ev->progress.state = GMD_STATE_ENCODING;
  ev->progress.prompt_done = done;
  ev->progress.prompt_total = total;
  post (e, ev);
}

static void
post_progress (GmdEngine *e, GmdJob *job, GmdRequestState state, guint32 done, guint32 total)
{
  Event *ev = event_new (e, EV_PROGRESS, job);
  ev->progress.state = state;
  ev->progress.prompt_done = done;
  ev->progress.prompt_total = total;
  post (e, ev);
}

/* ---- one run --------------------------------------------------------------------------- */

typedef struct {
  GmdEngine *e;
  GmdJob *job;
  const GmdModel *model;

  /* thought channel (only when job->thinking) */
  gboolean in_thought_tokens;      /* by token ids: counts thinking_tokens */
  guint32 thinking_tokens;
  GmdThoughtSplitter thought;      /* by the marker text in the stream: routes text */

  /* merged pieces */
  GString *pending;
  gboolean pending_thinking;
  gint64 last_post_us;
  guint32 seq;
  GString *answer;

  /* which stop string matched: the raw text of the tokens vs. what was streamed */
  gm_detok detok;
  GString *raw;
  gsize streamed;
} Run;

static void
flush_pending (Run *r)
{
  if (r->pending->len == 0)
    return;
  Event *ev = event_new (r->e, EV_PIECE, r->job);
  ev->seq = r->seq++;
  ev->thinking = r->pending_thinking;
  ev->text = g_strndup (r->pending->str, r->pending->len);
  post (r->e, ev);
  g_string_truncate (r->pending, 0);
  r->last_post_us = g_get_monotonic_time ();
}

/* Text after the channel split: merged into the pending piece of its kind. */
static void
route (gpointer user_data, gboolean thinking, const char *text, gsize len)
{
  Run *r = user_data;
  if (len == 0)
    return;
  if (r->pending->len > 0 && r->pending_thinking != thinking)
    flush_pending (r);
  r->pending_thinking = thinking;
  g_string_append_len (r->pending, text, len);
  if (!thinking)
    g_string_append_len (r->answer, text, len);
  if (g_get_monotonic_time () - r->last_post_us >= PIECE_INTERVAL_US)
    flush_pending (r);
}

static int
on_piece (void *ud, const char *text, size_t len)
{
  Run *r = ud;
  r->streamed += len;
  if (memchr (text, '\0', len) == NULL)
    gmd_thought_push (&r->thought, text, len);
  else
    {
      /* a byte token can decode to NUL, which no string of the API can carry */
      g_autofree char *clean = g_malloc (len);
      gsize n = 0;
      for (gsize i = 0; i < len; i++)
        if (text[i] != '\0')
          clean[n++] = text[i];
      gmd_thought_push (&r->thought, clean, n);
    }
  return job_cancelled (r->job);
}

static int
on_token (void *ud, int32_t id)
{
  Run *r = ud;
  if (r->job->thinking)
    {
      if (id == r->model->channel_open && id >= 0)
        {
          r->in_thought_tokens = TRUE;
          r->thinking_tokens++;
        }
      else if (r->in_thought_tokens)
        {
          r->thinking_tokens++;
          if (id == r->model->channel_close)
            r->in_thought_tokens = FALSE;
        }
    }
  if (r->raw != NULL)
    {
      char buf[4096];
      int n = gm_detok_push (&r->detok, r->model->tokenizer, id, buf, sizeof buf);
      if (n > 0)
        g_string_append_len (r->raw, buf, n);
    }
  return job_cancelled (r->job);
}

/* The stop string that starts where the streamed text ended (the shortest wins: it is
 * the one whose match completed first). */
static char *
find_matched_stop (const Run *r)
{
  const char *tail = r->raw->str + MIN (r->streamed, r->raw->len);
  gsize tail_len = r->raw->len - MIN (r->streamed, r->raw->len);
  const char *best = NULL;
  for (guint i = 0; r->job->stop && r->job->stop[i]; i++)
    {
      const char *s = r->job->stop[i];
      gsize n = strlen (s);
      if (n > 0 && n <= tail_len && memcmp (tail, s, n) == 0 && (!best || n < strlen (best)))
        best = s;
    }
  if (best == NULL)  /* should not happen; name the first that occurs at all */
    for (guint i = 0; r->job->stop && r->job->stop[i]; i++)
      if (g_strstr_len (tail, tail_len, r->job->stop[i]))
        return g_strdup (r->job->stop[i]);
  return g_strdup (best ? best : "");
}

static int
engine_should_cancel (void *ud)
{
  GmdEngine *e = ud;
  return e->current != NULL && job_cancelled (e->current);
}

static gm_context *
new_context (GmdEngine *e, guint32 n_ctx, gm_error *err)
{
  gm_context_params cp = {
    .n_ctx = (int32_t) n_ctx,
    .n_batch = (int32_t) e->batch,
    .pool = e->pool,
    .should_cancel = engine_should_cancel,
    .cancel_ud = e,
  };
  return gm_context_new (e->model->model, &cp, err);
}

static void
evict_least_recent (GmdEngine *e, guint64 except)
{
  GHashTableIter it;
  gpointer key, value;
  guint64 *victim = NULL;
  guint64 oldest = G_MAXUINT64;
  g_hash_table_iter_init (&it, e->sessions);
  while (g_hash_table_iter_next (&it, &key, &value))
    {
      SessionContext *sc = value;
      if (*(guint64 *) key != except && sc->last_used < oldest)
        {
          oldest = sc->last_used;
          victim = key;
        }
    }
  if (victim != NULL)
    g_hash_table_remove (e->sessions, victim);
}

static gm_context *
context_for (GmdEngine *e, GmdJob *job, guint32 n_ctx, gm_error *err)
{
  if (job->session_id == 0)
    {
      if (e->shared == NULL)
        e->shared = new_context (e, e->model->context_size, err);
      return e->shared;
    }
  SessionContext *sc = g_hash_table_lookup (e->sessions, &job->session_id);
  if (sc != NULL && gm_context_n_ctx (sc->ctx) != (int32_t) n_ctx)
    {
      g_hash_table_remove (e->sessions, &job->session_id);
      sc = NULL;
    }
  if (sc == NULL)
    {
      guint slots = MAX (job->cache_slots, 1u);
      while (g_hash_table_size (e->sessions) >= slots)
        evict_least_recent (e, job->session_id);
      gm_context *ctx = new_context (e, n_ctx, err);
      if (ctx == NULL)
        return NULL;
      sc = g_new0 (SessionContext, 1);
      sc->ctx = ctx;
      g_hash_table_insert (e->sessions, g_memdup2 (&job->session_id, sizeof (guint64)), sc);
    }
  sc->last_used = ++e->use_clock;
  return sc->ctx;
}

/* How much of the cache a prompt can keep: the common prefix, never the last position
 * (its logits are needed) and never part of a media block. */
static int32_t
reusable_prefix (gm_context *ctx, const gm_prompt *p)
{
  int32_t keep = gm_context_common_prefix (ctx, p->spans, p->n_spans);
  keep = CLAMP (keep, 0, p->n_positions - 1);
  int32_t pos = 0;
  for (size_t i = 0; i < p->n_spans; i++)
    {
      const gm_span *s = &p->spans[i];
      if (s->type != GM_SPAN_TEXT && pos < keep && keep < pos + s->n)
        return pos;
      pos += s->n;
    }
  return keep;
}

/* The spans of p covering positions [from, to) (media blocks are never cut: callers
 * pick boundaries outside them). Returns the number written to out. */
static gsize
slice_spans (const gm_prompt *p, int32_t from, int32_t to, gm_span *out)
{
  gsize n = 0;
  int32_t pos = 0;
  for (size_t i = 0; i < p->n_spans && pos < to; i++)
    {
      gm_span s = p->spans[i];
      int32_t start = pos, end = pos + s.n;
      pos = end;
      if (end <= from)
        continue;
      if (s.type == GM_SPAN_TEXT)
        {
          int32_t a = MAX (start, from), b = MIN (end, to);
          s.ids += a - start;
          s.n = b - a;
        }
      out[n++] = s;
    }
  return n;
}

/* A chunk end at or after `to` that does not cut a media block (or `from` when the
 * block would run past limit). */
static int32_t
chunk_end (const gm_prompt *p, int32_t from, int32_t to, int32_t limit)
{
  int32_t pos = 0;
  for (size_t i = 0; i < p->n_spans; i++)
    {
      const gm_span *s = &p->spans[i];
      if (s->type != GM_SPAN_TEXT && pos < to && to < pos + s->n)
        {
          if (pos + s->n <= limit)
            return pos + s->n;
          return pos > from ? pos : from;
        }
      pos += s->n;
    }
  return to;
}

static void
set_error (GmdJobResult *res, GmdErrorCode code, const char *message)
{
  res->stop_reason = GMD_STOP_ERROR;
  res->error_code = code;
  g_free (res->error_message);
  res->error_message = g_strdup (message);
}

static GmdErrorCode
code_of_gm (int rc)
{
  return rc == GM_ERR_RANGE ? GMD_ERROR_CONTEXT_EXCEEDED : GMD_ERROR_INTERNAL;
}

static GmdStopReason
stop_of_gm (gm_stop_reason s)
{
  switch (s)
    {
    case GM_STOP_EOG: return GMD_STOP_EOG;
    case GM_STOP_STRING: return GMD_STOP_STOP_STRING;
    case GM_STOP_MAX_TOKENS: return GMD_STOP_MAX_TOKENS;
    case GM_STOP_CANCELLED: return GMD_STOP_CANCELLED;
    case GM_STOP_CONTEXT_FULL: return GMD_STOP_CONTEXT_FULL;
    case GM_STOP_ERROR: return GMD_STOP_ERROR;
    }
  return GMD_STOP_ERROR;
}

/* Renders the job's prompt with the engine's model when the service could not (the
 * model was loading) or rendered it with another model; prepares its media first when
 * no prompt worker did. */
static gboolean
ensure_prompt (GmdEngine *e, GmdJob *job, guint32 n_ctx, GmdJobResult *res)
{
  g_autoptr (GError) error = NULL;
  if (job->prompt_model != e->model)
    {
      gm_prompt_free (&job->prompt);
      if (job->prompt_model)
        gmd_model_unref (job->prompt_model);
      job->prompt_model = NULL;
      if (job->images == NULL &&
          !gmd_prompt_prepare_media (e->model, job->spec, job->image_tokens,
                                     job->max_image_pixels, job->max_audio_seconds,
                                     &job->images, &job->audio, &error))
        goto failed;
      if (!gmd_prompt_render (e->model, job->spec, job->images, job->audio, NULL, &job->prompt,
                              &error))
        goto failed;
      job->prompt_model = gmd_model_ref (e->model);
    }
  if (!gmd_prompt_check_fit ((guint32) job->prompt.n_positions, n_ctx, job->max_prompt_tokens,
                             &error))
    goto failed;
  return TRUE;

failed:
  set_error (res, gmd_error_code_of (error), error->message);
  return FALSE;
}

static GmdEngineImageHook image_hook;
static gpointer image_hook_data;

void
gmd_engine_set_image_hook (GmdEngineImageHook hook, gpointer user_data)
{
  image_hook = hook;
  image_hook_data = user_data;
}

/* One media block of the new turn: an image, or one 30 s clip of an audio part. */
typedef struct {
  gm_span_type type;
  GmdImage *image;
  GmdAudio *audio;
  guint clip;
} MediaBlock;

static gint32
block_soft_tokens (const MediaBlock *b)
{
  return (gint32) (b->image ? b->image->n_soft_tokens : b->audio->clips[b->clip].n_soft_tokens);
}

static const float *
block_embd (const MediaBlock *b)
{
  return b->image ? b->image->embd : b->audio->clips[b->clip].embd;
}

/* The new turn's media blocks in prompt order (images and audio clips as the parts
 * come), or FALSE when the prepared media do not match the parts. */
static gboolean
media_blocks (GmdJob *job, GArray *out)
{
  guint next_image = 0, next_audio = 0;
  guint n_images = job->images ? job->images->len : 0;
  guint n_audio = job->audio ? job->audio->len : 0;
  GPtrArray *parts = job->spec->parts;
  for (guint i = 0; parts != NULL && i < parts->len; i++)
    {
      const GmdPart *part = parts->pdata[i];
      if (part->type == GMD_PART_IMAGE)
        {
          if (next_image >= n_images)
            return FALSE;
          MediaBlock b = { GM_SPAN_IMAGE, job->images->pdata[next_image++], NULL, 0 };
          g_array_append_val (out, b);
        }
      else if (part->type == GMD_PART_AUDIO)
        {
          if (next_audio >= n_audio)
            return FALSE;
          GmdAudio *audio = job->audio->pdata[next_audio++];
          for (guint c = 0; c < audio->n_clips; c++)
            {
              MediaBlock b = { GM_SPAN_AUDIO, NULL, audio, c };
              g_array_append_val (out, b);
            }
        }
    }
  return next_image == n_images && next_audio == n_audio;
}

static gboolean
encode_block (GmdEngine *e, const MediaBlock *b, GError **error)
{
  if (b->image != NULL)
    {
      if (e->model->vision == NULL)
        {
          g_set_error (error, GMD_ERROR, GMD_ERROR_UNSUPPORTED_MEDIA,
                       "image input is not available: the model has no image encoder");
          return FALSE;
        }
      return b->image->embd != NULL ||
             gmd_image_encode (b->image, e->model->vision, e->pool, error);
    }
  if (e->model->audio == NULL)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_UNSUPPORTED_MEDIA,
                   "audio input is not available: the model has no audio encoder");
      return FALSE;
    }
  return b->audio->clips[b->clip].embd != NULL ||
         gmd_audio_encode_clip (b->audio, b->clip, e->model->audio, e->pool, error);
}

/* Encodes the job's images and audio clips in prompt order (cancellable between any two),
 * then points the prompt's media spans that have no embeddings yet (the new turn's: the
 * history's come encoded) at them. FALSE: res says why (cancelled or error). */
static gboolean
encode_media (GmdEngine *e, GmdJob *job, GmdJobResult *res)
{
  g_autoptr (GArray) blocks = g_array_new (FALSE, FALSE, sizeof (MediaBlock));
  if (!media_blocks (job, blocks))
    {
      set_error (res, GMD_ERROR_INTERNAL, "the request's media were not prepared");
      return FALSE;
    }
  guint total = blocks->len;
  if (total == 0)
    return TRUE;

  gint64 t0 = g_get_monotonic_time ();
  post_encoding (e, job, 0, total);
  for (guint i = 0; i < total; i++)
    {
      if (job_cancelled (job))
        {
          res->stop_reason = GMD_STOP_CANCELLED;
          break;
        }
      g_autoptr (GError) error = NULL;
      if (!encode_block (e, &g_array_index (blocks, MediaBlock, i), &error))
        {
          set_error (res, gmd_error_code_of (error), error->message);
          break;
        }
      post_encoding (e, job, i + 1, total);
      if (image_hook != NULL)
        image_hook (job, i + 1, total, image_hook_data);
    }
  res->encode_seconds = (double) (g_get_monotonic_time () - t0) / G_USEC_PER_SEC;
  if (res->stop_reason == GMD_STOP_CANCELLED || res->error_message != NULL)
    return FALSE;

  guint next = 0;
  guint32 n_embd = e->model->model->hp.n_embd;
  for (size_t i = 0; i < job->prompt.n_spans; i++)
    {
      gm_span *span = &job->prompt.spans[i];
      if ((span->type != GM_SPAN_IMAGE && span->type != GM_SPAN_AUDIO) || span->embd != NULL)
        continue;
      const MediaBlock *b = next < total ? &g_array_index (blocks, MediaBlock, next) : NULL;
      guint32 dim = b == NULL ? 0 : b->image ? b->image->n_embd : b->audio->n_embd;
      if (b == NULL || span->type != b->type || span->n != block_soft_tokens (b) ||
          dim != n_embd)
        {
          set_error (res, GMD_ERROR_INTERNAL, "the prompt's media spans do not match its media");
          return FALSE;
        }
      span->embd = block_embd (b);
      next++;
    }
  if (next != total)
    {
      set_error (res, GMD_ERROR_INTERNAL, "the prompt's media spans do not match its media");
      return FALSE;
    }
  return TRUE;
}

/* Prefill (in reported chunks) and generation of a job whose prompt fits ctx. */
static void
prefill_and_generate (GmdEngine *e, GmdJob *job, gm_context *ctx, Run *r, GmdJobResult *res)
{
  const gm_prompt *p = &job->prompt;
  gm_error err = { 0 };

  /* Reuse the cached prefix, then evaluate all but the last position in chunks so the
   * progress can be reported; gm_generate then finds everything but the last position
   * cached and evaluates only that one. */
  gint64 t0 = g_get_monotonic_time ();
  int32_t keep = reusable_prefix (ctx, p);
  int32_t n_past = gm_context_n_past (ctx);
  if (keep > n_past)
    {
      gm_context_clear (ctx);
      keep = 0;
    }
  else if (keep < n_past && gm_context_truncate (ctx, keep, NULL) != GM_OK)
    {
      /* the sliding-window caches no longer hold what position `keep` needs */
      gm_context_clear (ctx);
      keep = 0;
    }
  res->cached_tokens = (guint32) keep;
  post_progress (e, job, GMD_STATE_PREFILL, (guint32) keep, (guint32) p->n_positions);
  gint64 last_progress = g_get_monotonic_time ();

  int32_t target = p->n_positions - 1;
  int32_t batch = (int32_t) MAX (e->batch, 1u);
  g_autofree gm_span *spans = g_new (gm_span, p->n_spans + 1);
  int rc = GM_OK;
  for (int32_t from = keep; from < target;)
    {
      int32_t to = chunk_end (p, from, MIN (from + batch, target), target);
      if (to <= from)
        break;  /* a media block reaching the last position: gm_generate evaluates it */
      gsize ns = slice_spans (p, from, to, spans);
      rc = gm_context_eval (ctx, spans, ns, GM_LOGITS_NONE, NULL, &err);
      if (rc != GM_OK)
        break;
      from = to;
      if (from < target && g_get_monotonic_time () - last_progress >= PROGRESS_INTERVAL_US)
        {
          post_progress (e, job, GMD_STATE_PREFILL, (guint32) from, (guint32) p->n_positions);
          last_progress = g_get_monotonic_time ();
        }
    }
  res->prefill_seconds = (double) (g_get_monotonic_time () - t0) / G_USEC_PER_SEC;
  if (rc == GM_ERR_CANCELLED || (rc == GM_OK && job_cancelled (job)))
    {
      res->stop_reason = GMD_STOP_CANCELLED;
      return;
    }
  if (rc != GM_OK)
    {
      set_error (res, code_of_gm (rc), err.msg);
      return;
    }

  post_progress (e, job, GMD_STATE_GENERATING, 0, 0);
  gm_generate_params gp = {
    .sampling = job->sampling,
    .max_tokens = job->max_tokens,
    .stop_strings = (const char *const *) job->stop,
    .n_stop_strings = job->stop ? g_strv_length (job->stop) : 0,
    .render_special = false,
    .reuse_prefix = true,
  };
  if (gp.n_stop_strings > 0)
    {
      r->raw = g_string_new (NULL);
      gm_detok_init (&r->detok, false);
    }
  gm_generate_result gr = { 0 };
  rc = gm_generate (ctx, e->model->tokenizer, p, &gp, on_piece, on_token, r, &gr, &err);
  gmd_thought_finish (&r->thought);
  flush_pending (r);
  res->prefill_seconds += gr.prefill_seconds;
  res->decode_seconds = gr.decode_seconds;
  res->generated_tokens = (guint32) MAX (gr.n_generated, 0);
  if (rc != GM_OK)
    set_error (res, code_of_gm (rc), err.msg);
  else
    res->stop_reason = stop_of_gm (gr.stop_reason);
  if (res->stop_reason == GMD_STOP_STOP_STRING && r->raw != NULL)
    res->matched_stop = find_matched_stop (r);
}

static void
run_job (GmdEngine *e, GmdJob *job)
{
  Event *fin = event_new (e, EV_FINISHED, job);
  GmdJobResult *res = &fin->result;
  res->stop_reason = GMD_STOP_ERROR;
  Run r = { .e = e, .job = job, .model = e->model };
  gmd_thought_init (&r.thought, job->thinking, route, &r);
  r.pending = g_string_new (NULL);
  r.answer = g_string_new (NULL);
  r.last_post_us = g_get_monotonic_time ();
  e->current = job;

  if (e->model == NULL)
    set_error (res, GMD_ERROR_MODEL_NOT_LOADED, "no model is loaded");
  else if (job_cancelled (job))
    res->stop_reason = GMD_STOP_CANCELLED;
  else
    {
      /* a session opened while the model loaded may have asked for more than it has */
      guint32 n_ctx = job->session_id ? MIN (job->context_size, e->model->context_size)
                                      : e->model->context_size;
      res->context_size = n_ctx;
      gboolean ready = ensure_prompt (e, job, n_ctx, res);
      if (ready)
        {
          res->prompt_tokens = (guint32) job->prompt.n_positions;
          ready = encode_media (e, job, res);
        }
      if (ready)
        {
          gm_error err = { 0 };
          gm_context *ctx = context_for (e, job, n_ctx, &err);
          if (ctx == NULL)
            set_error (res, GMD_ERROR_INTERNAL, err.msg);
          else
            {
              prefill_and_generate (e, job, ctx, &r, res);
              res->context_used = (guint32) gm_context_n_past (ctx);
              if (job->session_id != 0)
                {
                  /* A session's occupancy is its conversation as the next turn renders
                   * it (the answer without thought), which that turn is checked against;
                   * re-tokenized, a full window's answer can come out a little longer
                   * than the window: then the window is full. */
                  gm_prompt conv;
                  if (gmd_prompt_render (e->model, job->spec, job->images, job->audio,
                                         r.answer->str, &conv, NULL))
                    res->context_used = MIN ((guint32) conv.n_positions, n_ctx);
                  gm_prompt_free (&conv);
                  if (job->cache_slots == 0)
                    g_hash_table_remove (e->sessions, &job->session_id);
                }
            }
        }
    }

  res->thinking_tokens = r.thinking_tokens;
  res->pieces = r.seq;
  res->answer = g_string_free (r.answer, FALSE);
  gmd_thought_clear (&r.thought);
  g_string_free (r.pending, TRUE);
  if (r.raw)
    g_string_free (r.raw, TRUE);
  e->current = NULL;
  post (e, fin);
}

static void
set_model (GmdEngine *e, GmdModel *model, guint n_threads, guint batch)
{
  g_hash_table_remove_all (e->sessions);
  g_clear_pointer (&e->shared, gm_context_free);
  if (e->model)
    gmd_model_unref (e->model);
  e->model = model ? gmd_model_ref (model) : NULL;
  e->batch = batch ? batch : 512;
  if (e->pool == NULL || n_threads != e->n_threads)
    {
      g_clear_pointer (&e->pool, gm_pool_destroy);
      e->pool = gm_pool_create ((int) n_threads);
      e->n_threads = n_threads;
    }
}

static gpointer
engine_main (gpointer data)
{
  GmdEngine *e = data;
  for (;;)
    {
      Cmd *c = g_async_queue_pop (e->commands);
      CmdKind kind = c->kind;
      switch (kind)
        {
        case CMD_QUIT:
          break;
        case CMD_SET_MODEL:
          set_model (e, c->model, c->n_threads, c->batch);
          break;
        case CMD_RUN:
          run_job (e, c->job);
          break;
        case CMD_DROP_SESSION:
          g_hash_table_remove (e->sessions, &c->session_id);
          break;
        }
      cmd_free (c);
      if (kind == CMD_QUIT)
        break;
    }
  g_hash_table_remove_all (e->sessions);
  g_clear_pointer (&e->shared, gm_context_free);
  g_clear_pointer (&e->pool, gm_pool_destroy);
  g_clear_pointer (&e->model, gmd_model_unref);
  return NULL;
}

GmdEngine *
gmd_engine_new (GmdMailbox *mailbox, const GmdEngineCallbacks *callbacks, gpointer user_data,
                GError **error)
{
  GmdEngine *e = g_new0 (GmdEngine, 1);
  e->commands = g_async_queue_new_full (cmd_free);
  e->mailbox = mailbox;
  e->callbacks = *callbacks;
  e->user_data = user_data;
  e->sessions = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, session_context_free);
  e->batch = 512;
  e->thread = g_thread_try_new ("gmd-engine", engine_main, e, error);
  if (e->thread == NULL)
    {
      g_async_queue_unref (e->commands);
      g_hash_table_destroy (e->sessions);
      g_free (e);
      return NULL;
    }
  return e;
}

static void
send (GmdEngine *e, Cmd *c)
{
  g_async_queue_push (e->commands, c);
}

void
gmd_engine_free (GmdEngine *e)
{
  if (e == NULL)
    return;
  Cmd *c = g_new0 (Cmd, 1);
  c->kind = CMD_QUIT;
  send (e, c);
  g_thread_join (e->thread);
  g_async_queue_unref (e->commands);  /* frees commands never run */
  g_hash_table_destroy (e->sessions);
  g_free (e);
}

void
gmd_engine_set_model (GmdEngine *e, GmdModel *model, guint n_threads, guint batch)
{
  Cmd *c = g_new0 (Cmd, 1);
  c->kind = CMD_SET_MODEL;
  c->model = model ? gmd_model_ref (model) : NULL;
  c->n_threads = n_threads;
  c->batch = batch;
  send (e, c);
}

void
gmd_engine_run (GmdEngine *e, GmdJob *job)
{
  Cmd *c = g_new0 (Cmd, 1);
  c->kind = CMD_RUN;
  c->job = gmd_job_ref (job);
  send (e, c);
}

void
gmd_engine_drop_session (GmdEngine *e, guint64 session_id)
{
  Cmd *c = g_new0 (Cmd, 1);
  c->kind = CMD_DROP_SESSION;
  c->session_id = session_id;
  send (e, c);
}
