/* gemmactl-stream.c — rendering one streamed answer (docs/protocol.md §4.3). */
#include "gemmactl-stream.h"
#include "gemmactl.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define SPINNER_INTERVAL_MS 100
#define DIM "\033[2m"
#define RESET "\033[0m"
#define CLEAR_LINE "\r\033[K"

struct _GemmactlStream {
  GemmactlStreamFlags flags;
  GemmactlStreamEndFunc end_func;
  gpointer user_data;
  gboolean ended;

  GString *text;
  GString *thinking;
  JsonObject *summary;     /* the "done" event */
  GError *error;           /* a rejection, a bad stream, or failed output */
  char *request;

  /* terminal output */
  gboolean show_progress;  /* stderr is a terminal, not --json / --quiet */
  gboolean dim_thinking;   /* stderr is a terminal */
  char *status;
  gboolean status_pinned;  /* our own state (cancelling) outranks the server's progress */
  guint spinner_id;
  guint frame;
  gboolean status_visible;
  gboolean output_started;
  gboolean in_thinking;    /* a thinking block is open on stderr */
  char last_text_char;
  char last_thinking_char;
};

static void
stop_spinner (GemmactlStream *s)
{
  if (s->spinner_id != 0) {
    g_source_remove (s->spinner_id);
    s->spinner_id = 0;
  }
}

static void
clear_status (GemmactlStream *s)
{
  if (s->status_visible) {
    fputs (CLEAR_LINE, stderr);
    fflush (stderr);
    s->status_visible = FALSE;
  }
}

static void
draw_status (GemmactlStream *s)
{
  static const char *const ascii_frames[] = { "|", "/", "-", "\\" };
  static const char *const braille_frames[] = { "⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏" };
  gboolean utf8 = g_get_charset (NULL);
  const char *frame = utf8 ? braille_frames[s->frame % G_N_ELEMENTS (braille_frames)]
                           : ascii_frames[s->frame % G_N_ELEMENTS (ascii_frames)];
  s->frame++;
  fprintf (stderr, CLEAR_LINE "%s %s", frame, s->status);
  fflush (stderr);
  s->status_visible = TRUE;
}

static gboolean
on_spinner_tick (gpointer user_data)
{
  GemmactlStream *s = user_data;
  draw_status (s);
  return G_SOURCE_CONTINUE;
}

static void
end_stream (GemmactlStream *s)
{
  if (s->ended)
    return;
  s->ended = TRUE;
  stop_spinner (s);
  if (s->end_func != NULL)
    s->end_func (s, s->user_data);
}

GemmactlStream *
gemmactl_stream_new (GemmactlStreamFlags flags, GemmactlStreamEndFunc end_func, gpointer user_data)
{
  GemmactlStream *s = g_new0 (GemmactlStream, 1);
  s->flags = flags;
  s->end_func = end_func;
  s->user_data = user_data;
  s->text = g_string_new (NULL);
  s->thinking = g_string_new (NULL);
  s->status = g_strdup ("waiting for gemmad");
  s->show_progress = gemmactl_stderr_is_tty ()
                     && !(flags & (GEMMACTL_STREAM_JSON | GEMMACTL_STREAM_QUIET));
  s->dim_thinking = gemmactl_stderr_is_tty ();
  /* The first tick draws: an answer that starts at once shows no progress line. */
  if (s->show_progress)
    s->spinner_id = g_timeout_add (SPINNER_INTERVAL_MS, on_spinner_tick, s);
  return s;
}

void
gemmactl_stream_free (GemmactlStream *s)
{
  if (s == NULL)
    return;
  stop_spinner (s);
  g_string_free (s->text, TRUE);
  g_string_free (s->thinking, TRUE);
  g_clear_pointer (&s->summary, json_object_unref);
  g_clear_error (&s->error);
  g_free (s->request);
  g_free (s->status);
  g_free (s);
}

static void
update_status (GemmactlStream *s, const char *status)
{
  if (s->status_pinned)
    return;
  g_free (s->status);
  s->status = g_strdup (status);
  if (s->status_visible)
    draw_status (s);
}

void
gemmactl_stream_set_status (GemmactlStream *s, const char *status)
{
  update_status (s, status);
  s->status_pinned = TRUE;
}

static void
fail_output (GemmactlStream *s, const char *what, int err)
{
  if (s->error == NULL)
    gemmactl_set_error (&s->error, GEMMACTL_EXIT_FAILED, "output_error", NULL,
                        "writing %s: %s", what, g_strerror (err));
  end_stream (s);
}

static void
close_thinking (GemmactlStream *s)
{
  if (!s->in_thinking)
    return;
  s->in_thinking = FALSE;
  if (s->dim_thinking)
    fputs (RESET, stderr);
  if (s->last_thinking_char != '\n')
    fputc ('\n', stderr);
  fflush (stderr);
}

static void
start_output (GemmactlStream *s)
{
  s->output_started = TRUE;
  stop_spinner (s);
  clear_status (s);
}

static void
show_piece (GemmactlStream *s, const char *text)
{
  g_string_append (s->text, text);
  if (s->flags & GEMMACTL_STREAM_JSON)
    return;
  start_output (s);
  close_thinking (s);
  size_t len = strlen (text);
  if (len == 0)
    return;
  if (fwrite (text, 1, len, stdout) != len || fflush (stdout) != 0) {
    fail_output (s, "the answer", errno);
    return;
  }
  s->last_text_char = text[len - 1];
}

static void
show_thinking (GemmactlStream *s, const char *text)
{
  g_string_append (s->thinking, text);
  if (s->flags & (GEMMACTL_STREAM_JSON | GEMMACTL_STREAM_HIDE_THINKING))
    return;
  start_output (s);
  size_t len = strlen (text);
  if (len == 0)
    return;
  if (!s->in_thinking && s->dim_thinking)
    fputs (DIM, stderr);
  s->in_thinking = TRUE;
  fputs (text, stderr);
  fflush (stderr);
  s->last_thinking_char = text[len - 1];
}

static void
show_progress (GemmactlStream *s, JsonObject *message)
{
  const char *state = gemmactl_json_string (message, "state");
  if (state == NULL)
    return;
  g_autofree char *status = NULL;
  gint64 a = 0, b = 0;
  if (g_str_equal (state, "queued")) {
    if (gemmactl_json_int (message, "queue_position", &a))
      /* 0 is "next": people count from 1 */
      status = g_strdup_printf ("queued (position %" G_GINT64_FORMAT ")", a + 1);
    else
      status = g_strdup ("queued");
  } else if (g_str_equal (state, "loading")) {
    status = g_strdup ("waiting for the model to load");
  } else if (g_str_equal (state, "encoding")) {
    if (gemmactl_json_int (message, "media_done", &a) && gemmactl_json_int (message, "media_total", &b))
      status = g_strdup_printf ("encoding media %" G_GINT64_FORMAT "/%" G_GINT64_FORMAT, a, b);
    else
      status = g_strdup ("encoding media");
  } else if (g_str_equal (state, "prefill")) {
    if (gemmactl_json_int (message, "prompt_done", &a) && gemmactl_json_int (message, "prompt_total", &b))
      status = g_strdup_printf ("reading prompt %" G_GINT64_FORMAT "/%" G_GINT64_FORMAT, a, b);
    else
      status = g_strdup ("reading prompt");
  } else if (g_str_equal (state, "generating")) {
    status = g_strdup ("generating");
  } else {
    status = g_strdup (state);  /* a state added later */
  }
  update_status (s, status);
}

void
gemmactl_stream_message (GemmactlStream *s, JsonObject *message, gboolean terminal)
{
  if (s->ended)
    return;
  JsonObject *error_object = gemmactl_json_object (message, "error");
  if (error_object != NULL) {
    s->error = gemmactl_error_from_json (error_object);
    end_stream (s);
    return;
  }
  const char *event = gemmactl_json_string (message, "event");
  const char *text = gemmactl_json_string (message, "text");
  if (event == NULL) {
    if (terminal) {
      gemmactl_set_error (&s->error, GEMMACTL_EXIT_FAILED, "protocol_error", NULL,
                          "gemmad answered a stream request with a single result");
      end_stream (s);
    }
    return;
  }
  if (g_str_equal (event, "accepted")) {
    const char *request = gemmactl_json_string (message, "request");
    if (request != NULL && s->request == NULL)
      s->request = g_strdup (request);
  } else if (g_str_equal (event, "progress")) {
    show_progress (s, message);
  } else if (g_str_equal (event, "piece") && text != NULL) {
    show_piece (s, text);
  } else if (g_str_equal (event, "thinking") && text != NULL) {
    show_thinking (s, text);
  } else if (g_str_equal (event, "done")) {
    s->summary = json_object_ref (message);
    end_stream (s);
  }
  /* other events: added in later API versions, ignored */
}

gboolean
gemmactl_stream_has_ended (GemmactlStream *s)
{
  return s->ended;
}

const char *
gemmactl_stream_get_request (GemmactlStream *s)
{
  return s->request;
}

void
gemmactl_stream_abort (GemmactlStream *s)
{
  stop_spinner (s);
  clear_status (s);
  close_thinking (s);
  if (!(s->flags & GEMMACTL_STREAM_JSON) && s->text->len > 0 && s->last_text_char != '\n')
    fputc ('\n', stdout);
  fflush (stdout);
}

static void
copy_summary_member (JsonObject *from, const char *name, JsonNode *node, gpointer user_data)
{
  if (g_str_equal (name, "id") || g_str_equal (name, "event")
      || g_str_equal (name, "text") || g_str_equal (name, "thinking"))
    return;
  json_object_set_member (user_data, name, json_node_copy (node));
}

static int
exit_code_for_stop (const char *stop_reason)
{
  if (g_strcmp0 (stop_reason, "error") == 0)
    return GEMMACTL_EXIT_FAILED;
  if (g_strcmp0 (stop_reason, "cancelled") == 0)
    return GEMMACTL_EXIT_CANCELLED;
  return GEMMACTL_EXIT_OK;
}

static int
finish_json (GemmactlStream *s)
{
  if (s->error != NULL)
    return gemmactl_report_error (s->error, TRUE);
  g_autoptr (JsonObject) result = json_object_new ();
  json_object_set_string_member (result, "text", s->text->str);
  json_object_set_string_member (result, "thinking", s->thinking->str);
  if (s->summary != NULL)
    json_object_foreach_member (s->summary, copy_summary_member, result);
  g_autoptr (JsonNode) root = json_node_init_object (json_node_alloc (), result);
  gemmactl_print_json (root);
  return exit_code_for_stop (gemmactl_json_string (s->summary, "stop_reason"));
}

int
gemmactl_stream_finish (GemmactlStream *s)
{
  gemmactl_stream_abort (s);
  if (ferror (stdout) && s->error == NULL)
    fail_output (s, "the answer", errno);
  if (s->flags & GEMMACTL_STREAM_JSON)
    return finish_json (s);
  if (s->error != NULL)
    return gemmactl_report_error (s->error, FALSE);
  if (s->summary == NULL) {
    fprintf (stderr, "gemmactl: the answer ended without a summary\n");
    return GEMMACTL_EXIT_FAILED;
  }

  const char *stop_reason = gemmactl_json_string (s->summary, "stop_reason");
  gboolean quiet = (s->flags & GEMMACTL_STREAM_QUIET) != 0;
  gint64 n = 0;
  if (g_strcmp0 (stop_reason, "error") == 0) {
    const char *message = gemmactl_json_string (s->summary, "error_message");
    fprintf (stderr, "gemmactl: %s\n", message != NULL ? message : "generation failed");
  } else if (g_strcmp0 (stop_reason, "cancelled") == 0 && !quiet) {
    const char *reason = gemmactl_json_string (s->summary, "cancel_reason");
    if (reason == NULL || g_str_equal (reason, "client"))
      fprintf (stderr, "gemmactl: cancelled\n");
    else
      fprintf (stderr, "gemmactl: cancelled by gemmad (%s)\n", reason);
  } else if (g_strcmp0 (stop_reason, "max_tokens") == 0 && !quiet) {
    if (gemmactl_json_int (s->summary, "generated_tokens", &n))
      fprintf (stderr, "gemmactl: stopped at the token limit (%" G_GINT64_FORMAT " tokens; "
               "--max-tokens raises it)\n", n);
    else
      fprintf (stderr, "gemmactl: stopped at the token limit (--max-tokens raises it)\n");
  } else if (g_strcmp0 (stop_reason, "context_full") == 0 && !quiet) {
    if (gemmactl_json_int (s->summary, "context_size", &n))
      fprintf (stderr, "gemmactl: stopped: the context window (%" G_GINT64_FORMAT
               " tokens) is full\n", n);
    else
      fprintf (stderr, "gemmactl: stopped: the context window is full\n");
  }
  return exit_code_for_stop (stop_reason);
}
