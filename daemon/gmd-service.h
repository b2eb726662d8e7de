/* gmd-service.h — the service as both front ends (D-Bus, socket) see it.
 *
 * GmdService owns the configuration, the model lifetime (load state), the request queue
 * with round-robin fairness and per-client limits, the chat sessions and the engine thread
 * (gmd-engine.h) that does all computing. Everything here is called from, and every
 * callback is invoked in, the GMainContext that was the thread default when the service
 * was created (the main loop). Nothing here blocks on computation.
 *
 * Lifetimes: front ends own the objects they hand out (a D-Bus Request object, a socket
 * stream) and hold a GmdRequest reference. A request ends exactly once with the sink's
 * finished() (never for abandoned requests); after that no callback comes. */
#pragma once

#include <glib.h>
#include <gio/gio.h>
#include <sys/types.h>

#include "gmd-config.h"
#include "gmd-content.h"
#include "gmd-error.h"
#include "gmd-options.h"

G_BEGIN_DECLS

typedef struct _GmdService GmdService;
typedef struct _GmdClient GmdClient;
typedef struct _GmdRequest GmdRequest;
typedef struct _GmdSession GmdSession;

/* ---- model state ------------------------------------------------------------------ */

typedef enum {
  GMD_LOAD_UNLOADED,
  GMD_LOAD_LOADING,
  GMD_LOAD_LOADED,
  GMD_LOAD_FAILED,
} GmdLoadState;

const char *gmd_load_state_name (GmdLoadState s);   /* "unloaded", "loading", … */

/* Snapshot of what the Manager properties / socket "info" show. Strings owned by the
 * service, valid until the next change notification. */
typedef struct {
  GmdLoadState load_state;
  const char *load_error;       /* "" unless FAILED */
  const char *model_name;       /* "" when none */
  const char *model_path;       /* "" when none */
  const char *architecture;     /* "gemma4" */
  const char *quantization;     /* "Q8_0", "mixed", … */
  guint32 context_size;         /* window of one request/session */
  guint32 n_ctx_train;
  guint64 n_params;
  guint64 file_bytes;
  const char *const *modalities;  /* "text", + "image"/"audio" when an mmproj provides them */
  const char *const *media_types; /* MIME types accepted for the available modalities */
  guint32 queue_length;         /* waiting requests (all clients) */
  guint32 active_requests;      /* running in the engine (0 or 1) */
  guint32 open_sessions;
  guint32 threads;
} GmdServiceInfo;

/* ---- creation, shutdown ----------------------------------------------------------- */

/* Takes a copy of config, starts the engine thread and, if config->model_path is set,
 * starts loading it (LoadState "loading"; requests submitted meanwhile wait). */
GmdService *gmd_service_new (const GmdConfig *config, GError **error);
/* Cancels whatever runs and joins the threads, without calling any callback. Requests,
 * sessions and clients that front ends still hold stay valid (finished, closed) until
 * they drop them. Not from inside a callback of this service. */
void gmd_service_free (GmdService *service);

const GmdConfig *gmd_service_get_config (GmdService *service);
const GmdServiceInfo *gmd_service_get_info (GmdService *service);
/* DefaultOptions property value (config [defaults]). */
const GmdOptions *gmd_service_get_defaults (GmdService *service);

/* Called (in the main context) whenever something in GmdServiceInfo changed. */
typedef void (*GmdServiceChangedFunc) (GmdService *service, gpointer user_data);
guint gmd_service_add_changed_handler (GmdService *service, GmdServiceChangedFunc func,
                                       gpointer user_data);
void gmd_service_remove_changed_handler (GmdService *service, guint id);

/* Blocks until the first model load has ended (loaded or failed) while iterating the main
 * context — for startup, before READY=1 is sent. */
void gmd_service_wait_loaded (GmdService *service);

/* Stops accepting (new submissions get BUSY "service is stopping"), ends queued requests
 * with cancelled/shutdown, lets the running one finish for up to grace_seconds, then
 * cancels it, closes sessions with "shutdown", and calls callback once the engine is idle. */
typedef void (*GmdShutdownDoneFunc) (GmdService *service, gpointer user_data);
void gmd_service_shutdown (GmdService *service, guint grace_seconds,
                           GmdShutdownDoneFunc callback, gpointer user_data);
gboolean gmd_service_is_stopping (GmdService *service);

/* ---- clients ----------------------------------------------------------------------- */

/* A client is the unit of limits and fairness: a uid on the system bus and the socket,
 * a unique bus name on the session bus (see docs/dbus-api.md §9). Same key → same object
 * (ref'd). */
GmdClient *gmd_service_get_client (GmdService *service, const char *key, uid_t uid);
GmdClient *gmd_client_ref (GmdClient *client);
void gmd_client_unref (GmdClient *client);
uid_t gmd_client_get_uid (GmdClient *client);
const char *gmd_client_get_key (GmdClient *client);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GmdClient, gmd_client_unref)

/* ---- requests ---------------------------------------------------------------------- */

typedef enum {
  GMD_STATE_QUEUED,
  GMD_STATE_LOADING,
  GMD_STATE_ENCODING,
  GMD_STATE_PREFILL,
  GMD_STATE_GENERATING,
  GMD_STATE_FINISHED,
} GmdRequestState;

const char *gmd_request_state_name (GmdRequestState s);  /* "queued", "loading", "encoding",
                                                            "prefill", "generating", "finished" */

typedef struct {
  GmdRequestState state;
  guint32 queue_position;     /* QUEUED: 0 = next */
  guint32 prompt_done;        /* PREFILL: positions; ENCODING: images and 30 s audio
                                 clips encoded (the front ends call them
                                 media_done/media_total) */
  guint32 prompt_total;       /* PREFILL: positions; ENCODING: images and audio clips to
                                 encode */
} GmdProgress;

typedef enum {
  GMD_STOP_EOG,
  GMD_STOP_STOP_STRING,
  GMD_STOP_MAX_TOKENS,
  GMD_STOP_CONTEXT_FULL,
  GMD_STOP_CANCELLED,
  GMD_STOP_ERROR,
} GmdStopReason;

const char *gmd_stop_reason_name (GmdStopReason r);  /* "eog", "stop_string", "max_tokens",
                                                         "context_full", "cancelled", "error" */

typedef enum {
  GMD_CANCEL_NONE,
  GMD_CANCEL_CLIENT,
  GMD_CANCEL_SHUTDOWN,
  GMD_CANCEL_ADMIN,
  GMD_CANCEL_SESSION_CLOSED,
} GmdCancelReason;

const char *gmd_cancel_reason_name (GmdCancelReason r); /* "client", "shutdown", "admin",
                                                            "session-closed" */

/* The Finished summary (docs/dbus-api.md §6). */
typedef struct {
  GmdStopReason stop_reason;
  guint32 prompt_tokens, cached_tokens, generated_tokens, thinking_tokens, pieces;
  guint32 context_used, context_size;
  guint64 seed;
  double queue_seconds, load_seconds, encode_seconds, prefill_seconds, decode_seconds,
      total_seconds;
  const char *matched_stop;     /* STOP_STRING */
  GmdCancelReason cancel_reason;/* CANCELLED */
  GmdErrorCode error_code;      /* ERROR */
  const char *error_message;    /* ERROR */
} GmdSummary;

/* How a front end hears about its request; called in the main context, never from inside
 * gmd_service_submit(). The FIRST callback decides acceptance: progress() means the request
 * was accepted (queued); finished() with stop_reason ERROR before any progress() means it
 * was rejected after the off-loop checks (reply with that error: on D-Bus the Generate
 * reply is sent only then, on the socket "accepted" only then). piece texts are
 * valid UTF-8, never empty, already merged to at most ~50 calls per second; seq counts
 * answer and thinking pieces together from 0. */
typedef struct {
  void (*progress) (GmdRequest *request, const GmdProgress *progress, gpointer user_data);
  void (*piece) (GmdRequest *request, guint32 seq, gboolean thinking, const char *text,
                 gpointer user_data);
  void (*finished) (GmdRequest *request, const GmdSummary *summary, gpointer user_data);
} GmdRequestSink;

/* Validates and queues a generation. parts: GmdPart* (the array is taken, with its
 * free func); options: taken. session: NULL for a one-shot request, else a turn of that
 * session (its options are the defaults of the turn's).
 *
 * What can be checked at once is checked before returning (BUSY when stopping, the queue
 * or the client's quota is full, the session has a running turn; LIMIT_EXCEEDED for text/
 * media/parts caps; UNSUPPORTED_MEDIA for unknown formats or a missing modality;
 * MODEL_NOT_LOADED), so both front ends can answer synchronously. Prompt tokenization and
 * the context check run off the main loop: CONTEXT_EXCEEDED/LIMIT_EXCEEDED (prompt tokens)
 * then end the request through finished() with stop_reason ERROR *before any progress*;
 * front ends that must reply with an error (Respond, and streams that have not yet sent
 * "accepted") see that in the summary. Returns a new reference, or NULL with error set. */
GmdRequest *gmd_service_submit (GmdService *service, GmdClient *client, GmdSession *session,
                                GPtrArray *parts, GmdOptions *options,
                                const GmdRequestSink *sink, gpointer user_data,
                                GError **error);

GmdRequest *gmd_request_ref (GmdRequest *request);
void gmd_request_unref (GmdRequest *request);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GmdRequest, gmd_request_unref)

/* Server-wide handle "r-<n>" (socket cancel/list). */
const char *gmd_request_get_handle (GmdRequest *request);
GmdClient *gmd_request_get_client (GmdRequest *request);
GmdSession *gmd_request_get_session (GmdRequest *request);   /* NULL for one-shot */
GmdRequestState gmd_request_get_state (GmdRequest *request);
gboolean gmd_request_is_finished (GmdRequest *request);

/* Cancels: a queued request ends at once, a running one at the next token or prefill layer.
 * It then ends with finished() (stop_reason CANCELLED, this reason). Returns FALSE when
 * the request had already finished. finished() never comes from inside this call (it is
 * delivered from the main loop). A request not yet accepted (no progress() yet) ends as
 * rejected: finished() with stop_reason ERROR and error_code GMD_ERROR_CANCELLED. */
gboolean gmd_request_cancel (GmdRequest *request, GmdCancelReason reason);
/* The owner is gone: cancel, and never call the sink again (no finished()). */
void gmd_request_abandon (GmdRequest *request);

/* An unfinished request by handle, or NULL. The service's pointer, no new reference:
 * take one (gmd_request_ref) to keep it past the current callback. */
GmdRequest *gmd_service_find_request (GmdService *service, const char *handle);
/* Unfinished requests of uid (every uid when uid == 0): GPtrArray of refs. */
GPtrArray *gmd_service_list_requests (GmdService *service, uid_t uid);

/* ---- chat sessions ----------------------------------------------------------------- */

typedef enum {
  GMD_CLOSE_CLIENT,
  GMD_CLOSE_IDLE,
  GMD_CLOSE_MODEL_CHANGED,
  GMD_CLOSE_SHUTDOWN,
} GmdCloseReason;

const char *gmd_close_reason_name (GmdCloseReason r);  /* "client", "idle", "model-changed",
                                                           "shutdown" */

/* Called once when the service closes a session on its own (idle, model change, shutdown),
 * not after gmd_session_close(). */
typedef void (*GmdSessionClosedFunc) (GmdSession *session, GmdCloseReason reason,
                                      gpointer user_data);

/* Opens a session for client. options (taken): system, thinking, history, context_size
 * and sampling defaults. LIMIT_EXCEEDED past max_sessions_per_client or text caps;
 * CONTEXT_EXCEEDED when system + history alone do not fit; MODEL_NOT_LOADED. */
GmdSession *gmd_service_open_session (GmdService *service, GmdClient *client,
                                      GmdOptions *options, GmdSessionClosedFunc closed,
                                      gpointer user_data, GError **error);

GmdSession *gmd_session_ref (GmdSession *session);
void gmd_session_unref (GmdSession *session);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GmdSession, gmd_session_unref)

/* Closes by the client: a running turn is cancelled (session-closed), the cache freed.
 * The closed callback is not called. Idempotent. */
void gmd_session_close (GmdSession *session);
gboolean gmd_session_is_closed (GmdSession *session);
GmdClient *gmd_session_get_client (GmdSession *session);

guint32 gmd_session_get_context_size (GmdSession *session);
guint32 gmd_session_get_context_used (GmdSession *session);  /* positions of the rendered
                                                                  conversation so far */
guint32 gmd_session_get_message_count (GmdSession *session);
gboolean gmd_session_get_thinking (GmdSession *session);
gboolean gmd_session_has_running_turn (GmdSession *session);

/* The kept messages (system prompt excluded), GmdMessage* (caller frees the array). */
GPtrArray *gmd_session_get_history (GmdSession *session);
/* Keeps the first keep messages. INVALID_ARGUMENT when keep > message count; BUSY while a
 * turn runs. */
gboolean gmd_session_truncate (GmdSession *session, guint32 keep, GError **error);

/* ---- administration ---------------------------------------------------------------- */

/* Re-reads config->source; if the model paths or context size/threads changed, switches
 * models as gmd_service_load_model does. Limits/defaults apply to new requests. */
gboolean gmd_service_reload_config (GmdService *service, GError **error);

/* Loads model_path (NULL/"" = the configured one) and mmproj (NULL/"" = none) with
 * context_size/threads (0 = configured). drain: let queued work finish on the old model
 * first; else cancel it (admin). Sessions close with "model-changed". The call returns at
 * once (LoadState "loading"); callback gets the result (may be NULL). BUSY while another
 * load is running; INVALID_ARGUMENT for a path that is not absolute. */
typedef void (*GmdLoadDoneFunc) (GmdService *service, const GError *error, gpointer user_data);
gboolean gmd_service_load_model (GmdService *service, const char *model_path,
                                 const char *mmproj_path, guint32 context_size,
                                 guint32 threads, gboolean drain, GmdLoadDoneFunc callback,
                                 gpointer user_data, GError **error);

/* Cancels all work (admin), closes sessions (model-changed), frees the model. */
void gmd_service_unload_model (GmdService *service);

G_END_DECLS
