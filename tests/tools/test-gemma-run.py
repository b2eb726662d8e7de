#!/usr/bin/env python3
"""gemma-run end to end with images and sound: argv in, exit code / stderr / files out.

Usage: test-gemma-run.py GEMMA_RUN TINY_MODEL CONFORMANCE_DIR DATA_DIR
"""
import os
import struct
import subprocess
import sys
import tempfile
import wave

RUN, TINY, CONF, DATA = sys.argv[1:5]
MMPROJ = os.path.join(CONF, "mm-vision", "mmproj.gguf")      # gemma4v, projection 64
PHOTO = os.path.join(CONF, "mm-vision", "photo-exif6.jpg")
ICON = os.path.join(CONF, "mm-vision", "icon-rgba16-adam7.png")
WIDE_MODEL = os.path.join(CONF, "quant", "model.gguf")        # n_embd 256
AUDIO_MMPROJ = os.path.join(CONF, "audio-tower", "tiny.gguf")  # gemma4a, projection 64
SPEECH = os.path.join(CONF, "audio-features", "speech.wav")    # 16 kHz PCM16, 44315 samples
SPEECH_MEL = os.path.join(CONF, "audio-features", "speech.f32")  # transformers' 276 frames
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

    # ---- sound ---------------------------------------------------------------------
    # --dump-mel: transformers' features of the 276 valid frames, no model needed.
    mel = os.path.join(td, "mel.f32")
    rc, _, err = run("--audio", SPEECH, "--dump-mel", mel)
    check(rc == 0 and err.strip().splitlines()[-1] == "clip 0: 276 frames", "--dump-mel prints the clip's frames", err)
    if rc == 0:
        got = open(mel, "rb").read()
        ref = open(SPEECH_MEL, "rb").read()
        check(len(got) == len(ref) == 276 * 128 * 4, "--dump-mel size", "%d vs %d" % (len(got), len(ref)))
        if len(got) == len(ref):
            a = struct.unpack("<%df" % (len(got) // 4), got)
            b = struct.unpack("<%df" % (len(ref) // 4), ref)
            d = max(abs(x - y) for x, y in zip(a, b))
            check(d <= 1e-5, "--dump-mel equals transformers (max |d| %.2e)" % d, "%.3e" % d)
    # Longer than 30 s: consecutive clips, in order.
    with wave.open(SPEECH, "rb") as w:
        pcm = w.readframes(w.getnframes())
    longwav = os.path.join(td, "long.wav")
    with wave.open(longwav, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((pcm * 12)[:528000 * 2])
    rc, _, err = run("--audio", longwav, "--dump-mel", mel)
    lines = err.strip().splitlines()
    check(rc == 0 and lines[-2:] == ["clip 0: 2999 frames", "clip 1: 299 frames"], "33 s: two clips", err)
    check(rc != 0 or os.path.getsize(mel) == (2999 + 299) * 128 * 4, "33 s: both clips dumped in order")

    # Generation with audio (and audio before an image: command-line order).
    abase = ["-m", TINY, "--mmproj", AUDIO_MMPROJ, "--threads", "2", "--seed", "3"]
    rc, out1, err = run(*abase, "--audio", SPEECH, "-n", "6", "Transcribe this.")
    check(rc == 0 and "WAV PCM_16, 16000 Hz, 1 channel(s), 2.77 s -> 1 clip(s), 69 soft tokens" in err,
          "audio prompt: clip and tokens reported", err)
    rc2, out2, _ = run(*abase, "--audio", SPEECH, "-n", "6", "Transcribe this.")
    check(rc == 0 and rc2 == 0 and out1 == out2, "audio prompt reproducible")
    rc, _, err = run(*abase, "--raw", "--verbose", "--audio", SPEECH, "--audio", SPEECH, "-n", "1", "x")
    check(rc == 0 and err.count("[media x69]") == 2 and " 2 256000 [media x69] 258883 256000 " in err,
          "--raw: BOS, two audio blocks with their markers", err)
    rc, _, err = run(*abase, "--image", PHOTO, "--audio", SPEECH, "hi")
    check(rc == 2 and "tiny.gguf" in err, "an audio-only mmproj refuses images", err)
    rc, _, err = run("-m", TINY, "--mmproj", MMPROJ, "--audio", SPEECH, "hi")
    check(rc == 2 and "audio" in err, "a vision-only mmproj refuses audio", err)
    trunc = os.path.join(td, "trunc.wav")
    open(trunc, "wb").write(open(SPEECH, "rb").read()[:30])
    rc, _, err = run(*abase, "--audio", trunc, "hi")
    check(rc == 2 and "trunc.wav: audio:" in err, "truncated WAV refused", err)
    rc, _, err = run("-m", TINY, "--audio", SPEECH, "hi")
    check(rc == 1 and "--audio needs --mmproj" in err, "--audio without --mmproj is a usage error", err)

print("%d failure(s)" % failures)
sys.exit(1 if failures else 0)
