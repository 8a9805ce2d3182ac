"""Issue #8 regression tests: every file gets one line, no input or output path ends in an
internal error, and no input is ever overwritten. Each test reproduces a numbered case of the
issue as written, through the real entry point (a subprocess).

Cases about permissions run the command as the user ``nobody`` (``setpriv``) when the tests run
as root, since root reads and writes files whatever their mode.
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

from clipsieve.errors import EXIT_ITEMS_FAILED
from clipsieve.testing import public_temp_dir, unprivileged_prefix


def run_cli(*args: str, prefix: list[str] | None = None, timeout: float = 180,
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
    """A folder every user may write, holding a copy of the tiny model (for runs as nobody)."""
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
    proc = run_cli("scan", str(d), "--no-store", "--model", str(tiny_clip), timeout=120)
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
        capture_output=True, timeout=120,
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
