#!/usr/bin/env python3
"""gemma-run end to end with images: argv in, exit code / stderr / files out.

Usage: test-gemma-run.py GEMMA_RUN TINY_MODEL CONFORMANCE_DIR DATA_DIR
"""
import os
import subprocess
import sys
import tempfile

RUN, TINY, CONF, DATA = sys.argv[1:5]
MMPROJ = os.path.join(CONF, "mm-vision", "mmproj.gguf")      # gemma4v, projection 64
PHOTO = os.path.join(CONF, "mm-vision", "photo-exif6.jpg")
ICON = os.path.join(CONF, "mm-vision", "icon-rgba16-adam7.png")
WIDE_MODEL = os.path.join(CONF, "quant", "model.gguf")        # n_embd 256
failures = 0


def run(*args):
    p = subprocess.run([RUN, *args], capture_output=True, timeout=120)
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def check(cond, what, detail=""):
    global failures
    print(("ok   " if cond else "FAIL ") + what + ("" if cond else ": " + detail))
    if not cond:
        failures += 1


base = ["-m", TINY, "--mmproj", MMPROJ, "--image-tokens", "70", "--threads", "2", "--seed", "7"]
with tempfile.TemporaryDirectory() as td:
    # Two images, generation: reports each image and is reproducible.
    rc, out1, err = run(*base, "--image", PHOTO, "--image", ICON, "-n", "8", "Describe both.")
    check(rc == 0, "two images generate", err)
    check("photo-exif6.jpg: 240x320 -> 63 soft tokens (grid 21x27)" in err, "EXIF-rotated JPEG size and tokens", err)
    check("icon-rgba16-adam7.png: 61x47 -> 63 soft tokens (grid 27x21)" in err, "PNG size and tokens", err)
    rc, out2, err = run(*base, "--image", PHOTO, "--image", ICON, "-n", "8", "Describe both.")
    check(rc == 0 and out1 == out2, "same seed, same images: same text", out1 + " / " + out2)

    # Prompt logits: images change them; order matters.
    def logits(*imgs):
        path = os.path.join(td, "l%d.f32" % len(os.listdir(td)))
        a = []
        for im in imgs:
            a += ["--image", im]
        rc, _, err = run(*base, *a, "--dump-logits", path, "What is this?")
        check(rc == 0, "dump logits with %d image(s)" % len(imgs), err)
        return open(path, "rb").read() if rc == 0 else b""

    l0, l1, l2, l21 = logits(), logits(PHOTO), logits(PHOTO, ICON), logits(ICON, PHOTO)
    row = 262144 * 4
    # begin marker + 63 soft tokens + end marker, and the template's blank lines around
    # the image (one merged newline token here).
    for a, b, what in ((l0, l1, "first"), (l1, l2, "second")):
        check(66 * row == len(b) - len(a), "the %s image adds 66 positions" % what,
              "%d rows vs %d" % (len(b) // row, len(a) // row))
    check(l2 != l21 and len(l2) == len(l21), "image order changes the logits")
    check(l1[-row:] != l0[-row:], "the image changes the last position's logits")

    # --raw puts the images after BOS.
    rc, _, err = run(*base, "--raw", "--image", PHOTO, "-n", "2", "--verbose", "hello")
    check(rc == 0 and "prompt (" in err and " 2 255999 [media x63] 258882 " in err, "--raw: BOS, image, text", err)

    # Errors: clear message, documented exit code, no crash.
    rc, _, err = run("-m", TINY, "--image", PHOTO, "hi")
    check(rc == 1 and "--image needs --mmproj" in err, "--image without --mmproj is a usage error", err)
    rc, _, err = run(*base, "--tokens", "2 3", "--image", PHOTO)
    check(rc == 1 and "no --image" in err, "--tokens with --image is a usage error", err)
    trunc = os.path.join(td, "trunc.jpg")
    open(trunc, "wb").write(open(PHOTO, "rb").read()[:3000])
    rc, _, err = run(*base, "--image", trunc, "hi")
    check(rc == 2 and "trunc.jpg: JPEG:" in err, "truncated JPEG refused", err)
    junk = os.path.join(td, "junk.png")
    open(junk, "wb").write(b"GIF89a" + bytes(100))
    rc, _, err = run(*base, "--image", junk, "hi")
    check(rc == 2 and "junk.png: image:" in err, "GIF bytes named .png refused by content", err)
    rc, _, err = run("-m", WIDE_MODEL, "--mmproj", MMPROJ, "--image", PHOTO, "hi")
    check(rc == 2 and "not a pair" in err, "mmproj width != model width refused", err)
    rc, _, err = run("-m", TINY, "--mmproj", TINY, "--image", PHOTO, "hi")
    check(rc == 2 and err.strip() != "", "a text GGUF as --mmproj refused", err)
    rc, _, err = run(*base[:4], "--image-tokens", "100", "--image", PHOTO, "hi")
    check(rc == 1 and "--image-tokens 100" in err, "bad budget is a usage error", err)

    # Patches dump still needs no model.
    rc, _, err = run("--image", ICON, "--image-tokens", "70", "--dump-image-patches", os.path.join(td, "p.f32"))
    check(rc == 0 and "grid 27x21" in err and os.path.getsize(os.path.join(td, "p.f32")) == 27 * 21 * 768 * 4,
          "--dump-image-patches", err)

print("%d failure(s)" % failures)
sys.exit(1 if failures else 0)
