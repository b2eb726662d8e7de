/* gmd-error.c — the GMD_ERROR domain: socket code names, D-Bus error names, field paths. */
#include "gmd-error.h"

#include <gio/gio.h>
#include <string.h>

/* Indexed by GmdErrorCode. */
static const struct {
  const char *code_name;
  const char *dbus_name;
} error_names[GMD_ERROR_N_CODES] = {
  [GMD_ERROR_INVALID_ARGUMENT]  = { "invalid_argument",  "org.gemmad.Gemmad1.Error.InvalidArgument" },
  [GMD_ERROR_BUSY]              = { "busy",              "org.gemmad.Gemmad1.Error.Busy" },
  [GMD_ERROR_LIMIT_EXCEEDED]    = { "limit_exceeded",    "org.gemmad.Gemmad1.Error.LimitExceeded" },
  [GMD_ERROR_CONTEXT_EXCEEDED]  = { "context_exceeded",  "org.gemmad.Gemmad1.Error.ContextExceeded" },
  [GMD_ERROR_UNSUPPORTED_MEDIA] = { "unsupported_media", "org.gemmad.Gemmad1.Error.UnsupportedMedia" },
  [GMD_ERROR_CANCELLED]         = { "cancelled",         "org.gemmad.Gemmad1.Error.Cancelled" },
  [GMD_ERROR_PERMISSION_DENIED] = { "permission_denied", "org.gemmad.Gemmad1.Error.PermissionDenied" },
  [GMD_ERROR_MODEL_NOT_LOADED]  = { "model_not_loaded",  "org.gemmad.Gemmad1.Error.ModelNotLoaded" },
  [GMD_ERROR_INTERNAL]          = { "internal",          "org.gemmad.Gemmad1.Error.Internal" },
};

GQuark
gmd_error_quark (void)
{
  /* Registering the domain with GDBus makes g_dbus_method_invocation_return_gerror()
   * send the org.gemmad.Gemmad1.Error.* names, and lets clients map them back. */
  static gsize quark = 0;

  if (g_once_init_enter (&quark))
    {
      static GDBusErrorEntry entries[GMD_ERROR_N_CODES];
      gsize q = 0;

      for (int i = 0; i < GMD_ERROR_N_CODES; i++)
        {
          entries[i].error_code = i;
          entries[i].dbus_error_name = error_names[i].dbus_name;
        }
      g_dbus_error_register_error_domain ("gmd-error-quark", &q, entries, G_N_ELEMENTS (entries));
      g_once_init_leave (&quark, q);
    }
  return (GQuark) quark;
}

void
gmd_error_register_dbus (void)
{
  (void) gmd_error_quark ();
}

const char *
gmd_error_code_name (GmdErrorCode code)
{
  if ((unsigned) code >= GMD_ERROR_N_CODES)
    code = GMD_ERROR_INTERNAL;
  return error_names[code].code_name;
}

const char *
gmd_error_dbus_name (GmdErrorCode code)
{
  if ((unsigned) code >= GMD_ERROR_N_CODES)
    code = GMD_ERROR_INTERNAL;
  return error_names[code].dbus_name;
}

gboolean
gmd_error_code_from_name (const char *name, GmdErrorCode *out)
{
  for (int i = 0; name != NULL && i < GMD_ERROR_N_CODES; i++)
    if (strcmp (name, error_names[i].code_name) == 0 || strcmp (name, error_names[i].dbus_name) == 0)
      {
        if (out != NULL)
          *out = (GmdErrorCode) i;
        return TRUE;
      }
  return FALSE;
}

void
gmd_set_field_error (GError **error, GmdErrorCode code, const char *field, const char *format, ...)
{
  va_list ap;
  g_autofree char *text = NULL;

  if (error == NULL)
    return;
  va_start (ap, format);
  text = g_strdup_vprintf (format, ap);
  va_end (ap);
  if (field != NULL && *field != '\0')
    g_set_error (error, GMD_ERROR, code, "%s: %s", field, text);
  else
    g_set_error_literal (error, GMD_ERROR, code, text);
}

static gboolean
is_field_char (char c)
{
  return g_ascii_isalnum (c) || c == '_' || c == '.' || c == '[' || c == ']';
}

char *
gmd_error_field (const GError *error)
{
  const char *m;
  gsize n = 0;

  if (error == NULL || error->domain != GMD_ERROR || error->message == NULL)
    return NULL;
  m = error->message;
  while (is_field_char (m[n]))
    n++;
  if (n == 0 || m[n] != ':' || m[n + 1] != ' ')
    return NULL;
  return g_strndup (m, n);
}

gboolean
gmd_field_key_is_plain (const char *key)
{
  gsize n = 0;

  for (; key[n] != '\0'; n++)
    if (!(g_ascii_isalnum (key[n]) || key[n] == '_') || n >= 64)
      return FALSE;
  return n > 0;
}

GmdErrorCode
gmd_error_code_of (const GError *error)
{
  if (error == NULL)
    return GMD_ERROR_INTERNAL;
  if (error->domain == GMD_ERROR && error->code >= 0 && error->code < GMD_ERROR_N_CODES)
    return (GmdErrorCode) error->code;
  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return GMD_ERROR_CANCELLED;
  return GMD_ERROR_INTERNAL;
}
