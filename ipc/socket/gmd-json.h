/* gmd-json.h — a strict JSON reader for one protocol line (RFC 8259, nothing more).
 *
 * Why not JsonParser: a line comes from any local user and may be 32 MiB. json-glib 1.6
 * recurses without a depth limit (a line of '[' overflows the stack), accepts comments,
 * keeps only the last of duplicate keys and cannot hold "\u0000" in strings. This reader
 * bounds depth and value count, refuses duplicate keys, keeps string lengths, tells an
 * integer literal from a number with a fraction and names the byte where the text goes
 * wrong. Replies are written with json-glib (gmd-proto.c). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define GMD_JSON_MAX_DEPTH 32          /* nesting of arrays/objects */
#define GMD_JSON_MAX_VALUES (1u << 20) /* values in one line */

typedef enum {
  GMD_JSON_NULL,
  GMD_JSON_BOOL,
  GMD_JSON_INT,      /* an integer literal that fits gint64 */
  GMD_JSON_DOUBLE,   /* a number with a fraction or exponent, or an integer beyond gint64 */
  GMD_JSON_STRING,
  GMD_JSON_ARRAY,
  GMD_JSON_OBJECT,
} GmdJsonType;

typedef struct _GmdJson GmdJson;

typedef struct {
  char *key;          /* NUL-terminated; keys never contain NUL */
  GmdJson *value;
} GmdJsonMember;

struct _GmdJson {
  GmdJsonType type;
  union {
    gboolean b;
    gint64 i;
    struct {
      double d;
      gboolean integer_literal; /* written without fraction/exponent (too big for gint64) */
    } num;
    struct {
      char *data;     /* NUL-terminated, may also contain NUL bytes ("\u0000") */
      gsize len;
    } str;
    struct {
      GmdJson **items;
      guint n;
    } arr;
    struct {
      GmdJsonMember *members;  /* in the order of the text */
      guint n;
    } obj;
  };
};

/* Parses exactly one JSON value (surrounded by optional whitespace) from data. Errors are
 * GMD_ERROR_INVALID_ARGUMENT "invalid JSON at byte N: …" (N counted from 1), or
 * GMD_ERROR_LIMIT_EXCEEDED for nesting or value count over the caps above. */
GmdJson *gmd_json_parse (const char *data, gsize len, GError **error);
void gmd_json_free (GmdJson *json);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GmdJson, gmd_json_free)

/* The member of an object, or NULL (also when json is not an object). */
const GmdJson *gmd_json_get (const GmdJson *json, const char *key);

/* "a string", "an integer", "a number with a fraction", "a boolean", "null", "an array",
 * "an object" — for "expected …, got …" messages. */
const char *gmd_json_type_name (const GmdJson *json);

/* TRUE for a string without NUL bytes (usable as a C string). */
gboolean gmd_json_is_c_string (const GmdJson *json);

G_END_DECLS
