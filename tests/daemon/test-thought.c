/* test-thought.c — the thought/answer split of streamed text, fed whole and in every
 * possible two-way and byte-by-byte split. */
#include <glib.h>
#include <string.h>

#include "gmd-thought.h"

typedef struct {
  GString *thought;
  GString *answer;
  gboolean empty_run;
  gboolean order_ok;       /* no thought after the answer began */
} Out;

static void
collect (gpointer user_data, gboolean thinking, const char *text, gsize len)
{
  Out *o = user_data;
  if (len == 0)
    o->empty_run = TRUE;
  if (thinking && o->answer->len > 0)
    o->order_ok = FALSE;
  g_string_append_len (thinking ? o->thought : o->answer, text, len);
}

/* Feeds input cut at the given points (sorted offsets, -1 terminated). */
static void
run (gboolean enabled, const char *input, const int *cuts, Out *o)
{
  GmdThoughtSplitter t;
  o->thought = g_string_new (NULL);
  o->answer = g_string_new (NULL);
  o->empty_run = FALSE;
  o->order_ok = TRUE;
  gmd_thought_init (&t, enabled, collect, o);
  int from = 0;
  for (int i = 0; cuts && cuts[i] >= 0; i++)
    {
      gmd_thought_push (&t, input + from, (gsize) (cuts[i] - from));
      from = cuts[i];
    }
  gmd_thought_push (&t, input + from, strlen (input) - (gsize) from);
  gmd_thought_finish (&t);
  gmd_thought_clear (&t);
}

static void
out_clear (Out *o)
{
  g_string_free (o->thought, TRUE);
  g_string_free (o->answer, TRUE);
}

static void
check_all_splits (gboolean enabled, const char *input, const char *thought,
                  const char *answer)
{
  int n = (int) strlen (input);
  Out o;
  run (enabled, input, NULL, &o);
  g_assert_cmpstr (o.thought->str, ==, thought);
  g_assert_cmpstr (o.answer->str, ==, answer);
  g_assert_false (o.empty_run);
  out_clear (&o);
  for (int cut = 0; cut <= n; cut++)
    {
      int cuts[] = { cut, -1 };
      run (enabled, input, cuts, &o);
      g_assert_cmpstr (o.thought->str, ==, thought);
      g_assert_cmpstr (o.answer->str, ==, answer);
      g_assert_false (o.empty_run);
      out_clear (&o);
    }
  int *bytes = g_new (int, n + 1);
  for (int i = 0; i < n; i++)
    bytes[i] = i + 1;
  bytes[n] = -1;
  run (enabled, input, bytes, &o);
  g_assert_cmpstr (o.thought->str, ==, thought);
  g_assert_cmpstr (o.answer->str, ==, answer);
  g_assert_false (o.empty_run);
  out_clear (&o);
  g_free (bytes);
}

static void
test_thought_then_answer (void)
{
  check_all_splits (TRUE, "<|channel>thought\nThe user greets me.<channel|>Hello there!",
                    "The user greets me.", "Hello there!");
  Out o;
  run (TRUE, "<|channel>thought\nHmm.<channel|>Hi", NULL, &o);
  g_assert_true (o.order_ok);
  out_clear (&o);
}

static void
test_no_thought (void)
{
  check_all_splits (TRUE, "Just an answer, with < and <| and <channel but no marker.", "",
                    "Just an answer, with < and <| and <channel but no marker.");
}

static void
test_disabled_passes_markers (void)
{
  check_all_splits (FALSE, "<|channel>thought\nx<channel|>y", "",
                    "<|channel>thought\nx<channel|>y");
}

static void
test_header_variants (void)
{
  /* no header at all: the thought text is kept whole */
  check_all_splits (TRUE, "<|channel>pondering<channel|>ok", "pondering", "ok");
  /* a thought shorter than the header */
  check_all_splits (TRUE, "<|channel>tho<channel|>ok", "tho", "ok");
  /* empty thought */
  check_all_splits (TRUE, "<|channel>thought\n<channel|>ok", "", "ok");
  /* cut off inside the thought (cancelled, or max_tokens) */
  check_all_splits (TRUE, "<|channel>thought\nstill thinking", "still thinking", "");
  check_all_splits (TRUE, "<|channel>thoug", "thoug", "");
}

static void
test_partial_marker_at_end (void)
{
  /* text that looks like the start of a marker is released at the end */
  check_all_splits (TRUE, "answer <|chan", "", "answer <|chan");
  check_all_splits (TRUE, "<|channel>thought\nidea <chan", "idea <chan", "");
}

static void
test_utf8_kept_whole (void)
{
  check_all_splits (TRUE, "<|channel>thought\nÉté ☀<channel|>Ça va 😀", "Été ☀", "Ça va 😀");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/thought/thought-then-answer", test_thought_then_answer);
  g_test_add_func ("/thought/no-thought", test_no_thought);
  g_test_add_func ("/thought/disabled", test_disabled_passes_markers);
  g_test_add_func ("/thought/header-variants", test_header_variants);
  g_test_add_func ("/thought/partial-marker", test_partial_marker_at_end);
  g_test_add_func ("/thought/utf8", test_utf8_kept_whole);
  return g_test_run ();
}
