/* gmd-limits.h — the caps of docs/dbus-api.md §9 and docs/protocol.md §6, from the
 * [limits] group of the configuration. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  guint32 max_queue;               /* 64 */
  guint32 max_queued_per_client;   /* 4 */
  guint32 max_sessions_per_client; /* 8 */
  guint32 max_prompt_tokens;       /* 0 = the context size */
  guint32 max_tokens_limit;        /* 0 = the context size */
  guint64 max_text_bytes;          /* 1 MiB */
  guint64 max_media_bytes;         /* 20 MiB */
  guint32 max_media_parts;         /* 16 */
  guint32 max_audio_seconds;       /* 300 */
  guint32 max_stop_strings;        /* 8 */
  guint32 max_stop_bytes;          /* 256 */
  guint32 session_idle_timeout;    /* 1800 s; 0 = never */
  guint64 max_line_bytes;          /* socket: 32 MiB */
  guint32 max_fds_per_line;        /* socket: 16 */
  guint32 max_connections_per_uid; /* socket: 32 */
  guint64 max_image_pixels;        /* decoder bomb limit: 50 000 000 */
} GmdLimits;

/* Built-in defaults (the values in the comments above). */
void gmd_limits_init_default (GmdLimits *limits);

/* The Limits property / hello "limits" as a{sv}: uint32 for counts, uint64 for byte sizes;
 * max_prompt_tokens/max_tokens_limit resolved against context_size when 0 (and, since a
 * cap above the window cannot be reached, reported as context_size when larger; a
 * context_size of 0, unknown, leaves them as configured). Also max_line_bytes (t) and
 * max_fds_per_line (u) for the socket's hello, and max_image_pixels (t). */
GVariant *gmd_limits_to_variant (const GmdLimits *limits, guint32 context_size);

G_END_DECLS
