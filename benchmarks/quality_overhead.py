"""What the technical quality measures add to `scan` per image, and what the quality head costs.

On N real multi-megapixel JPEGs (the bundled scikit-image photos, randomly cropped and upscaled
to 6 MP, shared with benchmarks/scan_throughput.py) with a randomly initialised CLIP ViT-B/32
(the real architecture, so the FLOPs are honest; cached under .bench/), model loaded, no store:

  (a) `Analyzer(pixel_features=False).scan(paths)` — decode, preprocess, encode;
  (b) `Analyzer(pixel_features=True).scan(paths)` — the same plus `pixel_stats` during decoding;
  (c) (b) with `heads=[QualityHead()]` — plus CLIP-IQA and the 0–10 combination per batch.

(a), (b) and (c) alternate over several rounds; the best (least disturbed) and the median per-image
time of each are reported, with the ratios (b)/(a). Also printed: `pixel_stats` alone on the
decoded images (one thread), and the per-image `decode_ms` with and without it.

Target: (b)/(a) <= 1.10 — the technical measures add at most 10% to scan time per image.

Usage: .venv/bin/python benchmarks/quality_overhead.py [--n 48] [--rounds 3] [--precision auto]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scan_throughput import BENCH, make_photos, model_dir  # noqa: E402


def timed_scan(analyzer, paths, heads=()):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    items = list(analyzer.scan(paths, heads=heads))
    elapsed = time.perf_counter() - t0
    assert all(it.ok for it in items), [it.error for it in items if not it.ok]
    decode = statistics.median(it.timing.get("decode_ms", 0.0) for it in items)
    return elapsed * 1000 / len(paths), decode, items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=48, help="number of 6 MP JPEGs")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds of (a) and (b)")
    ap.add_argument("--precision", default="auto", help="auto, float32 or bfloat16")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    from clipsieve.media.decode import decode_image
    from clipsieve.pipeline import Analyzer
    from clipsieve.quality import QualityHead, pixel_stats

    paths = [str(p) for p in make_photos(args.n, BENCH / f"photos-{args.n}")]
    model = model_dir()
    plain = Analyzer(str(model), store=False, precision=args.precision,
                     batch_size=args.batch_size, pixel_features=False).load()
    pixel = Analyzer(str(model), store=False, precision=args.precision,
                     batch_size=args.batch_size, pixel_features=True).load()
    timed_scan(plain, paths[: args.batch_size])  # warm up both (threads, allocator, caches)
    timed_scan(pixel, paths[: args.batch_size])

    head = QualityHead()
    timed_scan(pixel, paths[:4], heads=[head])  # prompt anchors, once per model
    a_runs, b_runs, c_runs, a_dec, b_dec = [], [], [], [], []
    for _ in range(args.rounds):
        ms, dec, _ = timed_scan(plain, paths)
        a_runs.append(ms)
        a_dec.append(dec)
        ms, dec, _ = timed_scan(pixel, paths)
        b_runs.append(ms)
        b_dec.append(dec)
        ms, _, items = timed_scan(pixel, paths, heads=[head])
        c_runs.append(ms)
    c_ms = min(c_runs)

    prep = pixel.preprocess
    decoded = [decode_image(Path(p).read_bytes(), p, min_side=prep.min_side) for p in paths[:16]]
    t0 = time.perf_counter()
    for dec in decoded:
        pixel_stats(dec.image, original_size=(dec.width, dec.height), jpeg_quant=dec.jpeg_quant)
    stats_ms = (time.perf_counter() - t0) * 1000 / len(decoded)

    a, b = min(a_runs), min(b_runs)
    am, bm = statistics.median(a_runs), statistics.median(b_runs)
    w, h = decoded[0].width, decoded[0].height
    print(f"{args.n} JPEGs of {w}x{h} ({w * h / 1e6:.1f} MP), random ViT-B/32, "
          f"precision {pixel.precision}, batch {args.batch_size}, {pixel.workers} decode "
          f"threads, {args.rounds} alternating rounds")
    print()
    print("| run | best ms / image | median ms / image | images/s (best) | median decode_ms |")
    print("|-----|----------------:|------------------:|----------------:|-----------------:|")
    print(f"| (a) scan, pixel_features=False | {a:.1f} | {am:.1f} | {1000 / a:.2f} | "
          f"{statistics.median(a_dec):.1f} |")
    print(f"| (b) scan, pixel_features=True | {b:.1f} | {bm:.1f} | {1000 / b:.2f} | "
          f"{statistics.median(b_dec):.1f} |")
    print(f"| (c) (b) + QualityHead | {c_ms:.1f} | {statistics.median(c_runs):.1f} | "
          f"{1000 / c_ms:.2f} | |")
    print()
    print(f"pixel_stats alone: {stats_ms:.2f} ms / image (one thread, on the decoded "
          f"{decoded[0].image.size[0]}x{decoded[0].image.size[1]} image)")
    print(f"rounds (a): {', '.join(f'{x:.1f}' for x in a_runs)} ms; "
          f"(b): {', '.join(f'{x:.1f}' for x in b_runs)} ms")
    ratio = b / a
    verdict = "PASS" if ratio <= 1.10 else "FAIL"
    print(f"ratio (b)/(a): best {ratio:.3f}, median {bm / am:.3f} -> technical measures add "
          f"{100 * (ratio - 1):+.1f}% per image (best) [target <= +10%: {verdict}]")
    print(f"quality head: {c_ms - b:+.1f} ms / image over (b) best; example score "
          f"{items[0].quality.score:.2f} ({Path(items[0].path).name})")


if __name__ == "__main__":
    main()
