"""Tests of clipsieve.ray_engine: a local Ray (ray.init(num_cpus=2)) against the local engine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray", reason="the ray extra is installed by ./scripts/test")

from clipsieve.errors import ConfigError  # noqa: E402
from clipsieve.ray_engine import done_paths, list_inputs, read_results, run_ray_scan  # noqa: E402


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, Path]) -> Path:
    root = tmp_path_factory.mktemp("ray-lib")
    (root / "sub").mkdir()
    for i, (name, src) in enumerate(sorted(photos.items())):
        dest = root / ("sub" if i % 2 else "") / f"{name}.jpg"
        shutil.copy(src, dest)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "empty.png").write_bytes(b"")
    (root / ".hidden.jpg").write_bytes(b"hidden")
    return root


def _analyzer(tiny_clip: Path) -> Any:
    from clipsieve import Analyzer

    return Analyzer(model=str(tiny_clip), store=False, device="cpu", precision="float32",
                    batch_size=4, workers=2)


def _heads(an: Any) -> list[Any]:
    from clipsieve import build_heads

    return build_heads(an, policy="default", quality=True, labels=["cat", "rocket", "cup"])


def _local(tiny_clip: Path, paths: list[str]) -> dict[str, dict[str, Any]]:
    an = _analyzer(tiny_clip)
    heads = _heads(an)
    return {r.path: r.to_dict() for r in an.scan(paths, heads=heads)}


def _close(a: Any, b: Any, path: str) -> None:
    """Same structure; numbers within 1e-5; everything else equal."""
    if isinstance(a, dict):
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=1e-5), path
    else:
        assert a == b, path


def test_list_inputs_folder_txt_csv_parquet(collection: Path, tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _, found = list_inputs(str(collection))
    names = [Path(p).relative_to(collection).as_posix() for p in found]
    assert names == sorted(names)
    assert ".hidden.jpg" not in names and "broken.jpg" in names and "empty.png" in names
    assert len(found) == 6

    (tmp_path / "list.txt").write_text("# two files\n" + "\n".join(found[:2]) + "\n\n")
    assert list_inputs(str(tmp_path / "list.txt"))[1] == found[:2]
    rel = [str(Path(p).relative_to(tmp_path.parent)) for p in found[:3]]
    (tmp_path / "list.csv").write_text("caption,path\n" + "".join(f"x,../{p}\n" for p in rel))
    assert list_inputs(str(tmp_path / "list.csv"))[1] == found[:3]
    pq.write_table(pa.table({"path": found[1:4]}), tmp_path / "list.parquet")
    assert list_inputs(str(tmp_path / "list.parquet"))[1] == found[1:4]
    pq.write_table(pa.table({"file": found[1:4]}), tmp_path / "bad.parquet")
    with pytest.raises(ConfigError, match="no 'path' column"):
        list_inputs(str(tmp_path / "bad.parquet"))
    with pytest.raises(ConfigError, match="no such file"):
        list_inputs(str(tmp_path / "missing"))


@pytest.mark.slow
def test_ray_scan_equals_local_engine_and_resumes(
    collection: Path, tiny_clip: Path, tmp_path: Path
) -> None:
    _, files = list_inputs(str(collection))
    local = _local(tiny_clip, files)
    out = tmp_path / "out"

    an = _analyzer(tiny_clip)
    # a first run over two files only (as if an earlier run had been interrupted) …
    (tmp_path / "first.txt").write_text("\n".join(files[:2]))
    first = run_ray_scan(str(tmp_path / "first.txt"), str(out), analyzer=an, heads=_heads(an),
                         num_cpus=2, actors=1, batch_size=2)
    assert (first.total, first.skipped, first.written) == (2, 0, 2)
    # … then the whole folder: the two are skipped, the rest written once
    second = run_ray_scan(str(collection), str(out), analyzer=an, heads=_heads(an),
                          num_cpus=2, actors=2, batch_size=2)
    assert (second.total, second.skipped, second.written) == (6, 2, 4)
    rows = read_results(str(out))
    assert [r["path"] for r in rows] == sorted(files)  # every input exactly once
    for row in rows:
        ref = local[row["path"]]
        assert row["status"] == ref["status"]
        if ref["status"] == "error":
            assert row["error"]["code"] == ref["error"]["code"]
            continue
        assert row["moderation"]["decision"] == ref["moderation"]["decision"]
        for field in ("moderation", "quality", "labels"):
            _close(row[field], ref[field], field)
        for key in ("sha256", "width", "height", "model", "device", "precision"):
            assert row[key] == ref[key], key
    codes = {Path(r["path"]).name: r["error"]["code"] for r in rows if r["status"] == "error"}
    assert codes == {"broken.jpg": "truncated", "empty.png": "not_an_image"}

    third = run_ray_scan(str(collection), str(out), analyzer=an, heads=_heads(an), num_cpus=2)
    assert (third.skipped, third.written) == (6, 0)
    assert done_paths(str(out)) == set(files)


def test_missing_ray_is_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from clipsieve.ray_engine import require_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'clipsieve\[ray\]'"):
        require_ray()


@pytest.mark.slow
def test_cli_scan_engine_ray(collection: Path, tiny_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli-out"
    cmd = [sys.executable, "-m", "clipsieve", "scan", "--engine", "ray", str(collection),
           "--out", str(out), "--model", str(tiny_clip), "--no-store", "--ray-num-cpus", "2",
           "--labels", "cat,dog"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 4, proc.stderr  # two files fail, the rest are processed
    assert "6 files: 6 written, 0 already done" in proc.stderr
    rows = read_results(str(out))
    assert len(rows) == 6
    assert all(set(r["labels"]) == {"cat", "dog"} for r in rows if r["status"] == "ok")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert "0 written, 6 already done" in again.stderr
    assert json.loads(json.dumps(rows))  # plain JSON types all the way down

    no_out = [c for c in cmd if c not in ("--out", str(out))]
    bad = subprocess.run(no_out, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--out" in bad.stderr
