/* fuzz-image.c — libFuzzer target for the image decoder (PNG, JPEG, EXIF orientation).
 *
 * Decodes the input under a small pixel limit (so the fuzzer spends its time on parsing,
 * not on huge valid images). A success must give a non-empty image whose every byte is
 * readable; a failure must name the format in its message and leave no pixels behind.
 * Anything else aborts so the fuzzer saves the input. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vision/image-decode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(c) do { if (!(c)) { fprintf(stderr, "fuzz-image: %s failed\n", #c); abort(); } } while (0)

static volatile uint8_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    gm_image_limits lim = { .max_pixels = 1u << 20 };
    gm_image img;
    gm_error err = { 0 };
    int rc = gm_image_decode(data, size, &lim, &img, &err);
    if (rc == GM_OK) {
        FUZZ_ASSERT(img.width > 0 && img.height > 0 && img.rgb != NULL);
        FUZZ_ASSERT((uint64_t)img.width * img.height <= lim.max_pixels);
        uint8_t acc = 0;
        for (size_t i = 0; i < (size_t)img.width * img.height * 3; i++)
            acc ^= img.rgb[i];
        sink = acc;
        gm_image_free(&img);
        FUZZ_ASSERT(img.rgb == NULL);
    } else {
        FUZZ_ASSERT(rc < 0 && img.rgb == NULL && img.width == 0);
        FUZZ_ASSERT(strncmp(err.msg, "PNG: ", 5) == 0 || strncmp(err.msg, "JPEG: ", 6) == 0 ||
                    strncmp(err.msg, "image: ", 7) == 0);
    }
    return 0;
}
