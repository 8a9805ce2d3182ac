"""Throughput of `scan --engine ray` (local Ray) against the local engine, on the same files.

N real multi-megapixel JPEGs (made by scan_throughput.make_photos), a randomly initialised CLIP
ViT-B/32 (real architecture: honest FLOPs), float32, no store, heads: moderation + quality.
Measured in one run:

  (l) the local engine: `Analyzer.scan` end to end, model loaded beforehand;
  (r1) `run_ray_scan` on a local Ray (ray.init(num_cpus=2)) with 1 embedding actor;
  (r2) the same with 2 embedding actors.

The Ray figures include starting Ray and the actors loading the encoder (as a user sees it);
the start-up alone is printed too. On one 2-core machine Ray cannot beat the local engine: it
is there for many machines; this shows its overhead.

Usage: .venv/bin/python benchmarks/ray_scan.py [--n 96]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scan_throughput import BENCH, make_photos, model_dir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=96)
    args = ap.parse_args()

    import ray

    from clipsieve import Analyzer, build_heads
    from clipsieve.ray_engine import run_ray_scan

    model = model_dir()
    folder = BENCH / "photos"
    paths = make_photos(args.n, folder)[: args.n]
    src = Path(tempfile.mkdtemp(prefix="ray-bench-src-"))
    for p in paths:  # exactly N files in the input folder
        (src / p.name).symlink_to(p)

    an = Analyzer(model=str(model), store=False, device="cpu", precision="float32")
    heads = build_heads(an, policy="default", quality=True)
    t0 = time.perf_counter()
    n_local = sum(1 for _ in an.scan([str(src)], heads=heads))
    local = n_local / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    rates = {}
    try:
        for actors in (1, 2):
            out = Path(tempfile.mkdtemp(prefix="ray-bench-out-"))
            t0 = time.perf_counter()
            s = run_ray_scan(str(src), str(out), analyzer=an, heads=heads, actors=actors,
                             cpus_per_actor=1.0)
            rates[actors] = s.written / (time.perf_counter() - t0)
            assert s.written == args.n and s.failed == 0, s
            shutil.rmtree(out)
    finally:
        ray.shutdown()
    shutil.rmtree(src)

    print(f"\n{args.n} JPEGs (6 MP), random CLIP ViT-B/32, float32, 2 cores; "
          f"Ray start-up {ray_start:.1f} s (not in the rates below)")
    print(f"{'engine':<34}{'img/s':>8}{'vs local':>10}")
    print(f"{'local (Analyzer.scan)':<34}{local:>8.1f}{1.0:>10.2f}")
    for actors, r in rates.items():
        print(f"{f'ray, {actors} CPU actor(s)':<34}{r:>8.1f}{r / local:>10.2f}")


if __name__ == "__main__":
    main()
