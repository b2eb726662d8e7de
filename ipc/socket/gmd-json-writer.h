/* gmd-json-writer.h — writes the server's JSON lines into a GString.
 *
 * The protocol's replies are small and flat; writing them directly keeps numbers readable
 * (0.41, not 0.40999999999999998 as JsonGenerator prints doubles) and needs no tree. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
  GString *out;
  gboolean need_comma;   /* a value was written at the current level */
} GmdJsonWriter;

void gmd_json_writer_init (GmdJsonWriter *w);
void gmd_json_writer_clear (GmdJsonWriter *w);

void gmd_json_writer_begin_object (GmdJsonWriter *w);
void gmd_json_writer_end_object (GmdJsonWriter *w);
void gmd_json_writer_begin_array (GmdJsonWriter *w);
void gmd_json_writer_end_array (GmdJsonWriter *w);
/* The key of the next member of the current object. */
void gmd_json_writer_key (GmdJsonWriter *w, const char *key);

/* Strings are written as UTF-8 (invalid sequences replaced by U+FFFD), control characters
 * and NUL escaped. */
void gmd_json_writer_string (GmdJsonWriter *w, const char *s);
void gmd_json_writer_string_len (GmdJsonWriter *w, const char *s, gsize len);
void gmd_json_writer_int (GmdJsonWriter *w, gint64 v);
void gmd_json_writer_uint (GmdJsonWriter *w, guint64 v);
/* The shortest text that reads back the same double; non-finite values as null. */
void gmd_json_writer_double (GmdJsonWriter *w, double v);
void gmd_json_writer_bool (GmdJsonWriter *w, gboolean v);
void gmd_json_writer_null (GmdJsonWriter *w);
/* Any GVariant: numbers, strings, booleans; dictionaries with string keys as objects,
 * other containers as arrays; variants unwrapped. */
void gmd_json_writer_variant (GmdJsonWriter *w, GVariant *v);

/* key + value shorthands for objects */
void gmd_json_writer_member_string (GmdJsonWriter *w, const char *key, const char *s);
void gmd_json_writer_member_int (GmdJsonWriter *w, const char *key, gint64 v);
void gmd_json_writer_member_uint (GmdJsonWriter *w, const char *key, guint64 v);
void gmd_json_writer_member_double (GmdJsonWriter *w, const char *key, double v);
void gmd_json_writer_member_bool (GmdJsonWriter *w, const char *key, gboolean v);

/* Appends '\n' and returns the text; the writer is cleared. */
char *gmd_json_writer_finish_line (GmdJsonWriter *w);

G_END_DECLS
