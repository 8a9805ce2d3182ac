"""``clipsieve serve``: options and the errors that stop it before it listens."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from clipsieve.cli import main

pytest.importorskip("fastapi")


def run(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit as exc:
            return int(exc.code or 0), err.getvalue()
    return 0, err.getvalue()


def test_help_does_not_import_the_web_stack() -> None:
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "clipsieve", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "serve" in out.stdout
    assert not [line for line in out.stderr.splitlines()
                if any(m in line for m in ("fastapi", "uvicorn", "starlette", "prometheus"))]


def test_bad_settings_stop_before_listening(tiny_clip: Path, tmp_path: Path) -> None:
    store = str(tmp_path / "s.sqlite")
    code, err = run(["serve", "--model", str(tiny_clip), "--store", store, "--policy", "nope"])
    assert code == 3 and "unknown policy" in err
    code, err = run(["serve", "--model", str(tmp_path / "missing"), "--store", store])
    assert code == 3 and "missing" in err
    keys = tmp_path / "keys"
    keys.write_text("too-short\n")
    code, err = run(["serve", "--model", str(tiny_clip), "--store", store,
                     "--api-key-file", str(keys)])
    assert code == 2 and "keys:1:" in err and "too-short" not in err
    code, err = run(["serve", "--max-upload-size", "lots"])
    assert code == 2 and "not a size" in err


def test_port_in_use_is_one_line(tiny_clip: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        code, err = run(["serve", "--model", str(tiny_clip), "--store",
                         str(tmp_path / "s.sqlite"), "--port", str(port)])
    assert code == 3 and f"cannot listen on 127.0.0.1:{port}" in err


def test_sizes() -> None:
    from clipsieve.errors import ConfigError
    from clipsieve.service import parse_size

    assert parse_size("20MB") == 20_000_000
    assert parse_size("512KiB") == 524_288
    assert parse_size("1.5GB") == 1_500_000_000
    assert parse_size("1000") == 1000
    for bad in ("", "-1", "0", "12XB", "MB"):
        with pytest.raises(ConfigError):
            parse_size(bad)
