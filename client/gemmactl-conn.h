/* gemmactl-conn.h — one connection to gemmad's socket (docs/protocol.md): finding and
 * connecting the socket, the hello handshake, sending request lines (with fds in one
 * sendmsg), reading newline-delimited JSON and routing each message to its request. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

typedef struct _GemmactlConn GemmactlConn;

/* One message of a request: a result, an event or an error. terminal is TRUE for the last
 * one (result, error, or the "done" event); the handler is dropped after it. */
typedef void (*GemmactlMessageFunc) (GemmactlConn *conn, JsonObject *message,
                                     gboolean terminal, gpointer user_data);
/* The connection became unusable: lost, or the server sent something that is not the
 * protocol, or an error tied to no request. Called once; error stays owned by conn. */
typedef void (*GemmactlFatalFunc) (GemmactlConn *conn, const GError *error, gpointer user_data);

/* Connects to --socket, or when not given to $GEMMAD_SOCKET, else the per-user socket
 * ($XDG_RUNTIME_DIR/gemmad/gemmad.sock), else /run/gemmad/gemmad.sock, and says hello.
 * --timeout (0 = none) bounds the connect and the handshake. */
GemmactlConn *gemmactl_conn_open (GError **error);
void gemmactl_conn_free (GemmactlConn *conn);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GemmactlConn, gemmactl_conn_free)

const char *gemmactl_conn_get_path (GemmactlConn *conn);
/* The hello result ({"version","server","uid","admin","limits",…}). */
JsonObject *gemmactl_conn_get_hello (GemmactlConn *conn);
/* A value of the hello "limits", or fallback when missing. */
gint64 gemmactl_conn_get_limit (GemmactlConn *conn, const char *name, gint64 fallback);

/* Sends {"type": type, "id": <new id>, …members of fields} (fields may be NULL) with fds
 * in the same sendmsg; fds stay owned by the caller. Returns the id (>= 0), or -1 with
 * error set. func gets the request's messages once the main context runs (see watch). */
gint64 gemmactl_conn_send (GemmactlConn *conn, const char *type, JsonObject *fields,
                           const int *fds, guint n_fds, GemmactlMessageFunc func,
                           gpointer user_data, GError **error);
/* Forgets a request's handler: later messages of that id are dropped. */
void gemmactl_conn_forget (GemmactlConn *conn, gint64 id);

/* Sends a one-reply request and waits (without running the main context) for its result;
 * an "error" reply becomes a GError. Returns the "result" object (a new reference). */
JsonObject *gemmactl_conn_call (GemmactlConn *conn, const char *type, JsonObject *fields,
                                GError **error);

/* Reads from the socket as part of the thread-default main context: streamed messages
 * arrive at their handlers, events with a null id ("session_closed") at event_func. */
void gemmactl_conn_watch (GemmactlConn *conn, GemmactlMessageFunc event_func,
                          GemmactlFatalFunc fatal_func, gpointer user_data);

/* The error that broke the connection, or NULL. */
const GError *gemmactl_conn_get_error (GemmactlConn *conn);

G_END_DECLS
