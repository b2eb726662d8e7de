/* test-options.c — request options (daemon/gmd-options.c) and the error domain
 * (daemon/gmd-error.c): every key valid and invalid, the per-method rules, merging, the
 * a{sv} form, and the GDBus error mapping. */
#include <gio/gio.h>
#include <math.h>
#include <string.h>

#include "gmd-error.h"
#include "gmd-options.h"

/* ---- value builders (as a front end would fill them) ---- */

static GmdValue
v_int (gint64 i)
{
  return (GmdValue) { .type = GMD_VALUE_INT, .type_name = "int32", .i = i };
}

static GmdValue
v_uint (guint64 u)
{
  return (GmdValue) { .type = GMD_VALUE_UINT, .type_name = "uint64", .u = u };
}

static GmdValue
v_double (double d)
{
  return (GmdValue) { .type = GMD_VALUE_DOUBLE, .type_name = "double", .d = d };
}

static GmdValue
v_bool (gboolean b)
{
  return (GmdValue) { .type = GMD_VALUE_BOOL, .type_name = "boolean", .b = b };
}

static GmdValue
v_str (const char *s)
{
  return (GmdValue) { .type = GMD_VALUE_STRING, .type_name = "a string", .s = s };
}

static GmdValue
v_strv (const char *const *strv)
{
  return (GmdValue) { .type = GMD_VALUE_STRV, .type_name = "array of strings", .strv = strv };
}

static GmdValue
v_history (GPtrArray *h)
{
  return (GmdValue) { .type = GMD_VALUE_HISTORY, .type_name = "array of dicts", .history = h };
}

static GmdValue
v_other (void)
{
  return (GmdValue) { .type = GMD_VALUE_OTHER, .type_name = "a dictionary" };
}

static void
set_ok (GmdOptions *o, GmdOptionsScope scope, const char *key, GmdValue v)
{
  g_autoptr (GError) error = NULL;

  g_assert_true (gmd_options_set (o, scope, key, &v, NULL, "options", &error));
  g_assert_no_error (error);
}

/* Sets key on fresh options; expects the exact error, and the options unchanged. */
static void
set_fails_limits (GmdOptionsScope scope, const char *key, GmdValue v, const GmdLimits *limits,
                  GmdErrorCode code, const char *message)
{
  g_autoptr (GmdOptions) o = gmd_options_new ();
  g_autoptr (GmdOptions) before = gmd_options_new ();
  g_autoptr (GError) error = NULL;
  g_autoptr (GVariant) v_before = NULL, v_after = NULL;

  g_assert_false (gmd_options_set (o, scope, key, &v, limits, "options", &error));
  g_assert_error (error, GMD_ERROR, (gint) code);
  if (message != NULL)
    g_assert_cmpstr (error->message, ==, message);
  g_assert_cmpuint (o->set, ==, 0);
  v_before = g_variant_ref_sink (gmd_options_to_variant (before));
  v_after = g_variant_ref_sink (gmd_options_to_variant (o));
  g_assert_true (g_variant_equal (v_before, v_after));
}

static void
set_fails (GmdOptionsScope scope, const char *key, GmdValue v, GmdErrorCode code, const char *message)
{
  set_fails_limits (scope, key, v, NULL, code, message);
}

#define GEN GMD_OPTIONS_GENERATE
#define OPEN GMD_OPTIONS_SESSION_OPEN
#define INVALID GMD_ERROR_INVALID_ARGUMENT
#define LIMIT GMD_ERROR_LIMIT_EXCEEDED

/* ---- tests ---- */

static void
test_defaults (void)
{
  g_autoptr (GmdOptions) o = gmd_options_new ();

  g_assert_cmpuint (o->set, ==, 0);
  g_assert_cmpfloat (o->sampling.temperature, ==, 1.0f);
  g_assert_cmpint (o->sampling.top_k, ==, 64);
  g_assert_cmpfloat (o->sampling.top_p, ==, 0.95f);
  g_assert_cmpfloat (o->sampling.min_p, ==, 0.0f);
  g_assert_cmpfloat (o->sampling.repeat_penalty, ==, 1.0f);
  g_assert_cmpint (o->sampling.repeat_last_n, ==, 64);
  g_assert_cmpfloat (o->sampling.presence_penalty, ==, 0.0f);
  g_assert_cmpfloat (o->sampling.frequency_penalty, ==, 0.0f);
  g_assert_cmpint (o->max_tokens, ==, 1024);
  g_assert_cmpuint (o->image_tokens, ==, 280);
  g_assert_false (o->thinking);
  g_assert_false (o->raw);
  g_assert_null (o->system);
  g_assert_null (o->handle_token);
  g_assert_nonnull (o->stop);
  g_assert_cmpuint (o->stop->len, ==, 0);
  g_assert_nonnull (o->history);
  g_assert_cmpuint (o->history->len, ==, 0);
  g_assert_cmpuint (o->context_size, ==, 0);
}

static void
test_valid_values (void)
{
  g_autoptr (GmdOptions) o = gmd_options_new ();
  g_autoptr (GmdOptions) s = gmd_options_new ();
  const char *stop[] = { "\n\n", "END", NULL };
  g_autoptr (GPtrArray) history = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_message_free);

  set_ok (o, GEN, "handle_token", v_str ("gen_1"));
  set_ok (o, GEN, "system", v_str ("Réponds en une ligne."));
  set_ok (o, GEN, "thinking", v_bool (TRUE));
  set_ok (o, GEN, "raw", v_bool (FALSE));
  set_ok (o, GEN, "temperature", v_double (0.7));
  set_ok (o, GEN, "top_k", v_int (40));
  set_ok (o, GEN, "top_p", v_double (1));
  set_ok (o, GEN, "min_p", v_double (0.05));
  set_ok (o, GEN, "repeat_penalty", v_int (10));      /* an integer for a double key */
  set_ok (o, GEN, "repeat_last_n", v_int (-1));
  set_ok (o, GEN, "presence_penalty", v_double (-2));
  set_ok (o, GEN, "frequency_penalty", v_uint (2));
  set_ok (o, GEN, "seed", v_uint (G_MAXUINT64));
  set_ok (o, GEN, "max_tokens", v_int (-1));
  set_ok (o, GEN, "stop", v_strv (stop));
  set_ok (o, GEN, "image_tokens", v_uint (1120));

  g_assert_cmpuint (o->set, ==, (1u << 16) - 1);      /* every bit but context_size, history */
  g_assert_cmpstr (o->handle_token, ==, "gen_1");
  g_assert_cmpstr (o->system, ==, "Réponds en une ligne.");
  g_assert_true (o->thinking);
  g_assert_false (o->raw);
  g_assert_cmpfloat (o->sampling.temperature, ==, 0.7f);
  g_assert_cmpint (o->sampling.top_k, ==, 40);
  g_assert_cmpfloat (o->sampling.top_p, ==, 1.0f);
  g_assert_cmpfloat (o->sampling.min_p, ==, 0.05f);
  g_assert_cmpfloat (o->sampling.repeat_penalty, ==, 10.0f);
  g_assert_cmpint (o->sampling.repeat_last_n, ==, -1);
  g_assert_cmpfloat (o->sampling.presence_penalty, ==, -2.0f);
  g_assert_cmpfloat (o->sampling.frequency_penalty, ==, 2.0f);
  g_assert_cmpuint (o->sampling.seed, ==, G_MAXUINT64);
  g_assert_cmpint (o->max_tokens, ==, -1);
  g_assert_cmpuint (o->stop->len, ==, 2);
  g_assert_cmpstr (g_ptr_array_index (o->stop, 0), ==, "\n\n");
  g_assert_cmpstr (g_ptr_array_index (o->stop, 1), ==, "END");
  g_assert_cmpuint (o->image_tokens, ==, 1120);

  g_ptr_array_add (history, gmd_message_new (GMD_ROLE_USER, "Bonjour"));
  g_ptr_array_add (history, gmd_message_new (GMD_ROLE_MODEL, "Salut !"));
  set_ok (s, OPEN, "context_size", v_int (32));
  set_ok (s, OPEN, "history", v_history (history));
  set_ok (s, OPEN, "seed", v_int (0));
  g_assert_cmpuint (s->context_size, ==, 32);
  g_assert_cmpuint (s->history->len, ==, 2);
  /* copied, not borrowed */
  g_assert_true (g_ptr_array_index (s->history, 0) != g_ptr_array_index (history, 0));
  g_assert_cmpstr (((GmdMessage *) g_ptr_array_index (s->history, 1))->text, ==, "Salut !");
  g_assert_cmpint (((GmdMessage *) g_ptr_array_index (s->history, 1))->role, ==, GMD_ROLE_MODEL);
  g_assert_cmpuint (s->sampling.seed, ==, 0);
  g_assert_true (s->set & GMD_OPT_SEED);

  for (guint i = 0; i < 5; i++)
    {
      static const guint32 budgets[] = { 70, 140, 280, 560, 1120 };
      g_autoptr (GmdOptions) b = gmd_options_new ();
      set_ok (b, GEN, "image_tokens", v_int (budgets[i]));
      g_assert_cmpuint (b->image_tokens, ==, budgets[i]);
    }
}

static void
test_type_errors (void)
{
  set_fails (GEN, "temperature", v_str ("hot"), INVALID,
             "options.temperature: expected a number, got a string");
  set_fails (GEN, "top_p", v_bool (TRUE), INVALID, "options.top_p: expected a number, got boolean");
  set_fails (GEN, "top_k", v_double (1.5), INVALID, "options.top_k: expected an integer, got double");
  set_fails (GEN, "repeat_last_n", v_double (64), INVALID,
             "options.repeat_last_n: expected an integer, got double");
  set_fails (GEN, "max_tokens", v_str ("10"), INVALID, "options.max_tokens: expected an integer, got a string");
  set_fails (GEN, "seed", v_double (1), INVALID, "options.seed: expected an integer, got double");
  set_fails (GEN, "image_tokens", v_other (), INVALID,
             "options.image_tokens: expected an integer, got a dictionary");
  set_fails (GEN, "thinking", v_int (1), INVALID, "options.thinking: expected a boolean, got int32");
  set_fails (GEN, "raw", v_str ("true"), INVALID, "options.raw: expected a boolean, got a string");
  set_fails (GEN, "system", v_int (3), INVALID, "options.system: expected a string, got int32");
  set_fails (GEN, "handle_token", v_uint (7), INVALID, "options.handle_token: expected a string, got uint64");
  set_fails (GEN, "stop", v_str ("END"), INVALID, "options.stop: expected an array of strings, got a string");
  set_fails (OPEN, "history", v_strv (NULL), INVALID,
             "options.history: expected a list of messages, got array of strings");
  set_fails (OPEN, "context_size", v_double (64), INVALID,
             "options.context_size: expected an integer, got double");

  /* Without a front-end type name, a generic one. */
  {
    g_autoptr (GmdOptions) o = gmd_options_new ();
    g_autoptr (GError) error = NULL;
    GmdValue v = { .type = GMD_VALUE_STRING, .s = "x" };
    g_assert_false (gmd_options_set (o, GEN, "top_k", &v, NULL, "options", &error));
    g_assert_cmpstr (error->message, ==, "options.top_k: expected an integer, got a string");
  }
}

static void
test_ranges (void)
{
  GmdLimits limits;

  set_fails (GEN, "temperature", v_double (-0.1), INVALID, "options.temperature: must be in [0, 100], got -0.1");
  set_fails (GEN, "temperature", v_double (100.5), INVALID, "options.temperature: must be in [0, 100], got 100.5");
  set_fails (GEN, "temperature", v_double (NAN), INVALID, "options.temperature: must be a finite number, got NaN");
  set_fails (GEN, "temperature", v_double (INFINITY), INVALID,
             "options.temperature: must be a finite number, got infinity");
  set_fails (GEN, "top_p", v_double (1.5), INVALID, "options.top_p: must be in (0, 1], got 1.5");
  set_fails (GEN, "top_p", v_int (0), INVALID, "options.top_p: must be in (0, 1], got 0");
  /* positive as a double, but 0 once stored as the sampler's float */
  set_fails (GEN, "top_p", v_double (1e-50), INVALID, NULL);
  set_fails (GEN, "min_p", v_double (1), INVALID, "options.min_p: must be in [0, 1), got 1");
  set_fails (GEN, "min_p", v_double (-0.01), INVALID, NULL);
  set_fails (GEN, "repeat_penalty", v_double (0), INVALID, "options.repeat_penalty: must be in (0, 10], got 0");
  set_fails (GEN, "repeat_penalty", v_double (10.01), INVALID, NULL);
  set_fails (GEN, "presence_penalty", v_double (-2.5), INVALID,
             "options.presence_penalty: must be in [-2, 2], got -2.5");
  set_fails (GEN, "frequency_penalty", v_double (-INFINITY), INVALID, NULL);
  set_fails (GEN, "frequency_penalty", v_int (3), INVALID, NULL);
  set_fails (GEN, "top_k", v_int (-1), INVALID, "options.top_k: must be in [0, 2147483647], got -1");
  set_fails (GEN, "top_k", v_int ((gint64) G_MAXINT32 + 1), INVALID, NULL);
  set_fails (GEN, "top_k", v_uint (G_MAXUINT64), INVALID,
             "options.top_k: must be in [0, 2147483647], got 18446744073709551615");
  set_fails (GEN, "repeat_last_n", v_int (-2), INVALID, "options.repeat_last_n: must be in [-1, 2147483647], got -2");
  set_fails (GEN, "repeat_last_n", v_int (G_MININT64), INVALID,
             "options.repeat_last_n: must be in [-1, 2147483647], got -9223372036854775808");
  set_fails (GEN, "seed", v_int (-1), INVALID, "options.seed: must be in [0, 18446744073709551615], got -1");
  set_fails (GEN, "max_tokens", v_int (0), INVALID, "options.max_tokens: must be -1 or in [1, 2147483647], got 0");
  set_fails (GEN, "max_tokens", v_int (-2), INVALID, NULL);
  set_fails (GEN, "max_tokens", v_int ((gint64) G_MAXINT32 + 1), INVALID, NULL);
  set_fails (GEN, "image_tokens", v_int (100), INVALID,
             "options.image_tokens: must be one of 70, 140, 280, 560, 1120, got 100");
  set_fails (GEN, "image_tokens", v_int (-280), INVALID, NULL);
  set_fails (OPEN, "context_size", v_int (31), INVALID, "options.context_size: must be in [32, 4294967295], got 31");
  set_fails (OPEN, "context_size", v_int (0), INVALID, NULL);
  set_fails (OPEN, "context_size", v_uint ((guint64) G_MAXUINT32 + 1), INVALID, NULL);

  /* max_tokens against the configured cap; 0 means no cap at this level. */
  gmd_limits_init_default (&limits);
  limits.max_tokens_limit = 4096;
  set_fails_limits (GEN, "max_tokens", v_int (4097), &limits, INVALID,
                    "options.max_tokens: must be -1 or in [1, 4096], got 4097");
  {
    g_autoptr (GmdOptions) o = gmd_options_new ();
    g_autoptr (GError) error = NULL;
    GmdValue v = v_int (4096);
    g_assert_true (gmd_options_set (o, GEN, "max_tokens", &v, &limits, "options", &error));
    g_assert_cmpint (o->max_tokens, ==, 4096);
  }
  {
    g_autoptr (GmdOptions) o = gmd_options_new ();
    set_ok (o, GEN, "max_tokens", v_int (G_MAXINT32));
    g_assert_cmpint (o->max_tokens, ==, G_MAXINT32);
  }
}

static void
test_text_values (void)
{
  char long_token[66];

  set_fails (GEN, "handle_token", v_str (""), INVALID,
             "options.handle_token: must be 1 to 64 characters of [A-Za-z0-9_], got \"\"");
  set_fails (GEN, "handle_token", v_str ("a-b"), INVALID, NULL);
  set_fails (GEN, "handle_token", v_str ("a/b"), INVALID, NULL);
  set_fails (GEN, "handle_token", v_str ("é"), INVALID, NULL);
  memset (long_token, 'a', 65);
  long_token[65] = '\0';
  set_fails (GEN, "handle_token", v_str (long_token), INVALID, NULL);
  long_token[64] = '\0';
  {
    g_autoptr (GmdOptions) o = gmd_options_new ();
    set_ok (o, GEN, "handle_token", v_str (long_token));
  }
  /* One-line messages even for hostile input. */
  {
    g_autoptr (GmdOptions) o = gmd_options_new ();
    g_autoptr (GError) error = NULL;
    GmdValue v = v_str ("line1\nline2");
    g_assert_false (gmd_options_set (o, GEN, "handle_token", &v, NULL, "options", &error));
    g_assert_null (strchr (error->message, '\n'));
  }
  set_fails (GEN, "system", v_str ("bad \xff utf8"), INVALID, "options.system: not valid UTF-8");
}

static void
test_stop (void)
{
  const char *nine[] = { "a", "b", "c", "d", "e", "f", "g", "h", "i", NULL };
  const char *empty[] = { "ok", "", NULL };
  const char *bad_utf8[] = { "\xc3", NULL };
  char big[258];
  const char *too_long[] = { "x", big, NULL };
  GmdLimits limits;

  set_fails (GEN, "stop", v_strv (nine), LIMIT, "options.stop: 9 stop strings, at most 8 allowed");
  set_fails (GEN, "stop", v_strv (empty), INVALID, "options.stop[1]: empty stop string");
  set_fails (GEN, "stop", v_strv (bad_utf8), INVALID, "options.stop[0]: not valid UTF-8");
  memset (big, 'z', 257);
  big[257] = '\0';
  set_fails (GEN, "stop", v_strv (too_long), LIMIT, "options.stop[1]: 257 bytes, at most 256 allowed");
  big[256] = '\0';
  {
    g_autoptr (GmdOptions) o = gmd_options_new ();
    const char *eight[] = { "a", "b", "c", "d", "e", "f", "g", big, NULL };
    set_ok (o, GEN, "stop", v_strv (eight));
    g_assert_cmpuint (o->stop->len, ==, 8);
  }
  /* an empty list is fine; a NULL strv counts as empty */
  {
    g_autoptr (GmdOptions) o = gmd_options_new ();
    set_ok (o, GEN, "stop", v_strv (NULL));
    g_assert_cmpuint (o->stop->len, ==, 0);
  }
  /* the caps come from the limits */
  gmd_limits_init_default (&limits);
  limits.max_stop_strings = 1;
  limits.max_stop_bytes = 2;
  set_fails_limits (GEN, "stop", v_strv (empty), &limits, LIMIT, "options.stop: 2 stop strings, at most 1 allowed");
  set_fails_limits (GEN, "stop", v_strv ((const char *[]) { "abc", NULL }), &limits, LIMIT,
                    "options.stop[0]: 3 bytes, at most 2 allowed");
}

static void
test_history (void)
{
  g_autoptr (GPtrArray) h = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_message_free);
  GmdMessage *m;

  g_ptr_array_add (h, gmd_message_new (GMD_ROLE_USER, "hi"));
  m = gmd_message_new (GMD_ROLE_MODEL, NULL);
  g_ptr_array_add (h, m);
  set_fails (OPEN, "history", v_history (h), INVALID,
             "options.history[1].text: missing (history messages are text only)");
  m->text = g_strdup ("\xfe");
  set_fails (OPEN, "history", v_history (h), INVALID, "options.history[1].text: not valid UTF-8");
  g_free (m->text);
  m->text = g_strdup ("fine");
  m->role = (GmdRole) 7;
  set_fails (OPEN, "history", v_history (h), INVALID, "options.history[1]: role must be 'user' or 'model'");
  m->role = GMD_ROLE_MODEL;
  m->media = g_array_new (FALSE, FALSE, sizeof (GmdHistoryMedia));
  g_array_append_val (m->media, ((GmdHistoryMedia) { .type = 1, .soft_tokens = 256 }));
  set_fails (OPEN, "history", v_history (h), INVALID, NULL);
  g_clear_pointer (&m->media, g_array_unref);
  {
    g_autoptr (GmdOptions) o = gmd_options_new ();
    set_ok (o, OPEN, "history", v_history (h));
    g_assert_cmpuint (o->history->len, ==, 2);
  }

  /* role names */
  {
    GmdRole r;
    g_assert_true (gmd_role_from_name ("user", &r) && r == GMD_ROLE_USER);
    g_assert_true (gmd_role_from_name ("model", &r) && r == GMD_ROLE_MODEL);
    g_assert_false (gmd_role_from_name ("assistant", &r));
    g_assert_false (gmd_role_from_name (NULL, &r));
    g_assert_cmpstr (gmd_role_name (GMD_ROLE_USER), ==, "user");
    g_assert_cmpstr (gmd_role_name (GMD_ROLE_MODEL), ==, "model");
  }
}

/* The table of docs/dbus-api.md §5, restated: G Generate, R Respond, O OpenSession,
 * S Session.Send, C the configuration's [defaults]. */
static void
test_scopes (void)
{
  const char *stop[] = { "x", NULL };
  g_autoptr (GPtrArray) h = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_message_free);
  struct {
    const char *key;
    const char *where;
    GmdValue value;
  } keys[] = {
    { "handle_token", "GROS", v_str ("t1") },
    { "system", "GRO", v_str ("be brief") },
    { "thinking", "GROC", v_bool (TRUE) },
    { "raw", "GR", v_bool (TRUE) },
    { "temperature", "GROSC", v_double (0.5) },
    { "top_k", "GROSC", v_int (1) },
    { "top_p", "GROSC", v_double (0.5) },
    { "min_p", "GROSC", v_double (0.5) },
    { "repeat_penalty", "GROSC", v_double (1.1) },
    { "repeat_last_n", "GROSC", v_int (0) },
    { "presence_penalty", "GROSC", v_double (0.5) },
    { "frequency_penalty", "GROSC", v_double (0.5) },
    { "seed", "GROS", v_uint (42) },
    { "max_tokens", "GROSC", v_int (5) },
    { "stop", "GROS", v_strv (stop) },
    { "image_tokens", "GROSC", v_int (70) },
    { "context_size", "O", v_int (64) },
    { "history", "O", v_history (h) },
  };
  struct {
    GmdOptionsScope scope;
    char letter;
    const char *label;
  } scopes[] = {
    { GMD_OPTIONS_GENERATE, 'G', "for Generate" },
    { GMD_OPTIONS_RESPOND, 'R', "for Respond" },
    { GMD_OPTIONS_SESSION_OPEN, 'O', "for OpenSession" },
    { GMD_OPTIONS_SESSION_SEND, 'S', "for Session.Send" },
    { GMD_OPTIONS_CONFIG, 'C', "in the configuration's [defaults]" },
  };

  g_ptr_array_add (h, gmd_message_new (GMD_ROLE_USER, "hello"));
  for (guint k = 0; k < G_N_ELEMENTS (keys); k++)
    for (guint s = 0; s < G_N_ELEMENTS (scopes); s++)
      {
        g_autoptr (GmdOptions) o = gmd_options_new ();
        g_autoptr (GError) error = NULL;
        gboolean allowed = strchr (keys[k].where, scopes[s].letter) != NULL;
        gboolean ok = gmd_options_set (o, scopes[s].scope, keys[k].key, &keys[k].value, NULL,
                                       "options", &error);

        if (ok != allowed)
          g_error ("%s in scope %c: expected %s, got %s", keys[k].key, scopes[s].letter,
                   allowed ? "ok" : "an error", ok ? "ok" : error->message);
        if (!allowed)
          {
            g_autofree char *expected = g_strdup_printf ("options.%s: not allowed %s", keys[k].key,
                                                         scopes[s].label);
            g_assert_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT);
            g_assert_cmpstr (error->message, ==, expected);
          }
      }
}

static void
test_unknown_and_duplicate (void)
{
  g_autoptr (GmdOptions) o = gmd_options_new ();
  g_autoptr (GError) error = NULL;
  GmdValue v = v_double (0.5);

  set_fails (GEN, "temprature", v_double (0.5), INVALID, "options.temprature: unknown key");
  set_fails (GEN, "Temperature", v_double (0.5), INVALID, "options.Temperature: unknown key");
  set_fails (GEN, "bad key\n", v_double (0.5), INVALID, "options: unknown key \"bad key\\n\"");
  set_fails (GEN, "", v_double (0.5), INVALID, "options: unknown key \"\"");

  g_assert_true (gmd_options_set (o, GEN, "temperature", &v, NULL, "options", NULL));
  v = v_double (0.9);
  g_assert_false (gmd_options_set (o, GEN, "temperature", &v, NULL, "options", &error));
  g_assert_cmpstr (error->message, ==, "options.temperature: given more than once");
  g_assert_cmpfloat (o->sampling.temperature, ==, 0.5f);
  g_clear_error (&error);

  /* The configuration may override itself (--set over the file). */
  g_assert_true (gmd_options_set (o, GMD_OPTIONS_CONFIG, "temperature", &v, NULL, "defaults", &error));
  g_assert_cmpfloat (o->sampling.temperature, ==, 0.9f);

  /* Without a prefix the field is the key alone; another prefix is used as given. */
  {
    g_autoptr (GmdOptions) p = gmd_options_new ();
    g_autoptr (GError) e2 = NULL;
    GmdValue bad = v_int (0);
    g_assert_false (gmd_options_set (p, GEN, "top_p", &bad, NULL, NULL, &e2));
    g_assert_cmpstr (e2->message, ==, "top_p: must be in (0, 1], got 0");
    g_clear_error (&e2);
    g_assert_false (gmd_options_set (p, GEN, "top_p", &bad, NULL, "requests[2].options", &e2));
    g_assert_cmpstr (e2->message, ==, "requests[2].options.top_p: must be in (0, 1], got 0");
  }
}

static void
check_fails (GmdOptions *o, GmdOptionsScope scope, const char *message)
{
  g_autoptr (GError) error = NULL;

  g_assert_false (gmd_options_check (o, scope, "options", &error));
  g_assert_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT);
  g_assert_cmpstr (error->message, ==, message);
}

static void
test_check (void)
{
  g_autoptr (GmdOptions) o = gmd_options_new ();

  check_fails (o, GMD_OPTIONS_GENERATE, "options.handle_token: required for Generate");
  check_fails (o, GMD_OPTIONS_SESSION_SEND, "options.handle_token: required for Session.Send");
  g_assert_true (gmd_options_check (o, GMD_OPTIONS_RESPOND, "options", NULL));
  g_assert_true (gmd_options_check (o, GMD_OPTIONS_SESSION_OPEN, "options", NULL));
  g_assert_true (gmd_options_check (o, GMD_OPTIONS_CONFIG, "defaults", NULL));
  set_ok (o, GEN, "handle_token", v_str ("a"));
  g_assert_true (gmd_options_check (o, GMD_OPTIONS_GENERATE, "options", NULL));

  /* raw excludes system and thinking (true); raw false excludes nothing */
  set_ok (o, GEN, "raw", v_bool (TRUE));
  g_assert_true (gmd_options_check (o, GMD_OPTIONS_GENERATE, "options", NULL));
  set_ok (o, GEN, "thinking", v_bool (FALSE));
  g_assert_true (gmd_options_check (o, GMD_OPTIONS_GENERATE, "options", NULL));
  o->thinking = TRUE;
  check_fails (o, GMD_OPTIONS_GENERATE, "options.thinking: not allowed with raw (no chat template)");
  set_ok (o, GEN, "system", v_str ("x"));
  check_fails (o, GMD_OPTIONS_GENERATE, "options.system: not allowed with raw (no chat template)");
  o->raw = FALSE;
  g_assert_true (gmd_options_check (o, GMD_OPTIONS_GENERATE, "options", NULL));
}

static void
test_merge (void)
{
  g_autoptr (GmdOptions) config = gmd_options_new ();
  g_autoptr (GmdOptions) session = gmd_options_new ();
  g_autoptr (GmdOptions) request = gmd_options_new ();
  const char *stop[] = { "STOP", NULL };

  set_ok (config, GMD_OPTIONS_CONFIG, "max_tokens", v_int (200));
  set_ok (config, GMD_OPTIONS_CONFIG, "temperature", v_double (0.2));
  set_ok (config, GMD_OPTIONS_CONFIG, "thinking", v_bool (TRUE));
  set_ok (session, OPEN, "top_k", v_int (5));
  set_ok (session, OPEN, "temperature", v_double (0.4));
  set_ok (session, OPEN, "stop", v_strv (stop));
  set_ok (session, OPEN, "handle_token", v_str ("s1"));
  set_ok (request, GMD_OPTIONS_SESSION_SEND, "handle_token", v_str ("t1"));
  set_ok (request, GMD_OPTIONS_SESSION_SEND, "top_k", v_int (9));

  /* a session's options first, then the configuration's */
  gmd_options_merge_defaults (request, session);
  gmd_options_merge_defaults (request, config);

  g_assert_cmpint (request->sampling.top_k, ==, 9);              /* the request's own */
  g_assert_cmpfloat (request->sampling.temperature, ==, 0.4f);   /* the session's */
  g_assert_cmpint (request->max_tokens, ==, 200);                /* the config's */
  g_assert_true (request->thinking);                             /* the config's */
  g_assert_cmpfloat (request->sampling.top_p, ==, 0.95f);        /* built in */
  g_assert_cmpstr (request->handle_token, ==, "t1");             /* never inherited */
  g_assert_cmpuint (request->stop->len, ==, 1);
  g_assert_cmpstr (g_ptr_array_index (request->stop, 0), ==, "STOP");
  g_assert_true (g_ptr_array_index (request->stop, 0) != g_ptr_array_index (session->stop, 0));
  g_assert_false (request->set & GMD_OPT_SEED);
  g_assert_cmpuint (request->set, ==, GMD_OPT_HANDLE_TOKEN | GMD_OPT_TOP_K | GMD_OPT_TEMPERATURE |
                                        GMD_OPT_STOP | GMD_OPT_MAX_TOKENS | GMD_OPT_THINKING);

  /* merging into fully defaulted options copies the defaults' values */
  {
    g_autoptr (GmdOptions) plain = gmd_options_new ();
    gmd_options_merge_defaults (plain, config);
    g_assert_cmpint (plain->max_tokens, ==, 200);
    g_assert_cmpfloat (plain->sampling.temperature, ==, 0.2f);
    g_assert_cmpint (plain->sampling.top_k, ==, 64);
  }
}

static void
test_copy (void)
{
  g_autoptr (GmdOptions) o = gmd_options_new ();
  g_autoptr (GmdOptions) c = NULL;
  g_autoptr (GPtrArray) h = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_message_free);
  const char *stop[] = { "a", NULL };
  GmdMessage *m = gmd_message_new (GMD_ROLE_USER, "u");

  m->media = g_array_new (FALSE, FALSE, sizeof (GmdHistoryMedia));
  g_array_append_val (m->media, ((GmdHistoryMedia) { .type = 1, .soft_tokens = 256 }));
  set_ok (o, OPEN, "system", v_str ("sys"));
  set_ok (o, OPEN, "stop", v_strv (stop));
  g_ptr_array_add (h, gmd_message_new (GMD_ROLE_USER, "q"));
  set_ok (o, OPEN, "history", v_history (h));
  g_ptr_array_add (o->history, m);   /* as GetHistory keeps media entries */

  c = gmd_options_copy (o);
  g_assert_cmpuint (c->set, ==, o->set);
  g_assert_cmpstr (c->system, ==, "sys");
  g_assert_true (c->system != o->system);
  g_assert_cmpuint (c->stop->len, ==, 1);
  g_assert_cmpuint (c->history->len, ==, 2);
  g_assert_cmpuint (((GmdMessage *) g_ptr_array_index (c->history, 1))->media->len, ==, 1);
  g_assert_cmpuint (g_array_index (((GmdMessage *) g_ptr_array_index (c->history, 1))->media,
                                   GmdHistoryMedia, 0).soft_tokens, ==, 256);
  g_clear_pointer (&o, gmd_options_free);
  g_assert_cmpstr (((GmdMessage *) g_ptr_array_index (c->history, 0))->text, ==, "q");
}

static void
test_variant (void)
{
  g_autoptr (GmdOptions) o = gmd_options_new ();
  g_autoptr (GVariant) v = g_variant_ref_sink (gmd_options_to_variant (o));
  g_autoptr (GVariant) w = NULL;
  g_autoptr (GVariantDict) d = g_variant_dict_new (v);
  double dv;
  gint32 iv;
  guint32 uv;
  guint64 tv;
  gboolean bv;
  const char *stop[] = { "x", "y", NULL };

  g_assert_cmpstr (g_variant_get_type_string (v), ==, "a{sv}");
  g_assert_cmpuint (g_variant_n_children (v), ==, 11);
  g_assert_true (g_variant_dict_lookup (d, "temperature", "d", &dv) && dv == 1.0);
  g_assert_true (g_variant_dict_lookup (d, "top_p", "d", &dv) && dv == 0.95);  /* not 0.949999988 */
  g_assert_true (g_variant_dict_lookup (d, "min_p", "d", &dv) && dv == 0.0);
  g_assert_true (g_variant_dict_lookup (d, "repeat_penalty", "d", &dv) && dv == 1.0);
  g_assert_true (g_variant_dict_lookup (d, "presence_penalty", "d", &dv) && dv == 0.0);
  g_assert_true (g_variant_dict_lookup (d, "frequency_penalty", "d", &dv) && dv == 0.0);
  g_assert_true (g_variant_dict_lookup (d, "top_k", "i", &iv) && iv == 64);
  g_assert_true (g_variant_dict_lookup (d, "repeat_last_n", "i", &iv) && iv == 64);
  g_assert_true (g_variant_dict_lookup (d, "max_tokens", "i", &iv) && iv == 1024);
  g_assert_true (g_variant_dict_lookup (d, "image_tokens", "u", &uv) && uv == 280);
  g_assert_true (g_variant_dict_lookup (d, "thinking", "b", &bv) && !bv);
  g_assert_false (g_variant_dict_contains (d, "seed"));
  g_assert_false (g_variant_dict_contains (d, "handle_token"));

  set_ok (o, OPEN, "seed", v_uint (7));
  set_ok (o, OPEN, "stop", v_strv (stop));
  set_ok (o, OPEN, "system", v_str ("s"));
  set_ok (o, OPEN, "context_size", v_int (128));
  set_ok (o, OPEN, "temperature", v_double (0.7));
  w = g_variant_ref_sink (gmd_options_to_variant (o));
  g_variant_dict_unref (d);
  d = g_variant_dict_new (w);
  g_assert_true (g_variant_dict_lookup (d, "seed", "t", &tv) && tv == 7);
  g_assert_true (g_variant_dict_lookup (d, "context_size", "u", &uv) && uv == 128);
  g_assert_true (g_variant_dict_lookup (d, "temperature", "d", &dv) && dv == 0.7);
  {
    g_autofree const char **got = NULL;
    g_autofree char *sys = NULL;
    g_assert_true (g_variant_dict_lookup (d, "stop", "^a&s", &got));
    g_assert_cmpstrv (got, stop);
    g_assert_true (g_variant_dict_lookup (d, "system", "s", &sys));
    g_assert_cmpstr (sys, ==, "s");
  }
}

static void
test_errors (void)
{
  g_autoptr (GError) e = NULL;
  g_autoptr (GError) back = NULL;
  g_autofree char *field = NULL;
  g_autofree char *remote = NULL;
  GmdErrorCode code;

  g_assert_cmpstr (gmd_error_code_name (GMD_ERROR_INVALID_ARGUMENT), ==, "invalid_argument");
  g_assert_cmpstr (gmd_error_code_name (GMD_ERROR_MODEL_NOT_LOADED), ==, "model_not_loaded");
  g_assert_cmpstr (gmd_error_code_name (GMD_ERROR_INTERNAL), ==, "internal");
  g_assert_cmpstr (gmd_error_dbus_name (GMD_ERROR_UNSUPPORTED_MEDIA), ==,
                   "org.gemmad.Gemmad1.Error.UnsupportedMedia");
  g_assert_cmpstr (gmd_error_dbus_name (GMD_ERROR_CONTEXT_EXCEEDED), ==,
                   "org.gemmad.Gemmad1.Error.ContextExceeded");
  g_assert_cmpstr (gmd_error_dbus_name (GMD_ERROR_N_CODES), ==, "org.gemmad.Gemmad1.Error.Internal");
  for (int c = 0; c < GMD_ERROR_N_CODES; c++)
    {
      g_assert_true (gmd_error_code_from_name (gmd_error_code_name (c), &code) && (int) code == c);
      g_assert_true (gmd_error_code_from_name (gmd_error_dbus_name (c), &code) && (int) code == c);
    }
  g_assert_false (gmd_error_code_from_name ("nope", &code));

  gmd_set_field_error (&e, GMD_ERROR_INVALID_ARGUMENT, "content[1].fd", "not a regular file (%s)", "a pipe");
  g_assert_cmpstr (e->message, ==, "content[1].fd: not a regular file (a pipe)");
  field = gmd_error_field (e);
  g_assert_cmpstr (field, ==, "content[1].fd");
  g_clear_error (&e);
  gmd_set_field_error (&e, GMD_ERROR_BUSY, NULL, "service is stopping");
  g_assert_cmpstr (e->message, ==, "service is stopping");
  g_assert_null (gmd_error_field (e));
  g_assert_cmpint (gmd_error_code_of (e), ==, GMD_ERROR_BUSY);
  gmd_set_field_error (NULL, GMD_ERROR_BUSY, "x", "ignored");   /* no crash */

  /* a message that only looks like a field path is not one: other domain, or no ": " */
  g_clear_error (&e);
  g_set_error_literal (&e, G_IO_ERROR, G_IO_ERROR_CANCELLED, "options.x: cancelled");
  g_assert_null (gmd_error_field (e));
  g_assert_cmpint (gmd_error_code_of (e), ==, GMD_ERROR_CANCELLED);
  g_clear_error (&e);
  g_set_error_literal (&e, GMD_ERROR, GMD_ERROR_INTERNAL, "/etc/gemmad.conf: bad");
  g_assert_null (gmd_error_field (e));
  g_clear_error (&e);
  g_set_error_literal (&e, G_FILE_ERROR, G_FILE_ERROR_NOENT, "gone");
  g_assert_cmpint (gmd_error_code_of (e), ==, GMD_ERROR_INTERNAL);
  g_assert_cmpint (gmd_error_code_of (NULL), ==, GMD_ERROR_INTERNAL);

  /* GDBus knows the domain: GMD_ERROR travels under our names and comes back as itself. */
  g_clear_error (&e);
  gmd_error_register_dbus ();
  g_set_error_literal (&e, GMD_ERROR, GMD_ERROR_LIMIT_EXCEEDED, "too big");
  remote = g_dbus_error_encode_gerror (e);
  g_assert_cmpstr (remote, ==, "org.gemmad.Gemmad1.Error.LimitExceeded");
  back = g_dbus_error_new_for_dbus_error ("org.gemmad.Gemmad1.Error.PermissionDenied", "nope");
  g_assert_error (back, GMD_ERROR, GMD_ERROR_PERMISSION_DENIED);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/options/defaults", test_defaults);
  g_test_add_func ("/options/valid", test_valid_values);
  g_test_add_func ("/options/types", test_type_errors);
  g_test_add_func ("/options/ranges", test_ranges);
  g_test_add_func ("/options/text", test_text_values);
  g_test_add_func ("/options/stop", test_stop);
  g_test_add_func ("/options/history", test_history);
  g_test_add_func ("/options/scopes", test_scopes);
  g_test_add_func ("/options/unknown-duplicate", test_unknown_and_duplicate);
  g_test_add_func ("/options/check", test_check);
  g_test_add_func ("/options/merge", test_merge);
  g_test_add_func ("/options/copy", test_copy);
  g_test_add_func ("/options/variant", test_variant);
  g_test_add_func ("/errors/names-fields-dbus", test_errors);
  return g_test_run ();
}
