/* gmd-session.c — chat sessions: the kept conversation, one turn at a time, the idle
 * timeout. The KV cache itself lives in the engine (keyed by the session id); each turn
 * renders the whole conversation and the engine reuses the cached common prefix. */
#include "gmd-service-private.h"

#include <string.h>

#include "gmd-audio.h"
#include "gmd-image.h"

const char *
gmd_close_reason_name (GmdCloseReason r)
{
  switch (r)
    {
    case GMD_CLOSE_CLIENT: return "client";
    case GMD_CLOSE_IDLE: return "idle";
    case GMD_CLOSE_MODEL_CHANGED: return "model-changed";
    case GMD_CLOSE_SHUTDOWN: return "shutdown";
    }
  return "unknown";
}

GmdSession *
gmd_session_ref (GmdSession *session)
{
  g_return_val_if_fail (session != NULL, NULL);
  session->ref++;
  return session;
}

void
gmd_session_unref (GmdSession *session)
{
  if (session == NULL || --session->ref > 0)
    return;
  if (session->service != NULL)
    g_hash_table_remove (session->service->live_sessions, session);
  if (session->idle_source)
    {
      g_source_destroy (session->idle_source);
      g_source_unref (session->idle_source);
    }
  gmd_client_unref (session->client);
  gmd_options_free (session->options);
  g_free (session->system);
  g_ptr_array_unref (session->history);
  g_free (session);
}

gboolean
gmd_session_is_closed (GmdSession *session)
{
  return session->closed || session->service == NULL;
}

GmdClient *
gmd_session_get_client (GmdSession *session)
{
  return session->client;
}

guint32
gmd_session_get_context_size (GmdSession *session)
{
  return session->context_size;
}

guint32
gmd_session_get_context_used (GmdSession *session)
{
  return session->context_used;
}

guint32
gmd_session_get_message_count (GmdSession *session)
{
  return session->history->len;
}

gboolean
gmd_session_get_thinking (GmdSession *session)
{
  return session->thinking;
}

gboolean
gmd_session_has_running_turn (GmdSession *session)
{
  return session->turn != NULL;
}

GPtrArray *
gmd_session_get_history (GmdSession *session)
{
  GPtrArray *out = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_message_free);
  for (guint i = 0; i < session->history->len; i++)
    {
      const GmdMessage *m = session->history->pdata[i];
      GmdMessage *c = gmd_message_new (m->role, m->text);
      if (m->media != NULL)
        c->media = g_array_ref (m->media);
      g_ptr_array_add (out, c);
    }
  return out;
}

/* Positions of the conversation as the next turn would render it (before its user
 * message). Runs the tokenizer on the main loop: only for OpenSession and Truncate,
 * whose replies carry the value; bounded by max_text_bytes. */
static gboolean
measure (GmdService *s, const char *system, gboolean thinking, GPtrArray *history,
         guint32 *out, GError **error)
{
  g_autoptr (GmdPromptSpec) spec = gmd_prompt_spec_new (FALSE, thinking, system, history, NULL);
  gm_prompt p;
  gboolean ok = gmd_prompt_render (s->model, spec, NULL, NULL, NULL, &p, error);
  if (ok)
    *out = (guint32) p.n_positions;
  gm_prompt_free (&p);
  return ok;
}

/* ---- idle timeout ---------------------------------------------------------------------- */

static void
stop_idle_timer (GmdSession *session)
{
  if (session->idle_source)
    {
      g_source_destroy (session->idle_source);
      g_clear_pointer (&session->idle_source, g_source_unref);
    }
}

static gboolean
on_idle_timeout (gpointer user_data)
{
  GmdSession *session = user_data;
  g_clear_pointer (&session->idle_source, g_source_unref);
  if (session->turn == NULL)
    gmd_session_close_by_service (session, GMD_CLOSE_IDLE);
  return G_SOURCE_REMOVE;
}

static void
start_idle_timer (GmdSession *session)
{
  stop_idle_timer (session);
  GmdService *s = session->service;
  guint timeout = s->config->limits.session_idle_timeout;
  if (timeout == 0 || session->closed)
    return;
  session->idle_source = g_timeout_source_new_seconds (timeout);
  g_source_set_callback (session->idle_source, on_idle_timeout, session, NULL);
  g_source_attach (session->idle_source, s->context);
}

/* ---- opening, closing ------------------------------------------------------------------ */

static guint64
history_text_bytes (const char *system, GPtrArray *history)
{
  guint64 n = system ? strlen (system) : 0;
  for (guint i = 0; history && i < history->len; i++)
    {
      const GmdMessage *m = history->pdata[i];
      n += m->text ? strlen (m->text) : 0;
    }
  return n;
}

GmdSession *
gmd_service_open_session (GmdService *s, GmdClient *client, GmdOptions *options,
                          GmdSessionClosedFunc closed, gpointer user_data, GError **error)
{
  g_autoptr (GmdOptions) opts = options ? options : gmd_options_new ();
  const GmdLimits *lim = &s->config->limits;

  if (s->stopping)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_BUSY, "service is stopping");
      return NULL;
    }
  if (lim->max_sessions_per_client == 0)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_LIMIT_EXCEEDED,
                   "sessions are disabled (max_sessions_per_client is 0)");
      return NULL;
    }
  if (client->n_sessions >= lim->max_sessions_per_client)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_LIMIT_EXCEEDED,
                   "this client already has %u sessions open (max_sessions_per_client)",
                   client->n_sessions);
      return NULL;
    }
  if (s->model == NULL && s->load == NULL)
    {
      if (s->info.load_state == GMD_LOAD_FAILED)
        g_set_error (error, GMD_ERROR, GMD_ERROR_MODEL_NOT_LOADED,
                     "the model failed to load: %s", s->info.load_error);
      else
        g_set_error (error, GMD_ERROR, GMD_ERROR_MODEL_NOT_LOADED, "no model is loaded");
      return NULL;
    }

  if (!gmd_service_check_max_tokens (s, opts, error))
    return NULL;

  /* system and thinking may come from the configured defaults */
  g_autoptr (GmdOptions) merged = gmd_options_copy (opts);
  gmd_options_merge_defaults (merged, s->config->defaults);
  const char *system = (merged->set & GMD_OPT_SYSTEM) && merged->system && merged->system[0]
                           ? merged->system : NULL;
  guint64 text = history_text_bytes (system, opts->history);
  if (text > lim->max_text_bytes)
    {
      gmd_set_field_error (error, GMD_ERROR_LIMIT_EXCEEDED, "options",
                           "%" G_GUINT64_FORMAT " bytes of system prompt and history exceed "
                           "max_text_bytes (%" G_GUINT64_FORMAT ")", text, lim->max_text_bytes);
      return NULL;
    }

  guint32 service_ctx = gmd_service_context_size (s);
  guint32 ctx = service_ctx ? service_ctx : 4096;  /* provisional while the model loads */
  gboolean explicit_ctx = (opts->set & GMD_OPT_CONTEXT_SIZE) && opts->context_size != 0;
  if (explicit_ctx)
    {
      if (opts->context_size < 32 || (service_ctx && opts->context_size > service_ctx))
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "options.context_size",
                               "must be in [32, %u], got %u", service_ctx ? service_ctx : 32u,
                               opts->context_size);
          return NULL;
        }
      ctx = opts->context_size;
    }

  guint32 used = 0;
  if (s->model != NULL)
    {
      if (!measure (s, system, merged->thinking, opts->history, &used, error))
        return NULL;
      if (used >= ctx)
        {
          g_set_error (error, GMD_ERROR, GMD_ERROR_CONTEXT_EXCEEDED,
                       "the system prompt and history have %u positions and leave no room in "
                       "the context window of %u", used, ctx);
          return NULL;
        }
    }

  GmdSession *session = g_new0 (GmdSession, 1);
  session->ref = 1;
  session->service = s;
  session->client = gmd_client_ref (client);
  session->id = ++s->next_session_id;
  session->system = g_strdup (system);
  session->thinking = merged->thinking;
  session->history = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_message_free);
  for (guint i = 0; i < opts->history->len; i++)
    {
      const GmdMessage *m = opts->history->pdata[i];
      g_ptr_array_add (session->history, gmd_message_new (m->role, m->text));
    }
  session->context_size = ctx;
  session->explicit_context_size = explicit_ctx;
  session->context_used = used;
  session->closed_func = closed;
  session->closed_data = user_data;
  session->options = g_steal_pointer (&opts);

  s->sessions = g_list_append (s->sessions, gmd_session_ref (session));
  g_hash_table_add (s->live_sessions, session);
  client->n_sessions++;
  start_idle_timer (session);
  gmd_service_update_counts (s);
  return session;
}

/* Marks the session closed, cancels its turn and frees its cache. */
static void
close_common (GmdSession *session)
{
  GmdService *s = session->service;
  session->closed = TRUE;
  stop_idle_timer (session);
  if (session->turn != NULL)
    gmd_request_cancel (session->turn, GMD_CANCEL_SESSION_CLOSED);
  if (s->engine != NULL)
    gmd_engine_drop_session (s->engine, session->id);
  session->client->n_sessions--;
  GList *l = g_list_find (s->sessions, session);
  if (l != NULL)
    {
      s->sessions = g_list_delete_link (s->sessions, l);
      gmd_service_update_counts (s);
      gmd_session_unref (session);   /* the service's reference; the caller holds one */
    }
}

void
gmd_session_close (GmdSession *session)
{
  g_return_if_fail (session != NULL);
  if (session->closed || session->service == NULL)
    return;
  gmd_session_ref (session);
  close_common (session);
  gmd_session_unref (session);
}

typedef struct {
  GmdSession *session;
  GmdCloseReason reason;
} Closed;

static void
closed_free (gpointer p)
{
  Closed *c = p;
  gmd_session_unref (c->session);
  g_free (c);
}

static void
closed_deliver (gpointer p)
{
  Closed *c = p;
  if (c->session->service != NULL && c->session->closed_func != NULL)
    c->session->closed_func (c->session, c->reason, c->session->closed_data);
}

void
gmd_session_close_by_service (GmdSession *session, GmdCloseReason reason)
{
  if (session->closed || session->service == NULL)
    return;
  GmdService *s = session->service;
  Closed *c = g_new0 (Closed, 1);
  c->session = gmd_session_ref (session);
  c->reason = reason;
  close_common (session);
  gmd_mailbox_post (s->mailbox, closed_deliver, c, closed_free);
}

void
gmd_service_close_all_sessions (GmdService *s, GmdCloseReason reason)
{
  while (s->sessions != NULL)
    gmd_session_close_by_service (s->sessions->data, reason);
}

void
gmd_service_sessions_model_ready (GmdService *s)
{
  guint32 service_ctx = gmd_service_context_size (s);
  for (GList *l = s->sessions; l != NULL; l = l->next)
    {
      GmdSession *session = l->data;
      if (!session->explicit_context_size || session->context_size > service_ctx)
        session->context_size = service_ctx;
      if (session->turn == NULL)
        measure (s, session->system, session->thinking, session->history,
                 &session->context_used, NULL);
    }
}

/* Called from gmd_service_free: the session outlives the service. */
void
gmd_session_detach (GmdSession *session)
{
  stop_idle_timer (session);
  session->closed = TRUE;
  session->turn = NULL;
  session->service = NULL;
}

/* ---- turns ----------------------------------------------------------------------------- */

void
gmd_session_turn_accepted (GmdSession *session, GmdRequest *request)
{
  GString *text = g_string_new (NULL);
  GPtrArray *parts = request->job->spec->parts;
  for (guint i = 0; parts != NULL && i < parts->len; i++)
    {
      const GmdPart *part = parts->pdata[i];
      if (part->type == GMD_PART_TEXT && part->text)
        g_string_append (text, part->text);
    }
  g_ptr_array_add (session->history, gmd_message_new (GMD_ROLE_USER, text->str));
  g_string_free (text, TRUE);
  request->in_history = TRUE;
  stop_idle_timer (session);
}

/* A kept turn with media: its user message gets the turn's parts, images and audio as
 * their encoded soft tokens (the files' bytes go with the request), so a rebuilt cache
 * sees the same prompt; GetHistory lists them as (type, soft_tokens), an audio part with
 * the soft tokens of all its clips. FALSE when a media part was never encoded (the turn
 * did not get that far). */
static gboolean
keep_turn_parts (GmdMessage *user, GmdJob *job)
{
  GPtrArray *parts = job->spec->parts;
  guint n_images = job->images ? job->images->len : 0;
  guint n_audio = job->audio ? job->audio->len : 0;
  if (n_images == 0 && n_audio == 0)
    return TRUE;
  g_autoptr (GPtrArray) kept = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_part_free);
  g_autoptr (GArray) media = g_array_new (FALSE, FALSE, sizeof (GmdHistoryMedia));
  guint next_image = 0, next_audio = 0;
  for (guint i = 0; parts != NULL && i < parts->len; i++)
    {
      const GmdPart *part = parts->pdata[i];
      GmdHistoryMedia hm = { .type = part->type };
      if (part->type == GMD_PART_TEXT)
        {
          GmdPart *t = g_new0 (GmdPart, 1);
          t->type = GMD_PART_TEXT;
          t->text = g_strdup (part->text ? part->text : "");
          g_ptr_array_add (kept, t);
          continue;
        }
      if (part->type == GMD_PART_AUDIO)
        {
          GmdAudio *audio = next_audio < n_audio ? job->audio->pdata[next_audio++] : NULL;
          if (audio == NULL || !gmd_audio_is_encoded (audio))
            return FALSE;
          g_ptr_array_add (kept, gmd_part_new_encoded_audio (audio));
          hm.soft_tokens = gmd_audio_n_soft_tokens (audio);
        }
      else
        {
          GmdImage *image = next_image < n_images ? job->images->pdata[next_image++] : NULL;
          if (image == NULL || image->embd == NULL)
            return FALSE;
          g_ptr_array_add (kept, gmd_part_new_encoded_image (image));
          hm.soft_tokens = image->n_soft_tokens;
        }
      g_array_append_val (media, hm);
    }
  user->parts = g_steal_pointer (&kept);
  user->media = g_steal_pointer (&media);
  return TRUE;
}

void
gmd_session_turn_ended (GmdSession *session, GmdRequest *request, const GmdJobResult *result)
{
  if (session->turn == request)
    session->turn = NULL;
  if (session->closed || session->service == NULL)
    return;
  if (request->in_history)
    {
      gboolean has_text = result != NULL && result->answer != NULL && result->answer[0];
      gboolean failed = result == NULL || result->stop_reason == GMD_STOP_CANCELLED ||
                        result->stop_reason == GMD_STOP_ERROR;
      GmdMessage *user = session->history->len > 0
                             ? session->history->pdata[session->history->len - 1] : NULL;
      gboolean keep = has_text || !failed;
      if (keep && user != NULL && !keep_turn_parts (user, request->job))
        keep = FALSE;
      if (keep)
        {
          /* the answer as far as it got; thought text is not kept */
          g_ptr_array_add (session->history,
                           gmd_message_new (GMD_ROLE_MODEL, result->answer ? result->answer : ""));
          session->context_used = result->context_used;
        }
      else if (session->history->len > 0)
        g_ptr_array_remove_index (session->history, session->history->len - 1);
      request->in_history = FALSE;
    }
  start_idle_timer (session);
}

gboolean
gmd_session_truncate (GmdSession *session, guint32 keep, GError **error)
{
  g_return_val_if_fail (session != NULL, FALSE);
  if (gmd_session_is_closed (session))
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT, "session: it is closed");
      return FALSE;
    }
  if (session->turn != NULL)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_BUSY, "a turn of this session is running");
      return FALSE;
    }
  if (keep > session->history->len)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "keep",
                           "%u is more than the %u messages of the session", keep,
                           session->history->len);
      return FALSE;
    }
  g_ptr_array_set_size (session->history, keep);
  GmdService *s = session->service;
  if (s->model != NULL)
    measure (s, session->system, session->thinking, session->history,
             &session->context_used, NULL);
  start_idle_timer (session);
  return TRUE;
}
