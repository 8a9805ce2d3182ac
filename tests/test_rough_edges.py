"""The rough edges a new user hit (issue #15, items 1–16), one test each. Items tested
elsewhere: 4 (``--where`` computes quality on demand) in test_quality_issues.py, 8
(``classify --probe`` alone) in test_cli_classify.py, 12 (``report -m MODEL`` with no results)
in test_report.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipsieve.cli import main


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


@pytest.fixture
def imgs(tmp_path: Path, photos: dict[str, Path]) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in list(photos.values())[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    return folder


def common(tiny_clip: Path, tmp_path: Path) -> list[str]:
    return ["--model", str(tiny_clip), "--store", str(tmp_path / "s.sqlite")]


# 1
def test_move_takes_sidecar_captions_along_and_undo_brings_them_back(
    capsys: pytest.CaptureFixture[str], imgs: Path, tmp_path: Path, tiny_clip: Path
) -> None:
    names = sorted(p.name for p in imgs.iterdir())
    for n in names:
        (imgs / n).with_suffix(".txt").write_text(f"caption of {n}")
    keep = tmp_path / "keep"
    (keep).mkdir()
    (keep / names[0]).write_bytes(b"someone else's file")  # forces photo_1.jpg
    code, _, err = run_main(capsys, "filter", str(imgs), "--accept", str(keep), "--action",
                            "move", *common(tiny_clip, tmp_path))
    assert code == 0, err
    stem0 = Path(names[0]).stem
    assert (keep / f"{stem0}_1.txt").read_text() == f"caption of {names[0]}"  # follows the image
    assert (keep / names[1]).with_suffix(".txt").exists()
    assert not list(imgs.glob("*.txt"))
    run_id = next(line.split()[4] for line in err.splitlines() if line.startswith("undo with"))
    code, _, err = run_main(capsys, "undo", run_id, "--store", str(tmp_path / "s.sqlite"))
    assert code == 0, err
    assert sorted(p.name for p in imgs.glob("*.txt")) == sorted(
        str(Path(n).with_suffix(".txt")) for n in names)
    assert not (keep / f"{stem0}_1.txt").exists()


# 2 and 3
def test_copying_twice_finds_identical_files_done_and_failures_count_once(
    capsys: pytest.CaptureFixture[str], imgs: Path, tmp_path: Path, tiny_clip: Path
) -> None:
    keep = tmp_path / "keep"
    args = ["filter", str(imgs), "--accept", str(keep), "--action", "copy",
            *common(tiny_clip, tmp_path)]
    code, _, err = run_main(capsys, *args)
    assert code == 0 and "2 accept" in err
    before = sorted(p.name for p in keep.iterdir())
    code, _, err = run_main(capsys, *args)
    assert code == 0 and "2 already there" in err
    assert sorted(p.name for p in keep.iterdir()) == before  # no photo_1.jpg
    # two unreadable files: "2 unreadable, 0 failed", not "2 unreadable, 2 failed"
    (imgs / "bad1.jpg").write_bytes(b"not an image")
    (imgs / "bad2.png").write_bytes(b"not an image either")
    code, _, err = run_main(capsys, *args)
    assert code == 4
    summary = next(line for line in err.splitlines() if line.startswith("filter run"))
    assert "2 unreadable, 0 failed, 2 already there" in summary


# 5
@pytest.mark.parametrize("field,hint", [
    ("labels.cat > 0.5", "clipsieve classify --labels"),
    ("probe.dog > 0.5", "classify --probe FILE"),
    ("human.decision == 'allow'", "clipsieve review import"),
    ("colour.hue > 3", "results have:"),
])
def test_missing_field_errors_name_what_provides_the_field(
    capsys: pytest.CaptureFixture[str], imgs: Path, tmp_path: Path, tiny_clip: Path,
    field: str, hint: str
) -> None:
    code, _, err = run_main(capsys, "filter", str(imgs), "--action", "none", "--where", field,
                            *common(tiny_clip, tmp_path))
    assert code == 3 and "no result has" in err and hint in err, err


# 6
def test_device_errors_name_the_environment_variable_when_it_set_the_value(
    imgs: Path, tmp_path: Path, tiny_clip: Path
) -> None:
    def scan(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "from clipsieve.cli import main; main()", "scan", str(imgs),
             "--model", str(tiny_clip), "--no-store", "-q", *extra],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=300, check=False)

    p = scan({"CLIPSIEVE_DEVICE": "tpu"})
    assert p.returncode == 2 and "CLIPSIEVE_DEVICE=tpu: choose auto, cpu" in p.stderr, p.stderr
    p = scan({}, "--device", "tpu")
    assert p.returncode == 2 and "--device=tpu: choose auto, cpu" in p.stderr, p.stderr


# 7
def test_quality_table_has_an_error_column(
    capsys: pytest.CaptureFixture[str], imgs: Path, tmp_path: Path, tiny_clip: Path
) -> None:
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    code, out, _ = run_main(capsys, "quality", str(imgs), "-q", *common(tiny_clip, tmp_path))
    assert code == 4
    header = next(line for line in out.splitlines() if "clip good" in line)
    cols = [c.strip() for c in header.split("┃")[1:-1]] if "┃" in header else header.split()
    assert cols[-2:] == ["issues", "error"]
    row = next(line for line in out.splitlines() if "broken.jpg" in line)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells[-1].startswith(("not_an_image", "truncated", "unsupported"))
    assert cells[-4] == ""  # nothing under "clip good"


# 9 and 10
def test_moderate_summary_counts_block_and_review_always_with_plurals(
    capsys: pytest.CaptureFixture[str], photos: dict[str, Path], tmp_path: Path, tiny_clip: Path
) -> None:
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.jpg").write_bytes(photos["coffee"].read_bytes())
    code, _, err = run_main(capsys, "moderate", str(one), "--threshold", "violence.review=1",
                            "--threshold", "violence.block=1", *common(tiny_clip, tmp_path))
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("moderated 1 item: 1 ok, 0 failed")
    assert " blocked, " in summary and " to review" in summary
    import re

    assert not re.search(r"(?<![\d.])1 items\b", err)


# 11
def test_moderate_input_paths_are_tidied(
    capsys: pytest.CaptureFixture[str], photos: dict[str, Path], tmp_path: Path, tiny_clip: Path
) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "batch").mkdir()
    (tmp_path / "lib" / "a.jpg").write_bytes(photos["coffee"].read_bytes())
    jsonl = tmp_path / "batch" / "items.jsonl"
    jsonl.write_text(json.dumps({"path": "../lib/a.jpg", "caption": "coffee"}) + "\n")
    code, out, _ = run_main(capsys, "moderate", "--input", str(jsonl), "--format", "jsonl",
                            "-q", *common(tiny_clip, tmp_path))
    path = json.loads(out.splitlines()[0])["path"]
    assert ".." not in path and path.endswith(os.path.join("lib", "a.jpg"))


# 13
def test_help_agrees_with_the_readme() -> None:
    from click.testing import CliRunner

    from clipsieve.cli import cli

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    runner = CliRunner()
    tq = runner.invoke(cli, ["train-quality", "--help"]).output
    assert "quality-head.npz" in tq and "[--out quality-head.npz]" in readme
    assert "writes `head.npz`" not in readme
    mod = runner.invoke(cli, ["moderate", "--help"]).output
    assert "- for stdin" in " ".join(mod.split())
    for cmd in ("scan", "moderate"):
        text = " ".join(runner.invoke(cli, [cmd, "--help"]).output.split())
        for var in ("CLIPSIEVE_STORE", "CLIPSIEVE_DEVICE", "CLIPSIEVE_PRECISION"):
            assert var in text, (cmd, var)
    flt = " ".join(runner.invoke(cli, ["filter", "--help"]).output.split())
    assert "-p, --policy" in flt
    for op in ("and, or, not", "< <= > >= == !=", "exists(FIELD)", "issue('blurry')", " in "):
        assert op in flt, op


# 14
def test_python_api_probe_attribute_and_named_pairs(tiny_clip: Path, photos: dict[str, Path]
                                                    ) -> None:
    from clipsieve.pipeline import Analyzer
    from clipsieve.quality.clipiqa import clip_iqa
    from clipsieve.types import ItemResult

    r = ItemResult(path="x")
    assert r.probe is None
    r.probe = {"dog": 0.7, "cat": 0.3}
    assert r.extra["probe"] == r.probe and r.to_dict()["probe"] == {"dog": 0.7, "cat": 0.3}
    an = Analyzer(str(tiny_clip), store=False)
    out = clip_iqa(an, [str(photos["rocket"])], [("crisp", ("Crisp photo.", "Soft photo."))])
    assert list(out) == ["crisp"]  # the README's example: only the named pair


# 16
def test_shell_completion_script_is_generated_and_documented() -> None:
    p = subprocess.run(
        [sys.executable, "-c", "from clipsieve.cli import cli; cli(prog_name='clipsieve')"],
        env={**os.environ, "_CLIPSIEVE_COMPLETE": "bash_source"}, capture_output=True,
        text=True, timeout=120, check=False)
    assert "_clipsieve_completion" in p.stdout and "complete " in p.stdout
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert '"$(_CLIPSIEVE_COMPLETE=bash_source clipsieve)"' in readme


# 10
def test_singular_counts_read_as_singular(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from clipsieve.store import Store

    db = tmp_path / "one.sqlite"
    with Store(db) as s:
        s.put_results([{"path": str(tmp_path / "a.jpg"), "status": "ok", "model": "m"}], model="m")
    code, _, err = run_main(capsys, "export", "--out", str(tmp_path / "x.jsonl"), "--store",
                            str(db))
    assert code == 0 and "1 result written" in err
    code, _, err = run_main(capsys, "report", "--out", str(tmp_path / "r.html"), "--store",
                            str(db), "--no-thumbnails")
    assert code == 0 and "report of 1 item written" in err


# 15
@pytest.mark.parametrize("command", ["moderate", "quality", "classify", "prompts"])
def test_loading_model_status_line_while_the_model_loads(
    capsys: pytest.CaptureFixture[str], imgs: Path, tmp_path: Path, tiny_clip: Path,
    monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """On a terminal the bar's label reads "loading model …" until the first item arrives
    (the shared line of #14), for every command that loads the model."""
    from clipsieve.cli.common import Progress

    shown: list[str] = []
    real, init = Progress.status, Progress.__init__

    def spy(self: Progress, text: str) -> None:
        shown.append(text)
        real(self, text)

    def on_terminal(self: Progress, *a: object, **k: object) -> None:
        init(self, *a, **{**k, "enabled": True})  # type: ignore[arg-type]

    monkeypatch.setattr(Progress, "status", spy)
    monkeypatch.setattr(Progress, "__init__", on_terminal)
    extra: list[str] = {"classify": ["--labels", "cat,dog"]}.get(command, [])
    args = [command, str(imgs), *extra]
    if command == "prompts":
        csv = tmp_path / "l.csv"
        csv.write_text("".join(f"{p},{'cat' if i else 'dog'}\n"
                               for i, p in enumerate(sorted(imgs.iterdir()))))
        (tmp_path / "labels.txt").write_text("cat\ndog\n")
        args = ["prompts", str(csv), "--labels-file", str(tmp_path / "labels.txt"),
                "--out", str(tmp_path / "best.toml")]
    code, _, err = run_main(capsys, *args, "--model", str(tiny_clip), "--no-store")
    assert code in (0, 5), err
    assert len(shown) == 1 and shown[0].startswith("loading model ") and "(torch)" in shown[0]
