/* gemmactl-generate.c — "gemmactl generate": one prompt, the answer streamed. */
#include "gemmactl.h"
#include "gemmactl-conn.h"
#include "gemmactl-options.h"
#include "gemmactl-stream.h"

#include <errno.h>
#include <glib-unix.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Far above any max_text_bytes; only stops a runaway pipe from eating memory. */
#define MAX_STDIN_PROMPT (256u << 20)

typedef struct {
  GMainLoop *loop;
  GemmactlConn *conn;
  GemmactlStream *stream;
  gint64 id;
  guint interrupts;
  GError *fatal;
} Generate;

static void
on_message (GemmactlConn *conn, JsonObject *message, gboolean terminal, gpointer user_data)
{
  Generate *g = user_data;
  gemmactl_stream_message (g->stream, message, terminal);
}

static void
on_stream_end (GemmactlStream *stream, gpointer user_data)
{
  Generate *g = user_data;
  g_main_loop_quit (g->loop);
}

static void
on_fatal (GemmactlConn *conn, const GError *error, gpointer user_data)
{
  Generate *g = user_data;
  if (gemmactl_stream_has_ended (g->stream) || g->fatal != NULL)
    return;  /* the answer is complete; what happens to the connection now is no matter */
  g->fatal = g_error_copy (error);
  g_main_loop_quit (g->loop);
}

static gboolean
on_sigint (gpointer user_data)
{
  Generate *g = user_data;
  g->interrupts++;
  if (g->interrupts >= 2) {
    gemmactl_stream_abort (g->stream);
    exit (GEMMACTL_EXIT_CANCELLED);
  }
  if (gemmactl_stream_has_ended (g->stream))
    return G_SOURCE_CONTINUE;
  g_autoptr (JsonObject) fields = json_object_new ();
  json_object_set_int_member (fields, "target", g->id);
  /* The result is not needed: the stream ends with done/cancelled either way. A failed
   * send means a lost connection, which on_fatal reports. */
  gemmactl_conn_send (g->conn, "cancel", fields, NULL, 0, NULL, NULL, NULL);
  gemmactl_stream_set_status (g->stream, "cancelling (Ctrl-C again to quit)");
  return G_SOURCE_CONTINUE;
}

static char *
read_stdin (GError **error)
{
  if (gemmactl_stdin_is_tty () && !gemmactl_globals.quiet)
    fprintf (stderr, "gemmactl: reading the prompt from the terminal; end it with Ctrl-D\n");
  g_autoptr (GString) text = g_string_new (NULL);
  char buf[65536];
  for (;;) {
    ssize_t n = read (STDIN_FILENO, buf, sizeof buf);
    if (n == 0)
      break;
    if (n < 0) {
      if (errno == EINTR)
        continue;
      gemmactl_set_error (error, GEMMACTL_EXIT_USAGE, "file_error", NULL,
                          "reading the prompt from stdin: %s", g_strerror (errno));
      return NULL;
    }
    g_string_append_len (text, buf, n);
    if (text->len > MAX_STDIN_PROMPT) {
      gemmactl_set_error (error, GEMMACTL_EXIT_USAGE, "usage", NULL,
                          "the prompt on stdin is longer than %u bytes", MAX_STDIN_PROMPT);
      return NULL;
    }
  }
  if (memchr (text->str, '\0', text->len) != NULL) {
    gemmactl_set_error (error, GEMMACTL_EXIT_USAGE, "usage", NULL,
                        "the prompt on stdin contains a NUL byte");
    return NULL;
  }
  /* "echo question | gemmactl generate": the shell's newline is not part of the question */
  while (text->len > 0 && (text->str[text->len - 1] == '\n' || text->str[text->len - 1] == '\r'))
    g_string_truncate (text, text->len - 1);
  return g_string_free (g_steal_pointer (&text), FALSE);
}

static int
run (Generate *g, GemmactlGenOptions *options, const char *prompt, gboolean json,
     gboolean hide_thinking, GError **error)
{
  g_autoptr (JsonObject) options_json = gemmactl_gen_options_to_json (options,
                                                                      GEMMACTL_OPTIONS_GENERATE,
                                                                      error);
  if (options_json == NULL)
    return -1;

  g_autoptr (GemmactlConn) conn = gemmactl_conn_open (error);
  if (conn == NULL)
    return -1;

  JsonArray *content = NULL;
  GArray *fds = NULL;
  if (!gemmactl_content_build (options->media, prompt,
                               gemmactl_conn_get_limit (conn, "max_media_bytes", 0),
                               &content, &fds, error))
    return -1;
  gint64 max_fds = gemmactl_conn_get_limit (conn, "max_fds_per_line", 16);
  if ((gint64) fds->len > max_fds) {
    gemmactl_set_error (error, GEMMACTL_EXIT_REJECTED, "limit_exceeded", NULL,
                        "%u media files, but gemmad takes at most %" G_GINT64_FORMAT
                        " in one request", fds->len, max_fds);
    gemmactl_fds_free (fds);
    json_array_unref (content);
    return -1;
  }

  GemmactlStreamFlags flags = 0;
  if (json)
    flags |= GEMMACTL_STREAM_JSON;
  if (hide_thinking)
    flags |= GEMMACTL_STREAM_HIDE_THINKING;
  if (gemmactl_globals.quiet)
    flags |= GEMMACTL_STREAM_QUIET;
  g->conn = conn;
  g->loop = g_main_loop_new (NULL, FALSE);
  g->stream = gemmactl_stream_new (flags, on_stream_end, g);
  gemmactl_conn_watch (conn, NULL, on_fatal, g);

  g_autoptr (JsonObject) fields = json_object_new ();
  json_object_set_array_member (fields, "content", content);
  if (json_object_get_size (options_json) > 0)
    json_object_set_object_member (fields, "options", json_object_ref (options_json));
  /* From the moment the request is sent, Ctrl-C means "cancel it". */
  guint sigint = g_unix_signal_add (SIGINT, on_sigint, g);
  g->id = gemmactl_conn_send (conn, "generate", fields, (const int *) fds->data, fds->len,
                              on_message, g, error);
  /* The service has its own copies of the fds now. */
  gemmactl_fds_free (fds);
  int code = -1;
  if (g->id >= 0) {
    if (!gemmactl_stream_has_ended (g->stream) && g->fatal == NULL)
      g_main_loop_run (g->loop);
    if (g->fatal != NULL) {
      gemmactl_stream_abort (g->stream);
      g_propagate_error (error, g_steal_pointer (&g->fatal));
    } else {
      code = gemmactl_stream_finish (g->stream);
    }
  }
  g_source_remove (sigint);
  g_clear_pointer (&g->stream, gemmactl_stream_free);
  g_clear_pointer (&g->loop, g_main_loop_unref);
  g->conn = NULL;
  return code;
}

int
gemmactl_cmd_generate (int argc, char **argv)
{
  GemmactlGenOptions options;
  gemmactl_gen_options_init (&options);
  gboolean json = FALSE;
  gboolean hide_thinking = FALSE;
  const GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &json,
      "Print one JSON object at the end: text, thinking and the summary (no progress)", NULL },
    { "hide-thinking", 0, 0, G_OPTION_ARG_NONE, &hide_thinking,
      "Do not show the model's thinking", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) context = gemmactl_option_context_new (
    "generate", "[PROMPT…]",
    "Answer one prompt and stream the text to stdout. The prompt is the arguments joined by\n"
    "spaces, or stdin when there are none (or one \"-\"). Images and audio come first, in\n"
    "the order given, then the text. Ctrl-C cancels the answer; twice quits at once.");
  g_option_context_add_main_entries (context, entries, NULL);
  gemmactl_gen_options_add_entries (&options, context, GEMMACTL_OPTIONS_GENERATE);
  if (!gemmactl_parse_options (context, &argc, &argv)) {
    gemmactl_gen_options_clear (&options);
    return GEMMACTL_EXIT_USAGE;
  }

  g_autoptr (GError) error = NULL;
  g_autofree char *prompt = NULL;
  if (argc < 2 || (argc == 2 && g_str_equal (argv[1], "-")))
    prompt = read_stdin (&error);
  else
    prompt = g_strjoinv (" ", argv + 1);

  Generate g = { 0 };
  int code = prompt != NULL ? run (&g, &options, prompt, json, hide_thinking, &error) : -1;
  gemmactl_gen_options_clear (&options);
  if (code < 0)
    return gemmactl_report_error (error, json);
  return code;
}
