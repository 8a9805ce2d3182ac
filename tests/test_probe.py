"""heads/probe.py with constructed embeddings: training, metrics, files, refusal, datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipsieve.errors import ConfigError, HeadError
from clipsieve.heads.probe import (
    Probe,
    ProbeHead,
    cross_validate_probe,
    load_probe,
    read_probe_classes,
    sidecar_path,
    train_probe,
)
from clipsieve.training import read_dataset
from clipsieve.types import ItemResult


def blobs(n_per_class: dict[str, int], dim: int = 16, noise: float = 0.05, seed: int = 0
          ) -> tuple[np.ndarray, list[str]]:
    """Well separated clusters around orthogonal axes (L2-normalised rows)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for k, (label, n) in enumerate(n_per_class.items()):
        center = np.zeros(dim)
        center[k] = 1.0
        x = center + noise * rng.standard_normal((n, dim))
        xs.append(x / np.linalg.norm(x, axis=1, keepdims=True))
        ys += [label] * n
    return np.concatenate(xs).astype(np.float32), ys


def sklearn_reference(x: np.ndarray, y: list[str], C: float = 1.0):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    x = x.astype(np.float64)
    return LogisticRegression(C=C, max_iter=1000).fit(x / np.linalg.norm(x, axis=1,
                                                                        keepdims=True), y)


def test_probe_recovers_a_separable_three_class_problem() -> None:
    x, y = blobs({"cat": 10, "dog": 10, "car": 10})
    probe = train_probe(x, y, model_id="m1", preprocess_version="p1", C=10.0)
    m = probe.info["metrics"]
    assert m["cv_accuracy_mean"] == 1.0 and m["cv_accuracy_std"] == 0.0
    assert m["folds"] == 5 and len(m["cv_fold_accuracies"]) == 5 and m["train_accuracy"] == 1.0
    assert probe.classes == ("car", "cat", "dog")  # scikit-learn's sorted order
    assert probe.coef.shape == (3, 16) and probe.intercept.shape == (3,)
    assert probe.predict(x) == y
    ref = sklearn_reference(x, y, C=10.0)
    np.testing.assert_allclose(probe.predict_proba(x), ref.predict_proba(x / np.linalg.norm(
        x, axis=1, keepdims=True)), atol=1e-5)
    info = probe.info
    assert info["n_per_class"] == {"car": 10, "cat": 10, "dog": 10} and info["n_examples"] == 30
    assert info["model"] == "m1" and info["preprocess_version"] == "p1"
    assert info["params"]["C"] == 10.0 and info["sklearn_version"]


def test_binary_probe_matches_sklearn_and_has_two_columns() -> None:
    x, y = blobs({"no": 8, "yes": 8}, noise=0.3, seed=1)
    probe = train_probe(x, y, model_id="m1")
    assert probe.coef.shape == (1, 16)
    p = probe.predict_proba(x)
    assert p.shape == (16, 2)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    ref = sklearn_reference(x, y)
    np.testing.assert_allclose(p, ref.predict_proba(x / np.linalg.norm(x, axis=1, keepdims=True)),
                               atol=1e-5)
    # rows are re-normalised: scaling an embedding changes nothing
    np.testing.assert_allclose(probe.predict_proba(3 * x[:2]), p[:2], atol=1e-9)
    with pytest.raises(HeadError, match="expects 16-dimensional embeddings"):
        probe.predict_proba(x[:, :8])


def test_folds_are_reduced_to_the_smallest_class() -> None:
    x, y = blobs({"a": 3, "b": 9})
    m = cross_validate_probe(x, y, folds=5)
    assert m["folds"] == 3 and m["folds_requested"] == 5 and len(m["cv_fold_accuracies"]) == 3


@pytest.mark.parametrize(("counts", "error"), [
    ({"a": 1, "b": 5}, r'every class needs at least 2 examples .*too few: "a" \(1\)'),
    ({"a": 5}, "a probe needs at least 2 classes, got 1"),
])
def test_too_few_examples_is_a_clear_error(counts: dict[str, int], error: str) -> None:
    x, y = blobs(counts)
    with pytest.raises(ConfigError, match=error):
        train_probe(x, y, model_id="m")


def test_save_load_roundtrip_and_model_refusal(tmp_path: Path) -> None:
    x, y = blobs({"cat": 6, "dog": 6})
    probe = train_probe(x, y, model_id="/models/clip-a", preprocess_version="p1")
    npz, side = probe.save(tmp_path / "sub" / "pets")  # .npz added
    assert npz == tmp_path / "sub" / "pets.npz" and side == tmp_path / "sub" / "pets.json"
    assert sidecar_path(npz) == side
    with np.load(npz, allow_pickle=False) as z:
        assert set(z.files) == {"coef", "intercept", "classes"}
    meta = json.loads(side.read_text())
    for key in ("model", "preprocess_version", "labels", "n_per_class", "metrics",
                "sklearn_version", "created", "weights_sha256"):
        assert key in meta, key
    assert meta["model"] == "/models/clip-a" and meta["labels"] == ["cat", "dog"]

    loaded = load_probe(npz, "/models/clip-a")
    assert loaded.classes == ("cat", "dog") and loaded.path == str(npz)
    np.testing.assert_allclose(loaded.predict_proba(x), probe.predict_proba(x), atol=1e-6)
    assert load_probe(side, None).classes == ("cat", "dog")  # the sidecar path works too
    assert read_probe_classes(npz) == ("cat", "dog")

    with pytest.raises(HeadError) as info:
        load_probe(npz, "/models/clip-b")
    msg = str(info.value)
    assert "trained on model '/models/clip-a'" in msg and "model '/models/clip-b'" in msg


def test_broken_probe_files(tmp_path: Path) -> None:
    x, y = blobs({"cat": 4, "dog": 4})
    npz, side = train_probe(x, y, model_id="m").save(tmp_path / "p.npz")
    with pytest.raises(HeadError, match="no such probe file"):
        load_probe(tmp_path / "nope.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(HeadError, match="junk.npz: not a probe weights file"):
        load_probe(tmp_path / "junk.npz")
    # weights changed behind the sidecar's back
    other, _ = train_probe(x, list(reversed(y)), model_id="m").save(tmp_path / "q.npz")
    npz.write_bytes(other.read_bytes())
    with pytest.raises(HeadError, match="describes other weights"):
        load_probe(npz, "m")
    side.unlink()
    with pytest.raises(HeadError, match="sidecar .*p.json is missing"):
        load_probe(npz, "m")


class FakeAnalyzer:
    def __init__(self, model_id: str) -> None:
        self.model_id = model_id


def test_probe_head_fills_the_probe_field_and_checks_the_model(tmp_path: Path) -> None:
    x, y = blobs({"cat": 5, "dog": 5})
    npz, _ = train_probe(x, y, model_id="m").save(tmp_path / "p.npz")
    items = [ItemResult(path="a"), ItemResult(path="b")]
    head = ProbeHead(npz)
    head.apply(items, x[[0, 9]], FakeAnalyzer("m"))  # type: ignore[arg-type]
    assert head.field == "probe"
    assert list(items[0].extra["probe"]) == ["cat", "dog"]
    assert items[0].extra["probe"]["cat"] > 0.5 > items[1].extra["probe"]["cat"]
    assert items[0].to_dict()["probe"] == items[0].extra["probe"]
    with pytest.raises(HeadError, match="refusing"):
        ProbeHead(npz).apply(items, x[:2], FakeAnalyzer("other"))  # type: ignore[arg-type]
    with pytest.raises(HeadError, match="refusing"):
        ProbeHead(load_probe(npz)).apply(items, x[:2], FakeAnalyzer("other"))  # type: ignore[arg-type]
    assert isinstance(load_probe(npz), Probe)


# -- datasets -------------------------------------------------------------------------------
def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_read_dataset_from_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "data"
    touch(root / "dog" / "b.png")
    touch(root / "cat" / "a.jpg")
    touch(root / "cat" / "deeper" / "c.JPG")
    touch(root / "cat" / "notes.txt")
    touch(root / ".thumbs" / "x.jpg")
    touch(root / "stray.jpg")
    rows = read_dataset(root)
    assert [(Path(p).relative_to(root).as_posix(), lb) for p, lb in rows] == [
        ("cat/a.jpg", "cat"), ("cat/deeper/c.JPG", "cat"), ("dog/b.png", "dog")]
    (root / "empty").mkdir()
    with pytest.raises(ConfigError, match="empty: no images found"):
        read_dataset(root)
    with pytest.raises(ConfigError, match="no class sub-folders"):
        read_dataset(touch(tmp_path / "flat" / "a.jpg").parent)
    with pytest.raises(ConfigError, match="no such folder or CSV file"):
        read_dataset(tmp_path / "missing")


def test_read_dataset_from_csv(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label\nimgs/a.jpg,cat\n/abs/b.jpg, dog\n\nimgs/a.jpg,cat\n")
    assert read_dataset(csv_path) == [(str(tmp_path / "imgs" / "a.jpg"), "cat"),
                                      ("/abs/b.jpg", "dog")]
    for text, error in [
        ("a.jpg,cat\na.jpg,dog\n",
         r'labels.csv:2: a.jpg is labelled "dog" here but "cat" on line 1'),
        ("a.jpg,cat\nb.jpg\n", r"labels.csv:2: expected 2 columns \(path,label\), got 1"),
        ("a.jpg,\n", "labels.csv:1: empty label"),
        ("imgs,cat\n", "labels.csv:1: imgs is a folder"),
        ("path,label\n", "labels.csv: no path,label rows"),
    ]:
        csv_path.write_text(text)
        with pytest.raises(ConfigError, match=error):
            read_dataset(csv_path)
