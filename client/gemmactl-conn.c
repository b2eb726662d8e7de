/* gemmactl-conn.c — the socket connection to gemmad (docs/protocol.md §1–§5).
 *
 * The socket is non-blocking. Received bytes are cut into lines, each parsed into a
 * JsonObject and queued in the inbox, then dispatched in order to the handler of the
 * request whose id it carries. Dispatching pops one message at a time, so a handler may
 * itself wait for a reply (gemmactl_conn_call) without reordering anything. */
#include "gemmactl-conn.h"
#include "gemmactl.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PROTOCOL_VERSION 1
/* Server lines are small except session histories; this only bounds a broken server. */
#define MAX_SERVER_LINE (64u << 20)
#define READ_CHUNK 65536

typedef struct {
  GemmactlMessageFunc func;
  gpointer user_data;
} Pending;

struct _GemmactlConn {
  int fd;
  char *path;
  GByteArray *inbuf;
  gsize scanned;            /* bytes of inbuf known to hold no newline */
  GQueue inbox;             /* JsonObject*, parsed and not yet dispatched */
  GHashTable *pending;      /* id → Pending* */
  gint64 next_id;
  GError *read_error;       /* end of input seen by the reader: lost, or not the protocol */
  GError *broken;
  JsonObject *hello;
  GSource *watch;
  GemmactlMessageFunc event_func;
  GemmactlFatalFunc fatal_func;
  gpointer watch_data;
};

static void
conn_break (GemmactlConn *conn, GError *error)
{
  if (conn->broken != NULL) {
    g_error_free (error);
    return;
  }
  conn->broken = error;
  if (conn->watch != NULL) {
    g_source_destroy (conn->watch);
    g_clear_pointer (&conn->watch, g_source_unref);
  }
  if (conn->fatal_func != NULL)
    conn->fatal_func (conn, conn->broken, conn->watch_data);
}

static void
conn_break_lost (GemmactlConn *conn, const char *why)
{
  GError *e = NULL;
  gemmactl_set_error (&e, GEMMACTL_EXIT_CONNECTION, "connection_lost", NULL,
                      "connection to gemmad lost: %s", why);
  conn_break (conn, e);
}

/* The reader stops at the first bad line or the end of input; the messages before it are
 * still dispatched, then the connection breaks (conn_process). */
static void
conn_stop_reading (GemmactlConn *conn, GError *error)
{
  if (conn->read_error != NULL)
    g_error_free (error);
  else
    conn->read_error = error;
}

static void
conn_read_lost (GemmactlConn *conn, const char *why)
{
  GError *e = NULL;
  gemmactl_set_error (&e, GEMMACTL_EXIT_CONNECTION, "connection_lost", NULL,
                      "connection to gemmad lost: %s", why);
  conn_stop_reading (conn, e);
}

static void
conn_read_protocol_error (GemmactlConn *conn, const char *format, ...) G_GNUC_PRINTF (2, 3);

static void
conn_read_protocol_error (GemmactlConn *conn, const char *format, ...)
{
  va_list ap;
  va_start (ap, format);
  g_autofree char *message = g_strdup_vprintf (format, ap);
  va_end (ap);
  GError *e = NULL;
  gemmactl_set_error (&e, GEMMACTL_EXIT_FAILED, "protocol_error", NULL, "%s", message);
  conn_stop_reading (conn, e);
}

/* ---- receiving ---------------------------------------------------------------------- */

static gboolean
message_id (JsonObject *message, gint64 *id, gboolean *is_null)
{
  JsonNode *node = json_object_get_member (message, "id");
  *is_null = node == NULL || JSON_NODE_HOLDS_NULL (node);
  if (*is_null)
    return FALSE;
  return gemmactl_json_int (message, "id", id);
}

static void
conn_dispatch (GemmactlConn *conn, JsonObject *message)
{
  gint64 id = 0;
  gboolean is_null = FALSE;
  const char *event = gemmactl_json_string (message, "event");

  if (!message_id (message, &id, &is_null)) {
    if (!is_null)
      return;  /* not one of our ids: nothing waits for it */
    JsonObject *error_object = gemmactl_json_object (message, "error");
    if (error_object != NULL) {
      /* An error tied to no request (a line we sent was refused as a whole, or the
       * connection itself was refused): whatever we wait for will not come. */
      conn_break (conn, gemmactl_error_from_json (error_object));
      return;
    }
    if (event != NULL && conn->event_func != NULL)
      conn->event_func (conn, message, FALSE, conn->watch_data);
    return;
  }

  Pending *pending = g_hash_table_lookup (conn->pending, &id);
  if (pending == NULL)
    return;
  gboolean terminal = json_object_has_member (message, "result")
                      || json_object_has_member (message, "error")
                      || g_strcmp0 (event, "done") == 0;
  if (!terminal && event == NULL)
    return;  /* a kind of message this client does not know */
  Pending call = *pending;
  if (terminal)
    g_hash_table_remove (conn->pending, &id);
  call.func (conn, message, terminal, call.user_data);
}

/* Dispatches queued messages; after the last one, the reader's end (a closed connection,
 * a bad line) breaks the connection, so that a final "done" is still delivered first. */
static void
conn_process_until (GemmactlConn *conn, const gboolean *stop)
{
  JsonObject *message;
  while (conn->broken == NULL && !(stop != NULL && *stop)
         && (message = g_queue_pop_head (&conn->inbox)) != NULL) {
    conn_dispatch (conn, message);
    json_object_unref (message);
  }
  if (conn->broken == NULL && conn->read_error != NULL && g_queue_is_empty (&conn->inbox))
    conn_break (conn, g_error_copy (conn->read_error));
}

static void
conn_process (GemmactlConn *conn)
{
  conn_process_until (conn, NULL);
}

static void
conn_parse_line (GemmactlConn *conn, const char *line, gsize len)
{
  if (len > 0 && line[len - 1] == '\r')
    len--;
  if (len == 0)
    return;
  g_autoptr (JsonParser) parser = json_parser_new_immutable ();
  g_autoptr (GError) error = NULL;
  if (!g_utf8_validate (line, (gssize) len, NULL)) {
    conn_read_protocol_error (conn, "gemmad sent a line that is not valid UTF-8");
    return;
  }
  /* quote the start of the line, cut at a character boundary */
  int shown = (int) MIN (len, 60);
  while (shown > 0 && (gsize) shown < len && (line[shown] & 0xC0) == 0x80)
    shown--;
  const char *more = len > 60 ? "…" : "";
  if (!json_parser_load_from_data (parser, line, (gssize) len, &error)) {
    conn_read_protocol_error (conn, "gemmad sent a line that is not JSON (%s): %.*s%s",
                              error->message, shown, line, more);
    return;
  }
  JsonNode *root = json_parser_get_root (parser);
  if (root == NULL || JSON_NODE_TYPE (root) != JSON_NODE_OBJECT) {
    conn_read_protocol_error (conn, "gemmad sent a JSON line that is not an object: %.*s%s",
                              shown, line, more);
    return;
  }
  g_queue_push_tail (&conn->inbox, json_node_dup_object (root));
}

static void
conn_split_lines (GemmactlConn *conn)
{
  gsize start = 0;
  guint8 *data = conn->inbuf->data;
  gsize len = conn->inbuf->len;
  for (gsize i = conn->scanned; i < len && conn->read_error == NULL; i++) {
    if (data[i] != '\n')
      continue;
    conn_parse_line (conn, (const char *) data + start, i - start);
    start = i + 1;
  }
  if (conn->read_error != NULL)
    return;
  g_byte_array_remove_range (conn->inbuf, 0, (guint) start);
  conn->scanned = conn->inbuf->len;
  if (conn->inbuf->len > MAX_SERVER_LINE)
    conn_read_protocol_error (conn, "gemmad sent a line longer than %u bytes", MAX_SERVER_LINE);
}

/* Reads everything available without blocking into the inbox. */
static void
conn_read (GemmactlConn *conn)
{
  guint8 buf[READ_CHUNK];
  while (conn->broken == NULL && conn->read_error == NULL) {
    ssize_t n = recv (conn->fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      g_byte_array_append (conn->inbuf, buf, (guint) n);
      conn_split_lines (conn);
    } else if (n == 0) {
      conn_read_lost (conn, "gemmad closed the connection");
    } else if (errno == EINTR) {
      continue;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      break;
    } else {
      conn_read_lost (conn, g_strerror (errno));
    }
  }
}

/* Waits until *done, without the main context: for replies and the handshake. Messages
 * after the awaited one stay queued for the main-context watch, so that the caller sees
 * its reply before what followed it (e.g. a session_closed right after session.open).
 * deadline is in g_get_monotonic_time() units; 0 = none. */
static gboolean
conn_wait (GemmactlConn *conn, const gboolean *done, gint64 deadline, GError **error)
{
  for (;;) {
    conn_process_until (conn, done);
    if (*done) {
      if (conn->watch != NULL && (!g_queue_is_empty (&conn->inbox) || conn->read_error != NULL))
        g_source_set_ready_time (conn->watch, 0);
      return TRUE;
    }
    if (conn->broken != NULL) {
      g_propagate_error (error, g_error_copy (conn->broken));
      return FALSE;
    }
    int timeout_ms = -1;
    if (deadline > 0) {
      gint64 left = deadline - g_get_monotonic_time ();
      if (left <= 0) {
        gemmactl_set_error (error, GEMMACTL_EXIT_CONNECTION, "timed_out", NULL,
                            "gemmad at %s did not answer in time", conn->path);
        return FALSE;
      }
      timeout_ms = (int) MIN ((left + 999) / 1000, G_MAXINT);
    }
    struct pollfd p = { .fd = conn->fd, .events = POLLIN };
    int r = poll (&p, 1, timeout_ms);
    if (r < 0 && errno != EINTR) {
      conn_break_lost (conn, g_strerror (errno));
      continue;
    }
    if (r > 0)
      conn_read (conn);
  }
}

/* ---- sending ------------------------------------------------------------------------ */

/* One sendmsg carries the whole line and all its fds (protocol §5); only if the kernel
 * takes part of it is the rest sent, without fds. */
static gboolean
conn_write_line (GemmactlConn *conn, const char *data, gsize len, const int *fds, guint n_fds,
                 GError **error)
{
  g_autofree char *control = NULL;
  gsize control_len = 0;
  if (n_fds > 0) {
    control_len = CMSG_SPACE (n_fds * sizeof (int));
    control = g_malloc0 (control_len);
  }
  gsize sent = 0;
  while (sent < len) {
    struct iovec iov = { .iov_base = (char *) data + sent, .iov_len = len - sent };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (sent == 0 && n_fds > 0) {
      msg.msg_control = control;
      msg.msg_controllen = control_len;
      struct cmsghdr *c = CMSG_FIRSTHDR (&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN (n_fds * sizeof (int));
      memcpy (CMSG_DATA (c), fds, n_fds * sizeof (int));
    }
    ssize_t n = sendmsg (conn->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += (gsize) n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
      struct pollfd p = { .fd = conn->fd, .events = POLLOUT };
      if (poll (&p, 1, -1) < 0 && errno != EINTR) {
        conn_break_lost (conn, g_strerror (errno));
        break;
      }
      continue;
    }
    /* The server may have said why it closed (e.g. permission_denied): prefer that. */
    int saved = errno;
    conn_read (conn);
    conn_process (conn);
    conn_break_lost (conn, g_strerror (saved));
    break;
  }
  if (conn->broken != NULL) {
    g_propagate_error (error, g_error_copy (conn->broken));
    return FALSE;
  }
  return TRUE;
}

static void
copy_member (JsonObject *from, const char *name, JsonNode *node, gpointer user_data)
{
  json_object_set_member (user_data, name, json_node_copy (node));
}

gint64
gemmactl_conn_send (GemmactlConn *conn, const char *type, JsonObject *fields,
                    const int *fds, guint n_fds, GemmactlMessageFunc func,
                    gpointer user_data, GError **error)
{
  if (conn->broken != NULL) {
    g_propagate_error (error, g_error_copy (conn->broken));
    return -1;
  }
  gint64 id = conn->next_id++;
  g_autoptr (JsonObject) request = json_object_new ();
  json_object_set_string_member (request, "type", type);
  json_object_set_int_member (request, "id", id);
  if (fields != NULL)
    json_object_foreach_member (fields, copy_member, request);

  g_autoptr (JsonNode) root = json_node_init_object (json_node_alloc (), request);
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  json_generator_set_root (gen, root);
  gsize len = 0;
  g_autofree char *text = json_generator_to_data (gen, &len);
  g_autofree char *line = g_malloc (len + 1);
  memcpy (line, text, len);
  line[len] = '\n';

  if (func != NULL) {
    Pending *pending = g_new (Pending, 1);
    pending->func = func;
    pending->user_data = user_data;
    g_hash_table_insert (conn->pending, g_memdup2 (&id, sizeof id), pending);
  }
  if (!conn_write_line (conn, line, len + 1, fds, n_fds, error)) {
    g_hash_table_remove (conn->pending, &id);
    return -1;
  }
  return id;
}

void
gemmactl_conn_forget (GemmactlConn *conn, gint64 id)
{
  g_hash_table_remove (conn->pending, &id);
}

typedef struct {
  gboolean done;
  JsonObject *result;
  GError *error;
} CallState;

static void
on_call_reply (GemmactlConn *conn, JsonObject *message, gboolean terminal, gpointer user_data)
{
  CallState *state = user_data;
  if (!terminal)
    return;  /* a one-reply request has no events; ignore any */
  state->done = TRUE;
  JsonObject *error_object = gemmactl_json_object (message, "error");
  JsonObject *result = gemmactl_json_object (message, "result");
  if (error_object != NULL)
    state->error = gemmactl_error_from_json (error_object);
  else if (result != NULL)
    state->result = json_object_ref (result);
  else
    gemmactl_set_error (&state->error, GEMMACTL_EXIT_FAILED, "protocol_error", NULL,
                        "gemmad answered with a stream where a result was expected");
}

static JsonObject *
conn_call_until (GemmactlConn *conn, const char *type, JsonObject *fields, gint64 deadline,
                 GError **error)
{
  CallState state = { 0 };
  gint64 id = gemmactl_conn_send (conn, type, fields, NULL, 0, on_call_reply, &state, error);
  if (id < 0)
    return NULL;
  if (!conn_wait (conn, &state.done, deadline, error)) {
    gemmactl_conn_forget (conn, id);
    return NULL;
  }
  if (state.error != NULL) {
    g_propagate_error (error, state.error);
    return NULL;
  }
  return state.result;
}

JsonObject *
gemmactl_conn_call (GemmactlConn *conn, const char *type, JsonObject *fields, GError **error)
{
  return conn_call_until (conn, type, fields, 0, error);
}

/* ---- main-context watch ------------------------------------------------------------- */

static gboolean
on_socket_ready (int fd, GIOCondition condition, gpointer user_data)
{
  GemmactlConn *conn = user_data;
  g_source_set_ready_time (conn->watch, -1);
  conn_read (conn);
  conn_process (conn);
  return G_SOURCE_CONTINUE;
}

void
gemmactl_conn_watch (GemmactlConn *conn, GemmactlMessageFunc event_func,
                     GemmactlFatalFunc fatal_func, gpointer user_data)
{
  conn->event_func = event_func;
  conn->fatal_func = fatal_func;
  conn->watch_data = user_data;
  if (conn->watch != NULL || conn->broken != NULL)
    return;
  conn->watch = g_unix_fd_source_new (conn->fd, G_IO_IN | G_IO_HUP | G_IO_ERR);
  g_source_set_callback (conn->watch, G_SOURCE_FUNC (on_socket_ready), conn, NULL);
  g_source_attach (conn->watch, g_main_context_get_thread_default ());
  /* Messages read during earlier waits are dispatched from the loop, not lost. */
  if (!g_queue_is_empty (&conn->inbox) || conn->read_error != NULL)
    g_source_set_ready_time (conn->watch, 0);
}

const GError *
gemmactl_conn_get_error (GemmactlConn *conn)
{
  return conn->broken;
}

/* ---- connecting --------------------------------------------------------------------- */

/* Connects within deadline; returns the fd or -1 with errno set (ETIMEDOUT on timeout). */
static int
connect_path (const char *path, gint64 deadline)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  if (strlen (path) >= sizeof addr.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  strcpy (addr.sun_path, path);
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return -1;
  for (;;) {
    if (connect (fd, (struct sockaddr *) &addr, sizeof addr) == 0)
      return fd;
    int err = errno;
    if (err == EINTR)
      continue;
    if (err != EAGAIN && err != EINPROGRESS) {
      close (fd);
      errno = err;
      return -1;
    }
    /* A full listen backlog: the service is busy accepting (or still starting under
     * socket activation). Retry until the deadline. */
    gint64 left = deadline > 0 ? deadline - g_get_monotonic_time () : G_MAXINT64;
    if (left <= 0) {
      close (fd);
      errno = ETIMEDOUT;
      return -1;
    }
    g_usleep ((gulong) MIN (left, 50000));
  }
}

static GemmactlConn *
conn_new (int fd, const char *path)
{
  GemmactlConn *conn = g_new0 (GemmactlConn, 1);
  conn->fd = fd;
  conn->path = g_strdup (path);
  conn->inbuf = g_byte_array_new ();
  g_queue_init (&conn->inbox);
  conn->pending = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, g_free);
  return conn;
}

static gboolean
conn_hello (GemmactlConn *conn, gint64 deadline, GError **error)
{
  g_autoptr (JsonObject) fields = json_object_new ();
  json_object_set_int_member (fields, "version", PROTOCOL_VERSION);
  json_object_set_string_member (fields, "client", "gemmactl/" GEMMACTL_VERSION);
  g_autoptr (GError) local = NULL;
  g_autoptr (JsonObject) result = conn_call_until (conn, "hello", fields, deadline, &local);
  if (result == NULL) {
    if (g_strcmp0 (gemmactl_error_code (local), "invalid_argument") == 0)
      gemmactl_set_error (error, GEMMACTL_EXIT_FAILED, "invalid_argument", NULL,
                          "gemmad refused the handshake: %s", local->message);
    else
      g_propagate_error (error, g_steal_pointer (&local));
    return FALSE;
  }
  gint64 version = 0;
  if (!gemmactl_json_int (result, "version", &version) || version != PROTOCOL_VERSION) {
    gemmactl_set_error (error, GEMMACTL_EXIT_FAILED, "protocol_error", NULL,
                        "gemmad at %s answered the handshake without protocol version %d",
                        conn->path, PROTOCOL_VERSION);
    return FALSE;
  }
  conn->hello = g_steal_pointer (&result);
  return TRUE;
}

GemmactlConn *
gemmactl_conn_open (GError **error)
{
  const char *path = gemmactl_globals.socket_path;
  guint timeout_seconds = (guint) gemmactl_globals.timeout_seconds;
  gint64 deadline = timeout_seconds > 0
                    ? g_get_monotonic_time () + (gint64) timeout_seconds * G_USEC_PER_SEC
                    : 0;
  g_autoptr (GPtrArray) candidates = g_ptr_array_new_with_free_func (g_free);
  const char *env = g_getenv ("GEMMAD_SOCKET");
  if (path != NULL && *path != '\0') {
    g_ptr_array_add (candidates, g_strdup (path));
  } else if (env != NULL && *env != '\0') {
    g_ptr_array_add (candidates, g_strdup (env));
  } else {
    const char *runtime_dir = g_getenv ("XDG_RUNTIME_DIR");
    if (runtime_dir != NULL && *runtime_dir != '\0')
      g_ptr_array_add (candidates, g_build_filename (runtime_dir, "gemmad", "gemmad.sock", NULL));
    g_ptr_array_add (candidates, g_strdup ("/run/gemmad/gemmad.sock"));
  }

  int fd = -1;
  const char *connected = NULL;
  g_autoptr (GString) failures = g_string_new (NULL);
  gboolean all_absent = TRUE;
  for (guint i = 0; i < candidates->len; i++) {
    const char *candidate = candidates->pdata[i];
    fd = connect_path (candidate, deadline);
    if (fd >= 0) {
      connected = candidate;
      break;
    }
    int err = errno;
    g_string_append_printf (failures, "%s%s: %s", failures->len > 0 ? "; " : "", candidate,
                            err == ETIMEDOUT ? "timed out" : g_strerror (err));
    /* A socket that is missing or has nobody listening: try the next place. Any other
     * failure (permissions, timeout) is the answer. */
    if (err != ENOENT && err != ECONNREFUSED) {
      all_absent = FALSE;
      break;
    }
  }
  if (fd < 0) {
    gemmactl_set_error (error, GEMMACTL_EXIT_CONNECTION, "connect_failed", NULL,
                        "cannot connect to gemmad: %s%s", failures->str,
                        all_absent ? " (is gemmad running?)" : "");
    return NULL;
  }

  g_autoptr (GemmactlConn) conn = conn_new (fd, connected);
  if (!conn_hello (conn, deadline, error))
    return NULL;
  return g_steal_pointer (&conn);
}

void
gemmactl_conn_free (GemmactlConn *conn)
{
  if (conn == NULL)
    return;
  if (conn->watch != NULL) {
    g_source_destroy (conn->watch);
    g_source_unref (conn->watch);
  }
  if (conn->fd >= 0)
    close (conn->fd);
  g_queue_clear_full (&conn->inbox, (GDestroyNotify) json_object_unref);
  g_hash_table_unref (conn->pending);
  g_byte_array_unref (conn->inbuf);
  g_clear_pointer (&conn->hello, json_object_unref);
  g_clear_error (&conn->broken);
  g_clear_error (&conn->read_error);
  g_free (conn->path);
  g_free (conn);
}

const char *
gemmactl_conn_get_path (GemmactlConn *conn)
{
  return conn->path;
}

JsonObject *
gemmactl_conn_get_hello (GemmactlConn *conn)
{
  return conn->hello;
}

gint64
gemmactl_conn_get_limit (GemmactlConn *conn, const char *name, gint64 fallback)
{
  gint64 value = 0;
  if (gemmactl_json_int (gemmactl_json_object (conn->hello, "limits"), name, &value))
    return value;
  return fallback;
}
