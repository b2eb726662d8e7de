/* gmd-options.c — request options: defaults, the per-method key rules, range checks and
 * their messages (docs/dbus-api.md §5), shared by the D-Bus and socket front ends. */
#include "gmd-options.h"

#include <math.h>
#include <string.h>

#include "gmd-content.h"
#include "gmd-error.h"

#define SCOPE(s) (1u << (s))
#define S_GEN    SCOPE (GMD_OPTIONS_GENERATE)
#define S_RESP   SCOPE (GMD_OPTIONS_RESPOND)
#define S_OPEN   SCOPE (GMD_OPTIONS_SESSION_OPEN)
#define S_SEND   SCOPE (GMD_OPTIONS_SESSION_SEND)
#define S_CONFIG SCOPE (GMD_OPTIONS_CONFIG)
#define S_REQUESTS (S_GEN | S_RESP | S_OPEN | S_SEND)

static const struct {
  const char *name;
  guint32 bit;
  guint32 scopes;
} option_keys[] = {
  { "handle_token",      GMD_OPT_HANDLE_TOKEN,      S_REQUESTS },
  { "system",            GMD_OPT_SYSTEM,            S_GEN | S_RESP | S_OPEN },
  { "thinking",          GMD_OPT_THINKING,          S_GEN | S_RESP | S_OPEN | S_CONFIG },
  { "raw",               GMD_OPT_RAW,               S_GEN | S_RESP },
  { "temperature",       GMD_OPT_TEMPERATURE,       S_REQUESTS | S_CONFIG },
  { "top_k",             GMD_OPT_TOP_K,             S_REQUESTS | S_CONFIG },
  { "top_p",             GMD_OPT_TOP_P,             S_REQUESTS | S_CONFIG },
  { "min_p",             GMD_OPT_MIN_P,             S_REQUESTS | S_CONFIG },
  { "repeat_penalty",    GMD_OPT_REPEAT_PENALTY,    S_REQUESTS | S_CONFIG },
  { "repeat_last_n",     GMD_OPT_REPEAT_LAST_N,     S_REQUESTS | S_CONFIG },
  { "presence_penalty",  GMD_OPT_PRESENCE_PENALTY,  S_REQUESTS | S_CONFIG },
  { "frequency_penalty", GMD_OPT_FREQUENCY_PENALTY, S_REQUESTS | S_CONFIG },
  /* No service-wide seed: each request draws one unless it gives it. */
  { "seed",              GMD_OPT_SEED,              S_REQUESTS },
  { "max_tokens",        GMD_OPT_MAX_TOKENS,        S_REQUESTS | S_CONFIG },
  { "stop",              GMD_OPT_STOP,              S_REQUESTS },
  { "image_tokens",      GMD_OPT_IMAGE_TOKENS,      S_REQUESTS | S_CONFIG },
  { "context_size",      GMD_OPT_CONTEXT_SIZE,      S_OPEN },
  { "history",           GMD_OPT_HISTORY,           S_OPEN },
};

static const guint32 image_token_budgets[] = { 70, 140, 280, 560, 1120 };

#define HANDLE_TOKEN_MAX 64
#define CONTEXT_SIZE_MIN 32

/* ---- messages ---- */

static const char *
scope_label (GmdOptionsScope scope)
{
  switch (scope)
    {
    case GMD_OPTIONS_GENERATE:     return "for Generate";
    case GMD_OPTIONS_RESPOND:      return "for Respond";
    case GMD_OPTIONS_SESSION_OPEN: return "for OpenSession";
    case GMD_OPTIONS_SESSION_SEND: return "for Session.Send";
    case GMD_OPTIONS_CONFIG:       return "in the configuration's [defaults]";
    }
  return "here";
}

static const char *
value_type_name (const GmdValue *v)
{
  if (v->type_name != NULL)
    return v->type_name;
  switch (v->type)
    {
    case GMD_VALUE_BOOL:    return "a boolean";
    case GMD_VALUE_INT:
    case GMD_VALUE_UINT:    return "an integer";
    case GMD_VALUE_DOUBLE:  return "a number";
    case GMD_VALUE_STRING:  return "a string";
    case GMD_VALUE_STRV:    return "an array of strings";
    case GMD_VALUE_HISTORY: return "a list of messages";
    case GMD_VALUE_OTHER:   break;
    }
  return "another type";
}

/* A client-supplied string made safe for a one-line message: escaped and shortened. */
static char *
quote_for_message (const char *s)
{
  g_autofree char *escaped = NULL;

  if (s == NULL)
    return g_strdup ("(null)");
  escaped = g_strescape (s, NULL);
  if (strlen (escaped) > 40)
    return g_strdup_printf ("\"%.40s…\"", escaped);
  return g_strdup_printf ("\"%s\"", escaped);
}

static gboolean
type_error (GError **error, const char *field, const char *expected, const GmdValue *v)
{
  gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "expected %s, got %s",
                       expected, value_type_name (v));
  return FALSE;
}

/* The shortest text that reads back as d ("1.5", not "1.5000000000000000"), without an
 * exponent for ordinary integers ("100", not "1e+02"). */
static void
format_number (char *buf, gsize len, double d)
{
  char fmt[8];
  int prec = 1;

  for (; prec < 17; prec++)
    {
      g_snprintf (fmt, sizeof fmt, "%%.%dg", prec);
      g_ascii_formatd (buf, len, fmt, d);
      if (g_ascii_strtod (buf, NULL) == d)
        break;
    }
  if (d != 0 && fabs (d) >= 1 && fabs (d) < 1e16 && (int) floor (log10 (fabs (d))) + 1 > prec)
    prec = (int) floor (log10 (fabs (d))) + 1;
  g_snprintf (fmt, sizeof fmt, "%%.%dg", prec);
  g_ascii_formatd (buf, len, fmt, d);
}

/* ---- value readers ---- */

static gboolean
read_bool (const GmdValue *v, const char *field, gboolean *out, GError **error)
{
  if (v->type != GMD_VALUE_BOOL)
    return type_error (error, field, "a boolean", v);
  *out = v->b ? TRUE : FALSE;
  return TRUE;
}

static gboolean
read_string (const GmdValue *v, const char *field, const char **out, GError **error)
{
  if (v->type != GMD_VALUE_STRING || v->s == NULL)
    return type_error (error, field, "a string", v);
  if (!g_utf8_validate (v->s, -1, NULL))
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "not valid UTF-8");
      return FALSE;
    }
  *out = v->s;
  return TRUE;
}

/* A finite number within [lo, hi], each end open or closed; the stored float must stay in
 * range too (top_p 1e-50 would round to 0). */
static gboolean
read_double (const GmdValue *v, const char *field, double lo, gboolean lo_open, double hi,
             gboolean hi_open, float *out, GError **error)
{
  double d;
  double f;
  char got[G_ASCII_DTOSTR_BUF_SIZE], lo_s[G_ASCII_DTOSTR_BUF_SIZE], hi_s[G_ASCII_DTOSTR_BUF_SIZE];

  switch (v->type)
    {
    case GMD_VALUE_INT:    d = (double) v->i; break;
    case GMD_VALUE_UINT:   d = (double) v->u; break;
    case GMD_VALUE_DOUBLE: d = v->d; break;
    default:               return type_error (error, field, "a number", v);
    }
  if (!isfinite (d))
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "must be a finite number, got %s",
                           isnan (d) ? "NaN" : (d > 0 ? "infinity" : "-infinity"));
      return FALSE;
    }
  f = (double) (float) d;
  if ((lo_open ? d <= lo || f <= lo : d < lo || f < lo) ||
      (hi_open ? d >= hi || f >= hi : d > hi || f > hi))
    {
      format_number (got, sizeof got, d);
      format_number (lo_s, sizeof lo_s, lo);
      format_number (hi_s, sizeof hi_s, hi);
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "must be in %c%s, %s%c, got %s",
                           lo_open ? '(' : '[', lo_s, hi_s, hi_open ? ')' : ']', got);
      return FALSE;
    }
  *out = (float) d;
  return TRUE;
}

/* An integer value (INT or UINT; never a number with a fraction) as a sign and magnitude,
 * so that uint64 values above INT64_MAX compare correctly. */
static gboolean
read_integer (const GmdValue *v, const char *field, gboolean *negative, guint64 *magnitude,
              GError **error)
{
  *negative = FALSE;
  *magnitude = 0;
  switch (v->type)
    {
    case GMD_VALUE_INT:
      *negative = v->i < 0;
      *magnitude = v->i < 0 ? (guint64) (-(v->i + 1)) + 1 : (guint64) v->i;
      return TRUE;
    case GMD_VALUE_UINT:
      *negative = FALSE;
      *magnitude = v->u;
      return TRUE;
    default:
      return type_error (error, field, "an integer", v);
    }
}

static void
format_integer (char *buf, gsize len, gboolean negative, guint64 magnitude)
{
  g_snprintf (buf, len, "%s%" G_GUINT64_FORMAT, negative ? "-" : "", magnitude);
}

/* An integer in [lo, hi]. */
static gboolean
read_int_range (const GmdValue *v, const char *field, gint64 lo, gint64 hi, gint64 *out,
                GError **error)
{
  gboolean neg;
  guint64 mag;
  char got[32];

  if (!read_integer (v, field, &neg, &mag, error))
    return FALSE;
  if ((!neg && mag <= (guint64) G_MAXINT64) || (neg && mag <= (guint64) G_MAXINT64 + 1))
    {
      gint64 i = neg ? (gint64) (-(gint64) (mag - 1) - 1) : (gint64) mag;
      if (i >= lo && i <= hi)
        {
          *out = i;
          return TRUE;
        }
    }
  format_integer (got, sizeof got, neg, mag);
  gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                       "must be in [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "], got %s", lo, hi, got);
  return FALSE;
}

static gboolean
valid_handle_token (const char *s)
{
  gsize n = 0;

  for (; s[n] != '\0'; n++)
    if (!(g_ascii_isalnum (s[n]) || s[n] == '_') || n >= HANDLE_TOKEN_MAX)
      return FALSE;
  return n > 0;
}

/* ---- messages (history) ---- */

GmdMessage *
gmd_message_new (GmdRole role, const char *text)
{
  GmdMessage *m = g_new0 (GmdMessage, 1);

  m->role = role;
  m->text = g_strdup (text);
  return m;
}

GmdMessage *
gmd_message_copy (const GmdMessage *m)
{
  GmdMessage *c = gmd_message_new (m->role, m->text);

  if (m->media != NULL)
    {
      c->media = g_array_sized_new (FALSE, FALSE, sizeof (GmdHistoryMedia), m->media->len);
      g_array_append_vals (c->media, m->media->data, m->media->len);
    }
  if (m->parts != NULL)
    c->parts = g_ptr_array_ref (m->parts);
  return c;
}

void
gmd_message_free (GmdMessage *m)
{
  if (m == NULL)
    return;
  g_free (m->text);
  if (m->media != NULL)
    g_array_unref (m->media);
  if (m->parts != NULL)
    g_ptr_array_unref (m->parts);
  g_free (m);
}

const char *
gmd_role_name (GmdRole role)
{
  return role == GMD_ROLE_MODEL ? "model" : "user";
}

gboolean
gmd_role_from_name (const char *name, GmdRole *out)
{
  if (g_strcmp0 (name, "user") == 0)
    *out = GMD_ROLE_USER;
  else if (g_strcmp0 (name, "model") == 0)
    *out = GMD_ROLE_MODEL;
  else
    return FALSE;
  return TRUE;
}

/* ---- GmdOptions ---- */

GmdOptions *
gmd_options_new (void)
{
  GmdOptions *o = g_new0 (GmdOptions, 1);

  /* Gemma 4's generation_config.json, as the engine's sampler defines it. */
  o->sampling = gm_sampler_default_params ();
  o->max_tokens = 1024;
  o->image_tokens = 280;
  o->stop = g_ptr_array_new_with_free_func (g_free);
  o->history = g_ptr_array_new_with_free_func ((GDestroyNotify) gmd_message_free);
  return o;
}

static void
copy_stop (GmdOptions *dst, const GPtrArray *src)
{
  g_ptr_array_set_size (dst->stop, 0);
  for (guint i = 0; i < src->len; i++)
    g_ptr_array_add (dst->stop, g_strdup (g_ptr_array_index (src, i)));
}

static void
copy_history (GmdOptions *dst, const GPtrArray *src)
{
  g_ptr_array_set_size (dst->history, 0);
  for (guint i = 0; i < src->len; i++)
    g_ptr_array_add (dst->history, gmd_message_copy (g_ptr_array_index (src, i)));
}

GmdOptions *
gmd_options_copy (const GmdOptions *o)
{
  GmdOptions *c = gmd_options_new ();

  c->set = o->set;
  c->handle_token = g_strdup (o->handle_token);
  c->system = g_strdup (o->system);
  c->thinking = o->thinking;
  c->raw = o->raw;
  c->sampling = o->sampling;
  c->max_tokens = o->max_tokens;
  copy_stop (c, o->stop);
  c->image_tokens = o->image_tokens;
  c->context_size = o->context_size;
  copy_history (c, o->history);
  return c;
}

void
gmd_options_free (GmdOptions *o)
{
  if (o == NULL)
    return;
  g_free (o->handle_token);
  g_free (o->system);
  g_ptr_array_unref (o->stop);
  g_ptr_array_unref (o->history);
  g_free (o);
}

static gboolean
set_stop (GmdOptions *o, const GmdValue *v, const GmdLimits *limits, const char *field,
          GError **error)
{
  g_autoptr (GPtrArray) stop = g_ptr_array_new_with_free_func (g_free);
  guint n = 0;

  if (v->type != GMD_VALUE_STRV)
    return type_error (error, field, "an array of strings", v);
  if (v->strv != NULL)
    n = g_strv_length ((char **) v->strv);
  if (n > limits->max_stop_strings)
    {
      gmd_set_field_error (error, GMD_ERROR_LIMIT_EXCEEDED, field,
                           "%u stop strings, at most %u allowed", n, limits->max_stop_strings);
      return FALSE;
    }
  for (guint i = 0; i < n; i++)
    {
      const char *s = v->strv[i];
      gsize len = strlen (s);
      g_autofree char *item = g_strdup_printf ("%s[%u]", field, i);

      if (len == 0)
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, item, "empty stop string");
          return FALSE;
        }
      if (!g_utf8_validate (s, len, NULL))
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, item, "not valid UTF-8");
          return FALSE;
        }
      if (len > limits->max_stop_bytes)
        {
          gmd_set_field_error (error, GMD_ERROR_LIMIT_EXCEEDED, item,
                               "%" G_GSIZE_FORMAT " bytes, at most %u allowed", len,
                               limits->max_stop_bytes);
          return FALSE;
        }
      g_ptr_array_add (stop, g_strdup (s));
    }
  g_ptr_array_unref (o->stop);
  o->stop = g_steal_pointer (&stop);
  return TRUE;
}

static gboolean
set_history (GmdOptions *o, const GmdValue *v, const char *field, GError **error)
{
  if (v->type != GMD_VALUE_HISTORY || v->history == NULL)
    return type_error (error, field, "a list of messages", v);
  for (guint i = 0; i < v->history->len; i++)
    {
      const GmdMessage *m = g_ptr_array_index (v->history, i);
      g_autofree char *item = g_strdup_printf ("%s[%u]", field, i);
      g_autofree char *text_field = g_strdup_printf ("%s.text", item);

      if (m == NULL)
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, item, "missing message");
          return FALSE;
        }
      if (m->role != GMD_ROLE_USER && m->role != GMD_ROLE_MODEL)
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, item, "role must be 'user' or 'model'");
          return FALSE;
        }
      if (m->text == NULL || (m->media != NULL && m->media->len > 0))
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, text_field,
                               "missing (history messages are text only)");
          return FALSE;
        }
      if (!g_utf8_validate (m->text, -1, NULL))
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, text_field, "not valid UTF-8");
          return FALSE;
        }
    }
  copy_history (o, v->history);
  return TRUE;
}

/* Validates and stores one key whose scope and uniqueness were already checked. */
static gboolean
set_value (GmdOptions *o, guint32 bit, const GmdValue *v, const GmdLimits *limits,
           const char *field, GError **error)
{
  gm_sampler_params *sp = &o->sampling;
  const char *s;
  gint64 i;

  switch (bit)
    {
    case GMD_OPT_HANDLE_TOKEN:
      if (!read_string (v, field, &s, error))
        return FALSE;
      if (!valid_handle_token (s))
        {
          g_autofree char *q = quote_for_message (s);
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                               "must be 1 to %d characters of [A-Za-z0-9_], got %s",
                               HANDLE_TOKEN_MAX, q);
          return FALSE;
        }
      g_free (o->handle_token);
      o->handle_token = g_strdup (s);
      return TRUE;
    case GMD_OPT_SYSTEM:
      if (!read_string (v, field, &s, error))
        return FALSE;
      g_free (o->system);
      o->system = g_strdup (s);
      return TRUE;
    case GMD_OPT_THINKING:
      return read_bool (v, field, &o->thinking, error);
    case GMD_OPT_RAW:
      return read_bool (v, field, &o->raw, error);
    case GMD_OPT_TEMPERATURE:
      return read_double (v, field, 0, FALSE, 100, FALSE, &sp->temperature, error);
    case GMD_OPT_TOP_P:
      return read_double (v, field, 0, TRUE, 1, FALSE, &sp->top_p, error);
    case GMD_OPT_MIN_P:
      return read_double (v, field, 0, FALSE, 1, TRUE, &sp->min_p, error);
    case GMD_OPT_REPEAT_PENALTY:
      return read_double (v, field, 0, TRUE, 10, FALSE, &sp->repeat_penalty, error);
    case GMD_OPT_PRESENCE_PENALTY:
      return read_double (v, field, -2, FALSE, 2, FALSE, &sp->presence_penalty, error);
    case GMD_OPT_FREQUENCY_PENALTY:
      return read_double (v, field, -2, FALSE, 2, FALSE, &sp->frequency_penalty, error);
    case GMD_OPT_TOP_K:
      if (!read_int_range (v, field, 0, G_MAXINT32, &i, error))
        return FALSE;
      sp->top_k = (gint32) i;
      return TRUE;
    case GMD_OPT_REPEAT_LAST_N:
      /* The upper end is the window: a larger value means the same as -1. */
      if (!read_int_range (v, field, -1, G_MAXINT32, &i, error))
        return FALSE;
      sp->repeat_last_n = (gint32) i;
      return TRUE;
    case GMD_OPT_SEED:
      {
        gboolean neg;
        guint64 mag;
        char got[32];

        if (!read_integer (v, field, &neg, &mag, error))
          return FALSE;
        if (neg)
          {
            format_integer (got, sizeof got, neg, mag);
            gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                                 "must be in [0, %" G_GUINT64_FORMAT "], got %s", G_MAXUINT64, got);
            return FALSE;
          }
        sp->seed = mag;
        return TRUE;
      }
    case GMD_OPT_MAX_TOKENS:
      {
        /* 0 = no cap from the configuration; the service checks against the window. */
        gint64 cap = limits->max_tokens_limit != 0 ? limits->max_tokens_limit : G_MAXINT32;
        gboolean neg;
        guint64 mag;
        char got[32];

        if (!read_integer (v, field, &neg, &mag, error))
          return FALSE;
        if (neg && mag == 1)
          o->max_tokens = -1;
        else if (!neg && mag >= 1 && mag <= (guint64) cap)
          o->max_tokens = (gint32) mag;
        else
          {
            format_integer (got, sizeof got, neg, mag);
            gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                                 "must be -1 or in [1, %" G_GINT64_FORMAT "], got %s", cap, got);
            return FALSE;
          }
        return TRUE;
      }
    case GMD_OPT_STOP:
      return set_stop (o, v, limits, field, error);
    case GMD_OPT_IMAGE_TOKENS:
      {
        gboolean neg;
        guint64 mag;
        char got[32];

        if (!read_integer (v, field, &neg, &mag, error))
          return FALSE;
        for (guint k = 0; !neg && k < G_N_ELEMENTS (image_token_budgets); k++)
          if (mag == image_token_budgets[k])
            {
              o->image_tokens = image_token_budgets[k];
              return TRUE;
            }
        format_integer (got, sizeof got, neg, mag);
        gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                             "must be one of 70, 140, 280, 560, 1120, got %s", got);
        return FALSE;
      }
    case GMD_OPT_CONTEXT_SIZE:
      /* The upper end is the model's window: the service checks it. */
      if (!read_int_range (v, field, CONTEXT_SIZE_MIN, G_MAXUINT32, &i, error))
        return FALSE;
      o->context_size = (guint32) i;
      return TRUE;
    case GMD_OPT_HISTORY:
      return set_history (o, v, field, error);
    default:
      break;
    }
  gmd_set_field_error (error, GMD_ERROR_INTERNAL, field, "option not handled");
  return FALSE;
}


gboolean
gmd_options_set (GmdOptions *o, GmdOptionsScope scope, const char *key, const GmdValue *value,
                 const GmdLimits *limits, const char *field_prefix, GError **error)
{
  GmdLimits default_limits;
  g_autofree char *field = NULL;
  gboolean ok;

  g_return_val_if_fail (o != NULL && value != NULL, FALSE);

  if (limits == NULL)
    {
      gmd_limits_init_default (&default_limits);
      limits = &default_limits;
    }
  if (key == NULL || !gmd_field_key_is_plain (key))
    {
      g_autofree char *q = quote_for_message (key);
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field_prefix, "unknown key %s", q);
      return FALSE;
    }
  field = field_prefix != NULL && *field_prefix != '\0'
            ? g_strdup_printf ("%s.%s", field_prefix, key) : g_strdup (key);

  for (guint k = 0; k < G_N_ELEMENTS (option_keys); k++)
    {
      if (strcmp (option_keys[k].name, key) != 0)
        continue;
      if (!(option_keys[k].scopes & SCOPE (scope)))
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "not allowed %s",
                               scope_label (scope));
          return FALSE;
        }
      /* A request gives each key once (an a{sv} may repeat keys); the configuration may
       * set one again (--set over the file). */
      if (scope != GMD_OPTIONS_CONFIG && (o->set & option_keys[k].bit))
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "given more than once");
          return FALSE;
        }
      /* set_value stores only after the value passed, so a failure leaves o as it was. */
      ok = set_value (o, option_keys[k].bit, value, limits, field, error);
      if (ok)
        o->set |= option_keys[k].bit;
      return ok;
    }
  gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "unknown key");
  return FALSE;
}

gboolean
gmd_options_check_combinations (const GmdOptions *o, const char *field_prefix, GError **error)
{
  const char *prefix = field_prefix != NULL && *field_prefix != '\0' ? field_prefix : NULL;
  g_autofree char *field = NULL;

  if ((o->set & GMD_OPT_RAW) && o->raw)
    {
      if (o->set & GMD_OPT_SYSTEM)
        field = prefix ? g_strdup_printf ("%s.system", prefix) : g_strdup ("system");
      else if ((o->set & GMD_OPT_THINKING) && o->thinking)
        field = prefix ? g_strdup_printf ("%s.thinking", prefix) : g_strdup ("thinking");
      if (field != NULL)
        {
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                               "not allowed with raw (no chat template)");
          return FALSE;
        }
    }
  return TRUE;
}

gboolean
gmd_options_check (const GmdOptions *o, GmdOptionsScope scope, const char *field_prefix,
                   GError **error)
{
  const char *prefix = field_prefix != NULL && *field_prefix != '\0' ? field_prefix : NULL;

  if ((scope == GMD_OPTIONS_GENERATE || scope == GMD_OPTIONS_SESSION_SEND) &&
      !(o->set & GMD_OPT_HANDLE_TOKEN))
    {
      g_autofree char *field =
          prefix ? g_strdup_printf ("%s.handle_token", prefix) : g_strdup ("handle_token");
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "required %s",
                           scope_label (scope));
      return FALSE;
    }
  return gmd_options_check_combinations (o, field_prefix, error);
}

void
gmd_options_merge_defaults (GmdOptions *o, const GmdOptions *d)
{
  /* Values are copied for every key the request left out; the bit follows the source, so
   * a later merge (the config after a session's options) can still fill keys that the
   * first source only had at their built-in value. handle_token and history are
   * per-request and never inherited. */
#define TAKE(bit, stmt) \
  do { if (!(o->set & (bit))) { stmt; o->set |= d->set & (bit); } } while (0)
  TAKE (GMD_OPT_SYSTEM, (g_free (o->system), o->system = g_strdup (d->system)));
  TAKE (GMD_OPT_THINKING, o->thinking = d->thinking);
  TAKE (GMD_OPT_RAW, o->raw = d->raw);
  TAKE (GMD_OPT_TEMPERATURE, o->sampling.temperature = d->sampling.temperature);
  TAKE (GMD_OPT_TOP_K, o->sampling.top_k = d->sampling.top_k);
  TAKE (GMD_OPT_TOP_P, o->sampling.top_p = d->sampling.top_p);
  TAKE (GMD_OPT_MIN_P, o->sampling.min_p = d->sampling.min_p);
  TAKE (GMD_OPT_REPEAT_PENALTY, o->sampling.repeat_penalty = d->sampling.repeat_penalty);
  TAKE (GMD_OPT_REPEAT_LAST_N, o->sampling.repeat_last_n = d->sampling.repeat_last_n);
  TAKE (GMD_OPT_PRESENCE_PENALTY, o->sampling.presence_penalty = d->sampling.presence_penalty);
  TAKE (GMD_OPT_FREQUENCY_PENALTY, o->sampling.frequency_penalty = d->sampling.frequency_penalty);
  TAKE (GMD_OPT_SEED, o->sampling.seed = d->sampling.seed);
  TAKE (GMD_OPT_MAX_TOKENS, o->max_tokens = d->max_tokens);
  TAKE (GMD_OPT_STOP, copy_stop (o, d->stop));
  TAKE (GMD_OPT_IMAGE_TOKENS, o->image_tokens = d->image_tokens);
  TAKE (GMD_OPT_CONTEXT_SIZE, o->context_size = d->context_size);
#undef TAKE
}

/* The float a key holds, as the double a person wrote (0.95, not 0.949999988). */
static double
clean_double (float f)
{
  char buf[G_ASCII_DTOSTR_BUF_SIZE];

  g_ascii_formatd (buf, sizeof buf, "%.7g", f);
  return g_ascii_strtod (buf, NULL);
}

GVariant *
gmd_options_to_variant (const GmdOptions *o)
{
  const gm_sampler_params *sp = &o->sampling;
  GVariantBuilder b;

  g_variant_builder_init (&b, G_VARIANT_TYPE_VARDICT);
  g_variant_builder_add (&b, "{sv}", "temperature", g_variant_new_double (clean_double (sp->temperature)));
  g_variant_builder_add (&b, "{sv}", "top_k", g_variant_new_int32 (sp->top_k));
  g_variant_builder_add (&b, "{sv}", "top_p", g_variant_new_double (clean_double (sp->top_p)));
  g_variant_builder_add (&b, "{sv}", "min_p", g_variant_new_double (clean_double (sp->min_p)));
  g_variant_builder_add (&b, "{sv}", "repeat_penalty",
                         g_variant_new_double (clean_double (sp->repeat_penalty)));
  g_variant_builder_add (&b, "{sv}", "repeat_last_n", g_variant_new_int32 (sp->repeat_last_n));
  g_variant_builder_add (&b, "{sv}", "presence_penalty",
                         g_variant_new_double (clean_double (sp->presence_penalty)));
  g_variant_builder_add (&b, "{sv}", "frequency_penalty",
                         g_variant_new_double (clean_double (sp->frequency_penalty)));
  g_variant_builder_add (&b, "{sv}", "max_tokens", g_variant_new_int32 (o->max_tokens));
  g_variant_builder_add (&b, "{sv}", "thinking", g_variant_new_boolean (o->thinking));
  g_variant_builder_add (&b, "{sv}", "image_tokens", g_variant_new_uint32 (o->image_tokens));
  /* Keys without a service-wide default appear only when given. */
  if (o->set & GMD_OPT_SEED)
    g_variant_builder_add (&b, "{sv}", "seed", g_variant_new_uint64 (sp->seed));
  if ((o->set & GMD_OPT_SYSTEM) && o->system != NULL)
    g_variant_builder_add (&b, "{sv}", "system", g_variant_new_string (o->system));
  if (o->set & GMD_OPT_RAW)
    g_variant_builder_add (&b, "{sv}", "raw", g_variant_new_boolean (o->raw));
  if (o->set & GMD_OPT_STOP)
    g_variant_builder_add (&b, "{sv}", "stop",
                           g_variant_new_strv ((const char *const *) o->stop->pdata, o->stop->len));
  if (o->set & GMD_OPT_CONTEXT_SIZE)
    g_variant_builder_add (&b, "{sv}", "context_size", g_variant_new_uint32 (o->context_size));
  return g_variant_builder_end (&b);
}
