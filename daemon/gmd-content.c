/* gmd-content.c — prompt parts, media format recognition from magic bytes, and reading a
 * caller's file descriptor safely (regular files only, pread from 0, capped). */
#include "gmd-content.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gmd-audio.h"
#include "gmd-error.h"
#include "gmd-image.h"

static const char *const part_type_names[] = {
  [GMD_PART_TEXT] = "text",
  [GMD_PART_IMAGE] = "image",
  [GMD_PART_AUDIO] = "audio",
  [GMD_PART_VIDEO] = "video",
};

const char *
gmd_part_type_name (GmdPartType t)
{
  if ((unsigned) t < G_N_ELEMENTS (part_type_names))
    return part_type_names[t];
  return "unknown";
}

gboolean
gmd_part_type_from_name (const char *name, GmdPartType *out)
{
  for (guint i = 0; name != NULL && i < G_N_ELEMENTS (part_type_names); i++)
    if (strcmp (name, part_type_names[i]) == 0)
      {
        *out = (GmdPartType) i;
        return TRUE;
      }
  return FALSE;
}

/* ---- sniffing ---- */

static gboolean
has_prefix_at (const guint8 *data, gsize len, gsize offset, const char *magic, gsize n)
{
  return len >= offset + n && memcmp (data + offset, magic, n) == 0;
}

/* An MPEG audio frame header: 11 sync bits, then version, layer, bitrate and sample-rate
 * fields that must not hold their reserved values (this also rules out ADTS AAC, layer 0). */
static gboolean
is_mpeg_audio_frame (const guint8 *p, gsize len)
{
  if (len < 4 || p[0] != 0xFF || (p[1] & 0xE0) != 0xE0)
    return FALSE;
  if (((p[1] >> 3) & 3) == 1 || ((p[1] >> 1) & 3) == 0)
    return FALSE;
  if ((p[2] >> 4) == 0xF || ((p[2] >> 2) & 3) == 3)
    return FALSE;
  return TRUE;
}

GmdMediaFormat
gmd_media_sniff (const guint8 *d, gsize len)
{
  if (d == NULL)
    return GMD_MEDIA_UNKNOWN;
  if (has_prefix_at (d, len, 0, "\x89PNG\r\n\x1a\n", 8))
    return GMD_MEDIA_PNG;
  if (has_prefix_at (d, len, 0, "\xFF\xD8\xFF", 3))
    return GMD_MEDIA_JPEG;
  if (has_prefix_at (d, len, 0, "GIF87a", 6) || has_prefix_at (d, len, 0, "GIF89a", 6))
    return GMD_MEDIA_GIF;
  if (has_prefix_at (d, len, 0, "RIFF", 4) && has_prefix_at (d, len, 8, "WEBP", 4))
    return GMD_MEDIA_WEBP;
  /* RIFF (little endian), RIFX (big endian), RF64 and BW64 (EBU 64-bit) all hold WAVE. */
  if ((has_prefix_at (d, len, 0, "RIFF", 4) || has_prefix_at (d, len, 0, "RIFX", 4) ||
       has_prefix_at (d, len, 0, "RF64", 4) || has_prefix_at (d, len, 0, "BW64", 4)) &&
      has_prefix_at (d, len, 8, "WAVE", 4))
    return GMD_MEDIA_WAV;
  if (has_prefix_at (d, len, 0, "fLaC", 4))
    return GMD_MEDIA_FLAC;
  if (has_prefix_at (d, len, 0, "OggS", 4))
    return GMD_MEDIA_OGG;
  if (has_prefix_at (d, len, 0, "FORM", 4) &&
      (has_prefix_at (d, len, 8, "AIFF", 4) || has_prefix_at (d, len, 8, "AIFC", 4)))
    return GMD_MEDIA_AIFF;
  if (has_prefix_at (d, len, 0, ".snd", 4))
    return GMD_MEDIA_AU;
  if (has_prefix_at (d, len, 0, "ID3", 3) || is_mpeg_audio_frame (d, len))
    return GMD_MEDIA_MP3;
  return GMD_MEDIA_UNKNOWN;
}

const char *
gmd_media_format_mime (GmdMediaFormat f)
{
  switch (f)
    {
    case GMD_MEDIA_PNG:  return "image/png";
    case GMD_MEDIA_JPEG: return "image/jpeg";
    case GMD_MEDIA_GIF:  return "image/gif";
    case GMD_MEDIA_WEBP: return "image/webp";
    case GMD_MEDIA_WAV:  return "audio/wav";
    case GMD_MEDIA_FLAC: return "audio/flac";
    case GMD_MEDIA_OGG:  return "audio/ogg";
    case GMD_MEDIA_MP3:  return "audio/mpeg";
    case GMD_MEDIA_AIFF: return "audio/aiff";
    case GMD_MEDIA_AU:   return "audio/basic";
    case GMD_MEDIA_UNKNOWN: break;
    }
  return NULL;
}

int
gmd_media_format_modality (GmdMediaFormat f)
{
  switch (f)
    {
    case GMD_MEDIA_PNG:
    case GMD_MEDIA_JPEG:
    case GMD_MEDIA_GIF:
    case GMD_MEDIA_WEBP:
      return GMD_PART_IMAGE;
    case GMD_MEDIA_WAV:
    case GMD_MEDIA_FLAC:
    case GMD_MEDIA_OGG:
    case GMD_MEDIA_MP3:
    case GMD_MEDIA_AIFF:
    case GMD_MEDIA_AU:
      return GMD_PART_AUDIO;
    case GMD_MEDIA_UNKNOWN:
      break;
    }
  return -1;
}

/* ---- parts ---- */

GmdPart *
gmd_part_new_text (const char *text, gsize len, const char *field, GError **error)
{
  GmdPart *p;

  if (text == NULL && len > 0)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "missing text");
      return NULL;
    }
  /* With a length, g_utf8_validate also refuses NUL bytes inside the text. */
  if (len > 0 && !g_utf8_validate (text, (gssize) len, NULL))
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "not valid UTF-8");
      return NULL;
    }
  p = g_new0 (GmdPart, 1);
  p->type = GMD_PART_TEXT;
  p->text = g_strndup (len > 0 ? text : "", len);
  p->format = GMD_MEDIA_UNKNOWN;
  return p;
}

GmdPart *
gmd_part_new_media (GmdPartType type, GBytes *bytes)
{
  GmdPart *p = g_new0 (GmdPart, 1);
  gsize len = 0;
  const guint8 *data;

  p->type = type;
  p->media = bytes != NULL ? g_bytes_ref (bytes) : g_bytes_new (NULL, 0);
  data = g_bytes_get_data (p->media, &len);
  p->format = gmd_media_sniff (data, len);
  return p;
}

GmdPart *
gmd_part_new_encoded_image (GmdImage *image)
{
  GmdPart *p = g_new0 (GmdPart, 1);
  p->type = GMD_PART_IMAGE;
  p->image = gmd_image_ref (image);
  return p;
}

GmdPart *
gmd_part_new_encoded_audio (GmdAudio *audio)
{
  GmdPart *p = g_new0 (GmdPart, 1);
  p->type = GMD_PART_AUDIO;
  p->audio = gmd_audio_ref (audio);
  return p;
}

void
gmd_part_free (GmdPart *p)
{
  if (p == NULL)
    return;
  g_free (p->text);
  if (p->image != NULL)
    gmd_image_unref (p->image);
  if (p->audio != NULL)
    gmd_audio_unref (p->audio);
  if (p->media != NULL)
    g_bytes_unref (p->media);
  g_free (p);
}

/* ---- reading a caller's fd ---- */

static const char *
file_kind (mode_t mode)
{
  if (S_ISDIR (mode))  return "a directory";
  if (S_ISFIFO (mode)) return "a pipe";
  if (S_ISSOCK (mode)) return "a socket";
  if (S_ISCHR (mode))  return "a character device";
  if (S_ISBLK (mode))  return "a block device";
  if (S_ISLNK (mode))  return "a symbolic link";
  return "not a file";
}

GBytes *
gmd_media_read_fd (int fd, gsize max_bytes, const char *field, GError **error)
{
  struct stat st;
  int flags;
  gsize want_total, capacity, done = 0;
  guint8 *buf;

  if (fd < 0)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "not a file descriptor (%d)", fd);
      return NULL;
    }
  flags = fcntl (fd, F_GETFL);
  if (flags == -1)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "not an open file descriptor: %s",
                           g_strerror (errno));
      return NULL;
    }
  if (flags & O_PATH)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                           "opened with O_PATH, not for reading");
      return NULL;
    }
  if ((flags & O_ACCMODE) == O_WRONLY)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "not open for reading (write-only)");
      return NULL;
    }
  if (fstat (fd, &st) != 0)
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "cannot stat: %s", g_strerror (errno));
      return NULL;
    }
  if (!S_ISREG (st.st_mode))
    {
      gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field,
                           "not a regular file or memfd (%s)", file_kind (st.st_mode));
      return NULL;
    }
  if (st.st_size > 0 && (guint64) st.st_size > max_bytes)
    {
      gmd_set_field_error (error, GMD_ERROR_LIMIT_EXCEEDED, field,
                           "file is %" G_GUINT64_FORMAT " bytes, more than the limit of %" G_GSIZE_FORMAT " bytes",
                           (guint64) st.st_size, max_bytes);
      return NULL;
    }

  /* Read one byte past the cap to notice a file that grew (or lied about its size);
   * st_size only sizes the first allocation, never beyond the cap. */
  want_total = max_bytes < G_MAXSIZE ? max_bytes + 1 : G_MAXSIZE;
  capacity = MIN ((gsize) st.st_size + 1, want_total);
  capacity = MAX (capacity, (gsize) MIN (want_total, 4096));
  buf = g_malloc (capacity);
  for (;;)
    {
      ssize_t n;

      if (done == capacity)
        {
          if (capacity == want_total)
            break;
          capacity = capacity > want_total / 2 ? want_total : capacity * 2;
          buf = g_realloc (buf, capacity);
        }
      n = pread (fd, buf + done, capacity - done, (off_t) done);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          int e = errno;
          g_free (buf);
          gmd_set_field_error (error, GMD_ERROR_INVALID_ARGUMENT, field, "read error: %s", g_strerror (e));
          return NULL;
        }
      if (n == 0)
        break;
      done += (gsize) n;
    }
  if (done > max_bytes)
    {
      g_free (buf);
      gmd_set_field_error (error, GMD_ERROR_LIMIT_EXCEEDED, field,
                           "file is more than the limit of %" G_GSIZE_FORMAT " bytes", max_bytes);
      return NULL;
    }
  return g_bytes_new_take (g_realloc (buf, MAX (done, 1)), done);
}
