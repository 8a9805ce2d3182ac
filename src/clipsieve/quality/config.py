"""The quality configuration as a loaded, versioned value.

``clipsieve/data/quality.toml`` holds every constant of the quality score: the technical
measures and their mapping to components (``[technical]``), the CLIP-IQA prompt pairs
(``[clip_iqa]``), the zero-shot aesthetic map (``[aesthetic]``), the combination weights
(``[combine]``) and the issue thresholds (``[issues]``). :func:`load_quality_config` reads and
validates one such file into a frozen :class:`QualityConfig`; heads receive it (``QualityHead(
config=...)``) and the scoring functions take it as an argument. Nothing is read at import
time: :func:`default_quality_config` loads the shipped file on first use.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipsieve import settings
from clipsieve._compat import tomllib
from clipsieve.errors import ConfigError, did_you_mean
from clipsieve.media.stats import PixelStatsConfig

__all__ = [
    "COMPONENT_ISSUES",
    "QualityConfig",
    "default_quality_config",
    "load_quality_config",
    "weights_table",
]

#: Issues that fire when a quality component falls below a threshold.
COMPONENT_ISSUES = ("blurry", "dark", "light", "low_information", "grayscale", "jpeg_artifacts")


def weights_table(
    table: Any, where: str, names: Iterable[str] | None = None, *, src: str = "quality.toml"
) -> dict[str, float]:
    """Validate a ``{name: weight}`` table (weights ≥ 0, at least one > 0).

    Args:
        table: the parsed TOML value.
        where: its dotted path, for error messages.
        names: if given, the allowed names.
        src: the file name, for error messages.

    Raises:
        ConfigError: ``quality.toml: WHERE.KEY: reason``.
    """
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{src}: {where}: must be a non-empty table of name = weight")
    allowed = None if names is None else list(names)
    out: dict[str, float] = {}
    for key, value in table.items():
        if allowed is not None and key not in allowed:
            raise ConfigError(f"{src}: {where}.{key}: unknown name{did_you_mean(key, allowed)}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value >= 0
        ):
            raise ConfigError(
                f"{src}: {where}.{key}: must be a number >= 0, got {json.dumps(value)}"
            )
        out[key] = float(value)
    if not any(out.values()):
        raise ConfigError(f"{src}: {where}: at least one weight must be > 0")
    return out


@dataclass(frozen=True)
class QualityConfig:
    """A validated quality configuration (see the module docstring).

    Attributes:
        source: the file it was read from.
        tables: the raw TOML tables.
        pixel_stats: the constants of the pixel statistics (``[technical]``).
        component_terms: technical component → its log-logistic terms.
        component_weights: weights of the technical components' geometric mean.
        score_floor: floor of a component score in that mean.
        pairs: every built-in CLIP-IQA pair, name → (positive, negative), in file order.
        clip_logit_scale: the CLIP-IQA softmax scale.
        combine_version: version of ``[clip_iqa]``, ``[aesthetic]`` and ``[combine]``.
        technical_weights: weights of the pixel and CLIP-IQA parts of ``technical``.
        technical_pairs: CLIP-IQA pairs (and weights) of ``technical_clip``.
        score_weights: weights of ``technical`` and ``aesthetic`` in ``score``.
        aesthetic_pairs: CLIP-IQA pairs (and weights) of the zero-shot ``aesthetic``.
        issues_version: version of ``[issues]``.
        issue_thresholds: issue name → its thresholds.
    """

    source: str
    tables: Mapping[str, Any] = field(repr=False)
    pixel_stats: PixelStatsConfig = field(repr=False)
    component_terms: Mapping[str, list[dict[str, Any]]] = field(repr=False)
    component_weights: Mapping[str, float] = field(repr=False)
    score_floor: float
    pairs: Mapping[str, tuple[str, str]] = field(repr=False)
    clip_logit_scale: float
    combine_version: str
    technical_weights: Mapping[str, float] = field(repr=False)
    technical_pairs: Mapping[str, float] = field(repr=False)
    score_weights: Mapping[str, float] = field(repr=False)
    aesthetic_pairs: Mapping[str, float] = field(repr=False)
    issues_version: str
    issue_thresholds: Mapping[str, Mapping[str, Any]] = field(repr=False)

    @property
    def technical_version(self) -> str:
        """Version of the technical measures (``[technical].version``)."""
        return self.pixel_stats.version

    @property
    def version(self) -> str:
        """The ``version`` of every quality result: combination + technical version."""
        return f"{self.combine_version}+{self.technical_version}"

    @property
    def components(self) -> tuple[str, ...]:
        """The technical component names, in breakdown order."""
        return tuple(self.component_terms)

    def table(self, name: str) -> dict[str, Any]:
        """A top-level table of the file.

        Raises:
            ConfigError: the table is missing.
        """
        table = self.tables.get(name)
        if not isinstance(table, dict):
            raise ConfigError(f"{Path(self.source).name}: missing table [{name}]")
        return table

    @classmethod
    def from_tables(cls, tables: Mapping[str, Any], source: str = "quality.toml"
                    ) -> QualityConfig:
        """Validate parsed TOML tables.

        Raises:
            ConfigError: ``quality.toml: TABLE.KEY: reason``.
        """
        src = Path(source).name

        def table(name: str) -> dict[str, Any]:
            t = tables.get(name)
            if not isinstance(t, dict):
                raise ConfigError(f"{src}: missing table [{name}]")
            return t

        technical = table("technical")
        stats = PixelStatsConfig.from_table(technical, source)
        try:
            terms = dict(technical["components"])
            comp_weights = {k: float(v) for k, v in technical["weights"].items()}
            floor = float(technical["score_floor"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{src}: technical: bad or missing {exc}") from None

        clip = table("clip_iqa")
        scale = clip.get("logit_scale")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise ConfigError(f"{src}: clip_iqa.logit_scale: must be a number > 0, got {scale!r}")
        raw = clip.get("pairs")
        if not isinstance(raw, dict) or not raw:
            raise ConfigError(f"{src}: clip_iqa.pairs: must be a non-empty table")
        pairs: dict[str, tuple[str, str]] = {}
        for name, value in raw.items():
            if not (isinstance(value, list) and len(value) == 2
                    and all(isinstance(v, str) and v.strip() for v in value)):
                raise ConfigError(
                    f"{src}: clip_iqa.pairs.{name}: must be [positive prompt, negative prompt], "
                    f"got {json.dumps(value)}"
                )
            pairs[name] = (value[0], value[1])

        combine = table("combine")
        version = combine.get("version")
        if not isinstance(version, str) or not version:
            raise ConfigError(f"{src}: combine.version: must be a non-empty string")
        tech_w = weights_table(combine.get("technical"), "combine.technical",
                               ("pixels", "clip_iqa"), src=src)
        tech_pairs = weights_table(combine.get("technical_pairs"), "combine.technical_pairs",
                                   pairs, src=src)
        score_w = weights_table(combine.get("score"), "combine.score",
                                ("technical", "aesthetic"), src=src)
        aes_pairs = weights_table(table("aesthetic").get("pairs"), "aesthetic.pairs", pairs,
                                  src=src)
        issues_version, thresholds = _issues(table("issues"), src)
        return cls(
            source=source, tables=dict(tables), pixel_stats=stats, component_terms=terms,
            component_weights=comp_weights, score_floor=floor, pairs=pairs,
            clip_logit_scale=float(scale), combine_version=version, technical_weights=tech_w,
            technical_pairs=tech_pairs, score_weights=score_w, aesthetic_pairs=aes_pairs,
            issues_version=issues_version, issue_thresholds=thresholds,
        )


def _issues(table: Mapping[str, Any], src: str) -> tuple[str, dict[str, dict[str, Any]]]:
    version = table.get("version")
    if not isinstance(version, str) or not version:
        raise ConfigError(f"{src}: issues.version: must be a non-empty string")
    out: dict[str, dict[str, Any]] = {}
    for name in COMPONENT_ISSUES:
        entry = table.get(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("component"), str):
            raise ConfigError(f"{src}: issues.{name}: needs component and below")
        below = entry.get("below")
        if not isinstance(below, (int, float)) or not 0 <= below <= 10:
            raise ConfigError(f"{src}: issues.{name}.below: must be a number in 0–10")
        out[name] = {"component": entry["component"], "below": float(below)}
    for name, keys in (("odd_aspect_ratio", ("max_ratio",)), ("odd_size", ("min_side", "max_side"))):
        entry = table.get(name)
        if not isinstance(entry, dict):
            raise ConfigError(f"{src}: missing table [issues.{name}]")
        for k in keys:
            if not isinstance(entry.get(k), (int, float)) or entry[k] <= 0:
                raise ConfigError(f"{src}: issues.{name}.{k}: must be a positive number")
        out[name] = {k: float(entry[k]) for k in keys}
    return version, out


def load_quality_config(path: str | os.PathLike[str] | None = None) -> QualityConfig:
    """Read and validate a quality configuration (default: the shipped ``quality.toml``).

    Raises:
        ConfigError: unreadable file, or a bad value (``quality.toml: TABLE.KEY: reason``).
    """
    p = Path(path) if path is not None else settings.QUALITY_CONFIG_PATH
    try:
        tables = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: unreadable quality config: {exc}") from None
    return QualityConfig.from_tables(tables, str(p))


@functools.lru_cache(maxsize=1)
def default_quality_config() -> QualityConfig:
    """The shipped configuration, loaded on first use (it is immutable, so shared)."""
    return load_quality_config()
