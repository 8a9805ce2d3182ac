"""factory.py (build_heads) and the head protocol: built once, then pure, picklable functions."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsieve import Analyzer, build_heads, create_encoder
from clipsieve.errors import HeadError, PolicyError
from clipsieve.heads import Head
from clipsieve.moderation import CaptionSource
from clipsieve.types import Caption


@pytest.fixture(scope="module")
def analyzer(tiny_clip: Path) -> Analyzer:
    return Analyzer(model=str(tiny_clip), precision="float32", device="cpu", store=False)


@pytest.fixture(scope="module")
def batch(analyzer: Analyzer, photos: dict[str, Path]) -> tuple[np.ndarray, list]:
    results = analyzer.analyze([Image.open(p) for p in photos.values()])
    return np.stack([r.embedding for r in results]), [r.features for r in results]


def dicts(results: list) -> list:
    return [r if isinstance(r, dict) else r.to_dict() for r in results]


def test_build_heads_fields_ranges_and_protocol(analyzer: Analyzer) -> None:
    heads = build_heads(analyzer, labels=["cat", "dog"], templates="single")
    assert [h.field for h in heads] == ["moderation", "quality", "labels"]
    assert [h.score_range for h in heads] == [(0.0, 1.0), (0.0, 10.0), (0.0, 1.0)]
    assert all(isinstance(h, Head) and h.built_for == analyzer.model_id for h in heads)
    assert build_heads(analyzer, policy=None, quality=False) == []


def test_bad_policy_fails_in_the_factory(analyzer: Analyzer, tmp_path: Path) -> None:
    with pytest.raises(PolicyError):
        build_heads(analyzer, policy="no-such-policy")
    with pytest.raises(HeadError):
        build_heads(analyzer, policy=None, quality=str(tmp_path / "missing.npz"))


def test_heads_pickle_and_give_identical_output(analyzer: Analyzer, batch: tuple) -> None:
    embs, feats = batch
    heads = build_heads(analyzer, labels=["cat", "dog", "rocket"])
    caps = [Caption("a cat", "input"), None, Caption("cheap pills", "input"), None]
    from clipsieve.heads.base import embed_captions

    caps = embed_captions(caps, analyzer)
    for head in heads:
        before = dicts(head.compute(embs, feats, caps))
        clone = pickle.loads(pickle.dumps(head))
        assert dicts(clone.compute(embs, feats, caps)) == before
        assert dicts(head.compute(embs, feats, caps)) == before  # deterministic


def test_compute_is_pure_and_needs_a_built_head(analyzer: Analyzer, batch: tuple) -> None:
    embs, feats = batch
    from clipsieve.quality import QualityHead

    head = QualityHead()
    with pytest.raises(HeadError, match="not built"):
        head.compute(embs, feats)
    head.build(analyzer)
    e0, f0 = embs.copy(), [dict(f) for f in feats]
    head.compute(embs, feats)
    assert np.array_equal(embs, e0) and feats == f0


def test_heads_built_from_an_encoder_match_the_analyzer(
    tiny_clip: Path, analyzer: Analyzer, batch: tuple
) -> None:
    embs, feats = batch
    enc = create_encoder("torch", str(tiny_clip), device="cpu", precision="float32")
    a = build_heads(analyzer, labels=["cat", "dog"])
    b = build_heads(enc, labels=["cat", "dog"])
    # texts padded in other batches differ in the last bits, hence approx
    for x, y in zip(a, b):
        for rx, ry in zip(dicts(x.compute(embs, feats)), dicts(y.compute(embs, feats))):
            assert rx.keys() == ry.keys()
            if x.field == "labels":
                assert rx == pytest.approx(ry, abs=1e-6)
            else:
                assert rx["decision" if x.field == "moderation" else "score"] == pytest.approx(
                    ry["decision" if x.field == "moderation" else "score"], abs=1e-4)


def test_analyze_and_score_use_the_same_step(analyzer: Analyzer, batch: tuple,
                                             photos: dict[str, Path]) -> None:
    embs, feats = batch
    heads = build_heads(analyzer, labels=["cat", "dog"])
    images = [Image.open(p) for p in photos.values()]
    fresh = analyzer.analyze(images, heads=heads, ids=list(photos),
                             captions=["a cat", None, None, "a rocket"])
    again = analyzer.score(embs, feats, heads=heads, ids=list(photos),
                           captions=["a cat", None, None, "a rocket"])
    assert [r.path for r in fresh] == list(photos)
    for r, s in zip(fresh, again):
        assert r.ok and r.to_dict().keys() - {"timing"} >= {"moderation", "quality", "labels"}
        for key in ("moderation", "quality", "labels"):
            assert r.to_dict()[key] == s.to_dict()[key]
    assert fresh[0].moderation.caption.text == "a cat" and fresh[1].moderation.caption is None


def test_analyze_equals_scan_for_the_same_pixels(
    tiny_clip: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    """A PNG scanned from disk and the same image given in memory: the same results."""
    folder = tmp_path / "png"
    folder.mkdir()
    arrays = {}
    for name, p in photos.items():
        im = Image.open(p).convert("RGB")
        im.save(folder / f"{name}.png")
        arrays[name] = np.asarray(im)
    an = Analyzer(model=str(tiny_clip), precision="float32", device="cpu", store=False,
                  batch_size=8)
    heads = build_heads(an, captions=CaptionSource(sidecars=False), labels=["cat", "dog"])
    scanned = {Path(r.path).stem: r for r in an.scan([folder], heads=heads)}
    names = sorted(arrays)
    in_memory = an.analyze([arrays[n] for n in names], heads=heads, ids=names)
    for name, r in zip(names, in_memory):
        s = scanned[name]
        assert np.array_equal(r.embedding, s.embedding)
        assert r.features == s.features
        for key in ("moderation", "quality", "labels"):
            assert r.to_dict()[key] == s.to_dict()[key]


def test_analyze_goes_on_past_a_bad_image(analyzer: Analyzer) -> None:
    good = np.zeros((20, 30, 3), np.uint8)
    results = analyzer.analyze([good, np.zeros((3, 4, 5)), good.astype(np.float32) / 255],
                               heads=build_heads(analyzer, policy=None))
    assert [r.status for r in results] == ["ok", "error", "ok"]
    assert results[1].error.code == "unsupported" and "shape" in results[1].error.message
    assert results[0].quality is not None and results[1].quality is None
    assert np.array_equal(results[0].embedding, results[2].embedding)


def test_the_architecture_notes_custom_head_plugs_in(analyzer: Analyzer) -> None:
    """The worked example of docs/architecture.md, run."""
    import re

    doc = (Path(__file__).parent.parent / "docs" / "architecture.md").read_text()
    code = re.search(r"## How a new head plugs in.*?```python\n(.*?)```", doc, re.S).group(1)
    code = code.split("heads = build_heads")[0]  # the class; the scan below needs files
    ns: dict = {}
    exec(code, ns)
    head = ns["NearestPromptHead"](["a cat", "a dog"])
    results = analyzer.analyze([np.zeros((40, 40, 3), np.uint8)], heads=[head])
    assert results[0].extra["nearest"]["prompt"] in ("a cat", "a dog")
    assert head.compute(np.stack([results[0].embedding]), [None]) == [results[0].extra["nearest"]]
