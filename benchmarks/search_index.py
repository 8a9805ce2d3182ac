"""The approximate search index at 1 000 000 random 512-d vectors: build time, query latency
(p50/p99) and recall@10 against exact search measured in the same run.

Builds the index as ``clipsieve index build`` does (:func:`clipsieve.search.train_pq`: a
4-bit PQ fast scan, :func:`default_subquantizers` sub-quantisers, trained on a random sample
of :data:`PQ_TRAIN_SAMPLE` vectors, then every vector added in blocks) over synthetic unit
vectors held in memory, and queries it one query at a time through
:class:`clipsieve.search.VectorIndex`, as ``clipsieve search`` does, for several re-ranking
factors (``rerank × 10`` candidates re-scored exactly). The reference is the exact search
(:func:`clipsieve.search.exact_search`, blocked products) over the same vectors; a single
exact query (one matrix-vector product over the vectors in memory) is timed too. Then the
index is written to a file and loaded the way search loads it (memory-mapped), and timed again.

Data (``--data``):

* ``isotropic`` (default, the issue's benchmark): independent uniform directions. The worst
  case of any index that partitions space (inverted lists, graphs): in 512 dimensions the
  10 nearest of a million random points are barely nearer than the rest.
* ``clustered``: like image embeddings, vectors lie in groups: n/500 random centres, each
  vector its centre plus Gaussian noise of a per-group spread (cosine to the centre between
  about 0.6 and 0.85); queries are new draws from the same groups.

``--kind ivf`` benchmarks the inverted lists of earlier versions instead (``--probes``).

Usage::

    python benchmarks/search_index.py                      # 1M x 512, isotropic, pq
    python benchmarks/search_index.py --data clustered
    python benchmarks/search_index.py --rerank 16 32 64 --threads 1 2
    python benchmarks/search_index.py --n 200000 --kind ivf --probes 8 32
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import faiss
import numpy as np

from clipsieve.search import (
    DEFAULT_RERANK,
    PQ_TRAIN_SAMPLE,
    IndexInfo,
    VectorIndex,
    default_lists,
    default_probes,
    default_subquantizers,
    exact_search,
    train_ivf,
    train_pq,
)


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


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB."""
    cur = peak = 0.0
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cur, peak


def timed_queries(search: object, q: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    """Rows found and seconds, one query at a time (two warm-up queries first)."""
    search(q[:1])  # type: ignore[operator]
    search(q[1:2])  # type: ignore[operator]
    lat, found = [], []
    for qi in range(q.shape[0]):
        t1 = time.perf_counter()
        rows = search(q[qi : qi + 1])  # type: ignore[operator]
        lat.append(time.perf_counter() - t1)
        found.append(rows)
    return found, np.array(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--data", choices=["isotropic", "clustered"], default="isotropic")
    ap.add_argument("--kind", choices=["pq", "ivf"], default="pq")
    ap.add_argument("--rerank", type=int, nargs="*",
                    help="(pq) re-ranking factors [default: 8 16 24 32 64 128]")
    ap.add_argument("--probes", type=int, nargs="*",
                    help="(ivf) probe counts [default: the default one, half, 2x and 4x]")
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2],
                    help="FAISS threads to compare single queries at, at the default "
                         "setting [default: 1 2]")
    ap.add_argument("--no-file", action="store_true",
                    help="skip writing and loading the index file")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; faiss "
          f"{faiss.__version__}")
    centres = rng.standard_normal((max(1, a.n // 500), a.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    t0 = time.perf_counter()
    x = make_vectors(a.n, a.dim, a.data, rng, centres)
    q = make_vectors(a.queries, a.dim, a.data, rng, centres)
    rss0, _ = rss_mb()
    print(f"data: {a.n} x {a.dim} {a.data} unit vectors ({x.nbytes / 2**30:.2f} GiB) "
          f"in {time.perf_counter() - t0:.1f}s; {a.queries} queries; RSS {rss0:.0f} MiB")

    # -- exact search: the reference, and one query's latency
    keys = np.arange(a.n)
    t0 = time.perf_counter()
    blocks = ((keys[i : i + 8192], x[i : i + 8192]) for i in range(0, a.n, 8192))
    truth = [{int(k) for k, _ in hits} for hits in exact_search(q, blocks, 10)]
    t_exact_batch = time.perf_counter() - t0
    lat_exact = []
    for qi in range(min(30, a.queries)):
        t1 = time.perf_counter()
        np.argpartition(-(x @ q[qi]), 10)[:10]
        lat_exact.append(time.perf_counter() - t1)
    p50_exact, p99_exact = (float(np.quantile(lat_exact, v)) * 1000 for v in (0.5, 0.99))
    print(f"exact: {t_exact_batch:.1f}s for all {a.queries} queries (blocked, batched); "
          f"one query alone (matrix-vector product in memory, {len(lat_exact)} queries) "
          f"p50 {p50_exact:.0f} ms, p99 {p99_exact:.0f} ms")

    # -- build, as build_index does
    t0 = time.perf_counter()
    if a.kind == "pq":
        m = default_subquantizers(a.dim)
        sample = x[rng.choice(a.n, min(a.n, PQ_TRAIN_SAMPLE), replace=False)]
        index = train_pq(sample, m, seed=a.seed)
        params = {"subquantizers": m, "bits": 4, "padded_dim": -(-a.dim // m) * m,
                  "rerank": DEFAULT_RERANK}
        what = f"pq, {m} x 4-bit sub-quantisers"
    else:
        lists = default_lists(a.n)
        sample = x[rng.choice(a.n, min(a.n, max(64 * lists, 50_000)), replace=False)]
        index = train_ivf(sample, lists, seed=a.seed)
        params = {"lists": lists, "probes": default_probes(lists)}
        what = f"ivf, {lists} lists"
    t_train = time.perf_counter() - t0
    for i in range(0, a.n, 65_536):
        index.add(x[i : i + 65_536])
    t_build = time.perf_counter() - t0
    n_sample = len(sample)
    del sample
    rss1, peak1 = rss_mb()
    print(f"build ({what}): trained on {n_sample} in {t_train:.1f}s, total {t_build:.1f}s; "
          f"RSS +{rss1 - rss0:.0f} MiB over the data (peak {peak1:.0f} MiB)")
    info = IndexInfo(model="bench", prep="bench", count=a.n, newest=0.0, dim=a.dim,
                     kind=a.kind, params=params, ids_sha256="", built_at=time.time(),
                     build_seconds=t_build, faiss_version=faiss.__version__)
    ids = np.zeros((a.n, 32), dtype=np.uint8)
    ids[:, :8] = np.arange(a.n, dtype=">u8").view(np.uint8).reshape(a.n, 8)

    def row_of(sha: str) -> int:
        return int(sha[:16], 16)

    def recall(found: list[list[int]]) -> float:
        return float(np.mean([len(set(f) & t) / 10 for f, t in zip(found, truth)]))

    def run(vi: VectorIndex, setting: int) -> tuple[float, float, float]:
        kw = {"rerank": setting} if a.kind == "pq" else {"probes": setting}
        found, lat = timed_queries(
            lambda qq: [row_of(s) for s, _ in vi.search(qq, 10, **kw)[0]], q)
        return recall(found), float(np.quantile(lat, 0.5)) * 1000, \
            float(np.quantile(lat, 0.99)) * 1000

    vi = VectorIndex(index, ids, info)
    if a.kind == "pq":
        settings = a.rerank or [8, 16, 24, 32, 64, 128]
        default, label = DEFAULT_RERANK, "rerank"
    else:
        default, label = params["probes"], "probes"
        settings = a.probes or sorted({max(1, default // 2), default,
                                       min(params["lists"], default * 2),
                                       min(params["lists"], default * 4)})
    print()
    head = "candidates" if a.kind == "pq" else "lists"
    print(f"| {label} | {head} | recall@10 | p50 ms | p99 ms | p50 vs exact |")
    print("|------:|------:|----------:|-------:|-------:|-------------:|")
    for s in settings:
        r, p50, p99 = run(vi, s)
        mark = " (default)" if s == default else ""
        span = s * 10 if a.kind == "pq" else s
        print(f"| {s}{mark} | {span} | {r:.4f} | {p50:.2f} | {p99:.2f} | "
              f"{p50_exact / p50:.0f}x faster |", flush=True)

    # -- FAISS threads for single queries (VectorIndex uses one), at the default setting
    print()
    print("| FAISS threads | recall@10 | p50 ms | p99 ms |")
    print("|--------------:|----------:|-------:|-------:|")
    for th in a.threads:
        if a.kind == "pq":
            sp = faiss.IndexRefineSearchParameters()
            sp.k_factor = float(default)
        else:
            sp = faiss.SearchParametersIVF()
            sp.nprobe = default
        old = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(th)
        try:
            found, lat = timed_queries(
                lambda qq, sp=sp: index.search(qq, 10, params=sp)[1][0].tolist(), q)  # noqa: F821
        finally:
            faiss.omp_set_num_threads(old)
        print(f"| {th} | {recall(found):.4f} | {np.quantile(lat, 0.5) * 1000:.2f} | "
              f"{np.quantile(lat, 0.99) * 1000:.2f} |", flush=True)

    if a.no_file:
        return
    # -- the file, loaded as load_index loads it (memory-mapped full vectors)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        path = os.path.join(tmp, "bench.faiss")
        t0 = time.perf_counter()
        faiss.write_index(index, path)
        t_write = time.perf_counter() - t0
        size = os.path.getsize(path)
        del vi, index
        rss2, _ = rss_mb()
        t0 = time.perf_counter()
        loaded = faiss.read_index(path, getattr(faiss, "IO_FLAG_MMAP_IFC", 0))
        t_load = time.perf_counter() - t0
        rss3, _ = rss_mb()
        r, p50, p99 = run(VectorIndex(loaded, ids, info), default)
        rss4, _ = rss_mb()
        print()
        print(f"file: {size / 2**20:.0f} MiB ({size / a.n:.0f} bytes a vector), written in "
              f"{t_write:.1f}s; loaded (memory-mapped) in {t_load * 1000:.0f} ms, RSS "
              f"+{rss3 - rss2:.0f} MiB after loading, +{rss4 - rss2:.0f} MiB after "
              f"{a.queries} queries (file pages, shared with the page cache)")
        print(f"loaded index at the default: recall@10 {r:.4f}, p50 {p50:.2f} ms, "
              f"p99 {p99:.2f} ms")


if __name__ == "__main__":
    main()
