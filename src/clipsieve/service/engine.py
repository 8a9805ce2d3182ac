"""The service's view of the library: decode one upload, analyse one batch.

:meth:`Engine.decode` runs in the decode worker pool (never on the event loop);
:meth:`Engine.run_batch` runs on the single model thread, over images from many requests at
once. Heads are the library's, built once per (policy, labels, templates) and kept; requests
with different heads share the model call and part only for the heads.
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
            policy = load_policy(spec)
            if policy.name in self.policies:
                from clipsieve.errors import PolicyError

                raise PolicyError(f"two policies are named {policy.name!r} ({spec})")
            policy.check_probes(self.analyzer.model_id)
            self.policies[policy.name] = policy
        self.default_policy = next(iter(self.policies))
        self._heads: OrderedDict[HeadKey, list[Any]] = OrderedDict()
        self._ready = threading.Event()

    # -- state ------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return str(self.analyzer.model_id)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def load(self) -> None:
        """Load the model and build the default heads (on the model thread)."""
        self.analyzer.load()
        for name in self.policies:
            self.heads_for(HeadKey(policy=name, quality=True))
        self._ready.set()

    def info(self) -> dict[str, Any]:
        an = self.analyzer
        return {
            "model": self.model_id,
            "ready": self.ready,
            "device": an.backend.device if an.model_loaded else None,
            "precision": an.backend.precision if an.model_loaded else None,
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
        dec = decode_image(data, name, min_side=an._decode_min_side(prep), limits=an.limits)
        item.width, item.height = dec.width, dec.height
        if an._pixel_features is not None:
            item.features = to_jsonable(an._pixel_features(dec))
        pixels = prep(dec.image)
        item.timing["decode_ms"] = (time.perf_counter() - t0) * 1000
        return Work(item=item, pixels=pixels, heads=heads, caption=caption)

    def run_batch(self, works: list[Work]) -> list[ItemResult]:
        """Encode a batch in one model call, then run each request's heads (model thread)."""
        from clipsieve.moderation import Caption, ModerationHead

        backend = self.analyzer.backend
        encoder: Any = self.analyzer
        t0 = time.perf_counter()
        embs = backend.encode_pixels(np.stack([w.pixels for w in works]))
        per_item = (time.perf_counter() - t0) * 1000 / len(works)
        groups: dict[HeadKey, list[int]] = {}
        for i, (w, e) in enumerate(zip(works, embs)):
            it = w.item
            it.embedding = e
            it.device, it.precision = backend.device, backend.precision
            it.timing["encode_ms"] = per_item
            it.timing["total_ms"] = it.timing.get("decode_ms", 0.0) + per_item
            groups.setdefault(w.heads, []).append(i)
        for key, rows in groups.items():
            items = [works[i].item for i in rows]
            mat = embs[rows]
            for head in self.heads_for(key):
                if isinstance(head, ModerationHead):
                    captions = [_caption(works[i].caption, Caption) for i in rows]
                    results = head.moderate_embeddings(mat, encoder, captions)
                    for it, res in zip(items, results):
                        it.moderation = res
                else:
                    head.apply(items, mat, self.analyzer)
        return [w.item for w in works]

    def heads_for(self, key: HeadKey) -> list[Any]:
        """The heads of ``key``, built on first use and kept (model thread only)."""
        heads = self._heads.get(key)
        if heads is not None:
            self._heads.move_to_end(key)
            return heads
        heads = []
        if key.policy is not None:
            from clipsieve.moderation import ModerationHead

            head = ModerationHead(self.policies[key.policy])
            encoder: Any = self.analyzer
            head.bank(encoder)
            heads.append(head)
        if key.quality:
            from clipsieve.quality import QualityHead

            heads.append(QualityHead())
        if key.labels is not None:
            from clipsieve.heads.zeroshot import LabelsHead

            labels_head = LabelsHead(dict(key.labels), key.templates)
            labels_head.classifier(self.analyzer)
            heads.append(labels_head)
        self._heads[key] = heads
        while len(self._heads) > MAX_HEAD_SETS:
            self._heads.popitem(last=False)
        return heads


def _caption(text: str | None, caption: Any) -> Any:
    return caption(text, "input") if text else None


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
