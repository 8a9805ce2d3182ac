"""Exact search over a store of 100 000 × 512 embeddings: blocked vs the whole matrix.

Fills a temporary store with random unit vectors (as a scan would leave them), then times one
query (a) with :func:`clipsieve.search.search` (exact: the embeddings read block by block
from SQLite, one matrix product per block, a running top 20) and (b) the naive way: read
every embedding into one matrix, one product, sort. Prints time and the peak of
Python-tracked allocations (tracemalloc sees numpy arrays) for each, their ratio, and checks
that both give the same hits. (c) times the blocked products and top-k alone over the same
vectors already in memory, to show how much of (a) is reading SQLite.

Usage::

    python benchmarks/search_exact.py                # 100k x 512
    python benchmarks/search_exact.py --n 20000
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from clipsieve.search import DEFAULT_BLOCK, exact_search, search
from clipsieve.store import Store


def measure(fn, *args, **kw):  # type: ignore[no-untyped-def]
    """(result, seconds, tracemalloc peak bytes): timed in one call without tracemalloc (it
    slows every allocation several times), the peak measured in a second call."""
    gc.collect()
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    dt = time.perf_counter() - t0
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn(*args, **kw)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return out, dt, peak


def naive(store: Store, q: np.ndarray, top: int) -> list[str]:
    rows = store.execute("SELECT sha256, vector FROM embeddings WHERE model='m' AND prep='p'")
    keys = [r[0] for r in rows]
    mat = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
    s = mat @ q
    order = np.argsort(-s, kind="stable")[:top]
    return [keys[i] for i in order]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--block", type=int, default=DEFAULT_BLOCK)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    mb = 2**20
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "s.sqlite")
        t0 = time.perf_counter()
        for i0 in range(0, a.n, 10_000):
            x = rng.standard_normal((min(10_000, a.n - i0), a.dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            store.put_items(
                ({"path": f"/p/{i0 + i}.jpg", "sha256": hashlib.sha256(b"%d" % (i0 + i)).hexdigest(),
                  "embedding": v} for i, v in enumerate(x)), model="m", prep="p")
        store.close()  # as after a scan: the write-ahead log is checkpointed into the file
        store = Store(Path(tmp) / "s.sqlite")
        print(f"store: {a.n} x {a.dim} embeddings ({a.n * a.dim * 4 / mb:.0f} MB of vectors) "
              f"written in {time.perf_counter() - t0:.1f}s")
        q = rng.standard_normal(a.dim).astype(np.float32)
        q /= np.linalg.norm(q)
        best: dict[str, tuple[float, float]] = {}
        same = True
        for _ in range(a.rounds):  # alternate, keep the best of each
            res, tb, pb = measure(search, store, "m", "p", q, top=a.top, exact=True,
                                  block=a.block)
            keys, tn, pn = measure(naive, store, q, a.top)
            same &= [h.sha256 for h in res.hits] == keys
            for name, t, p in (("blocked", tb, pb), ("naive", tn, pn)):
                old = best.get(name, (float("inf"), float("inf")))
                best[name] = (min(old[0], t), min(old[1], p))
        (tb, pb), (tn, pn) = best["blocked"], best["naive"]
        blocks = list(store.iter_embeddings("m", "p", block=a.block))
        tc = min(measure(exact_search, q, blocks, a.top)[1] for _ in range(a.rounds))
        del blocks
        print(f"blocked exact search (block {a.block}): {tb:6.2f} s per query, "
              f"peak {pb / mb:6.1f} MB above the input")
        print(f"naive (whole matrix in memory):        {tn:6.2f} s per query, "
              f"peak {pn / mb:6.1f} MB")
        print(f"products + top-k alone (vectors in memory): {tc:6.2f} s per query "
              f"({tc / tb:.0%} of the blocked search; the rest is reading SQLite)")
        print(f"ratio naive/blocked: time {tn / tb:.2f}x, memory {pn / max(pb, 1):.1f}x; "
              f"same hits: {same}")
        store.close()
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
