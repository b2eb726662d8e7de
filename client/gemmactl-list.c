/* gemmactl-list.c — "gemmactl list": the unfinished requests of your uid on all its
 * connections (root: everybody's). */
#include "gemmactl.h"
#include "gemmactl-conn.h"

#include <stdio.h>

int
gemmactl_cmd_list (int argc, char **argv)
{
  gboolean json = FALSE;
  const GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print the service's answer as JSON", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) context = gemmactl_option_context_new (
    "list", NULL,
    "List your unfinished requests: their handle (for 'gemmactl cancel'), state and session.");
  g_option_context_add_main_entries (context, entries, NULL);
  if (!gemmactl_parse_options (context, &argc, &argv))
    return GEMMACTL_EXIT_USAGE;
  if (argc > 1) {
    fprintf (stderr, "gemmactl: list takes no arguments (see 'gemmactl list --help')\n");
    return GEMMACTL_EXIT_USAGE;
  }

  g_autoptr (GError) error = NULL;
  g_autoptr (GemmactlConn) conn = gemmactl_conn_open (&error);
  if (conn == NULL)
    return gemmactl_report_error (error, json);
  g_autoptr (JsonObject) result = gemmactl_conn_call (conn, "list", NULL, &error);
  if (result == NULL)
    return gemmactl_report_error (error, json);

  if (json) {
    g_autoptr (JsonNode) root = json_node_init_object (json_node_alloc (), result);
    gemmactl_print_json (root);
    return GEMMACTL_EXIT_OK;
  }
  JsonArray *requests = gemmactl_json_array (result, "requests");
  guint n = requests != NULL ? json_array_get_length (requests) : 0;
  if (n == 0) {
    if (!gemmactl_globals.quiet && gemmactl_stdout_is_tty ())
      printf ("no unfinished requests\n");
    return GEMMACTL_EXIT_OK;
  }
  printf ("%-12s %-12s %s\n", "REQUEST", "STATE", "SESSION");
  for (guint i = 0; i < n; i++) {
    JsonNode *node = json_array_get_element (requests, i);
    if (JSON_NODE_TYPE (node) != JSON_NODE_OBJECT)
      continue;
    JsonObject *entry = json_node_get_object (node);
    const char *request = gemmactl_json_string (entry, "request");
    const char *state = gemmactl_json_string (entry, "state");
    const char *session = gemmactl_json_string (entry, "session");
    printf ("%-12s %-12s %s\n", request != NULL ? request : "?", state != NULL ? state : "?",
            session != NULL ? session : "-");
  }
  fflush (stdout);
  return GEMMACTL_EXIT_OK;
}
