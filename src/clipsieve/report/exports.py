"""Export results as JSONL, CSV or Parquet, with the same fields in each.

* **JSONL** (default): one result dict per line, exactly the JSON schema of
  :meth:`clipsieve.types.ItemResult.to_dict`.
* **CSV**: one row per result; nested fields become dotted columns (``quality.score``,
  ``moderation.categories.violence``, ``labels.cat``); lists (``moderation.reasons``) are
  JSON text; a missing or null field is an empty cell. A literal dot inside a key is written
  ``\\.``.
* **Parquet** (``pip install 'clipsieve[parquet]'``): the CSV's columns with real types —
  boolean, int64, float64 or string — and lists as JSON text (named in the file's
  ``clipsieve.json_columns`` metadata).

:func:`read_export` reads any of the three back into nested dicts (null fields left out).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, Any

from clipsieve.errors import ConfigError

#: Export formats.
FORMATS: tuple[str, ...] = ("jsonl", "csv", "parquet")

#: Leading columns, in this order; the others follow grouped by their first part.
CORE_COLUMNS: tuple[str, ...] = (
    "path",
    "kind",
    "timestamp_ms",
    "status",
    "error.code",
    "error.message",
    "sha256",
    "width",
    "height",
    "model",
    "device",
    "precision",
    "encoder",
    "cached",
)
#: Column of fields written after a streamed file's columns were fixed (a JSON object); see
#: :mod:`clipsieve.report.streaming`.
_EXTRA = "_extra"
_GROUP_ORDER = ("quality", "moderation", "labels", "filter", "timing")
_STRING_COLUMNS = {
    "path", "status", "error.code", "error.message", "sha256", "model", "device", "precision",
    "encoder",
}


def as_dict(result: Any) -> dict[str, Any]:
    """A result dict from a dict or an :class:`~clipsieve.types.ItemResult`."""
    if hasattr(result, "to_dict"):
        return dict(result.to_dict())
    return dict(result)


def _esc(key: str) -> str:
    return str(key).replace("\\", "\\\\").replace(".", "\\.")


def _split(column: str) -> list[str]:
    parts, cur, i = [], [], 0
    while i < len(column):
        ch = column[i]
        if ch == "\\" and i + 1 < len(column):
            cur.append(column[i + 1])
            i += 2
            continue
        if ch == ".":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts → dotted keys; lists stay lists; ``None`` values are left out."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = prefix + _esc(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif v is not None:
            out[key] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flatten`."""
    out: dict[str, Any] = {}
    for col, v in flat.items():
        parts = _split(col)
        cur = out
        for p in parts[:-1]:
            nxt = cur.get(p)
            if not isinstance(nxt, dict):
                nxt = cur[p] = {}
            cur = nxt
        cur[parts[-1]] = v
    return out


def columns_of(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every column of flattened rows: core columns first, then by group, then sorted."""
    seen: dict[str, None] = {}
    for r in rows:
        for k in r:
            seen.setdefault(k, None)
    core = [c for c in CORE_COLUMNS if c in seen]

    def key(c: str) -> tuple[int, str]:
        top = _split(c)[0]
        return (_GROUP_ORDER.index(top) if top in _GROUP_ORDER else len(_GROUP_ORDER), c)

    return core + sorted((c for c in seen if c not in CORE_COLUMNS), key=key)


def infer_format(path: str | os.PathLike[str] | None, fmt: str | None = None) -> str:
    """The format from ``fmt`` or the file name (``.jsonl``/``.json``, ``.csv``, ``.parquet``)."""
    if fmt:
        if fmt not in FORMATS:
            raise ConfigError(f"unknown export format {fmt!r} (choose {', '.join(FORMATS)})")
        return fmt
    raw = os.fspath(path or "")
    name = raw.lower()
    for ext, f in ((".csv", "csv"), (".parquet", "parquet"), (".pq", "parquet"),
                   (".jsonl", "jsonl"), (".json", "jsonl"), (".ndjson", "jsonl")):
        if name.endswith(ext):
            return f
    if name in ("", "-"):
        return "jsonl"
    raise ConfigError(
        f"cannot tell the export format from the file name {raw!r}: name it "
        ".jsonl, .csv or .parquet, or pass --format"
    )


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v), ensure_ascii=False)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else json.dumps(v)
    return str(v)


def video_rows(results: Iterable[Any], *, frames: bool = False) -> Iterator[dict[str, Any]]:
    """Results as export rows: one row per image, one per video (without its ``frames``
    list), and with ``frames`` one more row per sampled frame after its video's row:
    ``{path, kind: "frame", sha256, model, timestamp_ms, moderation, quality, labels…}``."""
    for r in results:
        d = as_dict(r)
        if d.get("kind") != "video":
            yield d
            continue
        frame_list = d.pop("frames", None) or []
        yield d
        if frames:
            for f in frame_list:
                yield {"path": d.get("path"), "kind": "frame", "sha256": d.get("sha256"),
                       "model": d.get("model"), **f}


def export_results(
    results: Iterable[Any],
    path: str | os.PathLike[str] | None,
    fmt: str | None = None,
    *,
    frames: bool = False,
) -> int:
    """Write results to ``path`` (``None`` or ``-``: stdout, JSONL and CSV only).

    Args:
        results: result dicts or :class:`~clipsieve.types.ItemResult` objects.
        path: the output file.
        fmt: ``jsonl``, ``csv`` or ``parquet``; by default from the file name (else JSONL).
        frames: also one row per sampled frame of each video (:func:`video_rows`).

    Returns:
        The number of rows written.

    Raises:
        ConfigError: unknown format, Parquet to stdout, or pyarrow missing for Parquet.
    """
    results = video_rows(results, frames=frames)
    fmt = infer_format(path, fmt)
    to_stdout = path is None or os.fspath(path) == "-"
    if fmt == "jsonl":
        return _write_text(path, to_stdout, lambda fh: _jsonl(results, fh))
    if fmt == "csv":
        return _write_text(path, to_stdout, lambda fh: _csv(results, fh))
    if to_stdout:
        raise ConfigError("Parquet cannot be written to stdout; pass --out FILE.parquet")
    return _parquet(results, os.fspath(path))  # type: ignore[arg-type]


def _write_text(path: Any, to_stdout: bool, write: Any) -> int:
    if to_stdout:
        return int(write(sys.stdout))
    from clipsieve.outfiles import atomic_text

    with atomic_text(path, newline="") as fh:
        return int(write(fh))


def _jsonl(results: Iterable[Any], fh: IO[str]) -> int:
    n = 0
    for r in results:
        fh.write(json.dumps(as_dict(r), ensure_ascii=False) + "\n")
        n += 1
    return n


def _csv(results: Iterable[Any], fh: IO[str]) -> int:
    rows = [flatten(as_dict(r)) for r in results]
    cols = columns_of(rows)
    w = csv.writer(fh)
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else _cell(r[c]) for c in cols])
    return len(rows)


def _require_pyarrow() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet
    except ImportError:
        raise ConfigError(
            "Parquet export needs pyarrow: pip install 'clipsieve[parquet]' "
            "(or use --format jsonl or csv)"
        ) from None
    return pa


def _parquet(results: Iterable[Any], path: str) -> int:
    pa = _require_pyarrow()
    import pyarrow.parquet as pq

    rows = [flatten(as_dict(r)) for r in results]
    cols = columns_of(rows)
    arrays, fields, json_cols = [], [], []
    for c in cols:
        values = [r.get(c) for r in rows]
        present = [v for v in values if v is not None]
        if present and all(isinstance(v, bool) for v in present):
            typ = pa.bool_()
        elif present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
            typ = pa.int64()
        elif present and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in present
        ):
            typ = pa.float64()
            values = [None if v is None else float(v) for v in values]
        else:
            typ = pa.string()
            if any(isinstance(v, (list, tuple)) for v in present):
                json_cols.append(c)
            values = [
                None if v is None else (v if isinstance(v, str) else _cell(v)) for v in values
            ]
        arrays.append(pa.array(values, type=typ))
        fields.append(pa.field(c, typ))
    schema = pa.schema(fields, metadata={"clipsieve.json_columns": json.dumps(json_cols)})
    table = pa.Table.from_arrays(arrays, schema=schema)
    import stat

    try:
        special = not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        special = False
    if special:  # a device or FIFO: written directly, never renamed over (issue #8)
        pq.write_table(table, path)
        return len(rows)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return len(rows)


def read_export(path: str | os.PathLike[str], fmt: str | None = None) -> list[dict[str, Any]]:
    """Read an export back into nested result dicts (null fields are left out)."""
    fmt = infer_format(path, fmt)
    if fmt == "jsonl":
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    if fmt == "csv":
        with open(path, encoding="utf-8", newline="") as fh:
            out = []
            for row in csv.DictReader(fh):
                extra = row.pop(_EXTRA, None)
                flat = {k: _parse_cell(k, v) for k, v in row.items() if v != ""}
                if extra:
                    flat.update(json.loads(extra))
                out.append(unflatten(flat))
            return out
    _require_pyarrow()
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    json_cols = set(json.loads(meta.get(b"clipsieve.json_columns", b"[]")))
    out = []
    for row in table.to_pylist():
        extra = row.pop(_EXTRA, None)
        flat = {
            k: (json.loads(v) if k in json_cols and isinstance(v, str) else v)
            for k, v in row.items()
            if v is not None
        }
        if extra:
            flat.update(json.loads(extra))
        out.append(unflatten(flat))
    return out


def _parse_cell(column: str, value: str) -> Any:
    if column in _STRING_COLUMNS:
        return value
    if value in ("true", "false"):
        return value == "true"
    if (
        value[:1] in "[{"
        or value[:1].isdigit()
        or value[:1] in "-."
        or value in ("NaN", "Infinity", "-Infinity")
    ):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Result dicts from a JSONL file, one per non-empty line (e.g. ``scan --out`` output)."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


__all__ = [
    "CORE_COLUMNS",
    "FORMATS",
    "as_dict",
    "columns_of",
    "export_results",
    "flatten",
    "infer_format",
    "iter_jsonl",
    "read_export",
    "unflatten",
]
