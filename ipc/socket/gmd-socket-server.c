/* gmd-socket-server.c — the listening socket: creating it (or taking systemd's), accepting,
 * checking peer credentials and per-uid connection counts (docs/protocol.md §1, §6). */
#include "gmd-socket-server.h"

#include <errno.h>
#include <glib-unix.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "gmd-proto.h"
#include "gmd-socket-conn.h"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59   /* Linux ≥ 4.13 */
#endif

#define ACCEPTS_PER_DISPATCH 32
#define ACCEPT_PAUSE_MS 1000
/* A refused peer gets its error line and an end of stream; the fd stays open a little so
 * that the peer's first write (its hello) does not fail with EPIPE before it reads why. */
#define REFUSAL_LINGER_MS 2000
#define MAX_LINGERING_REFUSALS 64

struct _GmdSocketServer {
  GmdService *service;
  gboolean per_user;
  uid_t service_uid;

  int listen_fd;
  GSource *accept_source;
  GSource *accept_retry_source;
  char *created_path;          /* a socket file we bound (unlinked when we stop) */
  dev_t created_dev;
  ino_t created_ino;

  GPtrArray *connections;      /* GmdSocketConn*, a reference each */
  GPtrArray *refusals;         /* Refusal*: refused fds waiting to be closed */
  GHashTable *per_uid;         /* uid → open connections */
  GHashTable *session_names;   /* GmdSession* → "s1" (owned by the connections) */
};

typedef struct {
  GmdSocketServer *server;
  int fd;
  GSource *timeout;
} Refusal;

static void
refusal_free (Refusal *r)
{
  g_source_destroy (r->timeout);
  g_source_unref (r->timeout);
  close (r->fd);
  g_free (r);
}

static gboolean
refusal_timeout_cb (gpointer data)
{
  Refusal *r = data;

  /* Frees r (and destroys this source, which GLib allows while it dispatches). */
  g_ptr_array_remove_fast (r->server->refusals, r);
  return G_SOURCE_REMOVE;
}

/* Writes line to a peer that may not stay and closes its connection soon. Never blocks;
 * never reads what the peer sends (its fds are dropped with the socket). */
static void
refuse (GmdSocketServer *server, int fd, const char *line)
{
  g_autoptr (GMainContext) context = NULL;
  Refusal *r;

  (void) send (fd, line, strlen (line), MSG_NOSIGNAL | MSG_DONTWAIT);
  shutdown (fd, SHUT_WR);
  if (server->refusals->len >= MAX_LINGERING_REFUSALS)
    {
      close (fd);
      return;
    }
  r = g_new0 (Refusal, 1);
  r->server = server;
  r->fd = fd;
  r->timeout = g_timeout_source_new (REFUSAL_LINGER_MS);
  g_source_set_callback (r->timeout, refusal_timeout_cb, r, NULL);
  context = g_main_context_ref_thread_default ();
  g_source_attach (r->timeout, context);
  g_ptr_array_add (server->refusals, r);
}

GmdSocketServer *
gmd_socket_server_new (GmdService *service, gboolean per_user)
{
  GmdSocketServer *server = g_new0 (GmdSocketServer, 1);

  server->service = service;
  server->per_user = per_user;
  server->service_uid = geteuid ();
  server->listen_fd = -1;
  server->connections = g_ptr_array_new ();
  server->refusals = g_ptr_array_new_with_free_func ((GDestroyNotify) refusal_free);
  server->per_uid = g_hash_table_new (g_direct_hash, g_direct_equal);
  server->session_names = g_hash_table_new (g_direct_hash, g_direct_equal);
  return server;
}

guint
gmd_socket_server_get_n_connections (GmdSocketServer *server)
{
  return server->connections->len;
}

/* ---- who may connect ------------------------------------------------------------------- */

static gboolean
parse_id (const char *s, guint32 *out)
{
  guint64 v;

  if (!g_ascii_string_to_unsigned (s, 10, 0, G_MAXUINT32 - 1, &v, NULL))
    return FALSE;
  *out = (guint32) v;
  return TRUE;
}

static gboolean
user_matches (const char *entry, uid_t uid)
{
  struct passwd pw, *found = NULL;
  char buf[16384];
  guint32 id;

  if (parse_id (entry, &id))
    return id == uid;
  return getpwnam_r (entry, &pw, buf, sizeof buf, &found) == 0 && found != NULL && found->pw_uid == uid;
}

static gboolean
group_id (const char *entry, gid_t *out)
{
  struct group gr, *found = NULL;
  char buf[16384];
  guint32 id;

  if (parse_id (entry, &id))
    {
      *out = id;
      return TRUE;
    }
  if (getgrnam_r (entry, &gr, buf, sizeof buf, &found) != 0 || found == NULL)
    return FALSE;
  *out = found->gr_gid;
  return TRUE;
}

/* The peer's supplementary groups (SO_PEERGROUPS), plus its primary group. */
static GArray *
peer_groups (int fd, gid_t primary)
{
  GArray *groups = g_array_new (FALSE, FALSE, sizeof (gid_t));
  socklen_t len = 64 * sizeof (gid_t);

  for (int attempt = 0; attempt < 4; attempt++)
    {
      g_array_set_size (groups, len / sizeof (gid_t));
      if (getsockopt (fd, SOL_SOCKET, SO_PEERGROUPS, groups->data, &len) == 0)
        {
          g_array_set_size (groups, len / sizeof (gid_t));
          break;
        }
      g_array_set_size (groups, 0);
      if (errno != ERANGE)
        break;
    }
  g_array_append_val (groups, primary);
  return groups;
}

static gboolean
peer_allowed (GmdSocketServer *server, int fd, const struct ucred *cred)
{
  const GmdConfig *config = gmd_service_get_config (server->service);
  gboolean users_set = config->allowed_users != NULL && config->allowed_users[0] != NULL;
  gboolean groups_set = config->allowed_groups != NULL && config->allowed_groups[0] != NULL;

  if (server->per_user)
    return cred->uid == server->service_uid;
  if (!users_set && !groups_set)
    return TRUE;
  if (cred->uid == 0 || cred->uid == server->service_uid)
    return TRUE;
  for (guint i = 0; users_set && config->allowed_users[i] != NULL; i++)
    if (user_matches (config->allowed_users[i], cred->uid))
      return TRUE;
  if (groups_set)
    {
      g_autoptr (GArray) groups = peer_groups (fd, cred->gid);

      for (guint i = 0; config->allowed_groups[i] != NULL; i++)
        {
          gid_t gid;
          if (!group_id (config->allowed_groups[i], &gid))
            continue;
          for (guint k = 0; k < groups->len; k++)
            if (g_array_index (groups, gid_t, k) == gid)
              return TRUE;
        }
    }
  return FALSE;
}

/* ---- connections ---------------------------------------------------------------------------- */

static void
uid_count_add (GmdSocketServer *server, uid_t uid, int delta)
{
  gpointer key = GUINT_TO_POINTER ((guint) uid);
  guint n = GPOINTER_TO_UINT (g_hash_table_lookup (server->per_uid, key));

  n = (guint) ((int) n + delta);
  if (n == 0)
    g_hash_table_remove (server->per_uid, key);
  else
    g_hash_table_insert (server->per_uid, key, GUINT_TO_POINTER (n));
}

static void
conn_closed (GmdSocketConn *conn, gpointer user_data)
{
  GmdSocketServer *server = user_data;

  if (g_ptr_array_remove_fast (server->connections, conn))
    {
      uid_count_add (server, gmd_socket_conn_get_uid (conn), -1);
      gmd_socket_conn_unref (conn);
    }
}

static void
take_connection (GmdSocketServer *server, int fd)
{
  const GmdLimits *limits = &gmd_service_get_config (server->service)->limits;
  struct ucred cred;
  socklen_t len = sizeof cred;
  GmdPeerCred peer;
  guint open_for_uid;
  GmdSocketConn *conn;

  if (getsockopt (fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred)
    {
      g_warning ("socket: cannot read the peer's credentials: %s", g_strerror (errno));
      close (fd);
      return;
    }
  if (!peer_allowed (server, fd, &cred))
    {
      g_autofree char *line = NULL;
      g_autofree char *message = g_strdup_printf ("uid %u may not use this gemmad%s", (guint) cred.uid,
                                                  server->per_user ? " (a per-user service)" : "");
      g_message ("socket: refused uid %u (pid %d): not allowed", (guint) cred.uid, (int) cred.pid);
      line = gmd_proto_error_line_literal (NULL, GMD_ERROR_PERMISSION_DENIED, message, NULL);
      refuse (server, fd, line);
      return;
    }
  open_for_uid = GPOINTER_TO_UINT (g_hash_table_lookup (server->per_uid, GUINT_TO_POINTER ((guint) cred.uid)));
  if (open_for_uid >= limits->max_connections_per_uid)
    {
      g_autofree char *line = NULL;
      g_autofree char *message = g_strdup_printf ("uid %u already has %u connections open (the limit)",
                                                  (guint) cred.uid, open_for_uid);
      g_message ("socket: refused uid %u (pid %d): %u connections open", (guint) cred.uid,
                 (int) cred.pid, open_for_uid);
      line = gmd_proto_error_line_literal (NULL, GMD_ERROR_LIMIT_EXCEEDED, message, NULL);
      refuse (server, fd, line);
      return;
    }

  peer.pid = cred.pid;
  peer.uid = cred.uid;
  peer.gid = cred.gid;
  conn = gmd_socket_conn_new (server->service, fd, &peer,
                              cred.uid == 0 || cred.uid == server->service_uid,
                              server->session_names, conn_closed, server);
  g_ptr_array_add (server->connections, conn);
  uid_count_add (server, cred.uid, +1);
}

/* ---- accepting -------------------------------------------------------------------------------- */

static void start_accepting (GmdSocketServer *server);

static gboolean
accept_retry_cb (gpointer data)
{
  GmdSocketServer *server = data;

  g_clear_pointer (&server->accept_retry_source, g_source_unref);
  start_accepting (server);
  return G_SOURCE_REMOVE;
}

static void
stop_accepting (GmdSocketServer *server)
{
  if (server->accept_source != NULL)
    {
      g_source_destroy (server->accept_source);
      g_clear_pointer (&server->accept_source, g_source_unref);
    }
  if (server->accept_retry_source != NULL)
    {
      g_source_destroy (server->accept_retry_source);
      g_clear_pointer (&server->accept_retry_source, g_source_unref);
    }
}

static gboolean
accept_cb (gint fd, GIOCondition condition, gpointer data)
{
  GmdSocketServer *server = data;

  for (int i = 0; i < ACCEPTS_PER_DISPATCH; i++)
    {
      int cfd = accept4 (server->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

      if (cfd >= 0)
        {
          take_connection (server, cfd);
          continue;
        }
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      /* Out of fds or memory: the pending connection stays readable, so polling on would
       * spin. Pause instead. */
      g_warning ("socket: accept failed: %s; pausing for %d ms", g_strerror (errno), ACCEPT_PAUSE_MS);
      stop_accepting (server);
      server->accept_retry_source = g_timeout_source_new (ACCEPT_PAUSE_MS);
      g_source_set_callback (server->accept_retry_source, accept_retry_cb, server, NULL);
      {
        g_autoptr (GMainContext) context = g_main_context_ref_thread_default ();
        g_source_attach (server->accept_retry_source, context);
      }
      return G_SOURCE_REMOVE;
    }
  return G_SOURCE_CONTINUE;
}

static void
start_accepting (GmdSocketServer *server)
{
  g_autoptr (GMainContext) context = g_main_context_ref_thread_default ();

  if (server->listen_fd < 0 || server->accept_source != NULL)
    return;
  server->accept_source = g_unix_fd_source_new (server->listen_fd, G_IO_IN);
  g_source_set_callback (server->accept_source, G_SOURCE_FUNC (accept_cb), server, NULL);
  g_source_set_name (server->accept_source, "gemmad socket accept");
  g_source_attach (server->accept_source, context);
}

static gboolean
set_fd_flags (int fd, GError **error)
{
  int fl = fcntl (fd, F_GETFL);
  int fdfl = fcntl (fd, F_GETFD);

  if (fl < 0 || fdfl < 0 || fcntl (fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
      fcntl (fd, F_SETFD, fdfl | FD_CLOEXEC) < 0)
    {
      int e = errno;
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e), "socket fd %d: %s", fd, g_strerror (e));
      return FALSE;
    }
  return TRUE;
}

/* ---- listening ------------------------------------------------------------------------------- */

/* Someone accepts connections on path (a stale file gets ECONNREFUSED). */
static gboolean
somebody_listens (const struct sockaddr_un *addr)
{
  int probe = socket (AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  gboolean listening;

  if (probe < 0)
    return FALSE;
  listening = connect (probe, (const struct sockaddr *) addr, sizeof *addr) == 0 || errno == EAGAIN;
  close (probe);
  return listening;
}

gboolean
gmd_socket_server_listen_path (GmdSocketServer *server, const char *path, guint mode,
                               GError **error)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  g_autofree char *dir = NULL;
  struct stat st;
  mode_t old_umask;
  int fd, rc, e;

  if (server->listen_fd >= 0)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_EXISTS, "the socket server is already listening");
      return FALSE;
    }
  if (path == NULL || path[0] != '/' || strlen (path) >= sizeof addr.sun_path)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                   "socket path %s: must be absolute and shorter than %zu bytes",
                   path != NULL ? path : "(none)", sizeof addr.sun_path);
      return FALSE;
    }
  memcpy (addr.sun_path, path, strlen (path) + 1);

  dir = g_path_get_dirname (path);
  if (g_mkdir_with_parents (dir, server->per_user ? 0700 : 0755) != 0)
    {
      e = errno;
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e), "cannot create %s: %s", dir, g_strerror (e));
      return FALSE;
    }
  if (lstat (path, &st) == 0)
    {
      if (!S_ISSOCK (st.st_mode))
        {
          g_set_error (error, G_IO_ERROR, G_IO_ERROR_EXISTS, "%s exists and is not a socket", path);
          return FALSE;
        }
      if (somebody_listens (&addr))
        {
          g_set_error (error, G_IO_ERROR, G_IO_ERROR_ADDRESS_IN_USE,
                       "%s: another server is listening there", path);
          return FALSE;
        }
      /* A socket file nobody listens on: left by a crashed gemmad. */
      if (unlink (path) != 0 && errno != ENOENT)
        {
          e = errno;
          g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e), "cannot remove stale %s: %s", path,
                       g_strerror (e));
          return FALSE;
        }
    }

  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    {
      e = errno;
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e), "socket: %s", g_strerror (e));
      return FALSE;
    }
  /* Nobody may connect before the mode is final: bind owner-only, then chmod. */
  old_umask = umask (0177);
  rc = bind (fd, (const struct sockaddr *) &addr, sizeof addr);
  e = errno;
  umask (old_umask);
  if (rc != 0)
    {
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e), "cannot bind %s: %s", path, g_strerror (e));
      close (fd);
      return FALSE;
    }
  if (chmod (path, mode) != 0 || listen (fd, SOMAXCONN) != 0 || stat (path, &st) != 0)
    {
      e = errno;
      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (e), "cannot listen on %s: %s", path,
                   g_strerror (e));
      unlink (path);
      close (fd);
      return FALSE;
    }
  server->listen_fd = fd;
  server->created_path = g_strdup (path);
  server->created_dev = st.st_dev;
  server->created_ino = st.st_ino;
  start_accepting (server);
  g_debug ("socket: listening on %s (mode %04o)", path, mode);
  return TRUE;
}

gboolean
gmd_socket_server_listen_fd (GmdSocketServer *server, int fd, GError **error)
{
  int type = 0, domain = 0, listening = 0;
  socklen_t len;

  if (server->listen_fd >= 0)
    {
      g_set_error (error, G_IO_ERROR, G_IO_ERROR_EXISTS, "the socket server is already listening");
      return FALSE;
    }
  len = sizeof type;
  if (getsockopt (fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
    goto not_ours;
  len = sizeof domain;
  if (getsockopt (fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0 || domain != AF_UNIX)
    goto not_ours;
  len = sizeof listening;
  if (getsockopt (fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || !listening)
    goto not_ours;
  if (!set_fd_flags (fd, error))
    return FALSE;
  server->listen_fd = fd;
  start_accepting (server);
  return TRUE;

not_ours:
  g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
               "fd %d is not a listening AF_UNIX stream socket", fd);
  return FALSE;
}

void
gmd_socket_server_stop_listening (GmdSocketServer *server)
{
  struct stat st;

  stop_accepting (server);
  if (server->listen_fd >= 0)
    {
      close (server->listen_fd);
      server->listen_fd = -1;
    }
  /* Only our own file: a newer gemmad may have replaced it meanwhile. */
  if (server->created_path != NULL && lstat (server->created_path, &st) == 0 &&
      st.st_dev == server->created_dev && st.st_ino == server->created_ino)
    unlink (server->created_path);
  g_clear_pointer (&server->created_path, g_free);
}

void
gmd_socket_server_free (GmdSocketServer *server)
{
  if (server == NULL)
    return;
  gmd_socket_server_stop_listening (server);
  while (server->connections->len > 0)
    {
      GmdSocketConn *conn = g_ptr_array_steal_index_fast (server->connections, 0);
      gmd_socket_conn_close (conn);
      gmd_socket_conn_unref (conn);
    }
  g_ptr_array_unref (server->connections);
  g_ptr_array_unref (server->refusals);
  g_hash_table_unref (server->per_uid);
  g_hash_table_unref (server->session_names);
  g_free (server);
}
