/* gmd-test-mmproj.h — test mmproj files written at test time from the committed tiny
 * gemma4v tower (tests/conformance/vision-tower/e-clipped.gguf), whose position tables
 * (24 per axis) are too small for the service's image budgets. */
#pragma once

#include <stdbool.h>

#include "core/gm-error.h"

typedef enum {
  GMD_TEST_MMPROJ_VISION,      /* the tower, projection_dim and position table as asked */
  GMD_TEST_MMPROJ_AUDIO_ONLY,  /* only clip.has_audio_encoder (no vision tower) */
  GMD_TEST_MMPROJ_NO_TOWER,    /* a clip GGUF with neither tower */
} GmdTestMmprojKind;

/* Writes dst from src (the committed tower). VISION: the projection gets `projection`
 * outputs (0 = as in src, else zero weights of that width) and the position tables
 * `positions` rows per axis (0 = as in src; more repeat src's rows cyclically). */
int gmd_test_write_mmproj (const char *src, const char *dst, GmdTestMmprojKind kind,
                           int projection, int positions, gm_error *err);
