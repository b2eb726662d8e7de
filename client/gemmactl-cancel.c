/* gemmactl-cancel.c — "gemmactl cancel HANDLE": cancel a request of the same uid by the
 * server handle that "list" shows (docs/protocol.md §4.4). */
#include "gemmactl.h"
#include "gemmactl-conn.h"

#include <stdio.h>

int
gemmactl_cmd_cancel (int argc, char **argv)
{
  gboolean json = FALSE;
  const GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print the service's answer as JSON", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) context = gemmactl_option_context_new (
    "cancel", "REQUEST…",
    "Cancel requests by their handles (as 'gemmactl list' shows them, e.g. r-42).\n"
    "Only your own requests can be cancelled (root: anybody's). The request's client sees\n"
    "its answer end as cancelled. Exit status 1 when a request was not found (it may have\n"
    "finished already).");
  g_option_context_add_main_entries (context, entries, NULL);
  if (!gemmactl_parse_options (context, &argc, &argv))
    return GEMMACTL_EXIT_USAGE;
  if (argc < 2) {
    fprintf (stderr, "gemmactl: cancel needs a request handle (see 'gemmactl cancel --help')\n");
    return GEMMACTL_EXIT_USAGE;
  }
  for (int i = 1; i < argc; i++) {
    if (!g_utf8_validate (argv[i], -1, NULL) || *argv[i] == '\0') {
      fprintf (stderr, "gemmactl: '%s' is not a request handle\n", argv[i]);
      return GEMMACTL_EXIT_USAGE;
    }
  }

  g_autoptr (GError) error = NULL;
  g_autoptr (GemmactlConn) conn = gemmactl_conn_open (&error);
  if (conn == NULL)
    return gemmactl_report_error (error, json);

  int code = GEMMACTL_EXIT_OK;
  g_autoptr (JsonArray) results = json_array_new ();
  for (int i = 1; i < argc; i++) {
    g_autoptr (JsonObject) fields = json_object_new ();
    json_object_set_string_member (fields, "request", argv[i]);
    g_autoptr (JsonObject) result = gemmactl_conn_call (conn, "cancel", fields, &error);
    if (result == NULL)
      return gemmactl_report_error (error, json);
    gboolean found = FALSE;
    gemmactl_json_bool (result, "found", &found);
    if (json) {
      JsonObject *entry = json_object_new ();
      json_object_set_string_member (entry, "request", argv[i]);
      json_object_set_boolean_member (entry, "found", found);
      json_array_add_object_element (results, entry);
    } else if (!found) {
      fprintf (stderr, "gemmactl: %s: no such unfinished request\n", argv[i]);
    } else if (!gemmactl_globals.quiet) {
      printf ("%s: cancelled\n", argv[i]);
    }
    if (!found)
      code = GEMMACTL_EXIT_FAILED;
  }
  if (json) {
    g_autoptr (JsonObject) object = json_object_new ();
    json_object_set_array_member (object, "requests", json_array_ref (results));
    g_autoptr (JsonNode) root = json_node_init_object (json_node_alloc (), object);
    gemmactl_print_json (root);
  }
  fflush (stdout);
  return code;
}
