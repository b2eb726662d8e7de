#!/usr/bin/env python3
"""generate_vision_tower.py — reference fixtures for gemmad's Gemma 4 vision-tower test.

Builds tiny synthetic Gemma 4 vision towers (seeded weights at sensible scales, rounded to
bf16-representable values), runs two small images through Hugging Face transformers
(Gemma4Model.get_image_features: vision tower + embed_vision, fp32, eager attention, CPU,
TF32 off; sdpa checked to agree) and writes into OUT:

  inputs.bin        the images' real patches (float32, [n_patches, 768], processor order:
                    patches row-major over the grid, each patch (row, col, channel)) then
                    their positions (int32 pairs (x, y)); offsets in meta.json
  <case>.gguf       the mmproj GGUF gemmad loads (general.architecture = clip, projector
                    gemma4v), llama.cpp converter names/keys/layouts, all tensors F32
  <case>.bin        float32 LE reference arrays of that case (soft tokens and intermediate
                    checkpoints, both images concatenated); offsets in meta.json
  meta.json         configs, images, array offsets/shapes, tolerances and the self-checks

Needs torch, numpy, transformers (5.17.0 is the reference). No network access.
Usage: python3 generate_vision_tower.py --out DIR
       python3 generate_vision_tower.py --selftest   (torch-free parts only)
"""

import argparse
import json
import math
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gguf_io  # noqa: E402
from generate_vision import pixel  # noqa: E402  (the fixtures' deterministic RGB content)

PATCH = 16
POOL = 3
TEXT_HIDDEN = 64

# Images whose sides are multiples of 48 (patch 16 x pooling 3): the patches are the
# pixels themselves, no resampling (preprocessing has its own fixture in vision/).
IMAGES = [
    ("wide-144x96", 144, 96),    # grid 9x6  -> 54 patches, 3x2 = 6 soft tokens
    ("tall-96x192", 96, 192),    # grid 6x12 -> 72 patches, 2x4 = 8 soft tokens
]
# Batch padding (as the processor pads to its budget): 90 = 9 * 10 rows per image.
PADDED = 90

TOLERANCES = {
    # CONFORMANCE.md: vision soft tokens <= 1e-3 relative (Frobenius), fp32 weights.
    "soft_tokens_rel_frobenius": 1e-3,
    # Same bound suggested for every intermediate checkpoint.
    "checkpoint_rel_frobenius": 1e-3,
}

CASES = {
    # E2B/E4B structure in miniature: clipped linears (finite bounds that bind on
    # 1-3 % of the values), no standardisation; head_dim 32 -> 16 dims per RoPE axis.
    "e-clipped": dict(hidden=64, inter=128, layers=2, heads=2, head_dim=32, pos_size=24,
                      clipped=True, standardize=False, seed=7100),
    # 31B/26B structure: no clipping, standardize (std_bias/std_scale); head_dim 36 is
    # not a power of two (18 dims per axis, 9 frequencies) like the real 72.
    "large-std": dict(hidden=72, inter=96, layers=2, heads=2, head_dim=36, pos_size=24,
                      clipped=False, standardize=True, seed=7200),
}

LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
# HF module -> llama.cpp name (gguf-format.md §2.2; conversion/gemma.py
# Gemma4VisionAudioModel + gguf-py TensorNameMap for MMPROJ).
GGUF_LINEAR = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_out",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down"}
GGUF_LAYER = {"input_layernorm.weight": "ln1.weight",
              "post_attention_layernorm.weight": "attn_post_norm.weight",
              "pre_feedforward_layernorm.weight": "ln2.weight",
              "post_feedforward_layernorm.weight": "ffn_post_norm.weight",
              "self_attn.q_norm.weight": "attn_q_norm.weight",
              "self_attn.k_norm.weight": "attn_k_norm.weight"}
CLAMPS = ["input_min", "input_max", "output_min", "output_max"]


def log(*a):
    print(*a, flush=True)


# ------------------------------------------------------------------------------------
# torch-free parts: patches, positions, packing


def patchify(w, h):
    """Real patches of pixel() at w x h as uint8 rows of 768 values in processor order
    (patches row-major over the grid; inside a patch row, column, channel) and the
    positions (x = column, y = row)."""
    gw, gh = w // PATCH, h // PATCH
    rows, pos = [], []
    for py in range(gh):
        for px in range(gw):
            v = bytearray()
            for r in range(PATCH):
                for c in range(PATCH):
                    x, y = px * PATCH + c, py * PATCH + r
                    v.extend(pixel(x, y, ch) for ch in range(3))
            rows.append(bytes(v))
            pos.append((px, py))
    return rows, pos


class Pack:
    """Concatenates little-endian arrays into one blob and records where each lies."""

    def __init__(self):
        self.blob = bytearray()
        self.index = {}

    def add(self, name, dtype, shape, data):
        n = 1
        for d in shape:
            n *= int(d)
        size = {"f32": 4, "i32": 4}[dtype]
        if len(data) != n * size:
            raise ValueError("%s: %d bytes for shape %s" % (name, len(data), shape))
        if name in self.index:
            raise ValueError("duplicate array " + name)
        self.index[name] = {"offset": len(self.blob), "dtype": dtype,
                            "shape": [int(d) for d in shape]}
        self.blob += data

    def write(self, path):
        with open(path, "wb") as f:
            f.write(self.blob)


def image_table():
    """Per image: patches (uint8 rows), positions, grid, counts and row ranges."""
    out, p0, t0 = [], 0, 0
    for name, w, h in IMAGES:
        assert w % (PATCH * POOL) == 0 and h % (PATCH * POOL) == 0
        rows, pos = patchify(w, h)
        gw, gh = w // PATCH, h // PATCH
        nt = (gw // POOL) * (gh // POOL)
        out.append(dict(name=name, width=w, height=h, grid=[gw, gh], n_patches=len(rows),
                        n_tokens=nt, patch_rows=[p0, p0 + len(rows)],
                        token_rows=[t0, t0 + nt], rows=rows, pos=pos))
        p0 += len(rows)
        t0 += nt
    assert max(im["n_patches"] for im in out) <= PADDED and PADDED % (POOL * POOL) == 0
    return out


def selftest():
    ims = image_table()
    for im in ims:
        gw, gh = im["grid"]
        assert len(im["rows"]) == gw * gh and all(len(r) == 3 * PATCH * PATCH for r in im["rows"])
        # patch (px, py), in-patch (r, c, ch) must be pixel(px*16 + c, py*16 + r, ch)
        px, py, r, c, ch = 2, 1, 5, 11, 2
        k = py * gw + px
        assert im["rows"][k][(r * PATCH + c) * 3 + ch] == pixel(px * PATCH + c, py * PATCH + r, ch)
        assert im["pos"][k] == (px, py)
    p = Pack()
    p.add("a", "f32", [2, 3], struct.pack("<6f", *range(6)))
    p.add("b", "i32", [2], struct.pack("<2i", -1, 7))
    assert p.index["b"]["offset"] == 24 and len(p.blob) == 32
    log("selftest ok:", [(im["name"], im["grid"], im["n_tokens"]) for im in ims])


# ------------------------------------------------------------------------------------
# weights (HF names), seeded, rounded to bf16


def make_weights(c, torch):
    g = torch.Generator().manual_seed(c["seed"])
    H, I, hd = c["hidden"], c["inter"], c["head_dim"]
    nq = c["heads"]

    from generate import weight_makers  # the text fixtures' seeded bf16 tensors
    bf, normal, uniform, linear = weight_makers(torch, g)

    W = {}
    v = "model.vision_tower."
    W[v + "patch_embedder.input_proj.weight"] = linear(H, 3 * PATCH * PATCH)
    # Comparable to the patch projection (std ~0.5), so position errors show.
    W[v + "patch_embedder.position_embedding_table"] = normal((2, c["pos_size"], H), 0.4)
    for il in range(c["layers"]):
        p = v + "encoder.layers.%d." % il
        for n in ("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                  "post_feedforward_layernorm"):
            W[p + n + ".weight"] = uniform((H,), 0.6, 1.4)
        W[p + "self_attn.q_proj.linear.weight"] = linear(nq * hd, H)
        W[p + "self_attn.k_proj.linear.weight"] = linear(nq * hd, H)
        W[p + "self_attn.v_proj.linear.weight"] = linear(nq * hd, H)
        W[p + "self_attn.o_proj.linear.weight"] = linear(H, nq * hd)
        # Scale 1.0 attention: keep the score spread near 2 (as generate.py).
        qs = math.sqrt(16.0 / hd)
        W[p + "self_attn.q_norm.weight"] = uniform((hd,), 0.3 * qs, 0.8 * qs)
        W[p + "self_attn.k_norm.weight"] = uniform((hd,), 0.7, 1.3)
        W[p + "mlp.gate_proj.linear.weight"] = linear(I, H)
        W[p + "mlp.up_proj.linear.weight"] = linear(I, H)
        W[p + "mlp.down_proj.linear.weight"] = linear(H, I)
    W["model.embed_vision.embedding_projection.weight"] = linear(TEXT_HIDDEN, H)
    return W, g


# ------------------------------------------------------------------------------------
# HF model


def build_model(c, W, torch, transformers):
    import generate  # the text fixtures' config builder (tiny text model, unused here)
    tc = dict(generate.CASES["large"])
    assert tc["hidden"] == TEXT_HIDDEN
    text_cfg = generate.hf_config(tc, None, transformers).text_config
    vc = dict(hidden_size=c["hidden"], intermediate_size=c["inter"],
              num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
              num_key_value_heads=c["heads"], head_dim=c["head_dim"],
              hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
              pooling_kernel_size=POOL, patch_size=PATCH,
              position_embedding_size=c["pos_size"], use_clipped_linears=c["clipped"],
              standardize=c["standardize"])
    cfg = transformers.Gemma4Config(
        text_config=text_cfg, vision_config=vc, audio_config=None,
        boi_token_id=generate.BOI, eoi_token_id=generate.EOI, image_token_id=generate.IMAGE,
        video_token_id=generate.VIDEO, boa_token_id=generate.BOA,
        eoa_token_index=generate.EOA, audio_token_id=generate.AUDIO)
    torch.manual_seed(0)
    model = transformers.Gemma4ForConditionalGeneration(cfg).to(torch.float32).eval()
    generate.set_attn_impl(model, "eager")
    sd = {k: t for k, t in model.state_dict().items()
          if k.startswith(("model.vision_tower.", "model.embed_vision."))}
    missing = sorted(k for k in sd if k not in W)
    unexpected = sorted(k for k in W if k not in sd)
    if missing or unexpected:
        raise RuntimeError("names differ from HF: missing %s, unexpected %s" % (missing, unexpected))
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    with torch.no_grad():
        for k, v in W.items():
            t = params[k]
            if tuple(t.shape) != tuple(v.shape):
                raise RuntimeError("%s: HF shape %s, ours %s" % (k, tuple(t.shape), tuple(v.shape)))
            t.copy_(v)
    return model


def vision_attn_impl(model):
    vt = model.model.vision_tower
    return getattr(vt.config, "_attn_implementation", None)


def batch_inputs(ims, np, torch):
    """Both images padded to PADDED rows (zero pixels, position (-1, -1)), as the
    processor pads every image to its budget."""
    pv = np.zeros((len(ims), PADDED, 3 * PATCH * PATCH), np.float32)
    pp = np.full((len(ims), PADDED, 2), -1, np.int64)
    for b, im in enumerate(ims):
        pv[b, :im["n_patches"]] = im["f32"]
        pp[b, :im["n_patches"]] = np.array(im["pos"], np.int64)
    return torch.from_numpy(pv), torch.from_numpy(pp)


def run_hf(model, pv, pp, torch, capture=False):
    """Gemma4Model.get_image_features; with capture, also the intermediate checkpoints."""
    inner = model.model
    vt = inner.vision_tower
    cap, hooks = {}, []
    if capture:
        def save(key, fn):
            def hook(mod, args, out):
                cap[key] = fn(out).detach().clone()
            return hook
        hooks.append(vt.patch_embedder.register_forward_hook(save("patch_embd", lambda o: o)))
        hooks.append(vt.encoder.layers[0].register_forward_hook(
            save("layer0", lambda o: o[0] if isinstance(o, tuple) else o)))
        hooks.append(vt.encoder.register_forward_hook(save("encoder_out", lambda o: o.last_hidden_state)))
        hooks.append(vt.pooler.register_forward_hook(save("pooled", lambda o: o[0])))
        hooks.append(vt.pooler.register_forward_hook(save("pool_mask", lambda o: o[1])))
    try:
        with torch.no_grad():
            out = inner.get_image_features(pixel_values=pv, image_position_ids=pp)
    finally:
        for h in hooks:
            h.remove()
    soft = [t.to(torch.float32) for t in out.pooler_output]
    return soft, out.last_hidden_state.to(torch.float32), cap


def rel_frob(a, b):
    a = a.double()
    b = b.double()
    return float((a - b).norm() / max(float(b.norm()), 1e-30))


# ------------------------------------------------------------------------------------
# clip bounds: from the unclipped activations' quantiles, so that they bind


def clippable_modules(model):
    vt = model.model.vision_tower
    out = []
    for il, layer in enumerate(vt.encoder.layers):
        for ln in LINEARS:
            mod = layer.get_submodule(ln)
            out.append(("model.vision_tower.encoder.layers.%d.%s" % (il, ln), mod))
    return out


def record_linear_io(model, pv, pp, torch):
    """Inputs and outputs of every clippable linear (real patches only)."""
    real = (pp != -1).all(dim=-1)
    io, hooks = {}, []
    for name, mod in clippable_modules(model):
        def hook(m, args, out, name=name):
            io[name] = (args[0][real].detach().clone(), out[real].detach().clone())
        hooks.append(mod.register_forward_hook(hook))
    try:
        run_hf(model, pv, pp, torch)
    finally:
        for h in hooks:
            h.remove()
    return io


def choose_clips(io, torch):
    """Bounds at the 1.5 % / 98.5 % quantiles (inputs) and 2 % / 98 % (outputs) of the
    unclipped run, rounded to bf16 (the checkpoints are bf16)."""
    B = {}
    for name, (x, y) in io.items():
        def q(t, f):
            v = torch.quantile(t.flatten().double(), f).float()
            return float(v.to(torch.bfloat16).to(torch.float32))
        B[name] = {"input_min": q(x, 0.015), "input_max": q(x, 0.985),
                   "output_min": q(y, 0.02), "output_max": q(y, 0.98)}
    return B


def clip_fractions(model, pv, pp, torch):
    """Fraction of real-patch values each clamp changes in the final model."""
    real = (pp != -1).all(dim=-1)
    fr, hooks = {}, []
    for name, mod in clippable_modules(model):
        def hook(m, args, out, name=name):
            x = args[0][real]
            y = m.linear(torch.clamp(x, m.input_min, m.input_max))
            fin = float(((x < m.input_min) | (x > m.input_max)).float().mean())
            fout = float(((y < m.output_min) | (y > m.output_max)).float().mean())
            fr[name] = [round(fin, 5), round(fout, 5)]
        hooks.append(mod.register_forward_hook(hook))
    try:
        run_hf(model, pv, pp, torch)
    finally:
        for h in hooks:
            h.remove()
    return fr


# ------------------------------------------------------------------------------------
# GGUF (llama.cpp converter layout)


def f32_bytes(t, np):
    return t.detach().cpu().contiguous().numpy().astype("<f4").tobytes()


def write_gguf(path, name, c, W, np, torch):
    H = c["hidden"]
    w = gguf_io.Writer()
    w.string("general.architecture", "clip")
    w.string("general.type", "mmproj")
    w.string("general.name", "conformance-vision-" + name)
    w.u32("general.file_type", 0)  # ALL_F32
    w.boolean("clip.has_vision_encoder", True)
    w.string("clip.vision.projector_type", "gemma4v")
    w.u32("clip.vision.projection_dim", TEXT_HIDDEN)
    w.u32("clip.vision.image_size", 224)  # the converter's dummy
    w.u32("clip.vision.patch_size", PATCH)
    w.u32("clip.vision.embedding_length", H)
    w.u32("clip.vision.feed_forward_length", c["inter"])
    w.u32("clip.vision.block_count", c["layers"])
    w.u32("clip.vision.attention.head_count", c["heads"])
    w.f32("clip.vision.attention.layer_norm_epsilon", 1e-6)
    w.array("clip.vision.image_mean", gguf_io.F32, [0.0, 0.0, 0.0])
    w.array("clip.vision.image_std", gguf_io.F32, [1.0, 1.0, 1.0])
    F = gguf_io.T_F32
    v = "model.vision_tower."
    # input_proj [H, 16*16*3] (HWC patches) -> conv kernel [H, 3, 16, 16] (CHW), ggml
    # {16, 16, 3, H}, exactly as conversion/gemma.py reshapes + permutes it.
    pe = W[v + "patch_embedder.input_proj.weight"].reshape(H, PATCH, PATCH, 3).permute(0, 3, 1, 2)
    w.tensor("v.patch_embd.weight", [PATCH, PATCH, 3, H], F, f32_bytes(pe, np))
    w.tensor("v.position_embd.weight", [H, c["pos_size"], 2], F,
             f32_bytes(W[v + "patch_embedder.position_embedding_table"], np))
    for il in range(c["layers"]):
        p = v + "encoder.layers.%d." % il
        b = "v.blk.%d." % il
        for hf, gg in GGUF_LAYER.items():
            t = W[p + hf]
            w.tensor(b + gg, [t.shape[0]], F, f32_bytes(t, np))
        for ln in LINEARS:
            t = W[p + ln + ".linear.weight"]
            w.tensor(b + GGUF_LINEAR[ln] + ".weight", [t.shape[1], t.shape[0]], F, f32_bytes(t, np))
            if c["clipped"]:
                # 0-dim buffers unsqueezed to {1}; clip.cpp finds them by replacing
                # ".weight" with ".input_min" etc. in the weight's name.
                for s in CLAMPS:
                    w.tensor(b + GGUF_LINEAR[ln] + "." + s, [1], F, f32_bytes(W[p + ln + "." + s].reshape(1), np))
    if c["standardize"]:
        w.tensor("v.std_bias", [H], F, f32_bytes(W[v + "std_bias"], np))
        w.tensor("v.std_scale", [H], F, f32_bytes(W[v + "std_scale"], np))
    t = W["model.embed_vision.embedding_projection.weight"]
    w.tensor("mm.input_projection.weight", [H, TEXT_HIDDEN], F, f32_bytes(t, np))
    return w.write(path)


# ------------------------------------------------------------------------------------
# independent forward pass from the GGUF alone (gemma4-model.md §4 / llama.cpp graph)


def gguf_forward(path, im, torch):
    rd = gguf_io.Reader(path)
    kv = rd.kv
    assert kv["general.architecture"] == "clip" and kv["clip.vision.projector_type"] == "gemma4v"
    H = kv["clip.vision.embedding_length"]
    nh = kv["clip.vision.attention.head_count"]
    hd = H // nh
    P = kv["clip.vision.patch_size"]
    eps = kv["clip.vision.attention.layer_norm_epsilon"]

    def T(name):
        ne, _, _ = rd.tensors[name]
        return torch.tensor(rd.floats(name), dtype=torch.float64).reshape(list(reversed(ne)))

    def rms(x, w=None):
        y = x * (x.pow(2).mean(-1, keepdim=True) + eps) ** -0.5
        return y * w if w is not None else y

    def lin(base, x):
        w = T(base + ".weight")
        if base + ".input_min" in rd.tensors:
            x = x.clamp(float(T(base + ".input_min")[0]), float(T(base + ".input_max")[0]))
            y = x @ w.T
            return y.clamp(float(T(base + ".output_min")[0]), float(T(base + ".output_max")[0]))
        return x @ w.T

    pos = torch.tensor(im["pos"], dtype=torch.long)
    n = pos.shape[0]
    px = torch.tensor(im["f32"], dtype=torch.float64) * 2.0 - 1.0        # [n, 768] HWC
    px = px.reshape(n, P, P, 3).permute(0, 3, 1, 2).reshape(n, -1)        # CHW = conv order
    h = px @ T("v.patch_embd.weight").reshape(H, -1).T
    tbl = T("v.position_embd.weight")                                       # [2, S, H]
    h = h + tbl[0][pos[:, 0]] + tbl[1][pos[:, 1]]
    patch_embd = h.clone()

    def rope2d(x):  # x [n, nh, hd]: dims [0, hd/2) by column x, [hd/2, hd) by row y
        half = hd // 2
        nf = half // 2
        inv = 100.0 ** (-torch.arange(nf, dtype=torch.float64) * 2.0 / half)
        parts = []
        for a in range(2):
            ang = pos[:, a].double()[:, None] * inv[None, :]
            cs, sn = ang.cos()[:, None, :], ang.sin()[:, None, :]
            s = x[..., a * half:(a + 1) * half]
            x1, x2 = s[..., :nf], s[..., nf:]
            parts += [x1 * cs - x2 * sn, x2 * cs + x1 * sn]
        return torch.cat(parts, dim=-1)

    layer0 = None
    for il in range(kv["clip.vision.block_count"]):
        b = "v.blk.%d." % il
        a = rms(h, T(b + "ln1.weight"))
        q = rope2d(rms(lin(b + "attn_q", a).reshape(n, nh, hd), T(b + "attn_q_norm.weight")))
        k = rope2d(rms(lin(b + "attn_k", a).reshape(n, nh, hd), T(b + "attn_k_norm.weight")))
        v = rms(lin(b + "attn_v", a).reshape(n, nh, hd))
        s = torch.einsum("qhd,khd->hqk", q, k)  # scale 1.0
        o = torch.einsum("hqk,khd->qhd", s.softmax(-1), v).reshape(n, H)
        h = h + rms(lin(b + "attn_out", o), T(b + "attn_post_norm.weight"))
        f = rms(h, T(b + "ln2.weight"))
        f = lin(b + "ffn_down", torch.nn.functional.gelu(lin(b + "ffn_gate", f), approximate="tanh") * lin(b + "ffn_up", f))
        h = h + rms(f, T(b + "ffn_post_norm.weight"))
        if il == 0:
            layer0 = h.clone()
    gw, gh = im["grid"]
    cell = pos[:, 0] // POOL + (gw // POOL) * (pos[:, 1] // POOL)
    pooled = torch.zeros(im["n_tokens"], H, dtype=torch.float64).index_add_(0, cell, h) / (POOL * POOL)
    pooled = pooled * math.sqrt(H)
    vis = pooled
    if "v.std_bias" in rd.tensors:
        vis = (pooled - T("v.std_bias")) * T("v.std_scale")
    soft = rms(vis) @ T("mm.input_projection.weight").T
    return dict(patch_embd=patch_embd, layer0=layer0, encoder_out=h, pooled=pooled,
                vision_out=vis, soft_tokens=soft)


# ------------------------------------------------------------------------------------


def run_case(name, c, ims, out, np, torch, transformers):
    log("== case", name)
    W, g = make_weights(c, torch)
    bf = lambda t: t.to(torch.bfloat16).to(torch.float32)  # noqa: E731
    pv, pp = batch_inputs(ims, np, torch)
    info = {"config": dict(c), "checks": {}}
    v = "model.vision_tower."
    if c["clipped"]:
        for il in range(c["layers"]):
            for ln in LINEARS:
                p = v + "encoder.layers.%d.%s." % (il, ln)
                W[p + "input_min"] = torch.tensor(-float("inf"))
                W[p + "input_max"] = torch.tensor(float("inf"))
                W[p + "output_min"] = torch.tensor(-float("inf"))
                W[p + "output_max"] = torch.tensor(float("inf"))
    if c["standardize"]:
        W[v + "std_bias"] = torch.zeros(c["hidden"])
        W[v + "std_scale"] = torch.ones(c["hidden"])
    model = build_model(c, W, torch, transformers)
    info["vision_config"] = {k: getattr(model.config.vision_config, k) for k in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "head_dim", "hidden_activation", "rms_norm_eps",
        "pooling_kernel_size", "patch_size", "position_embedding_size",
        "use_clipped_linears", "standardize", "rope_parameters")}
    info["attn_implementation"] = vision_attn_impl(model)

    # Pass 1 (unclipped / unstandardised) -> data-derived, bf16-rounded bounds.
    if c["clipped"]:
        io = record_linear_io(model, pv, pp, torch)
        bounds = choose_clips(io, torch)
        for lname, bd in bounds.items():
            for s in CLAMPS:
                W[lname + "." + s] = torch.tensor(bd[s])
        info["clip_bounds"] = bounds
    if c["standardize"]:
        _, vis0, _ = run_hf(model, pv, pp, torch)
        mu = vis0.mean(0)
        sd = vis0.std(0)
        # bias near the feature mean (real std_bias cancels large values), per-dim scale
        # around 1/std, both with noise, bf16-rounded.
        W[v + "std_bias"] = bf(mu + 0.3 * sd * torch.randn(c["hidden"], generator=g))
        W[v + "std_scale"] = bf((0.6 + 0.8 * torch.rand(c["hidden"], generator=g)) / sd.clamp(min=1e-3))
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    with torch.no_grad():
        for k, t in W.items():
            params[k].copy_(t)

    soft, vis, cap = run_hf(model, pv, pp, torch, capture=True)
    if c["clipped"]:
        info["clip_fraction_in_out"] = clip_fractions(model, pv, pp, torch)

    # Real rows of each image, images concatenated.
    def real_rows(t):
        return torch.cat([t[b, :im["n_patches"]] for b, im in enumerate(ims)], 0)

    mask = cap["pool_mask"]
    pooled = cap["pooled"][mask]
    ref = dict(patch_embd=real_rows(cap["patch_embd"]), layer0=real_rows(cap["layer0"]),
               encoder_out=real_rows(cap["encoder_out"]), pooled=pooled, vision_out=vis,
               soft_tokens=torch.cat(soft, 0))
    nt = sum(im["n_tokens"] for im in ims)
    assert [s.shape[0] for s in soft] == [im["n_tokens"] for im in ims]
    assert ref["soft_tokens"].shape == (nt, TEXT_HIDDEN) and pooled.shape == (nt, c["hidden"])
    ck = info["checks"]
    ck["soft_tokens_abs_max"] = float(ref["soft_tokens"].abs().max())
    ck["soft_tokens_rms"] = float(ref["soft_tokens"].pow(2).mean().sqrt())

    # Each image alone, unpadded (what gemmad computes): padding must not matter.
    alone = []
    for b, im in enumerate(ims):
        s, _, _ = run_hf(model, pv[b:b + 1, :im["n_patches"]], pp[b:b + 1, :im["n_patches"]], torch)
        alone.append(s[0])
    ck["alone_unpadded_vs_batched_rel"] = rel_frob(torch.cat(alone, 0), ref["soft_tokens"])

    # sdpa must agree with eager.
    try:
        generate_mod = sys.modules["generate"]
        generate_mod.set_attn_impl(model, "sdpa")
        ck["vision_attn_impl_second"] = vision_attn_impl(model)
        s2, _, _ = run_hf(model, pv, pp, torch)
        ck["sdpa_vs_eager_rel"] = rel_frob(torch.cat(s2, 0), ref["soft_tokens"])
        generate_mod.set_attn_impl(model, "eager")
    except Exception as e:  # noqa: BLE001
        ck["sdpa_error"] = repr(e)

    # Clamps / standardisation really change the result.
    with torch.no_grad():
        if c["clipped"]:
            saved = {}
            for lname, mod in clippable_modules(model):
                saved[lname] = [getattr(mod, s).clone() for s in CLAMPS]
                mod.input_min.fill_(-float("inf"))
                mod.input_max.fill_(float("inf"))
                mod.output_min.fill_(-float("inf"))
                mod.output_max.fill_(float("inf"))
            s3, _, _ = run_hf(model, pv, pp, torch)
            ck["without_clamps_rel_diff"] = rel_frob(torch.cat(s3, 0), ref["soft_tokens"])
            for lname, mod in clippable_modules(model):
                for s, t in zip(CLAMPS, saved[lname]):
                    getattr(mod, s).copy_(t)
        if c["standardize"]:
            vt = model.model.vision_tower
            sb, ss = vt.std_bias.clone(), vt.std_scale.clone()
            vt.std_bias.zero_()
            vt.std_scale.fill_(1.0)
            s3, _, _ = run_hf(model, pv, pp, torch)
            ck["without_standardize_rel_diff"] = rel_frob(torch.cat(s3, 0), ref["soft_tokens"])
            vt.std_bias.copy_(sb)
            vt.std_scale.copy_(ss)
    s4, _, _ = run_hf(model, pv, pp, torch)
    assert rel_frob(torch.cat(s4, 0), ref["soft_tokens"]) == 0.0, "model not restored"

    # GGUF + independent forward from it.
    gpath = os.path.join(out, name + ".gguf")
    info["gguf_bytes"] = write_gguf(gpath, name, c, W, np, torch)
    indep = {}
    for im in ims:
        r = gguf_forward(gpath, im, torch)
        for k, t in r.items():
            indep.setdefault(k, []).append(t)
    ck["gguf_forward_rel"] = {k: rel_frob(ref[k], torch.cat(indep[k], 0)) for k in ref}

    pack = Pack()
    order = ["soft_tokens", "vision_out", "pooled", "encoder_out", "layer0", "patch_embd"]
    for k in order:
        t = ref[k].to(torch.float32).contiguous()
        pack.add(k, "f32", list(t.shape), f32_bytes(t, np))
    pack.write(os.path.join(out, name + ".bin"))
    info["file"] = name + ".bin"
    info["gguf"] = name + ".gguf"
    info["arrays"] = pack.index
    log(json.dumps(ck, indent=1))
    # Recorded rather than raised, so that a failing run still leaves its evidence.
    fails = []
    if max(ck["gguf_forward_rel"].values()) > 1e-4:
        fails.append("GGUF forward differs from HF")
    if ck["alone_unpadded_vs_batched_rel"] > 1e-5:
        fails.append("padding changes the result")
    if ck.get("sdpa_vs_eager_rel", 1.0) > 1e-5:
        fails.append("sdpa differs from eager")
    if c["clipped"] and ck["without_clamps_rel_diff"] < 1e-2:
        fails.append("clamps have too little effect")
    if c["standardize"] and ck["without_standardize_rel_diff"] < 1e-2:
        fails.append("standardisation has too little effect")
    ck["failures"] = fails
    return info


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--selftest", action="store_true")
    a = ap.parse_args()
    if a.selftest:
        selftest()
        return
    if not a.out:
        sys.exit(__doc__)
    import numpy as np
    import torch
    import transformers
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(4)
    os.makedirs(a.out, exist_ok=True)

    ims = image_table()
    inp = Pack()
    for im in ims:
        u8 = np.frombuffer(b"".join(im["rows"]), np.uint8).reshape(im["n_patches"], -1)
        # The processor's rescale: uint8 -> float32 times float32(1/255).
        im["f32"] = u8.astype(np.float32) * np.float32(1.0 / 255.0)
    allp = np.concatenate([im["f32"] for im in ims], 0).astype("<f4")
    allq = np.concatenate([np.array(im["pos"], "<i4") for im in ims], 0)
    inp.add("patches", "f32", list(allp.shape), allp.tobytes())
    inp.add("positions", "i32", list(allq.shape), allq.tobytes())
    inp.write(os.path.join(a.out, "inputs.bin"))

    meta = {"transformers": transformers.__version__, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "reference": "Gemma4ForConditionalGeneration(...).model.get_image_features "
                         "(fp32, eager, CPU); soft tokens = its pooler_output",
            "tolerances": TOLERANCES, "text_hidden": TEXT_HIDDEN,
            "inputs": {"file": "inputs.bin", "arrays": inp.index,
                       "batched_padding_rows": PADDED},
            "images": [{k: im[k] for k in ("name", "width", "height", "grid", "n_patches",
                                           "n_tokens", "patch_rows", "token_rows")} for im in ims],
            "cases": {}}

    # Processor cross-check: an image the processor does not resize (480x336 at budget
    # 70 = exactly 630 patches) must give exactly our patch order and positions.
    try:
        from PIL import Image
        from transformers.models.gemma4.image_processing_gemma4 import Gemma4ImageProcessor
        w, h = 480, 336
        img = Image.new("RGB", (w, h))
        img.putdata([tuple(pixel(x, y, ch) for ch in range(3)) for y in range(h) for x in range(w)])
        o = Gemma4ImageProcessor(max_soft_tokens=70)(images=[img], return_tensors="pt")
        rows, pos = patchify(w, h)
        mine = np.frombuffer(b"".join(rows), np.uint8).reshape(len(rows), -1).astype(np.float32) * np.float32(1.0 / 255.0)
        theirs = o["pixel_values"][0].numpy()
        tp = o["image_position_ids"][0].numpy()
        meta["processor_crosscheck"] = {
            "image": [w, h], "n": len(rows), "shape": list(theirs.shape),
            "patches_bit_equal": bool(theirs.shape[0] == len(rows) and (theirs.view(np.uint32) == mine.view(np.uint32)).all()),
            "max_abs_diff": float(np.abs(theirs[:len(rows)] - mine).max()),
            "positions_equal": bool((tp[:len(rows)] == np.array(pos)).all())}
    except Exception as e:  # noqa: BLE001
        meta["processor_crosscheck"] = {"error": repr(e)}
    log("processor cross-check:", meta["processor_crosscheck"])

    for name, c in CASES.items():
        meta["cases"][name] = run_case(name, c, ims, a.out, np, torch, transformers)
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    bad = {n: i["checks"]["failures"] for n, i in meta["cases"].items() if i["checks"]["failures"]}
    if bad:
        sys.exit("SELF-CHECK FAILED: %s" % bad)
    log("done, all self-checks passed")


if __name__ == "__main__":
    main()
