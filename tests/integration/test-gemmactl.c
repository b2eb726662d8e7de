/* test-gemmactl.c — the command-line tools against the real gemmad: gemmactl (output,
 * --json, stdin, exit codes of the contract) and the `gdbus call … Respond` example of
 * docs/dbus-api.md §2 on the private bus. */
#include "gmd-test-harness.h"

#include <signal.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  int status;      /* exit status, or 128 + signal */
  char *out;
  char *err;
} ToolRun;

static void
tool_run_clear (ToolRun *r)
{
  g_free (r->out);
  g_free (r->err);
}

typedef struct {
  gboolean done;
  char *out;
  char *err;
} Communicate;

static void
on_communicated (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Communicate *c = user_data;
  g_autoptr (GError) error = NULL;
  g_subprocess_communicate_utf8_finish (G_SUBPROCESS (source), result, &c->out, &c->err, &error);
  g_assert_no_error (error);
  c->done = TRUE;
}

static gboolean
on_deadline (gpointer user_data)
{
  *(gboolean *) user_data = TRUE;
  return G_SOURCE_REMOVE;
}

/* Starts a tool (stdin from input, or /dev/null when NULL). */
static GSubprocess *
tool_spawn (GmdTestDaemon *d, const char *const *argv, gboolean with_stdin,
            const char *socket_env)
{
  g_autoptr (GSubprocessLauncher) l = g_subprocess_launcher_new (
      G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE |
      (with_stdin ? G_SUBPROCESS_FLAGS_STDIN_PIPE : 0));
  g_subprocess_launcher_setenv (l, "DBUS_SESSION_BUS_ADDRESS", gmd_test_daemon_bus_address (d), TRUE);
  g_subprocess_launcher_setenv (l, "XDG_RUNTIME_DIR", gmd_test_daemon_tmpdir (d), TRUE);
  if (socket_env != NULL)
    g_subprocess_launcher_setenv (l, "GEMMAD_SOCKET", socket_env, TRUE);
  else
    g_subprocess_launcher_unsetenv (l, "GEMMAD_SOCKET");
  g_autofree char *cmd = g_strjoinv (" ", (char **) argv);
  g_test_message ("running: %s", cmd);
  g_autoptr (GError) error = NULL;
  GSubprocess *p = g_subprocess_launcher_spawnv (l, argv, &error);
  g_assert_no_error (error);
  return p;
}

/* Feeds input, collects stdout/stderr and waits for the exit, with a deadline. */
static void
tool_finish (GSubprocess *p, const char *input, ToolRun *r)
{
  Communicate c = { 0 };
  gboolean late = FALSE;
  g_subprocess_communicate_utf8_async (p, input, NULL, on_communicated, &c);
  guint t = g_timeout_add (GMD_TEST_TIMEOUT_MS, on_deadline, &late);
  while (!c.done && !late)
    g_main_context_iteration (NULL, TRUE);
  if (!c.done)
    {
      g_subprocess_force_exit (p);
      g_error ("the tool did not finish within %d ms", GMD_TEST_TIMEOUT_MS);
    }
  g_source_remove (t);
  g_autoptr (GError) error = NULL;
  g_subprocess_wait (p, NULL, &error);
  g_assert_no_error (error);
  r->status = g_subprocess_get_if_exited (p) ? g_subprocess_get_exit_status (p)
                                             : 128 + g_subprocess_get_term_sig (p);
  r->out = c.out;
  r->err = c.err;
  g_test_message ("exit %d\n--- stdout:\n%s\n--- stderr:\n%s", r->status, r->out, r->err);
}

static void
tool_run (GmdTestDaemon *d, const char *const *argv, const char *input, ToolRun *r)
{
  g_autoptr (GSubprocess) p = tool_spawn (d, argv, input != NULL, NULL);
  tool_finish (p, input, r);
}

/* argv for gemmactl --socket S -q COMMAND args… (NULL-terminated varargs). */
static GStrv
gemmactl_argv (GmdTestDaemon *d, const char *command, ...)
{
  g_autoptr (GStrvBuilder) b = g_strv_builder_new ();
  g_strv_builder_add (b, gmd_test_env ("GEMMACTL_BIN"));
  g_strv_builder_add (b, "--socket");
  g_strv_builder_add (b, gmd_test_daemon_socket_path (d));
  g_strv_builder_add (b, "-q");
  g_strv_builder_add (b, command);
  va_list ap;
  va_start (ap, command);
  for (const char *a = va_arg (ap, const char *); a != NULL; a = va_arg (ap, const char *))
    g_strv_builder_add (b, a);
  va_end (ap);
  return g_strv_builder_end (b);
}

/* The raw-protocol answer to the same request, for comparison. */
static char *
reference_text (GmdTestDaemon *d, const char *prompt, const char *options_json)
{
  GmdTestClient *c = gmd_test_client_new (d);
  g_autoptr (GmdTestStream) s = gmd_test_client_generate (c, "1", prompt, options_json);
  gmd_test_client_free (c);
  g_assert_nonnull (s->done);
  return g_strdup (s->text->str);
}

/* gemmactl ends the text with a newline unless it already does. */
static void
assert_printed_text (const char *out, const char *text)
{
  g_autofree char *with_nl = g_strconcat (text, "\n", NULL);
  if (g_strcmp0 (out, text) != 0 && g_strcmp0 (out, with_nl) != 0)
    g_error ("gemmactl printed \"%s\", the service's text is \"%s\"", out, text);
}

#define REF_OPTS "{\"max_tokens\":8,\"temperature\":0,\"seed\":1}"

static void
test_generate (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  g_autofree char *ref = reference_text (d, "hi", REF_OPTS);
  ToolRun r = { 0 };

  g_auto (GStrv) argv = gemmactl_argv (d, "generate", "--seed", "1", "--temperature", "0",
                                       "-n", "8", "hi", NULL);
  tool_run (d, (const char *const *) argv, NULL, &r);
  g_assert_cmpint (r.status, ==, 0);
  assert_printed_text (r.out, ref);
  tool_run_clear (&r);

  /* The prompt from stdin (its trailing newline dropped), and with "-". */
  g_auto (GStrv) argv_stdin = gemmactl_argv (d, "generate", "--seed", "1", "--temperature", "0",
                                             "-n", "8", NULL);
  tool_run (d, (const char *const *) argv_stdin, "hi\n", &r);
  g_assert_cmpint (r.status, ==, 0);
  assert_printed_text (r.out, ref);
  tool_run_clear (&r);
  g_auto (GStrv) argv_dash = gemmactl_argv (d, "generate", "--seed", "1", "--temperature", "0",
                                            "-n", "8", "-", NULL);
  tool_run (d, (const char *const *) argv_dash, "hi", &r);
  g_assert_cmpint (r.status, ==, 0);
  assert_printed_text (r.out, ref);
  tool_run_clear (&r);

  /* Several words are one prompt joined by spaces. */
  g_autofree char *ref2 = reference_text (d, "hello there", REF_OPTS);
  g_auto (GStrv) argv_words = gemmactl_argv (d, "generate", "--seed", "1", "--temperature", "0",
                                             "-n", "8", "hello", "there", NULL);
  tool_run (d, (const char *const *) argv_words, NULL, &r);
  g_assert_cmpint (r.status, ==, 0);
  assert_printed_text (r.out, ref2);
  tool_run_clear (&r);

  /* $GEMMAD_SOCKET is used when --socket is not given. */
  const char *env_argv[] = { gmd_test_env ("GEMMACTL_BIN"), "-q", "generate", "--seed", "1",
                             "--temperature", "0", "-n", "8", "hi", NULL };
  g_autoptr (GSubprocess) p = tool_spawn (d, env_argv, FALSE, gmd_test_daemon_socket_path (d));
  tool_finish (p, NULL, &r);
  g_assert_cmpint (r.status, ==, 0);
  assert_printed_text (r.out, ref);
  tool_run_clear (&r);

  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
test_json (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  g_autofree char *ref = reference_text (d, "hi", REF_OPTS);
  ToolRun r = { 0 };

  g_auto (GStrv) argv = gemmactl_argv (d, "generate", "--json", "--seed", "1", "--temperature",
                                       "0", "-n", "8", "hi", NULL);
  tool_run (d, (const char *const *) argv, NULL, &r);
  g_assert_cmpint (r.status, ==, 0);
  g_autoptr (JsonParser) parser = json_parser_new ();
  g_autoptr (GError) error = NULL;
  g_assert_true (json_parser_load_from_data (parser, r.out, -1, &error));
  g_assert_no_error (error);
  JsonObject *o = json_node_get_object (json_parser_get_root (parser));
  g_assert_nonnull (o);
  g_assert_cmpstr (json_object_get_string_member (o, "text"), ==, ref);
  g_assert_cmpstr (json_object_get_string_member (o, "stop_reason"), ==, "max_tokens");
  g_assert_cmpint (json_object_get_int_member (o, "generated_tokens"), ==, 8);
  g_assert_cmpint (json_object_get_int_member (o, "seed"), ==, 1);
  tool_run_clear (&r);

  /* info, as text and as JSON. */
  g_auto (GStrv) info = gemmactl_argv (d, "info", NULL);
  tool_run (d, (const char *const *) info, NULL, &r);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "gemma4"));
  g_assert_nonnull (strstr (r.out, "4096"));
  tool_run_clear (&r);
  g_auto (GStrv) info_json = gemmactl_argv (d, "info", "--json", NULL);
  tool_run (d, (const char *const *) info_json, NULL, &r);
  g_assert_cmpint (r.status, ==, 0);
  g_autoptr (JsonParser) p2 = json_parser_new ();
  g_assert_true (json_parser_load_from_data (p2, r.out, -1, NULL));
  JsonObject *io = json_node_get_object (json_parser_get_root (p2));
  g_assert_cmpstr (json_object_get_string_member (io, "load_state"), ==, "loaded");
  g_assert_cmpint (json_object_get_int_member (io, "context_size"), ==, 4096);
  tool_run_clear (&r);

  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
test_errors (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  ToolRun r = { 0 };

  /* An image that cannot be read: a message naming it, no request, not a connection error. */
  g_autofree char *missing = g_build_filename (gmd_test_daemon_tmpdir (d), "missing.png", NULL);
  g_auto (GStrv) a1 = gemmactl_argv (d, "generate", "--image", missing, "what is it?", NULL);
  tool_run (d, (const char *const *) a1, NULL, &r);
  g_assert_cmpint (r.status, !=, 0);
  g_assert_cmpint (r.status, !=, 3);
  g_assert_cmpint (r.status, <, 128);
  g_assert_nonnull (strstr (r.err, "missing.png"));
  tool_run_clear (&r);
  g_auto (GStrv) a2 = gemmactl_argv (d, "generate", "--image", gmd_test_daemon_tmpdir (d),
                                     "what is it?", NULL);
  tool_run (d, (const char *const *) a2, NULL, &r);
  g_assert_cmpint (r.status, !=, 0);
  g_assert_cmpint (r.status, !=, 3);
  g_assert_cmpint (r.status, <, 128);
  g_assert_cmpstr (r.err, !=, "");
  tool_run_clear (&r);

  /* A file the service refuses (no known format, or no image encoder): 4. */
  g_autofree char *junk = g_build_filename (gmd_test_daemon_tmpdir (d), "junk.png", NULL);
  g_assert_true (g_file_set_contents (junk, "not an image at all", -1, NULL));
  g_auto (GStrv) a3 = gemmactl_argv (d, "generate", "--image", junk, "what is it?", NULL);
  tool_run (d, (const char *const *) a3, NULL, &r);
  g_assert_cmpint (r.status, ==, 4);
  g_assert_cmpstr (r.err, !=, "");
  tool_run_clear (&r);
  g_remove (junk);

  /* A prompt larger than the window: rejected (4). */
  GString *words = g_string_new (NULL);
  for (int i = 0; i < 6000; i++)
    g_string_append (words, "word ");
  g_autofree char *long_prompt = g_string_free (words, FALSE);
  g_auto (GStrv) a4 = gemmactl_argv (d, "generate", NULL);
  tool_run (d, (const char *const *) a4, long_prompt, &r);
  g_assert_cmpint (r.status, ==, 4);
  tool_run_clear (&r);

  /* No service at that path: 3. */
  g_autofree char *nowhere = g_build_filename (gmd_test_daemon_tmpdir (d), "nobody.sock", NULL);
  const char *a5[] = { gmd_test_env ("GEMMACTL_BIN"), "--socket", nowhere, "generate", "hi", NULL };
  tool_run (d, a5, NULL, &r);
  g_assert_cmpint (r.status, ==, 3);
  g_assert_cmpstr (r.err, !=, "");
  tool_run_clear (&r);
  const char *a6[] = { gmd_test_env ("GEMMACTL_BIN"), "--socket", nowhere, "info", NULL };
  tool_run (d, a6, NULL, &r);
  g_assert_cmpint (r.status, ==, 3);
  tool_run_clear (&r);

  /* Usage errors: 2. */
  g_auto (GStrv) a7 = gemmactl_argv (d, "generate", "--no-such-option", "hi", NULL);
  tool_run (d, (const char *const *) a7, NULL, &r);
  g_assert_cmpint (r.status, ==, 2);
  tool_run_clear (&r);
  g_auto (GStrv) a8 = gemmactl_argv (d, "frobnicate", NULL);
  tool_run (d, (const char *const *) a8, NULL, &r);
  g_assert_cmpint (r.status, ==, 2);
  tool_run_clear (&r);

  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* Waits until the uid has an unfinished request in state "generating" (list round trips). */
static void
wait_generating (GmdTestClient *c)
{
  gint64 deadline = g_get_monotonic_time () + GMD_TEST_TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;
  for (guint n = 0;; n++)
    {
      g_autoptr (JsonObject) msg = gmd_test_client_call (c, "\"l\"", "{\"type\":\"list\",\"id\":\"l\"}");
      JsonArray *reqs = json_object_get_array_member (gmd_test_assert_result (msg), "requests");
      for (guint i = 0; i < json_array_get_length (reqs); i++)
        if (g_strcmp0 (json_object_get_string_member (json_array_get_object_element (reqs, i), "state"),
                       "generating") == 0)
          return;
      if (g_get_monotonic_time () > deadline)
        g_error ("no request reached the generating state");
    }
}

static void
test_exit_codes (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start ("--set", "limits.max_queued_per_client=1", NULL);
  GmdTestClient *c = gmd_test_client_new (d);
  ToolRun r = { 0 };

  /* Ctrl-C cancels the answer: 6. */
  g_auto (GStrv) a1 = gemmactl_argv (d, "generate", "-n", "-1", "--temperature", "0",
                                     "Write a long story.", NULL);
  g_autoptr (GSubprocess) p = tool_spawn (d, (const char *const *) a1, FALSE, NULL);
  wait_generating (c);
  g_subprocess_send_signal (p, SIGINT);
  tool_finish (p, NULL, &r);
  g_assert_cmpint (r.status, ==, 6);
  tool_run_clear (&r);

  /* The uid's quota (1) is taken by a running request: busy, 5. */
  gmd_test_client_send (c, "{\"type\":\"generate\",\"id\":1,\"prompt\":\"Write a long story.\","
                           "\"options\":{\"max_tokens\":-1}}");
  g_autoptr (GmdTestStream) running = gmd_test_client_collect_until_piece (c, "1");
  g_auto (GStrv) a2 = gemmactl_argv (d, "generate", "-n", "4", "hi", NULL);
  tool_run (d, (const char *const *) a2, NULL, &r);
  g_assert_cmpint (r.status, ==, 5);
  tool_run_clear (&r);

  /* gemmactl cancel by handle ends it. */
  g_auto (GStrv) a3 = gemmactl_argv (d, "cancel", running->request, NULL);
  tool_run (d, (const char *const *) a3, NULL, &r);
  g_assert_cmpint (r.status, ==, 0);
  tool_run_clear (&r);
  gmd_test_client_collect_rest (c, running);
  g_assert_cmpstr (gmd_test_done_str (running, "stop_reason"), ==, "cancelled");

  /* No model: 7. */
  g_autoptr (JsonObject) un = gmd_test_client_call (c, "2", "{\"type\":\"unload_model\",\"id\":2}");
  gmd_test_assert_result (un);
  g_auto (GStrv) a4 = gemmactl_argv (d, "generate", "-n", "4", "hi", NULL);
  tool_run (d, (const char *const *) a4, NULL, &r);
  g_assert_cmpint (r.status, ==, 7);
  tool_run_clear (&r);
  g_autofree char *model = gmd_test_json_string (gmd_test_tiny_model ());
  g_autoptr (JsonObject) ld = gmd_test_client_call (
      c, "3", "{\"type\":\"load_model\",\"id\":3,\"model_path\":%s}", model);
  gmd_test_assert_result (ld);

  gmd_test_client_free (c);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* docs/dbus-api.md §2, verbatim but for the private bus. */
static void
test_gdbus_call (void)
{
  const char *gdbus = g_getenv ("GDBUS_BIN");
  if (gdbus == NULL || *gdbus == '\0')
    {
      g_test_skip ("gdbus not found");
      return;
    }
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  ToolRun r = { 0 };

  const char *respond[] = {
    gdbus, "call", "--session", "--dest", "org.gemmad.Gemmad1", "--object-path",
    "/org/gemmad/Gemmad1", "--timeout", "600", "--method", "org.gemmad.Gemmad1.Manager.Respond",
    "[{'type': <'text'>, 'text': <'Why is the sky blue?'>}]",
    "{'max_tokens': <64>, 'temperature': <0.0>}", NULL };
  tool_run (d, respond, NULL, &r);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_true (g_str_has_prefix (r.out, "('"));
  g_assert_nonnull (strstr (r.out, "'stop_reason': <'max_tokens'>"));
  g_assert_nonnull (strstr (r.out, "'generated_tokens': <uint32 64>"));
  tool_run_clear (&r);

  const char *sampling[] = {
    gdbus, "call", "--session", "--dest", "org.gemmad.Gemmad1", "--object-path",
    "/org/gemmad/Gemmad1", "--timeout", "600", "--method", "org.gemmad.Gemmad1.Manager.Respond",
    "[{'type': <'text'>, 'text': <'Name three rivers.'>}]",
    "{'system': <'Answer in one line.'>, 'temperature': <0.7>, 'top_k': <40>, "
    "'seed': <uint64 42>, 'stop': <['\\n\\n']>, 'max_tokens': <16>}", NULL };
  tool_run (d, sampling, NULL, &r);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "'seed': <uint64 42>"));
  tool_run_clear (&r);

  const char *typo[] = {
    gdbus, "call", "--session", "--dest", "org.gemmad.Gemmad1", "--object-path",
    "/org/gemmad/Gemmad1", "--method", "org.gemmad.Gemmad1.Manager.Respond",
    "[{'type': <'text'>, 'text': <'hi'>}]", "{'temprature': <0.5>}", NULL };
  tool_run (d, typo, NULL, &r);
  g_assert_cmpint (r.status, !=, 0);
  g_assert_nonnull (strstr (r.err, "org.gemmad.Gemmad1.Error.InvalidArgument"));
  g_assert_nonnull (strstr (r.err, "temprature"));
  tool_run_clear (&r);

  const char *get_all[] = {
    gdbus, "call", "--session", "--dest", "org.gemmad.Gemmad1", "--object-path",
    "/org/gemmad/Gemmad1", "--method", "org.freedesktop.DBus.Properties.GetAll",
    "org.gemmad.Gemmad1.Manager", NULL };
  tool_run (d, get_all, NULL, &r);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "'LoadState': <'loaded'>"));
  g_assert_nonnull (strstr (r.out, "'ContextSize': <uint32 4096>"));
  tool_run_clear (&r);

  const char *introspect[] = {
    gdbus, "introspect", "--session", "--dest", "org.gemmad.Gemmad1", "--object-path",
    "/org/gemmad/Gemmad1", NULL };
  tool_run (d, introspect, NULL, &r);
  g_assert_cmpint (r.status, ==, 0);
  g_assert_nonnull (strstr (r.out, "Respond"));
  tool_run_clear (&r);

  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  signal (SIGPIPE, SIG_IGN);

  g_test_add_func ("/gemmactl/generate", test_generate);
  g_test_add_func ("/gemmactl/json-and-info", test_json);
  g_test_add_func ("/gemmactl/errors", test_errors);
  g_test_add_func ("/gemmactl/exit-codes", test_exit_codes);
  g_test_add_func ("/gemmactl/gdbus-call", test_gdbus_call);
  return g_test_run ();
}
