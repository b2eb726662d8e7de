/* gemmactl-options.c — generate/chat flags → "options" object; media files → content. */
#include "gemmactl-options.h"
#include "gemmactl.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define UNSET_INT G_MININT64

/* GOption callbacks get no data from a context's main group, and one process parses one
 * command line: the options being parsed. */
static GemmactlGenOptions *parsing_options;

void
gemmactl_gen_options_init (GemmactlGenOptions *options)
{
  memset (options, 0, sizeof *options);
  options->temperature = options->top_p = options->min_p = NAN;
  options->repeat_penalty = options->presence_penalty = options->frequency_penalty = NAN;
  options->top_k = options->repeat_last_n = options->max_tokens = UNSET_INT;
  options->seed = options->image_tokens = options->context_size = UNSET_INT;
  options->media = gemmactl_media_list_new ();
}

void
gemmactl_gen_options_clear (GemmactlGenOptions *options)
{
  g_clear_pointer (&options->system, g_free);
  g_clear_pointer (&options->stop, g_strfreev);
  g_clear_pointer (&options->media, g_ptr_array_unref);
  if (parsing_options == options)
    parsing_options = NULL;
}

static void
media_free (gpointer data)
{
  GemmactlMedia *media = data;
  g_free (media->path);
  g_free (media);
}

GPtrArray *
gemmactl_media_list_new (void)
{
  return g_ptr_array_new_with_free_func (media_free);
}

void
gemmactl_media_list_add (GPtrArray *media, const char *type, const char *path)
{
  GemmactlMedia *m = g_new (GemmactlMedia, 1);
  m->type = g_str_equal (type, "audio") ? "audio" : "image";
  m->path = g_strdup (path);
  g_ptr_array_add (media, m);
}

static gboolean
on_media_option (const char *option_name, const char *value, gpointer data, GError **error)
{
  if (parsing_options == NULL)
    return FALSE;
  gemmactl_media_list_add (parsing_options->media,
                           g_str_equal (option_name, "--audio") ? "audio" : "image", value);
  return TRUE;
}

void
gemmactl_gen_options_add_entries (GemmactlGenOptions *o, GOptionContext *context,
                                  GemmactlOptionsScope scope)
{
  parsing_options = o;
  gboolean generate = scope == GEMMACTL_OPTIONS_GENERATE;
  const GOptionEntry prompt_entries[] = {
    { "image", 0, G_OPTION_FLAG_FILENAME, G_OPTION_ARG_CALLBACK, (gpointer) on_media_option,
      generate ? "Add an image (PNG, JPEG) before the text; repeatable"
               : "Attach an image to the first message; repeatable", "FILE" },
    { "audio", 0, G_OPTION_FLAG_FILENAME, G_OPTION_ARG_CALLBACK, (gpointer) on_media_option,
      generate ? "Add a sound file (WAV, FLAC, Ogg, MP3, AIFF, AU) before the text; repeatable"
               : "Attach an audio clip to the first message; repeatable", "FILE" },
    { "system", 0, 0, G_OPTION_ARG_STRING, &o->system, "System instructions", "TEXT" },
    { "thinking", 0, 0, G_OPTION_ARG_NONE, &o->thinking, "Let the model think first", NULL },
    { "no-thinking", 0, 0, G_OPTION_ARG_NONE, &o->no_thinking,
      "Do not let the model think (when the service's default is to think)", NULL },
    G_OPTION_ENTRY_NULL
  };
  const GOptionEntry raw_entries[] = {
    { "raw", 0, 0, G_OPTION_ARG_NONE, &o->raw,
      "No chat template: the prompt as is, special tokens parsed", NULL },
    G_OPTION_ENTRY_NULL
  };
  const GOptionEntry context_entries[] = {
    { "context-size", 0, 0, G_OPTION_ARG_INT64, &o->context_size,
      "Context window of the session, in tokens (at most the service's)", "N" },
    G_OPTION_ENTRY_NULL
  };
  const GOptionEntry sampling_entries[] = {
    { "max-tokens", 'n', 0, G_OPTION_ARG_INT64, &o->max_tokens,
      "Most tokens to generate (-1: until the end or a full context)", "N" },
    { "temperature", 0, 0, G_OPTION_ARG_DOUBLE, &o->temperature,
      "Sampling temperature, 0 … 100 (0: greedy)", "T" },
    { "top-k", 0, 0, G_OPTION_ARG_INT64, &o->top_k, "Top-k (0: off)", "K" },
    { "top-p", 0, 0, G_OPTION_ARG_DOUBLE, &o->top_p, "Top-p, 0 < p ≤ 1 (1: off)", "P" },
    { "min-p", 0, 0, G_OPTION_ARG_DOUBLE, &o->min_p, "Min-p, 0 ≤ p < 1 (0: off)", "P" },
    { "repeat-penalty", 0, 0, G_OPTION_ARG_DOUBLE, &o->repeat_penalty,
      "Repetition penalty, 0 < r ≤ 10 (1: off)", "R" },
    { "repeat-last-n", 0, 0, G_OPTION_ARG_INT64, &o->repeat_last_n,
      "Tokens the repetition penalty looks back (-1: all, 0: off)", "N" },
    { "presence-penalty", 0, 0, G_OPTION_ARG_DOUBLE, &o->presence_penalty,
      "Presence penalty, -2 … 2", "X" },
    { "frequency-penalty", 0, 0, G_OPTION_ARG_DOUBLE, &o->frequency_penalty,
      "Frequency penalty, -2 … 2", "X" },
    { "seed", 0, 0, G_OPTION_ARG_INT64, &o->seed,
      "Random seed (default: a new one each time, shown with --json)", "N" },
    { "stop", 0, 0, G_OPTION_ARG_STRING_ARRAY, &o->stop,
      "Stop before this text (C escapes such as \\n work); repeatable", "TEXT" },
    { "image-tokens", 0, 0, G_OPTION_ARG_INT64, &o->image_tokens,
      "Soft tokens per image: 70, 140, 280, 560 or 1120", "N" },
    G_OPTION_ENTRY_NULL
  };
  g_option_context_add_main_entries (context, prompt_entries, NULL);
  if (generate)
    g_option_context_add_main_entries (context, raw_entries, NULL);
  else
    g_option_context_add_main_entries (context, context_entries, NULL);
  g_option_context_add_main_entries (context, sampling_entries, NULL);
}

static void
set_double (JsonObject *object, const char *name, double value)
{
  if (!isnan (value))
    json_object_set_double_member (object, name, value);
}

static void
set_int (JsonObject *object, const char *name, gint64 value)
{
  if (value != UNSET_INT)
    json_object_set_int_member (object, name, value);
}

static gboolean
check_utf8 (const char *text, const char *what, GError **error)
{
  if (text == NULL || g_utf8_validate (text, -1, NULL))
    return TRUE;
  gemmactl_set_error (error, GEMMACTL_EXIT_USAGE, "usage", NULL, "%s is not valid UTF-8", what);
  return FALSE;
}

JsonObject *
gemmactl_gen_options_to_json (const GemmactlGenOptions *o, GemmactlOptionsScope scope,
                              GError **error)
{
  if (o->thinking && o->no_thinking) {
    gemmactl_set_error (error, GEMMACTL_EXIT_USAGE, "usage", NULL,
                        "--thinking and --no-thinking contradict each other");
    return NULL;
  }
  if (!check_utf8 (o->system, "--system", error))
    return NULL;

  g_autoptr (JsonObject) json = json_object_new ();
  if (o->system != NULL)
    json_object_set_string_member (json, "system", o->system);
  if (o->thinking || o->no_thinking)
    json_object_set_boolean_member (json, "thinking", o->thinking);
  if (o->raw && scope == GEMMACTL_OPTIONS_GENERATE)
    json_object_set_boolean_member (json, "raw", TRUE);
  set_double (json, "temperature", o->temperature);
  set_int (json, "top_k", o->top_k);
  set_double (json, "top_p", o->top_p);
  set_double (json, "min_p", o->min_p);
  set_double (json, "repeat_penalty", o->repeat_penalty);
  set_int (json, "repeat_last_n", o->repeat_last_n);
  set_double (json, "presence_penalty", o->presence_penalty);
  set_double (json, "frequency_penalty", o->frequency_penalty);
  set_int (json, "seed", o->seed);
  set_int (json, "max_tokens", o->max_tokens);
  set_int (json, "image_tokens", o->image_tokens);
  if (scope == GEMMACTL_OPTIONS_SESSION)
    set_int (json, "context_size", o->context_size);
  if (o->stop != NULL) {
    JsonArray *stop = json_array_new ();
    for (char **s = o->stop; *s != NULL; s++) {
      g_autofree char *text = g_strcompress (*s);
      if (!check_utf8 (text, "--stop", error)) {
        json_array_unref (stop);
        return NULL;
      }
      json_array_add_string_element (stop, text);
    }
    json_object_set_array_member (json, "stop", stop);
  }
  return g_steal_pointer (&json);
}

/* ---- media ---------------------------------------------------------------------------- */

static gboolean
copy_to_memfd (int in, const char *path, gint64 max_bytes, int *out, GError **error)
{
  int fd = memfd_create ("gemmactl-media", MFD_CLOEXEC);
  if (fd < 0) {
    gemmactl_set_error (error, GEMMACTL_EXIT_FAILED, "internal", NULL,
                        "%s: cannot create a memory file: %s", path, g_strerror (errno));
    return FALSE;
  }
  guint64 limit = max_bytes > 0 ? (guint64) max_bytes + 1 : G_MAXUINT64;
  guint64 total = 0;
  char buf[65536];
  while (total < limit) {
    ssize_t n = read (in, buf, (size_t) MIN (sizeof buf, limit - total));
    if (n == 0)
      break;
    if (n < 0) {
      if (errno == EINTR)
        continue;
      gemmactl_set_error (error, GEMMACTL_EXIT_USAGE, "file_error", NULL, "%s: %s", path,
                          g_strerror (errno));
      close (fd);
      return FALSE;
    }
    for (ssize_t done = 0; done < n;) {
      ssize_t w = write (fd, buf + done, (size_t) (n - done));
      if (w < 0 && errno == EINTR)
        continue;
      if (w < 0) {
        gemmactl_set_error (error, GEMMACTL_EXIT_FAILED, "internal", NULL,
                            "%s: cannot copy into a memory file: %s", path, g_strerror (errno));
        close (fd);
        return FALSE;
      }
      done += w;
    }
    total += (guint64) n;
  }
  *out = fd;
  return TRUE;
}

/* The service takes regular files (and memfds) only; anything else readable is copied. */
static gboolean
open_media (const char *path, gint64 max_bytes, int *out, GError **error)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    gemmactl_set_error (error, GEMMACTL_EXIT_USAGE, "file_error", NULL, "%s: %s", path,
                        g_strerror (errno));
    return FALSE;
  }
  struct stat st;
  if (fstat (fd, &st) < 0 || S_ISDIR (st.st_mode)) {
    gemmactl_set_error (error, GEMMACTL_EXIT_USAGE, "file_error", NULL, "%s: %s", path,
                        S_ISDIR (st.st_mode) ? "is a directory" : g_strerror (errno));
    close (fd);
    return FALSE;
  }
  if (S_ISREG (st.st_mode)) {
    *out = fd;
    return TRUE;
  }
  gboolean ok = copy_to_memfd (fd, path, max_bytes, out, error);
  close (fd);
  return ok;
}

gboolean
gemmactl_content_build (GPtrArray *media, const char *text, gint64 max_media_bytes,
                        JsonArray **content_out, GArray **fds_out, GError **error)
{
  g_autoptr (JsonArray) content = json_array_new ();
  GArray *fds = g_array_new (FALSE, FALSE, sizeof (int));
  for (guint i = 0; media != NULL && i < media->len; i++) {
    const GemmactlMedia *m = media->pdata[i];
    int fd = -1;
    if (!open_media (m->path, max_media_bytes, &fd, error)) {
      gemmactl_fds_free (fds);
      return FALSE;
    }
    JsonObject *part = json_object_new ();
    json_object_set_string_member (part, "type", m->type);
    json_object_set_int_member (part, "fd", fds->len);
    json_array_add_object_element (content, part);
    g_array_append_val (fds, fd);
  }
  if (text != NULL && *text != '\0') {
    if (!check_utf8 (text, "the prompt", error)) {
      gemmactl_fds_free (fds);
      return FALSE;
    }
    JsonObject *part = json_object_new ();
    json_object_set_string_member (part, "type", "text");
    json_object_set_string_member (part, "text", text);
    json_array_add_object_element (content, part);
  }
  if (json_array_get_length (content) == 0) {
    gemmactl_set_error (error, GEMMACTL_EXIT_USAGE, "usage", NULL, "the prompt is empty");
    gemmactl_fds_free (fds);
    return FALSE;
  }
  *content_out = g_steal_pointer (&content);
  *fds_out = fds;
  return TRUE;
}

void
gemmactl_fds_free (GArray *fds)
{
  if (fds == NULL)
    return;
  for (guint i = 0; i < fds->len; i++)
    close (g_array_index (fds, int, i));
  g_array_unref (fds);
}
