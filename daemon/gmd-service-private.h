/* gmd-service-private.h — the service's structures, shared by gmd-service.c (lifetime,
 * model, administration), gmd-request.c (submission, queue, engine results) and
 * gmd-session.c (chat sessions). Everything here lives in the main context; the engine
 * thread and prompt workers only see GmdJob / GmdModel / GmdPromptSpec. */
#pragma once

#include "gmd-engine.h"
#include "gmd-mailbox.h"
#include "gmd-model.h"
#include "gmd-prompt.h"
#include "gmd-scheduler.h"
#include "gmd-service.h"

G_BEGIN_DECLS

/* Where a request is (its public GmdRequestState is coarser). */
typedef enum {
  REQ_PREPARING,      /* rendered and checked off the loop; not yet accepted */
  REQ_QUEUED,         /* in the scheduler */
  REQ_HELD,           /* accepted while a model switch drains the queue */
  REQ_WAITING_MODEL,  /* next to run; the model is still loading */
  REQ_RUNNING,        /* in the engine */
  REQ_ENDED,          /* finished() delivered or pending, or abandoned */
} GmdRequestPhase;

struct _GmdClient {
  int ref;
  GmdService *service;        /* NULL once the service is freed */
  char *key;
  uid_t uid;
  guint n_requests;           /* preparing, waiting or running */
  guint n_sessions;           /* open */
};

struct _GmdRequest {
  int ref;
  GmdService *service;        /* NULL once the service is freed */
  char *handle;
  GmdClient *client;
  GmdSession *session;        /* NULL for one-shot */
  GmdRequestSink sink;
  gpointer user_data;
  gboolean abandoned;         /* never call the sink again */
  GmdRequestPhase phase;
  GmdRequestState state;
  gboolean finished;          /* finished() delivered */
  GmdCancelReason cancel_reason;
  GmdJob *job;
  guint32 last_position;      /* queue_position last sent; G_MAXUINT32 = none */
  guint64 seed;
  guint32 context_size;
  gint64 t_submit, t_accept, t_dispatch, t_load_start;
  double load_seconds;
  gboolean in_history;        /* session turn: its user message was added */
};

struct _GmdSession {
  int ref;
  GmdService *service;        /* NULL once the service is freed */
  GmdClient *client;
  guint64 id;
  GmdOptions *options;        /* the defaults of every turn */
  char *system;
  gboolean thinking;
  GPtrArray *history;         /* GmdMessage* */
  guint32 context_size;
  gboolean explicit_context_size;
  guint32 context_used;
  gboolean closed;
  GmdRequest *turn;           /* the unfinished turn, or NULL */
  GmdSessionClosedFunc closed_func;
  gpointer closed_data;
  GSource *idle_source;
};

typedef struct {
  guint id;
  GmdServiceChangedFunc func;
  gpointer user_data;
} ChangedHandler;

/* A model load running in its own thread. */
typedef struct {
  guint64 generation;
  GThread *thread;
  char *model_path;
  char *mmproj_path;
  guint32 context_size;       /* 0 = from the model */
  guint32 threads;
  gboolean drain;
  GmdLoadDoneFunc callback;
  gpointer user_data;
  GmdModel *result;           /* set on success, until switched in */
  gboolean switching;         /* loaded; waiting for the queue to drain or the running
                                 request to end */
} GmdLoadOp;

struct _GmdService {
  GMainContext *context;
  GmdConfig *config;
  GmdServiceInfo info;
  char *info_strings[5];      /* storage of info's strings */

  GmdMailbox *mailbox;
  GmdEngine *engine;
  GThreadPool *prepare_pool;
  GmdScheduler *scheduler;
  GQueue held;                /* GmdRequest* accepted during a model switch */

  GmdModel *model;            /* the model requests run on (NULL: none) */
  guint32 model_threads;
  GmdLoadOp *load;            /* the running load, or NULL */
  guint64 load_generation;

  GHashTable *clients;        /* key → GmdClient* (weak) */
  GHashTable *requests;       /* handle → GmdRequest* (ref): unfinished requests */
  GHashTable *live_requests;  /* GmdRequest* set (weak): every request alive */
  GList *sessions;            /* open GmdSession* (ref) */
  GHashTable *live_sessions;  /* GmdSession* set (weak) */
  GmdRequest *running;        /* WAITING_MODEL or RUNNING */
  guint n_preparing;
  guint64 next_request_id;
  guint64 next_session_id;
  guint positions_epoch;
  gboolean kick_pending;

  GArray *changed_handlers;   /* ChangedHandler */
  guint next_handler_id;
  GSource *changed_source;

  gboolean stopping;
  gboolean freeing;
  GSource *grace_source;
  GmdShutdownDoneFunc shutdown_done;
  gpointer shutdown_data;
  gboolean shutdown_pending;
};

/* gmd-service.c */
void gmd_service_notify_changed (GmdService *service);
void gmd_service_update_counts (GmdService *service);
/* Called whenever a request ended: switch models, finish a shutdown, dispatch the
 * next request (each only when its time has come). */
void gmd_service_engine_idle (GmdService *service);
guint32 gmd_service_context_size (GmdService *service);

/* gmd-request.c */
/* Updates queue positions, dispatches, completes a switch or shutdown: later, from the
 * main loop (so an API call never runs a sink from inside itself). */
void gmd_service_kick (GmdService *service);
extern const GmdEngineCallbacks gmd_request_engine_callbacks;
void gmd_service_dispatch (GmdService *service);
void gmd_service_update_positions (GmdService *service);
/* Ends a request that is not in the engine (queued, held, waiting for the model,
 * preparing) as cancelled; finished() comes from the mailbox. */
void gmd_request_end_cancelled (GmdRequest *request, GmdCancelReason reason);
/* Ends a request with an error (finished() from the mailbox). */
void gmd_request_end_error (GmdRequest *request, GmdErrorCode code, const char *message);
/* Cancels every queued, held and running request. */
void gmd_service_cancel_all (GmdService *service, GmdCancelReason reason);
/* Sends the job of the request in the running slot to the engine. */
void gmd_request_start (GmdRequest *request);
GThreadPool *gmd_request_prepare_pool_new (GError **error);
gboolean gmd_service_check_max_tokens (GmdService *service, const GmdOptions *options,
                                       GError **error);

/* gmd-session.c */
void gmd_session_turn_accepted (GmdSession *session, GmdRequest *request);
void gmd_session_turn_ended (GmdSession *session, GmdRequest *request,
                             const GmdJobResult *result);
/* Closes a session on the service's initiative; the closed callback comes from the
 * mailbox. */
void gmd_session_close_by_service (GmdSession *session, GmdCloseReason reason);
void gmd_service_close_all_sessions (GmdService *service, GmdCloseReason reason);
/* Sessions opened while the first model was loading get its window. */
void gmd_service_sessions_model_ready (GmdService *service);
void gmd_session_detach (GmdSession *session);

G_END_DECLS
