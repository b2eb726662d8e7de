/* gmd-socket-conn.h — one client connection of the socket server (internal to ipc/socket):
 * hello, requests, streams, sessions, cancel, output buffering, disconnects. */
#pragma once

#include <glib.h>
#include <sys/types.h>

#include "daemon/gmd-service.h"

G_BEGIN_DECLS

typedef struct _GmdSocketConn GmdSocketConn;

/* What SO_PEERCRED said at accept. */
typedef struct {
  pid_t pid;      /* logged only, never used for decisions */
  uid_t uid;
  gid_t gid;
} GmdPeerCred;

/* Called once when the connection has closed (fd closed, requests abandoned or done);
 * the server then drops its reference. */
typedef void (*GmdSocketConnClosedFunc) (GmdSocketConn *conn, gpointer user_data);

/* Takes fd (connected, non-blocking, close-on-exec). session_names is the server's map
 * GmdSession* → the name a connection gave it ("s1"), for "list"; the connection adds
 * and removes its own. admin: the peer may use admin requests. */
GmdSocketConn *gmd_socket_conn_new (GmdService *service, int fd, const GmdPeerCred *peer,
                                    gboolean admin, GHashTable *session_names,
                                    GmdSocketConnClosedFunc closed, gpointer user_data);
GmdSocketConn *gmd_socket_conn_ref (GmdSocketConn *conn);
void gmd_socket_conn_unref (GmdSocketConn *conn);

uid_t gmd_socket_conn_get_uid (GmdSocketConn *conn);
/* Abandons the connection's requests, closes its sessions, writes what output it can
 * without blocking, and closes the fd. The closed callback is not called. */
void gmd_socket_conn_close (GmdSocketConn *conn);

G_END_DECLS
