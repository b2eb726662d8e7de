/* gmd-dbus-server.c — org.gemmad.Gemmad1 on one bus connection: exports the Manager, keeps
 * its properties current, and watches the bus for callers that leave (their requests are
 * abandoned, their sessions closed, their objects unexported). */
#include "gmd-dbus-private.h"

static void
service_changed (GmdService *service, gpointer user_data)
{
  GmdDbusServer *server = user_data;

  gmd_dbus_manager_update (server);
  gmd_dbus_manager_finish_reloads (server);
}

/* One subscription for every name on the bus rather than one match rule per caller:
 * dbus-daemon limits match rules per connection. The call that created a caller is
 * always seen before the NameOwnerChanged of its departure (the bus keeps the order). */
static void
name_owner_changed (GDBusConnection *connection, const char *sender, const char *path,
                    const char *interface, const char *signal, GVariant *parameters,
                    gpointer user_data)
{
  GmdDbusServer *server = user_data;
  const char *name, *old_owner, *new_owner;

  if (!g_variant_is_of_type (parameters, G_VARIANT_TYPE ("(sss)")))
    return;
  g_variant_get (parameters, "(&s&s&s)", &name, &old_owner, &new_owner);
  if (name[0] == ':' && new_owner[0] == '\0')
    gmd_dbus_caller_vanished (server, name);
}

GmdDbusServer *
gmd_dbus_server_new (GmdService *service, GDBusConnection *connection, gboolean system_bus,
                     GError **error)
{
  GmdDbusServer *server;

  g_return_val_if_fail (service != NULL && G_IS_DBUS_CONNECTION (connection), NULL);
  server = g_new0 (GmdDbusServer, 1);

  /* Registers the org.gemmad.Gemmad1.Error.* names for GMD_ERROR. */
  (void) gmd_error_quark ();

  server->service = service;
  server->connection = g_object_ref (connection);
  server->context = g_main_context_ref_thread_default ();
  server->system_bus = system_bus;
  server->callers = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                           (GDestroyNotify) gmd_dbus_caller_free);
  server->admin_calls = g_ptr_array_new ();
  server->reload_waiters = g_ptr_array_new ();

  /* Before anything is exported, so no caller's departure can be missed. */
  server->name_owner_subscription =
    g_dbus_connection_signal_subscribe (connection, "org.freedesktop.DBus", "org.freedesktop.DBus",
                                        "NameOwnerChanged", "/org/freedesktop/DBus", NULL,
                                        G_DBUS_SIGNAL_FLAGS_NONE, name_owner_changed, server, NULL);

  gmd_dbus_manager_new (server);
  if (!g_dbus_interface_skeleton_export (G_DBUS_INTERFACE_SKELETON (server->manager), connection,
                                         GMD_DBUS_MANAGER_PATH, error))
    {
      gmd_dbus_server_free (server);
      return NULL;
    }
  server->changed_handler_id = gmd_service_add_changed_handler (service, service_changed, server);
  return server;
}

static guint32
resolve_token_cap (guint32 cap, guint32 context_size)
{
  if (context_size == 0)
    return cap;   /* no model yet: the service checks again when the request runs */
  return cap == 0 || cap > context_size ? context_size : cap;
}

void
gmd_dbus_server_get_limits (GmdDbusServer *server, GmdLimits *out)
{
  guint32 context_size = gmd_service_get_info (server->service)->context_size;

  *out = gmd_service_get_config (server->service)->limits;
  out->max_tokens_limit = resolve_token_cap (out->max_tokens_limit, context_size);
  out->max_prompt_tokens = resolve_token_cap (out->max_prompt_tokens, context_size);
}

guint
gmd_dbus_server_get_n_clients (GmdDbusServer *server)
{
  GHashTableIter iter;
  gpointer caller;
  guint n = 0;

  g_hash_table_iter_init (&iter, server->callers);
  while (g_hash_table_iter_next (&iter, NULL, &caller))
    if (gmd_dbus_caller_is_active (caller))
      n++;
  return n + server->admin_calls->len + server->reload_waiters->len;
}

void
gmd_dbus_server_free (GmdDbusServer *server)
{
  if (server == NULL)
    return;

  if (server->changed_handler_id != 0)
    gmd_service_remove_changed_handler (server->service, server->changed_handler_id);
  g_dbus_connection_signal_unsubscribe (server->connection, server->name_owner_subscription);
  if (server->queue_props_source != NULL)
    {
      g_source_destroy (server->queue_props_source);
      g_clear_pointer (&server->queue_props_source, g_source_unref);
    }

  g_signal_handlers_disconnect_by_data (server->manager, server);
  if (g_dbus_interface_skeleton_has_connection (G_DBUS_INTERFACE_SKELETON (server->manager),
                                                server->connection))
    g_dbus_interface_skeleton_unexport (G_DBUS_INTERFACE_SKELETON (server->manager));
  g_clear_object (&server->manager);

  gmd_dbus_admin_calls_detach (server);
  for (guint i = 0; i < server->reload_waiters->len; i++)
    gmd_dbus_return_code (g_ptr_array_index (server->reload_waiters, i), GMD_ERROR_BUSY,
                          "the service is stopping");

  /* Abandons every request, closes every session silently, unexports their objects. */
  g_hash_table_destroy (server->callers);

  g_ptr_array_unref (server->admin_calls);
  g_ptr_array_unref (server->reload_waiters);
  g_object_unref (server->connection);
  g_main_context_unref (server->context);
  g_free (server);
}
