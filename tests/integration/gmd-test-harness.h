/* gmd-test-harness.h — shared pieces of the integration tests: start the real gemmad binary
 * on a private D-Bus session bus and a temporary socket, a raw socket-protocol client, and
 * small D-Bus helpers. Everything fails the running test (g_assert/g_error) on a broken
 * expectation or a timeout: tests never wait forever and never sleep to synchronize.
 *
 * Environment (set by tests/integration/meson.build):
 *   GEMMAD_BIN          the gemmad binary under test
 *   GEMMACTL_BIN        the gemmactl binary under test
 *   GEMMAD_TINY_MODEL   the shipped tiny model (BUILD/tools/gemma4-tiny.gguf)
 *   GDBUS_BIN           gdbus, for the documented command lines (empty: those are skipped)
 *   GMD_DBUS_DAEMON     dbus-daemon (default: from PATH)
 * Debugging knobs (docs/testing.md):
 *   GMD_TEST_DAEMON_VERBOSE=1  start gemmad with --verbose
 *   GMD_TEST_QUIET=1           do not echo gemmad's stderr into the test log */
#pragma once

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* Generous per-wait limits: a hang fails the test instead of blocking the suite; under
 * ASan everything runs several times slower. */
#define GMD_TEST_READY_TIMEOUT_MS 60000
#define GMD_TEST_TIMEOUT_MS 60000

const char *gmd_test_env (const char *name);     /* the variable's value, or fails */
const char *gmd_test_tiny_model (void);

/* ---- the daemon ------------------------------------------------------------------- */

typedef struct _GmdTestDaemon GmdTestDaemon;

/* Starts `gemmad --session --model TINY --socket TMP/gemmad.sock --threads 1` plus the
 * given extra arguments (NULL-terminated), on a fresh private session bus (its own
 * dbus-daemon), and waits for "gemmad: ready" on its stderr. */
GmdTestDaemon *gmd_test_daemon_start (const char *first_extra_arg, ...) G_GNUC_NULL_TERMINATED;
GmdTestDaemon *gmd_test_daemon_start_default (void);

const char *gmd_test_daemon_socket_path (GmdTestDaemon *daemon);
const char *gmd_test_daemon_bus_address (GmdTestDaemon *daemon);
const char *gmd_test_daemon_tmpdir (GmdTestDaemon *daemon);

/* A new private connection to the test bus (registered: it has a unique name). */
GDBusConnection *gmd_test_daemon_connect_bus (GmdTestDaemon *daemon);

/* Sends a signal without waiting. */
void gmd_test_daemon_signal (GmdTestDaemon *daemon, int signum);
/* Waits for the process to exit; asserts a clean exit: status 0, and no sanitizer report
 * or GLib critical in its output. */
void gmd_test_daemon_wait_exit_ok (GmdTestDaemon *daemon);
/* SIGTERM, then gmd_test_daemon_wait_exit_ok, then frees (bus down, tmpdir removed). */
void gmd_test_daemon_stop (GmdTestDaemon *daemon);

/* ---- raw socket client (docs/protocol.md) ----------------------------------------- */

typedef struct _GmdTestClient GmdTestClient;

/* Connects (no hello). */
GmdTestClient *gmd_test_client_connect (const char *socket_path);
/* Connects and completes hello (version 1). */
GmdTestClient *gmd_test_client_new (GmdTestDaemon *daemon);
/* Sends hello (version 1), asserts success; returns the result (owned by the client). */
JsonObject *gmd_test_client_hello (GmdTestClient *client);
void gmd_test_client_free (GmdTestClient *client);

/* Sends line + "\n" (line must not contain a newline). With fds: one sendmsg() whose data
 * is the whole line with all fds in one SCM_RIGHTS message (protocol §5). */
void gmd_test_client_send (GmdTestClient *client, const char *line);
void gmd_test_client_send_fds (GmdTestClient *client, const char *line,
                               const int *fds, guint n_fds);
void gmd_test_client_sendf (GmdTestClient *client, const char *format, ...) G_GNUC_PRINTF (2, 3);
/* Sends raw bytes as they are (for malformed input). */
void gmd_test_client_send_raw (GmdTestClient *client, const void *data, gsize len);
void gmd_test_client_shutdown_write (GmdTestClient *client);

/* The next message from the server, buffered ones first (fails on EOF or timeout). */
JsonObject *gmd_test_client_read (GmdTestClient *client);
/* The next message whose "id" serializes to id_json ("1", "\"a\"", "null"); messages of
 * other ids are kept for later reads. */
JsonObject *gmd_test_client_read_id (GmdTestClient *client, const char *id_json);
/* Asserts that the server closes the connection (EOF) with no message left; fails on a
 * timeout or on an unexpected message. */
void gmd_test_client_expect_eof (GmdTestClient *client);
/* Sends a request and waits for its terminal result/error; returns that message. */
JsonObject *gmd_test_client_call (GmdTestClient *client, const char *id_json,
                                  const char *format, ...) G_GNUC_PRINTF (3, 4);
/* Asserts msg is {"id":…, "error":{"code": code …}}; returns the error object. */
JsonObject *gmd_test_assert_error (JsonObject *msg, const char *code);
/* Asserts msg is a result; returns the result object. */
JsonObject *gmd_test_assert_result (JsonObject *msg);

/* One stream (generate, session.send) as the client saw it; checked for the protocol's
 * invariants while collected: "accepted" first, seq from 0 without gaps, piece text never
 * empty, exactly one terminal message, done.pieces equal to the pieces seen. */
typedef struct {
  char *id_json;
  char *request;          /* handle from "accepted", NULL if rejected */
  GString *text;          /* answer pieces concatenated */
  GString *thinking;
  guint n_pieces;         /* piece + thinking events */
  GPtrArray *states;      /* char*: progress states in order */
  JsonObject *done;       /* the done event, or NULL */
  JsonObject *error;      /* the error object of a rejected request, or NULL */
} GmdTestStream;

void gmd_test_stream_free (GmdTestStream *stream);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GmdTestStream, gmd_test_stream_free)

/* Reads the stream of request id_json to its end. */
GmdTestStream *gmd_test_client_collect (GmdTestClient *client, const char *id_json);
/* Reads the stream of request id_json until its first piece event (asserting "accepted"
 * came first); the rest can be read later with gmd_test_client_collect_rest. */
GmdTestStream *gmd_test_client_collect_until_piece (GmdTestClient *client, const char *id_json);
void gmd_test_client_collect_rest (GmdTestClient *client, GmdTestStream *stream);
/* Reads until "accepted" (fails on an error). */
GmdTestStream *gmd_test_client_collect_until_accepted (GmdTestClient *client,
                                                       const char *id_json);

/* Sends a generate with a prompt and options (a JSON object text, may be NULL) and
 * collects its stream. */
GmdTestStream *gmd_test_client_generate (GmdTestClient *client, const char *id_json,
                                         const char *prompt, const char *options_json);
/* Summary field helpers of a done event. */
gint64 gmd_test_done_int (GmdTestStream *stream, const char *key);
const char *gmd_test_done_str (GmdTestStream *stream, const char *key);

/* A fresh connection makes a normal greedy request and checks that it completes with the
 * right shape and the same text as the first such check of the test process (every daemon
 * runs the same binary and model). Used after every abuse. */
void gmd_test_assert_still_serves (GmdTestDaemon *daemon);

/* JSON string literal for s (with quotes), for building request lines. */
char *gmd_test_json_string (const char *s);

/* ---- D-Bus helpers ---------------------------------------------------------------- */

#define GMD_BUS_NAME "org.gemmad.Gemmad1"
#define GMD_MANAGER_PATH "/org/gemmad/Gemmad1"
#define GMD_MANAGER_IFACE "org.gemmad.Gemmad1.Manager"
#define GMD_REQUEST_IFACE "org.gemmad.Gemmad1.Request"
#define GMD_SESSION_IFACE "org.gemmad.Gemmad1.Session"
#define GMD_ERROR_PREFIX "org.gemmad.Gemmad1.Error."

/* /org/gemmad/Gemmad1/<kind>/SENDER/TOKEN for this connection. */
char *gmd_test_object_path (GDBusConnection *connection, const char *kind, const char *token);

/* A text-only content aa{sv} (floating). */
GVariant *gmd_test_text_content (const char *text);

/* Asserts error is a remote D-Bus error with the given name (a short name like
 * "InvalidArgument" gets the gemmad prefix). */
void gmd_test_assert_dbus_error (const GError *error, const char *name);

/* A Request object's signals as the owner received them. */
typedef struct {
  GDBusConnection *connection;
  char *path;
  guint subscription;
  GString *text;
  GString *thinking;
  guint n_pieces;
  gboolean seq_error;      /* a gap, a repeat, or a signal after Finished */
  GPtrArray *states;       /* char*: Progress states */
  GVariant *summary;       /* Finished's a{sv}, or NULL while running */
  guint n_finished;
  guint64 finished_order;  /* global arrival counter value at Finished */
} GmdTestDbusStream;

/* Subscribes on the predictable path of token (step 1-3 of the recipe). */
GmdTestDbusStream *gmd_test_dbus_stream_subscribe (GDBusConnection *connection,
                                                   const char *token);
void gmd_test_dbus_stream_free (GmdTestDbusStream *stream);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GmdTestDbusStream, gmd_test_dbus_stream_free)

/* The recipe: subscribe, call Generate with handle_token = token plus the given options
 * (a{sv}, floating or NULL), check the returned path. Fails the test on an error reply. */
GmdTestDbusStream *gmd_test_dbus_generate (GDBusConnection *connection, const char *token,
                                           const char *prompt, GVariant *options);
/* Iterates the default main context until Finished (or timeout → fail). */
void gmd_test_dbus_stream_wait_finished (GmdTestDbusStream *stream);
/* Iterates until at least one Piece arrived. */
void gmd_test_dbus_stream_wait_piece (GmdTestDbusStream *stream);
const char *gmd_test_summary_str (GVariant *summary, const char *key);
guint64 gmd_test_summary_uint (GVariant *summary, const char *key);

/* Iterates the default main context until *flag becomes TRUE, failing after timeout_ms. */
void gmd_test_wait_flag (const gboolean *flag, guint timeout_ms, const char *what);

/* Calls a method synchronously on connection (with a long timeout); returns the reply or
 * NULL with error. */
GVariant *gmd_test_dbus_call (GDBusConnection *connection, const char *path,
                              const char *iface, const char *method, GVariant *params,
                              const char *reply_type, GError **error);
/* Manager property via org.freedesktop.DBus.Properties.Get (unboxed). */
GVariant *gmd_test_manager_property (GDBusConnection *connection, const char *name);

/* ---- small media samples ---------------------------------------------------------- */

/* A 1×1 PNG and a short WAV (valid headers), for "format recognised, modality absent". */
GBytes *gmd_test_png_bytes (void);
GBytes *gmd_test_wav_bytes (void);
/* TRUE when Modalities (socket info or D-Bus property) includes modality. */
gboolean gmd_test_strv_contains (GVariant *as, const char *s);
/* The same for a JSON array member of o (which must exist). */
gboolean gmd_test_json_strv_contains (JsonObject *o, const char *member, const char *s);

/* The whole file env_dir/name (env_dir: a GEMMAD_TEST_* variable naming a folder). */
GBytes *gmd_test_data_file (const char *env_dir, const char *name);
/* How many progress events of a stream had this state ("encoding", "prefill"). */
guint gmd_test_count_states (GPtrArray *states, const char *state);

/* A temporary regular file with the given bytes, opened with flags; unlinked at once. */
int gmd_test_temp_fd (GmdTestDaemon *daemon, const void *data, gsize len, int flags);

/* TRUE when every read end of the pipe whose write end is write_fd is closed (a write
 * gets EPIPE). Polls for up to timeout_ms: the server closes fds as it handles a line. */
gboolean gmd_test_pipe_reader_closed (int write_fd, guint timeout_ms);

G_END_DECLS
