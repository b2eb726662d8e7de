/* gmd-test-harness.c — see gmd-test-harness.h. */
#include "gmd-test-harness.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gunixfdlist.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* A failed expectation: reported through GTest (with the location of the harness). */
#define FAIL(...)                                                                      \
  do {                                                                                 \
    g_autofree char *fail_msg_ = g_strdup_printf (__VA_ARGS__);                         \
    g_assertion_message (G_LOG_DOMAIN, __FILE__, __LINE__, G_STRFUNC, fail_msg_);      \
  } while (0)

const char *
gmd_test_env (const char *name)
{
  const char *value = g_getenv (name);
  if (value == NULL || *value == '\0')
    FAIL ("environment variable %s is not set (run the tests through meson test)", name);
  return value;
}

const char *
gmd_test_tiny_model (void)
{
  return gmd_test_env ("GEMMAD_TINY_MODEL");
}

/* ---- the daemon ------------------------------------------------------------------- */

struct _GmdTestDaemon {
  GSubprocess *bus;       /* the private dbus-daemon */
  char *bus_address;
  char *tmpdir;
  char *socket_path;
  GSubprocess *proc;
  GPid pid;
  GThread *reader;
  GMutex lock;
  GCond cond;
  GString *log;         /* everything read so far */
  gboolean ready;
  gboolean eof;
  gboolean exited;
};

static void
child_setup (gpointer user_data)
{
  /* A test that fails aborts without teardown: the daemon must not outlive it. */
  prctl (PR_SET_PDEATHSIG, SIGKILL);
}

/* Reads the daemon's merged stdout/stderr until EOF: keeps it, echoes it to the test log
 * line by line and notices "gemmad: ready". */
static gpointer
log_reader_thread (gpointer data)
{
  GmdTestDaemon *d = data;
  GInputStream *in = g_subprocess_get_stdout_pipe (d->proc);
  gboolean echo = g_strcmp0 (g_getenv ("GMD_TEST_QUIET"), "1") != 0;
  g_autoptr (GString) partial = g_string_new (NULL);
  char buf[4096];

  for (;;)
    {
      gssize n = g_input_stream_read (in, buf, sizeof buf, NULL, NULL);
      if (n <= 0)
        break;
      g_mutex_lock (&d->lock);
      g_string_append_len (d->log, buf, n);
      if (!d->ready && strstr (d->log->str, "gemmad: ready") != NULL)
        d->ready = TRUE;
      g_cond_broadcast (&d->cond);
      g_mutex_unlock (&d->lock);

      g_string_append_len (partial, buf, n);
      char *nl;
      while ((nl = memchr (partial->str, '\n', partial->len)) != NULL)
        {
          gsize line_len = nl - partial->str;
          if (echo)
            g_printerr ("  gemmad[%d]| %.*s\n", (int) d->pid, (int) line_len, partial->str);
          g_string_erase (partial, 0, line_len + 1);
        }
    }
  if (echo && partial->len > 0)
    g_printerr ("  gemmad[%d]| %s\n", (int) d->pid, partial->str);

  g_mutex_lock (&d->lock);
  d->eof = TRUE;
  g_cond_broadcast (&d->cond);
  g_mutex_unlock (&d->lock);
  return NULL;
}

/* A copy of everything gemmad wrote so far. */
static char *
daemon_log (GmdTestDaemon *d)
{
  g_mutex_lock (&d->lock);
  char *copy = g_strdup (d->log->str);
  g_mutex_unlock (&d->lock);
  return copy;
}

/* A private session bus. Not GTestDBus: when a test aborts, its watcher process can be
 * kept alive by the dbus-daemon it should kill (which inherits the watcher's pipe), and the
 * two then hold the test's stdout open, so the test runner waits until its timeout. This
 * dbus-daemon dies with the test (PR_SET_PDEATHSIG) and never sees the test's output. */
static void
start_bus (GmdTestDaemon *d)
{
  g_autoptr (GError) error = NULL;
  /* Everything is allowed except eavesdropping: signals sent to one connection must not
   * reach another (the privacy tests rely on it). */
  g_autofree char *config = g_build_filename (d->tmpdir, "bus.conf", NULL);
  g_autofree char *contents = g_strdup_printf (
      "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
      " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
      "<busconfig>\n"
      "  <type>session</type>\n"
      "  <listen>unix:path=%s/bus</listen>\n"
      "  <auth>EXTERNAL</auth>\n"
      "  <policy context=\"default\">\n"
      "    <allow send_destination=\"*\"/>\n"
      "    <allow receive_sender=\"*\"/>\n"
      "    <allow own=\"*\"/>\n"
      "  </policy>\n"
      "</busconfig>\n", d->tmpdir);
  g_file_set_contents (config, contents, -1, &error);
  g_assert_no_error (error);

  const char *program = g_getenv ("GMD_DBUS_DAEMON");
  if (program == NULL || *program == '\0')
    program = "dbus-daemon";
  g_autofree char *config_arg = g_strconcat ("--config-file=", config, NULL);
  g_autoptr (GSubprocessLauncher) launcher = g_subprocess_launcher_new (
      G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_SILENCE);
  g_subprocess_launcher_set_child_setup (launcher, child_setup, NULL, NULL);
  d->bus = g_subprocess_launcher_spawn (launcher, &error, program, "--nofork", "--print-address=1",
                                        config_arg, NULL);
  g_assert_no_error (error);

  /* The address is the first line it prints; EOF means it failed to start. */
  g_autoptr (GDataInputStream) out = g_data_input_stream_new (g_subprocess_get_stdout_pipe (d->bus));
  d->bus_address = g_data_input_stream_read_line (out, NULL, NULL, &error);
  g_assert_no_error (error);
  if (d->bus_address == NULL || *d->bus_address == '\0')
    FAIL ("%s did not start (config %s)", program, config);
  g_strstrip (d->bus_address);
}

static GmdTestDaemon *
daemon_startv (const char *const *extra_args)
{
  GmdTestDaemon *d = g_new0 (GmdTestDaemon, 1);
  g_autoptr (GError) error = NULL;

  g_mutex_init (&d->lock);
  g_cond_init (&d->cond);
  d->log = g_string_new (NULL);

  d->tmpdir = g_dir_make_tmp ("gemmad-test-XXXXXX", &error);
  g_assert_no_error (error);
  d->socket_path = g_build_filename (d->tmpdir, "gemmad.sock", NULL);

  start_bus (d);

  g_autoptr (GPtrArray) argv = g_ptr_array_new ();
  g_ptr_array_add (argv, (char *) gmd_test_env ("GEMMAD_BIN"));
  g_ptr_array_add (argv, "--session");
  g_ptr_array_add (argv, "--model");
  g_ptr_array_add (argv, (char *) gmd_test_tiny_model ());
  g_ptr_array_add (argv, "--socket");
  g_ptr_array_add (argv, d->socket_path);
  g_ptr_array_add (argv, "--threads");
  g_ptr_array_add (argv, "1");
  if (g_strcmp0 (g_getenv ("GMD_TEST_DAEMON_VERBOSE"), "1") == 0)
    g_ptr_array_add (argv, "--verbose");
  for (guint i = 0; extra_args != NULL && extra_args[i] != NULL; i++)
    g_ptr_array_add (argv, (char *) extra_args[i]);
  g_ptr_array_add (argv, NULL);

  g_autoptr (GSubprocessLauncher) launcher =
      g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_MERGE |
                                 G_SUBPROCESS_FLAGS_STDIN_INHERIT);
  g_subprocess_launcher_setenv (launcher, "DBUS_SESSION_BUS_ADDRESS", d->bus_address, TRUE);
  g_subprocess_launcher_setenv (launcher, "XDG_RUNTIME_DIR", d->tmpdir, TRUE);
  /* --session reads $XDG_CONFIG_HOME/gemmad/gemmad.conf: keep the user's own out. */
  g_subprocess_launcher_setenv (launcher, "XDG_CONFIG_HOME", d->tmpdir, TRUE);
  g_subprocess_launcher_unsetenv (launcher, "NOTIFY_SOCKET");
  g_subprocess_launcher_unsetenv (launcher, "LISTEN_FDS");
  g_subprocess_launcher_unsetenv (launcher, "LISTEN_PID");
  g_subprocess_launcher_set_child_setup (launcher, child_setup, NULL, NULL);

  g_autofree char *cmdline = g_strjoinv (" ", (char **) argv->pdata);
  g_test_message ("starting: %s", cmdline);
  d->proc = g_subprocess_launcher_spawnv (launcher, (const char *const *) argv->pdata, &error);
  g_assert_no_error (error);
  const char *pid_str = g_subprocess_get_identifier (d->proc);
  d->pid = pid_str != NULL ? atoi (pid_str) : 0;

  d->reader = g_thread_new ("gemmad-log", log_reader_thread, d);

  gint64 deadline = g_get_monotonic_time () + GMD_TEST_READY_TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;
  g_mutex_lock (&d->lock);
  while (!d->ready && !d->eof)
    if (!g_cond_wait_until (&d->cond, &d->lock, deadline))
      break;
  gboolean ready = d->ready;
  gboolean eof = d->eof;
  g_mutex_unlock (&d->lock);
  if (!ready)
    {
      g_autofree char *log = daemon_log (d);
      FAIL ("gemmad did not print \"gemmad: ready\" (%s) — command: %s\n--- its output:\n%s",
            eof ? "it exited or closed its output" : "timeout", cmdline, log);
    }
  return d;
}

GmdTestDaemon *
gmd_test_daemon_start (const char *first_extra_arg, ...)
{
  g_autoptr (GPtrArray) args = g_ptr_array_new ();
  va_list ap;
  va_start (ap, first_extra_arg);
  for (const char *a = first_extra_arg; a != NULL; a = va_arg (ap, const char *))
    g_ptr_array_add (args, (char *) a);
  va_end (ap);
  g_ptr_array_add (args, NULL);
  return daemon_startv ((const char *const *) args->pdata);
}

GmdTestDaemon *
gmd_test_daemon_start_default (void)
{
  return daemon_startv (NULL);
}

const char *
gmd_test_daemon_socket_path (GmdTestDaemon *d)
{
  return d->socket_path;
}

const char *
gmd_test_daemon_bus_address (GmdTestDaemon *d)
{
  return d->bus_address;
}

const char *
gmd_test_daemon_tmpdir (GmdTestDaemon *d)
{
  return d->tmpdir;
}

GDBusConnection *
gmd_test_daemon_connect_bus (GmdTestDaemon *d)
{
  g_autoptr (GError) error = NULL;
  GDBusConnection *c = g_dbus_connection_new_for_address_sync (
      d->bus_address,
      G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT |
          G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
      NULL, NULL, &error);
  g_assert_no_error (error);
  g_dbus_connection_set_exit_on_close (c, FALSE);
  return c;
}

void
gmd_test_daemon_signal (GmdTestDaemon *d, int signum)
{
  g_subprocess_send_signal (d->proc, signum);
}

static void
on_wait_done (GObject *source, GAsyncResult *result, gpointer user_data)
{
  gboolean *done = user_data;
  g_subprocess_wait_finish (G_SUBPROCESS (source), result, NULL);
  *done = TRUE;
}

static gboolean
on_timeout_flag (gpointer user_data)
{
  *(gboolean *) user_data = TRUE;
  return G_SOURCE_REMOVE;
}

void
gmd_test_daemon_wait_exit_ok (GmdTestDaemon *d)
{
  g_autoptr (GMainContext) ctx = g_main_context_new ();
  gboolean done = FALSE, timed_out = FALSE;

  g_main_context_push_thread_default (ctx);
  g_subprocess_wait_async (d->proc, NULL, on_wait_done, &done);
  GSource *timeout = g_timeout_source_new (GMD_TEST_TIMEOUT_MS);
  g_source_set_callback (timeout, on_timeout_flag, &timed_out, NULL);
  g_source_attach (timeout, ctx);
  while (!done && !timed_out)
    g_main_context_iteration (ctx, TRUE);
  g_source_destroy (timeout);
  g_source_unref (timeout);
  if (!done)
    {
      g_subprocess_force_exit (d->proc);
      while (!done)
        g_main_context_iteration (ctx, TRUE);
    }
  g_main_context_pop_thread_default (ctx);

  /* The log is complete once the pipe reached EOF. */
  g_thread_join (d->reader);
  d->reader = NULL;
  d->exited = TRUE;

  g_autofree char *log = daemon_log (d);
  if (timed_out)
    FAIL ("gemmad did not exit within %d ms after being asked to stop; killed.\n--- its output:\n%s",
          GMD_TEST_TIMEOUT_MS, log);
  if (!g_subprocess_get_if_exited (d->proc))
    FAIL ("gemmad died from signal %d\n--- its output:\n%s",
          g_subprocess_get_term_sig (d->proc), log);
  if (g_subprocess_get_exit_status (d->proc) != 0)
    FAIL ("gemmad exited with status %d\n--- its output:\n%s",
          g_subprocess_get_exit_status (d->proc), log);
  if (strstr (log, "Sanitizer") != NULL || strstr (log, "runtime error:") != NULL)
    FAIL ("gemmad exited 0 but a sanitizer reported a problem:\n%s", log);
  /* A GLib critical is a failed precondition inside gemmad: a bug even when it survives. */
  if (strstr (log, "-CRITICAL **") != NULL)
    FAIL ("gemmad logged a GLib critical:\n%s", log);
}

static void
daemon_free (GmdTestDaemon *d)
{
  g_clear_object (&d->proc);
  if (d->bus != NULL)
    {
      g_subprocess_force_exit (d->bus);
      g_subprocess_wait (d->bus, NULL, NULL);
      g_object_unref (d->bus);
    }
  /* gemmad removes its socket at exit; anything else left (temp files) goes too. */
  g_autoptr (GDir) dir = g_dir_open (d->tmpdir, 0, NULL);
  const char *name;
  while (dir != NULL && (name = g_dir_read_name (dir)) != NULL)
    {
      g_autofree char *p = g_build_filename (d->tmpdir, name, NULL);
      if (g_remove (p) != 0)
        {
          /* gemmad's per-user service may create a subfolder under XDG_RUNTIME_DIR. */
          g_autoptr (GDir) sub = g_dir_open (p, 0, NULL);
          const char *sname;
          while (sub != NULL && (sname = g_dir_read_name (sub)) != NULL)
            {
              g_autofree char *sp = g_build_filename (p, sname, NULL);
              g_remove (sp);
            }
          g_rmdir (p);
        }
    }
  g_rmdir (d->tmpdir);
  g_free (d->tmpdir);
  g_free (d->socket_path);
  g_free (d->bus_address);
  g_string_free (d->log, TRUE);
  g_mutex_clear (&d->lock);
  g_cond_clear (&d->cond);
  g_free (d);
}

void
gmd_test_daemon_stop (GmdTestDaemon *d)
{
  if (!d->exited)
    {
      gmd_test_daemon_signal (d, SIGTERM);
      gmd_test_daemon_wait_exit_ok (d);
    }
  g_assert_false (g_file_test (d->socket_path, G_FILE_TEST_EXISTS));
  daemon_free (d);
}

/* ---- raw socket client ------------------------------------------------------------ */

struct _GmdTestClient {
  int fd;
  GString *inbuf;
  GQueue pending;         /* JsonObject*: read but not yet asked for */
  JsonObject *hello;      /* the hello message, kept for gmd_test_client_hello's result */
};

GmdTestClient *
gmd_test_client_connect (const char *socket_path)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  g_assert_cmpuint (strlen (socket_path), <, sizeof addr.sun_path);
  strcpy (addr.sun_path, socket_path);

  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  g_assert_cmpint (fd, >=, 0);
  if (connect (fd, (struct sockaddr *) &addr, sizeof addr) != 0)
    FAIL ("connect(%s): %s", socket_path, g_strerror (errno));

  GmdTestClient *c = g_new0 (GmdTestClient, 1);
  c->fd = fd;
  c->inbuf = g_string_new (NULL);
  g_queue_init (&c->pending);
  return c;
}

JsonObject *
gmd_test_client_hello (GmdTestClient *c)
{
  JsonObject *msg = gmd_test_client_call (
      c, "0", "{\"type\":\"hello\",\"id\":0,\"version\":1,\"client\":\"gemmad-tests/1\"}");
  if (c->hello != NULL)
    json_object_unref (c->hello);
  c->hello = msg;
  JsonObject *result = gmd_test_assert_result (msg);
  g_assert_cmpint (json_object_get_int_member (result, "version"), ==, 1);
  g_assert_cmpstr (json_object_get_string_member (result, "server"), ==, "gemmad");
  return result;
}

GmdTestClient *
gmd_test_client_new (GmdTestDaemon *d)
{
  GmdTestClient *c = gmd_test_client_connect (d->socket_path);
  gmd_test_client_hello (c);
  return c;
}

void
gmd_test_client_free (GmdTestClient *c)
{
  if (c == NULL)
    return;
  close (c->fd);
  if (c->hello != NULL)
    json_object_unref (c->hello);
  g_queue_clear_full (&c->pending, (GDestroyNotify) json_object_unref);
  g_string_free (c->inbuf, TRUE);
  g_free (c);
}

static void
write_all (int fd, const char *data, gsize len)
{
  while (len > 0)
    {
      ssize_t n = send (fd, data, len, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        FAIL ("send: %s", g_strerror (errno));
      data += n;
      len -= n;
    }
}

void
gmd_test_client_send_raw (GmdTestClient *c, const void *data, gsize len)
{
  write_all (c->fd, data, len);
}

void
gmd_test_client_send (GmdTestClient *c, const char *line)
{
  gmd_test_client_send_fds (c, line, NULL, 0);
}

void
gmd_test_client_send_fds (GmdTestClient *c, const char *line, const int *fds, guint n_fds)
{
  g_autofree char *full = g_strconcat (line, "\n", NULL);
  gsize len = strlen (full);
  g_assert_null (memchr (line, '\n', len - 1));
  if (n_fds == 0)
    {
      write_all (c->fd, full, len);
      return;
    }

  gsize control_len = CMSG_SPACE (sizeof (int) * n_fds);
  g_autofree char *control = g_malloc0 (control_len);
  struct iovec iov = { .iov_base = full, .iov_len = len };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = control, .msg_controllen = control_len };
  struct cmsghdr *cm = CMSG_FIRSTHDR (&msg);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN (sizeof (int) * n_fds);
  memcpy (CMSG_DATA (cm), fds, sizeof (int) * n_fds);
  ssize_t n;
  do
    n = sendmsg (c->fd, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    FAIL ("sendmsg: %s", g_strerror (errno));
  /* A short write: the rest goes without fds (protocol §5). */
  if ((gsize) n < len)
    write_all (c->fd, full + n, len - n);
}

void
gmd_test_client_sendf (GmdTestClient *c, const char *format, ...)
{
  va_list ap;
  va_start (ap, format);
  g_autofree char *line = g_strdup_vprintf (format, ap);
  va_end (ap);
  gmd_test_client_send (c, line);
}

void
gmd_test_client_shutdown_write (GmdTestClient *c)
{
  g_assert_cmpint (shutdown (c->fd, SHUT_WR), ==, 0);
}

/* Reads one line from the socket (without the newline); NULL on EOF. Fails on timeout. */
static char *
read_line (GmdTestClient *c)
{
  gint64 deadline = g_get_monotonic_time () + GMD_TEST_TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;
  for (;;)
    {
      char *nl = memchr (c->inbuf->str, '\n', c->inbuf->len);
      if (nl != NULL)
        {
          gsize len = nl - c->inbuf->str;
          char *line = g_strndup (c->inbuf->str, len);
          g_string_erase (c->inbuf, 0, len + 1);
          return line;
        }
      gint64 left_ms = (deadline - g_get_monotonic_time ()) / 1000;
      if (left_ms <= 0)
        FAIL ("no complete message from gemmad within %d ms (buffered: \"%.200s\")",
              GMD_TEST_TIMEOUT_MS, c->inbuf->str);
      struct pollfd pfd = { .fd = c->fd, .events = POLLIN };
      int r = poll (&pfd, 1, (int) left_ms);
      if (r < 0 && errno == EINTR)
        continue;
      g_assert_cmpint (r, >=, 0);
      if (r == 0)
        continue;
      char buf[65536];
      ssize_t n = recv (c->fd, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && errno == ECONNRESET)
        n = 0;
      if (n < 0)
        FAIL ("recv: %s", g_strerror (errno));
      if (n == 0)
        {
          if (c->inbuf->len > 0)
            FAIL ("connection closed in the middle of a line: \"%.200s\"", c->inbuf->str);
          return NULL;
        }
      g_string_append_len (c->inbuf, buf, n);
    }
}

static JsonObject *
read_message_from_socket (GmdTestClient *c)
{
  for (;;)
    {
      g_autofree char *line = read_line (c);
      if (line == NULL)
        FAIL ("gemmad closed the connection while a message was expected");
      if (*line == '\0')
        FAIL ("gemmad sent an empty line");
      g_autoptr (JsonParser) parser = json_parser_new ();
      g_autoptr (GError) error = NULL;
      if (!json_parser_load_from_data (parser, line, -1, &error))
        FAIL ("gemmad sent a line that is not JSON (%s): %s", error->message, line);
      JsonNode *root = json_parser_get_root (parser);
      if (!JSON_NODE_HOLDS_OBJECT (root))
        FAIL ("gemmad sent a JSON value that is not an object: %s", line);
      JsonObject *obj = json_object_ref (json_node_get_object (root));
      if (!json_object_has_member (obj, "id"))
        FAIL ("gemmad sent a message without \"id\": %s", line);
      if (g_test_verbose ())
        g_printerr ("  recv| %s\n", line);
      return obj;
    }
}

static char *
object_to_string (JsonObject *obj)
{
  g_autoptr (JsonNode) node = json_node_init_object (json_node_alloc (), obj);
  return json_to_string (node, FALSE);
}

static char *
message_id_json (JsonObject *msg)
{
  JsonNode *id = json_object_get_member (msg, "id");
  return json_to_string (id, FALSE);
}

JsonObject *
gmd_test_client_read (GmdTestClient *c)
{
  JsonObject *msg = g_queue_pop_head (&c->pending);
  return msg != NULL ? msg : read_message_from_socket (c);
}

JsonObject *
gmd_test_client_read_id (GmdTestClient *c, const char *id_json)
{
  for (GList *l = c->pending.head; l != NULL; l = l->next)
    {
      g_autofree char *id = message_id_json (l->data);
      if (g_strcmp0 (id, id_json) == 0)
        {
          JsonObject *msg = l->data;
          g_queue_delete_link (&c->pending, l);
          return msg;
        }
    }
  for (;;)
    {
      JsonObject *msg = read_message_from_socket (c);
      g_autofree char *id = message_id_json (msg);
      if (g_strcmp0 (id, id_json) == 0)
        return msg;
      g_queue_push_tail (&c->pending, msg);
    }
}

void
gmd_test_client_expect_eof (GmdTestClient *c)
{
  JsonObject *left = g_queue_peek_head (&c->pending);
  if (left != NULL)
    {
      g_autofree char *s = object_to_string (left);
      FAIL ("expected the connection to end, but a message is left: %s", s);
    }
  g_autofree char *line = read_line (c);
  if (line != NULL)
    FAIL ("expected the connection to end, got: %s", line);
}

JsonObject *
gmd_test_client_call (GmdTestClient *c, const char *id_json, const char *format, ...)
{
  va_list ap;
  va_start (ap, format);
  g_autofree char *line = g_strdup_vprintf (format, ap);
  va_end (ap);
  gmd_test_client_send (c, line);
  return gmd_test_client_read_id (c, id_json);
}

JsonObject *
gmd_test_assert_error (JsonObject *msg, const char *code)
{
  g_autofree char *s = object_to_string (msg);
  if (!json_object_has_member (msg, "error"))
    FAIL ("expected an error \"%s\", got: %s", code, s);
  JsonObject *err = json_object_get_object_member (msg, "error");
  if (err == NULL || !json_object_has_member (err, "code") ||
      !json_object_has_member (err, "message"))
    FAIL ("malformed error (needs code and message): %s", s);
  if (g_strcmp0 (json_object_get_string_member (err, "code"), code) != 0)
    FAIL ("expected error code \"%s\", got: %s", code, s);
  const char *message = json_object_get_string_member (err, "message");
  if (message == NULL || *message == '\0' || strchr (message, '\n') != NULL)
    FAIL ("error message must be one non-empty line: %s", s);
  g_test_message ("got the expected error: %s", s);
  return err;
}

JsonObject *
gmd_test_assert_result (JsonObject *msg)
{
  if (!json_object_has_member (msg, "result"))
    {
      g_autofree char *s = object_to_string (msg);
      FAIL ("expected a result, got: %s", s);
    }
  JsonObject *result = json_object_get_object_member (msg, "result");
  g_assert_nonnull (result);
  return result;
}

void
gmd_test_stream_free (GmdTestStream *s)
{
  if (s == NULL)
    return;
  g_free (s->id_json);
  g_free (s->request);
  g_string_free (s->text, TRUE);
  g_string_free (s->thinking, TRUE);
  g_ptr_array_unref (s->states);
  if (s->done)
    json_object_unref (s->done);
  if (s->error)
    json_object_unref (s->error);
  g_free (s);
}

static GmdTestStream *
stream_new (const char *id_json)
{
  GmdTestStream *s = g_new0 (GmdTestStream, 1);
  s->id_json = g_strdup (id_json);
  s->text = g_string_new (NULL);
  s->thinking = g_string_new (NULL);
  s->states = g_ptr_array_new_with_free_func (g_free);
  return s;
}

typedef enum {
  FED_MORE,
  FED_PIECE,
  FED_TERMINAL,
} FeedResult;

/* Applies one message of the stream, checking the protocol's order rules. Takes msg. */
static FeedResult
stream_feed (GmdTestStream *s, JsonObject *msg)
{
  g_autofree char *str = object_to_string (msg);
  FeedResult r = FED_MORE;

  if (s->done != NULL || s->error != NULL)
    FAIL ("message after the terminal message of %s: %s", s->id_json, str);

  if (json_object_has_member (msg, "error"))
    {
      if (s->request != NULL)
        FAIL ("an accepted stream must end with done, not error: %s", str);
      gmd_test_assert_error (msg, json_object_get_string_member (
                                      json_object_get_object_member (msg, "error"), "code"));
      s->error = json_object_ref (json_object_get_object_member (msg, "error"));
      r = FED_TERMINAL;
    }
  else if (json_object_has_member (msg, "result"))
    FAIL ("a stream request got a result: %s", str);
  else if (json_object_has_member (msg, "event"))
    {
      const char *event = json_object_get_string_member (msg, "event");
      if (g_strcmp0 (event, "accepted") == 0)
        {
          if (s->request != NULL)
            FAIL ("second accepted: %s", str);
          const char *handle = json_object_get_string_member (msg, "request");
          if (handle == NULL || !g_str_has_prefix (handle, "r-"))
            FAIL ("accepted without a request handle r-N: %s", str);
          s->request = g_strdup (handle);
        }
      else if (s->request == NULL)
        FAIL ("event before accepted: %s", str);
      else if (g_strcmp0 (event, "progress") == 0)
        {
          const char *state = json_object_get_string_member (msg, "state");
          static const char *const known[] = { "queued", "loading", "encoding", "prefill",
                                               "generating", NULL };
          if (state == NULL || !g_strv_contains (known, state))
            FAIL ("progress with an unknown state: %s", str);
          if (g_str_equal (state, "queued") && !json_object_has_member (msg, "queue_position"))
            FAIL ("queued progress without queue_position: %s", str);
          if (g_str_equal (state, "prefill") && (!json_object_has_member (msg, "prompt_done") ||
                                                 !json_object_has_member (msg, "prompt_total")))
            FAIL ("prefill progress without prompt_done/prompt_total: %s", str);
          if (s->n_pieces > 0)
            FAIL ("progress after the first piece: %s", str);
          g_ptr_array_add (s->states, g_strdup (state));
        }
      else if (g_strcmp0 (event, "piece") == 0 || g_strcmp0 (event, "thinking") == 0)
        {
          gint64 seq = json_object_get_int_member_with_default (msg, "seq", -1);
          const char *text = json_object_get_string_member_with_default (msg, "text", NULL);
          if (seq != (gint64) s->n_pieces)
            FAIL ("expected seq %u: %s", s->n_pieces, str);
          if (text == NULL || *text == '\0' || !g_utf8_validate (text, -1, NULL))
            FAIL ("piece text must be non-empty UTF-8: %s", str);
          s->n_pieces++;
          g_string_append (g_str_equal (event, "piece") ? s->text : s->thinking, text);
          r = FED_PIECE;
        }
      else if (g_strcmp0 (event, "done") == 0)
        {
          static const char *const keys[] = {
            "stop_reason", "prompt_tokens", "cached_tokens", "generated_tokens",
            "thinking_tokens", "pieces", "context_used", "context_size", "seed",
            "queue_seconds", "load_seconds", "encode_seconds", "prefill_seconds",
            "decode_seconds", "total_seconds", NULL };
          for (guint i = 0; keys[i] != NULL; i++)
            if (!json_object_has_member (msg, keys[i]))
              FAIL ("done without \"%s\": %s", keys[i], str);
          if (json_object_get_int_member (msg, "pieces") != (gint64) s->n_pieces)
            FAIL ("done.pieces is not the number of pieces received (%u): %s", s->n_pieces, str);
          const char *reason = json_object_get_string_member (msg, "stop_reason");
          if (g_strcmp0 (reason, "cancelled") == 0 && !json_object_has_member (msg, "cancel_reason"))
            FAIL ("cancelled without cancel_reason: %s", str);
          if (g_strcmp0 (reason, "error") == 0 && (!json_object_has_member (msg, "error_code") ||
                                                   !json_object_has_member (msg, "error_message")))
            FAIL ("stop_reason error without error_code/error_message: %s", str);
          s->done = json_object_ref (msg);
          r = FED_TERMINAL;
        }
      /* Unknown events are ignored (protocol §2: later additions). */
    }
  else
    FAIL ("message that is neither result, event nor error: %s", str);

  json_object_unref (msg);
  return r;
}

static FeedResult
stream_read_one (GmdTestClient *c, GmdTestStream *s)
{
  JsonObject *msg = gmd_test_client_read_id (c, s->id_json);
  return stream_feed (s, msg);
}

void
gmd_test_client_collect_rest (GmdTestClient *c, GmdTestStream *s)
{
  while (s->done == NULL && s->error == NULL)
    stream_read_one (c, s);
}

GmdTestStream *
gmd_test_client_collect (GmdTestClient *c, const char *id_json)
{
  GmdTestStream *s = stream_new (id_json);
  gmd_test_client_collect_rest (c, s);
  return s;
}

GmdTestStream *
gmd_test_client_collect_until_piece (GmdTestClient *c, const char *id_json)
{
  GmdTestStream *s = stream_new (id_json);
  for (;;)
    {
      FeedResult r = stream_read_one (c, s);
      if (r == FED_PIECE)
        return s;
      if (r == FED_TERMINAL)
        {
          g_autofree char *e = s->error ? object_to_string (s->error) : object_to_string (s->done);
          FAIL ("request %s ended before its first piece: %s", id_json, e);
        }
    }
}

GmdTestStream *
gmd_test_client_collect_until_accepted (GmdTestClient *c, const char *id_json)
{
  GmdTestStream *s = stream_new (id_json);
  while (s->request == NULL)
    if (stream_read_one (c, s) == FED_TERMINAL)
      {
        g_autofree char *e = object_to_string (s->error);
        FAIL ("request %s was not accepted: %s", id_json, e);
      }
  return s;
}

char *
gmd_test_json_string (const char *s)
{
  g_autoptr (JsonNode) node = json_node_init_string (json_node_alloc (), s);
  return json_to_string (node, FALSE);
}

GmdTestStream *
gmd_test_client_generate (GmdTestClient *c, const char *id_json, const char *prompt,
                          const char *options_json)
{
  g_autofree char *p = gmd_test_json_string (prompt);
  if (options_json != NULL)
    gmd_test_client_sendf (c, "{\"type\":\"generate\",\"id\":%s,\"prompt\":%s,\"options\":%s}",
                           id_json, p, options_json);
  else
    gmd_test_client_sendf (c, "{\"type\":\"generate\",\"id\":%s,\"prompt\":%s}", id_json, p);
  return gmd_test_client_collect (c, id_json);
}

gint64
gmd_test_done_int (GmdTestStream *s, const char *key)
{
  g_assert_nonnull (s->done);
  g_assert_true (json_object_has_member (s->done, key));
  return json_object_get_int_member (s->done, key);
}

const char *
gmd_test_done_str (GmdTestStream *s, const char *key)
{
  g_assert_nonnull (s->done);
  return json_object_get_string_member_with_default (s->done, key, NULL);
}

/* The first answer of this process: every daemon runs the same binary and model, so the
 * same greedy request gives the same text on all of them. */
static char *still_serves_reference;

void
gmd_test_assert_still_serves (GmdTestDaemon *d)
{
  GmdTestClient *c = gmd_test_client_new (d);
  g_autoptr (GmdTestStream) s = gmd_test_client_generate (
      c, "\"check\"", "Are you still there?",
      "{\"max_tokens\":8,\"temperature\":0,\"seed\":1}");
  gmd_test_client_free (c);

  if (s->error != NULL)
    {
      g_autofree char *e = object_to_string (s->error);
      FAIL ("the service no longer serves a normal request: %s", e);
    }
  g_assert_cmpstr (gmd_test_done_str (s, "stop_reason"), ==, "max_tokens");
  g_assert_cmpint (gmd_test_done_int (s, "generated_tokens"), ==, 8);
  g_assert_cmpint (gmd_test_done_int (s, "cached_tokens"), <=, gmd_test_done_int (s, "prompt_tokens"));
  if (still_serves_reference == NULL)
    still_serves_reference = g_strdup (s->text->str);
  else
    g_assert_cmpstr (s->text->str, ==, still_serves_reference);
}

/* ---- D-Bus helpers ---------------------------------------------------------------- */

char *
gmd_test_object_path (GDBusConnection *connection, const char *kind, const char *token)
{
  g_autofree char *sender = g_strdup (g_dbus_connection_get_unique_name (connection) + 1);
  g_strdelimit (sender, ".", '_');
  return g_strdup_printf ("/org/gemmad/Gemmad1/%s/%s/%s", kind, sender, token);
}

GVariant *
gmd_test_text_content (const char *text)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE ("aa{sv}"));
  g_variant_builder_open (&b, G_VARIANT_TYPE ("a{sv}"));
  g_variant_builder_add (&b, "{sv}", "type", g_variant_new_string ("text"));
  g_variant_builder_add (&b, "{sv}", "text", g_variant_new_string (text));
  g_variant_builder_close (&b);
  return g_variant_builder_end (&b);
}

void
gmd_test_assert_dbus_error (const GError *error, const char *name)
{
  g_autofree char *full = strchr (name, '.') ? g_strdup (name)
                                             : g_strconcat (GMD_ERROR_PREFIX, name, NULL);
  if (error == NULL)
    FAIL ("expected the D-Bus error %s, but the call succeeded", full);
  g_autofree char *remote = g_dbus_error_get_remote_error (error);
  if (g_strcmp0 (remote, full) != 0)
    FAIL ("expected the D-Bus error %s, got %s: %s", full, remote ? remote : "(local)",
          error->message);
  if (strchr (error->message, '\n') != NULL)
    FAIL ("error message must be one line: %s", error->message);
  g_test_message ("got the expected error: %s", error->message);
}

/* Orders Finished signals across connections (all dispatched in the default context). */
static guint64 finished_counter;

static void
on_request_signal (GDBusConnection *connection, const char *sender, const char *path,
                   const char *iface, const char *signal, GVariant *params, gpointer user_data)
{
  GmdTestDbusStream *s = user_data;

  if (s->n_finished > 0)
    {
      s->seq_error = TRUE;
      g_test_message ("signal %s after Finished on %s", signal, path);
      return;
    }
  if (g_str_equal (signal, "Piece") || g_str_equal (signal, "ThinkingPiece"))
    {
      guint32 seq;
      const char *text;
      g_variant_get (params, "(u&s)", &seq, &text);
      if (seq != s->n_pieces || *text == '\0')
        {
          s->seq_error = TRUE;
          g_test_message ("%s: seq %u (expected %u), text \"%s\"", signal, seq, s->n_pieces, text);
        }
      s->n_pieces++;
      g_string_append (g_str_equal (signal, "Piece") ? s->text : s->thinking, text);
    }
  else if (g_str_equal (signal, "Progress"))
    {
      g_autoptr (GVariant) dict = g_variant_get_child_value (params, 0);
      const char *state = NULL;
      if (!g_variant_lookup (dict, "state", "&s", &state))
        s->seq_error = TRUE;
      if (s->n_pieces > 0)
        s->seq_error = TRUE;
      g_ptr_array_add (s->states, g_strdup (state ? state : "(none)"));
    }
  else if (g_str_equal (signal, "Finished"))
    {
      s->summary = g_variant_get_child_value (params, 0);
      s->n_finished++;
      s->finished_order = ++finished_counter;
    }
}

GmdTestDbusStream *
gmd_test_dbus_stream_subscribe (GDBusConnection *connection, const char *token)
{
  GmdTestDbusStream *s = g_new0 (GmdTestDbusStream, 1);
  s->connection = g_object_ref (connection);
  s->path = gmd_test_object_path (connection, "request", token);
  s->text = g_string_new (NULL);
  s->thinking = g_string_new (NULL);
  s->states = g_ptr_array_new_with_free_func (g_free);
  s->subscription = g_dbus_connection_signal_subscribe (
      connection, GMD_BUS_NAME, GMD_REQUEST_IFACE, NULL, s->path, NULL,
      G_DBUS_SIGNAL_FLAGS_NONE, on_request_signal, s, NULL);
  return s;
}

void
gmd_test_dbus_stream_free (GmdTestDbusStream *s)
{
  if (s == NULL)
    return;
  g_dbus_connection_signal_unsubscribe (s->connection, s->subscription);
  g_object_unref (s->connection);
  g_free (s->path);
  g_string_free (s->text, TRUE);
  g_string_free (s->thinking, TRUE);
  g_ptr_array_unref (s->states);
  g_clear_pointer (&s->summary, g_variant_unref);
  g_free (s);
}

GVariant *
gmd_test_dbus_call (GDBusConnection *connection, const char *path, const char *iface,
                    const char *method, GVariant *params, const char *reply_type,
                    GError **error)
{
  return g_dbus_connection_call_sync (connection, GMD_BUS_NAME, path, iface, method, params,
                                      reply_type ? G_VARIANT_TYPE (reply_type) : NULL,
                                      G_DBUS_CALL_FLAGS_NO_AUTO_START, GMD_TEST_TIMEOUT_MS,
                                      NULL, error);
}

GmdTestDbusStream *
gmd_test_dbus_generate (GDBusConnection *connection, const char *token, const char *prompt,
                        GVariant *options)
{
  GmdTestDbusStream *s = gmd_test_dbus_stream_subscribe (connection, token);
  GVariantDict dict;
  if (options != NULL)
    g_variant_ref_sink (options);
  g_variant_dict_init (&dict, options);
  if (options != NULL)
    g_variant_unref (options);
  g_variant_dict_insert (&dict, "handle_token", "s", token);

  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) reply = gmd_test_dbus_call (
      connection, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "Generate",
      g_variant_new ("(@aa{sv}@a{sv})", gmd_test_text_content (prompt), g_variant_dict_end (&dict)),
      "(o)", &error);
  if (error != NULL)
    FAIL ("Generate failed: %s", error->message);
  const char *path;
  g_variant_get (reply, "(&o)", &path);
  g_assert_cmpstr (path, ==, s->path);
  return s;
}

static void
wait_until (gboolean (*cond) (gpointer), gpointer data, guint timeout_ms, const char *what)
{
  gboolean timed_out = FALSE;
  guint id = g_timeout_add (timeout_ms, on_timeout_flag, &timed_out);
  while (!cond (data) && !timed_out)
    g_main_context_iteration (NULL, TRUE);
  if (!timed_out)
    g_source_remove (id);
  else if (!cond (data))
    FAIL ("timeout (%u ms) waiting for %s", timeout_ms, what);
}

static gboolean
flag_is_set (gpointer data)
{
  return *(const gboolean *) data;
}

void
gmd_test_wait_flag (const gboolean *flag, guint timeout_ms, const char *what)
{
  wait_until (flag_is_set, (gpointer) flag, timeout_ms, what);
}

static gboolean
stream_finished (gpointer data)
{
  return ((GmdTestDbusStream *) data)->n_finished > 0;
}

static gboolean
stream_has_piece (gpointer data)
{
  GmdTestDbusStream *s = data;
  return s->n_pieces > 0 || s->n_finished > 0;
}

void
gmd_test_dbus_stream_wait_finished (GmdTestDbusStream *s)
{
  wait_until (stream_finished, s, GMD_TEST_TIMEOUT_MS, "Finished");
  /* Signals queued right behind Finished would be a protocol error: drain them. */
  while (g_main_context_iteration (NULL, FALSE))
    ;
  g_assert_false (s->seq_error);
  g_assert_cmpuint (s->n_finished, ==, 1);
  g_assert_cmpuint (gmd_test_summary_uint (s->summary, "pieces"), ==, s->n_pieces);
  g_autofree char *str = g_variant_print (s->summary, FALSE);
  g_test_message ("Finished %s: %s", s->path, str);
}

void
gmd_test_dbus_stream_wait_piece (GmdTestDbusStream *s)
{
  wait_until (stream_has_piece, s, GMD_TEST_TIMEOUT_MS, "the first Piece");
  if (s->n_pieces == 0)
    {
      g_autofree char *str = g_variant_print (s->summary, FALSE);
      FAIL ("request %s finished before its first Piece: %s", s->path, str);
    }
}

const char *
gmd_test_summary_str (GVariant *summary, const char *key)
{
  const char *value = NULL;
  if (!g_variant_lookup (summary, key, "&s", &value))
    {
      g_autofree char *str = g_variant_print (summary, FALSE);
      FAIL ("summary has no string \"%s\": %s", key, str);
    }
  return value;
}

guint64
gmd_test_summary_uint (GVariant *summary, const char *key)
{
  g_autoptr (GVariant) v = g_variant_lookup_value (summary, key, NULL);
  if (v != NULL && g_variant_is_of_type (v, G_VARIANT_TYPE_UINT32))
    return g_variant_get_uint32 (v);
  if (v != NULL && g_variant_is_of_type (v, G_VARIANT_TYPE_UINT64))
    return g_variant_get_uint64 (v);
  g_autofree char *str = g_variant_print (summary, FALSE);
  FAIL ("summary has no unsigned \"%s\": %s", key, str);
  return 0;
}

GVariant *
gmd_test_manager_property (GDBusConnection *connection, const char *name)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) reply = gmd_test_dbus_call (
      connection, GMD_MANAGER_PATH, "org.freedesktop.DBus.Properties", "Get",
      g_variant_new ("(ss)", GMD_MANAGER_IFACE, name), "(v)", &error);
  g_assert_no_error (error);
  GVariant *value;
  g_variant_get (reply, "(v)", &value);
  return value;
}

/* ---- small media samples ---------------------------------------------------------- */

static guint32
crc32_png (const guint8 *data, gsize len)
{
  guint32 crc = 0xffffffffu;
  for (gsize i = 0; i < len; i++)
    {
      crc ^= data[i];
      for (int k = 0; k < 8; k++)
        crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
    }
  return crc ^ 0xffffffffu;
}

static void
png_chunk (GByteArray *out, const char *type, const guint8 *data, guint32 len)
{
  guint8 be[4] = { len >> 24, len >> 16, len >> 8, len };
  g_byte_array_append (out, be, 4);
  gsize start = out->len;
  g_byte_array_append (out, (const guint8 *) type, 4);
  if (len > 0)
    g_byte_array_append (out, data, len);
  guint32 crc = crc32_png (out->data + start, 4 + len);
  guint8 cb[4] = { crc >> 24, crc >> 16, crc >> 8, crc };
  g_byte_array_append (out, cb, 4);
}

GBytes *
gmd_test_png_bytes (void)
{
  /* 1×1 8-bit grey: one scanline (filter 0, pixel 0) in a stored zlib block. */
  static const guint8 sig[8] = { 0x89, 'P', 'N', 'G', 0x0d, 0x0a, 0x1a, 0x0a };
  static const guint8 ihdr[13] = { 0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0 };
  static const guint8 idat[] = { 0x78, 0x01, 0x01, 0x02, 0x00, 0xfd, 0xff, 0x00, 0x00,
                                 0x00, 0x02, 0x00, 0x01 };
  GByteArray *out = g_byte_array_new ();
  g_byte_array_append (out, sig, sizeof sig);
  png_chunk (out, "IHDR", ihdr, sizeof ihdr);
  png_chunk (out, "IDAT", idat, sizeof idat);
  png_chunk (out, "IEND", NULL, 0);
  return g_byte_array_free_to_bytes (out);
}

static void
put_le (GByteArray *out, guint32 v, int n)
{
  guint8 b[4] = { v, v >> 8, v >> 16, v >> 24 };
  g_byte_array_append (out, b, n);
}

GBytes *
gmd_test_wav_bytes (void)
{
  /* 0.1 s of 16 kHz mono 16-bit silence. */
  const guint32 n_samples = 1600, data_bytes = n_samples * 2;
  GByteArray *out = g_byte_array_new ();
  g_byte_array_append (out, (const guint8 *) "RIFF", 4);
  put_le (out, 36 + data_bytes, 4);
  g_byte_array_append (out, (const guint8 *) "WAVEfmt ", 8);
  put_le (out, 16, 4);
  put_le (out, 1, 2);          /* PCM */
  put_le (out, 1, 2);          /* mono */
  put_le (out, 16000, 4);
  put_le (out, 32000, 4);      /* byte rate */
  put_le (out, 2, 2);          /* block align */
  put_le (out, 16, 2);         /* bits */
  g_byte_array_append (out, (const guint8 *) "data", 4);
  put_le (out, data_bytes, 4);
  g_autofree guint8 *silence = g_malloc0 (data_bytes);
  g_byte_array_append (out, silence, data_bytes);
  return g_byte_array_free_to_bytes (out);
}

gboolean
gmd_test_strv_contains (GVariant *as, const char *s)
{
  g_autofree const char **strv = g_variant_get_strv (as, NULL);
  return g_strv_contains (strv, s);
}

int
gmd_test_temp_fd (GmdTestDaemon *d, const void *data, gsize len, int flags)
{
  g_autofree char *path = g_build_filename (d->tmpdir, "media-XXXXXX", NULL);
  int wfd = g_mkstemp (path);
  g_assert_cmpint (wfd, >=, 0);
  g_assert_cmpint (write (wfd, data, len), ==, (ssize_t) len);
  close (wfd);
  int fd = open (path, flags | O_CLOEXEC);
  g_assert_cmpint (fd, >=, 0);
  unlink (path);
  return fd;
}

gboolean
gmd_test_pipe_reader_closed (int write_fd, guint timeout_ms)
{
  /* With no events asked for, poll() wakes only for POLLERR, which a pipe's write end gets
   * when its last reader closes. */
  struct pollfd pfd = { .fd = write_fd, .events = 0 };
  int r;
  do
    r = poll (&pfd, 1, (int) timeout_ms);
  while (r < 0 && errno == EINTR);
  return r == 1 && (pfd.revents & POLLERR) != 0;
}

gboolean
gmd_test_json_strv_contains (JsonObject *o, const char *member, const char *s)
{
  JsonArray *a = json_object_get_array_member (o, member);
  g_assert_nonnull (a);
  for (guint i = 0; i < json_array_get_length (a); i++)
    if (g_strcmp0 (json_array_get_string_element (a, i), s) == 0)
      return TRUE;
  return FALSE;
}

GBytes *
gmd_test_data_file (const char *env_dir, const char *name)
{
  g_autofree char *path = g_build_filename (gmd_test_env (env_dir), name, NULL);
  g_autoptr (GError) error = NULL;
  char *data = NULL;
  gsize len = 0;
  g_file_get_contents (path, &data, &len, &error);
  g_assert_no_error (error);
  return g_bytes_new_take (data, len);
}

guint
gmd_test_count_states (GPtrArray *states, const char *state)
{
  guint n = 0;
  for (guint i = 0; i < states->len; i++)
    n += g_strcmp0 (states->pdata[i], state) == 0;
  return n;
}
