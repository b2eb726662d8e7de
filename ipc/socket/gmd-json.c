/* gmd-json.c — strict, bounded JSON reader for protocol lines (see gmd-json.h). */
#include "gmd-json.h"

#include <math.h>
#include <string.h>

#include "daemon/gmd-error.h"

typedef struct {
  const char *start;
  const char *p;
  const char *end;
  guint values;
  GError **error;
} Reader;

static gboolean
fail_at (Reader *r, const char *at, const char *format, ...) G_GNUC_PRINTF (3, 4);

static gboolean
fail_at (Reader *r, const char *at, const char *format, ...)
{
  g_autofree char *text = NULL;
  va_list ap;

  va_start (ap, format);
  text = g_strdup_vprintf (format, ap);
  va_end (ap);
  g_set_error (r->error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT, "invalid JSON at byte %" G_GSIZE_FORMAT ": %s",
               (gsize) (at - r->start) + 1, text);
  return FALSE;
}

/* What stands at p, for messages: "unexpected end of line" or "unexpected 'x'". */
static gboolean
fail_unexpected (Reader *r, const char *what_was_expected)
{
  if (r->p >= r->end)
    return fail_at (r, r->p, "unexpected end of line, expected %s", what_was_expected);
  if ((guchar) *r->p >= 0x20 && (guchar) *r->p < 0x7f)
    return fail_at (r, r->p, "unexpected '%c', expected %s", *r->p, what_was_expected);
  return fail_at (r, r->p, "unexpected byte 0x%02x, expected %s", (guchar) *r->p, what_was_expected);
}

static void
skip_space (Reader *r)
{
  while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
    r->p++;
}

static GmdJson *
new_value (Reader *r, GmdJsonType type)
{
  GmdJson *v;

  if (++r->values > GMD_JSON_MAX_VALUES)
    {
      g_set_error (r->error, GMD_ERROR, GMD_ERROR_LIMIT_EXCEEDED,
                   "more than %u JSON values in one line", GMD_JSON_MAX_VALUES);
      return NULL;
    }
  v = g_new0 (GmdJson, 1);
  v->type = type;
  return v;
}

void
gmd_json_free (GmdJson *json)
{
  if (json == NULL)
    return;
  switch (json->type)
    {
    case GMD_JSON_STRING:
      g_free (json->str.data);
      break;
    case GMD_JSON_ARRAY:
      for (guint i = 0; i < json->arr.n; i++)
        gmd_json_free (json->arr.items[i]);
      g_free (json->arr.items);
      break;
    case GMD_JSON_OBJECT:
      for (guint i = 0; i < json->obj.n; i++)
        {
          g_free (json->obj.members[i].key);
          gmd_json_free (json->obj.members[i].value);
        }
      g_free (json->obj.members);
      break;
    default:
      break;
    }
  g_free (json);
}

static int
hex_digit (char c)
{
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Four hex digits after "\u" at r->p. */
static gboolean
read_hex4 (Reader *r, guint32 *out)
{
  guint32 v = 0;

  if (r->end - r->p < 4)
    return fail_at (r, r->p, "incomplete \\u escape");
  for (int i = 0; i < 4; i++)
    {
      int h = hex_digit (r->p[i]);
      if (h < 0)
        return fail_at (r, r->p + i, "bad hex digit in \\u escape");
      v = v << 4 | (guint32) h;
    }
  r->p += 4;
  *out = v;
  return TRUE;
}

/* Reads a string whose opening quote is at r->p; the text is UTF-8 already (checked for
 * the whole line before parsing). */
static gboolean
read_string (Reader *r, char **out, gsize *out_len)
{
  g_autoptr (GString) s = NULL;
  const char *open = r->p;

  r->p++;
  /* Most strings have no escapes: size the buffer for the run up to the next quote. */
  s = g_string_sized_new (32);
  for (;;)
    {
      const char *run = r->p;
      while (r->p < r->end && *r->p != '"' && *r->p != '\\' && (guchar) *r->p >= 0x20)
        r->p++;
      g_string_append_len (s, run, r->p - run);
      if (r->p >= r->end)
        return fail_at (r, open, "string not closed before the end of the line");
      if (*r->p == '"')
        {
          r->p++;
          break;
        }
      if ((guchar) *r->p < 0x20)
        return fail_at (r, r->p, "control character 0x%02x in a string (escape it)", (guchar) *r->p);
      /* backslash */
      r->p++;
      if (r->p >= r->end)
        return fail_at (r, r->p, "incomplete escape");
      switch (*r->p++)
        {
        case '"':  g_string_append_c (s, '"'); break;
        case '\\': g_string_append_c (s, '\\'); break;
        case '/':  g_string_append_c (s, '/'); break;
        case 'b':  g_string_append_c (s, '\b'); break;
        case 'f':  g_string_append_c (s, '\f'); break;
        case 'n':  g_string_append_c (s, '\n'); break;
        case 'r':  g_string_append_c (s, '\r'); break;
        case 't':  g_string_append_c (s, '\t'); break;
        case 'u':
          {
            const char *esc = r->p - 2;
            guint32 c, low;
            char utf8[6];

            if (!read_hex4 (r, &c))
              return FALSE;
            if (c >= 0xdc00 && c <= 0xdfff)
              return fail_at (r, esc, "unpaired low surrogate \\u%04x", c);
            if (c >= 0xd800 && c <= 0xdbff)
              {
                if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u')
                  return fail_at (r, esc, "high surrogate \\u%04x not followed by a low one", c);
                r->p += 2;
                if (!read_hex4 (r, &low))
                  return FALSE;
                if (low < 0xdc00 || low > 0xdfff)
                  return fail_at (r, esc, "high surrogate \\u%04x not followed by a low one", c);
                c = 0x10000 + ((c - 0xd800) << 10) + (low - 0xdc00);
              }
            g_string_append_len (s, utf8, g_unichar_to_utf8 (c, utf8));
            break;
          }
        default:
          return fail_at (r, r->p - 2, "unknown escape '\\%c'",
                          g_ascii_isprint (r->p[-1]) ? r->p[-1] : '?');
        }
    }
  *out_len = s->len;
  *out = g_string_free (g_steal_pointer (&s), FALSE);
  return TRUE;
}

static GmdJson *
read_number (Reader *r)
{
  const char *begin = r->p;
  gboolean negative = FALSE, integral = TRUE;
  g_autofree char *copy = NULL;
  GmdJson *v;
  double d;

  if (*r->p == '-')
    {
      negative = TRUE;
      r->p++;
    }
  if (r->p >= r->end || !g_ascii_isdigit (*r->p))
    {
      fail_unexpected (r, "a digit");
      return NULL;
    }
  if (*r->p == '0')
    {
      r->p++;
      if (r->p < r->end && g_ascii_isdigit (*r->p))
        {
          fail_at (r, r->p - 1, "number with a leading zero");
          return NULL;
        }
    }
  else
    while (r->p < r->end && g_ascii_isdigit (*r->p))
      r->p++;
  if (r->p < r->end && *r->p == '.')
    {
      integral = FALSE;
      r->p++;
      if (r->p >= r->end || !g_ascii_isdigit (*r->p))
        {
          fail_unexpected (r, "a digit after '.'");
          return NULL;
        }
      while (r->p < r->end && g_ascii_isdigit (*r->p))
        r->p++;
    }
  if (r->p < r->end && (*r->p == 'e' || *r->p == 'E'))
    {
      integral = FALSE;
      r->p++;
      if (r->p < r->end && (*r->p == '+' || *r->p == '-'))
        r->p++;
      if (r->p >= r->end || !g_ascii_isdigit (*r->p))
        {
          fail_unexpected (r, "a digit in the exponent");
          return NULL;
        }
      while (r->p < r->end && g_ascii_isdigit (*r->p))
        r->p++;
    }

  if (integral)
    {
      /* Accumulate as a negative number so that G_MININT64 fits. */
      gint64 acc = 0;
      gboolean overflow = FALSE;

      for (const char *q = begin + negative; q < r->p && !overflow; q++)
        {
          int digit = *q - '0';
          if (acc < (G_MININT64 + digit) / 10)
            overflow = TRUE;
          else
            acc = acc * 10 - digit;
        }
      if (!overflow && (negative || acc != G_MININT64))
        {
          if ((v = new_value (r, GMD_JSON_INT)) != NULL)
            v->i = negative ? acc : -acc;
          return v;
        }
    }

  copy = g_strndup (begin, r->p - begin);
  d = g_ascii_strtod (copy, NULL);
  if (!isfinite (d))
    {
      fail_at (r, begin, "number out of range");
      return NULL;
    }
  if ((v = new_value (r, GMD_JSON_DOUBLE)) != NULL)
    {
      v->num.d = d;
      v->num.integer_literal = integral;
    }
  return v;
}

static gboolean
read_literal (Reader *r, const char *word)
{
  gsize n = strlen (word);

  if ((gsize) (r->end - r->p) < n || memcmp (r->p, word, n) != 0)
    return fail_unexpected (r, "a value");
  r->p += n;
  return TRUE;
}

static GmdJson *read_value (Reader *r, guint depth);

static GmdJson *
read_array (Reader *r, guint depth)
{
  g_autoptr (GPtrArray) items = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_json_free);
  GmdJson *v;

  r->p++;
  skip_space (r);
  if (r->p < r->end && *r->p == ']')
    r->p++;
  else
    for (;;)
      {
        GmdJson *item = read_value (r, depth + 1);
        if (item == NULL)
          return NULL;
        g_ptr_array_add (items, item);
        skip_space (r);
        if (r->p < r->end && *r->p == ',')
          {
            r->p++;
            continue;
          }
        if (r->p < r->end && *r->p == ']')
          {
            r->p++;
            break;
          }
        fail_unexpected (r, "',' or ']'");
        return NULL;
      }
  if ((v = new_value (r, GMD_JSON_ARRAY)) == NULL)
    return NULL;
  v->arr.n = items->len;
  g_ptr_array_set_free_func (items, NULL);
  v->arr.items = (GmdJson **) g_ptr_array_free (g_steal_pointer (&items), FALSE);
  return v;
}

static void
clear_member (gpointer p)
{
  GmdJsonMember *m = p;

  g_free (m->key);
  gmd_json_free (m->value);
}

static GmdJson *
read_object (Reader *r, guint depth)
{
  g_autoptr (GArray) members = g_array_new (FALSE, FALSE, sizeof (GmdJsonMember));
  g_autoptr (GHashTable) seen = NULL;  /* only for objects with many keys */
  GmdJson *v;

  g_array_set_clear_func (members, clear_member);
  r->p++;
  skip_space (r);
  if (r->p < r->end && *r->p == '}')
    r->p++;
  else
    for (;;)
      {
        GmdJsonMember m = { NULL, NULL };
        const char *key_at;
        gsize key_len;
        gboolean duplicate = FALSE;

        skip_space (r);
        if (r->p >= r->end || *r->p != '"')
          {
            fail_unexpected (r, "a string (object key)");
            return NULL;
          }
        key_at = r->p;
        if (!read_string (r, &m.key, &key_len))
          return NULL;
        if (strlen (m.key) != key_len)
          {
            g_free (m.key);
            fail_at (r, key_at, "object key contains \\u0000");
            return NULL;
          }
        if (seen != NULL)
          duplicate = g_hash_table_contains (seen, m.key);
        else
          for (guint i = 0; i < members->len && !duplicate; i++)
            duplicate = strcmp (g_array_index (members, GmdJsonMember, i).key, m.key) == 0;
        if (duplicate)
          {
            g_autofree char *escaped = g_strescape (m.key, NULL);
            g_free (m.key);
            fail_at (r, key_at, "duplicate key \"%.64s\"", escaped);
            return NULL;
          }
        skip_space (r);
        if (r->p >= r->end || *r->p != ':')
          {
            g_free (m.key);
            fail_unexpected (r, "':'");
            return NULL;
          }
        r->p++;
        m.value = read_value (r, depth + 1);
        if (m.value == NULL)
          {
            g_free (m.key);
            return NULL;
          }
        g_array_append_val (members, m);
        if (seen != NULL)
          g_hash_table_add (seen, m.key);
        else if (members->len == 16)
          {
            /* Keys are owned by members; the set only borrows them. */
            seen = g_hash_table_new (g_str_hash, g_str_equal);
            for (guint i = 0; i < members->len; i++)
              g_hash_table_add (seen, g_array_index (members, GmdJsonMember, i).key);
          }
        skip_space (r);
        if (r->p < r->end && *r->p == ',')
          {
            r->p++;
            continue;
          }
        if (r->p < r->end && *r->p == '}')
          {
            r->p++;
            break;
          }
        fail_unexpected (r, "',' or '}'");
        return NULL;
      }
  g_clear_pointer (&seen, g_hash_table_unref);
  if ((v = new_value (r, GMD_JSON_OBJECT)) == NULL)
    return NULL;
  v->obj.n = members->len;
  g_array_set_clear_func (members, NULL);
  v->obj.members = (GmdJsonMember *) (void *) g_array_free (g_steal_pointer (&members), FALSE);
  return v;
}

static GmdJson *
read_value (Reader *r, guint depth)
{
  GmdJson *v;

  skip_space (r);
  if (r->p >= r->end)
    {
      fail_unexpected (r, "a value");
      return NULL;
    }
  if ((*r->p == '[' || *r->p == '{') && depth >= GMD_JSON_MAX_DEPTH)
    {
      g_set_error (r->error, GMD_ERROR, GMD_ERROR_LIMIT_EXCEEDED,
                   "JSON nested deeper than %d levels (at byte %" G_GSIZE_FORMAT ")",
                   GMD_JSON_MAX_DEPTH, (gsize) (r->p - r->start) + 1);
      return NULL;
    }
  switch (*r->p)
    {
    case '{':
      return read_object (r, depth);
    case '[':
      return read_array (r, depth);
    case '"':
      {
        char *data;
        gsize len;
        if (!read_string (r, &data, &len))
          return NULL;
        if ((v = new_value (r, GMD_JSON_STRING)) == NULL)
          {
            g_free (data);
            return NULL;
          }
        v->str.data = data;
        v->str.len = len;
        return v;
      }
    case 't':
    case 'f':
      {
        gboolean b = *r->p == 't';
        if (!read_literal (r, b ? "true" : "false"))
          return NULL;
        if ((v = new_value (r, GMD_JSON_BOOL)) != NULL)
          v->b = b;
        return v;
      }
    case 'n':
      if (!read_literal (r, "null"))
        return NULL;
      return new_value (r, GMD_JSON_NULL);
    default:
      if (*r->p == '-' || g_ascii_isdigit (*r->p))
        return read_number (r);
      fail_unexpected (r, "a value");
      return NULL;
    }
}

GmdJson *
gmd_json_parse (const char *data, gsize len, GError **error)
{
  Reader r = { data, data, data + len, 0, error };
  const char *bad = NULL;
  GmdJson *v;

  if (!g_utf8_validate_len (data, len, &bad))
    {
      if (*bad == '\0')
        fail_at (&r, bad, "NUL byte (use \\u0000 inside strings)");
      else
        fail_at (&r, bad, "not valid UTF-8");
      return NULL;
    }
  v = read_value (&r, 0);
  if (v == NULL)
    return NULL;
  skip_space (&r);
  if (r.p < r.end)
    {
      fail_unexpected (&r, "the end of the line after the value");
      gmd_json_free (v);
      return NULL;
    }
  return v;
}

const GmdJson *
gmd_json_get (const GmdJson *json, const char *key)
{
  if (json == NULL || json->type != GMD_JSON_OBJECT)
    return NULL;
  for (guint i = 0; i < json->obj.n; i++)
    if (strcmp (json->obj.members[i].key, key) == 0)
      return json->obj.members[i].value;
  return NULL;
}

const char *
gmd_json_type_name (const GmdJson *json)
{
  switch (json->type)
    {
    case GMD_JSON_NULL:   return "null";
    case GMD_JSON_BOOL:   return "a boolean";
    case GMD_JSON_INT:    return "an integer";
    case GMD_JSON_DOUBLE: return json->num.integer_literal ? "an integer" : "a number with a fraction";
    case GMD_JSON_STRING: return "a string";
    case GMD_JSON_ARRAY:  return "an array";
    case GMD_JSON_OBJECT: return "an object";
    }
  return "a value";
}

gboolean
gmd_json_is_c_string (const GmdJson *json)
{
  return json != NULL && json->type == GMD_JSON_STRING && strlen (json->str.data) == json->str.len;
}
