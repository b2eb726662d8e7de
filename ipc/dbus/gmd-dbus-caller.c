/* gmd-dbus-caller.c — who is calling: one record per unique bus name that called the
 * Manager. The caller's uid comes from the bus (GetConnectionCredentials, asynchronously:
 * the main loop never waits on the bus); calls that arrive before it are queued and run
 * in order once it is known. The same queue keeps the caller's calls in order while the
 * media fds of one of them are read in a thread. The record owns the caller's Request
 * and Session objects and tears them down when the name leaves the bus. */
#include "gmd-dbus-private.h"

#include <string.h>

typedef struct {
  GDBusMethodInvocation *invocation;
  GmdDbusCallerFunc func;
} WaitingCall;

static void
waiting_call_fail (WaitingCall *call, GmdErrorCode code, const char *message)
{
  gmd_dbus_return_code (call->invocation, code, "%s", message);
  g_free (call);
}

static GmdDbusCaller *
caller_new (GmdDbusServer *server, const char *name)
{
  GmdDbusCaller *caller = g_new0 (GmdDbusCaller, 1);

  caller->server = server;
  caller->name = g_strdup (name);
  caller->path_element = gmd_dbus_sender_path_element (name);
  caller->cancellable = g_cancellable_new ();
  g_queue_init (&caller->waiting);
  caller->requests = g_hash_table_new (NULL, NULL);
  caller->sessions = g_hash_table_new (NULL, NULL);
  return caller;
}

void
gmd_dbus_caller_free (GmdDbusCaller *caller)
{
  GHashTableIter iter;
  gpointer object;
  WaitingCall *call;

  /* Cancelling makes the credentials callback return without touching caller. */
  g_cancellable_cancel (caller->cancellable);
  while ((call = g_queue_pop_head (&caller->waiting)) != NULL)
    waiting_call_fail (call, GMD_ERROR_BUSY, "the caller left the bus or the service is stopping");

  /* Requests first: a session's running turn is one of them, and is abandoned (no
   * Finished) rather than cancelled by the session's close. Each removes itself. */
  while (g_hash_table_size (caller->requests) > 0)
    {
      g_hash_table_iter_init (&iter, caller->requests);
      g_hash_table_iter_next (&iter, &object, NULL);
      gmd_dbus_request_abandon (object);
    }
  while (g_hash_table_size (caller->sessions) > 0)
    {
      g_hash_table_iter_init (&iter, caller->sessions);
      g_hash_table_iter_next (&iter, &object, NULL);
      gmd_dbus_session_drop (object);
    }

  g_hash_table_unref (caller->requests);
  g_hash_table_unref (caller->sessions);
  g_clear_pointer (&caller->client, gmd_client_unref);
  g_object_unref (caller->cancellable);
  g_free (caller->path_element);
  g_free (caller->name);
  g_free (caller);
}

void
gmd_dbus_caller_vanished (GmdDbusServer *server, const char *name)
{
  /* Removing from the table frees the caller (the table's value destroy func). */
  if (g_hash_table_contains (server->callers, name))
    {
      g_debug ("%s left the bus", name);
      g_hash_table_remove (server->callers, name);
    }
}

gboolean
gmd_dbus_caller_token_in_use (GmdDbusCaller *caller, const char *token)
{
  GHashTableIter iter;
  gpointer object;

  g_hash_table_iter_init (&iter, caller->requests);
  while (g_hash_table_iter_next (&iter, &object, NULL))
    {
      const char *t = gmd_dbus_request_get_token (object);

      if (t != NULL && strcmp (t, token) == 0)
        return TRUE;
    }
  g_hash_table_iter_init (&iter, caller->sessions);
  while (g_hash_table_iter_next (&iter, &object, NULL))
    if (strcmp (gmd_dbus_session_get_token (object), token) == 0)
      return TRUE;
  return FALSE;
}

gboolean
gmd_dbus_caller_is_active (GmdDbusCaller *caller)
{
  return g_hash_table_size (caller->requests) > 0 || g_hash_table_size (caller->sessions) > 0 ||
         !g_queue_is_empty (&caller->waiting) || caller->reading;
}

/* Runs the waiting calls in order, until one of them starts reading media: the rest wait
 * for gmd_dbus_caller_read_done. A call ends in the caller's removal only through the bus
 * (never synchronously), so caller outlives the loop. */
static void
run_waiting (GmdDbusCaller *caller)
{
  WaitingCall *call;

  while (caller->identified && !caller->reading &&
         (call = g_queue_pop_head (&caller->waiting)) != NULL)
    {
      call->func (caller, call->invocation);
      g_free (call);
    }
}

void
gmd_dbus_caller_run_in_order (GmdDbusCaller *caller, GDBusMethodInvocation *invocation,
                              GmdDbusCallerFunc func)
{
  WaitingCall *call;

  if (caller->identified && !caller->reading && g_queue_is_empty (&caller->waiting))
    {
      func (caller, invocation);
      return;
    }
  call = g_new0 (WaitingCall, 1);
  call->invocation = invocation;
  call->func = func;
  g_queue_push_tail (&caller->waiting, call);
}

void
gmd_dbus_caller_read_done (GmdDbusCaller *caller)
{
  caller->reading = FALSE;
  run_waiting (caller);
}

static void
got_credentials (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) reply = NULL;
  g_autoptr(GVariant) credentials = NULL;
  GmdDbusCaller *caller = user_data;
  GmdDbusServer *server;
  WaitingCall *call;
  guint32 uid;

  reply = g_dbus_connection_call_finish (G_DBUS_CONNECTION (source), result, &error);
  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;   /* caller was freed */
  server = caller->server;

  if (reply != NULL)
    credentials = g_variant_get_child_value (reply, 0);
  if (reply == NULL || !g_variant_lookup (credentials, "UnixUserID", "u", &uid))
    {
      g_autofree char *message = g_strdup_printf ("cannot identify the caller %s: %s", caller->name,
                                                  error != NULL ? error->message : "the bus gave no uid");

      g_debug ("%s", message);
      /* Usually the caller has just left; its calls fail and a later call retries. */
      while ((call = g_queue_pop_head (&caller->waiting)) != NULL)
        waiting_call_fail (call, GMD_ERROR_INTERNAL, message);
      g_hash_table_remove (server->callers, caller->name);
      return;
    }

  caller->uid = (uid_t) uid;
  {
    /* A client is the unit of limits and fairness: the uid on the system bus (more
     * connections buy no more share), the connection on the session bus. */
    g_autofree char *key = server->system_bus ? g_strdup_printf ("uid:%u", uid)
                                              : g_strdup (caller->name);

    caller->client = gmd_service_get_client (server->service, key, caller->uid);
  }
  caller->identified = TRUE;
  run_waiting (caller);
}

void
gmd_dbus_caller_dispatch (GmdDbusServer *server, GDBusMethodInvocation *invocation,
                          GmdDbusCallerFunc func)
{
  const char *name = g_dbus_method_invocation_get_sender (invocation);
  GmdDbusCaller *caller;

  if (name == NULL || name[0] != ':')
    {
      /* Only a peer-to-peer connection has no unique sender; this API is bus-only. */
      gmd_dbus_return_code (invocation, GMD_ERROR_PERMISSION_DENIED, "the caller has no unique bus name");
      return;
    }

  caller = g_hash_table_lookup (server->callers, name);
  if (caller == NULL)
    {
      caller = caller_new (server, name);
      g_hash_table_insert (server->callers, caller->name, caller);
      /* If the name is already gone, the bus answers with an error (and NameOwnerChanged
       * has been or will be seen): the record is dropped either way. */
      g_dbus_connection_call (server->connection, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                              "org.freedesktop.DBus", "GetConnectionCredentials",
                              g_variant_new ("(s)", name), G_VARIANT_TYPE ("(a{sv})"),
                              G_DBUS_CALL_FLAGS_NONE, -1, caller->cancellable,
                              got_credentials, caller);
    }
  gmd_dbus_caller_run_in_order (caller, invocation, func);
}
