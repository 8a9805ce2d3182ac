"""heads/prompt_checks.py: label stability, template evaluation, label warnings; and the
`clipsieve prompts` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipsieve.cli import main
from clipsieve.heads.prompt_checks import (
    LabelStabilityHead,
    evaluate_templates,
    label_warnings,
)


class FakeText:
    """A text source whose prompt embeddings are chosen by hand (3-D)."""

    model_id = "fake"
    logit_scale = 100.0

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        v = np.array([self.table[t] for t in texts], dtype=np.float64)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


# "A {}": cat → x, dog → y (right); "B {}": cat → y, dog → x (swapped, wrong);
# "C {}": right again.
TABLE = {
    "A cat": [1, 0, 0.1], "A dog": [0, 1, 0.1],
    "B cat": [0, 1, 0.2], "B dog": [1, 0, 0.2],
    "C cat": [1, 0.1, 0], "C dog": [0.1, 1, 0],
}
TEMPLATES = ["A {}", "B {}", "C {}"]


def test_label_stability_is_the_share_of_templates_agreeing_with_the_ensemble() -> None:
    head = LabelStabilityHead(["cat", "dog"], TEMPLATES).build(FakeText(TABLE))
    x = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    # ensemble: cat ≈ x + small, so image 1 → cat, image 2 → dog; templates A and C agree,
    # B disagrees: 2 of 3
    assert head.compute(x) == [pytest.approx(2 / 3, abs=1e-4)] * 2
    assert head.meaningful
    assert not LabelStabilityHead(["cat", "dog"], ["A {}"]).meaningful
    # labels with their own prompts only: nothing depends on the templates
    own = LabelStabilityHead({"cat": ["A cat"], "dog": ["A dog"]}, TEMPLATES)
    assert not own.meaningful


def test_evaluate_templates_scores_each_template_and_the_ensembles() -> None:
    x = np.array([[1.0, 0, 0], [0.9, 0.1, 0], [0, 1.0, 0], [0.1, 0.9, 0]])
    truth = ["cat", "cat", "dog", "dog"]
    ev = evaluate_templates(FakeText(TABLE), x, truth, ["cat", "dog"], TEMPLATES)
    assert [s.accuracy for s in ev.per_template] == [1.0, 0.0, 1.0]
    assert ev.ensemble.accuracy == 1.0 and len(ev.ensemble.templates) == 3
    assert ev.greedy.accuracy == 1.0
    assert ev.best.accuracy == 1.0 and len(ev.best.templates) == 3  # ties: the larger ensemble
    assert ev.per_label == {"cat": 1.0, "dog": 1.0}
    with pytest.raises(ValueError, match="not in the labels file: cow"):
        evaluate_templates(FakeText(TABLE), x, ["cow"] * 4, ["cat", "dog"], TEMPLATES)


def test_label_warnings() -> None:
    w = label_warnings(["two dogs", "a cat", "3 people", "Barack Obama", "number of cars"])
    assert len(w) == 2
    assert "'two dogs', '3 people', 'number of cars' ask for counting" in w[0]
    assert "'Barack Obama'" in w[1] and "not a tool for identifying people" in w[1]
    assert label_warnings(["cat", "dog", "sports car", "a photo of New York at night"]) == []


def test_prompts_command_writes_the_best_labels_file(
    tmp_path: Path, tiny_clip: Path, photos: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    csv = tmp_path / "labelled.csv"
    rows = ["path,label"] + [f"{p},{'cat' if n == 'chelsea' else 'thing'}"
                             for n, p in photos.items()]
    csv.write_text("\n".join(rows) + "\n")
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\nthing\n")
    out = tmp_path / "best.toml"
    with pytest.raises(SystemExit) as info:
        main(["prompts", str(csv), "--labels-file", str(labels), "--templates", "imagenet7",
              "--out", str(out), "--model", str(tiny_clip), "--store",
              str(tmp_path / "s.sqlite"), "-q"])
    stdout = capsys.readouterr().out
    assert info.value.code == 0, stdout
    assert "4 labelled images, 2 labels" in stdout
    accs = [line for line in stdout.splitlines() if line.rstrip().endswith("/4)")]
    assert len(accs) == 7 + 2  # seven templates, the full ensemble, the best greedy ensemble
    assert "ensemble of 7" in stdout and "best:" in stdout and f"wrote {out}" in stdout
    from clipsieve.heads.zeroshot import load_labels, load_templates

    spec = load_labels(out)
    assert list(spec.labels) == ["cat", "thing"]
    assert spec.templates and set(spec.templates) <= set(load_templates("imagenet7"))
    best_line = next(line for line in stdout.splitlines() if line.startswith("best:"))
    assert f"({len(spec.templates)} template" in best_line
    assert json.dumps(spec.templates[0]) in out.read_text()
