/* gemmactl-options.h — the prompt and sampling flags of generate and chat, turned into the
 * protocol's "options" object (docs/protocol.md §4.2), and media files into content parts
 * with their fds (§4.1, §5). */
#pragma once

#include <glib.h>
#include <json-glib/json-glib.h>

G_BEGIN_DECLS

typedef enum {
  GEMMACTL_OPTIONS_GENERATE,  /* generate: everything but context_size */
  GEMMACTL_OPTIONS_SESSION,   /* session.open: everything but raw */
} GemmactlOptionsScope;

typedef struct {
  char *path;
  const char *type;           /* "image" or "audio" */
} GemmactlMedia;

typedef struct {
  char *system;
  gboolean thinking;
  gboolean no_thinking;
  gboolean raw;
  /* NAN / G_MININT64: not given, so the service's default applies */
  double temperature, top_p, min_p, repeat_penalty, presence_penalty, frequency_penalty;
  gint64 top_k, repeat_last_n, max_tokens, seed, image_tokens, context_size;
  char **stop;
  GPtrArray *media;           /* GemmactlMedia*, in command-line order */
} GemmactlGenOptions;

void gemmactl_gen_options_init (GemmactlGenOptions *options);
void gemmactl_gen_options_clear (GemmactlGenOptions *options);

/* Adds the flags of scope to context's main group, storing into options. */
void gemmactl_gen_options_add_entries (GemmactlGenOptions *options, GOptionContext *context,
                                       GemmactlOptionsScope scope);

/* The "options" object for the request, or NULL with error for contradicting flags. */
JsonObject *gemmactl_gen_options_to_json (const GemmactlGenOptions *options,
                                          GemmactlOptionsScope scope, GError **error);

void gemmactl_media_list_add (GPtrArray *media, const char *type, const char *path);
GPtrArray *gemmactl_media_list_new (void);

/* Content parts: each media file as {"type","fd":N} (fds appended to fds, opened read-only;
 * a pipe or other non-regular file is copied into a memfd, up to max_media_bytes + 1 so that
 * the service can say it is too big), then text as a text part when not empty. */
gboolean gemmactl_content_build (GPtrArray *media, const char *text, gint64 max_media_bytes,
                                 JsonArray **content, GArray **fds, GError **error);
/* Closes and frees the fds of gemmactl_content_build. */
void gemmactl_fds_free (GArray *fds);

G_END_DECLS
