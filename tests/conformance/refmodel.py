#!/usr/bin/env python3
"""refmodel.py — an independent Gemma 4 text forward pass in pure Python, from the GGUF.

It reads a conformance case folder (model.gguf + <prompt>.txt) with gguf_io and
computes logits from the GGUF alone, following gemma4-model.md / gguf-format.md §1.6
(rope_freqs as frequency factors, per-layer KV heads and FFN widths from the keys,
KV-share source = last earlier non-shared layer of the same type, masks of §3).
Comparing it with the transformers logits proves that the fixture's GGUF encodes the
same model transformers ran, independently of gemmad. Slow but dependency-free.

Usage: python3 refmodel.py CASE_DIR [CASE_DIR...]
"""

import math
import operator
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf_io  # noqa: E402

_sumprod = getattr(math, "sumprod", None)


def dot(a, b):
    if _sumprod is not None:
        return _sumprod(a, b)
    return sum(map(operator.mul, a, b))


def matvec(W, x):
    return [dot(row, x) for row in W]


def rmsnorm(v, w, eps):
    r = (sum(t * t for t in v) / len(v) + eps) ** -0.5
    if w is None:
        return [t * r for t in v]
    return [t * r * wi for t, wi in zip(v, w)]


def gelu(z):
    return 0.5 * z * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z * z * z)))


def bf16_round(x):
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return struct.unpack("<f", struct.pack("<I", u))[0]


class Model:
    def __init__(self, path):
        r = gguf_io.Reader(path)
        kv = r.kv
        A = "gemma4."
        assert kv["general.architecture"] == "gemma4"
        self.H = kv[A + "embedding_length"]
        self.L = L = kv[A + "block_count"]

        def per_layer(key):
            v = kv[A + key]
            return list(v) if isinstance(v, list) else [v] * L

        self.n_head = per_layer("attention.head_count")
        self.n_kv = per_layer("attention.head_count_kv")
        self.n_ff = per_layer("feed_forward_length")
        self.swa = [bool(x) for x in kv[A + "attention.sliding_window_pattern"]]
        self.hd_full = kv[A + "attention.key_length"]
        self.hd_swa = kv[A + "attention.key_length_swa"]
        self.rot_full = kv[A + "rope.dimension_count"]
        self.rot_swa = kv[A + "rope.dimension_count_swa"]
        self.theta_full = kv[A + "rope.freq_base"]
        self.theta_swa = kv[A + "rope.freq_base_swa"]
        self.eps = kv[A + "attention.layer_norm_rms_epsilon"]
        self.softcap = kv.get(A + "final_logit_softcapping", 0.0)
        self.window = kv[A + "attention.sliding_window"]
        self.shared = kv.get(A + "attention.shared_kv_layers", 0)
        self.P = kv.get(A + "embedding_length_per_layer_input", 0)
        self.bidir = kv.get(A + "use_bidirectional_attention", "none")
        fs = L - self.shared
        self.src = []
        for il in range(L):
            if il < fs or self.shared == 0:
                self.src.append(-1)
            else:
                self.src.append(max(j for j in range(fs) if self.swa[j] == self.swa[il]))
        self.tok = r.matrix("token_embd.weight")
        self.V = len(self.tok)
        self.out_norm = r.floats("output_norm.weight")
        rope_freqs = r.floats("rope_freqs.weight") if "rope_freqs.weight" in r.tensors else None
        if self.P:
            self.ple_tok = r.matrix("per_layer_token_embd.weight")
            self.ple_proj = r.matrix("per_layer_model_proj.weight")
            self.ple_norm = r.floats("per_layer_proj_norm.weight")
        self.layers = []
        for il in range(L):
            p = "blk.%d." % il

            def get(n, mat=True):
                name = p + n
                if name not in r.tensors:
                    return None
                return r.matrix(name) if mat else r.floats(name)

            lw = dict(
                attn_norm=get("attn_norm.weight", False), wq=get("attn_q.weight"),
                q_norm=get("attn_q_norm.weight", False), wo=get("attn_output.weight"),
                post_attn_norm=get("post_attention_norm.weight", False),
                ffn_norm=get("ffn_norm.weight", False), gate=get("ffn_gate.weight"),
                up=get("ffn_up.weight"), down=get("ffn_down.weight"),
                post_ffw_norm=get("post_ffw_norm.weight", False))
            if self.src[il] < 0:
                lw["wk"] = get("attn_k.weight")
                lw["wv"] = get("attn_v.weight")
                lw["k_norm"] = get("attn_k_norm.weight", False)
            if self.P:
                lw["inp_gate"] = get("inp_gate.weight")
                lw["proj"] = get("proj.weight")
                lw["post_norm"] = get("post_norm.weight", False)
            sc = get("layer_output_scale.weight", False)
            lw["scale"] = sc[0] if sc else 1.0
            hd = self.hd_swa if self.swa[il] else self.hd_full
            n_rot = self.rot_swa if self.swa[il] else self.rot_full
            theta = self.theta_swa if self.swa[il] else self.theta_full
            freqs = []
            for i in range(hd // 2):
                f = theta ** (-2.0 * i / n_rot) if 2 * i < n_rot else 0.0
                if not self.swa[il] and rope_freqs is not None:
                    f /= rope_freqs[i]
                freqs.append(f)
            lw["freqs"] = freqs
            lw["hd"] = hd
            self.layers.append(lw)
        self.embd_scale = bf16_round(math.sqrt(self.H))

    def visible(self, il, q, k, block):
        sliding = self.swa[il]
        vis = k <= q
        if sliding and self.bidir == "vision" and block[q] >= 0 and block[q] == block[k]:
            vis = True
        if sliding and not (k > q - self.window):
            vis = False
        return vis

    def forward(self, pos_items):
        """pos_items: list of ("text", id) or (type, embedding row). Returns logits rows."""
        H, L, P = self.H, self.L, self.P
        n = len(pos_items)
        x = []
        ids_for_ple = []
        types = []
        for kind, v in pos_items:
            if kind == "text":
                x.append([t * self.embd_scale for t in self.tok[v]])
                ids_for_ple.append(v)
                types.append(0)
            else:
                x.append(list(v))
                ids_for_ple.append(0)  # soft tokens use the pad row of the PLE table
                types.append({"image": 1, "video": 2, "audio": 3}[kind])
        block = [-1] * n
        b = -1
        for i, t in enumerate(types):
            if t in (1, 2):
                if i == 0 or types[i - 1] not in (1, 2):
                    b += 1
                block[i] = b
        ple = None
        if P:
            ple = []
            sp = math.sqrt(P)
            for i in range(n):
                ctx = [t * H ** -0.5 for t in matvec(self.ple_proj, x[i])]
                tok = self.ple_tok[ids_for_ple[i]]
                rows = []
                for il in range(L):
                    c = rmsnorm(ctx[il * P:(il + 1) * P], self.ple_norm, self.eps)
                    t = tok[il * P:(il + 1) * P]
                    rows.append([(a + bb * sp) * 2 ** -0.5 for a, bb in zip(c, t)])
                ple.append(rows)
        caches = {}
        for il in range(L):
            lw = self.layers[il]
            hd = lw["hd"]
            nq, nkv = self.n_head[il], self.n_kv[il]
            freqs = lw["freqs"]

            def rope(vec, pos):
                out = list(vec)
                half = hd // 2
                for i in range(half):
                    a = pos * freqs[i]
                    c, s = math.cos(a), math.sin(a)
                    x0, x1 = vec[i], vec[i + half]
                    out[i] = x0 * c - x1 * s
                    out[i + half] = x1 * c + x0 * s
                return out

            a = [rmsnorm(xi, lw["attn_norm"], self.eps) for xi in x]
            Q = []
            for i in range(n):
                q = matvec(lw["wq"], a[i])
                Q.append([rope(rmsnorm(q[h * hd:(h + 1) * hd], lw["q_norm"], self.eps), i) for h in range(nq)])
            if self.src[il] < 0:
                K, Vv = [], []
                for i in range(n):
                    kr = matvec(lw["wk"], a[i])
                    vr = matvec(lw["wv"], a[i]) if lw["wv"] is not None else kr
                    K.append([rope(rmsnorm(kr[h * hd:(h + 1) * hd], lw["k_norm"], self.eps), i) for h in range(nkv)])
                    Vv.append([rmsnorm(vr[h * hd:(h + 1) * hd], None, self.eps) for h in range(nkv)])
                caches[il] = (K, Vv)
            else:
                K, Vv = caches[self.src[il]]
                nkv = len(K[0])
            group = nq // nkv
            for i in range(n):
                vis = [k for k in range(n) if self.visible(il, i, k, block)]
                heads = []
                for h in range(nq):
                    kh = h // group
                    s = [dot(Q[i][h], K[k][kh]) for k in vis]
                    m = max(s)
                    e = [math.exp(t - m) for t in s]
                    z = sum(e)
                    o = [0.0] * hd
                    for wgt, k in zip(e, vis):
                        vk = Vv[k][kh]
                        wz = wgt / z
                        for d in range(hd):
                            o[d] += wz * vk[d]
                    heads.extend(o)
                att = matvec(lw["wo"], heads)
                xi = [u + v for u, v in zip(x[i], rmsnorm(att, lw["post_attn_norm"], self.eps))]
                f = rmsnorm(xi, lw["ffn_norm"], self.eps)
                g = matvec(lw["gate"], f)
                u = matvec(lw["up"], f)
                mlp = matvec(lw["down"], [gelu(gg) * uu for gg, uu in zip(g, u)])
                xi = [a1 + b1 for a1, b1 in zip(xi, rmsnorm(mlp, lw["post_ffw_norm"], self.eps))]
                x[i] = xi
            if P:
                for i in range(n):
                    g = [gelu(t) for t in matvec(lw["inp_gate"], x[i])]
                    g = [t * p for t, p in zip(g, ple[i][il])]
                    pr = rmsnorm(matvec(lw["proj"], g), lw["post_norm"], self.eps)
                    x[i] = [a1 + b1 for a1, b1 in zip(x[i], pr)]
            sc = lw["scale"]
            x = [[t * sc for t in xi] for xi in x]
        logits = []
        for i in range(n):
            h = rmsnorm(x[i], self.out_norm, self.eps)
            lg = matvec(self.tok, h)
            if self.softcap:
                lg = [self.softcap * math.tanh(t / self.softcap) for t in lg]
            logits.append(lg)
        return logits


def read_prompt(case_dir, fname):
    with open(os.path.join(case_dir, fname)) as f:
        toks = f.read().split()
    it = iter(toks)
    assert next(it) == "gemmad-conformance" and next(it) == "1"
    spans, greedy, embd, logits = [], [], None, None
    n_vocab = n_embd = 0
    for key in it:
        if key == "n_vocab":
            n_vocab = int(next(it))
        elif key == "n_embd":
            n_embd = int(next(it))
        elif key == "spans":
            for _ in range(int(next(it))):
                kind = next(it)
                n = int(next(it))
                if kind == "text":
                    spans.append((kind, [int(next(it)) for _ in range(n)]))
                else:
                    spans.append((kind, n, int(next(it))))
        elif key == "embd":
            embd = (next(it), int(next(it)))
        elif key == "greedy":
            greedy = [int(next(it)) for _ in range(int(next(it)))]
        elif key == "logits":
            logits = (next(it), int(next(it)))
        elif key == "end":
            break
        else:
            raise ValueError("%s: unknown key %s" % (fname, key))
    return dict(spans=spans, greedy=greedy, embd=embd, logits=logits, n_vocab=n_vocab, n_embd=n_embd)


def read_f32(path):
    with open(path, "rb") as f:
        data = f.read()
    return list(struct.unpack("<%df" % (len(data) // 4), data))


def check_case(case_dir, verbose=True):
    model = Model(os.path.join(case_dir, "model.gguf"))
    ok = True
    for fname in sorted(os.listdir(case_dir)):
        if not fname.endswith(".txt"):
            continue
        pr = read_prompt(case_dir, fname)
        rows = []
        if pr["embd"]:
            flat = read_f32(os.path.join(case_dir, pr["embd"][0]))
            H = pr["n_embd"]
            rows = [flat[i * H:(i + 1) * H] for i in range(pr["embd"][1])]
        items = []
        for sp in pr["spans"]:
            if sp[0] == "text":
                items += [("text", t) for t in sp[1]]
            else:
                items += [(sp[0], rows[sp[2] + j]) for j in range(sp[1])]
        items += [("text", t) for t in pr["greedy"]]
        ref = read_f32(os.path.join(case_dir, pr["logits"][0]))
        V = pr["n_vocab"]
        got = model.forward(items)
        maxabs = 0.0
        maxref = max(abs(t) for t in ref)
        tol = 1e-3 * max(1.0, maxref)
        agree = 0
        first_bad = None
        for i, lg in enumerate(got):
            r = ref[i * V:(i + 1) * V]
            d = max(abs(a - b) for a, b in zip(lg, r))
            maxabs = max(maxabs, d)
            if d > tol and first_bad is None:
                first_bad = (i, d)
            agree += max(range(V), key=lg.__getitem__) == max(range(V), key=r.__getitem__)
        if first_bad is not None and verbose:
            print("  first position over tolerance: %d (diff %.3e)" % first_bad)
        n_prompt = len(items) - len(pr["greedy"])
        g_ok = all(max(range(V), key=got[n_prompt - 1 + j].__getitem__) == pr["greedy"][j]
                   for j in range(len(pr["greedy"])))
        this_ok = maxabs <= tol and agree == len(got) and g_ok
        ok = ok and this_ok
        if verbose:
            print("refmodel %s/%s: %d positions, max|diff| %.3e (tol %.3e), argmax %d/%d, greedy %s -> %s" % (
                os.path.basename(case_dir), fname, len(got), maxabs, tol, agree, len(got),
                "ok" if g_ok else "DIFFERS", "PASS" if this_ok else "FAIL"), flush=True)
    return ok


if __name__ == "__main__":
    all_ok = True
    for d in sys.argv[1:]:
        all_ok = check_case(d) and all_ok
    sys.exit(0 if all_ok else 1)
