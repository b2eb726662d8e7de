#!/usr/bin/env python3
"""Log-mel front-end conformance fixtures (gemma4-model.md §5.1, CONFORMANCE.md).

Three steps:

  python3 generate_audio_features.py --make-wavs DIR
      Makes the 16 kHz PCM16 mono test WAVs with espeak-ng and sox (here; the committed
      files are the truth, a rerun with other tool versions may give other samples).

  python3 generate_audio_features.py --selftest DIR
      Pure Python (no numpy): checks the WAVs parse, are 16 kHz mono PCM16 and have the
      lengths the cases expect, and prints the cases.

  python3 generate_audio_features.py --reference DIR OUTDIR
      Needs numpy and transformers 5.17.0. Reads each WAV with the `wave` module
      (int16 / 32768.0 -> float32, the formula tests/unit/test-audio-features.c uses),
      runs Gemma4AudioFeatureExtractor on each clip alone, as a one-element list (its defaults: truncation at
      480 000 samples, padding "longest" to a multiple of 128, sampling_rate=16000) and
      writes OUTDIR/<case>.f32 (the valid frames, f32 LE, frame-major, 128 per frame),
      OUTDIR/cases.txt and OUTDIR/meta.json (versions, the extractor's config and side
      checks: the class AutoFeatureExtractor picks, frame counts returned vs valid, the
      dtypes on the way, a float64 re-implementation, padding independence).
"""
import hashlib
import json
import os
import struct
import subprocess
import sys
import wave

RATE = 16000
SENTENCE = "Hello, this is a test of the audio front end."
LONG_TILE = 528000          # 33 s: speech.wav repeated
CLIP = 480000               # transformers' max_length (30 s)
SPARSE_EVERY, SPARSE_TAIL = 50, 24

# name, wav, tile (0: none), start, count (-1: to the end), stored
# stored: "all" = every valid frame in <name>.f32; "sparse" = frames f with
# f % SPARSE_EVERY == 0 or f >= frames - SPARSE_TAIL, plus <name>-sums.f64 (Σ of each
# frame's 128 values, float64, every frame) to keep the fixture small.
CASES = [
    ("speech", "speech.wav", 0, 0, -1, "all"),
    ("chirp", "chirp.wav", 0, 0, -1, "all"),
    ("quiet", "quiet.wav", 0, 0, -1, "all"),
    ("cut160", "cut160.wav", 0, 0, -1, "all"),     # no valid frame: gemmad refuses it
    ("cut161", "cut161.wav", 0, 0, -1, "all"),
    ("cut321", "cut321.wav", 0, 0, -1, "all"),
    ("cut2560", "cut2560.wav", 0, 0, -1, "all"),   # a multiple of 128: no batch padding
    ("cut3201", "cut3201.wav", 0, 0, -1, "all"),
    ("long-clip0", "speech.wav", LONG_TILE, 0, CLIP, "sparse"),
    ("long-clip1", "speech.wav", LONG_TILE, CLIP, -1, "all"),
]
EXPECT_LEN = {"cut160.wav": 160, "cut161.wav": 161, "cut321.wav": 321,
              "cut2560.wav": 2560, "cut3201.wav": 3201}


def sh(*args):
    subprocess.run(list(args), check=True)


def make_wavs(d):
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, "_espeak22k.wav")
    sh("espeak-ng", "-w", tmp, SENTENCE)
    sox16 = ["-r", str(RATE), "-b", "16", "-c", "1", "-e", "signed-integer"]
    # -D: no dither, so the files are what sox computes (they are the truth either way).
    sh("sox", "-D", tmp, *sox16, os.path.join(d, "speech.wav"))
    os.remove(tmp)
    # Linear chirp 40 Hz -> 7.95 kHz, 19753 samples (not a multiple of 128).
    sh("sox", "-D", *sox16, "-n", *sox16, os.path.join(d, "chirp.wav"),
       "synth", "19753s", "sine", "40-7950", "vol", "0.5")
    # Near-silence: 2000 exact zeros, then noise of a few LSB and a faint 440 Hz tone,
    # so most mel bins sit at or just above the 1e-3 floor.
    sh("sox", "-D", *sox16, "-n", *sox16, os.path.join(d, "quiet.wav"),
       "synth", "7000s", "whitenoise", "synth", "sine", "mix", "440", "vol", "0.0003",
       "pad", "2000s")
    for n in sorted(EXPECT_LEN.values()):
        sh("sox", "-D", os.path.join(d, "speech.wav"), os.path.join(d, "cut%d.wav" % n),
           "trim", "12345s", "%ds" % n)


def read_wav_ints(path):
    with wave.open(path, "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getframerate() == RATE, \
            path + ": not 16 kHz mono PCM16"
        raw = w.readframes(w.getnframes())
    return list(struct.unpack("<%dh" % (len(raw) // 2), raw))


def case_ints(d, wav, tile, start, count):
    s = read_wav_ints(os.path.join(d, wav))
    if tile:
        s = [s[i % len(s)] for i in range(tile)]
    end = len(s) if count < 0 else start + count
    assert 0 <= start < end <= len(s)
    return s[start:end]


def n_valid(n):
    """gemmad's frame count (audio-features.h): frames whose 321-sample window is real."""
    return (n - 161) // 160 + 1 if n >= 161 else 0


def sparse_frames(v):
    return [f for f in range(v) if f % SPARSE_EVERY == 0 or f >= v - SPARSE_TAIL]


def selftest(d):
    for wav, n in EXPECT_LEN.items():
        assert len(read_wav_ints(os.path.join(d, wav))) == n, wav
    for name, wav, tile, start, count, stored in CASES:
        s = case_ints(d, wav, tile, start, count)
        print("%-11s %-11s samples %7d frames %5d %s" % (name, wav, len(s), n_valid(len(s)),
                                                         stored))
    sp = case_ints(d, "speech.wav", 0, 0, -1)
    lg = case_ints(d, "speech.wav", LONG_TILE, 0, -1)
    assert len(lg) == LONG_TILE and lg[len(sp) + 5] == sp[5]
    print("selftest ok")


def mel_bank_f64(np):
    """The HTK bank from the formulas of gemma4-model.md §5.1, to check our reading."""
    mel_max = 2595.0 * np.log10(1.0 + 8000.0 / 700.0)
    mels = np.linspace(0.0, mel_max, 130)
    hz = 700.0 * (np.power(10.0, mels / 2595.0) - 1.0)
    bins = np.linspace(0.0, 8000.0, 257)
    m = np.zeros((257, 128))
    for j in range(128):
        up = (bins - hz[j]) / (hz[j + 1] - hz[j])
        down = (hz[j + 2] - bins) / (hz[j + 2] - hz[j + 1])
        m[:, j] = np.maximum(0.0, np.minimum(up, down))
    return m


def logmel_f64(np, x32, window32, bank):
    """Float64 spectra of the same float32 windowed frames (valid frames only)."""
    v = n_valid(len(x32))
    padded = np.concatenate([np.zeros(160, np.float32), x32])
    out = np.zeros((v, 128))
    for f in range(v):
        fr = (padded[f * 160: f * 160 + 320] * window32).astype(np.float64)
        mag = np.abs(np.fft.rfft(fr, n=512))
        out[f] = np.log(mag @ bank + 1e-3)
    return out


def reference(d, outdir):
    import numpy as np
    import transformers
    from transformers.models.gemma4 import feature_extraction_gemma4 as fe_mod
    from transformers import audio_utils
    Gemma4AudioFeatureExtractor = fe_mod.Gemma4AudioFeatureExtractor

    os.makedirs(outdir, exist_ok=True)
    meta = {"transformers": transformers.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0], "cases": {}}
    try:
        import torch
        meta["torch"] = torch.__version__
    except Exception as e:  # noqa: BLE001
        meta["torch_import_error"] = repr(e)
    # The exact sources the reference ran (copies for reading, hashes for the record).
    srcdir = os.path.join(outdir, "src")
    os.makedirs(srcdir, exist_ok=True)
    meta["sources_sha256"] = {}
    for mod in (fe_mod, audio_utils, sys.modules[Gemma4AudioFeatureExtractor.__mro__[1].__module__]):
        with open(mod.__file__, "rb") as f:
            data = f.read()
        meta["sources_sha256"][mod.__name__] = hashlib.sha256(data).hexdigest()
        with open(os.path.join(srcdir, os.path.basename(mod.__file__)), "wb") as f:
            f.write(data)
    import transformers.models.gemma4 as g4
    meta["gemma4_audio_classes"] = sorted(n for n in dir(g4) if "Audio" in n or "Feature" in n)

    # Which class does AutoFeatureExtractor pick for a Gemma 4 checkpoint?
    import tempfile
    from transformers import AutoFeatureExtractor
    auto = {}
    for label, cfg in (
            ("feature_extractor_type", {"feature_extractor_type": "Gemma4AudioFeatureExtractor"}),
            ("processor_config", None)):
        try:
            with tempfile.TemporaryDirectory() as td:
                if cfg is not None:
                    with open(os.path.join(td, "preprocessor_config.json"), "w") as f:
                        json.dump(cfg, f)
                else:
                    # Newer checkpoints: processor_config.json with a nested feature_extractor
                    # and a config.json naming the model type.
                    with open(os.path.join(td, "processor_config.json"), "w") as f:
                        json.dump({"processor_class": "Gemma4Processor", "feature_extractor": {
                            "feature_extractor_type": "Gemma4AudioFeatureExtractor"}}, f)
                    with open(os.path.join(td, "config.json"), "w") as f:
                        json.dump({"model_type": "gemma4"}, f)
                a = AutoFeatureExtractor.from_pretrained(td)
                auto[label] = type(a).__module__ + "." + type(a).__name__
        except Exception as e:  # noqa: BLE001
            auto[label] = "error: " + repr(e)[:300]
    meta["auto_feature_extractor"] = auto

    fe = Gemma4AudioFeatureExtractor()
    cfg = {k: (v.tolist() if isinstance(v, np.ndarray) and v.size < 4 else v)
           for k, v in fe.to_dict().items()
           if not (isinstance(v, np.ndarray) and v.size >= 4)}
    meta["extractor_config"] = json.loads(json.dumps(cfg, default=str))
    meta["window_dtype"] = str(fe.window.dtype)
    meta["mel_filters_dtype"] = str(fe.mel_filters.dtype)
    meta["mel_filters_shape"] = list(fe.mel_filters.shape)
    meta["rfft_dtype_for_f32"] = str(np.fft.rfft(np.ones(320, np.float32), n=512).dtype)
    # Our reading of the window and the bank against the extractor's own arrays.
    k = np.arange(320)
    meta["window_vs_formula_max_diff"] = float(np.abs(
        fe.window.astype(np.float64) - (0.5 - 0.5 * np.cos(2 * np.pi * k / 320))).max())
    meta["window_vs_formula_f32_equal"] = bool((fe.window == (0.5 - 0.5 * np.cos(
        2 * np.pi * k / 320)).astype(np.float32)).all())
    bank = np.asarray(fe.mel_filters, np.float64)
    meta["mel_bank_vs_formula_max_diff"] = float(np.abs(bank - mel_bank_f64(np)).max())
    colsum = bank.sum(axis=0)
    meta["mel_bank_zero_filters"] = [int(j) for j in range(128) if colsum[j] == 0]
    meta["mel_bank_colsum_first_last"] = [float(colsum[0]), float(colsum[1]), float(colsum[127])]

    def run(x, **kw):
        # A single-element batch: a bare 1-D array is not handled by 5.17's __call__
        # (it becomes shape (1, n) and fails in _extract_spectrogram; see meta).
        o = fe([x], sampling_rate=RATE, return_tensors="np", **kw)
        return np.asarray(o["input_features"])[0], np.asarray(o["input_features_mask"])[0]

    try:
        o = fe(np.zeros(1000, np.float32), sampling_rate=RATE, return_tensors="np")
        meta["bare_1d_input"] = "ok: shape %s" % (np.asarray(o["input_features"]).shape,)
    except Exception as e:  # noqa: BLE001
        meta["bare_1d_input"] = "error: " + repr(e)[:200]

    lines = []
    speech32 = None
    for name, wav, tile, start, count, stored in CASES:
        ints = np.asarray(case_ints(d, wav, tile, start, count), np.int16)
        # int16 / 32768.0 in float64 is exact, and exact again in float32.
        x = (ints.astype(np.float64) / 32768.0).astype(np.float32)
        n = len(x)
        if name == "speech":
            speech32 = x
        feats, mask = run(x)
        T = feats.shape[0]
        v = int(mask.sum())
        assert v == n_valid(n), (name, v, n_valid(n))
        assert mask[:v].all() and not mask[v:].any(), name + ": mask not a prefix"
        assert (feats[v:] == 0).all(), name + ": invalid frames not zeroed"
        assert feats.dtype == np.float32
        padded = -(-n // 128) * 128
        assert T == max(0, (padded + 160 - 321) // 160 + 1), (name, T)
        case = {"samples": n, "padded_samples": padded, "frames_returned": T,
                "frames_valid": v, "features_dtype": str(feats.dtype)}
        valid = feats[:v]
        if v:
            ref64 = logmel_f64(np, x, fe.window, bank)
            case["max_diff_vs_float64_fft"] = float(np.abs(valid - ref64).max())
            # Where the reference is large relative to the floor the float32 FFT matters less.
            case["value_range"] = [float(valid.min()), float(valid.max())]
            f_np, m_np = run(x, pad_to_multiple_of=None)
            case["max_diff_no_pad_multiple"] = float(np.abs(f_np[:v] - valid).max())
            case["frames_returned_no_pad_multiple"] = int(f_np.shape[0])
            f64, _ = run(x.astype(np.float64))
            case["max_diff_float64_input"] = float(np.abs(f64[:v] - valid).max())
            # In a batch with a longer clip (padding "longest"): the valid frames.
            o = fe([x, np.zeros(n + 1000, np.float32)], sampling_rate=RATE, return_tensors="np")
            case["max_diff_in_batch"] = float(np.abs(
                np.asarray(o["input_features"])[0][:v] - valid).max())
            np.asarray(ref64, "<f4").tofile(os.path.join(outdir, name + "-f64ref.f32"))
        if v == 0:
            pass  # nothing to store: gemmad refuses such a clip
        elif stored == "all":
            np.asarray(valid, "<f4").tofile(os.path.join(outdir, name + ".f32"))
        else:
            idx = sparse_frames(v)
            np.asarray(valid[idx], "<f4").tofile(os.path.join(outdir, name + ".f32"))
            np.asarray(valid.astype(np.float64).sum(axis=1), "<f8").tofile(
                os.path.join(outdir, name + "-sums.f64"))
        lines.append("%s %s %d %d %d %d %d %d %s" % (name, wav, tile, start,
                                                     count if count >= 0 else n, n, v, T, stored))
        meta["cases"][name] = case
        print(name, case, flush=True)

    # Long input in one call: transformers truncates to 480000, so clip 0 is its output.
    tiled = np.asarray(case_ints(d, "speech.wav", LONG_TILE, 0, -1), np.int16)
    xl = (tiled.astype(np.float64) / 32768.0).astype(np.float32)
    fl, ml = run(xl)
    f0, _ = run(xl[:CLIP])
    meta["long_whole_input"] = {"samples": len(xl), "frames_returned": int(fl.shape[0]),
                                "frames_valid": int(ml.sum()),
                                "max_diff_vs_clip0": float(np.abs(fl - f0).max())}
    assert speech32 is not None

    with open(os.path.join(outdir, "cases.txt"), "w") as f:
        f.write("# name wav tile start count samples frames_valid frames_returned stored"
                " (sparse: f %% %d == 0 or f >= frames - %d)\n" % (SPARSE_EVERY, SPARSE_TAIL))
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(outdir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--make-wavs":
        make_wavs(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "--selftest":
        selftest(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "--reference":
        reference(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
