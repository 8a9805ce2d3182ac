"""Near-duplicate grouping at scale: blocked products vs the naive n × n matrix.

Random unit vectors (100 000 × 512 by default) with a few planted near-duplicate clusters are
grouped by :func:`clipsieve.filtering.dedupe.near_duplicate_groups`; the script prints the
time, the peak of Python-tracked allocations (tracemalloc sees numpy's arrays) above the
input, and the process's peak resident memory. The naive approach (full similarity matrix)
is then measured on a smaller n in the same run, against the blocked one at that n, with the
ratio of the two and the memory the naive matrix would need at the full n.

Usage::

    python benchmarks/dedupe_scale.py                 # 100k x 512, naive at 10k
    python benchmarks/dedupe_scale.py --n 20000 --small 5000
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
import tracemalloc

import numpy as np

from clipsieve.filtering.dedupe import DEFAULT_BLOCK, naive_groups, near_duplicate_groups


def make_vectors(n: int, dim: int, seed: int, clusters: int) -> np.ndarray:
    """Unit vectors; ``clusters`` groups of 2–5 near copies (noise 0.02) replace random rows."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    pos = 0
    for _ in range(clusters):
        k = int(rng.integers(2, 6))
        if pos + k > n:
            break
        base = x[pos]
        for j in range(1, k):
            x[pos + j] = base + 0.02 * rng.standard_normal(dim, dtype=np.float32)
        pos += k
    perm = rng.permutation(n)
    x = x[perm]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def measure(fn, *args, **kw):  # type: ignore[no-untyped-def]
    """(result, seconds, tracemalloc peak bytes) of one call."""
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    dt = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return out, dt, peak


def maxrss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--small", type=int, default=10_000, help="n for the naive comparison")
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--block", type=int, default=DEFAULT_BLOCK)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    mb = 2**20

    x = make_vectors(a.n, a.dim, a.seed, clusters=a.n // 100)
    print(
        f"input: {a.n} x {a.dim} float32 = {x.nbytes / mb:.0f} MB, threshold {a.threshold}, "
        f"block {a.block}"
    )
    groups, dt, peak = measure(near_duplicate_groups, x, a.threshold, block=a.block)
    print(
        f"blocked  n={a.n}: {dt:7.2f} s, {len(groups)} groups, peak above input "
        f"{peak / mb:.0f} MB (tracemalloc), process max RSS {maxrss_mb():.0f} MB"
    )
    naive_full = a.n * a.n * (4 + 1) / mb
    print(
        f"naive    n={a.n}: would need {naive_full / 1024:.1f} GB for the similarity matrix "
        f"and its mask ({naive_full / max(peak / mb, 1e-9):.0f}x the blocked peak)"
    )

    xs = x[: a.small].copy()
    del x
    gb, tb, pb = measure(near_duplicate_groups, xs, a.threshold, block=a.block)
    gn, tn, pn = measure(naive_groups, xs, a.threshold)
    same = gb == gn
    print(f"blocked  n={a.small}: {tb:7.2f} s, peak {pb / mb:.0f} MB")
    print(f"naive    n={a.small}: {tn:7.2f} s, peak {pn / mb:.0f} MB")
    print(
        f"ratio naive/blocked at n={a.small}: time {tn / tb:.2f}x, memory {pn / pb:.2f}x; "
        f"same groups: {same}"
    )
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
