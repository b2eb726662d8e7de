/* test-dbus.c — the D-Bus API (docs/dbus-api.md, data/org.gemmad.Gemmad1.xml) against the
 * real gemmad on a private session bus. Every test starts its own daemon and talks to it
 * through private connections, as separate applications would. */
#include "gmd-test-harness.h"

#include <fcntl.h>
#include <gio/gunixfdlist.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

/* ---- helpers ---------------------------------------------------------------------------- */

static GVariant *
opts_short (void)
{
  GVariantDict d;
  g_variant_dict_init (&d, NULL);
  g_variant_dict_insert (&d, "max_tokens", "i", 16);
  g_variant_dict_insert (&d, "temperature", "d", 0.0);
  g_variant_dict_insert (&d, "seed", "t", (guint64) 7);
  return g_variant_dict_end (&d);
}

static GVariant *
opts_long (void)
{
  GVariantDict d;
  g_variant_dict_init (&d, NULL);
  g_variant_dict_insert (&d, "max_tokens", "i", -1);
  g_variant_dict_insert (&d, "temperature", "d", 0.0);
  return g_variant_dict_end (&d);
}

/* Generate with any content, options and fds; returns the handle or NULL with error. */
static char *
call_generate (GDBusConnection *c, GVariant *content, GVariant *options, GUnixFDList *fds,
               GError **error)
{
  g_autoptr (GVariant) reply = g_dbus_connection_call_with_unix_fd_list_sync (
      c, GMD_BUS_NAME, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "Generate",
      g_variant_new ("(@aa{sv}@a{sv})", content, options), G_VARIANT_TYPE ("(o)"),
      G_DBUS_CALL_FLAGS_NONE, GMD_TEST_TIMEOUT_MS, fds, NULL, NULL, error);
  if (reply == NULL)
    return NULL;
  char *path;
  g_variant_get (reply, "(o)", &path);
  return path;
}

/* Respond; returns the text (and summary) or NULL with error. */
static char *
call_respond (GDBusConnection *c, GVariant *content, GVariant *options, GVariant **summary,
              GError **error)
{
  g_autoptr (GVariant) reply = gmd_test_dbus_call (
      c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "Respond",
      g_variant_new ("(@aa{sv}@a{sv})", content, options), "(sa{sv})", error);
  if (reply == NULL)
    return NULL;
  char *text;
  GVariant *s;
  g_variant_get (reply, "(s@a{sv})", &text, &s);
  if (summary != NULL)
    *summary = s;
  else
    g_variant_unref (s);
  return text;
}

static GVariant *
opts_with_token (GVariant *options, const char *token)
{
  GVariantDict d;
  g_variant_ref_sink (options);
  g_variant_dict_init (&d, options);
  g_variant_unref (options);
  g_variant_dict_insert (&d, "handle_token", "s", token);
  return g_variant_dict_end (&d);
}

static void
assert_stream_ok (GmdTestDbusStream *s, guint64 max_tokens)
{
  gmd_test_dbus_stream_wait_finished (s);
  g_assert_cmpstr (gmd_test_summary_str (s->summary, "stop_reason"), ==, "max_tokens");
  g_assert_cmpuint (gmd_test_summary_uint (s->summary, "generated_tokens"), ==, max_tokens);
  g_assert_cmpuint (s->text->len, >, 0);
}

static void
assert_stream_cancelled (GmdTestDbusStream *s, const char *reason)
{
  gmd_test_dbus_stream_wait_finished (s);
  g_assert_cmpstr (gmd_test_summary_str (s->summary, "stop_reason"), ==, "cancelled");
  g_assert_cmpstr (gmd_test_summary_str (s->summary, "cancel_reason"), ==, reason);
}

static void
request_cancel (GDBusConnection *c, const char *path, GError **error)
{
  g_autoptr (GVariant) r = gmd_test_dbus_call (c, path, GMD_REQUEST_IFACE, "Cancel", NULL, "()", error);
}

/* Both front ends and a fresh D-Bus client still get correct answers. */
static void
assert_still_serves (GmdTestDaemon *d)
{
  gmd_test_assert_still_serves (d);
  g_autoptr (GDBusConnection) c = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) summary = NULL;
  g_autofree char *text = call_respond (c, gmd_test_text_content ("Still there?"), opts_short (),
                                        &summary, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (gmd_test_summary_str (summary, "stop_reason"), ==, "max_tokens");
  g_assert_cmpuint (gmd_test_summary_uint (summary, "generated_tokens"), ==, 16);
  g_dbus_connection_close_sync (c, NULL, NULL);
}

static GVariant *
media_content (const char *type, const char *key, GVariant *value)
{
  GVariantBuilder b;
  g_variant_builder_init (&b, G_VARIANT_TYPE ("aa{sv}"));
  g_variant_builder_open (&b, G_VARIANT_TYPE ("a{sv}"));
  g_variant_builder_add (&b, "{sv}", "type", g_variant_new_string (type));
  if (key != NULL)
    g_variant_builder_add (&b, "{sv}", key, value);
  g_variant_builder_close (&b);
  g_variant_builder_open (&b, G_VARIANT_TYPE ("a{sv}"));
  g_variant_builder_add (&b, "{sv}", "type", g_variant_new_string ("text"));
  g_variant_builder_add (&b, "{sv}", "text", g_variant_new_string ("What is this?"));
  g_variant_builder_close (&b);
  return g_variant_builder_end (&b);
}

static GVariant *
bytes_variant (GBytes *bytes)
{
  return g_variant_new_from_bytes (G_VARIANT_TYPE_BYTESTRING, bytes, TRUE);
}

/* ---- properties ------------------------------------------------------------------------- */

static void
on_manager_changed (GDBusConnection *connection, const char *sender, const char *path,
                    const char *iface, const char *signal, GVariant *params, gpointer user_data)
{
  *(gboolean *) user_data = TRUE;
}

/* Waits until a uint32 Manager property has the given value: the value is read at once and
 * again after each PropertiesChanged (the service rate-limits QueueLength and
 * ActiveRequests updates, so a read may lag the last event by a moment). */
static void
wait_manager_uint (GDBusConnection *c, const char *name, guint32 want)
{
  gboolean changed = FALSE;
  guint sub = g_dbus_connection_signal_subscribe (
      c, GMD_BUS_NAME, "org.freedesktop.DBus.Properties", "PropertiesChanged", GMD_MANAGER_PATH,
      NULL, G_DBUS_SIGNAL_FLAGS_NONE, on_manager_changed, &changed, NULL);
  gint64 deadline = g_get_monotonic_time () + GMD_TEST_TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;
  guint32 value;
  for (;;)
    {
      changed = FALSE;
      g_autoptr (GVariant) v = gmd_test_manager_property (c, name);
      value = g_variant_get_uint32 (v);
      if (value == want)
        break;
      gint64 left_ms = (deadline - g_get_monotonic_time ()) / 1000;
      if (left_ms <= 0)
        g_error ("Manager.%s stayed %u, expected %u", name, value, want);
      gmd_test_wait_flag (&changed, (guint) left_ms, "a PropertiesChanged of the Manager");
    }
  g_dbus_connection_signal_unsubscribe (c, sub);
}

static void
test_properties (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  g_autoptr (GDBusConnection) c = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;

  g_autoptr (GVariant) reply = gmd_test_dbus_call (
      c, GMD_MANAGER_PATH, "org.freedesktop.DBus.Properties", "GetAll",
      g_variant_new ("(s)", GMD_MANAGER_IFACE), "(a{sv})", &error);
  g_assert_no_error (error);
  g_autoptr (GVariant) props = g_variant_get_child_value (reply, 0);
  g_autofree char *printed = g_variant_print (props, TRUE);
  g_test_message ("Manager properties: %s", printed);

  const char *s;
  guint32 u;
  g_assert_true (g_variant_lookup (props, "Version", "&s", &s));
  g_assert_cmpstr (s, !=, "");
  g_assert_true (g_variant_lookup (props, "ApiVersion", "u", &u));
  g_assert_cmpuint (u, >=, 1);
  g_assert_true (g_variant_lookup (props, "ModelName", "&s", &s));
  g_assert_cmpstr (s, !=, "");
  g_assert_true (g_variant_lookup (props, "Architecture", "&s", &s));
  g_assert_cmpstr (s, ==, "gemma4");
  g_assert_true (g_variant_lookup (props, "Quantization", "&s", &s));
  g_assert_cmpstr (s, ==, "Q8_0");
  g_assert_true (g_variant_lookup (props, "ContextSize", "u", &u));
  g_assert_cmpuint (u, ==, 4096);
  g_assert_true (g_variant_lookup (props, "LoadState", "&s", &s));
  g_assert_cmpstr (s, ==, "loaded");
  g_assert_true (g_variant_lookup (props, "LoadError", "&s", &s));
  g_assert_cmpstr (s, ==, "");
  g_assert_true (g_variant_lookup (props, "QueueLength", "u", &u));
  g_assert_cmpuint (u, ==, 0);
  g_assert_true (g_variant_lookup (props, "ActiveRequests", "u", &u));
  g_assert_cmpuint (u, ==, 0);

  g_autoptr (GVariant) mods = g_variant_lookup_value (props, "Modalities", G_VARIANT_TYPE ("as"));
  g_assert_nonnull (mods);
  g_assert_true (gmd_test_strv_contains (mods, "text"));
  g_autoptr (GVariant) types = g_variant_lookup_value (props, "MediaTypes", G_VARIANT_TYPE ("as"));
  g_assert_nonnull (types);

  g_autoptr (GVariant) limits = g_variant_lookup_value (props, "Limits", G_VARIANT_TYPE ("a{sv}"));
  g_assert_nonnull (limits);
  g_assert_cmpuint (gmd_test_summary_uint (limits, "max_queue"), ==, 64);
  g_assert_cmpuint (gmd_test_summary_uint (limits, "max_queued_per_client"), ==, 4);
  g_assert_cmpuint (gmd_test_summary_uint (limits, "max_tokens_limit"), ==, 4096);
  g_assert_cmpuint (gmd_test_summary_uint (limits, "max_prompt_tokens"), ==, 4096);
  g_assert_cmpuint (gmd_test_summary_uint (limits, "max_sessions_per_client"), ==, 8);
  g_assert_cmpuint (gmd_test_summary_uint (limits, "session_idle_timeout"), ==, 1800);
  /* Every documented key, with the type the introspection XML gives it. */
  static const struct { const char *key, *type; } limit_types[] = {
    { "max_queue", "u" }, { "max_queued_per_client", "u" }, { "max_sessions_per_client", "u" },
    { "max_prompt_tokens", "u" }, { "max_tokens_limit", "u" }, { "max_text_bytes", "t" },
    { "max_media_bytes", "t" }, { "max_media_parts", "u" }, { "max_audio_seconds", "u" },
    { "max_stop_strings", "u" }, { "max_stop_bytes", "u" }, { "session_idle_timeout", "u" },
  };
  for (guint i = 0; i < G_N_ELEMENTS (limit_types); i++)
    {
      g_autoptr (GVariant) v = g_variant_lookup_value (limits, limit_types[i].key, NULL);
      if (v == NULL || !g_variant_is_of_type (v, G_VARIANT_TYPE (limit_types[i].type)))
        g_error ("Limits.%s: expected type %s, got %s", limit_types[i].key, limit_types[i].type,
                 v ? g_variant_get_type_string (v) : "nothing");
    }

  g_autoptr (GVariant) defaults = g_variant_lookup_value (props, "DefaultOptions",
                                                          G_VARIANT_TYPE ("a{sv}"));
  g_assert_nonnull (defaults);
  double temperature = -1;
  g_assert_true (g_variant_lookup (defaults, "temperature", "d", &temperature));
  g_assert_cmpfloat (temperature, >=, 0.0);
  g_autoptr (GVariant) max_tokens = g_variant_lookup_value (defaults, "max_tokens", NULL);
  g_assert_nonnull (max_tokens);
  g_autoptr (GVariant) seed = g_variant_lookup_value (defaults, "seed", NULL);
  g_assert_null (seed);   /* no default seed: each request draws one */

  /* Introspection names the three interfaces' entry points. */
  g_autoptr (GVariant) xml_reply = gmd_test_dbus_call (
      c, GMD_MANAGER_PATH, "org.freedesktop.DBus.Introspectable", "Introspect", NULL, "(s)", &error);
  g_assert_no_error (error);
  const char *xml;
  g_variant_get (xml_reply, "(&s)", &xml);
  g_assert_nonnull (strstr (xml, GMD_MANAGER_IFACE));
  g_assert_nonnull (strstr (xml, "Generate"));

  /* A single property, and a read-only one cannot be set. */
  g_autoptr (GVariant) ls = gmd_test_manager_property (c, "LoadState");
  g_assert_cmpstr (g_variant_get_string (ls, NULL), ==, "loaded");
  g_autoptr (GVariant) set = gmd_test_dbus_call (
      c, GMD_MANAGER_PATH, "org.freedesktop.DBus.Properties", "Set",
      g_variant_new ("(ssv)", GMD_MANAGER_IFACE, "LoadState", g_variant_new_string ("unloaded")),
      NULL, &error);
  g_assert_nonnull (error);
  g_clear_error (&error);

  g_dbus_connection_close_sync (c, NULL, NULL);
  assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* ---- Respond, Generate -------------------------------------------------------------- */

static void
test_respond (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  g_autoptr (GDBusConnection) c = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;

  g_autoptr (GVariant) sum1 = NULL;
  g_autofree char *t1 = call_respond (c, gmd_test_text_content ("Why is the sky blue?"),
                                      opts_short (), &sum1, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (gmd_test_summary_str (sum1, "stop_reason"), ==, "max_tokens");
  g_assert_cmpuint (gmd_test_summary_uint (sum1, "generated_tokens"), ==, 16);
  g_assert_cmpuint (gmd_test_summary_uint (sum1, "prompt_tokens"), >, 0);
  g_assert_cmpuint (gmd_test_summary_uint (sum1, "seed"), ==, 7);
  g_assert_cmpuint (gmd_test_summary_uint (sum1, "context_size"), ==, 4096);
  double total = -1;
  g_assert_true (g_variant_lookup (sum1, "total_seconds", "d", &total));
  g_assert_cmpfloat (total, >, 0.0);
  g_assert_cmpstr (t1, !=, "");

  /* Same request, same answer; and the socket front end agrees. */
  g_autofree char *t2 = call_respond (c, gmd_test_text_content ("Why is the sky blue?"),
                                      opts_short (), NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (t2, ==, t1);
  GmdTestClient *sc = gmd_test_client_new (d);
  g_autoptr (GmdTestStream) ss = gmd_test_client_generate (
      sc, "1", "Why is the sky blue?", "{\"max_tokens\":16,\"temperature\":0,\"seed\":7}");
  g_assert_cmpstr (ss->text->str, ==, t1);
  gmd_test_client_free (sc);

  /* Integer keys take any integer type, double keys integers too (as gdbus call sends). */
  GVariantDict od;
  g_variant_dict_init (&od, NULL);
  g_variant_dict_insert (&od, "max_tokens", "y", (guchar) 16);
  g_variant_dict_insert (&od, "temperature", "i", 0);
  g_variant_dict_insert (&od, "seed", "x", (gint64) 7);
  g_variant_dict_insert (&od, "top_k", "q", (guint16) 64);
  g_autofree char *t3 = call_respond (c, gmd_test_text_content ("Why is the sky blue?"),
                                      g_variant_dict_end (&od), NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (t3, ==, t1);

  g_dbus_connection_close_sync (c, NULL, NULL);
  assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
test_generate_stream (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  g_autoptr (GDBusConnection) c = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;

  g_autoptr (GmdTestDbusStream) s = gmd_test_dbus_generate (c, "gen1", "Why is the sky blue?",
                                                            opts_short ());
  assert_stream_ok (s, 16);
  g_assert_cmpuint (s->states->len, >=, 2);
  g_assert_cmpstr (g_ptr_array_index (s->states, 0), ==, "queued");
  g_assert_cmpstr (g_ptr_array_index (s->states, s->states->len - 1), ==, "generating");
  g_assert_cmpuint (gmd_test_summary_uint (s->summary, "pieces"), ==, s->n_pieces);
  g_assert_cmpuint (s->thinking->len, ==, 0);

  /* The streamed text is Respond's text. */
  g_autofree char *resp = call_respond (c, gmd_test_text_content ("Why is the sky blue?"),
                                        opts_short (), NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (s->text->str, ==, resp);

  /* The object is gone after Finished; the token can be used again. */
  request_cancel (c, s->path, &error);
  g_assert_nonnull (error);
  g_autofree char *remote = g_dbus_error_get_remote_error (error);
  g_assert_true (g_strcmp0 (remote, "org.freedesktop.DBus.Error.UnknownMethod") == 0 ||
                 g_strcmp0 (remote, "org.freedesktop.DBus.Error.UnknownObject") == 0);
  g_clear_error (&error);
  g_autoptr (GmdTestDbusStream) again = gmd_test_dbus_generate (c, "gen1", "Why is the sky blue?",
                                                                opts_short ());
  assert_stream_ok (again, 16);
  g_assert_cmpstr (again->text->str, ==, s->text->str);

  /* Two requests of one client at once: both complete, each with its own text. */
  GVariantDict od;
  g_variant_dict_init (&od, NULL);
  g_variant_dict_insert (&od, "max_tokens", "i", 12);
  g_variant_dict_insert (&od, "temperature", "d", 0.0);
  g_autoptr (GmdTestDbusStream) p1 = gmd_test_dbus_generate (c, "par1", "one", g_variant_dict_end (&od));
  g_autoptr (GmdTestDbusStream) p2 = gmd_test_dbus_generate (c, "par2", "Why is the sky blue?",
                                                             opts_short ());
  assert_stream_ok (p1, 12);
  assert_stream_ok (p2, 16);
  g_assert_cmpstr (p2->text->str, ==, s->text->str);

  g_dbus_connection_close_sync (c, NULL, NULL);
  assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
test_cancel (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  g_autoptr (GDBusConnection) c = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;

  g_autoptr (GmdTestDbusStream) s = gmd_test_dbus_generate (c, "long1", "Write a long story.",
                                                            opts_long ());
  gmd_test_dbus_stream_wait_piece (s);
  g_autoptr (GVariant) state = NULL;
  {
    g_autoptr (GVariant) r = gmd_test_dbus_call (
        c, s->path, "org.freedesktop.DBus.Properties", "Get",
        g_variant_new ("(ss)", GMD_REQUEST_IFACE, "State"), "(v)", &error);
    g_assert_no_error (error);
    g_variant_get (r, "(v)", &state);
    g_assert_cmpstr (g_variant_get_string (state, NULL), ==, "generating");
  }
  request_cancel (c, s->path, &error);
  g_assert_no_error (error);
  assert_stream_cancelled (s, "client");
  g_assert_cmpuint (gmd_test_summary_uint (s->summary, "generated_tokens"), <, 4000);

  /* A queued request is dropped at once. */
  g_autoptr (GmdTestDbusStream) run = gmd_test_dbus_generate (c, "long2", "Write a long story.",
                                                              opts_long ());
  gmd_test_dbus_stream_wait_piece (run);
  g_autoptr (GmdTestDbusStream) q = gmd_test_dbus_generate (c, "queued", "wait", opts_short ());
  request_cancel (c, q->path, &error);
  g_assert_no_error (error);
  assert_stream_cancelled (q, "client");
  g_assert_cmpuint (gmd_test_summary_uint (q->summary, "generated_tokens"), ==, 0);
  g_assert_cmpuint (run->n_finished, ==, 0);
  request_cancel (c, run->path, &error);
  g_assert_no_error (error);
  assert_stream_cancelled (run, "client");

  g_dbus_connection_close_sync (c, NULL, NULL);
  assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

typedef struct {
  GVariant *reply;
  GError *error;
  gboolean done;
} AsyncCall;

static void
on_async_reply (GObject *source, GAsyncResult *result, gpointer user_data)
{
  AsyncCall *call = user_data;
  call->reply = g_dbus_connection_call_finish (G_DBUS_CONNECTION (source), result, &call->error);
  call->done = TRUE;
}

/* Waits until the Request object at path reports the given state (each Get is a round
 * trip to the service, not a sleep). */
static void
wait_request_state (GDBusConnection *c, const char *path, const char *want)
{
  gint64 deadline = g_get_monotonic_time () + GMD_TEST_TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;
  for (;;)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GVariant) r = gmd_test_dbus_call (
          c, path, "org.freedesktop.DBus.Properties", "Get",
          g_variant_new ("(ss)", GMD_REQUEST_IFACE, "State"), "(v)", &error);
      if (r != NULL)
        {
          g_autoptr (GVariant) v = NULL;
          g_variant_get (r, "(v)", &v);
          if (g_strcmp0 (g_variant_get_string (v, NULL), want) == 0)
            return;
        }
      if (g_get_monotonic_time () > deadline)
        g_error ("request %s never reached state %s", path, want);
      /* Let other sources run between round trips. */
      g_main_context_iteration (NULL, FALSE);
    }
}

static void
test_respond_cancel (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  g_autoptr (GDBusConnection) c = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;
  AsyncCall call = { 0 };

  g_dbus_connection_call (c, GMD_BUS_NAME, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "Respond",
                          g_variant_new ("(@aa{sv}@a{sv})", gmd_test_text_content ("Long story"),
                                         opts_with_token (opts_long (), "resp1")),
                          G_VARIANT_TYPE ("(sa{sv})"), G_DBUS_CALL_FLAGS_NONE, G_MAXINT, NULL,
                          on_async_reply, &call);
  g_autofree char *path = gmd_test_object_path (c, "request", "resp1");
  wait_request_state (c, path, "generating");
  request_cancel (c, path, &error);
  g_assert_no_error (error);
  gmd_test_wait_flag (&call.done, GMD_TEST_TIMEOUT_MS, "the Respond reply");
  g_assert_null (call.reply);
  gmd_test_assert_dbus_error (call.error, "Cancelled");
  g_clear_error (&call.error);

  g_dbus_connection_close_sync (c, NULL, NULL);
  assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* ---- ownership, errors -------------------------------------------------------------------- */

static void
on_any_signal (GDBusConnection *connection, const char *sender, const char *path,
               const char *iface, const char *signal, GVariant *params, gpointer user_data)
{
  (*(guint *) user_data)++;
}

static void
test_not_owner (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  g_autoptr (GDBusConnection) a = gmd_test_daemon_connect_bus (d);
  g_autoptr (GDBusConnection) b = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;

  /* b listens on a's request path: unicast signals must never reach it. */
  g_autofree char *a_path = gmd_test_object_path (a, "request", "mine");
  guint seen_by_b = 0;
  guint sub = g_dbus_connection_signal_subscribe (b, NULL, GMD_REQUEST_IFACE, NULL, a_path, NULL,
                                                  G_DBUS_SIGNAL_FLAGS_NONE, on_any_signal,
                                                  &seen_by_b, NULL);
  g_autoptr (GmdTestDbusStream) s = gmd_test_dbus_generate (a, "mine", "Write a long story.",
                                                            opts_long ());
  gmd_test_dbus_stream_wait_piece (s);

  request_cancel (b, s->path, &error);
  gmd_test_assert_dbus_error (error, "PermissionDenied");
  g_clear_error (&error);
  g_autoptr (GVariant) st = gmd_test_dbus_call (
      b, s->path, "org.freedesktop.DBus.Properties", "Get",
      g_variant_new ("(ss)", GMD_REQUEST_IFACE, "State"), "(v)", &error);
  gmd_test_assert_dbus_error (error, "PermissionDenied");
  g_clear_error (&error);

  /* The same for a session. */
  g_autoptr (GVariant) os = gmd_test_dbus_call (
      a, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "OpenSession",
      g_variant_new_parsed ("({'handle_token': <'chat'>},)"), "(o)", &error);
  g_assert_no_error (error);
  const char *session_path;
  g_variant_get (os, "(&o)", &session_path);
  g_autoptr (GVariant) h = gmd_test_dbus_call (b, session_path, GMD_SESSION_IFACE, "GetHistory",
                                               NULL, "(aa{sv})", &error);
  gmd_test_assert_dbus_error (error, "PermissionDenied");
  g_clear_error (&error);
  g_autoptr (GVariant) cl = gmd_test_dbus_call (b, session_path, GMD_SESSION_IFACE, "Close", NULL,
                                                "()", &error);
  gmd_test_assert_dbus_error (error, "PermissionDenied");
  g_clear_error (&error);
  g_autoptr (GVariant) snd = gmd_test_dbus_call (
      b, session_path, GMD_SESSION_IFACE, "Send",
      g_variant_new ("(@aa{sv}@a{sv})", gmd_test_text_content ("hi"),
                     opts_with_token (opts_short (), "intruder")),
      "(o)", &error);
  gmd_test_assert_dbus_error (error, "PermissionDenied");
  g_clear_error (&error);

  /* The owner still can. */
  request_cancel (a, s->path, &error);
  g_assert_no_error (error);
  assert_stream_cancelled (s, "client");
  g_assert_cmpuint (seen_by_b, ==, 0);
  g_dbus_connection_signal_unsubscribe (b, sub);

  g_dbus_connection_close_sync (a, NULL, NULL);
  g_dbus_connection_close_sync (b, NULL, NULL);
  assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
expect_generate_error (GDBusConnection *c, GVariant *content, GVariant *options,
                       GUnixFDList *fds, const char *name, const char *mentions)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *printed = g_variant_print (options, FALSE);
  g_test_message ("Generate with options %s", printed);
  g_autofree char *path = call_generate (c, content, options, fds, &error);
  gmd_test_assert_dbus_error (error, name);
  if (mentions != NULL && strstr (error->message, mentions) == NULL)
    g_error ("error \"%s\" does not mention \"%s\"", error->message, mentions);
}

static void
expect_respond_error (GDBusConnection *c, GVariant *content, GVariant *options,
                      const char *name, const char *mentions)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *text = call_respond (c, content, options, NULL, &error);
  gmd_test_assert_dbus_error (error, name);
  if (mentions != NULL && strstr (error->message, mentions) == NULL)
    g_error ("error \"%s\" does not mention \"%s\"", error->message, mentions);
}

static void
test_invalid_arguments (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  g_autoptr (GDBusConnection) c = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;

  static const struct {
    const char *options;
    const char *mentions;
  } bad[] = {
    { "{'temprature': <0.5>}", "temprature" },
    { "{'top_p': <1.5>}", "top_p" },
    { "{'temperature': <'hot'>}", "temperature" },
    { "{'max_tokens': <'8'>}", "max_tokens" },
    { "{'max_tokens': <int64 -2>}", "max_tokens" },
    { "{'seed': <-1>}", "seed" },
    { "{'stop': <'x'>}", "stop" },
    { "{'context_size': <uint32 64>}", "context_size" },   /* OpenSession only */
    { "{'history': <@aa{sv} []>}", "history" },             /* OpenSession only */
    { "{'raw': <true>, 'system': <'be nice'>}", NULL },
    { "{'image_tokens': <uint32 100>}", "image_tokens" },
  };
  for (guint i = 0; i < G_N_ELEMENTS (bad); i++)
    {
      g_test_message ("Respond with %s", bad[i].options);
      expect_respond_error (c, gmd_test_text_content ("hi"), g_variant_new_parsed (bad[i].options),
                            "InvalidArgument", bad[i].mentions);
    }

  /* handle_token: required for Generate, well-formed, unique among unfinished requests. */
  expect_generate_error (c, gmd_test_text_content ("hi"), opts_short (), NULL,
                         "InvalidArgument", "handle_token");
  expect_generate_error (c, gmd_test_text_content ("hi"), opts_with_token (opts_short (), "bad-token"),
                         NULL, "InvalidArgument", "handle_token");
  g_autofree char *too_long = g_strnfill (65, 'a');
  expect_generate_error (c, gmd_test_text_content ("hi"), opts_with_token (opts_short (), too_long),
                         NULL, "InvalidArgument", "handle_token");
  g_autoptr (GmdTestDbusStream) s = gmd_test_dbus_generate (c, "busy1", "Write a long story.",
                                                            opts_long ());
  gmd_test_dbus_stream_wait_piece (s);
  expect_generate_error (c, gmd_test_text_content ("hi"), opts_with_token (opts_short (), "busy1"),
                         NULL, "InvalidArgument", "handle_token");
  request_cancel (c, s->path, &error);
  g_assert_no_error (error);
  assert_stream_cancelled (s, "client");

  /* Content shape. */
  expect_respond_error (c, g_variant_new_parsed ("@aa{sv} []"), opts_short (), "InvalidArgument", NULL);
  expect_respond_error (c, g_variant_new_parsed ("[{'text': <'no type'>}]"), opts_short (),
                        "InvalidArgument", NULL);
  expect_respond_error (c, g_variant_new_parsed ("[{'type': <'text'>, 'text': <42>}]"), opts_short (),
                        "InvalidArgument", NULL);
  expect_respond_error (c, g_variant_new_parsed ("[{'type': <'text'>, 'text': <'a'>, 'extra': <1>}]"),
                        opts_short (), "InvalidArgument", "extra");
  expect_respond_error (c, g_variant_new_parsed ("[{'type': <'sound'>, 'bytes': <b'abc'>}]"),
                        opts_short (), "InvalidArgument", NULL);
  expect_respond_error (c, g_variant_new_parsed ("[{'type': <'image'>}]"), opts_short (),
                        "InvalidArgument", NULL);

  /* A wrong signature is the bus's standard error. */
  g_autoptr (GVariant) r = gmd_test_dbus_call (c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "Generate",
                                               g_variant_new ("(s)", "hi"), "(o)", &error);
  gmd_test_assert_dbus_error (error, "org.freedesktop.DBus.Error.InvalidArgs");
  g_clear_error (&error);

  g_dbus_connection_close_sync (c, NULL, NULL);
  assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* Ranges that depend on the window: max_tokens up to max_tokens_limit (Limits: the window
 * unless configured), a session's context_size up to ContextSize. */
static void
test_window_ranges (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  g_autoptr (GDBusConnection) c = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;

  g_autoptr (GVariant) os = gmd_test_dbus_call (
      c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "OpenSession",
      g_variant_new_parsed ("({'context_size': <uint32 5000>},)"), "(o)", &error);
  gmd_test_assert_dbus_error (error, "InvalidArgument");
  g_assert_nonnull (strstr (error->message, "context_size"));
  g_clear_error (&error);
  expect_generate_error (c, gmd_test_text_content ("hi"),
                         g_variant_new_parsed ("{'handle_token': <'w1'>, 'max_tokens': <5000>}"),
                         NULL, "InvalidArgument", "max_tokens");

  g_dbus_connection_close_sync (c, NULL, NULL);
  assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* ---- media ------------------------------------------------------------------------------- */

static void
test_media (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  g_autoptr (GDBusConnection) c = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) mods = gmd_test_manager_property (c, "Modalities");
  gboolean image = gmd_test_strv_contains (mods, "image");
  gboolean audio = gmd_test_strv_contains (mods, "audio");

  /* Bytes that are no known format. */
  g_autoptr (GBytes) junk = g_bytes_new_static ("not an image", 12);
  expect_generate_error (c, media_content ("image", "bytes", bytes_variant (junk)),
                         opts_with_token (opts_short (), "m1"), NULL, "UnsupportedMedia", NULL);
  expect_generate_error (c, media_content ("audio", "bytes", bytes_variant (junk)),
                         opts_with_token (opts_short (), "m1"), NULL, "UnsupportedMedia", NULL);
  expect_generate_error (c, media_content ("video", "bytes", bytes_variant (junk)),
                         opts_with_token (opts_short (), "m1"), NULL, "UnsupportedMedia", NULL);

  /* A real PNG and WAV: refused for the modality unless the build has it. */
  g_autoptr (GBytes) png = gmd_test_png_bytes ();
  g_autoptr (GBytes) wav = gmd_test_wav_bytes ();
  struct { GBytes *bytes; const char *type; gboolean available; } samples[] = {
    { png, "image", image }, { wav, "audio", audio },
  };
  for (guint i = 0; i < G_N_ELEMENTS (samples); i++)
    {
      if (samples[i].available)
        {
          g_autoptr (GVariant) summary = NULL;
          g_autofree char *text = call_respond (
              c, media_content (samples[i].type, "bytes", bytes_variant (samples[i].bytes)),
              opts_short (), &summary, &error);
          g_assert_no_error (error);
        }
      else
        expect_respond_error (c, media_content (samples[i].type, "bytes",
                                                bytes_variant (samples[i].bytes)),
                              opts_short (), "UnsupportedMedia", NULL);
    }

  /* fds: a pipe is InvalidArgument (and closed by the service); a regular file is read. */
  int p[2];
  g_assert_cmpint (pipe2 (p, O_CLOEXEC), ==, 0);
  {
    g_autoptr (GUnixFDList) fds = g_unix_fd_list_new ();
    gint idx = g_unix_fd_list_append (fds, p[0], &error);
    g_assert_no_error (error);
    close (p[0]);
    expect_generate_error (c, media_content ("image", "fd", g_variant_new_handle (idx)),
                           opts_with_token (opts_short (), "m2"), fds, "InvalidArgument", NULL);
  }
  g_assert_true (gmd_test_pipe_reader_closed (p[1], GMD_TEST_TIMEOUT_MS));
  close (p[1]);

  {
    g_autoptr (GUnixFDList) fds = g_unix_fd_list_new ();
    int jfd = gmd_test_temp_fd (d, "not an image", 12, O_RDONLY);
    gint idx = g_unix_fd_list_append (fds, jfd, &error);
    close (jfd);
    expect_generate_error (c, media_content ("image", "fd", g_variant_new_handle (idx)),
                           opts_with_token (opts_short (), "m3"), fds, "UnsupportedMedia", NULL);
  }
  {
    /* A handle beyond the message's fds; and both fd and bytes in one part. */
    g_autoptr (GUnixFDList) fds = g_unix_fd_list_new ();
    int jfd = gmd_test_temp_fd (d, "x", 1, O_RDONLY);
    g_unix_fd_list_append (fds, jfd, &error);
    close (jfd);
    expect_generate_error (c, media_content ("image", "fd", g_variant_new_handle (1)),
                           opts_with_token (opts_short (), "m4"), fds, "InvalidArgument", NULL);
  }
  expect_generate_error (c, g_variant_new_parsed ("[{'type': <'image'>, 'fd': <handle 0>, "
                                                  "'bytes': <b'abc'>}]"),
                         opts_with_token (opts_short (), "m5"), NULL, "InvalidArgument", NULL);
  {
    /* A write-only fd of a regular file. */
    g_autoptr (GUnixFDList) fds = g_unix_fd_list_new ();
    int wfd = gmd_test_temp_fd (d, g_bytes_get_data (png, NULL), g_bytes_get_size (png), O_WRONLY);
    gint idx = g_unix_fd_list_append (fds, wfd, &error);
    close (wfd);
    expect_generate_error (c, media_content ("image", "fd", g_variant_new_handle (idx)),
                           opts_with_token (opts_short (), "m6"), fds, "InvalidArgument", NULL);
  }

  g_dbus_connection_close_sync (c, NULL, NULL);
  assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* Calls with fds have them read off the service's main loop (a file on a stalled
 * filesystem must not freeze it). What a client sees stays the same: a caller's answers
 * come in the order of its calls, Cancel reaches a request whose fds may still be read,
 * and a caller that leaves meanwhile leaves nothing behind. Every check holds whichever
 * of the read and the next call comes first. */
typedef struct {
  GVariant *reply;
  GError *error;
  gboolean done;
  guint order;          /* 1 for the first reply of the test, 2 for the next, … */
} OrderedCall;

static guint ordered_replies;

static void
on_ordered_reply (GObject *source, GAsyncResult *result, gpointer user_data)
{
  OrderedCall *call = user_data;
  call->reply = g_dbus_connection_call_with_unix_fd_list_finish (G_DBUS_CONNECTION (source), NULL,
                                                                 result, &call->error);
  call->order = ++ordered_replies;
  call->done = TRUE;
}

static void
ordered_call (GDBusConnection *c, const char *path, const char *iface, const char *method,
              GVariant *params, GUnixFDList *fds, OrderedCall *call)
{
  g_dbus_connection_call_with_unix_fd_list (c, GMD_BUS_NAME, path, iface, method, params, NULL,
                                            G_DBUS_CALL_FLAGS_NONE, GMD_TEST_TIMEOUT_MS, fds, NULL,
                                            on_ordered_reply, call);
}

static void
ordered_call_clear (OrderedCall *call)
{
  g_clear_pointer (&call->reply, g_variant_unref);
  g_clear_error (&call->error);
}

/* Content: image (as handle 0) then a question. */
static GVariant *
image_fd_content (void)
{
  return media_content ("image", "fd", g_variant_new_handle (0));
}

static GUnixFDList *
fd_list_of (int fd)
{
  g_autoptr (GError) error = NULL;
  GUnixFDList *fds = g_unix_fd_list_new ();
  g_unix_fd_list_append (fds, fd, &error);
  g_assert_no_error (error);
  close (fd);
  return fds;
}

/* Waits until the Request object at path answers (a round trip each time, no sleep): a
 * method call to a path not yet exported is refused by GDBus at once, even when the call
 * that exports it came first but waits in the service's main loop. */
static void
wait_request_exported (GDBusConnection *c, const char *path)
{
  gint64 deadline = g_get_monotonic_time () + GMD_TEST_TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;
  for (;;)
    {
      g_autoptr (GError) error = NULL;
      g_autoptr (GVariant) r = gmd_test_dbus_call (
          c, path, "org.freedesktop.DBus.Properties", "Get",
          g_variant_new ("(ss)", GMD_REQUEST_IFACE, "State"), "(v)", &error);
      if (r != NULL)
        return;
      if (g_get_monotonic_time () > deadline)
        g_error ("request %s never appeared: %s", path, error->message);
      g_main_context_iteration (NULL, FALSE);
    }
}

static void
test_media_fds_off_loop (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  g_autoptr (GDBusConnection) c = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) png = gmd_test_png_bytes ();
  g_autoptr (GVariant) mods = gmd_test_manager_property (c, "Modalities");
  gboolean image = gmd_test_strv_contains (mods, "image");
  ordered_replies = 0;

  /* One caller, three calls sent back to back: a real PNG file as an fd, then text, then
   * OpenSession. The later calls wait for the read, so they run after the first. */
  {
    g_autoptr (GUnixFDList) fds = fd_list_of (gmd_test_temp_fd (d, g_bytes_get_data (png, NULL),
                                                                g_bytes_get_size (png), O_RDONLY));
    g_autoptr (GmdTestDbusStream) text = gmd_test_dbus_stream_subscribe (c, "after_fd");
    OrderedCall with_fd = { 0 }, text_call = { 0 }, open_call = { 0 };
    ordered_call (c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "Generate",
                  g_variant_new ("(@aa{sv}@a{sv})", image_fd_content (),
                                 opts_with_token (opts_short (), "png_fd")),
                  fds, &with_fd);
    ordered_call (c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "Generate",
                  g_variant_new ("(@aa{sv}@a{sv})", gmd_test_text_content ("Hello"),
                                 opts_with_token (opts_short (), "after_fd")),
                  NULL, &text_call);
    ordered_call (c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "OpenSession",
                  g_variant_new_parsed ("({'handle_token': <'fdchat'>},)"), NULL, &open_call);
    gmd_test_wait_flag (&open_call.done, GMD_TEST_TIMEOUT_MS, "the OpenSession reply");
    gmd_test_wait_flag (&text_call.done, GMD_TEST_TIMEOUT_MS, "the second Generate reply");
    /* A Generate is answered when the service has queued it (possibly after the next
     * call's answer); without an image encoder the one with the fd is refused at once,
     * before the next calls run. */
    gmd_test_wait_flag (&with_fd.done, GMD_TEST_TIMEOUT_MS, "the first Generate reply");
    if (image)
      g_assert_no_error (with_fd.error);
    else
      {
        gmd_test_assert_dbus_error (with_fd.error, "UnsupportedMedia");
        g_assert_cmpuint (with_fd.order, <, text_call.order);
        g_assert_cmpuint (with_fd.order, <, open_call.order);
      }
    g_assert_no_error (text_call.error);
    g_assert_no_error (open_call.error);
    assert_stream_ok (text, 16);

    /* The same on a session: Send with the fd, then a plain Send. */
    const char *session_path;
    g_variant_get (open_call.reply, "(&o)", &session_path);
    g_autoptr (GUnixFDList) fds2 = fd_list_of (gmd_test_temp_fd (d, g_bytes_get_data (png, NULL),
                                                                 g_bytes_get_size (png), O_RDONLY));
    g_autoptr (GmdTestDbusStream) turn = gmd_test_dbus_stream_subscribe (c, "turn_after_fd");
    OrderedCall send_fd = { 0 }, send_text = { 0 };
    ordered_call (c, session_path, GMD_SESSION_IFACE, "Send",
                  g_variant_new ("(@aa{sv}@a{sv})", image_fd_content (),
                                 g_variant_new_parsed ("{'handle_token': <'turn_fd'>, 'max_tokens': <4>}")),
                  fds2, &send_fd);
    ordered_call (c, session_path, GMD_SESSION_IFACE, "Send",
                  g_variant_new ("(@aa{sv}@a{sv})", gmd_test_text_content ("Hi"),
                                 g_variant_new_parsed ("{'handle_token': <'turn_after_fd'>, "
                                                       "'max_tokens': <4>}")),
                  NULL, &send_text);
    gmd_test_wait_flag (&send_text.done, GMD_TEST_TIMEOUT_MS, "the second Send reply");
    gmd_test_wait_flag (&send_fd.done, GMD_TEST_TIMEOUT_MS, "the first Send reply");
    if (!image)
      {
        gmd_test_assert_dbus_error (send_fd.error, "UnsupportedMedia");
        g_assert_cmpuint (send_fd.order, <, send_text.order);
        g_assert_no_error (send_text.error);
        assert_stream_ok (turn, 4);
      }
    ordered_call_clear (&with_fd);
    ordered_call_clear (&text_call);
    ordered_call_clear (&open_call);
    ordered_call_clear (&send_fd);
    ordered_call_clear (&send_text);
  }

  /* Cancel of a Generate whose call carries an fd (a pipe, not named by the content: the
   * call still goes through the read), as soon as its object answers. The call ends as
   * Cancelled when the read was still going on, else the stream ends cancelled. The pipe
   * is closed by the service either way. */
  {
    int p[2];
    g_assert_cmpint (pipe2 (p, O_CLOEXEC), ==, 0);
    g_autoptr (GUnixFDList) fds = fd_list_of (p[0]);
    g_autoptr (GmdTestDbusStream) s = gmd_test_dbus_stream_subscribe (c, "cancel_fd");
    OrderedCall gen = { 0 }, cancel = { 0 };
    ordered_call (c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "Generate",
                  g_variant_new ("(@aa{sv}@a{sv})", gmd_test_text_content ("Write a long story."),
                                 opts_with_token (opts_long (), "cancel_fd")),
                  fds, &gen);
    wait_request_exported (c, s->path);
    ordered_call (c, s->path, GMD_REQUEST_IFACE, "Cancel", NULL, NULL, &cancel);
    gmd_test_wait_flag (&cancel.done, GMD_TEST_TIMEOUT_MS, "the Cancel reply");
    g_assert_no_error (cancel.error);
    gmd_test_wait_flag (&gen.done, GMD_TEST_TIMEOUT_MS, "the Generate reply");
    if (gen.error != NULL)
      {
        gmd_test_assert_dbus_error (gen.error, "Cancelled");
        g_assert_cmpuint (s->n_finished, ==, 0);
      }
    else
      assert_stream_cancelled (s, "client");
    g_clear_object (&fds);   /* our copy of the read end */
    g_assert_true (gmd_test_pipe_reader_closed (p[1], GMD_TEST_TIMEOUT_MS));
    close (p[1]);
    ordered_call_clear (&gen);
    ordered_call_clear (&cancel);
  }

  /* A caller that leaves right after a call with an fd: the fd is closed, nothing of its
   * request stays, the others are served. */
  {
    GDBusConnection *leaves = gmd_test_daemon_connect_bus (d);
    int p[2];
    g_assert_cmpint (pipe2 (p, O_CLOEXEC), ==, 0);
    g_autoptr (GUnixFDList) fds = fd_list_of (p[0]);
    g_dbus_connection_call_with_unix_fd_list (
        leaves, GMD_BUS_NAME, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "Generate",
        g_variant_new ("(@aa{sv}@a{sv})", gmd_test_text_content ("Write a long story."),
                       opts_with_token (opts_long (), "left")),
        NULL, G_DBUS_CALL_FLAGS_NONE, -1, fds, NULL, NULL, NULL);
    g_dbus_connection_flush_sync (leaves, NULL, &error);
    g_assert_no_error (error);
    g_dbus_connection_close_sync (leaves, NULL, &error);
    g_assert_no_error (error);
    g_object_unref (leaves);
    g_clear_object (&fds);
    g_assert_true (gmd_test_pipe_reader_closed (p[1], GMD_TEST_TIMEOUT_MS));
    close (p[1]);
    wait_manager_uint (c, "ActiveRequests", 0);
    wait_manager_uint (c, "QueueLength", 0);
  }

  g_dbus_connection_close_sync (c, NULL, NULL);
  assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* ---- clients leaving, fairness, quotas ----------------------------------------------- */

static void
test_client_vanishes (void)
{
  /* A large window: the abandoned request would run for a long time if not cancelled. */
  GmdTestDaemon *d = gmd_test_daemon_start ("--context-size", "32768", NULL);
  g_autoptr (GDBusConnection) stays = gmd_test_daemon_connect_bus (d);
  GDBusConnection *leaves = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;

  g_autoptr (GmdTestDbusStream) gone = gmd_test_dbus_generate (leaves, "bye", "Write a long story.",
                                                               opts_long ());
  gmd_test_dbus_stream_wait_piece (gone);
  g_autoptr (GVariant) os = gmd_test_dbus_call (
      leaves, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "OpenSession",
      g_variant_new_parsed ("({'handle_token': <'chat'>},)"), "(o)", &error);
  g_assert_no_error (error);
  g_autoptr (GmdTestDbusStream) queued = gmd_test_dbus_generate (stays, "after", "Why is the sky blue?",
                                                                 opts_short ());
  gint64 closed_at = g_get_monotonic_time ();
  g_dbus_connection_close_sync (leaves, NULL, &error);
  g_assert_no_error (error);
  gmd_test_dbus_stream_free (g_steal_pointer (&gone));
  g_object_unref (leaves);

  assert_stream_ok (queued, 16);
  gint64 waited_ms = (g_get_monotonic_time () - closed_at) / 1000;
  g_test_message ("the other client's request finished %" G_GINT64_FORMAT " ms after the close",
                  waited_ms);
  g_assert_cmpint (waited_ms, <, 15000);
  wait_manager_uint (stays, "ActiveRequests", 0);
  wait_manager_uint (stays, "QueueLength", 0);

  g_dbus_connection_close_sync (stays, NULL, NULL);
  assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
test_fairness (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  g_autoptr (GDBusConnection) a = gmd_test_daemon_connect_bus (d);
  g_autoptr (GDBusConnection) b = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;

  /* a1 holds the engine while the queue fills: a2, a3 (client A) then b1 (client B). */
  g_autoptr (GmdTestDbusStream) a1 = gmd_test_dbus_generate (a, "a1", "Write a long story.",
                                                             opts_long ());
  gmd_test_dbus_stream_wait_piece (a1);
  g_autoptr (GmdTestDbusStream) a2 = gmd_test_dbus_generate (a, "a2", "two", opts_short ());
  g_autoptr (GmdTestDbusStream) a3 = gmd_test_dbus_generate (a, "a3", "three", opts_short ());
  g_autoptr (GmdTestDbusStream) b1 = gmd_test_dbus_generate (b, "b1", "bee", opts_short ());
  wait_manager_uint (b, "QueueLength", 3);
  wait_manager_uint (b, "ActiveRequests", 1);
  request_cancel (a, a1->path, &error);
  g_assert_no_error (error);

  assert_stream_cancelled (a1, "client");
  assert_stream_ok (a2, 16);
  assert_stream_ok (a3, 16);
  assert_stream_ok (b1, 16);
  g_test_message ("finish order: a2 %" G_GUINT64_FORMAT ", a3 %" G_GUINT64_FORMAT
                  ", b1 %" G_GUINT64_FORMAT, a2->finished_order, a3->finished_order,
                  b1->finished_order);
  /* Round robin: B's single request does not wait for both of A's. */
  g_assert_cmpuint (b1->finished_order, <, a3->finished_order);
  g_assert_cmpuint (a2->finished_order, <, a3->finished_order);

  g_dbus_connection_close_sync (a, NULL, NULL);
  g_dbus_connection_close_sync (b, NULL, NULL);
  assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
test_client_quota (void)
{
  /* On the session bus a client is a unique name: each connection has its own quota. */
  GmdTestDaemon *d = gmd_test_daemon_start ("--set", "limits.max_queued_per_client=2", NULL);
  g_autoptr (GDBusConnection) a = gmd_test_daemon_connect_bus (d);
  g_autoptr (GDBusConnection) b = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;

  g_autoptr (GmdTestDbusStream) a1 = gmd_test_dbus_generate (a, "a1", "Write a long story.",
                                                             opts_long ());
  gmd_test_dbus_stream_wait_piece (a1);
  g_autoptr (GmdTestDbusStream) a2 = gmd_test_dbus_generate (a, "a2", "two", opts_short ());
  expect_generate_error (a, gmd_test_text_content ("three"), opts_with_token (opts_short (), "a3"),
                         NULL, "Busy", NULL);
  expect_respond_error (a, gmd_test_text_content ("three"), opts_short (), "Busy", NULL);
  g_autoptr (GmdTestDbusStream) b1 = gmd_test_dbus_generate (b, "b1", "bee", opts_short ());
  request_cancel (a, a1->path, &error);
  g_assert_no_error (error);
  assert_stream_cancelled (a1, "client");
  assert_stream_ok (a2, 16);
  assert_stream_ok (b1, 16);

  g_dbus_connection_close_sync (a, NULL, NULL);
  g_dbus_connection_close_sync (b, NULL, NULL);
  assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* ---- sessions ---------------------------------------------------------------------------- */

typedef struct {
  GPtrArray *reasons;
} ClosedLog;

static void
on_session_closed (GDBusConnection *connection, const char *sender, const char *path,
                   const char *iface, const char *signal, GVariant *params, gpointer user_data)
{
  ClosedLog *log = user_data;
  if (g_str_equal (signal, "Closed"))
    {
      const char *reason;
      g_variant_get (params, "(&s)", &reason);
      g_ptr_array_add (log->reasons, g_strdup (reason));
    }
}

static gboolean closed_flag;

static void
on_closed_flag (GDBusConnection *connection, const char *sender, const char *path,
                const char *iface, const char *signal, GVariant *params, gpointer user_data)
{
  on_session_closed (connection, sender, path, iface, signal, params, user_data);
  closed_flag = TRUE;
}

static guint32
session_uint_property (GDBusConnection *c, const char *path, const char *name)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) r = gmd_test_dbus_call (
      c, path, "org.freedesktop.DBus.Properties", "Get",
      g_variant_new ("(ss)", GMD_SESSION_IFACE, name), "(v)", &error);
  g_assert_no_error (error);
  g_autoptr (GVariant) v = NULL;
  g_variant_get (r, "(v)", &v);
  return g_variant_get_uint32 (v);
}

static GmdTestDbusStream *
session_send (GDBusConnection *c, const char *session_path, const char *token, const char *text,
              GVariant *options)
{
  GmdTestDbusStream *s = gmd_test_dbus_stream_subscribe (c, token);
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) r = gmd_test_dbus_call (
      c, session_path, GMD_SESSION_IFACE, "Send",
      g_variant_new ("(@aa{sv}@a{sv})", gmd_test_text_content (text),
                     opts_with_token (options ? options : g_variant_new_parsed ("@a{sv} {}"), token)),
      "(o)", &error);
  g_assert_no_error (error);
  const char *path;
  g_variant_get (r, "(&o)", &path);
  g_assert_cmpstr (path, ==, s->path);
  return s;
}

static void
test_session (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  g_autoptr (GDBusConnection) c = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;
  ClosedLog log = { g_ptr_array_new_with_free_func (g_free) };
  closed_flag = FALSE;

  g_autofree char *expected = gmd_test_object_path (c, "session", "chat1");
  guint sub = g_dbus_connection_signal_subscribe (c, GMD_BUS_NAME, GMD_SESSION_IFACE, "Closed",
                                                  expected, NULL, G_DBUS_SIGNAL_FLAGS_NONE,
                                                  on_closed_flag, &log, NULL);
  g_autoptr (GVariant) os = gmd_test_dbus_call (
      c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "OpenSession",
      g_variant_new_parsed ("({'handle_token': <'chat1'>, 'system': <'You are terse.'>, "
                            "'temperature': <0.0>, 'max_tokens': <8>},)"),
      "(o)", &error);
  g_assert_no_error (error);
  const char *path;
  g_variant_get (os, "(&o)", &path);
  g_assert_cmpstr (path, ==, expected);
  g_assert_cmpuint (session_uint_property (c, path, "ContextSize"), ==, 4096);
  g_assert_cmpuint (session_uint_property (c, path, "MessageCount"), ==, 0);
  g_assert_cmpuint (session_uint_property (c, path, "ContextUsed"), >, 0);

  g_autoptr (GmdTestDbusStream) t1 = session_send (c, path, "t1", "Hello", NULL);
  assert_stream_ok (t1, 8);
  g_autoptr (GmdTestDbusStream) t2 = session_send (c, path, "t2", "And again?", NULL);
  assert_stream_ok (t2, 8);
  g_assert_cmpuint (gmd_test_summary_uint (t2->summary, "cached_tokens"), >, 0);
  g_assert_cmpuint (gmd_test_summary_uint (t2->summary, "prompt_tokens"), >,
                    gmd_test_summary_uint (t1->summary, "prompt_tokens"));
  g_assert_cmpuint (session_uint_property (c, path, "MessageCount"), ==, 4);
  g_assert_cmpuint (session_uint_property (c, path, "ContextUsed"), ==,
                    gmd_test_summary_uint (t2->summary, "context_used"));

  g_autoptr (GVariant) hist = gmd_test_dbus_call (c, path, GMD_SESSION_IFACE, "GetHistory", NULL,
                                                  "(aa{sv})", &error);
  g_assert_no_error (error);
  g_autoptr (GVariant) messages = g_variant_get_child_value (hist, 0);
  g_assert_cmpuint (g_variant_n_children (messages), ==, 4);
  static const char *const roles[] = { "user", "model", "user", "model" };
  for (guint i = 0; i < 4; i++)
    {
      g_autoptr (GVariant) m = g_variant_get_child_value (messages, i);
      const char *role;
      g_assert_true (g_variant_lookup (m, "role", "&s", &role));
      g_assert_cmpstr (role, ==, roles[i]);
      g_autoptr (GVariant) content = g_variant_lookup_value (m, "content", G_VARIANT_TYPE ("aa{sv}"));
      g_assert_nonnull (content);
      g_autoptr (GVariant) part = g_variant_get_child_value (content, 0);
      const char *text;
      g_assert_true (g_variant_lookup (part, "text", "&s", &text));
      if (i == 0)
        g_assert_cmpstr (text, ==, "Hello");
      if (i == 3)
        g_assert_cmpstr (text, ==, t2->text->str);
    }

  /* Per-turn options: session-level keys are refused in Send; handle_token is required. */
  g_autoptr (GVariant) bad = gmd_test_dbus_call (
      c, path, GMD_SESSION_IFACE, "Send",
      g_variant_new ("(@aa{sv}@a{sv})", gmd_test_text_content ("x"),
                     g_variant_new_parsed ("{'handle_token': <'t9'>, 'system': <'no'>}")),
      "(o)", &error);
  gmd_test_assert_dbus_error (error, "InvalidArgument");
  g_clear_error (&error);
  g_autoptr (GVariant) bad2 = gmd_test_dbus_call (
      c, path, GMD_SESSION_IFACE, "Send",
      g_variant_new ("(@aa{sv}@a{sv})", gmd_test_text_content ("x"), g_variant_new_parsed ("@a{sv} {}")),
      "(o)", &error);
  gmd_test_assert_dbus_error (error, "InvalidArgument");
  g_clear_error (&error);

  /* Truncate: keep the first exchange; the re-asked question gets the same answer. */
  g_autoptr (GVariant) tr_bad = gmd_test_dbus_call (c, path, GMD_SESSION_IFACE, "Truncate",
                                                    g_variant_new ("(u)", 5), "()", &error);
  gmd_test_assert_dbus_error (error, "InvalidArgument");
  g_clear_error (&error);
  g_autoptr (GVariant) tr = gmd_test_dbus_call (c, path, GMD_SESSION_IFACE, "Truncate",
                                                g_variant_new ("(u)", 2), "()", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (session_uint_property (c, path, "MessageCount"), ==, 2);
  g_autoptr (GmdTestDbusStream) t2b = session_send (c, path, "t2", "And again?", NULL);
  assert_stream_ok (t2b, 8);
  g_assert_cmpstr (t2b->text->str, ==, t2->text->str);

  /* A running turn: a second Send is Busy; Close cancels it with session-closed. */
  GVariantDict od;
  g_variant_dict_init (&od, NULL);
  g_variant_dict_insert (&od, "max_tokens", "i", -1);
  g_autoptr (GmdTestDbusStream) running = session_send (c, path, "t3", "Go on.", g_variant_dict_end (&od));
  gmd_test_dbus_stream_wait_piece (running);
  g_autoptr (GVariant) busy = gmd_test_dbus_call (
      c, path, GMD_SESSION_IFACE, "Send",
      g_variant_new ("(@aa{sv}@a{sv})", gmd_test_text_content ("x"),
                     g_variant_new_parsed ("{'handle_token': <'t4'>}")),
      "(o)", &error);
  gmd_test_assert_dbus_error (error, "Busy");
  g_clear_error (&error);
  g_autoptr (GVariant) cl = gmd_test_dbus_call (c, path, GMD_SESSION_IFACE, "Close", NULL, "()", &error);
  g_assert_no_error (error);
  assert_stream_cancelled (running, "session-closed");
  gmd_test_wait_flag (&closed_flag, GMD_TEST_TIMEOUT_MS, "Session.Closed");
  g_assert_cmpuint (log.reasons->len, ==, 1);
  g_assert_cmpstr (g_ptr_array_index (log.reasons, 0), ==, "client");
  g_autoptr (GVariant) after = gmd_test_dbus_call (c, path, GMD_SESSION_IFACE, "GetHistory", NULL,
                                                   "(aa{sv})", &error);
  g_assert_nonnull (error);
  g_clear_error (&error);
  g_dbus_connection_signal_unsubscribe (c, sub);

  /* Without a handle_token the service picks the path, under our sender. */
  g_autoptr (GVariant) os2 = gmd_test_dbus_call (c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "OpenSession",
                                                 g_variant_new_parsed ("(@a{sv} {},)"), "(o)", &error);
  g_assert_no_error (error);
  const char *path2;
  g_variant_get (os2, "(&o)", &path2);
  g_autofree char *prefix = gmd_test_object_path (c, "session", "");
  g_assert_true (g_str_has_prefix (path2, prefix));
  /* A history given at open is the start of the conversation. */
  g_autoptr (GVariant) os3 = gmd_test_dbus_call (
      c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "OpenSession",
      g_variant_new_parsed ("({'handle_token': <'chat3'>, 'history': <[{'role': <'user'>, "
                            "'text': <'Hi'>}, {'role': <'model'>, 'text': <'Hello!'>}]>},)"),
      "(o)", &error);
  g_assert_no_error (error);
  const char *path3;
  g_variant_get (os3, "(&o)", &path3);
  g_assert_cmpuint (session_uint_property (c, path3, "MessageCount"), ==, 2);

  g_ptr_array_unref (log.reasons);
  g_dbus_connection_close_sync (c, NULL, NULL);
  assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

/* ---- administration, shutdown ------------------------------------------------------------ */

typedef struct {
  GPtrArray *states;
  gboolean loaded;    /* a 'loaded' notification came (reset by the test) */
} LoadStateLog;

static void
on_properties_changed (GDBusConnection *connection, const char *sender, const char *path,
                       const char *iface, const char *signal, GVariant *params, gpointer user_data)
{
  LoadStateLog *log = user_data;
  const char *changed_iface;
  g_autoptr (GVariant) changed = NULL;
  g_autoptr (GVariant) invalidated = NULL;
  g_variant_get (params, "(&s@a{sv}@as)", &changed_iface, &changed, &invalidated);
  const char *state;
  if (g_str_equal (changed_iface, GMD_MANAGER_IFACE) &&
      g_variant_lookup (changed, "LoadState", "&s", &state))
    {
      g_ptr_array_add (log->states, g_strdup (state));
      if (g_str_equal (state, "loaded"))
        log->loaded = TRUE;
    }
}

static void
test_admin (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start_default ();
  g_autoptr (GDBusConnection) c = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;
  LoadStateLog log = { g_ptr_array_new_with_free_func (g_free), FALSE };
  guint sub = g_dbus_connection_signal_subscribe (
      c, GMD_BUS_NAME, "org.freedesktop.DBus.Properties", "PropertiesChanged", GMD_MANAGER_PATH,
      NULL, G_DBUS_SIGNAL_FLAGS_NONE, on_properties_changed, &log, NULL);

  /* A bad LoadModel while a model is loaded leaves it in place. */
  g_autofree char *not_gguf = g_build_filename (gmd_test_daemon_tmpdir (d), "not-a-model.gguf", NULL);
  g_assert_true (g_file_set_contents (not_gguf, "GGUF? no, just text", -1, NULL));
  g_autoptr (GVariant) bad = gmd_test_dbus_call (
      c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "LoadModel",
      g_variant_new ("(ss@a{sv})", not_gguf, "", g_variant_new_parsed ("@a{sv} {}")), "()", &error);
  gmd_test_assert_dbus_error (error, "InvalidArgument");
  g_assert_nonnull (strstr (error->message, "not-a-model.gguf"));
  g_clear_error (&error);
  g_autoptr (GVariant) rel = gmd_test_dbus_call (
      c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "LoadModel",
      g_variant_new_parsed ("('relative/model.gguf', '', @a{sv} {})"), "()", &error);
  gmd_test_assert_dbus_error (error, "InvalidArgument");
  g_clear_error (&error);
  g_autoptr (GVariant) still = gmd_test_manager_property (c, "LoadState");
  g_assert_cmpstr (g_variant_get_string (still, NULL), ==, "loaded");
  {
    g_autofree char *t = call_respond (c, gmd_test_text_content ("Still?"), opts_short (), NULL, &error);
    g_assert_no_error (error);
  }

  /* A running request and a session: unloading cancels one and closes the other. */
  ClosedLog closed = { g_ptr_array_new_with_free_func (g_free) };
  g_autofree char *spath = gmd_test_object_path (c, "session", "adm");
  closed_flag = FALSE;
  guint csub = g_dbus_connection_signal_subscribe (c, GMD_BUS_NAME, GMD_SESSION_IFACE, "Closed",
                                                   spath, NULL, G_DBUS_SIGNAL_FLAGS_NONE,
                                                   on_closed_flag, &closed, NULL);
  g_autoptr (GVariant) os = gmd_test_dbus_call (c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "OpenSession",
                                                g_variant_new_parsed ("({'handle_token': <'adm'>},)"),
                                                "(o)", &error);
  g_assert_no_error (error);
  g_autoptr (GmdTestDbusStream) s = gmd_test_dbus_generate (c, "adm1", "Write a long story.",
                                                            opts_long ());
  gmd_test_dbus_stream_wait_piece (s);

  g_autoptr (GVariant) un = gmd_test_dbus_call (c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "UnloadModel",
                                                NULL, "()", &error);
  g_assert_no_error (error);
  assert_stream_cancelled (s, "admin");
  gmd_test_wait_flag (&closed_flag, GMD_TEST_TIMEOUT_MS, "Session.Closed after UnloadModel");
  g_assert_cmpstr (g_ptr_array_index (closed.reasons, 0), ==, "model-changed");
  g_dbus_connection_signal_unsubscribe (c, csub);
  g_autoptr (GVariant) ls = gmd_test_manager_property (c, "LoadState");
  g_assert_cmpstr (g_variant_get_string (ls, NULL), ==, "unloaded");
  g_autoptr (GVariant) name = gmd_test_manager_property (c, "ModelName");
  g_assert_cmpstr (g_variant_get_string (name, NULL), ==, "");
  expect_respond_error (c, gmd_test_text_content ("anyone?"), opts_short (), "ModelNotLoaded", NULL);
  expect_generate_error (c, gmd_test_text_content ("anyone?"), opts_with_token (opts_short (), "x"),
                         NULL, "ModelNotLoaded", NULL);
  g_autoptr (GVariant) os2 = gmd_test_dbus_call (c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "OpenSession",
                                                 g_variant_new_parsed ("(@a{sv} {},)"), "(o)", &error);
  gmd_test_assert_dbus_error (error, "ModelNotLoaded");
  g_clear_error (&error);

  /* A bad file while unloaded: refused (LoadState may say failed). */
  g_autoptr (GVariant) bad2 = gmd_test_dbus_call (
      c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "LoadModel",
      g_variant_new ("(ss@a{sv})", not_gguf, "", g_variant_new_parsed ("@a{sv} {}")), "()", &error);
  gmd_test_assert_dbus_error (error, "InvalidArgument");
  g_clear_error (&error);
  g_remove (not_gguf);
  expect_respond_error (c, gmd_test_text_content ("anyone?"), opts_short (), "ModelNotLoaded", NULL);

  /* Load the tiny model again: it serves as before. */
  while (g_main_context_iteration (NULL, FALSE))
    ;
  guint states_before_load = log.states->len;
  log.loaded = FALSE;
  g_autoptr (GVariant) ld = gmd_test_dbus_call (
      c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "LoadModel",
      g_variant_new ("(ss@a{sv})", gmd_test_tiny_model (), "",
                     g_variant_new_parsed ("{'context_size': <uint32 2048>}")),
      "()", &error);
  g_assert_no_error (error);
  g_autoptr (GVariant) ls2 = gmd_test_manager_property (c, "LoadState");
  g_assert_cmpstr (g_variant_get_string (ls2, NULL), ==, "loaded");
  g_autoptr (GVariant) ctx = gmd_test_manager_property (c, "ContextSize");
  g_assert_cmpuint (g_variant_get_uint32 (ctx), ==, 2048);
  g_autoptr (GVariant) summary = NULL;
  g_autofree char *text = call_respond (c, gmd_test_text_content ("Back?"), opts_short (), &summary,
                                        &error);
  g_assert_no_error (error);
  g_assert_cmpuint (gmd_test_summary_uint (summary, "context_size"), ==, 2048);

  /* Notifications: unloaded at UnloadModel, then loading → loaded for the good load. */
  gmd_test_wait_flag (&log.loaded, GMD_TEST_TIMEOUT_MS, "LoadState 'loaded' notification");
  g_autoptr (GString) seq = g_string_new (NULL);
  for (guint i = 0; i < log.states->len; i++)
    g_string_append_printf (seq, "%s%s", i ? " " : "", (char *) g_ptr_array_index (log.states, i));
  g_test_message ("LoadState changes: %s", seq->str);
  g_assert_nonnull (strstr (seq->str, "unloaded"));
  g_assert_cmpuint (log.states->len, ==, states_before_load + 2);
  g_assert_cmpstr (g_ptr_array_index (log.states, states_before_load), ==, "loading");
  g_assert_cmpstr (g_ptr_array_index (log.states, states_before_load + 1), ==, "loaded");
  g_dbus_connection_signal_unsubscribe (c, sub);
  g_ptr_array_unref (log.states);
  g_ptr_array_unref (closed.reasons);

  /* A LoadModel of the default context brings the rest of the suite's expectations back. */
  g_autoptr (GVariant) ld2 = gmd_test_dbus_call (
      c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "LoadModel",
      g_variant_new ("(ss@a{sv})", "", "", g_variant_new_parsed ("@a{sv} {}")), "()", &error);
  g_assert_no_error (error);
  g_autoptr (GVariant) ctx2 = gmd_test_manager_property (c, "ContextSize");
  g_assert_cmpuint (g_variant_get_uint32 (ctx2), ==, 4096);

  g_dbus_connection_close_sync (c, NULL, NULL);
  assert_still_serves (d);
  gmd_test_daemon_stop (d);
}

static void
test_shutdown (void)
{
  GmdTestDaemon *d = gmd_test_daemon_start ("--set", "service.shutdown_grace=0", NULL);
  g_autoptr (GDBusConnection) c = gmd_test_daemon_connect_bus (d);
  g_autoptr (GError) error = NULL;
  ClosedLog closed = { g_ptr_array_new_with_free_func (g_free) };
  g_autofree char *spath = gmd_test_object_path (c, "session", "sd");
  closed_flag = FALSE;
  guint csub = g_dbus_connection_signal_subscribe (c, GMD_BUS_NAME, GMD_SESSION_IFACE, "Closed",
                                                   spath, NULL, G_DBUS_SIGNAL_FLAGS_NONE,
                                                   on_closed_flag, &closed, NULL);
  g_autoptr (GVariant) os = gmd_test_dbus_call (c, GMD_MANAGER_PATH, GMD_MANAGER_IFACE, "OpenSession",
                                                g_variant_new_parsed ("({'handle_token': <'sd'>},)"),
                                                "(o)", &error);
  g_assert_no_error (error);
  g_autoptr (GmdTestDbusStream) s = gmd_test_dbus_generate (c, "run", "Write a long story.", opts_long ());
  gmd_test_dbus_stream_wait_piece (s);
  g_autoptr (GmdTestDbusStream) q = gmd_test_dbus_generate (c, "wait", "queued", opts_short ());

  gmd_test_daemon_signal (d, SIGTERM);
  assert_stream_cancelled (s, "shutdown");
  assert_stream_cancelled (q, "shutdown");
  gmd_test_wait_flag (&closed_flag, GMD_TEST_TIMEOUT_MS, "Session.Closed at shutdown");
  g_assert_cmpstr (g_ptr_array_index (closed.reasons, 0), ==, "shutdown");
  g_dbus_connection_signal_unsubscribe (c, csub);
  g_ptr_array_unref (closed.reasons);

  gmd_test_daemon_wait_exit_ok (d);
  g_dbus_connection_close_sync (c, NULL, NULL);
  gmd_test_daemon_stop (d);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  signal (SIGPIPE, SIG_IGN);

  g_test_add_func ("/dbus/properties", test_properties);
  g_test_add_func ("/dbus/respond", test_respond);
  g_test_add_func ("/dbus/generate-stream", test_generate_stream);
  g_test_add_func ("/dbus/cancel", test_cancel);
  g_test_add_func ("/dbus/respond-cancel", test_respond_cancel);
  g_test_add_func ("/dbus/not-owner", test_not_owner);
  g_test_add_func ("/dbus/invalid-arguments", test_invalid_arguments);
  g_test_add_func ("/dbus/window-ranges", test_window_ranges);
  g_test_add_func ("/dbus/media", test_media);
  g_test_add_func ("/dbus/media-fds-off-loop", test_media_fds_off_loop);
  g_test_add_func ("/dbus/client-vanishes", test_client_vanishes);
  g_test_add_func ("/dbus/fairness", test_fairness);
  g_test_add_func ("/dbus/client-quota", test_client_quota);
  g_test_add_func ("/dbus/session", test_session);
  g_test_add_func ("/dbus/admin", test_admin);
  g_test_add_func ("/dbus/shutdown", test_shutdown);
  return g_test_run ();
}
