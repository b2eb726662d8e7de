/* gemmactl-error.c — GEMMACTL_ERROR: the exit code as the GError code, plus the protocol's
 * code name and field, so that --json can report {"code","message","field"} unchanged. */
#include "gemmactl.h"

#include <stdio.h>

typedef struct {
  char *code;
  char *field;
} GemmactlErrorPrivate;

static void
gemmactl_error_private_init (GemmactlErrorPrivate *priv)
{
  priv->code = NULL;
  priv->field = NULL;
}

static void
gemmactl_error_private_copy (const GemmactlErrorPrivate *src, GemmactlErrorPrivate *dest)
{
  dest->code = g_strdup (src->code);
  dest->field = g_strdup (src->field);
}

static void
gemmactl_error_private_clear (GemmactlErrorPrivate *priv)
{
  g_clear_pointer (&priv->code, g_free);
  g_clear_pointer (&priv->field, g_free);
}

G_DEFINE_EXTENDED_ERROR (GemmactlError, gemmactl_error)

static const struct {
  const char *code;
  GemmactlExit exit_code;
} code_table[] = {
  { "invalid_argument", GEMMACTL_EXIT_REJECTED },
  { "limit_exceeded", GEMMACTL_EXIT_REJECTED },
  { "context_exceeded", GEMMACTL_EXIT_REJECTED },
  { "unsupported_media", GEMMACTL_EXIT_REJECTED },
  { "busy", GEMMACTL_EXIT_BUSY },
  { "cancelled", GEMMACTL_EXIT_CANCELLED },
  { "model_not_loaded", GEMMACTL_EXIT_NO_MODEL },
  { "permission_denied", GEMMACTL_EXIT_PERMISSION },
  { "internal", GEMMACTL_EXIT_FAILED },
};

GemmactlExit
gemmactl_exit_for_code (const char *code)
{
  if (code == NULL)
    return GEMMACTL_EXIT_FAILED;
  for (gsize i = 0; i < G_N_ELEMENTS (code_table); i++)
    if (g_str_equal (code, code_table[i].code))
      return code_table[i].exit_code;
  return GEMMACTL_EXIT_FAILED;
}

static void
set_private (GError *error, const char *code, const char *field)
{
  GemmactlErrorPrivate *priv = gemmactl_error_get_private (error);
  if (priv == NULL)
    return;
  priv->code = g_strdup (code);
  priv->field = g_strdup (field);
}

void
gemmactl_set_error (GError **error, GemmactlExit exit_code, const char *code,
                    const char *field, const char *format, ...)
{
  if (error == NULL)
    return;
  va_list ap;
  va_start (ap, format);
  g_autofree char *message = g_strdup_vprintf (format, ap);
  va_end (ap);
  GError *e = g_error_new_literal (GEMMACTL_ERROR, exit_code, message);
  set_private (e, code, field);
  g_propagate_error (error, e);
}

GError *
gemmactl_error_from_json (JsonObject *error_object)
{
  const char *code = NULL;
  const char *message = NULL;
  const char *field = NULL;
  if (error_object != NULL) {
    code = gemmactl_json_string (error_object, "code");
    message = gemmactl_json_string (error_object, "message");
    field = gemmactl_json_string (error_object, "field");
  }
  if (code == NULL)
    code = "internal";
  if (message == NULL || *message == '\0')
    message = code;
  GError *e = g_error_new_literal (GEMMACTL_ERROR, gemmactl_exit_for_code (code), message);
  set_private (e, code, field);
  return e;
}

int
gemmactl_error_exit_code (const GError *error)
{
  if (error != NULL && error->domain == GEMMACTL_ERROR)
    return error->code;
  return GEMMACTL_EXIT_FAILED;
}

const char *
gemmactl_error_code (const GError *error)
{
  if (error != NULL && error->domain == GEMMACTL_ERROR) {
    GemmactlErrorPrivate *priv = gemmactl_error_get_private (error);
    if (priv != NULL && priv->code != NULL)
      return priv->code;
  }
  return "internal";
}

const char *
gemmactl_error_field (const GError *error)
{
  if (error != NULL && error->domain == GEMMACTL_ERROR) {
    GemmactlErrorPrivate *priv = gemmactl_error_get_private (error);
    if (priv != NULL)
      return priv->field;
  }
  return NULL;
}

int
gemmactl_report_error (const GError *error, gboolean json)
{
  if (json) {
    g_autoptr (JsonBuilder) b = json_builder_new ();
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "error");
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "code");
    json_builder_add_string_value (b, gemmactl_error_code (error));
    json_builder_set_member_name (b, "message");
    json_builder_add_string_value (b, error->message);
    if (gemmactl_error_field (error) != NULL) {
      json_builder_set_member_name (b, "field");
      json_builder_add_string_value (b, gemmactl_error_field (error));
    }
    json_builder_end_object (b);
    json_builder_end_object (b);
    g_autoptr (JsonNode) root = json_builder_get_root (b);
    gemmactl_print_json (root);
  } else {
    fflush (stdout);
    fprintf (stderr, "gemmactl: %s\n", error->message);
  }
  return gemmactl_error_exit_code (error);
}
