/* gmd-config.h — gemmad's configuration: a GKeyFile (/etc/gemmad/gemmad.conf, or --config),
 * then command-line overrides. Every key has a default, so an empty file is valid; an
 * unknown group or key, or a value out of range, is an error naming file, group and key.
 *
 *   [model]     path, mmproj, context_size, threads, batch
 *   [service]   bus (system|session|none), socket (path; empty = none), socket_mode,
 *               allowed_users, allowed_groups, cache_slots, idle_exit, shutdown_grace
 *   [limits]    the keys of GmdLimits (docs/dbus-api.md §9)
 *   [defaults]  the option keys of GmdOptions that have service-wide defaults
 *
 * data/gemmad.conf is the commented example; docs/configuration.md the reference. */
#pragma once

#include <glib.h>
#include <stdint.h>

#include "gmd-limits.h"
#include "gmd-options.h"

G_BEGIN_DECLS


typedef enum {
  GMD_BUS_NONE,
  GMD_BUS_SYSTEM,
  GMD_BUS_SESSION,
} GmdBusType;

typedef struct {
  char *source;            /* the file read, or NULL when only defaults/flags */

  /* [model] */
  char *model_path;        /* NULL: start unloaded (an admin may LoadModel later) */
  char *mmproj_path;       /* NULL: text only */
  guint32 context_size;    /* 0 = min(n_ctx_train, 4096) */
  guint32 threads;         /* 0 = number of online CPUs */
  guint32 batch;           /* prefill chunk, default 512 */

  /* [service] */
  GmdBusType bus;          /* default GMD_BUS_SYSTEM */
  char *socket_path;       /* NULL = no socket (unless systemd passes one) */
  guint32 socket_mode;     /* 0666 for the system service; 0600 forced on the session bus */
  GStrv allowed_users;     /* NULL = everybody (names or numeric uids) */
  GStrv allowed_groups;    /* NULL = everybody */
  guint32 cache_slots;     /* KV caches kept for idle sessions (default 4) */
  guint32 idle_exit;       /* seconds without clients before exiting when activated; 0 = never */
  guint32 shutdown_grace;  /* seconds a running request may take to finish at SIGTERM (5) */

  GmdLimits limits;        /* [limits] */
  GmdOptions *defaults;    /* [defaults]: values for options a request leaves out */

  gboolean source_optional;/* source may be missing (a default path): reload tolerates it */
  GStrv overrides;         /* "GROUP.KEY=VALUE" from flags, re-applied by gmd_config_reload */
} GmdConfig;

GmdConfig *gmd_config_new_default (void);
/* Reads path over the defaults. */
GmdConfig *gmd_config_load (const char *path, GError **error);
GmdConfig *gmd_config_copy (const GmdConfig *config);

/* Like gmd_config_load; path NULL gives the defaults. With missing_ok, a file that does
 * not exist also gives the defaults (the optional /etc/gemmad/gemmad.conf); any other
 * problem (unreadable, bad syntax, bad key) is an error. */
GmdConfig *gmd_config_load_or_default (const char *path, gboolean missing_ok, GError **error);

/* Sets one key from its text form, as the file would: group_dot_key is "GROUP.KEY"
 * ("limits.max_queue", "defaults.temperature"). The --set flag and the file loader share
 * this path. Errors (GMD_ERROR_INVALID_ARGUMENT) start with "GROUP.KEY: " and quote the
 * value; on error the config is unchanged. */
gboolean gmd_config_set (GmdConfig *config, const char *group_dot_key, const char *value,
                         GError **error);

/* gmd_config_set, remembered so that gmd_config_reload applies it again over the re-read
 * file (command-line flags and --set outlive a reload). */
gboolean gmd_config_override (GmdConfig *config, const char *group_dot_key, const char *value,
                              GError **error);

/* Re-reads current's source (a missing optional default file gives the defaults, so a
 * file created after start is picked up), re-applies its overrides and validates. */
GmdConfig *gmd_config_reload (const GmdConfig *current, GError **error);

/* Checks rules that involve several keys (defaults.max_tokens within
 * limits.max_tokens_limit, max_queued_per_client within max_queue). gmd_config_load
 * runs it; call it again after applying --set overrides. */
gboolean gmd_config_validate (const GmdConfig *config, GError **error);
void gmd_config_free (GmdConfig *config);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GmdConfig, gmd_config_free)

G_END_DECLS
