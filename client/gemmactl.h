/* gemmactl.h — what the subcommands of gemmactl share: exit codes, the error domain,
 * global options and terminal helpers. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* The exit codes are a contract (docs/gemmactl.md "EXIT STATUS"). */
typedef enum {
  GEMMACTL_EXIT_OK = 0,
  GEMMACTL_EXIT_FAILED = 1,      /* internal or protocol error, stop_reason "error" */
  GEMMACTL_EXIT_USAGE = 2,
  GEMMACTL_EXIT_CONNECTION = 3,  /* cannot connect, connection lost */
  GEMMACTL_EXIT_REJECTED = 4,    /* invalid_argument, limit_exceeded, context_exceeded, unsupported_media */
  GEMMACTL_EXIT_BUSY = 5,
  GEMMACTL_EXIT_CANCELLED = 6,
  GEMMACTL_EXIT_NO_MODEL = 7,
  GEMMACTL_EXIT_PERMISSION = 8,
} GemmactlExit;

/* Every error gemmactl reports is in this domain: the GError code is the exit code, and the
 * error carries the protocol code name ("busy", or a local one such as "connect_failed")
 * and, for server errors, the field at fault. */
#define GEMMACTL_ERROR (gemmactl_error_quark ())
GQuark gemmactl_error_quark (void);

void gemmactl_set_error (GError **error, GemmactlExit exit_code, const char *code,
                         const char *field, const char *format, ...) G_GNUC_PRINTF (5, 6);
/* From a server's {"code","message","field"} object; unknown codes keep their name. */
GError *gemmactl_error_from_json (JsonObject *error_object);
/* Exit code and code name of any GError (other domains: 1, "internal"). */
int gemmactl_error_exit_code (const GError *error);
const char *gemmactl_error_code (const GError *error);
const char *gemmactl_error_field (const GError *error);
/* The exit code for a protocol error code name; 1 for unknown names. */
GemmactlExit gemmactl_exit_for_code (const char *code);

/* Type-checked reads of server messages: a member of another type counts as missing, so
 * an odd message is ignored instead of raising criticals. */
const char *gemmactl_json_string (JsonObject *object, const char *name);
gboolean gemmactl_json_int (JsonObject *object, const char *name, gint64 *out);
gboolean gemmactl_json_double (JsonObject *object, const char *name, double *out);
gboolean gemmactl_json_bool (JsonObject *object, const char *name, gboolean *out);
JsonObject *gemmactl_json_object (JsonObject *object, const char *name);
JsonArray *gemmactl_json_array (JsonObject *object, const char *name);
/* A scalar or array of scalars as text for humans ("a, b"); NULL for objects. */
char *gemmactl_json_to_display (JsonNode *node);

/* Global options (accepted before and after the command). */
typedef struct {
  char *socket_path;      /* --socket; NULL: $GEMMAD_SOCKET, then the default paths */
  int timeout_seconds;    /* --timeout: connect and handshake; 0 = wait forever */
  gboolean quiet;         /* -q */
  gboolean version;       /* --version */
} GemmactlGlobals;

extern GemmactlGlobals gemmactl_globals;

/* A GOptionContext for "gemmactl COMMAND"; gemmactl_parse_options adds the global options. */
GOptionContext *gemmactl_option_context_new (const char *command, const char *parameters,
                                             const char *summary);
/* Parses argv of a command; on a usage error prints it and returns FALSE. --version is
 * handled here too (prints and exits). */
gboolean gemmactl_parse_options (GOptionContext *context, int *argc, char ***argv);

/* Reports an error as "gemmactl: message" on stderr, or as {"error":{…}} on stdout when
 * json is set, and returns the exit code for it. */
int gemmactl_report_error (const GError *error, gboolean json);
/* Prints a JSON node on stdout (pretty when stdout is a terminal), newline-terminated. */
void gemmactl_print_json (JsonNode *node);

/* Terminal state, read once. */
gboolean gemmactl_stdout_is_tty (void);
gboolean gemmactl_stderr_is_tty (void);
gboolean gemmactl_stdin_is_tty (void);

/* Subcommands: argv[0] is the command name. */
int gemmactl_cmd_info (int argc, char **argv);
int gemmactl_cmd_generate (int argc, char **argv);
int gemmactl_cmd_chat (int argc, char **argv);
int gemmactl_cmd_cancel (int argc, char **argv);
int gemmactl_cmd_list (int argc, char **argv);

G_END_DECLS
