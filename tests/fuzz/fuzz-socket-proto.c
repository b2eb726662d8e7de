/* fuzz-socket-proto.c — libFuzzer target for the socket protocol layer (ipc/socket):
 * line framing, the strict JSON reader, request parsing, and the lines written back.
 *
 * The input is split into lines by the line reader (chunk size and line cap taken from the
 * first byte), and every line is parsed as a request with two fds attached (a memfd
 * holding a PNG signature, and a pipe that must be refused); the whole input is also
 * parsed as one line. Invariants checked (the target aborts so the fuzzer keeps the input):
 * the id that parsing reports equals what gmd_proto_peek_id finds; every line the server
 * would write for the result (errors, events, results) is one valid JSON object whose id
 * is the request's; the reader never buffers more than its cap. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gmd-json.h"
#include "gmd-line-reader.h"
#include "gmd-proto.h"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

#define FUZZ_ASSERT(c) do { if (!(c)) { fprintf (stderr, "fuzz-socket-proto: %s failed\n", #c); abort (); } } while (0)

static int media_fds[2] = { -1, -1 };

static void
open_media_fds (void)
{
  static const guint8 png[] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R' };
  int pipe_fds[2];

  if (media_fds[0] >= 0)
    return;
  media_fds[0] = memfd_create ("fuzz-media", MFD_CLOEXEC);
  FUZZ_ASSERT (media_fds[0] >= 0);
  FUZZ_ASSERT (write (media_fds[0], png, sizeof png) == (ssize_t) sizeof png);
  FUZZ_ASSERT (pipe2 (pipe_fds, O_CLOEXEC) == 0);
  media_fds[1] = pipe_fds[0];   /* not a regular file: must be refused */
  close (pipe_fds[1]);
}

static gboolean
ids_equal (const GmdProtoId *a, const GmdProtoId *b)
{
  if (a == NULL || b == NULL)
    return a == b;
  if (a->is_string != b->is_string)
    return FALSE;
  return a->is_string ? strcmp (a->string, b->string) == 0 : a->number == b->number;
}

/* A server line: ends with one '\n', is a JSON object, and carries id. */
static void
check_line (char *line, const GmdProtoId *id)
{
  g_autofree char *owned = line;
  gsize len = strlen (owned);
  g_autoptr (GmdJson) json = NULL;
  g_autoptr (GmdProtoId) got = NULL;
  const GmdJson *id_value;

  FUZZ_ASSERT (len > 0 && owned[len - 1] == '\n');
  FUZZ_ASSERT (memchr (owned, '\n', len - 1) == NULL);
  json = gmd_json_parse (owned, len - 1, NULL);
  FUZZ_ASSERT (json != NULL && json->type == GMD_JSON_OBJECT);
  id_value = gmd_json_get (json, "id");
  FUZZ_ASSERT (id_value != NULL);
  if (id == NULL)
    FUZZ_ASSERT (id_value->type == GMD_JSON_NULL);
  else
    {
      got = gmd_proto_peek_id (owned, len - 1);
      FUZZ_ASSERT (ids_equal (got, id));
    }
}

static void
exercise_replies (const GmdProtoRequest *req)
{
  GmdProgress progress = { GMD_STATE_PREFILL, 0, 12, 34 };
  GmdSummary summary = { 0 };
  GmdJsonWriter w;

  check_line (gmd_proto_accepted_line (req->id, "r-1"), req->id);
  check_line (gmd_proto_progress_line (req->id, &progress), req->id);
  /* Strings from the request travel back in pieces and results. */
  check_line (gmd_proto_piece_line (req->id, 3, FALSE, req->client != NULL ? req->client : "x"), req->id);
  summary.stop_reason = GMD_STOP_ERROR;
  summary.error_code = GMD_ERROR_UNSUPPORTED_MEDIA;
  summary.error_message = req->session != NULL ? req->session : "bad";
  summary.total_seconds = 0.1 * (double) (req->keep % 97);
  check_line (gmd_proto_done_line (req->id, &summary), req->id);
  check_line (gmd_proto_version_error_line (req->id, req->version), req->id);
  gmd_proto_begin_result (&w, req->id);
  gmd_json_writer_member_string (&w, "model_path", req->model_path);
  if (req->options != NULL)
    {
      g_autoptr (GVariant) options = g_variant_ref_sink (gmd_options_to_variant (req->options));
      gmd_json_writer_key (&w, "options");
      gmd_json_writer_variant (&w, options);
    }
  check_line (gmd_proto_end_result (&w), req->id);
  if (req->session != NULL)
    {
      char *line = gmd_proto_session_closed_line (req->session, GMD_CLOSE_IDLE);
      check_line (line, NULL);
    }
}

static void
parse_one (const char *line, gsize len, const GmdLimits *limits, gboolean expect_hello)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GmdProtoId) id = NULL;
  g_autoptr (GmdProtoId) peeked = gmd_proto_peek_id (line, len);
  g_autoptr (GmdProtoRequest) req = gmd_proto_parse (line, len, media_fds, 2, limits, expect_hello,
                                                     &id, &error);

  FUZZ_ASSERT ((req == NULL) == (error != NULL));
  FUZZ_ASSERT (ids_equal (id, peeked));
  if (req == NULL)
    {
      FUZZ_ASSERT (error->domain == GMD_ERROR);
      FUZZ_ASSERT (error->message != NULL && strchr (error->message, '\n') == NULL);
      check_line (gmd_proto_error_line (id, error), id);
      return;
    }
  FUZZ_ASSERT (ids_equal (req->id, id));
  if (expect_hello)
    FUZZ_ASSERT (req->type == GMD_PROTO_HELLO);
  if (gmd_proto_type_is_stream (req->type))
    FUZZ_ASSERT (req->parts != NULL && req->parts->len > 0 && req->options != NULL);
  exercise_replies (req);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  GmdLimits limits;
  GmdLineReader *reader;
  GmdLine *line;
  gsize chunk, max_line;

  open_media_fds ();
  gmd_limits_init_default (&limits);
  /* Small caps so that the fuzzer reaches them. */
  limits.max_media_bytes = 64;
  limits.max_media_parts = 3;
  limits.max_stop_strings = 2;
  limits.max_stop_bytes = 8;

  if (size == 0)
    return 0;
  chunk = (gsize) (data[0] & 0x0f) + 1;
  max_line = 16 + (gsize) (data[0] >> 4) * 64;
  data++;
  size--;

  parse_one ((const char *) data, size, &limits, FALSE);

  reader = gmd_line_reader_new (max_line, 2);
  for (gsize pos = 0; pos < size; pos += chunk)
    {
      gmd_line_reader_feed (reader, (const char *) data + pos, MIN (chunk, size - pos), NULL, 0, FALSE);
      FUZZ_ASSERT (gmd_line_reader_get_buffered (reader) < max_line);
      while ((line = gmd_line_reader_pop (reader)) != NULL)
        {
          if (line->status == GMD_LINE_OK)
            {
              FUZZ_ASSERT (line->len > 0 && line->len < max_line);
              FUZZ_ASSERT (memchr (line->data, '\n', line->len) == NULL);
              parse_one (line->data, line->len, &limits, line->number % 2 == 1);
            }
          gmd_line_free (line);
        }
    }
  gmd_line_reader_finish (reader);
  while ((line = gmd_line_reader_pop (reader)) != NULL)
    {
      if (line->status == GMD_LINE_OK)
        parse_one (line->data, line->len, &limits, FALSE);
      gmd_line_free (line);
    }
  gmd_line_reader_free (reader);
  return 0;
}
