"""quality/score.py and quality/head.py: the 0–10 score, its breakdown, determinism, distortions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import photo_array
from PIL import Image, ImageFilter

from clipsieve.pipeline import Analyzer
from clipsieve.quality import QualityHead
from clipsieve.quality.clipiqa import BUILTIN_PAIRS
from clipsieve.quality.score import (
    AESTHETIC_PAIRS,
    QUALITY_VERSION,
    SCORE_WEIGHTS,
    TECHNICAL_PAIRS,
    TECHNICAL_WEIGHTS,
    QualityResult,
    quality_from_parts,
)
from clipsieve.quality.technical import (
    COMPONENTS,
    TECHNICAL_VERSION,
    pixel_stats,
    technical_score,
    technical_scores,
)


@pytest.fixture(scope="module")
def stats() -> dict[str, float]:
    return pixel_stats(Image.fromarray(photo_array("coffee")))


def probs(value: float = 0.7) -> dict[str, float]:
    return {name: value for name in BUILTIN_PAIRS}


def test_weights_documented_in_quality_toml() -> None:
    assert TECHNICAL_WEIGHTS == {"pixels": 0.75, "clip_iqa": 0.25}
    assert SCORE_WEIGHTS == {"technical": 0.6, "aesthetic": 0.4}
    assert set(TECHNICAL_PAIRS) == {"quality", "sharpness", "noisiness", "brightness"}
    assert set(AESTHETIC_PAIRS) <= set(BUILTIN_PAIRS) and "beautiful" in AESTHETIC_PAIRS
    assert QUALITY_VERSION.endswith("+" + TECHNICAL_VERSION)


def test_combination_follows_the_documented_formula(stats: dict[str, float]) -> None:
    rng = np.random.default_rng(1)
    p = {name: float(rng.uniform()) for name in BUILTIN_PAIRS}
    q = quality_from_parts(stats, p, model="m")
    comps = technical_scores(stats)
    pixels = technical_score(comps)
    clip_t = 10 * sum(w * p[n] for n, w in TECHNICAL_PAIRS.items()) / sum(TECHNICAL_PAIRS.values())
    aes = 10 * sum(w * p[n] for n, w in AESTHETIC_PAIRS.items()) / sum(AESTHETIC_PAIRS.values())
    assert q.technical == pytest.approx(0.75 * pixels + 0.25 * clip_t, abs=1e-12)
    assert q.aesthetic == pytest.approx(aes, abs=1e-12)
    assert q.score == pytest.approx(0.6 * q.technical + 0.4 * q.aesthetic, abs=1e-12)
    # every technical component and every CLIP-IQA pair is in the breakdown, all on 0–10
    assert set(comps) == set(COMPONENTS) and set(comps) <= set(q.components)
    assert {f"clip_{n}" for n in BUILTIN_PAIRS} <= set(q.components)
    assert q.components["technical_pixels"] == pixels
    for v in (q.score, q.technical, q.aesthetic, *q.components.values()):
        assert 0.0 <= v <= 10.0
    d = q.to_dict()
    assert list(d)[:5] == ["score", "technical", "aesthetic", "components", "version"]
    assert d["version"] == QUALITY_VERSION and d["model"] == "m"
    assert d["aesthetic_source"] == "clip_iqa" and d["head"] is None
    json.dumps(d, allow_nan=False)


def test_without_pixels_with_a_learned_head_and_store_nulls(stats: dict[str, float]) -> None:
    only_clip = quality_from_parts(None, probs(0.8))
    assert only_clip.technical == pytest.approx(8.0)
    assert "technical_pixels" not in only_clip.components
    learned = quality_from_parts(stats, probs(0.8), learned_aesthetic=12.5,
                                 head={"file": "h.npz"})
    assert learned.aesthetic == 10.0 and learned.aesthetic_source == "head"
    assert learned.components["aesthetic_head"] == 10.0
    assert learned.components["aesthetic_clip"] == pytest.approx(8.0)
    # the store keeps NaN statistics as JSON null: both mean "not measured"
    nulls = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in stats.items()}
    assert quality_from_parts(nulls, probs()) == quality_from_parts(stats, probs())
    with pytest.raises(ValueError):
        quality_from_parts(None, {"happy": 0.5})


def _scan(model: Path, paths: list[Path], **kw) -> list:  # type: ignore[no-untyped-def]
    an = Analyzer(str(model), precision="float32", **kw)
    try:
        return list(an.scan(paths, heads=[QualityHead()]))
    finally:
        an.close()


def test_every_scan_result_has_quality_and_runs_are_bit_identical(
    tiny_clip: Path, photos: dict[str, Path], tmp_path: Path
) -> None:
    paths = list(photos.values())
    first = _scan(tiny_clip, paths, store=False)
    second = _scan(tiny_clip, paths, store=False)
    assert all(isinstance(r.quality, QualityResult) for r in first)
    dump = [json.dumps(r.to_dict()["quality"]) for r in first]
    assert dump == [json.dumps(r.to_dict()["quality"]) for r in second]
    assert [r.quality for r in first] == [r.quality for r in second]
    # through the store: the second run reads embeddings and pixel statistics back
    store = tmp_path / "q.sqlite"
    fresh = _scan(tiny_clip, paths, store=store)
    cached = _scan(tiny_clip, paths, store=store)
    assert not any(r.cached for r in fresh) and all(r.cached for r in cached)
    assert [r.quality for r in fresh] == [r.quality for r in cached] == [r.quality for r in first]


def test_extra_pairs_become_components(tiny_clip: Path, photos: dict[str, Path]) -> None:
    an = Analyzer(str(tiny_clip), store=False)
    head = QualityHead(prompts=[("Crisp photo.", "Soft photo."), "quality",
                                ("airy", ("Airy photo.", "Cramped photo."))])
    (r,) = an.scan([photos["rocket"]], heads=[head])
    # a bare pair is named after its positive prompt; a named pair keeps its name
    assert "clip_crisp_photo" in r.quality.components and "clip_airy" in r.quality.components
    assert not any("user_defined" in k for k in r.quality.components)
    assert len([k for k in r.quality.components if k.startswith("clip_")]) == len(
        BUILTIN_PAIRS) + 2


def test_distortions_lower_the_technical_score(
    clip224: Path, tmp_path: Path
) -> None:
    """Blur, noise and darkening of real photos lower `quality.technical` through the full head."""
    rng = np.random.default_rng(0)
    paths: list[Path] = []
    for name in ("astronaut", "coffee", "chelsea"):
        a = photo_array(name)
        im = Image.fromarray(a)
        versions = {
            "orig": im,
            "blur": im.filter(ImageFilter.GaussianBlur(4)),
            "noise": Image.fromarray(
                np.clip(a + rng.normal(0, 30, a.shape), 0, 255).astype(np.uint8)),
            "dark": Image.fromarray((a * 0.2).astype(np.uint8)),
        }
        for kind, v in versions.items():
            p = tmp_path / f"{name}-{kind}.jpg"
            v.save(p, quality=92)
            paths.append(p)
    results = {r.path: r.quality for r in _scan(clip224, paths, store=False)}
    for i in range(0, len(paths), 4):
        orig = results[str(paths[i])]
        for p in paths[i + 1 : i + 4]:
            assert results[str(p)].technical < orig.technical - 0.2, (p.name, results[str(p)])
            assert results[str(p)].components["technical_pixels"] < orig.components[
                "technical_pixels"]
