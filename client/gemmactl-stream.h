/* gemmactl-stream.h — shows one streamed answer (generate, or a chat turn): text on stdout as
 * pieces arrive, thinking on stderr (dimmed on a terminal), a progress line on stderr while
 * queued or reading the prompt, and at the end the outcome and its exit code. */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

typedef struct _GemmactlStream GemmactlStream;

typedef enum {
  GEMMACTL_STREAM_JSON = 1 << 0,           /* print nothing until one JSON object at the end */
  GEMMACTL_STREAM_HIDE_THINKING = 1 << 1,
  GEMMACTL_STREAM_QUIET = 1 << 2,          /* no progress line, no notes */
} GemmactlStreamFlags;

/* Called once, when the stream has ended (terminal message) or its output failed. */
typedef void (*GemmactlStreamEndFunc) (GemmactlStream *stream, gpointer user_data);

GemmactlStream *gemmactl_stream_new (GemmactlStreamFlags flags, GemmactlStreamEndFunc end_func,
                                     gpointer user_data);
void gemmactl_stream_free (GemmactlStream *stream);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GemmactlStream, gemmactl_stream_free)

/* Feeds one message of the request (a GemmactlMessageFunc body). */
void gemmactl_stream_message (GemmactlStream *stream, JsonObject *message, gboolean terminal);

gboolean gemmactl_stream_has_ended (GemmactlStream *stream);
/* The server's request handle from "accepted" ("r-42"), or NULL before it. */
const char *gemmactl_stream_get_request (GemmactlStream *stream);
/* Shows a state of our own on the progress line (e.g. "cancelling"). */
void gemmactl_stream_set_status (GemmactlStream *stream, const char *status);

/* Ends the output: final newline, notes, the error or the JSON object. Returns the exit code. */
int gemmactl_stream_finish (GemmactlStream *stream);
/* Ends the output when leaving abruptly (a second Ctrl-C, a lost connection): clears the
 * progress line and restores the terminal colours, ends an unfinished line. */
void gemmactl_stream_abort (GemmactlStream *stream);

G_END_DECLS
