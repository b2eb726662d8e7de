/* gmd-proto.h — the socket protocol without I/O (docs/protocol.md §2–§7): one line in,
 * a typed request out (or an error naming the field), and the lines the server writes.
 *
 * Media fds are read here (gmd_media_read_fd) but never closed: the caller owns the fds
 * that came with a line and closes all of them after parsing, referenced or not. */
#pragma once

#include <glib.h>

#include "daemon/gmd-content.h"
#include "daemon/gmd-error.h"
#include "daemon/gmd-limits.h"
#include "daemon/gmd-options.h"
#include "daemon/gmd-service.h"
#include "gmd-json-writer.h"

G_BEGIN_DECLS

#define GMD_PROTO_VERSION 1
#define GMD_PROTO_ID_MAX_BYTES 128
#define GMD_PROTO_ID_MAX_INT ((G_GINT64_CONSTANT (1) << 53) - 1)

/* A request id: a string of 1–128 bytes or an integer 0 … 2^53−1. */
typedef struct {
  gboolean is_string;
  gint64 number;
  char *string;
} GmdProtoId;

GmdProtoId *gmd_proto_id_new_int (gint64 number);
GmdProtoId *gmd_proto_id_new_string (const char *string);
GmdProtoId *gmd_proto_id_copy (const GmdProtoId *id);
void gmd_proto_id_free (GmdProtoId *id);
/* A hash key that tells 5 from "5": "i:5", "s:5". */
char *gmd_proto_id_key (const GmdProtoId *id);
/* For messages: 5, "abc". */
char *gmd_proto_id_to_display (const GmdProtoId *id);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GmdProtoId, gmd_proto_id_free)

typedef enum {
  GMD_PROTO_HELLO,
  GMD_PROTO_INFO,
  GMD_PROTO_GENERATE,
  GMD_PROTO_SESSION_OPEN,
  GMD_PROTO_SESSION_SEND,
  GMD_PROTO_SESSION_HISTORY,
  GMD_PROTO_SESSION_TRUNCATE,
  GMD_PROTO_SESSION_CLOSE,
  GMD_PROTO_CANCEL,
  GMD_PROTO_LIST,
  GMD_PROTO_RELOAD_CONFIG,
  GMD_PROTO_LOAD_MODEL,
  GMD_PROTO_UNLOAD_MODEL,
} GmdProtoType;

const char *gmd_proto_type_name (GmdProtoType type);   /* "hello", "session.send", … */
gboolean gmd_proto_type_is_admin (GmdProtoType type);
/* generate and session.send: answered by a stream. */
gboolean gmd_proto_type_is_stream (GmdProtoType type);

typedef struct {
  GmdProtoType type;
  GmdProtoId *id;

  /* hello */
  gint64 version;
  char *client;               /* may be NULL */

  /* generate, session.send: GmdPart*, with its free func */
  GPtrArray *parts;
  /* generate, session.open, session.send (validated for that request's scope) */
  GmdOptions *options;

  /* session.* */
  char *session;
  guint32 keep;               /* session.truncate */

  /* cancel: exactly one of target and request_handle */
  GmdProtoId *target;
  char *request_handle;

  /* load_model */
  char *model_path;           /* "" = the configured model */
  char *mmproj_path;          /* "" = none */
  guint32 context_size;       /* 0 = configured */
  guint32 threads;            /* 0 = configured */
  gboolean drain;             /* default TRUE */
} GmdProtoRequest;

void gmd_proto_request_free (GmdProtoRequest *request);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GmdProtoRequest, gmd_proto_request_free)

/* Parses one line (without its newline). fds are the descriptors that came with it
 * ({"fd": N} indexes them); limits gives the media caps and option ranges.
 * expect_hello: the connection has not said hello yet, so any other type is refused
 * ("expected hello") before its fields are looked at.
 *
 * On failure returns NULL and sets error; *id_out (if given) is set to a copy of the
 * request's id when the line had a usable one, so the error can be tied to it, and left
 * NULL otherwise (the error then goes out with "id": null). */
GmdProtoRequest *gmd_proto_parse (const char *line, gsize len, const int *fds, guint n_fds,
                                  const GmdLimits *limits, gboolean expect_hello,
                                  GmdProtoId **id_out, GError **error);

/* Only the id of a line (for a line that is refused before parsing, e.g. too many fds);
 * NULL when the line has no usable id. */
GmdProtoId *gmd_proto_peek_id (const char *line, gsize len);

/* ---- server → client lines; each ends with '\n'. id NULL writes "id": null. ---- */

/* {"id":X,"result":{ … }}: begin_result opens the result object, the caller adds its
 * members, end_result closes it and returns the line. */
void gmd_proto_begin_result (GmdJsonWriter *w, const GmdProtoId *id);
char *gmd_proto_end_result (GmdJsonWriter *w);
/* {"id":X,"result":{}} */
char *gmd_proto_empty_result_line (const GmdProtoId *id);

/* {"id":X,"error":{"code","message","field"?}}: the code from gmd_error_code_of, the
 * field from gmd_error_field. */
char *gmd_proto_error_line (const GmdProtoId *id, const GError *error);
char *gmd_proto_error_line_literal (const GmdProtoId *id, GmdErrorCode code,
                                    const char *message, const char *field);
/* The hello answer to an unsupported version, with "supported": [1]. */
char *gmd_proto_version_error_line (const GmdProtoId *id, gint64 version);

char *gmd_proto_accepted_line (const GmdProtoId *id, const char *request_handle);
char *gmd_proto_progress_line (const GmdProtoId *id, const GmdProgress *progress);
char *gmd_proto_piece_line (const GmdProtoId *id, guint32 seq, gboolean thinking,
                            const char *text);
/* Every summary key of docs/protocol.md §4.3. */
char *gmd_proto_done_line (const GmdProtoId *id, const GmdSummary *summary);
char *gmd_proto_session_closed_line (const char *session, GmdCloseReason reason);

G_END_DECLS
