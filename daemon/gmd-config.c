/* gmd-config.c — the configuration file and --set overrides: one table of keys, one
 * parser per kind of value, one code path (gmd_config_set) for the file and the flags. */
#include "gmd-config.h"

#include <stddef.h>
#include <string.h>

#include "gmd-error.h"

typedef enum {
  KIND_PATH,     /* string; empty = unset (NULL) */
  KIND_U32,      /* decimal */
  KIND_U64,      /* decimal */
  KIND_BYTES,    /* decimal, optional K/M/G (KiB, MiB, GiB) suffix; guint64 */
  KIND_MODE,     /* octal permission bits */
  KIND_BUS,      /* system | session | none */
  KIND_NAMES,    /* user or group names/ids separated by ',', ';' or spaces; empty = NULL */
} KeyKind;

typedef struct {
  const char *group;
  const char *key;
  KeyKind kind;
  gsize offset;       /* into GmdConfig */
  guint64 min, max;   /* numbers */
  gboolean zero_ok;   /* 0 is allowed below min (a "use the automatic value" marker) */
} ConfigKey;

#define CFG(field) offsetof (GmdConfig, field)
#define LIM(field) (offsetof (GmdConfig, limits) + offsetof (GmdLimits, field))
#define GiB (G_GUINT64_CONSTANT (1) << 30)

static const ConfigKey config_keys[] = {
  { "model", "path",                     KIND_PATH,  CFG (model_path),      0, 0, FALSE },
  { "model", "mmproj",                   KIND_PATH,  CFG (mmproj_path),     0, 0, FALSE },
  { "model", "context_size",             KIND_U32,   CFG (context_size),    32, G_MAXINT32, TRUE },
  { "model", "threads",                  KIND_U32,   CFG (threads),         0, 1024, FALSE },
  { "model", "batch",                    KIND_U32,   CFG (batch),           1, 65536, FALSE },
  { "service", "bus",                    KIND_BUS,   CFG (bus),             0, 0, FALSE },
  { "service", "socket",                 KIND_PATH,  CFG (socket_path),     0, 0, FALSE },
  { "service", "socket_mode",            KIND_MODE,  CFG (socket_mode),     0, 0777, FALSE },
  { "service", "allowed_users",          KIND_NAMES, CFG (allowed_users),   0, 0, FALSE },
  { "service", "allowed_groups",         KIND_NAMES, CFG (allowed_groups),  0, 0, FALSE },
  { "service", "cache_slots",            KIND_U32,   CFG (cache_slots),     0, 1024, FALSE },
  { "service", "idle_exit",              KIND_U32,   CFG (idle_exit),       0, G_MAXUINT32, FALSE },
  { "service", "shutdown_grace",         KIND_U32,   CFG (shutdown_grace),  0, 3600, FALSE },
  { "limits", "max_queue",               KIND_U32,   LIM (max_queue),               1, 1000000, FALSE },
  { "limits", "max_queued_per_client",   KIND_U32,   LIM (max_queued_per_client),   1, 1000000, FALSE },
  { "limits", "max_sessions_per_client", KIND_U32,   LIM (max_sessions_per_client), 0, 1000000, FALSE },
  { "limits", "max_prompt_tokens",       KIND_U32,   LIM (max_prompt_tokens),       0, G_MAXINT32, FALSE },
  { "limits", "max_tokens_limit",        KIND_U32,   LIM (max_tokens_limit),        0, G_MAXINT32, FALSE },
  { "limits", "max_text_bytes",          KIND_BYTES, LIM (max_text_bytes),          1, 4 * GiB, FALSE },
  { "limits", "max_media_bytes",         KIND_BYTES, LIM (max_media_bytes),         0, 4 * GiB, FALSE },
  { "limits", "max_media_parts",         KIND_U32,   LIM (max_media_parts),         0, 1024, FALSE },
  { "limits", "max_audio_seconds",       KIND_U32,   LIM (max_audio_seconds),       0, 86400, FALSE },
  { "limits", "max_stop_strings",        KIND_U32,   LIM (max_stop_strings),        0, 1024, FALSE },
  { "limits", "max_stop_bytes",          KIND_U32,   LIM (max_stop_bytes),          1, 65536, FALSE },
  { "limits", "session_idle_timeout",    KIND_U32,   LIM (session_idle_timeout),    0, G_MAXUINT32, FALSE },
  { "limits", "max_line_bytes",          KIND_BYTES, LIM (max_line_bytes),          4096, 4 * GiB, FALSE },
  /* SCM_MAX_FD: the kernel passes at most 253 fds in one message. */
  { "limits", "max_fds_per_line",        KIND_U32,   LIM (max_fds_per_line),        0, 253, FALSE },
  { "limits", "max_connections_per_uid", KIND_U32,   LIM (max_connections_per_uid), 1, 1000000, FALSE },
  { "limits", "max_image_pixels",        KIND_U64,   LIM (max_image_pixels),        1, 1000000000000, FALSE },
};

#define DEFAULTS_GROUP "defaults"

GmdConfig *
gmd_config_new_default (void)
{
  GmdConfig *c = g_new0 (GmdConfig, 1);

  c->batch = 512;
  c->bus = GMD_BUS_SYSTEM;
  c->socket_mode = 0666;
  c->cache_slots = 4;
  c->idle_exit = 0;
  c->shutdown_grace = 5;
  gmd_limits_init_default (&c->limits);
  c->defaults = gmd_options_new ();
  return c;
}

GmdConfig *
gmd_config_copy (const GmdConfig *config)
{
  GmdConfig *c = g_new0 (GmdConfig, 1);

  *c = *config;
  c->source = g_strdup (config->source);
  c->model_path = g_strdup (config->model_path);
  c->mmproj_path = g_strdup (config->mmproj_path);
  c->socket_path = g_strdup (config->socket_path);
  c->allowed_users = g_strdupv (config->allowed_users);
  c->allowed_groups = g_strdupv (config->allowed_groups);
  c->defaults = gmd_options_copy (config->defaults);
  c->overrides = g_strdupv (config->overrides);
  return c;
}

void
gmd_config_free (GmdConfig *config)
{
  if (config == NULL)
    return;
  g_free (config->source);
  g_free (config->model_path);
  g_free (config->mmproj_path);
  g_free (config->socket_path);
  g_strfreev (config->allowed_users);
  g_strfreev (config->allowed_groups);
  gmd_options_free (config->defaults);
  g_strfreev (config->overrides);
  g_free (config);
}

/* ---- value parsers ---- */

static char *
quote_value (const char *value)
{
  g_autofree char *escaped = g_strescape (value, NULL);

  if (strlen (escaped) > 60)
    return g_strdup_printf ("'%.60s…'", escaped);
  return g_strdup_printf ("'%s'", escaped);
}

static gboolean
range_error (const ConfigKey *k, const char *field, const char *value, GError **error)
{
  g_autofree char *q = quote_value (value);

  if (k->kind == KIND_MODE)
    gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                         "expected octal permission bits (0 … 0777), got %s", q);
  else if (k->zero_ok)
    gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                         "expected 0 or an integer in [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT "]%s, got %s",
                         k->min, k->max, k->kind == KIND_BYTES ? " (K, M, G suffixes allowed)" : "", q);
  else
    gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                         "expected an integer in [%" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT "]%s, got %s",
                         k->min, k->max, k->kind == KIND_BYTES ? " (K, M, G suffixes allowed)" : "", q);
  return FALSE;
}

/* Digits only (no sign, no spaces inside), with an optional binary-unit suffix for bytes. */
static gboolean
parse_number (const ConfigKey *k, const char *value, guint64 *out)
{
  const char *p = value;
  guint64 n = 0, unit = 1;
  guint base = k->kind == KIND_MODE ? 8 : 10;

  if (*p == '\0')
    return FALSE;
  for (; *p >= '0' && *p < (char) ('0' + base); p++)
    {
      guint d = (guint) (*p - '0');
      if (n > (G_MAXUINT64 - d) / base)
        return FALSE;
      n = n * base + d;
    }
  if (p == value)
    return FALSE;
  if (k->kind == KIND_BYTES && *p != '\0')
    {
      switch (g_ascii_toupper (*p))
        {
        case 'K': unit = G_GUINT64_CONSTANT (1) << 10; break;
        case 'M': unit = G_GUINT64_CONSTANT (1) << 20; break;
        case 'G': unit = G_GUINT64_CONSTANT (1) << 30; break;
        default: return FALSE;
        }
      p++;
      if (g_ascii_strcasecmp (p, "iB") == 0 || g_ascii_strcasecmp (p, "B") == 0)
        p += strlen (p);
      if (n > G_MAXUINT64 / unit)
        return FALSE;
      n *= unit;
    }
  if (*p != '\0')
    return FALSE;
  *out = n;
  return TRUE;
}

static gboolean
valid_name (const char *s)
{
  if (*s == '\0' || strlen (s) > 256 || *s == '-')
    return FALSE;
  for (; *s != '\0'; s++)
    if (!(g_ascii_isalnum (*s) || *s == '_' || *s == '-' || *s == '.' || *s == '$' || *s == '@'))
      return FALSE;
  return TRUE;
}

static gboolean
parse_names (const char *field, const char *value, GStrv *out, GError **error)
{
  g_auto (GStrv) parts = g_strsplit_set (value, ",; \t", -1);
  g_autoptr (GPtrArray) names = g_ptr_array_new_with_free_func (g_free);

  for (guint i = 0; parts[i] != NULL; i++)
    {
      if (parts[i][0] == '\0')
        continue;
      if (!valid_name (parts[i]))
        {
          g_autofree char *q = quote_value (parts[i]);
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                               "expected user or group names or numeric ids, got %s", q);
          return FALSE;
        }
      g_ptr_array_add (names, g_strdup (parts[i]));
    }
  if (names->len == 0)
    {
      *out = NULL;
      return TRUE;
    }
  g_ptr_array_add (names, NULL);
  *out = (GStrv) g_ptr_array_steal (names, NULL);
  return TRUE;
}

static gboolean
set_key (GmdConfig *config, const ConfigKey *k, const char *field, const char *raw_value,
         GError **error)
{
  g_autofree char *value = g_strstrip (g_strdup (raw_value));
  guint8 *slot = (guint8 *) config + k->offset;
  guint64 n;

  switch (k->kind)
    {
    case KIND_PATH:
      {
        char **dst = (char **) slot;
        g_free (*dst);
        *dst = value[0] != '\0' ? g_strdup (value) : NULL;
        return TRUE;
      }
    case KIND_NAMES:
      {
        GStrv names = NULL;
        if (!parse_names (field, value, &names, error))
          return FALSE;
        g_strfreev (*(GStrv *) slot);
        *(GStrv *) slot = names;
        return TRUE;
      }
    case KIND_BUS:
      {
        GmdBusType bus;
        if (strcmp (value, "system") == 0)
          bus = GMD_BUS_SYSTEM;
        else if (strcmp (value, "session") == 0)
          bus = GMD_BUS_SESSION;
        else if (strcmp (value, "none") == 0)
          bus = GMD_BUS_NONE;
        else
          {
            g_autofree char *q = quote_value (value);
            gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                                 "expected 'system', 'session' or 'none', got %s", q);
            return FALSE;
          }
        *(GmdBusType *) slot = bus;
        return TRUE;
      }
    case KIND_U32:
    case KIND_U64:
    case KIND_BYTES:
    case KIND_MODE:
      if (!parse_number (k, value, &n) || n > k->max || (n < k->min && !(k->zero_ok && n == 0)))
        return range_error (k, field, value, error);
      if (k->kind == KIND_U32 || k->kind == KIND_MODE)
        *(guint32 *) slot = (guint32) n;
      else
        *(guint64 *) slot = n;
      return TRUE;
    }
  return FALSE;
}

/* A [defaults] value as the GmdValue a front end would have built, so the options module
 * does all the checking: true/false, an integer, a number, else a string. */
static gboolean
set_default (GmdConfig *config, const char *key, const char *raw_value, GError **error)
{
  g_autofree char *value = g_strstrip (g_strdup (raw_value));
  g_autofree char *type_name = quote_value (value);
  GmdValue v = { .type = GMD_VALUE_STRING, .type_name = type_name, .s = value };
  gint64 i;
  guint64 u;
  char *end = NULL;
  double d;

  if (strcmp (value, "true") == 0 || strcmp (value, "false") == 0)
    {
      v.type = GMD_VALUE_BOOL;
      v.b = value[0] == 't';
    }
  else if (g_ascii_string_to_signed (value, 10, G_MININT64, G_MAXINT64, &i, NULL))
    {
      v.type = GMD_VALUE_INT;
      v.i = i;
    }
  else if (g_ascii_string_to_unsigned (value, 10, 0, G_MAXUINT64, &u, NULL))
    {
      v.type = GMD_VALUE_UINT;
      v.u = u;
    }
  else if (value[0] != '\0' && (d = g_ascii_strtod (value, &end), end != NULL && *end == '\0'))
    {
      v.type = GMD_VALUE_DOUBLE;
      v.d = d;
    }
  return gmd_options_set (config->defaults, GMD_OPTIONS_CONFIG, key, &v, &config->limits,
                          DEFAULTS_GROUP, error);
}

static gboolean
is_plain_name (const char *s, gsize len)
{
  if (len == 0 || len > 64)
    return FALSE;
  for (gsize i = 0; i < len; i++)
    if (!(g_ascii_isalnum (s[i]) || s[i] == '_'))
      return FALSE;
  return TRUE;
}

static gboolean
group_is_known (const char *group)
{
  if (strcmp (group, DEFAULTS_GROUP) == 0)
    return TRUE;
  for (guint i = 0; i < G_N_ELEMENTS (config_keys); i++)
    if (strcmp (config_keys[i].group, group) == 0)
      return TRUE;
  return FALSE;
}

static void
unknown_group_error (GError **error, const char *group)
{
  g_autofree char *q = quote_value (group);

  gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, NULL,
                       "unknown group %s (known: model, service, limits, defaults)", q);
}

gboolean
gmd_config_set (GmdConfig *config, const char *group_dot_key, const char *value, GError **error)
{
  const char *dot;
  g_autofree char *group = NULL;
  const char *key;

  g_return_val_if_fail (config != NULL && group_dot_key != NULL, FALSE);

  dot = strchr (group_dot_key, '.');
  if (dot == NULL)
    {
      g_autofree char *q = quote_value (group_dot_key);
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, NULL,
                           "expected GROUP.KEY (e.g. limits.max_queue), got %s", q);
      return FALSE;
    }
  group = g_strndup (group_dot_key, (gsize) (dot - group_dot_key));
  key = dot + 1;
  if (!group_is_known (group))
    {
      unknown_group_error (error, group);
      return FALSE;
    }
  if (!is_plain_name (key, strlen (key)))
    {
      g_autofree char *q = quote_value (key);
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, group, "unknown key %s", q);
      return FALSE;
    }
  if (value == NULL || !g_utf8_validate (value, -1, NULL))
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, group_dot_key, "%s",
                           value == NULL ? "missing value" : "value is not valid UTF-8");
      return FALSE;
    }

  if (strcmp (group, DEFAULTS_GROUP) == 0)
    return set_default (config, key, value, error);
  for (guint i = 0; i < G_N_ELEMENTS (config_keys); i++)
    if (strcmp (config_keys[i].group, group) == 0 && strcmp (config_keys[i].key, key) == 0)
      return set_key (config, &config_keys[i], group_dot_key, value, error);
  gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, group_dot_key, "unknown key");
  return FALSE;
}

gboolean
gmd_config_validate (const GmdConfig *config, GError **error)
{
  const GmdLimits *l = &config->limits;

  if (l->max_tokens_limit != 0 && config->defaults->max_tokens > 0 &&
      (guint32) config->defaults->max_tokens > l->max_tokens_limit)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, DEFAULTS_GROUP ".max_tokens",
                           "%d is above limits.max_tokens_limit (%u)",
                           config->defaults->max_tokens, l->max_tokens_limit);
      return FALSE;
    }
  if (l->max_queued_per_client > l->max_queue)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "limits.max_queued_per_client",
                           "%u is above limits.max_queue (%u)", l->max_queued_per_client, l->max_queue);
      return FALSE;
    }
  return TRUE;
}

/* GKeyFile hides localized keys ("key[de]") from g_key_file_get_keys(); none of ours is
 * translatable, so find them in the text and refuse them like any unknown key. */
static gboolean
check_no_localized_keys (const char *text, GError **error)
{
  g_auto (GStrv) lines = g_strsplit (text, "\n", -1);
  g_autofree char *group = NULL;

  for (guint i = 0; lines[i] != NULL; i++)
    {
      const char *l = lines[i];
      const char *eq;

      while (*l == ' ' || *l == '\t')
        l++;
      if (*l == '[')
        {
          const char *end = strchr (l, ']');
          g_free (group);
          group = end != NULL ? g_strndup (l + 1, (gsize) (end - l - 1)) : NULL;
          continue;
        }
      if (*l == '\0' || *l == '#' || (eq = strchr (l, '=')) == NULL)
        continue;
      if (memchr (l, '[', (gsize) (eq - l)) != NULL)
        {
          g_autofree char *key = g_strstrip (g_strndup (l, (gsize) (eq - l)));
          g_autofree char *q = quote_value (key);
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, group, "unknown key %s", q);
          return FALSE;
        }
    }
  return TRUE;
}

static GmdConfig *
load_file (const char *path, gboolean missing_ok, GError **error)
{
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_autoptr (GmdConfig) config = gmd_config_new_default ();
  g_autoptr (GError) local = NULL;
  g_autofree char *text = NULL;
  gsize len = 0;
  g_auto (GStrv) groups = NULL;

  if (!g_file_get_contents (path, &text, &len, &local))
    {
      if (missing_ok && g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        {
          /* Remember the path: a reload reads the file once an admin creates it. */
          config->source = g_strdup (path);
          config->source_optional = TRUE;
          return g_steal_pointer (&config);
        }
      if (g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
        gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, NULL, "%s: no such file", path);
      else
        gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, NULL, "%s: %s", path, local->message);
      return NULL;
    }
  if (!g_key_file_load_from_data (kf, text, len, G_KEY_FILE_NONE, &local) ||
      !check_no_localized_keys (text, &local))
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, NULL, "%s: %s", path, local->message);
      return NULL;
    }
  config->source = g_strdup (path);
  config->source_optional = missing_ok;

  groups = g_key_file_get_groups (kf, NULL);
  for (guint g = 0; groups[g] != NULL; g++)
    {
      g_auto (GStrv) keys = g_key_file_get_keys (kf, groups[g], NULL, NULL);

      if (!group_is_known (groups[g]))
        {
          unknown_group_error (&local, groups[g]);
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, NULL, "%s: %s", path, local->message);
          return NULL;
        }
      for (guint k = 0; keys != NULL && keys[k] != NULL; k++)
        {
          g_autofree char *name = g_strdup_printf ("%s.%s", groups[g], keys[k]);
          g_autofree char *value = g_key_file_get_string (kf, groups[g], keys[k], &local);

          if (value == NULL || !gmd_config_set (config, name, value, &local))
            {
              gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, NULL, "%s: %s", path,
                                   local->message);
              return NULL;
            }
        }
    }
  if (!gmd_config_validate (config, &local))
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, NULL, "%s: %s", path, local->message);
      return NULL;
    }
  return g_steal_pointer (&config);
}

GmdConfig *
gmd_config_load (const char *path, GError **error)
{
  return load_file (path, FALSE, error);
}

GmdConfig *
gmd_config_load_or_default (const char *path, gboolean missing_ok, GError **error)
{
  if (path == NULL)
    return gmd_config_new_default ();
  return load_file (path, missing_ok, error);
}

gboolean
gmd_config_override (GmdConfig *config, const char *group_dot_key, const char *value,
                     GError **error)
{
  if (!gmd_config_set (config, group_dot_key, value, error))
    return FALSE;
  guint n = config->overrides ? g_strv_length (config->overrides) : 0;
  config->overrides = g_renew (char *, config->overrides, n + 2);
  config->overrides[n] = g_strdup_printf ("%s=%s", group_dot_key, value);
  config->overrides[n + 1] = NULL;
  return TRUE;
}

GmdConfig *
gmd_config_reload (const GmdConfig *current, GError **error)
{
  g_autoptr (GmdConfig) fresh = gmd_config_load_or_default (current->source,
                                                            current->source_optional, error);
  if (fresh == NULL)
    return NULL;
  for (char **o = current->overrides; o && *o; o++)
    {
      const char *eq = strchr (*o, '=');
      g_autofree char *key = g_strndup (*o, (gsize) (eq - *o));
      if (!gmd_config_override (fresh, key, eq + 1, error))
        return NULL;
    }
  if (!gmd_config_validate (fresh, error))
    return NULL;
  return g_steal_pointer (&fresh);
}
