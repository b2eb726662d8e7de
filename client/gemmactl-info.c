/* gemmactl-info.c — "gemmactl info": the model and the service (the socket's "info" result,
 * which mirrors the D-Bus Manager properties), plus what the handshake told us. */
#include "gemmactl.h"
#include "gemmactl-conn.h"

#include <stdio.h>
#include <string.h>

/* Known keys, shown first in this order; the rest of the result follows as it comes, so a
 * key added later is still shown. The service names keys in snake_case; the D-Bus
 * property names are accepted too. */
typedef struct {
  const char *label;
  const char *snake;
  const char *camel;
} Field;

static const Field fields[] = {
  { "Model", "model_name", "ModelName" },
  { "Model file", "model_path", "ModelPath" },
  { "Architecture", "architecture", "Architecture" },
  { "Quantization", "quantization", "Quantization" },
  { "State", "load_state", "LoadState" },
  { "Load error", "load_error", "LoadError" },
  { "Context", "context_size", "ContextSize" },
  { "Modalities", "modalities", "Modalities" },
  { "Media types", "media_types", "MediaTypes" },
  { "Queued", "queue_length", "QueueLength" },
  { "Running", "active_requests", "ActiveRequests" },
  { "Version", "version", "Version" },
  { "API version", "api_version", "ApiVersion" },
  { "Limits", "limits", "Limits" },
  { "Defaults", "default_options", "DefaultOptions" },
};

static const char *
member_name (JsonObject *object, const Field *field)
{
  if (json_object_has_member (object, field->snake))
    return field->snake;
  if (json_object_has_member (object, field->camel))
    return field->camel;
  return NULL;
}

static void
print_object_lines (JsonObject *object, const char *indent)
{
  g_autoptr (GList) names = json_object_get_members (object);
  guint width = 0;
  for (GList *l = names; l != NULL; l = l->next)
    width = MAX (width, (guint) strlen (l->data));
  for (GList *l = names; l != NULL; l = l->next) {
    JsonNode *node = json_object_get_member (object, l->data);
    g_autofree char *value = gemmactl_json_to_display (node);
    if (value != NULL) {
      printf ("%s%-*s  %s\n", indent, (int) width, (const char *) l->data, value);
    } else if (JSON_NODE_TYPE (node) == JSON_NODE_OBJECT) {
      printf ("%s%s:\n", indent, (const char *) l->data);
      g_autofree char *deeper = g_strconcat (indent, "  ", NULL);
      print_object_lines (json_node_get_object (node), deeper);
    }
  }
}

static void
print_field (const char *label, JsonNode *node)
{
  if (JSON_NODE_TYPE (node) == JSON_NODE_OBJECT) {
    printf ("%s:\n", label);
    print_object_lines (json_node_get_object (node), "  ");
    return;
  }
  g_autofree char *value = gemmactl_json_to_display (node);
  if (value != NULL)
    printf ("%-13s %s\n", label, value);
}

static void
print_info (JsonObject *info, GemmactlConn *conn)
{
  g_autoptr (GHashTable) shown = g_hash_table_new (g_str_hash, g_str_equal);
  const char *state = NULL;
  for (gsize i = 0; i < G_N_ELEMENTS (fields); i++) {
    const char *name = member_name (info, &fields[i]);
    if (name != NULL && g_str_equal (fields[i].snake, "load_state"))
      state = gemmactl_json_string (info, name);
  }
  for (gsize i = 0; i < G_N_ELEMENTS (fields); i++) {
    const char *name = member_name (info, &fields[i]);
    if (name == NULL)
      continue;
    g_hash_table_add (shown, (gpointer) name);
    JsonNode *node = json_object_get_member (info, name);
    const char *text = gemmactl_json_string (info, name);
    /* empty strings say "none": no model, no error */
    if (text != NULL && *text == '\0') {
      if (g_str_equal (fields[i].snake, "model_name"))
        printf ("%-13s %s\n", fields[i].label, "(none loaded)");
      continue;
    }
    if (g_str_equal (fields[i].snake, "context_size")) {
      gint64 n = 0;
      if (gemmactl_json_int (info, name, &n)) {
        if (n > 0 || g_strcmp0 (state, "loaded") == 0)
          printf ("%-13s %" G_GINT64_FORMAT " tokens\n", fields[i].label, n);
        continue;
      }
    }
    print_field (fields[i].label, node);
  }
  g_autoptr (GList) names = json_object_get_members (info);
  for (GList *l = names; l != NULL; l = l->next) {
    if (g_hash_table_contains (shown, l->data))
      continue;
    print_field (l->data, json_object_get_member (info, l->data));
  }

  JsonObject *hello = gemmactl_conn_get_hello (conn);
  gint64 uid = -1;
  gboolean admin = FALSE;
  printf ("%-13s %s\n", "Socket", gemmactl_conn_get_path (conn));
  if (gemmactl_json_int (hello, "uid", &uid)) {
    gemmactl_json_bool (hello, "admin", &admin);
    printf ("%-13s uid %" G_GINT64_FORMAT "%s\n", "You", uid, admin ? " (admin)" : "");
  }
  /* the limits come with the handshake too; show them when info did not */
  JsonObject *limits = gemmactl_json_object (hello, "limits");
  if (!g_hash_table_contains (shown, "limits") && !g_hash_table_contains (shown, "Limits")
      && limits != NULL) {
    printf ("Limits:\n");
    print_object_lines (limits, "  ");
  }
}

int
gemmactl_cmd_info (int argc, char **argv)
{
  gboolean json = FALSE;
  const GOptionEntry entries[] = {
    { "json", 0, 0, G_OPTION_ARG_NONE, &json, "Print the service's answer as JSON", NULL },
    G_OPTION_ENTRY_NULL
  };
  g_autoptr (GOptionContext) context = gemmactl_option_context_new (
    "info", NULL, "Show the model, its state, the context size, modalities and limits.");
  g_option_context_add_main_entries (context, entries, NULL);
  if (!gemmactl_parse_options (context, &argc, &argv))
    return GEMMACTL_EXIT_USAGE;
  if (argc > 1) {
    fprintf (stderr, "gemmactl: info takes no arguments (see 'gemmactl info --help')\n");
    return GEMMACTL_EXIT_USAGE;
  }

  g_autoptr (GError) error = NULL;
  g_autoptr (GemmactlConn) conn = gemmactl_conn_open (&error);
  if (conn == NULL)
    return gemmactl_report_error (error, json);
  g_autoptr (JsonObject) info = gemmactl_conn_call (conn, "info", NULL, &error);
  if (info == NULL)
    return gemmactl_report_error (error, json);

  if (json) {
    g_autoptr (JsonNode) root = json_node_init_object (json_node_alloc (), info);
    gemmactl_print_json (root);
  } else {
    print_info (info, conn);
    fflush (stdout);
  }
  return GEMMACTL_EXIT_OK;
}
