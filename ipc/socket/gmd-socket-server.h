/* gmd-socket-server.h — the UNIX-socket front end: newline-delimited JSON
 * (docs/protocol.md), peer credentials, fds over SCM_RIGHTS, per-connection streams. */
#pragma once

#include <gio/gio.h>

#include "daemon/gmd-service.h"

G_BEGIN_DECLS

typedef struct _GmdSocketServer GmdSocketServer;

/* per_user: the per-user service (only the service's own uid may connect; socket 0600). */
GmdSocketServer *gmd_socket_server_new (GmdService *service, gboolean per_user);

/* Plain listening mode: creates the parent directory if missing (0755, or 0700 when
 * per_user), removes a stale socket file (only if it is a socket nobody listens on),
 * binds, chmods to mode and listens. */
gboolean gmd_socket_server_listen_path (GmdSocketServer *server, const char *path,
                                        guint mode, GError **error);
/* Socket activation: an already listening AF_UNIX stream fd from systemd. */
gboolean gmd_socket_server_listen_fd (GmdSocketServer *server, int fd, GError **error);

guint gmd_socket_server_get_n_connections (GmdSocketServer *server);

/* Stops listening (unlinks a socket file it created); open connections get the shutdown
 * sequence of docs/protocol.md §8 as the service ends their streams. */
void gmd_socket_server_stop_listening (GmdSocketServer *server);
/* Closes every connection (abandoning their requests) and frees the server. */
void gmd_socket_server_free (GmdSocketServer *server);

G_END_DECLS
