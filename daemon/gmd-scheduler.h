/* gmd-scheduler.h — the waiting requests: one FIFO per client, clients served fairly.
 *
 * pop() takes the head of the queue of the client that was served least recently (a
 * client never served comes first; ties go to the request queued first), so clients
 * with waiting work take turns: one client's four requests do not delay another
 * client's single request by four answers (docs/dbus-api.md §9). Pure data structure:
 * no GLib main loop, no service types, so it is unit-tested alone. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct _GmdScheduler GmdScheduler;

GmdScheduler *gmd_scheduler_new (void);
void gmd_scheduler_free (GmdScheduler *s);

/* Appends item (not owned) to owner's queue. */
void gmd_scheduler_push (GmdScheduler *s, gconstpointer owner, gpointer item);
/* The next item to run, or NULL when nothing waits. */
gpointer gmd_scheduler_pop (GmdScheduler *s);
/* Removes a waiting item; FALSE when it was not queued. */
gboolean gmd_scheduler_remove (GmdScheduler *s, gpointer item);

guint gmd_scheduler_length (GmdScheduler *s);
guint gmd_scheduler_owner_length (GmdScheduler *s, gconstpointer owner);

/* Every waiting item in the order pop() would return them (borrowed pointers). */
GPtrArray *gmd_scheduler_order (GmdScheduler *s);

/* Forgets what the scheduler remembers about owner (its place in the rotation); its
 * queue must be empty. */
void gmd_scheduler_forget_owner (GmdScheduler *s, gconstpointer owner);

G_END_DECLS
