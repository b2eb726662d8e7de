/* test-scheduler.c — the fair queue: FIFO per client, least recently served client
 * first, removal, and the order prediction used for queue positions. */
#include <glib.h>

#include "gmd-scheduler.h"

/* Owners and items are plain addresses. */
static int owner_a, owner_b, owner_c;
static int items[32];

static void
assert_order (GmdScheduler *s, const int *expected, guint n)
{
  g_autoptr (GPtrArray) order = gmd_scheduler_order (s);
  g_assert_cmpuint (order->len, ==, n);
  for (guint i = 0; i < n; i++)
    g_assert_true (order->pdata[i] == &items[expected[i]]);
}

static void
assert_pops (GmdScheduler *s, const int *expected, guint n)
{
  assert_order (s, expected, n);
  for (guint i = 0; i < n; i++)
    g_assert_true (gmd_scheduler_pop (s) == &items[expected[i]]);
  g_assert_null (gmd_scheduler_pop (s));
  g_assert_cmpuint (gmd_scheduler_length (s), ==, 0);
}

static void
test_fifo_one_client (void)
{
  GmdScheduler *s = gmd_scheduler_new ();
  g_assert_null (gmd_scheduler_pop (s));
  for (int i = 0; i < 4; i++)
    gmd_scheduler_push (s, &owner_a, &items[i]);
  g_assert_cmpuint (gmd_scheduler_length (s), ==, 4);
  g_assert_cmpuint (gmd_scheduler_owner_length (s, &owner_a), ==, 4);
  g_assert_cmpuint (gmd_scheduler_owner_length (s, &owner_b), ==, 0);
  const int expected[] = { 0, 1, 2, 3 };
  assert_pops (s, expected, 4);
  gmd_scheduler_free (s);
}

static void
test_round_robin (void)
{
  GmdScheduler *s = gmd_scheduler_new ();
  /* a queues four, b two, c one: they take turns in the order they first queued */
  for (int i = 0; i < 4; i++)
    gmd_scheduler_push (s, &owner_a, &items[i]);
  gmd_scheduler_push (s, &owner_b, &items[10]);
  gmd_scheduler_push (s, &owner_b, &items[11]);
  gmd_scheduler_push (s, &owner_c, &items[20]);
  const int expected[] = { 0, 10, 20, 1, 11, 2, 3 };
  assert_pops (s, expected, 7);
  gmd_scheduler_free (s);
}

static void
test_newcomer_goes_next (void)
{
  GmdScheduler *s = gmd_scheduler_new ();
  for (int i = 0; i < 3; i++)
    gmd_scheduler_push (s, &owner_a, &items[i]);
  /* a is served (its request runs); then b arrives with one request */
  g_assert_true (gmd_scheduler_pop (s) == &items[0]);
  gmd_scheduler_push (s, &owner_b, &items[10]);
  /* b has not been served yet, a just was: b's single request does not wait for a's */
  const int expected[] = { 10, 1, 2 };
  assert_pops (s, expected, 3);
  gmd_scheduler_free (s);
}

static void
test_returning_client (void)
{
  GmdScheduler *s = gmd_scheduler_new ();
  gmd_scheduler_push (s, &owner_a, &items[0]);
  gmd_scheduler_push (s, &owner_b, &items[10]);
  g_assert_true (gmd_scheduler_pop (s) == &items[0]);   /* a served at t1 */
  g_assert_true (gmd_scheduler_pop (s) == &items[10]);  /* b served at t2 */
  /* b queues first this time, but a was served longer ago */
  gmd_scheduler_push (s, &owner_b, &items[11]);
  gmd_scheduler_push (s, &owner_a, &items[1]);
  const int expected[] = { 1, 11 };
  assert_pops (s, expected, 2);
  gmd_scheduler_free (s);
}

static void
test_remove (void)
{
  GmdScheduler *s = gmd_scheduler_new ();
  gmd_scheduler_push (s, &owner_a, &items[0]);
  gmd_scheduler_push (s, &owner_a, &items[1]);
  gmd_scheduler_push (s, &owner_b, &items[10]);
  g_assert_true (gmd_scheduler_remove (s, &items[0]));
  g_assert_false (gmd_scheduler_remove (s, &items[0]));
  g_assert_false (gmd_scheduler_remove (s, &items[5]));
  g_assert_cmpuint (gmd_scheduler_length (s), ==, 2);
  g_assert_cmpuint (gmd_scheduler_owner_length (s, &owner_a), ==, 1);
  /* a's next request is now its head and a was queued first */
  const int expected[] = { 1, 10 };
  assert_pops (s, expected, 2);
  gmd_scheduler_free (s);
}

static void
test_forget_owner (void)
{
  GmdScheduler *s = gmd_scheduler_new ();
  gmd_scheduler_push (s, &owner_b, &items[10]);
  gmd_scheduler_push (s, &owner_a, &items[0]);
  /* not forgotten while it has work */
  gmd_scheduler_forget_owner (s, &owner_a);
  g_assert_cmpuint (gmd_scheduler_owner_length (s, &owner_a), ==, 1);
  g_assert_true (gmd_scheduler_pop (s) == &items[10]);  /* b served first */
  g_assert_true (gmd_scheduler_pop (s) == &items[0]);   /* then a */
  /* remembered, a would now wait for b; forgotten, it counts as never served */
  gmd_scheduler_forget_owner (s, &owner_a);
  gmd_scheduler_push (s, &owner_b, &items[11]);
  gmd_scheduler_push (s, &owner_a, &items[1]);
  const int expected[] = { 1, 11 };
  assert_pops (s, expected, 2);
  gmd_scheduler_free (s);
}

static void
test_order_is_stable_under_pops (void)
{
  /* the predicted order must equal what pops return, step after step */
  GmdScheduler *s = gmd_scheduler_new ();
  int *owners[] = { &owner_a, &owner_b, &owner_c };
  guint32 seed = 7;
  for (int i = 0; i < 24; i++)
    {
      seed = seed * 1103515245u + 12345u;
      gmd_scheduler_push (s, owners[(seed >> 16) % 3], &items[i]);
    }
  while (gmd_scheduler_length (s) > 0)
    {
      g_autoptr (GPtrArray) order = gmd_scheduler_order (s);
      gpointer next = gmd_scheduler_pop (s);
      g_assert_true (order->pdata[0] == next);
      g_autoptr (GPtrArray) rest = gmd_scheduler_order (s);
      g_assert_cmpuint (rest->len, ==, order->len - 1);
      for (guint i = 0; i < rest->len; i++)
        g_assert_true (rest->pdata[i] == order->pdata[i + 1]);
    }
  gmd_scheduler_free (s);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_test_add_func ("/scheduler/fifo", test_fifo_one_client);
  g_test_add_func ("/scheduler/round-robin", test_round_robin);
  g_test_add_func ("/scheduler/newcomer", test_newcomer_goes_next);
  g_test_add_func ("/scheduler/returning-client", test_returning_client);
  g_test_add_func ("/scheduler/remove", test_remove);
  g_test_add_func ("/scheduler/forget-owner", test_forget_owner);
  g_test_add_func ("/scheduler/order-stable", test_order_is_stable_under_pops);
  return g_test_run ();
}
