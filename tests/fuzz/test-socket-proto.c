/* test-socket-proto.c — the socket protocol layer without sockets: the strict JSON reader,
 * the JSON writer, request parsing with its error messages and field paths, the reply
 * lines, and the line reader's framing, caps and fd handling (docs/protocol.md). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gmd-json.h"
#include "gmd-json-writer.h"
#include "gmd-line-reader.h"
#include "gmd-proto.h"

/* ---- helpers ------------------------------------------------------------------------------ */

static GmdLimits limits;

static GmdProtoRequest *
parse (const char *line, const int *fds, guint n_fds, GError **error)
{
  return gmd_proto_parse (line, strlen (line), fds, n_fds, &limits, FALSE, NULL, error);
}

/* Parses a line that must fail: checks code, message and field. */
static void
assert_parse_error (const char *line, GmdErrorCode code, const char *message, const char *field)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GmdProtoRequest) req = parse (line, NULL, 0, &error);
  g_autofree char *got_field = NULL;

  if (req != NULL)
    g_error ("parsed, but should fail: %s", line);
  g_assert_error (error, GMD_ERROR, (gint) code);
  if (message != NULL)
    g_assert_cmpstr (error->message, ==, message);
  got_field = gmd_error_field (error);
  g_assert_cmpstr (got_field, ==, field);
}

static gboolean
fd_is_open (int fd)
{
  return fcntl (fd, F_GETFD) >= 0 || errno != EBADF;
}

static int
memfd_with (const void *data, gsize len)
{
  int fd = memfd_create ("test-media", MFD_CLOEXEC);

  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (write (fd, data, len), ==, (gssize) len);
  return fd;
}

static const guint8 png_magic[] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R' };

/* ---- JSON reader -------------------------------------------------------------------------- */

static void
test_json_values (void)
{
  g_autoptr (GmdJson) v = NULL;
  const GmdJson *m;

  v = gmd_json_parse ("  {\"a\": [1, -0, 2.5, 1e3, true, false, null, \"x\\u00e9\\ud83d\\ude00\\n\"], \"b\": {}} ",
                      strlen ("  {\"a\": [1, -0, 2.5, 1e3, true, false, null, \"x\\u00e9\\ud83d\\ude00\\n\"], \"b\": {}} "),
                      NULL);
  g_assert_nonnull (v);
  g_assert_cmpint (v->type, ==, GMD_JSON_OBJECT);
  g_assert_cmpuint (v->obj.n, ==, 2);
  m = gmd_json_get (v, "a");
  g_assert_cmpuint (m->arr.n, ==, 8);
  g_assert_cmpint (m->arr.items[0]->type, ==, GMD_JSON_INT);
  g_assert_cmpint (m->arr.items[0]->i, ==, 1);
  g_assert_cmpint (m->arr.items[1]->type, ==, GMD_JSON_INT);
  g_assert_cmpint (m->arr.items[2]->type, ==, GMD_JSON_DOUBLE);
  g_assert_cmpfloat (m->arr.items[2]->num.d, ==, 2.5);
  /* an exponent makes it a number with a fraction, as the protocol names it */
  g_assert_cmpint (m->arr.items[3]->type, ==, GMD_JSON_DOUBLE);
  g_assert_false (m->arr.items[3]->num.integer_literal);
  g_assert_true (m->arr.items[4]->b);
  g_assert_false (m->arr.items[5]->b);
  g_assert_cmpint (m->arr.items[6]->type, ==, GMD_JSON_NULL);
  g_assert_cmpstr (m->arr.items[7]->str.data, ==, "x\xc3\xa9\xf0\x9f\x98\x80\n");
  g_assert_nonnull (gmd_json_get (v, "b"));
  g_assert_null (gmd_json_get (v, "c"));
}

static void
test_json_numbers (void)
{
  g_autoptr (GmdJson) max = gmd_json_parse ("9223372036854775807", 19, NULL);
  g_autoptr (GmdJson) min = gmd_json_parse ("-9223372036854775808", 20, NULL);
  g_autoptr (GmdJson) big = gmd_json_parse ("9223372036854775808", 19, NULL);

  g_assert_cmpint (max->type, ==, GMD_JSON_INT);
  g_assert_cmpint (max->i, ==, G_MAXINT64);
  g_assert_cmpint (min->type, ==, GMD_JSON_INT);
  g_assert_cmpint (min->i, ==, G_MININT64);
  /* beyond gint64: still known to be an integer literal */
  g_assert_cmpint (big->type, ==, GMD_JSON_DOUBLE);
  g_assert_true (big->num.integer_literal);
  g_assert_cmpstr (gmd_json_type_name (big), ==, "an integer");
}

static void
test_json_string_nul (void)
{
  g_autoptr (GmdJson) v = gmd_json_parse ("\"a\\u0000b\"", 10, NULL);

  g_assert_cmpuint (v->str.len, ==, 3);
  g_assert_false (gmd_json_is_c_string (v));
}

static void
test_json_errors (void)
{
  static const struct {
    const char *text;
    const char *message;
  } cases[] = {
    { "", "invalid JSON at byte 1: unexpected end of line, expected a value" },
    { "{\"a\":1", "invalid JSON at byte 7: unexpected end of line, expected ',' or '}'" },
    { "{\"a\":1,}", "invalid JSON at byte 8: unexpected '}', expected a string (object key)" },
    { "[1,]", "invalid JSON at byte 4: unexpected ']', expected a value" },
    { "01", "invalid JSON at byte 1: number with a leading zero" },
    { "1.", "invalid JSON at byte 3: unexpected end of line, expected a digit after '.'" },
    { "-", "invalid JSON at byte 2: unexpected end of line, expected a digit" },
    { "1e999", "invalid JSON at byte 1: number out of range" },
    { "tru", "invalid JSON at byte 1: unexpected 't', expected a value" },
    { "\"abc", "invalid JSON at byte 1: string not closed before the end of the line" },
    { "\"a\tb\"", "invalid JSON at byte 3: control character 0x09 in a string (escape it)" },
    { "\"\\x\"", "invalid JSON at byte 2: unknown escape '\\x'" },
    { "\"\\u12\"", "invalid JSON at byte 4: incomplete \\u escape" },
    { "\"\\u12zz\"", "invalid JSON at byte 6: bad hex digit in \\u escape" },
    { "\"\\udc00\"", "invalid JSON at byte 2: unpaired low surrogate \\udc00" },
    { "\"\\ud800x\"", "invalid JSON at byte 2: high surrogate \\ud800 not followed by a low one" },
    { "{\"a\":1,\"a\":2}", "invalid JSON at byte 8: duplicate key \"a\"" },
    { "{\"a\\u0000\":1}", "invalid JSON at byte 2: object key contains \\u0000" },
    { "1 2", "invalid JSON at byte 3: unexpected '2', expected the end of the line after the value" },
    { "/* c */ 1", "invalid JSON at byte 1: unexpected '/', expected a value" },
    { "'a'", "invalid JSON at byte 1: unexpected ''', expected a value" },
    { "\"\xc3\x28\"", "invalid JSON at byte 2: not valid UTF-8" },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GmdJson) v = gmd_json_parse (cases[i].text, strlen (cases[i].text), &error);

      g_assert_null (v);
      g_assert_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT);
      g_assert_cmpstr (error->message, ==, cases[i].message);
    }
}

static void
test_json_nul_byte (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GmdJson) v = gmd_json_parse ("[1,\0]", 5, &error);

  g_assert_null (v);
  g_assert_cmpstr (error->message, ==, "invalid JSON at byte 4: NUL byte (use \\u0000 inside strings)");
}

static void
test_json_limits (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GString) deep = g_string_new (NULL);
  g_autoptr (GString) many = g_string_new ("[");
  g_autoptr (GString) wide = g_string_new ("{");
  g_autoptr (GmdJson) ok = NULL;
  g_autoptr (GmdJson) v = NULL;

  /* exactly the maximum depth parses; one more does not (and does not recurse further) */
  for (int i = 0; i < GMD_JSON_MAX_DEPTH; i++)
    g_string_append_c (deep, '[');
  for (int i = 0; i < GMD_JSON_MAX_DEPTH; i++)
    g_string_append_c (deep, ']');
  ok = gmd_json_parse (deep->str, deep->len, NULL);
  g_assert_nonnull (ok);
  g_string_prepend_c (deep, '[');
  g_string_append_c (deep, ']');
  v = gmd_json_parse (deep->str, deep->len, &error);
  g_assert_null (v);
  g_assert_error (error, GMD_ERROR, GMD_ERROR_LIMIT_EXCEEDED);
  g_clear_error (&error);

  for (guint i = 0; i < GMD_JSON_MAX_VALUES; i++)
    g_string_append (many, i ? ",0" : "0");
  g_string_append_c (many, ']');
  v = gmd_json_parse (many->str, many->len, &error);
  g_assert_null (v);
  g_assert_error (error, GMD_ERROR, GMD_ERROR_LIMIT_EXCEEDED);
  g_clear_error (&error);

  /* many keys: duplicates are still found after the switch to a hash set */
  for (int i = 0; i < 100; i++)
    g_string_append_printf (wide, "\"k%d\":%d,", i, i);
  {
    g_autofree char *message = g_strdup_printf ("invalid JSON at byte %" G_GSIZE_FORMAT ": duplicate key \"k50\"",
                                                wide->len + 1);
    g_string_append (wide, "\"k50\":0}");
    v = gmd_json_parse (wide->str, wide->len, &error);
    g_assert_null (v);
    g_assert_cmpstr (error->message, ==, message);
  }
}

/* ---- JSON writer --------------------------------------------------------------------------- */

static void
test_writer (void)
{
  GmdJsonWriter w;
  g_autofree char *line = NULL;
  g_autoptr (GVariant) v = NULL;
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "u", g_variant_new_uint32 (7));
  g_variant_builder_add (&b, "{sv}", "t", g_variant_new_uint64 (G_MAXUINT64));
  g_variant_builder_add (&b, "{sv}", "d", g_variant_new_double (0.95f));
  g_variant_builder_add (&b, "{sv}", "as", g_variant_new_strv ((const char *[]) { "a", "b" }, 2));
  v = g_variant_ref_sink (g_variant_builder_end (&b));

  gmd_json_writer_init (&w);
  gmd_json_writer_begin_object (&w);
  gmd_json_writer_member_string (&w, "s", "q\"\\\n\t\x01é");
  gmd_json_writer_member_double (&w, "d", 0.41);
  gmd_json_writer_member_double (&w, "z", 0);
  gmd_json_writer_member_double (&w, "inf", 1.0 / 0.0);
  gmd_json_writer_member_int (&w, "i", -3);
  gmd_json_writer_member_bool (&w, "b", TRUE);
  gmd_json_writer_key (&w, "bad");
  gmd_json_writer_string (&w, "a\xff");
  gmd_json_writer_key (&w, "v");
  gmd_json_writer_variant (&w, v);
  gmd_json_writer_key (&w, "e");
  gmd_json_writer_begin_array (&w);
  gmd_json_writer_end_array (&w);
  gmd_json_writer_end_object (&w);
  line = gmd_json_writer_finish_line (&w);
  g_assert_cmpstr (line, ==,
                   "{\"s\":\"q\\\"\\\\\\n\\t\\u0001é\",\"d\":0.41,\"z\":0,\"inf\":null,\"i\":-3,"
                   "\"b\":true,\"bad\":\"a\xef\xbf\xbd\",\"v\":{\"u\":7,\"t\":18446744073709551615,"
                   "\"d\":0.949999988079071,\"as\":[\"a\",\"b\"]},\"e\":[]}\n");
}

/* ---- request parsing ------------------------------------------------------------------------- */

static void
test_parse_hello (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GmdProtoRequest) req = parse ("{\"type\":\"hello\",\"id\":0,\"version\":1,\"client\":\"gemmactl/0.1.0\"}",
                                           NULL, 0, &error);

  g_assert_no_error (error);
  g_assert_cmpint (req->type, ==, GMD_PROTO_HELLO);
  g_assert_false (req->id->is_string);
  g_assert_cmpint (req->id->number, ==, 0);
  g_assert_cmpint (req->version, ==, 1);
  g_assert_cmpstr (req->client, ==, "gemmactl/0.1.0");
}

static void
test_parse_expect_hello (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GmdProtoId) id = NULL;
  const char *line = "{\"type\":\"generate\",\"id\":\"g\",\"prompt\":\"hi\",\"bogus\":1}";
  g_autoptr (GmdProtoRequest) req = gmd_proto_parse (line, strlen (line), NULL, 0, &limits, TRUE,
                                                     &id, &error);

  g_assert_null (req);
  /* refused before its fields are looked at, but tied to its id */
  g_assert_cmpstr (error->message, ==, "expected hello before any other request, got generate");
  g_assert_nonnull (id);
  g_assert_cmpstr (id->string, ==, "g");
}

static void
test_parse_generate (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GmdProtoRequest) req =
    parse ("{\"type\":\"generate\",\"id\":\"abc\",\"prompt\":\"Why?\","
           "\"options\":{\"temperature\":0,\"top_k\":40,\"max_tokens\":-1,\"stop\":[\"\\n\\n\"],\"seed\":42,\"raw\":false}}",
           NULL, 0, &error);
  const GmdPart *part;

  g_assert_no_error (error);
  g_assert_cmpint (req->type, ==, GMD_PROTO_GENERATE);
  g_assert_true (req->id->is_string);
  g_assert_cmpstr (req->id->string, ==, "abc");
  g_assert_cmpuint (req->parts->len, ==, 1);
  part = g_ptr_array_index (req->parts, 0);
  g_assert_cmpint (part->type, ==, GMD_PART_TEXT);
  g_assert_cmpstr (part->text, ==, "Why?");
  g_assert_cmpfloat (req->options->sampling.temperature, ==, 0);
  g_assert_cmpint (req->options->sampling.top_k, ==, 40);
  g_assert_cmpint (req->options->max_tokens, ==, -1);
  g_assert_cmpuint (req->options->stop->len, ==, 1);
  g_assert_cmpstr (g_ptr_array_index (req->options->stop, 0), ==, "\n\n");
  g_assert_cmpuint (req->options->sampling.seed, ==, 42);
  g_assert_true (req->options->set & GMD_OPT_SEED);
  g_assert_false (req->options->set & GMD_OPT_SYSTEM);
}

static void
test_parse_content_media (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *b64 = g_base64_encode (png_magic, sizeof png_magic);
  g_autofree char *line = g_strdup_printf ("{\"type\":\"generate\",\"id\":1,\"content\":["
                                           "{\"type\":\"image\",\"fd\":1},{\"type\":\"text\",\"text\":\"What?\"},"
                                           "{\"type\":\"audio\",\"base64\":\"%s\"}]}", b64);
  int fds[2] = { memfd_with ("unused", 6), memfd_with (png_magic, sizeof png_magic) };
  g_autoptr (GmdProtoRequest) req = parse (line, fds, 2, &error);
  const GmdPart *image, *audio;

  g_assert_no_error (error);
  g_assert_cmpuint (req->parts->len, ==, 3);
  image = g_ptr_array_index (req->parts, 0);
  audio = g_ptr_array_index (req->parts, 2);
  g_assert_cmpint (image->type, ==, GMD_PART_IMAGE);
  g_assert_cmpint (image->format, ==, GMD_MEDIA_PNG);
  g_assert_cmpuint (g_bytes_get_size (image->media), ==, sizeof png_magic);
  g_assert_cmpint (audio->type, ==, GMD_PART_AUDIO);
  g_assert_cmpmem (g_bytes_get_data (audio->media, NULL), g_bytes_get_size (audio->media),
                   png_magic, sizeof png_magic);
  /* parsing reads fds but never closes them: the caller owns them */
  g_assert_true (fd_is_open (fds[0]) && fd_is_open (fds[1]));
  close (fds[0]);
  close (fds[1]);
}

static void
test_parse_fd_errors (void)
{
  int fds[2] = { memfd_with (png_magic, sizeof png_magic), -1 };
  int pipe_fds[2];
  struct {
    const char *line;
    GmdErrorCode code;
    const char *message;
    const char *field;
  } cases[] = {
    { "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\",\"fd\":2}]}", GMD_ERROR_INVALID_ARGUMENT,
      "content[0].fd: no fd 2 came with this line (it carried 2)", "content[0].fd" },
    { "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\",\"fd\":0},{\"type\":\"image\",\"fd\":0}]}",
      GMD_ERROR_INVALID_ARGUMENT, "content[1].fd: fd 0 is already used by content[0]", "content[1].fd" },
    { "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\",\"fd\":1}]}", GMD_ERROR_INVALID_ARGUMENT,
      NULL, "content[0].fd" },
    { "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\",\"fd\":-1}]}", GMD_ERROR_INVALID_ARGUMENT,
      "content[0].fd: must be in [0, 2147483647], got -1", "content[0].fd" },
    { "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\",\"fd\":0,\"base64\":\"\"}]}",
      GMD_ERROR_INVALID_ARGUMENT, "content[0]: give either \"fd\" or \"base64\", not both", "content[0]" },
    { "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\"}]}",
      GMD_ERROR_INVALID_ARGUMENT, "content[0]: a media part needs \"fd\" or \"base64\"", "content[0]" },
  };

  g_assert_cmpint (pipe2 (pipe_fds, O_CLOEXEC), ==, 0);
  fds[1] = pipe_fds[0];
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GmdProtoRequest) req = parse (cases[i].line, fds, 2, &error);
      g_autofree char *field = NULL;

      g_assert_null (req);
      g_assert_error (error, GMD_ERROR, (gint) cases[i].code);
      if (cases[i].message != NULL)
        g_assert_cmpstr (error->message, ==, cases[i].message);
      field = gmd_error_field (error);
      g_assert_cmpstr (field, ==, cases[i].field);
    }
  close (fds[0]);
  close (pipe_fds[0]);
  close (pipe_fds[1]);
}

static void
test_parse_media_caps (void)
{
  g_autoptr (GString) line = g_string_new ("{\"type\":\"generate\",\"id\":1,\"content\":[");
  g_autofree char *b64 = NULL;
  guint8 *blob = g_malloc0 (limits.max_media_bytes / 2 + 1);

  /* two halves plus one byte: over max_media_bytes in total */
  b64 = g_base64_encode (blob, limits.max_media_bytes / 2 + 1);
  g_string_append_printf (line, "{\"type\":\"image\",\"base64\":\"%s\"},{\"type\":\"image\",\"base64\":\"%s\"}]}", b64, b64);
  {
    g_autoptr (GError) error = NULL;
    g_autoptr (GmdProtoRequest) req = parse (line->str, NULL, 0, &error);
    g_autofree char *message = g_strdup_printf ("content[1]: the request's media add up to more than the limit of %"
                                                G_GUINT64_FORMAT " bytes", limits.max_media_bytes);
    g_assert_null (req);
    g_assert_error (error, GMD_ERROR, GMD_ERROR_LIMIT_EXCEEDED);
    g_assert_cmpstr (error->message, ==, message);
  }
  g_free (blob);

  g_string_assign (line, "{\"type\":\"generate\",\"id\":1,\"content\":[");
  for (guint i = 0; i <= limits.max_media_parts; i++)
    g_string_append_printf (line, "%s{\"type\":\"image\",\"base64\":\"\"}", i ? "," : "");
  g_string_append (line, "]}");
  {
    g_autofree char *message = g_strdup_printf ("content: %u media parts, at most %u allowed",
                                                limits.max_media_parts + 1, limits.max_media_parts);
    assert_parse_error (line->str, GMD_ERROR_LIMIT_EXCEEDED, message, "content");
  }
}

static void
test_parse_base64 (void)
{
  static const struct {
    const char *b64;
    const char *message;   /* NULL: valid */
    gsize size;
  } cases[] = {
    { "", NULL, 0 },
    { "QQ==", NULL, 1 },
    { "QUI=", NULL, 2 },
    { "QUJD", NULL, 3 },
    { "QUJ", "length 3 is not a multiple of 4", 0 },
    { "QU I", "' ' at character 3", 0 },
    { "QQ=A", "'=' at character 3", 0 },
    { "Q===", "'=' at character 2", 0 },
    { "QQ==QUJD", "'=' at character 3", 0 },
    { "QUJ-", "'-' at character 4", 0 },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr (GError) error = NULL;
      g_autofree char *line = g_strdup_printf ("{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\",\"base64\":\"%s\"}]}",
                                               cases[i].b64);
      g_autoptr (GmdProtoRequest) req = parse (line, NULL, 0, &error);

      if (cases[i].message == NULL)
        {
          g_assert_no_error (error);
          g_assert_cmpuint (g_bytes_get_size (((GmdPart *) g_ptr_array_index (req->parts, 0))->media), ==,
                            cases[i].size);
        }
      else
        {
          g_autofree char *message = g_strdup_printf ("content[0].base64: not valid base64: %s", cases[i].message);
          g_assert_null (req);
          g_assert_cmpstr (error->message, ==, message);
        }
    }
}

static void
test_parse_errors (void)
{
  assert_parse_error ("[1]", GMD_ERROR_INVALID_ARGUMENT, "expected a JSON object, got an array", NULL);
  assert_parse_error ("{\"type\":\"hello\"}", GMD_ERROR_INVALID_ARGUMENT, "id: missing", "id");
  assert_parse_error ("{\"type\":\"hello\",\"id\":1.5}", GMD_ERROR_INVALID_ARGUMENT,
                      "id: must be a string of 1 to 128 bytes or an integer in [0, 9007199254740991], got a number with a fraction",
                      "id");
  assert_parse_error ("{\"type\":\"hello\",\"id\":9007199254740992}", GMD_ERROR_INVALID_ARGUMENT, NULL, "id");
  assert_parse_error ("{\"type\":\"hello\",\"id\":\"\"}", GMD_ERROR_INVALID_ARGUMENT, NULL, "id");
  assert_parse_error ("{\"id\":1}", GMD_ERROR_INVALID_ARGUMENT, "type: missing", "type");
  assert_parse_error ("{\"id\":1,\"type\":\"fly\"}", GMD_ERROR_INVALID_ARGUMENT,
                      "type: unknown request type \"fly\"", "type");
  assert_parse_error ("{\"id\":1,\"type\":\"info\",\"verbose\":true}", GMD_ERROR_INVALID_ARGUMENT,
                      "verbose: unknown field for \"info\"", "verbose");
  assert_parse_error ("{\"id\":1,\"type\":\"info\",\"a b\":true}", GMD_ERROR_INVALID_ARGUMENT,
                      "unknown field \"a b\" for \"info\"", NULL);
  assert_parse_error ("{\"type\":\"hello\",\"id\":0}", GMD_ERROR_INVALID_ARGUMENT, "version: missing", "version");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"prompt\":\"hi\",\"options\":{\"temperature\":\"hot\"}}",
                      GMD_ERROR_INVALID_ARGUMENT, "options.temperature: expected a number, got a string",
                      "options.temperature");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"prompt\":\"hi\",\"options\":{\"top_k\":1.0}}",
                      GMD_ERROR_INVALID_ARGUMENT, "options.top_k: expected an integer, got a number with a fraction",
                      "options.top_k");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"prompt\":\"hi\",\"options\":{\"top_p\":1.5}}",
                      GMD_ERROR_INVALID_ARGUMENT, "options.top_p: must be in (0, 1], got 1.5", "options.top_p");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"prompt\":\"hi\",\"options\":{\"seed\":9007199254740992}}",
                      GMD_ERROR_INVALID_ARGUMENT, "options.seed: must be in [0, 9007199254740991], got 9007199254740992",
                      "options.seed");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"prompt\":\"hi\",\"options\":{\"seed\":99999999999999999999}}",
                      GMD_ERROR_INVALID_ARGUMENT, "options.seed: integer out of range", "options.seed");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"prompt\":\"hi\",\"options\":{\"handle_token\":\"t\"}}",
                      GMD_ERROR_INVALID_ARGUMENT, NULL, "options.handle_token");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"prompt\":\"hi\",\"options\":{\"stop\":[\"a\",3]}}",
                      GMD_ERROR_INVALID_ARGUMENT, "options.stop[1]: expected a string, got an integer", "options.stop[1]");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"prompt\":\"hi\",\"options\":{\"system\":\"a\\u0000\"}}",
                      GMD_ERROR_INVALID_ARGUMENT, "options.system: contains a NUL character", "options.system");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"prompt\":\"hi\",\"options\":{\"raw\":true,\"system\":\"s\"}}",
                      GMD_ERROR_INVALID_ARGUMENT, NULL, "options.system");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"prompt\":\"hi\",\"options\":{\"history\":[]}}",
                      GMD_ERROR_INVALID_ARGUMENT, NULL, "options.history");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"prompt\":\"hi\",\"options\":[]}",
                      GMD_ERROR_INVALID_ARGUMENT, "options: expected an object, got an array", "options");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"prompt\":\"hi\",\"content\":[]}",
                      GMD_ERROR_INVALID_ARGUMENT, "prompt: give either prompt or content, not both", "prompt");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6}", GMD_ERROR_INVALID_ARGUMENT,
                      "content: missing (give content or prompt)", "content");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"content\":[]}", GMD_ERROR_INVALID_ARGUMENT,
                      "content: needs at least one part", "content");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"content\":[{\"type\":\"smell\"}]}", GMD_ERROR_INVALID_ARGUMENT,
                      "content[0].type: unknown part type \"smell\" (text, image or audio)", "content[0].type");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"content\":[{\"type\":\"text\",\"text\":\"a\",\"fd\":0}]}",
                      GMD_ERROR_INVALID_ARGUMENT, "content[0].fd: unknown field in a text part", "content[0].fd");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"content\":[{\"type\":\"text\"}]}",
                      GMD_ERROR_INVALID_ARGUMENT, "content[0].text: missing", "content[0].text");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"content\":[\"hi\"]}",
                      GMD_ERROR_INVALID_ARGUMENT, "content[0]: expected an object, got a string", "content[0]");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"prompt\":\"a\\u0000b\"}", GMD_ERROR_INVALID_ARGUMENT,
                      NULL, "prompt");
  assert_parse_error ("{\"type\":\"session.send\",\"id\":6,\"prompt\":\"hi\"}", GMD_ERROR_INVALID_ARGUMENT,
                      "session: missing", "session");
  assert_parse_error ("{\"type\":\"session.send\",\"id\":6,\"session\":\"s1\",\"prompt\":\"hi\",\"options\":{\"system\":\"x\"}}",
                      GMD_ERROR_INVALID_ARGUMENT, NULL, "options.system");
  assert_parse_error ("{\"type\":\"session.truncate\",\"id\":6,\"session\":\"s1\",\"keep\":-1}",
                      GMD_ERROR_INVALID_ARGUMENT, "keep: must be in [0, 4294967295], got -1", "keep");
  assert_parse_error ("{\"type\":\"cancel\",\"id\":6}", GMD_ERROR_INVALID_ARGUMENT,
                      "target: missing (give target or request)", "target");
  assert_parse_error ("{\"type\":\"cancel\",\"id\":6,\"target\":1,\"request\":\"r-1\"}", GMD_ERROR_INVALID_ARGUMENT,
                      "request: give either target or request, not both", "request");
  assert_parse_error ("{\"type\":\"cancel\",\"id\":6,\"target\":true}", GMD_ERROR_INVALID_ARGUMENT, NULL, "target");
  assert_parse_error ("{\"type\":\"load_model\",\"id\":6}", GMD_ERROR_INVALID_ARGUMENT, "model_path: missing",
                      "model_path");
  assert_parse_error ("{\"type\":\"load_model\",\"id\":6,\"model_path\":\"\",\"options\":{\"drain\":1}}",
                      GMD_ERROR_INVALID_ARGUMENT, "options.drain: expected a boolean, got an integer", "options.drain");
  assert_parse_error ("{\"type\":\"load_model\",\"id\":6,\"model_path\":\"\",\"options\":{\"fast\":true}}",
                      GMD_ERROR_INVALID_ARGUMENT, NULL, "options.fast");
  assert_parse_error ("{\"type\":\"session.open\",\"id\":6,\"options\":{\"history\":[{\"role\":\"bot\",\"text\":\"x\"}]}}",
                      GMD_ERROR_INVALID_ARGUMENT, "options.history[0].role: must be \"user\" or \"model\", got \"bot\"",
                      "options.history[0].role");
  assert_parse_error ("{\"type\":\"session.open\",\"id\":6,\"options\":{\"history\":[{\"role\":\"user\"}]}}",
                      GMD_ERROR_INVALID_ARGUMENT, "options.history[0].text: missing", "options.history[0].text");
  assert_parse_error ("{\"type\":\"generate\",\"id\":6,\"prompt\":\"hi\"", GMD_ERROR_INVALID_ARGUMENT,
                      "invalid JSON at byte 40: unexpected end of line, expected ',' or '}'", NULL);
}

static void
test_parse_others (void)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GmdProtoRequest) open = parse ("{\"type\":\"session.open\",\"id\":10,\"options\":{\"system\":\"You are terse.\","
                                            "\"context_size\":512,\"history\":[{\"role\":\"user\",\"text\":\"a\"},"
                                            "{\"role\":\"model\",\"text\":\"b\"}]}}", NULL, 0, &error);
  g_autoptr (GmdProtoRequest) send = NULL;
  g_autoptr (GmdProtoRequest) cancel = NULL;
  g_autoptr (GmdProtoRequest) cancel2 = NULL;
  g_autoptr (GmdProtoRequest) truncate = NULL;
  g_autoptr (GmdProtoRequest) load = NULL;

  g_assert_no_error (error);
  g_assert_cmpint (open->type, ==, GMD_PROTO_SESSION_OPEN);
  g_assert_cmpstr (open->options->system, ==, "You are terse.");
  g_assert_cmpuint (open->options->context_size, ==, 512);
  g_assert_cmpuint (open->options->history->len, ==, 2);
  g_assert_cmpint (((GmdMessage *) g_ptr_array_index (open->options->history, 1))->role, ==, GMD_ROLE_MODEL);

  send = parse ("{\"type\":\"session.send\",\"id\":11,\"session\":\"s1\",\"prompt\":\"Capital?\",\"options\":{\"max_tokens\":5}}",
                NULL, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (send->session, ==, "s1");
  g_assert_cmpint (send->options->max_tokens, ==, 5);

  cancel = parse ("{\"type\":\"cancel\",\"id\":7,\"target\":\"a\"}", NULL, 0, &error);
  g_assert_no_error (error);
  g_assert_true (cancel->target->is_string);
  g_assert_cmpstr (cancel->target->string, ==, "a");
  cancel2 = parse ("{\"type\":\"cancel\",\"id\":7,\"request\":\"r-42\"}", NULL, 0, &error);
  g_assert_no_error (error);
  g_assert_null (cancel2->target);
  g_assert_cmpstr (cancel2->request_handle, ==, "r-42");

  truncate = parse ("{\"type\":\"session.truncate\",\"id\":7,\"session\":\"s2\",\"keep\":4}", NULL, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (truncate->keep, ==, 4);

  load = parse ("{\"type\":\"load_model\",\"id\":7,\"model_path\":\"/m.gguf\",\"options\":{\"context_size\":2048,\"drain\":false}}",
                NULL, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (load->model_path, ==, "/m.gguf");
  g_assert_cmpstr (load->mmproj_path, ==, "");
  g_assert_cmpuint (load->context_size, ==, 2048);
  g_assert_cmpuint (load->threads, ==, 0);
  g_assert_false (load->drain);
  g_assert_true (gmd_proto_type_is_admin (load->type));
}

static void
test_peek_id (void)
{
  g_autoptr (GmdProtoId) a = gmd_proto_peek_id ("{\"id\":\"x\",\"junk\":[", 17);
  g_autoptr (GmdProtoId) b = gmd_proto_peek_id ("{\"type\":\"x\",\"id\":12}", 20);
  g_autofree char *key_s = NULL;
  g_autofree char *key_i = NULL;
  g_autoptr (GmdProtoId) five_s = gmd_proto_id_new_string ("5");
  g_autoptr (GmdProtoId) five_i = gmd_proto_id_new_int (5);

  g_assert_null (a);   /* not JSON */
  g_assert_nonnull (b);
  g_assert_cmpint (b->number, ==, 12);
  /* 5 and "5" are different ids */
  key_s = gmd_proto_id_key (five_s);
  key_i = gmd_proto_id_key (five_i);
  g_assert_cmpstr (key_s, !=, key_i);
}

/* ---- reply lines --------------------------------------------------------------------------- */

static void
test_lines (void)
{
  g_autoptr (GmdProtoId) id = gmd_proto_id_new_int (1);
  g_autoptr (GmdProtoId) sid = gmd_proto_id_new_string ("a\"b");
  g_autoptr (GError) error = NULL;
  GmdProgress queued = { GMD_STATE_QUEUED, 2, 0, 0 };
  GmdProgress prefill = { GMD_STATE_PREFILL, 0, 512, 1830 };
  GmdSummary cancelled = { .stop_reason = GMD_STOP_CANCELLED, .generated_tokens = 9, .pieces = 2,
                           .context_size = 4096, .seed = 1234567, .total_seconds = 1.27,
                           .cancel_reason = GMD_CANCEL_CLIENT };
  GmdSummary failed = { .stop_reason = GMD_STOP_ERROR, .error_code = GMD_ERROR_UNSUPPORTED_MEDIA,
                        .error_message = "content[0]: not a PNG" };
  GmdJsonWriter w;
  char *line;

  line = gmd_proto_accepted_line (id, "r-42");
  g_assert_cmpstr (line, ==, "{\"id\":1,\"event\":\"accepted\",\"request\":\"r-42\"}\n");
  g_free (line);
  line = gmd_proto_progress_line (id, &queued);
  g_assert_cmpstr (line, ==, "{\"id\":1,\"event\":\"progress\",\"state\":\"queued\",\"queue_position\":2}\n");
  g_free (line);
  line = gmd_proto_progress_line (id, &prefill);
  g_assert_cmpstr (line, ==, "{\"id\":1,\"event\":\"progress\",\"state\":\"prefill\",\"prompt_done\":512,\"prompt_total\":1830}\n");
  g_free (line);
  line = gmd_proto_piece_line (sid, 3, TRUE, "x\ny");
  g_assert_cmpstr (line, ==, "{\"id\":\"a\\\"b\",\"event\":\"thinking\",\"seq\":3,\"text\":\"x\\ny\"}\n");
  g_free (line);
  line = gmd_proto_done_line (id, &cancelled);
  g_assert_cmpstr (line, ==,
                   "{\"id\":1,\"event\":\"done\",\"stop_reason\":\"cancelled\",\"prompt_tokens\":0,\"cached_tokens\":0,"
                   "\"generated_tokens\":9,\"thinking_tokens\":0,\"pieces\":2,\"context_used\":0,\"context_size\":4096,"
                   "\"seed\":1234567,\"queue_seconds\":0,\"load_seconds\":0,\"encode_seconds\":0,\"prefill_seconds\":0,"
                   "\"decode_seconds\":0,\"total_seconds\":1.27,\"cancel_reason\":\"client\"}\n");
  g_free (line);
  line = gmd_proto_done_line (id, &failed);
  g_assert_nonnull (strstr (line, "\"stop_reason\":\"error\""));
  g_assert_nonnull (strstr (line, "\"error_code\":\"unsupported_media\",\"error_message\":\"content[0]: not a PNG\"}\n"));
  g_free (line);
  line = gmd_proto_session_closed_line ("s1", GMD_CLOSE_MODEL_CHANGED);
  g_assert_cmpstr (line, ==, "{\"id\":null,\"event\":\"session_closed\",\"session\":\"s1\",\"reason\":\"model-changed\"}\n");
  g_free (line);

  gmd_set_field_error (&error, GMD_ERROR_INVALID_ARGUMENT, "options.top_p", "must be in (0, 1], got 1.5");
  line = gmd_proto_error_line (id, error);
  g_assert_cmpstr (line, ==, "{\"id\":1,\"error\":{\"code\":\"invalid_argument\",\"message\":"
                             "\"options.top_p: must be in (0, 1], got 1.5\",\"field\":\"options.top_p\"}}\n");
  g_free (line);
  line = gmd_proto_error_line_literal (NULL, GMD_ERROR_LIMIT_EXCEEDED, "line 4: longer than 33554432 bytes", NULL);
  g_assert_cmpstr (line, ==, "{\"id\":null,\"error\":{\"code\":\"limit_exceeded\",\"message\":\"line 4: longer than 33554432 bytes\"}}\n");
  g_free (line);
  line = gmd_proto_version_error_line (id, 2);
  g_assert_cmpstr (line, ==, "{\"id\":1,\"error\":{\"code\":\"invalid_argument\",\"message\":\"protocol version 2 not supported\","
                             "\"field\":\"version\",\"supported\":[1]}}\n");
  g_free (line);

  gmd_proto_begin_result (&w, id);
  gmd_json_writer_member_bool (&w, "found", TRUE);
  line = gmd_proto_end_result (&w);
  g_assert_cmpstr (line, ==, "{\"id\":1,\"result\":{\"found\":true}}\n");
  g_free (line);
  line = gmd_proto_empty_result_line (sid);
  g_assert_cmpstr (line, ==, "{\"id\":\"a\\\"b\",\"result\":{}}\n");
  g_free (line);
}

/* ---- line reader ---------------------------------------------------------------------------- */

static GmdLine *
pop_ok (GmdLineReader *r, const char *text)
{
  GmdLine *line = gmd_line_reader_pop (r);

  g_assert_nonnull (line);
  g_assert_cmpint (line->status, ==, GMD_LINE_OK);
  g_assert_cmpstr (line->data, ==, text);
  g_assert_cmpuint (line->len, ==, strlen (text));
  return line;
}

static void
test_reader_framing (void)
{
  GmdLineReader *r = gmd_line_reader_new (64, 4);
  GmdLine *line;

  gmd_line_reader_feed (r, "ab", 2, NULL, 0, FALSE);
  g_assert_null (gmd_line_reader_pop (r));
  gmd_line_reader_feed (r, "c\r\n\n\r\nde\nf", 10, NULL, 0, FALSE);
  line = pop_ok (r, "abc");
  g_assert_cmpuint (line->number, ==, 1);
  gmd_line_free (line);
  /* empty lines (also "\r") are skipped but counted */
  line = pop_ok (r, "de");
  g_assert_cmpuint (line->number, ==, 4);
  gmd_line_free (line);
  g_assert_null (gmd_line_reader_pop (r));
  /* a last line without newline counts at the end of input */
  gmd_line_reader_finish (r);
  line = pop_ok (r, "f");
  g_assert_cmpuint (line->number, ==, 5);
  gmd_line_free (line);
  g_assert_null (gmd_line_reader_pop (r));
  gmd_line_reader_free (r);
}

static void
test_reader_too_long (void)
{
  GmdLineReader *r = gmd_line_reader_new (8, 4);
  GmdLine *line;
  char big[100];

  /* 7 bytes + newline = 8: fits exactly */
  gmd_line_reader_feed (r, "1234567\n", 8, NULL, 0, FALSE);
  gmd_line_free (pop_ok (r, "1234567"));
  /* the '\r' counts: 7 + \r\n is 9 */
  gmd_line_reader_feed (r, "1234567\r\n", 9, NULL, 0, FALSE);
  line = gmd_line_reader_pop (r);
  g_assert_cmpint (line->status, ==, GMD_LINE_TOO_LONG);
  g_assert_null (line->data);
  g_assert_cmpuint (line->number, ==, 2);
  gmd_line_free (line);
  g_assert_null (gmd_line_reader_pop (r));

  /* reported as soon as the cap is passed, then skipped without buffering */
  memset (big, 'x', sizeof big);
  gmd_line_reader_feed (r, big, sizeof big, NULL, 0, FALSE);
  line = gmd_line_reader_pop (r);
  g_assert_cmpint (line->status, ==, GMD_LINE_TOO_LONG);
  g_assert_cmpuint (line->number, ==, 3);
  gmd_line_free (line);
  for (int i = 0; i < 1000; i++)
    gmd_line_reader_feed (r, big, sizeof big, NULL, 0, FALSE);
  g_assert_cmpuint (gmd_line_reader_get_buffered (r), ==, 0);
  g_assert_null (gmd_line_reader_pop (r));
  /* the next line is fine again */
  gmd_line_reader_feed (r, "xx\nok\n", 6, NULL, 0, FALSE);
  line = pop_ok (r, "ok");
  g_assert_cmpuint (line->number, ==, 4);
  gmd_line_free (line);
  gmd_line_reader_free (r);
}

static void
new_pipe_fds (int *fds, guint n)
{
  for (guint i = 0; i < n; i += 2)
    {
      int p[2];
      g_assert_cmpint (pipe2 (p, O_CLOEXEC), ==, 0);
      fds[i] = p[0];
      if (i + 1 < n)
        fds[i + 1] = p[1];
      else
        close (p[1]);
    }
}

static void
test_reader_fds (void)
{
  GmdLineReader *r = gmd_line_reader_new (64, 2);
  GmdLine *line;
  int a[2], b[1], c[3], d[1];

  /* the fds of a read go to the line holding its last byte */
  new_pipe_fds (a, 2);
  gmd_line_reader_feed (r, "one\ntw", 6, a, 2, FALSE);
  line = pop_ok (r, "one");
  g_assert_cmpuint (line->n_fds, ==, 0);
  gmd_line_free (line);
  gmd_line_reader_feed (r, "o\n", 2, NULL, 0, FALSE);
  line = pop_ok (r, "two");
  g_assert_cmpuint (line->n_fds, ==, 2);
  g_assert_cmpint (line->fds[0], ==, a[0]);
  g_assert_cmpint (line->fds[1], ==, a[1]);
  gmd_line_close_fds (line);
  g_assert_false (fd_is_open (a[0]));
  g_assert_false (fd_is_open (a[1]));
  gmd_line_free (line);

  /* a read ending with a newline: fds belong to the line it ends */
  new_pipe_fds (b, 1);
  gmd_line_reader_feed (r, "x\nthree\n", 8, b, 1, FALSE);
  gmd_line_free (pop_ok (r, "x"));
  line = pop_ok (r, "three");
  g_assert_cmpuint (line->n_fds, ==, 1);
  gmd_line_free (line);
  g_assert_false (fd_is_open (b[0]));

  /* more fds than allowed: the extra ones are closed and the line is marked */
  new_pipe_fds (c, 3);
  gmd_line_reader_feed (r, "four\n", 5, c, 3, FALSE);
  line = gmd_line_reader_pop (r);
  g_assert_cmpint (line->status, ==, GMD_LINE_TOO_MANY_FDS);
  g_assert_false (fd_is_open (c[2]));
  gmd_line_free (line);
  g_assert_false (fd_is_open (c[0]));

  /* MSG_CTRUNC marks the line too */
  gmd_line_reader_feed (r, "five\n", 5, NULL, 0, TRUE);
  line = gmd_line_reader_pop (r);
  g_assert_cmpint (line->status, ==, GMD_LINE_TOO_MANY_FDS);
  gmd_line_free (line);

  /* fds of an empty line, and of a line being skipped, are closed at once */
  new_pipe_fds (d, 1);
  gmd_line_reader_feed (r, "\n", 1, d, 1, FALSE);
  g_assert_false (fd_is_open (d[0]));
  g_assert_null (gmd_line_reader_pop (r));
  {
    char big[80];
    int e[1];
    memset (big, 'y', sizeof big);
    new_pipe_fds (e, 1);
    gmd_line_reader_feed (r, big, sizeof big, e, 1, FALSE);
    g_assert_false (fd_is_open (e[0]));
    line = gmd_line_reader_pop (r);
    g_assert_cmpint (line->status, ==, GMD_LINE_TOO_LONG);
    gmd_line_free (line);
  }

  /* fds held for an unfinished line are closed with the reader */
  new_pipe_fds (d, 1);
  gmd_line_reader_feed (r, "\npartial", 8, d, 1, FALSE);
  g_assert_true (fd_is_open (d[0]));
  gmd_line_reader_free (r);
  g_assert_false (fd_is_open (d[0]));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  gmd_limits_init_default (&limits);

  g_test_add_func ("/socket/json/values", test_json_values);
  g_test_add_func ("/socket/json/numbers", test_json_numbers);
  g_test_add_func ("/socket/json/string-nul", test_json_string_nul);
  g_test_add_func ("/socket/json/errors", test_json_errors);
  g_test_add_func ("/socket/json/nul-byte", test_json_nul_byte);
  g_test_add_func ("/socket/json/limits", test_json_limits);
  g_test_add_func ("/socket/json/writer", test_writer);
  g_test_add_func ("/socket/parse/hello", test_parse_hello);
  g_test_add_func ("/socket/parse/expect-hello", test_parse_expect_hello);
  g_test_add_func ("/socket/parse/generate", test_parse_generate);
  g_test_add_func ("/socket/parse/content-media", test_parse_content_media);
  g_test_add_func ("/socket/parse/fd-errors", test_parse_fd_errors);
  g_test_add_func ("/socket/parse/media-caps", test_parse_media_caps);
  g_test_add_func ("/socket/parse/base64", test_parse_base64);
  g_test_add_func ("/socket/parse/errors", test_parse_errors);
  g_test_add_func ("/socket/parse/others", test_parse_others);
  g_test_add_func ("/socket/parse/peek-id", test_peek_id);
  g_test_add_func ("/socket/lines", test_lines);
  g_test_add_func ("/socket/reader/framing", test_reader_framing);
  g_test_add_func ("/socket/reader/too-long", test_reader_too_long);
  g_test_add_func ("/socket/reader/fds", test_reader_fds);
  return g_test_run ();
}
