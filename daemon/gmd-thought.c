/* gmd-thought.c — the thought/answer split of streamed text. */
#include "gmd-thought.h"

#include <string.h>

static const char open_marker[] = "<|channel>";
static const char close_marker[] = "<channel|>";
static const char channel_header[] = "thought\n";

void
gmd_thought_init (GmdThoughtSplitter *t, gboolean enabled, GmdThoughtEmitFunc emit,
                  gpointer user_data)
{
  memset (t, 0, sizeof *t);
  t->enabled = enabled;
  t->hold = g_string_new (NULL);
  t->header = g_string_new (NULL);
  t->emit = emit;
  t->user_data = user_data;
}

void
gmd_thought_clear (GmdThoughtSplitter *t)
{
  if (t->hold)
    g_string_free (t->hold, TRUE);
  if (t->header)
    g_string_free (t->header, TRUE);
  t->hold = t->header = NULL;
}

static void
emit (GmdThoughtSplitter *t, gboolean thinking, const char *text, gsize len)
{
  if (len > 0)
    t->emit (t->user_data, thinking, text, len);
}

/* Thought text right after the opening marker: drop the channel header if it is there. */
static void
emit_thought (GmdThoughtSplitter *t, const char *text, gsize len)
{
  if (!t->header_pending)
    {
      emit (t, TRUE, text, len);
      return;
    }
  const gsize hl = sizeof channel_header - 1;
  g_string_append_len (t->header, text, len);
  gsize n = t->header->len;
  if (n < hl && memcmp (t->header->str, channel_header, n) == 0)
    return;  /* still undecided */
  t->header_pending = FALSE;
  gsize skip = n >= hl && memcmp (t->header->str, channel_header, hl) == 0 ? hl : 0;
  emit (t, TRUE, t->header->str + skip, n - skip);
  g_string_truncate (t->header, 0);
}

static void
emit_run (GmdThoughtSplitter *t, const char *text, gsize len)
{
  if (t->in_thought)
    emit_thought (t, text, len);
  else
    emit (t, FALSE, text, len);
}

/* Longest suffix of s[0..n) that is a proper prefix of marker. */
static gsize
partial_marker (const char *s, gsize n, const char *marker)
{
  gsize ml = strlen (marker);
  for (gsize k = MIN (n, ml - 1); k > 0; k--)
    if (memcmp (s + n - k, marker, k) == 0)
      return k;
  return 0;
}

void
gmd_thought_push (GmdThoughtSplitter *t, const char *text, gsize len)
{
  if (!t->enabled)
    {
      emit (t, FALSE, text, len);
      return;
    }
  g_string_append_len (t->hold, text, len);
  for (;;)
    {
      const char *marker = t->in_thought ? close_marker : open_marker;
      gsize ml = strlen (marker);
      const char *found = g_strstr_len (t->hold->str, t->hold->len, marker);
      if (found != NULL)
        {
          gsize at = (gsize) (found - t->hold->str);
          emit_run (t, t->hold->str, at);
          g_string_erase (t->hold, 0, (gssize) (at + ml));
          if (t->in_thought && t->header_pending)
            {
              /* a thought shorter than its header: whatever came is thought text */
              t->header_pending = FALSE;
              emit (t, TRUE, t->header->str, t->header->len);
              g_string_truncate (t->header, 0);
            }
          t->in_thought = !t->in_thought;
          t->header_pending = t->in_thought;
          continue;
        }
      gsize keep = partial_marker (t->hold->str, t->hold->len, marker);
      emit_run (t, t->hold->str, t->hold->len - keep);
      g_string_erase (t->hold, 0, (gssize) (t->hold->len - keep));
      return;
    }
}

void
gmd_thought_finish (GmdThoughtSplitter *t)
{
  if (!t->enabled)
    return;
  if (t->hold->len > 0)
    {
      /* not a marker after all */
      g_autofree char *rest = g_strndup (t->hold->str, t->hold->len);
      gsize n = t->hold->len;
      g_string_truncate (t->hold, 0);
      emit_run (t, rest, n);
    }
  if (t->header_pending)
    {
      t->header_pending = FALSE;
      emit (t, TRUE, t->header->str, t->header->len);
      g_string_truncate (t->header, 0);
    }
}
