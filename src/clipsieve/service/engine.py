"""The service's view of the library: decode one upload, analyse one batch.

:meth:`Engine.decode` runs in the decode worker pool (never on the event loop): it decodes the
upload exactly as ``clipsieve scan`` decodes a file (JPEG DCT scaling, EXIF orientation), and
measures the pixel statistics with the original size and JPEG tables, then preprocesses.
:meth:`Engine.run_batch` runs on the single model thread over images from many requests at once:
one call of the analyzer's encoder, then the library's heads through
:meth:`~clipsieve.pipeline.Analyzer.score`, once per group of requests that asked for the same
heads. Heads come from :func:`clipsieve.build_heads`, built once per (policy, labels,
templates) and kept.

Why not :meth:`~clipsieve.pipeline.Analyzer.analyze` over the decoded images: it takes
in-memory images, so it would see the DCT-reduced image as the original (wrong ``width``,
``height`` and resolution score) without its JPEG tables, and would measure and preprocess on
the model thread. The split here — decode, statistics and preprocessing in the pool; encoder
and :meth:`score` on the model thread — is the same work as ``analyze``/``scan`` and gives the
same result objects as the CLI.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipsieve.errors import ConfigError
from clipsieve.service.config import ServiceConfig
from clipsieve.types import ItemResult, to_jsonable

__all__ = ["Engine", "HeadKey", "Work"]

#: Head sets kept built at once (each label set costs one text-encoder pass to build).
MAX_HEAD_SETS = 64


@dataclass(frozen=True)
class HeadKey:
    """Which heads a request asked for.

    Attributes:
        policy: the moderation policy's name, or ``None`` for no moderation.
        quality: whether to score quality.
        labels: ``((label, prompts), ...)`` for zero-shot labels, or ``None``.
        templates: the templates for the labels (``None``: the labels' own or the default set).
    """

    policy: str | None = None
    quality: bool = False
    labels: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    templates: tuple[str, ...] | None = None


@dataclass
class Work:
    """One decoded image on its way to the model."""

    item: ItemResult
    pixels: np.ndarray
    heads: HeadKey
    caption: str | None = None


class Engine:
    """The analyzer, the loaded policies and the heads, for the service.

    Args:
        config: the service settings (model, policies, limits…).
        store: the opened store (text embeddings are kept there), or ``None``.

    Raises:
        PolicyError: a policy cannot be loaded, or two have the same name.
        ModelError / HeadError: as the library raises them.
    """

    def __init__(self, config: ServiceConfig, store: Any = None) -> None:
        from clipsieve.media.decode import DecodeLimits
        from clipsieve.moderation import load_policy
        from clipsieve.pipeline import Analyzer

        self.config = config
        self.analyzer = Analyzer(
            model=config.model, device=config.device, precision=config.precision,
            store=store if store is not None else False,
            batch_size=config.max_batch_size, workers=config.workers,
            limits=DecodeLimits(max_pixels=config.max_pixels,
                                max_file_bytes=max(config.max_upload_bytes, 1)),
        )
        _ = self.analyzer.preprocess  # a missing or broken checkpoint fails here, before serving
        self.policies: dict[str, Any] = {}
        for spec in config.policies:
            policy = load_policy(spec).with_overrides(list(config.thresholds))
            if policy.name in self.policies:
                from clipsieve.errors import PolicyError

                raise PolicyError(f"two policies are named {policy.name!r} ({spec})")
            policy.check_probes(self.analyzer.model_id)
            self.policies[policy.name] = policy
        self.default_policy = next(iter(self.policies))
        self._heads: OrderedDict[HeadKey, list[Any]] = OrderedDict()
        self._ready = threading.Event()
        # the pixel statistics the analyzer measures (the quality inputs), from the same config
        from clipsieve.media.stats import load_pixel_stats_config
        from clipsieve.pipeline import ANALYSIS_MIN_SIDE

        self._analysis_min_side = ANALYSIS_MIN_SIDE
        self._stats = None
        if self.analyzer.features_version is not None:
            self._stats = load_pixel_stats_config()
            if self._stats.version != self.analyzer.features_version:
                raise ConfigError("pixel statistics configuration differs from the analyzer's")

    # -- state ------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return str(self.analyzer.model_id)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def load(self) -> None:
        """Load the model and build the default heads (on the model thread)."""
        _ = self.analyzer.encoder  # loads the model (once, under the analyzer's lock)
        for name in self.policies:
            self.heads_for(HeadKey(policy=name, quality=True))
        self._ready.set()

    def info(self) -> dict[str, Any]:
        an = self.analyzer
        return {
            "model": self.model_id,
            "ready": self.ready,
            "device": an.encoder.device if an.model_loaded else None,
            "precision": an.encoder.precision if an.model_loaded else None,
            "policies": [
                {"name": p.name, "version": p.version, "default": p.name == self.default_policy,
                 "categories": list(p.categories)}
                for p in self.policies.values()
            ],
        }

    # -- request options -------------------------------------------------------------------
    def image_heads(self, policy: str | None, labels: str | None,
                    templates: list[str] | None = None) -> HeadKey:
        """The heads of ``POST /v1/images``: moderation under ``policy``, quality, labels.

        Raises:
            ConfigError: an unknown policy or bad labels/templates.
        """
        name = policy or self.default_policy
        if name not in self.policies:
            from clipsieve.errors import did_you_mean

            raise ConfigError(
                f"unknown policy {name!r}{did_you_mean(name, self.policies)} "
                f"(loaded: {', '.join(self.policies)})"
            )
        spec, tmpl = _labels(labels, templates) if labels else (None, None)
        if templates and not labels:
            raise ConfigError("templates need labels")
        return HeadKey(policy=name, quality=True, labels=spec, templates=tmpl)

    def classify_heads(self, labels: str | None, templates: list[str] | None) -> HeadKey:
        """The heads of ``POST /v1/classify``: zero-shot labels only.

        Raises:
            ConfigError: no labels, or bad labels/templates.
        """
        if not labels:
            raise ConfigError("labels are required, e.g. labels=cat,dog,car")
        spec, tmpl = _labels(labels, templates)
        return HeadKey(labels=spec, templates=tmpl)

    # -- work -------------------------------------------------------------------------------
    def decode(self, data: bytes, name: str, heads: HeadKey, caption: str | None = None,
               sha256: str | None = None) -> Work:
        """Hash, decode, measure and preprocess one upload (in a decode worker thread).

        Raises:
            DecodeError: the bytes cannot be decoded (``truncated``, ``too_large``…).
        """
        from clipsieve.media.decode import decode_image

        an = self.analyzer
        t0 = time.perf_counter()
        item = ItemResult(path=name, model=self.model_id)
        item.sha256 = sha256 or hashlib.sha256(data).hexdigest()
        prep = an.preprocess
        min_side = prep.min_side if self._stats is None else max(prep.min_side,
                                                                 self._analysis_min_side)
        dec = decode_image(data, name, min_side=min_side, limits=an.limits,
                           **getattr(an, "decode_options", {}))
        item.width, item.height = dec.width, dec.height
        if self._stats is not None:  # as the analyzer measures a decoded file
            from clipsieve.media.stats import pixel_stats

            item.features = to_jsonable(pixel_stats(
                dec.image, config=self._stats, original_size=(dec.width, dec.height),
                jpeg_quant=dec.jpeg_quant, grid_luma=dec.grid_luma))
        pixels = prep(dec.image)
        item.timing["decode_ms"] = (time.perf_counter() - t0) * 1000
        return Work(item=item, pixels=pixels, heads=heads, caption=caption)

    def run_batch(self, works: list[Work]) -> list[ItemResult]:
        """Encode a batch in one model call, then run each request's heads (model thread)."""
        an = self.analyzer
        encoder = an.encoder
        t0 = time.perf_counter()
        embs = encoder.encode_pixels(np.stack([w.pixels for w in works]))
        per_item = (time.perf_counter() - t0) * 1000 / len(works)
        groups: dict[HeadKey, list[int]] = {}
        for i, w in enumerate(works):
            w.pixels = None  # type: ignore[assignment]
            groups.setdefault(w.heads, []).append(i)
        out: list[ItemResult | None] = [None] * len(works)
        for key, rows in groups.items():
            scored = an.score(
                embs[rows], [works[i].item.features for i in rows], heads=self.heads_for(key),
                ids=[works[i].item.path for i in rows],
                captions=[works[i].caption for i in rows],
            )
            for i, got in zip(rows, scored, strict=True):
                base = works[i].item
                got.sha256, got.width, got.height = base.sha256, base.width, base.height
                got.device, got.precision = encoder.device, encoder.precision
                got.encoder = an.encoder_kind
                got.timing = {"decode_ms": base.timing.get("decode_ms", 0.0),
                              "encode_ms": per_item}
                got.timing["total_ms"] = got.timing["decode_ms"] + per_item
                out[i] = got
        return [r for r in out if r is not None]

    def heads_for(self, key: HeadKey) -> list[Any]:
        """The heads of ``key`` from :func:`clipsieve.build_heads`, built on first use (prompt
        embeddings computed then) and kept (model thread only)."""
        heads = self._heads.get(key)
        if heads is not None:
            self._heads.move_to_end(key)
            return heads
        from clipsieve.factory import build_heads

        heads = build_heads(
            self.analyzer,
            policy=self.policies[key.policy] if key.policy is not None else None,
            quality=key.quality,
            labels=dict(key.labels) if key.labels is not None else None,
            templates=list(key.templates) if key.templates is not None else None,
        )
        self._heads[key] = heads
        while len(self._heads) > MAX_HEAD_SETS:
            self._heads.popitem(last=False)
        return heads


def _labels(
    labels: str, templates: list[str] | None
) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], tuple[str, ...] | None]:
    from clipsieve.heads.zeroshot import check_templates, load_templates, parse_labels

    spec = parse_labels(labels)
    tmpl: tuple[str, ...] | None = None
    if templates:
        if len(templates) == 1 and "{}" not in templates[0]:
            tmpl = tuple(load_templates(templates[0]))
        else:
            tmpl = tuple(check_templates(list(templates), source="templates"))
    return tuple(spec.labels.items()), tmpl
