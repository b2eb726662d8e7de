/* gmd-content.h — the prompt of one request as ordered parts (docs/dbus-api.md §4):
 * text, or an encoded image/audio file's bytes. Front ends build the parts (reading fds
 * with gmd_media_read_fd, never a caller's path); the service checks the caps. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  GMD_PART_TEXT,
  GMD_PART_IMAGE,
  GMD_PART_AUDIO,
  GMD_PART_VIDEO,   /* reserved: always UnsupportedMedia for now */
} GmdPartType;

const char *gmd_part_type_name (GmdPartType t);              /* "text", "image", … */
gboolean gmd_part_type_from_name (const char *name, GmdPartType *out);

/* Formats recognised from the first bytes of a file. */
typedef enum {
  GMD_MEDIA_UNKNOWN,
  GMD_MEDIA_PNG,
  GMD_MEDIA_JPEG,
  GMD_MEDIA_GIF,    /* recognised to name it in errors; not decoded */
  GMD_MEDIA_WEBP,   /* idem */
  GMD_MEDIA_WAV,
  GMD_MEDIA_FLAC,
  GMD_MEDIA_OGG,
  GMD_MEDIA_MP3,
  GMD_MEDIA_AIFF,
  GMD_MEDIA_AU,
} GmdMediaFormat;

GmdMediaFormat gmd_media_sniff (const guint8 *data, gsize len);
const char *gmd_media_format_mime (GmdMediaFormat f);        /* "image/png", … ; NULL for unknown */
/* Which modality a format belongs to: GMD_PART_IMAGE, GMD_PART_AUDIO, or -1 for unknown. */
int gmd_media_format_modality (GmdMediaFormat f);

typedef struct {
  GmdPartType type;
  char *text;              /* TEXT: UTF-8 (validated by gmd_part_new_text) */
  GBytes *media;           /* IMAGE/AUDIO/VIDEO: the encoded file */
  GmdMediaFormat format;   /* sniffed when the part was made */
  struct _GmdImage *image; /* IMAGE kept in a session's history: its encoded soft tokens
                              (gmd-image.h; media is NULL then), else NULL */
  struct _GmdAudio *audio; /* AUDIO kept in a session's history: its clips' encoded soft
                              tokens (gmd-audio.h; media is NULL then), else NULL */
} GmdPart;

/* Fails (INVALID_ARGUMENT naming field) when text is not valid UTF-8. */
GmdPart *gmd_part_new_text (const char *text, gsize len, const char *field, GError **error);
/* Takes a reference on bytes and sniffs the format (no error here: the service decides). */
GmdPart *gmd_part_new_media (GmdPartType type, GBytes *bytes);
/* An IMAGE part of a session's history: the encoded image (a reference is taken). */
GmdPart *gmd_part_new_encoded_image (struct _GmdImage *image);
/* An AUDIO part of a session's history: the encoded clips (a reference is taken). */
GmdPart *gmd_part_new_encoded_audio (struct _GmdAudio *audio);
void gmd_part_free (GmdPart *p);

/* Reads a caller's fd: must be a regular file (memfds count) open for reading; read with
 * pread from offset 0 (the fd's offset untouched) up to max_bytes. Errors, naming field:
 * INVALID_ARGUMENT for a closed, non-regular (pipe, socket, directory), O_PATH or
 * write-only fd or a read error; LIMIT_EXCEEDED when the file is larger than max_bytes.
 * Does not close fd. */
GBytes *gmd_media_read_fd (int fd, gsize max_bytes, const char *field, GError **error);

G_END_DECLS
