"""training.py: training and calibration as library functions (the CLI only prints)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from clipsieve import Analyzer
from clipsieve.errors import ConfigError
from clipsieve.moderation import load_policy
from clipsieve.training import (
    calibrate_from_labels,
    embed_files,
    read_labels_csv,
    train_probe_from_data,
    train_quality_head_from_csv,
)


@pytest.fixture()
def analyzer(tiny_clip: Path) -> Analyzer:
    return Analyzer(model=str(tiny_clip), store=False, precision="float32", device="cpu")


def test_embed_files_keeps_readable_and_failed_apart(analyzer: Analyzer, photos: dict,
                                                     tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    seen = []
    got = embed_files(analyzer, [str(photos["coffee"]), str(bad), str(photos["rocket"])],
                      on_item=seen.append)
    assert [Path(i.path).name for i in got.items] == ["coffee.jpg", "rocket.jpg"]
    assert [Path(i.path).name for i in got.failed] == ["bad.jpg"] and len(seen) == 3
    assert all(e.dtype == np.float32 and e.shape == (16,) for e in got.embeddings)


def test_train_from_folders_and_ratings(analyzer: Analyzer, photos: dict, tmp_path: Path) -> None:
    root = tmp_path / "data"
    rows = ["path,score"]
    for label, names in (("a", ("coffee", "chelsea", "rocket")), ("b", ("astronaut", "coffee",
                                                                       "rocket"))):
        (root / label).mkdir(parents=True)
        for i, name in enumerate(names):
            shutil.copy(photos[name], root / label / f"{name}{i}.jpg")
            rows.append(f"{label}/{name}{i}.jpg,{i + (label == 'b') * 3}")
    probe, failed = train_probe_from_data(analyzer, root, folds=2)
    assert probe.classes == ("a", "b") and failed == []
    (root / "r.csv").write_text("\n".join(rows) + "\n")
    head, failed = train_quality_head_from_csv(analyzer, root / "r.csv", folds=2)
    assert head.info["n_examples"] == 6 and failed == []


def test_calibrate_from_labels(analyzer: Analyzer, photos: dict, tmp_path: Path) -> None:
    policy = load_policy("default")
    csv = tmp_path / "labels.csv"
    lines = ["path,label"] + [f"{p},{'violence' if n in ('rocket', 'astronaut') else 'none'}"
                              for n, p in photos.items()] + [f"{tmp_path},none"]
    csv.write_text("\n".join(lines) + "\n")
    labels = read_labels_csv(str(csv), policy)
    run = calibrate_from_labels(analyzer, labels, policy, target_recall=0.5, source=str(csv))
    assert len(run.usable) == 4 and run.embeddings.shape == (4, 16)
    assert run.row_errors == [f"line 6: {tmp_path}: is a folder, not an image"]
    assert run.policy.categories["violence"].review != policy.categories["violence"].review or \
        run.report
    with pytest.raises(ConfigError, match="no row could be used"):
        calibrate_from_labels(analyzer, read_labels_csv(str(csv), policy).__class__(
            rows=[], categories=["violence"], has_group=False), policy, target_recall=0.5)
