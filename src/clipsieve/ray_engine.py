"""Scans on a Ray cluster: the same batch step, fanned out with Ray Data.

``clipsieve scan --engine ray INPUT --out DIR`` is one more driver over the analysis kernel. It
owns the I/O and the fan-out and no scoring code:

1. **list** the inputs on the driver (a folder, a ``.txt``/``.csv`` list of paths, or a
   ``.parquet`` file with a ``path`` column; local paths or any URI that ``pyarrow.fs``
   understands, such as ``s3://bucket/photos/``), minus those already in ``DIR`` (resume);
2. **read and prepare** in CPU tasks (``map_batches``): read the bytes (bounded), then the
   kernel's :meth:`Analyzer.prepare <clipsieve.pipeline.Analyzer.prepare>` (hash, decode as
   ``scan`` does, pixel statistics, preprocessing);
3. **embed and score** in an actor pool (``map_batches`` with a class): each actor creates the
   encoder once and runs :meth:`Analyzer.analyze <clipsieve.pipeline.Analyzer.analyze>` over
   the prepared rows (one encoder call, then the heads); the heads were built once on the
   driver (prompt banks computed there) and arrive pickled, as pure functions of the
   embeddings and pixel statistics;
4. **write** Parquet into ``DIR``: one row per input row, errors included, with the same
   fields as the local JSONL; nested objects (``moderation``, ``quality``, ``labels``…) are
   JSON text columns so that every file has the same schema.

Without ``address`` a local Ray is started with ``ray.init(num_cpus=…)``; with
``address="auto"`` or ``"ray://host:10001"`` the scan runs on that cluster.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipsieve.errors import ConfigError, DecodeError

#: Columns of the output Parquet files, in order. Those in :data:`JSON_COLUMNS` hold JSON text.
BASE_COLUMNS: tuple[str, ...] = (
    "path", "status", "error", "sha256", "width", "height", "model", "device", "precision",
    "cached", "timing",
)
JSON_COLUMNS: frozenset[str] = frozenset({"error", "timing"})
_INT_COLUMNS = frozenset({"width", "height"})
_BOOL_COLUMNS = frozenset({"cached"})


def require_ray() -> Any:
    """Import ray (with Ray Data) or explain how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError(
            "the ray engine needs Ray Data: pip install 'clipsieve[ray]'"
        ) from None
    return ray


# -- inputs ---------------------------------------------------------------------------------
def _is_uri(spec: str) -> bool:
    head, sep, _ = spec.partition("://")
    return bool(sep) and head.isalnum() and len(head) > 1


def resolve_filesystem(spec: str) -> tuple[Any, str]:
    """``(pyarrow FileSystem, path in it)`` for a local path or a URI (``s3://…``)."""
    import pyarrow.fs as pafs

    if _is_uri(spec):
        try:
            return pafs.FileSystem.from_uri(spec)
        except Exception as exc:  # unknown scheme, missing credentials…
            raise ConfigError(f"{spec}: cannot open this location: {exc}") from None
    return pafs.LocalFileSystem(), os.path.abspath(spec)


def _join(fs: Any, base_dir: str, rel: str) -> str:
    import pyarrow.fs as pafs

    if isinstance(fs, pafs.LocalFileSystem):
        return os.path.normpath(os.path.join(base_dir, rel))
    return posixpath.normpath(posixpath.join(base_dir, rel))


def list_inputs(spec: str, *, recursive: bool = True) -> tuple[Any, list[str]]:
    """The filesystem and the file paths that ``spec`` names, in sorted order.

    ``spec`` is a folder (images found as the local engine finds them: known extensions,
    hidden names skipped), a ``.parquet`` file with a ``path`` column, a ``.csv`` file with a
    ``path`` column (or paths in its first column when it has no header), or any other file,
    read as a list with one path per line (``#`` comments and blank lines skipped). Relative
    paths in a list are relative to the list's folder. A path that is itself a URI is used
    as it is, on its own filesystem's … only when it is on the same filesystem as the list.

    Raises:
        ConfigError: the input does not exist or a list has no ``path`` column.
    """
    import pyarrow.fs as pafs

    from clipsieve.media.discover import IMAGE_EXTENSIONS

    fs, root = resolve_filesystem(spec)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise ConfigError(f"{spec}: no such file or folder")
    if info.type == pafs.FileType.Directory:
        sel = pafs.FileSelector(root, recursive=recursive)
        found = []
        for fi in fs.get_file_info(sel):
            if fi.type != pafs.FileType.File:
                continue
            rel = fi.path[len(root):].lstrip("/" + os.sep)
            if any(part.startswith(".") for part in rel.replace(os.sep, "/").split("/")):
                continue
            if os.path.splitext(fi.path)[1].lower() in IMAGE_EXTENSIONS:
                found.append(fi.path)
        return fs, sorted(found)
    base = posixpath.dirname(root) if not isinstance(fs, pafs.LocalFileSystem) else os.path.dirname(root)
    ext = os.path.splitext(root)[1].lower()
    if ext == ".parquet":
        import pyarrow.parquet as pq

        with fs.open_input_file(root) as fh:
            table = pq.read_table(fh)
        if "path" not in table.column_names:
            raise ConfigError(f"{spec}: no 'path' column (columns: {', '.join(table.column_names)})")
        raw = [p for p in table.column("path").to_pylist() if p]
    else:
        with fs.open_input_stream(root) as fh:
            text = fh.read().decode("utf-8-sig")
        if ext == ".csv":
            rows = list(csv.reader(io.StringIO(text)))
            if rows and "path" in [c.strip().lower() for c in rows[0]]:
                col = [c.strip().lower() for c in rows[0]].index("path")
                rows = rows[1:]
            else:
                col = 0
            raw = [r[col].strip() for r in rows if len(r) > col and r[col].strip()]
        else:
            raw = [
                line.strip() for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
    paths = [p if _is_uri(p) or os.path.isabs(p) else _join(fs, base, p) for p in raw]
    return fs, paths


def done_paths(out_dir: str) -> set[str]:
    """Paths already written to ``out_dir`` by earlier runs (resume); unreadable files are ignored."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    fs, root = resolve_filesystem(out_dir)
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return set()
    done: set[str] = set()
    for fi in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        if fi.type != pafs.FileType.File or not fi.path.endswith(".parquet"):
            continue
        try:
            with fs.open_input_file(fi.path) as fh:
                done.update(p for p in pq.read_table(fh, columns=["path"]).column("path").to_pylist())
        except Exception:  # a file cut short by a crash: its rows are simply done again
            continue
    return done


def read_results(out_dir: str) -> list[dict[str, Any]]:
    """Every row in ``out_dir`` as a result dict (JSON columns parsed), sorted by path."""
    import pyarrow.parquet as pq

    fs, root = resolve_filesystem(out_dir)
    rows: list[dict[str, Any]] = []
    import pyarrow.fs as pafs

    for fi in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        if fi.type != pafs.FileType.File or not fi.path.endswith(".parquet"):
            continue
        with fs.open_input_file(fi.path) as fh:
            table = pq.read_table(fh)
        json_cols = set(json.loads((table.schema.metadata or {}).get(b"clipsieve.json_columns", b"[]")))
        for row in table.to_pylist():
            rows.append({k: (json.loads(v) if k in json_cols and v is not None else v)
                         for k, v in row.items()})
    rows.sort(key=lambda r: r["path"])
    return rows


# -- stage 2: read, hash, decode, pixel statistics, preprocess (CPU tasks) -----------------
@dataclass
class AnalyzerSpec:
    """What a worker needs to rebuild the driver's Analyzer (no store: workers write none)."""

    model: str
    encoder: str
    device: str | None
    precision: str | None
    max_pixels: int
    max_file_bytes: int
    pixel_features: bool
    batch_size: int

    @classmethod
    def of(cls, analyzer: Any, *, device: str | None = None) -> AnalyzerSpec:
        return cls(
            model=analyzer.model_id, encoder=analyzer.encoder_kind,
            device=device or analyzer.device, precision=analyzer.precision_request,
            max_pixels=analyzer.limits.max_pixels,
            max_file_bytes=analyzer.limits.max_file_bytes,
            pixel_features=analyzer.pixel_features_enabled, batch_size=analyzer.batch_size,
        )

    def limits(self) -> Any:
        from clipsieve.media.decode import DecodeLimits

        return DecodeLimits(max_pixels=self.max_pixels, max_file_bytes=self.max_file_bytes)

    def build(self) -> Any:
        from clipsieve.pipeline import Analyzer

        return Analyzer(model=self.model, encoder=self.encoder, device=self.device,
                        precision=self.precision, store=False, batch_size=self.batch_size,
                        workers=1, limits=self.limits(), pixel_features=self.pixel_features)


@dataclass
class PrepareStep:
    """Callable for ``map_batches``: a batch of paths → prepared rows (one per path)."""

    fs: Any
    spec: AnalyzerSpec

    def _read(self, path: str) -> bytes:
        import pyarrow.fs as pafs

        from clipsieve.media.decode import read_bytes

        if isinstance(self.fs, pafs.LocalFileSystem):
            return read_bytes(path, self.spec.limits())  # regular files only, bounded
        limit = self.spec.max_file_bytes
        try:
            with self.fs.open_input_stream(path) as fh:
                data = fh.read(limit + 1)
        except FileNotFoundError:
            raise DecodeError("io_error", "no such file", path) from None
        except OSError as exc:
            raise DecodeError("io_error", f"cannot read: {exc}", path) from None
        if len(data) > limit:
            raise DecodeError("too_large", f"file is over the limit of {limit} bytes", path)
        return bytes(data)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from clipsieve.pipeline import Prepared, error_of
        from clipsieve.types import ItemResult

        an = self.spec.build()
        h, w = an.preprocess.output_hw
        paths = [str(p) for p in batch["path"]]
        pixels = np.zeros((len(paths), 3, h, w), dtype=np.float32)
        out: dict[str, list[Any]] = {k: [] for k in (
            "path", "ok", "error_code", "error_message", "sha256", "width", "height",
            "features", "read_ms", "decode_ms")}
        for i, path in enumerate(paths):
            t0 = time.perf_counter()
            try:
                data = self._read(path)
            except Exception as exc:  # never let one file stop the batch
                prepared = Prepared(ItemResult(path=path, status="error", error=error_of(exc)))
                read_ms = None
            else:
                read_ms = (time.perf_counter() - t0) * 1000
                prepared = an.prepare(data, id=path)  # hash, decode, statistics (as scan)
                del data
            item = prepared.item
            if prepared.pixels is not None:
                pixels[i] = prepared.pixels
            out["path"].append(path)
            out["ok"].append(item.ok)
            out["error_code"].append(item.error.code if item.error else None)
            out["error_message"].append(item.error.message if item.error else None)
            out["sha256"].append(item.sha256)
            out["width"].append(item.width if item.width is not None else -1)
            out["height"].append(item.height if item.height is not None else -1)
            out["features"].append(json.dumps(item.features) if item.features is not None
                                   else None)
            out["read_ms"].append(read_ms)
            out["decode_ms"].append(item.timing.get("decode_ms") if item.ok else None)
        result: dict[str, Any] = {k: np.array(v, dtype=object) for k, v in out.items()}
        result["ok"] = np.array(out["ok"], dtype=bool)
        result["pixels"] = pixels
        return result


# -- stage 3 + 4: embed (once-per-actor encoder) and run the pickled heads ----------------
class EmbedAndScore:
    """Ray actor class for ``map_batches``: creates the encoder once, then embeds and scores."""

    def __init__(self, spec: AnalyzerSpec, heads: Sequence[Any], columns: Sequence[str]) -> None:
        self.analyzer = spec.build()
        self.encoder = self.analyzer.encoder  # loaded once per actor
        self.heads = list(heads)
        self.columns = list(columns)

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        from clipsieve.pipeline import Prepared
        from clipsieve.types import ErrorInfo, ItemResult

        prepared: list[Prepared] = []
        for i in range(len(batch["path"])):  # the prepared rows, back from their columns
            item = ItemResult(path=str(batch["path"][i]), model=self.analyzer.model_id,
                              sha256=batch["sha256"][i])
            if batch["read_ms"][i] is not None:
                item.timing["read_ms"] = float(batch["read_ms"][i])
            if not batch["ok"][i]:
                item.status = "error"
                item.error = ErrorInfo(str(batch["error_code"][i]), str(batch["error_message"][i]))
                item.timing["total_ms"] = item.timing.get("read_ms", 0.0)
                prepared.append(Prepared(item))
                continue
            item.width, item.height = int(batch["width"][i]), int(batch["height"][i])
            feats = batch["features"][i]
            item.features = None if feats is None else json.loads(feats)
            item.timing["decode_ms"] = float(batch["decode_ms"][i])
            prepared.append(Prepared(item, pixels=batch["pixels"][i]))
        items = self.analyzer.analyze(prepared, heads=self.heads)  # encode once, heads
        return rows_to_table([it.to_dict() for it in items], self.columns)


def rows_to_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Any:
    """Result dicts → a pyarrow Table with a fixed schema (nested fields as JSON text)."""
    import pyarrow as pa

    json_cols = [c for c in columns if c in JSON_COLUMNS or c not in BASE_COLUMNS]
    fields = []
    for c in columns:
        if c in _INT_COLUMNS:
            fields.append(pa.field(c, pa.int64()))
        elif c in _BOOL_COLUMNS:
            fields.append(pa.field(c, pa.bool_()))
        else:
            fields.append(pa.field(c, pa.string()))
    schema = pa.schema(fields, metadata={"clipsieve.json_columns": json.dumps(json_cols)})
    data: dict[str, list[Any]] = {c: [] for c in columns}
    for r in rows:
        for c in columns:
            v = r.get(c)
            if c in json_cols:
                v = None if v is None else json.dumps(v, ensure_ascii=False)
            data[c].append(v)
    return pa.Table.from_pydict(data, schema=schema)


# -- the driver ------------------------------------------------------------------------------
@dataclass
class RayScanSummary:
    """What a Ray scan did: counts, the output folder and the wall time."""

    total: int
    skipped: int
    written: int
    ok: int = 0
    failed: int = 0
    blocked: int = 0
    seconds: float = 0.0
    out_dir: str = ""
    errors: list[tuple[str, str]] = field(default_factory=list)


def run_ray_scan(
    input_spec: str,
    out_dir: str,
    *,
    analyzer: Any,
    heads: Sequence[Any],
    address: str | None = None,
    num_cpus: int | None = None,
    actors: int = 1,
    cpus_per_actor: float = 1.0,
    gpus_per_actor: float = 0.0,
    batch_size: int | None = None,
    recursive: bool = True,
    on_progress: Callable[[str], None] | None = None,
) -> RayScanSummary:
    """Scan ``input_spec`` on Ray and write Parquet into ``out_dir``; see the module docstring.

    Args:
        analyzer: supplies the model id, encoder kind, device, precision, preprocessing and
            decode limits (its model is not loaded on the driver unless ``heads`` needed it).
        heads: built once (e.g. with :func:`clipsieve.build_heads`); pickled to the actors.
        address: ``None`` starts a local Ray (``num_cpus``); ``"auto"`` or ``"ray://…"``
            joins a cluster.
        actors: size of the embedding actor pool (one per GPU, or one per ``cpus_per_actor``).
    """
    ray = require_ray()
    t0 = time.perf_counter()
    say = on_progress or (lambda _msg: None)
    fs, paths = list_inputs(input_spec, recursive=recursive)
    already = done_paths(out_dir)
    todo = [p for p in paths if p not in already]
    summary = RayScanSummary(total=len(paths), skipped=len(paths) - len(todo), written=0,
                             out_dir=out_dir)
    if not todo:
        summary.seconds = time.perf_counter() - t0
        return summary
    out_fs, out_root = resolve_filesystem(out_dir)
    out_fs.create_dir(out_root, recursive=True)

    columns = list(BASE_COLUMNS) + [h.field for h in heads if h.field not in BASE_COLUMNS]
    spec = AnalyzerSpec.of(analyzer, device="cuda" if gpus_per_actor > 0 else None)
    step = PrepareStep(fs=fs, spec=spec)
    started_here = False
    if not ray.is_initialized():
        say("starting Ray" if address is None else f"connecting to Ray at {address}")
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
        if address is None:
            kwargs["num_cpus"] = num_cpus or os.cpu_count() or 2
        else:
            kwargs["address"] = address
        ray.init(**kwargs)
        started_here = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        bs = batch_size or analyzer.batch_size
        ds = ray.data.from_items([{"path": p} for p in todo],
                                 override_num_blocks=max(1, min(len(todo) // bs + 1, 64)))
        # decode tasks spread over the nodes; their remote arguments differ from the actors',
        # so Ray keeps them a separate CPU task pool instead of fusing them into the actors
        ds = ds.map_batches(step, batch_size=bs, batch_format="numpy", num_cpus=1,
                            scheduling_strategy="SPREAD")
        ds = ds.map_batches(
            EmbedAndScore,
            fn_constructor_kwargs={"spec": spec, "heads": list(heads), "columns": columns},
            batch_size=bs, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=max(1, actors)),
            num_cpus=cpus_per_actor, num_gpus=gpus_per_actor,
        )
        say(f"scanning {len(todo)} files on Ray")
        ds.write_parquet(out_dir, filesystem=out_fs if _is_uri(out_dir) else None)
    finally:
        if started_here:
            ray.shutdown()
    mine = set(todo)
    for row in read_results(out_dir):
        if row["path"] not in mine:
            continue
        summary.written += 1
        if row["status"] == "ok":
            summary.ok += 1
            if (row.get("moderation") or {}).get("decision") == "block":
                summary.blocked += 1
        else:
            summary.failed += 1
            summary.errors.append((row["path"], (row.get("error") or {}).get("code", "")))
    summary.seconds = time.perf_counter() - t0
    return summary
