"""Named image issues, as CleanVision names them, each with the component that triggered it.

:func:`detect_issues` turns an image's quality components (and its size) into a list of
``{"name", "component", "value", "threshold"}`` dicts; the thresholds live in the
``[issues]`` table of ``clipsieve/data/quality.toml``:

===================  =======================================================================
``blurry``           ``sharpness`` component below ``[issues.blurry].below``
``dark``             ``exposure_under`` component below its threshold
``light``            ``exposure_over`` component below its threshold
``low_information``  ``contrast`` component below its threshold (flat, nearly uniform images)
``grayscale``        ``colourfulness`` component below its threshold (no colour at all)
``jpeg_artifacts``   ``jpeg`` component below its threshold (blockiness, low JPEG quality)
``odd_aspect_ratio`` longer side / shorter side above ``max_ratio`` (component ``aspect_ratio``)
``odd_size``         shorter side below ``min_side`` or longer side above ``max_side``
                     (component ``size``, the offending side in pixels)
``near_duplicate``   set by near-duplicate grouping (``clipsieve filter --dedupe``) on the
                     files rejected as duplicates, with ``of`` = the kept file
===================  =======================================================================

A component that was not measured (say no pixel statistics) raises no issue.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from clipsieve.quality.config import COMPONENT_ISSUES, default_quality_config

__all__ = ["ISSUE_NAMES", "ISSUE_THRESHOLDS", "ISSUES_VERSION", "detect_issues", "near_duplicate"]

#: Every issue name, in report order.
ISSUE_NAMES: tuple[str, ...] = (
    "blurry",
    "dark",
    "light",
    "low_information",
    "grayscale",
    "odd_aspect_ratio",
    "odd_size",
    "jpeg_artifacts",
    "near_duplicate",
)

_COMPONENT_ISSUES = COMPONENT_ISSUES


def __getattr__(name: str) -> Any:
    """``ISSUES_VERSION`` (version of the ``[issues]`` table) and ``ISSUE_THRESHOLDS`` of the
    shipped configuration, read on first use."""
    if name not in ('ISSUES_VERSION', 'ISSUE_THRESHOLDS'):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cfg = default_quality_config()
    if name == "ISSUES_VERSION":
        return cfg.issues_version
    if name == "ISSUE_THRESHOLDS":
        return cfg.issue_thresholds
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def detect_issues(
    components: Mapping[str, float],
    width: int | None = None,
    height: int | None = None,
    *,
    thresholds: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The named issues of one image, in :data:`ISSUE_NAMES` order.

    Args:
        components: the quality components (0–10), e.g. ``QualityResult.components``.
        width, height: the image's size in pixels (for the geometry issues), if known.
        thresholds: replaces :data:`ISSUE_THRESHOLDS` (same shape).

    Example:
        >>> detect_issues({"sharpness": 1.2, "exposure_under": 8.0}, 4000, 1000)
        [{'name': 'blurry', 'component': 'sharpness', 'value': 1.2, 'threshold': 3.0},
         {'name': 'odd_aspect_ratio', 'component': 'aspect_ratio', 'value': 4.0, 'threshold': 3.0}]
    """
    th = default_quality_config().issue_thresholds if thresholds is None else thresholds
    found: dict[str, dict[str, Any]] = {}
    for name in _COMPONENT_ISSUES:
        spec = th[name]
        v = components.get(spec["component"])
        if isinstance(v, (int, float)) and math.isfinite(v) and v < spec["below"]:
            found[name] = {
                "name": name,
                "component": spec["component"],
                "value": round(float(v), 4),
                "threshold": spec["below"],
            }
    if width and height:
        long_side, short_side = max(width, height), min(width, height)
        ratio = long_side / short_side
        if ratio > th["odd_aspect_ratio"]["max_ratio"]:
            found["odd_aspect_ratio"] = {
                "name": "odd_aspect_ratio",
                "component": "aspect_ratio",
                "value": round(ratio, 4),
                "threshold": th["odd_aspect_ratio"]["max_ratio"],
            }
        size = th["odd_size"]
        if short_side < size["min_side"]:
            found["odd_size"] = {"name": "odd_size", "component": "size", "value": short_side,
                                 "threshold": size["min_side"], "side": "shorter"}
        elif long_side > size["max_side"]:
            found["odd_size"] = {"name": "odd_size", "component": "size", "value": long_side,
                                 "threshold": size["max_side"], "side": "longer"}
    return [found[n] for n in ISSUE_NAMES if n in found]


def near_duplicate(of: str, cosine: float | None = None) -> dict[str, Any]:
    """The ``near_duplicate`` issue of a file grouped with ``of`` (the kept file)."""
    out: dict[str, Any] = {"name": "near_duplicate", "component": "embedding", "of": of}
    if cosine is not None:
        out["value"] = round(float(cosine), 4)
    return out
