#!/usr/bin/env python3
"""Full multimodal-prompt conformance: image files -> transformers' image loading and
Gemma4ImageProcessor -> the vision tower -> the decoder's logits, in one model
(Gemma4ForConditionalGeneration of transformers 5.17.0, fp32, eager, CPU, TF32 off).

The weights are the committed fixtures' own: the text models of ../e2b (causal image
spans) and ../large (use_bidirectional_attention = "vision"), rebuilt from generate.py's
seeds, and the vision tower of ../vision-tower/e-clipped.gguf (weights rebuilt from
generate_vision_tower.py's seed, clamp bounds read from the GGUF) with its position tables
extended from 24 to 48 rows (written as mmproj.gguf). Before anything runs, the rebuilt
GGUFs are checked byte-equal to the committed ones, so gemmad's test loads exactly the
text files transformers ran.

  python3 generate_mm_vision.py --make-images DIR   (here; ImageMagick 6 `convert`)
  python3 generate_mm_vision.py --out DIR           (device; torch, transformers, PIL)

Outputs in DIR: <case>-<prompt>.txt (spans, greedy ids, file names), <case>-<prompt>-logits.f32
(one row of 512 per position of prompt + greedy continuation, one forward pass, no cache),
<image>-soft.f32 (each image's soft tokens, budget 70, for diagnosis), meta.json.
"""
import argparse
import inspect
import json
import os
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gguf_io  # noqa: E402

BUDGET = 70
POS_SIZE = 48   # position-table rows of this fixture's tower (grids up to 48 patches a side)
GREEDY = 12
# (file, how it is made) — awkward on purpose: EXIF-rotated JPEG (320x240 stored, 240x320
# shown, downscaled to the budget) and a 16-bit RGBA interlaced PNG of odd size (upscaled).
IMAGES = ["photo-exif6.jpg", "icon-rgba16-adam7.png"]
# fixture case -> committed text case (and its use_bidirectional_attention)
CASES = {"causal": "e2b", "bidir": "large"}
PROMPTS = {
    "one": [("text", 5), ("image", 0), ("text", 6)],
    "two": [("text", 4), ("image", 0), ("text", 3), ("image", 1), ("text", 4)],
}
TOLERANCES = {"logits_max_abs_rel": 1e-3, "soft_tokens_rel_frobenius": 1e-3,
              "min_top2_gap_abs": 1e-3}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------
# images (made here, committed)


def exif_app1(orientation):
    e = "<"
    ifd = struct.pack(e + "H", 1) + struct.pack(e + "HHI", 0x0112, 3, 1) + struct.pack(e + "HH", orientation, 0)
    ifd += struct.pack(e + "I", 0)
    tiff = b"II\x2a\0" + struct.pack(e + "I", 8) + ifd
    payload = b"Exif\0\0" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def make_images(d):
    os.makedirs(d, exist_ok=True)

    def convert(*args):
        return subprocess.run(["/usr/bin/convert", *args], check=True, capture_output=True).stdout

    jpg = convert("-seed", "4", "-size", "320x240", "plasma:fractal", "-blur", "0x1.5",
                  "-quality", "88", "-strip", "jpg:-")
    assert jpg[:2] == b"\xff\xd8"
    with open(os.path.join(d, IMAGES[0]), "wb") as f:
        f.write(jpg[:2] + exif_app1(6) + jpg[2:])
    png = convert("-seed", "9", "-size", "61x47", "plasma:", "-alpha", "set", "-channel", "A",
                  "-fx", "0.2+0.8*i/w", "+channel", "-depth", "16", "-interlace", "PNG",
                  "png64:-")
    with open(os.path.join(d, IMAGES[1]), "wb") as f:
        f.write(png)


# ------------------------------------------------------------------------------------
# weights (rebuilt and checked against the committed GGUFs)


def text_weights(case, torch, np):
    import generate as G
    c = dict(G.CASES[case], name=case)
    with open(os.path.join(HERE, case, "meta.json")) as f:
        seed = json.load(f)["checks"]["seed"]
    W, extra = G.make_weights(c, torch, seed)
    with tempfile.TemporaryDirectory() as td:
        p = os.path.join(td, "m.gguf")
        G.write_gguf(p, c, c["bidir"], W, extra, np, torch)
        same = open(p, "rb").read() == open(os.path.join(HERE, case, "model.gguf"), "rb").read()
    if not same:
        raise RuntimeError(case + ": rebuilt text GGUF differs from the committed model.gguf")
    return c, W


def vision_weights(torch, np):
    import generate_vision_tower as V
    c = V.CASES["e-clipped"]
    W, _ = V.make_weights(c, torch)
    path = os.path.join(HERE, "vision-tower", "e-clipped.gguf")
    rd = gguf_io.Reader(path)
    v = "model.vision_tower."
    for il in range(c["layers"]):
        for ln in V.LINEARS:
            for s in V.CLAMPS:
                ne, ttype, data = rd.tensors["v.blk.%d.%s.%s" % (il, V.GGUF_LINEAR[ln], s)]
                W[v + "encoder.layers.%d.%s.%s" % (il, ln, s)] = torch.tensor(struct.unpack("<f", data[:4])[0])
    with tempfile.TemporaryDirectory() as td:
        p = os.path.join(td, "v.gguf")
        V.write_gguf(p, "e-clipped", c, W, np, torch)
        same = open(p, "rb").read() == open(path, "rb").read()
    if not same:
        raise RuntimeError("rebuilt vision GGUF differs from vision-tower/e-clipped.gguf")
    # e-clipped's position tables have 24 rows, fewer than a budget-70 grid's 27 columns:
    # keep its 24 rows and add seeded ones up to POS_SIZE (written as mmproj.gguf).
    g = torch.Generator().manual_seed(7150)
    key = v + "patch_embedder.position_embedding_table"
    old = W[key]
    extra = (torch.randn((2, POS_SIZE - old.shape[1], old.shape[2]), generator=g) * 0.4)
    W[key] = torch.cat([old, extra.to(torch.bfloat16).to(torch.float32)], 1)
    return dict(c, pos_size=POS_SIZE), W


def build_model(tc, bidir, vc, W, torch, transformers):
    import generate as G
    import generate_vision_tower as V
    text_cfg = G.hf_config(tc, bidir, transformers).text_config
    vcfg = dict(hidden_size=vc["hidden"], intermediate_size=vc["inter"],
                num_hidden_layers=vc["layers"], num_attention_heads=vc["heads"],
                num_key_value_heads=vc["heads"], head_dim=vc["head_dim"],
                hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                pooling_kernel_size=V.POOL, patch_size=V.PATCH,
                position_embedding_size=vc["pos_size"], use_clipped_linears=vc["clipped"],
                standardize=vc["standardize"])
    cfg = transformers.Gemma4Config(
        text_config=text_cfg, vision_config=vcfg, audio_config=None,
        boi_token_id=G.BOI, eoi_token_id=G.EOI, image_token_id=G.IMAGE,
        video_token_id=G.VIDEO, boa_token_id=G.BOA, eoa_token_index=G.EOA,
        audio_token_id=G.AUDIO, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = transformers.Gemma4ForConditionalGeneration(cfg).to(torch.float32).eval()
    G.set_attn_impl(model, "eager")
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    sd = set(model.state_dict().keys())
    missing = sorted(k for k in sd if k not in W and k != "lm_head.weight")
    unexpected = sorted(k for k in W if k not in params)
    if missing or unexpected:
        raise RuntimeError("names differ from HF: missing %s, unexpected %s" % (missing, unexpected))
    with torch.no_grad():
        for k, t in W.items():
            if tuple(params[k].shape) != tuple(t.shape):
                raise RuntimeError("%s: HF %s, ours %s" % (k, tuple(params[k].shape), tuple(t.shape)))
            params[k].copy_(t)
        emb = params["model.language_model.embed_tokens.weight"]
        if model.lm_head.weight.data_ptr() != emb.data_ptr():
            model.lm_head.weight.copy_(emb)
    return model


# ------------------------------------------------------------------------------------


def load_images():
    from transformers.image_utils import load_image  # what transformers does with a path
    return [load_image(os.path.join(HERE, "mm-vision", n)) for n in IMAGES]


def process(imgs, torch):
    from transformers.models.gemma4.image_processing_gemma4 import Gemma4ImageProcessor
    o = Gemma4ImageProcessor(max_soft_tokens=BUDGET)(images=imgs, return_tensors="pt")
    n = [int(x) for x in o["num_soft_tokens_per_image"]]
    return o["pixel_values"], o["image_position_ids"], n


def flatten(spans, n_tok, text_ids):
    import generate as G
    ids, tt = [], []
    ti = 0
    for kind, v in spans:
        if kind == "text":
            ids += text_ids[ti]
            tt += [0] * len(text_ids[ti])
            ti += 1
        else:
            ids += [G.IMAGE] * n_tok[v]
            tt += [1] * n_tok[v]
    return ids, tt


def forward(model, ids, tt, pv, pp, torch):
    sig = inspect.signature(type(model).forward).parameters
    kw = dict(input_ids=torch.tensor([ids], dtype=torch.long), use_cache=False)
    kw["mm_token_type_ids" if "mm_token_type_ids" in sig else "token_type_ids"] = torch.tensor([tt], dtype=torch.long)
    if pv is not None:
        kw["pixel_values"] = pv
        if "image_position_ids" not in sig:
            raise RuntimeError("forward() has no image_position_ids: %s" % list(sig))
        kw["image_position_ids"] = pp
    with torch.no_grad():
        return model(**kw).logits[0].to(torch.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-images")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.make_images:
        make_images(a.make_images)
        return
    if not a.out:
        sys.exit(__doc__)
    import numpy as np
    import torch
    import transformers
    import generate as G
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(4)
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()

    vc, Wv = vision_weights(torch, np)
    import generate_vision_tower as V
    V.write_gguf(os.path.join(a.out, "mmproj.gguf"), "mm-vision", vc, Wv, np, torch)
    imgs = load_images()
    meta = {"transformers": transformers.__version__, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "reference": "Gemma4ForConditionalGeneration(input_ids, pixel_values, "
                         "image_position_ids, mm_token_type_ids), fp32, eager, CPU",
            "budget": BUDGET, "tolerances": TOLERANCES, "images": {}, "cases": {}}
    pv_all, pp_all, n_all = process(imgs, torch)
    for i, name in enumerate(IMAGES):
        pv1, pp1, n1 = process([imgs[i]], torch)
        real = (pp1[0, :, 0] >= 0)
        gw = int(pp1[0, real, 0].max()) + 1
        gh = int(pp1[0, real, 1].max()) + 1
        meta["images"][name] = {"size_after_load": list(imgs[i].size), "grid": [gw, gh],
                                "n_soft_tokens": n1[0], "padded_rows": int(pp1.shape[1]),
                                "same_in_batch": bool(n_all[i] == n1[0])}
    log("images:", meta["images"])

    text_seed = 11
    for fcase, tcase in CASES.items():
        tc, Wt = text_weights(tcase, torch, np)
        W = dict(Wt)
        W.update(Wv)
        model = build_model(tc, tc["bidir"], vc, W, torch, transformers)
        info = {"text_case": tcase, "use_bidirectional_attention": tc["bidir"],
                "model": "../%s/model.gguf" % tcase, "mmproj": "mmproj.gguf",
                "prompts": {}}
        if fcase == "causal":
            # The soft tokens of each image (identical for both text cases: same tower).
            with torch.no_grad():
                for i, name in enumerate(IMAGES):
                    pv1, pp1, _ = process([imgs[i]], torch)
                    feats = model.model.get_image_features(pixel_values=pv1, image_position_ids=pp1)
                    rows = torch.cat([t.to(torch.float32) for t in feats.pooler_output], 0)
                    rows.numpy().astype("<f4").tofile(os.path.join(a.out, name + "-soft.f32"))
                    meta["images"][name]["soft_rms"] = float(rows.pow(2).mean().sqrt())
        for pname, spans in PROMPTS.items():
            used = sorted({v for k, v in spans if k == "image"})
            pv, pp, n_tok = process([imgs[i] for i in used], torch)
            ntok = {u: n_tok[j] for j, u in enumerate(used)}
            for attempt in range(40):
                g = torch.Generator().manual_seed(text_seed * 1000 + attempt)
                text_ids = []
                n_text = [v for k, v in spans if k == "text"]
                for j, n in enumerate(n_text):
                    t = [int(x) for x in torch.randint(G.TEXT_ID_RANGE[0], G.TEXT_ID_RANGE[1], (n,), generator=g)]
                    if j == 0:
                        t = [G.BOS] + t
                    # image markers around every image
                    if j + 1 < len(n_text):
                        t = t + [G.BOI]
                    if j > 0:
                        t = [G.EOI] + t
                    text_ids.append(t)
                ids, tt = flatten(spans, ntok, text_ids)
                greedy = []
                for _ in range(GREEDY):
                    lg = forward(model, ids + greedy, tt + [0] * len(greedy), pv, pp, torch)
                    greedy.append(int(lg[-1].argmax()))
                full = ids + greedy
                ftt = tt + [0] * len(greedy)
                lg = forward(model, full, ftt, pv, pp, torch)
                top = torch.topk(lg, 2, dim=-1).values
                gap = float((top[:, 0] - top[:, 1]).min())
                bad_ids = any(x in (G.IMAGE, G.AUDIO, G.VIDEO) for x in greedy)
                if gap >= TOLERANCES["min_top2_gap_abs"] and not bad_ids:
                    break
                log("  %s/%s attempt %d: gap %.2e placeholder %s, next text seed" % (fcase, pname, attempt, gap, bad_ids))
            else:
                raise RuntimeError("%s/%s: no text seed with a well-separated argmax" % (fcase, pname))
            # Checks: sdpa agrees; the images matter (zeroed pixels change the logits).
            G.set_attn_impl(model, "sdpa")
            lg_sdpa = forward(model, full, ftt, pv, pp, torch)
            G.set_attn_impl(model, "eager")
            lg_blank = forward(model, full, ftt, torch.zeros_like(pv), pp, torch)
            stem = "%s-%s" % (fcase, pname)
            lg.numpy().astype("<f4").tofile(os.path.join(a.out, stem + "-logits.f32"))
            lines = ["gemmad-mm-vision 1", "model %s" % info["model"], "mmproj %s" % info["mmproj"],
                     "budget %d" % BUDGET, "n_vocab %d" % G.VOCAB, "spans %d" % len(spans)]
            ti = 0
            for kind, v in spans:
                if kind == "text":
                    lines.append("text %d %s" % (len(text_ids[ti]), " ".join(map(str, text_ids[ti]))))
                    ti += 1
                else:
                    lines.append("image %s %d" % (IMAGES[v], ntok[v]))
            lines.append("greedy %d %s" % (len(greedy), " ".join(map(str, greedy))))
            lines.append("logits %s %d" % (stem + "-logits.f32", lg.shape[0]))
            lines.append("end")
            with open(os.path.join(a.out, stem + ".txt"), "w") as f:
                f.write("\n".join(lines) + "\n")
            info["prompts"][pname] = {
                "positions": len(ids), "image_tokens": [ntok[v] for k, v in spans if k == "image"],
                "text_seed": text_seed * 1000 + attempt, "top2_gap_min": gap,
                "max_abs_logit": float(lg.abs().max()),
                "sdpa_vs_eager_maxabs": float((lg_sdpa - lg).abs().max()),
                "blank_image_maxabs_change": float((lg_blank - lg).abs().max()),
                "greedy": greedy}
            log(stem, info["prompts"][pname])
        meta["cases"][fcase] = info
    meta["seconds"] = round(time.time() - t0, 1)
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    log("done in %.1f s" % meta["seconds"])


if __name__ == "__main__":
    main()
