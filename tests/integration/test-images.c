/* test-images.c — images through the real gemmad started with --mmproj (a test mmproj
 * made at build time from the committed tiny gemma4v tower): the Manager's Modalities /
 * MediaTypes and the socket's info, PNG and JPEG by fd and by bytes/base64 on both front
 * ends, "encoding" progress, and a truncated JPEG refused naming the part. */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "gmd-test-harness.h"

static GBytes *
image_file (const char *name)
{
  return gmd_test_data_file ("GEMMAD_TEST_IMAGES", name);
}

/* The first half of a JPEG: its header is intact, its scan data is cut. */
static GBytes *
truncated_jpeg (void)
{
  g_autoptr (GBytes) jpeg = image_file ("jpeg-baseline.jpg");
  return g_bytes_new_from_bytes (jpeg, 0, g_bytes_get_size (jpeg) / 2);
}

static GmdTestDaemon *
start_with_mmproj (void)
{
  return gmd_test_daemon_start ("--mmproj", gmd_test_env ("GEMMAD_TEST_MMPROJ"), NULL);
}

/* ---- socket ------------------------------------------------------------------------------ */

static void
assert_image_answer (GmdTestStream *s, gint64 max_tokens)
{
  if (s->error != NULL)
    g_error ("rejected: %s", json_object_get_string_member (s->error, "message"));
  g_assert_nonnull (s->done);
  g_assert_cmpstr (gmd_test_done_str (s, "stop_reason"), ==, "max_tokens");
  g_assert_cmpint (gmd_test_done_int (s, "generated_tokens"), ==, max_tokens);
  g_assert_cmpuint (gmd_test_count_states (s->states, "encoding"), >=, 1);
  g_assert_cmpuint (s->text->len, >, 0);
}

static void
test_socket (void)
{
  GmdTestDaemon *d = start_with_mmproj ();
  GmdTestClient *c = gmd_test_client_new (d);

  g_autoptr (JsonObject) msg = gmd_test_client_call (c, "\"i\"", "{\"type\":\"info\",\"id\":\"i\"}");
  JsonObject *info = gmd_test_assert_result (msg);
  g_assert_true (gmd_test_json_strv_contains (info, "modalities", "text"));
  g_assert_true (gmd_test_json_strv_contains (info, "modalities", "image"));
  g_assert_true (gmd_test_json_strv_contains (info, "media_types", "image/png"));
  g_assert_true (gmd_test_json_strv_contains (info, "media_types", "image/jpeg"));

  /* PNG as base64, greedy: twice the same answer */
  g_autoptr (GBytes) png = image_file ("rgba8.png");
  g_autofree char *png64 = g_base64_encode (g_bytes_get_data (png, NULL), g_bytes_get_size (png));
  g_autofree char *png_line = g_strdup_printf (
      "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\",\"base64\":\"%s\"},"
      "{\"type\":\"text\",\"text\":\"What is this?\"}],"
      "\"options\":{\"max_tokens\":6,\"temperature\":0,\"image_tokens\":70}}", png64);
  gmd_test_client_send (c, png_line);
  g_autoptr (GmdTestStream) a = gmd_test_client_collect (c, "1");
  assert_image_answer (a, 6);
  gmd_test_client_send (c, png_line);
  g_autoptr (GmdTestStream) b = gmd_test_client_collect (c, "1");
  assert_image_answer (b, 6);
  g_assert_cmpstr (a->text->str, ==, b->text->str);
  /* the image's soft tokens are prompt positions (70 at most, far more than the text) */
  g_assert_cmpint (gmd_test_done_int (a, "prompt_tokens"), >, 40);
  g_assert_cmpfloat (json_object_get_double_member (a->done, "encode_seconds"), >, 0.0);

  /* JPEG through an fd */
  g_autoptr (GBytes) jpeg = image_file ("jpeg-baseline.jpg");
  int fd = gmd_test_temp_fd (d, g_bytes_get_data (jpeg, NULL), g_bytes_get_size (jpeg), O_RDONLY);
  gmd_test_client_send_fds (c, "{\"type\":\"generate\",\"id\":2,\"content\":["
                               "{\"type\":\"text\",\"text\":\"Describe\"},"
                               "{\"type\":\"image\",\"fd\":0}],"
                               "\"options\":{\"max_tokens\":4,\"image_tokens\":70}}",
                            &fd, 1);
  close (fd);
  g_autoptr (GmdTestStream) j = gmd_test_client_collect (c, "2");
  assert_image_answer (j, 4);

  /* a truncated JPEG: refused before acceptance, naming the part and the decoder's reason */
  g_autoptr (GBytes) cut = truncated_jpeg ();
  g_autofree char *cut64 = g_base64_encode (g_bytes_get_data (cut, NULL), g_bytes_get_size (cut));
  g_autofree char *cut_line = g_strdup_printf (
      "{\"type\":\"generate\",\"id\":3,\"content\":[{\"type\":\"text\",\"text\":\"Look\"},"
      "{\"type\":\"image\",\"base64\":\"%s\"}]}", cut64);
  gmd_test_client_send (c, cut_line);
  g_autoptr (GmdTestStream) bad = gmd_test_client_collect (c, "3");
  g_assert_nonnull (bad->error);
  g_assert_null (bad->request);
  g_assert_cmpstr (json_object_get_string_member (bad->error, "code"), ==, "unsupported_media");
  const char *message = json_object_get_string_member (bad->error, "message");
  g_assert_nonnull (strstr (message, "JPEG: "));
  g_assert_true (g_str_has_prefix (message, "content[1]: ") ||
                 g_strcmp0 (json_object_get_string_member_with_default (bad->error, "field", ""),
                            "content[1]") == 0);

  /* a GIF is recognised, but only PNG and JPEG are decoded */
  gmd_test_client_send (c, "{\"type\":\"generate\",\"id\":4,\"content\":[{\"type\":\"image\","
                           "\"base64\":\"R0lGODlhAQABAAAAACw=\"}]}");
  g_autoptr (GmdTestStream) gif = gmd_test_client_collect (c, "4");
  g_assert_nonnull (gif->error);
  g_assert_cmpstr (json_object_get_string_member (gif->error, "code"), ==, "unsupported_media");
  g_assert_nonnull (strstr (json_object_get_string_member (gif->error, "message"),
                            "only PNG and JPEG"));

  gmd_test_client_free (c);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* ---- D-Bus ------------------------------------------------------------------------------- */

/* [image part, text part]; value is the image's "bytes" (ay) or "fd" (h). */
static GVariant *
image_content (const char *key, GVariant *value)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE ("aa{sv}"));
  g_variant_builder_open (&b, G_VARIANT_TYPE ("a{sv}"));
  g_variant_builder_add (&b, "{sv}", "type", g_variant_new_string ("image"));
  g_variant_builder_add (&b, "{sv}", key, value);
  g_variant_builder_close (&b);
  g_variant_builder_open (&b, G_VARIANT_TYPE ("a{sv}"));
  g_variant_builder_add (&b, "{sv}", "type", g_variant_new_string ("text"));
  g_variant_builder_add (&b, "{sv}", "text", g_variant_new_string ("What is this?"));
  g_variant_builder_close (&b);
  return g_variant_builder_end (&b);
}

static GVariant *
image_options (const char *token)
{
  GVariantDict d;
  g_variant_dict_init (&d, NULL);
  g_variant_dict_insert (&d, "handle_token", "s", token);
  g_variant_dict_insert (&d, "max_tokens", "i", 4);
  g_variant_dict_insert (&d, "temperature", "d", 0.0);
  g_variant_dict_insert (&d, "image_tokens", "u", 70);
  return g_variant_dict_end (&d);
}

/* Generate with an image; NULL with error when refused, else the finished stream. */
static GmdTestDbusStream *
generate_image (GDBusConnection *c, const char *token, GVariant *content, GUnixFDList *fds,
                GError **error)
{
  GmdTestDbusStream *s = gmd_test_dbus_stream_subscribe (c, token);
  g_autoptr (GVariant) reply = g_dbus_connection_call_with_unix_fd_list_sync (
      c, GMD_BUS_NAME, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "Generate",
      g_variant_new ("(@aa{sv}@a{sv})", content, image_options (token)), G_VARIANT_TYPE ("(o)"),
      G_DBUS_CALL_FLAGS_NONE, GMD_TEST_TIMEOUT_MS, fds, NULL, NULL, error);
  if (reply == NULL)
    {
      gmd_test_dbus_stream_free (s);
      return NULL;
    }
  gmd_test_dbus_stream_wait_finished (s);
  return s;
}

static void
assert_dbus_answer (GmdTestDbusStream *s)
{
  g_assert_false (s->seq_error);
  g_assert_cmpstr (gmd_test_summary_str (s->summary, "stop_reason"), ==, "max_tokens");
  g_assert_cmpuint (gmd_test_summary_uint (s->summary, "generated_tokens"), ==, 4);
  g_assert_cmpuint (gmd_test_count_states (s->states, "encoding"), >=, 1);
}

static void
test_dbus (void)
{
  GmdTestDaemon *d = start_with_mmproj ();
  g_autoptr (GDBusConnection) c = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;

  g_autoptr (GVariant) mods = gmd_test_manager_property (c, "Modalities");
  g_assert_true (gmd_test_strv_contains (mods, "image"));
  g_assert_false (gmd_test_strv_contains (mods, "audio"));
  g_autoptr (GVariant) types = gmd_test_manager_property (c, "MediaTypes");
  g_assert_true (gmd_test_strv_contains (types, "image/png"));
  g_assert_true (gmd_test_strv_contains (types, "image/jpeg"));

  /* JPEG and PNG as bytes: an answer each, and the two pictures give two answers */
  g_autoptr (GBytes) jpeg = image_file ("jpeg-baseline.jpg");
  g_autoptr (GBytes) png = image_file ("rgba8.png");
  g_autoptr (GmdTestDbusStream) j = generate_image (
      c, "jpeg_bytes",
      image_content ("bytes", g_variant_new_from_bytes (G_VARIANT_TYPE_BYTESTRING, jpeg, TRUE)),
      NULL, &error);
  g_assert_no_error (error);
  assert_dbus_answer (j);
  g_autoptr (GmdTestDbusStream) p = generate_image (
      c, "png_bytes",
      image_content ("bytes", g_variant_new_from_bytes (G_VARIANT_TYPE_BYTESTRING, png, TRUE)),
      NULL, &error);
  g_assert_no_error (error);
  assert_dbus_answer (p);

  /* PNG through an fd (a memfd) */
  int mfd = memfd_create ("png", MFD_CLOEXEC);
  g_assert_cmpint (mfd, >=, 0);
  g_assert_cmpint (write (mfd, g_bytes_get_data (png, NULL), g_bytes_get_size (png)), ==,
                   (gssize) g_bytes_get_size (png));
  g_autoptr (GUnixFDList) fds = g_unix_fd_list_new ();
  gint idx = g_unix_fd_list_append (fds, mfd, &error);
  g_assert_no_error (error);
  close (mfd);
  g_autoptr (GmdTestDbusStream) pf = generate_image (
      c, "png_fd", image_content ("fd", g_variant_new_handle (idx)), fds, &error);
  g_assert_no_error (error);
  assert_dbus_answer (pf);
  g_assert_cmpstr (pf->text->str, ==, p->text->str);

  /* a truncated JPEG (as an fd): UnsupportedMedia naming the part */
  g_autoptr (GBytes) cut = truncated_jpeg ();
  g_autoptr (GUnixFDList) cut_fds = g_unix_fd_list_new ();
  int cfd = gmd_test_temp_fd (d, g_bytes_get_data (cut, NULL), g_bytes_get_size (cut), O_RDONLY);
  idx = g_unix_fd_list_append (cut_fds, cfd, &error);
  g_assert_no_error (error);
  close (cfd);
  g_autoptr (GmdTestDbusStream) none = generate_image (
      c, "cut_fd", image_content ("fd", g_variant_new_handle (idx)), cut_fds, &error);
  g_assert_null (none);
  gmd_test_assert_dbus_error (error, "UnsupportedMedia");
  g_assert_nonnull (strstr (error->message, "content[0]: JPEG: "));
  g_clear_error (&error);

  g_dbus_connection_close_sync (c, NULL, NULL);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/images/socket", test_socket);
  g_test_add_func ("/images/dbus", test_dbus);
  return g_test_run ();
}
