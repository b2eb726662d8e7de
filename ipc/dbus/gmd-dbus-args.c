/* gmd-dbus-args.c — the D-Bus encodings of the service's values: content aa{sv} → GmdPart,
 * options a{sv} → GmdOptions (validated by gmd_options_set), summaries, progress and
 * history back to a{sv}, and the error replies. */
#include "gmd-dbus-private.h"

#include <stdint.h>
#include <string.h>

/* ---- small helpers ------------------------------------------------------------------ */

gboolean
gmd_dbus_token_is_valid (const char *token)
{
  gsize n = 0;

  if (token == NULL)
    return FALSE;
  for (; token[n] != '\0'; n++)
    if (!g_ascii_isalnum (token[n]) && token[n] != '_')
      return FALSE;
  return n >= 1 && n <= 64;
}

char *
gmd_dbus_sender_path_element (const char *unique_name)
{
  const char *s = unique_name[0] == ':' ? unique_name + 1 : unique_name;
  char *out = g_strdup (s);

  /* Unique names are [A-Za-z0-9_.-]; path elements only [A-Za-z0-9_]. */
  for (char *p = out; *p != '\0'; p++)
    if (!g_ascii_isalnum (*p))
      *p = '_';
  return out;
}

void
gmd_dbus_return_error (GDBusMethodInvocation *invocation, const GError *error)
{
  GmdErrorCode code = gmd_error_code_of (error);

  g_dbus_method_invocation_return_dbus_error (invocation, gmd_error_dbus_name (code),
                                              error != NULL ? error->message : "unknown error");
}

void
gmd_dbus_return_code (GDBusMethodInvocation *invocation, GmdErrorCode code,
                      const char *format, ...)
{
  g_autofree char *message = NULL;
  va_list ap;

  va_start (ap, format);
  message = g_strdup_vprintf (format, ap);
  va_end (ap);
  g_dbus_method_invocation_return_dbus_error (invocation, gmd_error_dbus_name (code), message);
}

void
gmd_dbus_emit_to (GDBusConnection *connection, const char *destination, const char *path,
                  const char *interface, const char *signal, GVariant *parameters)
{
  g_autoptr(GError) error = NULL;

  if (!g_dbus_connection_emit_signal (connection, destination, path, interface, signal,
                                      parameters, &error))
    g_debug ("signal %s to %s on %s not sent: %s", signal, destination, path, error->message);
}

/* ---- options ------------------------------------------------------------------------ */

static GPtrArray *
history_from_variant (GVariant *list, GError **error)
{
  g_autoptr(GPtrArray) messages = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_message_free);
  gsize n = g_variant_n_children (list);

  for (gsize i = 0; i < n; i++)
    {
      g_autoptr(GVariant) entry = g_variant_get_child_value (list, i);
      g_autofree char *field = g_strdup_printf ("options.history[%" G_GSIZE_FORMAT "]", i);
      g_autoptr(GVariant) role_value = NULL;
      g_autoptr(GVariant) text_value = NULL;
      const char *role_name;
      GVariantIter iter;
      const char *key;
      GVariant *raw;
      GmdRole role;

      g_variant_iter_init (&iter, entry);
      while (g_variant_iter_next (&iter, "{&sv}", &key, &raw))
        {
          g_autoptr(GVariant) value = raw;
          GVariant **slot;

          if (strcmp (key, "role") == 0)
            slot = &role_value;
          else if (strcmp (key, "text") == 0)
            slot = &text_value;
          else
            {
              gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                                   "unknown key '%s' (a message has 'role' and 'text')", key);
              return NULL;
            }
          if (*slot != NULL)
            {
              gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "key '%s' given twice", key);
              return NULL;
            }
          if (!g_variant_is_of_type (value, G_VARIANT_TYPE_STRING))
            {
              gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                                   "'%s' must be a string (s), got %s", key,
                                   g_variant_get_type_string (value));
              return NULL;
            }
          *slot = g_steal_pointer (&value);
        }
      if (role_value == NULL || text_value == NULL)
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "missing '%s'",
                               role_value == NULL ? "role" : "text");
          return NULL;
        }
      role_name = g_variant_get_string (role_value, NULL);
      if (!gmd_role_from_name (role_name, &role))
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                               "role must be 'user' or 'model', got '%s'", role_name);
          return NULL;
        }
      g_ptr_array_add (messages, gmd_message_new (role, g_variant_get_string (text_value, NULL)));
    }
  return g_steal_pointer (&messages);
}

GmdOptions *
gmd_dbus_options_from_variant (GVariant *dict, GmdOptionsScope scope, const GmdLimits *limits,
                               GError **error)
{
  g_autoptr(GmdOptions) options = gmd_options_new ();
  g_autoptr(GHashTable) seen = g_hash_table_new (g_str_hash, g_str_equal);
  GVariantIter iter;
  const char *key;
  GVariant *raw;

  g_variant_iter_init (&iter, dict);
  while (g_variant_iter_next (&iter, "{&sv}", &key, &raw))
    {
      g_autoptr(GVariant) value = raw;
      g_autofree const char **strv = NULL;
      g_autoptr(GPtrArray) history = NULL;
      GmdValue v = { .type = GMD_VALUE_OTHER, .type_name = g_variant_get_type_string (value) };

      /* An a{sv} may repeat a key; the second value would silently win. */
      if (!g_hash_table_add (seen, (gpointer) key))
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "options", "key '%s' given twice", key);
          return NULL;
        }

      switch (g_variant_classify (value))
        {
        case G_VARIANT_CLASS_BOOLEAN:
          v.type = GMD_VALUE_BOOL;
          v.b = g_variant_get_boolean (value);
          break;
        case G_VARIANT_CLASS_BYTE:
          v.type = GMD_VALUE_INT;
          v.i = g_variant_get_byte (value);
          break;
        case G_VARIANT_CLASS_INT16:
          v.type = GMD_VALUE_INT;
          v.i = g_variant_get_int16 (value);
          break;
        case G_VARIANT_CLASS_UINT16:
          v.type = GMD_VALUE_INT;
          v.i = g_variant_get_uint16 (value);
          break;
        case G_VARIANT_CLASS_INT32:
          v.type = GMD_VALUE_INT;
          v.i = g_variant_get_int32 (value);
          break;
        case G_VARIANT_CLASS_UINT32:
          v.type = GMD_VALUE_INT;
          v.i = g_variant_get_uint32 (value);
          break;
        case G_VARIANT_CLASS_INT64:
          v.type = GMD_VALUE_INT;
          v.i = g_variant_get_int64 (value);
          break;
        case G_VARIANT_CLASS_UINT64:
          {
            guint64 u = g_variant_get_uint64 (value);

            if (u > INT64_MAX)
              {
                v.type = GMD_VALUE_UINT;
                v.u = u;
              }
            else
              {
                v.type = GMD_VALUE_INT;
                v.i = (gint64) u;
              }
          }
          break;
        case G_VARIANT_CLASS_DOUBLE:
          v.type = GMD_VALUE_DOUBLE;
          v.d = g_variant_get_double (value);
          break;
        case G_VARIANT_CLASS_STRING:
          v.type = GMD_VALUE_STRING;
          v.s = g_variant_get_string (value, NULL);
          break;
        case G_VARIANT_CLASS_ARRAY:
          if (g_variant_is_of_type (value, G_VARIANT_TYPE_STRING_ARRAY))
            {
              strv = g_variant_get_strv (value, NULL);
              v.type = GMD_VALUE_STRV;
              v.strv = strv;
            }
          else if (strcmp (key, "history") == 0 &&
                   g_variant_is_of_type (value, G_VARIANT_TYPE ("aa{sv}")))
            {
              /* Only parsed where the key can be valid: elsewhere gmd_options_set names
               * the real problem (unknown key, or not allowed for this method). */
              if (scope == GMD_OPTIONS_SESSION_OPEN)
                {
                  history = history_from_variant (value, error);
                  if (history == NULL)
                    return NULL;
                }
              else
                history = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_message_free);
              v.type = GMD_VALUE_HISTORY;
              v.history = history;
            }
          break;
        default:
          break;
        }

      if (!gmd_options_set (options, scope, key, &v, limits, "options", error))
        return NULL;
    }
  if (!gmd_options_check (options, scope, "options", error))
    return NULL;
  return g_steal_pointer (&options);
}

/* ---- content ------------------------------------------------------------------------ */

/* The values of one part's dictionary, each a reference (NULL when absent). */
typedef struct {
  GVariant *type;
  GVariant *text;
  GVariant *fd;
  GVariant *bytes;
} PartFields;

static void
part_fields_clear (PartFields *f)
{
  g_clear_pointer (&f->type, g_variant_unref);
  g_clear_pointer (&f->text, g_variant_unref);
  g_clear_pointer (&f->fd, g_variant_unref);
  g_clear_pointer (&f->bytes, g_variant_unref);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (PartFields, part_fields_clear)

static gboolean
collect_part_fields (GVariant *part, const char *field, PartFields *f, GError **error)
{
  static const struct {
    const char *key;
    const char *type;
    const char *type_name;
    gsize offset;
  } keys[] = {
    { "type",  "s",  "a string",          G_STRUCT_OFFSET (PartFields, type) },
    { "text",  "s",  "a string",          G_STRUCT_OFFSET (PartFields, text) },
    { "fd",    "h",  "a file descriptor", G_STRUCT_OFFSET (PartFields, fd) },
    { "bytes", "ay", "a byte array",      G_STRUCT_OFFSET (PartFields, bytes) },
  };
  GVariantIter iter;
  const char *key;
  GVariant *raw;

  g_variant_iter_init (&iter, part);
  while (g_variant_iter_next (&iter, "{&sv}", &key, &raw))
    {
      g_autoptr(GVariant) value = raw;
      GVariant **slot = NULL;
      guint k;

      for (k = 0; k < G_N_ELEMENTS (keys); k++)
        if (strcmp (key, keys[k].key) == 0)
          break;
      if (k == G_N_ELEMENTS (keys))
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                               "unknown key '%s' (a part has 'type' and 'text', 'fd' or 'bytes')", key);
          return FALSE;
        }
      slot = G_STRUCT_MEMBER_P (f, keys[k].offset);
      if (*slot != NULL)
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "key '%s' given twice", key);
          return FALSE;
        }
      if (!g_variant_is_of_type (value, G_VARIANT_TYPE (keys[k].type)))
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "'%s' must be %s (%s), got %s",
                               key, keys[k].type_name, keys[k].type, g_variant_get_type_string (value));
          return FALSE;
        }
      *slot = g_steal_pointer (&value);
    }
  return TRUE;
}

GPtrArray *
gmd_dbus_content_from_variant (GVariant *content, const int *fds, int n_fds,
                               const GmdLimits *limits, GCancellable *cancellable,
                               GError **error)
{
  g_autoptr(GPtrArray) parts = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_part_free);
  gsize n = g_variant_n_children (content);
  guint64 media_bytes = 0;
  guint32 media_parts = 0;

  if (n == 0)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "content", "at least one part is required");
      return NULL;
    }

  for (gsize i = 0; i < n; i++)
    {
      g_autoptr(GVariant) part = g_variant_get_child_value (content, i);
      g_autofree char *field = g_strdup_printf ("content[%" G_GSIZE_FORMAT "]", i);
      g_autofree char *subfield = NULL;
      g_autoptr(GBytes) data = NULL;
      g_auto(PartFields) f = { 0 };
      const char *type_name;
      GmdPartType type;
      GmdPart *p;

      if (!collect_part_fields (part, field, &f, error))
        return NULL;
      if (f.type == NULL)
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                               "missing 'type' ('text', 'image' or 'audio')");
          return NULL;
        }
      type_name = g_variant_get_string (f.type, NULL);
      if (!gmd_part_type_from_name (type_name, &type))
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                               "unknown type '%s' (expected 'text', 'image' or 'audio')", type_name);
          return NULL;
        }

      if (type == GMD_PART_TEXT)
        {
          if (f.fd != NULL || f.bytes != NULL)
            {
              gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                                   "a text part takes 'text', not '%s'", f.fd != NULL ? "fd" : "bytes");
              return NULL;
            }
          if (f.text == NULL)
            {
              gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "missing 'text'");
              return NULL;
            }
          {
            gsize len;
            const char *text = g_variant_get_string (f.text, &len);

            subfield = g_strdup_printf ("%s.text", field);
            p = gmd_part_new_text (text, len, subfield, error);
          }
          if (p == NULL)
            return NULL;
          g_ptr_array_add (parts, p);
          continue;
        }

      if (f.text != NULL)
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                               "a %s part takes 'fd' or 'bytes', not 'text'", type_name);
          return NULL;
        }
      if ((f.fd != NULL) == (f.bytes != NULL))
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                               f.fd != NULL ? "give either 'fd' or 'bytes', not both"
                                            : "missing 'fd' or 'bytes'");
          return NULL;
        }
      /* Caps before reading: a caller must not make the service read more than it
       * would accept. */
      if (media_parts >= limits->max_media_parts)
        {
          gmd_set_field_error (error, GMD_ERROR_LIMIT_EXCEEDED, field,
                               "more than max_media_parts (%u) media parts", limits->max_media_parts);
          return NULL;
        }
      media_parts++;

      if (f.fd != NULL)
        {
          g_autoptr(GError) read_error = NULL;
          gint32 index = g_variant_get_handle (f.fd);

          subfield = g_strdup_printf ("%s.fd", field);
          if (fds == NULL || index < 0 || index >= n_fds)
            {
              gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, subfield,
                                   "handle %d does not index a file descriptor of this call (it has %d)",
                                   index, fds == NULL ? 0 : n_fds);
              return NULL;
            }
          /* The owner left while earlier fds were read: nobody wants the rest. */
          if (g_cancellable_set_error_if_cancelled (cancellable, error))
            return NULL;
          data = gmd_media_read_fd (fds[index], limits->max_media_bytes - media_bytes,
                                    subfield, &read_error);
          if (data == NULL)
            {
              if (g_error_matches (read_error, GMD_ERROR, GMD_ERROR_LIMIT_EXCEEDED))
                gmd_set_field_error (error, GMD_ERROR_LIMIT_EXCEEDED, subfield,
                                     "the media of this request exceed max_media_bytes (%" G_GUINT64_FORMAT " bytes)",
                                     limits->max_media_bytes);
              else
                g_propagate_error (error, g_steal_pointer (&read_error));
              return NULL;
            }
        }
      else
        {
          gsize len = g_variant_get_size (f.bytes);

          if (len > limits->max_media_bytes - media_bytes)
            {
              gmd_set_field_error (error, GMD_ERROR_LIMIT_EXCEEDED, field,
                                   "the media of this request exceed max_media_bytes (%" G_GUINT64_FORMAT " bytes)",
                                   limits->max_media_bytes);
              return NULL;
            }
          /* A copy, so the request does not pin the whole message. */
          data = g_bytes_new (g_variant_get_data (f.bytes), len);
        }
      media_bytes += g_bytes_get_size (data);
      g_ptr_array_add (parts, gmd_part_new_media (type, data));
    }
  return g_steal_pointer (&parts);
}

/* ---- service → D-Bus ---------------------------------------------------------------- */

GVariant *
gmd_dbus_summary_to_variant (const GmdSummary *s)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "stop_reason", g_variant_new_string (gmd_stop_reason_name (s->stop_reason)));
  g_variant_builder_add (&b, "{sv}", "prompt_tokens", g_variant_new_uint32 (s->prompt_tokens));
  g_variant_builder_add (&b, "{sv}", "cached_tokens", g_variant_new_uint32 (s->cached_tokens));
  g_variant_builder_add (&b, "{sv}", "generated_tokens", g_variant_new_uint32 (s->generated_tokens));
  g_variant_builder_add (&b, "{sv}", "thinking_tokens", g_variant_new_uint32 (s->thinking_tokens));
  g_variant_builder_add (&b, "{sv}", "pieces", g_variant_new_uint32 (s->pieces));
  g_variant_builder_add (&b, "{sv}", "context_used", g_variant_new_uint32 (s->context_used));
  g_variant_builder_add (&b, "{sv}", "context_size", g_variant_new_uint32 (s->context_size));
  g_variant_builder_add (&b, "{sv}", "seed", g_variant_new_uint64 (s->seed));
  g_variant_builder_add (&b, "{sv}", "queue_seconds", g_variant_new_double (s->queue_seconds));
  g_variant_builder_add (&b, "{sv}", "load_seconds", g_variant_new_double (s->load_seconds));
  g_variant_builder_add (&b, "{sv}", "encode_seconds", g_variant_new_double (s->encode_seconds));
  g_variant_builder_add (&b, "{sv}", "prefill_seconds", g_variant_new_double (s->prefill_seconds));
  g_variant_builder_add (&b, "{sv}", "decode_seconds", g_variant_new_double (s->decode_seconds));
  g_variant_builder_add (&b, "{sv}", "total_seconds", g_variant_new_double (s->total_seconds));
  if (s->stop_reason == GMD_STOP_STOP_STRING && s->matched_stop != NULL)
    g_variant_builder_add (&b, "{sv}", "matched_stop", g_variant_new_string (s->matched_stop));
  if (s->stop_reason == GMD_STOP_CANCELLED)
    g_variant_builder_add (&b, "{sv}", "cancel_reason",
                           g_variant_new_string (gmd_cancel_reason_name (s->cancel_reason)));
  if (s->stop_reason == GMD_STOP_ERROR)
    {
      g_variant_builder_add (&b, "{sv}", "error_name",
                             g_variant_new_string (gmd_error_dbus_name (s->error_code)));
      g_variant_builder_add (&b, "{sv}", "error_message",
                             g_variant_new_string (s->error_message != NULL ? s->error_message : ""));
    }
  return g_variant_builder_end (&b);
}

GVariant *
gmd_dbus_progress_to_variant (const GmdProgress *p)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "state", g_variant_new_string (gmd_request_state_name (p->state)));
  if (p->state == GMD_STATE_QUEUED)
    g_variant_builder_add (&b, "{sv}", "queue_position", g_variant_new_uint32 (p->queue_position));
  if (p->state == GMD_STATE_PREFILL)
    {
      g_variant_builder_add (&b, "{sv}", "prompt_done", g_variant_new_uint32 (p->prompt_done));
      g_variant_builder_add (&b, "{sv}", "prompt_total", g_variant_new_uint32 (p->prompt_total));
    }
  if (p->state == GMD_STATE_ENCODING)
    {
      g_variant_builder_add (&b, "{sv}", "media_done", g_variant_new_uint32 (p->prompt_done));
      g_variant_builder_add (&b, "{sv}", "media_total", g_variant_new_uint32 (p->prompt_total));
    }
  return g_variant_builder_end (&b);
}

static GVariant *
text_part_variant (const char *text)
{
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "type", g_variant_new_string ("text"));
  g_variant_builder_add (&b, "{sv}", "text", g_variant_new_string (text));
  return g_variant_builder_end (&b);
}

GVariant *
gmd_dbus_history_to_variant (GPtrArray *messages)
{
  GVariantBuilder list;

  g_variant_builder_init (&list, G_VARIANT_TYPE ("aa{sv}"));
  for (guint i = 0; messages != NULL && i < messages->len; i++)
    {
      const GmdMessage *m = g_ptr_array_index (messages, i);
      GVariantBuilder message, content;

      g_variant_builder_init (&content, G_VARIANT_TYPE ("aa{sv}"));
      /* GmdMessage keeps media and text apart; media come first, as in the usual
       * "image, then question" turn. */
      for (guint j = 0; m->media != NULL && j < m->media->len; j++)
        {
          const GmdHistoryMedia *media = &g_array_index (m->media, GmdHistoryMedia, j);
          GVariantBuilder part;

          g_variant_builder_init (&part, G_VARIANT_TYPE_VARDICT);
          g_variant_builder_add (&part, "{sv}", "type",
                                 g_variant_new_string (gmd_part_type_name ((GmdPartType) media->type)));
          g_variant_builder_add (&part, "{sv}", "soft_tokens", g_variant_new_uint32 (media->soft_tokens));
          g_variant_builder_add_value (&content, g_variant_builder_end (&part));
        }
      if (m->text != NULL)
        g_variant_builder_add_value (&content, text_part_variant (m->text));

      g_variant_builder_init (&message, G_VARIANT_TYPE_VARDICT);
      g_variant_builder_add (&message, "{sv}", "role", g_variant_new_string (gmd_role_name (m->role)));
      g_variant_builder_add (&message, "{sv}", "content", g_variant_builder_end (&content));
      g_variant_builder_add_value (&list, g_variant_builder_end (&message));
    }
  return g_variant_builder_end (&list);
}
