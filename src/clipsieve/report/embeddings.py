"""Export stored embeddings with their results (``clipsieve export --embeddings``).

* :func:`export_with_embeddings` writes the results (JSONL, CSV or Parquet, as
  :func:`clipsieve.report.export_results`) with an ``embedding`` column: a Parquet
  fixed-size list of float32, a JSON list in JSONL and CSV. Parquet's key-value metadata
  records ``clipsieve.model``, ``clipsieve.preprocess_version``, ``clipsieve.dim`` and
  ``clipsieve.encoder``.
* :func:`export_embeddings_npy` writes a folder as clip-retrieval does: ``embeddings.npy``
  (N × D float32, row i the embedding of ``ids.parquet`` row i), ``ids.parquet`` (``i``,
  ``path``, ``sha256`` and the other result fields, with the same metadata) and
  ``embeddings.json`` (model, preprocessing version, encoder, dimension, count).

Both stream: results are handled in chunks (embeddings fetched per chunk), so memory holds
one chunk of vectors whatever the store's size. Only results of one model and the embeddings
of one encoder (``torch``, ``onnx``, ``onnx-int8``: each keeps its own) are exported; a result
without a stored embedding of that model and encoder (a failed file, or one scanned with
another encoder only) has a null ``embedding`` and is left out of the ``.npy`` folder.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from clipsieve.errors import ConfigError
from clipsieve.report.exports import as_dict, columns_of, flatten, infer_format
from clipsieve.report.streaming import ResultWriter, column_kind
from clipsieve.store import DEFAULT_ENCODER

#: Results per chunk (embeddings fetched together).
CHUNK = 1024


def _chunks(results: Iterable[Any], n: int) -> Iterator[list[dict[str, Any]]]:
    buf: list[dict[str, Any]] = []
    for r in results:
        buf.append(as_dict(r))
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf


def _with_vectors(store: Any, model: str, prep: str, results: Iterable[Any], encoder: str
                  ) -> Iterator[tuple[dict[str, Any], np.ndarray | None]]:
    for chunk in _chunks(results, CHUNK):
        shas = [r.get("sha256") for r in chunk if r.get("status", "ok") == "ok" and r.get("sha256")]
        vecs = store.get_embeddings(shas, model, prep, encoder=encoder)
        for r in chunk:
            sha = r.get("sha256")
            yield r, (vecs.get(sha) if sha and r.get("status", "ok") == "ok" else None)


def _metadata(model: str, prep: str, dim: int | None, encoder: str) -> dict[str, str]:
    return {"clipsieve.model": model, "clipsieve.preprocess_version": prep,
            "clipsieve.dim": str(dim or ""), "clipsieve.encoder": encoder}


def _kinds(rows: list[dict[str, Any]], leading: dict[str, str]) -> dict[str, str]:
    flat = [flatten(r) for r in rows]
    cols = columns_of(flat)
    kinds = dict(leading)
    for c in cols:
        if c not in kinds and c != "embedding":
            kinds[c] = column_kind(f.get(c) for f in flat)
    return kinds


def export_with_embeddings(
    store: Any, model: str, prep: str, results: Iterable[Any],
    path: str | os.PathLike[str], fmt: str | None = None, *, encoder: str = DEFAULT_ENCODER,
) -> int:
    """Write ``results`` (of ``model``) with their stored embeddings (those ``encoder``
    computed); returns the rows.

    Raises:
        ConfigError: unknown format, Parquet to stdout, or pyarrow missing.
    """
    fmt = infer_format(path, fmt)
    rows = [as_dict(r) for r in results]  # the result dicts (small); vectors come per chunk
    dim = _dim(store, model, prep, encoder)
    kinds = _kinds(rows, {}) if fmt != "jsonl" else None
    if kinds is not None:
        kinds["embedding"] = "vector"
    with ResultWriter(path, fmt, kinds=kinds, metadata=_metadata(model, prep, dim, encoder),
                      dim=dim) as w:
        for r, vec in _with_vectors(store, model, prep, rows, encoder):
            w.write({**r, "embedding": None if vec is None else vec.tolist()})
        return w.count


def _dim(store: Any, model: str, prep: str, encoder: str) -> int | None:
    for _, mat in store.iter_embeddings(model, prep, block=1, encoder=encoder):
        return int(mat.shape[1])
    return None


def export_embeddings_npy(
    store: Any, model: str, prep: str, results: Iterable[Any], folder: str | os.PathLike[str],
    *, encoder: str = DEFAULT_ENCODER,
) -> int:
    """Write ``embeddings.npy`` + ``ids.parquet`` + ``embeddings.json`` into ``folder``
    (created if missing); returns the number of embeddings written.

    Raises:
        ConfigError: pyarrow missing, or ``folder`` is a file.
    """
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    rows = [as_dict(r) for r in results]
    kinds = _kinds(rows, {"i": "int", "path": "str", "sha256": "str"})
    raw_path = out / f".embeddings.raw-{os.getpid()}"
    dim: int | None = None
    n = 0
    try:
        with open(raw_path, "wb") as raw, ResultWriter(
            out / "ids.parquet", "parquet", kinds=kinds,
            metadata=_metadata(model, prep, _dim(store, model, prep, encoder), encoder),
        ) as ids:
            for r, vec in _with_vectors(store, model, prep, rows, encoder):
                if vec is None:
                    continue
                v = np.ascontiguousarray(vec, dtype="<f4")
                if dim is None:
                    dim = int(v.shape[0])
                elif v.shape[0] != dim:
                    raise ConfigError(f"embeddings of {model} have mixed sizes")
                raw.write(v.tobytes())
                ids.write({"i": n, **r})
                n += 1
        _raw_to_npy(raw_path, out / "embeddings.npy", n, dim or 0)
    finally:
        if raw_path.exists():
            raw_path.unlink()
    info = {"model": model, "preprocess_version": prep, "encoder": encoder, "dim": dim,
            "count": n,
            "dtype": "float32", "normalized": True, "created": time.time(),
            "files": ["embeddings.npy", "ids.parquet"]}
    (out / "embeddings.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return n


def _raw_to_npy(raw: Path, dest: Path, n: int, dim: int) -> None:
    """Prefix raw little-endian float32 rows with an .npy header (copied in chunks)."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (n, dim)}
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh, open(raw, "rb") as src:
            np.lib.format.write_array_header_1_0(fh, header)
            while True:
                block = src.read(1 << 24)
                if not block:
                    break
                fh.write(block)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


__all__ = ["export_embeddings_npy", "export_with_embeddings"]
