/* gmd-dbus-manager.c — the Manager object at /org/gemmad/Gemmad1 (gdbus-codegen skeleton):
 * its properties mirror GmdServiceInfo, the configuration's limits and default options;
 * its methods start requests and sessions or, for administrators, change the model. */
#include "gmd-dbus-private.h"

#include <stdint.h>
#include <string.h>

/* QueueLength and ActiveRequests change with every request: at most four
 * PropertiesChanged a second for them (docs/dbus-api.md). */
#define QUEUE_PROPS_INTERVAL_US (G_USEC_PER_SEC / 4)

/* ---- properties ---------------------------------------------------------------------- */

static void
set_queue_props (GmdDbusServer *server)
{
  const GmdServiceInfo *info = gmd_service_get_info (server->service);

  gm_dbus_manager_set_queue_length (server->manager, info->queue_length);
  gm_dbus_manager_set_active_requests (server->manager, info->active_requests);
  server->queue_props_time_us = g_get_monotonic_time ();
}

static gboolean
queue_props_timeout (gpointer user_data)
{
  GmdDbusServer *server = user_data;

  g_clear_pointer (&server->queue_props_source, g_source_unref);
  set_queue_props (server);
  return G_SOURCE_REMOVE;
}

static void
update_queue_props (GmdDbusServer *server)
{
  const GmdServiceInfo *info = gmd_service_get_info (server->service);
  gint64 elapsed;

  if (server->queue_props_source != NULL)
    return;   /* the pending update reads the newest values */
  if (gm_dbus_manager_get_queue_length (server->manager) == info->queue_length &&
      gm_dbus_manager_get_active_requests (server->manager) == info->active_requests)
    return;
  elapsed = g_get_monotonic_time () - server->queue_props_time_us;
  if (elapsed >= QUEUE_PROPS_INTERVAL_US)
    set_queue_props (server);
  else
    {
      server->queue_props_source = g_timeout_source_new ((guint) ((QUEUE_PROPS_INTERVAL_US - elapsed) / 1000) + 1);
      g_source_set_callback (server->queue_props_source, queue_props_timeout, server, NULL);
      g_source_attach (server->queue_props_source, server->context);
    }
}

static const char *
or_empty (const char *s)
{
  return s != NULL ? s : "";
}

static const char *const empty_strv[] = { NULL };

void
gmd_dbus_manager_update (GmdDbusServer *server)
{
  const GmdServiceInfo *info = gmd_service_get_info (server->service);
  const GmdConfig *config = gmd_service_get_config (server->service);
  GmDbusManager *m = server->manager;

  /* The skeleton emits PropertiesChanged only for values that really changed. */
  gm_dbus_manager_set_model_name (m, or_empty (info->model_name));
  gm_dbus_manager_set_architecture (m, or_empty (info->architecture));
  gm_dbus_manager_set_quantization (m, or_empty (info->quantization));
  gm_dbus_manager_set_context_size (m, info->context_size);
  gm_dbus_manager_set_modalities (m, info->modalities != NULL ? info->modalities : empty_strv);
  gm_dbus_manager_set_media_types (m, info->media_types != NULL ? info->media_types : empty_strv);
  gm_dbus_manager_set_load_state (m, gmd_load_state_name (info->load_state));
  gm_dbus_manager_set_load_error (m, or_empty (info->load_error));
  gm_dbus_manager_set_limits (m, gmd_limits_to_variant (&config->limits, info->context_size));
  gm_dbus_manager_set_default_options (m, gmd_options_to_variant (gmd_service_get_defaults (server->service)));
  update_queue_props (server);
}

/* ---- Generate, Respond, OpenSession --------------------------------------------------- */

static void
generate_for (GmdDbusCaller *caller, GDBusMethodInvocation *invocation)
{
  gmd_dbus_request_handle (caller, invocation, NULL, GMD_OPTIONS_GENERATE, GMD_DBUS_REQUEST_STREAM);
}

static void
respond_for (GmdDbusCaller *caller, GDBusMethodInvocation *invocation)
{
  gmd_dbus_request_handle (caller, invocation, NULL, GMD_OPTIONS_RESPOND, GMD_DBUS_REQUEST_RESPOND);
}

static gboolean
handle_generate (GmDbusManager *m, GDBusMethodInvocation *invocation, GUnixFDList *fd_list,
                 GVariant *content, GVariant *options, gpointer user_data)
{
  gmd_dbus_caller_dispatch (user_data, invocation, generate_for);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

static gboolean
handle_respond (GmDbusManager *m, GDBusMethodInvocation *invocation, GUnixFDList *fd_list,
                GVariant *content, GVariant *options, gpointer user_data)
{
  gmd_dbus_caller_dispatch (user_data, invocation, respond_for);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

static gboolean
handle_open_session (GmDbusManager *m, GDBusMethodInvocation *invocation, GVariant *options,
                     gpointer user_data)
{
  gmd_dbus_caller_dispatch (user_data, invocation, gmd_dbus_session_handle_open);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

/* ---- admin: ReloadConfig ----------------------------------------------------------------- */

static void
reload_config_authorized (GmdDbusServer *server, GmdDbusAdminCall *call)
{
  GDBusMethodInvocation *invocation = g_steal_pointer (&call->invocation);
  g_autoptr(GError) error = NULL;

  gmd_dbus_admin_call_free (call);
  if (!gmd_service_reload_config (server->service, &error))
    {
      gmd_dbus_return_error (invocation, error);
      return;
    }
  gmd_dbus_manager_update (server);
  /* A changed model is being loaded: the call returns when it is in effect. */
  if (gmd_service_get_info (server->service)->load_state == GMD_LOAD_LOADING)
    g_ptr_array_add (server->reload_waiters, invocation);
  else
    g_dbus_method_invocation_return_value (invocation, NULL);
}

void
gmd_dbus_manager_finish_reloads (GmdDbusServer *server)
{
  const GmdServiceInfo *info = gmd_service_get_info (server->service);

  if (info->load_state == GMD_LOAD_LOADING)
    return;
  for (guint i = 0; i < server->reload_waiters->len; i++)
    {
      GDBusMethodInvocation *invocation = g_ptr_array_index (server->reload_waiters, i);

      if (info->load_state == GMD_LOAD_FAILED)
        gmd_dbus_return_code (invocation, GMD_ERROR_INVALID_ARGUMENT,
                              "the configured model did not load: %s", or_empty (info->load_error));
      else
        g_dbus_method_invocation_return_value (invocation, NULL);
    }
  g_ptr_array_set_size (server->reload_waiters, 0);
}

static void
reload_config_for (GmdDbusCaller *caller, GDBusMethodInvocation *invocation)
{
  gmd_dbus_authorize_admin (caller, invocation, reload_config_authorized);
}

static gboolean
handle_reload_config (GmDbusManager *m, GDBusMethodInvocation *invocation, gpointer user_data)
{
  gmd_dbus_caller_dispatch (user_data, invocation, reload_config_for);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

/* ---- admin: LoadModel ------------------------------------------------------------------- */

/* Any D-Bus integer type, as for request options. */
static gboolean
variant_get_integer (GVariant *v, gint64 *out)
{
  switch (g_variant_classify (v))
    {
    case G_VARIANT_CLASS_BYTE:   *out = g_variant_get_byte (v); return TRUE;
    case G_VARIANT_CLASS_INT16:  *out = g_variant_get_int16 (v); return TRUE;
    case G_VARIANT_CLASS_UINT16: *out = g_variant_get_uint16 (v); return TRUE;
    case G_VARIANT_CLASS_INT32:  *out = g_variant_get_int32 (v); return TRUE;
    case G_VARIANT_CLASS_UINT32: *out = g_variant_get_uint32 (v); return TRUE;
    case G_VARIANT_CLASS_INT64:  *out = g_variant_get_int64 (v); return TRUE;
    case G_VARIANT_CLASS_UINT64:
      *out = g_variant_get_uint64 (v) > INT64_MAX ? -1 : (gint64) g_variant_get_uint64 (v);
      return TRUE;
    default:
      return FALSE;
    }
}

static gboolean
parse_load_options (GVariant *dict, guint32 *context_size, guint32 *threads, gboolean *drain,
                    GError **error)
{
  GVariantIter iter;
  const char *key;
  GVariant *raw;

  *context_size = 0;
  *threads = 0;
  *drain = TRUE;
  g_variant_iter_init (&iter, dict);
  while (g_variant_iter_next (&iter, "{&sv}", &key, &raw))
    {
      g_autoptr(GVariant) value = raw;
      g_autofree char *field = g_strdup_printf ("options.%s", key);
      gint64 n;

      if (strcmp (key, "drain") == 0)
        {
          if (!g_variant_is_of_type (value, G_VARIANT_TYPE_BOOLEAN))
            {
              gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                                   "expected a boolean (b), got %s", g_variant_get_type_string (value));
              return FALSE;
            }
          *drain = g_variant_get_boolean (value);
        }
      else if (strcmp (key, "context_size") == 0 || strcmp (key, "threads") == 0)
        {
          if (!variant_get_integer (value, &n))
            {
              gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                                   "expected an integer (u), got %s", g_variant_get_type_string (value));
              return FALSE;
            }
          if (n < 0 || n > G_MAXUINT32)
            {
              gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                                   "must be between 0 and %u, got %" G_GINT64_FORMAT, G_MAXUINT32, n);
              return FALSE;
            }
          *(key[0] == 'c' ? context_size : threads) = (guint32) n;
        }
      else
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, "options",
                               "unknown key '%s' (LoadModel takes context_size, threads and drain)", key);
          return FALSE;
        }
    }
  return TRUE;
}

static void
model_loaded (GmdService *service, const GError *error, gpointer user_data)
{
  GmdDbusAdminCall *call = user_data;
  GDBusMethodInvocation *invocation = g_steal_pointer (&call->invocation);

  /* Answered even when the server is gone: the invocation keeps its connection. */
  if (error != NULL)
    gmd_dbus_return_error (invocation, error);
  else
    g_dbus_method_invocation_return_value (invocation, NULL);
  gmd_dbus_admin_call_free (call);
}

static void
load_model_authorized (GmdDbusServer *server, GmdDbusAdminCall *call)
{
  GVariant *parameters = g_dbus_method_invocation_get_parameters (call->invocation);
  g_autoptr(GVariant) options = g_variant_get_child_value (parameters, 2);
  g_autoptr(GError) error = NULL;
  const char *model_path, *mmproj_path;
  guint32 context_size, threads;
  gboolean drain;

  g_variant_get (parameters, "(&s&s@a{sv})", &model_path, &mmproj_path, NULL);
  if (!parse_load_options (options, &context_size, &threads, &drain, &error) ||
      !gmd_service_load_model (server->service, model_path, mmproj_path, context_size, threads,
                               drain, model_loaded, call, &error))
    {
      gmd_dbus_return_error (g_steal_pointer (&call->invocation), error);
      gmd_dbus_admin_call_free (call);
    }
}

static void
load_model_for (GmdDbusCaller *caller, GDBusMethodInvocation *invocation)
{
  gmd_dbus_authorize_admin (caller, invocation, load_model_authorized);
}

static gboolean
handle_load_model (GmDbusManager *m, GDBusMethodInvocation *invocation, const char *model_path,
                   const char *mmproj_path, GVariant *options, gpointer user_data)
{
  gmd_dbus_caller_dispatch (user_data, invocation, load_model_for);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

/* ---- admin: UnloadModel ------------------------------------------------------------------ */

static void
unload_model_authorized (GmdDbusServer *server, GmdDbusAdminCall *call)
{
  GDBusMethodInvocation *invocation = g_steal_pointer (&call->invocation);

  gmd_dbus_admin_call_free (call);
  gmd_service_unload_model (server->service);
  g_dbus_method_invocation_return_value (invocation, NULL);
}

static void
unload_model_for (GmdDbusCaller *caller, GDBusMethodInvocation *invocation)
{
  gmd_dbus_authorize_admin (caller, invocation, unload_model_authorized);
}

static gboolean
handle_unload_model (GmDbusManager *m, GDBusMethodInvocation *invocation, gpointer user_data)
{
  gmd_dbus_caller_dispatch (user_data, invocation, unload_model_for);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

/* ---- creation ---------------------------------------------------------------------------- */

GmDbusManager *
gmd_dbus_manager_new (GmdDbusServer *server)
{
  GmDbusManager *m = gm_dbus_manager_skeleton_new ();

  server->manager = m;
  gm_dbus_manager_set_version (m, GMD_VERSION);
  gm_dbus_manager_set_api_version (m, GMD_DBUS_API_VERSION);
  g_signal_connect (m, "handle-generate", G_CALLBACK (handle_generate), server);
  g_signal_connect (m, "handle-respond", G_CALLBACK (handle_respond), server);
  g_signal_connect (m, "handle-open-session", G_CALLBACK (handle_open_session), server);
  g_signal_connect (m, "handle-reload-config", G_CALLBACK (handle_reload_config), server);
  g_signal_connect (m, "handle-load-model", G_CALLBACK (handle_load_model), server);
  g_signal_connect (m, "handle-unload-model", G_CALLBACK (handle_unload_model), server);
  gmd_dbus_manager_update (server);
  return m;
}
