/* gmd-thought.h — splits a model's streamed text into thought and answer.
 *
 * With thinking on, Gemma 4 writes "<|channel>thought\n…<channel|>" before its answer.
 * The markers are USER_DEFINED tokens, so their text comes through the detokenizer; this
 * filter removes them and the "thought\n" channel header and hands the rest on, each run
 * marked as thought or answer. Markers split across pushes are recognised (the stop-
 * string filter can release text at any byte). Pure text processing, unit-tested alone. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef void (*GmdThoughtEmitFunc) (gpointer user_data, gboolean thinking, const char *text,
                                    gsize len);

typedef struct {
  gboolean enabled;        /* FALSE: everything is answer, markers included */
  gboolean in_thought;
  gboolean header_pending; /* "thought\n" may still follow the opening marker */
  GString *hold;           /* text that may be the start of a marker */
  GString *header;         /* text that may be the channel header */
  GmdThoughtEmitFunc emit;
  gpointer user_data;
} GmdThoughtSplitter;

void gmd_thought_init (GmdThoughtSplitter *t, gboolean enabled, GmdThoughtEmitFunc emit,
                       gpointer user_data);
/* Emits what can be decided now (never an empty run). */
void gmd_thought_push (GmdThoughtSplitter *t, const char *text, gsize len);
/* End of the stream: emits what was held back. */
void gmd_thought_finish (GmdThoughtSplitter *t);
void gmd_thought_clear (GmdThoughtSplitter *t);

G_END_DECLS
