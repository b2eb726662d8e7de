/* gmd-error.h — the service's error domain, shared by the D-Bus and socket front ends.
 *
 * One code per documented error (docs/dbus-api.md §8, docs/protocol.md §7). Messages are
 * one line; an error about one field of a request starts with that field's path and ": "
 * ("options.top_p: must be in (0, 1], got 1.5", "content[1].fd: not a regular file"), so the
 * socket can report the path as "field" (gmd_error_field) and D-Bus shows it in the text. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

#define GMD_ERROR (gmd_error_quark ())
GQuark gmd_error_quark (void);

typedef enum {
  GMD_ERROR_INVALID_ARGUMENT,
  GMD_ERROR_BUSY,
  GMD_ERROR_LIMIT_EXCEEDED,
  GMD_ERROR_CONTEXT_EXCEEDED,
  GMD_ERROR_UNSUPPORTED_MEDIA,
  GMD_ERROR_CANCELLED,
  GMD_ERROR_PERMISSION_DENIED,
  GMD_ERROR_MODEL_NOT_LOADED,
  GMD_ERROR_INTERNAL,
  GMD_ERROR_N_CODES
} GmdErrorCode;

/* "invalid_argument", "busy", … (the socket protocol's codes). */
const char *gmd_error_code_name (GmdErrorCode code);
/* "org.gemmad.Gemmad1.Error.InvalidArgument", … */
const char *gmd_error_dbus_name (GmdErrorCode code);

/* Sets a GMD_ERROR whose message is "<field>: <formatted text>" (field may be NULL). */
void gmd_set_field_error (GError **error, GmdErrorCode code, const char *field,
                          const char *format, ...) G_GNUC_PRINTF (4, 5);

/* The field path at the start of a GMD_ERROR message set by gmd_set_field_error, or NULL.
 * A field path is [A-Za-z0-9_.\[\]] up to the first ": ". Free with g_free. */
char *gmd_error_field (const GError *error);

/* Whether a client-chosen key can go into a field path: 1-64 of [A-Za-z0-9_] (what
 * gmd_error_field reads back). Other keys are named in the message text instead. */
gboolean gmd_field_key_is_plain (const char *key);

/* Maps any GError to a GMD_ERROR code: GMD_ERROR as is, G_IO_ERROR_CANCELLED → CANCELLED,
 * everything else INTERNAL. */
GmdErrorCode gmd_error_code_of (const GError *error);

/* Registers GMD_ERROR with GDBus (also done by the first gmd_error_quark() call), so a
 * GError of this domain travels as org.gemmad.Gemmad1.Error.* and maps back in clients. */
void gmd_error_register_dbus (void);

/* The code for a socket code name ("busy") or a D-Bus error name; FALSE when unknown. */
gboolean gmd_error_code_from_name (const char *name, GmdErrorCode *out);

G_END_DECLS
