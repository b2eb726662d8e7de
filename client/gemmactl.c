/* gemmactl.c — main: global options and dispatch to the subcommands. */
#include "gemmactl.h"

#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_SECONDS 30

GemmactlGlobals gemmactl_globals = { .timeout_seconds = DEFAULT_TIMEOUT_SECONDS };

typedef struct {
  const char *name;
  int (*run) (int argc, char **argv);
  const char *description;
} Command;

static const Command commands[] = {
  { "info", gemmactl_cmd_info, "Show the model, its state, context, modalities and limits" },
  { "generate", gemmactl_cmd_generate, "Answer one prompt (text, images, audio), streamed" },
  { "chat", gemmactl_cmd_chat, "Chat interactively in a session that keeps the history" },
  { "list", gemmactl_cmd_list, "List your unfinished requests" },
  { "cancel", gemmactl_cmd_cancel, "Cancel a request by its handle (e.g. r-42)" },
};

static const GOptionEntry global_entries[] = {
  { "socket", 0, 0, G_OPTION_ARG_FILENAME, &gemmactl_globals.socket_path,
    "Socket of gemmad (default: $GEMMAD_SOCKET, $XDG_RUNTIME_DIR/gemmad/gemmad.sock, "
    "/run/gemmad/gemmad.sock)", "PATH" },
  { "timeout", 0, 0, G_OPTION_ARG_INT, &gemmactl_globals.timeout_seconds,
    "Seconds to wait for connecting and the handshake (0: no limit; default 30)", "SECONDS" },
  { "quiet", 'q', 0, G_OPTION_ARG_NONE, &gemmactl_globals.quiet,
    "No progress, notes or hints on stderr", NULL },
  { "version", 0, 0, G_OPTION_ARG_NONE, &gemmactl_globals.version,
    "Print the version and exit", NULL },
  G_OPTION_ENTRY_NULL
};

static int tty_state[3] = { -1, -1, -1 };

static gboolean
fd_is_tty (int fd)
{
  if (tty_state[fd] < 0)
    tty_state[fd] = isatty (fd) ? 1 : 0;
  return tty_state[fd] == 1;
}

gboolean
gemmactl_stdin_is_tty (void)
{
  return fd_is_tty (STDIN_FILENO);
}

gboolean
gemmactl_stdout_is_tty (void)
{
  return fd_is_tty (STDOUT_FILENO);
}

gboolean
gemmactl_stderr_is_tty (void)
{
  return fd_is_tty (STDERR_FILENO);
}

GOptionContext *
gemmactl_option_context_new (const char *command, const char *parameters, const char *summary)
{
  /* The usage line reads "gemmactl COMMAND [OPTION…] PARAMETERS". */
  g_autofree char *prgname = g_strdup_printf ("gemmactl %s", command);
  g_set_prgname (prgname);
  GOptionContext *context = g_option_context_new (parameters);
  if (summary != NULL)
    g_option_context_set_summary (context, summary);
  return context;
}

static gboolean
check_globals (void)
{
  if (gemmactl_globals.version) {
    printf ("gemmactl %s\n", GEMMACTL_VERSION);
    exit (GEMMACTL_EXIT_OK);
  }
  if (gemmactl_globals.timeout_seconds < 0) {
    fprintf (stderr, "gemmactl: --timeout must be 0 or more seconds, got %d\n",
             gemmactl_globals.timeout_seconds);
    return FALSE;
  }
  return TRUE;
}

gboolean
gemmactl_parse_options (GOptionContext *context, int *argc, char ***argv)
{
  g_autoptr (GError) error = NULL;
  /* added last, so that --help lists the command's own options first */
  g_option_context_add_main_entries (context, global_entries, NULL);
  if (!g_option_context_parse (context, argc, argv, &error)) {
    fprintf (stderr, "gemmactl: %s\n(see '%s --help')\n", error->message, g_get_prgname ());
    return FALSE;
  }
  return check_globals ();
}

static char *
commands_description (void)
{
  GString *s = g_string_new ("Commands:\n");
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    g_string_append_printf (s, "  %-10s %s\n", commands[i].name, commands[i].description);
  g_string_append (s, "\n'gemmactl COMMAND --help' shows the options of a command.\n"
                      "Exit status: 0 ok, 1 failed, 2 usage, 3 no connection, 4 rejected, "
                      "5 busy, 6 cancelled, 7 no model, 8 permission denied.");
  return g_string_free (s, FALSE);
}

int
main (int argc, char **argv)
{
  setlocale (LC_ALL, "");
  /* A closed socket or pipe must be an error we report, not a silent death. */
  signal (SIGPIPE, SIG_IGN);

  g_set_prgname ("gemmactl");
  g_autoptr (GOptionContext) context = g_option_context_new ("COMMAND [ARGUMENT…]");
  g_autofree char *description = commands_description ();
  g_option_context_set_summary (context, "Talk to gemmad, the local Gemma model service.");
  g_option_context_set_description (context, description);
  /* Options after the command belong to it. */
  g_option_context_set_strict_posix (context, TRUE);
  if (!gemmactl_parse_options (context, &argc, &argv))
    return GEMMACTL_EXIT_USAGE;

  if (argc < 2) {
    g_autofree char *help = g_option_context_get_help (context, TRUE, NULL);
    fputs (help, stderr);
    return GEMMACTL_EXIT_USAGE;
  }

  const char *name = argv[1];
  if (g_str_equal (name, "help")) {
    if (argc < 3) {
      g_autofree char *help = g_option_context_get_help (context, TRUE, NULL);
      fputs (help, stdout);
      return GEMMACTL_EXIT_OK;
    }
    /* "gemmactl help generate" is "gemmactl generate --help" */
    name = argv[2];
    argv[1] = argv[2];
    argv[2] = (char *) "--help";
  }
  for (gsize i = 0; i < G_N_ELEMENTS (commands); i++)
    if (g_str_equal (name, commands[i].name))
      return commands[i].run (argc - 1, argv + 1);

  fprintf (stderr, "gemmactl: unknown command '%s' (see 'gemmactl --help')\n", name);
  return GEMMACTL_EXIT_USAGE;
}
