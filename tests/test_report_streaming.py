"""report/streaming.py and report/embeddings.py: streamed CSV/Parquet, scan --out, export
--embeddings and --embeddings-npy."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from clipsieve.cli import main
from clipsieve.report import read_export
from clipsieve.report.streaming import ResultWriter
from clipsieve.store import Store

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _rows(n: int) -> list[dict]:
    out = []
    for i in range(n):
        r = {"path": f"/p/{i:05d}.jpg", "status": "ok", "sha256": f"{i:064x}", "width": 10 + i,
             "quality": {"score": i / 7, "components": {"sharpness": 1.5}},
             "moderation": {"decision": "allow", "reasons": ["x", "y"]}}
        out.append(r)
    return out


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_stream_round_trips_and_keeps_late_fields(tmp_path: Path, fmt: str) -> None:
    rows = _rows(25)
    rows[3]["quality"]["score"] = 4  # an int in a float column: still a number
    rows[20]["labels"] = {"cat": 0.9}  # a field first seen after the columns are fixed
    rows[21]["width"] = "wide"  # a value that does not fit its column's type
    rows[22] = {"path": "/p/bad.jpg", "status": "error",
                "error": {"code": "truncated", "message": "ends early"}}
    out = tmp_path / f"r.{fmt}"
    with ResultWriter(out, row_group=8) as w:
        for r in rows:
            w.write(r)
    back = read_export(out)
    assert back == rows
    if fmt == "parquet":
        f = pq.ParquetFile(out)
        assert f.metadata.num_row_groups == 4
        assert f.schema_arrow.field("quality.score").type == pa.float64()
        assert f.schema_arrow.field("width").type == pa.int64()


def test_stream_memory_is_one_row_group(tmp_path: Path) -> None:
    rows = _rows(200)
    out = tmp_path / "big.parquet"
    tracemalloc.start()
    with ResultWriter(out, row_group=100) as w:
        base = tracemalloc.get_traced_memory()[0]
        for k in range(100):  # 20 000 rows, generated on the fly
            for r in rows:
                w.write({**r, "path": f"{r['path']}-{k}"})
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert pq.ParquetFile(out).metadata.num_rows == 20_000
    assert pq.ParquetFile(out).metadata.num_row_groups == 200
    assert peak < 8 * 2**20, peak  # everything at once would be tens of MB


def test_nothing_left_behind_when_a_write_fails(tmp_path: Path) -> None:
    out = tmp_path / "r.parquet"
    with pytest.raises(RuntimeError), ResultWriter(out, row_group=2) as w:
        for r in _rows(5):
            w.write(r)
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def scanned(tmp_path: Path, tiny_clip: Path, photos: dict[str, Path],
            capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path, list[dict]]:
    d = tmp_path / "imgs"
    d.mkdir()
    for p in photos.values():
        shutil.copy(p, d / p.name)
    (d / "zz-bad.jpg").write_bytes(b"not an image")
    store = tmp_path / "s.sqlite"
    with pytest.raises(SystemExit):
        main(["scan", str(d), "--model", str(tiny_clip), "--store", str(store), "-q",
              "--embeddings"])
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(rows) == 5
    return d, store, rows


def _drop_timing(r: dict) -> dict:
    """Without timings, and without null fields (exports leave them out)."""
    def clean(v: object) -> object:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if x is not None}
        return v

    out = {k: clean(v) for k, v in r.items() if k not in ("timing", "cached") and v is not None}
    if isinstance(out.get("provenance"), dict):  # run ids differ between runs
        out["provenance"] = {h: {k: v for k, v in p.items() if k != "run"}
                             for h, p in out["provenance"].items()}
    return out


def _leaves(v: object) -> object:
    if isinstance(v, dict):
        return {k: _leaves(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_leaves(x) for x in v]
    return str(v)


def test_scan_writes_parquet_and_csv_directly(scanned: tuple[Path, Path, list[dict]],
                                              tiny_clip: Path, tmp_path: Path) -> None:
    folder, store, jsonl = scanned
    for name in ("out.parquet", "out.csv"):
        out = tmp_path / name
        with pytest.raises(SystemExit) as exc:
            main(["scan", str(folder), "--model", str(tiny_clip), "--store", str(store),
                  "--out", str(out), "-q", "--embeddings"])
        assert exc.value.code == 4  # the bad file
        back = [_drop_timing(r) for r in read_export(out)]
        ref = [_drop_timing(r) for r in jsonl]
        for a, b in zip(back, ref):
            assert set(a) == set(b), (name, set(a) ^ set(b))
            for k in a:
                if k == "embedding":
                    assert np.allclose(a[k], b[k]), name
                elif name.endswith(".csv"):  # CSV has no types: "1" and 1 read back alike
                    assert _leaves(a[k]) == _leaves(b[k]), (name, k)
                else:
                    assert a[k] == b[k], (name, k)
        assert len(back) == len(ref)
    meta = pq.ParquetFile(tmp_path / "out.parquet").schema_arrow.metadata
    assert meta[b"clipsieve.model"] == str(tiny_clip.resolve()).encode()
    emb = pq.ParquetFile(tmp_path / "out.parquet").schema_arrow.field("embedding").type
    assert pa.types.is_fixed_size_list(emb)
    with pytest.raises(SystemExit) as exc:
        main(["scan", str(folder), "--model", str(tiny_clip), "--no-store",
              "--out", str(out), "--format", "jsonl"])
    assert exc.value.code == 2


def test_export_embeddings_parquet_and_npy(scanned: tuple[Path, Path, list[dict]],
                                           tiny_clip: Path, tmp_path: Path) -> None:
    folder, store_path, jsonl = scanned
    model = str(tiny_clip.resolve())
    st = Store(store_path)
    (prep,) = {p for m, p, _ in st.embedding_kinds() if m == model}
    want = {r["sha256"]: np.array(r["embedding"], dtype=np.float32)
            for r in jsonl if r["status"] == "ok"}
    st.close()
    out = tmp_path / "e.parquet"
    with pytest.raises(SystemExit) as exc:
        main(["export", "--embeddings", "--out", str(out), "--store", str(store_path)])
    assert exc.value.code == 0
    f = pq.ParquetFile(out)
    field = f.schema_arrow.field("embedding")
    assert pa.types.is_fixed_size_list(field.type) and field.type.list_size == len(next(iter(want.values())))
    assert pa.types.is_float32(field.type.value_type)
    meta = f.schema_arrow.metadata
    assert meta[b"clipsieve.model"] == model.encode()
    assert meta[b"clipsieve.preprocess_version"] == prep.encode()
    table = f.read().to_pylist()
    assert len(table) == 5
    for row in table:
        if row["status"] == "ok":
            assert np.allclose(row["embedding"], want[row["sha256"]], atol=1e-6)
        else:
            assert row["embedding"] is None
    npy = tmp_path / "vec"
    with pytest.raises(SystemExit) as exc:
        main(["export", "--embeddings-npy", str(npy), "--store", str(store_path),
              "--model", str(tiny_clip)])
    assert exc.value.code == 0
    mat = np.load(npy / "embeddings.npy")
    ids = pq.read_table(npy / "ids.parquet").to_pylist()
    assert mat.shape == (4, len(next(iter(want.values())))) and mat.dtype == np.float32 and len(ids) == 4
    for i, row in enumerate(ids):
        assert row["i"] == i and np.allclose(mat[i], want[row["sha256"]], atol=1e-6)
    info = json.loads((npy / "embeddings.json").read_text())
    assert info["model"] == model and info["preprocess_version"] == prep and info["count"] == 4
    assert pq.read_schema(npy / "ids.parquet").metadata[b"clipsieve.model"] == model.encode()


def test_export_embeddings_of_another_encoder(scanned: tuple[Path, Path, list[dict]],
                                              tiny_clip: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Each encoder keeps its own embeddings: --encoder picks whose are exported (default:
    the one the results record), and a store holding only another encoder's says so."""
    _, store_path, jsonl = scanned
    model = str(tiny_clip.resolve())
    st = Store(store_path)
    (prep,) = {p for m, p, _ in st.embedding_kinds() if m == model}
    ok = [r for r in jsonl if r["status"] == "ok"]
    other = {r["sha256"]: -np.array(r["embedding"], dtype=np.float32) for r in ok}
    st.put_items(({"path": r["path"], "sha256": r["sha256"], "embedding": other[r["sha256"]]}
                  for r in ok), model=model, prep=prep, encoder="onnx-int8")
    st.close()
    for enc, sign in ((None, 1.0), ("onnx-int8", -1.0), ("torch", 1.0)):
        npy = tmp_path / f"vec-{enc}"
        extra = ["--encoder", enc] if enc else []
        with pytest.raises(SystemExit) as exc:
            main(["export", "--embeddings-npy", str(npy), "--store", str(store_path), *extra])
        assert exc.value.code == 0
        mat = np.load(npy / "embeddings.npy")
        ids = pq.read_table(npy / "ids.parquet").to_pylist()
        assert len(ids) == len(ok)
        for i, row in enumerate(ids):
            assert np.allclose(mat[i], -sign * other[row["sha256"]], atol=1e-6)
        info = json.loads((npy / "embeddings.json").read_text())
        assert info["encoder"] == (enc or "torch")
    out = tmp_path / "e.parquet"
    with pytest.raises(SystemExit) as exc:
        main(["export", "--embeddings", "--encoder", "onnx-int8", "--out", str(out),
              "--store", str(store_path)])
    assert exc.value.code == 0
    assert pq.ParquetFile(out).schema_arrow.metadata[b"clipsieve.encoder"] == b"onnx-int8"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["export", "--embeddings", "--encoder", "onnx", "--out", str(out),
              "--store", str(store_path)])
    assert exc.value.code == 3 and "from the onnx encoder" in capsys.readouterr().err
