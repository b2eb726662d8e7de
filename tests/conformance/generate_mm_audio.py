#!/usr/bin/env python3
"""Whole prompt with audio and an image: sound file + image file -> transformers' feature
extractor / image processor -> audio and vision towers -> decoder logits, in one
Gemma4ForConditionalGeneration of transformers 5.17.0 (fp32, CPU, TF32 off; text and vision
attention eager, the audio tower sdpa — see reference_attention()).

Weights: the causal text model of ../e2b (audio spans are never bidirectional), the
vision tower of ../mm-vision/mmproj.gguf and the audio tower of ../audio-tower/tiny.gguf,
all rebuilt from their generators' seeds (clamp bounds read from the GGUFs) and checked
byte-equal to the committed files. The sound is a 16 kHz PCM16 WAV, so transformers and
gemmad featurise exactly the same samples (int16 / 32768).

  python3 generate_mm_audio.py --out DIR     (device; torch, transformers, PIL)

Outputs: mixed.txt (spans, greedy ids, file names), mixed-logits.f32 (one row of 512 per
position of prompt + greedy continuation), speech.wav-soft.f32 (the audio soft tokens),
meta.json.
"""
import argparse
import inspect
import json
import os
import struct
import sys
import tempfile
import time
import wave

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gguf_io  # noqa: E402

SOUND = "../audio-features/speech.wav"
IMAGE = "../mm-vision/photo-exif6.jpg"
BUDGET = 70
GREEDY = 12
TOLERANCES = {"logits_max_abs_rel": 1e-3, "soft_tokens_rel_frobenius": 1e-3,
              "min_top2_gap_abs": 1e-3}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def audio_weights(torch):
    import generate_audio_tower as A
    c = A.CASE
    W = A.make_weights(c, torch)
    path = os.path.join(HERE, "audio-tower", "tiny.gguf")
    rd = gguf_io.Reader(path)
    a = "model.audio_tower."
    for il in range(c["layers"]):
        for ln in A.CLIPPED:
            for s in A.CLAMPS:
                _, _, data = rd.tensors["a.blk.%d.%s.%s" % (il, A.GGUF_LINEAR[ln], s)]
                W[a + "layers.%d.%s.%s" % (il, ln, s)] = torch.tensor(struct.unpack("<f", data[:4])[0])
    with tempfile.TemporaryDirectory() as td:
        p = os.path.join(td, "a.gguf")
        A.write_gguf(p, c, W, torch)
        same = open(p, "rb").read() == open(path, "rb").read()
    if not same:
        raise RuntimeError("rebuilt audio GGUF differs from audio-tower/tiny.gguf")
    return c, W


def read_wav(path, np):
    with wave.open(path, "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getframerate() == 16000
        raw = w.readframes(w.getnframes())
    return (np.frombuffer(raw, "<i2").astype(np.float32) / np.float32(32768.0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    import numpy as np
    import torch
    import transformers
    import generate as G
    import generate_audio_tower as A
    import generate_mm_vision as MV
    import generate_vision_tower as V
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_num_threads(4)
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()

    tc, Wt = MV.text_weights("e2b", torch, np)
    vc, Wv = MV.vision_weights(torch, np)
    with tempfile.TemporaryDirectory() as td:  # the vision tower must be mm-vision's
        p = os.path.join(td, "v.gguf")
        V.write_gguf(p, "mm-vision", vc, Wv, np, torch)
        if open(p, "rb").read() != open(os.path.join(HERE, "mm-vision", "mmproj.gguf"), "rb").read():
            raise RuntimeError("rebuilt vision GGUF differs from mm-vision/mmproj.gguf")
    ac, Wa = audio_weights(torch)

    text_cfg = G.hf_config(tc, tc["bidir"], transformers).text_config
    vcfg = dict(hidden_size=vc["hidden"], intermediate_size=vc["inter"],
                num_hidden_layers=vc["layers"], num_attention_heads=vc["heads"],
                num_key_value_heads=vc["heads"], head_dim=vc["head_dim"],
                hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                pooling_kernel_size=V.POOL, patch_size=V.PATCH,
                position_embedding_size=vc["pos_size"], use_clipped_linears=vc["clipped"],
                standardize=vc["standardize"])
    acfg = dict(hidden_size=ac["hidden"], num_hidden_layers=ac["layers"],
                num_attention_heads=ac["heads"], hidden_act="silu",
                subsampling_conv_channels=list(ac["sub_channels"]), conv_kernel_size=A.KERNEL,
                residual_weight=0.5, attention_chunk_size=A.CHUNK,
                attention_context_left=A.CONTEXT_LEFT, attention_context_right=A.CONTEXT_RIGHT,
                attention_logit_cap=A.CAP, attention_invalid_logits_value=-1e9,
                use_clipped_linears=True, rms_norm_eps=1e-6, gradient_clipping=1e10,
                output_proj_dims=ac["out_dims"])
    cfg = transformers.Gemma4Config(
        text_config=text_cfg, vision_config=vcfg, audio_config=acfg,
        boi_token_id=G.BOI, eoi_token_id=G.EOI, image_token_id=G.IMAGE,
        video_token_id=G.VIDEO, boa_token_id=G.BOA, eoa_token_index=G.EOA,
        audio_token_id=G.AUDIO, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = transformers.Gemma4ForConditionalGeneration(cfg).to(torch.float32).eval()

    def reference_attention():
        # Text and vision eager (as every other fixture); the audio tower sdpa: 5.17's
        # eager audio attention differs from sdpa by 31 % relative (it mishandles the
        # float mask), and sdpa is what the independent float64 forward pass of
        # generate_audio_tower.py reproduces (see audio-tower/meta.json).
        G.set_attn_impl(model, "eager")
        model.model.audio_tower.config._attn_implementation = "sdpa"
        return model.model.audio_tower.config._attn_implementation
    audio_impl = reference_attention()
    W = dict(Wt)
    W.update(Wv)
    W.update(Wa)
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    sd = set(model.state_dict().keys())
    missing = sorted(k for k in sd if k not in W and k != "lm_head.weight")
    unexpected = sorted(k for k in W if k not in params)
    if missing or unexpected:
        raise RuntimeError("names differ from HF: missing %s, unexpected %s" % (missing, unexpected))
    with torch.no_grad():
        for k, t in W.items():
            params[k].copy_(t)
        emb = params["model.language_model.embed_tokens.weight"]
        if model.lm_head.weight.data_ptr() != emb.data_ptr():
            model.lm_head.weight.copy_(emb)

    # Image: transformers' loading and processor.
    from transformers.image_utils import load_image
    from transformers.models.gemma4.image_processing_gemma4 import Gemma4ImageProcessor
    img = load_image(os.path.join(HERE, "mm-vision", "photo-exif6.jpg"))
    po = Gemma4ImageProcessor(max_soft_tokens=BUDGET)(images=[img], return_tensors="pt")
    n_img = int(po["num_soft_tokens_per_image"][0])

    # Sound: the feature extractor on the WAV's exact samples (a one-element list: 5.17
    # refuses a bare 1-D array).
    from transformers.models.gemma4.feature_extraction_gemma4 import Gemma4AudioFeatureExtractor
    x = read_wav(os.path.join(HERE, "audio-features", "speech.wav"), np)
    fo = Gemma4AudioFeatureExtractor()([x], return_tensors="pt")
    mask_key = [k for k in fo.keys() if "mask" in k][0]
    feats, fmask = fo["input_features"], fo[mask_key]
    with torch.no_grad():
        ao = model.model.get_audio_features(feats, fmask)
    amask = getattr(ao, "attention_mask", None)
    soft = ao.pooler_output[0]
    if amask is not None:
        soft = soft[amask[0].bool()]
    n_aud = soft.shape[0]
    soft.to(torch.float32).numpy().astype("<f4").tofile(os.path.join(a.out, "speech.wav-soft.f32"))
    log("image tokens", n_img, "audio tokens", n_aud, "frames", int(fmask.sum()), "keys", list(fo.keys()))

    sig = inspect.signature(type(model).forward).parameters
    mask_arg = "input_features_mask" if "input_features_mask" in sig else None
    if mask_arg is None:
        raise RuntimeError("forward() has no input_features_mask: %s" % list(sig))

    def forward(ids, tt, pixels):
        kw = dict(input_ids=torch.tensor([ids]), use_cache=False,
                  pixel_values=pixels, image_position_ids=po["image_position_ids"],
                  input_features=feats)
        kw[mask_arg] = fmask
        kw["mm_token_type_ids" if "mm_token_type_ids" in sig else "token_type_ids"] = torch.tensor([tt])
        with torch.no_grad():
            return model(**kw).logits[0].to(torch.float32)

    for attempt in range(40):
        g = torch.Generator().manual_seed(21000 + attempt)

        def text(n):
            return [int(v) for v in torch.randint(G.TEXT_ID_RANGE[0], G.TEXT_ID_RANGE[1], (n,), generator=g)]
        t1 = [G.BOS] + text(5) + [G.BOA]
        t2 = [G.EOA] + text(3) + [G.BOI]
        t3 = [G.EOI] + text(4)
        ids = t1 + [G.AUDIO] * n_aud + t2 + [G.IMAGE] * n_img + t3
        tt = [0] * len(t1) + [3] * n_aud + [0] * len(t2) + [1] * n_img + [0] * len(t3)
        greedy = []
        for _ in range(GREEDY):
            lg = forward(ids + greedy, tt + [0] * len(greedy), po["pixel_values"])
            greedy.append(int(lg[-1].argmax()))
        full, ftt = ids + greedy, tt + [0] * len(greedy)
        lg = forward(full, ftt, po["pixel_values"])
        top = torch.topk(lg, 2, dim=-1).values
        gap = float((top[:, 0] - top[:, 1]).min())
        if gap >= TOLERANCES["min_top2_gap_abs"] and not any(v in (G.IMAGE, G.AUDIO, G.VIDEO) for v in greedy):
            break
        log("attempt %d: gap %.2e, next text seed" % (attempt, gap))
    else:
        raise RuntimeError("no text seed with a well-separated argmax")
    G.set_attn_impl(model, "sdpa")
    model.model.audio_tower.config._attn_implementation = "sdpa"
    lg_sdpa = forward(full, ftt, po["pixel_values"])
    reference_attention()
    feats_saved = feats
    feats = torch.full_like(feats_saved, float(np.log(1e-3)))   # silence instead of speech
    lg_silent = forward(full, ftt, po["pixel_values"])
    feats = feats_saved

    lg.numpy().astype("<f4").tofile(os.path.join(a.out, "mixed-logits.f32"))
    lines = ["gemmad-mm-vision 1", "model ../e2b/model.gguf", "mmproj ../mm-vision/mmproj.gguf",
             "mmproj_audio ../audio-tower/tiny.gguf", "budget %d" % BUDGET, "n_vocab %d" % G.VOCAB,
             "spans 5", "text %d %s" % (len(t1), " ".join(map(str, t1))),
             "audio %s %d" % (SOUND, n_aud), "text %d %s" % (len(t2), " ".join(map(str, t2))),
             "image %s %d" % (IMAGE, n_img), "text %d %s" % (len(t3), " ".join(map(str, t3))),
             "greedy %d %s" % (len(greedy), " ".join(map(str, greedy))),
             "logits mixed-logits.f32 %d" % lg.shape[0], "end"]
    with open(os.path.join(a.out, "mixed.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    meta = {"transformers": transformers.__version__, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "reference": "Gemma4ForConditionalGeneration(input_ids, pixel_values, image_position_ids, "
                         "input_features, input_features_mask, mm_token_type_ids), fp32, CPU; text and vision "
                         "eager, audio tower sdpa",
            "tolerances": TOLERANCES, "sound": SOUND, "image": IMAGE, "budget": BUDGET,
            "sound_samples": int(x.shape[0]), "feature_frames_returned": int(feats.shape[1]),
            "feature_frames_valid": int(fmask.sum()), "audio_tokens": n_aud, "image_tokens": n_img,
            "positions": len(ids), "text_seed": 21000 + attempt, "top2_gap_min": gap,
            "max_abs_logit": float(lg.abs().max()),
            "attention": {"text": model.model.language_model.config._attn_implementation,
                          "vision": getattr(model.model.vision_tower.config, "_attn_implementation", None),
                          "audio": audio_impl},
            "all_sdpa_vs_reference_maxabs": float((lg_sdpa - lg).abs().max()),
            "silent_audio_maxabs_change": float((lg_silent - lg).abs().max()),
            "greedy": greedy, "seconds": round(time.time() - t0, 1)}
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    log(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
