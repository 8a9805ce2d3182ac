"""Technical (no-model) image quality measures.

Three steps, all deterministic (integer arithmetic where it matters, no threads, no
randomness), so that the same pixels give the same scores bit for bit:

1. :func:`pixel_stats` measures raw statistics of the decoded pixels at a fixed analysis
   scale: the longer side reduced to :data:`ANALYSIS_SIZE` pixels (bilinear, antialiased),
   never enlarged. ``S`` below is the RMS contrast in 0–255 units, floored at
   ``contrast_floor``.

   ``sharpness``
       Detail relative to contrast: the RMS of the 5-point Laplacian of luma over the 10 %
       most detailed 16×16 blocks, after subtracting the Laplacian energy the estimated noise
       alone would give (so that noise does not read as detail), divided by ``S``. Relative,
       so that exposure and contrast changes do not read as sharpness changes.
   ``noise``
       Immerkær's fast noise estimate σ = √(π/2)/6 · mean |I ∗ N|, N the 3×3 kernel
       ``[[1,-2,1],[-2,4,-2],[1,-2,1]]``, per block, taking a low quantile over the blocks
       that are not clipped, so that edges and texture are mostly not mistaken for noise
       (fine texture such as grass still is). 0–255 units.
   ``noise_ratio``
       ``noise / S``: noise relative to the image's contrast, which is what the noise
       component scores (it does not improve when a picture is merely darkened or flattened).
   ``luma_mean``, ``shadow_clip``, ``highlight_clip``
       Mean luma (0–1), and the fractions of clipped shadows and highlights.
   ``contrast``
       RMS contrast: the standard deviation of luma (0–1).
   ``colourfulness``
       Hasler and Süsstrunk's M = σ_rgyb + 0.3 μ_rgyb (0–255 units).
   ``blockiness``
       How much larger the luma steps across the 8×8 JPEG grid are than the steps inside the
       blocks, minus one (about 0 for none). Measured on the image at its native resolution
       only; NaN when the image was reduced (e.g. by JPEG draft decoding), where the grid is
       gone.
   ``jpeg_quality``
       The IJG quality 1–100 whose standard luminance table is closest to the file's
       luminance quantisation table. Independent of the decoded scale; NaN without tables.
   ``megapixels``
       Of the original image.

   Exposure, contrast and colourfulness are computed on the analysis image box-reduced 4×,
   which makes them insensitive to noise and cheap.

2. :func:`technical_scores` maps the statistics to 0–10 components (10 is best), each a
   product of monotone log-logistic curves fixed by two points per statistic:
   ``sharpness``, ``noise``, ``exposure_under`` (mean luma), ``exposure_over`` (mean luma and
   clipped highlights), ``contrast``, ``colourfulness``, ``jpeg`` (blockiness and, for JPEG
   files, the estimated quality) and ``resolution``.

3. :func:`technical_score` combines the components by a weighted geometric mean, so that one
   very bad component drags the whole score down.

Every constant lives in the ``[technical]`` table of ``clipsieve/data/quality.toml``, whose
``version`` (:data:`TECHNICAL_VERSION`) changes whenever any of them does.

Callers that decode JPEG files at a reduced scale (``Image.draft``) should ask for at least
:data:`ANALYSIS_SIZE` pixels on the longer side where they can (smaller images are analysed
as they are, so sharpness and noise read as at that smaller size), and pass
``original_size`` and ``jpeg_quant`` (Pillow's ``Image.quantization``) from the file.

Cost: about 2 ms per image at the analysis scale on one core, plus the reduction to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipsieve._compat import tomllib

__all__ = [
    "ANALYSIS_SIZE",
    "COMPONENTS",
    "QUALITY_CONFIG_PATH",
    "TECHNICAL_VERSION",
    "estimate_jpeg_quality",
    "pixel_stats",
    "technical_score",
    "technical_scores",
]

#: The TOML file holding every scoring constant.
QUALITY_CONFIG_PATH = Path(__file__).resolve().parent.parent / "data" / "quality.toml"

_CONFIG: dict[str, Any] = tomllib.loads(QUALITY_CONFIG_PATH.read_text(encoding="utf-8"))[
    "technical"
]
_MEASURE: dict[str, Any] = _CONFIG["measure"]
_COMPONENT_TERMS: dict[str, list[dict[str, Any]]] = _CONFIG["components"]
_WEIGHTS: dict[str, float] = _CONFIG["weights"]

#: Version of the technical measures; changes whenever any constant does.
TECHNICAL_VERSION: str = _CONFIG["version"]
#: Longer side (px) of the image the pixel statistics are computed on (never enlarged).
ANALYSIS_SIZE: int = int(_CONFIG["analysis_size"])
#: Names of the technical components, in breakdown order.
COMPONENTS: tuple[str, ...] = tuple(_COMPONENT_TERMS)

# Immerkær (1996): σ = sqrt(π/2) / 6 · E|I ∗ N|.
_IMMERKAER_SCALE = math.sqrt(math.pi / 2) / 6
# JPEG grid period.
_JPEG_BLOCK = 8

# IJG standard luminance quantisation table (ITU T.81 Annex K, natural order).
_IJG_LUMINANCE = np.array(
    [
        16, 11, 10, 16, 24, 40, 51, 61,
        12, 12, 14, 19, 26, 58, 60, 55,
        14, 13, 16, 24, 40, 57, 69, 56,
        14, 17, 22, 29, 51, 87, 80, 62,
        18, 22, 37, 56, 68, 109, 103, 77,
        24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101,
        72, 92, 95, 98, 112, 100, 103, 99,
    ],
    dtype=np.int64,
)  # fmt: skip


def _ijg_tables() -> np.ndarray:
    """Log of the sorted baseline IJG luminance tables for qualities 1–100 (row q - 1)."""
    quality = np.arange(1, 101, dtype=np.int64)[:, None]
    scale = np.where(quality < 50, 5000 // quality, 200 - 2 * quality)
    tables = np.clip((_IJG_LUMINANCE[None, :] * scale + 50) // 100, 1, 255)
    return np.log(np.sort(tables, axis=1).astype(np.float64))


_IJG_LOG_SORTED = _ijg_tables()


def estimate_jpeg_quality(jpeg_quant: Mapping[int, Sequence[int]] | None) -> float:
    """Estimate the IJG quality setting a JPEG was saved with from its quantisation tables.

    The luminance table (id 0) is compared with the IJG standard table scaled for every
    quality 1–100; the quality with the smallest mean absolute log difference wins (the lowest
    one on a tie). The tables' values are compared sorted, so the estimate does not depend on
    the order (natural or zig-zag) in which they are stored, and for encoders with their own
    tables it gives the IJG quality of similar coarseness. It is independent of the scale at
    which the image was decoded.

    Args:
        jpeg_quant: Pillow's ``Image.quantization`` of a JPEG file.

    Returns:
        The estimated quality (1–100), or NaN when there is no 64-entry luminance table.
    """
    if not jpeg_quant or 0 not in jpeg_quant:
        return math.nan
    table = np.asarray(list(jpeg_quant[0]), dtype=np.float64)
    if table.shape != (64,) or table.min() < 1:
        return math.nan
    distance = np.abs(_IJG_LOG_SORTED - np.log(np.sort(table))).mean(axis=1)
    return float(np.argmin(distance) + 1)


def _analysis_image(img: Image.Image) -> Image.Image:
    """Reduce ``img`` so that its longer side is at most :data:`ANALYSIS_SIZE` pixels.

    Bilinear with antialiasing; large reductions first box-reduce by an integer factor
    (Pillow's ``reducing_gap``), several times faster on multi-megapixel images.
    """
    width, height = img.size
    longer = max(width, height)
    if longer <= ANALYSIS_SIZE:
        return img
    scale = ANALYSIS_SIZE / longer
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)


def _block_sums(values: np.ndarray, block: int) -> np.ndarray:
    """Exact int64 sums of integer ``values`` over whole ``block``×``block`` tiles.

    The remainder at the right and bottom edges is dropped.
    """
    rows, cols = values.shape[0] // block, values.shape[1] // block
    tiles = values[: rows * block, : cols * block].reshape(rows, block, cols * block)
    return tiles.sum(axis=1, dtype=np.int64).reshape(rows, cols, block).sum(axis=2).ravel()


def _detail_and_noise(luma: np.ndarray) -> tuple[float, float]:
    """Noise-corrected Laplacian RMS of the most detailed blocks, and Immerkær's noise σ.

    Args:
        luma: int16 luma (0–255) at analysis scale, at least 3×3.

    Returns:
        ``(detail, noise)`` in 0–255 luma units.
    """
    centre = luma[:, 1:-1]
    dxx = luma[:, :-2] + luma[:, 2:]
    dxx -= centre
    dxx -= centre  # horizontal second difference, (H, W-2)
    middle = luma[1:-1]
    dyy = luma[:-2] + luma[2:]
    dyy -= middle
    dyy -= middle  # vertical second difference, (H-2, W)
    laplacian = dxx[1:-1] + dyy[:, 1:-1]
    inner = dxx[1:-1]
    residual = dxx[:-2] + dxx[2:]
    residual -= inner
    residual -= inner  # Immerkær's kernel N = dyy ∘ dxx, (H-2, W-2)
    np.abs(residual, out=residual)

    block = min(int(_MEASURE["block"]), *laplacian.shape)
    area = block * block
    energy = _block_sums(np.square(laplacian, dtype=np.int32), block) / area
    sigma = _block_sums(residual, block) * (_IMMERKAER_SCALE / area)
    block_luma = _block_sums(luma[1:-1, 1:-1], block) / area

    low, high = _MEASURE["noise_luma_range"]
    unclipped = sigma[(block_luma >= low) & (block_luma <= high)]
    if unclipped.size:
        rank = int(_MEASURE["noise_quantile"] * (unclipped.size - 1))
        noise = float(np.partition(unclipped, rank)[rank])
    else:
        noise = 0.0

    top = max(1, math.ceil(_MEASURE["sharp_top_fraction"] * energy.size))
    detail_energy = float(np.partition(energy, energy.size - top)[-top:].mean())
    detail = math.sqrt(max(0.0, detail_energy - _MEASURE["sharp_noise_gain"] * noise * noise))
    return detail, noise


def _tone_and_colour(img: Image.Image) -> dict[str, float]:
    """Exposure, RMS contrast and colourfulness of the box-reduced analysis image."""
    factor = max(1, min(int(_MEASURE["pool"]), *img.size))
    rgb = np.asarray(img.reduce(factor), dtype=np.float64)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 0.299 * red + 0.587 * green + 0.114 * blue  # ITU-R BT.601, as JPEG and Pillow's "L"
    rg = red - green
    yb = 0.5 * (red + green) - blue
    return {
        "luma_mean": float(luma.mean()) / 255.0,
        "shadow_clip": float(np.count_nonzero(luma <= _MEASURE["shadow_luma"])) / luma.size,
        "highlight_clip": float(np.count_nonzero(luma >= _MEASURE["highlight_luma"])) / luma.size,
        "contrast": float(luma.std()) / 255.0,
        "colourfulness": math.hypot(float(rg.std()), float(yb.std()))
        + 0.3 * math.hypot(float(rg.mean()), float(yb.mean())),
    }


def _central_grid_crop(width: int, height: int) -> tuple[int, int, int, int]:
    """Box (left, top, right, bottom) of the central blockiness crop, on the 8×8 grid."""
    limit = int(_MEASURE["blockiness_crop"])
    crop_w = min(width, limit) // _JPEG_BLOCK * _JPEG_BLOCK
    crop_h = min(height, limit) // _JPEG_BLOCK * _JPEG_BLOCK
    left = (width - crop_w) // 2 // _JPEG_BLOCK * _JPEG_BLOCK
    top = (height - crop_h) // 2 // _JPEG_BLOCK * _JPEG_BLOCK
    return left, top, left + crop_w, top + crop_h


def _blockiness(luma: np.ndarray) -> float:
    """Excess of the mean luma step across the 8×8 grid over the mean step inside blocks.

    Args:
        luma: int16 luma (0–255) of a crop whose origin lies on the JPEG grid, with sides that
            are multiples of 8 and at least 16.

    Returns:
        ``(boundary + ε) / (inside + ε) - 1`` over horizontal and vertical steps together:
        about 0 for an image without blocking, growing with the strength of the block edges.
    """
    columns = np.abs(np.diff(luma, axis=1)).sum(axis=0, dtype=np.int64)  # per column gap
    rows = np.abs(np.diff(luma, axis=0)).sum(axis=1, dtype=np.int64)  # per row gap
    on_grid = np.zeros(columns.size + rows.size, dtype=bool)
    on_grid[_JPEG_BLOCK - 1 : columns.size : _JPEG_BLOCK] = True
    on_grid[columns.size + _JPEG_BLOCK - 1 :: _JPEG_BLOCK] = True
    steps = np.concatenate([columns / luma.shape[0], rows / luma.shape[1]])
    eps = float(_MEASURE["blockiness_eps"])
    return (float(steps[on_grid].mean()) + eps) / (float(steps[~on_grid].mean()) + eps) - 1.0


def pixel_stats(
    img: Image.Image,
    *,
    original_size: tuple[int, int] | None = None,
    jpeg_quant: Mapping[int, Sequence[int]] | None = None,
) -> dict[str, float]:
    """Measure the raw technical statistics of an image.

    Args:
        img: the decoded image (converted to RGB if it is not), possibly already reduced by
            JPEG draft decoding; it is reduced to :data:`ANALYSIS_SIZE` here.
        original_size: (width, height) of the image in the file; defaults to ``img.size``.
            When it differs from ``img.size`` the image counts as reduced, and the
            pixel-domain blockiness is not measured.
        jpeg_quant: the file's JPEG quantisation tables (Pillow's ``Image.quantization``),
            from which the JPEG quality is estimated.

    Returns:
        The statistics described in the module docstring, as floats: ``sharpness``,
        ``noise``, ``noise_ratio``, ``luma_mean``, ``shadow_clip``, ``highlight_clip``,
        ``contrast``, ``colourfulness``, ``blockiness`` (NaN if the image was reduced or is
        smaller than 16×16), ``jpeg_quality`` (NaN without tables) and ``megapixels``.
    """
    if img.mode != "RGB":
        img = img.convert("RGB")
    size = img.size if original_size is None else (int(original_size[0]), int(original_size[1]))

    small = _analysis_image(img)
    luma = np.asarray(small.convert("L"), dtype=np.int16)
    detail, noise = _detail_and_noise(luma) if min(luma.shape) >= 3 else (0.0, 0.0)
    tone = _tone_and_colour(small)
    scale = max(255.0 * tone["contrast"], float(_MEASURE["contrast_floor"]))

    blockiness = math.nan
    box = _central_grid_crop(*img.size)
    if size == img.size and min(box[2] - box[0], box[3] - box[1]) >= 2 * _JPEG_BLOCK:
        if small is img:
            grid_luma = luma[box[1] : box[3], box[0] : box[2]]
        else:
            grid_luma = np.asarray(img.crop(box).convert("L"), dtype=np.int16)
        blockiness = _blockiness(grid_luma)

    return {
        "sharpness": detail / scale,
        "noise": noise,
        "noise_ratio": noise / scale,
        **tone,
        "blockiness": blockiness,
        "jpeg_quality": estimate_jpeg_quality(jpeg_quant),
        "megapixels": size[0] * size[1] / 1e6,
    }


def _term_score(value: float, term: Mapping[str, Any]) -> float:
    """Map one statistic to (0, 1) with the log-logistic curve of a component term.

    With ``x = value`` (or ``from - value`` when the term has ``from``), and ``good`` and
    ``mid`` transformed the same way, the score is ``1 / (1 + (x / mid) ** -k)`` where
    ``k = ln 9 / ln(good / mid)``: 0.5 at ``mid``, 0.9 at ``good``, monotone in ``x``,
    and the limit (0 or 1) for ``x <= 0``.
    """
    offset = term.get("from")
    good, mid = float(term["good"]), float(term["mid"])
    if offset is not None:
        value, good, mid = offset - value, offset - good, offset - mid
    slope = math.log(9.0) / math.log(good / mid)
    log_ratio = math.log(value / mid) if value > 0 else -math.inf
    t = -slope * log_ratio
    if t > 0:
        e = math.exp(-t)
        return e / (1.0 + e)
    return 1.0 / (1.0 + math.exp(t))


def technical_scores(stats: Mapping[str, float]) -> dict[str, float]:
    """Map the statistics of :func:`pixel_stats` to 0–10 component scores (10 is best).

    Each component is 10 times the product of its terms' log-logistic scores (see
    ``quality.toml``); a term whose statistic is missing or NaN is left out, and so is a
    component with no measurable term. Components: ``sharpness``, ``noise``,
    ``exposure_under`` (falls as the image darkens), ``exposure_over`` (falls as it
    brightens), ``contrast``, ``colourfulness``, ``jpeg``, ``resolution``.

    Args:
        stats: the statistics, as returned by :func:`pixel_stats`.

    Returns:
        Component name → score in [0, 10], in :data:`COMPONENTS` order.
    """
    scores: dict[str, float] = {}
    for name, terms in _COMPONENT_TERMS.items():
        product, measured = 1.0, False
        for term in terms:
            value = stats.get(term["stat"], math.nan)
            if not math.isnan(value):
                product *= _term_score(float(value), term)
                measured = True
        if measured:
            scores[name] = 10.0 * product
    return scores


def technical_score(components: Mapping[str, float]) -> float:
    """Combine component scores into one 0–10 technical score.

    A weighted geometric mean over the components present (weights from ``quality.toml``,
    renormalised to the components given; unknown names are ignored), each score floored at
    ``score_floor`` first: ``10 · Π (s_i / 10) ** (w_i / Σ w)``. A component at score s with
    normalised weight w multiplies the result by ``(s / 10) ** w`` (e.g. sharpness at 0.5
    halves a perfect score), so a single very bad aspect pulls the whole score down, which
    an arithmetic mean would not. Components of weight 0 (colourfulness) do not count.

    Args:
        components: component name → score, as returned by :func:`technical_scores`.

    Returns:
        The technical score in [0, 10].

    Raises:
        ValueError: if no known component is given.
    """
    floor = float(_CONFIG["score_floor"])
    weighted = [(_WEIGHTS[n], s) for n, s in components.items() if n in _WEIGHTS]
    total = sum(w for w, _ in weighted)
    if not total:
        raise ValueError("no technical component to combine")
    log_mean = sum(w * math.log(max(s, floor) / 10.0) for w, s in weighted) / total
    return 10.0 * math.exp(log_mean)
