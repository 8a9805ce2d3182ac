"""`clipsieve quality` and `clipsieve train-quality` end to end on the tiny random CLIP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageFilter

from clipsieve.cli import main
from clipsieve.errors import EXIT_FATAL, EXIT_ITEMS_FAILED, EXIT_OK, EXIT_USAGE


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


@pytest.fixture(scope="module")
def rated(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, Path]) -> Path:
    """Eight images (four photos, sharp and blurred) and a ratings CSV on a 1–5 scale."""
    folder = tmp_path_factory.mktemp("rated")
    rows = ["path,score"]
    for name, path in photos.items():
        shutil.copy(path, folder / f"{name}.jpg")
        Image.open(path).filter(ImageFilter.GaussianBlur(5)).save(folder / f"{name}-blur.jpg")
        rows += [f"{name}.jpg,5", f"{name}-blur.jpg,1.5"]
    (folder / "ratings.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_quality_table_and_jsonl(
    tiny_clip: Path, photos: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in photos.values():
        shutil.copy(p, folder / p.name)
    model = ("--model", str(tiny_clip), "--no-store")
    code, out, err = run_main(capsys, "quality", str(folder), *model)
    assert code == EXIT_OK, err
    for word in ("path", "score", "technical", "aesthetic", "sharp", "noise", "exposure"):
        assert word in out
    assert all(p.name in out for p in photos.values())
    assert "scored 4 items: 4 ok, 0 failed" in err

    jsonl = tmp_path / "q.jsonl"
    code, _, err = run_main(capsys, "quality", str(folder), *model, "--format", "jsonl",
                            "--out", str(jsonl), "--quiet")
    assert code == EXIT_OK and err == ""
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(rows) == 4
    for r in rows:
        q = r["quality"]
        assert 0 <= q["score"] <= 10 and 0 <= q["technical"] <= 10 and 0 <= q["aesthetic"] <= 10
        assert {"sharpness", "noise", "clip_quality", "clip_professional"} <= set(q["components"])
        assert q["version"] and q["model"] == str(tiny_clip.resolve())

    best = max(r["quality"]["score"] for r in rows)
    code, _, err = run_main(capsys, "quality", str(folder), *model, "--format", "jsonl",
                            "--out", str(jsonl), "--min-score", f"{best - 1e-9:.12f}")
    assert code == EXIT_OK
    assert len(jsonl.read_text().splitlines()) == 1 and "3 below --min-score" in err

    (folder / "zz-broken.jpg").write_text("nope")
    code, out, _ = run_main(capsys, "quality", str(folder), *model, "--min-score", "10")
    assert code == EXIT_ITEMS_FAILED and "zz-broken.jpg" in out and "not_an_image" in out
    code, _, err = run_main(capsys, "quality", str(folder), *model, "--min-score", "11")
    assert code == EXIT_USAGE


def test_train_quality_then_use_the_head(
    tiny_clip: Path, clip224: Path, rated: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    head = tmp_path / "heads" / "mine.npz"
    store = tmp_path / "s.sqlite"
    code, out, err = run_main(capsys, "train-quality", str(rated / "ratings.csv"), "--model",
                              str(tiny_clip), "--store", str(store), "--out", str(head),
                              "--folds", "4", "--quiet")
    assert code == EXIT_OK, err
    assert "8 rated images, 0 skipped; ratings 1.5–5 rescaled to 0–10" in out
    assert "4-fold ridge: SRCC" in out and "PLCC" in out
    side = json.loads(head.with_suffix(".json").read_text())
    assert side["model"] == str(tiny_clip.resolve()) and side["kind"] == "ridge"
    assert side["scale"]["min"] == 1.5 and side["scale"]["max"] == 5.0
    assert side["metrics"]["folds"] == 4

    code, out, err = run_main(capsys, "quality", str(rated), "--model", str(tiny_clip),
                              "--store", str(store), "--quality-head", str(head),
                              "--format", "jsonl")
    assert code == EXIT_OK, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 8 and "8 from store" in err
    assert all(r["quality"]["aesthetic_source"] == "head" for r in rows)
    assert rows[0]["quality"]["head"]["file"] == str(head)

    code, _, err = run_main(capsys, "quality", str(rated), "--model", str(clip224),
                            "--no-store", "--quality-head", str(head))
    assert code == EXIT_FATAL
    assert str(tiny_clip.resolve()) in err and str(clip224.resolve()) in err

    code, out, _ = run_main(capsys, "train-quality", str(rated / "ratings.csv"), "--model",
                            str(tiny_clip), "--store", str(store), "--out",
                            str(tmp_path / "mlp.npz"), "--kind", "mlp", "--quiet")
    assert code == EXIT_OK and "5-fold mlp" in out


def test_train_quality_bad_csv(tiny_clip: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "r.csv"
    csv.write_text("a.jpg,good\n")
    code, _, err = run_main(capsys, "train-quality", str(csv), "--model", str(tiny_clip),
                            "--no-store")
    assert code == EXIT_USAGE and "no path,score rows" in err  # line 1 read as a header
    csv.write_text("a.jpg,1\nb.jpg,x\n")
    code, _, err = run_main(capsys, "train-quality", str(csv), "--model", str(tiny_clip),
                            "--no-store")
    assert code == EXIT_USAGE and "r.csv:2: score 'x' is not a number" in err
