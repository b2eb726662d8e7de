/* gmd-mailbox.c — a locked FIFO drained by an idle source in the owner's context. */
#include "gmd-mailbox.h"

typedef struct {
  GmdMailboxFunc func;
  gpointer data;
  GDestroyNotify free_func;
} Message;

struct _GmdMailbox {
  gint ref;               /* the owner + a running delivery */
  GMainContext *context;
  GMutex lock;
  GQueue messages;        /* of Message* */
  GSource *source;        /* pending idle source, or NULL */
  gboolean closed;        /* freed by the owner: deliver nothing more */
};

static void
message_free (Message *m)
{
  if (m->free_func != NULL)
    m->free_func (m->data);
  g_free (m);
}

static void
mailbox_unref (GmdMailbox *mb)
{
  if (!g_atomic_int_dec_and_test (&mb->ref))
    return;
  Message *m;
  while ((m = g_queue_pop_head (&mb->messages)) != NULL)
    message_free (m);
  g_mutex_clear (&mb->lock);
  g_main_context_unref (mb->context);
  g_free (mb);
}

GmdMailbox *
gmd_mailbox_new (GMainContext *context)
{
  GmdMailbox *mb = g_new0 (GmdMailbox, 1);
  mb->ref = 1;
  mb->context = g_main_context_ref (context);
  g_mutex_init (&mb->lock);
  g_queue_init (&mb->messages);
  return mb;
}

static gboolean
deliver (gpointer user_data)
{
  GmdMailbox *mb = user_data;
  g_atomic_int_inc (&mb->ref);
  for (;;)
    {
      g_mutex_lock (&mb->lock);
      Message *m = mb->closed ? NULL : g_queue_pop_head (&mb->messages);
      if (m == NULL && mb->source != NULL)
        {
          g_source_unref (mb->source);
          mb->source = NULL;
        }
      g_mutex_unlock (&mb->lock);
      if (m == NULL)
        break;
      m->func (m->data);
      message_free (m);
    }
  mailbox_unref (mb);
  return G_SOURCE_REMOVE;
}

void
gmd_mailbox_post (GmdMailbox *mb, GmdMailboxFunc func, gpointer data, GDestroyNotify free_func)
{
  Message *m = g_new (Message, 1);
  m->func = func;
  m->data = data;
  m->free_func = free_func;
  g_mutex_lock (&mb->lock);
  if (mb->closed)
    {
      g_mutex_unlock (&mb->lock);
      message_free (m);
      return;
    }
  g_queue_push_tail (&mb->messages, m);
  if (mb->source == NULL)
    {
      mb->source = g_idle_source_new ();
      g_source_set_priority (mb->source, G_PRIORITY_DEFAULT);
      g_source_set_name (mb->source, "gmd-mailbox");
      g_source_set_callback (mb->source, deliver, mb, NULL);
      g_source_attach (mb->source, mb->context);
    }
  g_mutex_unlock (&mb->lock);
}

void
gmd_mailbox_free (GmdMailbox *mb)
{
  if (mb == NULL)
    return;
  g_mutex_lock (&mb->lock);
  mb->closed = TRUE;
  GSource *source = mb->source;
  mb->source = NULL;
  g_mutex_unlock (&mb->lock);
  if (source != NULL)
    {
      g_source_destroy (source);
      g_source_unref (source);
    }
  mailbox_unref (mb);
}
