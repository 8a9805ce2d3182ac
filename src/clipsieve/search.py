"""Find stored images by text or by image, over the embeddings already in the store.

Search never decodes an image and never runs the image encoder: the query is a text
embedding (the text encoder only), or the stored embedding of a file or content hash. The
candidates are the store's embeddings of one (model, preprocessing version, encoder): those
of the torch encoder by default, or of ``onnx`` / ``onnx-int8`` scans, whose text queries that
encoder embeds too.

* **Exact search** reads the embeddings block by block (:meth:`Store.iter_embeddings`) and
  keeps a running top-k per query from one ``block × queries`` matrix product per block, so
  memory is one block plus the top-k, whatever the store's size (as ``filter --dedupe``).
* **Approximate search** uses a FAISS index written beside the store by :func:`build_index`
  (``clipsieve index build``). The default kind, ``pq``, makes no assumption about the data: a
  4-bit product-quantisation fast scan over every vector (``IndexPQFastScan``, one
  sub-quantiser per two dimensions) picks ``rerank × top`` candidates, which are re-scored
  against the full vectors (``IndexRefineFlat``), so scores are exact cosines. ``ivf``
  (``IndexIVFFlat``, inverted lists) is the index of earlier versions: fast on clustered
  embeddings, but on structureless ones its recall collapses. The index records which
  embeddings it covers (their count and newest ``created_at``, plus the hash of every row);
  :func:`search` uses it only while the store still has exactly those embeddings and falls
  back to exact search otherwise.

Hits are content hashes (identical files share one embedding) with their cosine similarity
and the stored results (paths, moderation, quality…) of the files that have that content.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipsieve.errors import ConfigError, StoreError
from clipsieve.store import DEFAULT_ENCODER, Store

#: Rows per block of the exact search (8192 × 512 float32 = 16 MB).
DEFAULT_BLOCK = 8192

#: Version of the index files; an index of another version is treated as absent.
INDEX_FORMAT = 2


@dataclass
class Hit:
    """One search hit.

    Attributes:
        sha256: content hash of the image (its embedding's key).
        score: cosine similarity to the query (-1..1).
        results: the stored results of the files with this content (path order; may be
            empty when the embedding is stored but no result is).
    """

    sha256: str
    score: float
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [str(r.get("path")) for r in self.results]

    @property
    def path(self) -> str | None:
        return self.paths[0] if self.results else None

    def to_dict(self, rank: int | None = None) -> dict[str, Any]:
        """The JSONL form: rank, score, sha256, path, paths and the first result's head
        fields (moderation decision, quality score, labels)."""
        first = self.results[0] if self.results else {}
        out: dict[str, Any] = {}
        if rank is not None:
            out["rank"] = rank
        out.update(score=round(float(self.score), 6), sha256=self.sha256, path=self.path,
                   paths=self.paths)
        mod = first.get("moderation")
        if isinstance(mod, dict):
            out["moderation"] = {"decision": mod.get("decision")}
        q = first.get("quality")
        if isinstance(q, dict):
            out["quality"] = {"score": q.get("score")}
        if first.get("labels") is not None:
            out["labels"] = first["labels"]
        return out


@dataclass
class SearchResult:
    """What :func:`search` found and how.

    Attributes:
        hits: best first.
        method: ``"exact"`` or ``"index"``.
        model: the model id whose embeddings were searched.
        prep: their preprocessing version.
        candidates: how many stored embeddings were searched.
        note: why the index was not used, when one exists but is stale.
        encoder: the encoder whose embeddings were searched.
    """

    hits: list[Hit]
    method: str
    model: str
    prep: str
    candidates: int
    note: str | None = None
    encoder: str = DEFAULT_ENCODER


# -- exact search ---------------------------------------------------------------------------


class TopK:
    """A running top-k per query over scored candidates given block by block.

    Ties are broken by the candidate's key (ascending), so the result does not depend on
    the block size.
    """

    def __init__(self, n_queries: int, k: int) -> None:
        self.k = int(k)
        self.scores = np.full((n_queries, 0), -np.inf, dtype=np.float32)
        self.keys = np.empty((n_queries, 0), dtype=object)

    def add(self, scores: np.ndarray, keys: Sequence[str]) -> None:
        """Merge a block: ``scores`` (queries × block), ``keys`` one per block row."""
        if scores.shape[1] == 0 or self.k == 0:
            return
        karr = np.empty(len(keys), dtype=object)
        karr[:] = list(keys)
        k = self.k
        part: np.ndarray | None = None
        if scores.shape[1] > k:
            # candidates: the block's k best per query (ties at the cut kept by key order
            # below, since argpartition may split equal scores arbitrarily)
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            cand_s = np.take_along_axis(scores, part, axis=1)
            cut = cand_s.min(axis=1, keepdims=True)
            if np.any((scores == cut).sum(axis=1) > (cand_s == cut).sum(axis=1)):
                part = None  # ties straddle the cut: keep the whole block (rare)
        for qi in range(scores.shape[0]):
            if part is None:
                s_new, k_new = scores[qi], karr
            else:
                s_new, k_new = scores[qi, part[qi]], karr[part[qi]]
            s_all = np.concatenate([self.scores[qi], s_new])
            k_all = np.concatenate([self.keys[qi], k_new])
            order = sorted(range(len(s_all)), key=lambda i: (-float(s_all[i]), k_all[i]))[:k]
            if qi == 0:
                new_s = np.full((scores.shape[0], len(order)), -np.inf, dtype=np.float32)
                new_k = np.empty((scores.shape[0], len(order)), dtype=object)
            new_s[qi] = s_all[order]
            new_k[qi] = k_all[order]
        self.scores, self.keys = new_s, new_k

    def result(self, qi: int = 0) -> list[tuple[str, float]]:
        return [(str(k), float(s)) for k, s in zip(self.keys[qi], self.scores[qi])
                if np.isfinite(s)]


def exact_search(
    queries: np.ndarray,
    blocks: Iterable[tuple[Sequence[str], np.ndarray]],
    top: int,
    *,
    keep: Callable[[str], bool] | None = None,
) -> list[list[tuple[str, float]]]:
    """The ``top`` best candidates per query by inner product, one block at a time.

    Args:
        queries: (Q, D) unit-length queries.
        blocks: ``(keys, matrix)`` pairs, e.g. :meth:`Store.iter_embeddings`.
        top: hits per query.
        keep: when given, only candidates whose key it accepts.

    Returns:
        Per query, ``(key, score)`` best first (ties by key).
    """
    q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    best = TopK(q.shape[0], top)
    with _blas_threads(1 if q.shape[0] <= 16 else None):
        _exact_blocks(q, blocks, best, keep)
    return [best.result(i) for i in range(q.shape[0])]


def _blas_threads(n: int | None) -> Any:
    """Limit BLAS threads (threadpoolctl, with scikit-learn) for matrix-vector products:
    they are memory-bound, and a threaded BLAS on a busy machine can be several times
    slower than one thread (see ``benchmarks/search_exact.py``)."""
    import contextlib

    if n is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - comes with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def _exact_blocks(q: np.ndarray, blocks: Iterable[tuple[Sequence[str], np.ndarray]],
                  best: TopK, keep: Callable[[str], bool] | None) -> None:
    for keys, mat in blocks:
        if keep is not None:
            mask = np.fromiter((keep(k) for k in keys), dtype=bool, count=len(keys))
            if not mask.any():
                continue
            if not mask.all():
                mat = mat[mask]
                keys = [k for k, m in zip(keys, mask) if m]
        best.add((mat @ q.T).T, keys)


# -- the index ------------------------------------------------------------------------------

#: The kinds of index :func:`build_index` writes, the default first: ``pq`` (a 4-bit
#: product-quantisation fast scan over every vector, its best candidates re-scored exactly) and
#: ``ivf`` (inverted lists, the index of clipsieve before 0.x; kept for stores that use it).
INDEX_KINDS = ("pq", "ivf")

#: Re-ranking factor of a ``pq`` index: the fast scan keeps ``rerank × top`` candidates per
#: query, and those are scored exactly. 32 reaches recall@10 0.98 at a million random
#: 512-d vectors (see ``benchmarks/search_index.py`` and the README).
DEFAULT_RERANK = 32

#: Vectors a ``pq`` index is trained on (16 centroids per sub-quantiser need few).
PQ_TRAIN_SAMPLE = 100_000

#: Queries up to this many per call run on one FAISS thread (a single query is memory-bound,
#: and a second thread on a busy machine mostly waits for a core).
_ONE_THREAD_QUERIES = 16


def _require_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ConfigError(
            "the search index needs FAISS: pip install 'clipsieve[search]' (faiss-cpu); "
            "search without an index is exact and needs nothing more"
        ) from None
    return faiss


@contextlib.contextmanager
def _faiss_threads(n_queries: int) -> Iterator[None]:
    """One OpenMP thread for a few queries (the setting is per calling thread)."""
    faiss = _require_faiss()
    if n_queries > _ONE_THREAD_QUERIES:
        yield
        return
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)


def index_paths(store_path: str | os.PathLike[str], model: str, prep: str,
                encoder: str = DEFAULT_ENCODER) -> tuple[Path, Path, Path]:
    """Where the index of one (model, preprocessing, encoder) lives: beside the store file.

    ``STORE.index-<12 hex>.faiss`` (the FAISS index), ``.ids.npy`` (the sha256 of each row,
    as 32 raw bytes) and ``.json`` (what it covers and how it was built). The tag hashes the
    model and preprocessing version, and the encoder unless it is torch (so the index files
    of earlier versions, all torch, keep their names).
    """
    key = f"{model}\0{prep}" + (f"\0{encoder}" if encoder != DEFAULT_ENCODER else "")
    tag = hashlib.sha256(key.encode()).hexdigest()[:12]
    base = Path(os.fspath(store_path))
    stem = f"{base.name}.index-{tag}"
    return (base.with_name(stem + ".faiss"), base.with_name(stem + ".ids.npy"),
            base.with_name(stem + ".json"))


def default_subquantizers(dim: int) -> int:
    """4-bit sub-quantisers of a ``pq`` index of ``dim`` dimensions: one per two dimensions
    (256 at 512-d, 384 at 768-d, 512 at 1024-d); an odd dimension is padded with a zero.

    At a million random 512-d vectors, 256 sub-quantisers reach recall@10 0.98 re-ranking
    32 × top candidates, where 128 (four dimensions each) need 512 × top for 0.96 at a
    similar query time (see ``benchmarks/search_index.py``).
    """
    return max(1, (int(dim) + 1) // 2)


def default_lists(n: int) -> int:
    """Inverted lists of an ``ivf`` index of ``n`` vectors: about 2√n (2000 at a million: 500
    vectors a list), at least 1 and at most n / 39 (FAISS wants 39 training points per list)."""
    return int(max(1, min(round(2 * np.sqrt(n)), n // 39 if n >= 39 else 1)))


def default_probes(lists: int) -> int:
    """Lists an ``ivf`` index visits per query by default: max(8, lists / 128), 15 at a
    million vectors."""
    return int(max(1, min(lists, max(8, lists // 128))))


@dataclass
class IndexInfo:
    """The sidecar of an index: what it covers and how it was built.

    Attributes:
        model, prep: whose embeddings.
        count, newest: how many it covers and the newest one's ``created_at`` (the store's
            :meth:`~clipsieve.store.Store.embedding_fingerprint` when it was built).
        dim: their dimension.
        kind: one of :data:`INDEX_KINDS`.
        params: the kind's parameters: ``subquantizers``, ``bits``, ``padded_dim`` and
            ``rerank`` (``pq``); ``lists`` and ``probes`` (``ivf``).
        ids_sha256: hash of the row ids file's content hashes, in row order.
        encoder: the encoder whose embeddings it covers (format 1: torch, the only one).
        format: :data:`INDEX_FORMAT` (1: written before index kinds existed; an ``ivf``).
    """

    model: str
    prep: str
    count: int
    newest: float
    dim: int
    kind: str
    params: dict[str, int]
    ids_sha256: str
    built_at: float
    build_seconds: float
    faiss_version: str
    encoder: str = DEFAULT_ENCODER
    format: int = INDEX_FORMAT

    @property
    def lists(self) -> int | None:
        return self.params.get("lists")

    @property
    def probes(self) -> int | None:
        return self.params.get("probes")

    @property
    def rerank(self) -> int | None:
        return self.params.get("rerank")

    def describe(self) -> str:
        """One line: the kind and its parameters."""
        p = self.params
        if self.kind == "pq":
            return (f"PQ fast scan, {p['subquantizers']} x {p['bits']}-bit codes, the best "
                    f"{p['rerank']} x top re-ranked exactly")
        return f"{p['lists']} inverted lists, {p['probes']} probed per query"

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IndexInfo:
        """A sidecar's content, of this format or of format 1 (an ``ivf`` index, its lists and
        probes as top-level fields).

        Raises:
            ValueError: another format, or fields missing.
        """
        raw = dict(raw)
        fmt = raw.get("format")
        if fmt == 1:
            raw["kind"] = "ivf"
            raw["params"] = {"lists": int(raw.pop("lists")), "probes": int(raw.pop("probes"))}
        elif fmt != INDEX_FORMAT:
            raise ValueError(f"index format {fmt!r}")
        if raw.get("kind") not in INDEX_KINDS:
            raise ValueError(f"index kind {raw.get('kind')!r}")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise ValueError(str(exc)) from None


class VectorIndex:
    """A loaded index with the content hash of each row.

    Attributes:
        index: the FAISS index (it owns the objects below it; keep it alive).
        ids: (rows, 32) uint8, the sha256 of each row.
        info: its sidecar.
    """

    def __init__(self, index: Any, ids: np.ndarray, info: IndexInfo) -> None:
        faiss = _require_faiss()
        self.index = index
        self.ids = ids
        self.info = info
        self._flat: Any = None
        if info.kind == "pq":
            inner = index
            if isinstance(index, faiss.IndexPreTransform):  # an odd dimension, padded
                inner = faiss.downcast_index(index.index)
            if not isinstance(inner, faiss.IndexRefineFlat):
                raise ValueError(f"a pq index must be an IndexRefineFlat, not {type(inner)}")
            self._flat = faiss.downcast_index(inner.refine_index)  # every vector, exact
        elif not isinstance(index, faiss.IndexIVF):
            raise ValueError(f"an ivf index must be an IndexIVF, not {type(index)}")

    def search(
        self, queries: np.ndarray, top: int, *, probes: int | None = None,
        rerank: int | None = None,
    ) -> list[list[tuple[str, float]]]:
        """The ``top`` nearest rows per query, ``(sha256, score)`` best first.

        Args:
            queries: (Q, dim) unit-length queries.
            top: hits per query.
            probes: (``ivf``) lists visited, instead of the index's own.
            rerank: (``pq``) re-ranking factor, instead of the index's own: the fast scan
                keeps ``rerank × top`` candidates, scored exactly. When that covers every
                row, every row is scored exactly (a small store).
        """
        faiss = _require_faiss()
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = int(min(top, self.info.count))
        if k <= 0:
            return [[] for _ in range(q.shape[0])]
        with _faiss_threads(q.shape[0]):
            if self.info.kind == "ivf":
                params = faiss.SearchParametersIVF()
                params.nprobe = int(probes or self.info.probes or 1)
                scores, rows = self.index.search(q, k, params=params)
            else:
                factor = max(1, int(rerank or self.info.rerank or DEFAULT_RERANK))
                if k * factor >= self.info.count:
                    pad = self._flat.d - q.shape[1]
                    qp = np.ascontiguousarray(np.pad(q, ((0, 0), (0, pad)))) if pad else q
                    scores, rows = self._flat.search(qp, k)
                else:
                    inner = faiss.IndexRefineSearchParameters()
                    inner.k_factor = float(factor)
                    params = inner
                    if isinstance(self.index, faiss.IndexPreTransform):
                        params = faiss.SearchParametersPreTransform()
                        params.index_params = inner  # ``inner`` stays referenced above
                    scores, rows = self.index.search(q, k, params=params)
        out = []
        for srow, rrow in zip(scores, rows):
            out.append([(self.ids[r].tobytes().hex(), float(s))
                        for s, r in zip(srow, rrow) if r >= 0])
        return out


def train_ivf(train: np.ndarray, lists: int, *, seed: int = 0) -> Any:
    """An empty FAISS ``IndexIVFFlat`` (inner product) with ``lists`` inverted lists, its
    coarse quantizer trained by k-means on ``train`` (rows, unit length)."""
    faiss = _require_faiss()
    dim = int(train.shape[1])
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, int(lists), faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(np.ascontiguousarray(train, dtype=np.float32))
    return index


def train_pq(train: np.ndarray, subquantizers: int | None = None, *, seed: int = 0) -> Any:
    """An empty ``pq`` index for rows like ``train`` (unit length), its product quantiser
    trained by k-means on them.

    A FAISS ``IndexRefineFlat`` (inner product) over an ``IndexPQFastScan`` of
    ``subquantizers`` 4-bit codes (default :func:`default_subquantizers`): a query scans
    every code with SIMD lookup tables, and the best ``rerank × top`` are re-scored against
    the full vectors, which the index also holds, so scores are exact inner products. A
    dimension that ``subquantizers`` does not divide is padded with zeros (a
    ``RemapDimensionsTransform`` in front, which leaves inner products unchanged). With fewer
    than 16 training rows (16 centroids per sub-quantiser) the rows are repeated.
    """
    faiss = _require_faiss()
    dim = int(train.shape[1])
    m = int(subquantizers or default_subquantizers(dim))
    if not 1 <= m <= dim:
        raise ConfigError(f"{{subquantizers}} must be between 1 and the dimension ({dim})",
                          params={"subquantizers": "subquantizers"})
    padded = -(-dim // m) * m
    refine = faiss.index_factory(padded, f"PQ{m}x4fs,RFlat", faiss.METRIC_INNER_PRODUCT)
    base = faiss.downcast_index(refine.base_index)  # ``refine`` owns it and stays referenced
    base.pq.cp.seed = seed
    base.pq.cp.min_points_per_centroid = 1  # no FAISS warning for a small store
    index = refine
    if padded != dim:
        index = faiss.IndexPreTransform(faiss.RemapDimensionsTransform(dim, padded, False),
                                        refine)
    x = np.ascontiguousarray(train, dtype=np.float32)
    if x.shape[0] < 16:
        x = np.ascontiguousarray(np.resize(x, (16, dim)))
    index.train(x)
    return index


def _index_kind(kind: str | None, *, lists: int | None, probes: int | None,
                rerank: int | None, subquantizers: int | None) -> str:
    """The kind to build: ``kind``, or ``ivf`` when only its parameters are given (the
    options of the versions before index kinds), else ``pq``."""
    if kind is None:
        kind = "ivf" if (lists or probes) else "pq"
    if kind not in INDEX_KINDS:
        raise ConfigError(f"unknown index kind {kind!r} for {{kind}}; choose one of: "
                          + ", ".join(INDEX_KINDS), params={"kind": "kind"})
    if kind == "pq" and (lists or probes):
        raise ConfigError("{lists} and {probes} apply to an ivf index only (the {kind} is pq)",
                          params=("lists", "probes", "kind"))
    if kind == "ivf" and (rerank or subquantizers):
        name = "rerank" if rerank else "subquantizers"
        raise ConfigError(f"{{{name}}} applies to a pq index only (the {{kind}} is ivf)",
                          params=(name, "kind"))
    return kind


def build_index(
    store: Store,
    model: str,
    prep: str,
    *,
    kind: str | None = None,
    rerank: int | None = None,
    subquantizers: int | None = None,
    lists: int | None = None,
    probes: int | None = None,
    sample: int | None = None,
    block: int = DEFAULT_BLOCK,
    seed: int = 0,
    on_progress: Callable[[int, int], None] | None = None,
    encoder: str = DEFAULT_ENCODER,
) -> IndexInfo:
    """Build the approximate index of one (model, preprocessing, encoder)'s embeddings beside
    the store.

    Trains the index on a uniform random sample of the embeddings, then adds every embedding
    block by block. The files are written under temporary names and renamed into place, the
    sidecar last.

    Args:
        store: a file-backed store.
        model, prep: which embeddings.
        kind: ``"pq"`` or ``"ivf"`` (:data:`INDEX_KINDS`); default ``"ivf"`` when ``lists``
            or ``probes`` is given, else ``"pq"``.
        rerank: (pq) re-ranking factor by default (default :data:`DEFAULT_RERANK`).
        subquantizers: (pq) 4-bit sub-quantisers (default :func:`default_subquantizers`).
        lists: (ivf) inverted lists (default :func:`default_lists`).
        probes: (ivf) lists visited per query by default (default :func:`default_probes`).
        sample: training sample size (default :data:`PQ_TRAIN_SAMPLE` for pq,
            ``max(64 × lists, 50 000)`` for ivf).
        on_progress: ``on_progress(added, total)`` after each block.
        encoder: whose embeddings (``"torch"``, ``"onnx"``, ``"onnx-int8"``).

    Raises:
        StoreError: no embeddings of that model, or an in-memory store.
        ConfigError: FAISS is not installed, or parameters of the other kind.
    """
    kind = _index_kind(kind, lists=lists, probes=probes, rerank=rerank,
                       subquantizers=subquantizers)
    faiss = _require_faiss()
    if store.path == ":memory:":
        raise StoreError("an index needs a store file (not :memory:)")
    t0 = time.perf_counter()
    count, newest = store.embedding_fingerprint(model, prep, encoder=encoder)
    if count == 0:
        raise StoreError(f"no stored embeddings of {model} (preprocessing {prep}, encoder "
                         f"{encoder}) to index")
    params: dict[str, int] = {}
    if kind == "ivf":
        nlist = max(1, min(int(lists or default_lists(count)), count))
        n_train = int(sample or max(64 * nlist, 50_000))
    else:
        n_train = int(sample or PQ_TRAIN_SAMPLE)
    rng = np.random.default_rng(seed)
    # pass 1: a uniform random sample for training, and the dimension
    p = min(1.0, n_train / count)
    parts: list[np.ndarray] = []
    dim = 0
    for _, mat in store.iter_embeddings(model, prep, block=block, encoder=encoder):
        dim = mat.shape[1]
        parts.append(mat if p >= 1.0 else mat[rng.random(mat.shape[0]) < p])
    train = np.ascontiguousarray(np.concatenate(parts))
    del parts
    if kind == "ivf":
        if train.shape[0] < nlist:
            nlist = max(1, train.shape[0])
        index = train_ivf(train, nlist, seed=seed)
        params = {"lists": nlist, "probes": min(int(probes or default_probes(nlist)), nlist)}
    else:
        m = int(subquantizers or default_subquantizers(dim))
        index = train_pq(train, m, seed=seed)
        params = {"subquantizers": m, "bits": 4, "padded_dim": -(-dim // m) * m,
                  "rerank": int(rerank or DEFAULT_RERANK)}
    del train
    # pass 2: every embedding, in table order (row i = ids[i])
    ids = np.empty((count, 32), dtype=np.uint8)
    digest = hashlib.sha256()
    added = 0
    for shas, mat in store.iter_embeddings(model, prep, block=block, encoder=encoder):
        n = len(shas)
        if added + n > count:
            raise StoreError("embeddings were added while the index was built; build again")
        raw = bytes.fromhex("".join(shas))
        ids[added : added + n] = np.frombuffer(raw, dtype=np.uint8).reshape(n, 32)
        digest.update(raw)
        index.add(np.ascontiguousarray(mat))
        added += n
        if on_progress is not None:
            on_progress(added, count)
    if added != count or \
            store.embedding_fingerprint(model, prep, encoder=encoder) != (count, newest):
        raise StoreError("embeddings changed while the index was built; build again")
    info = IndexInfo(
        model=model, prep=prep, count=count, newest=newest, dim=dim, kind=kind, params=params,
        ids_sha256=digest.hexdigest(), built_at=time.time(),
        build_seconds=round(time.perf_counter() - t0, 3), faiss_version=faiss.__version__,
        encoder=encoder,
    )
    f_index, f_ids, f_json = index_paths(store.path, model, prep, encoder)
    tmp = f".tmp-{os.getpid()}"
    try:
        if f_json.exists():  # a reader must never pair the new index with the old sidecar
            f_json.unlink()
        faiss.write_index(index, str(f_index) + tmp)
        with open(str(f_ids) + tmp, "wb") as fh:
            np.save(fh, ids)
        Path(str(f_json) + tmp).write_text(info.to_json(), encoding="utf-8")
        os.replace(str(f_index) + tmp, f_index)
        os.replace(str(f_ids) + tmp, f_ids)
        os.replace(str(f_json) + tmp, f_json)
    finally:
        for f in (f_index, f_ids, f_json):
            if os.path.exists(str(f) + tmp):
                os.unlink(str(f) + tmp)
    return info


def _read_info(store_path: str | os.PathLike[str], model: str, prep: str,
               encoder: str) -> tuple[IndexInfo | None, str | None]:
    """(the sidecar, why an existing sidecar cannot be used)."""
    _, _, f_json = index_paths(store_path, model, prep, encoder)
    try:
        text = f_json.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"the index sidecar {f_json} cannot be read ({exc.strerror})"
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        info = IndexInfo.from_dict(raw)
        if (info.model, info.prep, info.encoder) != (model, prep, encoder):
            raise ValueError(f"it is the index of {info.model}, {info.prep}, {info.encoder}")
        return info, None
    except ValueError as exc:
        return None, (f"the index {f_json.name} was written by another version of clipsieve "
                      f"or is damaged ({exc}); run `clipsieve index build`")


def read_index_info(store_path: str | os.PathLike[str], model: str, prep: str,
                    encoder: str = DEFAULT_ENCODER) -> IndexInfo | None:
    """The sidecar of the index of (model, prep, encoder), or ``None`` if there is none (or
    it is of another format, or unreadable: :func:`index_status` says why)."""
    return _read_info(store_path, model, prep, encoder)[0]


def index_status(store: Store, model: str, prep: str, *,
                 encoder: str = DEFAULT_ENCODER) -> tuple[IndexInfo | None, str | None]:
    """(the index's sidecar, why it cannot be used) — the reason is ``None`` when it is fresh
    or when there is no index at all (no sidecar)."""
    if store.path == ":memory:":
        return None, None
    info, why = _read_info(store.path, model, prep, encoder)
    if info is None:
        return None, why
    count, newest = store.embedding_fingerprint(model, prep, encoder=encoder)
    if (count, newest) != (info.count, info.newest):
        return info, (f"the index covers {info.count} embeddings and the store now has "
                      f"{count} (or some changed); run `clipsieve index build`")
    return info, None


def load_index(store: Store, model: str, prep: str, *,
               encoder: str = DEFAULT_ENCODER) -> VectorIndex | None:
    """The fresh index of (model, prep, encoder), or ``None`` (absent, stale or unreadable)."""
    info, why = index_status(store, model, prep, encoder=encoder)
    if info is None or why is not None:
        return None
    faiss = _require_faiss()
    f_index, f_ids, _ = index_paths(store.path, model, prep, encoder)
    try:
        # the full vectors of a pq index (and of the lists' quantizer) are memory-mapped, not
        # read: loading takes milliseconds whatever the size, and a query reads only its
        # candidates' rows (the file is replaced, never rewritten, by a new build)
        index = faiss.read_index(str(f_index), getattr(faiss, "IO_FLAG_MMAP_IFC", 0))
        ids = np.load(f_ids, allow_pickle=False)
        if ids.shape != (info.count, 32) or index.ntotal != info.count or index.d != info.dim:
            return None
        return VectorIndex(index, ids, info)
    except (OSError, RuntimeError, ValueError):
        return None


# -- the search ------------------------------------------------------------------------------


def stored_prep(store: Store, model: str, prep: str | None = None, *,
                encoder: str = DEFAULT_ENCODER) -> str:
    """The preprocessing version whose embeddings (of ``encoder``) to search.

    ``prep`` when given; else the model's own (from its checkpoint config) when the store has
    embeddings of it; else the only one the store has for the model.
    """
    kinds = [(p, n) for m, p, n in store.embedding_kinds(encoder) if m == model]
    if prep is not None:
        return prep
    if not kinds:
        others = [e for e in ("torch", "onnx", "onnx-int8") if e != encoder
                  and any(m == model for m, _, _ in store.embedding_kinds(e))]
        if others:
            raise StoreError(
                f"the store has no embeddings of {model} from the {encoder} encoder (it has "
                f"some from: {', '.join(others)}); pass {{encoder}}",
                params={"encoder": "the encoder argument"},
            )
        have = sorted({m for m, _, _ in store.embedding_kinds(encoder)})
        raise StoreError(
            f"the store has no embeddings of {model}"
            + (f" from the {encoder} encoder" if encoder != DEFAULT_ENCODER else "")
            + (f" (it has: {', '.join(have)}); pass {{model}}" if have else "; scan images first"),
            params={"model": "the model argument"},
        )
    if len(kinds) == 1:
        return kinds[0][0]
    try:
        from clipsieve.backends.clip import load_preprocess

        own = load_preprocess(model).version
    except Exception:  # noqa: BLE001 - config unavailable: choose the largest set below
        own = None
    if own is not None and any(p == own for p, _ in kinds):
        return own
    return max(kinds, key=lambda kv: kv[1])[0]


def query_for_image(store: Store, model: str, prep: str, image: str | os.PathLike[str], *,
                    encoder: str = DEFAULT_ENCODER) -> tuple[str, np.ndarray]:
    """(sha256, stored embedding) of a content hash or an image file, without decoding.

    A 64-hex-digit string is a content hash; anything else is a file (or a tar member
    ``shard.tar#member``), found by its recorded hash when its size and modification time are
    unchanged, else by hashing its bytes.

    Raises:
        StoreError: the image has no stored embedding of this model (scan it first).
    """
    text = os.fspath(image)
    sha: str | None = None
    if len(text) == 64 and all(c in "0123456789abcdef" for c in text.lower()) and \
            not os.path.exists(text):
        sha = text.lower()
    elif not os.path.exists(text) and "#" in text:  # a tar member: shard.tar#member
        from clipsieve.errors import DecodeError
        from clipsieve.media.inputs import read_named

        try:
            sha = hashlib.sha256(read_named(text)).hexdigest()
        except DecodeError as exc:
            raise StoreError(f"{text}: {exc.message}") from None
    else:
        try:
            st = os.stat(text)
        except OSError:
            raise StoreError(f"{text}: no such file, and not a sha256") from None
        sha = store.lookup_file(text, st.st_size, st.st_mtime_ns)
        if sha is None:
            h = hashlib.sha256()
            with open(text, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            sha = h.hexdigest()
    vec = store.get_embedding(sha, model, prep, encoder=encoder)
    if vec is None:
        raise StoreError(
            f"{text}: no stored embedding of this content for {model}"
            + (f" from the {encoder} encoder" if encoder != DEFAULT_ENCODER else "")
            + "; scan it first "
            "(similar searches stored embeddings only)"
        )
    return sha, vec


def search(
    store: Store,
    model: str,
    prep: str,
    query: np.ndarray,
    *,
    top: int = 20,
    min_score: float | None = None,
    where: Any = None,
    exclude: Iterable[str] = (),
    exact: bool = False,
    probes: int | None = None,
    rerank: int | None = None,
    block: int = DEFAULT_BLOCK,
    encoder: str = DEFAULT_ENCODER,
) -> SearchResult:
    """Search the stored embeddings of (model, prep) for the ``top`` nearest to ``query``.

    Args:
        store: the store.
        model, prep: whose embeddings.
        query: (D,) unit-length query vector.
        top: hits to return.
        min_score: leave out hits below this cosine.
        where: a :class:`clipsieve.filtering.rules.WhereExpr` (or text); only contents with
            a stored result for which it is true are candidates.
        exclude: content hashes never returned (``similar`` leaves out its own image).
        exact: never use the index.
        probes: inverted lists visited per query (an ``ivf`` index only).
        rerank: re-ranking factor (a ``pq`` index only): ``rerank × top`` candidates of the
            fast scan are scored exactly.
        block: rows per block of the exact search.
        encoder: whose embeddings (``"torch"``, ``"onnx"``, ``"onnx-int8"``).
    """
    if top < 1:
        raise ConfigError("{top} must be at least 1", params={"top": "top"})
    q = np.asarray(query, dtype=np.float32).reshape(1, -1)
    norm = float(np.linalg.norm(q))
    if norm > 0:
        q = q / norm
    excluded = set(exclude)
    allowed: set[str] | None = None
    if where is not None:
        from clipsieve.filtering.rules import WhereExpr, parse_where

        expr = where if isinstance(where, WhereExpr) else parse_where(where)
        allowed = set()
        for r in store.iter_results(model):
            sha = r.get("sha256")
            if r.get("status") == "ok" and sha and expr.evaluate(r).value is True:
                allowed.add(sha)

    def ok(sha: str) -> bool:
        return sha not in excluded and (allowed is None or sha in allowed)

    count, _ = store.embedding_fingerprint(model, prep, encoder=encoder)
    method, note = "exact", None
    pairs: list[tuple[str, float]] | None = None
    if not exact:
        info, why = index_status(store, model, prep, encoder=encoder)
        note = why
        vi = (load_index(store, model, prep, encoder=encoder)
              if info is not None and why is None else None)
        if info is not None and why is None and vi is None:
            note = ("the index files beside the store cannot be read or do not match their "
                    "sidecar; run `clipsieve index build`")
        if vi is not None:
            if q.shape[1] != vi.info.dim:
                raise StoreError(f"query has {q.shape[1]} dimensions, the index {vi.info.dim}")
            want = top + len(excluded)
            while True:
                found = vi.search(q, want, probes=probes, rerank=rerank)[0]
                kept = [(s, v) for s, v in found if ok(s)]
                if len(kept) >= top or want >= count:
                    pairs, method = kept[:top], "index"
                    break
                if allowed is not None and want >= 8 * (top + len(excluded)):
                    break  # a selective --where: exact over the allowed ones instead
                want = min(count, want * 4)
    if pairs is None:
        pairs = exact_search(q, store.iter_embeddings(model, prep, block=block, encoder=encoder),
                             top,
                             keep=ok if (allowed is not None or excluded) else None)[0]
    if min_score is not None:
        pairs = [(s, v) for s, v in pairs if v >= min_score]
    results = store.results_for_shas([s for s, _ in pairs], model)
    hits = []
    for sha, score in pairs:
        rs = results.get(sha, [])
        if where is not None:
            rs = [r for r in rs if expr.evaluate(r).value is True]
        hits.append(Hit(sha, score, rs))
    return SearchResult(hits, method, model, prep, count, note, encoder)


def iter_hit_rows(result: SearchResult) -> Iterator[dict[str, Any]]:
    """The JSONL rows of a search, rank 1 first."""
    for i, hit in enumerate(result.hits, 1):
        yield hit.to_dict(rank=i)


__all__ = [
    "DEFAULT_BLOCK",
    "DEFAULT_RERANK",
    "Hit",
    "INDEX_FORMAT",
    "INDEX_KINDS",
    "IndexInfo",
    "SearchResult",
    "TopK",
    "VectorIndex",
    "build_index",
    "default_lists",
    "default_probes",
    "default_subquantizers",
    "exact_search",
    "index_paths",
    "index_status",
    "iter_hit_rows",
    "load_index",
    "query_for_image",
    "read_index_info",
    "search",
    "search_with",
    "stored_prep",
    "train_ivf",
    "train_pq",
]


def search_with(
    analyzer: Any,
    text: str | None = None,
    image: Any = None,
    *,
    top: int = 20,
    min_score: float | None = None,
    where: Any = None,
    exact: bool = False,
    include_self: bool = False,
    prep: str | None = None,
) -> SearchResult:
    """:meth:`clipsieve.Analyzer.search`: by text (the text encoder only) or by image.

    ``image`` is a content hash or an image file whose embedding is stored (no decoding, no
    model work; the image itself is left out of the hits unless ``include_self``), or a PIL
    image / array, which is embedded now (the only case that runs the image encoder). The
    candidates are the stored embeddings of the analyzer's model and encoder
    (``Analyzer(encoder="onnx-int8")`` searches what ``onnx-int8`` scans stored), and text and
    PIL queries are embedded by that encoder too.
    """
    if (text is None) == (image is None):
        raise ConfigError("give exactly one of text= or image=")
    store = analyzer.store
    if store is None:
        raise StoreError("search needs a store (the analyzer was built with store=False)")
    model = analyzer.model_id
    encoder = str(getattr(analyzer, "encoder_kind", DEFAULT_ENCODER))
    prep = stored_prep(store, model, prep, encoder=encoder)
    exclude: list[str] = []
    if text is not None:
        if not str(text).strip():
            raise ConfigError("the search text is empty")
        q = analyzer.embed_texts([str(text)])[0]
    elif isinstance(image, (str, os.PathLike)):
        sha, q = query_for_image(store, model, prep, image, encoder=encoder)
        if not include_self:
            exclude.append(sha)
    else:
        from PIL import Image

        if isinstance(image, np.ndarray):
            image = Image.fromarray(image)
        q = analyzer.embed_images([image])[0]
    return search(store, model, prep, q, top=top, min_score=min_score, where=where,
                  exclude=exclude, exact=exact, encoder=encoder)
