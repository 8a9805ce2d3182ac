"""Encoders side by side: torch, onnx and onnx-int8 on the same photos, in one run.

The same N real multi-megapixel JPEGs as scan_throughput.py (scikit-image photos, cropped and
upscaled to 6 MP) and a randomly initialised CLIP ViT-B/32 (the real architecture; no hub is
reachable here). For each encoder:

  - encoder-only images/s on ready, preprocessed tensors (batch 32);
  - ``Analyzer.scan`` end to end images/s (read, hash, decode, pixel statistics, preprocess,
    encode; no store; model loaded), with ``--workers`` 1 and 2;
  - the shared-core limit 1/(1/encoder + 1/plain decode), where plain decode is a minimal
    ``Image.draft`` + resize + normalise on the same cores, and scan ÷ limit;
  - time to the first result of a one-image ``clipsieve scan --no-store`` in a new process:
    cold (empty cache folder: export, quantisation and prompt embeddings included) and warm
    (cache folder filled), as the wall time until the first JSON line arrives.

Rounds alternate between encoders and the best round is reported (the machine is shared;
single runs vary). Targets (issue 14): onnx-int8 encoder-only >= 2x torch float32 on AVX2-only
CPUs and >= 2.8x with VNNI or AMX; scan >= 0.9 of the shared-core limit for every encoder.

Usage: .venv/bin/python benchmarks/encoders.py [--n 200] [--rounds 2] [--skip-cold]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_quantization import cpu_features  # noqa: E402
from scan_throughput import BENCH, make_photos, model_dir  # noqa: E402

ENCODERS = [("torch", "float32"), ("torch", "auto"), ("onnx", "auto"), ("onnx-int8", "auto")]


def plain_decode_rate(paths: list[Path], prep: object, rounds: int, threads: int) -> float:
    """Images/s of a minimal decode on all cores: draft-scaled JPEG decode, resize, normalise."""
    from concurrent.futures import ThreadPoolExecutor

    def one(p: Path) -> None:
        with Image.open(p) as im:
            im.draft("RGB", (prep.min_side, prep.min_side))  # type: ignore[attr-defined]
            prep(im.convert("RGB"))  # type: ignore[operator]

    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(rounds):
            t0 = time.perf_counter()
            list(pool.map(one, paths))
            best = max(best, len(paths) / (time.perf_counter() - t0))
    return best


def scan_decode_rate(analyzer: object, paths: list[Path], rounds: int, threads: int) -> float:
    """Images/s of scan's own preparation on all cores: read, hash, decode (with the native
    blockiness crop of high-quality JPEGs, issue #9), pixel statistics, preprocess."""
    from concurrent.futures import ThreadPoolExecutor

    from clipsieve.media.inputs import iter_sources

    prep = analyzer.preprocess  # type: ignore[attr-defined]
    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(rounds):
            srcs = list(iter_sources([str(p) for p in paths]))
            t0 = time.perf_counter()
            done = list(pool.map(lambda s: analyzer._prepare(s, prep), srcs))  # type: ignore[attr-defined]
            best = max(best, len(paths) / (time.perf_counter() - t0))
            assert all(d.pixels is not None for d in done)
    return best


def first_result_seconds(model: Path, image: Path, kind: str, cache: Path) -> float:
    """Wall seconds from starting `clipsieve scan` until its first JSON line is read."""
    env = {**os.environ, "CLIPSIEVE_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1",
           "CLIPSIEVE_ENCODER": kind}
    cmd = [sys.executable, "-m", "clipsieve", "scan", str(image), "--model", str(model),
           "--no-store", "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    took = time.perf_counter() - t0
    proc.wait()
    if not line.startswith(b"{"):
        raise RuntimeError(f"{kind}: no result line from clipsieve scan")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--encoders", default=",".join(f"{k}:{p}" for k, p in ENCODERS))
    ap.add_argument("--skip-cold", action="store_true", help="skip the cold start-up runs")
    ap.add_argument("--jpeg-quality", type=int, default=90,
                    help="JPEG quality of the photos (>= 90 takes the native blockiness crop)")
    args = ap.parse_args()

    cache = BENCH / "cache"
    os.environ["CLIPSIEVE_CACHE_DIR"] = str(cache)
    from clipsieve import Analyzer
    from clipsieve.backends.onnx import default_threads
    from clipsieve.media.decode import decode_image

    encoders = [tuple(e.split(":")) for e in args.encoders.split(",")]
    folder = f"photos-{args.n}" + ("" if args.jpeg_quality == 90 else f"-q{args.jpeg_quality}")
    paths = make_photos(args.n, BENCH / folder, quality=args.jpeg_quality)
    model = model_dir()
    mp = np.mean([np.prod(Image.open(p).size) for p in paths[:10]]) / 1e6
    print(f"{len(paths)} JPEGs of {mp:.1f} MP at quality {args.jpeg_quality}; random CLIP ViT-B/32; {default_threads()} cores "
          f"for this process ({os.cpu_count()} on the machine); CPU: {cpu_features()}")

    analyzers = {}
    for kind, prec in encoders:
        an = {w: Analyzer(model=str(model), encoder=kind, precision=prec, store=False,
                          batch_size=args.batch, workers=w) for w in (1, 2)}
        enc = an[1].encoder
        an[2]._encoder = enc  # type: ignore[attr-defined]  # one loaded model for both
        analyzers[(kind, prec)] = (enc, an)
    prep = next(iter(analyzers.values()))[0].preprocess
    pixels = np.stack([prep(decode_image(p.read_bytes(), min_side=prep.min_side).image)
                       for p in paths])

    enc_rate: dict[tuple[str, str], list[float]] = {k: [] for k in analyzers}
    scan_rate: dict[tuple[tuple[str, str], int], list[float]] = {
        (k, w): [] for k in analyzers for w in (1, 2)}
    dec: list[float] = []
    own: list[float] = []
    any_an = next(iter(analyzers.values()))[1][1]
    for r in range(args.rounds):
        dec.append(plain_decode_rate(paths, prep, 1, default_threads()))
        own.append(scan_decode_rate(any_an, paths, 1, default_threads()))
        for key, (enc, an) in analyzers.items():
            enc.encode_pixels(pixels[: args.batch])  # warm-up
            t0 = time.perf_counter()
            for i in range(0, len(pixels), args.batch):
                enc.encode_pixels(pixels[i : i + args.batch])
            enc_rate[key].append(len(pixels) / (time.perf_counter() - t0))
            for w in (1, 2):
                t0 = time.perf_counter()
                results = list(an[w].scan(paths))
                scan_rate[(key, w)].append(len(paths) / (time.perf_counter() - t0))
                assert all(res.ok for res in results)
        print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr)
    decode = max(dec)
    own_decode = max(own)

    first: dict[tuple[str, str], tuple[float | None, float]] = {}
    one = paths[0]
    for key in analyzers:
        kind, _ = key
        cold = None
        if not args.skip_cold:
            with tempfile.TemporaryDirectory() as tmp:
                cold = first_result_seconds(model, one, kind, Path(tmp))
        first_result_seconds(model, one, kind, cache)  # fill the cache folder
        warm = min(first_result_seconds(model, one, kind, cache) for _ in range(2))
        first[key] = (cold, warm)

    name = {k: f"{k[0]} ({analyzers[k][0].precision})" for k in analyzers}
    torch_fp32 = next((k for k in analyzers if k == ("torch", "float32")), None)
    hdr = (f"{'encoder':22} {'enc img/s':>9} {'×torch32':>8} {'scan w1':>8} {'scan w2':>8} "
           f"{'limit':>7} {'w1/lim':>6} {'w2/lim':>6} {'w2/own':>6} {'1st cold':>8} "
           f"{'1st warm':>8}")
    print(f"\nplain decode (draft + resize + normalise, {default_threads()} threads): "
          f"{decode:.1f} img/s; scan's own preparation (hash, decode with the native "
          f"blockiness crop, pixel statistics, preprocess): {own_decode:.1f} img/s\n"
          "limit = 1/(1/encoder + 1/plain decode); w2/own = scan w2 ÷ "
          "1/(1/encoder + 1/scan's own preparation)\n")
    print(hdr)
    print("-" * len(hdr))
    for key in analyzers:
        e = max(enc_rate[key])
        s1, s2 = max(scan_rate[(key, 1)]), max(scan_rate[(key, 2)])
        limit = 1 / (1 / e + 1 / decode)
        ratio = e / max(enc_rate[torch_fp32]) if torch_fp32 else float("nan")
        cold, warm = first[key]
        cold_s = f"{cold:7.2f}s" if cold is not None else "       -"
        own_limit = 1 / (1 / e + 1 / own_decode)
        print(f"{name[key]:22} {e:9.1f} {ratio:8.2f} {s1:8.1f} {s2:8.1f} {limit:7.1f} "
              f"{s1 / limit:6.2f} {s2 / limit:6.2f} {s2 / own_limit:6.2f} {cold_s} "
              f"{warm:7.2f}s")
    best_w = {w: np.mean([max(scan_rate[(k, w)]) / max(enc_rate[k]) for k in analyzers])
              for w in (1, 2)}
    print(f"\nmean scan/encoder: workers=1 {best_w[1]:.2f}, workers=2 {best_w[2]:.2f} "
          f"-> better default here: {max(best_w, key=best_w.get)}")
    print(f"(best of {args.rounds} alternating rounds; the machine is shared by other jobs)")
    shutil.rmtree(BENCH / "unused", ignore_errors=True)


if __name__ == "__main__":
    main()
