"""The 0–10 quality score: technical and aesthetic parts and their combination.

Every number is on 0–10 (10 is best) and every constant lives in ``clipsieve/data/quality.toml``:

``technical``
    ``pixels × technical_pixels + clip_iqa × technical_clip`` (weights in ``[combine.technical]``:
    0.75 and 0.25), where ``technical_pixels`` is
    :func:`clipsieve.quality.technical.technical_score` of the pixel components (sharpness,
    noise, exposure, contrast, JPEG, resolution; ``[technical]``) and ``technical_clip`` is 10 ×
    the weighted mean of the CLIP-IQA pairs in ``[combine.technical_pairs]`` (quality 0.4,
    sharpness 0.25, noisiness 0.2, brightness 0.15). Without pixel statistics it is
    ``technical_clip`` alone.
``aesthetic``
    10 × the weighted mean of the aesthetic CLIP-IQA pairs in ``[aesthetic.pairs]`` (beautiful,
    pleasing, professional, well_composed, striking), or a learned head's prediction clipped to
    [0, 10] when one is given.
``score``
    ``technical × technical + aesthetic × aesthetic`` (weights in ``[combine.score]``: 0.6 and
    0.4).

Weights of a weighted mean are renormalised over the parts present. The result's ``version``
is :data:`QUALITY_VERSION` = ``"<[combine].version>+<[technical].version>"``; it changes
whenever a constant does. The computation is plain Python floats over the image's own
statistics and CLIP-IQA probabilities, so the same file gives the same numbers bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clipsieve.quality.config import QualityConfig, default_quality_config
from clipsieve.quality.technical import technical_score, technical_scores

__all__ = [
    "AESTHETIC_PAIRS",
    "COMBINE_VERSION",
    "QUALITY_VERSION",
    "SCORE_WEIGHTS",
    "TECHNICAL_PAIRS",
    "TECHNICAL_WEIGHTS",
    "QualityResult",
    "aesthetic_from_clip",
    "combine_score",
    "quality_from_parts",
    "technical_from_clip",
]

def __getattr__(name: str) -> Any:
    """The shipped configuration's values under their module names, read on first use:
    ``COMBINE_VERSION`` (version of [clip_iqa], [aesthetic] and [combine]), ``QUALITY_VERSION``
    (the ``version`` of every quality result: combination + technical version),
    ``TECHNICAL_WEIGHTS``, ``TECHNICAL_PAIRS``, ``SCORE_WEIGHTS`` and ``AESTHETIC_PAIRS``."""
    if name not in ('COMBINE_VERSION', 'QUALITY_VERSION', 'TECHNICAL_WEIGHTS', 'TECHNICAL_PAIRS', 'SCORE_WEIGHTS', 'AESTHETIC_PAIRS'):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cfg = default_quality_config()
    values = {
        "COMBINE_VERSION": lambda: cfg.combine_version,
        "QUALITY_VERSION": lambda: cfg.version,
        "TECHNICAL_WEIGHTS": lambda: dict(cfg.technical_weights),
        "TECHNICAL_PAIRS": lambda: dict(cfg.technical_pairs),
        "SCORE_WEIGHTS": lambda: dict(cfg.score_weights),
        "AESTHETIC_PAIRS": lambda: dict(cfg.aesthetic_pairs),
    }
    if name in values:
        return values[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class QualityResult:
    """The quality of one image (every number on 0–10, 10 best).

    Attributes:
        score: the combined score.
        technical: the technical part.
        aesthetic: the aesthetic part.
        components: the breakdown: every technical pixel component by name (``sharpness``,
            ``noise``, ``exposure_under``, …), every CLIP-IQA pair as ``clip_<pair>``
            (10 × probability), and the sub-scores ``technical_pixels``, ``technical_clip``,
            ``aesthetic_clip`` and, with a learned head, ``aesthetic_head``.
        version: :data:`QUALITY_VERSION`.
        model: the model id the embedding came from.
        aesthetic_source: ``"clip_iqa"`` or ``"head"``.
        head: with a learned head, what it is (file, kind, model, SHA-256 of its weights).
        issues: named image issues (:func:`clipsieve.quality.issues.detect_issues`), each
            ``{"name", "component", "value", "threshold"}``: ``blurry``, ``dark``, ``light``,
            ``low_information``, ``grayscale``, ``odd_aspect_ratio``, ``odd_size``,
            ``jpeg_artifacts`` (and ``near_duplicate``, set by near-duplicate grouping).
    """

    score: float
    technical: float
    aesthetic: float
    components: dict[str, float] = field(default_factory=dict)
    version: str = field(default_factory=lambda: default_quality_config().version)
    model: str | None = None
    aesthetic_source: str = "clip_iqa"
    head: dict[str, Any] | None = None
    issues: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """``{score, technical, aesthetic, components, version, model, aesthetic_source, head}``."""
        return {
            "score": self.score,
            "technical": self.technical,
            "aesthetic": self.aesthetic,
            "components": dict(self.components),
            "version": self.version,
            "model": self.model,
            "aesthetic_source": self.aesthetic_source,
            "head": self.head,
            "issues": [dict(it) for it in self.issues],
        }


def _weighted_mean(values: Mapping[str, float], weights: Mapping[str, float]) -> float | None:
    """Σ w·v / Σ w over the names present in both (None when no weight is left)."""
    used = [(weights[n], float(v)) for n, v in values.items()
            if n in weights and weights[n] > 0 and not math.isnan(float(v))]
    total = sum(w for w, _ in used)
    if not total:
        return None
    return sum(w * v for w, v in used) / total


def _clip10(x: float) -> float:
    return min(10.0, max(0.0, float(x)))


def technical_from_clip(
    probs: Mapping[str, float], config: QualityConfig | None = None
) -> float | None:
    """10 × the weighted mean of the technical CLIP-IQA pairs present in ``probs`` (or None)."""
    mean = _weighted_mean(probs, (config or default_quality_config()).technical_pairs)
    return None if mean is None else 10.0 * mean


def aesthetic_from_clip(
    probs: Mapping[str, float], config: QualityConfig | None = None
) -> float | None:
    """10 × the weighted mean of the aesthetic CLIP-IQA pairs present in ``probs`` (or None)."""
    mean = _weighted_mean(probs, (config or default_quality_config()).aesthetic_pairs)
    return None if mean is None else 10.0 * mean


def combine_score(
    technical: float, aesthetic: float, config: QualityConfig | None = None
) -> float:
    """``score`` from the two parts (weights of ``[combine.score]``)."""
    mean = _weighted_mean({"technical": technical, "aesthetic": aesthetic},
                          (config or default_quality_config()).score_weights)
    return _clip10(mean if mean is not None else math.nan)


def quality_from_parts(
    features: Mapping[str, float] | None,
    clip_probs: Mapping[str, float],
    *,
    learned_aesthetic: float | None = None,
    model: str | None = None,
    head: dict[str, Any] | None = None,
    size: tuple[int, int] | None = None,
    config: QualityConfig | None = None,
) -> QualityResult:
    """Build an image's :class:`QualityResult` from its pixel statistics and CLIP-IQA scores.

    Args:
        features: the image's pixel statistics (``ItemResult.features``, from
            :func:`clipsieve.quality.technical.pixel_stats`), or ``None``.
        clip_probs: ``{pair name: probability of the positive prompt}`` (built-in pairs and any
            custom ones; all reported as components).
        learned_aesthetic: a learned head's prediction (0–10 scale), which then is the
            aesthetic part.
        model: the model id, recorded.
        head: description of the learned head, recorded.
        size: the image's (width, height), for the geometry issues (default: the ``width``
            and ``height`` of ``features``).
        config: the quality configuration (default: the shipped one).

    Raises:
        ValueError: neither pixel statistics nor technical CLIP-IQA pairs, or no aesthetic
            pair and no learned prediction.
    """
    cfg = config or default_quality_config()
    components: dict[str, float] = {}
    pixels: float | None = None
    if features:
        # statistics read back from the store have NaN as null (JSON): treat both as missing
        stats = {k: math.nan if v is None else float(v) for k, v in features.items()}
        tech_components = technical_scores(stats, cfg)
        components.update(tech_components)
        try:
            pixels = technical_score(tech_components, cfg)
        except ValueError:
            pixels = None
    for name, p in clip_probs.items():
        components[f"clip_{name}"] = 10.0 * float(p)
    clip_tech = technical_from_clip(clip_probs, cfg)
    parts = {"pixels": pixels, "clip_iqa": clip_tech}
    present = {k: v for k, v in parts.items() if v is not None}
    technical = _weighted_mean(present, cfg.technical_weights)
    if technical is None:
        raise ValueError("no pixel statistics and no technical CLIP-IQA pair to score")
    technical = _clip10(technical)
    if pixels is not None:
        components["technical_pixels"] = pixels
    if clip_tech is not None:
        components["technical_clip"] = clip_tech
    clip_aes = aesthetic_from_clip(clip_probs, cfg)
    if clip_aes is not None:
        components["aesthetic_clip"] = clip_aes
    if learned_aesthetic is not None:
        aesthetic = _clip10(learned_aesthetic)
        components["aesthetic_head"] = aesthetic
        source = "head"
    elif clip_aes is not None:
        aesthetic = _clip10(clip_aes)
        source = "clip_iqa"
    else:
        raise ValueError("no aesthetic CLIP-IQA pair and no learned head to score")
    from clipsieve.quality.issues import detect_issues

    if size is None and features:  # pixel statistics record the original size
        fw, fh = features.get("width"), features.get("height")
        if isinstance(fw, (int, float)) and isinstance(fh, (int, float)) and fw and fh:
            size = (int(fw), int(fh))
    w, h = size if size else (None, None)
    return QualityResult(
        score=combine_score(technical, aesthetic, cfg),
        technical=technical,
        aesthetic=aesthetic,
        components=components,
        version=cfg.version,
        model=model,
        aesthetic_source=source,
        head=head,
        issues=detect_issues(components, w, h, thresholds=cfg.issue_thresholds),
    )
