"""cli/calibrate.py: the labels CSV reader, and the command end to end with the tiny CLIP.

The tiny CLIP's scores are arbitrary, so the end-to-end tests recompute, from the stored
embeddings, what the command must have chosen (``calibrate_policy`` / ``bias_audit`` on
``moderate()`` scores) and compare.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsieve.cli import main
from clipsieve.errors import EXIT_ITEMS_FAILED, EXIT_OK, EXIT_USAGE, ConfigError
from clipsieve.moderation import load_policy
from clipsieve.training import LabelRow, read_labels_csv

POLICY = load_policy("default")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- the CSV reader (no model) --------------------------------------------------------------


def test_label_column_mode(tmp_path: Path) -> None:
    csv = write(tmp_path / "l.csv",
                "path,label,group\n"
                "a.jpg,violence,x\n"
                "b.jpg, None ,y\n"
                "c.jpg,,\n"
                "d.jpg,weapons;Violence,x\n"
                "e.jpg,safe,y\n"
                ",violence,x\n"
                "\n")
    labels = read_labels_csv(str(csv), POLICY)
    assert labels.categories == ["violence", "weapons"]  # policy order, labelled ones only
    assert labels.has_group
    assert labels.rows[0] == LabelRow(2, str(tmp_path / "a.jpg"),
                                      {"violence": 1, "weapons": 0}, "x")
    assert [r.labels for r in labels.rows[1:]] == [
        {"violence": 0, "weapons": 0}, {"violence": 0, "weapons": 0},
        {"violence": 1, "weapons": 1}, {"violence": 0, "weapons": 0}]
    assert labels.rows[2].group == "(blank)"
    assert labels.errors == ["line 7: empty path"]


def test_one_column_per_category_mode(tmp_path: Path) -> None:
    csv = write(tmp_path / "l.csv",
                "path,spam_scam,violence\n"
                "/abs/a.jpg,1,0\n"
                "b.jpg,yes,\n"
                "c.jpg,FALSE,true\n")
    labels = read_labels_csv(str(csv), POLICY)
    assert labels.categories == ["violence", "spam_scam"] and not labels.has_group
    assert labels.rows[0].path == "/abs/a.jpg" and labels.rows[0].group is None
    assert [r.labels for r in labels.rows] == [
        {"spam_scam": 1, "violence": 0}, {"spam_scam": 1, "violence": 0},
        {"spam_scam": 0, "violence": 1}]


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "empty file"),
        ("Path,violence\na.jpg,1\n", 'no "path" column; did you mean "path"?'),
        ("file,violence\n", 'no "path" column (columns: "file", "violence")'),
        ("path,violnce,group\n",
         ('unknown category column "violnce"; did you mean "violence"? (categories of policy '
          '"default": explicit_nudity')),
        ("path,group\n", 'needs a "label" column or one 0/1 column per category'),
        ("path,label,violence\n", 'either a "label" column or one 0/1 column per category'),
        ("path,violence,violence\n", 'column "violence" appears twice'),
        ("path,label\na.jpg,violense\n",
         ('line 2: label "violense" is not a category of policy "default"; '
          'did you mean "violence"?')),
        ("path,violence\na.jpg,1\nb.jpg,maybe\n",
         'line 3, column "violence": expected 0 or 1, got "maybe"'),
    ],
)
def test_csv_errors(tmp_path: Path, text: str, message: str) -> None:
    csv = write(tmp_path / "labels.csv", text)
    with pytest.raises(ConfigError) as info:
        read_labels_csv(str(csv), POLICY)
    assert str(info.value).startswith(f"{csv}: ")
    assert message in str(info.value)


def test_missing_csv(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such labels file"):
        read_labels_csv(str(tmp_path / "none.csv"), POLICY)


# -- end to end -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, Path]) -> Path:
    """Eight images: four photos and four synthetic ones, in ``<root>/imgs``."""
    root = tmp_path_factory.mktemp("calibrate")
    imgs = root / "imgs"
    imgs.mkdir()
    for p in photos.values():
        (imgs / p.name).write_bytes(p.read_bytes())
    rng = np.random.default_rng(3)
    for i in range(4):
        arr = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8) // (i + 1)
        Image.fromarray(arr).save(imgs / f"synth{i}.png")
    return root


NAMES = ["astronaut.jpg", "coffee.jpg", "chelsea.jpg", "rocket.jpg",
         "synth0.png", "synth1.png", "synth2.png", "synth3.png"]


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


def scores_of(tiny_clip: Path, store: Path, root: Path, names: list[str], policy=POLICY,
              use_neutral: bool = True) -> list:
    """``moderate()`` results for ``names``, embedded again (deterministically) from the files."""
    from clipsieve import Analyzer
    from clipsieve.moderation import ModerationHead, moderate

    an = Analyzer(model=str(tiny_clip), store=store)
    embs = np.stack([e for e in an.embed_images([root / "imgs" / n for n in names])])
    results = moderate(embs, ModerationHead(policy).bank(an), policy, an.logit_scale,
                       use_neutral=use_neutral)
    an.close()
    return results


def test_recall_target_with_groups_and_a_missing_file(
    tiny_clip: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from clipsieve.moderation.calibrate import bias_audit, threshold_for_recall

    monkeypatch.setenv("COLUMNS", "200")
    labels = ["violence", "", "violence", "spam_scam", "none", "violence", "safe", "spam_scam"]
    groups = ["a", "b", "a", "b", "a", "b", "a", "b"]
    lines = ["path,label,group"] + [f"imgs/{n},{lab},{g}"
                                    for n, lab, g in zip(NAMES, labels, groups)]
    lines.append("imgs/missing.jpg,violence,a")
    csv = write(data / "labels.csv", "\n".join(lines) + "\n")
    store = tmp_path / "s.sqlite"
    out = tmp_path / "new.toml"
    code, stdout, stderr = run_main(
        capsys, "calibrate", str(csv), "--policy", "default", "--target-recall", "1.0",
        "--out", str(out), "--model", str(tiny_clip), "--store", str(store))
    assert code == EXIT_ITEMS_FAILED, stdout + stderr
    assert "1 row skipped:" in stderr and "line 10: " in stderr and "io_error" in stderr
    assert "missing.jpg" in stderr

    new = load_policy(out)
    assert (new.name, new.version) == ("default", "1+calibrated")
    # the file is the source policy with new numbers: its comments are kept
    assert "# Threshold rationale (review <= block):" in out.read_text()
    results = scores_of(tiny_clip, store, data, NAMES)
    for cat in ("violence", "spam_scam"):
        s = np.array([r.categories[cat] for r in results])
        y = np.array([int(lab == cat) for lab in labels])
        expected = threshold_for_recall(s, y, 1.0).threshold
        assert expected == pytest.approx(s[y == 1].min())  # recall 1: the lowest positive
        # rounded down to 3 decimals: every positive stays flagged
        review = new.categories[cat].review
        assert review == round(review, 3)
        assert max(expected, 0.01) - 0.001 < review <= max(expected, 0.01)
        assert new.categories[cat].review != POLICY.categories[cat].review
        assert new.categories[cat].block == POLICY.categories[cat].block
    assert new.categories["gore"] == POLICY.categories["gore"]  # unlabelled: untouched

    assert "AUROC" in stdout and "Per category" in stdout
    assert "Precision-recall trade-off: violence" in stdout
    assert "Precision-recall trade-off: spam_scam" in stdout and "chosen" in stdout
    assert "Target: recall >= 1, setting each category's review threshold" in stdout
    assert f"Wrote {out}" in stdout
    assert "False-positive rate per group" in stdout

    harmful = [int(lab in ("violence", "spam_scam")) for lab in labels]
    with_n = [r.decision for r in scores_of(tiny_clip, store, data, NAMES, new)]
    without_n = [r.decision for r in scores_of(tiny_clip, store, data, NAMES, new, False)]
    for g in bias_audit(harmful, groups, with_n, without_n):
        row = next(line for line in stdout.splitlines() if line.startswith(f"│ {g.group} "))
        cells = [c.strip() for c in row.strip("│").split("│")]
        assert cells == [g.group, str(g.negatives), f"{g.fpr_with_neutral:.3f}",
                         f"{g.fpr_without_neutral:.3f}"]


def test_precision_target_columns_default_out(
    tiny_clip: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from clipsieve.moderation.calibrate import calibrate_policy

    violence = [1, 0, 1, 0, 0, 1, 0, 0]
    weapons = [0, 0, 0, 1, 0, 0, 1, 0]
    rows = [f"{data / 'imgs' / n},{v},{w}" for n, v, w in zip(NAMES, violence, weapons)]
    csv = write(tmp_path / "labels.csv", "path,violence,weapons\n" + "\n".join(rows) + "\n")
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "s.sqlite"
    code, stdout, _ = run_main(
        capsys, "calibrate", str(csv), "--target-precision", "0.5", "--quiet",
        "--model", str(tiny_clip), "--store", str(store))
    assert code == EXIT_OK
    new = load_policy(tmp_path / "default-calibrated.toml")
    results = scores_of(tiny_clip, store, data, NAMES)
    scores = {c: np.array([r.categories[c] for r in results]) for c in ("violence", "weapons")}
    expected, _ = calibrate_policy(POLICY, scores, {"violence": violence, "weapons": weapons},
                                   target_precision=0.5)
    assert new == expected
    assert "False-positive rate per group" not in stdout
    assert "setting each category's block threshold" in stdout
    # An --out without folder or .toml is still a file, not a shipped policy name.
    code, stdout, _ = run_main(
        capsys, "calibrate", str(csv), "--target-precision", "0.5", "--quiet", "--out", "mine",
        "--model", str(tiny_clip), "--store", str(store))
    assert code == EXIT_OK and load_policy(tmp_path / "mine") == expected
    code, _, err = run_main(
        capsys, "calibrate", str(csv), "--target-precision", "0.5", "--quiet",
        "--out", str(tmp_path / "no" / "such" / "dir.toml"),
        "--model", str(tiny_clip), "--store", str(store))
    # missing folders are created (issue #8); an unwritable output is tested in
    # test_cli_bad_input.py (exit code 3, before any scanning)
    assert code == EXIT_OK and load_policy(tmp_path / "no" / "such" / "dir.toml") == expected


def test_command_usage_errors(tiny_clip: Path, data: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    csv = write(tmp_path / "labels.csv", "path,violence\nimgs/astronaut.jpg,1\n")
    model = ["--model", str(tiny_clip), "--no-store"]
    code, _, err = run_main(capsys, "calibrate", str(csv), *model)
    assert code == EXIT_USAGE and "exactly one of --target-precision and --target-recall" in err
    code, _, err = run_main(capsys, "calibrate", str(csv), "--target-recall", "0.9",
                            "--target-precision", "0.9", *model)
    assert code == EXIT_USAGE
    code, _, err = run_main(capsys, "calibrate", str(csv), "--target-recall", "1.5", *model)
    assert code == EXIT_USAGE
    bad = write(tmp_path / "bad.csv", "path,violnce\n")
    code, _, err = run_main(capsys, "calibrate", str(bad), "--target-recall", "0.9", *model)
    assert code == EXIT_USAGE and 'did you mean "violence"?' in err
    negatives = write(tmp_path / "neg.csv", "path,label\na.jpg,none\n")
    code, _, err = run_main(capsys, "calibrate", str(negatives), "--target-recall", "0.9",
                            *model)
    assert code == EXIT_USAGE and "nothing to calibrate" in err
    gone = write(tmp_path / "gone.csv", "path,label\nnope.jpg,violence\n")
    code, _, err = run_main(capsys, "calibrate", str(gone), "--target-recall", "0.9", *model)
    assert code == EXIT_USAGE and "no row could be used (1 failed: line 2: " in err
    assert "nope.jpg: io_error: no such file" in err
    assert not (tmp_path / "default-calibrated.toml").exists()
