/* image-decode.c — PNG (libpng) and JPEG (libjpeg) bytes to RGB8, matching what
 * transformers' load_image produces with Pillow: Image.open → ImageOps.exif_transpose →
 * .convert("RGB").
 *
 * Pillow's conversions reproduced here (Pillow src/libImaging/Convert.c, Unpack.c,
 * PngImagePlugin.py, JpegImagePlugin.py):
 *   - PNG grey 1/2/4 bit: scaled to 0..255 (unpackers "1", "L;2" ×0x55, "L;4" ×0x11);
 *     libpng's png_set_expand_gray_1_2_4_to_8 scales the same way.
 *   - PNG grey 16 bit opens as mode "I;16"; I;16 → RGB CLIPS (v > 255 → 255), it does not
 *     take the high byte. Every other 16-bit PNG (RGB, RGBA, grey+alpha) unpacks with the
 *     ";16B" rawmodes, which keep the high byte — png_set_strip_16.
 *   - alpha and tRNS are dropped, never composited; palette → its RGB entries.
 *   - gAMA/cHRM/sRGB/iCCP are ignored (Pillow applies none of them on load).
 *   - JPEG with 4 components is opened as "CMYK;I" unconditionally (Adobe inverted
 *     convention), so the stored samples s are inverted (c = 255 - s), and CMYK → RGB is
 *     r = (255-k) - MULDIV255(c, 255-k) with MULDIV255(a,b) = ((t>>8)+t)>>8, t = a·b+128.
 *     libjpeg itself turns YCCK into (stored-convention) CMYK.
 *   - JPEG decoding keeps libjpeg's defaults (JDCT_ISLOW, fancy upsampling), as Pillow does.
 *   - EXIF orientation 2–8 from the first JPEG APP1 "Exif\0\0" segment or the PNG eXIf
 *     chunk (before or after IDAT), applied like ImageOps.exif_transpose; when EXIF has no
 *     orientation tag, Pillow's XMP fallback (tiff:Orientation in the JPEG APP1 XMP packet
 *     or the PNG "XML:com.adobe.xmp" text chunk). A malformed EXIF header means "no
 *     orientation" (Pillow raises from getexif() there instead).
 *
 * Truncated input is an error for both formats (Pillow raises "image file is truncated"
 * unless LOAD_TRUNCATED_IMAGES is set); other libjpeg warnings are not. A PNG chunk with a
 * bad CRC is refused wherever it is (Pillow refuses those before IDAT and does not check
 * IDAT's or later ones).
 */
#include "vision/image-decode.h"

#include <inttypes.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

#define DEFAULT_MAX_PIXELS 50000000ull
/* Bounds what libpng may allocate for one ancillary chunk (iCCP, zTXt, eXIf, unknown). */
#define PNG_CHUNK_MALLOC_MAX (8u << 20)
/* Progressive JPEGs normally have ~10 scans; thousands of tiny scans only burn CPU. */
#define JPEG_MAX_SCANS 1000

gm_image_format gm_image_sniff(const uint8_t *data, size_t len)
{
    static const uint8_t png_sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    if (data && len >= 8 && memcmp(data, png_sig, 8) == 0)
        return GM_IMAGE_PNG;
    if (data && len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
        return GM_IMAGE_JPEG;
    return GM_IMAGE_UNKNOWN;
}

const char *gm_image_format_name(gm_image_format f)
{
    switch (f) {
    case GM_IMAGE_PNG: return "PNG";
    case GM_IMAGE_JPEG: return "JPEG";
    default: return "unknown";
    }
}

void gm_image_free(gm_image *img)
{
    if (!img)
        return;
    free(img->rgb);
    img->rgb = NULL;
    img->width = img->height = 0;
}

static int check_pixels(const char *fmt, uint64_t w, uint64_t h, uint64_t max_pixels,
                        gm_error *err)
{
    if (w == 0 || h == 0)
        return gm_set_error(err, GM_ERR_FORMAT, "%s: image has zero size (%" PRIu64 "x%" PRIu64 ")",
                            fmt, w, h);
    /* (the second test keeps every buffer size below SIZE_MAX whatever limit is set) */
    if (w * h > max_pixels || w * h > SIZE_MAX / 16)
        return gm_set_error(err, GM_ERR_LIMIT, "%s: %" PRIu64 "x%" PRIu64
                            " exceeds the %" PRIu64 "-pixel limit", fmt, w, h, max_pixels);
    return GM_OK;
}

/* ---------------------------------------------------------------------------------- */
/* EXIF orientation                                                                    */
/* ---------------------------------------------------------------------------------- */

static uint32_t rd16(const uint8_t *p, int be)
{
    return be ? (uint32_t)p[0] << 8 | p[1] : (uint32_t)p[1] << 8 | p[0];
}

static uint32_t rd32(const uint8_t *p, int be)
{
    return be ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]
              : (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* What Pillow's Exif.load + ImageFileDirectory_v2 make of IFD0 tag 0x0112, for
 * ImageOps.exif_transpose: ORIENT_ABSENT when there is no EXIF block, a malformed one or
 * no such tag (Pillow then looks at the XMP packet); ORIENT_UNUSABLE when the tag is there
 * but is not a single number equal to 1..8 (bytes for BYTE/ASCII/UNDEFINED, a tuple for
 * count > 1): no transpose and no XMP fallback; else the orientation. Entries read before
 * a truncated one still count and a later duplicate wins, as in Pillow's reader. */
enum { ORIENT_ABSENT = 0, ORIENT_UNUSABLE = -1 };

static int exif_orientation(const uint8_t *d, size_t n)
{
    while (d && n >= 6 && memcmp(d, "Exif\0\0", 6) == 0) {   /* Pillow strips these */
        d += 6;
        n -= 6;
    }
    if (!d || n < 8)
        return ORIENT_ABSENT;
    int be;
    if (d[0] == 'I' && d[1] == 'I')
        be = 0;
    else if (d[0] == 'M' && d[1] == 'M')
        be = 1;
    else
        return ORIENT_ABSENT;
    if (rd16(d + 2, be) != 42)
        return ORIENT_ABSENT;
    uint32_t ifd = rd32(d + 4, be);
    if (ifd > n || n - ifd < 2)
        return ORIENT_ABSENT;
    static const uint8_t type_size[14] = { 0, 1, 1, 2, 4, 8, 1, 1, 2, 4, 8, 4, 8, 4 };
    uint32_t count = rd16(d + ifd, be);
    int orient = ORIENT_ABSENT;
    for (uint32_t i = 0; i < count; i++) {
        size_t off = (size_t)ifd + 2 + (size_t)i * 12;
        if (off > n || n - off < 12)
            break;
        const uint8_t *e = d + off;
        if (rd16(e, be) != 0x0112)
            continue;
        uint32_t type = rd16(e + 2, be), cnt = rd32(e + 4, be);
        if (type == 0 || type > 13)
            continue;                       /* unknown type: Pillow skips the entry */
        uint64_t size = (uint64_t)type_size[type] * cnt;
        const uint8_t *v = e + 8;
        if (size > 4) {
            uint32_t voff = rd32(e + 8, be);
            if (voff > n || n - voff < size)
                continue;                   /* data outside the block: skipped */
            v = d + voff;
        }
        if (cnt != 1) {
            orient = ORIENT_UNUSABLE;
            continue;
        }
        int64_t val;
        switch (type) {
        case 3: val = rd16(v, be); break;
        case 8: val = (int16_t)rd16(v, be); break;
        case 4: case 13: val = rd32(v, be); break;
        case 9: val = (int32_t)rd32(v, be); break;
        case 6: val = (int8_t)v[0]; break;
        case 5: case 10: {                  /* a rational equal to an integer compares equal */
            int64_t num = type == 5 ? (int64_t)rd32(v, be) : (int32_t)rd32(v, be);
            int64_t den = type == 5 ? (int64_t)rd32(v + 4, be) : (int32_t)rd32(v + 4, be);
            val = (den != 0 && num % den == 0) ? num / den : -1;
            break;
        }
        default: val = -1; break;           /* bytes, str, floats: treated as unusable */
        }
        orient = (val >= 1 && val <= 8) ? (int)val : ORIENT_UNUSABLE;
    }
    return orient;
}

/* Pillow's getexif() fallback when EXIF has no orientation tag: the first
 * re.search(r'tiff:Orientation(="|>)([0-9])') of the XMP packet. */
static int xmp_orientation(const uint8_t *x, size_t n)
{
    static const char key[] = "tiff:Orientation";
    const size_t kl = sizeof key - 1;
    for (size_t i = 0; x && n >= kl + 2 && i <= n - kl - 2; i++) {
        if (memcmp(x + i, key, kl) != 0)
            continue;
        const uint8_t *r = x + i + kl;
        size_t left = n - i - kl;
        if (r[0] == '>' && r[1] >= '0' && r[1] <= '9')
            return r[1] - '0';
        if (left >= 3 && r[0] == '=' && r[1] == '"' && r[2] >= '0' && r[2] <= '9')
            return r[2] - '0';
    }
    return ORIENT_ABSENT;
}

/* Applies ImageOps.exif_transpose's method for orientation o to img (in place). */
static int apply_orientation(gm_image *img, int o, const char *fmt, gm_error *err)
{
    if (o < 2 || o > 8)
        return GM_OK;
    const size_t W = img->width, H = img->height;
    const int swap = o >= 5;
    const size_t ow = swap ? H : W, oh = swap ? W : H;
    uint8_t *dst = malloc(W * H * 3);
    if (!dst)
        return gm_set_error(err, GM_ERR_NOMEM, "%s: out of memory applying EXIF orientation %d",
                            fmt, o);
    for (size_t r = 0; r < oh; r++) {
        for (size_t c = 0; c < ow; c++) {
            size_t sx, sy;   /* source column, row */
            switch (o) {
            case 2: sx = W - 1 - c; sy = r; break;             /* FLIP_LEFT_RIGHT */
            case 3: sx = W - 1 - c; sy = H - 1 - r; break;     /* ROTATE_180 */
            case 4: sx = c; sy = H - 1 - r; break;             /* FLIP_TOP_BOTTOM */
            case 5: sx = r; sy = c; break;                     /* TRANSPOSE */
            case 6: sx = r; sy = H - 1 - c; break;             /* ROTATE_270 (90° clockwise) */
            case 7: sx = W - 1 - r; sy = H - 1 - c; break;     /* TRANSVERSE */
            default: sx = W - 1 - r; sy = c; break;            /* 8: ROTATE_90 (counter-clockwise) */
            }
            const uint8_t *s = img->rgb + (sy * W + sx) * 3;
            uint8_t *t = dst + (r * ow + c) * 3;
            t[0] = s[0];
            t[1] = s[1];
            t[2] = s[2];
        }
    }
    free(img->rgb);
    img->rgb = dst;
    img->width = (uint32_t)ow;
    img->height = (uint32_t)oh;
    return GM_OK;
}

/* ---------------------------------------------------------------------------------- */
/* PNG                                                                                 */
/* ---------------------------------------------------------------------------------- */

typedef struct png_ctx {
    const uint8_t *data;
    size_t len, pos;
    char msg[256];
    char warning[160];   /* last libpng warning: often the reason behind a generic error */
    png_structp png;
    png_infop info, end_info;
    uint8_t *rgb;        /* output, owned until handed to the caller */
    uint8_t *buf;        /* row or whole-image scratch */
    png_bytep *rows;
} png_ctx;

static void png_err_fn(png_structp png, png_const_charp msg)
{
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

static void png_warn_fn(png_structp png, png_const_charp msg)
{
    /* libpng warnings (bad ancillary CRCs, benign errors) are not fatal; the last one is
     * kept to explain "Invalid IHDR data". */
    png_ctx *c = png_get_error_ptr(png);
    snprintf(c->warning, sizeof c->warning, "%s", msg ? msg : "");
}

static void png_read_fn(png_structp png, png_bytep out, size_t n)
{
    png_ctx *c = png_get_io_ptr(png);
    if (n > c->len - c->pos)
        png_error(png, "truncated file");
    memcpy(out, c->data + c->pos, n);
    c->pos += n;
}

/* Converts one row of libpng output (after our transformations) to RGB8. */
static void png_row_to_rgb(const uint8_t *in, uint8_t *out, size_t w, int channels, int depth)
{
    if (channels == 1 && depth == 16) {
        /* Pillow I;16 → RGB: values above 255 clip to 255 */
        for (size_t x = 0; x < w; x++) {
            unsigned v = (unsigned)in[2 * x] << 8 | in[2 * x + 1];
            out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = (uint8_t)(v > 255 ? 255 : v);
        }
    } else if (channels == 1 || channels == 2) {
        for (size_t x = 0; x < w; x++)
            out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = in[(size_t)channels * x];
    } else if (channels == 3) {
        memcpy(out, in, w * 3);
    } else {
        for (size_t x = 0; x < w; x++) {
            out[3 * x] = in[4 * x];
            out[3 * x + 1] = in[4 * x + 1];
            out[3 * x + 2] = in[4 * x + 2];
        }
    }
}

static int png_text_xmp(png_structp png, png_infop info)
{
    png_textp text = NULL;
    int n = 0;
    if (!png_get_text(png, info, &text, &n) || !text)
        return ORIENT_ABSENT;
    for (int i = 0; i < n; i++)
        if (text[i].key && strcmp(text[i].key, "XML:com.adobe.xmp") == 0 && text[i].text) {
            return xmp_orientation((const uint8_t *)text[i].text, strlen(text[i].text));
        }
    return ORIENT_ABSENT;
}

static int png_exif_orientation(png_ctx *c)
{
    png_uint_32 n = 0;
    png_bytep ex = NULL;
    int o = ORIENT_ABSENT;
    if (png_get_eXIf_1(c->png, c->info, &n, &ex) && ex)
        o = exif_orientation(ex, n);
    else if (png_get_eXIf_1(c->png, c->end_info, &n, &ex) && ex)
        o = exif_orientation(ex, n);
    if (o == ORIENT_ABSENT)
        o = png_text_xmp(c->png, c->info);
    if (o == ORIENT_ABSENT)
        o = png_text_xmp(c->png, c->end_info);
    return o;
}

/* The setjmp lives here; everything it must see after a longjmp is in *c (caller's frame). */
static int png_decode_inner(png_ctx *c, uint64_t max_pixels, gm_image *out, int *orient,
                            gm_error *err)
{
    if (setjmp(png_jmpbuf(c->png))) {
        /* libpng says only "Invalid IHDR data"; the warning before it says what is wrong */
        int why = c->warning[0] && strstr(c->msg, "IHDR") && strstr(c->warning, "IHDR");
        return gm_set_error(err, GM_ERR_FORMAT, "PNG: %s%s%s%s", c->msg[0] ? c->msg : "decoding failed",
                            why ? " (" : "", why ? c->warning : "", why ? ")" : "");
    }

    png_set_read_fn(c->png, c, png_read_fn);
    /* Our own pixel limit decides; libpng's 1e6-per-side default would refuse valid
     * 1×2e6 strips that Pillow opens. */
    png_set_user_limits(c->png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);
    png_set_chunk_malloc_max(c->png, PNG_CHUNK_MALLOC_MAX);
    png_set_chunk_cache_max(c->png, 128);
    /* A bad CRC anywhere is a corrupt file (libpng would only drop a bad ancillary chunk;
     * Pillow refuses any bad CRC before IDAT). */
    png_set_crc_action(c->png, PNG_CRC_DEFAULT, PNG_CRC_ERROR_QUIT);
    /* Profiles and unknown chunks carry nothing the pixels need (text stays: XMP). */
    static const png_byte skip[] = "iCCP\0sPLT\0hIST\0";
    png_set_keep_unknown_chunks(c->png, PNG_HANDLE_CHUNK_NEVER, NULL, 0);
    png_set_keep_unknown_chunks(c->png, PNG_HANDLE_CHUNK_NEVER, skip, (int)(sizeof skip - 1) / 5);

    png_read_info(c->png, c->info);
    png_uint_32 w = png_get_image_width(c->png, c->info);
    png_uint_32 h = png_get_image_height(c->png, c->info);
    int rc = check_pixels("PNG", w, h, max_pixels, err);
    if (rc)
        return rc;

    int ct = png_get_color_type(c->png, c->info);
    int depth = png_get_bit_depth(c->png, c->info);
    if (ct == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(c->png);
    if (ct == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(c->png);
    if (depth == 16 && ct != PNG_COLOR_TYPE_GRAY)
        png_set_strip_16(c->png);
    int passes = png_set_interlace_handling(c->png);
    png_read_update_info(c->png, c->info);

    int channels = png_get_channels(c->png, c->info);
    int odepth = png_get_bit_depth(c->png, c->info);
    size_t rowbytes = png_get_rowbytes(c->png, c->info);
    if (channels < 1 || channels > 4 || (odepth != 8 && odepth != 16) ||
        (odepth == 16 && channels != 1) || rowbytes < (size_t)w * channels * (odepth / 8))
        png_error(c->png, "unexpected row layout after transformations");

    c->rgb = malloc((size_t)w * h * 3);
    if (!c->rgb)
        return gm_set_error(err, GM_ERR_NOMEM, "PNG: out of memory for %ux%u pixels", w, h);

    if (passes > 1) {
        /* Adam7: libpng needs the whole (transformed) image to merge the passes */
        c->buf = malloc(rowbytes * h);
        c->rows = malloc(sizeof *c->rows * h);
        if (!c->buf || !c->rows)
            return gm_set_error(err, GM_ERR_NOMEM, "PNG: out of memory for %ux%u pixels", w, h);
        for (png_uint_32 y = 0; y < h; y++)
            c->rows[y] = c->buf + rowbytes * y;
        png_read_image(c->png, c->rows);
        for (png_uint_32 y = 0; y < h; y++)
            png_row_to_rgb(c->rows[y], c->rgb + (size_t)y * w * 3, w, channels, odepth);
    } else {
        c->buf = malloc(rowbytes);
        if (!c->buf)
            return gm_set_error(err, GM_ERR_NOMEM, "PNG: out of memory for a row of %u pixels", w);
        for (png_uint_32 y = 0; y < h; y++) {
            png_read_row(c->png, c->buf, NULL);
            png_row_to_rgb(c->buf, c->rgb + (size_t)y * w * 3, w, channels, odepth);
        }
    }
    /* Reads the chunks after IDAT (an eXIf there counts, as in Pillow) up to IEND. */
    png_read_end(c->png, c->end_info);

    *orient = png_exif_orientation(c);
    out->width = w;
    out->height = h;
    out->rgb = c->rgb;
    c->rgb = NULL;
    return GM_OK;
}

/* libpng allocates an ancillary chunk's buffer from its length field before reading it
 * (a 20-byte eXIf header can ask for 2 GB). The whole file is in memory, so every chunk
 * up to IEND is checked to fit in it first: allocations stay bounded by the input size. */
static int png_check_chunks(const uint8_t *data, size_t len, gm_error *err)
{
    size_t pos = 8;
    while (len - pos >= 8) {
        uint32_t n = rd32(data + pos, 1);
        char type[5];
        for (int i = 0; i < 4; i++) {
            uint8_t ch = data[pos + 4 + i];
            type[i] = (char)((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ? ch : '?');
        }
        type[4] = 0;
        if (n > 0x7fffffffu || (uint64_t)n + 12 > len - pos)
            return gm_set_error(err, GM_ERR_FORMAT, "PNG: truncated file (chunk %s at offset %zu "
                                "declares %u bytes, %zu left)", type, pos, n, len - pos - 8);
        pos += (size_t)n + 12;
        if (memcmp(data + pos - n - 8, "IEND", 4) == 0)
            return GM_OK;
    }
    return GM_OK;   /* a missing IEND is left to libpng to report */
}

static int decode_png(const uint8_t *data, size_t len, uint64_t max_pixels, gm_image *out,
                      int *orient, gm_error *err)
{
    int rc = png_check_chunks(data, len, err);
    if (rc)
        return rc;
    png_ctx c;
    memset(&c, 0, sizeof c);
    c.data = data;
    c.len = len;
    c.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, png_err_fn, png_warn_fn);
    if (!c.png)
        return gm_set_error(err, GM_ERR_NOMEM, "PNG: cannot create the libpng reader");
    c.info = png_create_info_struct(c.png);
    c.end_info = png_create_info_struct(c.png);
    if (!c.info || !c.end_info)
        rc = gm_set_error(err, GM_ERR_NOMEM, "PNG: cannot create the libpng info structs");
    else
        rc = png_decode_inner(&c, max_pixels, out, orient, err);
    png_destroy_read_struct(&c.png, c.info ? &c.info : NULL, c.end_info ? &c.end_info : NULL);
    free(c.rows);
    free(c.buf);
    free(c.rgb);
    return rc;
}

/* ---------------------------------------------------------------------------------- */
/* JPEG                                                                                */
/* ---------------------------------------------------------------------------------- */

typedef struct jpeg_ctx {
    struct jpeg_error_mgr pub;
    struct jpeg_progress_mgr progress;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX + 32];
    struct jpeg_decompress_struct cinfo;
    uint8_t *rgb;
    uint8_t *row;
} jpeg_ctx;

static void jpeg_error_exit_fn(j_common_ptr cinfo)
{
    jpeg_ctx *c = (jpeg_ctx *)cinfo->err;
    cinfo->err->format_message(cinfo, c->msg);
    longjmp(c->jb, 1);
}

static void jpeg_emit_fn(j_common_ptr cinfo, int level)
{
    jpeg_ctx *c = (jpeg_ctx *)cinfo->err;
    /* libjpeg reports running out of data as a warning and pads with an EOI; Pillow
     * refuses truncated files, so this one warning is fatal. Others are ignored. */
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
        snprintf(c->msg, sizeof c->msg, "truncated file");
        longjmp(c->jb, 1);
    }
}

static void jpeg_output_fn(j_common_ptr cinfo)
{
    (void)cinfo;   /* never print to stderr */
}

static void jpeg_progress_fn(j_common_ptr cinfo)
{
    if (cinfo->is_decompressor) {
        j_decompress_ptr d = (j_decompress_ptr)cinfo;
        if (d->input_scan_number > JPEG_MAX_SCANS) {
            jpeg_ctx *c = (jpeg_ctx *)cinfo->err;
            snprintf(c->msg, sizeof c->msg, "more than %d scans", JPEG_MAX_SCANS);
            longjmp(c->jb, 1);
        }
    }
}

/* Pillow: "CMYK;I" unpack (c = 255 - stored), then cmyk2rgb. */
static inline uint8_t cmyk_channel(uint8_t stored_c, uint8_t stored_k)
{
    int c = 255 - stored_c, nk = stored_k;
    int t = c * nk + 128;
    int v = nk - (((t >> 8) + t) >> 8);
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

static int jpeg_exif_orientation(j_decompress_ptr cinfo)
{
    static const char xmp_id[] = "http://ns.adobe.com/xap/1.0/";   /* + NUL */
    jpeg_saved_marker_ptr exif = NULL, xmp = NULL;
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next) {
        if (m->marker != JPEG_APP0 + 1)
            continue;
        /* the first Exif segment is the one Pillow keeps */
        if (!exif && m->data_length >= 6 && memcmp(m->data, "Exif\0\0", 6) == 0)
            exif = m;
        else if (!xmp && m->data_length >= sizeof xmp_id && memcmp(m->data, xmp_id, sizeof xmp_id) == 0)
            xmp = m;
    }
    int o = exif ? exif_orientation(exif->data, exif->data_length) : ORIENT_ABSENT;
    if (o == ORIENT_ABSENT && xmp)
        o = xmp_orientation(xmp->data + sizeof xmp_id, xmp->data_length - sizeof xmp_id);
    return o;
}

static int jpeg_decode_inner(jpeg_ctx *c, const uint8_t *data, size_t len, uint64_t max_pixels,
                             gm_image *out, int *orient, gm_error *err)
{
    j_decompress_ptr ci = &c->cinfo;
    if (setjmp(c->jb))
        return gm_set_error(err, GM_ERR_FORMAT, "JPEG: %s", c->msg[0] ? c->msg : "decoding failed");

    jpeg_create_decompress(ci);
    c->progress.progress_monitor = jpeg_progress_fn;
    ci->progress = &c->progress;
    jpeg_mem_src(ci, data, (unsigned long)len);
    jpeg_save_markers(ci, JPEG_APP0 + 1, 0xffff);
    jpeg_read_header(ci, TRUE);

    int rc = check_pixels("JPEG", ci->image_width, ci->image_height, max_pixels, err);
    if (rc)
        return rc;
    /* Pillow picks the mode from the component count: 1 → L, 3 → RGB, 4 → CMYK. */
    int cmyk = 0;
    switch (ci->num_components) {
    case 1: ci->out_color_space = JCS_GRAYSCALE; break;
    case 3: ci->out_color_space = JCS_RGB; break;
    case 4: ci->out_color_space = JCS_CMYK; cmyk = 1; break;
    default:
        return gm_set_error(err, GM_ERR_UNSUPPORTED, "JPEG: unsupported %d-component image",
                            ci->num_components);
    }
    *orient = jpeg_exif_orientation(ci);

    jpeg_start_decompress(ci);
    const size_t w = ci->output_width, h = ci->output_height;
    const int nc = ci->output_components;
    if (w != ci->image_width || h != ci->image_height || nc != (cmyk ? 4 : ci->num_components))
        return gm_set_error(err, GM_ERR_FORMAT, "JPEG: unexpected output layout");
    c->rgb = malloc(w * h * 3);
    c->row = malloc(w * (size_t)nc);
    if (!c->rgb || !c->row)
        return gm_set_error(err, GM_ERR_NOMEM, "JPEG: out of memory for %zux%zu pixels", w, h);
    while (ci->output_scanline < h) {
        size_t y = ci->output_scanline;
        JSAMPROW rp = c->row;
        if (jpeg_read_scanlines(ci, &rp, 1) != 1)
            return gm_set_error(err, GM_ERR_FORMAT, "JPEG: truncated file");
        uint8_t *o = c->rgb + y * w * 3;
        if (nc == 3) {
            memcpy(o, c->row, w * 3);
        } else if (nc == 1) {
            for (size_t x = 0; x < w; x++)
                o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = c->row[x];
        } else {
            for (size_t x = 0; x < w; x++) {
                const uint8_t *p = c->row + 4 * x;
                o[3 * x] = cmyk_channel(p[0], p[3]);
                o[3 * x + 1] = cmyk_channel(p[1], p[3]);
                o[3 * x + 2] = cmyk_channel(p[2], p[3]);
            }
        }
    }
    jpeg_finish_decompress(ci);

    out->width = (uint32_t)w;
    out->height = (uint32_t)h;
    out->rgb = c->rgb;
    c->rgb = NULL;
    return GM_OK;
}

static int decode_jpeg(const uint8_t *data, size_t len, uint64_t max_pixels, gm_image *out,
                       int *orient, gm_error *err)
{
    jpeg_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return gm_set_error(err, GM_ERR_NOMEM, "JPEG: out of memory");
    c->cinfo.err = jpeg_std_error(&c->pub);
    c->pub.error_exit = jpeg_error_exit_fn;
    c->pub.emit_message = jpeg_emit_fn;
    c->pub.output_message = jpeg_output_fn;
    int rc = jpeg_decode_inner(c, data, len, max_pixels, out, orient, err);
    jpeg_destroy_decompress(&c->cinfo);
    free(c->row);
    free(c->rgb);
    free(c);
    return rc;
}

/* ---------------------------------------------------------------------------------- */

int gm_image_decode(const uint8_t *data, size_t len, const gm_image_limits *lim, gm_image *out,
                    gm_error *err)
{
    if (!out)
        return gm_set_error(err, GM_ERR_INVALID, "image: no output image given");
    memset(out, 0, sizeof *out);
    if (!data || len == 0)
        return gm_set_error(err, GM_ERR_FORMAT, "image: empty input");
    uint64_t max_pixels = lim && lim->max_pixels ? lim->max_pixels : DEFAULT_MAX_PIXELS;

    gm_image_format f = gm_image_sniff(data, len);
    int orient = ORIENT_ABSENT, rc;
    if (f == GM_IMAGE_PNG) {
        rc = decode_png(data, len, max_pixels, out, &orient, err);
    } else if (f == GM_IMAGE_JPEG) {
        rc = decode_jpeg(data, len, max_pixels, out, &orient, err);
    } else {
        char hex[3 * 4 + 1] = "";
        size_t n = len < 4 ? len : 4, pos = 0;
        for (size_t i = 0; i < n; i++)
            pos += (size_t)snprintf(hex + pos, sizeof hex - pos, "%s%02x", i ? " " : "", data[i]);
        return gm_set_error(err, GM_ERR_FORMAT, "image: not a PNG or JPEG file (starts with %s)", hex);
    }
    if (rc)
        return rc;
    rc = apply_orientation(out, orient, gm_image_format_name(f), err);
    if (rc)
        gm_image_free(out);
    return rc;
}
