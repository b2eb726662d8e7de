/* gmd-dbus-private.h — what the files of the D-Bus front end share: the server, the
 * callers (one per unique bus name that called the Manager), Request and Session objects,
 * and the a{sv} conversions. Everything runs in the server's main context, except the
 * reading of a call's media fds (gmd_dbus_content_from_variant in a GTask thread). */
#pragma once

#include <gio/gio.h>
#include <gio/gunixfdlist.h>

#include "gmd-dbus-generated.h"
#include "ipc/dbus/gmd-dbus-server.h"

G_BEGIN_DECLS

#define GMD_DBUS_BUS_NAME       "org.gemmad.Gemmad1"
#define GMD_DBUS_MANAGER_PATH   "/org/gemmad/Gemmad1"
#define GMD_DBUS_REQUEST_PREFIX "/org/gemmad/Gemmad1/request"
#define GMD_DBUS_SESSION_PREFIX "/org/gemmad/Gemmad1/session"
#define GMD_DBUS_REQUEST_IFACE  "org.gemmad.Gemmad1.Request"
#define GMD_DBUS_SESSION_IFACE  "org.gemmad.Gemmad1.Session"
#define GMD_DBUS_PROPERTIES_IFACE "org.freedesktop.DBus.Properties"
#define GMD_DBUS_ADMIN_ACTION   "org.gemmad.gemmad1.admin"
#define GMD_DBUS_API_VERSION    1

typedef struct _GmdDbusCaller GmdDbusCaller;
typedef struct _GmdDbusRequest GmdDbusRequest;
typedef struct _GmdDbusSession GmdDbusSession;
typedef struct _GmdDbusAdminCall GmdDbusAdminCall;

struct _GmdDbusServer {
  GmdService *service;
  GDBusConnection *connection;
  GMainContext *context;        /* the service's main context: every callback runs there */
  gboolean system_bus;
  GmDbusManager *manager;
  guint changed_handler_id;
  guint name_owner_subscription;
  GHashTable *callers;          /* unique name → GmdDbusCaller* (owned) */
  guint next_session_token;
  GPtrArray *admin_calls;       /* GmdDbusAdminCall* in flight (not owned) */
  GPtrArray *reload_waiters;    /* GDBusMethodInvocation* waiting for a config reload's model load */
  gint64 queue_props_time_us;   /* last QueueLength/ActiveRequests update */
  GSource *queue_props_source;  /* pending rate-limited update */
};

/* The configured limits with max_tokens_limit and max_prompt_tokens resolved against the
 * loaded model's window ("0 = the context size"), as the Limits property shows them. */
void gmd_dbus_server_get_limits (GmdDbusServer *server, GmdLimits *out);

/* ---- callers (gmd-dbus-caller.c) ---------------------------------------------------- */

/* One unique bus name that called the Manager: its credentials, the GmdClient it counts
 * against, and the objects it owns. Lives until the name leaves the bus (or the server
 * is freed). */
struct _GmdDbusCaller {
  GmdDbusServer *server;
  char *name;                   /* ":1.42" */
  char *path_element;           /* "1_42" */
  gboolean identified;          /* uid and client are known */
  uid_t uid;
  GmdClient *client;
  GCancellable *cancellable;    /* the GetConnectionCredentials call */
  gboolean reading;             /* the media fds of one of its calls are being read */
  GQueue waiting;               /* calls made before the credentials arrived or while
                                   reading: run in order once both are done */
  GHashTable *requests;         /* set of GmdDbusRequest* (each frees itself when done) */
  GHashTable *sessions;         /* set of GmdDbusSession* */
};

typedef void (*GmdDbusCallerFunc) (GmdDbusCaller *caller, GDBusMethodInvocation *invocation);

/* Runs func once the sender of invocation is identified and none of its calls is reading
 * media (at once when both hold), after the calls that wait already. */
void gmd_dbus_caller_dispatch (GmdDbusServer *server, GDBusMethodInvocation *invocation,
                               GmdDbusCallerFunc func);
/* The same for a call to one of caller's objects (Session methods). */
void gmd_dbus_caller_run_in_order (GmdDbusCaller *caller, GDBusMethodInvocation *invocation,
                                   GmdDbusCallerFunc func);
/* A call set caller->reading while its fds were read in a thread; now the call is
 * submitted or answered: the calls that waited run (until one reads again). */
void gmd_dbus_caller_read_done (GmdDbusCaller *caller);
/* The name left the bus (or the server goes away): abandon its requests, close its
 * sessions silently, unexport everything, free the caller. */
void gmd_dbus_caller_vanished (GmdDbusServer *server, const char *name);
void gmd_dbus_caller_free (GmdDbusCaller *caller);
/* An unfinished request or open session of this caller already uses token. */
gboolean gmd_dbus_caller_token_in_use (GmdDbusCaller *caller, const char *token);
gboolean gmd_dbus_caller_is_active (GmdDbusCaller *caller);

/* ---- Request objects (gmd-dbus-request.c) ------------------------------------------- */

typedef enum {
  GMD_DBUS_REQUEST_STREAM,      /* Generate, Session.Send: reply with the path, then signals */
  GMD_DBUS_REQUEST_RESPOND,     /* Respond: one reply at the end, no signals */
} GmdDbusRequestMode;

/* Handles Generate, Respond and Session.Send: parses (aa{sv} content, a{sv} options) of
 * invocation, submits the request (as a turn of session when not NULL) and replies when
 * the service has decided (and, for Respond, at the end). A call with fds has them read
 * in a thread (a file on a stalled filesystem must not freeze the service): its object
 * is exported meanwhile (Cancel works) and the caller's later calls wait. */
void gmd_dbus_request_handle (GmdDbusCaller *caller, GDBusMethodInvocation *invocation,
                              GmdSession *session, GmdOptionsScope scope,
                              GmdDbusRequestMode mode);
const char *gmd_dbus_request_get_token (GmdDbusRequest *request);
/* The owner is gone: abandon the request, drop a pending reply, unexport, free. */
void gmd_dbus_request_abandon (GmdDbusRequest *request);

/* ---- Session objects (gmd-dbus-session.c) -------------------------------------------- */

void gmd_dbus_session_handle_open (GmdDbusCaller *caller, GDBusMethodInvocation *invocation);
const char *gmd_dbus_session_get_token (GmdDbusSession *session);
/* Closes without a Closed signal (the owner is gone or the server stops); frees. */
void gmd_dbus_session_drop (GmdDbusSession *session);

/* ---- Manager (gmd-dbus-manager.c) ------------------------------------------------------ */

GmDbusManager *gmd_dbus_manager_new (GmdDbusServer *server);
/* Copies GmdServiceInfo, Limits and DefaultOptions into the Manager properties. */
void gmd_dbus_manager_update (GmdDbusServer *server);
/* ReloadConfig calls waiting for the model load that the reload started. */
void gmd_dbus_manager_finish_reloads (GmdDbusServer *server);

/* ---- admin authorization (gmd-dbus-auth.c) ---------------------------------------------- */

typedef void (*GmdDbusAdminFunc) (GmdDbusServer *server, GmdDbusAdminCall *call);

struct _GmdDbusAdminCall {
  GmdDbusServer *server;        /* NULL once the server is gone */
  GDBusMethodInvocation *invocation;
  GCancellable *cancellable;
  GmdDbusAdminFunc func;
};

/* Checks that the caller may use the admin methods (system bus: uid 0 or polkit; session
 * bus: the service's uid), then runs func with a call that func must finish with
 * gmd_dbus_admin_call_free() (at once or from a later callback). Replies PermissionDenied
 * itself. */
void gmd_dbus_authorize_admin (GmdDbusCaller *caller, GDBusMethodInvocation *invocation,
                               GmdDbusAdminFunc func);
/* Takes the call off the server's list and frees it; the invocation must be answered. */
void gmd_dbus_admin_call_free (GmdDbusAdminCall *call);
/* Server shutdown: answers every call still waiting for polkit and detaches the rest. */
void gmd_dbus_admin_calls_detach (GmdDbusServer *server);

/* ---- a{sv} conversions and replies (gmd-dbus-args.c) ------------------------------------ */

GmdOptions *gmd_dbus_options_from_variant (GVariant *dict, GmdOptionsScope scope,
                                           const GmdLimits *limits, GError **error);
/* content: aa{sv}; fds: the call's file descriptors (index = 'h' value). Media caps are
 * checked before anything more is read. Returns GmdPart* with its free func. Touches no
 * shared state: safe in a worker thread. Stops before the next fd once cancellable is
 * cancelled (G_IO_ERROR_CANCELLED). */
GPtrArray *gmd_dbus_content_from_variant (GVariant *content, const int *fds, int n_fds,
                                          const GmdLimits *limits, GCancellable *cancellable,
                                          GError **error);
GVariant *gmd_dbus_summary_to_variant (const GmdSummary *summary);
GVariant *gmd_dbus_progress_to_variant (const GmdProgress *progress);
GVariant *gmd_dbus_history_to_variant (GPtrArray *messages);

/* Valid as the last element of an object path and as a handle_token. */
gboolean gmd_dbus_token_is_valid (const char *token);
/* ":1.42" → "1_42". */
char *gmd_dbus_sender_path_element (const char *unique_name);

/* Error replies with the org.gemmad.Gemmad1.Error.* names (any GError is mapped). */
void gmd_dbus_return_error (GDBusMethodInvocation *invocation, const GError *error);
void gmd_dbus_return_code (GDBusMethodInvocation *invocation, GmdErrorCode code,
                           const char *format, ...) G_GNUC_PRINTF (3, 4);

/* Unicast signal to one bus name; failures (the name left) are only logged. */
void gmd_dbus_emit_to (GDBusConnection *connection, const char *destination,
                       const char *path, const char *interface, const char *signal,
                       GVariant *parameters);

G_END_DECLS
