/* gmd-dbus-session.c — a chat session as a D-Bus object at
 * /org/gemmad/Gemmad1/session/SENDER/TOKEN: Send, GetHistory, Truncate, Close and the
 * unicast Closed signal. Like a Request, it is registered with a plain vtable so that its
 * signal reaches only the owner and only the owner may call it or read its properties;
 * its properties never emit PropertiesChanged (that signal is broadcast). */
#include "gmd-dbus-private.h"

#include <string.h>

struct _GmdDbusSession {
  GmdDbusCaller *caller;
  char *token;
  char *path;
  guint registration_id;
  GmdSession *session;
};

static void
session_free (GmdDbusSession *s)
{
  if (s->registration_id != 0)
    g_dbus_connection_unregister_object (s->caller->server->connection, s->registration_id);
  g_hash_table_remove (s->caller->sessions, s);
  g_clear_pointer (&s->session, gmd_session_unref);
  g_free (s->path);
  g_free (s->token);
  g_free (s);
}

const char *
gmd_dbus_session_get_token (GmdDbusSession *s)
{
  return s->token;
}

void
gmd_dbus_session_drop (GmdDbusSession *s)
{
  if (s->session != NULL)
    gmd_session_close (s->session);
  session_free (s);
}

static void
emit_closed (GmdDbusSession *s, const char *reason)
{
  gmd_dbus_emit_to (s->caller->server->connection, s->caller->name, s->path,
                    GMD_DBUS_SESSION_IFACE, "Closed", g_variant_new ("(s)", reason));
}

/* The service closed the session (idle, model change, shutdown). */
static void
on_session_closed (GmdSession *session, GmdCloseReason reason, gpointer user_data)
{
  GmdDbusSession *s = user_data;

  emit_closed (s, gmd_close_reason_name (reason));
  session_free (s);
}

/* ---- the object's methods and properties ------------------------------------------------ */

static GVariant *
property_value (GmdDbusSession *s, const char *name)
{
  if (strcmp (name, "ContextSize") == 0)
    return g_variant_new_uint32 (gmd_session_get_context_size (s->session));
  if (strcmp (name, "ContextUsed") == 0)
    return g_variant_new_uint32 (gmd_session_get_context_used (s->session));
  if (strcmp (name, "MessageCount") == 0)
    return g_variant_new_uint32 (gmd_session_get_message_count (s->session));
  if (strcmp (name, "Thinking") == 0)
    return g_variant_new_boolean (gmd_session_get_thinking (s->session));
  return NULL;
}

static void
handle_properties (GmdDbusSession *s, const char *method, GVariant *parameters,
                   GDBusMethodInvocation *invocation)
{
  if (strcmp (method, "Get") == 0)
    {
      const char *name;
      GVariant *value;

      g_variant_get (parameters, "(&s&s)", NULL, &name);
      value = property_value (s, name);
      if (value == NULL)   /* GDBus checks names against the introspection data first */
        g_dbus_method_invocation_return_error (invocation, G_DBUS_ERROR, G_DBUS_ERROR_INVALID_ARGS,
                                               "no property %s", name);
      else
        g_dbus_method_invocation_return_value (invocation, g_variant_new ("(v)", value));
    }
  else if (strcmp (method, "GetAll") == 0)
    {
      static const char *const names[] = { "ContextSize", "ContextUsed", "MessageCount", "Thinking" };
      GVariantBuilder b;

      g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
      for (guint i = 0; i < G_N_ELEMENTS (names); i++)
        g_variant_builder_add (&b, "{sv}", names[i], property_value (s, names[i]));
      g_dbus_method_invocation_return_value (invocation, g_variant_new ("(a{sv})", &b));
    }
  else
    g_dbus_method_invocation_return_error (invocation, G_DBUS_ERROR, G_DBUS_ERROR_PROPERTY_READ_ONLY,
                                           "the properties of %s are read-only", GMD_DBUS_SESSION_IFACE);
}

static GmdDbusSession *
find_session (GmdDbusCaller *caller, const char *path)
{
  GHashTableIter iter;
  gpointer object;

  g_hash_table_iter_init (&iter, caller->sessions);
  while (g_hash_table_iter_next (&iter, &object, NULL))
    if (strcmp (((GmdDbusSession *) object)->path, path) == 0)
      return object;
  return NULL;
}

/* Send, GetHistory, Truncate and Close run in the caller's order: a Send whose media are
 * still being read comes first. The session may have closed while the call waited. */
static void
session_call_for (GmdDbusCaller *caller, GDBusMethodInvocation *invocation)
{
  const char *path = g_dbus_method_invocation_get_object_path (invocation);
  const char *method = g_dbus_method_invocation_get_method_name (invocation);
  GVariant *parameters = g_dbus_method_invocation_get_parameters (invocation);
  GmdDbusSession *s = find_session (caller, path);
  g_autoptr(GError) error = NULL;

  if (s == NULL)
    g_dbus_method_invocation_return_error (invocation, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_OBJECT,
                                           "%s is closed", path);
  else if (strcmp (method, "Send") == 0)
    gmd_dbus_request_handle (s->caller, invocation, s->session, GMD_OPTIONS_SESSION_SEND,
                             GMD_DBUS_REQUEST_STREAM);
  else if (strcmp (method, "GetHistory") == 0)
    {
      g_autoptr(GPtrArray) history = gmd_session_get_history (s->session);

      g_dbus_method_invocation_return_value (invocation,
                                             g_variant_new ("(@aa{sv})", gmd_dbus_history_to_variant (history)));
    }
  else if (strcmp (method, "Truncate") == 0)
    {
      guint32 keep;

      g_variant_get (parameters, "(u)", &keep);
      if (gmd_session_truncate (s->session, keep, &error))
        g_dbus_method_invocation_return_value (invocation, NULL);
      else
        gmd_dbus_return_error (invocation, error);
    }
  else if (strcmp (method, "Close") == 0)
    {
      gmd_session_close (s->session);
      /* The signal before the reply: a client that unsubscribes when Close returns has
       * already received it. */
      emit_closed (s, "client");
      g_dbus_method_invocation_return_value (invocation, NULL);
      session_free (s);
    }
  else
    g_dbus_method_invocation_return_error (invocation, G_DBUS_ERROR, G_DBUS_ERROR_UNKNOWN_METHOD,
                                           "no method %s.%s", GMD_DBUS_SESSION_IFACE, method);
}

static void
session_method_call (GDBusConnection *connection, const char *sender, const char *path,
                     const char *interface, const char *method, GVariant *parameters,
                     GDBusMethodInvocation *invocation, gpointer user_data)
{
  GmdDbusSession *s = user_data;

  if (g_strcmp0 (sender, s->caller->name) != 0)
    {
      gmd_dbus_return_code (invocation, GMD_ERROR_PERMISSION_DENIED,
                            "%s belongs to another caller", path);
      return;
    }

  if (strcmp (interface, GMD_DBUS_PROPERTIES_IFACE) == 0)
    handle_properties (s, method, parameters, invocation);
  else
    gmd_dbus_caller_run_in_order (s->caller, invocation, session_call_for);
}

static const GDBusInterfaceVTable session_vtable = {
  .method_call = session_method_call,
  .get_property = NULL,   /* Get/GetAll come to method_call, behind the owner check */
  .set_property = NULL,
};

/* ---- OpenSession ------------------------------------------------------------------------ */

/* A token the caller is not using, for an OpenSession without handle_token. */
static char *
pick_token (GmdDbusCaller *caller)
{
  for (;;)
    {
      char *token = g_strdup_printf ("s%u", ++caller->server->next_session_token);

      if (!gmd_dbus_caller_token_in_use (caller, token))
        return token;
      g_free (token);
    }
}

void
gmd_dbus_session_handle_open (GmdDbusCaller *caller, GDBusMethodInvocation *invocation)
{
  GmdDbusServer *server = caller->server;
  GmdLimits limits;
  g_autoptr(GVariant) options_dict = g_variant_get_child_value (g_dbus_method_invocation_get_parameters (invocation), 0);
  g_autoptr(GmdOptions) options = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *token = NULL;
  GmdDbusSession *s;

  gmd_dbus_server_get_limits (server, &limits);
  options = gmd_dbus_options_from_variant (options_dict, GMD_OPTIONS_SESSION_OPEN, &limits, &error);
  if (options == NULL)
    {
      gmd_dbus_return_error (invocation, error);
      return;
    }
  if (options->handle_token != NULL)
    {
      if (!gmd_dbus_token_is_valid (options->handle_token))
        {
          gmd_dbus_return_code (invocation, GMD_ERROR_INVALID_ARGUMENT,
                                "options.handle_token: must be 1 to 64 characters of [A-Za-z0-9_]");
          return;
        }
      if (gmd_dbus_caller_token_in_use (caller, options->handle_token))
        {
          gmd_dbus_return_code (invocation, GMD_ERROR_INVALID_ARGUMENT,
                                "options.handle_token: '%s' is in use by an unfinished request or session of this caller",
                                options->handle_token);
          return;
        }
      token = g_strdup (options->handle_token);
    }
  else
    token = pick_token (caller);

  s = g_new0 (GmdDbusSession, 1);
  s->caller = caller;
  s->token = g_steal_pointer (&token);
  s->path = g_strdup_printf (GMD_DBUS_SESSION_PREFIX "/%s/%s", caller->path_element, s->token);
  s->session = gmd_service_open_session (server->service, caller->client, g_steal_pointer (&options),
                                         on_session_closed, s, &error);
  if (s->session == NULL)
    {
      gmd_dbus_return_error (invocation, error);
      g_free (s->path);
      g_free (s->token);
      g_free (s);
      return;
    }
  g_hash_table_add (caller->sessions, s);

  s->registration_id = g_dbus_connection_register_object (server->connection, s->path,
                                                          gm_dbus_session_interface_info (),
                                                          &session_vtable, s, NULL, &error);
  if (s->registration_id == 0)
    {
      gmd_dbus_return_code (invocation, GMD_ERROR_INTERNAL, "cannot export %s: %s", s->path, error->message);
      gmd_dbus_session_drop (s);
      return;
    }
  g_dbus_method_invocation_return_value (invocation, g_variant_new ("(o)", s->path));
}
