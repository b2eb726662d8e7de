/* gmd-dbus-auth.c — who may use the admin methods (ReloadConfig, LoadModel, UnloadModel).
 *
 * System bus: uid 0, or whoever polkit authorizes for org.gemmad.gemmad1.admin. The check
 * names the caller as a "system-bus-name" subject, so polkit itself asks the bus who that
 * is (no pid reuse race), and runs asynchronously: an authentication dialog can take
 * minutes while the service keeps serving. Session bus: only the service's own uid. */
#include "gmd-dbus-private.h"

#include <unistd.h>

/* polkit's CheckAuthorization flag */
#define POLKIT_ALLOW_USER_INTERACTION 1u

static GmdDbusAdminCall *
admin_call_new (GmdDbusServer *server, GDBusMethodInvocation *invocation, GmdDbusAdminFunc func)
{
  GmdDbusAdminCall *call = g_new0 (GmdDbusAdminCall, 1);

  call->server = server;
  call->invocation = invocation;
  call->cancellable = g_cancellable_new ();
  call->func = func;
  g_ptr_array_add (server->admin_calls, call);
  return call;
}

void
gmd_dbus_admin_call_free (GmdDbusAdminCall *call)
{
  if (call->server != NULL)
    g_ptr_array_remove (call->server->admin_calls, call);
  if (call->invocation != NULL)   /* only when the server went away first */
    gmd_dbus_return_code (call->invocation, GMD_ERROR_BUSY, "the service is stopping");
  g_object_unref (call->cancellable);
  g_free (call);
}

void
gmd_dbus_admin_calls_detach (GmdDbusServer *server)
{
  /* Calls waiting for polkit end in their (cancelled) callback; calls waiting for the
   * service (a model load) end in its callback. Either way they must not use server. */
  for (guint i = 0; i < server->admin_calls->len; i++)
    {
      GmdDbusAdminCall *call = g_ptr_array_index (server->admin_calls, i);

      call->server = NULL;
      g_cancellable_cancel (call->cancellable);
    }
  g_ptr_array_set_size (server->admin_calls, 0);
}

static void
authorized (GmdDbusAdminCall *call)
{
  call->func (call->server, call);
}

static void
deny (GmdDbusAdminCall *call, const char *message)
{
  gmd_dbus_return_code (g_steal_pointer (&call->invocation), GMD_ERROR_PERMISSION_DENIED, "%s", message);
  gmd_dbus_admin_call_free (call);
}

static void
polkit_checked (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GmdDbusAdminCall *call = user_data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GVariant) reply = NULL;
  gboolean is_authorized = FALSE, is_challenge = FALSE;

  reply = g_dbus_connection_call_finish (G_DBUS_CONNECTION (source), result, &error);
  if (call->server == NULL)
    {
      gmd_dbus_admin_call_free (call);   /* answers "stopping" */
      return;
    }
  if (reply == NULL)
    {
      g_autofree char *message = NULL;

      g_dbus_error_strip_remote_error (error);
      message = g_strdup_printf ("cannot check authorization with polkit: %s", error->message);
      deny (call, message);
      return;
    }
  g_variant_get (reply, "((bb@a{ss}))", &is_authorized, &is_challenge, NULL);
  if (!is_authorized)
    {
      deny (call, is_challenge
                    ? "not authorized for " GMD_DBUS_ADMIN_ACTION " (authentication is required: "
                      "call with interactive authorization allowed)"
                    : "not authorized for " GMD_DBUS_ADMIN_ACTION);
      return;
    }
  authorized (call);
}

static void
check_polkit (GmdDbusAdminCall *call)
{
  GDBusMessage *message = g_dbus_method_invocation_get_message (call->invocation);
  gboolean interactive = (g_dbus_message_get_flags (message) &
                          G_DBUS_MESSAGE_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION) != 0;
  GVariantBuilder subject_details;
  GVariantBuilder details;

  g_variant_builder_init (&subject_details, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&subject_details, "{sv}", "name",
                         g_variant_new_string (g_dbus_method_invocation_get_sender (call->invocation)));
  g_variant_builder_init (&details, G_VARIANT_TYPE ("a{ss}"));

  /* An interactive check waits for the user: no timeout then. */
  g_dbus_connection_call (call->server->connection, "org.freedesktop.PolicyKit1",
                          "/org/freedesktop/PolicyKit1/Authority",
                          "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization",
                          g_variant_new ("((sa{sv})sa{ss}us)", "system-bus-name", &subject_details,
                                         GMD_DBUS_ADMIN_ACTION, &details,
                                         interactive ? POLKIT_ALLOW_USER_INTERACTION : 0u, ""),
                          G_VARIANT_TYPE ("((bba{ss}))"), G_DBUS_CALL_FLAGS_NONE,
                          interactive ? G_MAXINT : -1, call->cancellable, polkit_checked, call);
}

void
gmd_dbus_authorize_admin (GmdDbusCaller *caller, GDBusMethodInvocation *invocation,
                          GmdDbusAdminFunc func)
{
  GmdDbusAdminCall *call = admin_call_new (caller->server, invocation, func);

  if (!caller->server->system_bus)
    {
      if (caller->uid != getuid ())
        {
          g_autofree char *message =
            g_strdup_printf ("admin methods on the session bus need the service's uid %u; the caller has uid %u",
                             (unsigned) getuid (), (unsigned) caller->uid);

          deny (call, message);
          return;
        }
      authorized (call);
      return;
    }
  if (caller->uid == 0)
    {
      authorized (call);
      return;
    }
  check_polkit (call);
}
