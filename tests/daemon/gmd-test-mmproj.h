/* gmd-test-mmproj.h — test mmproj files written at test time from the committed tiny
 * towers: the gemma4v one (tests/conformance/vision-tower/e-clipped.gguf), whose position
 * tables (24 per axis) are too small for the service's image budgets, and the gemma4a
 * one (tests/conformance/audio-tower/tiny.gguf, projecting to the tiny text model's
 * width 64). A real mmproj holds both towers in one file: AUDIO_VISION writes that. */
#pragma once

#include <stdbool.h>

#include "core/gm-error.h"

typedef enum {
  GMD_TEST_MMPROJ_VISION,       /* the vision tower, projection and positions as asked */
  GMD_TEST_MMPROJ_AUDIO_ONLY,   /* the audio tower alone (no vision tower) */
  GMD_TEST_MMPROJ_AUDIO_VISION, /* both towers in one file, as real mmproj files are */
  GMD_TEST_MMPROJ_NO_TOWER,     /* a clip GGUF with neither tower */
} GmdTestMmprojKind;

/* Writes dst from the committed towers (vision_src / audio_src: those the kind needs).
 * `projection` (0 = as in the sources, else zero weights of that width) is the output
 * width of every tower written; `positions` (0 = as in vision_src; more repeat its rows
 * cyclically) the vision position tables' rows per axis. */
int gmd_test_write_mmproj (const char *vision_src, const char *audio_src, const char *dst,
                           GmdTestMmprojKind kind, int projection, int positions,
                           gm_error *err);
