/* gmd-scheduler.c — per-client FIFO queues served least-recently-served first. */
#include "gmd-scheduler.h"

typedef struct {
  gpointer item;
  guint64 seq;            /* when it was queued: breaks ties between clients */
} Entry;

typedef struct {
  gconstpointer owner;
  GQueue entries;         /* of Entry* */
  guint64 last_served;    /* 0 = never */
} OwnerQueue;

struct _GmdScheduler {
  GHashTable *owners;     /* owner → OwnerQueue* */
  guint64 next_seq;
  guint64 serve_clock;
  guint length;
};

static void
owner_queue_free (gpointer p)
{
  OwnerQueue *q = p;
  g_queue_clear_full (&q->entries, g_free);
  g_free (q);
}

GmdScheduler *
gmd_scheduler_new (void)
{
  GmdScheduler *s = g_new0 (GmdScheduler, 1);
  s->owners = g_hash_table_new_full (g_direct_hash, g_direct_equal, NULL, owner_queue_free);
  return s;
}

void
gmd_scheduler_free (GmdScheduler *s)
{
  if (s == NULL)
    return;
  g_hash_table_destroy (s->owners);
  g_free (s);
}

void
gmd_scheduler_push (GmdScheduler *s, gconstpointer owner, gpointer item)
{
  OwnerQueue *q = g_hash_table_lookup (s->owners, owner);
  if (q == NULL)
    {
      q = g_new0 (OwnerQueue, 1);
      q->owner = owner;
      g_queue_init (&q->entries);
      g_hash_table_insert (s->owners, (gpointer) owner, q);
    }
  Entry *e = g_new (Entry, 1);
  e->item = item;
  e->seq = ++s->next_seq;
  g_queue_push_tail (&q->entries, e);
  s->length++;
}

/* Does a (last served at a_served, head queued at a_seq) go before b? */
static gboolean
goes_before (guint64 a_served, guint64 a_seq, guint64 b_served, guint64 b_seq)
{
  if (a_served != b_served)
    return a_served < b_served;
  return a_seq < b_seq;
}

static OwnerQueue *
next_owner (GmdScheduler *s)
{
  OwnerQueue *best = NULL;
  GHashTableIter it;
  gpointer value;
  g_hash_table_iter_init (&it, s->owners);
  while (g_hash_table_iter_next (&it, NULL, &value))
    {
      OwnerQueue *q = value;
      Entry *head = g_queue_peek_head (&q->entries);
      if (head == NULL)
        continue;
      Entry *best_head = best ? g_queue_peek_head (&best->entries) : NULL;
      if (best == NULL ||
          goes_before (q->last_served, head->seq, best->last_served, best_head->seq))
        best = q;
    }
  return best;
}

gpointer
gmd_scheduler_pop (GmdScheduler *s)
{
  OwnerQueue *q = next_owner (s);
  if (q == NULL)
    return NULL;
  Entry *e = g_queue_pop_head (&q->entries);
  gpointer item = e->item;
  g_free (e);
  q->last_served = ++s->serve_clock;
  s->length--;
  return item;
}

gboolean
gmd_scheduler_remove (GmdScheduler *s, gpointer item)
{
  GHashTableIter it;
  gpointer value;
  g_hash_table_iter_init (&it, s->owners);
  while (g_hash_table_iter_next (&it, NULL, &value))
    {
      OwnerQueue *q = value;
      for (GList *l = q->entries.head; l != NULL; l = l->next)
        {
          Entry *e = l->data;
          if (e->item == item)
            {
              g_queue_delete_link (&q->entries, l);
              g_free (e);
              s->length--;
              return TRUE;
            }
        }
    }
  return FALSE;
}

guint
gmd_scheduler_length (GmdScheduler *s)
{
  return s->length;
}

guint
gmd_scheduler_owner_length (GmdScheduler *s, gconstpointer owner)
{
  OwnerQueue *q = g_hash_table_lookup (s->owners, owner);
  return q ? q->entries.length : 0;
}

typedef struct {
  OwnerQueue *q;
  GList *next;            /* next entry of q to hand out */
  guint64 served;         /* simulated last_served */
} Cursor;

GPtrArray *
gmd_scheduler_order (GmdScheduler *s)
{
  GPtrArray *order = g_ptr_array_sized_new (s->length);
  GArray *cursors = g_array_new (FALSE, FALSE, sizeof (Cursor));
  GHashTableIter it;
  gpointer value;
  g_hash_table_iter_init (&it, s->owners);
  while (g_hash_table_iter_next (&it, NULL, &value))
    {
      OwnerQueue *q = value;
      if (q->entries.head != NULL)
        {
          Cursor c = { q, q->entries.head, q->last_served };
          g_array_append_val (cursors, c);
        }
    }
  /* Replays pop() without changing anything. */
  guint64 clock = s->serve_clock;
  for (guint n = 0; n < s->length; n++)
    {
      Cursor *best = NULL;
      for (guint i = 0; i < cursors->len; i++)
        {
          Cursor *c = &g_array_index (cursors, Cursor, i);
          if (c->next == NULL)
            continue;
          if (best == NULL ||
              goes_before (c->served, ((Entry *) c->next->data)->seq, best->served,
                           ((Entry *) best->next->data)->seq))
            best = c;
        }
      if (best == NULL)
        break;
      g_ptr_array_add (order, ((Entry *) best->next->data)->item);
      best->next = best->next->next;
      best->served = ++clock;
    }
  g_array_unref (cursors);
  return order;
}

void
gmd_scheduler_forget_owner (GmdScheduler *s, gconstpointer owner)
{
  OwnerQueue *q = g_hash_table_lookup (s->owners, owner);
  if (q != NULL && q->entries.head == NULL)
    g_hash_table_remove (s->owners, owner);
}
