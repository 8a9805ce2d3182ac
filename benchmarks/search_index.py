"""The approximate search index at 1 000 000 × 512: build time, query latency, recall@10.

Builds the index exactly as ``clipsieve index build`` does (:func:`clipsieve.search.train_ivf`
with :func:`default_lists` lists, trained on a random sample of ``max(64 × lists, 50 000)``
vectors, then every vector added) over synthetic unit vectors held in memory, and queries it
one query at a time, as ``clipsieve search`` does. The reference is the exact search
(:func:`clipsieve.search.exact_search`, blocked products) over the same vectors, measured in
the same run.

Data (``--data``):

* ``clustered`` (default): like image embeddings, vectors lie in groups: n/500 random
  centres, each vector its centre plus Gaussian noise of a per-group spread (cosine to the
  centre between about 0.6 and 0.85, so two members of a group have cosine 0.35–0.7, well
  above the ~0.2 that the nearest of a million unrelated vectors reaches by chance); queries
  are new draws from the same groups.
* ``isotropic``: independent uniform directions, the worst case of any approximate index
  (in 512 dimensions the 10 nearest of a million random points are barely nearer than the
  rest, so no index can skip much); printed for honesty, not as the target.

Usage::

    python benchmarks/search_index.py                      # 1M x 512, clustered
    python benchmarks/search_index.py --n 200000 --data isotropic
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from clipsieve.search import default_lists, default_probes, exact_search, train_ivf


def make_vectors(n: int, dim: int, kind: str, rng: np.random.Generator,
                 centres: np.ndarray) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for i in range(0, n, 100_000):
        m = min(100_000, n - i)
        if kind == "isotropic":
            x = rng.standard_normal((m, dim), dtype=np.float32)
        else:
            g = rng.integers(0, centres.shape[0], m)
            spread = (0.0265 + 0.0265 * (np.arange(centres.shape[0]) % 7) / 6).astype(np.float32)
            x = centres[g] + rng.standard_normal((m, dim), dtype=np.float32) * spread[g, None]
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[i : i + m] = x
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--data", choices=["clustered", "isotropic"], default="clustered")
    ap.add_argument("--probes", type=int, nargs="*", help="probe counts to try "
                    "[default: the default one, half and double]")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    centres = rng.standard_normal((max(1, a.n // 500), a.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    t0 = time.perf_counter()
    x = make_vectors(a.n, a.dim, a.data, rng, centres)
    q = make_vectors(a.queries, a.dim, a.data, rng, centres)
    print(f"data: {a.n} x {a.dim} {a.data} unit vectors ({x.nbytes / 2**30:.2f} GiB) "
          f"in {time.perf_counter() - t0:.1f}s; {a.queries} queries")

    lists = default_lists(a.n)
    t0 = time.perf_counter()
    sample = x[rng.choice(a.n, min(a.n, max(64 * lists, 50_000)), replace=False)]
    index = train_ivf(sample, lists, seed=a.seed)
    t_train = time.perf_counter() - t0
    for i in range(0, a.n, 65_536):
        index.add(x[i : i + 65_536])
    t_build = time.perf_counter() - t0
    print(f"build: {lists} lists, trained on {len(sample)} in {t_train:.1f}s, "
          f"total {t_build:.1f}s")

    keys = np.arange(a.n)
    t0 = time.perf_counter()
    blocks = ((keys[i : i + 8192], x[i : i + 8192]) for i in range(0, a.n, 8192))
    truth = [[int(k) for k, _ in hits] for hits in exact_search(q, blocks, 10)]
    t_exact_batch = time.perf_counter() - t0
    lat_exact = []
    for qi in range(min(20, a.queries)):
        t1 = time.perf_counter()
        np.argpartition(-(x @ q[qi]), 10)[:10]
        lat_exact.append(time.perf_counter() - t1)
    p50_exact = float(np.median(lat_exact)) * 1000
    print(f"exact: {t_exact_batch:.1f}s for all {a.queries} queries (blocked, batched); "
          f"one query alone p50 {p50_exact:.1f} ms")

    default = default_probes(lists)
    probes = a.probes or sorted({max(1, default // 2), default, min(lists, default * 2),
                                 min(lists, default * 4)})
    print()
    print("| probes | recall@10 | p50 ms | p99 ms | p50 vs exact |")
    print("|-------:|----------:|-------:|-------:|-------------:|")
    for p in probes:
        index.nprobe = p
        index.search(q[:5], 10)  # warm up
        lat = []
        found = []
        for qi in range(a.queries):
            t1 = time.perf_counter()
            _, rows = index.search(q[qi : qi + 1], 10)
            lat.append(time.perf_counter() - t1)
            found.append(rows[0])
        recall = float(np.mean([len(set(f.tolist()) & set(t)) / 10
                                for f, t in zip(found, truth)]))
        p50, p99 = (float(np.quantile(lat, v)) * 1000 for v in (0.5, 0.99))
        mark = " (default)" if p == default else ""
        print(f"| {p}{mark} | {recall:.3f} | {p50:.2f} | {p99:.2f} | "
              f"{p50_exact / p50:.0f}x faster |")


if __name__ == "__main__":
    main()
