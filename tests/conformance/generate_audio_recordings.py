#!/usr/bin/env python3
"""Log-mel conformance on real recordings at 8, 16, 44.1 and 48 kHz, mono and stereo,
WAV / FLAC / Ogg Vorbis / Ogg Opus / MP3 (tests/data/audio/, made by make-audio.sh):
transformers 5.17.0's Gemma4AudioFeatureExtractor on exactly the samples gemmad feeds its
own front end (decode → downmix → libsoxr HQ to 16 kHz). The resampler itself is checked
separately against an independent reference (generate_audio_resample.py).

  1. here:   for each recording, build/tests/audio-dump tests/data/audio/FILE NAME.pcm16k.f32
             and a line "NAME FILE RATE CHANNELS FORMAT… SAMPLES" in DIR/cases.txt
             (the .pcm16k.f32 files are inputs for step 2 only, not committed)
  2. device: python3 generate_audio_recordings.py DIR OUT

OUT gets, per recording: NAME-sparse.f32 (the valid frames f with f % 8 == 0, 128 f32
each), NAME-sums.f64 (each valid frame's sum), and cases.txt: name, file, rate,
channels, samples, valid frames, Σx and Σx² of the samples (float64) so the C test knows
it featurises the same samples.
"""
import json
import os
import sys

SPARSE = 8


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    import numpy as np
    import transformers
    from transformers.models.gemma4.feature_extraction_gemma4 import Gemma4AudioFeatureExtractor
    os.makedirs(out, exist_ok=True)
    fe = Gemma4AudioFeatureExtractor()
    lines = ["# name file rate channels samples frames sum sumsq "
             "(sparse: valid frames f with f %% %d == 0)" % SPARSE]
    meta = {"transformers": transformers.__version__, "numpy": np.__version__,
            "extractor": fe.to_dict(), "cases": {}}
    for line in open(os.path.join(src, "cases.txt")):
        t = line.split()
        if not t or t[0].startswith("#"):
            continue
        name, fname, rate, ch, n = t[0], t[1], int(t[2]), int(t[3]), int(t[-1])
        x = np.fromfile(os.path.join(src, name + ".pcm16k.f32"), "<f4")
        assert x.shape[0] == n, name
        o = fe([x], return_tensors="np")
        feats = np.asarray(o["input_features"][0], np.float32)
        mask = np.asarray(o["input_features_mask"][0]).astype(bool)
        v = int(mask.sum())
        assert mask[:v].all() and not mask[v:].any(), name + ": mask not a prefix"
        valid = feats[:v]
        valid[::SPARSE].astype("<f4").tofile(os.path.join(out, name + "-sparse.f32"))
        valid.astype(np.float64).sum(1).astype("<f8").tofile(os.path.join(out, name + "-sums.f64"))
        s1 = float(x.astype(np.float64).sum())
        s2 = float((x.astype(np.float64) ** 2).sum())
        lines.append("%s %s %d %d %d %d %.17g %.17g" % (name, fname, rate, ch, n, v, s1, s2))
        meta["cases"][name] = {"file": fname, "rate": rate, "channels": ch, "samples": n,
                               "frames_returned": int(feats.shape[0]), "frames_valid": v,
                               "min": float(valid.min()), "max": float(valid.max())}
        print(name, meta["cases"][name], flush=True)
    with open(os.path.join(out, "cases.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, default=str)


if __name__ == "__main__":
    main()
