#!/usr/bin/env python3
"""generate_audio_tower.py — reference fixtures for gemmad's Gemma 4 audio-tower test.

Builds a tiny synthetic gemma4a conformer (seeded weights at sensible scales, rounded to
bf16-representable values), runs two log-mel-like feature clips through Hugging Face
transformers (Gemma4Model.get_audio_features: audio tower + embed_audio, fp32, sdpa
attention, CPU, TF32 off; eager is run too and recorded) and writes into OUT:

  inputs.bin     the clips' features (float32 LE, [n_frames, 128] each, clips concatenated);
                 offsets in meta.json
  tiny.gguf      the mmproj GGUF gemmad loads (general.architecture = clip, audio projector
                 gemma4a), llama.cpp converter names/keys/layouts: matrices BF16 (exact:
                 the weights are bf16-representable), convolutions, norms, clamps and the
                 softplus'ed per_dim_scale F32
  tiny.bin       float32 LE reference arrays (soft tokens and checkpoints, both clips
                 concatenated, each clip run alone as a batch of one); offsets in meta.json
  meta.json      config, clips, array offsets/shapes, tolerances and the self-checks

Needs torch, numpy, transformers (5.17.0 is the reference). No network access.
Usage: python3 generate_audio_tower.py --out DIR [--source FILE]
       python3 generate_audio_tower.py --selftest   (torch-free parts only)
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

MEL = 128
TEXT_HIDDEN = 64
CHUNK, CONTEXT_LEFT, CONTEXT_RIGHT, CAP, KERNEL = 12, 13, 0, 50.0, 5

# Frame counts not multiples of 4 (odd at both stride-2 steps for the first).
CLIPS = [("clip-a", 203, 31),   # -> 102 -> 51 tokens: 5 attention chunks
         ("clip-b", 158, 32)]   # -> 79 -> 40 tokens: 4 chunks

TOLERANCES = {
    # CONFORMANCE.md: audio soft tokens <= 1e-3 relative (Frobenius), fp32 weights.
    "soft_tokens_rel_frobenius": 1e-3,
    "checkpoint_rel_frobenius": 1e-3,
}

CASE = dict(hidden=64, heads=2, layers=2, sub_channels=[128, 8], out_dims=48, seed=8100)

CLIPPED = ["feed_forward1.ffw_layer_1", "feed_forward1.ffw_layer_2",
           "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.post",
           "lconv1d.linear_start", "lconv1d.linear_end",
           "feed_forward2.ffw_layer_1", "feed_forward2.ffw_layer_2"]
# HF module (under model.audio_tower.layers.N.) -> llama.cpp name (gguf-format.md §2.2)
GGUF_LINEAR = {"feed_forward1.ffw_layer_1": "ffn_up", "feed_forward1.ffw_layer_2": "ffn_down",
               "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.post": "attn_out",
               "lconv1d.linear_start": "conv_pw1", "lconv1d.linear_end": "conv_pw2",
               "feed_forward2.ffw_layer_1": "ffn_up_1", "feed_forward2.ffw_layer_2": "ffn_down_1"}
# The two lconv norms are stored crosswise by the converter (A_ENC_CONV_NORM holds
# lconv1d.pre_layer_norm, A_ENC_NORM_CONV holds lconv1d.conv_norm).
GGUF_NORM = {"feed_forward1.pre_layer_norm.weight": "ffn_norm.weight",
             "feed_forward1.post_layer_norm.weight": "ffn_post_norm.weight",
             "feed_forward2.pre_layer_norm.weight": "ffn_norm_1.weight",
             "feed_forward2.post_layer_norm.weight": "ffn_post_norm_1.weight",
             "norm_pre_attn.weight": "attn_pre_norm.weight",
             "norm_post_attn.weight": "attn_post_norm.weight",
             "lconv1d.pre_layer_norm.weight": "conv_norm.weight",
             "lconv1d.conv_norm.weight": "norm_conv.weight",
             "norm_out.weight": "ln2.weight"}
CLAMPS = ["input_min", "input_max", "output_min", "output_max"]


def log(*a):
    print(*a, flush=True)


def n_tokens(frames):
    return ((frames + 1) // 2 + 1) // 2


class Pack:
    """Concatenates little-endian arrays into one blob and records where each lies."""

    def __init__(self):
        self.blob = bytearray()
        self.index = {}

    def add(self, name, shape, data):
        n = 1
        for d in shape:
            n *= int(d)
        if len(data) != n * 4:
            raise ValueError("%s: %d bytes for shape %s" % (name, len(data), shape))
        self.index[name] = {"offset": len(self.blob), "dtype": "f32",
                            "shape": [int(d) for d in shape]}
        self.blob += data

    def write(self, path):
        with open(path, "wb") as f:
            f.write(self.blob)


def clip_table():
    out, f0, t0 = [], 0, 0
    for name, nf, seed in CLIPS:
        nt = n_tokens(nf)
        out.append(dict(name=name, n_frames=nf, n_tokens=nt, seed=seed,
                        frame_rows=[f0, f0 + nf], token_rows=[t0, t0 + nt]))
        f0 += nf
        t0 += nt
    return out


def selftest():
    cl = clip_table()
    assert [c["n_tokens"] for c in cl] == [51, 40]
    assert all(c["n_frames"] % 4 for c in cl)
    assert n_tokens(1) == 1 and n_tokens(4) == 1 and n_tokens(5) == 2 and n_tokens(3000) == 750
    p = Pack()
    p.add("a", [2, 3], struct.pack("<6f", *range(6)))
    assert p.index["a"]["offset"] == 0 and len(p.blob) == 24
    log("selftest ok:", [(c["name"], c["n_frames"], c["n_tokens"]) for c in cl])


# ------------------------------------------------------------------------------------
# features and weights


def make_features(c, torch):
    """Log-mel-like values: a smooth spectral envelope that moves over time (formant-like
    bumps), a few silent stretches near the floor ln(1e-3), and noise."""
    g = torch.Generator().manual_seed(c["seed"])
    T = c["n_frames"]
    t = torch.arange(T, dtype=torch.float64)[:, None]
    f = torch.arange(MEL, dtype=torch.float64)[None, :]
    env = -2.0 - 2.5 * (f / MEL)
    for k in range(3):
        centre = 20 + 30 * k + 12 * torch.sin(0.05 * (k + 1) * t + k)
        env = env + 3.0 * torch.exp(-((f - centre) / 6.0) ** 2)
    loud = 0.5 + 0.5 * torch.sin(0.11 * t + c["seed"])
    x = env + 1.5 * loud + 0.6 * torch.randn(T, MEL, generator=g, dtype=torch.float64)
    quiet = ((t.squeeze(1) % 60) > 50)
    x[quiet] = math.log(1e-3) + 0.2 * torch.rand(int(quiet.sum()), MEL, generator=g, dtype=torch.float64)
    return x.float()


def make_weights(c, torch):
    g = torch.Generator().manual_seed(c["seed"])
    H, nh = c["hidden"], c["heads"]
    hd = H // nh
    c0, c1 = c["sub_channels"]
    from generate import weight_makers  # the text fixtures' seeded bf16 tensors
    bf, normal, uniform, linear = weight_makers(torch, g)
    a = "model.audio_tower."
    W = {}
    s = a + "subsample_conv_projection."
    W[s + "layer0.conv.weight"] = normal((c0, 1, 3, 3), 1.0 / 3.0)
    W[s + "layer0.norm.weight"] = uniform((c0,), 0.6, 1.4)
    W[s + "layer1.conv.weight"] = normal((c1, c0, 3, 3), 1.0 / math.sqrt(9 * c0))
    W[s + "layer1.norm.weight"] = uniform((c1,), 0.6, 1.4)
    W[s + "input_proj_linear.weight"] = linear(H, (MEL // 4) * c1)
    for il in range(c["layers"]):
        p = a + "layers.%d." % il
        for n in GGUF_NORM:
            W[p + n] = uniform((H,), 0.6, 1.4)
        W[p + "feed_forward1.ffw_layer_1.linear.weight"] = linear(4 * H, H)
        W[p + "feed_forward1.ffw_layer_2.linear.weight"] = linear(H, 4 * H)
        W[p + "feed_forward2.ffw_layer_1.linear.weight"] = linear(4 * H, H)
        W[p + "feed_forward2.ffw_layer_2.linear.weight"] = linear(H, 4 * H)
        for n in ("q_proj", "k_proj", "v_proj", "post"):
            W[p + "self_attn.%s.linear.weight" % n] = linear(H, H)
        W[p + "self_attn.relative_k_proj.weight"] = linear(H, H)
        # Non-trivial per-dim query scale; layer 1 sharper (softplus ~ 2-3) so the
        # softcap and the position term matter more.
        W[p + "self_attn.per_dim_scale"] = normal((hd,), 0.7) + (0.0 if il == 0 else 2.0)
        W[p + "lconv1d.linear_start.linear.weight"] = linear(2 * H, H)
        W[p + "lconv1d.linear_end.linear.weight"] = linear(H, H)
        W[p + "lconv1d.depthwise_conv1d.weight"] = normal((H, 1, KERNEL), 1.0 / math.sqrt(KERNEL))
    W[a + "output_proj.weight"] = linear(c["out_dims"], H)
    W[a + "output_proj.bias"] = normal((c["out_dims"],), 0.3)
    W["model.embed_audio.embedding_projection.weight"] = linear(TEXT_HIDDEN, c["out_dims"])
    for il in range(c["layers"]):
        for ln in CLIPPED:
            p = a + "layers.%d.%s." % (il, ln)
            W[p + "input_min"] = torch.tensor(-float("inf"))
            W[p + "input_max"] = torch.tensor(float("inf"))
            W[p + "output_min"] = torch.tensor(-float("inf"))
            W[p + "output_max"] = torch.tensor(float("inf"))
    return W


# ------------------------------------------------------------------------------------
# HF model


def build_model(c, W, torch, transformers):
    import generate
    tc = dict(generate.CASES["large"])
    assert tc["hidden"] == TEXT_HIDDEN
    text_cfg = generate.hf_config(tc, None, transformers).text_config
    ac = dict(hidden_size=c["hidden"], num_hidden_layers=c["layers"],
              num_attention_heads=c["heads"], hidden_act="silu",
              subsampling_conv_channels=list(c["sub_channels"]), conv_kernel_size=KERNEL,
              residual_weight=0.5, attention_chunk_size=CHUNK,
              attention_context_left=CONTEXT_LEFT, attention_context_right=CONTEXT_RIGHT,
              attention_logit_cap=CAP, attention_invalid_logits_value=-1e9,
              use_clipped_linears=True, rms_norm_eps=1e-6, gradient_clipping=1e10,
              output_proj_dims=c["out_dims"])
    cfg = transformers.Gemma4Config(
        text_config=text_cfg, vision_config=None, audio_config=ac,
        boi_token_id=generate.BOI, eoi_token_id=generate.EOI, image_token_id=generate.IMAGE,
        video_token_id=generate.VIDEO, boa_token_id=generate.BOA,
        eoa_token_index=generate.EOA, audio_token_id=generate.AUDIO)
    torch.manual_seed(0)
    model = transformers.Gemma4ForConditionalGeneration(cfg).to(torch.float32).eval()
    generate.set_attn_impl(model, "sdpa")
    sd = {k: t for k, t in model.state_dict().items()
          if k.startswith(("model.audio_tower.", "model.embed_audio."))}
    missing = sorted(k for k in sd if k not in W)
    unexpected = sorted(k for k in W if k not in sd)
    if missing or unexpected:
        raise RuntimeError("names differ from HF: missing %s, unexpected %s" % (missing, unexpected))
    load(model, W, torch)
    return model


def load(model, W, torch):
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    with torch.no_grad():
        for k, v in W.items():
            t = params[k]
            if tuple(t.shape) != tuple(v.shape):
                raise RuntimeError("%s: HF shape %s, ours %s" % (k, tuple(t.shape), tuple(v.shape)))
            t.copy_(v)


def audio_attn_impl(model):
    return getattr(model.model.audio_tower.config, "_attn_implementation", None)


def run_hf(model, feats, mask, torch, capture=False):
    """get_audio_features on a batch; with capture, the checkpoints too."""
    inner = model.model
    at = inner.audio_tower
    cap, hooks = {}, []
    if capture:
        def save(key, fn):
            def hook(mod, args, out):
                cap[key] = fn(out).detach().clone()
            return hook
        first = lambda o: o[0] if isinstance(o, tuple) else o  # noqa: E731
        hooks.append(at.subsample_conv_projection.register_forward_hook(save("subsampled", first)))
        hooks.append(at.layers[0].register_forward_hook(save("layer0", first)))
        hooks.append(at.layers[-1].register_forward_hook(save("encoder_out", first)))
        hooks.append(at.output_proj.register_forward_hook(save("tower_out", first)))
    try:
        with torch.no_grad():
            out = inner.get_audio_features(feats, mask, return_dict=True)
    finally:
        for h in hooks:
            h.remove()
    return out, cap


def rel_frob(a, b):
    a = a.double()
    b = b.double()
    return float((a - b).norm() / max(float(b.norm()), 1e-30))


def clippable(model):
    at = model.model.audio_tower
    return [("model.audio_tower.layers.%d.%s" % (il, ln), layer.get_submodule(ln))
            for il, layer in enumerate(at.layers) for ln in CLIPPED]


def choose_clips(model, W, batches, torch):
    """Bounds linear by linear in forward order, each from the activations it sees with
    the bounds before it already in place: inputs at their 1.5 % / 98.5 % quantiles,
    outputs (of the input-clamped product) at 2 % / 98 %, rounded to bf16 (the
    checkpoints are bf16). Sets them in W and in the model."""
    def q(t, f):
        v = torch.quantile(t.flatten().double(), f).float()
        return float(v.to(torch.bfloat16).to(torch.float32))
    B = {}
    for name, mod in clippable(model):
        xs, ys = [], []

        def hook(m, args, out):
            x = args[0].detach().reshape(-1, args[0].shape[-1])
            xs.append(x)
        h = mod.register_forward_hook(hook)
        try:
            for f, m in batches:
                run_hf(model, f, m, torch)
        finally:
            h.remove()
        x = torch.cat(xs)
        lo, hi = q(x, 0.015), q(x, 0.985)
        with torch.no_grad():
            y = mod.linear(x.clamp(lo, hi))
        B[name] = {"input_min": lo, "input_max": hi,
                   "output_min": q(y, 0.02), "output_max": q(y, 0.98)}
        for s in CLAMPS:
            W[name + "." + s] = torch.tensor(B[name][s])
        load(model, {name + "." + s: W[name + "." + s] for s in CLAMPS}, torch)
    return B


def clip_fractions(model, batches, torch):
    fr, hooks = {}, []
    for name, mod in clippable(model):
        def hook(m, args, out, name=name):
            x = args[0]
            y = m.linear(torch.clamp(x, m.input_min, m.input_max))
            fin = float(((x < m.input_min) | (x > m.input_max)).float().mean())
            fout = float(((y < m.output_min) | (y > m.output_max)).float().mean())
            fr.setdefault(name, []).append([round(fin, 5), round(fout, 5)])
        hooks.append(mod.register_forward_hook(hook))
    try:
        for f, m in batches:
            run_hf(model, f, m, torch)
    finally:
        for h in hooks:
            h.remove()
    return fr


# ------------------------------------------------------------------------------------
# GGUF (llama.cpp converter layout)


def f32_bytes(t):
    return t.detach().cpu().contiguous().numpy().astype("<f4").tobytes()


def bf16_bytes(t, torch):
    b = t.detach().cpu().contiguous().to(torch.bfloat16)
    assert torch.equal(b.float(), t.float()), "weight not bf16-representable"
    return b.view(torch.int16).numpy().astype("<i2").tobytes()


def write_gguf(path, c, W, torch):
    H, nh = c["hidden"], c["heads"]
    c0, c1 = c["sub_channels"]
    w = gguf_io.Writer()
    w.string("general.architecture", "clip")
    w.string("general.type", "mmproj")
    w.string("general.name", "conformance-audio-tiny")
    w.u32("general.file_type", 32)  # MOSTLY_BF16
    w.boolean("clip.has_vision_encoder", False)
    w.boolean("clip.has_audio_encoder", True)
    w.string("clip.audio.projector_type", "gemma4a")
    w.u32("clip.audio.projection_dim", TEXT_HIDDEN)
    w.u32("clip.audio.num_mel_bins", MEL)
    w.u32("clip.audio.embedding_length", H)
    w.u32("clip.audio.feed_forward_length", 4 * H)
    w.u32("clip.audio.block_count", c["layers"])
    w.u32("clip.audio.attention.head_count", nh)
    w.f32("clip.audio.attention.layer_norm_epsilon", 1e-6)
    F, B = gguf_io.T_F32, gguf_io.T_BF16
    a = "model.audio_tower."
    s = a + "subsample_conv_projection."

    def mat(name, t):  # PyTorch [out, in] -> ggml {in, out}
        w.tensor(name, [t.shape[1], t.shape[0]], B, bf16_bytes(t, torch))

    def vec(name, t):
        w.tensor(name, [t.numel()], F, f32_bytes(t))

    # Conv kernels kept F32 as the converter does; ggml order reverses PyTorch's.
    w.tensor("a.conv1d.0.weight", [3, 3, 1, c0], F, f32_bytes(W[s + "layer0.conv.weight"]))
    vec("a.conv1d.0.norm.weight", W[s + "layer0.norm.weight"])
    w.tensor("a.conv1d.1.weight", [3, 3, c0, c1], F, f32_bytes(W[s + "layer1.conv.weight"]))
    vec("a.conv1d.1.norm.weight", W[s + "layer1.norm.weight"])
    mat("a.input_projection.weight", W[s + "input_proj_linear.weight"])
    for il in range(c["layers"]):
        p = a + "layers.%d." % il
        b = "a.blk.%d." % il
        for hf, gg in GGUF_NORM.items():
            vec(b + gg, W[p + hf])
        for ln in CLIPPED:
            mat(b + GGUF_LINEAR[ln] + ".weight", W[p + ln + ".linear.weight"])
            for sfx in CLAMPS:
                w.tensor(b + GGUF_LINEAR[ln] + "." + sfx, [1], F, f32_bytes(W[p + ln + "." + sfx].reshape(1)))
        mat(b + "attn_k_rel.weight", W[p + "self_attn.relative_k_proj.weight"])
        # The converter stores softplus(per_dim_scale).
        vec(b + "per_dim_scale.weight", torch.nn.functional.softplus(W[p + "self_attn.per_dim_scale"].double()).float())
        dw = W[p + "lconv1d.depthwise_conv1d.weight"].reshape(H, KERNEL)
        w.tensor(b + "conv_dw.weight", [KERNEL, H], F, f32_bytes(dw))
    mat("a.pre_encode.out.weight", W[a + "output_proj.weight"])
    vec("a.pre_encode.out.bias", W[a + "output_proj.bias"])
    mat("mm.a.input_projection.weight", W["model.embed_audio.embedding_projection.weight"])
    return w.write(path)


# ------------------------------------------------------------------------------------
# independent float64 forward pass from the GGUF alone (gemma4-model.md §5, written from
# the math: per-pair relative attention instead of HF's blocks and rel_shift)


def gguf_forward(path, feats, torch):
    rd = gguf_io.Reader(path)
    kv = rd.kv
    assert kv["general.architecture"] == "clip" and kv["clip.audio.projector_type"] == "gemma4a"
    H = kv["clip.audio.embedding_length"]
    nh = kv["clip.audio.attention.head_count"]
    hd = H // nh
    eps = 1e-6
    F_ = torch.nn.functional

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
            return (x @ w.T).clamp(float(T(base + ".output_min")[0]), float(T(base + ".output_max")[0]))
        return x @ w.T

    x = feats.double()[None, None]                         # [1, 1, T, 128]
    for i in range(2):
        x = F_.conv2d(x, T("a.conv1d.%d.weight" % i), stride=2, padding=1)
        x = x.permute(0, 2, 3, 1)
        x = F_.layer_norm(x, (x.shape[-1],), eps=eps) * T("a.conv1d.%d.norm.weight" % i)
        x = x.clamp(min=0).permute(0, 3, 1, 2)
    n = x.shape[2]
    h = x[0].permute(1, 2, 0).reshape(n, -1) @ T("a.input_projection.weight").T
    out = {"subsampled": h.clone()}

    inv = torch.exp(-torch.arange(H // 2, dtype=torch.float64) * math.log(1e4) / max(H // 2 - 1, 1))
    dist = torch.arange(CONTEXT_LEFT, dtype=torch.float64)          # 0..12
    S = torch.cat([torch.sin(dist[:, None] * inv), torch.cos(dist[:, None] * inv)], -1)
    tq = torch.arange(n)[:, None]
    tk = torch.arange(n)[None, :]
    d = tq - tk
    visible = (d >= 0) & (d < CONTEXT_LEFT - 1)                     # 12 keys t-11..t
    q_scale = hd ** -0.5 / math.log(2)
    k_scale = math.log(1 + math.e) / math.log(2)

    def ffn(h, b, sfx):
        y = rms(h, T(b + "ffn_norm%s.weight" % sfx))
        y = lin(b + "ffn_down" + sfx, F_.silu(lin(b + "ffn_up" + sfx, y)))
        return h + 0.5 * rms(y, T(b + "ffn_post_norm%s.weight" % sfx))

    for il in range(kv["clip.audio.block_count"]):
        b = "a.blk.%d." % il
        h = ffn(h, b, "")
        y = rms(h, T(b + "attn_pre_norm.weight"))
        q = lin(b + "attn_q", y).reshape(n, nh, hd) * q_scale * T(b + "per_dim_scale.weight")
        k = lin(b + "attn_k", y).reshape(n, nh, hd) * k_scale
        v = lin(b + "attn_v", y).reshape(n, nh, hd)
        R = (S @ T(b + "attn_k_rel.weight").T).reshape(CONTEXT_LEFT, nh, hd)
        ac = torch.einsum("qhd,khd->hqk", q, k)
        bd_all = torch.einsum("qhd,rhd->hqr", q, R)                  # per distance 0..12
        bd = torch.gather(bd_all, 2, d.clamp(0, CONTEXT_LEFT - 1).expand(nh, n, n))
        s = ac + bd
        s = CAP * torch.tanh(s / CAP)
        s = s.masked_fill(~visible, float("-inf"))
        o = torch.einsum("hqk,khd->qhd", s.softmax(-1), v).reshape(n, H)
        h = h + rms(lin(b + "attn_out", o), T(b + "attn_post_norm.weight"))
        y = rms(h, T(b + "conv_norm.weight"))                       # lconv1d.pre_layer_norm
        y = lin(b + "conv_pw1", y)
        y = y[:, :H] * torch.sigmoid(y[:, H:])
        dw = T(b + "conv_dw.weight")                                 # [H, 5]
        yp = torch.cat([torch.zeros(KERNEL - 1, H, dtype=torch.float64), y])
        z = sum(yp[j:j + n] * dw[:, j] for j in range(KERNEL))
        z = F_.silu(rms(z, T(b + "norm_conv.weight")))               # lconv1d.conv_norm
        h = h + lin(b + "conv_pw2", z)
        h = ffn(h, b, "_1")
        h = rms(h, T(b + "ln2.weight"))
        if il == 0:
            out["layer0"] = h.clone()
    out["encoder_out"] = h.clone()
    t = h @ T("a.pre_encode.out.weight").T + T("a.pre_encode.out.bias")
    out["tower_out"] = t.clone()
    if "mm.a.soft_emb_norm.weight" in rd.tensors:
        t = rms(t, T("mm.a.soft_emb_norm.weight"))
    else:
        t = rms(t)
    out["soft_tokens"] = t @ T("mm.a.input_projection.weight").T
    return out


# ------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--source", help="also write the transformers audio source to FILE")
    ap.add_argument("--selftest", action="store_true")
    a = ap.parse_args()
    if a.selftest:
        selftest()
        return
    if not a.out:
        sys.exit(__doc__)
    import numpy as np  # noqa: F401
    import torch
    import transformers
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_num_threads(4)
    os.makedirs(a.out, exist_ok=True)
    if a.source:
        import inspect
        from transformers.models.gemma4 import modeling_gemma4 as mg
        import transformers.masking_utils as mu
        with open(a.source, "w") as f:
            for obj in (mg.Gemma4ClippableLinear, mg.Gemma4RMSNorm, mg.Gemma4AudioRelPositionalEncoding,
                        mg.Gemma4AudioAttention, mg.Gemma4AudioSubSampleConvProjectionLayer,
                        mg.Gemma4AudioSubSampleConvProjection, mg.Gemma4AudioFeedForward,
                        mg.Gemma4AudioCausalConv1d, mg.Gemma4AudioLightConv1d, mg.Gemma4AudioLayer,
                        mg.sliding_window_mask_function, mg.Gemma4AudioModel,
                        mg.Gemma4MultimodalEmbedder, mg.Gemma4Model.get_audio_features,
                        mu.create_bidirectional_mask):
                f.write(inspect.getsource(obj) + "\n\n")

    c = CASE
    clips = clip_table()
    feats = [make_features(cl, torch) for cl in clips]
    inp = Pack()
    allf = torch.cat(feats, 0)
    inp.add("features", list(allf.shape), f32_bytes(allf))
    inp.write(os.path.join(a.out, "inputs.bin"))

    alone = [(f[None], torch.ones(1, f.shape[0], dtype=torch.bool)) for f in feats]
    Tmax = max(f.shape[0] for f in feats)
    bf = torch.zeros(len(feats), Tmax, MEL)
    bm = torch.zeros(len(feats), Tmax, dtype=torch.bool)
    for i, f in enumerate(feats):
        bf[i, :f.shape[0]] = f
        bm[i, :f.shape[0]] = True
    batched = (bf, bm)

    W = make_weights(c, torch)
    model = build_model(c, W, torch, transformers)
    info = {"config": dict(c), "checks": {}}
    info["audio_config"] = {k: getattr(model.config.audio_config, k) for k in (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "hidden_act",
        "subsampling_conv_channels", "conv_kernel_size", "residual_weight",
        "attention_chunk_size", "attention_context_left", "attention_context_right",
        "attention_logit_cap", "attention_invalid_logits_value", "use_clipped_linears",
        "rms_norm_eps", "gradient_clipping", "output_proj_dims")}
    info["attn_implementation"] = audio_attn_impl(model)
    ck = info["checks"]

    # Data-derived, bf16-rounded clip bounds (the first forward passes run unclipped).
    info["clip_bounds"] = choose_clips(model, W, alone, torch)
    load(model, W, torch)
    info["clip_fraction_in_out"] = clip_fractions(model, alone, torch)

    refs = {}
    outs = []
    for (f, m), cl in zip(alone, clips):
        out, cap = run_hf(model, f, m, torch, capture=True)
        outs.append(out)
        nt = cl["n_tokens"]
        mask = out.attention_mask
        assert mask.shape == (1, nt) and bool(mask.all()), "mask %s" % (mask,)
        assert out.pooler_output.shape == (1, nt, TEXT_HIDDEN), out.pooler_output.shape
        for k, v in [("soft_tokens", out.pooler_output)] + list(cap.items()):
            refs.setdefault(k, []).append(v[0].float())
        ck.setdefault("returned", []).append({
            "pooler_output": list(out.pooler_output.shape),
            "last_hidden_state": list(out.last_hidden_state.shape),
            "attention_mask": list(mask.shape), "mask_all_true": bool(mask.all())})
        assert torch.equal(out.last_hidden_state, cap["tower_out"])
    ref = {k: torch.cat(v, 0) for k, v in refs.items()}
    ck["soft_tokens_abs_max"] = float(ref["soft_tokens"].abs().max())
    ck["soft_tokens_rms"] = float(ref["soft_tokens"].pow(2).mean().sqrt())

    # Batched with padding (the feature extractor's mask) must give the same valid rows.
    bo, _ = run_hf(model, *batched, torch)
    rows = []
    for i, cl in enumerate(clips):
        mk = bo.attention_mask[i]
        assert int(mk.sum()) == cl["n_tokens"], (int(mk.sum()), cl["n_tokens"])
        rows.append(bo.pooler_output[i][mk])
    ck["batched_vs_alone_rel"] = rel_frob(torch.cat(rows, 0), ref["soft_tokens"])
    ck["batched_mask_sums"] = [int(x) for x in bo.attention_mask.sum(1)]

    # Eager vs sdpa (the audio attention inverts a float mask: recorded, not required).
    import generate as generate_mod
    try:
        ck["attn_impl_second"] = generate_mod.set_attn_impl(model, "eager")
        ck["attn_impl_second_audio"] = audio_attn_impl(model)
        e = torch.cat([run_hf(model, f, m, torch)[0].pooler_output[0] for f, m in alone], 0)
        ck["eager_vs_sdpa_rel"] = rel_frob(e, ref["soft_tokens"])
        generate_mod.set_attn_impl(model, "sdpa")
    except Exception as ex:  # noqa: BLE001
        ck["eager_error"] = repr(ex)
        generate_mod.set_attn_impl(model, "sdpa")

    # Clamps really change the result.
    with torch.no_grad():
        saved = {}
        for lname, mod in clippable(model):
            saved[lname] = [getattr(mod, s).clone() for s in CLAMPS]
            mod.input_min.fill_(-float("inf"))
            mod.input_max.fill_(float("inf"))
            mod.output_min.fill_(-float("inf"))
            mod.output_max.fill_(float("inf"))
        s3 = torch.cat([run_hf(model, f, m, torch)[0].pooler_output[0] for f, m in alone], 0)
        ck["without_clamps_rel_diff"] = rel_frob(s3, ref["soft_tokens"])
        for lname, mod in clippable(model):
            for s, t in zip(CLAMPS, saved[lname]):
                getattr(mod, s).copy_(t)
    s4 = torch.cat([run_hf(model, f, m, torch)[0].pooler_output[0] for f, m in alone], 0)
    assert rel_frob(s4, ref["soft_tokens"]) == 0.0, "model not restored"

    gpath = os.path.join(a.out, "tiny.gguf")
    info["gguf_bytes"] = write_gguf(gpath, c, W, torch)
    indep = {}
    for f in feats:
        for k, t in gguf_forward(gpath, f, torch).items():
            indep.setdefault(k, []).append(t)
    ck["gguf_forward_rel"] = {k: rel_frob(ref[k], torch.cat(indep[k], 0)) for k in ref}

    pack = Pack()
    order = ["soft_tokens", "tower_out", "encoder_out", "layer0", "subsampled"]
    for k in order:
        t = ref[k].to(torch.float32).contiguous()
        pack.add(k, list(t.shape), f32_bytes(t))
    pack.write(os.path.join(a.out, "tiny.bin"))
    info["file"] = "tiny.bin"
    info["gguf"] = "tiny.gguf"
    info["arrays"] = pack.index

    meta = {"transformers": transformers.__version__, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "reference": "Gemma4ForConditionalGeneration(...).model.get_audio_features "
                         "(fp32, sdpa, CPU), each clip alone as a batch of one with an "
                         "all-true mask; soft tokens = its pooler_output",
            "tolerances": TOLERANCES, "text_hidden": TEXT_HIDDEN, "mel_bins": MEL,
            "inputs": {"file": "inputs.bin", "arrays": inp.index},
            "clips": clips, "case": info}
    fails = []
    if max(ck["gguf_forward_rel"].values()) > 1e-4:
        fails.append("GGUF forward differs from HF")
    if ck["batched_vs_alone_rel"] > 1e-5:
        fails.append("padding changes the result")
    if ck["without_clamps_rel_diff"] < 1e-2:
        fails.append("clamps have too little effect")
    ck["failures"] = fails
    log(json.dumps(ck, indent=1))
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    if fails:
        sys.exit("SELF-CHECK FAILED: %s" % fails)
    log("done, all self-checks passed")


if __name__ == "__main__":
    main()
