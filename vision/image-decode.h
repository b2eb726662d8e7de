/* image-decode.h — encoded image bytes (PNG, JPEG) to RGB8, the way transformers' image
 * loading does it (PIL .convert("RGB"): alpha dropped, palette/grey/16-bit expanded, EXIF
 * orientation applied, CMYK/YCCK converted). The format is detected from the bytes.
 * Errors never abort: libpng/libjpeg failures (setjmp/longjmp, error managers) are
 * contained and returned as gm_error naming the format and what is wrong. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "core/gm-error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gm_image_format {
    GM_IMAGE_UNKNOWN = 0,
    GM_IMAGE_PNG = 1,
    GM_IMAGE_JPEG = 2,
} gm_image_format;

gm_image_format gm_image_sniff(const uint8_t *data, size_t len);
const char *gm_image_format_name(gm_image_format f);   /* "PNG", "JPEG", "unknown" */

typedef struct gm_image {
    uint32_t width, height;
    uint8_t *rgb;          /* width*height*3 bytes, row-major, R G B (malloc'd) */
} gm_image;

typedef struct gm_image_limits {
    uint64_t max_pixels;   /* width*height cap (decompression bombs); 0 = 50 000 000 */
} gm_image_limits;

/* Decodes data (len bytes) into out. Refuses unknown formats, truncated/corrupt files,
 * zero dimensions and images above the pixel limit (GM_ERR_LIMIT) — the limit is checked from the header
 * before any pixel buffer is allocated. lim may be NULL. Error messages start with "PNG: ",
 * "JPEG: " or (format not recognised) "image: "; on error out is left empty. */
int gm_image_decode(const uint8_t *data, size_t len, const gm_image_limits *lim, gm_image *out,
                    gm_error *err);
void gm_image_free(gm_image *img);

#ifdef __cplusplus
}
#endif
