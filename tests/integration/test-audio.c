/* test-audio.c — audio through the real gemmad started with --mmproj (a test mmproj made
 * at build time holding both committed tiny towers, gemma4v and gemma4a, as real mmproj
 * files do): the Manager's Modalities / MediaTypes and the socket's info, WAV and FLAC by
 * fd and by bytes/base64 on both front ends, "encoding" progress, a truncated file
 * refused naming the part with the decoder's reason, and the service serving on; a
 * session turn with audio and its history; gemmactl generate --audio. */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "gmd-test-harness.h"

static const char *const audio_types[] = { "audio/wav", "audio/flac", "audio/ogg",
                                           "audio/mpeg", "audio/aiff", "audio/basic", NULL };

static GBytes *
audio_file (const char *name)
{
  return gmd_test_data_file ("GEMMAD_TEST_AUDIO", name);
}

/* The first half of a FLAC file: its header is intact, its frames stop early. */
static GBytes *
truncated_flac (void)
{
  g_autoptr (GBytes) flac = audio_file ("speech-16k-mono.flac");
  return g_bytes_new_from_bytes (flac, 0, g_bytes_get_size (flac) / 2);
}

static GmdTestDaemon *
start_with_mmproj (void)
{
  return gmd_test_daemon_start ("--mmproj", gmd_test_env ("GEMMAD_TEST_MMPROJ_AV"), NULL);
}

/* ---- socket ------------------------------------------------------------------------------ */

static void
assert_audio_answer (GmdTestStream *s, gint64 max_tokens)
{
  if (s->error != NULL)
    g_error ("rejected: %s", json_object_get_string_member (s->error, "message"));
  g_assert_nonnull (s->done);
  g_assert_cmpstr (gmd_test_done_str (s, "stop_reason"), ==, "max_tokens");
  g_assert_cmpint (gmd_test_done_int (s, "generated_tokens"), ==, max_tokens);
  g_assert_cmpuint (gmd_test_count_states (s->states, "encoding"), ==, 2);   /* 0/1, 1/1 */
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
  g_assert_true (gmd_test_json_strv_contains (info, "modalities", "audio"));
  for (guint i = 0; audio_types[i] != NULL; i++)
    g_assert_true (gmd_test_json_strv_contains (info, "media_types", audio_types[i]));
  g_assert_true (gmd_test_json_strv_contains (info, "media_types", "image/png"));

  /* WAV as base64, greedy: twice the same answer */
  g_autoptr (GBytes) wav = audio_file ("speech-16k-mono-pcm16.wav");
  g_autofree char *wav64 = g_base64_encode (g_bytes_get_data (wav, NULL), g_bytes_get_size (wav));
  g_autofree char *wav_line = g_strdup_printf (
      "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"audio\",\"base64\":\"%s\"},"
      "{\"type\":\"text\",\"text\":\"Transcribe this.\"}],"
      "\"options\":{\"max_tokens\":6,\"temperature\":0}}", wav64);
  gmd_test_client_send (c, wav_line);
  g_autoptr (GmdTestStream) a = gmd_test_client_collect (c, "1");
  assert_audio_answer (a, 6);
  gmd_test_client_send (c, wav_line);
  g_autoptr (GmdTestStream) b = gmd_test_client_collect (c, "1");
  assert_audio_answer (b, 6);
  g_assert_cmpstr (a->text->str, ==, b->text->str);
  /* 2.35 s of sound are about 59 soft tokens (one per 40 ms), far more than the text */
  g_assert_cmpint (gmd_test_done_int (a, "prompt_tokens"), >, 59);
  g_assert_cmpfloat (json_object_get_double_member (a->done, "encode_seconds"), >, 0.0);

  /* FLAC (48 kHz stereo: mixed down and resampled) through an fd */
  g_autoptr (GBytes) flac = audio_file ("speech-48k-stereo.flac");
  int fd = gmd_test_temp_fd (d, g_bytes_get_data (flac, NULL), g_bytes_get_size (flac), O_RDONLY);
  gmd_test_client_send_fds (c, "{\"type\":\"generate\",\"id\":2,\"content\":["
                               "{\"type\":\"text\",\"text\":\"Listen:\"},"
                               "{\"type\":\"audio\",\"fd\":0}],"
                               "\"options\":{\"max_tokens\":4}}",
                            &fd, 1);
  close (fd);
  g_autoptr (GmdTestStream) f = gmd_test_client_collect (c, "2");
  assert_audio_answer (f, 4);

  /* a truncated FLAC: refused before acceptance, naming the part and the decoder's reason */
  g_autoptr (GBytes) cut = truncated_flac ();
  g_autofree char *cut64 = g_base64_encode (g_bytes_get_data (cut, NULL), g_bytes_get_size (cut));
  g_autofree char *cut_line = g_strdup_printf (
      "{\"type\":\"generate\",\"id\":3,\"content\":[{\"type\":\"text\",\"text\":\"Listen\"},"
      "{\"type\":\"audio\",\"base64\":\"%s\"}]}", cut64);
  gmd_test_client_send (c, cut_line);
  g_autoptr (GmdTestStream) bad = gmd_test_client_collect (c, "3");
  g_assert_nonnull (bad->error);
  g_assert_null (bad->request);
  g_assert_cmpstr (json_object_get_string_member (bad->error, "code"), ==, "unsupported_media");
  const char *message = json_object_get_string_member (bad->error, "message");
  g_assert_nonnull (strstr (message, "audio: "));
  g_assert_true (g_str_has_prefix (message, "content[1]: ") ||
                 g_strcmp0 (json_object_get_string_member_with_default (bad->error, "field", ""),
                            "content[1]") == 0);

  gmd_test_client_free (c);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* A session turn with audio: the answer, then session.history shows the audio part as
 * its soft tokens without data, before the turn's text. */
static void
test_socket_session (void)
{
  GmdTestDaemon *d = start_with_mmproj ();
  GmdTestClient *c = gmd_test_client_new (d);
  g_autoptr (JsonObject) open_msg = gmd_test_client_call (
      c, "1", "{\"type\":\"session.open\",\"id\":1,\"options\":{\"temperature\":0,"
              "\"max_tokens\":4}}");
  const char *sid = json_object_get_string_member (gmd_test_assert_result (open_msg), "session");
  g_assert_nonnull (sid);

  g_autoptr (GBytes) wav = audio_file ("speech-8k-mono-pcm16.wav");
  g_autofree char *wav64 = g_base64_encode (g_bytes_get_data (wav, NULL), g_bytes_get_size (wav));
  gmd_test_client_sendf (c, "{\"type\":\"session.send\",\"id\":2,\"session\":\"%s\","
                            "\"content\":[{\"type\":\"text\",\"text\":\"Listen:\"},"
                            "{\"type\":\"audio\",\"base64\":\"%s\"}]}", sid, wav64);
  g_autoptr (GmdTestStream) t1 = gmd_test_client_collect (c, "2");
  assert_audio_answer (t1, 4);
  gint64 first_prompt = gmd_test_done_int (t1, "prompt_tokens");

  g_autoptr (JsonObject) hmsg = gmd_test_client_call (
      c, "\"h\"", "{\"type\":\"session.history\",\"id\":\"h\",\"session\":\"%s\"}", sid);
  JsonArray *messages = json_object_get_array_member (gmd_test_assert_result (hmsg), "messages");
  g_assert_cmpuint (json_array_get_length (messages), ==, 2);
  JsonObject *user = json_array_get_object_element (messages, 0);
  JsonArray *parts = json_object_get_array_member (user, "content");
  g_assert_cmpuint (json_array_get_length (parts), ==, 2);
  JsonObject *audio = json_array_get_object_element (parts, 0);
  g_assert_cmpstr (json_object_get_string_member (audio, "type"), ==, "audio");
  gint64 soft = json_object_get_int_member (audio, "soft_tokens");
  g_assert_cmpint (soft, >=, 55);   /* 2.35 s at one soft token per 40 ms */
  g_assert_cmpint (soft, <=, 60);
  g_assert_cmpint (first_prompt, >, soft);
  g_assert_false (json_object_has_member (audio, "base64"));
  JsonObject *text = json_array_get_object_element (parts, 1);
  g_assert_cmpstr (json_object_get_string_member (text, "text"), ==, "Listen:");

  /* the next turn reads the cached conversation, audio included */
  gmd_test_client_sendf (c, "{\"type\":\"session.send\",\"id\":3,\"session\":\"%s\","
                            "\"prompt\":\"And now?\"}", sid);
  g_autoptr (GmdTestStream) t2 = gmd_test_client_collect (c, "3");
  g_assert_null (t2->error);
  g_assert_cmpstr (gmd_test_done_str (t2, "stop_reason"), ==, "max_tokens");
  g_assert_cmpint (gmd_test_done_int (t2, "cached_tokens"), >, soft);

  gmd_test_client_free (c);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* ---- D-Bus ------------------------------------------------------------------------------- */

/* [text part, audio part]; value is the audio's "bytes" (ay) or "fd" (h). */
static GVariant *
audio_content (const char *key, GVariant *value)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE ("aa{sv}"));
  g_variant_builder_open (&b, G_VARIANT_TYPE ("a{sv}"));
  g_variant_builder_add (&b, "{sv}", "type", g_variant_new_string ("text"));
  g_variant_builder_add (&b, "{sv}", "text", g_variant_new_string ("What is said here?"));
  g_variant_builder_close (&b);
  g_variant_builder_open (&b, G_VARIANT_TYPE ("a{sv}"));
  g_variant_builder_add (&b, "{sv}", "type", g_variant_new_string ("audio"));
  g_variant_builder_add (&b, "{sv}", key, value);
  g_variant_builder_close (&b);
  return g_variant_builder_end (&b);
}

static GVariant *
audio_options (const char *token)
{
  GVariantDict d;
  g_variant_dict_init (&d, NULL);
  g_variant_dict_insert (&d, "handle_token", "s", token);
  g_variant_dict_insert (&d, "max_tokens", "i", 4);
  g_variant_dict_insert (&d, "temperature", "d", 0.0);
  return g_variant_dict_end (&d);
}

/* Generate with audio; NULL with error when refused, else the finished stream. */
static GmdTestDbusStream *
generate_audio (GDBusConnection *c, const char *token, GVariant *content, GUnixFDList *fds,
                GError **error)
{
  GmdTestDbusStream *s = gmd_test_dbus_stream_subscribe (c, token);
  g_autoptr (GVariant) reply = g_dbus_connection_call_with_unix_fd_list_sync (
      c, GMD_BUS_NAME, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "Generate",
      g_variant_new ("(@aa{sv}@a{sv})", content, audio_options (token)), G_VARIANT_TYPE ("(o)"),
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
  g_assert_cmpuint (gmd_test_count_states (s->states, "encoding"), ==, 2);
}

/* A memfd holding bytes, appended to a new fd list; *idx its handle. */
static GUnixFDList *
memfd_list (GBytes *bytes, gint *idx)
{
  g_autoptr (GError) error = NULL;
  int mfd = memfd_create ("audio", MFD_CLOEXEC);
  g_assert_cmpint (mfd, >=, 0);
  g_assert_cmpint (write (mfd, g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes)), ==,
                   (gssize) g_bytes_get_size (bytes));
  GUnixFDList *fds = g_unix_fd_list_new ();
  *idx = g_unix_fd_list_append (fds, mfd, &error);
  g_assert_no_error (error);
  close (mfd);
  return fds;
}

static void
test_dbus (void)
{
  GmdTestDaemon *d = start_with_mmproj ();
  g_autoptr (GDBusConnection) c = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;

  g_autoptr (GVariant) mods = gmd_test_manager_property (c, "Modalities");
  g_assert_true (gmd_test_strv_contains (mods, "audio"));
  g_assert_true (gmd_test_strv_contains (mods, "image"));
  g_autoptr (GVariant) types = gmd_test_manager_property (c, "MediaTypes");
  for (guint i = 0; audio_types[i] != NULL; i++)
    g_assert_true (gmd_test_strv_contains (types, audio_types[i]));

  /* WAV and FLAC as bytes: an answer each; the same speech by fd gives the same answer */
  g_autoptr (GBytes) wav = audio_file ("speech-16k-mono-pcm16.wav");
  g_autoptr (GBytes) flac = audio_file ("speech-16k-mono.flac");
  g_autoptr (GmdTestDbusStream) w = generate_audio (
      c, "wav_bytes",
      audio_content ("bytes", g_variant_new_from_bytes (G_VARIANT_TYPE_BYTESTRING, wav, TRUE)),
      NULL, &error);
  g_assert_no_error (error);
  assert_dbus_answer (w);
  g_autoptr (GmdTestDbusStream) fb = generate_audio (
      c, "flac_bytes",
      audio_content ("bytes", g_variant_new_from_bytes (G_VARIANT_TYPE_BYTESTRING, flac, TRUE)),
      NULL, &error);
  g_assert_no_error (error);
  assert_dbus_answer (fb);

  gint idx = -1;
  g_autoptr (GUnixFDList) wav_fds = memfd_list (wav, &idx);
  g_autoptr (GmdTestDbusStream) wf = generate_audio (
      c, "wav_fd", audio_content ("fd", g_variant_new_handle (idx)), wav_fds, &error);
  g_assert_no_error (error);
  assert_dbus_answer (wf);
  g_assert_cmpstr (wf->text->str, ==, w->text->str);
  g_autoptr (GUnixFDList) flac_fds = memfd_list (flac, &idx);
  g_autoptr (GmdTestDbusStream) ff = generate_audio (
      c, "flac_fd", audio_content ("fd", g_variant_new_handle (idx)), flac_fds, &error);
  g_assert_no_error (error);
  assert_dbus_answer (ff);
  g_assert_cmpstr (ff->text->str, ==, fb->text->str);

  /* a truncated FLAC (as an fd): UnsupportedMedia naming the part and the decoder */
  g_autoptr (GBytes) cut = truncated_flac ();
  g_autoptr (GUnixFDList) cut_fds = g_unix_fd_list_new ();
  int cfd = gmd_test_temp_fd (d, g_bytes_get_data (cut, NULL), g_bytes_get_size (cut), O_RDONLY);
  idx = g_unix_fd_list_append (cut_fds, cfd, &error);
  g_assert_no_error (error);
  close (cfd);
  g_autoptr (GmdTestDbusStream) none = generate_audio (
      c, "cut_fd", audio_content ("fd", g_variant_new_handle (idx)), cut_fds, &error);
  g_assert_null (none);
  gmd_test_assert_dbus_error (error, "UnsupportedMedia");
  g_assert_nonnull (strstr (error->message, "content[1]: audio: "));
  g_clear_error (&error);

  g_dbus_connection_close_sync (c, NULL, NULL);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* ---- gemmactl ---------------------------------------------------------------------------- */

/* Runs gemmactl --socket S -q generate --audio FILE -n 3 TEXT; its exit status. */
static int
gemmactl_audio (GmdTestDaemon *d, const char *file, char **out, char **err)
{
  const char *argv[] = { gmd_test_env ("GEMMACTL_BIN"), "--socket",
                         gmd_test_daemon_socket_path (d), "-q", "generate", "--audio", file,
                         "-n", "3", "--temperature", "0", "What is said?", NULL };
  g_autoptr (GError) error = NULL;
  int status = -1;
  g_spawn_sync (NULL, (char **) argv, NULL, G_SPAWN_STDIN_FROM_DEV_NULL, NULL, NULL, out, err,
                &status, &error);
  g_assert_no_error (error);
  g_assert_true (WIFEXITED (status));
  return WEXITSTATUS (status);
}

static void
test_gemmactl (void)
{
  GmdTestDaemon *d = start_with_mmproj ();
  g_autofree char *wav = g_build_filename (gmd_test_env ("GEMMAD_TEST_AUDIO"),
                                           "speech-16k-mono-pcm16.wav", NULL);
  g_autofree char *out = NULL, *err = NULL;
  g_assert_cmpint (gemmactl_audio (d, wav, &out, &err), ==, 0);
  g_assert_cmpstr (out, !=, "");

  /* a file the service cannot decode: rejected (4), the reason on stderr */
  g_autoptr (GBytes) cut = truncated_flac ();
  g_autofree char *cut_path = g_build_filename (gmd_test_daemon_tmpdir (d), "cut.flac", NULL);
  g_assert_true (g_file_set_contents (cut_path, g_bytes_get_data (cut, NULL),
                                      (gssize) g_bytes_get_size (cut), NULL));
  g_autofree char *out2 = NULL, *err2 = NULL;
  g_assert_cmpint (gemmactl_audio (d, cut_path, &out2, &err2), ==, 4);
  g_assert_nonnull (strstr (err2, "audio: "));
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/audio/socket", test_socket);
  g_test_add_func ("/audio/socket-session", test_socket_session);
  g_test_add_func ("/audio/dbus", test_dbus);
  g_test_add_func ("/audio/gemmactl", test_gemmactl);
  return g_test_run ();
}
