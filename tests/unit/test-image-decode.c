/* test-image-decode.c — PNG/JPEG decoding to RGB8 the way Pillow's .convert("RGB") does.
 *
 * The PNGs in tests/data/images were written by make-images.py from a known pattern, each
 * with the RGB that Pillow's rules give (exact); the JPEGs were encoded by ImageMagick and
 * their expected RGB is ImageMagick's own libjpeg decode (within 1). CMYK/YCCK JPEGs are
 * encoded here with libjpeg and checked against Pillow's CMYK;I → RGB formula applied to
 * the stored samples that plain libjpeg returns. Every proper prefix of several valid files
 * must be refused (truncation), and corrupt headers must give their message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "test-util.h"
#include "vision/image-decode.h"

static uint8_t *load(const char *name, size_t *len)
{
    char rel[256];
    snprintf(rel, sizeof rel, "images/%s", name);
    uint8_t *b = gm_test_read_file(gm_test_data(rel), len);
    if (!b)
        fprintf(stderr, "cannot open %s\n", gm_test_data(rel));
    return b;
}

/* Reads a binary P6 PPM (maxval 255). */
static uint8_t *load_ppm(const char *name, uint32_t *w, uint32_t *h)
{
    size_t len = 0;
    uint8_t *b = load(name, &len);
    if (!b)
        return NULL;
    unsigned ww = 0, hh = 0, mx = 0;
    int off = 0;
    if (sscanf((const char *)b, "P6 %u %u %u%n", &ww, &hh, &mx, &off) != 3 || mx != 255 ||
        (size_t)off + 1 + (size_t)ww * hh * 3 > len) {
        free(b);
        return NULL;
    }
    uint8_t *px = malloc((size_t)ww * hh * 3);
    memcpy(px, b + off + 1, (size_t)ww * hh * 3);
    free(b);
    *w = ww;
    *h = hh;
    return px;
}

/* Decodes name and compares with name's .expected.ppm; returns the max channel difference
 * (or 999 when anything else is wrong). */
static int decode_vs_expected(const char *name, const char *expected)
{
    size_t len = 0;
    uint8_t *data = load(name, &len);
    uint32_t ew = 0, eh = 0;
    uint8_t *exp = load_ppm(expected, &ew, &eh);
    int maxd = 999;
    gm_image img;
    gm_error err = { 0 };
    if (data && exp) {
        int rc = gm_image_decode(data, len, NULL, &img, &err);
        if (rc != GM_OK) {
            fprintf(stderr, "%s: %s\n", name, err.msg);
        } else if (img.width != ew || img.height != eh) {
            fprintf(stderr, "%s: %ux%u, expected %ux%u\n", name, img.width, img.height, ew, eh);
            gm_image_free(&img);
        } else {
            maxd = 0;
            for (size_t i = 0; i < (size_t)ew * eh * 3; i++) {
                int d = abs((int)img.rgb[i] - (int)exp[i]);
                if (d > maxd)
                    maxd = d;
            }
            gm_image_free(&img);
        }
    }
    free(data);
    free(exp);
    return maxd;
}

static void test_png_types(void)
{
    static const char *names[] = {
        "grey1", "grey2", "grey4", "grey8", "grey8-trns", "grey16", "grey16-adam7",
        "greyalpha8", "greyalpha16", "rgb8", "rgb8-trns", "rgb8-adam7", "rgb16", "rgba8",
        "rgba16", "rgba16-adam7", "pal1", "pal2", "pal4", "pal8", "pal2-trns", "pal8-trns",
        "pal1-adam7", "pal4-adam7",
        "exif1", "exif2", "exif3", "exif4", "exif5", "exif6", "exif7", "exif8", "xmp6",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char png[64], ppm[64];
        snprintf(png, sizeof png, "%s.png", names[i]);
        snprintf(ppm, sizeof ppm, "%s.expected.ppm", names[i]);
        int d = decode_vs_expected(png, ppm);
        CHECKF(d == 0, "%s: max difference %d", png, d);
    }
}

static void test_jpeg_files(void)
{
    static const char *names[] = {
        "jpeg-baseline", "jpeg-progressive", "jpeg-grey",
        "jpeg-exif1", "jpeg-exif2", "jpeg-exif3", "jpeg-exif4", "jpeg-exif5", "jpeg-exif6",
        "jpeg-exif7", "jpeg-exif8", "jpeg-xmp8", "jpeg-exif-none-xmp5", "jpeg-exif1-xmp6",
        "jpeg-exif-byte6",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char jpg[64], ppm[64];
        snprintf(jpg, sizeof jpg, "%s.jpg", names[i]);
        snprintf(ppm, sizeof ppm, "%s.expected.ppm", names[i]);
        int d = decode_vs_expected(jpg, ppm);
        printf("%s: max difference to ImageMagick's decode %d\n", jpg, d);
        CHECKF(d <= 1, "%s: max difference %d", jpg, d);
    }
}

/* Every proper prefix of a valid file is a truncated file: refused, with the format named. */
static void test_truncation(const char *name, const char *prefix)
{
    size_t len = 0;
    uint8_t *data = load(name, &len);
    CHECK(data != NULL);
    if (!data)
        return;
    gm_image img;
    gm_error err = { 0 };
    CHECKF(gm_image_decode(data, len, NULL, &img, &err) == GM_OK, "%s: %s", name, err.msg);
    gm_image_free(&img);
    int bad = 0, truncated_msg = 0;
    for (size_t n = 0; n < len; n++) {
        uint8_t *cut = malloc(n ? n : 1);   /* exact-size copy so ASan sees any overread */
        memcpy(cut, data, n);
        err.msg[0] = 0;
        int rc = gm_image_decode(cut, n, NULL, &img, &err);
        if (rc == GM_OK || img.rgb != NULL || !err.msg[0]) {
            if (!bad)
                fprintf(stderr, "%s: prefix of %zu bytes accepted\n", name, n);
            bad++;
            gm_image_free(&img);
        } else if (strncmp(err.msg, prefix, strlen(prefix)) != 0 &&
                   strncmp(err.msg, "image:", 6) != 0) {
            if (!bad)
                fprintf(stderr, "%s: prefix %zu: unexpected message '%s'\n", name, n, err.msg);
            bad++;
        }
        if (strstr(err.msg, "truncated file"))
            truncated_msg++;
        free(cut);
    }
    CHECKF(bad == 0, "%s: %d bad prefixes", name, bad);
    CHECKF(truncated_msg > 0, "%s: no prefix reported 'truncated file'", name);
    free(data);
}

static uint32_t crc32_png(const uint8_t *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return c ^ 0xffffffffu;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void test_png_errors(void)
{
    size_t len = 0;
    uint8_t *data = load("rgb8.png", &len);
    CHECK(data != NULL);
    if (!data)
        return;
    gm_image img;
    gm_error err = { 0 };

    /* pixel limit: 13x9 = 117 pixels */
    gm_image_limits lim = { .max_pixels = 116 };
    CHECK_EQ_INT(gm_image_decode(data, len, &lim, &img, &err), GM_ERR_LIMIT);
    CHECKF(strcmp(err.msg, "PNG: 13x9 exceeds the 116-pixel limit") == 0, "%s", err.msg);
    CHECK(img.rgb == NULL);
    lim.max_pixels = 117;
    CHECK_EQ_INT(gm_image_decode(data, len, &lim, &img, &err), GM_OK);
    CHECK(img.width == 13 && img.height == 9);
    gm_image_free(&img);

    /* a 40000x40000 header with a 13x9 body: refused from the header, nothing allocated */
    uint8_t *big = malloc(len);
    memcpy(big, data, len);
    put32(big + 16, 40000);
    put32(big + 20, 40000);
    put32(big + 29, crc32_png(big + 12, 17));
    CHECK_EQ_INT(gm_image_decode(big, len, NULL, &img, &err), GM_ERR_LIMIT);
    CHECKF(strcmp(err.msg, "PNG: 40000x40000 exceeds the 50000000-pixel limit") == 0, "%s", err.msg);

    /* an ancillary chunk declaring 2 GB: refused from the declared length, before libpng
     * would allocate it */
    memcpy(big, data, len);
    static const uint8_t huge_exif[8] = { 0x77, 0, 0, 0, 'e', 'X', 'I', 'f' };
    memcpy(big + 33, huge_exif, 8);
    CHECK(gm_image_decode(big, len, NULL, &img, &err) < 0);
    CHECKF(strstr(err.msg, "PNG: truncated file (chunk eXIf at offset 33 declares 1996488704 bytes"),
           "%s", err.msg);

    /* zero width */
    memcpy(big, data, len);
    put32(big + 16, 0);
    put32(big + 29, crc32_png(big + 12, 17));
    CHECK(gm_image_decode(big, len, NULL, &img, &err) < 0);
    CHECKF(strncmp(err.msg, "PNG: ", 5) == 0 && strstr(err.msg, "width"), "%s", err.msg);

    /* IHDR CRC broken */
    memcpy(big, data, len);
    big[29] ^= 0x55;
    CHECK(gm_image_decode(big, len, NULL, &img, &err) < 0);
    CHECKF(strncmp(err.msg, "PNG: ", 5) == 0 && strstr(err.msg, "CRC"), "%s", err.msg);

    /* a bad CRC in an ancillary chunk (gAMA) is refused too, as Pillow does */
    memcpy(big, data, len);
    CHECK(memcmp(big + 37, "gAMA", 4) == 0);
    big[42] ^= 0x10;
    CHECK(gm_image_decode(big, len, NULL, &img, &err) < 0);
    CHECKF(strcmp(err.msg, "PNG: gAMA: CRC error") == 0, "%s", err.msg);

    /* a byte of the compressed data flipped: IDAT CRC error */
    memcpy(big, data, len);
    big[len - 12 - 8] ^= 0x01;
    CHECK(gm_image_decode(big, len, NULL, &img, &err) < 0);
    CHECKF(strncmp(err.msg, "PNG: ", 5) == 0, "%s", err.msg);
    CHECK(img.rgb == NULL);
    free(big);
    free(data);
}

static void test_unknown(void)
{
    static const uint8_t gif[] = "GIF89a\x01\x00\x01\x00";
    gm_image img;
    gm_error err = { 0 };
    CHECK_EQ_INT(gm_image_decode(gif, sizeof gif - 1, NULL, &img, &err), GM_ERR_FORMAT);
    CHECKF(strcmp(err.msg, "image: not a PNG or JPEG file (starts with 47 49 46 38)") == 0, "%s", err.msg);
    CHECK(gm_image_sniff(gif, sizeof gif - 1) == GM_IMAGE_UNKNOWN);
    CHECK(gm_image_decode(gif, 0, NULL, &img, &err) < 0);
    CHECKF(strstr(err.msg, "empty"), "%s", err.msg);
    CHECK(gm_image_decode(NULL, 5, NULL, &img, &err) < 0);
    CHECK(strcmp(gm_image_format_name(GM_IMAGE_PNG), "PNG") == 0);
    CHECK(strcmp(gm_image_format_name(GM_IMAGE_JPEG), "JPEG") == 0);
    CHECK(strcmp(gm_image_format_name(GM_IMAGE_UNKNOWN), "unknown") == 0);
}

static void test_jpeg_errors(void)
{
    size_t len = 0;
    uint8_t *data = load("jpeg-baseline.jpg", &len);
    CHECK(data != NULL);
    if (!data)
        return;
    CHECK(gm_image_sniff(data, len) == GM_IMAGE_JPEG);
    gm_image img;
    gm_error err = { 0 };
    uint8_t *b = malloc(len);
    memcpy(b, data, len);
    size_t sof = 0;
    for (size_t i = 2; i + 9 < len; i++)
        if (b[i] == 0xff && (b[i + 1] == 0xc0 || b[i + 1] == 0xc2)) {
            sof = i;
            break;
        }
    CHECK(sof != 0);
    if (sof) {
        /* SOF: FF C0 len(2) precision(1) height(2) width(2) */
        b[sof + 5] = 40000 >> 8;
        b[sof + 6] = 40000 & 255;
        b[sof + 7] = 40000 >> 8;
        b[sof + 8] = 40000 & 255;
        CHECK_EQ_INT(gm_image_decode(b, len, NULL, &img, &err), GM_ERR_LIMIT);
        CHECKF(strcmp(err.msg, "JPEG: 40000x40000 exceeds the 50000000-pixel limit") == 0, "%s", err.msg);
        /* zero height is an error too (libjpeg: DNL not supported) */
        b[sof + 5] = 0;
        b[sof + 6] = 0;
        CHECK(gm_image_decode(b, len, NULL, &img, &err) < 0);
        CHECKF(strncmp(err.msg, "JPEG: ", 6) == 0, "%s", err.msg);
        /* a sample precision libjpeg does not support */
        memcpy(b, data, len);
        b[sof + 4] = 0;   /* precision 0: libjpeg refuses */
        CHECK(gm_image_decode(b, len, NULL, &img, &err) < 0);
        CHECKF(strncmp(err.msg, "JPEG: ", 6) == 0, "%s", err.msg);
    }
    /* garbage after SOI */
    memcpy(b, data, len);
    memset(b + 3, 0x00, len - 3);
    CHECK(gm_image_decode(b, len, NULL, &img, &err) < 0);
    CHECKF(strncmp(err.msg, "JPEG: ", 6) == 0, "%s", err.msg);

    /* EXIF with offsets pointing outside the block: ignored, not a crash */
    static const uint8_t bad_exif[] = {
        0xff, 0xe1, 0x00, 0x16, 'E', 'x', 'i', 'f', 0, 0,
        'M', 'M', 0, 42, 0xff, 0xff, 0xff, 0xf0, 0, 1, 1, 0x12, 0, 3,
    };
    uint8_t *ex = malloc(len + sizeof bad_exif);
    memcpy(ex, data, 2);
    memcpy(ex + 2, bad_exif, sizeof bad_exif);
    memcpy(ex + 2 + sizeof bad_exif, data + 2, len - 2);
    CHECKF(gm_image_decode(ex, len + sizeof bad_exif, NULL, &img, &err) == GM_OK, "%s", err.msg);
    CHECK(img.width == 21 && img.height == 14);
    gm_image_free(&img);
    free(ex);
    free(b);
    free(data);
}

/* CMYK and YCCK JPEGs (Adobe marker, as libjpeg writes them) encoded here from known
 * samples; expected RGB = Pillow's CMYK;I unpack + cmyk2rgb on the stored samples. */
static void test_cmyk(J_COLOR_SPACE jpeg_space)
{
    enum { W = 16, H = 10 };
    uint8_t src[W * H * 4];
    for (int i = 0; i < W * H; i++) {
        src[4 * i] = (uint8_t)(i * 7);
        src[4 * i + 1] = (uint8_t)(255 - i * 3);
        src[4 * i + 2] = (uint8_t)(i * 13 + 40);
        src[4 * i + 3] = (uint8_t)(i % 5 == 0 ? 255 : i * 11);
    }
    struct jpeg_compress_struct cc;
    struct jpeg_error_mgr jerr;
    cc.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&cc);
    unsigned char *buf = NULL;
    unsigned long blen = 0;
    jpeg_mem_dest(&cc, &buf, &blen);
    cc.image_width = W;
    cc.image_height = H;
    cc.input_components = 4;
    cc.in_color_space = JCS_CMYK;
    jpeg_set_defaults(&cc);
    jpeg_set_colorspace(&cc, jpeg_space);
    jpeg_set_quality(&cc, 95, TRUE);
    jpeg_start_compress(&cc, TRUE);
    while (cc.next_scanline < H) {
        JSAMPROW r = src + cc.next_scanline * W * 4;
        jpeg_write_scanlines(&cc, &r, 1);
    }
    jpeg_finish_compress(&cc);
    jpeg_destroy_compress(&cc);

    /* stored samples as plain libjpeg returns them */
    uint8_t stored[W * H * 4];
    struct jpeg_decompress_struct dc;
    dc.err = jpeg_std_error(&jerr);
    jpeg_create_decompress(&dc);
    jpeg_mem_src(&dc, buf, blen);
    jpeg_read_header(&dc, TRUE);
    CHECK(dc.saw_Adobe_marker);
    CHECK(dc.jpeg_color_space == jpeg_space);
    dc.out_color_space = JCS_CMYK;
    jpeg_start_decompress(&dc);
    while (dc.output_scanline < H) {
        JSAMPROW r = stored + dc.output_scanline * W * 4;
        jpeg_read_scanlines(&dc, &r, 1);
    }
    jpeg_finish_decompress(&dc);
    jpeg_destroy_decompress(&dc);

    gm_image img;
    gm_error err = { 0 };
    int rc = gm_image_decode(buf, blen, NULL, &img, &err);
    CHECKF(rc == GM_OK, "%s", err.msg);
    if (rc == GM_OK) {
        CHECK(img.width == W && img.height == H);
        int bad = 0;
        for (int i = 0; i < W * H; i++)
            for (int ch = 0; ch < 3; ch++) {
                /* Pillow: c = 255 - stored (CMYK;I); r = (255 - k) - round(c·(255 - k)/255) */
                double c = 255 - stored[4 * i + ch], nk = stored[4 * i + 3];
                int want = (int)(nk - floor(c * nk / 255.0 + 0.5));
                if (img.rgb[3 * i + ch] != want)
                    bad++;
            }
        CHECKF(bad == 0, "%s: %d samples differ", jpeg_space == JCS_YCCK ? "YCCK" : "CMYK", bad);
        gm_image_free(&img);
    }
    free(buf);
}

int main(void)
{
    test_png_types();
    test_jpeg_files();
    test_png_errors();
    test_jpeg_errors();
    test_unknown();
    test_cmyk(JCS_CMYK);
    test_cmyk(JCS_YCCK);
    test_truncation("rgb8.png", "PNG: ");
    test_truncation("pal4-adam7.png", "PNG: ");
    test_truncation("exif6.png", "PNG: ");
    test_truncation("jpeg-baseline.jpg", "JPEG: ");
    test_truncation("jpeg-progressive.jpg", "JPEG: ");
    test_truncation("jpeg-grey.jpg", "JPEG: ");
    return gm_test_finish();
}
