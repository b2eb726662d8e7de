/* gmd-dbus-server.h — the org.gemmad.Gemmad1 service on one bus connection: the Manager
 * object, one Request object per generation and one Session object per chat, bound to
 * the caller's unique name (docs/dbus-api.md). The caller of this API owns the bus name
 * (g_bus_own_name) and creates the server in its bus-acquired callback. */
#pragma once

#include <gio/gio.h>

#include "daemon/gmd-service.h"

G_BEGIN_DECLS

typedef struct _GmdDbusServer GmdDbusServer;

/* Exports /org/gemmad/Gemmad1 on connection. system_bus selects the authorization rules
 * (system: admin methods need uid 0 or polkit org.gemmad.gemmad1.admin, clients are uids;
 * session: admin methods need the service's uid, clients are unique names). */
GmdDbusServer *gmd_dbus_server_new (GmdService *service, GDBusConnection *connection,
                                    gboolean system_bus, GError **error);
/* Number of callers with unfinished requests or open sessions (for idle exit). */
guint gmd_dbus_server_get_n_clients (GmdDbusServer *server);
/* Unexports everything, abandons the remaining requests, closes sessions silently. */
void gmd_dbus_server_free (GmdDbusServer *server);

G_END_DECLS
