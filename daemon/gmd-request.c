/* gmd-request.c — a generation from submission to finished(): the synchronous checks,
 * the off-loop rendering and window check, the fair queue, the engine's results. */
#include "gmd-service-private.h"

#include <string.h>

/* ---- names ----------------------------------------------------------------------------- */

const char *
gmd_request_state_name (GmdRequestState s)
{
  switch (s)
    {
    case GMD_STATE_QUEUED: return "queued";
    case GMD_STATE_LOADING: return "loading";
    case GMD_STATE_ENCODING: return "encoding";
    case GMD_STATE_PREFILL: return "prefill";
    case GMD_STATE_GENERATING: return "generating";
    case GMD_STATE_FINISHED: return "finished";
    }
  return "unknown";
}

const char *
gmd_stop_reason_name (GmdStopReason r)
{
  switch (r)
    {
    case GMD_STOP_EOG: return "eog";
    case GMD_STOP_STOP_STRING: return "stop_string";
    case GMD_STOP_MAX_TOKENS: return "max_tokens";
    case GMD_STOP_CONTEXT_FULL: return "context_full";
    case GMD_STOP_CANCELLED: return "cancelled";
    case GMD_STOP_ERROR: return "error";
    }
  return "unknown";
}

const char *
gmd_cancel_reason_name (GmdCancelReason r)
{
  switch (r)
    {
    case GMD_CANCEL_NONE: return "none";
    case GMD_CANCEL_CLIENT: return "client";
    case GMD_CANCEL_SHUTDOWN: return "shutdown";
    case GMD_CANCEL_ADMIN: return "admin";
    case GMD_CANCEL_SESSION_CLOSED: return "session-closed";
    }
  return "unknown";
}

/* ---- references ------------------------------------------------------------------------ */

GmdRequest *
gmd_request_ref (GmdRequest *request)
{
  g_return_val_if_fail (request != NULL, NULL);
  request->ref++;
  return request;
}

void
gmd_request_unref (GmdRequest *request)
{
  if (request == NULL || --request->ref > 0)
    return;
  if (request->service != NULL)
    g_hash_table_remove (request->service->live_requests, request);
  if (request->job != NULL)
    {
      request->job->owner = NULL;
      gmd_job_unref (request->job);
    }
  g_free (request->handle);
  gmd_client_unref (request->client);
  if (request->session)
    gmd_session_unref (request->session);
  g_free (request);
}

const char *
gmd_request_get_handle (GmdRequest *request)
{
  return request->handle;
}

GmdClient *
gmd_request_get_client (GmdRequest *request)
{
  return request->client;
}

GmdSession *
gmd_request_get_session (GmdRequest *request)
{
  return request->session;
}

GmdRequestState
gmd_request_get_state (GmdRequest *request)
{
  return request->state;
}

gboolean
gmd_request_is_finished (GmdRequest *request)
{
  return request->phase == REQ_ENDED;
}

/* ---- ending ---------------------------------------------------------------------------- */

static double
seconds_since (gint64 t, gint64 now)
{
  return t ? (double) (now - t) / G_USEC_PER_SEC : 0.0;
}

/* A finished() on its way: the summary with its own strings. */
typedef struct {
  GmdRequest *request;
  GmdSummary summary;
  char *matched_stop;
  char *error_message;
} Finish;

static void
finish_free (gpointer p)
{
  Finish *f = p;
  gmd_request_unref (f->request);
  g_free (f->matched_stop);
  g_free (f->error_message);
  g_free (f);
}

static void
finish_deliver (gpointer p)
{
  Finish *f = p;
  GmdRequest *r = f->request;
  f->summary.matched_stop = f->matched_stop;
  f->summary.error_message = f->error_message;
  if (r->finished)
    return;
  r->finished = TRUE;
  if (!r->abandoned && r->service != NULL && r->sink.finished != NULL)
    r->sink.finished (r, &f->summary, r->user_data);
}

/* Takes the request out of wherever it waits. */
static void
detach (GmdRequest *r)
{
  GmdService *s = r->service;
  switch (r->phase)
    {
    case REQ_PREPARING:
      s->n_preparing--;
      break;
    case REQ_QUEUED:
      gmd_scheduler_remove (s->scheduler, r);
      break;
    case REQ_HELD:
      g_queue_remove (&s->held, r);
      break;
    case REQ_WAITING_MODEL:
    case REQ_RUNNING:
      if (s->running == r)
        s->running = NULL;
      break;
    case REQ_ENDED:
      break;
    }
}

/* Ends a request: bookkeeping now; finished() now (from a mailbox delivery) or later. */
static void
end_request (GmdRequest *r, GmdStopReason stop, const GmdJobResult *res, GmdErrorCode code,
             const char *message, gboolean deliver_now)
{
  GmdService *s = r->service;
  gint64 now = g_get_monotonic_time ();
  GmdRequestPhase was = r->phase;

  Finish *f = g_new0 (Finish, 1);
  f->request = gmd_request_ref (r);
  GmdSummary *sum = &f->summary;
  sum->stop_reason = stop;
  sum->seed = r->seed;
  sum->context_size = r->context_size;
  if (r->session != NULL)
    sum->context_used = r->session->context_used;
  if (r->t_accept)
    sum->queue_seconds = seconds_since (r->t_accept, r->t_dispatch ? r->t_dispatch : now);
  sum->load_seconds = r->load_seconds;
  if (was == REQ_WAITING_MODEL)
    sum->load_seconds += seconds_since (r->t_load_start, now);
  if (res != NULL)
    {
      sum->prompt_tokens = res->prompt_tokens;
      sum->cached_tokens = res->cached_tokens;
      sum->generated_tokens = res->generated_tokens;
      sum->thinking_tokens = res->thinking_tokens;
      sum->pieces = res->pieces;
      sum->context_used = res->context_used;
      if (res->context_size)
        sum->context_size = res->context_size;
      sum->encode_seconds = res->encode_seconds;
      sum->prefill_seconds = res->prefill_seconds;
      sum->decode_seconds = res->decode_seconds;
      f->matched_stop = g_strdup (res->matched_stop);
    }
  else if (r->job != NULL && r->job->prompt_model != NULL)
    sum->prompt_tokens = (guint32) r->job->prompt.n_positions;
  if (stop == GMD_STOP_CANCELLED)
    sum->cancel_reason = r->cancel_reason != GMD_CANCEL_NONE ? r->cancel_reason
                                                             : GMD_CANCEL_CLIENT;
  if (stop == GMD_STOP_ERROR)
    {
      sum->error_code = code;
      f->error_message = g_strdup (message ? message : "internal error");
    }
  sum->total_seconds = seconds_since (r->t_submit, now);

  detach (r);
  r->phase = REQ_ENDED;
  r->state = GMD_STATE_FINISHED;
  if (r->job != NULL)
    r->job->owner = NULL;
  r->client->n_requests--;
  if (r->session != NULL)
    gmd_session_turn_ended (r->session, r, res);
  g_hash_table_remove (s->requests, r->handle);  /* the service's reference */

  gmd_service_update_counts (s);
  if (deliver_now)
    {
      finish_deliver (f);
      finish_free (f);
      if (was != REQ_WAITING_MODEL && was != REQ_RUNNING)
        gmd_service_update_positions (s);
      gmd_service_engine_idle (s);
    }
  else
    {
      /* from an API call: every callback comes later, from the main loop */
      gmd_mailbox_post (s->mailbox, finish_deliver, f, finish_free);
      gmd_service_kick (s);
    }
}

static void
kick_deliver (gpointer p)
{
  GmdService *s = p;
  s->kick_pending = FALSE;
  gmd_service_update_positions (s);
  gmd_service_engine_idle (s);
}

void
gmd_service_kick (GmdService *s)
{
  if (s->kick_pending || s->freeing)
    return;
  s->kick_pending = TRUE;
  gmd_mailbox_post (s->mailbox, kick_deliver, s, NULL);
}

static char *
cancelled_before_acceptance (GmdCancelReason reason)
{
  return g_strdup_printf ("cancelled before it was accepted (%s)",
                          gmd_cancel_reason_name (reason));
}

void
gmd_request_end_cancelled (GmdRequest *request, GmdCancelReason reason)
{
  if (request->phase == REQ_ENDED || request->phase == REQ_RUNNING)
    return;
  if (request->cancel_reason == GMD_CANCEL_NONE)
    request->cancel_reason = reason;
  if (request->phase == REQ_PREPARING)
    {
      /* not accepted yet: it can only end as a rejection (an error before any progress) */
      g_autofree char *msg = cancelled_before_acceptance (request->cancel_reason);
      end_request (request, GMD_STOP_ERROR, NULL, GMD_ERROR_CANCELLED, msg, FALSE);
      return;
    }
  end_request (request, GMD_STOP_CANCELLED, NULL, GMD_ERROR_CANCELLED, NULL, FALSE);
}

void
gmd_request_end_error (GmdRequest *request, GmdErrorCode code, const char *message)
{
  if (request->phase == REQ_ENDED || request->phase == REQ_RUNNING)
    return;
  end_request (request, GMD_STOP_ERROR, NULL, code, message, FALSE);
}

gboolean
gmd_request_cancel (GmdRequest *request, GmdCancelReason reason)
{
  g_return_val_if_fail (request != NULL, FALSE);
  if (request->service == NULL || request->phase == REQ_ENDED)
    return FALSE;
  if (request->cancel_reason == GMD_CANCEL_NONE)
    request->cancel_reason = reason;
  if (request->phase == REQ_RUNNING)
    gmd_job_cancel (request->job);
  else
    gmd_request_end_cancelled (request, reason);
  return TRUE;
}

void
gmd_request_abandon (GmdRequest *request)
{
  g_return_if_fail (request != NULL);
  request->abandoned = TRUE;
  gmd_request_cancel (request, GMD_CANCEL_CLIENT);
}

/* ---- the queue ------------------------------------------------------------------------- */

static void
send_progress (GmdRequest *r, GmdRequestState state, guint32 position)
{
  r->state = state;
  if (r->abandoned || r->sink.progress == NULL)
    return;
  GmdProgress p = { .state = state, .queue_position = position };
  r->sink.progress (r, &p, r->user_data);
}

static void
send_position (GmdRequest *r, guint32 position)
{
  if (r->last_position == position)
    return;
  r->last_position = position;
  send_progress (r, GMD_STATE_QUEUED, position);
}

void
gmd_service_update_positions (GmdService *s)
{
  if (s->freeing)
    return;
  /* a snapshot with references: a progress callback may cancel other requests (which
   * updates the positions itself: then this pass stops) */
  guint epoch = ++s->positions_epoch;
  g_autoptr (GPtrArray) order = gmd_scheduler_order (s->scheduler);
  for (GList *l = s->held.head; l != NULL; l = l->next)
    g_ptr_array_add (order, l->data);
  for (guint i = 0; i < order->len; i++)
    gmd_request_ref (order->pdata[i]);
  g_ptr_array_set_free_func (order, (GDestroyNotify) gmd_request_unref);
  guint32 pos = 0;
  for (guint i = 0; i < order->len && s->positions_epoch == epoch; i++)
    {
      GmdRequest *r = order->pdata[i];
      if (r->phase == REQ_QUEUED || r->phase == REQ_HELD)
        send_position (r, pos++);
    }
}

void
gmd_request_start (GmdRequest *r)
{
  GmdService *s = r->service;
  if (r->phase == REQ_WAITING_MODEL)
    r->load_seconds += seconds_since (r->t_load_start, g_get_monotonic_time ());
  r->phase = REQ_RUNNING;
  r->job->cache_slots = s->config->cache_slots;
  gmd_engine_run (s->engine, r->job);
}

void
gmd_service_dispatch (GmdService *s)
{
  if (s->running != NULL || s->freeing)
    return;
  if (s->model == NULL && s->load == NULL)
    return;
  GmdRequest *r = gmd_scheduler_pop (s->scheduler);
  if (r == NULL)
    return;
  s->running = r;
  r->t_dispatch = g_get_monotonic_time ();
  if (s->model == NULL)
    {
      /* the first model is loading: this one runs as soon as it is in */
      r->phase = REQ_WAITING_MODEL;
      r->t_load_start = r->t_dispatch;
      send_progress (r, GMD_STATE_LOADING, 0);
    }
  else
    gmd_request_start (r);
  gmd_service_update_counts (s);
  gmd_service_update_positions (s);
}

void
gmd_service_cancel_all (GmdService *s, GmdCancelReason reason)
{
  g_autoptr (GPtrArray) waiting = gmd_scheduler_order (s->scheduler);
  for (GList *l = s->held.head; l != NULL; l = l->next)
    g_ptr_array_add (waiting, l->data);
  for (guint i = 0; i < waiting->len; i++)
    gmd_request_end_cancelled (waiting->pdata[i], reason);
  if (s->running != NULL)
    gmd_request_cancel (s->running, reason);
}

/* A request passed every check: it is queued and hears its position. */
static void
accept (GmdRequest *r)
{
  GmdService *s = r->service;
  s->n_preparing--;
  r->t_accept = g_get_monotonic_time ();
  if (r->session != NULL)
    gmd_session_turn_accepted (r->session, r);
  if (s->load != NULL && s->load->switching)
    {
      r->phase = REQ_HELD;
      g_queue_push_tail (&s->held, r);
    }
  else
    {
      r->phase = REQ_QUEUED;
      gmd_scheduler_push (s->scheduler, r->client, r);
    }
  gmd_service_update_counts (s);
  gmd_service_update_positions (s);
  gmd_service_dispatch (s);
}

/* Checks what can change between submission and acceptance. FALSE: ended. */
static gboolean
still_acceptable (GmdRequest *r)
{
  GmdService *s = r->service;
  if (s->stopping)
    {
      end_request (r, GMD_STOP_ERROR, NULL, GMD_ERROR_BUSY, "service is stopping", TRUE);
      return FALSE;
    }
  if (s->model == NULL && s->load == NULL)
    {
      end_request (r, GMD_STOP_ERROR, NULL, GMD_ERROR_MODEL_NOT_LOADED,
                   s->info.load_error[0] ? s->info.load_error : "no model is loaded", TRUE);
      return FALSE;
    }
  if (r->session != NULL && gmd_session_is_closed (r->session))
    {
      g_autofree char *msg = cancelled_before_acceptance (GMD_CANCEL_SESSION_CLOSED);
      end_request (r, GMD_STOP_ERROR, NULL, GMD_ERROR_CANCELLED, msg, TRUE);
      return FALSE;
    }
  return TRUE;
}

/* ---- rendering off the loop ----------------------------------------------------------- */

typedef struct {
  GmdMailbox *mailbox;
  GmdJob *job;
  GmdModel *model;
  guint32 context_size;
  guint32 max_prompt_tokens;
  gm_prompt prompt;
  GPtrArray *images;          /* GmdImage*: decoded and preprocessed, not yet encoded */
  GPtrArray *audio;           /* GmdAudio*: decoded, clips featurised, not yet encoded */
  GError *error;
} Prepare;

static void
prepare_free (gpointer p)
{
  Prepare *pr = p;
  gmd_job_unref (pr->job);
  gmd_model_unref (pr->model);
  gm_prompt_free (&pr->prompt);
  if (pr->images)
    g_ptr_array_unref (pr->images);
  if (pr->audio)
    g_ptr_array_unref (pr->audio);
  g_clear_error (&pr->error);
  g_free (pr);
}

static void
prepare_deliver (gpointer p)
{
  Prepare *pr = p;
  GmdRequest *r = pr->job->owner;
  if (r == NULL || r->service == NULL || r->phase != REQ_PREPARING)
    return;
  if (pr->error != NULL)
    {
      end_request (r, GMD_STOP_ERROR, NULL, gmd_error_code_of (pr->error), pr->error->message,
                   TRUE);
      return;
    }
  if (!still_acceptable (r))
    return;
  gm_prompt_free (&r->job->prompt);
  r->job->prompt = pr->prompt;
  gm_prompt_init (&pr->prompt);
  r->job->prompt_model = gmd_model_ref (pr->model);
  if (r->job->images)
    g_ptr_array_unref (r->job->images);
  r->job->images = g_steal_pointer (&pr->images);
  if (r->job->audio)
    g_ptr_array_unref (r->job->audio);
  r->job->audio = g_steal_pointer (&pr->audio);
  accept (r);
}

/* GThreadPool worker: decode and preprocess the images, decode and featurise the audio
 * (their soft-token counts are positions of the prompt), render and check the window;
 * the tokenizer is the model's, held by a reference so a model switch cannot free it
 * meanwhile. */
static void
prepare_run (gpointer data, gpointer user_data)
{
  Prepare *pr = data;
  GmdJob *job = pr->job;
  if (gmd_prompt_prepare_media (pr->model, job->spec, job->image_tokens,
                                job->max_image_pixels, job->max_audio_seconds, &pr->images,
                                &pr->audio, &pr->error) &&
      gmd_prompt_render (pr->model, job->spec, pr->images, pr->audio, NULL, &pr->prompt,
                         &pr->error))
    gmd_prompt_check_fit ((guint32) pr->prompt.n_positions, pr->context_size,
                          pr->max_prompt_tokens, &pr->error);
  gmd_mailbox_post (pr->mailbox, prepare_deliver, pr, prepare_free);
}

/* One worker: requests are accepted in the order they were submitted (a client's queue
 * is FIFO), and rendering never waits behind a generation. */
GThreadPool *
gmd_request_prepare_pool_new (GError **error)
{
  return g_thread_pool_new (prepare_run, NULL, 1, FALSE, error);
}

/* Submitted while the first model loads: accepted without rendering (the engine
 * renders it once the model is in). */
static void
accept_unrendered (gpointer p)
{
  GmdRequest *r = p;
  if (r->service == NULL || r->phase != REQ_PREPARING)
    return;
  if (!still_acceptable (r))
    return;
  accept (r);
}

/* ---- engine results ------------------------------------------------------------------- */

static void
on_engine_progress (GmdJob *job, const GmdProgress *progress, gpointer user_data)
{
  GmdRequest *r = job->owner;
  if (r == NULL || r->phase != REQ_RUNNING)
    return;
  r->state = progress->state;
  if (!r->abandoned && r->sink.progress != NULL)
    r->sink.progress (r, progress, r->user_data);
}

static void
on_engine_piece (GmdJob *job, guint32 seq, gboolean thinking, const char *text,
                 gpointer user_data)
{
  GmdRequest *r = job->owner;
  if (r == NULL || r->phase != REQ_RUNNING)
    return;
  if (!r->abandoned && r->sink.piece != NULL)
    r->sink.piece (r, seq, thinking, text, r->user_data);
}

static void
on_engine_finished (GmdJob *job, const GmdJobResult *result, gpointer user_data)
{
  GmdRequest *r = job->owner;
  if (r == NULL || r->phase != REQ_RUNNING)
    return;
  end_request (r, result->stop_reason, result, result->error_code, result->error_message,
               TRUE);
}

const GmdEngineCallbacks gmd_request_engine_callbacks = {
  on_engine_progress,
  on_engine_piece,
  on_engine_finished,
};

/* ---- submission ----------------------------------------------------------------------- */

static gboolean
has_modality (GmdService *s, const char *name)
{
  return s->info.modalities != NULL && g_strv_contains (s->info.modalities, name);
}

static gboolean
check_media (GmdService *s, guint index, const GmdPart *part, GError **error)
{
  g_autofree char *field = g_strdup_printf ("content[%u]", index);
  if (part->type == GMD_PART_VIDEO)
    {
      gmd_set_field_error (error, GMD_ERROR_UNSUPPORTED_MEDIA, field,
                           "video input is not supported");
      return FALSE;
    }
  gsize len = 0;
  const guint8 *data = part->media ? g_bytes_get_data (part->media, &len) : NULL;
  if (part->format == GMD_MEDIA_UNKNOWN)
    {
      if (len == 0)
        {
          gmd_set_field_error (error, GMD_ERROR_UNSUPPORTED_MEDIA, field, "the file is empty");
          return FALSE;
        }
      GString *hex = g_string_new (NULL);
      for (gsize i = 0; i < MIN (len, (gsize) 4); i++)
        g_string_append_printf (hex, "%s%02x", i ? " " : "", data[i]);
      gmd_set_field_error (error, GMD_ERROR_UNSUPPORTED_MEDIA, field,
                           "not a PNG, JPEG, WAV, FLAC, Ogg, MP3, AIFF or AU file (starts with %s)",
                           hex->str);
      g_string_free (hex, TRUE);
      return FALSE;
    }
  int modality = gmd_media_format_modality (part->format);
  const char *mime = gmd_media_format_mime (part->format);
  if (modality != (int) part->type)
    {
      gmd_set_field_error (error, GMD_ERROR_UNSUPPORTED_MEDIA, field,
                           "the file is %s, not %s", mime ? mime : "of another kind",
                           part->type == GMD_PART_IMAGE ? "an image" : "audio");
      return FALSE;
    }
  if (part->type == GMD_PART_IMAGE && part->format != GMD_MEDIA_PNG &&
      part->format != GMD_MEDIA_JPEG)
    {
      gmd_set_field_error (error, GMD_ERROR_UNSUPPORTED_MEDIA, field,
                           "the file is %s: only PNG and JPEG images are decoded", mime);
      return FALSE;
    }
  /* While the first model loads its modalities are unknown: the engine checks them when
   * it prepares the prompt. */
  if (s->model == NULL)
    return TRUE;
  const char *name = gmd_part_type_name (part->type);
  if (!has_modality (s, name))
    {
      const char *why = s->model->mmproj_path == NULL ? "no mmproj loaded"
                        : part->type == GMD_PART_IMAGE ? "the mmproj has no vision encoder"
                        : "the mmproj has no audio encoder";
      gmd_set_field_error (error, GMD_ERROR_UNSUPPORTED_MEDIA, field,
                           "%s input is not available: %s", name, why);
      return FALSE;
    }
  return TRUE;
}

static gboolean
check_content (GmdService *s, GPtrArray *parts, const char *system, GError **error)
{
  const GmdLimits *lim = &s->config->limits;
  if (parts == NULL || parts->len == 0)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "content",
                           "at least one part is required");
      return FALSE;
    }
  guint64 text_bytes = system ? strlen (system) : 0, media_bytes = 0;
  guint n_media = 0;
  for (guint i = 0; i < parts->len; i++)
    {
      const GmdPart *part = parts->pdata[i];
      if (part->type == GMD_PART_TEXT)
        text_bytes += part->text ? strlen (part->text) : 0;
      else
        {
          n_media++;
          media_bytes += part->media ? g_bytes_get_size (part->media) : 0;
        }
    }
  if (text_bytes > lim->max_text_bytes)
    {
      gmd_set_field_error (error, GMD_ERROR_LIMIT_EXCEEDED, "content",
                           "%" G_GUINT64_FORMAT " bytes of text exceed max_text_bytes (%"
                           G_GUINT64_FORMAT ")", text_bytes, lim->max_text_bytes);
      return FALSE;
    }
  if (n_media > lim->max_media_parts)
    {
      gmd_set_field_error (error, GMD_ERROR_LIMIT_EXCEEDED, "content",
                           "%u media parts exceed max_media_parts (%u)", n_media,
                           lim->max_media_parts);
      return FALSE;
    }
  if (media_bytes > lim->max_media_bytes)
    {
      gmd_set_field_error (error, GMD_ERROR_LIMIT_EXCEEDED, "content",
                           "%" G_GUINT64_FORMAT " bytes of media exceed max_media_bytes (%"
                           G_GUINT64_FORMAT ")", media_bytes, lim->max_media_bytes);
      return FALSE;
    }
  for (guint i = 0; i < parts->len; i++)
    {
      const GmdPart *part = parts->pdata[i];
      if (part->type != GMD_PART_TEXT && !check_media (s, i, part, error))
        return FALSE;
    }
  return TRUE;
}

/* max_tokens against the window: the options layer knows only the configured cap. */
gboolean
gmd_service_check_max_tokens (GmdService *s, const GmdOptions *o, GError **error)
{
  guint32 window = gmd_service_context_size (s);
  guint32 limit = s->config->limits.max_tokens_limit;
  guint32 cap = limit ? MIN (limit, window ? window : limit) : window;
  if (!(o->set & GMD_OPT_MAX_TOKENS) || o->max_tokens <= 0 || cap == 0 ||
      (guint32) o->max_tokens <= cap)
    return TRUE;
  gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "options.max_tokens",
                       "must be -1 or in [1, %u], got %d", cap, o->max_tokens);
  return FALSE;
}

/* A seed a JSON client can send back exactly (below 2^53). */
static guint64
random_seed (void)
{
  guint64 hi = g_random_int (), lo = g_random_int ();
  return ((hi << 32) | lo) & ((G_GUINT64_CONSTANT (1) << 53) - 1);
}

static GStrv
stop_strings (const GmdOptions *o)
{
  if (o->stop == NULL || o->stop->len == 0)
    return NULL;
  GStrv v = g_new0 (char *, o->stop->len + 1);
  for (guint i = 0; i < o->stop->len; i++)
    v[i] = g_strdup (o->stop->pdata[i]);
  return v;
}

GmdRequest *
gmd_service_submit (GmdService *s, GmdClient *client, GmdSession *session, GPtrArray *parts,
                    GmdOptions *options, const GmdRequestSink *sink, gpointer user_data,
                    GError **error)
{
  g_autoptr (GPtrArray) owned_parts = parts;
  g_autoptr (GmdOptions) opts = options ? options : gmd_options_new ();
  const GmdLimits *lim = &s->config->limits;

  g_return_val_if_fail (client != NULL && sink != NULL, NULL);

  if (s->stopping)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_BUSY, "service is stopping");
      return NULL;
    }
  if (session != NULL && (gmd_session_is_closed (session) || session->service != s))
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT, "session: it is closed");
      return NULL;
    }
  guint waiting = s->n_preparing + gmd_scheduler_length (s->scheduler) + s->held.length;
  if (waiting >= lim->max_queue)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_BUSY,
                   "the queue is full: %u requests waiting (max_queue)", waiting);
      return NULL;
    }
  if (client->n_requests >= lim->max_queued_per_client)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_BUSY,
                   "this client already has %u requests queued or running "
                   "(max_queued_per_client)", client->n_requests);
      return NULL;
    }
  if (session != NULL && session->turn != NULL)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_BUSY, "a turn of this session is running");
      return NULL;
    }

  if (!gmd_service_check_max_tokens (s, opts, error))
    return NULL;
  if (session != NULL)
    gmd_options_merge_defaults (opts, session->options);
  gmd_options_merge_defaults (opts, s->config->defaults);
  const char *system = session ? session->system : (opts->set & GMD_OPT_SYSTEM) ? opts->system
                                                                                   : NULL;
  if (!check_content (s, owned_parts, session ? NULL : system, error))
    return NULL;
  if (s->model == NULL && s->load == NULL)
    {
      if (s->info.load_state == GMD_LOAD_FAILED)
        g_set_error (error, GMD_ERROR, GMD_ERROR_MODEL_NOT_LOADED,
                     "the model failed to load: %s", s->info.load_error);
      else
        g_set_error (error, GMD_ERROR, GMD_ERROR_MODEL_NOT_LOADED, "no model is loaded");
      return NULL;
    }

  GmdRequest *r = g_new0 (GmdRequest, 1);
  r->ref = 1;
  r->service = s;
  r->handle = g_strdup_printf ("r-%" G_GUINT64_FORMAT, ++s->next_request_id);
  r->client = gmd_client_ref (client);
  r->session = session ? gmd_session_ref (session) : NULL;
  r->sink = *sink;
  r->user_data = user_data;
  r->phase = REQ_PREPARING;
  r->state = GMD_STATE_QUEUED;
  r->last_position = G_MAXUINT32;
  r->t_submit = g_get_monotonic_time ();
  r->seed = (opts->set & GMD_OPT_SEED) ? opts->sampling.seed : random_seed ();
  r->context_size = session ? session->context_size : gmd_service_context_size (s);

  GmdJob *job = gmd_job_new ();
  gboolean thinking = session ? session->thinking : opts->thinking;
  job->spec = gmd_prompt_spec_new (session ? FALSE : opts->raw, thinking, system,
                                   session ? session->history : NULL, owned_parts);
  job->max_prompt_tokens = lim->max_prompt_tokens;
  job->image_tokens = opts->image_tokens;
  job->max_image_pixels = lim->max_image_pixels;
  job->max_audio_seconds = lim->max_audio_seconds;
  job->session_id = session ? session->id : 0;
  job->context_size = r->context_size;
  job->cache_slots = s->config->cache_slots;
  job->sampling = opts->sampling;
  job->sampling.seed = r->seed;
  job->max_tokens = opts->max_tokens > 0 ? opts->max_tokens : 0;
  if (lim->max_tokens_limit && (job->max_tokens <= 0 ||
                                (guint32) job->max_tokens > lim->max_tokens_limit))
    job->max_tokens = (gint32) lim->max_tokens_limit;
  job->stop = stop_strings (opts);
  job->thinking = thinking;
  job->owner = r;
  r->job = job;

  g_hash_table_insert (s->requests, r->handle, gmd_request_ref (r));
  g_hash_table_add (s->live_requests, r);
  client->n_requests++;
  s->n_preparing++;
  if (session != NULL)
    session->turn = r;

  if (s->model != NULL)
    {
      Prepare *pr = g_new0 (Prepare, 1);
      pr->mailbox = s->mailbox;
      pr->job = gmd_job_ref (job);
      pr->model = gmd_model_ref (s->model);
      pr->context_size = r->context_size;
      pr->max_prompt_tokens = lim->max_prompt_tokens;
      gm_prompt_init (&pr->prompt);
      g_thread_pool_push (s->prepare_pool, pr, NULL);
    }
  else
    gmd_mailbox_post (s->mailbox, accept_unrendered, gmd_request_ref (r),
                      (GDestroyNotify) gmd_request_unref);
  return r;
}

/* ---- lookups -------------------------------------------------------------------------- */

GmdRequest *
gmd_service_find_request (GmdService *s, const char *handle)
{
  return handle ? g_hash_table_lookup (s->requests, handle) : NULL;
}

static gint
compare_age (gconstpointer a, gconstpointer b)
{
  const GmdRequest *ra = *(GmdRequest *const *) a, *rb = *(GmdRequest *const *) b;
  return ra->t_submit < rb->t_submit ? -1 : ra->t_submit > rb->t_submit;
}

GPtrArray *
gmd_service_list_requests (GmdService *s, uid_t uid)
{
  GPtrArray *list = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_request_unref);
  GHashTableIter it;
  gpointer value;
  g_hash_table_iter_init (&it, s->requests);
  while (g_hash_table_iter_next (&it, NULL, &value))
    {
      GmdRequest *r = value;
      if (uid == 0 || r->client->uid == uid)
        g_ptr_array_add (list, gmd_request_ref (r));
    }
  g_ptr_array_sort (list, compare_age);
  return list;
}
