"""cli/scan.py through the real entry point (subprocess) and in-process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clipsieve.cli import main
from clipsieve.errors import EXIT_FATAL, EXIT_ITEMS_FAILED, EXIT_OK


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clipsieve", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300,
    )


@pytest.fixture()
def folder(tmp_path: Path, photos: dict[str, Path]) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    for p in photos.values():
        shutil.copy(p, d / p.name)
    return d


def test_scan_writes_jsonl_and_summary(tiny_clip: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    store = tmp_path / "s.sqlite"
    proc = run_cli("scan", str(folder), "--model", str(tiny_clip), "--out", str(out),
                   "--store", str(store))
    assert proc.returncode == EXIT_OK, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [Path(r["path"]).name for r in rows] == sorted(p.name for p in folder.iterdir())
    for r in rows:
        assert r["status"] == "ok" and r["error"] is None and len(r["sha256"]) == 64
        assert r["model"] == str(tiny_clip.resolve()) and r["width"] > 0
    assert "scanned 4 items: 4 ok, 0 failed, 0 from store" in proc.stderr
    assert "\x1b[" not in proc.stderr  # no progress bar when not on a terminal
    again = run_cli("scan", str(folder), "--model", str(tiny_clip), "--out", str(out),
                    "--store", str(store))
    assert "4 from store" in again.stderr


def test_failed_items_give_exit_code_and_keep_going(tiny_clip: Path, folder: Path) -> None:
    (folder / "zz-bad.jpg").write_text("not an image")
    proc = run_cli("scan", str(folder), "--model", str(tiny_clip), "--no-store")
    assert proc.returncode == EXIT_ITEMS_FAILED
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 5
    bad = rows[-1]
    assert bad["status"] == "error" and bad["error"]["code"] == "not_an_image"
    assert "1 failed" in proc.stderr


def test_missing_model_is_one_line_and_exit_3(folder: Path, tmp_path: Path) -> None:
    proc = run_cli("scan", str(folder), "--no-store", "--model", str(tmp_path / "nowhere"))
    assert proc.returncode == EXIT_FATAL
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clipsieve: error: cannot load model")


def test_env_var_selects_model(tiny_clip: Path, folder: Path,
                               monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CLIPSIEVE_MODEL", str(tiny_clip))
    with pytest.raises(SystemExit) as info:
        main(["scan", str(folder), "--no-store", "--quiet"])
    assert info.value.code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["model"] for r in rows} == {str(tiny_clip.resolve())}


def test_help_lists_exit_codes() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0 and "Exit codes" in proc.stdout and "scan" in proc.stdout


def test_progress_bar_on_a_terminal(tiny_clip: Path, folder: Path) -> None:
    import pty

    (folder / "zz-bad.jpg").write_text("nope")
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipsieve", "scan", str(folder), "--model", str(tiny_clip),
         "--no-store"],
        stdout=subprocess.DEVNULL, stderr=slave, env={**os.environ, "COLUMNS": "160"},
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert "items/s" in text and "ETA" in text
    assert "1 errors" in text
    assert "5/5" in text


def test_scan_adds_moderation_and_labels(tiny_clip: Path, folder: Path, tmp_path: Path) -> None:
    proc = run_cli("scan", str(folder), "--model", str(tiny_clip), "--no-store",
                   "--labels", "cat,rocket,coffee")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    for r in rows:
        assert r["moderation"]["decision"] in ("allow", "review", "block")
        assert r["moderation"]["policy"]["name"] == "default"
        assert list(r["labels"]) == ["cat", "rocket", "coffee"]
        assert abs(sum(r["labels"].values()) - 1) < 1e-5
    plain = run_cli("scan", str(folder), "--model", str(tiny_clip), "--no-store",
                    "--no-moderation")
    assert all("moderation" not in json.loads(x) for x in plain.stdout.splitlines())
    bad = run_cli("scan", str(folder), "--model", str(tiny_clip), "--no-store",
                  "--policy", "defualt")
    assert bad.returncode == 3 and 'did you mean "default"' in bad.stderr


def test_scan_report_has_one_row_per_item(tiny_clip: Path, folder: Path, tmp_path: Path) -> None:
    report = tmp_path / "r.html"
    proc = run_cli("scan", str(folder), "--model", str(tiny_clip), "--no-store",
                   "--report", str(report), "--out", str(tmp_path / "x.jsonl"))
    assert proc.returncode == 0, proc.stderr
    html = report.read_text()
    for p in folder.iterdir():
        assert p.name in html
    assert "data:image/jpeg;base64," in html


def test_every_scan_result_has_quality_on_0_to_10(tiny_clip: Path, folder: Path) -> None:
    proc = run_cli("scan", str(folder), "--model", str(tiny_clip), "--no-store")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 4
    for r in rows:
        q = r["quality"]
        for key in ("score", "technical", "aesthetic"):
            assert 0 <= q[key] <= 10
        assert q["version"] and "sharpness" in q["components"]
    plain = run_cli("scan", str(folder), "--model", str(tiny_clip), "--no-store", "--no-quality")
    assert all("quality" not in json.loads(x) for x in plain.stdout.splitlines())


def test_scan_table_format(tiny_clip: Path, folder: Path) -> None:
    (folder / "zz-bad.jpg").write_text("nope")
    proc = run_cli("scan", str(folder), "--model", str(tiny_clip), "--no-store",
                   "--format", "table", "--labels", "cat,dog")
    assert proc.returncode == EXIT_ITEMS_FAILED
    assert "decision" in proc.stdout and "quality" in proc.stdout
    assert "not_an_image" in proc.stdout and "allow" in proc.stdout
    assert not proc.stdout.lstrip().startswith("{")


def test_empty_folder_warns(tiny_clip: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = run_cli("scan", str(tmp_path / "empty"), "--model", str(tiny_clip), "--no-store")
    assert proc.returncode == 0 and proc.stdout == ""
    assert "warning: no image or video files found under" in proc.stderr
