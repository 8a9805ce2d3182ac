"""quality/learned.py: trained ridge/MLP heads and the LAION aesthetic predictor file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipsieve.errors import ConfigError, HeadError
from clipsieve.pipeline import Analyzer
from clipsieve.quality import QualityHead
from clipsieve.quality.learned import (
    TECHNICAL_FEATURES,
    LearnedHead,
    head_features,
    load_laion_aesthetic,
    load_quality_head,
    train_quality_head,
)
from clipsieve.training import read_ratings

torch = pytest.importorskip("torch")


def synthetic(n: int = 60, dim: int = 16, seed: int = 0):  # type: ignore[no-untyped-def]
    """Embeddings whose rating (on a 1–5 scale) is linear in one direction plus noise."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    direction = rng.normal(size=dim)
    y = 3 + 4 * emb @ direction / np.linalg.norm(direction) + rng.normal(0, 0.1, n)
    feats = [{"sharpness": 0.5 + 0.1 * i % 3, "noise": 1.0, "noise_ratio": 0.05,
              "luma_mean": 0.5, "megapixels": 1.0} for i in range(n)]
    feats[3] = None  # no pixel statistics for one image
    return emb.astype(np.float32), feats, y


@pytest.mark.parametrize("kind", ["ridge", "mlp"])
def test_train_save_load_roundtrip(kind: str, tmp_path: Path) -> None:
    emb, feats, y = synthetic()
    head = train_quality_head(emb, feats, y, model_id="model-a", preprocess_version="p1",
                              kind=kind, folds=4)
    m = head.info["metrics"]
    assert m["folds"] == 4 and len(m["fold_srcc"]) == 4
    assert m["srcc"] > 0.8 and m["plcc"] > 0.8
    assert head.info["scale"]["min"] == pytest.approx(y.min())
    pred = head.predict(emb, feats, model_id="model-a")
    # rescaled to 0–10 by the training min–max
    y10 = 10 * (y - y.min()) / (y.max() - y.min())
    assert np.corrcoef(pred, y10)[0, 1] > 0.9
    npz, side = head.save(tmp_path / "h")
    assert npz.name == "h.npz" and side.name == "h.json"
    info = json.loads(side.read_text())
    assert info["format"] == "clipsieve-quality-head" and info["kind"] == kind
    assert info["model"] == "model-a" and info["preprocess_version"] == "p1"
    assert info["feature_names"] == {"embedding": 16, "technical": list(TECHNICAL_FEATURES)}
    assert {"srcc", "plcc"} <= set(info["metrics"]) and info["features_version"]
    back = load_quality_head(npz, "model-a")
    np.testing.assert_array_equal(back.predict(emb, feats), pred)
    assert load_quality_head(side).kind == kind  # the sidecar path works too
    # rows are independent of the batch, bit for bit
    assert back.predict(emb[5:6], feats[5:6])[0] == pred[5]


def test_head_refuses_another_model_and_broken_files(tmp_path: Path) -> None:
    emb, feats, y = synthetic(20)
    npz, side = train_quality_head(emb, feats, y, model_id="model-a").save(tmp_path / "h.npz")
    with pytest.raises(HeadError, match="trained on model 'model-a'.*model 'model-b'"):
        load_quality_head(npz, "model-b")
    head = load_quality_head(npz)
    with pytest.raises(HeadError, match="'model-a'.*'model-b'"):
        head.predict(emb, feats, model_id="model-b")
    with pytest.raises(HeadError, match="16-dimensional"):
        head.predict(np.ones((2, 8)), None)
    good = npz.read_bytes()
    arrays = dict(np.load(npz))
    arrays["intercept"] = arrays["intercept"] + 1
    np.savez(npz, **arrays)
    with pytest.raises(HeadError, match="SHA-256 differs"):
        load_quality_head(npz)
    npz.write_bytes(good[:-3] + b"xyz")
    with pytest.raises(HeadError, match="not a quality head"):
        load_quality_head(npz)
    npz.write_bytes(good)
    side.unlink()
    with pytest.raises(HeadError, match="sidecar"):
        load_quality_head(npz)
    with pytest.raises(HeadError, match="no such"):
        load_quality_head(tmp_path / "missing.npz")


def test_training_errors() -> None:
    emb, feats, y = synthetic(10)
    with pytest.raises(ConfigError, match="at least 5"):
        train_quality_head(emb[:3], feats[:3], y[:3], model_id="m")
    with pytest.raises(ConfigError, match="every rating"):
        train_quality_head(emb, feats, np.ones(10), model_id="m")
    with pytest.raises(ConfigError, match="kind"):
        train_quality_head(emb, feats, y, model_id="m", kind="svm")
    m = train_quality_head(emb[:6], feats[:6], y[:6], model_id="m", folds=10).info["metrics"]
    assert m["folds"] == 6 and m["folds_requested"] == 10


def test_head_features_impute_missing_components() -> None:
    emb, feats, _ = synthetic(4)
    raw = head_features(emb * 3, feats)
    assert raw.shape == (4, 16 + len(TECHNICAL_FEATURES))
    np.testing.assert_allclose(np.linalg.norm(raw[:, :16], axis=1), 1.0)
    assert np.isnan(raw[3, 16:]).all() and not np.isnan(raw[0, 16])


def test_read_ratings(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    csv = tmp_path / "r.csv"
    csv.write_text("path,score\na.jpg,3\nsub/b.jpg,4.5\n/abs/c.jpg,-1\na.jpg,3\n\n")
    rows = read_ratings(csv)
    assert rows == [(str(tmp_path / "a.jpg"), 3.0), (str(tmp_path / "sub/b.jpg"), 4.5),
                    ("/abs/c.jpg", -1.0)]
    csv.write_text("a.jpg,3\nb.jpg,high\n")
    with pytest.raises(ConfigError, match=r"r.csv:2: score 'high'"):
        read_ratings(csv)
    csv.write_text("a.jpg,3\na.jpg,4\n")
    with pytest.raises(ConfigError, match="rated 4 here but 3 on line 1"):
        read_ratings(csv)
    csv.write_text("a.jpg,3,x\n")
    with pytest.raises(ConfigError, match="2 columns"):
        read_ratings(csv)
    with pytest.raises(ConfigError, match="no such"):
        read_ratings(tmp_path / "none.csv")


# -- LAION ----------------------------------------------------------------------------------
def laion_mlp(input_dim: int = 768, seed: int = 0) -> torch.nn.Sequential:
    """The improved-aesthetic-predictor MLP (no activations), randomly initialised."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(input_dim, 1024), torch.nn.Dropout(0.2),
        torch.nn.Linear(1024, 128), torch.nn.Dropout(0.2),
        torch.nn.Linear(128, 64), torch.nn.Dropout(0.1),
        torch.nn.Linear(64, 16),
        torch.nn.Linear(16, 1),
    ).eval()


def save_laion(path: Path, net: torch.nn.Sequential, prefix: str = "layers.") -> Path:
    state = {prefix + k: v for k, v in net.state_dict().items()}
    torch.save(state, path)
    return path


def test_laion_head_equals_the_reference_mlp_on_normalised_embeddings(tmp_path: Path) -> None:
    net = laion_mlp()
    path = save_laion(tmp_path / "sac+logos+ava1-l14-linearMSE.pth", net)
    head = load_quality_head(path)
    assert head.kind == "laion" and head.embedding_dim == 768 and head.model_id is None
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(5, 768)) * 7.0  # not normalised: the head normalises
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    with torch.no_grad():
        ref = net.double()(torch.from_numpy(unit)).numpy()[:, 0]
        ref32 = net.float()(torch.from_numpy(unit).float()).numpy()[:, 0]
    pred = head.predict(emb)
    np.testing.assert_allclose(pred, ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(pred, ref32, rtol=0, atol=1e-5)
    # forgetting the normalisation would give something else entirely
    with torch.no_grad():
        raw = net.double()(torch.from_numpy(emb)).numpy()[:, 0]
    assert np.abs(raw - pred).max() > 1e-3
    # a Lightning-style checkpoint, or a "model." prefix, loads the same
    torch.save({"state_dict": {"model.layers." + k: v for k, v in net.state_dict().items()}},
               tmp_path / "ckpt.pth")
    np.testing.assert_array_equal(load_laion_aesthetic(tmp_path / "ckpt.pth").predict(emb), pred)


def test_laion_head_errors(tmp_path: Path) -> None:
    head = load_quality_head(save_laion(tmp_path / "a.pth", laion_mlp()))
    with pytest.raises(HeadError, match=r"768-dimensional .*ViT-L/14.*gives 512-dimensional"):
        head.predict(np.ones((1, 512)), model_id="openai/clip-vit-base-patch32")
    torch.save({"layers.0.weight": torch.zeros(4, 768)}, tmp_path / "bad.pth")
    with pytest.raises(HeadError, match="lacks layers.0.bias"):
        load_quality_head(tmp_path / "bad.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(HeadError, match="not a PyTorch state dict"):
        load_quality_head(tmp_path / "junk.pth")


def test_laion_head_through_the_quality_head(
    tiny_clip: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    an = Analyzer(str(tiny_clip), store=False, precision="float32")
    paths = list(photos.values())
    # a 768-input file on a 16-dimensional model: a clear HeadError
    wrong = QualityHead(save_laion(tmp_path / "l14.pth", laion_mlp()))
    with pytest.raises(HeadError, match="768-dimensional"):
        list(an.scan(paths, heads=[wrong]))
    # a matching dimension works, and the aesthetic part is the head's prediction
    net = laion_mlp(16)
    head_file = save_laion(tmp_path / "tiny.pth", net)
    results = list(an.scan(paths, heads=[QualityHead(head_file)]))
    emb = np.stack([r.embedding for r in results]).astype(np.float64)
    with torch.no_grad():
        ref = net.double()(torch.from_numpy(emb / np.linalg.norm(emb, axis=1, keepdims=True)))
    for r, v in zip(results, ref.numpy()[:, 0]):
        assert r.quality.aesthetic_source == "head"
        assert r.quality.head["kind"] == "laion" and r.quality.head["file"] == str(head_file)
        assert r.quality.components["aesthetic_head"] == pytest.approx(min(10, max(0, v)))


def test_trained_head_through_the_quality_head(
    tiny_clip: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    an = Analyzer(str(tiny_clip), store=False)
    emb, feats, y = synthetic(12, dim=16)
    head = train_quality_head(emb, feats, y, model_id=an.model_id)
    results = list(an.scan(list(photos.values()), heads=[QualityHead(head)]))
    assert all(r.quality.aesthetic_source == "head" for r in results)
    other = train_quality_head(emb, feats, y, model_id="someone/else")
    with pytest.raises(HeadError, match="someone/else"):
        list(an.scan(list(photos.values()), heads=[QualityHead(other)]))
    assert isinstance(head, LearnedHead)
