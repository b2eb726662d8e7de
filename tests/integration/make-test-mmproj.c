/* make-test-mmproj.c — build-time helper of the integration tests: writes the committed
 * tiny gemma4v tower with position tables large enough for the service's image budgets
 * (tests/daemon/gmd-test-mmproj.h). Usage: make-test-mmproj SRC DST */
#include <stdio.h>

#include "gmd-test-mmproj.h"

int
main (int argc, char **argv)
{
  if (argc != 3)
    {
      fprintf (stderr, "usage: %s SRC DST\n", argv[0]);
      return 2;
    }
  gm_error err = { 0 };
  if (gmd_test_write_mmproj (argv[1], argv[2], GMD_TEST_MMPROJ_VISION, 0, 128, &err) != GM_OK)
    {
      fprintf (stderr, "%s: %s\n", argv[2], err.msg);
      return 1;
    }
  return 0;
}
