/* gmd-line-reader.c — newline framing with fds attached per line (see gmd-line-reader.h). */
#include "gmd-line-reader.h"

#include <string.h>
#include <unistd.h>

struct _GmdLineReader {
  gsize max_line_bytes;
  guint max_fds;
  GByteArray *partial;       /* the current line's bytes so far */
  GArray *partial_fds;       /* int: fds that came with the current line */
  gboolean partial_fds_bad;  /* too many fds for the current line */
  gboolean discarding;       /* the current line is too long; skipping to its newline */
  guint64 line_number;       /* of the current line */
  GQueue lines;              /* GmdLine*, complete */
};

static void
close_fds (const int *fds, guint n)
{
  for (guint i = 0; i < n; i++)
    if (fds[i] >= 0)
      close (fds[i]);
}

void
gmd_line_close_fds (GmdLine *line)
{
  close_fds (line->fds, line->n_fds);
  g_clear_pointer (&line->fds, g_free);
  line->n_fds = 0;
}

void
gmd_line_free (GmdLine *line)
{
  if (line == NULL)
    return;
  gmd_line_close_fds (line);
  g_free (line->data);
  g_free (line);
}

GmdLineReader *
gmd_line_reader_new (gsize max_line_bytes, guint max_fds_per_line)
{
  GmdLineReader *r = g_new0 (GmdLineReader, 1);

  r->max_line_bytes = MAX (max_line_bytes, 2);
  r->max_fds = max_fds_per_line;
  r->partial = g_byte_array_new ();
  r->partial_fds = g_array_new (FALSE, FALSE, sizeof (int));
  r->line_number = 1;
  g_queue_init (&r->lines);
  return r;
}

static void
drop_partial_fds (GmdLineReader *r)
{
  close_fds ((const int *) (void *) r->partial_fds->data, r->partial_fds->len);
  g_array_set_size (r->partial_fds, 0);
  r->partial_fds_bad = FALSE;
}

void
gmd_line_reader_free (GmdLineReader *r)
{
  if (r == NULL)
    return;
  g_queue_clear_full (&r->lines, (GDestroyNotify) gmd_line_free);
  drop_partial_fds (r);
  g_array_unref (r->partial_fds);
  g_byte_array_unref (r->partial);
  g_free (r);
}

/* fds that came with the current line. */
static void
attach_fds (GmdLineReader *r, const int *fds, guint n_fds, gboolean truncated)
{
  if (r->discarding)
    {
      close_fds (fds, n_fds);
      return;
    }
  for (guint i = 0; i < n_fds; i++)
    {
      if (r->partial_fds->len < r->max_fds)
        g_array_append_val (r->partial_fds, fds[i]);
      else
        {
          close (fds[i]);
          r->partial_fds_bad = TRUE;
        }
    }
  if (truncated)
    r->partial_fds_bad = TRUE;
}

/* The current line's content (newline excluded) would exceed the cap. */
static void
start_discarding (GmdLineReader *r)
{
  GmdLine *line = g_new0 (GmdLine, 1);

  line->status = GMD_LINE_TOO_LONG;
  line->number = r->line_number;
  g_queue_push_tail (&r->lines, line);
  g_byte_array_set_size (r->partial, 0);
  drop_partial_fds (r);
  r->discarding = TRUE;
}

/* The current line ends: queue it (unless empty or already reported) and start the next. */
static void
end_line (GmdLineReader *r)
{
  gsize len = r->partial->len;

  if (!r->discarding)
    {
      if (len > 0 && r->partial->data[len - 1] == '\r')
        len--;
      if (len == 0)
        drop_partial_fds (r);
      else
        {
          GmdLine *line = g_new0 (GmdLine, 1);

          line->status = r->partial_fds_bad ? GMD_LINE_TOO_MANY_FDS : GMD_LINE_OK;
          line->number = r->line_number;
          line->data = g_malloc (len + 1);
          memcpy (line->data, r->partial->data, len);
          line->data[len] = '\0';
          line->len = len;
          line->n_fds = r->partial_fds->len;
          line->fds = (int *) (void *) g_array_steal (r->partial_fds, NULL);
          r->partial_fds_bad = FALSE;
          g_queue_push_tail (&r->lines, line);
        }
    }
  r->discarding = FALSE;
  g_byte_array_set_size (r->partial, 0);
  r->line_number++;
}

/* Adds bytes (no newline among them) to the current line, or notices it is too long. */
static void
append_bytes (GmdLineReader *r, const char *data, gsize len)
{
  if (r->discarding || len == 0)
    return;
  /* content + '\n' must fit max_line_bytes */
  if (r->partial->len + len > r->max_line_bytes - 1)
    {
      start_discarding (r);
      return;
    }
  g_byte_array_append (r->partial, (const guint8 *) data, (guint) len);
}

void
gmd_line_reader_feed (GmdLineReader *r, const char *data, gsize len, const int *fds,
                      guint n_fds, gboolean fds_truncated)
{
  gsize pos = 0;

  while (pos < len)
    {
      const char *nl = memchr (data + pos, '\n', len - pos);
      gsize seg = nl != NULL ? (gsize) (nl - (data + pos)) : len - pos;

      append_bytes (r, data + pos, seg);
      pos += seg;
      if (nl == NULL)
        break;
      /* The fds belong to the line that holds the read's last byte: this one, if the
       * read ends with its newline. */
      if (pos + 1 == len)
        {
          attach_fds (r, fds, n_fds, fds_truncated);
          n_fds = 0;
          fds_truncated = FALSE;
        }
      end_line (r);
      pos++;
    }
  if (n_fds > 0 || fds_truncated)
    attach_fds (r, fds, n_fds, fds_truncated);
}

void
gmd_line_reader_finish (GmdLineReader *r)
{
  if (r->partial->len > 0 || r->partial_fds->len > 0 || r->discarding)
    end_line (r);
}

GmdLine *
gmd_line_reader_pop (GmdLineReader *r)
{
  return g_queue_pop_head (&r->lines);
}

guint
gmd_line_reader_get_n_lines (GmdLineReader *r)
{
  return r->lines.length;
}

gsize
gmd_line_reader_get_buffered (GmdLineReader *r)
{
  return r->partial->len;
}
