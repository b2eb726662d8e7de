#!/usr/bin/env python3
"""Image-preprocessing conformance fixtures (gemma4-model.md §4.1, CONFORMANCE.md).

Two steps:

  python3 generate_vision.py --make-images DIR
      Writes the test PNGs (pure Python: zlib + struct, no PIL). Their pixels follow
      pixel() below, which tests/unit/test-image-preprocess.c reproduces, so the C test
      does not depend on the PNG decoder.

  python3 generate_vision.py --reference IMGDIR OUTDIR
      Needs torch, torchvision, PIL and transformers 5.17.0. Loads each PNG the way
      transformers does (PIL, .convert("RGB")), checks the pixels equal pixel(), runs
      Gemma4ImageProcessor (the default torchvision backend) at the case's budget, and
      writes OUTDIR/<name>-patches.u8 (the real patches' values × 255 as uint8, after
      checking value == uint8 · float32(1/255) exactly), OUTDIR/<name>-pos.i32 (x, y per
      real patch) and OUTDIR/cases.txt; meta.json records versions and side checks (the
      padding, the PIL backend's agreement, the class AutoImageProcessor picks).
"""
import json
import os
import struct
import sys
import zlib

# name, width, height, budget — awkward sizes: upscale, downscale, mixed, extreme aspect.
CASES = [
    ("small-37x29", 37, 29, 70),      # upscale to 432x336
    ("mixed-2600x60", 2600, 60, 70),  # width up to 2640, height down to 48 (scale 1.25)
    ("strip-700x9", 700, 9, 70),      # extreme: th = 0 -> 48, tw capped at 3360
    ("wide-640x480", 640, 480, 70),   # strong downscale (wide antialiasing kernels)
    ("tall-45x170", 45, 170, 140),    # budget 140, upscale of a narrow image
]
# Cases whose patches are checked by digest only (their patch files would be ~0.5-1 MB
# each): cases.txt's last column is a 64-bit FNV-1a over the u8 patches, then the
# positions as little-endian int32 — for every case, so the two checks agree.
DIGEST_ONLY = {"wide-640x480", "tall-45x170"}


def fnv1a64(*chunks):
    h = 0xcbf29ce484222325
    for data in chunks:
        for b in data:
            h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def pixel(x, y, c):
    """Deterministic RGB8 content: smooth gradients, hard-edged blocks and hash noise."""
    block = ((x // 7) + (y // 5)) % 4
    if block == 0:  # noise
        h = (x * 73856093 ^ y * 19349663 ^ (c + 1) * 83492791) & 0xFFFFFFFF
        h = (h ^ (h >> 13)) * 1274126177 & 0xFFFFFFFF
        return (h >> 16) & 255
    if block == 1:  # saturated edge colours
        return 255 if (c == 0) == ((x + y) % 2 == 0) else 0
    return (x * 3 + y * 2 + c * 85) & 255  # gradient


def write_png(path, w, h):
    raw = bytearray()
    for y in range(h):
        raw.append(0)  # filter: none
        for x in range(w):
            raw.extend(pixel(x, y, c) for c in range(3))

    def chunk(tag, data):
        return (struct.pack(">I", len(data)) + tag + data +
                struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(bytes(raw), 9))
    png += chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def make_images(d):
    os.makedirs(d, exist_ok=True)
    for name, w, h, _ in CASES:
        write_png(os.path.join(d, name + ".png"), w, h)


def reference(imgdir, outdir):
    import numpy as np
    import torch
    import transformers
    import torchvision
    from PIL import Image
    from transformers.models.gemma4.image_processing_gemma4 import Gemma4ImageProcessor

    os.makedirs(outdir, exist_ok=True)
    meta = {"transformers": transformers.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "cpu_capability":
            torch.backends.cpu.get_cpu_capability(), "cases": {}}
    try:
        from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil
    except Exception as e:  # noqa: BLE001
        Gemma4ImageProcessorPil = None
        meta["pil_import_error"] = repr(e)

    # Which class does AutoImageProcessor pick for a Gemma 4 checkpoint by default?
    try:
        import tempfile
        from transformers import AutoImageProcessor
        with tempfile.TemporaryDirectory() as td:
            with open(os.path.join(td, "preprocessor_config.json"), "w") as f:
                json.dump({"image_processor_type": "Gemma4ImageProcessor",
                           "max_soft_tokens": 280, "patch_size": 16,
                           "pooling_kernel_size": 3}, f)
            ap = AutoImageProcessor.from_pretrained(td)
            meta["auto_image_processor"] = type(ap).__name__
            meta["auto_backend"] = getattr(ap, "backend", None)
    except Exception as e:  # noqa: BLE001
        meta["auto_image_processor_error"] = repr(e)

    lines = []
    for name, w, h, budget in CASES:
        img = Image.open(os.path.join(imgdir, name + ".png")).convert("RGB")
        arr = np.asarray(img)
        want = np.array([[[pixel(x, y, c) for c in range(3)] for x in range(w)]
                         for y in range(h)], dtype=np.uint8)
        assert arr.shape == (h, w, 3) and (arr == want).all(), name + ": PNG pixels differ"

        proc = Gemma4ImageProcessor(max_soft_tokens=budget)
        out = proc(images=[img], return_tensors="pt")
        pv = out["pixel_values"][0].numpy()
        pos = out["image_position_ids"][0].numpy()
        nst = int(out["num_soft_tokens_per_image"][0])
        real = (pos[:, 0] >= 0)
        n = int(real.sum())
        assert (~real[:n]).sum() == 0 and real[n:].sum() == 0, "padding not at the end"
        assert (pv[n:] == 0).all() and (pos[n:] == -1).all(), "padding not zero / -1"
        gw = int(pos[:n, 0].max()) + 1
        gh = int(pos[:n, 1].max()) + 1
        assert gw * gh == n and nst == (gw // 3) * (gh // 3)
        vals = pv[:n].astype(np.float32)
        u8 = np.rint(vals.astype(np.float64) * 255.0).astype(np.int64)
        assert u8.min() >= 0 and u8.max() <= 255
        u8 = u8.astype(np.uint8)
        # Rescale is uint8 tensor * Python float: float32(x) * float32(1/255).
        back = u8.astype(np.float32) * np.float32(1.0 / 255.0)
        assert (back.view(np.uint32) == vals.view(np.uint32)).all(), name + ": rescale differs"
        pos_le = pos[:n].astype("<i4")
        digest = fnv1a64(u8.tobytes(), pos_le.tobytes())
        if name not in DIGEST_ONLY:
            u8.tofile(os.path.join(outdir, name + "-patches.u8"))
            pos_le.tofile(os.path.join(outdir, name + "-pos.i32"))
        lines.append(f"{name} {w} {h} {budget} {gw} {gh} {nst} {digest:016x}")

        case = {"grid": [gw, gh], "num_soft_tokens": nst, "pixel_values_dtype": str(pv.dtype)}
        if Gemma4ImageProcessorPil is not None:
            pp = Gemma4ImageProcessorPil(max_soft_tokens=budget)
            po = pp(images=[img], return_tensors="np")
            pvv = np.asarray(po["pixel_values"][0])[:n].astype(np.float64)
            d = np.abs(pvv * 255.0 - u8.astype(np.float64))
            case["pil_backend_max_diff_levels"] = float(d.max())
            case["pil_backend_frac_differing"] = float((d > 0.5).mean())
        meta["cases"][name] = case
        print(name, case, flush=True)

    with open(os.path.join(outdir, "cases.txt"), "w") as f:
        f.write("# name width height budget grid_w grid_h num_soft_tokens fnv1a64(patches u8, positions i32 LE)\n")
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(outdir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta, indent=1))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--make-images":
        make_images(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "--reference":
        reference(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
