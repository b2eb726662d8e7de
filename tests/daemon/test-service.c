/* test-service.c — GmdService on the tiny model: streaming, summaries, determinism,
 * limits, fairness, cancellation, sessions, media errors, shutdown, load failure, images
 * and audio (decoded, encoded, spliced into prompts, kept by sessions). */
#include <glib.h>
#include <glib/gstdio.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "gmd-test-mmproj.h"
#include "gmd-engine.h"
#include "gmd-service.h"
#include "audio/audio-decode.h"
#include "audio/audio-features.h"
#include "vision/image-decode.h"
#include "vision/image-preprocess.h"

static char *tiny_model_path;

/* ---- helpers --------------------------------------------------------------------------- */

typedef struct {
  GmdRequest *request;
  GString *text;
  GString *thinking;
  GArray *states;            /* GmdRequestState of each progress() */
  GArray *positions;         /* queue_position of each QUEUED progress() */
  guint n_callbacks;
  gboolean first_was_progress;
  gboolean finished;
  guint32 next_seq;
  gboolean seq_ok;
  guint n_pieces;
  GmdSummary summary;
  char *error_message;
  char *matched_stop;
  int finish_order;          /* 1-based order among finished requests */
  guint callbacks_after_abandon;
  gboolean abandoned;
} Collect;

static int finish_counter;

static Collect *
collect_new (void)
{
  Collect *c = g_new0 (Collect, 1);
  c->text = g_string_new (NULL);
  c->thinking = g_string_new (NULL);
  c->states = g_array_new (FALSE, FALSE, sizeof (GmdRequestState));
  c->positions = g_array_new (FALSE, FALSE, sizeof (guint32));
  c->seq_ok = TRUE;
  return c;
}

static void
collect_free (Collect *c)
{
  gmd_request_unref (c->request);
  g_string_free (c->text, TRUE);
  g_string_free (c->thinking, TRUE);
  g_array_unref (c->states);
  g_array_unref (c->positions);
  g_free (c->error_message);
  g_free (c->matched_stop);
  g_free (c);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC (Collect, collect_free)

static void
on_progress (GmdRequest *r, const GmdProgress *p, gpointer user_data)
{
  Collect *c = user_data;
  g_assert_false (c->finished);
  if (c->abandoned)
    c->callbacks_after_abandon++;
  if (c->n_callbacks++ == 0)
    c->first_was_progress = TRUE;
  g_array_append_val (c->states, p->state);
  if (p->state == GMD_STATE_QUEUED)
    g_array_append_val (c->positions, p->queue_position);
  if (p->state == GMD_STATE_PREFILL || p->state == GMD_STATE_ENCODING)
    g_assert_cmpuint (p->prompt_done, <=, p->prompt_total);
}

static void
on_piece (GmdRequest *r, guint32 seq, gboolean thinking, const char *text, gpointer user_data)
{
  Collect *c = user_data;
  g_assert_false (c->finished);
  if (c->abandoned)
    c->callbacks_after_abandon++;
  c->n_callbacks++;
  g_assert_nonnull (text);
  g_assert_cmpuint (strlen (text), >, 0);
  g_assert_true (g_utf8_validate (text, -1, NULL));
  if (seq != c->next_seq)
    c->seq_ok = FALSE;
  c->next_seq = seq + 1;
  c->n_pieces++;
  g_string_append (thinking ? c->thinking : c->text, text);
}

static void
on_finished (GmdRequest *r, const GmdSummary *s, gpointer user_data)
{
  Collect *c = user_data;
  g_assert_false (c->finished);
  if (c->abandoned)
    c->callbacks_after_abandon++;
  c->n_callbacks++;
  c->finished = TRUE;
  c->finish_order = ++finish_counter;
  c->summary = *s;
  c->error_message = g_strdup (s->error_message);
  c->matched_stop = g_strdup (s->matched_stop);
  c->summary.error_message = c->error_message;
  c->summary.matched_stop = c->matched_stop;
  g_assert_true (gmd_request_is_finished (r));
}

static const GmdRequestSink sink = { on_progress, on_piece, on_finished };

typedef gboolean (*Condition) (gpointer data);

static gboolean
on_timeout (gpointer data)
{
  *(gboolean *) data = TRUE;
  return G_SOURCE_REMOVE;
}

/* Iterates the main context until cond holds; fails the test after timeout_s. */
static void
wait_until (Condition cond, gpointer data, guint timeout_s)
{
  gboolean timed_out = FALSE;
  guint id = g_timeout_add_seconds (timeout_s, on_timeout, &timed_out);
  while (!cond (data) && !timed_out)
    g_main_context_iteration (NULL, TRUE);
  if (!timed_out)
    g_source_remove (id);
  g_assert_false (timed_out);
}

static gboolean
is_finished (gpointer data)
{
  return ((Collect *) data)->finished;
}

static gboolean
is_accepted (gpointer data)
{
  return ((Collect *) data)->n_callbacks > 0;
}

static gboolean
is_generating (gpointer data)
{
  Collect *c = data;
  return c->finished || c->n_pieces > 0;
}

static void
wait_finished (Collect *c)
{
  wait_until (is_finished, c, 60);
}

/* Runs the main context for a while (events that must not come get their chance). */
static void
spin (guint ms)
{
  gint64 end = g_get_monotonic_time () + ms * 1000;
  while (g_get_monotonic_time () < end)
    {
      g_main_context_iteration (NULL, FALSE);
      g_usleep (1000);
    }
}

static GmdConfig *
test_config (void)
{
  GmdConfig *config = gmd_config_new_default ();
  config->model_path = g_strdup (tiny_model_path);
  config->threads = 2;
  config->batch = 64;
  config->bus = GMD_BUS_NONE;
  return config;
}

static GmdService *
new_service (GmdConfig *config)
{
  g_autoptr (GError) error = NULL;
  GmdService *s = gmd_service_new (config, &error);
  g_assert_no_error (error);
  g_assert_nonnull (s);
  gmd_service_wait_loaded (s);
  return s;
}

static GPtrArray *
text_parts (const char *text)
{
  GPtrArray *parts = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_part_free);
  g_autoptr (GError) error = NULL;
  GmdPart *p = gmd_part_new_text (text, strlen (text), "content[0]", &error);
  g_assert_no_error (error);
  g_ptr_array_add (parts, p);
  return parts;
}

static GmdOptions *
options (gint32 max_tokens, guint64 seed)
{
  GmdOptions *o = gmd_options_new ();
  o->max_tokens = max_tokens;
  o->set |= GMD_OPT_MAX_TOKENS;
  if (seed)
    {
      o->sampling.seed = seed;
      o->set |= GMD_OPT_SEED;
    }
  return o;
}

/* Submits text; the Collect owns the request reference. */
static Collect *
submit (GmdService *s, GmdClient *client, GmdSession *session, const char *text,
        GmdOptions *o, GError **error)
{
  Collect *c = collect_new ();
  c->request = gmd_service_submit (s, client, session, text_parts (text), o, &sink, c, error);
  if (c->request == NULL)
    {
      collect_free (c);
      return NULL;
    }
  g_assert_cmpuint (c->n_callbacks, ==, 0);  /* never from inside submit */
  return c;
}

static Collect *
submit_ok (GmdService *s, GmdClient *client, GmdSession *session, const char *text,
           GmdOptions *o)
{
  g_autoptr (GError) error = NULL;
  Collect *c = submit (s, client, session, text, o, &error);
  g_assert_no_error (error);
  return c;
}

static gboolean
service_idle (gpointer data)
{
  const GmdServiceInfo *info = gmd_service_get_info (data);
  return info->queue_length == 0 && info->active_requests == 0;
}

/* ---- tests ----------------------------------------------------------------------------- */

static void
test_load_info (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  GmdService *s = gmd_service_new (config, NULL);
  g_assert_cmpint (gmd_service_get_info (s)->load_state, ==, GMD_LOAD_LOADING);
  gmd_service_wait_loaded (s);
  const GmdServiceInfo *info = gmd_service_get_info (s);
  g_assert_cmpint (info->load_state, ==, GMD_LOAD_LOADED);
  g_assert_cmpstr (info->load_error, ==, "");
  g_assert_cmpstr (info->architecture, ==, "gemma4");
  g_assert_cmpstr (info->model_path, ==, tiny_model_path);
  g_assert_cmpstr (info->model_name, !=, "");
  g_assert_cmpstr (info->quantization, !=, "");
  g_assert_cmpuint (info->context_size, ==, MIN (info->n_ctx_train, 4096u));
  g_assert_cmpuint (info->n_params, >, 0);
  g_assert_cmpuint (info->file_bytes, >, 0);
  g_assert_cmpuint (info->threads, ==, 2);
  g_assert_true (g_strv_contains (info->modalities, "text"));
  g_assert_cmpuint (g_strv_length ((char **) info->modalities), ==, 1);
  gmd_service_free (s);
}

static void
test_stream_and_determinism (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);

  g_autoptr (Collect) a = submit_ok (s, client, NULL, "Why is the sky blue?", options (24, 42));
  g_assert_cmpstr (gmd_request_get_handle (a->request), !=, NULL);
  g_assert_true (gmd_service_find_request (s, gmd_request_get_handle (a->request)) == a->request);
  wait_finished (a);

  g_assert_true (a->first_was_progress);
  g_assert_cmpint (g_array_index (a->states, GmdRequestState, 0), ==, GMD_STATE_QUEUED);
  g_assert_cmpuint (g_array_index (a->positions, guint32, 0), ==, 0);
  gboolean saw_prefill = FALSE, saw_generating = FALSE;
  for (guint i = 0; i < a->states->len; i++)
    {
      GmdRequestState st = g_array_index (a->states, GmdRequestState, i);
      saw_prefill |= st == GMD_STATE_PREFILL;
      if (st == GMD_STATE_GENERATING)
        {
          g_assert_true (saw_prefill);
          saw_generating = TRUE;
        }
    }
  g_assert_true (saw_generating);
  g_assert_true (a->seq_ok);
  g_assert_cmpint (a->summary.stop_reason, ==, GMD_STOP_MAX_TOKENS);
  g_assert_cmpuint (a->summary.generated_tokens, ==, 24);
  g_assert_cmpuint (a->summary.pieces, ==, a->n_pieces);
  g_assert_cmpuint (a->n_pieces, >, 0);
  g_assert_cmpuint (a->summary.seed, ==, 42);
  g_assert_cmpuint (a->summary.prompt_tokens, >, 5);
  g_assert_cmpuint (a->summary.cached_tokens, ==, 0);
  g_assert_cmpuint (a->summary.context_size, ==, gmd_service_get_info (s)->context_size);
  g_assert_cmpuint (a->summary.context_used, ==, a->summary.prompt_tokens + 23);
  g_assert_cmpfloat (a->summary.total_seconds, >=, a->summary.prefill_seconds);
  g_assert_cmpfloat (a->summary.decode_seconds, >, 0.0);
  g_assert_cmpuint (a->text->len, >, 0);
  g_assert_null (gmd_service_find_request (s, gmd_request_get_handle (a->request)));
  g_assert_cmpint (gmd_request_get_state (a->request), ==, GMD_STATE_FINISHED);

  /* the same seed and prompt give the same text; the prompt comes from the cache */
  g_autoptr (Collect) b = submit_ok (s, client, NULL, "Why is the sky blue?", options (24, 42));
  wait_finished (b);
  g_assert_cmpstr (b->text->str, ==, a->text->str);
  g_assert_cmpuint (b->summary.cached_tokens, ==, a->summary.prompt_tokens - 1);

  /* a random seed is reported, and reproduces the text */
  g_autoptr (Collect) c = submit_ok (s, client, NULL, "Tell me a story.", options (12, 0));
  wait_finished (c);
  g_autoptr (Collect) d = submit_ok (s, client, NULL, "Tell me a story.",
                                     options (12, c->summary.seed));
  wait_finished (d);
  g_assert_cmpstr (d->text->str, ==, c->text->str);

  /* a stop string cuts the text before its first occurrence and is reported: take two
   * ASCII letters from the second half of the text */
  const char *t = a->text->str;
  gsize at = a->text->len / 2;
  while (at + 1 < a->text->len && !(g_ascii_isalpha (t[at]) && g_ascii_isalpha (t[at + 1])))
    at++;
  g_assert_cmpuint (at + 1, <, a->text->len);
  g_autofree char *stop = g_strndup (t + at, 2);
  gsize first = (gsize) (strstr (t, stop) - t);
  GmdOptions *o = options (24, 42);
  g_ptr_array_add (o->stop, g_strdup (stop));
  o->set |= GMD_OPT_STOP;
  g_autoptr (Collect) e = submit_ok (s, client, NULL, "Why is the sky blue?", o);
  wait_finished (e);
  g_assert_cmpint (e->summary.stop_reason, ==, GMD_STOP_STOP_STRING);
  g_assert_cmpstr (e->summary.matched_stop, ==, stop);
  g_assert_cmpuint (e->text->len, ==, first);
  g_assert_true (strncmp (e->text->str, t, first) == 0);
  gmd_service_free (s);
}

static void
test_raw_and_thinking (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);

  GmdOptions *o = options (8, 1);
  o->raw = TRUE;
  o->set |= GMD_OPT_RAW;
  g_autoptr (Collect) raw = submit_ok (s, client, NULL, "<|turn>user\nHi<turn|>\n", o);
  wait_finished (raw);
  g_assert_cmpint (raw->summary.stop_reason, ==, GMD_STOP_MAX_TOKENS);
  /* BOS + parsed special tokens: far fewer positions than characters */
  g_assert_cmpuint (raw->summary.prompt_tokens, <, 12);

  o = options (8, 1);
  o->thinking = TRUE;
  o->set |= GMD_OPT_THINKING;
  g_autoptr (Collect) think = submit_ok (s, client, NULL, "Hi", o);
  wait_finished (think);
  g_assert_cmpint (think->summary.stop_reason, ==, GMD_STOP_MAX_TOKENS);
  g_assert_cmpuint (think->summary.thinking_tokens, <=, think->summary.generated_tokens);
  gmd_service_free (s);
}

static void
test_queue_limits (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  config->limits.max_queue = 2;
  config->limits.max_queued_per_client = 2;
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) x = gmd_service_get_client (s, "x", 1000);
  g_autoptr (GmdClient) y = gmd_service_get_client (s, "y", 1001);
  g_autoptr (GmdClient) z = gmd_service_get_client (s, "z", 1002);
  g_autoptr (GError) error = NULL;

  g_autoptr (Collect) x1 = submit_ok (s, x, NULL, "one", options (-1, 1));
  wait_until (is_generating, x1, 30);
  g_autoptr (Collect) x2 = submit_ok (s, x, NULL, "two", options (4, 1));
  /* x has one running and one waiting: its quota is full */
  Collect *x3 = submit (s, x, NULL, "three", options (4, 1), &error);
  g_assert_null (x3);
  g_assert_error (error, GMD_ERROR, GMD_ERROR_BUSY);
  g_assert_nonnull (strstr (error->message, "max_queued_per_client"));
  g_clear_error (&error);

  g_autoptr (Collect) y1 = submit_ok (s, y, NULL, "four", options (4, 1));
  /* two waiting: the queue is full for everybody */
  Collect *z1 = submit (s, z, NULL, "five", options (4, 1), &error);
  g_assert_null (z1);
  g_assert_error (error, GMD_ERROR, GMD_ERROR_BUSY);
  g_assert_nonnull (strstr (error->message, "max_queue"));
  g_clear_error (&error);

  g_assert_true (gmd_request_cancel (x1->request, GMD_CANCEL_CLIENT));
  wait_finished (x1);
  wait_finished (x2);
  wait_finished (y1);
  g_assert_cmpint (x1->summary.stop_reason, ==, GMD_STOP_CANCELLED);
  g_assert_cmpint (x1->summary.cancel_reason, ==, GMD_CANCEL_CLIENT);
  g_assert_cmpint (x2->summary.stop_reason, ==, GMD_STOP_MAX_TOKENS);
  g_assert_false (gmd_request_cancel (x1->request, GMD_CANCEL_CLIENT));
  gmd_service_free (s);
}

static void
test_round_robin (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) a = gmd_service_get_client (s, "a", 1000);
  g_autoptr (GmdClient) b = gmd_service_get_client (s, "b", 1001);

  finish_counter = 0;
  g_autoptr (Collect) a1 = submit_ok (s, a, NULL, "first", options (-1, 1));
  wait_until (is_generating, a1, 30);
  g_autoptr (Collect) a2 = submit_ok (s, a, NULL, "second", options (4, 1));
  g_autoptr (Collect) a3 = submit_ok (s, a, NULL, "third", options (4, 1));
  g_autoptr (Collect) b1 = submit_ok (s, b, NULL, "fourth", options (4, 1));
  wait_until (is_accepted, b1, 30);
  g_assert_false (a1->finished);
  gmd_request_cancel (a1->request, GMD_CANCEL_CLIENT);
  wait_finished (a3);
  wait_finished (b1);
  /* a was just served when b came: b's single request does not wait for a's two */
  g_assert_cmpint (a1->finish_order, ==, 1);
  g_assert_cmpint (b1->finish_order, ==, 2);
  g_assert_cmpint (a2->finish_order, ==, 3);
  g_assert_cmpint (a3->finish_order, ==, 4);
  /* positions: a3 was behind a2, then moved up when b1 went before it... */
  g_assert_cmpuint (g_array_index (a2->positions, guint32, 0), ==, 0);
  g_assert_cmpuint (g_array_index (a3->positions, guint32, 0), ==, 1);
  /* ...and b1 was put first, pushing a2 and a3 back */
  g_assert_cmpuint (g_array_index (b1->positions, guint32, 0), ==, 0);
  g_assert_cmpuint (a2->positions->len, >=, 2);
  g_assert_cmpuint (g_array_index (a2->positions, guint32, 1), ==, 1);
  g_assert_cmpuint (g_array_index (a3->positions, guint32, a3->positions->len - 1), ==, 0);
  gmd_service_free (s);
}

static void
test_cancel (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);

  g_autoptr (Collect) running = submit_ok (s, client, NULL, "run long", options (-1, 1));
  g_autoptr (Collect) queued = submit_ok (s, client, NULL, "wait", options (4, 1));
  wait_until (is_generating, running, 30);
  wait_until (is_accepted, queued, 30);
  g_assert_cmpint (gmd_request_get_state (queued->request), ==, GMD_STATE_QUEUED);

  g_autoptr (GPtrArray) list = gmd_service_list_requests (s, 1000);
  g_assert_cmpuint (list->len, ==, 2);
  g_assert_true (list->pdata[0] == running->request);
  g_autoptr (GPtrArray) none = gmd_service_list_requests (s, 1001);
  g_assert_cmpuint (none->len, ==, 0);

  /* a queued request ends at once, without reaching the engine */
  g_assert_true (gmd_request_cancel (queued->request, GMD_CANCEL_CLIENT));
  g_assert_false (gmd_request_cancel (queued->request, GMD_CANCEL_CLIENT));
  wait_finished (queued);
  g_assert_cmpint (queued->summary.stop_reason, ==, GMD_STOP_CANCELLED);
  g_assert_cmpint (queued->summary.cancel_reason, ==, GMD_CANCEL_CLIENT);
  g_assert_cmpuint (queued->n_pieces, ==, 0);
  g_assert_cmpuint (queued->summary.generated_tokens, ==, 0);
  g_assert_false (running->finished);

  /* the running one stops at the next token */
  g_assert_true (gmd_request_cancel (running->request, GMD_CANCEL_ADMIN));
  wait_finished (running);
  g_assert_cmpint (running->summary.stop_reason, ==, GMD_STOP_CANCELLED);
  g_assert_cmpint (running->summary.cancel_reason, ==, GMD_CANCEL_ADMIN);
  g_assert_cmpuint (running->summary.generated_tokens, >, 0);
  g_assert_cmpuint (running->summary.generated_tokens, <, 4000);
  g_assert_cmpuint (running->summary.pieces, ==, running->n_pieces);
  g_assert_true (service_idle (s));
  gmd_service_free (s);
}

static void
test_abandon (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);

  g_autoptr (Collect) running = submit_ok (s, client, NULL, "run long", options (-1, 1));
  g_autoptr (Collect) queued = submit_ok (s, client, NULL, "wait", options (4, 1));
  wait_until (is_generating, running, 30);
  running->abandoned = TRUE;
  gmd_request_abandon (running->request);
  queued->abandoned = TRUE;
  gmd_request_abandon (queued->request);
  wait_until (service_idle, s, 30);
  spin (100);
  g_assert_cmpuint (running->callbacks_after_abandon, ==, 0);
  g_assert_cmpuint (queued->callbacks_after_abandon, ==, 0);
  g_assert_true (gmd_request_is_finished (running->request));
  g_assert_true (gmd_request_is_finished (queued->request));

  /* and the service goes on */
  g_autoptr (Collect) next = submit_ok (s, client, NULL, "next", options (4, 1));
  wait_finished (next);
  g_assert_cmpint (next->summary.stop_reason, ==, GMD_STOP_MAX_TOKENS);
  gmd_service_free (s);
}

static void
test_free_with_running_request (void)
{
  /* the front end still holds the request after the service is gone */
  g_autoptr (GmdConfig) config = test_config ();
  GmdService *s = new_service (config);
  GmdClient *client = gmd_service_get_client (s, "a", 1000);
  g_autoptr (Collect) running = submit_ok (s, client, NULL, "run long", options (-1, 1));
  g_autoptr (Collect) queued = submit_ok (s, client, NULL, "wait", options (4, 1));
  wait_until (is_generating, running, 30);
  gmd_service_free (s);
  g_assert_true (gmd_request_is_finished (running->request));
  g_assert_false (gmd_request_cancel (running->request, GMD_CANCEL_CLIENT));
  gmd_request_abandon (queued->request);
  gmd_client_unref (client);
}

typedef struct {
  int closed;
  GmdCloseReason reason;
} ClosedInfo;

static void
on_session_closed (GmdSession *session, GmdCloseReason reason, gpointer user_data)
{
  ClosedInfo *ci = user_data;
  ci->closed++;
  ci->reason = reason;
}

static gboolean
is_closed (gpointer data)
{
  return ((ClosedInfo *) data)->closed > 0;
}

static GmdSession *
open_session (GmdService *s, GmdClient *client, const char *system, guint32 context_size,
              ClosedInfo *ci, GError **error)
{
  GmdOptions *o = gmd_options_new ();
  if (system)
    {
      o->system = g_strdup (system);
      o->set |= GMD_OPT_SYSTEM;
    }
  if (context_size)
    {
      o->context_size = context_size;
      o->set |= GMD_OPT_CONTEXT_SIZE;
    }
  return gmd_service_open_session (s, client, o, on_session_closed, ci, error);
}

static void
test_session (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  g_autoptr (GError) error = NULL;
  ClosedInfo ci = { 0 };

  g_autoptr (GmdSession) session = open_session (s, client, "You are terse.", 0, &ci, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (gmd_session_get_context_size (session), ==,
                    gmd_service_get_info (s)->context_size);
  guint32 used0 = gmd_session_get_context_used (session);
  g_assert_cmpuint (used0, >, 3);
  g_assert_cmpuint (gmd_session_get_message_count (session), ==, 0);
  g_assert_cmpuint (gmd_service_get_info (s)->open_sessions, ==, 1);

  g_autoptr (Collect) t1 = submit_ok (s, client, session, "Capital of France?", options (8, 3));
  /* one turn at a time */
  Collect *busy = submit (s, client, session, "again", options (8, 3), &error);
  g_assert_null (busy);
  g_assert_error (error, GMD_ERROR, GMD_ERROR_BUSY);
  g_clear_error (&error);
  g_assert_true (gmd_session_has_running_turn (session));
  wait_finished (t1);
  g_assert_false (gmd_session_has_running_turn (session));
  g_assert_cmpint (t1->summary.stop_reason, ==, GMD_STOP_MAX_TOKENS);
  g_assert_cmpuint (t1->summary.prompt_tokens, >, used0);
  g_assert_cmpuint (gmd_session_get_message_count (session), ==, 2);
  g_assert_cmpuint (gmd_session_get_context_used (session), ==, t1->summary.context_used);
  g_assert_cmpuint (t1->summary.context_size, ==, gmd_session_get_context_size (session));

  /* a one-shot request in between does not disturb the session's cache */
  g_autoptr (Collect) other = submit_ok (s, client, NULL, "Something else", options (4, 3));
  wait_finished (other);

  g_autoptr (Collect) t2 = submit_ok (s, client, session, "And of Italy?", options (8, 3));
  wait_finished (t2);
  g_assert_cmpint (t2->summary.stop_reason, ==, GMD_STOP_MAX_TOKENS);
  /* turn 2 evaluates only itself: turn 1's whole prompt comes from the cache */
  g_assert_cmpuint (t2->summary.cached_tokens, >=, t1->summary.prompt_tokens);
  g_assert_cmpuint (t2->summary.prompt_tokens, >, t1->summary.context_used);
  g_assert_cmpuint (gmd_session_get_message_count (session), ==, 4);

  g_autoptr (GPtrArray) history = gmd_session_get_history (session);
  g_assert_cmpuint (history->len, ==, 4);
  const GmdMessage *m0 = history->pdata[0], *m1 = history->pdata[1], *m2 = history->pdata[2];
  g_assert_cmpint (m0->role, ==, GMD_ROLE_USER);
  g_assert_cmpstr (m0->text, ==, "Capital of France?");
  g_assert_cmpint (m1->role, ==, GMD_ROLE_MODEL);
  g_assert_cmpstr (m1->text, ==, t1->text->str);
  g_assert_cmpstr (m2->text, ==, "And of Italy?");

  /* truncate, and regenerate turn 2 with the same seed: the same answer */
  g_assert_false (gmd_session_truncate (session, 5, &error));
  g_assert_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_assert_true (gmd_session_truncate (session, 2, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (gmd_session_get_message_count (session), ==, 2);
  g_assert_cmpuint (gmd_session_get_context_used (session), ==, t1->summary.context_used);
  g_autoptr (Collect) t2b = submit_ok (s, client, session, "And of Italy?", options (8, 3));
  wait_finished (t2b);
  g_assert_cmpstr (t2b->text->str, ==, t2->text->str);
  g_assert_cmpuint (t2b->summary.cached_tokens, >=, t1->summary.prompt_tokens);

  /* a cancelled turn keeps what was sent; one cancelled before any text is removed */
  g_autoptr (Collect) t3 = submit_ok (s, client, session, "Tell a long story", options (-1, 3));
  wait_until (is_generating, t3, 30);
  gmd_request_cancel (t3->request, GMD_CANCEL_CLIENT);
  wait_finished (t3);
  g_assert_cmpuint (gmd_session_get_message_count (session), ==, 6);
  g_autoptr (GPtrArray) h3 = gmd_session_get_history (session);
  g_assert_cmpstr (((GmdMessage *) h3->pdata[5])->text, ==, t3->text->str);
  g_autoptr (Collect) t4 = submit_ok (s, client, session, "Never mind", options (-1, 3));
  gmd_request_cancel (t4->request, GMD_CANCEL_CLIENT);
  wait_finished (t4);
  /* cancelled before it was accepted: it ends as a rejection */
  g_assert_false (t4->first_was_progress);
  g_assert_cmpint (t4->summary.stop_reason, ==, GMD_STOP_ERROR);
  g_assert_cmpint (t4->summary.error_code, ==, GMD_ERROR_CANCELLED);
  g_assert_cmpuint (gmd_session_get_message_count (session), ==, 6);

  gmd_session_close (session);
  g_assert_true (gmd_session_is_closed (session));
  g_assert_cmpuint (gmd_service_get_info (s)->open_sessions, ==, 0);
  Collect *closed = submit (s, client, session, "hello?", options (4, 3), &error);
  g_assert_null (closed);
  g_clear_error (&error);
  spin (50);
  g_assert_cmpint (ci.closed, ==, 0);  /* closed by the client: no callback */
  gmd_service_free (s);
}

static void
test_session_limits (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  config->limits.max_sessions_per_client = 2;
  config->cache_slots = 1;
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  g_autoptr (GError) error = NULL;
  ClosedInfo ci = { 0 };

  g_autoptr (GmdSession) small = open_session (s, client, NULL, 64, &ci, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (gmd_session_get_context_size (small), ==, 64);
  g_autoptr (GmdSession) other = open_session (s, client, "Be nice.", 0, &ci, &error);
  g_assert_no_error (error);
  GmdSession *third = open_session (s, client, NULL, 0, &ci, &error);
  g_assert_null (third);
  g_assert_error (error, GMD_ERROR, GMD_ERROR_LIMIT_EXCEEDED);
  g_clear_error (&error);

  /* a context size above the service's is refused */
  gmd_session_close (other);
  GmdSession *huge = open_session (s, client, NULL, 1000000, &ci, &error);
  g_assert_null (huge);
  g_assert_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_autoptr (GmdSession) second = open_session (s, client, "Be nice.", 0, &ci, &error);
  g_assert_no_error (error);

  /* a turn that does not fit the 64-position window leaves the session unchanged */
  g_autoptr (Collect) t0 = submit_ok (s, client, small, "Hi", options (4, 5));
  wait_finished (t0);
  guint32 used = gmd_session_get_context_used (small);
  GString *big = g_string_new (NULL);
  for (int i = 0; i < 40; i++)
    g_string_append (big, "many words here ");
  g_autoptr (Collect) t1 = submit_ok (s, client, small, big->str, options (4, 5));
  g_string_free (big, TRUE);
  wait_finished (t1);
  g_assert_false (t1->first_was_progress);
  g_assert_cmpuint (t1->n_callbacks, ==, 1);
  g_assert_cmpint (t1->summary.stop_reason, ==, GMD_STOP_ERROR);
  g_assert_cmpint (t1->summary.error_code, ==, GMD_ERROR_CONTEXT_EXCEEDED);
  g_assert_cmpuint (gmd_session_get_message_count (small), ==, 2);
  g_assert_cmpuint (gmd_session_get_context_used (small), ==, used);
  g_assert_false (gmd_session_has_running_turn (small));

  /* with one cache slot, the other session's turn evicts small's cache: small's next
   * turn rebuilds it (same answer as without eviction, nothing cached) */
  g_autoptr (Collect) s1 = submit_ok (s, client, second, "Hello", options (4, 5));
  wait_finished (s1);
  g_autoptr (Collect) t2 = submit_ok (s, client, small, "Ok", options (4, 5));
  wait_finished (t2);
  g_assert_cmpint (t2->summary.stop_reason, !=, GMD_STOP_ERROR);
  g_assert_cmpuint (t2->summary.cached_tokens, ==, 0);
  gmd_service_free (s);
}

static void
test_prompt_limit (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  config->limits.max_prompt_tokens = 16;
  config->limits.max_text_bytes = 400;
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  g_autoptr (GError) error = NULL;

  g_autoptr (Collect) c = submit_ok (s, client, NULL,
                                     "one two three four five six seven eight nine ten eleven",
                                     options (4, 1));
  wait_finished (c);
  g_assert_false (c->first_was_progress);
  g_assert_cmpint (c->summary.error_code, ==, GMD_ERROR_LIMIT_EXCEEDED);
  g_assert_nonnull (strstr (c->summary.error_message, "max_prompt_tokens"));

  /* max_tokens beyond the window */
  Collect *too_many = submit (s, client, NULL, "hi", options (5000, 1), &error);
  g_assert_null (too_many);
  g_assert_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT);
  g_assert_true (g_str_has_prefix (error->message, "options.max_tokens: "));
  g_clear_error (&error);

  char text[501];
  memset (text, 'a', 500);
  text[500] = '\0';
  Collect *big = submit (s, client, NULL, text, options (4, 1), &error);
  g_assert_null (big);
  g_assert_error (error, GMD_ERROR, GMD_ERROR_LIMIT_EXCEEDED);
  g_assert_nonnull (strstr (error->message, "max_text_bytes"));
  gmd_service_free (s);
}

static GPtrArray *
media_parts (GmdPartType type, const void *data, gsize len)
{
  GPtrArray *parts = text_parts ("Look:");
  g_autoptr (GBytes) bytes = g_bytes_new (data, len);
  g_ptr_array_add (parts, gmd_part_new_media (type, bytes));
  return parts;
}

static void
expect_media_error (GmdService *s, GmdClient *client, GmdPartType type, const void *data,
                    gsize len, const char *expect)
{
  g_autoptr (GError) error = NULL;
  Collect *c = collect_new ();
  GmdRequest *r = gmd_service_submit (s, client, NULL, media_parts (type, data, len),
                                      options (4, 1), &sink, c, &error);
  g_assert_null (r);
  g_assert_error (error, GMD_ERROR, GMD_ERROR_UNSUPPORTED_MEDIA);
  g_assert_true (g_str_has_prefix (error->message, "content[1]: "));
  if (strstr (error->message, expect) == NULL)
    g_error ("'%s' does not contain '%s'", error->message, expect);
  collect_free (c);
}

static void
test_unsupported_media (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);

  expect_media_error (s, client, GMD_PART_IMAGE, "not an image", 12, "starts with 6e 6f 74 20");
  static const guint8 png[] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13 };
  expect_media_error (s, client, GMD_PART_IMAGE, png, sizeof png, "image input is not available");
  expect_media_error (s, client, GMD_PART_AUDIO, png, sizeof png, "not audio");
  static const char wav[] = "RIFF\x24\0\0\0WAVEfmt ";
  expect_media_error (s, client, GMD_PART_AUDIO, wav, sizeof wav - 1,
                      "audio input is not available: no mmproj loaded");
  expect_media_error (s, client, GMD_PART_VIDEO, png, sizeof png, "video");
  g_assert_true (service_idle (s));
  gmd_service_free (s);
}

typedef struct {
  int done;
  int finished_before_done;
  Collect *watch[2];
} ShutdownInfo;

static void
on_shutdown_done (GmdService *s, gpointer user_data)
{
  ShutdownInfo *si = user_data;
  si->done++;
  for (int i = 0; i < 2; i++)
    si->finished_before_done += si->watch[i]->finished;
}

static gboolean
shutdown_done (gpointer data)
{
  return ((ShutdownInfo *) data)->done > 0;
}

static void
test_shutdown (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  g_autoptr (GmdClient) other = gmd_service_get_client (s, "b", 1001);
  g_autoptr (GError) error = NULL;
  ClosedInfo ci = { 0 };

  g_autoptr (GmdSession) session = open_session (s, client, NULL, 0, &ci, &error);
  g_assert_no_error (error);
  g_autoptr (Collect) running = submit_ok (s, client, NULL, "run long", options (-1, 1));
  g_autoptr (Collect) queued = submit_ok (s, other, NULL, "wait", options (4, 1));
  wait_until (is_generating, running, 30);

  ShutdownInfo si = { .watch = { running, queued } };
  gmd_service_shutdown (s, 0, on_shutdown_done, &si);
  g_assert_true (gmd_service_is_stopping (s));
  Collect *late = submit (s, client, NULL, "late", options (4, 1), &error);
  g_assert_null (late);
  g_assert_error (error, GMD_ERROR, GMD_ERROR_BUSY);
  g_assert_cmpstr (error->message, ==, "service is stopping");
  g_clear_error (&error);

  wait_until (shutdown_done, &si, 30);
  g_assert_cmpint (si.finished_before_done, ==, 2);
  g_assert_cmpint (queued->summary.stop_reason, ==, GMD_STOP_CANCELLED);
  g_assert_cmpint (queued->summary.cancel_reason, ==, GMD_CANCEL_SHUTDOWN);
  /* no grace: the running request is cancelled at once */
  g_assert_cmpint (running->summary.stop_reason, ==, GMD_STOP_CANCELLED);
  g_assert_cmpint (running->summary.cancel_reason, ==, GMD_CANCEL_SHUTDOWN);
  g_assert_cmpint (ci.closed, ==, 1);
  g_assert_cmpint (ci.reason, ==, GMD_CLOSE_SHUTDOWN);
  g_assert_true (gmd_session_is_closed (session));
  gmd_service_free (s);
}

static void
test_shutdown_grace (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  g_autoptr (Collect) running = submit_ok (s, client, NULL, "short", options (30, 1));
  g_autoptr (Collect) queued = submit_ok (s, client, NULL, "wait", options (4, 1));
  wait_until (is_generating, running, 30);
  wait_until (is_accepted, queued, 30);

  /* a running request that ends within the grace period is not cut */
  ShutdownInfo si = { .watch = { running, queued } };
  gmd_service_shutdown (s, 60, on_shutdown_done, &si);
  wait_until (shutdown_done, &si, 30);
  g_assert_cmpint (si.finished_before_done, ==, 2);
  g_assert_cmpint (running->summary.stop_reason, ==, GMD_STOP_MAX_TOKENS);
  g_assert_cmpuint (running->summary.generated_tokens, ==, 30);
  g_assert_cmpint (queued->summary.cancel_reason, ==, GMD_CANCEL_SHUTDOWN);
  gmd_service_free (s);
}

typedef struct {
  int calls;
  gboolean ok;
} LoadDone;

static void
on_load_done (GmdService *s, const GError *error, gpointer user_data)
{
  LoadDone *ld = user_data;
  ld->calls++;
  ld->ok = error == NULL;
}

static gboolean
load_done (gpointer data)
{
  return ((LoadDone *) data)->calls > 0;
}

static void
test_load_failure (void)
{
  g_autofree char *path = NULL;
  g_autoptr (GError) error = NULL;
  int fd = g_file_open_tmp ("gmd-garbage-XXXXXX.gguf", &path, &error);
  g_assert_no_error (error);
  g_assert_true (write (fd, "this is not a gguf file at all", 30) == 30);
  close (fd);

  g_autoptr (GmdConfig) config = test_config ();
  g_free (config->model_path);
  config->model_path = g_strdup (path);
  GmdService *s = gmd_service_new (config, &error);
  g_assert_no_error (error);
  gmd_service_wait_loaded (s);
  const GmdServiceInfo *info = gmd_service_get_info (s);
  g_assert_cmpint (info->load_state, ==, GMD_LOAD_FAILED);
  g_assert_cmpstr (info->load_error, !=, "");
  g_assert_nonnull (strstr (info->load_error, path));

  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  Collect *c = submit (s, client, NULL, "hello", options (4, 1), &error);
  g_assert_null (c);
  g_assert_error (error, GMD_ERROR, GMD_ERROR_MODEL_NOT_LOADED);
  g_clear_error (&error);
  ClosedInfo ci = { 0 };
  GmdSession *session = open_session (s, client, NULL, 0, &ci, &error);
  g_assert_null (session);
  g_assert_error (error, GMD_ERROR, GMD_ERROR_MODEL_NOT_LOADED);
  g_clear_error (&error);

  /* an admin loads a good model */
  g_assert_false (gmd_service_load_model (s, "relative.gguf", NULL, 0, 0, TRUE, NULL, NULL,
                                          &error));
  g_assert_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);
  g_assert_true (gmd_service_load_model (s, tiny_model_path, NULL, 0, 0, TRUE, NULL, NULL,
                                         &error));
  g_assert_no_error (error);
  gmd_service_wait_loaded (s);
  g_assert_cmpint (info->load_state, ==, GMD_LOAD_LOADED);
  g_autoptr (Collect) ok = submit_ok (s, client, NULL, "hello", options (4, 1));
  wait_finished (ok);
  g_assert_cmpint (ok->summary.stop_reason, ==, GMD_STOP_MAX_TOKENS);

  /* an unreadable mmproj fails the load; the model in place keeps serving */
  LoadDone ld = { 0 };
  g_assert_true (gmd_service_load_model (s, tiny_model_path, path, 0, 0, TRUE, on_load_done,
                                         &ld, &error));
  g_assert_no_error (error);
  wait_until (load_done, &ld, 30);
  g_assert_false (ld.ok);
  g_assert_cmpint (info->load_state, ==, GMD_LOAD_LOADED);
  g_autoptr (Collect) still = submit_ok (s, client, NULL, "hello", options (4, 1));
  wait_finished (still);
  g_assert_cmpint (still->summary.stop_reason, ==, GMD_STOP_MAX_TOKENS);
  gmd_service_free (s);
  g_unlink (path);
}

static void
test_submit_while_loading (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  GmdService *s = gmd_service_new (config, NULL);
  g_assert_cmpint (gmd_service_get_info (s)->load_state, ==, GMD_LOAD_LOADING);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  g_autoptr (Collect) c = submit_ok (s, client, NULL, "early bird", options (4, 1));
  wait_finished (c);
  g_assert_true (c->first_was_progress);
  g_assert_cmpint (c->summary.stop_reason, ==, GMD_STOP_MAX_TOKENS);
  g_assert_cmpint (g_array_index (c->states, GmdRequestState, 0), ==, GMD_STATE_QUEUED);
  gboolean saw_loading = FALSE;
  for (guint i = 0; i < c->states->len; i++)
    saw_loading |= g_array_index (c->states, GmdRequestState, i) == GMD_STATE_LOADING;
  g_assert_true (saw_loading);
  g_assert_cmpfloat (c->summary.load_seconds, >, 0.0);
  gmd_service_free (s);
}

static void
test_model_switch (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  g_autoptr (GError) error = NULL;
  ClosedInfo ci = { 0 };
  g_autoptr (GmdSession) session = open_session (s, client, NULL, 0, &ci, &error);
  g_assert_no_error (error);

  /* not draining: the running request is cancelled (admin), the session closed */
  g_autoptr (Collect) running = submit_ok (s, client, NULL, "run long", options (-1, 1));
  wait_until (is_generating, running, 30);
  LoadDone ld = { 0 };
  g_assert_true (gmd_service_load_model (s, tiny_model_path, NULL, 256, 1, FALSE, on_load_done,
                                         &ld, &error));
  g_assert_no_error (error);
  g_assert_false (gmd_service_load_model (s, tiny_model_path, NULL, 0, 0, TRUE, NULL, NULL,
                                          &error));
  g_assert_error (error, GMD_ERROR, GMD_ERROR_BUSY);
  g_clear_error (&error);
  wait_until (load_done, &ld, 30);
  g_assert_true (ld.ok);
  wait_finished (running);
  g_assert_cmpint (running->summary.stop_reason, ==, GMD_STOP_CANCELLED);
  g_assert_cmpint (running->summary.cancel_reason, ==, GMD_CANCEL_ADMIN);
  wait_until (is_closed, &ci, 10);
  g_assert_cmpint (ci.reason, ==, GMD_CLOSE_MODEL_CHANGED);
  const GmdServiceInfo *info = gmd_service_get_info (s);
  g_assert_cmpint (info->load_state, ==, GMD_LOAD_LOADED);
  g_assert_cmpuint (info->context_size, ==, 256);
  g_assert_cmpuint (info->threads, ==, 1);

  g_autoptr (Collect) after = submit_ok (s, client, NULL, "hello", options (4, 1));
  wait_finished (after);
  g_assert_cmpint (after->summary.stop_reason, ==, GMD_STOP_MAX_TOKENS);
  g_assert_cmpuint (after->summary.context_size, ==, 256);

  /* unload: everything cancelled, new requests refused */
  g_autoptr (Collect) again = submit_ok (s, client, NULL, "run long", options (-1, 1));
  wait_until (is_generating, again, 30);
  gmd_service_unload_model (s);
  g_assert_cmpint (info->load_state, ==, GMD_LOAD_UNLOADED);
  wait_finished (again);
  g_assert_cmpint (again->summary.cancel_reason, ==, GMD_CANCEL_ADMIN);
  Collect *refused = submit (s, client, NULL, "hello", options (4, 1), &error);
  g_assert_null (refused);
  g_assert_error (error, GMD_ERROR, GMD_ERROR_MODEL_NOT_LOADED);
  gmd_service_free (s);
}

static void
test_session_idle (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  config->limits.session_idle_timeout = 1;
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  g_autoptr (GError) error = NULL;
  ClosedInfo ci = { 0 };
  g_autoptr (GmdSession) session = open_session (s, client, NULL, 0, &ci, &error);
  g_assert_no_error (error);
  wait_until (is_closed, &ci, 10);
  g_assert_cmpint (ci.reason, ==, GMD_CLOSE_IDLE);
  g_assert_cmpint (ci.closed, ==, 1);
  g_assert_true (gmd_session_is_closed (session));
  g_assert_cmpuint (gmd_service_get_info (s)->open_sessions, ==, 0);
  gmd_service_free (s);
}

static gboolean
is_loaded (gpointer data)
{
  return gmd_service_get_info (data)->load_state == GMD_LOAD_LOADED;
}

static void
on_changed (GmdService *s, gpointer user_data)
{
  (*(int *) user_data)++;
}

static void
test_reload_config (void)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *path = NULL;
  int fd = g_file_open_tmp ("gmd-test-XXXXXX.conf", &path, &error);
  g_assert_no_error (error);
  close (fd);
  g_autofree char *first = g_strdup_printf ("[model]\npath=%s\nthreads=2\n"
                                            "[limits]\nmax_queue=5\n", tiny_model_path);
  g_assert_true (g_file_set_contents (path, first, -1, &error));
  g_autoptr (GmdConfig) config = gmd_config_load (path, &error);
  g_assert_no_error (error);
  GmdService *s = new_service (config);
  int changes = 0;
  guint handler = gmd_service_add_changed_handler (s, on_changed, &changes);
  g_assert_cmpuint (gmd_service_get_config (s)->limits.max_queue, ==, 5);

  /* limits only: in effect at once, the model stays */
  g_autofree char *second = g_strdup_printf ("[model]\npath=%s\nthreads=2\n"
                                             "[limits]\nmax_queue=7\n", tiny_model_path);
  g_assert_true (g_file_set_contents (path, second, -1, &error));
  g_assert_true (gmd_service_reload_config (s, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (gmd_service_get_config (s)->limits.max_queue, ==, 7);
  g_assert_cmpint (gmd_service_get_info (s)->load_state, ==, GMD_LOAD_LOADED);

  /* a new context size reloads the model */
  g_autofree char *third = g_strdup_printf ("[model]\npath=%s\nthreads=2\ncontext_size=128\n",
                                            tiny_model_path);
  g_assert_true (g_file_set_contents (path, third, -1, &error));
  g_assert_true (gmd_service_reload_config (s, &error));
  g_assert_no_error (error);
  g_assert_cmpint (gmd_service_get_info (s)->load_state, ==, GMD_LOAD_LOADING);
  wait_until (is_loaded, s, 30);
  g_assert_cmpint (gmd_service_get_info (s)->load_state, ==, GMD_LOAD_LOADED);
  g_assert_cmpuint (gmd_service_get_info (s)->context_size, ==, 128);
  spin (20);
  g_assert_cmpint (changes, >, 0);

  /* an invalid file keeps the configuration in effect */
  g_assert_true (g_file_set_contents (path, "[limits]\nmax_queue=banana\n", -1, &error));
  g_assert_false (gmd_service_reload_config (s, &error));
  g_assert_nonnull (error);
  g_clear_error (&error);
  g_assert_cmpuint (gmd_service_get_info (s)->context_size, ==, 128);

  gmd_service_remove_changed_handler (s, handler);
  gmd_service_free (s);
  g_unlink (path);
}

static void
test_model_switch_drain (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  g_autoptr (GError) error = NULL;

  g_autoptr (Collect) running = submit_ok (s, client, NULL, "first", options (60, 1));
  g_autoptr (Collect) queued = submit_ok (s, client, NULL, "second", options (8, 1));
  wait_until (is_generating, running, 30);
  wait_until (is_accepted, queued, 30);
  LoadDone ld = { 0 };
  g_assert_true (gmd_service_load_model (s, tiny_model_path, NULL, 512, 0, TRUE, on_load_done,
                                         &ld, &error));
  g_assert_no_error (error);
  /* what was queued before the switch still runs on the old model */
  wait_until (load_done, &ld, 30);
  g_assert_true (ld.ok);
  g_assert_true (running->finished);
  g_assert_true (queued->finished);
  g_assert_cmpint (running->summary.stop_reason, ==, GMD_STOP_MAX_TOKENS);
  g_assert_cmpint (queued->summary.stop_reason, ==, GMD_STOP_MAX_TOKENS);
  g_assert_cmpuint (queued->summary.context_size, ==, 4096);
  g_assert_cmpuint (gmd_service_get_info (s)->context_size, ==, 512);
  g_autoptr (Collect) after = submit_ok (s, client, NULL, "third", options (4, 1));
  wait_finished (after);
  g_assert_cmpuint (after->summary.context_size, ==, 512);
  gmd_service_free (s);
}

/* ---- images ---------------------------------------------------------------------------- */

static char *tower_path;      /* the committed tiny gemma4v tower (projection width 64) */
static char *mmproj_path;     /* it with position tables for grids up to 128 patches */
static char *images_dir;

static GBytes *
image_file (const char *name)
{
  g_autofree char *path = g_build_filename (images_dir, name, NULL);
  g_autoptr (GError) error = NULL;
  char *data = NULL;
  gsize len = 0;
  g_file_get_contents (path, &data, &len, &error);
  g_assert_no_error (error);
  return g_bytes_new_take (data, len);
}

/* Soft tokens of an image file at a budget, as the vision library counts them. */
static guint32
soft_tokens_of (const char *name, int budget)
{
  g_autoptr (GBytes) bytes = image_file (name);
  gsize len = 0;
  const guint8 *data = g_bytes_get_data (bytes, &len);
  gm_image img = { 0 };
  gm_image_patches p = { 0 };
  gm_error err = { 0 };
  g_assert_cmpint (gm_image_decode (data, len, NULL, &img, &err), ==, GM_OK);
  g_assert_cmpint (gm_image_preprocess (&img, budget, &p, &err), ==, GM_OK);
  guint32 n = p.n_soft_tokens;
  gm_image_patches_free (&p);
  gm_image_free (&img);
  return n;
}

static char *audio_tower_path; /* the committed tiny gemma4a tower (projection width 64) */
static char *av_mmproj_path;   /* both towers in one file, as real mmproj files are */

static char *
write_mmproj (GmdTestMmprojKind kind, int projection, int positions)
{
  g_autofree char *path = NULL;
  int fd = g_file_open_tmp ("gmd-mmproj-XXXXXX.gguf", &path, NULL);
  g_assert_cmpint (fd, >=, 0);
  close (fd);
  gm_error err = { 0 };
  if (gmd_test_write_mmproj (tower_path, audio_tower_path, path, kind, projection, positions,
                             &err) != GM_OK)
    g_error ("writing %s: %s", path, err.msg);
  return g_steal_pointer (&path);
}

static GmdConfig *
vision_config (void)
{
  GmdConfig *config = test_config ();
  config->mmproj_path = g_strdup (mmproj_path);
  return config;
}

static char *audio_dir;       /* tests/data/audio */

static GBytes *
audio_file (const char *name)
{
  g_autofree char *path = g_build_filename (audio_dir, name, NULL);
  g_autoptr (GError) error = NULL;
  char *data = NULL;
  gsize len = 0;
  g_file_get_contents (path, &data, &len, &error);
  g_assert_no_error (error);
  return g_bytes_new_take (data, len);
}

/* Parts from a spec: "@name" is that image file, "%name" that sound file (of
 * tests/data/audio), anything else text. */
static GPtrArray *
mixed_parts (const char *const *spec)
{
  GPtrArray *parts = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_part_free);
  for (guint i = 0; spec[i] != NULL; i++)
    {
      if (spec[i][0] == '@')
        {
          g_autoptr (GBytes) bytes = image_file (spec[i] + 1);
          g_ptr_array_add (parts, gmd_part_new_media (GMD_PART_IMAGE, bytes));
          continue;
        }
      if (spec[i][0] == '%')
        {
          g_autoptr (GBytes) bytes = audio_file (spec[i] + 1);
          g_ptr_array_add (parts, gmd_part_new_media (GMD_PART_AUDIO, bytes));
          continue;
        }
      g_autoptr (GError) error = NULL;
      g_autofree char *field = g_strdup_printf ("content[%u]", i);
      g_ptr_array_add (parts, gmd_part_new_text (spec[i], strlen (spec[i]), field, &error));
      g_assert_no_error (error);
    }
  return parts;
}

static Collect *
submit_parts (GmdService *s, GmdClient *client, GmdSession *session, GPtrArray *parts,
              GmdOptions *o, GError **error)
{
  Collect *c = collect_new ();
  c->request = gmd_service_submit (s, client, session, parts, o, &sink, c, error);
  if (c->request == NULL)
    {
      collect_free (c);
      return NULL;
    }
  return c;
}

/* Submits, waits, and checks that it generated max_tokens. */
static Collect *
run_parts (GmdService *s, GmdClient *client, GmdSession *session, const char *const *spec,
           GmdOptions *o)
{
  g_autoptr (GError) error = NULL;
  gint32 max_tokens = o->max_tokens;
  Collect *c = submit_parts (s, client, session, mixed_parts (spec), o, &error);
  g_assert_no_error (error);
  wait_finished (c);
  if (c->summary.stop_reason != GMD_STOP_MAX_TOKENS)
    g_error ("stop_reason %d: %s", c->summary.stop_reason,
             c->error_message ? c->error_message : "");
  g_assert_cmpuint (c->summary.generated_tokens, ==, (guint) max_tokens);
  return c;
}

static GmdOptions *
greedy (gint32 max_tokens)
{
  GmdOptions *o = options (max_tokens, 7);
  o->sampling.temperature = 0;
  o->set |= GMD_OPT_TEMPERATURE;
  return o;
}

static GmdOptions *
with_image_tokens (GmdOptions *o, guint32 budget)
{
  o->image_tokens = budget;
  o->set |= GMD_OPT_IMAGE_TOKENS;
  return o;
}

static guint
count_state (const Collect *c, GmdRequestState state)
{
  guint n = 0;
  for (guint i = 0; i < c->states->len; i++)
    n += g_array_index (c->states, GmdRequestState, i) == state;
  return n;
}

static void
test_image_generate (void)
{
  g_autoptr (GmdConfig) config = vision_config ();
  GmdService *s = new_service (config);
  const GmdServiceInfo *info = gmd_service_get_info (s);
  g_assert_true (g_strv_contains (info->modalities, "text"));
  g_assert_true (g_strv_contains (info->modalities, "image"));
  g_assert_false (g_strv_contains (info->modalities, "audio"));
  g_assert_true (g_strv_contains (info->media_types, "image/png"));
  g_assert_true (g_strv_contains (info->media_types, "image/jpeg"));
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);

  static const char *const jpeg[] = { "@jpeg-baseline.jpg", "What is in this picture?", NULL };
  static const char *const text_only[] = { "What is in this picture?", NULL };
  g_autoptr (Collect) a = run_parts (s, client, NULL, jpeg, options (12, 42));
  /* deterministic: the same image and seed give the same text, and the cache recognises
   * the image (by its embeddings) so only the last position is evaluated again */
  g_autoptr (Collect) b = run_parts (s, client, NULL, jpeg, options (12, 42));
  g_assert_cmpstr (b->text->str, ==, a->text->str);
  g_assert_cmpuint (b->summary.prompt_tokens, ==, a->summary.prompt_tokens);
  g_assert_cmpuint (b->summary.cached_tokens, ==, a->summary.prompt_tokens - 1);
  g_autoptr (Collect) t = run_parts (s, client, NULL, text_only, options (12, 42));

  /* encoding comes after the queue and before the prompt, 0/1 then 1/1 */
  gint first_encoding = -1, first_prefill = -1;
  for (guint i = 0; i < a->states->len; i++)
    {
      GmdRequestState st = g_array_index (a->states, GmdRequestState, i);
      if (st == GMD_STATE_ENCODING && first_encoding < 0)
        first_encoding = (gint) i;
      if (st == GMD_STATE_PREFILL && first_prefill < 0)
        first_prefill = (gint) i;
    }
  g_assert_cmpint (first_encoding, >, 0);
  g_assert_cmpint (first_prefill, >, first_encoding);
  g_assert_cmpuint (count_state (a, GMD_STATE_ENCODING), ==, 2);
  g_assert_cmpuint (count_state (t, GMD_STATE_ENCODING), ==, 0);
  g_assert_cmpfloat (a->summary.encode_seconds, >, 0.0);
  g_assert_cmpfloat (t->summary.encode_seconds, ==, 0.0);

  /* the image's soft tokens and its two markers are prompt positions */
  guint32 n_soft = soft_tokens_of ("jpeg-baseline.jpg", 280);
  g_assert_cmpuint (n_soft, >, 0);
  g_assert_cmpuint (a->summary.prompt_tokens, >=, t->summary.prompt_tokens + n_soft + 2);
  g_assert_cmpuint (a->summary.prompt_tokens, <=, t->summary.prompt_tokens + n_soft + 6);

  /* the image is what the model looks at: another picture of the same kind changes the
   * greedy answer (its soft tokens are other vectors at the same positions) */
  static const char *const png[] = { "@rgba8.png", "What is in this picture?", NULL };
  static const char *const jpeg2[] = { "@jpeg-grey.jpg", "What is in this picture?", NULL };
  g_autoptr (Collect) g1 = run_parts (s, client, NULL, jpeg, with_image_tokens (greedy (16), 70));
  g_autoptr (Collect) g2 = run_parts (s, client, NULL, jpeg2, with_image_tokens (greedy (16), 70));
  g_autoptr (Collect) g3 = run_parts (s, client, NULL, png, with_image_tokens (greedy (16), 70));
  g_assert_cmpstr (g1->text->str, !=, g2->text->str);
  g_assert_cmpstr (g1->text->str, !=, g3->text->str);
  /* the cache shares the text before the image only */
  g_assert_cmpuint (g2->summary.cached_tokens, <,
                    g2->summary.prompt_tokens - soft_tokens_of ("jpeg-grey.jpg", 70));
  gmd_service_free (s);
}

static void
test_image_order (void)
{
  g_autoptr (GmdConfig) config = vision_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);

  static const char *const ab[] = { "First", "@jpeg-baseline.jpg", "then", "@rgba8.png",
                                    "compare them.", NULL };
  static const char *const ba[] = { "First", "@rgba8.png", "then", "@jpeg-baseline.jpg",
                                    "compare them.", NULL };
  static const char *const image_last[] = { "Compare:", "@rgba8.png", NULL };
  g_autoptr (Collect) x = run_parts (s, client, NULL, ab, with_image_tokens (greedy (16), 70));
  g_autoptr (Collect) y = run_parts (s, client, NULL, ba, with_image_tokens (greedy (16), 70));
  g_autoptr (Collect) z = run_parts (s, client, NULL, image_last, with_image_tokens (greedy (4), 70));
  g_assert_cmpuint (x->summary.prompt_tokens, ==, y->summary.prompt_tokens);
  g_assert_cmpstr (x->text->str, !=, y->text->str);
  g_assert_cmpuint (x->summary.prompt_tokens, >=,
                    soft_tokens_of ("jpeg-baseline.jpg", 70) + soft_tokens_of ("rgba8.png", 70) + 4);
  g_assert_cmpuint (count_state (x, GMD_STATE_ENCODING), ==, 3);   /* 0/2, 1/2, 2/2 */
  g_assert_cmpuint (count_state (z, GMD_STATE_ENCODING), ==, 2);
  gmd_service_free (s);
}

static void
test_image_tokens_accounting (void)
{
  g_autoptr (GmdConfig) config = vision_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);

  static const char *const jpeg[] = { "@jpeg-baseline.jpg", "Describe.", NULL };
  g_autoptr (Collect) small = run_parts (s, client, NULL, jpeg, with_image_tokens (options (2, 1), 70));
  g_autoptr (Collect) large = run_parts (s, client, NULL, jpeg, with_image_tokens (options (2, 1), 140));
  guint32 n70 = soft_tokens_of ("jpeg-baseline.jpg", 70);
  guint32 n140 = soft_tokens_of ("jpeg-baseline.jpg", 140);
  g_assert_cmpuint (n70, <, n140);
  /* only the image's own positions differ */
  g_assert_cmpuint (large->summary.prompt_tokens - small->summary.prompt_tokens, ==, n140 - n70);
  gmd_service_free (s);

  /* max_prompt_tokens counts the image: the text alone fits, with the image it does not */
  g_autoptr (GmdConfig) capped = vision_config ();
  capped->limits.max_prompt_tokens = small->summary.prompt_tokens - 1;
  s = new_service (capped);
  g_autoptr (GmdClient) c2 = gmd_service_get_client (s, "a", 1000);
  static const char *const text_only[] = { "Describe.", NULL };
  g_autoptr (Collect) fits = run_parts (s, c2, NULL, text_only, options (2, 1));
  g_autoptr (GError) error = NULL;
  g_autoptr (Collect) over = submit_parts (s, c2, NULL, mixed_parts (jpeg),
                                           with_image_tokens (options (2, 1), 70), &error);
  g_assert_no_error (error);
  wait_finished (over);
  g_assert_false (over->first_was_progress);
  g_assert_cmpint (over->summary.error_code, ==, GMD_ERROR_LIMIT_EXCEEDED);
  g_assert_nonnull (strstr (over->error_message, "max_prompt_tokens"));
  gmd_service_free (s);
}

/* A request whose image fails in the prompt worker: an error before acceptance. */
static void
expect_image_error (GmdService *s, GmdClient *client, GBytes *bytes, GmdErrorCode code,
                    const char *expect)
{
  GPtrArray *parts = text_parts ("Look:");
  g_ptr_array_add (parts, gmd_part_new_media (GMD_PART_IMAGE, bytes));
  g_autoptr (GError) error = NULL;
  g_autoptr (Collect) c = submit_parts (s, client, NULL, parts, options (4, 1), &error);
  g_assert_no_error (error);
  wait_finished (c);
  g_assert_false (c->first_was_progress);
  g_assert_cmpint (c->summary.stop_reason, ==, GMD_STOP_ERROR);
  g_assert_cmpint (c->summary.error_code, ==, code);
  g_assert_true (g_str_has_prefix (c->error_message, "content[1]: "));
  if (strstr (c->error_message, expect) == NULL)
    g_error ("'%s' does not contain '%s'", c->error_message, expect);
}

static void
test_image_errors (void)
{
  g_autoptr (GmdConfig) config = vision_config ();
  config->limits.max_image_pixels = 200;   /* rgba8.png has 117 pixels, jpeg-baseline 294 */
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);

  g_autoptr (GBytes) jpeg = image_file ("jpeg-baseline.jpg");
  g_autoptr (GBytes) cut = g_bytes_new_from_bytes (jpeg, 0, g_bytes_get_size (jpeg) / 2);
  expect_image_error (s, client, cut, GMD_ERROR_UNSUPPORTED_MEDIA, "JPEG: ");
  g_autoptr (GBytes) png = image_file ("rgba8.png");
  g_autoptr (GBytes) png_cut = g_bytes_new_from_bytes (png, 0, 60);
  expect_image_error (s, client, png_cut, GMD_ERROR_UNSUPPORTED_MEDIA, "PNG: ");
  /* a JPEG header followed by garbage */
  static const guint8 junk[] = { 0xFF, 0xD8, 0xFF, 0xE0, 0, 16, 'J', 'F', 'I', 'F', 0, 1, 2, 3,
                                 4, 5, 6, 7, 8, 9, 10, 11, 12, 13 };
  g_autoptr (GBytes) junk_bytes = g_bytes_new_static (junk, sizeof junk);
  expect_image_error (s, client, junk_bytes, GMD_ERROR_UNSUPPORTED_MEDIA, "JPEG: ");
  /* above max_image_pixels */
  expect_image_error (s, client, jpeg, GMD_ERROR_LIMIT_EXCEEDED, "max_image_pixels");

  /* recognised but not decoded, or not an image at all: refused at submission */
  static const guint8 gif[] = { 'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0, 0, 0 };
  expect_media_error (s, client, GMD_PART_IMAGE, gif, sizeof gif, "only PNG and JPEG");
  static const char webp[] = "RIFF\x24\0\0\0WEBPVP8 ";
  expect_media_error (s, client, GMD_PART_IMAGE, webp, sizeof webp - 1, "only PNG and JPEG");
  expect_media_error (s, client, GMD_PART_IMAGE, "not an image", 12, "starts with 6e 6f 74 20");
  /* audio is unavailable: the mmproj has no audio tower */
  static const char wav[] = "RIFF\x24\0\0\0WAVEfmt ";
  expect_media_error (s, client, GMD_PART_AUDIO, wav, sizeof wav - 1,
                      "audio input is not available: the mmproj has no audio encoder");

  /* the service still serves images */
  static const char *const ok[] = { "@rgba8.png", "And this?", NULL };
  g_autoptr (Collect) c = run_parts (s, client, NULL, ok, options (4, 1));
  g_assert_true (service_idle (s));
  gmd_service_free (s);
}

/* The engine waits after the first of two images until the test has cancelled. */
typedef struct {
  GMutex lock;
  GCond cond;
  gboolean released;
  guint calls;
} EncodeGate;

static void
gate_hook (GmdJob *job, guint done, guint total, gpointer user_data)
{
  EncodeGate *g = user_data;
  g_mutex_lock (&g->lock);
  g->calls++;
  while (done == 1 && total == 2 && !g->released)
    g_cond_wait (&g->cond, &g->lock);
  g_mutex_unlock (&g->lock);
}

static gboolean
saw_first_image (gpointer data)
{
  Collect *c = data;
  return c->finished || count_state (c, GMD_STATE_ENCODING) >= 2;
}

/* Two media parts: the engine is held after encoding the first until the test has
 * cancelled through the real API; the second is never encoded, nothing is prefilled, and
 * the next request (next_spec) still runs. */
static void
check_cancel_during_encoding (GmdConfig *config, const char *const *two, GmdOptions *opts,
                              const char *const *next_spec)
{
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  EncodeGate gate = { 0 };
  g_mutex_init (&gate.lock);
  g_cond_init (&gate.cond);
  gmd_engine_set_image_hook (gate_hook, &gate);

  g_autoptr (GError) error = NULL;
  g_autoptr (Collect) c = submit_parts (s, client, NULL, mixed_parts (two), opts, &error);
  g_assert_no_error (error);
  wait_until (saw_first_image, c, 60);
  g_assert_false (c->finished);
  g_assert_cmpint (gmd_request_get_state (c->request), ==, GMD_STATE_ENCODING);
  g_assert_true (gmd_request_cancel (c->request, GMD_CANCEL_CLIENT));
  g_mutex_lock (&gate.lock);
  gate.released = TRUE;
  g_cond_signal (&gate.cond);
  g_mutex_unlock (&gate.lock);
  wait_finished (c);

  g_assert_cmpint (c->summary.stop_reason, ==, GMD_STOP_CANCELLED);
  g_assert_cmpint (c->summary.cancel_reason, ==, GMD_CANCEL_CLIENT);
  g_assert_cmpuint (count_state (c, GMD_STATE_PREFILL), ==, 0);
  g_assert_cmpuint (c->summary.generated_tokens, ==, 0);
  g_assert_cmpuint (gate.calls, ==, 1);   /* the second part was never encoded */
  gmd_engine_set_image_hook (NULL, NULL);

  g_autoptr (Collect) after = run_parts (s, client, NULL, next_spec, options (4, 1));
  gmd_service_free (s);
  g_mutex_clear (&gate.lock);
  g_cond_clear (&gate.cond);
}

static void
test_image_cancel_encoding (void)
{
  g_autoptr (GmdConfig) config = vision_config ();
  static const char *const two[] = { "@jpeg-baseline.jpg", "@rgba8.png", "Compare.", NULL };
  static const char *const next[] = { "@rgba8.png", "Next.", NULL };
  check_cancel_during_encoding (config, two, with_image_tokens (options (8, 1), 70), next);
}

static Collect *
run_turn (GmdService *s, GmdClient *client, GmdSession *session, const char *const *spec)
{
  return run_parts (s, client, session, spec, with_image_tokens (greedy (6), 70));
}

static void
test_image_session (void)
{
  g_autoptr (GmdConfig) config = vision_config ();
  config->cache_slots = 1;
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  ClosedInfo ci[3] = { 0 };
  g_autoptr (GError) error = NULL;
  g_autoptr (GmdSession) a = open_session (s, client, NULL, 0, &ci[0], &error);
  g_assert_no_error (error);
  g_autoptr (GmdSession) b = open_session (s, client, NULL, 0, &ci[1], &error);
  g_assert_no_error (error);
  g_autoptr (GmdSession) other = open_session (s, client, NULL, 0, &ci[2], &error);
  g_assert_no_error (error);

  static const char *const turn1[] = { "Look", "@jpeg-baseline.jpg", "at this.", NULL };
  static const char *const turn2[] = { "And now?", NULL };
  guint32 n_soft = soft_tokens_of ("jpeg-baseline.jpg", 70);

  /* a: two turns back to back, the second on the cached conversation (image included) */
  g_autoptr (Collect) a1 = run_turn (s, client, a, turn1);
  g_autoptr (Collect) a2 = run_turn (s, client, a, turn2);
  g_assert_cmpuint (a2->summary.cached_tokens, >, n_soft);
  g_assert_cmpuint (a2->summary.prompt_tokens, >, a1->summary.prompt_tokens);
  g_assert_cmpuint (gmd_session_get_context_used (a), >=, a2->summary.prompt_tokens);

  /* b: the same turns, but another session takes the only cache slot in between, so its
   * second turn rebuilds the conversation from the kept soft tokens */
  g_autoptr (Collect) b1 = run_turn (s, client, b, turn1);
  static const char *const elsewhere[] = { "Unrelated.", NULL };
  g_autoptr (Collect) o1 = run_turn (s, client, other, elsewhere);
  g_autoptr (Collect) b2 = run_turn (s, client, b, turn2);
  g_assert_cmpstr (b1->text->str, ==, a1->text->str);
  g_assert_cmpuint (b2->summary.cached_tokens, ==, 0);
  g_assert_cmpuint (b2->summary.prompt_tokens, ==, a2->summary.prompt_tokens);
  g_assert_cmpstr (b2->text->str, ==, a2->text->str);

  /* GetHistory: the image as (type, soft_tokens) without data, then the joined text */
  g_autoptr (GPtrArray) history = gmd_session_get_history (b);
  g_assert_cmpuint (history->len, ==, 4);
  const GmdMessage *user = history->pdata[0];
  g_assert_cmpint (user->role, ==, GMD_ROLE_USER);
  g_assert_cmpstr (user->text, ==, "Lookat this.");
  g_assert_nonnull (user->media);
  g_assert_cmpuint (user->media->len, ==, 1);
  g_assert_cmpint (g_array_index (user->media, GmdHistoryMedia, 0).type, ==, GMD_PART_IMAGE);
  g_assert_cmpuint (g_array_index (user->media, GmdHistoryMedia, 0).soft_tokens, ==, n_soft);
  const GmdMessage *second = history->pdata[2];
  g_assert_null (second->media);

  /* Truncate keeps the image's positions in the occupancy */
  g_assert_true (gmd_session_truncate (b, 2, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (gmd_session_get_context_used (b), >, n_soft);
  g_assert_cmpuint (gmd_session_get_context_used (b), <, a2->summary.prompt_tokens);
  gmd_service_free (s);
}

static void
test_image_no_mmproj (void)
{
  g_autoptr (GmdConfig) config = test_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  g_assert_false (g_strv_contains (gmd_service_get_info (s)->modalities, "image"));
  g_assert_cmpuint (g_strv_length ((char **) gmd_service_get_info (s)->media_types), ==, 0);
  g_autoptr (GBytes) png = image_file ("rgba8.png");
  gsize len = 0;
  const void *data = g_bytes_get_data (png, &len);
  expect_media_error (s, client, GMD_PART_IMAGE, data, len, "no mmproj loaded");
  gmd_service_free (s);
}


static void
test_image_mmproj_checks (void)
{
  /* a projection to another width than the text model's is refused, naming both files */
  g_autofree char *narrow = write_mmproj (GMD_TEST_MMPROJ_VISION, 32, 0);
  g_autoptr (GmdConfig) config = test_config ();
  config->mmproj_path = g_strdup (narrow);
  GmdService *s = gmd_service_new (config, NULL);
  gmd_service_wait_loaded (s);
  const GmdServiceInfo *info = gmd_service_get_info (s);
  g_assert_cmpint (info->load_state, ==, GMD_LOAD_FAILED);
  g_assert_nonnull (strstr (info->load_error, narrow));
  g_assert_nonnull (strstr (info->load_error, tiny_model_path));
  g_assert_nonnull (strstr (info->load_error, "width 32"));
  g_assert_nonnull (strstr (info->load_error, "width 64"));

  /* LoadModel: an mmproj with only an audio tower loads, with audio but not images */
  g_autofree char *audio_only = write_mmproj (GMD_TEST_MMPROJ_AUDIO_ONLY, 0, 0);
  g_autoptr (GError) error = NULL;
  g_assert_true (gmd_service_load_model (s, tiny_model_path, audio_only, 0, 0, TRUE, NULL,
                                         NULL, &error));
  g_assert_no_error (error);
  gmd_service_wait_loaded (s);
  g_assert_cmpint (info->load_state, ==, GMD_LOAD_LOADED);
  g_assert_false (g_strv_contains (info->modalities, "image"));
  g_assert_true (g_strv_contains (info->modalities, "audio"));
  g_assert_false (g_strv_contains (info->media_types, "image/png"));
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  g_autoptr (GBytes) png = image_file ("rgba8.png");
  gsize len = 0;
  const void *data = g_bytes_get_data (png, &len);
  expect_media_error (s, client, GMD_PART_IMAGE, data, len, "the mmproj has no vision encoder");

  /* then the real tower: images work, and the modality shows */
  LoadDone ld = { 0 };
  g_assert_true (gmd_service_load_model (s, tiny_model_path, mmproj_path, 0, 0, TRUE,
                                         on_load_done, &ld, &error));
  g_assert_no_error (error);
  wait_until (load_done, &ld, 30);
  g_assert_true (ld.ok);
  g_assert_true (g_strv_contains (info->modalities, "image"));
  static const char *const ok[] = { "@rgba8.png", "Hi.", NULL };
  g_autoptr (Collect) c = run_parts (s, client, NULL, ok, options (2, 1));
  gmd_service_free (s);

  /* a GGUF with neither tower is not an mmproj */
  g_autofree char *plain = write_mmproj (GMD_TEST_MMPROJ_NO_TOWER, 0, 0);
  g_autoptr (GmdConfig) config2 = test_config ();
  config2->mmproj_path = g_strdup (plain);
  s = gmd_service_new (config2, NULL);
  gmd_service_wait_loaded (s);
  g_assert_cmpint (gmd_service_get_info (s)->load_state, ==, GMD_LOAD_FAILED);
  g_assert_nonnull (strstr (gmd_service_get_info (s)->load_error, "neither a vision nor an audio"));
  gmd_service_free (s);
  g_unlink (narrow);
  g_unlink (audio_only);
  g_unlink (plain);
}

/* ---- audio ----------------------------------------------------------------------------- */

static GmdConfig *
audio_config (void)
{
  GmdConfig *config = test_config ();
  config->mmproj_path = g_strdup (av_mmproj_path);
  return config;
}

/* Soft tokens of each 30 s clip of a sound file, as the audio library counts them. */
static GArray *
clip_tokens_of (GBytes *bytes)
{
  gsize len = 0;
  const guint8 *data = g_bytes_get_data (bytes, &len);
  gm_audio_pcm pcm = { 0 };
  gm_audio_features f = { 0 };
  gm_error err = { 0 };
  g_assert_cmpint (gm_audio_load_16k (data, len, NULL, &pcm, NULL, &err), ==, GM_OK);
  g_assert_cmpint (gm_audio_featurize (pcm.samples, pcm.n_samples, &f, &err), ==, GM_OK);
  GArray *out = g_array_new (FALSE, FALSE, sizeof (guint32));
  for (gsize i = 0; i < f.n_clips; i++)
    {
      guint32 n = gm_audio_n_soft_tokens (f.clips[i].n_frames);
      g_array_append_val (out, n);
    }
  gm_audio_features_free (&f);
  gm_audio_pcm_free (&pcm);
  return out;
}

static guint32
audio_tokens_of (const char *name)
{
  g_autoptr (GBytes) bytes = audio_file (name);
  g_autoptr (GArray) clips = clip_tokens_of (bytes);
  g_assert_cmpuint (clips->len, ==, 1);
  return g_array_index (clips, guint32, 0);
}

/* A 16 kHz mono PCM16 WAV of `seconds`: a slow sweep with a little deterministic noise
 * (sound that is not silence all through, made here so long files need not be stored). */
static GBytes *
make_wav (double seconds)
{
  guint32 n = (guint32) (seconds * 16000);
  guint32 data_bytes = n * 2;
  guint8 *buf = g_malloc (44 + data_bytes);
  memcpy (buf, "RIFF", 4);
  guint32 v32 = 36 + data_bytes;
  memcpy (buf + 4, &v32, 4);
  memcpy (buf + 8, "WAVEfmt ", 8);
  v32 = 16;
  memcpy (buf + 16, &v32, 4);
  guint16 fmt[2] = { 1, 1 };              /* PCM, mono */
  memcpy (buf + 20, fmt, 4);
  v32 = 16000;
  memcpy (buf + 24, &v32, 4);
  v32 = 32000;
  memcpy (buf + 28, &v32, 4);
  guint16 align[2] = { 2, 16 };
  memcpy (buf + 32, align, 4);
  memcpy (buf + 36, "data", 4);
  memcpy (buf + 40, &data_bytes, 4);
  guint32 seed = 12345;
  double phase = 0;
  for (guint32 i = 0; i < n; i++)
    {
      seed = seed * 1103515245u + 12345u;
      double t = (double) i / 16000;
      phase += 2 * G_PI * (200 + 30 * t) / 16000;
      double x = 0.4 * sin (phase) + 0.05 * ((double) (seed >> 16) / 65536.0 - 0.5);
      gint16 s = (gint16) (x * 32767);
      memcpy (buf + 44 + 2 * i, &s, 2);
    }
  return g_bytes_new_take (buf, 44 + data_bytes);
}

static GPtrArray *
audio_parts (const char *before, GBytes *bytes, const char *after)
{
  GPtrArray *parts = text_parts (before);
  g_ptr_array_add (parts, gmd_part_new_media (GMD_PART_AUDIO, bytes));
  if (after != NULL)
    {
      g_autoptr (GError) error = NULL;
      g_ptr_array_add (parts, gmd_part_new_text (after, strlen (after), "content[2]", &error));
      g_assert_no_error (error);
    }
  return parts;
}

static void
test_audio_generate (void)
{
  g_autoptr (GmdConfig) config = audio_config ();
  GmdService *s = new_service (config);
  const GmdServiceInfo *info = gmd_service_get_info (s);
  g_assert_true (g_strv_contains (info->modalities, "text"));
  g_assert_true (g_strv_contains (info->modalities, "image"));
  g_assert_true (g_strv_contains (info->modalities, "audio"));
  static const char *const audio_types[] = { "audio/wav", "audio/flac", "audio/ogg",
                                             "audio/mpeg", "audio/aiff", "audio/basic", NULL };
  for (guint i = 0; audio_types[i] != NULL; i++)
    g_assert_true (g_strv_contains (info->media_types, audio_types[i]));
  g_assert_true (g_strv_contains (info->media_types, "image/png"));
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);

  static const char *const speech[] = { "%speech-16k-mono-pcm16.wav", "Transcribe this.", NULL };
  static const char *const text_only[] = { "Transcribe this.", NULL };
  g_autoptr (Collect) a = run_parts (s, client, NULL, speech, options (12, 42));
  /* deterministic: the same sound and seed give the same text, and the cache recognises
   * the audio (by its embeddings) so only the last position is evaluated again */
  g_autoptr (Collect) b = run_parts (s, client, NULL, speech, options (12, 42));
  g_assert_cmpstr (b->text->str, ==, a->text->str);
  g_assert_cmpuint (b->summary.prompt_tokens, ==, a->summary.prompt_tokens);
  g_assert_cmpuint (b->summary.cached_tokens, ==, a->summary.prompt_tokens - 1);
  g_autoptr (Collect) t = run_parts (s, client, NULL, text_only, options (12, 42));

  /* encoding 0/1 then 1/1, after the queue and before the prompt */
  g_assert_cmpuint (count_state (a, GMD_STATE_ENCODING), ==, 2);
  g_assert_cmpint (g_array_index (a->states, GmdRequestState, 0), ==, GMD_STATE_QUEUED);
  g_assert_cmpfloat (a->summary.encode_seconds, >, 0.0);

  /* the clip's soft tokens (one per 40 ms) and its two markers are prompt positions */
  guint32 n_soft = audio_tokens_of ("speech-16k-mono-pcm16.wav");
  g_assert_cmpuint (n_soft, >=, 55);   /* 2.35 s */
  g_assert_cmpuint (n_soft, <=, 60);
  g_assert_cmpuint (a->summary.prompt_tokens, >=, t->summary.prompt_tokens + n_soft + 2);
  g_assert_cmpuint (a->summary.prompt_tokens, <=, t->summary.prompt_tokens + n_soft + 6);

  /* the sound is what the model hears: another recording changes the greedy answer, and
   * the same speech at another rate (resampled) gives the same number of soft tokens */
  static const char *const s16[] = { "%speech-16k-mono-pcm16.wav", "Transcribe this.", NULL };
  static const char *const s8[] = { "%speech-8k-mono-pcm16.wav", "Transcribe this.", NULL };
  static const char *const chirp[] = { "%chirp-48k-mono-pcm16.wav", "Transcribe this.", NULL };
  g_autoptr (Collect) g1 = run_parts (s, client, NULL, s16, greedy (16));
  g_autoptr (Collect) g2 = run_parts (s, client, NULL, chirp, greedy (16));
  g_autoptr (Collect) g3 = run_parts (s, client, NULL, s8, greedy (16));
  g_assert_cmpstr (g1->text->str, !=, g2->text->str);
  g_assert_cmpuint (g3->summary.prompt_tokens, ==, g1->summary.prompt_tokens);
  g_assert_cmpuint (g2->summary.cached_tokens, <,
                    g2->summary.prompt_tokens - audio_tokens_of ("chirp-48k-mono-pcm16.wav"));
  gmd_service_free (s);
}

/* Every audio MIME type listed decodes through the service (one file of each). */
static void
test_audio_formats (void)
{
  g_autoptr (GmdConfig) config = audio_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  static const struct { const char *file, *mime; } files[] = {
    { "speech-16k-mono-pcm16.wav", "audio/wav" },
    { "known-8k-stereo-pcm24.wav", "audio/wav" },
    { "known-8k-mono-f32.wav", "audio/wav" },
    { "speech-48k-stereo.flac", "audio/flac" },
    { "speech-8k-stereo.ogg", "audio/ogg" },
    { "speech-16k-mono.opus", "audio/ogg" },
    { "speech-44k1-stereo.mp3", "audio/mpeg" },
    { "known-16k-mono-pcm16.aiff", "audio/aiff" },
    { "known-16k-mono-pcm16.au", "audio/basic" },
  };
  const char *const *types = gmd_service_get_info (s)->media_types;
  guint audio_types = 0;
  for (guint i = 0; types[i] != NULL; i++)
    audio_types += g_str_has_prefix (types[i], "audio/");
  guint covered = 0;
  for (guint i = 0; i < G_N_ELEMENTS (files); i++)
    {
      g_autoptr (GBytes) bytes = audio_file (files[i].file);
      gsize len = 0;
      const guint8 *data = g_bytes_get_data (bytes, &len);
      g_assert_cmpstr (gmd_media_format_mime (gmd_media_sniff (data, len)), ==, files[i].mime);
      g_assert_true (g_strv_contains (types, files[i].mime));
      if (i == 0 || strcmp (files[i].mime, files[i - 1].mime) != 0)
        covered++;
      g_autoptr (GError) error = NULL;
      g_autoptr (Collect) c = submit_parts (s, client, NULL, audio_parts ("Hear:", bytes, NULL),
                                            options (1, 1), &error);
      g_assert_no_error (error);
      wait_finished (c);
      if (c->summary.stop_reason != GMD_STOP_MAX_TOKENS)
        g_error ("%s: %s", files[i].file, c->error_message ? c->error_message : "?");
      g_assert_cmpuint (count_state (c, GMD_STATE_ENCODING), ==, 2);
    }
  g_assert_cmpuint (covered, ==, audio_types);
  gmd_service_free (s);
}

static void
test_audio_order (void)
{
  g_autoptr (GmdConfig) config = audio_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);

  static const char *const ia[] = { "First", "@rgba8.png", "then", "%speech-16k-mono-pcm16.wav",
                                    "compare them.", NULL };
  static const char *const ai[] = { "First", "%speech-16k-mono-pcm16.wav", "then", "@rgba8.png",
                                    "compare them.", NULL };
  g_autoptr (Collect) x = run_parts (s, client, NULL, ia, with_image_tokens (greedy (16), 70));
  g_autoptr (Collect) y = run_parts (s, client, NULL, ai, with_image_tokens (greedy (16), 70));
  g_assert_cmpuint (x->summary.prompt_tokens, ==, y->summary.prompt_tokens);
  g_assert_cmpstr (x->text->str, !=, y->text->str);
  g_assert_cmpuint (x->summary.prompt_tokens, >=,
                    soft_tokens_of ("rgba8.png", 70) +
                        audio_tokens_of ("speech-16k-mono-pcm16.wav") + 4);
  g_assert_cmpuint (count_state (x, GMD_STATE_ENCODING), ==, 3);   /* 0/2, 1/2, 2/2 */
  g_assert_cmpuint (count_state (y, GMD_STATE_ENCODING), ==, 3);
  gmd_service_free (s);
}

/* Sound longer than 30 s: one audio block per 30 s clip, in order. */
static void
test_audio_long_clips (void)
{
  g_autoptr (GmdConfig) config = audio_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);

  g_autoptr (GBytes) long_wav = make_wav (31.0);
  g_autoptr (GBytes) short_wav = make_wav (1.0);
  g_autoptr (GArray) clips = clip_tokens_of (long_wav);
  g_assert_cmpuint (clips->len, ==, 2);
  g_assert_cmpuint (g_array_index (clips, guint32, 0), ==, 750);   /* 30 s */
  g_assert_cmpuint (g_array_index (clips, guint32, 1), ==, 25);    /* 1 s */
  g_autoptr (GArray) one = clip_tokens_of (short_wav);

  g_autoptr (GError) error = NULL;
  g_autoptr (Collect) l = submit_parts (s, client, NULL, audio_parts ("Hear:", long_wav, "Now?"),
                                        options (2, 1), &error);
  g_assert_no_error (error);
  wait_finished (l);
  g_assert_cmpint (l->summary.stop_reason, ==, GMD_STOP_MAX_TOKENS);
  g_autoptr (Collect) o = submit_parts (s, client, NULL, audio_parts ("Hear:", short_wav, "Now?"),
                                        options (2, 1), &error);
  g_assert_no_error (error);
  wait_finished (o);
  g_assert_cmpint (o->summary.stop_reason, ==, GMD_STOP_MAX_TOKENS);
  /* two blocks: the 30 s clip's tokens and a second begin/end pair more than one 1 s clip */
  g_assert_cmpuint (l->summary.prompt_tokens, ==,
                    o->summary.prompt_tokens + g_array_index (clips, guint32, 0) + 2 +
                        g_array_index (clips, guint32, 1) - g_array_index (one, guint32, 0));
  g_assert_cmpuint (count_state (l, GMD_STATE_ENCODING), ==, 3);   /* 0/2, 1/2, 2/2 */
  gmd_service_free (s);
}

static void
test_audio_tokens_accounting (void)
{
  static const char *const speech[] = { "%speech-16k-mono-pcm16.wav", "Describe.", NULL };
  static const char *const text_only[] = { "Describe.", NULL };
  g_autoptr (GmdConfig) config = audio_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  g_autoptr (Collect) with_audio = run_parts (s, client, NULL, speech, options (2, 1));
  g_autoptr (Collect) plain = run_parts (s, client, NULL, text_only, options (2, 1));
  gmd_service_free (s);

  /* max_prompt_tokens counts the audio: the text alone fits, with the audio it does not */
  g_autoptr (GmdConfig) capped = audio_config ();
  capped->limits.max_prompt_tokens = with_audio->summary.prompt_tokens - 1;
  g_assert_cmpuint (plain->summary.prompt_tokens, <, capped->limits.max_prompt_tokens);
  s = new_service (capped);
  g_autoptr (GmdClient) c2 = gmd_service_get_client (s, "a", 1000);
  g_autoptr (Collect) fits = run_parts (s, c2, NULL, text_only, options (2, 1));
  g_autoptr (GError) error = NULL;
  g_autoptr (Collect) over = submit_parts (s, c2, NULL, mixed_parts (speech), options (2, 1),
                                           &error);
  g_assert_no_error (error);
  wait_finished (over);
  g_assert_false (over->first_was_progress);
  g_assert_cmpint (over->summary.error_code, ==, GMD_ERROR_LIMIT_EXCEEDED);
  g_assert_nonnull (strstr (over->error_message, "max_prompt_tokens"));
  gmd_service_free (s);
}

/* A request whose audio part `index` fails in the prompt worker: an error before
 * acceptance, naming the part. */
static void
expect_audio_error (GmdService *s, GmdClient *client, GPtrArray *parts, guint index,
                    GmdErrorCode code, const char *expect)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (Collect) c = submit_parts (s, client, NULL, parts, options (4, 1), &error);
  g_assert_no_error (error);
  wait_finished (c);
  g_assert_false (c->first_was_progress);
  g_assert_cmpint (c->summary.stop_reason, ==, GMD_STOP_ERROR);
  g_assert_cmpint (c->summary.error_code, ==, code);
  g_autofree char *prefix = g_strdup_printf ("content[%u]: ", index);
  g_assert_true (g_str_has_prefix (c->error_message, prefix));
  if (strstr (c->error_message, expect) == NULL)
    g_error ("'%s' does not contain '%s'", c->error_message, expect);
}

static GBytes *
truncated (GBytes *bytes, gsize keep)
{
  return g_bytes_new_from_bytes (bytes, 0, MIN (keep, g_bytes_get_size (bytes)));
}

static void
test_audio_errors (void)
{
  g_autoptr (GmdConfig) config = audio_config ();
  config->limits.max_audio_seconds = 4;   /* the speech files are 2.35 s long */
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);

  /* corrupt or truncated files: the decoder's reason */
  g_autoptr (GBytes) flac = audio_file ("speech-16k-mono.flac");
  g_autoptr (GBytes) flac_cut = truncated (flac, g_bytes_get_size (flac) / 2);
  expect_audio_error (s, client, audio_parts ("Hear:", flac_cut, NULL), 1,
                      GMD_ERROR_UNSUPPORTED_MEDIA, "audio: ");
  g_autoptr (GBytes) ogg = audio_file ("speech-8k-stereo.ogg");
  g_autoptr (GBytes) ogg_cut = truncated (ogg, 200);
  expect_audio_error (s, client, audio_parts ("Hear:", ogg_cut, NULL), 1,
                      GMD_ERROR_UNSUPPORTED_MEDIA, "audio: ");
  static const char wav_header[] = "RIFF\x24\0\0\0WAVEfmt ";
  g_autoptr (GBytes) header_only = g_bytes_new_static (wav_header, sizeof wav_header - 1);
  expect_audio_error (s, client, audio_parts ("Hear:", header_only, NULL), 1,
                      GMD_ERROR_UNSUPPORTED_MEDIA, "audio: ");
  /* a WAV whose data is shorter than one feature frame */
  g_autoptr (GBytes) wav = audio_file ("speech-16k-mono-pcm16.wav");
  g_autoptr (GBytes) tiny = truncated (wav, 44 + 2 * 100);
  expect_audio_error (s, client, audio_parts ("Hear:", tiny, NULL), 1,
                      GMD_ERROR_UNSUPPORTED_MEDIA, "too short");

  /* longer than max_audio_seconds, alone or with the earlier parts */
  g_autoptr (GBytes) five = make_wav (5.0);
  expect_audio_error (s, client, audio_parts ("Hear:", five, NULL), 1,
                      GMD_ERROR_LIMIT_EXCEEDED, "max_audio_seconds is 4");
  GPtrArray *two = audio_parts ("Hear:", wav, "and");
  g_ptr_array_add (two, gmd_part_new_media (GMD_PART_AUDIO, wav));
  expect_audio_error (s, client, two, 3, GMD_ERROR_LIMIT_EXCEEDED,
                      "left after the earlier parts");

  /* recognised as audio by its bytes only: an image sent as audio is refused at once */
  g_autoptr (GBytes) png = image_file ("rgba8.png");
  gsize len = 0;
  const void *data = g_bytes_get_data (png, &len);
  expect_media_error (s, client, GMD_PART_AUDIO, data, len, "not audio");

  /* the service still serves audio */
  static const char *const ok[] = { "%speech-8k-mono-pcm16.wav", "And this?", NULL };
  g_autoptr (Collect) c = run_parts (s, client, NULL, ok, options (4, 1));
  g_assert_true (service_idle (s));
  gmd_service_free (s);

  /* max_audio_seconds 0 refuses audio */
  g_autoptr (GmdConfig) none = audio_config ();
  none->limits.max_audio_seconds = 0;
  s = new_service (none);
  g_autoptr (GmdClient) c2 = gmd_service_get_client (s, "a", 1000);
  expect_audio_error (s, c2, audio_parts ("Hear:", wav, NULL), 1, GMD_ERROR_LIMIT_EXCEEDED,
                      "no audio time left (max_audio_seconds is 0)");
  gmd_service_free (s);
}

static void
test_audio_cancel_encoding (void)
{
  g_autoptr (GmdConfig) config = audio_config ();
  static const char *const two[] = { "%speech-16k-mono-pcm16.wav", "%chirp-48k-mono-pcm16.wav",
                                     "Compare.", NULL };
  static const char *const next[] = { "%speech-8k-mono-pcm16.wav", "Next.", NULL };
  check_cancel_during_encoding (config, two, options (8, 1), next);
}

static void
test_audio_session (void)
{
  g_autoptr (GmdConfig) config = audio_config ();
  config->cache_slots = 1;
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  ClosedInfo ci[3] = { 0 };
  g_autoptr (GError) error = NULL;
  g_autoptr (GmdSession) a = open_session (s, client, NULL, 0, &ci[0], &error);
  g_assert_no_error (error);
  g_autoptr (GmdSession) b = open_session (s, client, NULL, 0, &ci[1], &error);
  g_assert_no_error (error);
  g_autoptr (GmdSession) other = open_session (s, client, NULL, 0, &ci[2], &error);
  g_assert_no_error (error);

  static const char *const turn1[] = { "Listen", "%speech-16k-mono-pcm16.wav", "and this",
                                       "@rgba8.png", NULL };
  static const char *const turn2[] = { "And now?", NULL };
  guint32 n_audio = audio_tokens_of ("speech-16k-mono-pcm16.wav");
  guint32 n_image = soft_tokens_of ("rgba8.png", 70);

  g_autoptr (Collect) a1 = run_turn (s, client, a, turn1);
  g_autoptr (Collect) a2 = run_turn (s, client, a, turn2);
  g_assert_cmpuint (a2->summary.cached_tokens, >, n_audio + n_image);

  /* b: the same turns with its cache evicted in between: the second turn is rebuilt from
   * the kept soft tokens of the audio and the image */
  g_autoptr (Collect) b1 = run_turn (s, client, b, turn1);
  static const char *const elsewhere[] = { "Unrelated.", NULL };
  g_autoptr (Collect) o1 = run_turn (s, client, other, elsewhere);
  g_autoptr (Collect) b2 = run_turn (s, client, b, turn2);
  g_assert_cmpstr (b1->text->str, ==, a1->text->str);
  g_assert_cmpuint (b2->summary.cached_tokens, ==, 0);
  g_assert_cmpuint (b2->summary.prompt_tokens, ==, a2->summary.prompt_tokens);
  g_assert_cmpstr (b2->text->str, ==, a2->text->str);

  /* GetHistory: audio then image as (type, soft_tokens) without data */
  g_autoptr (GPtrArray) history = gmd_session_get_history (b);
  g_assert_cmpuint (history->len, ==, 4);
  const GmdMessage *user = history->pdata[0];
  g_assert_cmpstr (user->text, ==, "Listenand this");
  g_assert_nonnull (user->media);
  g_assert_cmpuint (user->media->len, ==, 2);
  g_assert_cmpint (g_array_index (user->media, GmdHistoryMedia, 0).type, ==, GMD_PART_AUDIO);
  g_assert_cmpuint (g_array_index (user->media, GmdHistoryMedia, 0).soft_tokens, ==, n_audio);
  g_assert_cmpint (g_array_index (user->media, GmdHistoryMedia, 1).type, ==, GMD_PART_IMAGE);
  g_assert_cmpuint (g_array_index (user->media, GmdHistoryMedia, 1).soft_tokens, ==, n_image);
  gmd_service_free (s);
}

/* Submitted while the model loads: accepted at once, the engine decodes the audio once
 * the model is in; a file that does not decode then ends the request with the same error
 * as before acceptance. */
static void
test_audio_while_loading (void)
{
  g_autoptr (GmdConfig) config = audio_config ();
  GmdService *s = gmd_service_new (config, NULL);
  g_assert_cmpint (gmd_service_get_info (s)->load_state, ==, GMD_LOAD_LOADING);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  static const char *const speech[] = { "%speech-16k-mono-pcm16.wav", "Transcribe.", NULL };
  g_autoptr (GError) error = NULL;
  g_autoptr (Collect) ok = submit_parts (s, client, NULL, mixed_parts (speech), greedy (4),
                                         &error);
  g_assert_no_error (error);
  g_autoptr (GBytes) flac = audio_file ("speech-16k-mono.flac");
  g_autoptr (GBytes) cut = truncated (flac, g_bytes_get_size (flac) / 2);
  g_autoptr (Collect) bad = submit_parts (s, client, NULL, audio_parts ("Hear:", cut, NULL),
                                          options (4, 1), &error);
  g_assert_no_error (error);
  wait_finished (ok);
  wait_finished (bad);
  g_assert_true (ok->first_was_progress);
  g_assert_cmpint (ok->summary.stop_reason, ==, GMD_STOP_MAX_TOKENS);
  g_assert_cmpuint (count_state (ok, GMD_STATE_ENCODING), ==, 2);
  g_assert_true (bad->first_was_progress);   /* accepted, then ended by the engine */
  g_assert_cmpint (bad->summary.stop_reason, ==, GMD_STOP_ERROR);
  g_assert_cmpint (bad->summary.error_code, ==, GMD_ERROR_UNSUPPORTED_MEDIA);
  g_assert_true (g_str_has_prefix (bad->error_message, "content[1]: audio: "));

  /* the same request once loaded: rendered by the prompt worker, the same answer */
  g_autoptr (Collect) again = run_parts (s, client, NULL, speech, greedy (4));
  g_assert_cmpstr (again->text->str, ==, ok->text->str);
  g_assert_cmpuint (again->summary.prompt_tokens, ==, ok->summary.prompt_tokens);
  gmd_service_free (s);
}

static void
test_audio_no_encoder (void)
{
  /* the vision-only mmproj: audio is refused at submission, naming the part */
  g_autoptr (GmdConfig) config = vision_config ();
  GmdService *s = new_service (config);
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  const GmdServiceInfo *info = gmd_service_get_info (s);
  g_assert_false (g_strv_contains (info->modalities, "audio"));
  g_assert_false (g_strv_contains (info->media_types, "audio/wav"));
  g_autoptr (GBytes) wav = audio_file ("speech-16k-mono-pcm16.wav");
  gsize len = 0;
  const void *data = g_bytes_get_data (wav, &len);
  expect_media_error (s, client, GMD_PART_AUDIO, data, len,
                      "audio input is not available: the mmproj has no audio encoder");
  gmd_service_free (s);

  /* no mmproj at all */
  g_autoptr (GmdConfig) plain = test_config ();
  s = new_service (plain);
  g_autoptr (GmdClient) c2 = gmd_service_get_client (s, "a", 1000);
  expect_media_error (s, c2, GMD_PART_AUDIO, data, len,
                      "audio input is not available: no mmproj loaded");
  gmd_service_free (s);
}

static void
test_audio_mmproj_checks (void)
{
  /* an audio projection to another width than the text model's is refused, naming both
   * files and widths, also when the vision tower of the same file fits */
  g_autofree char *narrow = write_mmproj (GMD_TEST_MMPROJ_AUDIO_ONLY, 32, 0);
  g_autoptr (GmdConfig) config = test_config ();
  config->mmproj_path = g_strdup (narrow);
  GmdService *s = gmd_service_new (config, NULL);
  gmd_service_wait_loaded (s);
  const GmdServiceInfo *info = gmd_service_get_info (s);
  g_assert_cmpint (info->load_state, ==, GMD_LOAD_FAILED);
  g_assert_nonnull (strstr (info->load_error, narrow));
  g_assert_nonnull (strstr (info->load_error, tiny_model_path));
  g_assert_nonnull (strstr (info->load_error, "projects audio to width 32"));
  g_assert_nonnull (strstr (info->load_error, "width 64"));
  gmd_service_free (s);

  /* the audio tower alone: audio works, images do not */
  g_autofree char *audio_only = write_mmproj (GMD_TEST_MMPROJ_AUDIO_ONLY, 0, 0);
  g_autoptr (GmdConfig) c2 = test_config ();
  c2->mmproj_path = g_strdup (audio_only);
  s = new_service (c2);
  info = gmd_service_get_info (s);
  g_assert_true (g_strv_contains (info->modalities, "audio"));
  g_assert_false (g_strv_contains (info->modalities, "image"));
  g_autoptr (GmdClient) client = gmd_service_get_client (s, "a", 1000);
  static const char *const ok[] = { "%speech-8k-mono-pcm16.wav", "Hi.", NULL };
  g_autoptr (Collect) c = run_parts (s, client, NULL, ok, options (2, 1));
  g_autoptr (GBytes) png = image_file ("rgba8.png");
  gsize len = 0;
  const void *data = g_bytes_get_data (png, &len);
  expect_media_error (s, client, GMD_PART_IMAGE, data, len, "the mmproj has no vision encoder");
  gmd_service_free (s);
  g_unlink (narrow);
  g_unlink (audio_only);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  const char *tools = g_getenv ("GEMMAD_BUILD_TOOLS");
  g_autofree char *rel = g_build_filename (tools ? tools : ".", "gemma4-tiny.gguf", NULL);
  tiny_model_path = g_canonicalize_filename (rel, NULL);  /* load_model wants it absolute */
  const char *conformance = g_getenv ("GEMMAD_CONFORMANCE_DIR");
  const char *data = g_getenv ("GEMMAD_TEST_DATA");
  g_autofree char *proj = g_build_filename (conformance ? conformance : ".", "vision-tower",
                                            "e-clipped.gguf", NULL);
  tower_path = g_canonicalize_filename (proj, NULL);
  g_autofree char *audio_proj = g_build_filename (conformance ? conformance : ".",
                                                  "audio-tower", "tiny.gguf", NULL);
  audio_tower_path = g_canonicalize_filename (audio_proj, NULL);
  mmproj_path = write_mmproj (GMD_TEST_MMPROJ_VISION, 0, 128);
  av_mmproj_path = write_mmproj (GMD_TEST_MMPROJ_AUDIO_VISION, 0, 128);
  images_dir = g_build_filename (data ? data : ".", "images", NULL);
  audio_dir = g_build_filename (data ? data : ".", "audio", NULL);
  g_test_add_func ("/service/load-info", test_load_info);
  g_test_add_func ("/service/stream-determinism", test_stream_and_determinism);
  g_test_add_func ("/service/raw-thinking", test_raw_and_thinking);
  g_test_add_func ("/service/queue-limits", test_queue_limits);
  g_test_add_func ("/service/round-robin", test_round_robin);
  g_test_add_func ("/service/cancel", test_cancel);
  g_test_add_func ("/service/abandon", test_abandon);
  g_test_add_func ("/service/free-with-running", test_free_with_running_request);
  g_test_add_func ("/service/session", test_session);
  g_test_add_func ("/service/session-limits", test_session_limits);
  g_test_add_func ("/service/prompt-limit", test_prompt_limit);
  g_test_add_func ("/service/unsupported-media", test_unsupported_media);
  g_test_add_func ("/service/shutdown", test_shutdown);
  g_test_add_func ("/service/shutdown-grace", test_shutdown_grace);
  g_test_add_func ("/service/load-failure", test_load_failure);
  g_test_add_func ("/service/submit-while-loading", test_submit_while_loading);
  g_test_add_func ("/service/model-switch", test_model_switch);
  g_test_add_func ("/service/model-switch-drain", test_model_switch_drain);
  g_test_add_func ("/service/session-idle", test_session_idle);
  g_test_add_func ("/service/reload-config", test_reload_config);
  g_test_add_func ("/service/image/generate", test_image_generate);
  g_test_add_func ("/service/image/order", test_image_order);
  g_test_add_func ("/service/image/tokens-accounting", test_image_tokens_accounting);
  g_test_add_func ("/service/image/errors", test_image_errors);
  g_test_add_func ("/service/image/cancel-encoding", test_image_cancel_encoding);
  g_test_add_func ("/service/image/session", test_image_session);
  g_test_add_func ("/service/image/no-mmproj", test_image_no_mmproj);
  g_test_add_func ("/service/image/mmproj-checks", test_image_mmproj_checks);
  g_test_add_func ("/service/audio/generate", test_audio_generate);
  g_test_add_func ("/service/audio/formats", test_audio_formats);
  g_test_add_func ("/service/audio/order", test_audio_order);
  g_test_add_func ("/service/audio/long-clips", test_audio_long_clips);
  g_test_add_func ("/service/audio/tokens-accounting", test_audio_tokens_accounting);
  g_test_add_func ("/service/audio/errors", test_audio_errors);
  g_test_add_func ("/service/audio/cancel-encoding", test_audio_cancel_encoding);
  g_test_add_func ("/service/audio/session", test_audio_session);
  g_test_add_func ("/service/audio/while-loading", test_audio_while_loading);
  g_test_add_func ("/service/audio/no-encoder", test_audio_no_encoder);
  g_test_add_func ("/service/audio/mmproj-checks", test_audio_mmproj_checks);
  int rc = g_test_run ();
  g_free (tiny_model_path);
  g_unlink (mmproj_path);
  g_free (mmproj_path);
  g_unlink (av_mmproj_path);
  g_free (av_mmproj_path);
  g_free (tower_path);
  g_free (audio_tower_path);
  g_free (images_dir);
  g_free (audio_dir);
  return rc;
}
