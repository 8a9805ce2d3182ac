"""Pixel statistics measured during decoding: the no-model inputs of the quality score.

:func:`pixel_stats` measures raw statistics of decoded pixels at a fixed analysis scale (see
:mod:`clipsieve.quality.technical` for what each one means and how the quality score maps them
to 0–10 components). The measuring constants are a loaded value, :class:`PixelStatsConfig`,
read from the ``[technical]`` table of ``clipsieve/data/quality.toml`` (its ``version`` is the
features version stored with every embedding); nothing is read at import time.

This module sits below the analysis pipeline, which computes these statistics in the same
decode as the embedding, so re-scoring quality never decodes an image again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipsieve import settings
from clipsieve._compat import tomllib
from clipsieve.errors import ConfigError

__all__ = ["PixelStatsConfig", "estimate_jpeg_quality", "grid_crop_box", "load_pixel_stats_config",
           "native_grid_luma", "pixel_stats"]


@dataclass(frozen=True)
class PixelStatsConfig:
    """The constants of the pixel statistics.

    Attributes:
        version: the technical measures' version (stored as the features version).
        analysis_size: longer side (px) of the image the statistics are computed on.
        measure: the ``[technical.measure]`` table.
        source: where it was read from.
    """

    version: str
    analysis_size: int
    measure: Mapping[str, Any] = field(repr=False)
    source: str = ""

    @classmethod
    def from_table(cls, technical: Mapping[str, Any], source: str = "") -> PixelStatsConfig:
        """From the ``[technical]`` table of a quality configuration."""
        try:
            return cls(str(technical["version"]), int(technical["analysis_size"]),
                       dict(technical["measure"]), source)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source or 'quality config'}: technical: bad or missing {exc}"
                              ) from None


def load_pixel_stats_config(path: str | Path | None = None) -> PixelStatsConfig:
    """Read the ``[technical]`` table of a quality TOML (default: the shipped one)."""
    p = Path(path) if path is not None else settings.QUALITY_CONFIG_PATH
    try:
        table = tomllib.loads(p.read_text(encoding="utf-8"))["technical"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read the [technical] table: {exc}") from None
    return PixelStatsConfig.from_table(table, str(p))


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


def _analysis_image(img: Image.Image, analysis_size: int) -> Image.Image:
    """Reduce ``img`` so that its longer side is at most ``analysis_size`` pixels.

    Bilinear with antialiasing; large reductions first box-reduce by an integer factor
    (Pillow's ``reducing_gap``), several times faster on multi-megapixel images.
    """
    width, height = img.size
    longer = max(width, height)
    if longer <= analysis_size:
        return img
    scale = analysis_size / longer
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)


def _block_sums(values: np.ndarray, block: int) -> np.ndarray:
    """Exact int64 sums of integer ``values`` over whole ``block``×``block`` tiles.

    The remainder at the right and bottom edges is dropped.
    """
    rows, cols = values.shape[0] // block, values.shape[1] // block
    tiles = values[: rows * block, : cols * block].reshape(rows, block, cols * block)
    return tiles.sum(axis=1, dtype=np.int64).reshape(rows, cols, block).sum(axis=2).ravel()


def _detail_and_noise(luma: np.ndarray, measure: Mapping[str, Any]) -> tuple[float, float]:
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

    block = min(int(measure["block"]), *laplacian.shape)
    area = block * block
    energy = _block_sums(np.square(laplacian, dtype=np.int32), block) / area
    sigma = _block_sums(residual, block) * (_IMMERKAER_SCALE / area)
    block_luma = _block_sums(luma[1:-1, 1:-1], block) / area

    low, high = measure["noise_luma_range"]
    unclipped = sigma[(block_luma >= low) & (block_luma <= high)]
    if unclipped.size:
        rank = int(measure["noise_quantile"] * (unclipped.size - 1))
        noise = float(np.partition(unclipped, rank)[rank])
    else:
        noise = 0.0

    top = max(1, math.ceil(measure["sharp_top_fraction"] * energy.size))
    detail_energy = float(np.partition(energy, energy.size - top)[-top:].mean())
    detail = math.sqrt(max(0.0, detail_energy - measure["sharp_noise_gain"] * noise * noise))
    return detail, noise


def _tone_and_colour(img: Image.Image, measure: Mapping[str, Any]) -> dict[str, float]:
    """Exposure, RMS contrast and colourfulness of the box-reduced analysis image."""
    factor = max(1, min(int(measure["pool"]), *img.size))
    rgb = np.asarray(img.reduce(factor), dtype=np.float64)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 0.299 * red + 0.587 * green + 0.114 * blue  # ITU-R BT.601, as JPEG and Pillow's "L"
    rg = red - green
    yb = 0.5 * (red + green) - blue
    return {
        "luma_mean": float(luma.mean()) / 255.0,
        "shadow_clip": float(np.count_nonzero(luma <= measure["shadow_luma"])) / luma.size,
        "highlight_clip": float(np.count_nonzero(luma >= measure["highlight_luma"])) / luma.size,
        "contrast": float(luma.std()) / 255.0,
        "colourfulness": math.hypot(float(rg.std()), float(yb.std()))
        + 0.3 * math.hypot(float(rg.mean()), float(yb.mean())),
    }


def _central_grid_crop(
    width: int, height: int, measure: Mapping[str, Any]
) -> tuple[int, int, int, int]:
    """Box (left, top, right, bottom) of the central blockiness crop, on the 8×8 grid."""
    limit = int(measure["blockiness_crop"])
    crop_w = min(width, limit) // _JPEG_BLOCK * _JPEG_BLOCK
    crop_h = min(height, limit) // _JPEG_BLOCK * _JPEG_BLOCK
    left = (width - crop_w) // 2 // _JPEG_BLOCK * _JPEG_BLOCK
    top = (height - crop_h) // 2 // _JPEG_BLOCK * _JPEG_BLOCK
    return left, top, left + crop_w, top + crop_h


def grid_crop_box(width: int, height: int, limit: int) -> tuple[int, int, int, int]:
    """Box (left, top, right, bottom) of a central crop of at most ``limit`` px per side,
    aligned to the 8×8 JPEG grid of the image as stored."""
    return _central_grid_crop(width, height, {"blockiness_crop": limit})


def native_grid_luma(img: Image.Image, limit: int) -> np.ndarray | None:
    """int16 luma of the central grid-aligned crop of ``img`` (at its own resolution), or
    ``None`` when the crop would be smaller than 16×16 or the mode cannot be converted."""
    box = grid_crop_box(img.width, img.height, limit)
    if min(box[2] - box[0], box[3] - box[1]) < 2 * _JPEG_BLOCK:
        return None
    try:
        crop = img.crop(box)
        if crop.mode not in ("L", "RGB"):
            crop = crop.convert("RGB")
        return np.asarray(crop.convert("L"), dtype=np.int16)
    except Exception:  # noqa: BLE001 - odd modes: no native blockiness rather than an error
        return None


def _blockiness(luma: np.ndarray, measure: Mapping[str, Any]) -> float:
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
    eps = float(measure["blockiness_eps"])
    return (float(steps[on_grid].mean()) + eps) / (float(steps[~on_grid].mean()) + eps) - 1.0


def pixel_stats(
    img: Image.Image,
    *,
    config: PixelStatsConfig,
    original_size: tuple[int, int] | None = None,
    jpeg_quant: Mapping[int, Sequence[int]] | None = None,
    grid_luma: np.ndarray | None = None,
) -> dict[str, float]:
    """Measure the raw technical statistics of an image.

    Args:
        img: the decoded image (converted to RGB if it is not), possibly already reduced by
            JPEG draft decoding; it is reduced to ``config.analysis_size`` here.
        config: the measuring constants (:func:`load_pixel_stats_config`).
        original_size: (width, height) of the image in the file; defaults to ``img.size``.
            When it differs from ``img.size`` the image counts as reduced, and the
            pixel-domain blockiness is not measured.
        jpeg_quant: the file's JPEG quantisation tables (Pillow's ``Image.quantization``),
            from which the JPEG quality is estimated.
        grid_luma: the luma of a central crop at native resolution, taken by the decoder
            before any reduction (:func:`native_grid_luma`); blockiness is measured on it, so
            a large PNG or a draft-decoded JPEG still gets one.

    Returns:
        The statistics described in the module docstring, as floats: ``sharpness``,
        ``noise``, ``noise_ratio``, ``luma_mean``, ``shadow_clip``, ``highlight_clip``,
        ``contrast``, ``colourfulness``, ``blockiness`` (NaN if the image was reduced without a ``grid_luma``, or is
        smaller than 16×16), ``jpeg_quality`` (NaN without tables), ``megapixels`` and the
        original ``width`` and ``height`` (for the named issues odd_size and
        odd_aspect_ratio).
    """
    if img.mode != "RGB":
        img = img.convert("RGB")
    size = img.size if original_size is None else (int(original_size[0]), int(original_size[1]))

    measure = config.measure
    small = _analysis_image(img, config.analysis_size)
    luma = np.asarray(small.convert("L"), dtype=np.int16)
    detail, noise = _detail_and_noise(luma, measure) if min(luma.shape) >= 3 else (0.0, 0.0)
    tone = _tone_and_colour(small, measure)
    scale = max(255.0 * tone["contrast"], float(measure["contrast_floor"]))

    blockiness = math.nan
    box = _central_grid_crop(*img.size, measure)
    if grid_luma is not None and min(grid_luma.shape) >= 2 * _JPEG_BLOCK:
        blockiness = _blockiness(grid_luma, measure)
    elif size == img.size and min(box[2] - box[0], box[3] - box[1]) >= 2 * _JPEG_BLOCK:
        if small is img:
            grid_luma = luma[box[1] : box[3], box[0] : box[2]]
        else:
            grid_luma = np.asarray(img.crop(box).convert("L"), dtype=np.int16)
        blockiness = _blockiness(grid_luma, measure)

    return {
        "sharpness": detail / scale,
        "noise": noise,
        "noise_ratio": noise / scale,
        **tone,
        "blockiness": blockiness,
        "jpeg_quality": estimate_jpeg_quality(jpeg_quant),
        "megapixels": size[0] * size[1] / 1e6,
        "width": float(size[0]),
        "height": float(size[1]),
    }
