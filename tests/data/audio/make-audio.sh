#!/bin/sh
# make-audio.sh — regenerates the sound files the audio tests read (tests/data/audio/).
#
# Two kinds of file:
#  * known-*: samples from a fixed integer generator (the LCG below, also in
#    tests/unit/test-audio-decode.c), written by the embedded Python as PCM16, 24-bit
#    WAVE_FORMAT_EXTENSIBLE and IEEE float WAVs (AIFF and AU copies by sox, lossless), so a
#    decode can be checked sample for sample.
#  * speech-*/chirp-*: real recordings made here — espeak-ng speech and a sox sine sweep —
#    at 8, 16, 44.1 and 48 kHz, mono and stereo, as WAV, FLAC, Ogg Vorbis, Ogg Opus and MP3.
#    The lossless ones feed the resampler conformance (tests/conformance/audio-resample/);
#    the lossy ones are compared with their lossless source within a tolerance.
#
# Needs: espeak-ng, sox, oggenc, opusenc, lame, python3 (standard library only).
# sox runs with -R (fixed random seed) and -D (no dither); the encoders with fixed
# serials, so a rerun with the same tool versions gives the same bytes. After a rerun,
# regenerate tests/conformance/audio-resample/ (generate_audio_resample.py).
set -eu
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
SOX="sox -R -D -V1"

# ---- known content (exact checks) ----
python3 - <<'EOF'
import struct

def lcg(seed):
    # Same generator as test-audio-decode.c: 32-bit LCG, 24 high bits per draw.
    s = seed & 0xffffffff
    while True:
        s = (s * 1103515245 + 12345) & 0xffffffff
        yield s >> 8

def riff(name, fmt_chunk, data, extra=b""):
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk + extra
    body += b"data" + struct.pack("<I", len(data)) + data
    with open(name, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)

# known-16k-mono-pcm16.wav: 8000 samples, seed 1; the first four are the extremes.
g = lcg(1)
v = [next(g) >> 8 for _ in range(8000)]
v = [x - 32768 for x in v]
v[0:4] = [-32768, 32767, 0, -1]
fmt = struct.pack("<HHIIHH", 1, 1, 16000, 16000 * 2, 2, 16)
riff("known-16k-mono-pcm16.wav", fmt, struct.pack("<%dh" % len(v), *v))

# known-8k-stereo-pcm24.wav: 4000 frames × 2 channels interleaved, seed 2, as
# WAVE_FORMAT_EXTENSIBLE (KSDATAFORMAT_SUBTYPE_PCM, front left + front right).
g = lcg(2)
v = [next(g) - (1 << 23) for _ in range(8000)]
v[0:4] = [-(1 << 23), (1 << 23) - 1, 1, -1]
data = b"".join(struct.pack("<i", x)[:3] for x in v)
guid_pcm = bytes.fromhex("0100000000001000800000aa00389b71")
fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 2, 8000, 8000 * 6, 6, 24, 22, 24, 3) + guid_pcm
riff("known-8k-stereo-pcm24.wav", fmt, data)

# known-8k-mono-f32.wav: 4000 IEEE floats (x − 2^23) / 2^23, seed 3, with a fact chunk.
g = lcg(3)
v = [(next(g) - (1 << 23)) / float(1 << 23) for _ in range(4000)]
v[0:3] = [-1.0, 0.0, 0.5]
fmt = struct.pack("<HHIIHHH", 3, 1, 8000, 8000 * 4, 4, 32, 0)
riff("known-8k-mono-f32.wav", fmt, struct.pack("<%df" % len(v), *v),
     extra=b"fact" + struct.pack("<II", 4, len(v)))
EOF
# Same samples as known-16k-mono-pcm16.wav, in big-endian containers.
$SOX known-16k-mono-pcm16.wav known-16k-mono-pcm16.aiff
$SOX known-16k-mono-pcm16.wav known-16k-mono-pcm16.au

# ---- recordings ----
espeak-ng -s 210 -w "$tmp/speech.wav" "The quick brown fox jumps over the lazy dog"   # 22050 Hz
# 16 kHz mono: PCM16 WAV, FLAC of the very same samples, Ogg Opus.
$SOX "$tmp/speech.wav" -r 16000 -b 16 -e signed-integer speech-16k-mono-pcm16.wav
$SOX speech-16k-mono-pcm16.wav speech-16k-mono.flac
opusenc --quiet --serial 16 --bitrate 32 speech-16k-mono-pcm16.wav speech-16k-mono.opus
# 8 kHz: mono PCM16 WAV; stereo Ogg Vorbis of (speech, 0.5 × speech).
$SOX "$tmp/speech.wav" -r 8000 -b 16 -e signed-integer speech-8k-mono-pcm16.wav
$SOX speech-8k-mono-pcm16.wav -c 2 "$tmp/st8.wav" remix 1 1v0.5
oggenc --quiet --serial 8 -q 3 -o speech-8k-stereo.ogg "$tmp/st8.wav"
# 44.1 kHz: the first second as a mono PCM16 WAV; the whole phrase as stereo MP3 (L = R).
$SOX "$tmp/speech.wav" -r 44100 -b 16 -e signed-integer "$tmp/s44.wav"
$SOX "$tmp/s44.wav" speech-44k1-mono-pcm16.wav trim 0 1
$SOX "$tmp/s44.wav" -c 2 "$tmp/s44st.wav"
lame --quiet --noreplaygain --resample 44.1 -b 64 "$tmp/s44st.wav" speech-44k1-stereo.mp3
# 48 kHz: a 1 s sine sweep 100 Hz → 7 kHz (PCM16 WAV, mono); stereo FLAC of speech (L)
# and 0.25 × speech (R), the first 1.5 s; stereo Ogg Opus of the same.
$SOX -n -r 48000 -b 16 -e signed-integer chirp-48k-mono-pcm16.wav synth 1 sine 100-7000 vol 0.5
$SOX "$tmp/speech.wav" -r 48000 -b 16 -e signed-integer -c 2 "$tmp/s48st.wav" remix 1 1v0.25 trim 0 1.5
$SOX "$tmp/s48st.wav" speech-48k-stereo.flac
opusenc --quiet --serial 48 --bitrate 48 "$tmp/s48st.wav" speech-48k-stereo.opus

ls -l known-* speech-* chirp-*
cat known-* speech-* chirp-* | wc -c
