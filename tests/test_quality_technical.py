"""Tests of the technical (no-model) quality measures.

The distortion checks run a smaller version of ``benchmarks/quality_distortions.py`` (three
photographs instead of twenty-one images), importing its distortions so that both use the
same protocol.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsieve.quality import (
    ANALYSIS_SIZE,
    COMPONENTS,
    QUALITY_CONFIG_PATH,
    TECHNICAL_VERSION,
    estimate_jpeg_quality,
    pixel_stats,
    technical_score,
    technical_scores,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

pytest.importorskip("skimage")
pytest.importorskip("scipy")

ROOT = Path(__file__).resolve().parents[1]
TEST_PHOTOS = ("astronaut", "coffee", "chelsea")


def _load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "quality_distortions", ROOT / "benchmarks" / "quality_distortions.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return bench.load_images(TEST_PHOTOS, sklearn=False)


@pytest.fixture(scope="module")
def outcomes(photos):
    return bench.evaluate(photos)


def _scores(img: Image.Image, **kwargs) -> tuple[dict[str, float], dict[str, float], float]:
    stats = pixel_stats(img, **kwargs)
    components = technical_scores(stats)
    return stats, components, technical_score(components)


def _flat(value: int, size: tuple[int, int] = (256, 192)) -> Image.Image:
    return Image.new("RGB", size, (value, value, value))


# --- the verification, on three photographs ----------------------------------------


@pytest.mark.parametrize("kind", list(bench.LEVELS))
def test_matching_component_falls_with_distortion_level(outcomes, kind):
    rows = [o for o in outcomes if o.distortion == kind]
    assert len(rows) == len(TEST_PHOTOS)
    for o in rows:
        assert o.spearman <= -0.9, (o.image, kind, o.matching)
        # the strongest level is clearly worse than the undistorted photo, not just ranked so
        assert o.matching[-1] < o.matching[0] - 1.0, (o.image, kind, o.matching)


def test_overall_score_never_rises_with_distortion_level(outcomes):
    main = [o for o in outcomes if o.distortion in bench.MAIN_KINDS]
    assert len(main) == len(TEST_PHOTOS) * 6
    rising = [(o.image, o.distortion, o.overall) for o in main if not o.monotone]
    assert len(rising) <= 0.05 * len(main), rising
    for o in main:  # and it really falls over the five levels
        assert o.overall[-1] < o.overall[0] - 0.3, (o.image, o.distortion, o.overall)


def test_undistorted_photos_score_well(photos):
    for name, img in photos.items():
        _, components, overall = _scores(img)
        assert overall > 8.5, (name, components)
        for component in ("sharpness", "noise", "exposure_under", "exposure_over", "jpeg"):
            assert components[component] > 9.0, (name, component, components)


# --- determinism ------------------------------------------------------------------------

_SUBPROCESS = """
import io, json, sys
from PIL import Image
from clipsieve.quality import pixel_stats, technical_scores, technical_score
img = Image.open(io.BytesIO(sys.stdin.buffer.read()))
img.load()
stats = pixel_stats(img.convert("RGB"), jpeg_quant=img.quantization)
components = technical_scores(stats)
out = {k: v.hex() for k, v in stats.items()}
out.update({"c_" + k: v.hex() for k, v in components.items()})
out["overall"] = technical_score(components).hex()
print(json.dumps(out))
"""


def test_same_file_gives_bit_identical_scores_across_runs(photos, tmp_path):
    buffer = io.BytesIO()
    photos["coffee"].save(buffer, "JPEG", quality=70)
    data = buffer.getvalue()

    def in_process() -> dict[str, str]:
        img = Image.open(io.BytesIO(data))
        img.load()
        stats = pixel_stats(img.convert("RGB"), jpeg_quant=img.quantization)
        components = technical_scores(stats)
        out = {k: v.hex() for k, v in stats.items()}
        out.update({"c_" + k: v.hex() for k, v in components.items()})
        out["overall"] = technical_score(components).hex()
        return out

    first, second = in_process(), in_process()
    assert first == second
    env = {"PYTHONPATH": str(ROOT / "src"), "PYTHONHASHSEED": "12345"}
    run = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS], input=data, capture_output=True, env=env, check=True
    )
    assert json.loads(run.stdout) == first


# --- ranges and sanity values -----------------------------------------------------------


def test_scores_stay_in_range(outcomes, photos):
    rng = np.random.default_rng(7)
    extremes = [
        _flat(0),
        _flat(255),
        _flat(128),
        Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)),
        Image.new("RGB", (1, 1), (10, 200, 30)),
        Image.new("RGB", (2, 5), (255, 255, 255)),
        Image.fromarray(rng.integers(0, 256, (7, 900, 3), dtype=np.uint8)),
        photos["chelsea"].convert("L"),
        photos["coffee"].convert("RGBA"),
    ]
    for img in extremes:
        stats, components, overall = _scores(img)
        assert set(components) <= set(COMPONENTS)
        assert all(0.0 <= s <= 10.0 for s in components.values()), (img.size, components)
        assert 0.0 <= overall <= 10.0
        assert 0.0 <= stats["luma_mean"] <= 1.0
        assert stats["sharpness"] >= 0.0 and stats["noise"] >= 0.0
    for o in outcomes:
        assert all(0.0 <= v <= 10.0 for v in o.matching + o.overall)


def test_flat_grey_has_no_sharpness_or_contrast():
    stats, components, overall = _scores(_flat(128))
    assert stats["sharpness"] == 0.0
    assert stats["noise"] == 0.0
    assert stats["contrast"] == 0.0
    assert components["sharpness"] < 0.01
    assert components["contrast"] < 0.01
    assert components["noise"] == 10.0
    assert overall < 2.0


def test_all_white_is_flagged_overexposed_and_all_black_underexposed():
    white, white_components, white_overall = _scores(_flat(255))
    assert white["highlight_clip"] == 1.0 and white["luma_mean"] == 1.0
    assert white_components["exposure_over"] < 0.5
    assert white_components["exposure_under"] > 9.9
    assert white_overall < 1.0

    black, black_components, _ = _scores(_flat(0))
    assert black["shadow_clip"] == 1.0 and black["luma_mean"] == 0.0
    assert black_components["exposure_under"] < 0.1
    assert black_components["exposure_over"] > 9.9


def test_noise_estimate_is_close_on_flat_grey_with_gaussian_noise():
    rng = np.random.default_rng(3)
    for sigma in (2.0, 6.0, 15.0):
        grey = np.clip(np.rint(128 + sigma * rng.standard_normal((384, 512))), 0, 255)
        img = Image.fromarray(grey.astype(np.uint8)).convert("RGB")
        stats = pixel_stats(img)
        assert stats["noise"] == pytest.approx(sigma, rel=0.15)
        assert stats["sharpness"] == 0.0  # pure noise is not detail


def test_colourfulness_is_zero_for_grey_and_high_for_saturated_colour():
    grey = pixel_stats(Image.new("RGB", (64, 64), (90, 90, 90)))
    assert grey["colourfulness"] == 0.0
    halves = np.zeros((64, 64, 3), dtype=np.uint8)
    halves[:, :32] = (230, 20, 20)
    halves[:, 32:] = (20, 40, 230)
    assert pixel_stats(Image.fromarray(halves))["colourfulness"] > 100.0


def test_blockiness_sees_the_8x8_grid():
    rng = np.random.default_rng(5)
    blocks = rng.integers(60, 200, (32, 48)).repeat(8, axis=0).repeat(8, axis=1)
    blocky = Image.fromarray(blocks.astype(np.uint8)).convert("RGB")
    assert pixel_stats(blocky)["blockiness"] > 5.0
    shifted = Image.fromarray(np.roll(blocks, (4, 4), axis=(0, 1)).astype(np.uint8))
    assert pixel_stats(shifted.convert("RGB"))["blockiness"] < -0.5  # edges off the grid
    ramp = np.add.outer(np.arange(256), np.arange(384)) // 3
    smooth = Image.fromarray(ramp.astype(np.uint8)).convert("RGB")
    assert abs(pixel_stats(smooth)["blockiness"]) < 0.05


# --- JPEG quality and reduced decoding ------------------------------------------------------


@pytest.mark.parametrize("quality", [3, 20, 50, 75, 90, 100])
def test_jpeg_quality_is_recovered_from_the_tables(photos, quality):
    buffer = io.BytesIO()
    photos["chelsea"].save(buffer, "JPEG", quality=quality)
    assert estimate_jpeg_quality(Image.open(buffer).quantization) == quality


def test_jpeg_quality_estimate_does_not_depend_on_table_order(photos):
    buffer = io.BytesIO()
    photos["chelsea"].save(buffer, "JPEG", quality=40)
    table = list(Image.open(buffer).quantization[0])
    assert estimate_jpeg_quality({0: table[::-1]}) == 40
    assert math.isnan(estimate_jpeg_quality(None))
    assert math.isnan(estimate_jpeg_quality({}))
    assert math.isnan(estimate_jpeg_quality({0: [0] * 64}))
    assert math.isnan(estimate_jpeg_quality({0: [1, 2, 3]}))


def test_draft_decoded_jpeg_keeps_quality_and_resolution_but_not_blockiness(photos):
    big = photos["astronaut"].resize((2048, 2048), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=30)
    drafted = Image.open(io.BytesIO(buffer.getvalue()))
    drafted.draft("RGB", (ANALYSIS_SIZE, ANALYSIS_SIZE))
    drafted.load()
    assert drafted.size == (512, 512)
    full = Image.open(io.BytesIO(buffer.getvalue()))
    full.load()

    reduced, reduced_components, _ = _scores(
        drafted, original_size=(2048, 2048), jpeg_quant=drafted.quantization
    )
    native, native_components, _ = _scores(full, jpeg_quant=full.quantization)
    assert math.isnan(reduced["blockiness"]) and not math.isnan(native["blockiness"])
    assert reduced["jpeg_quality"] == native["jpeg_quality"] == 30.0
    assert reduced["megapixels"] == native["megapixels"] == pytest.approx(4.194304)
    assert reduced_components["jpeg"] < 6.0 and native_components["jpeg"] < 6.0
    assert reduced_components["resolution"] == native_components["resolution"] > 9.0


# --- the documented maps and combination ------------------------------------------------


def test_every_term_scores_5_at_mid_and_9_at_good_and_is_monotone():
    config = tomllib.loads(QUALITY_CONFIG_PATH.read_text(encoding="utf-8"))["technical"]
    assert config["version"] == TECHNICAL_VERSION
    assert set(config["weights"]) == set(COMPONENTS)
    for component, terms in config["components"].items():
        for term in terms:
            stat = term["stat"]
            assert technical_scores({stat: term["mid"]})[component] == pytest.approx(5.0)
            assert technical_scores({stat: term["good"]})[component] == pytest.approx(9.0)
            lo, hi = sorted((term["mid"], term["good"]))
            values = np.linspace(lo - 0.5 * (hi - lo), hi + 0.5 * (hi - lo), 41)
            values = values[(values > 0) & (values < term.get("from", math.inf))]
            curve = np.array([technical_scores({stat: float(v)})[component] for v in values])
            steps = np.diff(curve) if term["good"] > term["mid"] else -np.diff(curve)
            assert (steps > 0).all(), (component, term["stat"])


def test_missing_statistics_leave_their_terms_and_components_out():
    stats = pixel_stats(_flat(128))
    assert math.isnan(stats["jpeg_quality"])
    only_blockiness = technical_scores(stats)["jpeg"]
    assert only_blockiness == technical_scores({**stats, "jpeg_quality": 100.0})["jpeg"]
    assert "jpeg" not in technical_scores({**stats, "blockiness": math.nan})


def test_combination_is_a_weighted_geometric_mean_that_one_bad_aspect_drags_down():
    weights = tomllib.loads(QUALITY_CONFIG_PATH.read_text(encoding="utf-8"))["technical"]["weights"]
    share = weights["sharpness"] / sum(weights.values())
    perfect = {name: 10.0 for name in COMPONENTS}
    assert technical_score(perfect) == pytest.approx(10.0)
    assert technical_score({"sharpness": 4.0}) == pytest.approx(4.0)
    blurred = {**perfect, "sharpness": 0.5}
    assert technical_score(blurred) == pytest.approx(10.0 * 0.05**share)
    assert technical_score(blurred) < 10.0 - 9.5 * share - 2.0  # well below the arithmetic mean
    # colourfulness is reported, not combined
    assert technical_score({**perfect, "colourfulness": 0.0}) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        technical_score({})


JPEG_LEVELS = (95, 40, 20, 10, 5, 2)


def _png_after_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    out = io.BytesIO()
    Image.open(io.BytesIO(buf.getvalue())).save(out, "PNG")
    return out.getvalue()


def _file_scores(data: bytes) -> tuple[dict[str, float], dict[str, float], float]:
    """What scan measures of a file: decode (reduced for analysis, native crop kept)."""
    from clipsieve.media.decode import decode_image

    dec = decode_image(data, min_side=224, grid_crop=512)
    return _scores(dec.image, original_size=(dec.width, dec.height), jpeg_quant=dec.jpeg_quant,
                   grid_luma=dec.grid_luma)


@pytest.mark.parametrize("scale", [1, 2])
def test_png_after_jpeg_compression_scores_fall_with_the_compression(photos, scale):
    """Issue #9: photos JPEG-compressed at 95/40/20/10/5/2 then saved as PNG (so no tables,
    and larger than the analysis size at scale 2): the jpeg component falls (Spearman ≤ −0.9
    against the compression level) and the technical score never rises."""
    from scipy.stats import spearmanr

    for name, img in photos.items():
        if scale > 1:
            img = img.resize((img.width * scale, img.height * scale), Image.Resampling.BICUBIC)
        jpeg, technical = [], []
        for q in JPEG_LEVELS:
            stats, components, score = _file_scores(_png_after_jpeg(img, q))
            assert not math.isnan(stats["blockiness"]), (name, q)
            jpeg.append(components["jpeg"])
            technical.append(score)
        rho = spearmanr(range(len(JPEG_LEVELS)), jpeg).statistic
        assert rho <= -0.9, (name, scale, jpeg)
        assert all(b <= a for a, b in zip(technical, technical[1:])), (name, scale, technical)


def test_high_quality_jpeg_of_a_blocky_image_is_caught_on_the_draft_path(photos):
    """A q=95 re-encode of a q=5 image: the tables look fine, so a native crop is decoded."""
    from clipsieve.media.decode import decode_image

    big = photos["astronaut"].resize((2048, 2048), Image.Resampling.BICUBIC)
    low = io.BytesIO()
    big.save(low, "JPEG", quality=5)
    again = io.BytesIO()
    Image.open(io.BytesIO(low.getvalue())).save(again, "JPEG", quality=95)
    clean = io.BytesIO()
    big.save(clean, "JPEG", quality=95)
    blocky = decode_image(again.getvalue(), min_side=224, grid_crop=512)
    assert blocky.image.width < 2048 and blocky.grid_luma is not None  # draft path + crop
    b_stats, b_comp, _ = _scores(blocky.image, original_size=(2048, 2048),
                                 jpeg_quant=blocky.jpeg_quant, grid_luma=blocky.grid_luma)
    c = decode_image(clean.getvalue(), min_side=224, grid_crop=512)
    c_stats, c_comp, _ = _scores(c.image, original_size=(2048, 2048), jpeg_quant=c.jpeg_quant,
                                 grid_luma=c.grid_luma)
    assert b_stats["jpeg_quality"] >= 90 and c_stats["jpeg_quality"] >= 90
    assert b_comp["jpeg"] < c_comp["jpeg"] - 1.0
    # a low-quality JPEG on the draft path keeps its table estimate, no second decode
    low_dec = decode_image(low.getvalue(), min_side=224, grid_crop=512)
    assert low_dec.grid_luma is None
