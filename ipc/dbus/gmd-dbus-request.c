/* gmd-dbus-request.c — one generation as a D-Bus object: Generate, Session.Send and Respond.
 *
 * The object lives at /org/gemmad/Gemmad1/request/SENDER/TOKEN from submission until its
 * Finished. Its signals go unicast to the owner (prompt-derived text must not reach
 * anyone else), which is why it is registered with a plain vtable and not the generated
 * skeleton, whose emit_* functions broadcast. Only the owner may call it or read its
 * properties. A streaming call is answered when the service decides (the first sink
 * callback): with the path when the request was queued, with the error when it was
 * refused after the off-loop checks.
 *
 * A call that carries fds has them read in a GTask thread (the file may sit on a slow or
 * stalled filesystem): the object is exported first, so that Cancel reaches it meanwhile,
 * and the caller's later calls wait (gmd-dbus-caller.c) so that they keep their order.
 * Back on the main loop the request is submitted as usual; one that was cancelled while
 * its media were read is cancelled right after. If the owner leaves meanwhile, the read
 * is detached and its result dropped. */
#include "gmd-dbus-private.h"

#include <unistd.h>

typedef struct _MediaRead MediaRead;

struct _GmdDbusRequest {
  GmdDbusCaller *caller;
  GmdDbusRequestMode mode;
  char *token;                  /* NULL for a Respond without handle_token */
  char *path;                   /* NULL when not exported */
  guint registration_id;
  GmdRequest *request;          /* NULL until submitted */
  GDBusMethodInvocation *invocation;  /* the call still waiting for its reply */
  GString *text;                /* Respond: the answer so far */
  /* Until submitted: */
  GmdSession *session;          /* Session.Send: the session of the turn */
  GmdOptions *options;
  MediaRead *read;              /* the fds being read in a thread, or NULL */
  gboolean cancel_requested;    /* Cancel came while they were read */
};

/* One call's content and fds, parsed in a worker thread. The thread touches only content,
 * fds, limits, cancellable, parts and error; request belongs to the main context. */
struct _MediaRead {
  GmdDbusRequest *request;      /* NULL once the request is gone (its owner left) */
  GVariant *content;
  int *fds;                     /* owned; closed by the thread once read */
  int n_fds;
  GmdLimits limits;
  GCancellable *cancellable;
  GPtrArray *parts;             /* the result, or NULL with error */
  GError *error;
};

static void
close_fds (int *fds, int n_fds)
{
  for (int i = 0; i < n_fds; i++)
    close (fds[i]);
  g_free (fds);
}

static void
request_free (GmdDbusRequest *r)
{
  if (r->read != NULL)
    {
      /* Only the owner's departure (or the server's end) drops a request whose media are
       * being read. The thread stops before the next fd; its result is dropped when it
       * comes back. */
      r->read->request = NULL;
      g_cancellable_cancel (r->read->cancellable);
      r->read = NULL;
    }
  if (r->registration_id != 0)
    g_dbus_connection_unregister_object (r->caller->server->connection, r->registration_id);
  g_hash_table_remove (r->caller->requests, r);
  if (r->invocation != NULL)
    gmd_dbus_return_code (r->invocation, GMD_ERROR_CANCELLED, "the request was abandoned");
  g_clear_pointer (&r->request, gmd_request_unref);
  g_clear_pointer (&r->session, gmd_session_unref);
  g_clear_pointer (&r->options, gmd_options_free);
  if (r->text != NULL)
    g_string_free (r->text, TRUE);
  g_free (r->path);
  g_free (r->token);
  g_free (r);
}

const char *
gmd_dbus_request_get_token (GmdDbusRequest *r)
{
  return r->token;
}

void
gmd_dbus_request_abandon (GmdDbusRequest *r)
{
  if (r->request != NULL)
    gmd_request_abandon (r->request);
  request_free (r);
}

static void
emit (GmdDbusRequest *r, const char *signal, GVariant *parameters)
{
  gmd_dbus_emit_to (r->caller->server->connection, r->caller->name, r->path,
                    GMD_DBUS_REQUEST_IFACE, signal, parameters);
}

/* ---- the service's sink --------------------------------------------------------------- */

static void
reply_accepted (GmdDbusRequest *r)
{
  if (r->mode == GMD_DBUS_REQUEST_STREAM && r->invocation != NULL)
    g_dbus_method_invocation_return_value (g_steal_pointer (&r->invocation),
                                           g_variant_new ("(o)", r->path));
}

static void
on_progress (GmdRequest *request, const GmdProgress *progress, gpointer user_data)
{
  GmdDbusRequest *r = user_data;

  if (r->mode != GMD_DBUS_REQUEST_STREAM)
    return;
  reply_accepted (r);
  emit (r, "Progress", g_variant_new ("(@a{sv})", gmd_dbus_progress_to_variant (progress)));
}

static void
on_piece (GmdRequest *request, guint32 seq, gboolean thinking, const char *text, gpointer user_data)
{
  GmdDbusRequest *r = user_data;

  if (r->mode == GMD_DBUS_REQUEST_RESPOND)
    {
      if (!thinking)
        g_string_append (r->text, text);
      return;
    }
  reply_accepted (r);
  emit (r, thinking ? "ThinkingPiece" : "Piece", g_variant_new ("(us)", seq, text));
}

static void
return_summary_error (GDBusMethodInvocation *invocation, const GmdSummary *summary)
{
  if (summary->stop_reason == GMD_STOP_CANCELLED)
    gmd_dbus_return_code (invocation, GMD_ERROR_CANCELLED, "the request was cancelled (%s)",
                          gmd_cancel_reason_name (summary->cancel_reason));
  else
    gmd_dbus_return_code (invocation, summary->error_code, "%s",
                          summary->error_message != NULL ? summary->error_message : "request failed");
}

static void
on_finished (GmdRequest *request, const GmdSummary *summary, gpointer user_data)
{
  GmdDbusRequest *r = user_data;

  if (r->mode == GMD_DBUS_REQUEST_RESPOND)
    {
      if (summary->stop_reason == GMD_STOP_ERROR || summary->stop_reason == GMD_STOP_CANCELLED)
        return_summary_error (g_steal_pointer (&r->invocation), summary);
      else
        g_dbus_method_invocation_return_value (g_steal_pointer (&r->invocation),
                                               g_variant_new ("(s@a{sv})", r->text->str,
                                                              gmd_dbus_summary_to_variant (summary)));
    }
  else if (r->invocation != NULL && summary->stop_reason == GMD_STOP_ERROR)
    {
      /* Refused before it was queued: the caller gets the error instead of a path, and
       * nothing was ever emitted on the object. */
      return_summary_error (g_steal_pointer (&r->invocation), summary);
    }
  else
    {
      reply_accepted (r);
      emit (r, "Finished", g_variant_new ("(@a{sv})", gmd_dbus_summary_to_variant (summary)));
    }
  request_free (r);
}

static const GmdRequestSink request_sink = {
  .progress = on_progress,
  .piece = on_piece,
  .finished = on_finished,
};

/* ---- the object's methods and properties ------------------------------------------------ */

static GVariant *
state_value (GmdDbusRequest *r)
{
  /* Media still being read: not in the queue yet, but waiting as a queued one does. */
  GmdRequestState state = r->request != NULL ? gmd_request_get_state (r->request) : GMD_STATE_QUEUED;

  return g_variant_new_string (gmd_request_state_name (state));
}

static void
request_method_call (GDBusConnection *connection, const char *sender, const char *path,
                     const char *interface, const char *method, GVariant *parameters,
                     GDBusMethodInvocation *invocation, gpointer user_data)
{
  GmdDbusRequest *r = user_data;

  if (g_strcmp0 (sender, r->caller->name) != 0)
    {
      gmd_dbus_return_code (invocation, GMD_ERROR_PERMISSION_DENIED,
                            "%s belongs to another caller", path);
      return;
    }

  if (g_strcmp0 (interface, GMD_DBUS_PROPERTIES_IFACE) == 0)
    {
      /* Reached here because the vtable has no get_property: the owner check above
       * covers property reads too. State is the only property. */
      if (g_strcmp0 (method, "Get") == 0)
        g_dbus_method_invocation_return_value (invocation, g_variant_new ("(v)", state_value (r)));
      else if (g_strcmp0 (method, "GetAll") == 0)
        {
          GVariantBuilder b;

          g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
          g_variant_builder_add (&b, "{sv}", "State", state_value (r));
          g_dbus_method_invocation_return_value (invocation, g_variant_new ("(a{sv})", &b));
        }
      else
        g_dbus_method_invocation_return_error (invocation, G_DBUS_ERROR, G_DBUS_ERROR_PROPERTY_READ_ONLY,
                                               "the properties of %s are read-only", GMD_DBUS_REQUEST_IFACE);
      return;
    }

  if (g_strcmp0 (method, "Cancel") == 0)
    {
      /* Cancelling a request that is already finishing is not an error. One whose
       * media are still being read is cancelled as soon as it is submitted. */
      if (r->request != NULL)
        gmd_request_cancel (r->request, GMD_CANCEL_CLIENT);
      else
        r->cancel_requested = TRUE;
      g_dbus_method_invocation_return_value (invocation, NULL);
      return;
    }
  g_dbus_method_invocation_return_error (invocation, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_METHOD,
                                         "no method %s.%s", interface, method);
}

static const GDBusInterfaceVTable request_vtable = {
  .method_call = request_method_call,
  .get_property = NULL,   /* Get/GetAll come to method_call, behind the owner check */
  .set_property = NULL,
};

/* ---- Generate, Respond, Session.Send ----------------------------------------------------- */

/* The call's fds, taken out of the message so that they are closed as soon as they are
 * read (a Respond's message lives until its answer). */
static int *
steal_fds (GDBusMethodInvocation *invocation, int *n_fds)
{
  GUnixFDList *list = g_dbus_message_get_unix_fd_list (g_dbus_method_invocation_get_message (invocation));

  *n_fds = 0;
  if (list == NULL || g_unix_fd_list_get_length (list) == 0)
    return NULL;
  return g_unix_fd_list_steal_fds (list, n_fds);
}

/* Exports r at its path (a request without a token has none). On failure answers the call
 * with Internal and returns FALSE; the caller then drops r. */
static gboolean
request_export (GmdDbusRequest *r)
{
  g_autoptr(GError) error = NULL;

  if (r->path == NULL || r->registration_id != 0)
    return TRUE;
  r->registration_id = g_dbus_connection_register_object (r->caller->server->connection, r->path,
                                                          gm_dbus_request_interface_info (),
                                                          &request_vtable, r, NULL, &error);
  if (r->registration_id != 0)
    return TRUE;
  g_warning ("cannot export %s: %s", r->path, error->message);
  gmd_dbus_return_code (g_steal_pointer (&r->invocation), GMD_ERROR_INTERNAL,
                        "cannot export %s: %s", r->path, error->message);
  return FALSE;
}

/* Hands the parsed call (parts: taken) to the service; frees r when it is refused. */
static void
request_submit (GmdDbusRequest *r, GPtrArray *parts)
{
  g_autoptr(GError) error = NULL;

  /* No sink callback comes from inside submit, so r is complete before the first. */
  r->request = gmd_service_submit (r->caller->server->service, r->caller->client, r->session,
                                   parts, g_steal_pointer (&r->options), &request_sink, r, &error);
  g_clear_pointer (&r->session, gmd_session_unref);
  if (r->request == NULL)
    {
      gmd_dbus_return_error (g_steal_pointer (&r->invocation), error);
      request_free (r);
      return;
    }

  /* Exported at once (if not yet), so that Cancel works even before the reply arrives. */
  if (!request_export (r))
    {
      gmd_dbus_request_abandon (r);
      return;
    }
  /* The end comes through the sink, never from inside cancel. */
  if (r->cancel_requested)
    gmd_request_cancel (r->request, GMD_CANCEL_CLIENT);
}

/* ---- reading fds off the main loop ------------------------------------------------------ */

static void
media_read_free (MediaRead *m)
{
  close_fds (m->fds, m->n_fds);   /* none left unless the thread never ran */
  g_variant_unref (m->content);
  g_object_unref (m->cancellable);
  g_clear_pointer (&m->parts, g_ptr_array_unref);
  g_clear_error (&m->error);
  g_free (m);
}

static void
media_read_thread (GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
  MediaRead *m = task_data;

  m->parts = gmd_dbus_content_from_variant (m->content, m->fds, m->n_fds, &m->limits,
                                            cancellable, &m->error);
  /* Every fd of the call is closed here, exactly once, whether it was read or not. */
  close_fds (g_steal_pointer (&m->fds), m->n_fds);
  m->n_fds = 0;
  g_task_return_boolean (task, TRUE);
}

static void
media_read_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  MediaRead *m = g_task_get_task_data (G_TASK (result));
  GmdDbusRequest *r = m->request;
  GmdDbusCaller *caller;

  if (r == NULL)
    return;   /* the owner left (or the server stopped): the task frees the rest */
  m->request = NULL;
  r->read = NULL;
  caller = r->caller;
  if (m->parts == NULL)
    {
      gmd_dbus_return_error (g_steal_pointer (&r->invocation), m->error);
      request_free (r);
    }
  else
    request_submit (r, g_steal_pointer (&m->parts));
  gmd_dbus_caller_read_done (caller);
}

/* ---- Generate, Respond, Session.Send ----------------------------------------------------- */

void
gmd_dbus_request_handle (GmdDbusCaller *caller, GDBusMethodInvocation *invocation,
                         GmdSession *session, GmdOptionsScope scope, GmdDbusRequestMode mode)
{
  GmdDbusServer *server = caller->server;
  GmdLimits limits;
  GVariant *parameters = g_dbus_method_invocation_get_parameters (invocation);
  g_autoptr(GVariant) content = g_variant_get_child_value (parameters, 0);
  g_autoptr(GVariant) options_dict = g_variant_get_child_value (parameters, 1);
  g_autoptr(GmdOptions) options = NULL;
  g_autoptr(GPtrArray) parts = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *token = NULL;
  GmdDbusRequest *r;
  MediaRead *m;
  GTask *task;
  int n_fds = 0;
  int *fds = steal_fds (invocation, &n_fds);

  gmd_dbus_server_get_limits (server, &limits);
  options = gmd_dbus_options_from_variant (options_dict, scope, &limits, &error);
  if (options != NULL && options->handle_token != NULL)
    {
      token = g_strdup (options->handle_token);
      if (!gmd_dbus_token_is_valid (token))
        gmd_set_field_error (&error, GMD_ERROR_INVALID_ARGUMENT, "options.handle_token",
                             "must be 1 to 64 characters of [A-Za-z0-9_]");
      else if (gmd_dbus_caller_token_in_use (caller, token))
        gmd_set_field_error (&error, GMD_ERROR_INVALID_ARGUMENT, "options.handle_token",
                             "'%s' is in use by an unfinished request or session of this caller", token);
    }
  /* Without fds nothing can block: the content is parsed here. */
  if (error == NULL && fds == NULL)
    parts = gmd_dbus_content_from_variant (content, NULL, 0, &limits, NULL, &error);
  if (error != NULL)
    {
      close_fds (fds, n_fds);
      gmd_dbus_return_error (invocation, error);
      return;
    }

  r = g_new0 (GmdDbusRequest, 1);
  r->caller = caller;
  r->mode = mode;
  r->token = g_steal_pointer (&token);
  r->invocation = invocation;
  r->session = session != NULL ? gmd_session_ref (session) : NULL;
  r->options = g_steal_pointer (&options);
  if (mode == GMD_DBUS_REQUEST_RESPOND)
    r->text = g_string_new (NULL);
  if (r->token != NULL)
    r->path = g_strdup_printf (GMD_DBUS_REQUEST_PREFIX "/%s/%s", caller->path_element, r->token);
  g_hash_table_add (caller->requests, r);

  if (fds == NULL)
    {
      request_submit (r, g_steal_pointer (&parts));
      return;
    }

  /* Exported before the read, so that Cancel reaches the request meanwhile. */
  if (!request_export (r))
    {
      close_fds (fds, n_fds);
      request_free (r);
      return;
    }
  m = g_new0 (MediaRead, 1);
  m->request = r;
  m->content = g_steal_pointer (&content);
  m->fds = fds;
  m->n_fds = n_fds;
  m->limits = limits;
  m->cancellable = g_cancellable_new ();
  r->read = m;
  caller->reading = TRUE;
  /* The result comes back in the server's context, as every other callback. */
  g_main_context_push_thread_default (server->context);
  task = g_task_new (NULL, m->cancellable, media_read_done, NULL);
  g_main_context_pop_thread_default (server->context);
  g_task_set_source_tag (task, gmd_dbus_request_handle);
  g_task_set_task_data (task, m, (GDestroyNotify) media_read_free);
  g_task_run_in_thread (task, media_read_thread);
  g_object_unref (task);
}
