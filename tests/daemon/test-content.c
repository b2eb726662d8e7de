/* test-content.c — prompt parts, media sniffing and gmd_media_read_fd on every kind of fd
 * a caller could pass (daemon/gmd-content.c). */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gmd-content.h"
#include "gmd-error.h"

/* ---- sniffing ---- */

typedef struct {
  const char *what;
  const char *bytes;
  gsize len;
  GmdMediaFormat format;
} Sample;

#define S(what, lit, fmt) { what, lit, sizeof (lit) - 1, fmt }

/* The first bytes of real files of each kind (headers as the encoders write them). */
static const Sample samples[] = {
  S ("png", "\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x02\0\0\0", GMD_MEDIA_PNG),
  S ("jpeg/jfif", "\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0", GMD_MEDIA_JPEG),
  S ("jpeg/exif", "\xff\xd8\xff\xe1\x2f\xfe" "Exif\0\0MM\0*", GMD_MEDIA_JPEG),
  S ("gif87a", "GIF87a\x10\0\x10\0\x80\0\0", GMD_MEDIA_GIF),
  S ("gif89a", "GIF89a\x01\0\x01\0\0\0\0", GMD_MEDIA_GIF),
  S ("webp", "RIFF\x24\x01\0\0WEBPVP8 \x18\x01\0\0", GMD_MEDIA_WEBP),
  S ("wav", "RIFF\x24\x08\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x80\x3e\0\0", GMD_MEDIA_WAV),
  S ("wav/rifx", "RIFX\0\0\x08\x24WAVEfmt ", GMD_MEDIA_WAV),
  S ("wav/rf64", "RF64\xff\xff\xff\xff" "WAVEds64\x1c\0\0\0", GMD_MEDIA_WAV),
  S ("flac", "fLaC\0\0\0\x22\x10\0\x10\0", GMD_MEDIA_FLAC),
  S ("ogg", "OggS\0\x02\0\0\0\0\0\0\0\0\x01\x02\x03\x04\0\0\0\0", GMD_MEDIA_OGG),
  S ("mp3/id3", "ID3\x04\0\0\0\0\x01\x00", GMD_MEDIA_MP3),
  S ("mp3/frame", "\xff\xfb\x90\x64\0\0\0\0", GMD_MEDIA_MP3),         /* MPEG-1 layer III 128k 44.1k */
  S ("mp3/mpeg2", "\xff\xf3\x48\xc4\0\0", GMD_MEDIA_MP3),             /* MPEG-2 layer III */
  S ("aiff", "FORM\0\0\x10\x2e" "AIFFCOMM\0\0\0\x12", GMD_MEDIA_AIFF),
  S ("aifc", "FORM\0\0\x10\x2e" "AIFCFVER\0\0\0\x04", GMD_MEDIA_AIFF),
  S ("au", ".snd\0\0\0\x18\xff\xff\xff\xff\0\0\0\x03", GMD_MEDIA_AU),
  /* not media, or not recognised */
  S ("text", "not an image", GMD_MEDIA_UNKNOWN),
  S ("empty", "", GMD_MEDIA_UNKNOWN),
  S ("short png", "\x89PN", GMD_MEDIA_UNKNOWN),
  S ("short riff", "RIFF\0\0\0\0WAV", GMD_MEDIA_UNKNOWN),
  S ("avi", "RIFF\0\0\0\0AVI LIST", GMD_MEDIA_UNKNOWN),
  S ("aac adts", "\xff\xf1\x50\x80\x02\x1f\xfc", GMD_MEDIA_UNKNOWN),    /* layer bits 00 */
  S ("bad bitrate", "\xff\xfb\xf0\x64", GMD_MEDIA_UNKNOWN),
  S ("bad rate", "\xff\xfb\x9c\x64", GMD_MEDIA_UNKNOWN),
  S ("reserved version", "\xff\xeb\x90\x64", GMD_MEDIA_UNKNOWN),
  S ("ff run", "\xff\xff\xff\xff\xff", GMD_MEDIA_UNKNOWN),
  S ("form other", "FORM\0\0\0\0ILBM", GMD_MEDIA_UNKNOWN),
  S ("pdf", "%PDF-1.7\n", GMD_MEDIA_UNKNOWN),
  S ("zip", "PK\x03\x04\x14\0", GMD_MEDIA_UNKNOWN),
  S ("elf", "\x7f" "ELF\x02\x01\x01", GMD_MEDIA_UNKNOWN),
};

static void
test_sniff (void)
{
  for (guint i = 0; i < G_N_ELEMENTS (samples); i++)
    {
      GmdMediaFormat f = gmd_media_sniff ((const guint8 *) samples[i].bytes, samples[i].len);
      if (f != samples[i].format)
        g_error ("%s: sniffed %d, expected %d", samples[i].what, f, samples[i].format);
    }
  g_assert_cmpint (gmd_media_sniff (NULL, 0), ==, GMD_MEDIA_UNKNOWN);
  g_assert_cmpint (gmd_media_sniff (NULL, 12), ==, GMD_MEDIA_UNKNOWN);

  /* random bytes never crash it; check every prefix length of every sample too */
  {
    GRand *rand = g_rand_new_with_seed (1);
    guint8 buf[64];
    for (int n = 0; n < 2000; n++)
      {
        for (guint k = 0; k < sizeof buf; k++)
          buf[k] = (guint8) g_rand_int (rand);
        (void) gmd_media_sniff (buf, g_rand_int_range (rand, 0, sizeof buf + 1));
      }
    g_rand_free (rand);
    for (guint i = 0; i < G_N_ELEMENTS (samples); i++)
      for (gsize len = 0; len < samples[i].len; len++)
        {
          g_autofree guint8 *exact = g_memdup2 (samples[i].bytes, len);   /* ASan sees overreads */
          (void) gmd_media_sniff (exact, len);
        }
  }
}

static void
test_mime_modality (void)
{
  static const struct {
    GmdMediaFormat f;
    const char *mime;
    int modality;
  } table[] = {
    { GMD_MEDIA_PNG, "image/png", GMD_PART_IMAGE },
    { GMD_MEDIA_JPEG, "image/jpeg", GMD_PART_IMAGE },
    { GMD_MEDIA_GIF, "image/gif", GMD_PART_IMAGE },
    { GMD_MEDIA_WEBP, "image/webp", GMD_PART_IMAGE },
    { GMD_MEDIA_WAV, "audio/wav", GMD_PART_AUDIO },
    { GMD_MEDIA_FLAC, "audio/flac", GMD_PART_AUDIO },
    { GMD_MEDIA_OGG, "audio/ogg", GMD_PART_AUDIO },
    { GMD_MEDIA_MP3, "audio/mpeg", GMD_PART_AUDIO },
    { GMD_MEDIA_AIFF, "audio/aiff", GMD_PART_AUDIO },
    { GMD_MEDIA_AU, "audio/basic", GMD_PART_AUDIO },
  };

  for (guint i = 0; i < G_N_ELEMENTS (table); i++)
    {
      g_assert_cmpstr (gmd_media_format_mime (table[i].f), ==, table[i].mime);
      g_assert_cmpint (gmd_media_format_modality (table[i].f), ==, table[i].modality);
    }
  g_assert_null (gmd_media_format_mime (GMD_MEDIA_UNKNOWN));
  g_assert_cmpint (gmd_media_format_modality (GMD_MEDIA_UNKNOWN), ==, -1);
}

static void
test_part_types (void)
{
  GmdPartType t;
  const char *names[] = { "text", "image", "audio", "video" };

  for (guint i = 0; i < G_N_ELEMENTS (names); i++)
    {
      g_assert_true (gmd_part_type_from_name (names[i], &t));
      g_assert_cmpint (t, ==, (int) i);
      g_assert_cmpstr (gmd_part_type_name (t), ==, names[i]);
    }
  g_assert_false (gmd_part_type_from_name ("Image", &t));
  g_assert_false (gmd_part_type_from_name ("", &t));
  g_assert_false (gmd_part_type_from_name (NULL, &t));
}

static void
test_parts (void)
{
  g_autoptr (GError) error = NULL;
  GmdPart *p;
  g_autoptr (GBytes) png = g_bytes_new_static (samples[0].bytes, samples[0].len);

  p = gmd_part_new_text ("héllo world", strlen ("héllo"), "content[0].text", &error);
  g_assert_no_error (error);
  g_assert_cmpint (p->type, ==, GMD_PART_TEXT);
  g_assert_cmpstr (p->text, ==, "héllo");
  g_assert_null (p->media);
  gmd_part_free (p);

  p = gmd_part_new_text ("", 0, "content[0].text", &error);
  g_assert_no_error (error);
  g_assert_cmpstr (p->text, ==, "");
  gmd_part_free (p);

  g_assert_null (gmd_part_new_text ("bad \xc3\x28", 6, "content[2].text", &error));
  g_assert_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT);
  g_assert_cmpstr (error->message, ==, "content[2].text: not valid UTF-8");
  g_clear_error (&error);
  /* a NUL inside the given length is not text */
  g_assert_null (gmd_part_new_text ("a\0b", 3, "content[0].text", &error));
  g_assert_error (error, GMD_ERROR, GMD_ERROR_INVALID_ARGUMENT);
  g_clear_error (&error);

  p = gmd_part_new_media (GMD_PART_IMAGE, png);
  g_assert_cmpint (p->type, ==, GMD_PART_IMAGE);
  g_assert_cmpint (p->format, ==, GMD_MEDIA_PNG);
  g_assert_true (p->media == png);   /* a reference, not a copy */
  gmd_part_free (p);

  p = gmd_part_new_media (GMD_PART_AUDIO, NULL);
  g_assert_cmpint (p->format, ==, GMD_MEDIA_UNKNOWN);
  g_assert_cmpuint (g_bytes_get_size (p->media), ==, 0);
  gmd_part_free (p);
  gmd_part_free (NULL);
}

/* ---- gmd_media_read_fd ---- */

static char *tmp_dir;

static char *
write_temp (const char *name, const void *data, gsize len)
{
  char *path = g_build_filename (tmp_dir, name, NULL);

  g_assert_true (g_file_set_contents (path, data, (gssize) len, NULL));
  return path;
}

static void
read_fails (int fd, gsize max, GmdErrorCode code, const char *message_start)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) b = gmd_media_read_fd (fd, max, "content[1].fd", &error);

  g_assert_null (b);
  g_assert_error (error, GMD_ERROR, (gint) code);
  if (!g_str_has_prefix (error->message, message_start))
    g_error ("message '%s' does not start with '%s'", error->message, message_start);
  {
    g_autofree char *field = gmd_error_field (error);
    g_assert_cmpstr (field, ==, "content[1].fd");
  }
}

static void
test_read_regular (void)
{
  const char content[] = "\x89PNG\r\n\x1a\n and then some";
  g_autofree char *path = write_temp ("a.png", content, sizeof content - 1);
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) b = NULL;
  int fd = open (path, O_RDONLY | O_CLOEXEC);

  g_assert_cmpint (fd, >=, 0);
  /* the caller's offset is neither used nor changed */
  g_assert_cmpint (lseek (fd, 5, SEEK_SET), ==, 5);
  b = gmd_media_read_fd (fd, 1 << 20, "content[0].fd", &error);
  g_assert_no_error (error);
  g_assert_cmpmem (g_bytes_get_data (b, NULL), g_bytes_get_size (b), content, sizeof content - 1);
  g_assert_cmpint (lseek (fd, 0, SEEK_CUR), ==, 5);
  g_clear_pointer (&b, g_bytes_unref);

  /* exactly at the cap is fine; one byte over is LIMIT_EXCEEDED */
  b = gmd_media_read_fd (fd, sizeof content - 1, "content[0].fd", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (g_bytes_get_size (b), ==, sizeof content - 1);
  read_fails (fd, sizeof content - 2, GMD_ERROR_LIMIT_EXCEEDED,
              "content[1].fd: file is 22 bytes, more than the limit of 21 bytes");

  /* O_RDWR is readable too; the fd stays open (not closed by the reader) */
  g_assert_cmpint (fcntl (fd, F_GETFD), !=, -1);
  close (fd);
  fd = open (path, O_RDWR | O_CLOEXEC);
  g_clear_pointer (&b, g_bytes_unref);
  b = gmd_media_read_fd (fd, 100, "content[0].fd", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (g_bytes_get_size (b), ==, sizeof content - 1);
  close (fd);
  g_unlink (path);
}

static void
test_read_large (void)
{
  /* bigger than the first allocation, so the buffer grows */
  gsize len = 300 * 1024 + 7;
  g_autofree guint8 *data = g_malloc (len);
  g_autofree char *path = NULL;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) b = NULL;
  int fd;

  for (gsize i = 0; i < len; i++)
    data[i] = (guint8) (i * 31 + 7);
  path = write_temp ("big.bin", data, len);
  fd = open (path, O_RDONLY | O_CLOEXEC);
  b = gmd_media_read_fd (fd, 20 * 1024 * 1024, "content[0].fd", &error);
  g_assert_no_error (error);
  g_assert_cmpmem (g_bytes_get_data (b, NULL), g_bytes_get_size (b), data, len);
  read_fails (fd, len - 1, GMD_ERROR_LIMIT_EXCEEDED, "content[1].fd: file is");
  close (fd);

  /* an empty file reads as empty bytes (the service then finds no format) */
  g_unlink (path);
  g_free (path);
  path = write_temp ("empty.bin", "", 0);
  fd = open (path, O_RDONLY | O_CLOEXEC);
  g_clear_pointer (&b, g_bytes_unref);
  b = gmd_media_read_fd (fd, 100, "content[0].fd", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (g_bytes_get_size (b), ==, 0);
  close (fd);
  g_unlink (path);
}

static void
test_read_memfd (void)
{
  const char wav[] = "RIFF\x24\x08\0\0WAVEfmt ";
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) b = NULL;
  int fd = memfd_create ("gemmad-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);

  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (write (fd, wav, sizeof wav - 1), ==, (ssize_t) (sizeof wav - 1));
  /* sealed, as the Notification portal does: still readable */
  g_assert_cmpint (fcntl (fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL), ==, 0);
  b = gmd_media_read_fd (fd, 1024, "content[0].fd", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (g_bytes_get_size (b), ==, sizeof wav - 1);
  g_assert_cmpint (gmd_media_sniff (g_bytes_get_data (b, NULL), g_bytes_get_size (b)), ==, GMD_MEDIA_WAV);
  g_assert_cmpint (lseek (fd, 0, SEEK_CUR), ==, (off_t) (sizeof wav - 1));
  close (fd);
}

static void
test_read_bad_fds (void)
{
  int pipefd[2];
  int sv[2];
  int fd;
  g_autofree char *path = write_temp ("w.bin", "data", 4);

  g_assert_cmpint (pipe2 (pipefd, O_CLOEXEC), ==, 0);
  g_assert_cmpint (write (pipefd[1], "RIFF", 4), ==, 4);
  read_fails (pipefd[0], 100, GMD_ERROR_INVALID_ARGUMENT, "content[1].fd: not a regular file or memfd (a pipe)");
  /* the write end of a pipe is write-only */
  read_fails (pipefd[1], 100, GMD_ERROR_INVALID_ARGUMENT, "content[1].fd: not open for reading");
  close (pipefd[0]);
  close (pipefd[1]);

  g_assert_cmpint (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
  read_fails (sv[0], 100, GMD_ERROR_INVALID_ARGUMENT, "content[1].fd: not a regular file or memfd (a socket)");
  close (sv[0]);
  close (sv[1]);

  fd = open (tmp_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  read_fails (fd, 100, GMD_ERROR_INVALID_ARGUMENT, "content[1].fd: not a regular file or memfd (a directory)");
  close (fd);

  fd = open ("/dev/null", O_RDONLY | O_CLOEXEC);
  read_fails (fd, 100, GMD_ERROR_INVALID_ARGUMENT,
              "content[1].fd: not a regular file or memfd (a character device)");
  close (fd);

  fd = open (path, O_PATH | O_CLOEXEC);
  g_assert_cmpint (fd, >=, 0);
  read_fails (fd, 100, GMD_ERROR_INVALID_ARGUMENT, "content[1].fd: opened with O_PATH");
  close (fd);

  fd = open (path, O_WRONLY | O_CLOEXEC);
  read_fails (fd, 100, GMD_ERROR_INVALID_ARGUMENT, "content[1].fd: not open for reading (write-only)");
  close (fd);

  /* a number that is not an open fd (just closed), and a negative one */
  fd = open (path, O_RDONLY | O_CLOEXEC);
  close (fd);
  read_fails (fd, 100, GMD_ERROR_INVALID_ARGUMENT, "content[1].fd: not an open file descriptor");
  read_fails (-1, 100, GMD_ERROR_INVALID_ARGUMENT, "content[1].fd: not a file descriptor");
  g_unlink (path);
}

/* Files whose st_size says 0 (procfs) are still read up to the cap, never past it. */
static void
test_read_size_not_trusted (void)
{
  struct stat st;
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) b = NULL;
  int fd = open ("/proc/self/status", O_RDONLY | O_CLOEXEC);

  if (fd < 0 || fstat (fd, &st) != 0 || st.st_size != 0)
    {
      if (fd >= 0)
        close (fd);
      g_test_skip ("no procfs file with st_size 0");
      return;
    }
  b = gmd_media_read_fd (fd, 1 << 20, "content[0].fd", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (g_bytes_get_size (b), >, 20);
  g_assert_true (memcmp (g_bytes_get_data (b, NULL), "Name:", 5) == 0);
  read_fails (fd, 16, GMD_ERROR_LIMIT_EXCEEDED, "content[1].fd: file is more than the limit of 16 bytes");
  close (fd);
}

int
main (int argc, char **argv)
{
  int ret;

  g_test_init (&argc, &argv, NULL);
  tmp_dir = g_dir_make_tmp ("gmd-test-content-XXXXXX", NULL);
  g_assert_nonnull (tmp_dir);

  g_test_add_func ("/content/sniff", test_sniff);
  g_test_add_func ("/content/mime-modality", test_mime_modality);
  g_test_add_func ("/content/part-types", test_part_types);
  g_test_add_func ("/content/parts", test_parts);
  g_test_add_func ("/content/read-fd/regular", test_read_regular);
  g_test_add_func ("/content/read-fd/large-and-empty", test_read_large);
  g_test_add_func ("/content/read-fd/memfd", test_read_memfd);
  g_test_add_func ("/content/read-fd/bad-fds", test_read_bad_fds);
  g_test_add_func ("/content/read-fd/size-not-trusted", test_read_size_not_trusted);
  ret = g_test_run ();
  g_rmdir (tmp_dir);
  g_free (tmp_dir);
  return ret;
}
