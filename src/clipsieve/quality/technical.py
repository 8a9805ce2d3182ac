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
       blocks, minus one (about 0 for none). Measured at native resolution only: on the
       central crop the decoder keeps before any reduction (``Decoded.grid_luma``; every
       format, and draft-decoded JPEGs whose tables say quality >= 90), else on the image
       itself when it was not reduced; NaN otherwise.
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
from typing import Any

from PIL import Image

from clipsieve import settings
from clipsieve.media import stats as _stats
from clipsieve.quality.config import QualityConfig, default_quality_config

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
QUALITY_CONFIG_PATH = settings.QUALITY_CONFIG_PATH


def __getattr__(name: str) -> Any:
    """The shipped configuration's values under their module names, read on first use:
    ``TECHNICAL_VERSION`` (version of the technical measures), ``ANALYSIS_SIZE`` (longer side
    of the analysis image), ``COMPONENTS`` (the component names, in breakdown order)."""
    if name not in ('TECHNICAL_VERSION', 'ANALYSIS_SIZE', 'COMPONENTS'):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cfg = default_quality_config()
    if name == "TECHNICAL_VERSION":
        return cfg.technical_version
    if name == "ANALYSIS_SIZE":
        return cfg.pixel_stats.analysis_size
    if name == "COMPONENTS":
        return cfg.components
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def pixel_stats(
    img: Image.Image,
    *,
    original_size: tuple[int, int] | None = None,
    jpeg_quant: Mapping[int, Sequence[int]] | None = None,
    config: QualityConfig | None = None,
    grid_luma: Any = None,
) -> dict[str, float]:
    """:func:`clipsieve.media.stats.pixel_stats` with a quality configuration's constants
    (default: the shipped one)."""
    cfg = config or default_quality_config()
    return _stats.pixel_stats(img, config=cfg.pixel_stats, original_size=original_size,
                              jpeg_quant=jpeg_quant, grid_luma=grid_luma)


estimate_jpeg_quality = _stats.estimate_jpeg_quality


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


def technical_scores(
    stats: Mapping[str, float], config: QualityConfig | None = None
) -> dict[str, float]:
    """Map the statistics of :func:`pixel_stats` to 0–10 component scores (10 is best).

    Each component is 10 times the product of its terms' log-logistic scores (see
    ``quality.toml``); a term whose statistic is missing or NaN is left out, and so is a
    component with no measurable term. Components: ``sharpness``, ``noise``,
    ``exposure_under`` (falls as the image darkens), ``exposure_over`` (falls as it
    brightens), ``contrast``, ``colourfulness``, ``jpeg``, ``resolution``.

    Args:
        stats: the statistics, as returned by :func:`pixel_stats`.
        config: the quality configuration (default: the shipped one).

    Returns:
        Component name → score in [0, 10], in :data:`COMPONENTS` order.
    """
    cfg = config or default_quality_config()
    scores: dict[str, float] = {}
    for name, terms in cfg.component_terms.items():
        product, measured = 1.0, False
        for term in terms:
            value = stats.get(term["stat"], math.nan)
            if not math.isnan(value):
                product *= _term_score(float(value), term)
                measured = True
        if measured:
            scores[name] = 10.0 * product
    return scores


def technical_score(
    components: Mapping[str, float], config: QualityConfig | None = None
) -> float:
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
    cfg = config or default_quality_config()
    floor = cfg.score_floor
    weights = cfg.component_weights
    weighted = [(weights[n], s) for n, s in components.items() if n in weights]
    total = sum(w for w, _ in weighted)
    if not total:
        raise ValueError("no technical component to combine")
    log_mean = sum(w * math.log(max(s, floor) / 10.0) for w, s in weighted) / total
    return 10.0 * math.exp(log_mean)
