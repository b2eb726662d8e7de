/* gmd-json-writer.c — the server's JSON output (see gmd-json-writer.h). */
#include "gmd-json-writer.h"

#include <math.h>
#include <string.h>

void
gmd_json_writer_init (GmdJsonWriter *w)
{
  w->out = g_string_sized_new (128);
  w->need_comma = FALSE;
}

void
gmd_json_writer_clear (GmdJsonWriter *w)
{
  if (w->out != NULL)
    g_string_free (w->out, TRUE);
  w->out = NULL;
}

/* Before any value or key: separate it from the previous one at this level. */
static void
separate (GmdJsonWriter *w)
{
  if (w->need_comma)
    g_string_append_c (w->out, ',');
  w->need_comma = FALSE;
}

void
gmd_json_writer_begin_object (GmdJsonWriter *w)
{
  separate (w);
  g_string_append_c (w->out, '{');
}

void
gmd_json_writer_end_object (GmdJsonWriter *w)
{
  g_string_append_c (w->out, '}');
  w->need_comma = TRUE;
}

void
gmd_json_writer_begin_array (GmdJsonWriter *w)
{
  separate (w);
  g_string_append_c (w->out, '[');
}

void
gmd_json_writer_end_array (GmdJsonWriter *w)
{
  g_string_append_c (w->out, ']');
  w->need_comma = TRUE;
}

static void
append_escaped (GString *out, const char *s, gsize len)
{
  static const char hex[] = "0123456789abcdef";

  g_string_append_c (out, '"');
  for (gsize i = 0; i < len; i++)
    {
      guchar c = (guchar) s[i];
      switch (c)
        {
        case '"':  g_string_append (out, "\\\""); break;
        case '\\': g_string_append (out, "\\\\"); break;
        case '\n': g_string_append (out, "\\n"); break;
        case '\r': g_string_append (out, "\\r"); break;
        case '\t': g_string_append (out, "\\t"); break;
        case '\b': g_string_append (out, "\\b"); break;
        case '\f': g_string_append (out, "\\f"); break;
        default:
          if (c < 0x20)
            {
              g_string_append (out, "\\u00");
              g_string_append_c (out, hex[c >> 4]);
              g_string_append_c (out, hex[c & 15]);
            }
          else
            g_string_append_c (out, (char) c);
        }
    }
  g_string_append_c (out, '"');
}

static void
append_string (GString *out, const char *s, gsize len)
{
  if (s == NULL)
    {
      append_escaped (out, "", 0);
      return;
    }
  if (!g_utf8_validate_len (s, len, NULL))
    {
      /* Whatever a caller passes, the line stays valid JSON. */
      g_autofree char *valid = g_utf8_make_valid (s, (gssize) len);
      append_escaped (out, valid, strlen (valid));
      return;
    }
  append_escaped (out, s, len);
}

void
gmd_json_writer_key (GmdJsonWriter *w, const char *key)
{
  separate (w);
  append_string (w->out, key, strlen (key));
  g_string_append_c (w->out, ':');
}

void
gmd_json_writer_string (GmdJsonWriter *w, const char *s)
{
  gmd_json_writer_string_len (w, s, s != NULL ? strlen (s) : 0);
}

void
gmd_json_writer_string_len (GmdJsonWriter *w, const char *s, gsize len)
{
  separate (w);
  append_string (w->out, s, len);
  w->need_comma = TRUE;
}

void
gmd_json_writer_int (GmdJsonWriter *w, gint64 v)
{
  separate (w);
  g_string_append_printf (w->out, "%" G_GINT64_FORMAT, v);
  w->need_comma = TRUE;
}

void
gmd_json_writer_uint (GmdJsonWriter *w, guint64 v)
{
  separate (w);
  g_string_append_printf (w->out, "%" G_GUINT64_FORMAT, v);
  w->need_comma = TRUE;
}

void
gmd_json_writer_double (GmdJsonWriter *w, double v)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  separate (w);
  w->need_comma = TRUE;
  if (!isfinite (v))
    {
      g_string_append (w->out, "null");
      return;
    }
  for (int prec = 1; prec <= 17; prec++)
    {
      char fmt[8];
      g_snprintf (fmt, sizeof fmt, "%%.%dg", prec);
      g_ascii_formatd (buf, sizeof buf, fmt, v);
      if (g_ascii_strtod (buf, NULL) == v)
        break;
    }
  g_string_append (w->out, buf);
}

void
gmd_json_writer_bool (GmdJsonWriter *w, gboolean v)
{
  separate (w);
  g_string_append (w->out, v ? "true" : "false");
  w->need_comma = TRUE;
}

void
gmd_json_writer_null (GmdJsonWriter *w)
{
  separate (w);
  g_string_append (w->out, "null");
  w->need_comma = TRUE;
}

void
gmd_json_writer_variant (GmdJsonWriter *w, GVariant *v)
{
  if (v == NULL)
    {
      gmd_json_writer_null (w);
      return;
    }
  switch (g_variant_classify (v))
    {
    case G_VARIANT_CLASS_BOOLEAN: gmd_json_writer_bool (w, g_variant_get_boolean (v)); return;
    case G_VARIANT_CLASS_BYTE:    gmd_json_writer_uint (w, g_variant_get_byte (v)); return;
    case G_VARIANT_CLASS_INT16:   gmd_json_writer_int (w, g_variant_get_int16 (v)); return;
    case G_VARIANT_CLASS_UINT16:  gmd_json_writer_uint (w, g_variant_get_uint16 (v)); return;
    case G_VARIANT_CLASS_INT32:   gmd_json_writer_int (w, g_variant_get_int32 (v)); return;
    case G_VARIANT_CLASS_UINT32:  gmd_json_writer_uint (w, g_variant_get_uint32 (v)); return;
    case G_VARIANT_CLASS_INT64:   gmd_json_writer_int (w, g_variant_get_int64 (v)); return;
    case G_VARIANT_CLASS_UINT64:  gmd_json_writer_uint (w, g_variant_get_uint64 (v)); return;
    case G_VARIANT_CLASS_HANDLE:  gmd_json_writer_int (w, g_variant_get_handle (v)); return;
    case G_VARIANT_CLASS_DOUBLE:  gmd_json_writer_double (w, g_variant_get_double (v)); return;
    case G_VARIANT_CLASS_STRING:
    case G_VARIANT_CLASS_OBJECT_PATH:
    case G_VARIANT_CLASS_SIGNATURE:
      gmd_json_writer_string (w, g_variant_get_string (v, NULL));
      return;
    case G_VARIANT_CLASS_VARIANT:
      {
        g_autoptr (GVariant) inner = g_variant_get_variant (v);
        gmd_json_writer_variant (w, inner);
        return;
      }
    case G_VARIANT_CLASS_MAYBE:
      {
        g_autoptr (GVariant) inner = g_variant_get_maybe (v);
        gmd_json_writer_variant (w, inner);
        return;
      }
    case G_VARIANT_CLASS_ARRAY:
      {
        const GVariantType *elem = g_variant_type_element (g_variant_get_type (v));
        gboolean string_dict = g_variant_type_is_dict_entry (elem) &&
                               g_variant_type_equal (g_variant_type_key (elem), G_VARIANT_TYPE_STRING);
        gsize n = g_variant_n_children (v);

        if (string_dict)
          gmd_json_writer_begin_object (w);
        else
          gmd_json_writer_begin_array (w);
        for (gsize i = 0; i < n; i++)
          {
            g_autoptr (GVariant) child = g_variant_get_child_value (v, i);
            if (string_dict)
              {
                g_autoptr (GVariant) key = g_variant_get_child_value (child, 0);
                g_autoptr (GVariant) value = g_variant_get_child_value (child, 1);
                gmd_json_writer_key (w, g_variant_get_string (key, NULL));
                gmd_json_writer_variant (w, value);
              }
            else
              gmd_json_writer_variant (w, child);
          }
        if (string_dict)
          gmd_json_writer_end_object (w);
        else
          gmd_json_writer_end_array (w);
        return;
      }
    case G_VARIANT_CLASS_TUPLE:
    case G_VARIANT_CLASS_DICT_ENTRY:
      {
        gsize n = g_variant_n_children (v);
        gmd_json_writer_begin_array (w);
        for (gsize i = 0; i < n; i++)
          {
            g_autoptr (GVariant) child = g_variant_get_child_value (v, i);
            gmd_json_writer_variant (w, child);
          }
        gmd_json_writer_end_array (w);
        return;
      }
    }
  gmd_json_writer_null (w);
}

void
gmd_json_writer_member_string (GmdJsonWriter *w, const char *key, const char *s)
{
  gmd_json_writer_key (w, key);
  gmd_json_writer_string (w, s);
}

void
gmd_json_writer_member_int (GmdJsonWriter *w, const char *key, gint64 v)
{
  gmd_json_writer_key (w, key);
  gmd_json_writer_int (w, v);
}

void
gmd_json_writer_member_uint (GmdJsonWriter *w, const char *key, guint64 v)
{
  gmd_json_writer_key (w, key);
  gmd_json_writer_uint (w, v);
}

void
gmd_json_writer_member_double (GmdJsonWriter *w, const char *key, double v)
{
  gmd_json_writer_key (w, key);
  gmd_json_writer_double (w, v);
}

void
gmd_json_writer_member_bool (GmdJsonWriter *w, const char *key, gboolean v)
{
  gmd_json_writer_key (w, key);
  gmd_json_writer_bool (w, v);
}

char *
gmd_json_writer_finish_line (GmdJsonWriter *w)
{
  GString *out = w->out;

  w->out = NULL;
  g_string_append_c (out, '\n');
  return g_string_free (out, FALSE);
}
