/* test-socket-server.c — the socket server in-process, over real UNIX sockets, against a
 * real GmdService with no model loaded (hello, info and refusals need none): creating the
 * socket file, stale files, socket activation fds, peer checks, the connection cap, the
 * SCM_RIGHTS cap, half-close, and a client that pipelines faster than it reads.
 * (Streams against a loaded model are tested from the outside in tests/integration.) */
#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gmd-json.h"
#include "ipc/socket/gmd-socket-server.h"

#define DEADLINE_US (20 * G_USEC_PER_SEC)

typedef struct {
  char *dir;
  char *path;
  GmdConfig *config;
  GmdService *service;
  GmdSocketServer *server;
} Fixture;

static void
fixture_set_up (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;

  f->dir = g_dir_make_tmp ("gmd-socket-XXXXXX", &error);
  g_assert_no_error (error);
  f->path = g_build_filename (f->dir, "sub", "gemmad.sock", NULL);
  f->config = gmd_config_new_default ();
  f->config->bus = GMD_BUS_NONE;
}

static void
start_service (Fixture *f, gboolean per_user)
{
  g_autoptr (GError) error = NULL;

  f->service = gmd_service_new (f->config, &error);
  g_assert_no_error (error);
  f->server = gmd_socket_server_new (f->service, per_user);
}

static void
fixture_tear_down (Fixture *f, gconstpointer data)
{
  g_autofree char *sub = g_path_get_dirname (f->path);

  g_clear_pointer (&f->server, gmd_socket_server_free);
  g_clear_pointer (&f->service, gmd_service_free);
  gmd_config_free (f->config);
  unlink (f->path);
  rmdir (sub);
  rmdir (f->dir);
  g_free (f->path);
  g_free (f->dir);
}

/* ---- a client that lets the main loop run while it waits ------------------------------- */

typedef struct {
  int fd;
  GString *in;
  gboolean eof;
} Client;

static int
connect_to (const char *path)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

  g_strlcpy (addr.sun_path, path, sizeof addr.sun_path);
  g_assert_cmpint (connect (fd, (struct sockaddr *) &addr, sizeof addr), ==, 0);
  return fd;
}

static Client *
client_new (const char *path)
{
  Client *c = g_new0 (Client, 1);

  c->fd = connect_to (path);
  g_assert_cmpint (fcntl (c->fd, F_SETFL, O_NONBLOCK), ==, 0);
  c->in = g_string_new (NULL);
  return c;
}

static void
client_free (Client *c)
{
  close (c->fd);
  g_string_free (c->in, TRUE);
  g_free (c);
}

/* Runs the server's main context and reads what arrived. */
static void
pump (Client *c)
{
  char buf[65536];
  ssize_t n;

  while (g_main_context_iteration (NULL, FALSE))
    ;
  /* one read at a time: the caller takes lines off the front */
  if ((n = recv (c->fd, buf, sizeof buf, 0)) > 0)
    g_string_append_len (c->in, buf, n);
  if (n == 0)
    c->eof = TRUE;
  if (!c->eof)
    {
      struct pollfd p = { c->fd, POLLIN, 0 };
      (void) poll (&p, 1, 1);
    }
}

static void
client_send (Client *c, const char *line)
{
  gsize done = 0, len = strlen (line);
  gint64 deadline = g_get_monotonic_time () + DEADLINE_US;

  while (done < len)
    {
      ssize_t n = send (c->fd, line + done, len - done, MSG_NOSIGNAL);
      if (n > 0)
        done += (gsize) n;
      else
        {
          g_assert_true (n < 0 && errno == EAGAIN);
          g_assert_cmpint (g_get_monotonic_time (), <, deadline);
          pump (c);
        }
    }
}

/* The next line from the server (without '\n'), or NULL at the end of the stream. */
static char *
client_read_line (Client *c)
{
  gint64 deadline = g_get_monotonic_time () + DEADLINE_US;

  for (;;)
    {
      char *nl = memchr (c->in->str, '\n', c->in->len);
      if (nl != NULL)
        {
          char *line = g_strndup (c->in->str, nl - c->in->str);
          g_string_erase (c->in, 0, nl - c->in->str + 1);
          return line;
        }
      if (c->eof)
        return NULL;
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      pump (c);
    }
}

/* Reads a line and checks it is an error with this code (and id, or null). */
static void
assert_error_line (Client *c, const char *id_json, const char *code)
{
  g_autofree char *line = client_read_line (c);
  g_autofree char *expect_id = g_strdup_printf ("{\"id\":%s,\"error\":{\"code\":\"%s\"", id_json, code);

  g_assert_nonnull (line);
  if (!g_str_has_prefix (line, expect_id))
    g_error ("expected %s…, got %s", expect_id, line);
}

static void
client_hello (Client *c)
{
  g_autofree char *line = NULL;

  client_send (c, "{\"type\":\"hello\",\"id\":0,\"version\":1}\n");
  line = client_read_line (c);
  g_assert_nonnull (line);
  g_assert_true (g_str_has_prefix (line, "{\"id\":0,\"result\":{\"version\":1,\"server\":\"gemmad\""));
}

/* ---- tests --------------------------------------------------------------------------------- */

static void
test_listen_path (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *sub = g_path_get_dirname (f->path);
  GmdSocketServer *second;
  struct stat st;
  int fd;

  start_service (f, FALSE);
  g_assert_true (gmd_socket_server_listen_path (f->server, f->path, 0640, &error));
  g_assert_no_error (error);
  g_assert_cmpint (stat (sub, &st), ==, 0);
  g_assert_cmpint (st.st_mode & 0777, ==, 0755);
  g_assert_cmpint (lstat (f->path, &st), ==, 0);
  g_assert_true (S_ISSOCK (st.st_mode));
  g_assert_cmpint (st.st_mode & 0777, ==, 0640);

  /* a live socket is not taken over */
  second = gmd_socket_server_new (f->service, FALSE);
  g_assert_false (gmd_socket_server_listen_path (second, f->path, 0600, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_ADDRESS_IN_USE);
  g_clear_error (&error);

  /* the file goes away with the listener */
  gmd_socket_server_stop_listening (f->server);
  g_assert_cmpint (lstat (f->path, &st), ==, -1);

  /* a stale socket file (nobody listens) is replaced */
  {
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    g_strlcpy (addr.sun_path, f->path, sizeof addr.sun_path);
    g_assert_cmpint (bind (fd, (struct sockaddr *) &addr, sizeof addr), ==, 0);
    close (fd);
  }
  g_assert_true (gmd_socket_server_listen_path (second, f->path, 0600, &error));
  g_assert_no_error (error);
  {
    Client *c = client_new (f->path);
    client_hello (c);
    client_free (c);
  }
  /* a file that someone else put there after us is not removed */
  g_assert_cmpint (unlink (f->path), ==, 0);
  g_assert_true (g_file_set_contents (f->path, "x", 1, NULL));
  gmd_socket_server_stop_listening (second);
  g_assert_cmpint (lstat (f->path, &st), ==, 0);
  /* and a file that is not a socket is refused */
  g_assert_false (gmd_socket_server_listen_path (second, f->path, 0600, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_EXISTS);
  g_clear_error (&error);
  g_assert_false (gmd_socket_server_listen_path (second, "relative.sock", 0600, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
  gmd_socket_server_free (second);
}

static void
test_listen_fd (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  int pair[2], fd;
  Client *c;

  start_service (f, FALSE);
  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), ==, 0);
  g_assert_false (gmd_socket_server_listen_fd (f->server, pair[0], &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  close (pair[0]);
  close (pair[1]);

  /* as systemd would pass it: bound and listening, blocking */
  {
    g_autofree char *sub = g_path_get_dirname (f->path);
    g_assert_cmpint (g_mkdir_with_parents (sub, 0700), ==, 0);
  }
  fd = socket (AF_UNIX, SOCK_STREAM, 0);
  g_strlcpy (addr.sun_path, f->path, sizeof addr.sun_path);
  g_assert_cmpint (bind (fd, (struct sockaddr *) &addr, sizeof addr), ==, 0);
  g_assert_cmpint (listen (fd, 8), ==, 0);
  g_assert_true (gmd_socket_server_listen_fd (f->server, fd, &error));
  g_assert_no_error (error);
  c = client_new (f->path);
  client_hello (c);
  g_assert_cmpuint (gmd_socket_server_get_n_connections (f->server), ==, 1);
  client_free (c);
  /* systemd's socket file stays: it is not ours to remove */
  gmd_socket_server_stop_listening (f->server);
  g_assert_true (g_file_test (f->path, G_FILE_TEST_EXISTS));
}

static void
test_info_unloaded (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *line = NULL;
  g_autoptr (GmdJson) json = NULL;
  const GmdJson *result;
  Client *c;

  start_service (f, FALSE);
  g_assert_true (gmd_socket_server_listen_path (f->server, f->path, 0600, &error));
  c = client_new (f->path);
  client_hello (c);
  client_send (c, "{\"type\":\"info\",\"id\":\"i\"}\n");
  line = client_read_line (c);
  json = gmd_json_parse (line, strlen (line), &error);
  g_assert_no_error (error);
  result = gmd_json_get (json, "result");
  g_assert_nonnull (result);
  g_assert_cmpstr (gmd_json_get (result, "load_state")->str.data, ==, "unloaded");
  g_assert_cmpint (gmd_json_get (result, "api_version")->i, ==, 1);
  g_assert_nonnull (gmd_json_get (result, "limits"));
  g_assert_cmpint (gmd_json_get (gmd_json_get (result, "limits"), "max_line_bytes")->i, ==, 32 * 1024 * 1024);
  g_assert_nonnull (gmd_json_get (result, "default_options"));
  /* no model: a generation is refused, the connection stays */
  client_send (c, "{\"type\":\"generate\",\"id\":1,\"prompt\":\"hi\"}\n");
  assert_error_line (c, "1", "model_not_loaded");
  client_send (c, "{\"type\":\"list\",\"id\":2}\n");
  g_free (line);
  line = client_read_line (c);
  g_assert_cmpstr (line, ==, "{\"id\":2,\"result\":{\"requests\":[]}}");
  client_free (c);
}

static void
test_half_close (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  Client *c;
  char *line;

  start_service (f, FALSE);
  g_assert_true (gmd_socket_server_listen_path (f->server, f->path, 0600, &error));
  /* requests sent, then "no more": every answer comes, then the end of the stream; a last
   * line without newline still counts */
  c = client_new (f->path);
  client_send (c, "{\"type\":\"hello\",\"id\":0,\"version\":1}\n{\"type\":\"list\",\"id\":1}");
  g_assert_cmpint (shutdown (c->fd, SHUT_WR), ==, 0);
  line = client_read_line (c);
  g_assert_true (g_str_has_prefix (line, "{\"id\":0,\"result\":"));
  g_free (line);
  line = client_read_line (c);
  g_assert_cmpstr (line, ==, "{\"id\":1,\"result\":{\"requests\":[]}}");
  g_free (line);
  g_assert_null (client_read_line (c));
  client_free (c);
  /* the server forgot the connection */
  while (g_main_context_iteration (NULL, FALSE))
    ;
  g_assert_cmpuint (gmd_socket_server_get_n_connections (f->server), ==, 0);
}

static void
test_connection_cap (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  Client *a, *b, *c;

  f->config->limits.max_connections_per_uid = 2;
  start_service (f, FALSE);
  g_assert_true (gmd_socket_server_listen_path (f->server, f->path, 0600, &error));
  a = client_new (f->path);
  b = client_new (f->path);
  client_hello (a);
  client_hello (b);
  c = client_new (f->path);
  assert_error_line (c, "null", "limit_exceeded");
  g_assert_null (client_read_line (c));
  client_free (c);
  /* one leaves: room again */
  client_free (a);
  while (gmd_socket_server_get_n_connections (f->server) != 1)
    g_main_context_iteration (NULL, TRUE);
  c = client_new (f->path);
  client_hello (c);
  client_free (c);
  client_free (b);
}

static void
test_too_many_fds (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  const char *line = "{\"type\":\"generate\",\"id\":5,\"content\":[{\"type\":\"image\",\"fd\":0}]}\n";
  int fds[17];
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE (sizeof fds)];
  } u;
  struct iovec iov = { (void *) line, strlen (line) };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
  struct cmsghdr *cm;
  Client *c;

  start_service (f, FALSE);
  g_assert_true (gmd_socket_server_listen_path (f->server, f->path, 0600, &error));
  c = client_new (f->path);
  client_hello (c);
  for (int i = 0; i < 17; i++)
    fds[i] = open ("/dev/null", O_RDONLY | O_CLOEXEC);
  memset (&u, 0, sizeof u);
  cm = CMSG_FIRSTHDR (&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN (sizeof fds);
  memcpy (CMSG_DATA (cm), fds, sizeof fds);
  g_assert_cmpint (sendmsg (c->fd, &msg, MSG_NOSIGNAL), ==, (gssize) strlen (line));
  for (int i = 0; i < 17; i++)
    close (fds[i]);
  assert_error_line (c, "5", "limit_exceeded");
  /* still usable */
  client_send (c, "{\"type\":\"list\",\"id\":6}\n");
  g_free (client_read_line (c));
  client_free (c);
}

/* Lines with fds, and big lines, are parsed off the main loop; answers still come in the
 * order of the lines, and the fds are closed. */
static void
test_parse_in_thread (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GString) big = g_string_new ("{\"type\":\"generate\",\"id\":3,\"prompt\":\"");
  const char *line = "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\",\"fd\":0}]}\n";
  int p[2];
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE (sizeof (int))];
  } u;
  struct iovec iov = { (void *) line, strlen (line) };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf };
  struct cmsghdr *cm;
  g_autofree char *a = NULL, *b = NULL, *c2 = NULL, *d = NULL;
  Client *c;

  start_service (f, FALSE);
  g_assert_true (gmd_socket_server_listen_path (f->server, f->path, 0600, &error));
  c = client_new (f->path);
  client_hello (c);

  /* a pipe is not a regular file: refused, after being looked at in the thread */
  g_assert_cmpint (pipe2 (p, O_CLOEXEC), ==, 0);
  memset (&u, 0, sizeof u);
  cm = CMSG_FIRSTHDR (&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN (sizeof (int));
  memcpy (CMSG_DATA (cm), &p[0], sizeof (int));
  g_assert_cmpint (sendmsg (c->fd, &msg, MSG_NOSIGNAL), ==, (gssize) strlen (line));
  close (p[0]);
  for (int i = 0; i < 150000; i++)
    g_string_append (big, "0123456789");
  g_string_append (big, "\"}\n");
  client_send (c, "{\"type\":\"list\",\"id\":2}\n");
  client_send (c, big->str);
  client_send (c, "{\"type\":\"list\",\"id\":4}\n");

  a = client_read_line (c);
  b = client_read_line (c);
  c2 = client_read_line (c);
  d = client_read_line (c);
  g_assert_true (g_str_has_prefix (a, "{\"id\":1,\"error\":{\"code\":\"invalid_argument\""));
  g_assert_nonnull (strstr (a, "\"field\":\"content[0].fd\""));
  g_assert_cmpstr (b, ==, "{\"id\":2,\"result\":{\"requests\":[]}}");
  /* (over max_text_bytes, or no model: either way an answer in its place) */
  g_assert_true (g_str_has_prefix (c2, "{\"id\":3,\"error\":"));
  g_assert_cmpstr (d, ==, "{\"id\":4,\"result\":{\"requests\":[]}}");
  /* the server closed its copy of the pipe's read end: writing now fails */
  {
    struct sigaction ign = { .sa_handler = SIG_IGN }, old;
    sigaction (SIGPIPE, &ign, &old);
    g_assert_cmpint (write (p[1], "x", 1), ==, -1);
    g_assert_cmpint (errno, ==, EPIPE);
    sigaction (SIGPIPE, &old, NULL);
  }
  close (p[1]);
  client_free (c);
}

/* A client that sends many requests before reading anything: the server stops taking
 * requests while answers pile up, serves others meanwhile, and loses nothing. */
static void
test_pipelining_slow_reader (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GString) requests = g_string_new (NULL);
  const guint n = 30000;
  gsize sent = 0;
  guint answers = 0;
  Client *c, *other;

  start_service (f, FALSE);
  g_assert_true (gmd_socket_server_listen_path (f->server, f->path, 0600, &error));
  c = client_new (f->path);
  client_hello (c);
  for (guint i = 1; i <= n; i++)
    g_string_append_printf (requests, "{\"type\":\"info\",\"id\":%u}\n", i);
  /* send until the kernel and the server stop taking more (without reading) */
  for (int rounds = 0; rounds < 1000 && sent < requests->len; rounds++)
    {
      ssize_t w = send (c->fd, requests->str + sent, requests->len - sent, MSG_NOSIGNAL);
      if (w > 0)
        sent += (gsize) w;
      while (g_main_context_iteration (NULL, FALSE))
        ;
    }
  g_assert_cmpuint (sent, <, requests->len);   /* the server paused */
  other = client_new (f->path);
  client_hello (other);
  client_free (other);

  /* now read everything, sending the rest as it goes */
  while (answers < n)
    {
      char *line;
      if (sent < requests->len)
        {
          ssize_t w = send (c->fd, requests->str + sent, requests->len - sent, MSG_NOSIGNAL);
          if (w > 0)
            sent += (gsize) w;
        }
      line = client_read_line (c);
      g_assert_nonnull (line);
      g_assert_true (g_str_has_prefix (line, "{\"id\":"));
      g_assert_nonnull (strstr (line, "\"result\":{\"version\":"));
      g_free (line);
      answers++;
    }
  g_assert_cmpuint (gmd_socket_server_get_n_connections (f->server), ==, 1);
  client_free (c);
}

/* A peer of another uid (needs root to become one): refused by the per-user service and
 * by allowed_users, admitted otherwise. */
static char *
connect_as (const char *path, uid_t uid)
{
  int out[2];
  pid_t pid;
  GString *answer = g_string_new (NULL);
  int status;

  g_assert_cmpint (pipe2 (out, O_CLOEXEC), ==, 0);
  pid = fork ();
  g_assert_cmpint (pid, >=, 0);
  if (pid == 0)
    {
      char buf[4096];
      ssize_t n;
      int fd;
      const char *hello = "{\"type\":\"hello\",\"id\":0,\"version\":1}\n";

      if (setgroups (0, NULL) != 0 || setgid (uid) != 0 || setuid (uid) != 0)
        _exit (2);
      fd = connect_to (path);
      /* the hello must not fail with EPIPE, even when refused */
      if (send (fd, hello, strlen (hello), MSG_NOSIGNAL) < 0)
        _exit (3);
      n = recv (fd, buf, sizeof buf, 0);
      if (n > 0 && write (out[1], buf, n) != n)
        _exit (4);
      _exit (0);
    }
  close (out[1]);
  for (;;)
    {
      char buf[4096];
      struct pollfd p = { out[0], POLLIN, 0 };
      ssize_t n;

      while (g_main_context_iteration (NULL, FALSE))
        ;
      if (poll (&p, 1, 5) <= 0)
        continue;
      n = read (out[0], buf, sizeof buf);
      if (n <= 0)
        break;
      g_string_append_len (answer, buf, n);
    }
  close (out[0]);
  g_assert_cmpint (waitpid (pid, &status, 0), ==, pid);
  g_assert_true (WIFEXITED (status) && WEXITSTATUS (status) == 0);
  return g_string_free (answer, FALSE);
}

static void
test_peer_checks (Fixture *f, gconstpointer data)
{
  g_autoptr (GError) error = NULL;
  const char *mode = data;
  g_autofree char *answer = NULL;
  g_autofree char *sub = NULL;

  if (geteuid () != 0)
    {
      g_test_skip ("needs root to connect as another uid");
      return;
    }
  if (g_str_equal (mode, "allowed-users"))
    f->config->allowed_users = g_strsplit ("4242,nobody", ",", -1);
  else if (g_str_equal (mode, "allowed-groups"))
    f->config->allowed_groups = g_strsplit ("4242", ",", -1);
  start_service (f, g_str_equal (mode, "per-user"));
  /* 0777 so that the other uid reaches the socket; the server itself decides */
  g_assert_true (gmd_socket_server_listen_path (f->server, f->path, 0666, &error));
  sub = g_path_get_dirname (f->path);
  g_assert_cmpint (chmod (sub, 0755), ==, 0);
  g_assert_cmpint (chmod (f->dir, 0755), ==, 0);

  answer = connect_as (f->path, 4243);
  if (g_str_equal (mode, "everybody"))
    g_assert_true (g_str_has_prefix (answer, "{\"id\":0,\"result\":{\"version\":1,\"server\":\"gemmad\","));
  else
    {
      g_assert_true (g_str_has_prefix (answer, "{\"id\":null,\"error\":{\"code\":\"permission_denied\""));
      g_assert_nonnull (strstr (answer, "uid 4243"));
    }
  g_free (answer);
  answer = connect_as (f->path, 4242);
  if (g_str_equal (mode, "per-user"))
    g_assert_true (g_str_has_prefix (answer, "{\"id\":null,\"error\":{\"code\":\"permission_denied\""));
  else
    g_assert_true (g_str_has_prefix (answer, "{\"id\":0,\"result\":"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add ("/socket-server/listen-path", Fixture, NULL, fixture_set_up, test_listen_path, fixture_tear_down);
  g_test_add ("/socket-server/listen-fd", Fixture, NULL, fixture_set_up, test_listen_fd, fixture_tear_down);
  g_test_add ("/socket-server/info-unloaded", Fixture, NULL, fixture_set_up, test_info_unloaded, fixture_tear_down);
  g_test_add ("/socket-server/half-close", Fixture, NULL, fixture_set_up, test_half_close, fixture_tear_down);
  g_test_add ("/socket-server/connection-cap", Fixture, NULL, fixture_set_up, test_connection_cap, fixture_tear_down);
  g_test_add ("/socket-server/too-many-fds", Fixture, NULL, fixture_set_up, test_too_many_fds, fixture_tear_down);
  g_test_add ("/socket-server/parse-in-thread", Fixture, NULL, fixture_set_up, test_parse_in_thread,
              fixture_tear_down);
  g_test_add ("/socket-server/pipelining-slow-reader", Fixture, NULL, fixture_set_up,
              test_pipelining_slow_reader, fixture_tear_down);
  g_test_add ("/socket-server/peers/everybody", Fixture, "everybody", fixture_set_up, test_peer_checks,
              fixture_tear_down);
  g_test_add ("/socket-server/peers/allowed-users", Fixture, "allowed-users", fixture_set_up, test_peer_checks,
              fixture_tear_down);
  g_test_add ("/socket-server/peers/allowed-groups", Fixture, "allowed-groups", fixture_set_up, test_peer_checks,
              fixture_tear_down);
  g_test_add ("/socket-server/peers/per-user", Fixture, "per-user", fixture_set_up, test_peer_checks,
              fixture_tear_down);
  return g_test_run ();
}
