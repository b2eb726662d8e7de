/* gemmad-main.c — the service binary: configuration and flags, the GmdService, the bus
 * name, the UNIX socket (plain or systemd-activated), sd_notify, signals and idle exit.
 * Everything that computes lives in daemon/ (engine thread); this file only wires. */
#include <errno.h>
#include <glib-unix.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "daemon/gmd-config.h"
#include "daemon/gmd-service.h"
#include "ipc/dbus/gmd-dbus-server.h"
#include "ipc/socket/gmd-socket-server.h"

#define GEMMAD_BUS_NAME "org.gemmad.Gemmad1"
#define SYSTEM_CONFIG_PATH "/etc/gemmad/gemmad.conf"
#define SYSTEM_SOCKET_PATH "/run/gemmad/gemmad.sock"

typedef struct {
  GMainLoop *loop;
  GmdService *service;      /* owns the configuration (reloads replace it) */
  GmdBusType bus;
  gboolean per_user;

  guint own_id;
  gboolean name_acquired;
  gboolean name_failed;
  GmdDbusServer *dbus_server;

  GmdSocketServer *socket_server;
  gboolean socket_activated;

  gboolean ready_sent;
  gboolean stopping;
  int exit_code;

  gint64 idle_since;          /* monotonic µs since nobody was connected, 0 = busy */
  char *last_status;
} Daemon;

/* The configuration in force: the service's, which SIGHUP/ReloadConfig replace. */
static const GmdConfig *
config_of (const Daemon *d)
{
  return gmd_service_get_config (d->service);
}

/* ---- command line ------------------------------------------------------------------- */

typedef struct {
  char *config_path;
  char *model;
  char *mmproj;
  int threads;
  int context_size;
  gboolean system_bus, session_bus, no_bus;
  char *socket_path;
  gboolean no_socket;
  char *socket_mode;
  char **sets;
  gboolean verbose;
  gboolean version;
} Flags;

static gboolean
parse_flags (int *argc, char ***argv, Flags *f, GError **error)
{
  f->threads = -1;
  f->context_size = -1;
  const GOptionEntry entries[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &f->config_path,
      "Configuration file (default " SYSTEM_CONFIG_PATH ", or $XDG_CONFIG_HOME/gemmad/gemmad.conf "
      "with --session; a missing default file is fine)", "FILE" },
    { "model", 'm', 0, G_OPTION_ARG_FILENAME, &f->model, "Text GGUF to load ([model] path)", "PATH" },
    { "mmproj", 0, 0, G_OPTION_ARG_FILENAME, &f->mmproj, "Multimodal projector GGUF ([model] mmproj)",
      "PATH" },
    { "threads", 't', 0, G_OPTION_ARG_INT, &f->threads, "Worker threads, 0 = all CPUs", "N" },
    { "context-size", 0, 0, G_OPTION_ARG_INT, &f->context_size,
      "Context window per request/session, 0 = min(training context, 4096)", "N" },
    { "system", 0, 0, G_OPTION_ARG_NONE, &f->system_bus, "Serve on the system bus (default)", NULL },
    { "session", 0, 0, G_OPTION_ARG_NONE, &f->session_bus,
      "Per-user service: session bus, socket in $XDG_RUNTIME_DIR/gemmad, only our uid", NULL },
    { "no-bus", 0, 0, G_OPTION_ARG_NONE, &f->no_bus, "Do not use D-Bus (socket only)", NULL },
    { "socket", 's', 0, G_OPTION_ARG_FILENAME, &f->socket_path, "Listen on this UNIX socket path",
      "PATH" },
    { "no-socket", 0, 0, G_OPTION_ARG_NONE, &f->no_socket, "Do not listen on a UNIX socket", NULL },
    { "socket-mode", 0, 0, G_OPTION_ARG_STRING, &f->socket_mode,
      "Permissions of the socket file (octal; 0600 is forced with --session)", "MODE" },
    { "set", 0, 0, G_OPTION_ARG_STRING_ARRAY, &f->sets,
      "Override a configuration key, e.g. --set limits.max_queue=8 (repeatable)", "GROUP.KEY=VALUE" },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &f->verbose, "Debug messages", NULL },
    { "version", 0, 0, G_OPTION_ARG_NONE, &f->version, "Print the version and exit", NULL },
    { NULL },
  };
  g_autoptr (GOptionContext) ctx = g_option_context_new ("- Gemma 4 inference service");
  g_option_context_set_summary (ctx,
      "Keeps a Gemma 4 model loaded and serves it over D-Bus (org.gemmad.Gemmad1) and a UNIX\n"
      "socket (newline-delimited JSON, see gemmactl). Configuration: docs/configuration.md.");
  g_option_context_add_main_entries (ctx, entries, NULL);
  if (!g_option_context_parse (ctx, argc, argv, error))
    return FALSE;
  if (*argc > 1) {
    g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED, "unexpected argument '%s'",
                 (*argv)[1]);
    return FALSE;
  }
  if (f->system_bus + f->session_bus + f->no_bus > 1) {
    g_set_error_literal (error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                         "--system, --session and --no-bus exclude each other");
    return FALSE;
  }
  if (f->no_socket && f->socket_path) {
    g_set_error_literal (error, G_OPTION_ERROR, G_OPTION_ERROR_FAILED,
                         "--socket and --no-socket exclude each other");
    return FALSE;
  }
  return TRUE;
}

static void
flags_clear (Flags *f)
{
  g_free (f->config_path);
  g_free (f->model);
  g_free (f->mmproj);
  g_free (f->socket_path);
  g_free (f->socket_mode);
  g_strfreev (f->sets);
}

/* Config file, then flags as "group.key=value" overrides (one code path: gmd_config_set). */
static GmdConfig *
build_config (const Flags *f, GError **error)
{
  g_autofree char *path = NULL;
  gboolean missing_ok = FALSE;
  if (f->config_path) {
    path = g_strdup (f->config_path);
  } else if (f->session_bus) {
    path = g_build_filename (g_get_user_config_dir (), "gemmad", "gemmad.conf", NULL);
    missing_ok = TRUE;
  } else {
    path = g_strdup (SYSTEM_CONFIG_PATH);
    missing_ok = TRUE;
  }
  g_autoptr (GmdConfig) config = gmd_config_load_or_default (path, missing_ok, error);
  if (!config)
    return NULL;

  struct { const char *key; char *value; } overrides[8] = { { 0 } };
  size_t n = 0;
  if (f->model) {
    overrides[n].key = "model.path";
    overrides[n++].value = g_strdup (f->model);
  }
  if (f->mmproj) {
    overrides[n].key = "model.mmproj";
    overrides[n++].value = g_strdup (f->mmproj);
  }
  if (f->threads >= 0) {
    overrides[n].key = "model.threads";
    overrides[n++].value = g_strdup_printf ("%d", f->threads);
  }
  if (f->context_size >= 0) {
    overrides[n].key = "model.context_size";
    overrides[n++].value = g_strdup_printf ("%d", f->context_size);
  }
  if (f->system_bus || f->session_bus || f->no_bus) {
    overrides[n].key = "service.bus";
    overrides[n++].value = g_strdup (f->system_bus ? "system" : f->session_bus ? "session" : "none");
  }
  if (f->socket_path || f->no_socket) {
    overrides[n].key = "service.socket";
    overrides[n++].value = g_strdup (f->no_socket ? "none" : f->socket_path);
  }
  if (f->socket_mode) {
    overrides[n].key = "service.socket_mode";
    overrides[n++].value = g_strdup (f->socket_mode);
  }
  for (size_t i = 0; i < n; i++) {
    if (!gmd_config_override (config, overrides[i].key, overrides[i].value, error)) {
      g_prefix_error (error, "%s=%s: ", overrides[i].key, overrides[i].value);
      for (size_t j = 0; j < n; j++)
        g_free (overrides[j].value);
      return NULL;
    }
  }
  for (size_t j = 0; j < n; j++)
    g_free (overrides[j].value);

  for (char **s = f->sets; s && *s; s++) {
    const char *eq = strchr (*s, '=');
    if (!eq || eq == *s) {
      g_set_error (error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                   "--set %s: expected GROUP.KEY=VALUE", *s);
      return NULL;
    }
    g_autofree char *key = g_strndup (*s, (gsize) (eq - *s));
    if (!gmd_config_override (config, key, eq + 1, error)) {
      g_prefix_error (error, "--set %s: ", *s);
      return NULL;
    }
  }
  /* Rules between keys (e.g. defaults.max_tokens <= limits.max_tokens_limit), after flags. */
  if (!gmd_config_validate (config, error))
    return NULL;
  return g_steal_pointer (&config);
}

/* ---- readiness, status ---------------------------------------------------------------- */

static void
update_status (Daemon *d)
{
  const GmdServiceInfo *info = gmd_service_get_info (d->service);
  g_autofree char *status = NULL;
  switch (info->load_state) {
  case GMD_LOAD_LOADING:
    status = g_strdup_printf ("Loading %s", info->model_path[0] ? info->model_path
                              : config_of (d)->model_path ? config_of (d)->model_path : "a model");
    break;
  case GMD_LOAD_FAILED:
    status = g_strdup_printf ("Model failed to load: %s", info->load_error);
    break;
  case GMD_LOAD_UNLOADED:
    status = g_strdup ("No model loaded");
    break;
  case GMD_LOAD_LOADED:
    status = g_strdup_printf ("Serving %s (%s, context %u): %u running, %u queued, %u sessions",
                              info->model_name, info->quantization, info->context_size,
                              info->active_requests, info->queue_length, info->open_sessions);
    break;
  }
  if (d->stopping)
    return;
  if (g_strcmp0 (status, d->last_status) != 0) {
    sd_notifyf (0, "STATUS=%s", status);
    g_free (d->last_status);
    d->last_status = g_steal_pointer (&status);
  }
}

/* Ready once the first load has ended and every front end is up. */
static void
maybe_ready (Daemon *d)
{
  if (d->ready_sent || d->stopping)
    return;
  const GmdServiceInfo *info = gmd_service_get_info (d->service);
  if (info->load_state == GMD_LOAD_LOADING)
    return;
  if (d->bus != GMD_BUS_NONE && !d->name_acquired)
    return;
  d->ready_sent = TRUE;
  if (info->load_state == GMD_LOAD_FAILED)
    g_warning ("model failed to load: %s (serving without a model; an admin may load one)",
               info->load_error);
  else if (info->load_state == GMD_LOAD_LOADED)
    g_message ("model %s loaded (%s, context %u, %u threads)", info->model_name,
               info->quantization, info->context_size, info->threads);
  /* The line tests and scripts wait for. */
  fprintf (stderr, "gemmad: ready\n");
  fflush (stderr);
  sd_notify (0, "READY=1");
}

static void
on_service_changed (GmdService *service, gpointer user_data)
{
  Daemon *d = user_data;
  update_status (d);
  maybe_ready (d);
  const GmdServiceInfo *info = gmd_service_get_info (service);
  if (info->queue_length > 0 || info->active_requests > 0)
    d->idle_since = 0;
}

/* ---- shutdown ------------------------------------------------------------------------- */

static gboolean
quit_loop (gpointer user_data)
{
  Daemon *d = user_data;
  g_main_loop_quit (d->loop);
  return G_SOURCE_REMOVE;
}

/* Quits from an idle callback: the service may report "done" before the loop runs. */
static void
on_shutdown_done (GmdService *service, gpointer user_data)
{
  g_idle_add (quit_loop, user_data);
}

static void
begin_shutdown (Daemon *d, const char *why)
{
  if (d->stopping)
    return;
  d->stopping = TRUE;
  g_message ("stopping: %s", why);
  sd_notify (0, "STOPPING=1\nSTATUS=Stopping");
  if (d->socket_server)
    gmd_socket_server_stop_listening (d->socket_server);
  gmd_service_shutdown (d->service, config_of (d)->shutdown_grace, on_shutdown_done, d);
}

static gboolean
on_sigterm (gpointer user_data)
{
  begin_shutdown (user_data, "SIGTERM");
  return G_SOURCE_CONTINUE;
}

static gboolean
on_sigint (gpointer user_data)
{
  begin_shutdown (user_data, "SIGINT");
  return G_SOURCE_CONTINUE;
}

static gboolean
on_sighup (gpointer user_data)
{
  Daemon *d = user_data;
  g_autoptr (GError) error = NULL;
  sd_notify (0, "RELOADING=1");
  if (!gmd_service_reload_config (d->service, &error))
    g_warning ("reloading the configuration failed: %s", error->message);
  else
    g_message ("configuration reloaded");
  sd_notify (0, "READY=1");
  return G_SOURCE_CONTINUE;
}

/* An activated service with idle_exit set exits after that long without any client. */
static gboolean
on_idle_check (gpointer user_data)
{
  Daemon *d = user_data;
  guint idle_exit = config_of (d)->idle_exit;
  if (d->stopping || idle_exit == 0)
    return G_SOURCE_CONTINUE;
  const GmdServiceInfo *info = gmd_service_get_info (d->service);
  guint clients = info->queue_length + info->active_requests + info->open_sessions;
  if (d->dbus_server)
    clients += gmd_dbus_server_get_n_clients (d->dbus_server);
  if (d->socket_server)
    clients += gmd_socket_server_get_n_connections (d->socket_server);
  gint64 now = g_get_monotonic_time ();
  if (clients > 0 || info->load_state == GMD_LOAD_LOADING) {
    d->idle_since = 0;
  } else if (d->idle_since == 0) {
    d->idle_since = now;
  } else if (now - d->idle_since >= (gint64) idle_exit * G_USEC_PER_SEC) {
    begin_shutdown (d, "idle");
  }
  return G_SOURCE_CONTINUE;
}

/* ---- D-Bus name ------------------------------------------------------------------------ */

static void
on_bus_acquired (GDBusConnection *connection, const char *name, gpointer user_data)
{
  Daemon *d = user_data;
  g_autoptr (GError) error = NULL;
  d->dbus_server = gmd_dbus_server_new (d->service, connection, d->bus == GMD_BUS_SYSTEM, &error);
  if (!d->dbus_server) {
    g_critical ("cannot export the D-Bus objects: %s", error->message);
    d->exit_code = 1;
    begin_shutdown (d, "D-Bus export failed");
  }
}

static void
on_name_acquired (GDBusConnection *connection, const char *name, gpointer user_data)
{
  Daemon *d = user_data;
  d->name_acquired = TRUE;
  g_debug ("owning %s", name);
  maybe_ready (d);
}

static void
on_name_lost (GDBusConnection *connection, const char *name, gpointer user_data)
{
  Daemon *d = user_data;
  if (d->stopping)
    return;
  if (connection == NULL)
    g_critical ("cannot connect to the %s bus", d->bus == GMD_BUS_SYSTEM ? "system" : "session");
  else if (!d->name_acquired)
    g_critical ("cannot own %s: another instance is running, or the bus policy does not allow "
                "this user to own it", name);
  else
    g_critical ("lost the bus name %s", name);
  d->exit_code = 1;
  begin_shutdown (d, "bus name lost");
}

/* ---- socket ------------------------------------------------------------------------------ */

static char *
default_socket_path (const Daemon *d)
{
  if (d->per_user)
    return g_build_filename (g_get_user_runtime_dir (), "gemmad", "gemmad.sock", NULL);
  return g_strdup (SYSTEM_SOCKET_PATH);
}

static gboolean
setup_socket (Daemon *d, GError **error)
{
  /* systemd socket activation first: gemmad.socket hands us a listening fd. */
  int n = sd_listen_fds (1);
  if (n < 0) {
    g_set_error (error, G_IO_ERROR, g_io_error_from_errno (-n), "sd_listen_fds: %s",
                 g_strerror (-n));
    return FALSE;
  }
  /* [service] socket: unset = the default path of the mode, "none" = no socket. */
  const char *path = config_of (d)->socket_path;
  gboolean disabled = g_strcmp0 (path, "none") == 0;
  if (n == 0 && disabled)
    return TRUE;

  d->socket_server = gmd_socket_server_new (d->service, d->per_user);
  if (n > 0) {
    for (int i = 0; i < n; i++) {
      int fd = SD_LISTEN_FDS_START + i;
      if (sd_is_socket_unix (fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
        g_set_error (error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                     "systemd passed fd %d, which is not a listening AF_UNIX stream socket", fd);
        return FALSE;
      }
      if (!gmd_socket_server_listen_fd (d->socket_server, fd, error))
        return FALSE;
    }
    d->socket_activated = TRUE;
    g_message ("listening on %d socket(s) from systemd", n);
    return TRUE;
  }
  g_autofree char *fallback = path ? NULL : default_socket_path (d);
  const char *use = path ? path : fallback;
  guint mode = d->per_user ? 0600 : config_of (d)->socket_mode;
  if (!gmd_socket_server_listen_path (d->socket_server, use, mode, error)) {
    g_prefix_error (error, "%s: ", use);
    return FALSE;
  }
  g_message ("listening on %s (mode %04o)", use, mode);
  return TRUE;
}

/* ---- main -------------------------------------------------------------------------------- */

int
main (int argc, char **argv)
{
  setlocale (LC_ALL, "");
  /* A client that vanishes must never kill us through SIGPIPE. */
  signal (SIGPIPE, SIG_IGN);

  Flags flags = { 0 };
  g_autoptr (GError) error = NULL;
  if (!parse_flags (&argc, &argv, &flags, &error)) {
    fprintf (stderr, "gemmad: %s (see --help)\n", error->message);
    flags_clear (&flags);
    return 2;
  }
  if (flags.version) {
    printf ("gemmad %s\n", GEMMAD_VERSION);
    flags_clear (&flags);
    return 0;
  }
  if (flags.verbose)
    g_setenv ("G_MESSAGES_DEBUG", "all", TRUE);

  Daemon d = { .exit_code = 0 };
  g_autoptr (GmdConfig) config = build_config (&flags, &error);
  flags_clear (&flags);
  if (!config) {
    fprintf (stderr, "gemmad: %s\n", error->message);
    return 2;
  }
  d.bus = config->bus;
  d.per_user = d.bus == GMD_BUS_SESSION;

  d.service = gmd_service_new (config, &error);   /* takes a copy */
  if (!d.service) {
    fprintf (stderr, "gemmad: %s\n", error->message);
    return 1;
  }
  guint changed_id = gmd_service_add_changed_handler (d.service, on_service_changed, &d);

  d.loop = g_main_loop_new (NULL, FALSE);
  if (!setup_socket (&d, &error)) {
    fprintf (stderr, "gemmad: socket: %s\n", error->message);
    d.exit_code = 1;
    begin_shutdown (&d, "socket setup failed");
  } else if (d.bus != GMD_BUS_NONE) {
    d.own_id = g_bus_own_name (d.bus == GMD_BUS_SYSTEM ? G_BUS_TYPE_SYSTEM : G_BUS_TYPE_SESSION,
                               GEMMAD_BUS_NAME, G_BUS_NAME_OWNER_FLAGS_DO_NOT_QUEUE,
                               on_bus_acquired, on_name_acquired, on_name_lost, &d, NULL);
  }

  guint sigterm_id = g_unix_signal_add (SIGTERM, on_sigterm, &d);
  guint sigint_id = g_unix_signal_add (SIGINT, on_sigint, &d);
  guint sighup_id = g_unix_signal_add (SIGHUP, on_sighup, &d);
  guint idle_id = g_timeout_add_seconds (5, on_idle_check, &d);

  update_status (&d);
  maybe_ready (&d);
  g_main_loop_run (d.loop);

  g_source_remove (idle_id);
  g_source_remove (sighup_id);
  g_source_remove (sigint_id);
  g_source_remove (sigterm_id);
  gmd_service_remove_changed_handler (d.service, changed_id);

  /* Front ends first (they hold request references), then the name, then the service. */
  if (d.socket_server)
    gmd_socket_server_free (d.socket_server);
  if (d.dbus_server)
    gmd_dbus_server_free (d.dbus_server);
  if (d.own_id)
    g_bus_unown_name (d.own_id);
  gmd_service_free (d.service);
  g_main_loop_unref (d.loop);
  g_free (d.last_status);
  g_message ("stopped");
  return d.exit_code;
}
