/* gmd-socket-conn.c — one socket client: reads lines, runs requests against the service,
 * streams events back, and never blocks the main loop on it (docs/protocol.md). */
#include "gmd-socket-conn.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "gmd-line-reader.h"
#include "gmd-proto.h"

#ifndef GMD_SERVER_VERSION
#define GMD_SERVER_VERSION "0"
#endif

#define API_VERSION 1
#define HELLO_TIMEOUT_SECONDS 10
#define MAX_PENDING_OUTPUT (8u * 1024 * 1024)
#define READ_CHUNK (256u * 1024)
/* Reads per wakeup, so that one busy client cannot hold the main loop. */
#define READS_PER_DISPATCH 16

typedef struct _Pending Pending;
typedef struct _SessionEntry SessionEntry;

struct _GmdSocketConn {
  gint ref_count;
  GmdService *service;
  int fd;
  GmdPeerCred peer;
  gboolean admin;
  GmdClient *client;
  GHashTable *session_names;      /* the server's, borrowed */
  GmdSocketConnClosedFunc closed_func;
  gpointer closed_data;

  GSource *source;                /* the fd: input, hang-up, output when pending */
  gpointer fd_tag;
  GSource *hello_timeout;
  GSource *close_idle;            /* a deferred close (see conn_fail) */

  GmdLineReader *reader;
  gsize cmsg_size;
  guint8 *cmsg_buf;

  gboolean hello_done;
  gboolean read_eof;              /* the peer half-closed: finish, then close */
  gboolean failing;               /* close pending; no more output or requests */
  gboolean parsing;               /* a line is being parsed in a thread */
  gboolean closed;

  GHashTable *pending;            /* id key → Pending: streams, load_model */
  GHashTable *sessions;           /* "s1" → SessionEntry */
  guint next_session;

  GByteArray *out;
  gsize out_offset;               /* already written part of out */
};

/* A request of this connection that has not had its terminal message yet. */
struct _Pending {
  GmdSocketConn *conn;            /* borrowed: pendings are freed before the connection */
  GmdProtoId *id;
  char *key;
  GmdRequest *request;            /* streams */
  gboolean accepted;
};

struct _SessionEntry {
  GmdSocketConn *conn;            /* borrowed */
  char *name;
  GmdSession *session;
};

/* load_model's callback may come after the connection closed. */
typedef struct {
  GmdSocketConn *conn;            /* a reference */
  char *key;
} LoadOp;

static void conn_send (GmdSocketConn *conn, char *line);
static void conn_update_watch (GmdSocketConn *conn);
static void conn_maybe_finish (GmdSocketConn *conn);

/* Sources go to the thread-default context (the service's); they are kept as pointers
 * because g_source_remove() only looks in the global default context. */
static GSource *
attach_source (GSource *source, GSourceFunc func, gpointer data)
{
  g_autoptr (GMainContext) context = g_main_context_ref_thread_default ();

  g_source_set_callback (source, func, data, NULL);
  g_source_attach (source, context);
  return source;
}

static void
clear_source (GSource **source)
{
  if (*source == NULL)
    return;
  g_source_destroy (*source);
  g_source_unref (*source);
  *source = NULL;
}

/* ---- lifetime ------------------------------------------------------------------------ */

static void
pending_free (Pending *p)
{
  if (p->request != NULL)
    {
      /* Still unfinished when freed: the connection is going away. */
      if (!gmd_request_is_finished (p->request))
        gmd_request_abandon (p->request);
      gmd_request_unref (p->request);
    }
  gmd_proto_id_free (p->id);
  g_free (p->key);
  g_free (p);
}

static void
session_entry_free (SessionEntry *e)
{
  if (e->session != NULL)
    {
      g_hash_table_remove (e->conn->session_names, e->session);
      gmd_session_close (e->session);
      gmd_session_unref (e->session);
    }
  g_free (e->name);
  g_free (e);
}

GmdSocketConn *
gmd_socket_conn_ref (GmdSocketConn *conn)
{
  g_atomic_int_inc (&conn->ref_count);
  return conn;
}

void
gmd_socket_conn_unref (GmdSocketConn *conn)
{
  if (!g_atomic_int_dec_and_test (&conn->ref_count))
    return;
  gmd_socket_conn_close (conn);
  g_hash_table_unref (conn->pending);
  g_hash_table_unref (conn->sessions);
  g_byte_array_unref (conn->out);
  g_free (conn);
}

uid_t
gmd_socket_conn_get_uid (GmdSocketConn *conn)
{
  return conn->peer.uid;
}

/* Writes without blocking; FALSE when the peer is gone. */
static gboolean
flush_output (GmdSocketConn *conn)
{
  while (conn->out_offset < conn->out->len)
    {
      ssize_t n = send (conn->fd, conn->out->data + conn->out_offset,
                        conn->out->len - conn->out_offset, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
          return FALSE;
        }
      conn->out_offset += (gsize) n;
    }
  if (conn->out_offset == conn->out->len)
    {
      g_byte_array_set_size (conn->out, 0);
      conn->out_offset = 0;
    }
  else if (conn->out_offset > 1024 * 1024)
    {
      g_byte_array_remove_range (conn->out, 0, (guint) conn->out_offset);
      conn->out_offset = 0;
    }
  return TRUE;
}

void
gmd_socket_conn_close (GmdSocketConn *conn)
{
  if (conn->closed)
    return;
  conn->closed = TRUE;
  g_debug ("socket: closing connection of uid %u (pid %d)", (guint) conn->peer.uid, (int) conn->peer.pid);

  clear_source (&conn->hello_timeout);
  clear_source (&conn->close_idle);
  clear_source (&conn->source);
  /* Abandon (no more callbacks) before anything they point to goes away. */
  g_hash_table_remove_all (conn->pending);
  g_hash_table_remove_all (conn->sessions);
  if (!conn->failing)
    (void) flush_output (conn);
  close (conn->fd);
  conn->fd = -1;
  g_clear_pointer (&conn->reader, gmd_line_reader_free);
  g_clear_pointer (&conn->cmsg_buf, g_free);
  g_clear_pointer (&conn->client, gmd_client_unref);
}

/* Closes and tells the server (which drops its reference). */
static void
conn_close_and_notify (GmdSocketConn *conn)
{
  if (conn->closed)
    return;
  gmd_socket_conn_ref (conn);
  gmd_socket_conn_close (conn);
  if (conn->closed_func != NULL)
    conn->closed_func (conn, conn->closed_data);
  gmd_socket_conn_unref (conn);
}

static gboolean
close_idle_cb (gpointer data)
{
  GmdSocketConn *conn = data;

  clear_source (&conn->close_idle);
  conn_close_and_notify (conn);
  return G_SOURCE_REMOVE;
}

/* Something went wrong deep inside a callback chain (a service callback, a line): close
 * from an idle callback, never from under the caller. */
static void
conn_fail (GmdSocketConn *conn, const char *why)
{
  if (conn->failing || conn->closed)
    return;
  g_debug ("socket: uid %u (pid %d): %s", (guint) conn->peer.uid, (int) conn->peer.pid, why);
  conn->failing = TRUE;
  if (conn->close_idle == NULL)   /* else a close is already on its way */
    conn->close_idle = attach_source (g_idle_source_new (), close_idle_cb, conn);
}

/* ---- output ------------------------------------------------------------------------------ */

/* Queues one line (taken) and writes what the socket takes now. */
static void
conn_send (GmdSocketConn *conn, char *line)
{
  g_autofree char *owned = line;

  if (conn->closed || conn->failing)
    return;
  g_byte_array_append (conn->out, (const guint8 *) owned, (guint) strlen (owned));
  if (!flush_output (conn))
    {
      conn_fail (conn, "peer gone while writing");
      return;
    }
  if (conn->out->len - conn->out_offset > MAX_PENDING_OUTPUT)
    {
      g_message ("socket: uid %u (pid %d) does not read its answers (%u bytes unsent); disconnecting",
                 (guint) conn->peer.uid, (int) conn->peer.pid, conn->out->len - (guint) conn->out_offset);
      conn_fail (conn, "output over the cap");
      return;
    }
  conn_update_watch (conn);
}

static void
send_error (GmdSocketConn *conn, const GmdProtoId *id, const GError *error)
{
  conn_send (conn, gmd_proto_error_line (id, error));
}

static void
send_error_literal (GmdSocketConn *conn, const GmdProtoId *id, GmdErrorCode code,
                    const char *field, const char *format, ...) G_GNUC_PRINTF (5, 6);

static void
send_error_literal (GmdSocketConn *conn, const GmdProtoId *id, GmdErrorCode code,
                    const char *field, const char *format, ...)
{
  g_autofree char *message = NULL;
  va_list ap;

  va_start (ap, format);
  message = g_strdup_vprintf (format, ap);
  va_end (ap);
  conn_send (conn, gmd_proto_error_line_literal (id, code, message, field));
}

/* ---- streams (generate, session.send) -------------------------------------------------- */

static void
pending_accept (Pending *p)
{
  if (p->accepted)
    return;
  p->accepted = TRUE;
  conn_send (p->conn, gmd_proto_accepted_line (p->id, gmd_request_get_handle (p->request)));
}

static void
stream_progress (GmdRequest *request, const GmdProgress *progress, gpointer user_data)
{
  Pending *p = user_data;

  pending_accept (p);
  conn_send (p->conn, gmd_proto_progress_line (p->id, progress));
}

static void
stream_piece (GmdRequest *request, guint32 seq, gboolean thinking, const char *text,
              gpointer user_data)
{
  Pending *p = user_data;

  pending_accept (p);
  conn_send (p->conn, gmd_proto_piece_line (p->id, seq, thinking, text));
}

static void
stream_finished (GmdRequest *request, const GmdSummary *summary, gpointer user_data)
{
  Pending *p = user_data;
  GmdSocketConn *conn = p->conn;

  if (!p->accepted && summary->stop_reason == GMD_STOP_ERROR)
    {
      /* Rejected by the checks that run off the main loop (prompt tokens, context):
       * before "accepted", a request ends with an error object. */
      g_autoptr (GError) error = g_error_new_literal (GMD_ERROR, summary->error_code,
                                                      summary->error_message != NULL
                                                        ? summary->error_message : "request failed");
      send_error (conn, p->id, error);
    }
  else
    {
      pending_accept (p);
      conn_send (conn, gmd_proto_done_line (p->id, summary));
    }
  g_hash_table_remove (conn->pending, p->key);
  conn_maybe_finish (conn);
}

static const GmdRequestSink stream_sink = {
  stream_progress,
  stream_piece,
  stream_finished,
};

static void
submit_stream (GmdSocketConn *conn, GmdProtoRequest *req, GmdSession *session)
{
  g_autoptr (GError) error = NULL;
  Pending *p = g_new0 (Pending, 1);

  p->conn = conn;
  p->id = gmd_proto_id_copy (req->id);
  p->key = gmd_proto_id_key (req->id);
  p->request = gmd_service_submit (conn->service, conn->client, session,
                                   g_steal_pointer (&req->parts), g_steal_pointer (&req->options),
                                   &stream_sink, p, &error);
  if (p->request == NULL)
    {
      send_error (conn, req->id, error);
      pending_free (p);
      return;
    }
  g_hash_table_insert (conn->pending, p->key, p);
}

/* ---- sessions ----------------------------------------------------------------------------- */

static void
session_closed_by_service (GmdSession *session, GmdCloseReason reason, gpointer user_data)
{
  SessionEntry *e = user_data;
  GmdSocketConn *conn = e->conn;

  conn_send (conn, gmd_proto_session_closed_line (e->name, reason));
  /* Already closed by the service: do not close again, just forget it. */
  g_hash_table_remove (conn->session_names, e->session);
  g_clear_pointer (&e->session, gmd_session_unref);
  g_hash_table_remove (conn->sessions, e->name);
}

static SessionEntry *
find_session (GmdSocketConn *conn, const GmdProtoRequest *req)
{
  SessionEntry *e = g_hash_table_lookup (conn->sessions, req->session);

  if (e == NULL)
    {
      g_autofree char *q = g_strescape (req->session, NULL);
      send_error_literal (conn, req->id, GMD_ERROR_INVALID_ARGUMENT, "session",
                          "session: no open session \"%.64s\" on this connection", q);
    }
  return e;
}

static void
do_session_open (GmdSocketConn *conn, GmdProtoRequest *req)
{
  g_autoptr (GError) error = NULL;
  SessionEntry *e = g_new0 (SessionEntry, 1);
  GmdJsonWriter w;

  e->conn = conn;
  e->session = gmd_service_open_session (conn->service, conn->client,
                                         g_steal_pointer (&req->options),
                                         session_closed_by_service, e, &error);
  if (e->session == NULL)
    {
      g_free (e);
      send_error (conn, req->id, error);
      return;
    }
  e->name = g_strdup_printf ("s%u", ++conn->next_session);
  g_hash_table_insert (conn->sessions, e->name, e);
  g_hash_table_insert (conn->session_names, e->session, e->name);

  gmd_proto_begin_result (&w, req->id);
  gmd_json_writer_member_string (&w, "session", e->name);
  gmd_json_writer_member_uint (&w, "context_size", gmd_session_get_context_size (e->session));
  gmd_json_writer_member_uint (&w, "context_used", gmd_session_get_context_used (e->session));
  conn_send (conn, gmd_proto_end_result (&w));
}

static void
do_session_history (GmdSocketConn *conn, GmdProtoRequest *req, SessionEntry *e)
{
  g_autoptr (GPtrArray) history = gmd_session_get_history (e->session);
  GmdJsonWriter w;

  gmd_proto_begin_result (&w, req->id);
  gmd_json_writer_key (&w, "messages");
  gmd_json_writer_begin_array (&w);
  for (guint i = 0; history != NULL && i < history->len; i++)
    {
      const GmdMessage *m = g_ptr_array_index (history, i);

      gmd_json_writer_begin_object (&w);
      gmd_json_writer_member_string (&w, "role", gmd_role_name (m->role));
      /* The same shape as D-Bus GetHistory: content parts, media (without data) first. */
      gmd_json_writer_key (&w, "content");
      gmd_json_writer_begin_array (&w);
      for (guint k = 0; m->media != NULL && k < m->media->len; k++)
        {
          const GmdHistoryMedia *hm = &g_array_index (m->media, GmdHistoryMedia, k);
          gmd_json_writer_begin_object (&w);
          gmd_json_writer_member_string (&w, "type", gmd_part_type_name ((GmdPartType) hm->type));
          gmd_json_writer_member_uint (&w, "soft_tokens", hm->soft_tokens);
          gmd_json_writer_end_object (&w);
        }
      if (m->text != NULL)
        {
          gmd_json_writer_begin_object (&w);
          gmd_json_writer_member_string (&w, "type", "text");
          gmd_json_writer_member_string (&w, "text", m->text);
          gmd_json_writer_end_object (&w);
        }
      gmd_json_writer_end_array (&w);
      gmd_json_writer_end_object (&w);
    }
  gmd_json_writer_end_array (&w);
  conn_send (conn, gmd_proto_end_result (&w));
}

static void
do_session_truncate (GmdSocketConn *conn, GmdProtoRequest *req, SessionEntry *e)
{
  g_autoptr (GError) error = NULL;
  GmdJsonWriter w;

  if (!gmd_session_truncate (e->session, req->keep, &error))
    {
      send_error (conn, req->id, error);
      return;
    }
  gmd_proto_begin_result (&w, req->id);
  gmd_json_writer_member_uint (&w, "context_used", gmd_session_get_context_used (e->session));
  gmd_json_writer_member_uint (&w, "message_count", gmd_session_get_message_count (e->session));
  conn_send (conn, gmd_proto_end_result (&w));
}

/* ---- cancel, list ------------------------------------------------------------------------- */

static void
send_found (GmdSocketConn *conn, const GmdProtoId *id, gboolean found)
{
  GmdJsonWriter w;

  gmd_proto_begin_result (&w, id);
  gmd_json_writer_member_bool (&w, "found", found);
  conn_send (conn, gmd_proto_end_result (&w));
}

static void
do_cancel (GmdSocketConn *conn, GmdProtoRequest *req)
{
  gboolean found = FALSE;

  if (req->target != NULL)
    {
      g_autofree char *key = gmd_proto_id_key (req->target);
      Pending *p = g_hash_table_lookup (conn->pending, key);

      if (p != NULL && p->request != NULL)
        found = gmd_request_cancel (p->request, GMD_CANCEL_CLIENT);
    }
  else
    {
      GmdRequest *request = gmd_service_find_request (conn->service, req->request_handle);

      if (request != NULL)
        {
          GmdClient *owner = gmd_request_get_client (request);
          if (conn->peer.uid != 0 && (owner == NULL || gmd_client_get_uid (owner) != conn->peer.uid))
            {
              g_autofree char *q = g_strescape (req->request_handle, NULL);
              send_error_literal (conn, req->id, GMD_ERROR_PERMISSION_DENIED, "request",
                                  "request: \"%.64s\" belongs to another user", q);
              return;
            }
          found = gmd_request_cancel (request, GMD_CANCEL_CLIENT);
        }
    }
  send_found (conn, req->id, found);
}

/* This connection's id for request, if it is one of ours. */
static const GmdProtoId *
own_id_of (GmdSocketConn *conn, GmdRequest *request)
{
  GHashTableIter iter;
  gpointer value;

  g_hash_table_iter_init (&iter, conn->pending);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    if (((Pending *) value)->request == request)
      return ((Pending *) value)->id;
  return NULL;
}

static void
do_list (GmdSocketConn *conn, GmdProtoRequest *req)
{
  g_autoptr (GPtrArray) requests = gmd_service_list_requests (conn->service, conn->peer.uid);
  GmdJsonWriter w;

  gmd_proto_begin_result (&w, req->id);
  gmd_json_writer_key (&w, "requests");
  gmd_json_writer_begin_array (&w);
  for (guint i = 0; requests != NULL && i < requests->len; i++)
    {
      GmdRequest *r = g_ptr_array_index (requests, i);
      GmdSession *session = gmd_request_get_session (r);
      const char *session_name = session != NULL ? g_hash_table_lookup (conn->session_names, session) : NULL;
      const GmdProtoId *own = own_id_of (conn, r);
      GmdClient *owner = gmd_request_get_client (r);

      gmd_json_writer_begin_object (&w);
      gmd_json_writer_member_string (&w, "request", gmd_request_get_handle (r));
      gmd_json_writer_member_string (&w, "state", gmd_request_state_name (gmd_request_get_state (r)));
      gmd_json_writer_key (&w, "session");
      if (session_name != NULL)
        gmd_json_writer_string (&w, session_name);
      else
        gmd_json_writer_null (&w);
      if (owner != NULL)
        gmd_json_writer_member_uint (&w, "uid", gmd_client_get_uid (owner));
      if (own != NULL)
        {
          gmd_json_writer_key (&w, "id");
          if (own->is_string)
            gmd_json_writer_string (&w, own->string);
          else
            gmd_json_writer_int (&w, own->number);
        }
      gmd_json_writer_end_object (&w);
    }
  gmd_json_writer_end_array (&w);
  conn_send (conn, gmd_proto_end_result (&w));
}

/* ---- hello, info ----------------------------------------------------------------------------- */

static void
write_limits (GmdJsonWriter *w, GmdService *service)
{
  const GmdConfig *config = gmd_service_get_config (service);
  const GmdServiceInfo *info = gmd_service_get_info (service);
  g_autoptr (GVariant) limits = g_variant_ref_sink (gmd_limits_to_variant (&config->limits,
                                                                           info->context_size));

  gmd_json_writer_key (w, "limits");
  gmd_json_writer_variant (w, limits);
}

static void
do_hello (GmdSocketConn *conn, GmdProtoRequest *req)
{
  GmdJsonWriter w;

  if (conn->hello_done)
    {
      send_error_literal (conn, req->id, GMD_ERROR_INVALID_ARGUMENT, NULL,
                          "hello was already done on this connection");
      return;
    }
  if (req->version != GMD_PROTO_VERSION)
    {
      conn_send (conn, gmd_proto_version_error_line (req->id, req->version));
      return;
    }
  conn->hello_done = TRUE;
  clear_source (&conn->hello_timeout);
  g_debug ("socket: hello from uid %u (pid %d), client %s", (guint) conn->peer.uid,
           (int) conn->peer.pid, req->client != NULL ? req->client : "(unnamed)");

  gmd_proto_begin_result (&w, req->id);
  gmd_json_writer_member_int (&w, "version", GMD_PROTO_VERSION);
  gmd_json_writer_member_string (&w, "server", "gemmad");
  gmd_json_writer_member_string (&w, "server_version", GMD_SERVER_VERSION);
  gmd_json_writer_member_int (&w, "api_version", API_VERSION);
  gmd_json_writer_member_uint (&w, "uid", conn->peer.uid);
  gmd_json_writer_member_bool (&w, "admin", conn->admin);
  write_limits (&w, conn->service);
  conn_send (conn, gmd_proto_end_result (&w));
}

static void
write_strv (GmdJsonWriter *w, const char *key, const char *const *strv)
{
  gmd_json_writer_key (w, key);
  gmd_json_writer_begin_array (w);
  for (guint i = 0; strv != NULL && strv[i] != NULL; i++)
    gmd_json_writer_string (w, strv[i]);
  gmd_json_writer_end_array (w);
}

/* The D-Bus Manager properties, with the socket's snake_case names. */
static void
do_info (GmdSocketConn *conn, GmdProtoRequest *req)
{
  const GmdServiceInfo *info = gmd_service_get_info (conn->service);
  g_autoptr (GVariant) defaults = g_variant_ref_sink (gmd_options_to_variant (gmd_service_get_defaults (conn->service)));
  GmdJsonWriter w;

  gmd_proto_begin_result (&w, req->id);
  gmd_json_writer_member_string (&w, "version", GMD_SERVER_VERSION);
  gmd_json_writer_member_int (&w, "api_version", API_VERSION);
  gmd_json_writer_member_string (&w, "model_name", info->model_name);
  gmd_json_writer_member_string (&w, "architecture", info->architecture);
  gmd_json_writer_member_string (&w, "quantization", info->quantization);
  gmd_json_writer_member_uint (&w, "context_size", info->context_size);
  write_strv (&w, "modalities", info->modalities);
  write_strv (&w, "media_types", info->media_types);
  gmd_json_writer_member_string (&w, "load_state", gmd_load_state_name (info->load_state));
  gmd_json_writer_member_string (&w, "load_error", info->load_error);
  gmd_json_writer_member_uint (&w, "queue_length", info->queue_length);
  gmd_json_writer_member_uint (&w, "active_requests", info->active_requests);
  write_limits (&w, conn->service);
  gmd_json_writer_key (&w, "default_options");
  gmd_json_writer_variant (&w, defaults);
  conn_send (conn, gmd_proto_end_result (&w));
}

/* ---- admin ------------------------------------------------------------------------------- */

static void
load_done (GmdService *service, const GError *error, gpointer user_data)
{
  LoadOp *op = user_data;
  GmdSocketConn *conn = op->conn;
  Pending *p = conn->closed ? NULL : g_hash_table_lookup (conn->pending, op->key);

  if (p != NULL)
    {
      if (error != NULL)
        send_error (conn, p->id, error);
      else
        conn_send (conn, gmd_proto_empty_result_line (p->id));
      g_hash_table_remove (conn->pending, op->key);
      conn_maybe_finish (conn);
    }
  gmd_socket_conn_unref (op->conn);
  g_free (op->key);
  g_free (op);
}

static void
do_load_model (GmdSocketConn *conn, GmdProtoRequest *req)
{
  g_autoptr (GError) error = NULL;
  Pending *p = g_new0 (Pending, 1);
  LoadOp *op = g_new0 (LoadOp, 1);
  g_autofree char *key = gmd_proto_id_key (req->id);

  /* Registered first: the load answers later, and its id stays in use until then. */
  p->conn = conn;
  p->id = gmd_proto_id_copy (req->id);
  p->key = g_strdup (key);
  g_hash_table_insert (conn->pending, p->key, p);
  op->conn = gmd_socket_conn_ref (conn);
  op->key = g_strdup (key);
  if (!gmd_service_load_model (conn->service, req->model_path, req->mmproj_path, req->context_size,
                               req->threads, req->drain, load_done, op, &error))
    {
      /* Not started: the callback will not come. */
      send_error (conn, req->id, error);
      g_hash_table_remove (conn->pending, key);
      gmd_socket_conn_unref (op->conn);
      g_free (op->key);
      g_free (op);
    }
}

static void
do_admin (GmdSocketConn *conn, GmdProtoRequest *req)
{
  g_autoptr (GError) error = NULL;

  if (!conn->admin)
    {
      send_error_literal (conn, req->id, GMD_ERROR_PERMISSION_DENIED, NULL,
                          "%s needs uid 0 or the service's own uid (uid %u may not)",
                          gmd_proto_type_name (req->type), (guint) conn->peer.uid);
      return;
    }
  g_message ("socket: %s by uid %u (pid %d)", gmd_proto_type_name (req->type),
             (guint) conn->peer.uid, (int) conn->peer.pid);
  switch (req->type)
    {
    case GMD_PROTO_RELOAD_CONFIG:
      if (!gmd_service_reload_config (conn->service, &error))
        send_error (conn, req->id, error);
      else
        conn_send (conn, gmd_proto_empty_result_line (req->id));
      return;
    case GMD_PROTO_LOAD_MODEL:
      do_load_model (conn, req);
      return;
    case GMD_PROTO_UNLOAD_MODEL:
      gmd_service_unload_model (conn->service);
      conn_send (conn, gmd_proto_empty_result_line (req->id));
      return;
    default:
      return;
    }
}

/* ---- requests ------------------------------------------------------------------------------ */

static void
dispatch (GmdSocketConn *conn, GmdProtoRequest *req)
{
  SessionEntry *e;

  if (gmd_proto_type_is_admin (req->type))
    {
      do_admin (conn, req);
      return;
    }
  switch (req->type)
    {
    case GMD_PROTO_HELLO:
      do_hello (conn, req);
      break;
    case GMD_PROTO_INFO:
      do_info (conn, req);
      break;
    case GMD_PROTO_GENERATE:
      submit_stream (conn, req, NULL);
      break;
    case GMD_PROTO_SESSION_OPEN:
      do_session_open (conn, req);
      break;
    case GMD_PROTO_SESSION_SEND:
      if ((e = find_session (conn, req)) != NULL)
        submit_stream (conn, req, e->session);
      break;
    case GMD_PROTO_SESSION_HISTORY:
      if ((e = find_session (conn, req)) != NULL)
        do_session_history (conn, req, e);
      break;
    case GMD_PROTO_SESSION_TRUNCATE:
      if ((e = find_session (conn, req)) != NULL)
        do_session_truncate (conn, req, e);
      break;
    case GMD_PROTO_SESSION_CLOSE:
      if ((e = find_session (conn, req)) != NULL)
        {
          /* session_entry_free closes it; a running turn ends with done (session-closed). */
          g_hash_table_remove (conn->sessions, req->session);
          conn_send (conn, gmd_proto_empty_result_line (req->id));
        }
      break;
    case GMD_PROTO_CANCEL:
      do_cancel (conn, req);
      break;
    case GMD_PROTO_LIST:
      do_list (conn, req);
      break;
    default:
      break;
    }
}

static guint32
resolve_token_cap (guint32 cap, guint32 window)
{
  if (window != 0 && (cap == 0 || cap > window))
    return window;
  return cap;
}

/* The configured caps with the token caps resolved against the window (0 = the window),
 * as hello and the Limits property show them, so that max_tokens is checked here. */
static void
current_limits (GmdSocketConn *conn, GmdLimits *out)
{
  guint32 window = gmd_service_get_info (conn->service)->context_size;

  *out = gmd_service_get_config (conn->service)->limits;
  out->max_tokens_limit = resolve_token_cap (out->max_tokens_limit, window);
  out->max_prompt_tokens = resolve_token_cap (out->max_prompt_tokens, window);
}

/* A line to parse, off the main loop when it may be slow. */
typedef struct {
  GmdLine *line;
  GmdLimits limits;
  gboolean expect_hello;
  GmdProtoRequest *req;
  GmdProtoId *id;       /* set when the line had a usable id, even on error */
  GError *error;
} ParseJob;

/* Lines longer than this are parsed in a thread (a 27 MiB base64 image takes a while). */
#define PARSE_IN_THREAD_BYTES (1024u * 1024)

static void
parse_job_free (ParseJob *job)
{
  gmd_line_free (job->line);
  gmd_proto_request_free (job->req);
  gmd_proto_id_free (job->id);
  g_clear_error (&job->error);
  g_free (job);
}

/* Pure: no service, no connection state; safe in any thread. */
static void
parse_job_run (ParseJob *job)
{
  job->req = gmd_proto_parse (job->line->data, job->line->len, job->line->fds, job->line->n_fds,
                              &job->limits, job->expect_hello, &job->id, &job->error);
  /* Media were read: close every fd of the line before answering. */
  gmd_line_close_fds (job->line);
}

/* The parsed line, back on the main loop: answer an error or run the request. */
static void
finish_line (GmdSocketConn *conn, ParseJob *job)
{
  if (job->id != NULL)
    {
      g_autofree char *key = gmd_proto_id_key (job->id);
      if (g_hash_table_contains (conn->pending, key))
        {
          /* Answering with that id would look like the end of the running request. */
          g_autofree char *shown = gmd_proto_id_to_display (job->id);
          send_error_literal (conn, NULL, GMD_ERROR_INVALID_ARGUMENT, "id",
                              "line %" G_GUINT64_FORMAT ": id %s is already used by an unfinished request",
                              job->line->number, shown);
          return;
        }
    }
  if (job->req == NULL)
    {
      if (job->id != NULL)
        send_error (conn, job->id, job->error);
      else
        {
          g_autofree char *field = gmd_error_field (job->error);
          g_autofree char *message = g_strdup_printf ("line %" G_GUINT64_FORMAT ": %s", job->line->number,
                                                      job->error->message);
          conn_send (conn, gmd_proto_error_line_literal (NULL, gmd_error_code_of (job->error), message, field));
        }
      return;
    }
  dispatch (conn, job->req);
}

static void
parse_thread (GTask *task, gpointer source, gpointer task_data, GCancellable *cancellable)
{
  parse_job_run (task_data);
  g_task_return_boolean (task, TRUE);
}

static void process_lines (GmdSocketConn *conn);

static void
parse_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GmdSocketConn *conn = user_data;

  conn->parsing = FALSE;
  if (!conn->closed && !conn->failing)
    {
      finish_line (conn, g_task_get_task_data (G_TASK (result)));
      process_lines (conn);
      conn_update_watch (conn);
      conn_maybe_finish (conn);
    }
  gmd_socket_conn_unref (conn);
}

/* Takes line. A line parsed in a thread sets conn->parsing until it is done. */
static void
handle_line (GmdSocketConn *conn, GmdLine *line)
{
  GmdLimits limits_now;
  const GmdLimits *limits = &limits_now;
  g_autoptr (GmdProtoId) id = NULL;
  g_autofree char *key = NULL;
  ParseJob *job;
  GTask *task;

  current_limits (conn, &limits_now);
  if (line->status == GMD_LINE_TOO_LONG)
    {
      send_error_literal (conn, NULL, GMD_ERROR_LIMIT_EXCEEDED, NULL,
                          "line %" G_GUINT64_FORMAT ": longer than %" G_GUINT64_FORMAT " bytes",
                          line->number, limits->max_line_bytes);
      gmd_line_free (line);
      return;
    }
  if (line->status == GMD_LINE_TOO_MANY_FDS)
    {
      /* The line is not run; its id (if readable and free) says which request failed. */
      gmd_line_close_fds (line);
      id = gmd_proto_peek_id (line->data, line->len);
      if (id != NULL && g_hash_table_contains (conn->pending, (key = gmd_proto_id_key (id))))
        g_clear_pointer (&id, gmd_proto_id_free);
      if (id != NULL)
        send_error_literal (conn, id, GMD_ERROR_LIMIT_EXCEEDED, NULL,
                            "more than %u file descriptors came with this line",
                            limits->max_fds_per_line);
      else
        send_error_literal (conn, NULL, GMD_ERROR_LIMIT_EXCEEDED, NULL,
                            "line %" G_GUINT64_FORMAT ": more than %u file descriptors came with it",
                            line->number, limits->max_fds_per_line);
      gmd_line_free (line);
      return;
    }

  job = g_new0 (ParseJob, 1);
  job->line = line;
  job->limits = limits_now;
  job->expect_hello = !conn->hello_done;
  if (line->n_fds == 0 && line->len <= PARSE_IN_THREAD_BYTES)
    {
      parse_job_run (job);
      finish_line (conn, job);
      parse_job_free (job);
      return;
    }
  /* Reading fds (a file on a slow or hostile filesystem can take any time) and big
   * lines run in a thread; this connection's next lines wait for the result. */
  conn->parsing = TRUE;
  task = g_task_new (NULL, NULL, parse_done, gmd_socket_conn_ref (conn));
  g_task_set_task_data (task, job, (GDestroyNotify) parse_job_free);
  g_task_run_in_thread (task, parse_thread);
  g_object_unref (task);
}

/* ---- input ---------------------------------------------------------------------------------- */

/* Stop taking new requests while this much output waits: a client that pipelines
 * requests but reads slowly is slowed down instead of piling up answers (only streams,
 * which keep producing, can reach MAX_PENDING_OUTPUT). */
#define INPUT_PAUSE_OUTPUT (1024u * 1024)

static gboolean
input_paused (GmdSocketConn *conn)
{
  return conn->out->len - conn->out_offset >= INPUT_PAUSE_OUTPUT;
}

/* Runs the complete lines received so far, until the output backs up. */
static void
process_lines (GmdSocketConn *conn)
{
  GmdLine *line;

  while (!conn->closed && !conn->failing && !conn->parsing && !input_paused (conn) &&
         (line = gmd_line_reader_pop (conn->reader)) != NULL)
    handle_line (conn, line);
}

/* One buffer for all connections: reads run one at a time on the main loop and the line
 * reader copies what it keeps. */
static guint8 read_buf[READ_CHUNK];

/* FALSE when the socket failed. */
static gboolean
read_input (GmdSocketConn *conn)
{
  for (int round = 0; round < READS_PER_DISPATCH && !conn->failing; round++)
    {
      struct iovec iov = { read_buf, sizeof read_buf };
      struct msghdr msg = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = conn->cmsg_buf,
        .msg_controllen = conn->cmsg_size,
      };
      g_autoptr (GArray) fds = g_array_new (FALSE, FALSE, sizeof (int));
      ssize_t n = recvmsg (conn->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);

      if (n < 0)
        {
          if (errno == EINTR)
            continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK)
            break;
          return FALSE;
        }
      for (struct cmsghdr *c = CMSG_FIRSTHDR (&msg); c != NULL; c = CMSG_NXTHDR (&msg, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
          {
            gsize count = (c->cmsg_len - CMSG_LEN (0)) / sizeof (int);
            for (gsize i = 0; i < count; i++)
              {
                int fd;
                memcpy (&fd, CMSG_DATA (c) + i * sizeof (int), sizeof (int));
                g_array_append_val (fds, fd);
              }
          }
      if (n == 0)
        {
          /* End of input without a hang-up: the peer half-closed ("no more requests"). */
          for (guint i = 0; i < fds->len; i++)
            close (g_array_index (fds, int, i));
          gmd_line_reader_finish (conn->reader);
          conn->read_eof = TRUE;
          process_lines (conn);
          break;
        }
      gmd_line_reader_feed (conn->reader, (const char *) read_buf, (gsize) n,
                            (const int *) (void *) fds->data, fds->len,
                            (msg.msg_flags & MSG_CTRUNC) != 0);
      process_lines (conn);
      if (conn->parsing || gmd_line_reader_get_n_lines (conn->reader) > 0)
        break;   /* the rest waits for the parse thread or for the output to drain */
    }
  return TRUE;
}

/* ---- the fd source ------------------------------------------------------------------------ */

typedef struct {
  GSource source;
  GmdSocketConn *conn;
} ConnSource;

static void
conn_update_watch (GmdSocketConn *conn)
{
  GIOCondition cond = G_IO_HUP | G_IO_ERR;
  gsize unsent = conn->out->len - conn->out_offset;

  if (conn->source == NULL || conn->closed)
    return;
  if (!conn->read_eof && !conn->failing && !conn->parsing && !input_paused (conn) &&
      gmd_line_reader_get_n_lines (conn->reader) == 0)
    cond |= G_IO_IN;
  if (unsent > 0)
    cond |= G_IO_OUT;
  g_source_modify_unix_fd (conn->source, conn->fd_tag, cond);
}

/* After a half-close: close once every request has ended and the output is written. */
static void
conn_maybe_finish (GmdSocketConn *conn)
{
  if (!conn->read_eof || conn->closed || conn->failing || conn->close_idle != NULL)
    return;
  if (g_hash_table_size (conn->pending) > 0 || conn->out_offset < conn->out->len ||
      conn->parsing || gmd_line_reader_get_n_lines (conn->reader) > 0)
    return;
  /* Deferred: this may run inside a service callback. */
  conn->close_idle = attach_source (g_idle_source_new (), close_idle_cb, conn);
}

static void
conn_handle_io (GmdSocketConn *conn, GIOCondition cond)
{
  if (cond & G_IO_ERR)
    {
      conn_close_and_notify (conn);
      return;
    }
  /* A full close by the peer (a half-close shows as end of input without HUP): nobody is
   * left to answer, so its requests are abandoned. */
  if (cond & G_IO_HUP)
    {
      conn->failing = TRUE;   /* nothing can be written any more */
      conn_close_and_notify (conn);
      return;
    }
  if ((cond & G_IO_OUT) && !conn->failing && !flush_output (conn))
    {
      conn->failing = TRUE;
      conn_close_and_notify (conn);
      return;
    }
  /* Lines held back while the output was backed up go first. */
  process_lines (conn);
  if ((cond & G_IO_IN) && !conn->read_eof && !conn->failing && !conn->parsing &&
      gmd_line_reader_get_n_lines (conn->reader) == 0 && !read_input (conn))
    {
      conn->failing = TRUE;
      conn_close_and_notify (conn);
      return;
    }
  if (conn->closed)
    return;
  if (conn->failing)
    {
      conn_close_and_notify (conn);
      return;
    }
  conn_update_watch (conn);
  conn_maybe_finish (conn);
}

static gboolean
conn_source_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  ConnSource *cs = (ConnSource *) source;
  GmdSocketConn *conn = gmd_socket_conn_ref (cs->conn);

  conn_handle_io (conn, g_source_query_unix_fd (source, conn->fd_tag));
  gmd_socket_conn_unref (conn);
  return G_SOURCE_CONTINUE;
}

static GSourceFuncs conn_source_funcs = {
  .dispatch = conn_source_dispatch,
};

static gboolean
hello_timeout_cb (gpointer data)
{
  GmdSocketConn *conn = data;

  clear_source (&conn->hello_timeout);
  if (!conn->hello_done && !conn->closed)
    {
      send_error_literal (conn, NULL, GMD_ERROR_INVALID_ARGUMENT, NULL,
                          "no hello within %d seconds; closing", HELLO_TIMEOUT_SECONDS);
      conn_close_and_notify (conn);
    }
  return G_SOURCE_REMOVE;
}

GmdSocketConn *
gmd_socket_conn_new (GmdService *service, int fd, const GmdPeerCred *peer, gboolean admin,
                     GHashTable *session_names, GmdSocketConnClosedFunc closed, gpointer user_data)
{
  const GmdLimits *limits = &gmd_service_get_config (service)->limits;
  GmdSocketConn *conn = g_new0 (GmdSocketConn, 1);
  g_autofree char *client_key = g_strdup_printf ("uid:%u", (guint) peer->uid);
  g_autoptr (GMainContext) context = g_main_context_ref_thread_default ();

  conn->ref_count = 1;
  conn->service = service;
  conn->fd = fd;
  conn->peer = *peer;
  conn->admin = admin;
  conn->session_names = session_names;
  conn->closed_func = closed;
  conn->closed_data = user_data;
  conn->client = gmd_service_get_client (service, client_key, peer->uid);

  conn->reader = gmd_line_reader_new (limits->max_line_bytes, limits->max_fds_per_line);
  /* Room for the fds of one line, plus credentials in case the socket passes them. */
  conn->cmsg_size = CMSG_SPACE (sizeof (int) * MAX (limits->max_fds_per_line, 1)) +
                    CMSG_SPACE (sizeof (struct ucred));
  conn->cmsg_buf = g_malloc0 (conn->cmsg_size);

  conn->pending = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, (GDestroyNotify) pending_free);
  conn->sessions = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                          (GDestroyNotify) session_entry_free);
  conn->out = g_byte_array_new ();

  conn->source = g_source_new (&conn_source_funcs, sizeof (ConnSource));
  ((ConnSource *) conn->source)->conn = conn;
  g_source_set_name (conn->source, "gemmad socket connection");
  conn->fd_tag = g_source_add_unix_fd (conn->source, fd, G_IO_IN | G_IO_HUP | G_IO_ERR);
  g_source_attach (conn->source, context);

  conn->hello_timeout = attach_source (g_timeout_source_new_seconds (HELLO_TIMEOUT_SECONDS),
                                       hello_timeout_cb, conn);
  g_debug ("socket: connection from uid %u gid %u pid %d%s", (guint) peer->uid, (guint) peer->gid,
           (int) peer->pid, admin ? " (admin)" : "");
  return conn;
}
