/* gmd-proto.c — parsing request lines and writing reply lines (docs/protocol.md). */
#include "gmd-proto.h"

#include <math.h>
#include <string.h>

#include "gmd-json.h"

/* ---- ids ----------------------------------------------------------------------------- */

GmdProtoId *
gmd_proto_id_new_int (gint64 number)
{
  GmdProtoId *id = g_new0 (GmdProtoId, 1);

  id->number = number;
  return id;
}

GmdProtoId *
gmd_proto_id_new_string (const char *string)
{
  GmdProtoId *id = g_new0 (GmdProtoId, 1);

  id->is_string = TRUE;
  id->string = g_strdup (string);
  return id;
}

GmdProtoId *
gmd_proto_id_copy (const GmdProtoId *id)
{
  if (id == NULL)
    return NULL;
  return id->is_string ? gmd_proto_id_new_string (id->string) : gmd_proto_id_new_int (id->number);
}

void
gmd_proto_id_free (GmdProtoId *id)
{
  if (id == NULL)
    return;
  g_free (id->string);
  g_free (id);
}

char *
gmd_proto_id_key (const GmdProtoId *id)
{
  if (id->is_string)
    return g_strconcat ("s:", id->string, NULL);
  return g_strdup_printf ("i:%" G_GINT64_FORMAT, id->number);
}

/* A client's string made safe for a one-line message: escaped and shortened. */
static char *
quote (const char *s, gsize len)
{
  g_autofree char *head = g_strndup (s, MIN (len, 48));
  g_autofree char *escaped = g_strescape (head, NULL);

  return g_strdup_printf ("\"%s%s\"", escaped, len > 48 ? "…" : "");
}

char *
gmd_proto_id_to_display (const GmdProtoId *id)
{
  if (id->is_string)
    return quote (id->string, strlen (id->string));
  return g_strdup_printf ("%" G_GINT64_FORMAT, id->number);
}

/* An id value (of "id" or of cancel's "target"); NULL with error when unusable. */
static GmdProtoId *
read_id (const GmdJson *v, const char *field, GError **error)
{
  if (v == NULL)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "missing");
      return NULL;
    }
  if (v->type == GMD_JSON_INT && v->i >= 0 && v->i <= GMD_PROTO_ID_MAX_INT)
    return gmd_proto_id_new_int (v->i);
  if (gmd_json_is_c_string (v) && v->str.len >= 1 && v->str.len <= GMD_PROTO_ID_MAX_BYTES)
    return gmd_proto_id_new_string (v->str.data);
  const char *got = gmd_json_type_name (v);
  if (v->type == GMD_JSON_INT || (v->type == GMD_JSON_DOUBLE && v->num.integer_literal))
    got = "an integer out of range";
  else if (v->type == GMD_JSON_STRING)
    got = gmd_json_is_c_string (v) ? "a string of another length" : "a string with a NUL character";
  gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                       "must be a string of 1 to %d bytes or an integer in [0, %" G_GINT64_FORMAT "], got %s",
                       GMD_PROTO_ID_MAX_BYTES, GMD_PROTO_ID_MAX_INT, got);
  return NULL;
}

/* ---- request types --------------------------------------------------------------------- */

static const struct {
  const char *name;
  GmdProtoType type;
  const char *fields[4];   /* besides "type" and "id" */
} request_types[] = {
  { "hello",            GMD_PROTO_HELLO,            { "version", "client" } },
  { "info",             GMD_PROTO_INFO,             { NULL } },
  { "generate",         GMD_PROTO_GENERATE,         { "content", "prompt", "options" } },
  { "session.open",     GMD_PROTO_SESSION_OPEN,     { "options" } },
  { "session.send",     GMD_PROTO_SESSION_SEND,     { "session", "content", "prompt", "options" } },
  { "session.history",  GMD_PROTO_SESSION_HISTORY,  { "session" } },
  { "session.truncate", GMD_PROTO_SESSION_TRUNCATE, { "session", "keep" } },
  { "session.close",    GMD_PROTO_SESSION_CLOSE,    { "session" } },
  { "cancel",           GMD_PROTO_CANCEL,           { "target", "request" } },
  { "list",             GMD_PROTO_LIST,             { NULL } },
  { "reload_config",    GMD_PROTO_RELOAD_CONFIG,    { NULL } },
  { "load_model",       GMD_PROTO_LOAD_MODEL,       { "model_path", "mmproj_path", "options" } },
  { "unload_model",     GMD_PROTO_UNLOAD_MODEL,     { NULL } },
};

const char *
gmd_proto_type_name (GmdProtoType type)
{
  for (guint i = 0; i < G_N_ELEMENTS (request_types); i++)
    if (request_types[i].type == type)
      return request_types[i].name;
  return "unknown";
}

gboolean
gmd_proto_type_is_admin (GmdProtoType type)
{
  return type == GMD_PROTO_RELOAD_CONFIG || type == GMD_PROTO_LOAD_MODEL ||
         type == GMD_PROTO_UNLOAD_MODEL;
}

gboolean
gmd_proto_type_is_stream (GmdProtoType type)
{
  return type == GMD_PROTO_GENERATE || type == GMD_PROTO_SESSION_SEND;
}

void
gmd_proto_request_free (GmdProtoRequest *request)
{
  if (request == NULL)
    return;
  gmd_proto_id_free (request->id);
  g_free (request->client);
  if (request->parts != NULL)
    g_ptr_array_unref (request->parts);
  gmd_options_free (request->options);
  g_free (request->session);
  gmd_proto_id_free (request->target);
  g_free (request->request_handle);
  g_free (request->model_path);
  g_free (request->mmproj_path);
  g_free (request);
}

/* ---- field readers ----------------------------------------------------------------------- */


/* "unknown field" naming the key in the field path when it can be one. */
static void
set_unknown_key_error (GError **error, const char *parent, const char *key, const char *where)
{
  if (gmd_field_key_is_plain (key))
    {
      g_autofree char *field = parent != NULL ? g_strdup_printf ("%s.%s", parent, key) : g_strdup (key);
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "unknown field %s", where);
    }
  else
    {
      g_autofree char *q = quote (key, strlen (key));
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, parent, "unknown field %s %s", q, where);
    }
}

static gboolean
type_error (GError **error, const char *field, const char *expected, const GmdJson *got)
{
  gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "expected %s, got %s", expected,
                       gmd_json_type_name (got));
  return FALSE;
}

/* A string usable as a C string; *out stays NULL when absent and not required. */
static gboolean
read_string (const GmdJson *obj, const char *key, const char *field, gboolean required,
             char **out, GError **error)
{
  const GmdJson *v = gmd_json_get (obj, key);

  if (v == NULL)
    {
      if (!required)
        return TRUE;
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "missing");
      return FALSE;
    }
  if (v->type != GMD_JSON_STRING)
    return type_error (error, field, "a string", v);
  if (!gmd_json_is_c_string (v))
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "contains a NUL character");
      return FALSE;
    }
  *out = g_strdup (v->str.data);
  return TRUE;
}

/* An integer in [lo, hi]. */
static gboolean
read_int (const GmdJson *v, const char *field, gint64 lo, gint64 hi, gint64 *out, GError **error)
{
  if (v->type == GMD_JSON_DOUBLE && v->num.integer_literal)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                           "must be in [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "], got a larger integer",
                           lo, hi);
      return FALSE;
    }
  if (v->type != GMD_JSON_INT)
    return type_error (error, field, "an integer", v);
  if (v->i < lo || v->i > hi)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                           "must be in [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "], got %" G_GINT64_FORMAT,
                           lo, hi, v->i);
      return FALSE;
    }
  *out = v->i;
  return TRUE;
}

static gboolean
read_uint32_member (const GmdJson *obj, const char *key, const char *field, gboolean required,
                    guint32 *out, GError **error)
{
  const GmdJson *v = gmd_json_get (obj, key);
  gint64 i;

  if (v == NULL)
    {
      if (!required)
        return TRUE;
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "missing");
      return FALSE;
    }
  if (!read_int (v, field, 0, G_MAXUINT32, &i, error))
    return FALSE;
  *out = (guint32) i;
  return TRUE;
}

/* ---- content ------------------------------------------------------------------------------ */

static int
base64_value (guchar c)
{
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+')
    return 62;
  if (c == '/')
    return 63;
  return -1;
}

/* Decoded size of standard base64 with padding, or -1 when the length cannot be one. */
static gssize
base64_decoded_size (const char *s, gsize len)
{
  gsize pad = 0;

  if (len % 4 != 0)
    return -1;
  if (len > 0 && s[len - 1] == '=')
    pad++;
  if (len > 1 && s[len - 2] == '=')
    pad++;
  return (gssize) (len / 4 * 3 - pad);
}

/* RFC 4648 §4 with padding and nothing else (no whitespace, no URL alphabet). */
static GBytes *
base64_decode_strict (const char *s, gsize len, const char *field, GError **error)
{
  gssize size = base64_decoded_size (s, len);
  g_autofree guint8 *out = NULL;
  gsize o = 0;

  if (size < 0)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                           "not valid base64: length %" G_GSIZE_FORMAT " is not a multiple of 4", len);
      return NULL;
    }
  out = g_malloc (size > 0 ? (gsize) size : 1);
  for (gsize i = 0; i < len; i += 4)
    {
      int v[4];
      gboolean last = i + 4 == len;
      guint32 bits;

      for (int k = 0; k < 4; k++)
        {
          guchar c = (guchar) s[i + k];
          v[k] = base64_value (c);
          /* '=' only as the last one or two characters */
          if (v[k] < 0 && !(c == '=' && last && (k == 3 || (k == 2 && s[i + 3] == '='))))
            {
              if (c >= 0x20 && c < 0x7f)
                gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                                     "not valid base64: '%c' at character %" G_GSIZE_FORMAT, c, i + k + 1);
              else
                gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                                     "not valid base64: byte 0x%02x at character %" G_GSIZE_FORMAT, c,
                                     i + k + 1);
              return NULL;
            }
        }
      bits = (guint32) (v[0] << 18 | v[1] << 12 | (v[2] < 0 ? 0 : v[2] << 6) | (v[3] < 0 ? 0 : v[3]));
      out[o++] = (guint8) (bits >> 16);
      if (v[2] >= 0)
        out[o++] = (guint8) (bits >> 8);
      if (v[3] >= 0)
        out[o++] = (guint8) bits;
    }
  return g_bytes_new_take (g_steal_pointer (&out), o);
}

typedef struct {
  const int *fds;
  guint n_fds;
  const GmdLimits *limits;
  gint *fd_used_by;     /* per fd: index of the part that took it, or -1 */
  guint64 media_bytes;  /* so far in this request */
} ContentReader;

static gboolean
check_media_total (ContentReader *cr, gsize more, const char *field, GError **error)
{
  if (cr->media_bytes + more > cr->limits->max_media_bytes)
    {
      gmd_set_field_error (error, GMD_ERROR_LIMIT_EXCEEDED, field,
                           "the request's media add up to more than the limit of %" G_GUINT64_FORMAT " bytes",
                           cr->limits->max_media_bytes);
      return FALSE;
    }
  cr->media_bytes += more;
  return TRUE;
}

static GmdPart *
read_media_part (ContentReader *cr, const GmdJson *part, GmdPartType type, guint index,
                 const char *field, GError **error)
{
  const GmdJson *fd = gmd_json_get (part, "fd");
  const GmdJson *b64 = gmd_json_get (part, "base64");
  g_autoptr (GBytes) bytes = NULL;

  if ((fd == NULL) == (b64 == NULL))
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                           fd == NULL ? "a media part needs \"fd\" or \"base64\""
                                      : "give either \"fd\" or \"base64\", not both");
      return NULL;
    }
  if (fd != NULL)
    {
      g_autofree char *fd_field = g_strdup_printf ("%s.fd", field);
      gint64 n;

      if (!read_int (fd, fd_field, 0, G_MAXINT32, &n, error))
        return NULL;
      if (n >= cr->n_fds)
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, fd_field,
                               "no fd %" G_GINT64_FORMAT " came with this line (it carried %u)", n, cr->n_fds);
          return NULL;
        }
      if (cr->fd_used_by[n] >= 0)
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, fd_field,
                               "fd %" G_GINT64_FORMAT " is already used by content[%d]", n, cr->fd_used_by[n]);
          return NULL;
        }
      cr->fd_used_by[n] = (gint) index;
      bytes = gmd_media_read_fd (cr->fds[n], cr->limits->max_media_bytes, fd_field, error);
      if (bytes == NULL)
        return NULL;
      if (!check_media_total (cr, g_bytes_get_size (bytes), field, error))
        return NULL;
    }
  else
    {
      g_autofree char *b64_field = g_strdup_printf ("%s.base64", field);
      gssize size;

      if (b64->type != GMD_JSON_STRING)
        {
          type_error (error, b64_field, "a string", b64);
          return NULL;
        }
      /* Refuse oversize media before decoding it. */
      size = base64_decoded_size (b64->str.data, b64->str.len);
      if (size > 0 && !check_media_total (cr, (gsize) size, field, error))
        return NULL;
      bytes = base64_decode_strict (b64->str.data, b64->str.len, b64_field, error);
      if (bytes == NULL)
        return NULL;
    }
  return gmd_part_new_media (type, bytes);
}

static GmdPart *
read_part (ContentReader *cr, const GmdJson *part, guint index, GError **error)
{
  g_autofree char *field = g_strdup_printf ("content[%u]", index);
  g_autofree char *type_field = g_strdup_printf ("content[%u].type", index);
  g_autofree char *type_name = NULL;
  GmdPartType type;

  if (part->type != GMD_JSON_OBJECT)
    {
      type_error (error, field, "an object", part);
      return NULL;
    }
  if (!read_string (part, "type", type_field, TRUE, &type_name, error))
    return NULL;
  if (!gmd_part_type_from_name (type_name, &type))
    {
      g_autofree char *q = quote (type_name, strlen (type_name));
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, type_field,
                           "unknown part type %s (text, image or audio)", q);
      return NULL;
    }
  for (guint i = 0; i < part->obj.n; i++)
    {
      const char *key = part->obj.members[i].key;
      gboolean known = strcmp (key, "type") == 0 ||
                       (type == GMD_PART_TEXT ? strcmp (key, "text") == 0
                                              : strcmp (key, "fd") == 0 || strcmp (key, "base64") == 0);
      if (!known)
        {
          set_unknown_key_error (error, field, key, type == GMD_PART_TEXT ? "in a text part" : "in a media part");
          return NULL;
        }
    }
  if (type == GMD_PART_TEXT)
    {
      g_autofree char *text_field = g_strdup_printf ("content[%u].text", index);
      const GmdJson *text = gmd_json_get (part, "text");

      if (text == NULL)
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, text_field, "missing");
          return NULL;
        }
      if (text->type != GMD_JSON_STRING)
        {
          type_error (error, text_field, "a string", text);
          return NULL;
        }
      return gmd_part_new_text (text->str.data, text->str.len, text_field, error);
    }
  return read_media_part (cr, part, type, index, field, error);
}

static GPtrArray *
read_content (const GmdJson *content, const int *fds, guint n_fds, const GmdLimits *limits,
              GError **error)
{
  g_autoptr (GPtrArray) parts = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_part_free);
  g_autofree gint *fd_used_by = g_new (gint, MAX (n_fds, 1));
  ContentReader cr = { fds, n_fds, limits, fd_used_by, 0 };
  guint media_parts = 0;

  if (content->type != GMD_JSON_ARRAY)
    {
      type_error (error, "content", "an array of parts", content);
      return NULL;
    }
  if (content->arr.n == 0)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "content", "needs at least one part");
      return NULL;
    }
  /* Count media parts before reading any, so an oversized request reads nothing. */
  for (guint i = 0; i < content->arr.n; i++)
    {
      const GmdJson *type = gmd_json_get (content->arr.items[i], "type");
      if (type != NULL && type->type == GMD_JSON_STRING && strcmp (type->str.data, "text") != 0)
        media_parts++;
    }
  if (media_parts > limits->max_media_parts)
    {
      gmd_set_field_error (error, GMD_ERROR_LIMIT_EXCEEDED, "content",
                           "%u media parts, at most %u allowed", media_parts, limits->max_media_parts);
      return NULL;
    }
  for (guint i = 0; i < n_fds; i++)
    fd_used_by[i] = -1;
  for (guint i = 0; i < content->arr.n; i++)
    {
      GmdPart *part = read_part (&cr, content->arr.items[i], i, error);
      if (part == NULL)
        return NULL;
      g_ptr_array_add (parts, part);
    }
  return g_steal_pointer (&parts);
}

/* content or prompt: exactly one. */
static GPtrArray *
read_prompt (const GmdJson *root, const int *fds, guint n_fds, const GmdLimits *limits,
             GError **error)
{
  const GmdJson *content = gmd_json_get (root, "content");
  const GmdJson *prompt = gmd_json_get (root, "prompt");
  GPtrArray *parts;
  GmdPart *part;

  if (content != NULL && prompt != NULL)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "prompt",
                           "give either prompt or content, not both");
      return NULL;
    }
  if (content != NULL)
    return read_content (content, fds, n_fds, limits, error);
  if (prompt == NULL)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "content", "missing (give content or prompt)");
      return NULL;
    }
  if (prompt->type != GMD_JSON_STRING)
    {
      type_error (error, "prompt", "a string", prompt);
      return NULL;
    }
  part = gmd_part_new_text (prompt->str.data, prompt->str.len, "prompt", error);
  if (part == NULL)
    return NULL;
  parts = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_part_free);
  g_ptr_array_add (parts, part);
  return parts;
}

/* ---- options -------------------------------------------------------------------------- */

static GPtrArray *
read_history (const GmdJson *v, const char *field, GError **error)
{
  g_autoptr (GPtrArray) history = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_message_free);

  if (v->type != GMD_JSON_ARRAY)
    {
      type_error (error, field, "an array of messages", v);
      return NULL;
    }
  for (guint i = 0; i < v->arr.n; i++)
    {
      const GmdJson *m = v->arr.items[i];
      g_autofree char *item = g_strdup_printf ("%s[%u]", field, i);
      g_autofree char *role_field = g_strdup_printf ("%s.role", item);
      g_autofree char *text_field = g_strdup_printf ("%s.text", item);
      g_autofree char *role_name = NULL;
      g_autofree char *text = NULL;
      GmdRole role;

      if (m->type != GMD_JSON_OBJECT)
        {
          type_error (error, item, "an object", m);
          return NULL;
        }
      for (guint k = 0; k < m->obj.n; k++)
        if (strcmp (m->obj.members[k].key, "role") != 0 && strcmp (m->obj.members[k].key, "text") != 0)
          {
            set_unknown_key_error (error, item, m->obj.members[k].key, "in a history message");
            return NULL;
          }
      if (!read_string (m, "role", role_field, TRUE, &role_name, error) ||
          !read_string (m, "text", text_field, TRUE, &text, error))
        return NULL;
      if (!gmd_role_from_name (role_name, &role))
        {
          g_autofree char *q = quote (role_name, strlen (role_name));
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, role_field,
                               "must be \"user\" or \"model\", got %s", q);
          return NULL;
        }
      g_ptr_array_add (history, gmd_message_new (role, text));
    }
  return g_steal_pointer (&history);
}

/* One options member → gmd_options_set, with JSON types named as JSON names them. */
static gboolean
set_option (GmdOptions *o, GmdOptionsScope scope, const char *key, const GmdJson *v,
            const GmdLimits *limits, GError **error)
{
  g_autofree char *field = gmd_field_key_is_plain (key) ? g_strdup_printf ("options.%s", key) : g_strdup ("options");
  g_autoptr (GPtrArray) strv = NULL;
  g_autoptr (GPtrArray) history = NULL;
  GmdValue value = { .type = GMD_VALUE_OTHER, .type_name = gmd_json_type_name (v) };

  /* The D-Bus token that names a request's object; on the socket the id does that. */
  if (strcmp (key, "handle_token") == 0)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                           "unknown key (D-Bus only; the request id plays its role here)");
      return FALSE;
    }
  switch (v->type)
    {
    case GMD_JSON_BOOL:
      value.type = GMD_VALUE_BOOL;
      value.b = v->b;
      break;
    case GMD_JSON_INT:
      /* JSON clients cannot hold more than 2^53 exactly; the doc promises that range. */
      if (strcmp (key, "seed") == 0 && v->i > GMD_PROTO_ID_MAX_INT)
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                               "must be in [0, %" G_GINT64_FORMAT "], got %" G_GINT64_FORMAT,
                               GMD_PROTO_ID_MAX_INT, v->i);
          return FALSE;
        }
      value.type = GMD_VALUE_INT;
      value.i = v->i;
      break;
    case GMD_JSON_DOUBLE:
      if (v->num.integer_literal)
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "integer out of range");
          return FALSE;
        }
      value.type = GMD_VALUE_DOUBLE;
      value.d = v->num.d;
      break;
    case GMD_JSON_STRING:
      if (!gmd_json_is_c_string (v))
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "contains a NUL character");
          return FALSE;
        }
      value.type = GMD_VALUE_STRING;
      value.s = v->str.data;
      break;
    case GMD_JSON_ARRAY:
      if (strcmp (key, "stop") == 0)
        {
          strv = g_ptr_array_new ();
          for (guint i = 0; i < v->arr.n; i++)
            {
              const GmdJson *s = v->arr.items[i];
              g_autofree char *item = g_strdup_printf ("%s[%u]", field, i);
              if (s->type != GMD_JSON_STRING)
                return type_error (error, item, "a string", s);
              if (!gmd_json_is_c_string (s))
                {
                  gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, item, "contains a NUL character");
                  return FALSE;
                }
              g_ptr_array_add (strv, s->str.data);
            }
          g_ptr_array_add (strv, NULL);
          value.type = GMD_VALUE_STRV;
          value.strv = (const char *const *) strv->pdata;
        }
      else if (strcmp (key, "history") == 0)
        {
          history = read_history (v, field, error);
          if (history == NULL)
            return FALSE;
          value.type = GMD_VALUE_HISTORY;
          value.history = history;
        }
      break;
    default:
      break;
    }
  return gmd_options_set (o, scope, key, &value, limits, "options", error);
}

static GmdOptions *
read_options (const GmdJson *root, GmdOptionsScope scope, const GmdLimits *limits, GError **error)
{
  const GmdJson *v = gmd_json_get (root, "options");
  g_autoptr (GmdOptions) o = gmd_options_new ();

  if (v != NULL)
    {
      if (v->type != GMD_JSON_OBJECT)
        {
          type_error (error, "options", "an object", v);
          return NULL;
        }
      for (guint i = 0; i < v->obj.n; i++)
        if (!set_option (o, scope, v->obj.members[i].key, v->obj.members[i].value, limits, error))
          return NULL;
    }
  /* No handle_token here: the request id names the request. */
  if (!gmd_options_check_combinations (o, "options", error))
    return NULL;
  return g_steal_pointer (&o);
}

/* load_model's options: context_size, threads, drain. */
static gboolean
read_load_options (const GmdJson *root, GmdProtoRequest *req, GError **error)
{
  const GmdJson *v = gmd_json_get (root, "options");

  req->drain = TRUE;
  if (v == NULL)
    return TRUE;
  if (v->type != GMD_JSON_OBJECT)
    return type_error (error, "options", "an object", v);
  for (guint i = 0; i < v->obj.n; i++)
    {
      const char *key = v->obj.members[i].key;
      const GmdJson *value = v->obj.members[i].value;

      if (strcmp (key, "drain") == 0)
        {
          if (value->type != GMD_JSON_BOOL)
            return type_error (error, "options.drain", "a boolean", value);
          req->drain = value->b;
        }
      else if (strcmp (key, "context_size") == 0)
        {
          if (!read_uint32_member (v, key, "options.context_size", TRUE, &req->context_size, error))
            return FALSE;
        }
      else if (strcmp (key, "threads") == 0)
        {
          if (!read_uint32_member (v, key, "options.threads", TRUE, &req->threads, error))
            return FALSE;
        }
      else
        {
          set_unknown_key_error (error, "options", key, "for load_model (context_size, threads, drain)");
          return FALSE;
        }
    }
  return TRUE;
}

/* ---- one line -------------------------------------------------------------------------- */

static gboolean
read_fields (GmdProtoRequest *req, const GmdJson *root, const int *fds, guint n_fds,
             const GmdLimits *limits, GError **error)
{
  switch (req->type)
    {
    case GMD_PROTO_HELLO:
      {
        const GmdJson *version = gmd_json_get (root, "version");
        if (version == NULL)
          {
            gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "version", "missing");
            return FALSE;
          }
        if (!read_int (version, "version", 0, G_MAXINT64, &req->version, error))
          return FALSE;
        return read_string (root, "client", "client", FALSE, &req->client, error);
      }
    case GMD_PROTO_GENERATE:
      req->parts = read_prompt (root, fds, n_fds, limits, error);
      if (req->parts == NULL)
        return FALSE;
      req->options = read_options (root, GMD_OPTIONS_GENERATE, limits, error);
      return req->options != NULL;
    case GMD_PROTO_SESSION_OPEN:
      req->options = read_options (root, GMD_OPTIONS_SESSION_OPEN, limits, error);
      return req->options != NULL;
    case GMD_PROTO_SESSION_SEND:
      if (!read_string (root, "session", "session", TRUE, &req->session, error))
        return FALSE;
      req->parts = read_prompt (root, fds, n_fds, limits, error);
      if (req->parts == NULL)
        return FALSE;
      req->options = read_options (root, GMD_OPTIONS_SESSION_SEND, limits, error);
      return req->options != NULL;
    case GMD_PROTO_SESSION_HISTORY:
    case GMD_PROTO_SESSION_CLOSE:
      return read_string (root, "session", "session", TRUE, &req->session, error);
    case GMD_PROTO_SESSION_TRUNCATE:
      return read_string (root, "session", "session", TRUE, &req->session, error) &&
             read_uint32_member (root, "keep", "keep", TRUE, &req->keep, error);
    case GMD_PROTO_CANCEL:
      {
        const GmdJson *target = gmd_json_get (root, "target");
        const GmdJson *handle = gmd_json_get (root, "request");

        if (target != NULL && handle != NULL)
          {
            gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "request",
                                 "give either target or request, not both");
            return FALSE;
          }
        if (handle != NULL)
          return read_string (root, "request", "request", TRUE, &req->request_handle, error);
        if (target == NULL)
          {
            gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "target",
                                 "missing (give target or request)");
            return FALSE;
          }
        req->target = read_id (target, "target", error);
        return req->target != NULL;
      }
    case GMD_PROTO_LOAD_MODEL:
      if (!read_string (root, "model_path", "model_path", TRUE, &req->model_path, error) ||
          !read_string (root, "mmproj_path", "mmproj_path", FALSE, &req->mmproj_path, error))
        return FALSE;
      if (req->mmproj_path == NULL)
        req->mmproj_path = g_strdup ("");
      return read_load_options (root, req, error);
    case GMD_PROTO_INFO:
    case GMD_PROTO_LIST:
    case GMD_PROTO_RELOAD_CONFIG:
    case GMD_PROTO_UNLOAD_MODEL:
      return TRUE;
    }
  return TRUE;
}

GmdProtoRequest *
gmd_proto_parse (const char *line, gsize len, const int *fds, guint n_fds,
                 const GmdLimits *limits, gboolean expect_hello, GmdProtoId **id_out,
                 GError **error)
{
  g_autoptr (GmdJson) root = NULL;
  g_autoptr (GmdProtoRequest) req = NULL;
  g_autofree char *type_name = NULL;
  guint t;

  g_return_val_if_fail (limits != NULL, NULL);
  if (id_out != NULL)
    *id_out = NULL;

  root = gmd_json_parse (line, len, error);
  if (root == NULL)
    return NULL;
  if (root->type != GMD_JSON_OBJECT)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT, "expected a JSON object, got %s",
                   gmd_json_type_name (root));
      return NULL;
    }

  req = g_new0 (GmdProtoRequest, 1);
  req->id = read_id (gmd_json_get (root, "id"), "id", error);
  if (req->id == NULL)
    return NULL;
  if (id_out != NULL)
    *id_out = gmd_proto_id_copy (req->id);

  if (!read_string (root, "type", "type", TRUE, &type_name, error))
    return NULL;
  for (t = 0; t < G_N_ELEMENTS (request_types); t++)
    if (strcmp (request_types[t].name, type_name) == 0)
      break;
  if (t == G_N_ELEMENTS (request_types))
    {
      g_autofree char *q = quote (type_name, strlen (type_name));
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "type", "unknown request type %s", q);
      return NULL;
    }
  req->type = request_types[t].type;
  if (expect_hello && req->type != GMD_PROTO_HELLO)
    {
      g_set_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT,
                   "expected hello before any other request, got %s", type_name);
      return NULL;
    }

  for (guint i = 0; i < root->obj.n; i++)
    {
      const char *key = root->obj.members[i].key;
      gboolean known = strcmp (key, "type") == 0 || strcmp (key, "id") == 0;

      for (guint f = 0; !known && f < G_N_ELEMENTS (request_types[t].fields) && request_types[t].fields[f]; f++)
        known = strcmp (key, request_types[t].fields[f]) == 0;
      if (!known)
        {
          g_autofree char *where = g_strdup_printf ("for \"%s\"", type_name);
          set_unknown_key_error (error, NULL, key, where);
          return NULL;
        }
    }

  if (!read_fields (req, root, fds, n_fds, limits, error))
    return NULL;
  return g_steal_pointer (&req);
}

GmdProtoId *
gmd_proto_peek_id (const char *line, gsize len)
{
  g_autoptr (GmdJson) root = gmd_json_parse (line, len, NULL);

  if (root == NULL || root->type != GMD_JSON_OBJECT)
    return NULL;
  return read_id (gmd_json_get (root, "id"), "id", NULL);
}

/* ---- server lines ------------------------------------------------------------------------ */

static void
write_id (GmdJsonWriter *w, const GmdProtoId *id)
{
  gmd_json_writer_key (w, "id");
  if (id == NULL)
    gmd_json_writer_null (w);
  else if (id->is_string)
    gmd_json_writer_string (w, id->string);
  else
    gmd_json_writer_int (w, id->number);
}

static void
begin_message (GmdJsonWriter *w, const GmdProtoId *id)
{
  gmd_json_writer_init (w);
  gmd_json_writer_begin_object (w);
  write_id (w, id);
}

static char *
end_message (GmdJsonWriter *w)
{
  gmd_json_writer_end_object (w);
  return gmd_json_writer_finish_line (w);
}

void
gmd_proto_begin_result (GmdJsonWriter *w, const GmdProtoId *id)
{
  begin_message (w, id);
  gmd_json_writer_key (w, "result");
  gmd_json_writer_begin_object (w);
}

char *
gmd_proto_end_result (GmdJsonWriter *w)
{
  gmd_json_writer_end_object (w);
  return end_message (w);
}

char *
gmd_proto_empty_result_line (const GmdProtoId *id)
{
  GmdJsonWriter w;

  gmd_proto_begin_result (&w, id);
  return gmd_proto_end_result (&w);
}

static void
begin_error (GmdJsonWriter *w, const GmdProtoId *id, GmdErrorCode code, const char *message,
             const char *field)
{
  begin_message (w, id);
  gmd_json_writer_key (w, "error");
  gmd_json_writer_begin_object (w);
  gmd_json_writer_member_string (w, "code", gmd_error_code_name (code));
  gmd_json_writer_member_string (w, "message", message);
  if (field != NULL)
    gmd_json_writer_member_string (w, "field", field);
}

static char *
end_error (GmdJsonWriter *w)
{
  gmd_json_writer_end_object (w);
  return end_message (w);
}

char *
gmd_proto_error_line_literal (const GmdProtoId *id, GmdErrorCode code, const char *message,
                              const char *field)
{
  GmdJsonWriter w;

  begin_error (&w, id, code, message, field);
  return end_error (&w);
}

char *
gmd_proto_error_line (const GmdProtoId *id, const GError *error)
{
  g_autofree char *field = gmd_error_field (error);

  return gmd_proto_error_line_literal (id, gmd_error_code_of (error),
                                       error != NULL ? error->message : "unknown error", field);
}

char *
gmd_proto_version_error_line (const GmdProtoId *id, gint64 version)
{
  GmdJsonWriter w;
  g_autofree char *message = g_strdup_printf ("protocol version %" G_GINT64_FORMAT " not supported", version);

  begin_error (&w, id, GMD_ERROR_INVALID_ARGUMENT, message, "version");
  gmd_json_writer_key (&w, "supported");
  gmd_json_writer_begin_array (&w);
  gmd_json_writer_int (&w, GMD_PROTO_VERSION);
  gmd_json_writer_end_array (&w);
  return end_error (&w);
}

static void
begin_event (GmdJsonWriter *w, const GmdProtoId *id, const char *event)
{
  begin_message (w, id);
  gmd_json_writer_member_string (w, "event", event);
}

char *
gmd_proto_accepted_line (const GmdProtoId *id, const char *request_handle)
{
  GmdJsonWriter w;

  begin_event (&w, id, "accepted");
  gmd_json_writer_member_string (&w, "request", request_handle);
  return end_message (&w);
}

char *
gmd_proto_progress_line (const GmdProtoId *id, const GmdProgress *progress)
{
  GmdJsonWriter w;

  begin_event (&w, id, "progress");
  gmd_json_writer_member_string (&w, "state", gmd_request_state_name (progress->state));
  if (progress->state == GMD_STATE_QUEUED)
    gmd_json_writer_member_uint (&w, "queue_position", progress->queue_position);
  else if (progress->state == GMD_STATE_PREFILL)
    {
      gmd_json_writer_member_uint (&w, "prompt_done", progress->prompt_done);
      gmd_json_writer_member_uint (&w, "prompt_total", progress->prompt_total);
    }
  else if (progress->state == GMD_STATE_ENCODING)
    {
      gmd_json_writer_member_uint (&w, "media_done", progress->prompt_done);
      gmd_json_writer_member_uint (&w, "media_total", progress->prompt_total);
    }
  return end_message (&w);
}

char *
gmd_proto_piece_line (const GmdProtoId *id, guint32 seq, gboolean thinking, const char *text)
{
  GmdJsonWriter w;

  begin_event (&w, id, thinking ? "thinking" : "piece");
  gmd_json_writer_member_uint (&w, "seq", seq);
  gmd_json_writer_member_string (&w, "text", text);
  return end_message (&w);
}

/* Timings to the microsecond: more digits are noise for a human reading the line. */
static double
microseconds (double seconds)
{
  return round (seconds * 1e6) / 1e6;
}

char *
gmd_proto_done_line (const GmdProtoId *id, const GmdSummary *s)
{
  GmdJsonWriter w;

  begin_event (&w, id, "done");
  gmd_json_writer_member_string (&w, "stop_reason", gmd_stop_reason_name (s->stop_reason));
  gmd_json_writer_member_uint (&w, "prompt_tokens", s->prompt_tokens);
  gmd_json_writer_member_uint (&w, "cached_tokens", s->cached_tokens);
  gmd_json_writer_member_uint (&w, "generated_tokens", s->generated_tokens);
  gmd_json_writer_member_uint (&w, "thinking_tokens", s->thinking_tokens);
  gmd_json_writer_member_uint (&w, "pieces", s->pieces);
  gmd_json_writer_member_uint (&w, "context_used", s->context_used);
  gmd_json_writer_member_uint (&w, "context_size", s->context_size);
  gmd_json_writer_member_uint (&w, "seed", s->seed);
  gmd_json_writer_member_double (&w, "queue_seconds", microseconds (s->queue_seconds));
  gmd_json_writer_member_double (&w, "load_seconds", microseconds (s->load_seconds));
  gmd_json_writer_member_double (&w, "encode_seconds", microseconds (s->encode_seconds));
  gmd_json_writer_member_double (&w, "prefill_seconds", microseconds (s->prefill_seconds));
  gmd_json_writer_member_double (&w, "decode_seconds", microseconds (s->decode_seconds));
  gmd_json_writer_member_double (&w, "total_seconds", microseconds (s->total_seconds));
  if (s->stop_reason == GMD_STOP_STOP_STRING && s->matched_stop != NULL)
    gmd_json_writer_member_string (&w, "matched_stop", s->matched_stop);
  if (s->stop_reason == GMD_STOP_CANCELLED && s->cancel_reason != GMD_CANCEL_NONE)
    gmd_json_writer_member_string (&w, "cancel_reason", gmd_cancel_reason_name (s->cancel_reason));
  if (s->stop_reason == GMD_STOP_ERROR)
    {
      gmd_json_writer_member_string (&w, "error_code", gmd_error_code_name (s->error_code));
      gmd_json_writer_member_string (&w, "error_message",
                                     s->error_message != NULL ? s->error_message : "");
    }
  return end_message (&w);
}

char *
gmd_proto_session_closed_line (const char *session, GmdCloseReason reason)
{
  GmdJsonWriter w;

  begin_event (&w, NULL, "session_closed");
  gmd_json_writer_member_string (&w, "session", session);
  gmd_json_writer_member_string (&w, "reason", gmd_close_reason_name (reason));
  return end_message (&w);
}
