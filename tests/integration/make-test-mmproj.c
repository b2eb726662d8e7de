/* make-test-mmproj.c — build-time helper of the integration tests: writes the committed
 * tiny towers as the service's test mmproj files (tests/daemon/gmd-test-mmproj.h): the
 * gemma4v tower with position tables large enough for the service's image budgets, alone
 * or together with the gemma4a tower in one file, as real mmproj files hold them.
 * Usage: make-test-mmproj VISION_SRC DST  |  make-test-mmproj VISION_SRC AUDIO_SRC DST */
#include <stdio.h>

#include "gmd-test-mmproj.h"

int
main (int argc, char **argv)
{
  if (argc != 3 && argc != 4)
    {
      fprintf (stderr, "usage: %s VISION_SRC [AUDIO_SRC] DST\n", argv[0]);
      return 2;
    }
  const char *audio = argc == 4 ? argv[2] : NULL;
  const char *dst = argv[argc - 1];
  GmdTestMmprojKind kind = audio ? GMD_TEST_MMPROJ_AUDIO_VISION : GMD_TEST_MMPROJ_VISION;
  gm_error err = { 0 };
  if (gmd_test_write_mmproj (argv[1], audio, dst, kind, 0, 128, &err) != GM_OK)
    {
      fprintf (stderr, "%s: %s\n", dst, err.msg);
      return 1;
    }
  return 0;
}
