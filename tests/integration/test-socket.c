/* test-socket.c — the socket protocol (docs/protocol.md) against the real gemmad: every
 * test starts its own daemon, drives it as a raw client and ends by checking that the
 * service still answers a fresh normal request. */
#include "gmd-test-harness.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Greedy and seeded: the same request gives the same text. */
#define SHORT_OPTS "{\"max_tokens\":16,\"temperature\":0,\"seed\":7}"
/* Until the window (4096) is full: ~5 s on one thread, far longer under ASan. Always
 * cancelled by the tests. */
#define LONG_OPTS "{\"max_tokens\":-1,\"temperature\":0,\"seed\":3}"

static void
send_generate (GmdTestClient *c, const char *id_json, const char *prompt, const char *opts)
{
  g_autofree char *p = gmd_test_json_string (prompt);
  gmd_test_client_sendf (c, "{\"type\":\"generate\",\"id\":%s,\"prompt\":%s,\"options\":%s}",
                         id_json, p, opts);
}

static void
assert_finished_ok (GmdTestStream *s, gint64 max_tokens)
{
  g_assert_null (s->error);
  g_assert_nonnull (s->done);
  g_assert_cmpstr (gmd_test_done_str (s, "stop_reason"), ==, "max_tokens");
  g_assert_cmpint (gmd_test_done_int (s, "generated_tokens"), ==, max_tokens);
  g_assert_cmpuint (s->n_pieces, >=, 1);
  g_assert_cmpuint (s->text->len, >, 0);
}

static void
assert_cancelled (GmdTestStream *s, const char *reason)
{
  g_assert_nonnull (s->done);
  g_assert_cmpstr (gmd_test_done_str (s, "stop_reason"), ==, "cancelled");
  g_assert_cmpstr (gmd_test_done_str (s, "cancel_reason"), ==, reason);
}

static gboolean
cancel_target (GmdTestClient *c, const char *cancel_id, const char *target_json)
{
  g_autoptr (JsonObject) msg = gmd_test_client_call (
      c, cancel_id, "{\"type\":\"cancel\",\"id\":%s,\"target\":%s}", cancel_id, target_json);
  JsonObject *result = gmd_test_assert_result (msg);
  return json_object_get_boolean_member (result, "found");
}

/* A request line expected to be refused before "accepted"; returns the error object
 * (owned by the returned message, which the caller frees). */
static JsonObject *
expect_rejected (GmdTestClient *c, const char *id_json, const char *code, const char *line)
{
  gmd_test_client_send (c, line);
  JsonObject *msg = gmd_test_client_read_id (c, id_json);
  gmd_test_assert_error (msg, code);
  return msg;
}

static void
assert_field (JsonObject *msg, const char *field_prefix)
{
  JsonObject *err = json_object_get_object_member (msg, "error");
  const char *field = json_object_get_string_member_with_default (err, "field", NULL);
  if (field == NULL || !g_str_has_prefix (field, field_prefix))
    g_error ("expected error field starting with \"%s\", got \"%s\" (%s)", field_prefix,
             field ? field : "(none)", json_object_get_string_member (err, "message"));
}

static void
assert_message_mentions (JsonObject *msg, const char *word)
{
  JsonObject *err = json_object_get_object_member (msg, "error");
  const char *message = json_object_get_string_member (err, "message");
  if (strstr (message, word) == NULL)
    g_error ("error message \"%s\" does not mention \"%s\"", message, word);
}

/* ---- handshake, info ----------------------------------------------------------------- */

static void
test_hello_info (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  GmdTestClient *c = gmd_test_client_connect (gmd_test_daemon_socket_path (d));
  JsonObject *hello = gmd_test_client_hello (c);

  g_assert_cmpint (json_object_get_int_member (hello, "api_version"), >=, 1);
  g_assert_cmpstr (json_object_get_string_member (hello, "server_version"), !=, "");
  g_assert_cmpint (json_object_get_int_member (hello, "uid"), ==, getuid ());
  /* The per-user service's own uid may administer it. */
  g_assert_true (json_object_get_boolean_member (hello, "admin"));
  JsonObject *limits = json_object_get_object_member (hello, "limits");
  g_assert_nonnull (limits);
  g_assert_cmpint (json_object_get_int_member (limits, "max_line_bytes"), ==, 33554432);
  g_assert_cmpint (json_object_get_int_member (limits, "max_fds_per_line"), ==, 16);
  g_assert_cmpint (json_object_get_int_member (limits, "max_queue"), ==, 64);
  g_assert_cmpint (json_object_get_int_member (limits, "max_queued_per_client"), ==, 4);
  g_assert_cmpint (json_object_get_int_member (limits, "max_prompt_tokens"), ==, 4096);
  g_assert_cmpint (json_object_get_int_member (limits, "max_tokens_limit"), ==, 4096);

  g_autoptr (JsonObject) info_msg = gmd_test_client_call (c, "1", "{\"type\":\"info\",\"id\":1}");
  JsonObject *info = gmd_test_assert_result (info_msg);
  g_autoptr (JsonNode) info_node = json_node_init_object (json_node_alloc (), info);
  g_autofree char *info_text = json_to_string (info_node, FALSE);
  g_test_message ("info: %s", info_text);
  /* The D-Bus Manager properties with snake_case names (protocol §4). */
  static const char *const info_keys[] = {
    "version", "api_version", "model_name", "architecture", "quantization", "context_size",
    "modalities", "media_types", "load_state", "load_error", "queue_length",
    "active_requests", "limits", "default_options", NULL };
  for (guint i = 0; info_keys[i] != NULL; i++)
    if (!json_object_has_member (info, info_keys[i]))
      g_error ("info has no \"%s\": %s", info_keys[i], info_text);
  g_assert_cmpstr (json_object_get_string_member (info, "load_state"), ==, "loaded");
  g_assert_cmpstr (json_object_get_string_member (info, "architecture"), ==, "gemma4");
  g_assert_cmpstr (json_object_get_string_member (info, "quantization"), ==, "Q8_0");
  g_assert_cmpstr (json_object_get_string_member (info, "model_name"), !=, "");
  g_assert_cmpint (json_object_get_int_member (info, "context_size"), ==, 4096);
  g_assert_cmpint (json_object_get_int_member (info, "queue_length"), ==, 0);
  g_assert_cmpint (json_object_get_int_member (info, "active_requests"), ==, 0);
  g_assert_cmpint (json_object_get_int_member (json_object_get_object_member (info, "limits"),
                                               "max_queue"), ==, 64);

  /* hello once per connection. */
  g_autoptr (JsonObject) again = gmd_test_client_call (
      c, "9", "{\"type\":\"hello\",\"id\":9,\"version\":1}");
  gmd_test_assert_error (again, "invalid_argument");

  g_autoptr (JsonObject) list_msg = gmd_test_client_call (c, "2", "{\"type\":\"list\",\"id\":2}");
  JsonArray *requests = json_object_get_array_member (gmd_test_assert_result (list_msg), "requests");
  g_assert_nonnull (requests);
  g_assert_cmpuint (json_array_get_length (requests), ==, 0);
  gmd_test_client_free (c);

  /* An unsupported version: the error lists the supported ones. */
  c = gmd_test_client_connect (gmd_test_daemon_socket_path (d));
  g_autoptr (JsonObject) v2 = gmd_test_client_call (
      c, "0", "{\"type\":\"hello\",\"id\":0,\"version\":2,\"client\":\"future/9\"}");
  gmd_test_assert_error (v2, "invalid_argument");
  g_assert_cmpstr (json_object_get_string_member (json_object_get_object_member (v2, "error"),
                                                  "field"), ==, "version");
  JsonArray *supported = json_object_get_array_member (json_object_get_object_member (v2, "error"),
                                                       "supported");
  g_assert_nonnull (supported);
  g_assert_cmpuint (json_array_get_length (supported), ==, 1);
  g_assert_cmpint (json_array_get_int_element (supported, 0), ==, 1);
  /* … and the client may retry with a listed version. */
  gmd_test_client_hello (c);
  gmd_test_client_free (c);

  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
test_request_before_hello (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  GmdTestClient *c = gmd_test_client_connect (gmd_test_daemon_socket_path (d));

  g_autoptr (JsonObject) e = expect_rejected (
      c, "1", "invalid_argument", "{\"type\":\"generate\",\"id\":1,\"prompt\":\"hi\"}");
  assert_message_mentions (e, "hello");
  g_autoptr (JsonObject) e2 = expect_rejected (c, "2", "invalid_argument",
                                               "{\"type\":\"info\",\"id\":2}");
  gmd_test_client_hello (c);
  g_autoptr (GmdTestStream) s = gmd_test_client_generate (c, "3", "hello?", SHORT_OPTS);
  assert_finished_ok (s, 16);
  gmd_test_client_free (c);

  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* ---- streaming ------------------------------------------------------------------------ */

static void
test_generate_stream (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  GmdTestClient *c = gmd_test_client_new (d);

  g_autoptr (GmdTestStream) s1 =
      gmd_test_client_generate (c, "1", "Tell me about the sea.",
                                "{\"max_tokens\":24,\"temperature\":0,\"seed\":7}");
  assert_finished_ok (s1, 24);
  g_assert_cmpuint (s1->states->len, >=, 2);
  g_assert_cmpstr (g_ptr_array_index (s1->states, 0), ==, "queued");
  g_assert_cmpstr (g_ptr_array_index (s1->states, s1->states->len - 1), ==, "generating");
  g_assert_cmpint (gmd_test_done_int (s1, "prompt_tokens"), >, 0);
  g_assert_cmpint (gmd_test_done_int (s1, "thinking_tokens"), ==, 0);
  g_assert_cmpint (gmd_test_done_int (s1, "context_size"), ==, 4096);
  g_assert_cmpint (gmd_test_done_int (s1, "seed"), ==, 7);
  gint64 used = gmd_test_done_int (s1, "context_used");
  g_assert_cmpint (used, >=, gmd_test_done_int (s1, "prompt_tokens"));
  g_assert_cmpint (used, <=, gmd_test_done_int (s1, "prompt_tokens") + 24);
  g_assert_cmpuint (s1->thinking->len, ==, 0);

  /* Same request, a string id: the same text. */
  g_autoptr (GmdTestStream) s2 =
      gmd_test_client_generate (c, "\"again\"", "Tell me about the sea.",
                                "{\"max_tokens\":24,\"temperature\":0,\"seed\":7}");
  assert_finished_ok (s2, 24);
  g_assert_cmpstr (s2->text->str, ==, s1->text->str);
  g_assert_cmpstr (s2->request, !=, s1->request);

  /* Sampling with a seed is reproducible too, and a request without a seed reports the one
   * it drew, which reproduces it. */
  g_autoptr (GmdTestStream) r1 = gmd_test_client_generate (
      c, "2", "Name a colour.", "{\"max_tokens\":20,\"temperature\":1.0,\"top_k\":40}");
  assert_finished_ok (r1, 20);
  gint64 seed = gmd_test_done_int (r1, "seed");
  g_autofree char *opts = g_strdup_printf (
      "{\"max_tokens\":20,\"temperature\":1.0,\"top_k\":40,\"seed\":%" G_GINT64_FORMAT "}", seed);
  g_autoptr (GmdTestStream) r2 = gmd_test_client_generate (c, "3", "Name a colour.", opts);
  assert_finished_ok (r2, 20);
  g_assert_cmpstr (r2->text->str, ==, r1->text->str);

  /* The id is free again once its request finished. */
  g_autoptr (GmdTestStream) s3 =
      gmd_test_client_generate (c, "1", "Tell me about the sea.",
                                "{\"max_tokens\":24,\"temperature\":0,\"seed\":7}");
  g_assert_cmpstr (s3->text->str, ==, s1->text->str);

  /* Content parts give the same prompt as "prompt". */
  gmd_test_client_send (c, "{\"type\":\"generate\",\"id\":4,\"content\":[{\"type\":\"text\","
                           "\"text\":\"Tell me about the sea.\"}],\"options\":"
                           "{\"max_tokens\":24,\"temperature\":0,\"seed\":7}}");
  g_autoptr (GmdTestStream) s4 = gmd_test_client_collect (c, "4");
  g_assert_cmpstr (s4->text->str, ==, s1->text->str);

  /* A stop string: the text ends before it and the summary names it. */
  if (s1->text->len > 4)
    {
      g_autofree char *stop = g_strndup (s1->text->str + s1->text->len / 2, 3);
      g_autofree char *stop_json = gmd_test_json_string (stop);
      g_autofree char *sopts = g_strdup_printf (
          "{\"max_tokens\":24,\"temperature\":0,\"seed\":7,\"stop\":[%s]}", stop_json);
      g_autoptr (GmdTestStream) s5 = gmd_test_client_generate (c, "5", "Tell me about the sea.", sopts);
      g_assert_cmpstr (gmd_test_done_str (s5, "stop_reason"), ==, "stop_string");
      g_assert_cmpstr (gmd_test_done_str (s5, "matched_stop"), ==, stop);
      g_assert_true (g_str_has_prefix (s1->text->str, s5->text->str));
      g_assert_null (strstr (s5->text->str, stop));
    }

  gmd_test_client_free (c);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
test_two_clients (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  GmdTestClient *a = gmd_test_client_new (d);
  GmdTestClient *b = gmd_test_client_new (d);
  const char *opts_a = "{\"max_tokens\":48,\"temperature\":0,\"seed\":1}";
  const char *opts_b = "{\"max_tokens\":40,\"temperature\":0.8,\"seed\":99}";

  g_autoptr (GmdTestStream) solo_a = gmd_test_client_generate (a, "1", "alpha", opts_a);
  g_autoptr (GmdTestStream) solo_b = gmd_test_client_generate (b, "1", "beta story", opts_b);
  assert_finished_ok (solo_a, 48);
  assert_finished_ok (solo_b, 40);

  send_generate (a, "2", "alpha", opts_a);
  send_generate (b, "2", "beta story", opts_b);
  g_autoptr (GmdTestStream) both_b = gmd_test_client_collect (b, "2");
  g_autoptr (GmdTestStream) both_a = gmd_test_client_collect (a, "2");
  g_assert_cmpstr (both_a->text->str, ==, solo_a->text->str);
  g_assert_cmpstr (both_b->text->str, ==, solo_b->text->str);
  g_assert_cmpstr (both_a->request, !=, both_b->request);

  gmd_test_client_free (a);
  gmd_test_client_free (b);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* ---- cancel, list, disconnect ---------------------------------------------------------- */

static void
test_cancel (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  GmdTestClient *c = gmd_test_client_new (d);
  GmdTestClient *other = gmd_test_client_new (d);

  /* By target (an id of this connection). */
  send_generate (c, "1", "Write a long story.", LONG_OPTS);
  g_autoptr (GmdTestStream) s1 = gmd_test_client_collect_until_piece (c, "1");
  g_assert_true (cancel_target (c, "2", "1"));
  gmd_test_client_collect_rest (c, s1);
  assert_cancelled (s1, "client");
  g_assert_cmpint (gmd_test_done_int (s1, "generated_tokens"), <, 4000);
  /* Finished: nothing left to cancel; unknown targets are not an error either. */
  g_assert_false (cancel_target (c, "3", "1"));
  g_assert_false (cancel_target (c, "4", "\"nope\""));

  /* By handle, from another connection of the same uid, seen there in list first. */
  send_generate (c, "\"long\"", "Write a long story.", LONG_OPTS);
  g_autoptr (GmdTestStream) s2 = gmd_test_client_collect_until_piece (c, "\"long\"");
  g_autoptr (JsonObject) list_msg = gmd_test_client_call (other, "1", "{\"type\":\"list\",\"id\":1}");
  JsonArray *requests = json_object_get_array_member (gmd_test_assert_result (list_msg), "requests");
  g_assert_cmpuint (json_array_get_length (requests), ==, 1);
  JsonObject *entry = json_array_get_object_element (requests, 0);
  g_assert_cmpstr (json_object_get_string_member (entry, "request"), ==, s2->request);
  g_assert_cmpstr (json_object_get_string_member (entry, "state"), ==, "generating");
  g_assert_true (json_object_get_null_member (entry, "session"));
  g_assert_cmpint (json_object_get_int_member (entry, "uid"), ==, getuid ());
  g_assert_false (json_object_has_member (entry, "id"));   /* not this connection's request */
  g_autoptr (JsonObject) own_list = gmd_test_client_call (c, "\"l\"", "{\"type\":\"list\",\"id\":\"l\"}");
  JsonObject *own = json_array_get_object_element (
      json_object_get_array_member (gmd_test_assert_result (own_list), "requests"), 0);
  g_assert_cmpstr (json_object_get_string_member (own, "id"), ==, "long");

  g_autoptr (JsonObject) cm = gmd_test_client_call (
      other, "2", "{\"type\":\"cancel\",\"id\":2,\"request\":\"%s\"}", s2->request);
  g_assert_true (json_object_get_boolean_member (gmd_test_assert_result (cm), "found"));
  gmd_test_client_collect_rest (c, s2);
  assert_cancelled (s2, "client");
  g_autoptr (JsonObject) cm2 = gmd_test_client_call (
      other, "3", "{\"type\":\"cancel\",\"id\":3,\"request\":\"r-987654\"}");
  g_assert_false (json_object_get_boolean_member (gmd_test_assert_result (cm2), "found"));

  /* A queued request is dropped at once, before generating anything. */
  send_generate (c, "10", "Write a long story.", LONG_OPTS);
  g_autoptr (GmdTestStream) running = gmd_test_client_collect_until_piece (c, "10");
  send_generate (c, "11", "short", SHORT_OPTS);
  g_autoptr (GmdTestStream) queued = gmd_test_client_collect_until_accepted (c, "11");
  g_assert_true (cancel_target (c, "12", "11"));
  gmd_test_client_collect_rest (c, queued);
  assert_cancelled (queued, "client");
  g_assert_cmpint (gmd_test_done_int (queued, "generated_tokens"), ==, 0);
  g_assert_cmpuint (queued->n_pieces, ==, 0);
  g_assert_null (running->done);   /* still running */
  g_assert_true (cancel_target (c, "13", "10"));
  gmd_test_client_collect_rest (c, running);
  assert_cancelled (running, "client");

  gmd_test_client_free (c);
  gmd_test_client_free (other);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
test_disconnect_mid_stream (void)
{
  /* A large window makes the abandoned request long (~40 s at full speed): only a real
   * cancellation lets the queued request behind it finish quickly. */
  GmdTestDaemon *d = gmd_test_daemon_start ("--context-size", "32768", NULL);
  GmdTestClient *a = gmd_test_client_new (d);
  GmdTestClient *b = gmd_test_client_new (d);
  const char *opts_b = "{\"max_tokens\":32,\"temperature\":0,\"seed\":4}";

  g_autoptr (GmdTestStream) solo = gmd_test_client_generate (b, "1", "bravo", opts_b);
  assert_finished_ok (solo, 32);

  send_generate (a, "1", "Write a long story.", LONG_OPTS);
  g_autoptr (GmdTestStream) sa = gmd_test_client_collect_until_piece (a, "1");
  send_generate (b, "2", "bravo", opts_b);
  g_autoptr (GmdTestStream) sb = gmd_test_client_collect_until_accepted (b, "2");
  gint64 closed_at = g_get_monotonic_time ();
  gmd_test_client_free (a);   /* close() mid-stream */

  gmd_test_client_collect_rest (b, sb);
  assert_finished_ok (sb, 32);
  g_assert_cmpstr (sb->text->str, ==, solo->text->str);
  gint64 waited_ms = (g_get_monotonic_time () - closed_at) / 1000;
  g_test_message ("the queued request finished %" G_GINT64_FORMAT " ms after the close", waited_ms);
  g_assert_cmpint (waited_ms, <, 15000);

  g_autoptr (JsonObject) list_msg = gmd_test_client_call (b, "3", "{\"type\":\"list\",\"id\":3}");
  JsonArray *requests = json_object_get_array_member (gmd_test_assert_result (list_msg), "requests");
  g_assert_cmpuint (json_array_get_length (requests), ==, 0);

  gmd_test_client_free (b);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* ---- limits ----------------------------------------------------------------------------- */

/* D-Bus Generate of a text prompt with the given max_tokens; returns the stream. */
static GmdTestDbusStream *
dbus_generate (GDBusConnection *c, const char *token, int max_tokens)
{
  GVariantDict d;
  g_variant_dict_init (&d, NULL);
  g_variant_dict_insert (&d, "max_tokens", "i", max_tokens);
  g_variant_dict_insert (&d, "temperature", "d", 0.0);
  return gmd_test_dbus_generate (c, token, "Write a long story.", g_variant_dict_end (&d));
}

static void
test_queue_full (void)
{
  /* The queue is shared by both front ends. On the socket a client is a uid, and a client's
   * quota (waiting + running) may not exceed max_queue, so two D-Bus clients (one client
   * each) fill the queue of one. */
  GmdTestDaemon *d = gmd_test_daemon_start ("--set", "limits.max_queue=1",
                                            "--set", "limits.max_queued_per_client=1", NULL);
  g_autoptr (GDBusConnection) x = gmd_test_daemon_connect_bus (d);
  g_autoptr (GDBusConnection) y = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;

  g_autoptr (GmdTestDbusStream) running = dbus_generate (x, "x1", -1);
  gmd_test_dbus_stream_wait_piece (running);
  g_autoptr (GmdTestDbusStream) queued = dbus_generate (y, "y1", 16);

  GmdTestClient *c = gmd_test_client_new (d);
  g_autoptr (JsonObject) busy = expect_rejected (
      c, "3", "busy", "{\"type\":\"generate\",\"id\":3,\"prompt\":\"one too many\"}");
  assert_message_mentions (busy, "queue");

  g_autoptr (GVariant) r = gmd_test_dbus_call (x, running->path, GMD_REQUEST_IFACE, "Cancel", NULL,
                                               "()", &error);
  g_assert_no_error (error);
  gmd_test_dbus_stream_wait_finished (running);
  g_assert_cmpstr (gmd_test_summary_str (running->summary, "stop_reason"), ==, "cancelled");
  gmd_test_dbus_stream_wait_finished (queued);
  g_assert_cmpstr (gmd_test_summary_str (queued->summary, "stop_reason"), ==, "max_tokens");
  /* Room again: the same request is now accepted. */
  g_autoptr (GmdTestStream) again = gmd_test_client_generate (c, "3", "one too many", SHORT_OPTS);
  assert_finished_ok (again, 16);

  gmd_test_client_free (c);
  g_dbus_connection_close_sync (x, NULL, NULL);
  g_dbus_connection_close_sync (y, NULL, NULL);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
test_client_quota (void)
{
  /* On the socket a client is a uid: the quota spans all its connections. */
  GmdTestDaemon *d = gmd_test_daemon_start ("--set", "limits.max_queued_per_client=2", NULL);
  GmdTestClient *c = gmd_test_client_new (d);
  GmdTestClient *c2 = gmd_test_client_new (d);

  send_generate (c, "1", "Write a long story.", LONG_OPTS);
  g_autoptr (GmdTestStream) running = gmd_test_client_collect_until_piece (c, "1");
  send_generate (c, "2", "waiting", SHORT_OPTS);
  g_autoptr (GmdTestStream) queued = gmd_test_client_collect_until_accepted (c, "2");
  g_autoptr (JsonObject) busy = expect_rejected (
      c, "3", "busy", "{\"type\":\"generate\",\"id\":3,\"prompt\":\"third\"}");
  g_autoptr (JsonObject) busy2 = expect_rejected (
      c2, "1", "busy", "{\"type\":\"generate\",\"id\":1,\"prompt\":\"same uid\"}");

  g_assert_true (cancel_target (c, "4", "1"));
  gmd_test_client_collect_rest (c, running);
  gmd_test_client_collect_rest (c, queued);
  assert_finished_ok (queued, 16);

  gmd_test_client_free (c);
  gmd_test_client_free (c2);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
test_connection_limit (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start ("--set", "limits.max_connections_per_uid=2", NULL);
  GmdTestClient *a = gmd_test_client_new (d);
  GmdTestClient *b = gmd_test_client_new (d);

  /* The third connection of the uid is told why, then closed. */
  GmdTestClient *c = gmd_test_client_connect (gmd_test_daemon_socket_path (d));
  g_autoptr (JsonObject) refused = gmd_test_client_read (c);
  g_assert_true (json_object_get_null_member (refused, "id"));
  gmd_test_assert_error (refused, "limit_exceeded");
  gmd_test_client_expect_eof (c);
  gmd_test_client_free (c);

  /* The connections within the limit are undisturbed. */
  g_autoptr (GmdTestStream) s = gmd_test_client_generate (a, "1", "still here?", SHORT_OPTS);
  assert_finished_ok (s, 16);

  /* A freed slot is usable again. Half-close and wait for the server to close: once it has,
   * it no longer counts the connection (a plain close() could race with the next connect). */
  gmd_test_client_shutdown_write (a);
  gmd_test_client_expect_eof (a);
  gmd_test_client_free (a);
  gmd_test_assert_still_serves (d);
  gmd_test_client_free (b);
  gmd_test_daemon_stop (d);
}

/* ---- bad input ----------------------------------------------------------------------- */

static void
test_malformed_lines (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  GmdTestClient *c = gmd_test_client_new (d);
  static const char *const bad_lines[] = {
    "{\"type\":\"generate\",\"id\":5,\"prompt\":\"hi\"",    /* truncated JSON */
    "[1,2,3]",                                             /* not an object */
    "\"just a string\"",
    "42",
    "{\"type\":\"generate\",\"prompt\":\"hi\"}",             /* no id */
    "{\"type\":\"generate\",\"id\":{\"x\":1},\"prompt\":\"hi\"}", /* id of a wrong type */
    "{\"type\":\"generate\",\"id\":-1,\"prompt\":\"hi\"}",     /* id out of range */
    "{\"type\":\"generate\",\"id\":\"\",\"prompt\":\"hi\"}",   /* empty string id */
    "{\"type\":\"generate\",\"id\":1.5,\"prompt\":\"hi\"}",    /* fractional id */
    "{\"type\":\"generate\",\"id\":9007199254740992,\"prompt\":\"hi\"}", /* 2^53 */
    "{\"type\":\"generate\",\"id\":null,\"prompt\":\"hi\"}",
  };

  for (guint i = 0; i < G_N_ELEMENTS (bad_lines); i++)
    {
      g_test_message ("sending: %s", bad_lines[i]);
      gmd_test_client_send (c, bad_lines[i]);
      g_autoptr (JsonObject) msg = gmd_test_client_read (c);
      g_assert_true (json_object_get_null_member (msg, "id"));
      gmd_test_assert_error (msg, "invalid_argument");
    }

  /* Strict JSON: duplicate keys, deep nesting, NUL in a string, trailing commas. */
  GString *deep = g_string_new ("{\"type\":\"info\",\"id\":3,\"x\":");
  for (int i = 0; i < 40; i++)
    g_string_append_c (deep, '[');
  for (int i = 0; i < 40; i++)
    g_string_append_c (deep, ']');
  g_string_append_c (deep, '}');
  g_autofree char *deep_line = g_string_free (deep, FALSE);
  const char *const strict[] = {
    "{\"type\":\"info\",\"id\":1,\"id\":2}",
    "{\"type\":\"generate\",\"id\":4,\"prompt\":\"a\\u0000b\"}",
    "{\"type\":\"info\",\"id\":5,}",
  };
  for (guint i = 0; i < G_N_ELEMENTS (strict); i++)
    {
      g_test_message ("sending: %s", strict[i]);
      gmd_test_client_send (c, strict[i]);
      g_autoptr (JsonObject) msg = gmd_test_client_read (c);
      gmd_test_assert_error (msg, "invalid_argument");
    }
  /* The nesting cap: refused as malformed or as over a cap. */
  gmd_test_client_send (c, deep_line);
  g_autoptr (JsonObject) deep_msg = gmd_test_client_read (c);
  JsonObject *deep_err = json_object_get_object_member (deep_msg, "error");
  g_assert_nonnull (deep_err);
  const char *deep_code = json_object_get_string_member (deep_err, "code");
  g_assert_true (g_strcmp0 (deep_code, "invalid_argument") == 0 ||
                 g_strcmp0 (deep_code, "limit_exceeded") == 0);

  /* Invalid UTF-8. */
  static const char bad_utf8[] = "{\"type\":\"generate\",\"id\":6,\"prompt\":\"\xff\xfe\"}\n";
  gmd_test_client_send_raw (c, bad_utf8, sizeof bad_utf8 - 1);
  g_autoptr (JsonObject) utf8_msg = gmd_test_client_read (c);
  gmd_test_assert_error (utf8_msg, "invalid_argument");

  /* Empty lines are ignored and a \r before the newline is fine: the next message is the
   * answer to the info request. */
  static const char crlf[] = "\n\n\r\n{\"type\":\"info\",\"id\":77}\r\n";
  gmd_test_client_send_raw (c, crlf, sizeof crlf - 1);
  g_autoptr (JsonObject) info = gmd_test_client_read (c);
  g_assert_cmpint (json_object_get_int_member (info, "id"), ==, 77);
  gmd_test_assert_result (info);

  /* The connection is still usable. */
  g_autoptr (GmdTestStream) s = gmd_test_client_generate (c, "8", "still fine?", SHORT_OPTS);
  assert_finished_ok (s, 16);

  gmd_test_client_free (c);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
test_oversized_line (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start ("--set", "limits.max_line_bytes=65536", NULL);
  GmdTestClient *c = gmd_test_client_connect (gmd_test_daemon_socket_path (d));
  JsonObject *hello = gmd_test_client_hello (c);
  g_assert_cmpint (json_object_get_int_member (json_object_get_object_member (hello, "limits"),
                                               "max_line_bytes"), ==, 65536);

  /* 200 kB of prompt, with a pipe fd riding along: the line is discarded, its fd closed. */
  g_autofree char *big = g_strnfill (200000, 'a');
  g_autofree char *line = g_strdup_printf ("{\"type\":\"generate\",\"id\":1,\"prompt\":\"%s\"}", big);
  int p[2];
  g_assert_cmpint (pipe2 (p, O_CLOEXEC), ==, 0);
  gmd_test_client_send_fds (c, line, &p[0], 1);
  close (p[0]);
  g_autoptr (JsonObject) msg = gmd_test_client_read (c);
  g_assert_true (json_object_get_null_member (msg, "id"));
  gmd_test_assert_error (msg, "limit_exceeded");
  g_assert_true (gmd_test_pipe_reader_closed (p[1], GMD_TEST_TIMEOUT_MS));
  close (p[1]);

  /* A line just under the cap is read normally (and rejected for its own reason). */
  g_autofree char *fits_text = g_strnfill (60000, 'b');
  g_autofree char *fits = g_strdup_printf ("{\"type\":\"generate\",\"id\":2,\"prompt\":\"%s\",\"bogus\":1}",
                                           fits_text);
  g_autoptr (JsonObject) fits_msg = expect_rejected (c, "2", "invalid_argument", fits);

  /* The connection stays usable. */
  g_autoptr (GmdTestStream) s = gmd_test_client_generate (c, "3", "after the long line", SHORT_OPTS);
  assert_finished_ok (s, 16);

  gmd_test_client_free (c);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

typedef struct {
  const char *line;
  const char *code;
  const char *field;     /* expected prefix of "field", or NULL */
} BadRequest;

static void
test_bad_requests (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  GmdTestClient *c = gmd_test_client_new (d);
  static const BadRequest cases[] = {
    { "{\"type\":\"generate\",\"id\":1,\"prompt\":\"hi\",\"options\":{\"temperature\":\"hot\"}}",
      "invalid_argument", "options.temperature" },
    { "{\"type\":\"generate\",\"id\":1,\"prompt\":42}", "invalid_argument", "prompt" },
    { "{\"type\":\"generate\",\"id\":1,\"prompt\":\"hi\",\"options\":{\"max_tokens\":1.5}}",
      "invalid_argument", "options.max_tokens" },
    { "{\"type\":\"generate\",\"id\":1,\"prompt\":\"hi\",\"options\":{\"top_p\":1.5}}",
      "invalid_argument", "options.top_p" },
    { "{\"type\":\"generate\",\"id\":1,\"prompt\":\"hi\",\"options\":{\"seed\":-1}}",
      "invalid_argument", "options.seed" },
    { "{\"type\":\"generate\",\"id\":1,\"prompt\":\"hi\",\"options\":{\"stop\":\"x\"}}",
      "invalid_argument", "options.stop" },
    { "{\"type\":\"generate\",\"id\":1,\"prompt\":\"hi\",\"options\":{\"bogus\":1}}",
      "invalid_argument", "options.bogus" },
    /* handle_token is D-Bus only; context_size belongs to session.open. */
    { "{\"type\":\"generate\",\"id\":1,\"prompt\":\"hi\",\"options\":{\"handle_token\":\"a\"}}",
      "invalid_argument", "options.handle_token" },
    { "{\"type\":\"generate\",\"id\":1,\"prompt\":\"hi\",\"options\":{\"context_size\":64}}",
      "invalid_argument", "options.context_size" },
    { "{\"type\":\"generate\",\"id\":1,\"prompt\":\"hi\",\"options\":[]}", "invalid_argument",
      "options" },
    { "{\"type\":\"generate\",\"id\":1,\"prompt\":\"hi\",\"bogus\":1}", "invalid_argument",
      "bogus" },
    { "{\"type\":\"generate\",\"id\":1}", "invalid_argument", NULL },
    { "{\"type\":\"generate\",\"id\":1,\"prompt\":\"hi\",\"content\":[{\"type\":\"text\","
      "\"text\":\"hi\"}]}", "invalid_argument", NULL },
    { "{\"type\":\"generate\",\"id\":1,\"content\":{}}", "invalid_argument", "content" },
    { "{\"type\":\"generate\",\"id\":1,\"content\":[]}", "invalid_argument", "content" },
    { "{\"type\":\"generate\",\"id\":1,\"content\":[{\"text\":\"no type\"}]}",
      "invalid_argument", "content[0]" },
    { "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"text\"}]}",
      "invalid_argument", "content[0]" },
    { "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
      "{\"type\":\"sound\",\"base64\":\"AAAA\"}]}", "invalid_argument", "content[1]" },
    { "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"text\",\"text\":\"a\","
      "\"fd\":0}]}", "invalid_argument", "content[0]" },
    { "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\"}]}",
      "invalid_argument", "content[0]" },
    { "{\"type\":\"frobnicate\",\"id\":1}", "invalid_argument", NULL },
    { "{\"id\":1,\"prompt\":\"no type\"}", "invalid_argument", NULL },
    { "{\"type\":7,\"id\":1}", "invalid_argument", NULL },
    { "{\"type\":\"info\",\"id\":1,\"extra\":true}", "invalid_argument", "extra" },
    { "{\"type\":\"cancel\",\"id\":1}", "invalid_argument", NULL },
    { "{\"type\":\"cancel\",\"id\":1,\"target\":{}}", "invalid_argument", "target" },
    { "{\"type\":\"session.send\",\"id\":1,\"session\":\"s999\",\"prompt\":\"hi\"}",
      "invalid_argument", NULL },
    { "{\"type\":\"session.open\",\"id\":1,\"options\":{\"context_size\":16}}",
      "invalid_argument", "options.context_size" },
    { "{\"type\":\"load_model\",\"id\":1,\"model_path\":\"relative.gguf\"}",
      "invalid_argument", NULL },
  };

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_test_message ("sending: %s", cases[i].line);
      g_autoptr (JsonObject) msg = expect_rejected (c, "1", cases[i].code, cases[i].line);
      if (cases[i].field != NULL)
        assert_field (msg, cases[i].field);
    }
  /* A part type that is reserved: video is unsupported media. */
  g_autoptr (JsonObject) video = expect_rejected (
      c, "2", "unsupported_media",
      "{\"type\":\"generate\",\"id\":2,\"content\":[{\"type\":\"video\",\"base64\":\"AAAA\"}]}");

  gmd_test_client_free (c);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* Ranges that depend on the window: max_tokens up to max_tokens_limit (the window unless
 * configured), a session's context_size up to the service's. */
static void
test_window_ranges (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  GmdTestClient *c = gmd_test_client_new (d);

  g_autoptr (JsonObject) e1 = expect_rejected (
      c, "1", "invalid_argument",
      "{\"type\":\"session.open\",\"id\":1,\"options\":{\"context_size\":5000}}");
  assert_field (e1, "options.context_size");
  g_autoptr (JsonObject) e2 = expect_rejected (
      c, "2", "invalid_argument",
      "{\"type\":\"generate\",\"id\":2,\"prompt\":\"hi\",\"options\":{\"max_tokens\":5000}}");
  assert_field (e2, "options.max_tokens");

  gmd_test_client_free (c);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
test_duplicate_id (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  GmdTestClient *c = gmd_test_client_new (d);

  send_generate (c, "\"dup\"", "Write a long story.", LONG_OPTS);
  g_autoptr (GmdTestStream) s = gmd_test_client_collect_until_piece (c, "\"dup\"");
  send_generate (c, "\"dup\"", "second with the same id", SHORT_OPTS);
  /* The line has no usable id: an error tied to the running request would end that
   * request twice, so the rejection has id null (protocol §2). */
  g_autoptr (JsonObject) dup = gmd_test_client_read_id (c, "null");
  gmd_test_assert_error (dup, "invalid_argument");
  g_assert_null (s->done);
  g_assert_true (cancel_target (c, "1", "\"dup\""));
  gmd_test_client_collect_rest (c, s);
  assert_cancelled (s, "client");

  /* Integer and string ids are distinct: 5 and "5". */
  send_generate (c, "5", "five", SHORT_OPTS);
  send_generate (c, "\"5\"", "five", SHORT_OPTS);
  g_autoptr (GmdTestStream) i5 = gmd_test_client_collect (c, "5");
  g_autoptr (GmdTestStream) s5 = gmd_test_client_collect (c, "\"5\"");
  assert_finished_ok (i5, 16);
  assert_finished_ok (s5, 16);
  g_assert_cmpstr (i5->text->str, ==, s5->text->str);

  gmd_test_client_free (c);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* ---- media ----------------------------------------------------------------------------- */

static gboolean
has_modality (GmdTestClient *c, const char *modality)
{
  g_autoptr (JsonObject) msg = gmd_test_client_call (c, "\"info\"", "{\"type\":\"info\",\"id\":\"info\"}");
  JsonObject *info = gmd_test_assert_result (msg);
  JsonArray *mods = json_object_get_array_member (info, "modalities");
  g_assert_nonnull (mods);
  for (guint i = 0; i < json_array_get_length (mods); i++)
    if (g_strcmp0 (json_array_get_string_element (mods, i), modality) == 0)
      return TRUE;
  return FALSE;
}

/* A recognised file of a modality this build may lack: unsupported_media without the
 * modality, an accepted request with it. */
static void
expect_media_outcome (GmdTestClient *c, gboolean available, const char *line,
                      const int *fds, guint n_fds)
{
  gmd_test_client_send_fds (c, line, fds, n_fds);
  g_autoptr (GmdTestStream) s = gmd_test_client_collect (c, "1");
  if (available)
    {
      g_assert_null (s->error);
      g_assert_cmpstr (gmd_test_done_str (s, "stop_reason"), !=, "error");
    }
  else
    {
      g_assert_nonnull (s->error);
      g_assert_cmpstr (json_object_get_string_member (s->error, "code"), ==, "unsupported_media");
    }
}

static void
test_media_bytes (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  GmdTestClient *c = gmd_test_client_new (d);
  gboolean image = has_modality (c, "image");
  gboolean audio = has_modality (c, "audio");
  g_assert_true (has_modality (c, "text"));

  /* Valid base64 of bytes that are no known format. */
  g_autoptr (JsonObject) garbage = expect_rejected (
      c, "1", "unsupported_media",
      "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\","
      "\"base64\":\"bm90IGFuIGltYWdl\"}]}");
  assert_field (garbage, "content[0]");
  g_autoptr (JsonObject) garbage_audio = expect_rejected (
      c, "1", "unsupported_media",
      "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"text\",\"text\":\"listen\"},"
      "{\"type\":\"audio\",\"base64\":\"bm90IGFuIGltYWdl\"}]}");
  assert_field (garbage_audio, "content[1]");
  /* Not base64 at all. */
  g_autoptr (JsonObject) bad64 = expect_rejected (
      c, "1", "invalid_argument",
      "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\",\"base64\":\"@@@@!!\"}]}");
  assert_field (bad64, "content[0]");
  /* Both a base64 and an fd. */
  g_autoptr (JsonObject) both = expect_rejected (
      c, "1", "invalid_argument",
      "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\",\"base64\":\"AAAA\","
      "\"fd\":0}]}");
  assert_field (both, "content[0]");

  /* A real PNG and WAV: recognised, and refused only for the missing modality. */
  g_autoptr (GBytes) png = gmd_test_png_bytes ();
  g_autoptr (GBytes) wav = gmd_test_wav_bytes ();
  g_autofree char *png64 = g_base64_encode (g_bytes_get_data (png, NULL), g_bytes_get_size (png));
  g_autofree char *wav64 = g_base64_encode (g_bytes_get_data (wav, NULL), g_bytes_get_size (wav));
  g_autofree char *png_line = g_strdup_printf (
      "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\",\"base64\":\"%s\"},"
      "{\"type\":\"text\",\"text\":\"What is this?\"}],\"options\":{\"max_tokens\":4}}", png64);
  expect_media_outcome (c, image, png_line, NULL, 0);
  g_autofree char *wav_line = g_strdup_printf (
      "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"audio\",\"base64\":\"%s\"}],"
      "\"options\":{\"max_tokens\":4}}", wav64);
  expect_media_outcome (c, audio, wav_line, NULL, 0);
  /* The same PNG through an fd (a regular file and a memfd). */
  int file_fd = gmd_test_temp_fd (d, g_bytes_get_data (png, NULL), g_bytes_get_size (png), O_RDONLY);
  const char *fd_line = "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\",\"fd\":0}],"
                        "\"options\":{\"max_tokens\":4}}";
  expect_media_outcome (c, image, fd_line, &file_fd, 1);
  close (file_fd);
  int mfd = memfd_create ("png", MFD_CLOEXEC);
  g_assert_cmpint (mfd, >=, 0);
  g_assert_cmpint (write (mfd, g_bytes_get_data (png, NULL), g_bytes_get_size (png)), ==,
                   (gssize) g_bytes_get_size (png));
  expect_media_outcome (c, image, fd_line, &mfd, 1);
  close (mfd);

  gmd_test_client_free (c);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
expect_fd_rejected (GmdTestClient *c, const char *line, const int *fds, guint n_fds,
                    const char *code, const char *field)
{
  g_test_message ("sending %u fds with: %s", n_fds, line);
  gmd_test_client_send_fds (c, line, fds, n_fds);
  g_autoptr (JsonObject) msg = gmd_test_client_read_id (c, "1");
  gmd_test_assert_error (msg, code);
  if (field != NULL)
    assert_field (msg, field);
}

static void
test_fds (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  GmdTestClient *c = gmd_test_client_new (d);
  const char *image0 = "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\",\"fd\":0}]}";
  int p[2];

  /* A pipe: not a regular file. The server closes what it received. */
  g_assert_cmpint (pipe2 (p, O_CLOEXEC), ==, 0);
  expect_fd_rejected (c, image0, &p[0], 1, "invalid_argument", "content[0]");
  close (p[0]);
  g_assert_true (gmd_test_pipe_reader_closed (p[1], GMD_TEST_TIMEOUT_MS));
  close (p[1]);

  /* A directory. */
  int dir_fd = open (gmd_test_daemon_tmpdir (d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  g_assert_cmpint (dir_fd, >=, 0);
  expect_fd_rejected (c, image0, &dir_fd, 1, "invalid_argument", "content[0]");
  close (dir_fd);

  /* O_PATH and write-only fds of a regular file. */
  g_autoptr (GBytes) png = gmd_test_png_bytes ();
  int path_fd = gmd_test_temp_fd (d, g_bytes_get_data (png, NULL), g_bytes_get_size (png), O_PATH);
  expect_fd_rejected (c, image0, &path_fd, 1, "invalid_argument", "content[0]");
  close (path_fd);
  int wr_fd = gmd_test_temp_fd (d, g_bytes_get_data (png, NULL), g_bytes_get_size (png), O_WRONLY);
  expect_fd_rejected (c, image0, &wr_fd, 1, "invalid_argument", "content[0]");
  close (wr_fd);

  /* An index beyond the fds sent with the line (one fd sent, index 1 used; none sent). */
  int file_fd = gmd_test_temp_fd (d, g_bytes_get_data (png, NULL), g_bytes_get_size (png), O_RDONLY);
  expect_fd_rejected (c, "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"text\","
                         "\"text\":\"hi\"},{\"type\":\"image\",\"fd\":1}]}",
                      &file_fd, 1, "invalid_argument", "content[1].fd");
  expect_fd_rejected (c, image0, NULL, 0, "invalid_argument", "content[0].fd");
  /* Bad index values, and one fd referenced twice. */
  expect_fd_rejected (c, "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\",\"fd\":-1}]}",
                      &file_fd, 1, "invalid_argument", "content[0].fd");
  expect_fd_rejected (c, "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\",\"fd\":\"0\"}]}",
                      &file_fd, 1, "invalid_argument", "content[0].fd");
  expect_fd_rejected (c, "{\"type\":\"generate\",\"id\":1,\"content\":[{\"type\":\"image\",\"fd\":0},"
                         "{\"type\":\"image\",\"fd\":0}]}",
                      &file_fd, 1, "invalid_argument", "content[1]");
  close (file_fd);

  /* More fds than max_fds_per_line (16): that line fails with limit_exceeded, and every
   * fd the server got is closed. */
  int pipes[17][2];
  int readers[17];
  for (int i = 0; i < 17; i++)
    {
      g_assert_cmpint (pipe2 (pipes[i], O_CLOEXEC), ==, 0);
      readers[i] = pipes[i][0];
    }
  gmd_test_client_send_fds (c, "{\"type\":\"generate\",\"id\":1,\"prompt\":\"many fds\"}", readers, 17);
  for (int i = 0; i < 17; i++)
    close (readers[i]);
  g_autoptr (JsonObject) many = gmd_test_client_read (c);
  gmd_test_assert_error (many, "limit_exceeded");
  for (int i = 0; i < 17; i++)
    {
      g_assert_true (gmd_test_pipe_reader_closed (pipes[i][1], GMD_TEST_TIMEOUT_MS));
      close (pipes[i][1]);
    }

  /* An fd that the line does not reference is closed, and the request runs. */
  g_assert_cmpint (pipe2 (p, O_CLOEXEC), ==, 0);
  gmd_test_client_send_fds (c, "{\"type\":\"generate\",\"id\":2,\"prompt\":\"extra fd\","
                               "\"options\":{\"max_tokens\":4}}", &p[0], 1);
  close (p[0]);
  g_autoptr (GmdTestStream) s = gmd_test_client_collect (c, "2");
  assert_finished_ok (s, 4);
  g_assert_true (gmd_test_pipe_reader_closed (p[1], GMD_TEST_TIMEOUT_MS));
  close (p[1]);

  gmd_test_client_free (c);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* ---- sessions -------------------------------------------------------------------------- */

/* The text part of a session.history message ({"role", "content": [parts]}). */
static const char *
message_text (JsonObject *message)
{
  JsonArray *parts = json_object_get_array_member (message, "content");
  for (guint i = 0; parts != NULL && i < json_array_get_length (parts); i++)
    {
      JsonObject *part = json_array_get_object_element (parts, i);
      if (g_strcmp0 (json_object_get_string_member_with_default (part, "type", ""), "text") == 0)
        return json_object_get_string_member (part, "text");
    }
  return NULL;
}

static JsonArray *
history_messages (GmdTestClient *c, const char *session, JsonObject **msg_out)
{
  *msg_out = gmd_test_client_call (
      c, "\"h\"", "{\"type\":\"session.history\",\"id\":\"h\",\"session\":\"%s\"}", session);
  JsonArray *messages = json_object_get_array_member (gmd_test_assert_result (*msg_out), "messages");
  g_assert_nonnull (messages);
  return messages;
}

static GmdTestStream *
session_send (GmdTestClient *c, const char *id_json, const char *session, const char *prompt,
              const char *options)
{
  g_autofree char *p = gmd_test_json_string (prompt);
  gmd_test_client_sendf (c, "{\"type\":\"session.send\",\"id\":%s,\"session\":\"%s\",\"prompt\":%s%s%s}",
                         id_json, session, p, options ? ",\"options\":" : "", options ? options : "");
  return gmd_test_client_collect (c, id_json);
}

static void
test_session (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  GmdTestClient *c = gmd_test_client_new (d);

  g_autoptr (JsonObject) open_msg = gmd_test_client_call (
      c, "1", "{\"type\":\"session.open\",\"id\":1,\"options\":{\"system\":\"You are terse.\","
              "\"temperature\":0,\"seed\":5,\"max_tokens\":8}}");
  JsonObject *opened = gmd_test_assert_result (open_msg);
  g_autofree char *sid = g_strdup (json_object_get_string_member (opened, "session"));
  g_assert_nonnull (sid);
  g_assert_cmpint (json_object_get_int_member (opened, "context_size"), ==, 4096);
  g_assert_cmpint (json_object_get_int_member (opened, "context_used"), >, 0);

  g_autoptr (GmdTestStream) t1 = session_send (c, "2", sid, "Hello", NULL);
  assert_finished_ok (t1, 8);
  g_autoptr (GmdTestStream) t2 = session_send (c, "3", sid, "And again?", NULL);
  assert_finished_ok (t2, 8);
  g_assert_cmpint (gmd_test_done_int (t2, "cached_tokens"), >, 0);
  g_assert_cmpint (gmd_test_done_int (t2, "prompt_tokens"), >, gmd_test_done_int (t1, "prompt_tokens"));
  g_assert_cmpint (gmd_test_done_int (t2, "cached_tokens"), <, gmd_test_done_int (t2, "prompt_tokens"));

  JsonObject *hmsg = NULL;
  JsonArray *messages = history_messages (c, sid, &hmsg);
  g_assert_cmpuint (json_array_get_length (messages), ==, 4);
  static const char *const roles[] = { "user", "model", "user", "model" };
  for (guint i = 0; i < 4; i++)
    {
      JsonObject *m = json_array_get_object_element (messages, i);
      g_assert_cmpstr (json_object_get_string_member (m, "role"), ==, roles[i]);
    }
  g_assert_cmpstr (message_text (json_array_get_object_element (messages, 0)),
                   ==, "Hello");
  g_assert_cmpstr (message_text (json_array_get_object_element (messages, 1)),
                   ==, t1->text->str);
  g_assert_cmpstr (message_text (json_array_get_object_element (messages, 3)),
                   ==, t2->text->str);
  json_object_unref (hmsg);

  /* Truncate to the first exchange, ask the second question again: same answer (greedy),
   * with the first exchange reused from the cache. */
  g_autoptr (JsonObject) tr = gmd_test_client_call (
      c, "4", "{\"type\":\"session.truncate\",\"id\":4,\"session\":\"%s\",\"keep\":2}", sid);
  JsonObject *trr = gmd_test_assert_result (tr);
  g_assert_cmpint (json_object_get_int_member (trr, "message_count"), ==, 2);
  g_assert_cmpint (json_object_get_int_member (trr, "context_used"), <, gmd_test_done_int (t2, "context_used"));
  g_autoptr (GmdTestStream) t2b = session_send (c, "5", sid, "And again?", NULL);
  g_assert_cmpstr (t2b->text->str, ==, t2->text->str);
  g_assert_cmpint (gmd_test_done_int (t2b, "prompt_tokens"), ==, gmd_test_done_int (t2, "prompt_tokens"));

  g_autofree char *bad_tr_line = g_strdup_printf (
      "{\"type\":\"session.truncate\",\"id\":6,\"session\":\"%s\",\"keep\":5}", sid);
  g_autoptr (JsonObject) bad_tr = expect_rejected (c, "6", "invalid_argument", bad_tr_line);

  /* One turn at a time: a second send while one runs is busy; closing the session ends
   * the running turn with session-closed. */
  g_autofree char *long_line = g_strdup_printf (
      "{\"type\":\"session.send\",\"id\":7,\"session\":\"%s\",\"prompt\":\"Go on.\","
      "\"options\":{\"max_tokens\":-1}}", sid);
  gmd_test_client_send (c, long_line);
  g_autoptr (GmdTestStream) running = gmd_test_client_collect_until_piece (c, "7");
  g_autofree char *busy_line = g_strdup_printf (
      "{\"type\":\"session.send\",\"id\":8,\"session\":\"%s\",\"prompt\":\"Also?\"}", sid);
  g_autoptr (JsonObject) busy = expect_rejected (c, "8", "busy", busy_line);
  g_autoptr (JsonObject) closed = gmd_test_client_call (
      c, "9", "{\"type\":\"session.close\",\"id\":9,\"session\":\"%s\"}", sid);
  gmd_test_assert_result (closed);
  gmd_test_client_collect_rest (c, running);
  assert_cancelled (running, "session-closed");

  /* The session is gone. */
  g_autofree char *gone_line = g_strdup_printf (
      "{\"type\":\"session.send\",\"id\":10,\"session\":\"%s\",\"prompt\":\"hello?\"}", sid);
  g_autoptr (JsonObject) gone = expect_rejected (c, "10", "invalid_argument", gone_line);

  /* A new session replays the conversation identically. */
  g_autoptr (JsonObject) open2 = gmd_test_client_call (
      c, "11", "{\"type\":\"session.open\",\"id\":11,\"options\":{\"system\":\"You are terse.\","
               "\"temperature\":0,\"seed\":5,\"max_tokens\":8}}");
  const char *sid2 = json_object_get_string_member (gmd_test_assert_result (open2), "session");
  g_assert_cmpstr (sid2, !=, sid);
  g_autoptr (GmdTestStream) u1 = session_send (c, "12", sid2, "Hello", NULL);
  g_assert_cmpstr (u1->text->str, ==, t1->text->str);

  gmd_test_client_free (c);   /* closes sid2 with the connection */
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
test_context_exceeded (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  GmdTestClient *c = gmd_test_client_new (d);

  /* A one-shot prompt longer than the whole window (4096). */
  GString *words = g_string_new (NULL);
  for (int i = 0; i < 6000; i++)
    g_string_append (words, "word ");
  g_autofree char *long_prompt = g_string_free (words, FALSE);
  g_autofree char *lp = gmd_test_json_string (long_prompt);
  g_autofree char *line = g_strdup_printf ("{\"type\":\"generate\",\"id\":1,\"prompt\":%s}", lp);
  g_autoptr (JsonObject) e1 = expect_rejected (c, "1", "context_exceeded", line);

  /* A session with a 64-position window. */
  g_autoptr (JsonObject) open_msg = gmd_test_client_call (
      c, "2", "{\"type\":\"session.open\",\"id\":2,\"options\":{\"context_size\":64,"
              "\"temperature\":0}}");
  JsonObject *opened = gmd_test_assert_result (open_msg);
  g_assert_cmpint (json_object_get_int_member (opened, "context_size"), ==, 64);
  g_autofree char *sid = g_strdup (json_object_get_string_member (opened, "session"));

  g_autofree char *mid_prompt = g_strnfill (100 * 5, 'x');
  for (int i = 4; i < 500; i += 5)
    mid_prompt[i] = ' ';
  g_autofree char *mp = gmd_test_json_string (mid_prompt);
  g_autofree char *send_long = g_strdup_printf (
      "{\"type\":\"session.send\",\"id\":3,\"session\":\"%s\",\"prompt\":%s}", sid, mp);
  g_autoptr (JsonObject) e2 = expect_rejected (c, "3", "context_exceeded", send_long);
  /* … leaving the session unchanged. */
  JsonObject *hmsg = NULL;
  g_assert_cmpuint (json_array_get_length (history_messages (c, sid, &hmsg)), ==, 0);
  json_object_unref (hmsg);

  /* An answer that fills the window ends with context_full. */
  g_autoptr (GmdTestStream) full = session_send (c, "4", sid, "hi", "{\"max_tokens\":-1}");
  g_assert_cmpstr (gmd_test_done_str (full, "stop_reason"), ==, "context_full");
  g_assert_cmpint (gmd_test_done_int (full, "context_size"), ==, 64);
  /* No room for another question. */
  g_autofree char *send_more = g_strdup_printf (
      "{\"type\":\"session.send\",\"id\":5,\"session\":\"%s\",\"prompt\":\"more\"}", sid);
  g_autoptr (JsonObject) e3 = expect_rejected (c, "5", "context_exceeded", send_more);

  /* A window smaller than system + history is refused at open. */
  g_autofree char *open_small = g_strdup_printf (
      "{\"type\":\"session.open\",\"id\":6,\"options\":{\"context_size\":32,\"system\":%s}}", mp);
  g_autoptr (JsonObject) e4 = expect_rejected (c, "6", "context_exceeded", open_small);

  /* The occupancy of a full window is the window. */
  g_assert_cmpint (gmd_test_done_int (full, "context_used"), <=, 64);
  g_assert_cmpint (gmd_test_done_int (full, "context_used"), >=, 60);

  gmd_test_client_free (c);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* ---- connection end, shutdown ------------------------------------------------------------ */

static void
test_half_close (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();

  /* Requests, then "no more requests": every answer still arrives, then EOF. */
  GmdTestClient *c = gmd_test_client_new (d);
  send_generate (c, "1", "first", SHORT_OPTS);
  send_generate (c, "2", "second", SHORT_OPTS);
  gmd_test_client_shutdown_write (c);
  g_autoptr (GmdTestStream) s1 = gmd_test_client_collect (c, "1");
  g_autoptr (GmdTestStream) s2 = gmd_test_client_collect (c, "2");
  assert_finished_ok (s1, 16);
  assert_finished_ok (s2, 16);
  gmd_test_client_expect_eof (c);
  gmd_test_client_free (c);

  /* Nothing pending: EOF at once. */
  c = gmd_test_client_new (d);
  gmd_test_client_shutdown_write (c);
  gmd_test_client_expect_eof (c);
  gmd_test_client_free (c);

  /* A last line without its newline still counts when the client half-closes. */
  c = gmd_test_client_new (d);
  static const char unterminated[] =
      "{\"type\":\"generate\",\"id\":1,\"prompt\":\"first\",\"options\":" SHORT_OPTS "}";
  gmd_test_client_send_raw (c, unterminated, sizeof unterminated - 1);
  gmd_test_client_shutdown_write (c);
  g_autoptr (GmdTestStream) s0 = gmd_test_client_collect (c, "1");
  g_assert_cmpstr (s0->text->str, ==, s1->text->str);
  gmd_test_client_expect_eof (c);
  gmd_test_client_free (c);

  /* Like socat: hello and the request in one write, then half-close. */
  c = gmd_test_client_connect (gmd_test_daemon_socket_path (d));
  static const char script[] =
      "{\"type\":\"hello\",\"id\":0,\"version\":1}\n"
      "{\"type\":\"generate\",\"id\":1,\"prompt\":\"first\",\"options\":" SHORT_OPTS "}\n";
  gmd_test_client_send_raw (c, script, sizeof script - 1);
  gmd_test_client_shutdown_write (c);
  g_autoptr (JsonObject) hello = gmd_test_client_read_id (c, "0");
  gmd_test_assert_result (hello);
  g_autoptr (GmdTestStream) s3 = gmd_test_client_collect (c, "1");
  g_assert_cmpstr (s3->text->str, ==, s1->text->str);
  gmd_test_client_expect_eof (c);
  gmd_test_client_free (c);

  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
test_sigterm_cancels (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start ("--set", "service.shutdown_grace=0", NULL);
  GmdTestClient *c = gmd_test_client_new (d);
  GmdTestClient *idle = gmd_test_client_new (d);

  g_autoptr (JsonObject) open_msg = gmd_test_client_call (
      c, "1", "{\"type\":\"session.open\",\"id\":1}");
  g_autofree char *sid = g_strdup (json_object_get_string_member (gmd_test_assert_result (open_msg),
                                                                  "session"));
  send_generate (c, "2", "Write a long story.", LONG_OPTS);
  g_autoptr (GmdTestStream) running = gmd_test_client_collect_until_piece (c, "2");
  send_generate (c, "3", "queued", SHORT_OPTS);
  g_autoptr (GmdTestStream) queued = gmd_test_client_collect_until_accepted (c, "3");

  gmd_test_daemon_signal (d, SIGTERM);

  gmd_test_client_collect_rest (c, running);
  assert_cancelled (running, "shutdown");
  gmd_test_client_collect_rest (c, queued);
  assert_cancelled (queued, "shutdown");
  g_autoptr (JsonObject) closed = gmd_test_client_read_id (c, "null");
  g_assert_cmpstr (json_object_get_string_member (closed, "event"), ==, "session_closed");
  g_assert_cmpstr (json_object_get_string_member (closed, "session"), ==, sid);
  g_assert_cmpstr (json_object_get_string_member (closed, "reason"), ==, "shutdown");
  gmd_test_client_expect_eof (c);
  gmd_test_client_expect_eof (idle);
  gmd_test_client_free (c);
  gmd_test_client_free (idle);

  gmd_test_daemon_wait_exit_ok (d);
  gmd_test_daemon_stop (d);
}

static void
test_sigterm_grace (void)
{
  /* With the default grace (5 s) a short running request finishes normally. */
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  GmdTestClient *c = gmd_test_client_new (d);

  send_generate (c, "1", "A few words", "{\"max_tokens\":100,\"temperature\":0}");
  g_autoptr (GmdTestStream) running = gmd_test_client_collect_until_piece (c, "1");
  send_generate (c, "2", "queued", SHORT_OPTS);
  g_autoptr (GmdTestStream) queued = gmd_test_client_collect_until_accepted (c, "2");
  gmd_test_daemon_signal (d, SIGTERM);

  gmd_test_client_collect_rest (c, queued);
  assert_cancelled (queued, "shutdown");
  gmd_test_client_collect_rest (c, running);
  assert_finished_ok (running, 100);
  gmd_test_client_expect_eof (c);
  gmd_test_client_free (c);

  gmd_test_daemon_wait_exit_ok (d);
  gmd_test_daemon_stop (d);
}

/* ---- administration ------------------------------------------------------------------ */

static void
test_admin (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  GmdTestClient *c = gmd_test_client_new (d);

  send_generate (c, "1", "Write a long story.", LONG_OPTS);
  g_autoptr (GmdTestStream) running = gmd_test_client_collect_until_piece (c, "1");
  g_autoptr (JsonObject) un = gmd_test_client_call (c, "2", "{\"type\":\"unload_model\",\"id\":2}");
  gmd_test_assert_result (un);
  gmd_test_client_collect_rest (c, running);
  assert_cancelled (running, "admin");

  g_autoptr (JsonObject) nm = expect_rejected (
      c, "3", "model_not_loaded", "{\"type\":\"generate\",\"id\":3,\"prompt\":\"anyone?\"}");
  g_autoptr (JsonObject) info_msg = gmd_test_client_call (c, "4", "{\"type\":\"info\",\"id\":4}");
  g_autoptr (JsonNode) info_node = json_node_init_object (json_node_alloc (),
                                                          gmd_test_assert_result (info_msg));
  g_autofree char *info_text = json_to_string (info_node, FALSE);
  g_assert_nonnull (strstr (info_text, "\"unloaded\""));

  g_autoptr (JsonObject) bad = expect_rejected (
      c, "5", "invalid_argument",
      "{\"type\":\"load_model\",\"id\":5,\"model_path\":\"/nonexistent/model.gguf\"}");
  g_autofree char *model = gmd_test_json_string (gmd_test_tiny_model ());
  g_autoptr (JsonObject) load = gmd_test_client_call (
      c, "6", "{\"type\":\"load_model\",\"id\":6,\"model_path\":%s}", model);
  gmd_test_assert_result (load);

  gmd_test_client_free (c);
  gmd_test_assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  signal (SIGPIPE, SIG_IGN);

  g_test_add_func ("/socket/hello-info", test_hello_info);
  g_test_add_func ("/socket/request-before-hello", test_request_before_hello);
  g_test_add_func ("/socket/generate-stream", test_generate_stream);
  g_test_add_func ("/socket/two-clients", test_two_clients);
  g_test_add_func ("/socket/cancel", test_cancel);
  g_test_add_func ("/socket/disconnect-mid-stream", test_disconnect_mid_stream);
  g_test_add_func ("/socket/queue-full", test_queue_full);
  g_test_add_func ("/socket/client-quota", test_client_quota);
  g_test_add_func ("/socket/connection-limit", test_connection_limit);
  g_test_add_func ("/socket/malformed-lines", test_malformed_lines);
  g_test_add_func ("/socket/oversized-line", test_oversized_line);
  g_test_add_func ("/socket/bad-requests", test_bad_requests);
  g_test_add_func ("/socket/window-ranges", test_window_ranges);
  g_test_add_func ("/socket/duplicate-id", test_duplicate_id);
  g_test_add_func ("/socket/media-bytes", test_media_bytes);
  g_test_add_func ("/socket/fds", test_fds);
  g_test_add_func ("/socket/session", test_session);
  g_test_add_func ("/socket/context-exceeded", test_context_exceeded);
  g_test_add_func ("/socket/half-close", test_half_close);
  g_test_add_func ("/socket/sigterm-cancels", test_sigterm_cancels);
  g_test_add_func ("/socket/sigterm-grace", test_sigterm_grace);
  g_test_add_func ("/socket/admin", test_admin);
  return g_test_run ();
}
