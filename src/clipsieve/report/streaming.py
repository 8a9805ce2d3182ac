"""Write results as they come: JSONL, CSV or Parquet in row groups, with bounded memory.

``scan --out results.parquet`` (or ``.csv``) and ``export --embeddings`` use
:class:`ResultWriter`: rows are flattened as for :func:`clipsieve.report.export_results`
(dotted columns) and written every ``row_group`` rows, so memory holds one row group whatever
the number of results.

The columns and their types are fixed when the first row group is written (or given up front
with ``kinds``): a later row's field that has no column, or whose value does not fit its
column's type, goes into the ``_extra`` column as a JSON object (CSV and Parquet), so nothing
is lost; :func:`clipsieve.report.read_export` puts those fields back. An ``embedding`` field
(a list of floats) becomes a Parquet fixed-size list of float32, and JSON text in CSV.

The file is written under a temporary name and renamed into place when closed.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from typing import IO, Any

from clipsieve.errors import ConfigError
from clipsieve.report.exports import (
    _cell,
    _require_pyarrow,
    as_dict,
    columns_of,
    flatten,
    infer_format,
)

#: Rows per row group (and per CSV flush) by default.
ROW_GROUP = 1024

#: The column that holds fields without a column of their own (a JSON object).
EXTRA = "_extra"


def column_kind(values: Iterable[Any]) -> str:
    """``bool``, ``int``, ``float``, ``vector`` (a list of numbers, for ``embedding``),
    ``json`` (other lists) or ``str`` — as the Parquet export types a column."""
    present = [v for v in values if v is not None]
    if not present:
        return "str"
    if all(isinstance(v, bool) for v in present):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "float"
    if all(isinstance(v, (list, tuple)) for v in present):
        return "json"
    return "str"


def _fits(kind: str, v: Any) -> bool:
    if v is None:
        return True
    if kind == "bool":
        return isinstance(v, bool)
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "float":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind in ("json", "vector"):
        return isinstance(v, (list, tuple))
    return isinstance(v, str) or not isinstance(v, (list, tuple, dict))


class ResultWriter:
    """Write result dicts (or ItemResults) to ``path`` as they come.

    Args:
        path: the output file (``-``: stdout, JSONL and CSV only).
        fmt: ``jsonl``, ``csv`` or ``parquet``; by default from the file name.
        row_group: rows per Parquet row group / CSV flush.
        kinds: ``{column: kind}`` to fix the columns up front (see :func:`column_kind`);
            by default they come from the first row group.
        metadata: extra Parquet key-value metadata (``clipsieve.model``…).
        dim: the embedding size, for a fixed-size list column; by default the first one seen.

    Example:
        >>> with ResultWriter("results.parquet") as w:
        ...     for item in analyzer.scan(paths):
        ...         w.write(item)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fmt: str | None = None,
        *,
        row_group: int = ROW_GROUP,
        kinds: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        dim: int | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.fmt = infer_format(self.path, fmt)
        self.to_stdout = self.path == "-"
        if self.fmt == "parquet":
            if self.to_stdout:
                raise ConfigError("Parquet cannot be written to stdout; name a .parquet file")
            _require_pyarrow()
        self.row_group = max(1, int(row_group))
        self.metadata = dict(metadata or {})
        self.dim = dim
        self.count = 0
        self._kinds: dict[str, str] | None = dict(kinds) if kinds is not None else None
        self._cols: list[str] | None = None
        self._buf: list[dict[str, Any]] = []
        # A device or FIFO (/dev/null, /dev/full, /dev/stdout) is written directly: renaming a
        # temporary file over it would replace the device node (issue #8).
        self._direct = not self.to_stdout and _special(self.path)
        self._tmp = self.path if self._direct else f"{self.path}.tmp-{os.getpid()}"
        self._fh: IO[str] | None = None
        self._csv: Any = None
        self._pq: Any = None
        self._schema: Any = None
        if self.to_stdout:
            import sys

            self._fh = sys.stdout
        elif self.fmt != "parquet":
            self._fh = open(self._tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, result: Any) -> None:
        d = as_dict(result)
        self.count += 1
        if self.fmt == "jsonl":
            assert self._fh is not None
            self._fh.write(json.dumps(d, ensure_ascii=False) + "\n")
            return
        self._buf.append(flatten(d))
        if len(self._buf) >= self.row_group:
            self._flush()

    def _fix_columns(self) -> None:
        if self._kinds is None:
            cols = columns_of(self._buf)
            self._kinds = {c: column_kind(r.get(c) for r in self._buf) for c in cols}
        if "embedding" in self._kinds:
            self._kinds["embedding"] = "vector"
            if self.dim is None:
                self.dim = next((len(r["embedding"]) for r in self._buf
                                 if isinstance(r.get("embedding"), (list, tuple))), None)
        self._cols = [c for c in self._kinds if c != EXTRA]

    def _split(self, row: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """(values of the fixed columns, the JSON of everything else or None)."""
        assert self._kinds is not None
        cells: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for k, v in row.items():
            kind = self._kinds.get(k)
            if kind is None or not _fits(kind, v) or (
                kind == "vector" and self.dim is not None and len(v) != self.dim
            ):
                extra[k] = v
            else:
                cells[k] = v
        return cells, (json.dumps(extra, ensure_ascii=False) if extra else None)

    def _flush(self) -> None:
        if not self._buf:
            return
        if self._cols is None:
            self._fix_columns()
        assert self._cols is not None and self._kinds is not None
        rows = [self._split(r) for r in self._buf]
        self._buf = []
        if self.fmt == "csv":
            assert self._fh is not None
            if self._csv is None:
                self._csv = csv.writer(self._fh)
                self._csv.writerow([*self._cols, EXTRA])
            for cells, extra in rows:
                self._csv.writerow(
                    ["" if cells.get(c) is None else _cell(cells[c]) for c in self._cols]
                    + [extra or ""])
            self._fh.flush()
            return
        self._write_parquet(rows)

    def _write_parquet(self, rows: list[tuple[dict[str, Any], str | None]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        assert self._cols is not None and self._kinds is not None
        types = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64(),
                 "json": pa.string(), "str": pa.string()}
        if self._schema is None:
            fields = []
            for c in self._cols:
                kind = self._kinds[c]
                if kind == "vector":
                    typ = pa.list_(pa.float32(), self.dim) if self.dim else pa.list_(pa.float32())
                else:
                    typ = types[kind]
                fields.append(pa.field(c, typ))
            fields.append(pa.field(EXTRA, pa.string()))
            json_cols = [c for c in self._cols if self._kinds[c] == "json"]
            meta = {"clipsieve.json_columns": json.dumps(json_cols),
                    "clipsieve.extra_column": EXTRA, **self.metadata}
            self._schema = pa.schema(fields, metadata=meta)
            self._pq = pq.ParquetWriter(self._tmp, self._schema)
        arrays = []
        for f in self._schema:
            c = f.name
            if c == EXTRA:
                arrays.append(pa.array([e for _, e in rows], type=pa.string()))
                continue
            kind = self._kinds[c]
            vals = [cells.get(c) for cells, _ in rows]
            if kind == "float":
                vals = [None if v is None else float(v) for v in vals]
            elif kind == "json":
                vals = [None if v is None else json.dumps(list(v), ensure_ascii=False)
                        for v in vals]
            elif kind == "str":
                vals = [None if v is None else (v if isinstance(v, str) else _cell(v))
                        for v in vals]
            arrays.append(pa.array(vals, type=f.type))
        self._pq.write_table(pa.Table.from_arrays(arrays, schema=self._schema))

    def close(self) -> int:
        """Write what is buffered and move the file into place; returns the rows written."""
        if self.fmt != "jsonl":
            if self._cols is None and not self._buf:
                self._kinds = self._kinds or {}
            self._flush()
            if self.fmt == "parquet" and self._pq is None:  # no rows: an empty table
                self._fix_columns()
                self._write_parquet([])
            if self.fmt == "csv" and self._csv is None and self._fh is not None:
                self._fix_columns()
                csv.writer(self._fh).writerow([*(self._cols or []), EXTRA])
        if self._pq is not None:
            self._pq.close()
        if self._fh is not None and not self.to_stdout:
            self._fh.close()
        if self.to_stdout:
            if self._fh is not None:
                self._fh.flush()
        elif not self._direct:
            os.replace(self._tmp, self.path)
        return self.count

    def abort(self) -> None:
        """Stop and remove the temporary file."""
        try:
            if self._pq is not None:
                self._pq.close()
            if self._fh is not None and not self.to_stdout:
                self._fh.close()
        finally:
            if not self._direct and os.path.exists(self._tmp):
                os.unlink(self._tmp)


def _special(path: str) -> bool:
    """Whether ``path`` exists and is not a regular file (a device, a FIFO)."""
    import stat

    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


__all__ = ["EXTRA", "ROW_GROUP", "ResultWriter", "column_kind"]
