"""The service's view of the library: prepare one upload, analyse one micro-batch.

The service is a driver of the kernel's public two-phase batch step and holds no analysis
code of its own:

* :meth:`Engine.decode` runs in the decode worker pool (never on the event loop) and is
  :meth:`Analyzer.prepare <clipsieve.pipeline.Analyzer.prepare>` on the upload's bytes: decoded
  exactly as ``clipsieve scan`` decodes a file (JPEG DCT scaling, EXIF orientation, limits),
  pixel statistics with the original size and JPEG tables, preprocessing.
* :meth:`Engine.run_batch` runs on the single model thread over images from many requests at
  once and is :meth:`Analyzer.analyze <clipsieve.pipeline.Analyzer.analyze>` over the prepared
  images with ``head_sets``: one encoder call for the whole micro-batch, then each distinct set
  of heads once over the requests that asked for it (requests are grouped by :class:`HeadKey`).

Heads come from :func:`clipsieve.build_heads`, built once per (policy, labels, templates) and
kept. So a result is the same object, field for field, as the CLI's JSONL line for that file.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clipsieve.errors import ConfigError, DecodeError
from clipsieve.service.config import ServiceConfig
from clipsieve.types import ItemResult

if TYPE_CHECKING:
    from clipsieve.pipeline import Prepared

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
    """One prepared upload on its way to the model, with what its request asked for."""

    prepared: Prepared
    heads: HeadKey
    caption: str | None = None

    @property
    def item(self) -> ItemResult:
        """The upload's result so far (size, hash, pixel statistics)."""
        return self.prepared.item


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

    # -- state ------------------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        return str(self.analyzer.model_id)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def load(self) -> None:
        """Load the model and build the default heads (on the model thread)."""
        threads = self.config.torch_threads
        if threads is not None and self.analyzer.encoder_kind == "torch":
            import torch

            torch.set_num_threads(threads)  # the model thread's OpenMP team, before loading
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
        """Prepare one upload (:meth:`Analyzer.prepare`; in a decode worker thread).

        Raises:
            DecodeError: the bytes cannot be decoded (``truncated``, ``too_large``…).
        """
        prepared = self.analyzer.prepare(data, id=name, sha256=sha256)
        error = prepared.item.error
        if error is not None:
            raise DecodeError(error.code, error.message, name)
        return Work(prepared=prepared, heads=heads, caption=caption)

    def run_batch(self, works: list[Work]) -> list[ItemResult]:
        """One micro-batch (model thread): one encoder call, each request's heads
        (:meth:`Analyzer.analyze` with one head set per image)."""
        return self.analyzer.analyze(
            [w.prepared for w in works],
            head_sets=[self.heads_for(w.heads) for w in works],
            captions=[w.caption for w in works],
        )

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
