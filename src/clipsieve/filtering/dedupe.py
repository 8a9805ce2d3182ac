"""Exact and near-duplicate grouping in bounded memory.

Exact duplicates share a content sha256. Near duplicates have embedding cosine similarity at
or above a threshold. Similarities are computed tile by tile (``block × block`` matrix
products over the unique embeddings, upper triangle only), so memory is the embeddings
themselves plus one tile — never an ``n × n`` matrix: 100 000 × 512 float32 embeddings take
205 MB and a 4096-wide tile 67 MB, where the full matrix would take 40 GB. Pairs found in a
tile are merged with a union-find; a tile with very many pairs (a big cluster of identical
images) is first reduced to its connected components, so the Python work per tile stays
proportional to the tile's side, not to its number of pairs.

See ``benchmarks/dedupe_scale.py`` for time and peak memory at 100 000 images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

#: Default tile side for the blocked similarity products.
DEFAULT_BLOCK = 4096

#: Scores and cosines that order or group items are compared rounded to this many decimals
#: (1e-6), so a tie never depends on the last bits of a float (which differ between CPUs,
#: SIMD paths and batch compositions by about 1e-7).
TIE_DECIMALS = 6
_SLACK = 10.0 ** -TIE_DECIMALS


def tie_round(value: float | None) -> float | None:
    """``value`` rounded to :data:`TIE_DECIMALS` decimals (``None`` and NaN pass through)."""
    if value is None or value != value:
        return value
    return round(float(value), TIE_DECIMALS)


def _at_least(sims: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(r, c)`` where ``round(sims, 6) >= threshold`` (only near candidates rounded)."""
    r, c = np.nonzero(sims >= np.float32(threshold - _SLACK))
    if len(r):
        keep = np.round(sims[r, c].astype(np.float64), TIE_DECIMALS) >= threshold
        r, c = r[keep], c[keep]
    return r, c

T = TypeVar("T")


class UnionFind:
    """Disjoint sets over ``0..n-1`` with union by size and path halving.

    Args:
        n: number of elements.
    """

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = int(parent[x])
        return int(x)

    def union(self, a: int, b: int) -> int:
        """Merge the sets of ``a`` and ``b``; returns the new root."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return ra

    def union_pairs(self, a: np.ndarray, b: np.ndarray) -> None:
        """Union every pair ``(a[k], b[k])``."""
        for x, y in zip(a.tolist(), b.tolist()):
            self.union(x, y)

    def groups(self) -> list[list[int]]:
        """Every set with more than one element, each sorted, ordered by first element."""
        roots = np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)
        order = np.argsort(roots, kind="stable")
        out: list[list[int]] = []
        start = 0
        sr = roots[order]
        for k in range(1, len(order) + 1):
            if k == len(order) or sr[k] != sr[start]:
                if k - start > 1:
                    out.append(sorted(order[start:k].tolist()))
                start = k
        out.sort(key=lambda g: g[0])
        return out


def _star_edges(r: np.ndarray, c: np.ndarray, n_nodes: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Reduce edges among ``n_nodes`` local nodes to one star per connected component.

    Returns ``None`` when scipy is missing (the caller then unions every edge).
    """
    try:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return None
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph.tocsr(), directed=False)
    first = np.full(labels.max() + 1, n_nodes, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n_nodes))  # smallest node per component
    heads = first[labels]
    nodes = np.arange(n_nodes)
    keep = heads != nodes
    return heads[keep], nodes[keep]


def _tile_unions(
    emb: np.ndarray, threshold: float, block: int, uf: UnionFind, index: np.ndarray | None = None
) -> None:
    """Union, into ``uf``, every pair of rows with cosine ≥ threshold, tile by tile.

    Cosines are compared rounded to :data:`TIE_DECIMALS` decimals.

    ``index`` maps rows to union-find elements (identity when ``None``). A tile with many
    pairs is first reduced to its connected components, so the Python loop per tile runs
    over at most ``2 × block`` elements whatever the number of pairs.
    """
    n = emb.shape[0]
    thr = np.float32(threshold - _SLACK)
    for i0 in range(0, n, block):
        a = emb[i0 : i0 + block]
        ni = a.shape[0]
        for j0 in range(i0, n, block):
            tile = a @ emb[j0 : j0 + block].T
            if tile.max() < thr:
                continue
            nj = tile.shape[1]
            r, c = _at_least(tile, threshold)
            del tile
            diag = i0 == j0
            if diag:
                keep = r < c
                r, c = r[keep], c[keep]
            if len(r) == 0:
                continue
            # local node ids: rows 0..ni-1, columns ni..ni+nj-1 (same ids on the diagonal)
            lc = c if diag else c + ni
            n_nodes = ni if diag else ni + nj
            if len(r) > n_nodes:
                reduced = _star_edges(r, lc, n_nodes)
                if reduced is not None:
                    r, lc = reduced
            if diag:
                ga, gb = i0 + r, i0 + lc
            else:
                ga = np.where(r < ni, i0 + r, j0 + r - ni)
                gb = np.where(lc < ni, i0 + lc, j0 + lc - ni)
            if index is not None:
                ga, gb = index[ga], index[gb]
            uf.union_pairs(ga, gb)


def normalize_rows(emb: np.ndarray, *, copy: bool = True) -> np.ndarray:
    """Float32 rows scaled to unit length (zero rows stay zero)."""
    out = np.array(emb, dtype=np.float32, copy=copy)
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))[:, None]  # no n × d temporary
    norms[norms == 0] = 1.0
    out /= norms
    return out


def similar_pairs(
    emb: np.ndarray, threshold: float, *, block: int = DEFAULT_BLOCK
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Pairs ``i < j`` of rows with cosine ≥ ``threshold``, one tile at a time.

    Args:
        emb: (n, d) unit-length float32 rows (see :func:`normalize_rows`).
        threshold: cosine threshold in (-1, 1].
        block: tile side; memory is ``block² × 4`` bytes on top of ``emb``.

    Yields:
        Arrays ``(i, j)`` of global row indices with ``i < j``, one pair per element.
    """
    n = emb.shape[0]
    thr = np.float32(threshold - _SLACK)
    for i0 in range(0, n, block):
        a = emb[i0 : i0 + block]
        for j0 in range(i0, n, block):
            tile = a @ emb[j0 : j0 + block].T
            if tile.max() < thr:
                continue
            r, c = _at_least(tile, threshold)
            r += i0
            c += j0
            keep = r < c
            if keep.any():
                yield r[keep].astype(np.int64), c[keep].astype(np.int64)
            del tile


def near_duplicate_groups(
    emb: np.ndarray, threshold: float, *, block: int = DEFAULT_BLOCK
) -> list[list[int]]:
    """Groups (row indices) of rows connected by cosine ≥ ``threshold``, blocked.

    Args:
        emb: (n, d) embeddings; normalised here (a float32 copy is made).
        threshold: cosine threshold.
        block: tile side.
    """
    x = normalize_rows(emb)
    uf = UnionFind(x.shape[0])
    _tile_unions(x, threshold, block, uf)
    return uf.groups()


def naive_groups(emb: np.ndarray, threshold: float) -> list[list[int]]:
    """The same groups through the full ``n × n`` similarity matrix (tests, benchmarks)."""
    x = normalize_rows(emb)
    sim = x @ x.T
    r, c = _at_least(sim, threshold)
    keep = r < c
    r, c = r[keep], c[keep]
    uf = UnionFind(x.shape[0])
    for a, b in zip(r.tolist(), c.tolist()):
        uf.union(a, b)
    return uf.groups()


def duplicate_groups(
    shas: Sequence[str | None],
    embeddings: dict[str, np.ndarray] | None = None,
    threshold: float | None = None,
    *,
    block: int = DEFAULT_BLOCK,
) -> list[list[int]]:
    """Group items that are exact (same sha256) or near (cosine ≥ threshold) duplicates.

    Near duplicates are searched among the unique hashes that have an embedding, so ten
    copies of one file cost one row. Items without a hash are never grouped; items without
    an embedding are grouped by hash only.

    Args:
        shas: one content hash per item (``None`` for an item that could not be read).
        embeddings: ``{sha256: vector}``; ``None`` or empty for exact duplicates only.
        threshold: cosine threshold for near duplicates; ``None`` for exact only.
        block: tile side of the blocked products.

    Returns:
        Groups of item indices (each sorted), only groups of two or more.
    """
    uniq: dict[str, int] = {}
    for s in shas:
        if s is not None and s not in uniq:
            uniq[s] = len(uniq)
    uf = UnionFind(len(uniq))
    if threshold is not None and embeddings:
        keys = [s for s in uniq if s in embeddings]
        if len(keys) > 1:
            dim = len(next(iter(embeddings[k] for k in keys)))
            mat = np.empty((len(keys), dim), dtype=np.float32)
            for k, s in enumerate(keys):
                mat[k] = embeddings[s]
            mat = normalize_rows(mat, copy=False)
            index = np.array([uniq[s] for s in keys], dtype=np.int64)
            _tile_unions(mat, threshold, block, uf, index)
            del mat
    by_root: dict[int, list[int]] = {}
    for i, s in enumerate(shas):
        if s is not None:
            by_root.setdefault(uf.find(uniq[s]), []).append(i)
    groups = [g for g in by_root.values() if len(g) > 1]
    groups.sort(key=lambda g: g[0])
    return groups


def choose_keeper(members: Sequence[T], key: Callable[[T], Any]) -> T:
    """The member with the smallest ``key`` (e.g. ``(-quality, path)``)."""
    return min(members, key=key)
