/* gemmactl-json.c — type-checked reads of server messages and printing JSON. */
#include "gemmactl.h"

#include <math.h>
#include <stdio.h>

static JsonNode *
member_value (JsonObject *object, const char *name)
{
  if (object == NULL)
    return NULL;
  JsonNode *node = json_object_get_member (object, name);
  if (node == NULL || JSON_NODE_TYPE (node) != JSON_NODE_VALUE)
    return NULL;
  return node;
}

const char *
gemmactl_json_string (JsonObject *object, const char *name)
{
  JsonNode *node = member_value (object, name);
  if (node == NULL || json_node_get_value_type (node) != G_TYPE_STRING)
    return NULL;
  return json_node_get_string (node);
}

gboolean
gemmactl_json_int (JsonObject *object, const char *name, gint64 *out)
{
  JsonNode *node = member_value (object, name);
  if (node == NULL)
    return FALSE;
  GType type = json_node_get_value_type (node);
  if (type == G_TYPE_INT64) {
    *out = json_node_get_int (node);
    return TRUE;
  }
  if (type == G_TYPE_DOUBLE) {
    double d = json_node_get_double (node);
    /* within ±2^63 (what a gint64 holds) and without a fraction */
    if (isfinite (d) && d > -9223372036854775808.0 && d < 9223372036854775808.0
        && d == (double) (gint64) d) {
      *out = (gint64) d;
      return TRUE;
    }
  }
  return FALSE;
}

gboolean
gemmactl_json_double (JsonObject *object, const char *name, double *out)
{
  JsonNode *node = member_value (object, name);
  if (node == NULL)
    return FALSE;
  GType type = json_node_get_value_type (node);
  if (type == G_TYPE_DOUBLE) {
    *out = json_node_get_double (node);
    return TRUE;
  }
  if (type == G_TYPE_INT64) {
    *out = (double) json_node_get_int (node);
    return TRUE;
  }
  return FALSE;
}

gboolean
gemmactl_json_bool (JsonObject *object, const char *name, gboolean *out)
{
  JsonNode *node = member_value (object, name);
  if (node == NULL || json_node_get_value_type (node) != G_TYPE_BOOLEAN)
    return FALSE;
  *out = json_node_get_boolean (node);
  return TRUE;
}

JsonObject *
gemmactl_json_object (JsonObject *object, const char *name)
{
  if (object == NULL)
    return NULL;
  JsonNode *node = json_object_get_member (object, name);
  if (node == NULL || JSON_NODE_TYPE (node) != JSON_NODE_OBJECT)
    return NULL;
  return json_node_get_object (node);
}

JsonArray *
gemmactl_json_array (JsonObject *object, const char *name)
{
  if (object == NULL)
    return NULL;
  JsonNode *node = json_object_get_member (object, name);
  if (node == NULL || JSON_NODE_TYPE (node) != JSON_NODE_ARRAY)
    return NULL;
  return json_node_get_array (node);
}

static gboolean
append_scalar (GString *out, JsonNode *node)
{
  switch (JSON_NODE_TYPE (node)) {
  case JSON_NODE_NULL:
    g_string_append (out, "-");
    return TRUE;
  case JSON_NODE_VALUE: {
    GType type = json_node_get_value_type (node);
    if (type == G_TYPE_STRING)
      g_string_append (out, json_node_get_string (node));
    else if (type == G_TYPE_INT64)
      g_string_append_printf (out, "%" G_GINT64_FORMAT, json_node_get_int (node));
    else if (type == G_TYPE_DOUBLE)
      g_string_append_printf (out, "%g", json_node_get_double (node));
    else if (type == G_TYPE_BOOLEAN)
      g_string_append (out, json_node_get_boolean (node) ? "yes" : "no");
    else
      return FALSE;
    return TRUE;
  }
  default:
    return FALSE;
  }
}

char *
gemmactl_json_to_display (JsonNode *node)
{
  g_autoptr (GString) out = g_string_new (NULL);
  if (JSON_NODE_TYPE (node) == JSON_NODE_ARRAY) {
    JsonArray *array = json_node_get_array (node);
    guint n = json_array_get_length (array);
    if (n == 0)
      g_string_append (out, "-");
    for (guint i = 0; i < n; i++) {
      if (i > 0)
        g_string_append (out, ", ");
      if (!append_scalar (out, json_array_get_element (array, i)))
        return NULL;
    }
  } else if (!append_scalar (out, node)) {
    return NULL;
  }
  return g_string_free (g_steal_pointer (&out), FALSE);
}

void
gemmactl_print_json (JsonNode *node)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  json_generator_set_pretty (gen, gemmactl_stdout_is_tty ());
  json_generator_set_root (gen, node);
  g_autofree char *text = json_generator_to_data (gen, NULL);
  fputs (text, stdout);
  fputc ('\n', stdout);
  fflush (stdout);
}
