#!/usr/bin/env python3
"""generate_audio_resample.py — an independent reference for gemmad's resampler.

gemmad resamples decoded sound to 16 kHz with libsoxr at SOXR_HQ (audio/audio-decode.c),
what transformers gets through librosa's default res_type "soxr_hq". This script checks
that resampler against a different, deliberately over-engineered one: scipy's polyphase
resample_poly in float64 with a long Kaiser-windowed sinc (about 120 dB stopband, passband
flat to 0.913 of the lower Nyquist like soxr HQ, −6 dB point midway to Nyquist).

For each committed lossless, non-16 kHz recording it reads the WAV itself (PCM16, PCM24,
IEEE float, WAVE_FORMAT_EXTENSIBLE; a small parser below, no soundfile), turns the samples
into float32 exactly as libsndfile does (v / 2^15, v / 2^23) and downmixes exactly as
gemmad does ((L + R) × 0.5 in float32), resamples, and writes into OUT:

  <name>.f32   float32 LE, `count` samples of the 16 kHz reference from `offset`
               (a window from the middle keeps the committed files small)
  index.txt    one line per file: source file, source rate, source samples (mono),
               16 kHz length gemmad must give (round half up of n × 16000 / rate),
               offset, count, reference file; plus the reference's own figures

tests/unit/test-audio-decode.c decodes and resamples the same files and compares:
full-band and passband (0.85 of the lower Nyquist) signal-to-error ratios. The two
resamplers differ by design only in the transition band (0.913–1.0 of the lower Nyquist),
so the passband figure is the one with a tight bound.

Needs numpy and scipy (the device machine). No network.
Usage: python3 generate_audio_resample.py --out DIR
       python3 generate_audio_resample.py --selftest   (parser and downmix only, no numpy)
"""

import argparse
import math
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "audio")

# The non-16 kHz lossless recordings (8, 44.1 and 48 kHz, mono and stereo).
SOURCES = [
    "speech-8k-mono-pcm16.wav",
    "known-8k-stereo-pcm24.wav",
    "speech-44k1-mono-pcm16.wav",
    "chirp-48k-mono-pcm16.wav",
]
OUT_RATE = 16000
OFFSET = 1000
COUNT = 6000


def read_wav(path):
    """(rate, channels, frames as lists of float32-representable floats per channel)."""
    with open(path, "rb") as f:
        b = f.read()
    if b[0:4] != b"RIFF" or b[8:12] != b"WAVE":
        raise ValueError(path + ": not RIFF/WAVE")
    pos, fmt, data = 12, None, None
    while pos + 8 <= len(b):
        cid, size = b[pos:pos + 4], struct.unpack("<I", b[pos + 4:pos + 8])[0]
        body = b[pos + 8:pos + 8 + size]
        if cid == b"fmt ":
            fmt = body
        elif cid == b"data":
            data = body
        pos += 8 + size + (size & 1)
    tag, ch, rate, _, align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == 0xFFFE:
        tag = struct.unpack("<H", fmt[24:26])[0]   # the subformat GUID's first two bytes
    n = len(data) // align
    vals = []
    if tag == 1 and bits == 16:
        raw = struct.unpack("<%dh" % (n * ch), data[:n * align])
        vals = [v / 32768.0 for v in raw]
    elif tag == 1 and bits == 24:
        for i in range(n * ch):
            v = int.from_bytes(data[3 * i:3 * i + 3], "little", signed=True)
            vals.append(v / 8388608.0)
    elif tag == 3 and bits == 32:
        vals = list(struct.unpack("<%df" % (n * ch), data[:n * align]))
    else:
        raise ValueError("%s: format tag %d, %d bits not handled" % (path, tag, bits))
    return rate, ch, [vals[c::ch] for c in range(ch)]


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def downmix(chans):
    """gemmad's downmix in float32: sum from channel 0 upwards, times (float)(1/ch)."""
    if len(chans) == 1:
        return chans[0]
    inv = f32(1.0 / len(chans))
    out = []
    for i in range(len(chans[0])):
        acc = chans[0][i]
        for c in chans[1:]:
            acc = f32(acc + c[i])
        out.append(f32(acc * inv))
    return out


def out_len(n, rate):
    return (n * OUT_RATE * 2 + rate) // (2 * rate)


def selftest():
    for name in SOURCES:
        rate, ch, chans = read_wav(os.path.join(DATA, name))
        mono = downmix(chans)
        assert all(abs(v) <= 1.0 for v in mono), name
        assert out_len(len(mono), rate) >= OFFSET + COUNT, name
        print("%-28s %6d Hz %d ch %6d samples -> %6d" % (name, rate, ch, len(mono),
                                                        out_len(len(mono), rate)))
    # The 24-bit file's first frame is written as (-2^23, 2^23 - 1): mean -0.5 / 2^23.
    _, _, chans = read_wav(os.path.join(DATA, "known-8k-stereo-pcm24.wav"))
    assert downmix(chans)[0] == -0.5 / 8388608.0
    assert out_len(5, 32000) == 3 and out_len(3, 48000) == 1
    print("selftest ok")


def reference(x, rate):
    import numpy as np
    from scipy import signal
    g = math.gcd(rate, OUT_RATE)
    up, down = OUT_RATE // g, rate // g
    m = max(up, down)
    atten = 120.0
    beta = 0.1102 * (atten - 8.7)
    # Passband edge 0.913 and stopband edge 1.0 of the lower Nyquist, in the upsampled
    # domain (Nyquist = 1): the −6 dB cutoff midway, length from Kaiser's formula.
    f_pass, f_stop = 0.913 / m, 1.0 / m
    width = f_stop - f_pass
    ntaps = int(math.ceil((atten - 7.95) / (2.285 * math.pi * width))) | 1
    h = signal.firwin(ntaps, 0.5 * (f_pass + f_stop), window=("kaiser", beta))
    y = signal.resample_poly(np.asarray(x, dtype=np.float64), up, down, window=h)
    return y, up, down, ntaps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--selftest", action="store_true")
    a = ap.parse_args()
    if a.selftest:
        selftest()
        return
    if not a.out:
        ap.error("--out DIR")
    import numpy as np
    import scipy
    os.makedirs(a.out, exist_ok=True)
    lines = ["# generate_audio_resample.py: numpy %s, scipy %s; reference = scipy.signal."
             "resample_poly, float64, Kaiser-windowed sinc (120 dB), cutoff midway between "
             "0.913 and 1.0 of the lower Nyquist" % (np.__version__, scipy.__version__),
             "# file rate n_in n_out offset count reference"]
    for name in SOURCES:
        rate, ch, chans = read_wav(os.path.join(DATA, name))
        mono = downmix(chans)
        n_out = out_len(len(mono), rate)
        y, up, down, ntaps = reference(mono, rate)
        ref = y[OFFSET:OFFSET + COUNT].astype("<f4")
        stem = os.path.splitext(name)[0]
        ref.tofile(os.path.join(a.out, stem + ".f32"))
        lines.append("%s %d %d %d %d %d %s" % (name, rate, len(mono), n_out, OFFSET, COUNT,
                                               stem + ".f32"))
        lines.append("#   up %d down %d taps %d; reference length %d; window rms %.6f"
                     % (up, down, ntaps, len(y), float(np.sqrt(np.mean(y[OFFSET:OFFSET + COUNT] ** 2)))))
        print(lines[-2]); print(lines[-1])
    with open(os.path.join(a.out, "index.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
