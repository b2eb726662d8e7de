/* gemmactl-chat.c — "gemmactl chat": an interactive session (docs/protocol.md §4.5).
 *
 * Everything runs in one main loop: stdin is read only while waiting at the prompt (so
 * lines typed or piped during an answer wait their turn), the answer streams in from the
 * socket, and SIGINT cancels the answer or, at the prompt, leaves. */
#include "gemmactl.h"
#include "gemmactl-conn.h"
#include "gemmactl-options.h"
#include "gemmactl-stream.h"

#include <errno.h>
#include <glib-unix.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One message of a chat; far above max_text_bytes, so only a runaway input reaches it. */
#define MAX_INPUT_LINE (64u << 20)

typedef struct {
  GMainLoop *loop;
  GemmactlConn *conn;
  JsonObject *open_options;
  char *session;
  char *closed_reason;        /* set when the server closed the session */
  GPtrArray *attachments;     /* GemmactlMedia* for the next message */
  GemmactlStreamFlags stream_flags;

  GemmactlStream *stream;     /* the running turn, or NULL at the prompt */
  gint64 turn_id;
  guint interrupts;

  GString *input;             /* stdin bytes not yet taken as lines */
  gboolean input_eof;
  guint stdin_watch;
  guint idle_id;
  gboolean prompt_shown;
  gboolean interactive;

  int exit_code;
  gboolean leaving;
} Chat;

static void schedule_input (Chat *chat);

static void
leave (Chat *chat, int exit_code)
{
  if (chat->leaving)
    return;
  chat->leaving = TRUE;
  chat->exit_code = exit_code;
  if (chat->stdin_watch != 0) {
    g_source_remove (chat->stdin_watch);
    chat->stdin_watch = 0;
  }
  g_main_loop_quit (chat->loop);
}

static void
note (Chat *chat, const char *format, ...) G_GNUC_PRINTF (2, 3);

static void
note (Chat *chat, const char *format, ...)
{
  if (gemmactl_globals.quiet)
    return;
  va_list ap;
  va_start (ap, format);
  g_autofree char *text = g_strdup_vprintf (format, ap);
  va_end (ap);
  fflush (stdout);
  fprintf (stderr, "%s\n", text);
}

/* ---- the session ---------------------------------------------------------------------- */

static gboolean
open_session (Chat *chat, GError **error)
{
  g_autoptr (JsonObject) fields = json_object_new ();
  if (json_object_get_size (chat->open_options) > 0)
    json_object_set_object_member (fields, "options", json_object_ref (chat->open_options));
  g_autoptr (JsonObject) result = gemmactl_conn_call (chat->conn, "session.open", fields, error);
  if (result == NULL)
    return FALSE;
  const char *session = gemmactl_json_string (result, "session");
  if (session == NULL) {
    gemmactl_set_error (error, GEMMACTL_EXIT_FAILED, "protocol_error", NULL,
                        "gemmad opened a session without naming it");
    return FALSE;
  }
  g_free (chat->session);
  chat->session = g_strdup (session);
  g_clear_pointer (&chat->closed_reason, g_free);
  gint64 size = 0, used = 0;
  if (chat->interactive && gemmactl_json_int (result, "context_size", &size)
      && gemmactl_json_int (result, "context_used", &used))
    note (chat, "Session %s: context %" G_GINT64_FORMAT " tokens, %" G_GINT64_FORMAT
          " used. /help lists commands; Ctrl-D or /exit leaves.", session, size, used);
  return TRUE;
}

/* A failed call: a broken connection ends the chat (the fatal handler reports it); any
 * other error is reported and the chat goes on. */
static void
report_call_error (Chat *chat, const GError *error)
{
  if (gemmactl_conn_get_error (chat->conn) != NULL)
    return;
  gemmactl_report_error (error, FALSE);
}

static void
show_history (Chat *chat)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonObject) fields = json_object_new ();
  json_object_set_string_member (fields, "session", chat->session);
  g_autoptr (JsonObject) result = gemmactl_conn_call (chat->conn, "session.history", fields,
                                                      &error);
  if (result == NULL) {
    report_call_error (chat, error);
    return;
  }
  JsonArray *messages = gemmactl_json_array (result, "messages");
  guint n = messages != NULL ? json_array_get_length (messages) : 0;
  if (n == 0)
    note (chat, "(the history is empty)");
  for (guint i = 0; i < n; i++) {
    JsonNode *node = json_array_get_element (messages, i);
    if (JSON_NODE_TYPE (node) != JSON_NODE_OBJECT)
      continue;
    JsonObject *message = json_node_get_object (node);
    const char *role = gemmactl_json_string (message, "role");
    g_autoptr (GString) line = g_string_new (NULL);
    JsonArray *parts = gemmactl_json_array (message, "content");
    for (guint p = 0; parts != NULL && p < json_array_get_length (parts); p++) {
      JsonNode *part_node = json_array_get_element (parts, p);
      if (JSON_NODE_TYPE (part_node) != JSON_NODE_OBJECT)
        continue;
      JsonObject *part = json_node_get_object (part_node);
      const char *type = gemmactl_json_string (part, "type");
      const char *text = gemmactl_json_string (part, "text");
      gint64 soft_tokens = 0;
      if (line->len > 0)
        g_string_append_c (line, ' ');
      if (g_strcmp0 (type, "text") == 0 && text != NULL)
        g_string_append (line, text);
      else if (gemmactl_json_int (part, "soft_tokens", &soft_tokens))
        g_string_append_printf (line, "[%s, %" G_GINT64_FORMAT " tokens]",
                                type != NULL ? type : "media", soft_tokens);
      else
        g_string_append_printf (line, "[%s]", type != NULL ? type : "media");
    }
    printf ("%s: %s\n", role != NULL ? role : "?", line->str);
  }
  fflush (stdout);
}

static void
reset_history (Chat *chat)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonObject) fields = json_object_new ();
  json_object_set_string_member (fields, "session", chat->session);
  json_object_set_int_member (fields, "keep", 0);
  g_autoptr (JsonObject) result = gemmactl_conn_call (chat->conn, "session.truncate", fields,
                                                      &error);
  if (result == NULL) {
    report_call_error (chat, error);
    return;
  }
  note (chat, "(history cleared)");
}

/* ---- a turn ----------------------------------------------------------------------------- */

static void
on_turn_message (GemmactlConn *conn, JsonObject *message, gboolean terminal, gpointer user_data)
{
  Chat *chat = user_data;
  if (chat->stream != NULL)
    gemmactl_stream_message (chat->stream, message, terminal);
}

static gboolean
finish_turn (gpointer user_data)
{
  Chat *chat = user_data;
  chat->idle_id = 0;
  if (chat->stream == NULL)
    return G_SOURCE_REMOVE;
  int code = gemmactl_stream_finish (chat->stream);
  g_clear_pointer (&chat->stream, gemmactl_stream_free);
  chat->interrupts = 0;
  if (code == GEMMACTL_EXIT_REJECTED && chat->interactive)
    note (chat, "(/reset clears the history; /help lists commands)");
  if (chat->interactive)
    fputc ('\n', stdout);
  schedule_input (chat);
  return G_SOURCE_REMOVE;
}

static void
on_turn_end (GemmactlStream *stream, gpointer user_data)
{
  Chat *chat = user_data;
  /* Not from inside the socket's dispatch: the next step may wait for replies. */
  if (chat->idle_id == 0)
    chat->idle_id = g_idle_add (finish_turn, chat);
}

static void
start_turn (Chat *chat, const char *text)
{
  g_autoptr (GError) error = NULL;
  if (chat->closed_reason != NULL) {
    if (!open_session (chat, &error)) {
      report_call_error (chat, error);
      return;
    }
  }
  JsonArray *content = NULL;
  GArray *fds = NULL;
  g_autoptr (GPtrArray) attachments = g_steal_pointer (&chat->attachments);
  chat->attachments = gemmactl_media_list_new ();
  if (!gemmactl_content_build (attachments, text,
                               gemmactl_conn_get_limit (chat->conn, "max_media_bytes", 0),
                               &content, &fds, &error)) {
    gemmactl_report_error (error, FALSE);
    return;
  }
  g_autoptr (JsonObject) fields = json_object_new ();
  json_object_set_string_member (fields, "session", chat->session);
  json_object_set_array_member (fields, "content", content);
  chat->stream = gemmactl_stream_new (chat->stream_flags, on_turn_end, chat);
  chat->turn_id = gemmactl_conn_send (chat->conn, "session.send", fields,
                                      (const int *) fds->data, fds->len, on_turn_message, chat,
                                      &error);
  gemmactl_fds_free (fds);
  if (chat->turn_id < 0)
    g_clear_pointer (&chat->stream, gemmactl_stream_free);  /* the fatal handler reports */
}

/* ---- input ------------------------------------------------------------------------------ */

static void
print_help (void)
{
  printf ("Type a message and press Enter. Commands:\n"
          "  /image FILE   attach an image to the next message\n"
          "  /audio FILE   attach an audio clip to the next message\n"
          "  /history      show the conversation so far\n"
          "  /reset        forget the conversation (the system prompt stays)\n"
          "  /help         this list\n"
          "  /exit         leave (also /quit, /bye, Ctrl-D, Ctrl-C at the prompt)\n"
          "Ctrl-C during an answer stops it. A message that starts with '/' is sent as\n"
          "'//message'.\n");
  fflush (stdout);
}

static void
attach (Chat *chat, const char *type, const char *path)
{
  if (*path == '\0') {
    fprintf (stderr, "gemmactl: /%s needs a file name\n", type);
    return;
  }
  if (access (path, R_OK) != 0) {
    fprintf (stderr, "gemmactl: %s: %s\n", path, g_strerror (errno));
    return;
  }
  gemmactl_media_list_add (chat->attachments, type, path);
  note (chat, "(%s %s attached to the next message)", type, path);
}

/* Handles one line; returns TRUE when it started a turn (the input waits for its end). */
static gboolean
handle_line (Chat *chat, char *line)
{
  gsize len = strlen (line);
  if (len > 0 && line[len - 1] == '\r')
    line[--len] = '\0';
  if (!g_utf8_validate (line, -1, NULL)) {
    fprintf (stderr, "gemmactl: the message is not valid UTF-8\n");
    return FALSE;
  }
  g_autofree char *stripped = g_strstrip (g_strdup (line));
  if (*stripped == '\0')
    return FALSE;
  if (line[0] == '/' && line[1] != '/') {
    char *arg = stripped + strcspn (stripped, " \t");
    if (*arg != '\0')
      *arg++ = '\0';
    arg = g_strstrip (arg);
    const char *command = stripped + 1;
    if (g_str_equal (command, "exit") || g_str_equal (command, "quit")
        || g_str_equal (command, "bye")) {
      leave (chat, GEMMACTL_EXIT_OK);
    } else if (g_str_equal (command, "help") || g_str_equal (command, "?")) {
      print_help ();
    } else if (g_str_equal (command, "history")) {
      show_history (chat);
    } else if (g_str_equal (command, "reset") || g_str_equal (command, "clear")) {
      reset_history (chat);
    } else if (g_str_equal (command, "image") || g_str_equal (command, "audio")) {
      attach (chat, command, arg);
    } else {
      fprintf (stderr, "gemmactl: unknown command /%s (/help lists them)\n", command);
    }
    return FALSE;
  }
  start_turn (chat, line[0] == '/' ? line + 1 : line);
  return chat->stream != NULL;
}

/* The next complete line, or at the end of input what is left; NULL when none yet. */
static char *
take_line (Chat *chat)
{
  char *newline = memchr (chat->input->str, '\n', chat->input->len);
  if (newline == NULL && !(chat->input_eof && chat->input->len > 0))
    return NULL;
  gsize len = newline != NULL ? (gsize) (newline - chat->input->str) : chat->input->len;
  char *line = g_strndup (chat->input->str, len);
  g_string_erase (chat->input, 0, (gssize) MIN (len + 1, chat->input->len));
  if (strlen (line) != len) {
    /* a NUL inside the line: g_strndup stopped there; the rest is not text anyway */
    fprintf (stderr, "gemmactl: the message contains a NUL byte; ignored\n");
    g_free (line);
    return g_strdup ("");
  }
  return line;
}

static gboolean on_stdin (int fd, GIOCondition condition, gpointer user_data);

/* At the prompt: run the complete lines, then wait for more input (or leave at its end). */
static gboolean
process_input (gpointer user_data)
{
  Chat *chat = user_data;
  chat->idle_id = 0;
  while (!chat->leaving && chat->stream == NULL) {
    if (gemmactl_conn_get_error (chat->conn) != NULL)
      return G_SOURCE_REMOVE;
    g_autofree char *line = take_line (chat);
    if (line != NULL) {
      chat->prompt_shown = FALSE;
      if (handle_line (chat, line))
        return G_SOURCE_REMOVE;  /* a turn runs; finish_turn comes back here */
      continue;
    }
    if (chat->input_eof) {
      if (chat->interactive && chat->prompt_shown)
        fputc ('\n', stdout);
      leave (chat, GEMMACTL_EXIT_OK);
      return G_SOURCE_REMOVE;
    }
    if (chat->interactive && !chat->prompt_shown) {
      fputs ("> ", stdout);
      fflush (stdout);
      chat->prompt_shown = TRUE;
    }
    if (chat->stdin_watch == 0)
      chat->stdin_watch = g_unix_fd_add (STDIN_FILENO, G_IO_IN | G_IO_HUP | G_IO_ERR, on_stdin, chat);
    return G_SOURCE_REMOVE;
  }
  return G_SOURCE_REMOVE;
}

static void
schedule_input (Chat *chat)
{
  if (chat->idle_id == 0 && !chat->leaving)
    chat->idle_id = g_idle_add (process_input, chat);
}

static gboolean
on_stdin (int fd, GIOCondition condition, gpointer user_data)
{
  Chat *chat = user_data;
  char buf[65536];
  /* One read: the fd is readable, so it does not block (and stdin stays in blocking mode,
   * which the shell shares). */
  ssize_t n = read (fd, buf, sizeof buf);
  if (n < 0 && (errno == EINTR || errno == EAGAIN))
    return G_SOURCE_CONTINUE;
  if (n <= 0) {
    if (n < 0)
      fprintf (stderr, "gemmactl: reading stdin: %s\n", g_strerror (errno));
    chat->input_eof = TRUE;
  } else {
    g_string_append_len (chat->input, buf, n);
    if (chat->input->len > MAX_INPUT_LINE && memchr (chat->input->str, '\n', chat->input->len) == NULL) {
      fprintf (stderr, "gemmactl: an input line is longer than %u bytes\n", MAX_INPUT_LINE);
      chat->stdin_watch = 0;
      leave (chat, GEMMACTL_EXIT_USAGE);
      return G_SOURCE_REMOVE;
    }
  }
  if (chat->input_eof || memchr (chat->input->str, '\n', chat->input->len) != NULL) {
    chat->stdin_watch = 0;
    schedule_input (chat);
    return G_SOURCE_REMOVE;
  }
  return G_SOURCE_CONTINUE;
}

/* ---- signals and connection events ------------------------------------------------------ */

static gboolean
on_sigint (gpointer user_data)
{
  Chat *chat = user_data;
  if (chat->stream == NULL) {
    /* at the prompt: leave */
    if (chat->interactive)
      fputc ('\n', stdout);
    leave (chat, GEMMACTL_EXIT_OK);
    return G_SOURCE_CONTINUE;
  }
  chat->interrupts++;
  if (chat->interrupts >= 2) {
    gemmactl_stream_abort (chat->stream);
    exit (GEMMACTL_EXIT_CANCELLED);
  }
  if (!gemmactl_stream_has_ended (chat->stream)) {
    g_autoptr (JsonObject) fields = json_object_new ();
    json_object_set_int_member (fields, "target", chat->turn_id);
    gemmactl_conn_send (chat->conn, "cancel", fields, NULL, 0, NULL, NULL, NULL);
    gemmactl_stream_set_status (chat->stream, "cancelling (Ctrl-C again to quit)");
  }
  return G_SOURCE_CONTINUE;
}

static void
on_event (GemmactlConn *conn, JsonObject *message, gboolean terminal, gpointer user_data)
{
  Chat *chat = user_data;
  if (g_strcmp0 (gemmactl_json_string (message, "event"), "session_closed") != 0
      || g_strcmp0 (gemmactl_json_string (message, "session"), chat->session) != 0)
    return;
  const char *reason = gemmactl_json_string (message, "reason");
  g_free (chat->closed_reason);
  chat->closed_reason = g_strdup (reason != NULL ? reason : "unknown");
  if (chat->prompt_shown)
    fputc ('\n', stdout);
  fflush (stdout);
  if (g_strcmp0 (reason, "shutdown") == 0)
    fprintf (stderr, "gemmactl: gemmad is shutting down\n");
  else
    fprintf (stderr, "gemmactl: gemmad closed the session (%s); the next message starts a new "
             "one without the history\n", chat->closed_reason);
  chat->prompt_shown = FALSE;
  if (chat->stream == NULL && chat->stdin_watch != 0) {
    /* redraw the prompt */
    g_source_remove (chat->stdin_watch);
    chat->stdin_watch = 0;
    schedule_input (chat);
  }
}

static void
on_fatal (GemmactlConn *conn, const GError *error, gpointer user_data)
{
  Chat *chat = user_data;
  if (chat->leaving)
    return;
  if (chat->stream != NULL)
    gemmactl_stream_abort (chat->stream);
  else if (chat->prompt_shown)
    fputc ('\n', stdout);
  fflush (stdout);
  leave (chat, gemmactl_report_error (error, FALSE));
}

/* ---- the command ------------------------------------------------------------------------ */

int
gemmactl_cmd_chat (int argc, char **argv)
{
  GemmactlGenOptions options;
  gemmactl_gen_options_init (&options);
  gboolean hide_thinking = FALSE;
  const GOptionEntry entries[] = {
    { "hide-thinking", 0, 0, G_OPTION_ARG_NONE, &hide_thinking,
      "Do not show the model's thinking", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) context = gemmactl_option_context_new (
    "chat", NULL,
    "Chat in a session: each line of stdin is a message, answers stream to stdout. gemmad\n"
    "keeps the history (and its cache) until you leave. Ctrl-C stops an answer; at the\n"
    "prompt, Ctrl-C or Ctrl-D leaves. /help lists the commands.");
  g_option_context_add_main_entries (context, entries, NULL);
  gemmactl_gen_options_add_entries (&options, context, GEMMACTL_OPTIONS_SESSION);
  if (!gemmactl_parse_options (context, &argc, &argv)) {
    gemmactl_gen_options_clear (&options);
    return GEMMACTL_EXIT_USAGE;
  }
  if (argc > 1) {
    gemmactl_gen_options_clear (&options);
    fprintf (stderr, "gemmactl: chat reads messages from stdin, not from arguments "
             "(see 'gemmactl chat --help')\n");
    return GEMMACTL_EXIT_USAGE;
  }

  g_autoptr (GError) error = NULL;
  Chat chat = { 0 };
  chat.interactive = gemmactl_stdin_is_tty ();
  chat.open_options = gemmactl_gen_options_to_json (&options, GEMMACTL_OPTIONS_SESSION, &error);
  chat.attachments = g_steal_pointer (&options.media);
  gemmactl_gen_options_clear (&options);
  if (chat.open_options == NULL) {
    g_ptr_array_unref (chat.attachments);
    return gemmactl_report_error (error, FALSE);
  }
  if (hide_thinking)
    chat.stream_flags |= GEMMACTL_STREAM_HIDE_THINKING;
  if (gemmactl_globals.quiet)
    chat.stream_flags |= GEMMACTL_STREAM_QUIET;

  int code;
  chat.conn = gemmactl_conn_open (&error);
  if (chat.conn != NULL && open_session (&chat, &error)) {
    chat.loop = g_main_loop_new (NULL, FALSE);
    chat.input = g_string_new (NULL);
    gemmactl_conn_watch (chat.conn, on_event, on_fatal, &chat);
    guint sigint = g_unix_signal_add (SIGINT, on_sigint, &chat);
    schedule_input (&chat);
    g_main_loop_run (chat.loop);
    g_source_remove (sigint);
    if (chat.idle_id != 0)
      g_source_remove (chat.idle_id);
    if (chat.stdin_watch != 0)
      g_source_remove (chat.stdin_watch);
    g_clear_pointer (&chat.stream, gemmactl_stream_free);
    g_string_free (chat.input, TRUE);
    g_main_loop_unref (chat.loop);
    code = chat.exit_code;
  } else {
    code = gemmactl_report_error (error, FALSE);
  }
  g_clear_pointer (&chat.conn, gemmactl_conn_free);
  g_clear_pointer (&chat.open_options, json_object_unref);
  g_clear_pointer (&chat.attachments, g_ptr_array_unref);
  g_free (chat.session);
  g_free (chat.closed_reason);
  fflush (stdout);
  return code;
}
