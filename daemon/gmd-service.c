/* gmd-service.c — the service: configuration, clients, what the Manager shows, model
 * lifetime (loading in a thread, switching once the old model's work is drained or
 * cancelled), administration and shutdown. Requests: gmd-request.c; sessions:
 * gmd-session.c; computing: gmd-engine.c. */
#include "gmd-service-private.h"

#include <string.h>

enum { STR_LOAD_ERROR, STR_MODEL_NAME, STR_MODEL_PATH, STR_ARCHITECTURE, STR_QUANTIZATION };


const char *
gmd_load_state_name (GmdLoadState s)
{
  switch (s)
    {
    case GMD_LOAD_UNLOADED: return "unloaded";
    case GMD_LOAD_LOADING: return "loading";
    case GMD_LOAD_LOADED: return "loaded";
    case GMD_LOAD_FAILED: return "failed";
    }
  return "unknown";
}

/* ---- change notification -------------------------------------------------------------- */

static gboolean
emit_changed (gpointer user_data)
{
  GmdService *s = user_data;
  g_clear_pointer (&s->changed_source, g_source_unref);
  /* a copy: a handler may remove itself */
  g_autoptr (GArray) handlers = g_array_copy (s->changed_handlers);
  for (guint i = 0; i < handlers->len; i++)
    {
      ChangedHandler *h = &g_array_index (handlers, ChangedHandler, i);
      gboolean still_there = FALSE;
      for (guint j = 0; j < s->changed_handlers->len; j++)
        still_there |= g_array_index (s->changed_handlers, ChangedHandler, j).id == h->id;
      if (still_there)
        h->func (s, h->user_data);
    }
  return G_SOURCE_REMOVE;
}

/* Coalesced: handlers run once from the main context after a burst of changes. */
void
gmd_service_notify_changed (GmdService *s)
{
  if (s->changed_source != NULL || s->freeing)
    return;
  s->changed_source = g_idle_source_new ();
  /* not the idle priority: a busy loop (pieces, bus traffic) must not starve it */
  g_source_set_priority (s->changed_source, G_PRIORITY_DEFAULT);
  g_source_set_name (s->changed_source, "gmd-service-changed");
  g_source_set_callback (s->changed_source, emit_changed, s, NULL);
  g_source_attach (s->changed_source, s->context);
}

/* Runs a pending notification now: before a load callback, so that a front end that
 * answers from it already shows the new model. */
static void
flush_changed (GmdService *s)
{
  if (s->changed_source == NULL)
    return;
  g_source_destroy (s->changed_source);
  emit_changed (s);
}

guint
gmd_service_add_changed_handler (GmdService *s, GmdServiceChangedFunc func, gpointer user_data)
{
  ChangedHandler h = { ++s->next_handler_id, func, user_data };
  g_array_append_val (s->changed_handlers, h);
  return h.id;
}

void
gmd_service_remove_changed_handler (GmdService *s, guint id)
{
  for (guint i = 0; i < s->changed_handlers->len; i++)
    if (g_array_index (s->changed_handlers, ChangedHandler, i).id == id)
      {
        g_array_remove_index (s->changed_handlers, i);
        return;
      }
}

void
gmd_service_update_counts (GmdService *s)
{
  guint32 queued = gmd_scheduler_length (s->scheduler) + s->held.length;
  guint32 active = s->running != NULL;
  guint32 sessions = g_list_length (s->sessions);
  if (queued != s->info.queue_length || active != s->info.active_requests ||
      sessions != s->info.open_sessions)
    {
      s->info.queue_length = queued;
      s->info.active_requests = active;
      s->info.open_sessions = sessions;
      gmd_service_notify_changed (s);
    }
}

static void
set_info_string (GmdService *s, int which, const char *value)
{
  g_free (s->info_strings[which]);
  s->info_strings[which] = g_strdup (value ? value : "");
  const char **slot[] = {
    [STR_LOAD_ERROR] = &s->info.load_error,
    [STR_MODEL_NAME] = &s->info.model_name,
    [STR_MODEL_PATH] = &s->info.model_path,
    [STR_ARCHITECTURE] = &s->info.architecture,
    [STR_QUANTIZATION] = &s->info.quantization,
  };
  *slot[which] = s->info_strings[which];
}

static void
set_load_state (GmdService *s, GmdLoadState state, const char *error)
{
  s->info.load_state = state;
  set_info_string (s, STR_LOAD_ERROR, state == GMD_LOAD_FAILED ? error : "");
  gmd_service_notify_changed (s);
}

/* The Manager's model properties from the model requests run on. */
static void
describe_model (GmdService *s)
{
  GmdModel *m = s->model;
  set_info_string (s, STR_MODEL_NAME, m ? m->name : "");
  set_info_string (s, STR_MODEL_PATH, m ? m->path : "");
  set_info_string (s, STR_ARCHITECTURE, m ? m->architecture : "");
  set_info_string (s, STR_QUANTIZATION, m ? m->quantization : "");
  s->info.context_size = m ? m->context_size : s->config->context_size;
  s->info.n_ctx_train = m ? m->n_ctx_train : 0;
  s->info.n_params = m ? m->n_params : 0;
  s->info.file_bytes = m ? m->file_bytes : 0;
  s->info.threads = m ? s->model_threads : s->info.threads;
  s->info.modalities = gmd_model_modalities (m);
  s->info.media_types = gmd_model_media_types (m);
  gmd_service_notify_changed (s);
}

guint32
gmd_service_context_size (GmdService *s)
{
  return s->model ? s->model->context_size : s->config->context_size;
}

const GmdConfig *
gmd_service_get_config (GmdService *s)
{
  return s->config;
}

const GmdServiceInfo *
gmd_service_get_info (GmdService *s)
{
  return &s->info;
}

const GmdOptions *
gmd_service_get_defaults (GmdService *s)
{
  return s->config->defaults;
}

gboolean
gmd_service_is_stopping (GmdService *s)
{
  return s->stopping;
}

/* ---- clients ---------------------------------------------------------------------------- */

GmdClient *
gmd_service_get_client (GmdService *s, const char *key, uid_t uid)
{
  GmdClient *c = g_hash_table_lookup (s->clients, key);
  if (c != NULL)
    return gmd_client_ref (c);
  c = g_new0 (GmdClient, 1);
  c->ref = 1;
  c->service = s;
  c->key = g_strdup (key);
  c->uid = uid;
  g_hash_table_insert (s->clients, c->key, c);
  return c;
}

GmdClient *
gmd_client_ref (GmdClient *client)
{
  g_return_val_if_fail (client != NULL, NULL);
  client->ref++;
  return client;
}

void
gmd_client_unref (GmdClient *client)
{
  if (client == NULL || --client->ref > 0)
    return;
  if (client->service != NULL)
    {
      g_hash_table_remove (client->service->clients, client->key);
      gmd_scheduler_forget_owner (client->service->scheduler, client);
    }
  g_free (client->key);
  g_free (client);
}

uid_t
gmd_client_get_uid (GmdClient *client)
{
  return client->uid;
}

const char *
gmd_client_get_key (GmdClient *client)
{
  return client->key;
}

/* ---- model lifetime --------------------------------------------------------------------- */

static guint32
resolve_threads (guint32 threads)
{
  return threads ? threads : (guint32) MAX (g_get_num_processors (), 1u);
}

/* What the loading thread gets: copies only, so it never touches the service. */
typedef struct {
  GmdService *service;        /* read in the main context only (delivery) */
  guint64 generation;
  char *model_path;
  char *mmproj_path;
  guint32 context_size;
  GmdModel *model;
  GError *error;
} LoadResult;

static void
load_result_free (gpointer p)
{
  LoadResult *lr = p;
  g_free (lr->model_path);
  g_free (lr->mmproj_path);
  if (lr->model)
    gmd_model_unref (lr->model);
  g_clear_error (&lr->error);
  g_free (lr);
}

static void load_finished (gpointer p);

static gpointer
load_thread (gpointer data)
{
  LoadResult *lr = data;
  lr->model = gmd_model_load (lr->model_path, lr->mmproj_path, lr->context_size, &lr->error);
  gmd_mailbox_post (lr->service->mailbox, load_finished, lr, load_result_free);
  return NULL;
}

static void
load_op_free (GmdLoadOp *op)
{
  if (op->thread)
    g_thread_join (op->thread);
  g_free (op->model_path);
  g_free (op->mmproj_path);
  if (op->result)
    gmd_model_unref (op->result);
  g_free (op);
}

static gboolean
start_load (GmdService *s, const char *model_path, const char *mmproj_path, guint32 context_size,
            guint32 threads, gboolean drain, GmdLoadDoneFunc callback, gpointer user_data,
            GError **error)
{
  GmdLoadOp *op = g_new0 (GmdLoadOp, 1);
  op->generation = ++s->load_generation;
  op->model_path = g_strdup (model_path);
  op->mmproj_path = g_strdup (mmproj_path);
  op->context_size = context_size;
  op->threads = resolve_threads (threads);
  op->drain = drain;
  op->callback = callback;
  op->user_data = user_data;

  LoadResult *lr = g_new0 (LoadResult, 1);
  lr->service = s;
  lr->generation = op->generation;
  lr->model_path = g_strdup (model_path);
  lr->mmproj_path = g_strdup (mmproj_path);
  lr->context_size = context_size;
  op->thread = g_thread_try_new ("gmd-load", load_thread, lr, error);
  if (op->thread == NULL)
    {
      load_result_free (lr);
      load_op_free (op);
      return FALSE;
    }
  s->load = op;
  set_load_state (s, GMD_LOAD_LOADING, NULL);
  return TRUE;
}

/* Puts the loaded model in place (the old one's work has drained or been cancelled). */
static void
complete_switch (GmdService *s)
{
  GmdLoadOp *op = s->load;
  gboolean first = s->model == NULL;
  if (!first)
    gmd_service_close_all_sessions (s, GMD_CLOSE_MODEL_CHANGED);
  if (s->model)
    gmd_model_unref (s->model);
  s->model = g_steal_pointer (&op->result);
  s->model_threads = op->threads;
  gmd_engine_set_model (s->engine, s->model, op->threads, s->config->batch);
  s->load = NULL;
  GmdLoadDoneFunc callback = op->callback;
  gpointer user_data = op->user_data;
  load_op_free (op);

  describe_model (s);
  set_load_state (s, GMD_LOAD_LOADED, NULL);
  if (first)
    gmd_service_sessions_model_ready (s);

  /* requests held during the switch join the queue (the engine renders them again
   * with the new model) */
  GmdRequest *r;
  while ((r = g_queue_pop_head (&s->held)) != NULL)
    {
      r->phase = REQ_QUEUED;
      gmd_scheduler_push (s->scheduler, r->client, r);
    }
  if (s->running != NULL && s->running->phase == REQ_WAITING_MODEL)
    gmd_request_start (s->running);
  gmd_service_update_counts (s);
  if (callback)
    {
      flush_changed (s);
      callback (s, NULL, user_data);
    }
  gmd_service_update_positions (s);
  gmd_service_dispatch (s);
}

static void
try_complete_switch (GmdService *s)
{
  if (s->load != NULL && s->load->switching && s->running == NULL &&
      gmd_scheduler_length (s->scheduler) == 0)
    complete_switch (s);
}

static void
load_failed (GmdService *s, GmdLoadOp *op, const GError *error)
{
  s->load = NULL;
  if (s->model != NULL)
    {
      /* the old model stays */
      set_load_state (s, GMD_LOAD_LOADED, NULL);
    }
  else
    {
      set_load_state (s, GMD_LOAD_FAILED, error->message);
      g_autofree char *msg = g_strdup_printf ("the model failed to load: %s", error->message);
      g_autoptr (GPtrArray) waiting = gmd_scheduler_order (s->scheduler);
      for (GList *l = s->held.head; l != NULL; l = l->next)
        g_ptr_array_add (waiting, l->data);
      if (s->running != NULL)
        g_ptr_array_add (waiting, s->running);
      for (guint i = 0; i < waiting->len; i++)
        gmd_request_end_error (waiting->pdata[i], GMD_ERROR_MODEL_NOT_LOADED, msg);
    }
  if (op->callback)
    {
      flush_changed (s);
      op->callback (s, error, op->user_data);
    }
  load_op_free (op);
}

static void
load_finished (gpointer p)
{
  LoadResult *lr = p;
  GmdService *s = lr->service;
  GmdLoadOp *op = s->load;
  if (op == NULL || op->generation != lr->generation)
    return;
  g_thread_join (op->thread);
  op->thread = NULL;
  if (lr->model == NULL)
    {
      load_failed (s, op, lr->error);
      return;
    }
  op->result = g_steal_pointer (&lr->model);
  op->switching = TRUE;
  if (s->model == NULL)
    {
      complete_switch (s);
      return;
    }
  if (!op->drain)
    gmd_service_cancel_all (s, GMD_CANCEL_ADMIN);
  try_complete_switch (s);
}

gboolean
gmd_service_load_model (GmdService *s, const char *model_path, const char *mmproj_path,
                        guint32 context_size, guint32 threads, gboolean drain,
                        GmdLoadDoneFunc callback, gpointer user_data, GError **error)
{
  if (s->stopping)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_BUSY, "service is stopping");
      return FALSE;
    }
  if (s->load != NULL)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_BUSY, "another model load is in progress");
      return FALSE;
    }
  const char *path = model_path && model_path[0] ? model_path : s->config->model_path;
  if (path == NULL || path[0] == '\0')
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "model_path",
                           "no path given and none configured");
      return FALSE;
    }
  if (!g_path_is_absolute (path))
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "model_path",
                           "must be an absolute path, got '%s'", path);
      return FALSE;
    }
  const char *mmproj = mmproj_path && mmproj_path[0] ? mmproj_path : NULL;
  if (mmproj != NULL && !g_path_is_absolute (mmproj))
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "mmproj_path",
                           "must be an absolute path, got '%s'", mmproj);
      return FALSE;
    }
  return start_load (s, path, mmproj, context_size ? context_size : s->config->context_size,
                     threads ? threads : s->config->threads, drain, callback, user_data, error);
}

typedef struct {
  GmdService *service;
  GmdLoadDoneFunc callback;
  gpointer user_data;
} LoadCancelled;

static void
load_cancelled_deliver (gpointer p)
{
  LoadCancelled *lc = p;
  g_autoptr (GError) error = g_error_new (GMD_ERROR, GMD_ERROR_CANCELLED,
                                          "the load was cancelled by an unload");
  lc->callback (lc->service, error, lc->user_data);
}

void
gmd_service_unload_model (GmdService *s)
{
  if (s->load != NULL)
    {
      /* its result is dropped when it arrives (a new generation supersedes it) */
      GmdLoadOp *op = s->load;
      s->load = NULL;
      s->load_generation++;
      if (op->callback)
        {
          LoadCancelled *lc = g_new0 (LoadCancelled, 1);
          lc->service = s;
          lc->callback = op->callback;
          lc->user_data = op->user_data;
          gmd_mailbox_post (s->mailbox, load_cancelled_deliver, lc, g_free);
        }
      load_op_free (op);  /* joins the loading thread */
    }
  gmd_service_cancel_all (s, GMD_CANCEL_ADMIN);
  gmd_service_close_all_sessions (s, GMD_CLOSE_MODEL_CHANGED);
  gmd_engine_set_model (s->engine, NULL, s->model_threads, s->config->batch);
  g_clear_pointer (&s->model, gmd_model_unref);
  describe_model (s);
  set_load_state (s, GMD_LOAD_UNLOADED, NULL);
}

gboolean
gmd_service_reload_config (GmdService *s, GError **error)
{
  g_autoptr (GmdConfig) fresh = gmd_config_reload (s->config, error);
  if (fresh == NULL)
    return FALSE;
  GmdConfig *old = s->config;
  gboolean model_changed = g_strcmp0 (fresh->model_path, old->model_path) != 0 ||
                           g_strcmp0 (fresh->mmproj_path, old->mmproj_path) != 0 ||
                           fresh->context_size != old->context_size ||
                           fresh->threads != old->threads || fresh->batch != old->batch;
  if (model_changed && s->load != NULL)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_BUSY, "another model load is in progress");
      return FALSE;
    }
  s->config = g_steal_pointer (&fresh);
  gmd_config_free (old);
  gmd_service_notify_changed (s);
  if (!model_changed)
    return TRUE;
  if (s->config->model_path == NULL)
    {
      gmd_service_unload_model (s);
      return TRUE;
    }
  return gmd_service_load_model (s, s->config->model_path, s->config->mmproj_path,
                                 s->config->context_size, s->config->threads, TRUE, NULL, NULL,
                                 error);
}

void
gmd_service_wait_loaded (GmdService *s)
{
  while (s->load != NULL && s->model == NULL)
    g_main_context_iteration (s->context, TRUE);
}

/* ---- shutdown ------------------------------------------------------------------------- */

typedef struct {
  GmdService *service;
  GmdShutdownDoneFunc func;
  gpointer user_data;
} ShutdownDone;

static void
shutdown_done_deliver (gpointer p)
{
  ShutdownDone *d = p;
  d->func (d->service, d->user_data);
}

static void
try_finish_shutdown (GmdService *s)
{
  if (!s->shutdown_pending || s->running != NULL || s->n_preparing > 0)
    return;
  s->shutdown_pending = FALSE;
  if (s->grace_source)
    {
      g_source_destroy (s->grace_source);
      g_clear_pointer (&s->grace_source, g_source_unref);
    }
  gmd_service_close_all_sessions (s, GMD_CLOSE_SHUTDOWN);
  if (s->shutdown_done != NULL)
    {
      ShutdownDone *d = g_new0 (ShutdownDone, 1);
      d->service = s;
      d->func = s->shutdown_done;
      d->user_data = s->shutdown_data;
      gmd_mailbox_post (s->mailbox, shutdown_done_deliver, d, g_free);
    }
}

static gboolean
on_grace_over (gpointer user_data)
{
  GmdService *s = user_data;
  g_clear_pointer (&s->grace_source, g_source_unref);
  if (s->running != NULL)
    gmd_request_cancel (s->running, GMD_CANCEL_SHUTDOWN);
  return G_SOURCE_REMOVE;
}

static void
shutdown_kick (gpointer p)
{
  try_finish_shutdown (p);
}

void
gmd_service_shutdown (GmdService *s, guint grace_seconds, GmdShutdownDoneFunc callback,
                      gpointer user_data)
{
  if (s->stopping)
    return;
  s->stopping = TRUE;
  s->shutdown_done = callback;
  s->shutdown_data = user_data;
  gmd_service_notify_changed (s);

  g_autoptr (GPtrArray) waiting = gmd_scheduler_order (s->scheduler);
  for (GList *l = s->held.head; l != NULL; l = l->next)
    g_ptr_array_add (waiting, l->data);
  for (guint i = 0; i < waiting->len; i++)
    gmd_request_end_cancelled (waiting->pdata[i], GMD_CANCEL_SHUTDOWN);
  if (s->running != NULL)
    {
      if (s->running->phase != REQ_RUNNING || grace_seconds == 0)
        gmd_request_cancel (s->running, GMD_CANCEL_SHUTDOWN);
      else
        {
          s->grace_source = g_timeout_source_new_seconds (grace_seconds);
          g_source_set_callback (s->grace_source, on_grace_over, s, NULL);
          g_source_attach (s->grace_source, s->context);
        }
    }
  /* set only now, so that the done callback cannot come before the finished() of the
   * requests just cancelled; checked from the main loop after those are posted */
  s->shutdown_pending = TRUE;
  gmd_mailbox_post (s->mailbox, shutdown_kick, s, NULL);
}

void
gmd_service_engine_idle (GmdService *s)
{
  if (s->freeing)
    return;
  try_complete_switch (s);
  try_finish_shutdown (s);
  gmd_service_dispatch (s);
}

/* ---- creation -------------------------------------------------------------------------- */

GmdService *
gmd_service_new (const GmdConfig *config, GError **error)
{
  g_return_val_if_fail (config != NULL, NULL);
  GmdService *s = g_new0 (GmdService, 1);
  s->context = g_main_context_ref_thread_default ();
  s->config = gmd_config_copy (config);
  s->mailbox = gmd_mailbox_new (s->context);
  s->scheduler = gmd_scheduler_new ();
  g_queue_init (&s->held);
  s->clients = g_hash_table_new (g_str_hash, g_str_equal);
  s->requests = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                       (GDestroyNotify) gmd_request_unref);
  s->live_requests = g_hash_table_new (g_direct_hash, g_direct_equal);
  s->live_sessions = g_hash_table_new (g_direct_hash, g_direct_equal);
  s->changed_handlers = g_array_new (FALSE, FALSE, sizeof (ChangedHandler));
  for (int i = 0; i < (int) G_N_ELEMENTS (s->info_strings); i++)
    set_info_string (s, i, "");
  s->info.modalities = gmd_model_modalities (NULL);
  s->info.media_types = gmd_model_media_types (NULL);
  s->info.context_size = s->config->context_size;
  s->info.threads = resolve_threads (s->config->threads);
  s->info.load_state = GMD_LOAD_UNLOADED;

  s->engine = gmd_engine_new (s->mailbox, &gmd_request_engine_callbacks, s, error);
  if (s->engine != NULL)
    s->prepare_pool = gmd_request_prepare_pool_new (error);
  if (s->engine == NULL || s->prepare_pool == NULL)
    {
      gmd_service_free (s);
      return NULL;
    }
  s->model_threads = s->info.threads;
  if (s->config->model_path != NULL &&
      !start_load (s, s->config->model_path, s->config->mmproj_path, s->config->context_size,
                   s->config->threads, TRUE, NULL, NULL, error))
    {
      gmd_service_free (s);
      return NULL;
    }
  return s;
}

void
gmd_service_free (GmdService *s)
{
  if (s == NULL)
    return;
  s->freeing = TRUE;
  s->stopping = TRUE;

  /* stop computing quickly: every job cancelled, then the threads joined */
  GHashTableIter it;
  gpointer key;
  g_hash_table_iter_init (&it, s->live_requests);
  while (g_hash_table_iter_next (&it, &key, NULL))
    {
      GmdRequest *r = key;
      if (r->job)
        gmd_job_cancel (r->job);
    }
  gmd_engine_free (s->engine);
  s->engine = NULL;
  if (s->prepare_pool)
    g_thread_pool_free (s->prepare_pool, FALSE, TRUE);
  if (s->load)
    load_op_free (s->load);
  s->load = NULL;
  gmd_mailbox_free (s->mailbox);
  s->mailbox = NULL;

  /* front ends may still hold requests, sessions and clients: cut them loose */
  g_hash_table_iter_init (&it, s->live_requests);
  while (g_hash_table_iter_next (&it, &key, NULL))
    {
      GmdRequest *r = key;
      r->service = NULL;
      r->phase = REQ_ENDED;
      r->state = GMD_STATE_FINISHED;
      if (r->job)
        r->job->owner = NULL;
    }
  g_hash_table_iter_init (&it, s->live_sessions);
  while (g_hash_table_iter_next (&it, &key, NULL))
    gmd_session_detach (key);
  g_hash_table_iter_init (&it, s->clients);
  gpointer value;
  while (g_hash_table_iter_next (&it, NULL, &value))
    ((GmdClient *) value)->service = NULL;
  g_hash_table_destroy (s->requests);
  g_list_free_full (s->sessions, (GDestroyNotify) gmd_session_unref);
  g_hash_table_destroy (s->live_requests);
  g_hash_table_destroy (s->live_sessions);
  g_hash_table_destroy (s->clients);
  g_queue_clear (&s->held);
  gmd_scheduler_free (s->scheduler);

  if (s->changed_source)
    {
      g_source_destroy (s->changed_source);
      g_source_unref (s->changed_source);
    }
  if (s->grace_source)
    {
      g_source_destroy (s->grace_source);
      g_source_unref (s->grace_source);
    }
  g_array_unref (s->changed_handlers);
  if (s->model)
    gmd_model_unref (s->model);
  for (guint i = 0; i < G_N_ELEMENTS (s->info_strings); i++)
    g_free (s->info_strings[i]);
  gmd_config_free (s->config);
  g_main_context_unref (s->context);
  g_free (s);
}
