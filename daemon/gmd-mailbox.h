/* gmd-mailbox.h — ordered delivery of work from any thread to one GMainContext.
 *
 * The engine thread and the prompt workers post results here; they are delivered in
 * the order posted, in the main context, by one idle source. Posting from the main
 * context itself defers a call to a later iteration (so an API call never runs a
 * caller's callback from inside itself). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct _GmdMailbox GmdMailbox;
typedef void (*GmdMailboxFunc) (gpointer data);

GmdMailbox *gmd_mailbox_new (GMainContext *context);
/* Drops undelivered messages (calling their free functions). Every thread that posts
 * must have stopped; may be called from inside a delivery. */
void gmd_mailbox_free (GmdMailbox *mb);

/* Thread-safe. func(data) runs later in the context; free_func(data) after it (or when
 * the message is dropped). */
void gmd_mailbox_post (GmdMailbox *mb, GmdMailboxFunc func, gpointer data,
                       GDestroyNotify free_func);

G_END_DECLS
