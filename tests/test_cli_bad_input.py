"""Issue #8 regression tests: every file gets one line, no input or output path ends in an
internal error, and no input is ever overwritten. Each test reproduces a numbered case of the
issue as written, through the real entry point (a subprocess).

Cases about permissions run the command without root's powers over files (``setpriv``:
``clipsieve.testing.unprivileged_prefix``) when the tests run as root, since root reads and
writes files whatever their mode.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clipsieve.errors import EXIT_FATAL, EXIT_ITEMS_FAILED, EXIT_OK, EXIT_USAGE
from clipsieve.testing import public_temp_dir, unprivileged_prefix


def run_cli(*args: str, prefix: list[str] | None = None, timeout: float = 400,
            env: dict[str, str] | None = None, cwd: str | Path | None = None,
            ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "clipsieve", *args],
        capture_output=True, env={**os.environ, **(env or {})}, timeout=timeout, cwd=cwd,
    )


def lines(proc: subprocess.CompletedProcess[bytes]) -> list[dict]:
    text = proc.stdout.decode("utf-8")  # strict: the output must be valid UTF-8
    return [json.loads(line) for line in text.splitlines()]


def real_path(row: dict) -> str:
    """The file a result line names, through the documented lossless escape."""
    import base64

    if "path_bytes" in row:
        return os.fsdecode(base64.b64decode(row["path_bytes"]))
    return row["path"]


@pytest.fixture()
def jpg(photos: dict[str, Path]) -> Path:
    return photos["astronaut"]


@pytest.fixture()
def nobody() -> list[str]:
    prefix = unprivileged_prefix()
    if prefix is None:
        pytest.skip("running as root without setpriv: cannot drop privileges")
    return prefix


@pytest.fixture()
def public(tiny_clip: Path) -> Iterator[Path]:
    """A folder every user may write, holding a copy of the tiny model (for runs without
    root's powers, which may mean as nobody)."""
    top = public_temp_dir()
    shutil.copytree(tiny_clip, top / "model")
    for p in (top / "model").rglob("*"):
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    os.chmod(top / "model", 0o755)
    try:
        yield top
    finally:
        for p in [top, *top.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o777)
        shutil.rmtree(top, ignore_errors=True)


# -- 2, 3, 4: inputs that stopped or hung the whole run ------------------------------------------


def test_case2_fifo_named_jpg_does_not_hang_and_the_next_file_gets_its_line(
    tiny_clip: Path, tmp_path: Path, jpg: Path
) -> None:
    d = tmp_path / "d"
    d.mkdir()
    os.mkfifo(d / "f.jpg")
    shutil.copy(jpg, d / "z.jpg")
    proc = run_cli("scan", str(d), "--no-store", "--model", str(tiny_clip), timeout=400)
    rows = lines(proc)
    assert [Path(r["path"]).name for r in rows] == ["f.jpg", "z.jpg"]
    assert rows[0]["error"] == {"code": "io_error", "message": "not a regular file (a FIFO)"}
    assert rows[1]["status"] == "ok"
    assert proc.returncode == EXIT_ITEMS_FAILED


def test_case3_link_to_dev_zero_is_refused_without_reading(
    tiny_clip: Path, tmp_path: Path
) -> None:
    d = tmp_path / "d"
    d.mkdir()
    os.symlink("/dev/zero", d / "z.jpg")
    # under a memory cap far below what reading /dev/zero would take before the fix
    cap = "import resource,sys,runpy; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
    code = cap + "sys.argv=['clipsieve',*sys.argv[1:]]; runpy.run_module('clipsieve', run_name='__main__')"
    proc = subprocess.run(
        [sys.executable, "-c", code, "scan", str(d), "--no-store", "--model", str(tiny_clip)],
        capture_output=True, timeout=400,
    )
    rows = lines(proc)
    assert len(rows) == 1
    assert rows[0]["error"] == {"code": "io_error",
                                "message": "not a regular file (a character device)"}
    assert proc.returncode == EXIT_ITEMS_FAILED, proc.stderr


def test_case4_symlink_loop_in_a_folder_gets_a_line(tiny_clip: Path, tmp_path: Path,
                                                     jpg: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    shutil.copy(jpg, d / "a.jpg")
    os.symlink("loop.jpg", d / "loop.jpg")
    proc = run_cli("scan", str(d), "--no-store", "--model", str(tiny_clip))
    rows = lines(proc)
    assert [Path(r["path"]).name for r in rows] == ["a.jpg", "loop.jpg"]
    assert rows[1]["error"]["code"] == "io_error"
    assert "symbolic link loop" in rows[1]["error"]["message"]
    assert proc.returncode == EXIT_ITEMS_FAILED


def test_case4_unreadable_sub_folder_gets_a_line_and_exit_4(
    public: Path, nobody: list[str], jpg: Path
) -> None:
    d = public / "d"
    (d / "sub").mkdir(parents=True)
    shutil.copy(jpg, d / "a.jpg")
    shutil.copy(jpg, d / "sub" / "b.jpg")
    os.chmod(d, 0o755)
    os.chmod(d / "a.jpg", 0o644)
    os.chmod(d / "sub", 0o000)
    proc = run_cli("scan", str(d), "--no-store", "--model", str(public / "model"),
                   prefix=nobody, env={"HOME": str(public)})
    rows = lines(proc)
    assert [Path(r["path"]).name for r in rows] == ["a.jpg", "sub"], proc.stderr
    assert rows[1]["error"]["code"] == "io_error"
    assert rows[1]["error"]["message"].startswith("cannot read folder: permission denied")
    assert proc.returncode == EXIT_ITEMS_FAILED


# -- 5: reason codes ----------------------------------------------------------------------------


def test_case5_pillow_odd_files_get_codes_by_cause(tiny_clip: Path, tmp_path: Path) -> None:
    """Generated equivalents of Pillow's odd test images, in one scan: never io_error."""
    from clipsieve.testing_corpus import odd_files

    want = {
        "bmp_unsupported_compression.bmp": "unsupported",
        "bmp_unsupported_depth.bmp": "unsupported",
        "dds_unknown_fourcc.bmp": "unsupported",
        "eps_needs_ghostscript.jpg": "unsupported",
        "tiff_no_dimensions.tif": "not_an_image",
        "tiff_bad_second_page.tif": None,  # the first page is fine
        "png_truncated.png": "truncated",
        "jpeg_truncated.jpg": "truncated",
    }
    d = tmp_path / "d"
    d.mkdir()
    for name in want:
        (d / name).write_bytes(odd_files()[name.rsplit(".", 1)[0]])
    rows = {Path(r["path"]).name: r for r in lines(
        run_cli("scan", str(d), "--no-store", "--model", str(tiny_clip)))}
    got = {name: (r["error"] or {}).get("code") for name, r in rows.items()}
    assert got == want


# -- 1: file names that are not UTF-8 ------------------------------------------------------------


def test_case1_non_utf8_name_scan_store_out_filter_and_undo(
    tiny_clip: Path, tmp_path: Path, jpg: Path
) -> None:
    u8 = tmp_path / "u8"
    u8.mkdir()
    odd = os.fsdecode(b"a\xff.jpg")
    shutil.copy(jpg, u8 / odd)
    shutil.copy(jpg, u8 / "b.jpg")
    store = tmp_path / "s.sqlite"
    common = ("--model", str(tiny_clip), "--store", str(store))
    # stdout with a store (it used to end in "internal error: UnicodeEncodeError")
    proc = run_cli("scan", str(u8), *common)
    assert proc.returncode == EXIT_OK, proc.stderr
    rows = lines(proc)
    assert [real_path(r) for r in rows] == [str(u8 / odd), str(u8 / "b.jpg")]
    assert rows[0]["path"] == str(u8 / "a\ufffd.jpg")  # shown with U+FFFD
    assert "path_bytes" not in rows[1]  # only names that need it
    # --out FILE, and the second run reads everything from the store
    out = tmp_path / "r.jsonl"
    proc = run_cli("scan", str(u8), *common, "--out", str(out))
    assert proc.returncode == EXIT_OK, proc.stderr
    again = [json.loads(x) for x in out.read_bytes().decode("utf-8").splitlines()]
    assert [real_path(r) for r in again] == [str(u8 / odd), str(u8 / "b.jpg")]
    assert all(r["cached"] for r in again)
    # filter moves it, undo moves it back, and the stored results follow
    acc = tmp_path / "acc"
    proc = run_cli("filter", str(u8), "--accept", str(acc), "--action", "move", *common)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert sorted(os.listdir(acc)) == sorted([odd, "b.jpg"]) and os.listdir(u8) == []
    exported = lines(run_cli("export", "--store", str(store)))
    assert str(acc / odd) in [real_path(r) for r in exported]
    run_id = proc.stderr.decode().split("undo with: clipsieve undo ")[1].split()[0]
    proc = run_cli("undo", run_id, "--store", str(store))
    assert proc.returncode == EXIT_OK, proc.stderr
    assert sorted(os.listdir(u8)) == sorted([odd, "b.jpg"])
    exported = lines(run_cli("export", "--store", str(store)))
    assert sorted(real_path(r) for r in exported) == sorted([str(u8 / odd), str(u8 / "b.jpg")])


def test_case1_no_store_output_is_valid_utf8(tiny_clip: Path, tmp_path: Path, jpg: Path) -> None:
    u8 = tmp_path / "u8"
    u8.mkdir()
    shutil.copy(jpg, u8 / os.fsdecode(b"x\xe9\xff.jpg"))
    proc = run_cli("scan", str(u8), "--no-store", "--model", str(tiny_clip))
    assert b"\xff" not in proc.stdout  # no raw byte leaks into the JSON
    (row,) = lines(proc)
    assert real_path(row) == str(u8 / os.fsdecode(b"x\xe9\xff.jpg"))
    for fmt_cmd in (("scan", "--format", "table"), ("moderate",), ("quality",)):
        p = run_cli(*fmt_cmd, "u8", "--no-store", "--model", str(tiny_clip), cwd=tmp_path)
        assert p.returncode == EXIT_OK, p.stderr
        assert "x\ufffd\ufffd.jpg" in p.stdout.decode("utf-8")


# -- 9, 10, 11, 12: outputs ------------------------------------------------------------------


def test_case9_outputs_in_missing_folders_are_created(
    tiny_clip: Path, tmp_path: Path, jpg: Path
) -> None:
    d = tmp_path / "d"
    d.mkdir()
    shutil.copy(jpg, d / "a.jpg")
    store = tmp_path / "s.sqlite"
    m = ("--model", str(tiny_clip), "--store", str(store))
    for cmd in (("scan", "--out"), ("moderate", "--format", "jsonl", "--out")):
        out = tmp_path / "nodir" / cmd[0] / "x.jsonl"
        proc = run_cli(*cmd, str(out), str(d), *m)
        assert proc.returncode == EXIT_OK, proc.stderr
        assert json.loads(out.read_text())["status"] == "ok"
    proc = run_cli("report", "-o", str(tmp_path / "nodir2" / "r.html"), "--store", str(store))
    assert proc.returncode == EXIT_OK and (tmp_path / "nodir2" / "r.html").stat().st_size > 0
    proc = run_cli("export", "-o", str(tmp_path / "nodir3" / "e.jsonl"), "--store", str(store))
    assert proc.returncode == EXIT_OK and (tmp_path / "nodir3" / "e.jsonl").read_text()
    proc = run_cli("filter", str(d), "--action", "copy", "--accept", str(tmp_path / "acc"),
                   "--manifest", str(tmp_path / "nodir4" / "m.csv"),
                   "--report", str(tmp_path / "nodir5" / "r.html"), *m)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert (tmp_path / "nodir4" / "m.csv").read_text().startswith("path,decision")
    assert (tmp_path / "nodir5" / "r.html").exists()


def test_case9_write_failures_give_one_line_and_exit_3(
    tiny_clip: Path, tmp_path: Path, jpg: Path
) -> None:
    d = tmp_path / "d"
    d.mkdir()
    shutil.copy(jpg, d / "a.jpg")
    proc = run_cli("scan", str(d), "--out", "/dev/full", "--no-store", "--model", str(tiny_clip))
    assert proc.returncode == EXIT_FATAL
    assert proc.stderr.decode().strip().splitlines() == [
        "clipsieve: error: cannot write /dev/full: No space left on device"]
    with open("/dev/full", "wb") as full:
        proc = subprocess.run([sys.executable, "-m", "clipsieve", "scan", str(d), "--no-store",
                               "--model", str(tiny_clip), "-q"],
                              stdout=full, stderr=subprocess.PIPE, timeout=400)
    assert proc.returncode == EXIT_FATAL
    assert proc.stderr.decode().strip().splitlines() == [
        "clipsieve: error: cannot write to standard output: No space left on device"]
    # an output under a plain file cannot be created: refused before any work
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("scan", str(d), "--out", str(blocker / "x.jsonl"), "--no-store",
                   "--model", str(tiny_clip))
    assert proc.returncode == EXIT_FATAL
    assert "--out" in proc.stderr.decode() and "cannot create the folder" in proc.stderr.decode()
    assert b"scanned" not in proc.stderr and b"internal error" not in proc.stderr


def test_case9_filter_that_touched_files_always_prints_its_run_id(
    tiny_clip: Path, tmp_path: Path, jpg: Path
) -> None:
    """The manifest write fails after the files were moved: the run id and the undo command
    are still printed, in one clear error, exit 3; undo then restores everything."""
    d = tmp_path / "d"
    d.mkdir()
    shutil.copy(jpg, d / "a.jpg")
    store = tmp_path / "s.sqlite"
    proc = run_cli("filter", str(d), "--action", "move", "--accept", str(tmp_path / "acc"),
                   "--manifest", "/dev/full", "--quiet", "--model", str(tiny_clip),
                   "--store", str(store))
    err = proc.stderr.decode()
    assert proc.returncode == EXIT_FATAL, err
    assert "cannot write /dev/full: No space left on device" in err
    assert "internal error" not in err
    run_id = err.split("undo with: clipsieve undo ")[1].split()[0]
    assert os.listdir(tmp_path / "acc") == ["a.jpg"]
    assert run_cli("undo", run_id, "--store", str(store)).returncode == EXIT_OK
    assert os.listdir(d) == ["a.jpg"]


def test_case10_outputs_never_overwrite_inputs(
    tiny_clip: Path, tmp_path: Path, jpg: Path
) -> None:
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    shutil.copy(jpg, a)
    shutil.copy(jpg, b)
    before = a.read_bytes()
    m = ("--no-store", "--model", str(tiny_clip))
    proc = run_cli("scan", str(a), "--out", str(a), *m)
    assert proc.returncode == EXIT_USAGE and a.read_bytes() == before
    assert "is also an input" in proc.stderr.decode()
    proc = run_cli("scan", str(a), str(b), "--report", str(b), *m)
    assert proc.returncode == EXIT_USAGE and b.read_bytes() == before
    os.link(a, tmp_path / "hardlink.jsonl")  # same inode under another name
    proc = run_cli("scan", str(a), "--out", str(tmp_path / "hardlink.jsonl"), *m)
    assert proc.returncode == EXIT_USAGE and a.read_bytes() == before
    proc = run_cli("scan", str(a), "--out", str(tmp_path / "r.html"),
                   "--report", str(tmp_path / "r.html"), *m)
    assert proc.returncode == EXIT_USAGE and "name the same file" in proc.stderr.decode()


def test_case11_closed_pipe_ends_quietly(tiny_clip: Path, tmp_path: Path, jpg: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    for i in range(30):
        shutil.copy(jpg, d / f"{i:02}.jpg")
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipsieve", "scan", str(d), "--no-store", "--batch-size", "1",
         "--model", str(tiny_clip)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()  # like `| head -1`
    proc.stdout.close()
    err = proc.stderr.read()
    rc = proc.wait(timeout=400)
    assert json.loads(first)["status"] == "ok"
    import signal

    assert rc == -signal.SIGPIPE, err  # the Unix convention: the shell shows 141
    assert b"Traceback" not in err and b"internal error" not in err and b"rror" not in err


def test_case12_calibrate_checks_its_output_before_scanning(
    tiny_clip: Path, tmp_path: Path, jpg: Path
) -> None:
    shutil.copy(jpg, tmp_path / "a.jpg")
    (tmp_path / "labels.csv").write_text("path,label\na.jpg,violence\n")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("calibrate", str(tmp_path / "labels.csv"), "--target-precision", "0.9",
                   "--out", str(blocker / "p.toml"), "--model", str(tiny_clip),
                   "--store", str(tmp_path / "s.sqlite"))
    assert proc.returncode == EXIT_FATAL
    assert "--out" in proc.stderr.decode() and "cannot create the folder" in proc.stderr.decode()
    assert not (tmp_path / "s.sqlite").exists() or b"calibrat" not in proc.stdout
    # and it never overwrites its own labels file
    proc = run_cli("calibrate", str(tmp_path / "labels.csv"), "--target-precision", "0.9",
                   "--out", str(tmp_path / "labels.csv"), "--model", str(tiny_clip),
                   "--no-store")
    assert proc.returncode == EXIT_USAGE
    assert (tmp_path / "labels.csv").read_text() == "path,label\na.jpg,violence\n"


def test_train_outputs_are_checked_first(tiny_clip: Path, tmp_path: Path, jpg: Path) -> None:
    for cls in ("cat", "dog"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(2):
            shutil.copy(jpg, tmp_path / "data" / cls / f"{i}.jpg")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run_cli("train-probe", str(tmp_path / "data"), "--out", str(blocker / "p.npz"),
                   "--model", str(tiny_clip), "--no-store")
    assert proc.returncode == EXIT_FATAL and b"cannot create the folder" in proc.stderr
    assert b"accuracy" not in proc.stdout  # nothing was trained


# -- 6, 7, 8: store and model ------------------------------------------------------------------


def test_case6_read_only_store_is_exit_3_with_one_line(
    public: Path, nobody: list[str], jpg: Path
) -> None:
    shutil.copy(jpg, public / "a.jpg")
    os.chmod(public / "a.jpg", 0o644)
    store = public / "s.sqlite"
    m = ("--model", str(public / "model"), "--store", str(store))
    assert run_cli("scan", str(public / "a.jpg"), *m).returncode == EXIT_OK
    for p in public.glob("s.sqlite*"):
        os.chmod(p, 0o444)
    proc = run_cli("scan", str(public / "a.jpg"), *m, prefix=nobody, env={"HOME": str(public)})
    err = proc.stderr.decode().strip().splitlines()
    assert proc.returncode == EXIT_FATAL, err
    assert len(err) == 1 and "cannot write store" in err[0] and "read-only" in err[0]
    # reading it still works: export opens a read-only store read-only
    proc = run_cli("export", "--store", str(store), prefix=nobody, env={"HOME": str(public)})
    assert proc.returncode == EXIT_OK, proc.stderr
    assert lines(proc)[0]["status"] == "ok"


def test_case6_store_with_a_newer_schema_is_refused(tiny_clip: Path, tmp_path: Path,
                                                    jpg: Path) -> None:
    import sqlite3

    from clipsieve.store import MIGRATIONS, Store

    store = tmp_path / "s.sqlite"
    Store(store).close()
    with sqlite3.connect(store) as db:
        db.execute("INSERT INTO migrations(version, name, applied_at) VALUES (?, 'future', 0)",
                   (MIGRATIONS[-1][0] + 1,))
    for args in (("scan", str(jpg), "--model", str(tiny_clip)), ("export",), ("undo", "--list")):
        proc = run_cli(*args, "--store", str(store))
        err = proc.stderr.decode().strip().splitlines()
        assert proc.returncode == EXIT_FATAL, (args, err)
        assert len(err) == 1 and "newer than this clipsieve knows" in err[0]


def test_case7_unreadable_weights_name_the_real_cause(
    public: Path, nobody: list[str], jpg: Path
) -> None:
    shutil.copy(jpg, public / "a.jpg")
    os.chmod(public / "a.jpg", 0o644)
    os.chmod(public / "model" / "model.safetensors", 0)
    proc = run_cli("scan", str(public / "a.jpg"), "--no-store", "--model", str(public / "model"),
                   prefix=nobody, env={"HOME": str(public)})
    err = proc.stderr.decode()
    assert proc.returncode == EXIT_FATAL, err
    assert "cannot read model.safetensors (permission denied)" in err
    assert "No such file" not in err


def _tiny_dim(tiny_clip: Path) -> int:
    cfg = json.loads((tiny_clip / "config.json").read_text())
    return int(cfg["projection_dim"])


def test_case8_probe_with_nan_weights_is_refused(tiny_clip: Path, tmp_path: Path,
                                                 jpg: Path) -> None:
    import numpy as np

    from clipsieve.heads.probe import train_probe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, _tiny_dim(tiny_clip))).astype(np.float32)
    probe = train_probe(x, ["a"] * 4 + ["b"] * 4, model_id=str(tiny_clip.resolve()))
    probe.coef[0, 0] = np.nan
    npz, _ = probe.save(tmp_path / "nan.npz")
    proc = run_cli("classify", str(jpg), "--probe", str(npz), "--no-store",
                   "--model", str(tiny_clip), "--format", "jsonl")
    assert proc.returncode == EXIT_FATAL, proc.stderr
    assert b"NaN or infinite" in proc.stderr and proc.stdout == b""


def test_case8_quality_head_with_inf_weights_is_refused(tiny_clip: Path, tmp_path: Path,
                                                        jpg: Path) -> None:
    import numpy as np

    from clipsieve.quality.learned import train_quality_head

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12, _tiny_dim(tiny_clip))).astype(np.float32)
    feats = [{"sharpness": float(v)} for v in rng.uniform(0, 10, 12)]
    head = train_quality_head(emb, feats, rng.uniform(0, 10, 12), model_id=str(tiny_clip.resolve()),
                              folds=2)
    name = next(k for k, v in head.arrays.items() if v.dtype.kind == "f" and v.size)
    head.arrays[name].flat[0] = np.inf
    npz, _ = head.save(tmp_path / "inf.npz")
    proc = run_cli("quality", str(jpg), "--quality-head", str(npz), "--no-store",
                   "--model", str(tiny_clip))
    assert proc.returncode == EXIT_FATAL, proc.stderr
    assert b"NaN or infinite" in proc.stderr


def test_case9_outputs_that_are_fifos_are_written_not_replaced(
    tiny_clip: Path, tmp_path: Path, jpg: Path
) -> None:
    """A device or FIFO output (/dev/stdout, /dev/null, a pipe) is written directly: the
    write-then-rename of regular outputs would replace the device node itself (as root, a
    rename over /dev/full turns it into a plain file). FIFOs stand in for devices here."""
    import stat
    import threading

    out, rep = tmp_path / "out.fifo", tmp_path / "report.fifo"
    os.mkfifo(out)
    os.mkfifo(rep)
    got: dict[str, bytes] = {}

    def drain(p: Path) -> None:
        with open(p, "rb") as fh:
            got[p.name] = fh.read()

    readers = [threading.Thread(target=drain, args=(p,), daemon=True) for p in (out, rep)]
    for t in readers:
        t.start()
    proc = run_cli("scan", str(jpg), "--no-store", "--model", str(tiny_clip), "--format", "csv",
                   "--out", str(out), "--report", str(rep))
    for t in readers:
        t.join(60)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert stat.S_ISFIFO(os.stat(out).st_mode) and stat.S_ISFIFO(os.stat(rep).st_mode)
    assert got["out.fifo"].startswith(b"path,") and b"<html" in got["report.fifo"].lower()
