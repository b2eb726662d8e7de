/* gmd-line-reader.h — framing of the socket protocol (docs/protocol.md §1, §5, §6):
 * bytes and SCM_RIGHTS fds in, complete lines with their fds out.
 *
 * The fds of one read belong to the line that holds the last byte of that read. A line
 * longer than max_line_bytes (newline included) is reported once, as soon as it is known,
 * and the rest of it is skipped up to its newline without being buffered; its fds are
 * closed. Empty lines are dropped (with any fds). No I/O happens here except close(). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  GMD_LINE_OK,
  GMD_LINE_TOO_LONG,      /* data is NULL; the line's fds were closed */
  GMD_LINE_TOO_MANY_FDS,  /* more fds than max_fds_per_line, or the kernel truncated them */
} GmdLineStatus;

typedef struct {
  GmdLineStatus status;
  guint64 number;         /* line number on the connection, from 1 */
  char *data;             /* without the '\n' (and a '\r' before it); NUL-terminated */
  gsize len;
  int *fds;               /* owned: gmd_line_free closes them */
  guint n_fds;
} GmdLine;

void gmd_line_free (GmdLine *line);
/* Closes the line's fds now (after parsing, before answering). */
void gmd_line_close_fds (GmdLine *line);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (GmdLine, gmd_line_free)

typedef struct _GmdLineReader GmdLineReader;

GmdLineReader *gmd_line_reader_new (gsize max_line_bytes, guint max_fds_per_line);
/* Frees queued lines and closes every fd still held. */
void gmd_line_reader_free (GmdLineReader *reader);

/* One read's bytes; fds (taken: closed or handed on with a line) came with it, and
 * fds_truncated says the kernel cut the control data (MSG_CTRUNC). */
void gmd_line_reader_feed (GmdLineReader *reader, const char *data, gsize len,
                           const int *fds, guint n_fds, gboolean fds_truncated);
/* End of input: a last line without its newline still counts as a line. */
void gmd_line_reader_finish (GmdLineReader *reader);
/* The next complete line, or NULL. */
GmdLine *gmd_line_reader_pop (GmdLineReader *reader);
/* Complete lines waiting to be popped. */
guint gmd_line_reader_get_n_lines (GmdLineReader *reader);
/* Bytes of the incomplete line currently held (for tests of the cap). */
gsize gmd_line_reader_get_buffered (GmdLineReader *reader);

G_END_DECLS
