"""Pick the int8 quantisation settings by measured agreement and speed.

Random CLIP ViT-B/32 (the real architecture; no hub is reachable here), N real multi-megapixel
JPEGs (made as in scan_throughput.py). For the torch float32 reference, the ONNX float32
export (eager and sdpa attention traced) and every int8 variant below, in one run:

  - encoder-only images/s (batch 32, this process's cores; best of --rounds alternating rounds),
    and its ratio to torch float32 measured in the same rounds;
  - cosine of each image embedding to torch float32: mean and minimum;
  - Spearman correlation of the zero-shot probabilities over a 20-label bank (the variant's
    image embeddings against the torch float32 text embeddings) with torch float32's, mean over
    images.

Usage: .venv/bin/python benchmarks/onnx_quantization.py [--n 100] [--rounds 3] [--only a,b]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scan_throughput import BENCH, make_photos, model_dir  # noqa: E402

LABELS = ["cat", "dog", "car", "person", "rocket", "coffee", "astronaut", "galaxy", "tree",
          "building", "flower", "horse", "bicycle", "beach", "mountain", "food", "bird",
          "computer", "book", "cell tissue under a microscope"]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def zero_shot(img: np.ndarray, txt: np.ndarray, scale: float) -> np.ndarray:
    logits = scale * img.astype(np.float64) @ txt.astype(np.float64).T
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def cpu_features() -> str:
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return "unknown"
    names = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI",
             "avx_vnni": "AVX-VNNI", "avx512_bf16": "AVX512-BF16", "amx_int8": "AMX-INT8",
             "amx_bf16": "AMX-BF16"}
    return ", ".join(v for k, v in names.items() if k in flags) or "none of AVX2/VNNI/AMX"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--only", default="", help="comma-separated variant names")
    args = ap.parse_args()

    os.environ.setdefault("CLIPSIEVE_CACHE_DIR", str(BENCH / "cache"))
    from clipsieve.backends.clip import ClipBackend
    from clipsieve.backends.onnx import (
        DEFAULT_QUANT,
        ExportSettings,
        OnnxEncoder,
        OnnxInt8Encoder,
        QuantSettings,
        default_threads,
    )
    from clipsieve.media.decode import decode_image

    model = str(model_dir())
    paths = make_photos(args.n, BENCH / f"photos-{args.n}")
    torch_fp32 = ClipBackend(model, device="cpu", precision="float32")
    prep = torch_fp32.preprocess
    pixels = np.stack([prep(decode_image(p.read_bytes(), min_side=prep.min_side).image)
                       for p in paths])
    prompts = [f"a photo of a {x}." for x in LABELS]
    ref_img = torch_fp32.encode_pixels(pixels)
    ref_txt = torch_fp32.encode_texts(prompts)
    scale = torch_fp32.logit_scale
    ref_p = zero_shot(ref_img, ref_txt, scale)

    base = QuantSettings(op_types=("MatMul",), per_channel=False, pre_process=False)
    variants: dict[str, tuple[str, ExportSettings, QuantSettings | None]] = {
        "onnx fp32 (eager)": ("fp32", ExportSettings(attention="eager"), None),
        "onnx fp32 (sdpa)": ("fp32", ExportSettings(attention="sdpa"), None),
        "int8 default ops": ("int8", ExportSettings(),
                             replace(base, op_types=())),
        "int8 MatMul": ("int8", ExportSettings(), base),
        "int8 MatMul per-channel": ("int8", ExportSettings(), replace(base, per_channel=True)),
        "int8 MatMul pre_process": ("int8", ExportSettings(), replace(base, pre_process=True)),
        "int8 MatMul per-ch + pre": ("int8", ExportSettings(),
                                     replace(base, per_channel=True, pre_process=True)),
        "int8 per-ch + first/last fp32": ("int8", ExportSettings(),
                                          replace(base, per_channel=True, keep_float=True)),
        "int8 per-ch reduce_range": ("int8", ExportSettings(),
                                     replace(base, per_channel=True, reduce_range=True)),
        "int8 per-ch + pre reduce_range": ("int8", ExportSettings(),
                                           replace(base, per_channel=True, pre_process=True,
                                                   reduce_range=True)),
        "int8 per-ch + pre u8 weights": ("int8", ExportSettings(),
                                         replace(base, per_channel=True, pre_process=True,
                                                 weight_type="QUInt8")),
        "int8 fused + per-ch": ("int8", ExportSettings(),
                                replace(base, per_channel=True, fuse=True, pre_process=True,
                                        op_types=("MatMul", "Attention"))),
        "int8 sdpa per-ch": ("int8", ExportSettings(attention="sdpa"),
                             replace(base, per_channel=True)),
    }
    if args.only:
        keep = {v.strip() for v in args.only.split(",")}
        variants = {k: v for k, v in variants.items() if k in keep}

    encoders = {"torch fp32": torch_fp32}
    failed: dict[str, str] = {}
    for name, (kind, exp, quant) in variants.items():
        t0 = time.perf_counter()
        cls = OnnxEncoder if kind == "fp32" else OnnxInt8Encoder
        kw = {"export": exp}
        if quant is not None:
            kw["quant"] = quant
        try:
            encoders[name] = cls(model, device="cpu", **kw)
        except Exception as exc:  # report the variant as failed, measure the others
            failed[name] = f"{type(exc).__name__}: {str(exc)[:150]}"
            continue
        print(f"  built {name} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    speed: dict[str, list[float]] = {k: [] for k in encoders}
    for _ in range(args.rounds):
        for name, enc in encoders.items():
            enc.encode_pixels(pixels[: args.batch])  # warm-up
            t0 = time.perf_counter()
            for i in range(0, len(pixels), args.batch):
                enc.encode_pixels(pixels[i : i + args.batch])
            speed[name].append(len(pixels) / (time.perf_counter() - t0))

    print(f"\n{len(paths)} real JPEGs, random CLIP ViT-B/32, {default_threads()} threads, "
          f"batch {args.batch}; CPU: {cpu_features()}")
    print(f"default int8 settings: {DEFAULT_QUANT}\n")
    hdr = (f"{'encoder':32s} {'img/s':>7s} {'×torch':>7s} {'cos mean':>9s} {'cos min':>9s} "
           f"{'spearman':>9s} {'top1 agree':>10s}")
    print(hdr)
    print("-" * len(hdr))
    torch_best = max(speed["torch fp32"])
    for name, enc in encoders.items():
        img = enc.encode_pixels(pixels)
        cos = (img * ref_img).sum(1)
        p = zero_shot(img, ref_txt, scale)
        rho = np.mean([spearman(p[i], ref_p[i]) for i in range(len(p))])
        top1 = np.mean(p.argmax(1) == ref_p.argmax(1))
        best = max(speed[name])
        print(f"{name:32s} {best:7.1f} {best / torch_best:7.2f} {cos.mean():9.6f} "
              f"{cos.min():9.6f} {rho:9.5f} {top1:10.3f}")
    for name, why in failed.items():
        print(f"{name:32s} failed: {why}")
    print(f"\n(img/s: best of {args.rounds} alternating rounds; the machine is shared, so "
          "compare ratios within this run)")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
