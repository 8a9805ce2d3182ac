"""The protocols of the kernel: what every head follows, and the base class of the shipped heads.

A head is **built once** against a text source — anything with ``model_id``, ``logit_scale`` and
``embed_texts`` (an :class:`~clipsieve.pipeline.Analyzer`, or a
:class:`~clipsieve.pipeline.TextEmbedder` over an :class:`~clipsieve.backends.Encoder`). Building
computes everything that needs the model's text tower (prompt banks, anchors) and loads and checks
files (probes, learned heads). Afterwards :meth:`Head.compute` is a pure function of arrays: no
model, no store, no mutation of its inputs, deterministic, and the head pickles (a Ray worker can
receive it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from clipsieve.errors import HeadError
from clipsieve.types import Caption

if TYPE_CHECKING:
    from clipsieve.types import ItemResult

#: The result fields that are attributes of :class:`~clipsieve.types.ItemResult`; any other
#: head field goes into ``ItemResult.extra``.
RESULT_FIELDS = ("moderation", "quality", "labels")


@runtime_checkable
class TextSource(Protocol):
    """What heads are built against: a model's text side."""

    model_id: str

    @property
    def logit_scale(self) -> float: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class Head(Protocol):
    """Turns a batch of embeddings (and pixel statistics) into one result per row.

    Attributes:
        field: the result field it fills (``"moderation"``, ``"quality"``, ``"labels"``, or any
            other name, which lands in :attr:`ItemResult.extra`).
        score_range: the range of its scores, e.g. ``(0.0, 10.0)`` for quality.
    """

    field: str
    score_range: tuple[float, float]

    def build(self, text: Any) -> Any:
        """Compute the model-dependent parts once (idempotent per model); returns the head."""
        ...

    def compute(
        self,
        embeddings: np.ndarray,
        features: Sequence[dict[str, Any] | None],
        captions: Sequence[Any] | None = None,
    ) -> list[Any]:
        """One result per row of ``embeddings`` (pure; the head must be built)."""
        ...


def set_field(item: ItemResult, field: str, value: Any) -> None:
    """Put one head result on an item (an attribute, or ``item.extra[field]``)."""
    if field in RESULT_FIELDS:
        setattr(item, field, value)
    else:
        item.extra[field] = value


def embed_captions(captions: Sequence[Any] | None, text: Any) -> list[Any] | None:
    """Give each caption (a ``Caption``, a string or ``None``) its text embedding.

    Captions that already carry an embedding keep it; strings become ``Caption(text, "input")``.
    """
    if captions is None:
        return None
    out: list[Any] = [
        Caption(c, "input") if isinstance(c, str) else c for c in captions
    ]
    need = [i for i, c in enumerate(out) if c is not None and c.embedding is None]
    if need:
        vecs = np.asarray(text.embed_texts([out[i].text for i in need]))
        for i, v in zip(need, vecs, strict=True):
            out[i] = dataclasses.replace(out[i], embedding=v)
    return out


class BuiltHead:
    """Shared behaviour of the shipped heads: the build check and the ``apply`` shortcut.

    Subclasses implement ``_build(text)`` (fill the model-dependent state) and ``compute``.
    """

    field: str = ""
    score_range: tuple[float, float] = (0.0, 1.0)
    #: the model id the head was built for (``None`` until built)
    built_for: str | None = None

    def build(self, text: Any) -> Any:
        """Build the head for ``text``'s model (nothing to do when already built for it)."""
        model_id = str(text.model_id)
        if self.built_for != model_id:
            self._build(text)
            self.built_for = model_id
        return self

    def _build(self, text: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def compute(
        self,
        embeddings: np.ndarray,
        features: Sequence[Any],
        captions: Sequence[Any] | None = None,
    ) -> list[Any]:  # pragma: no cover - abstract
        """One result per row of ``embeddings`` (pure; the head must be built)."""
        raise NotImplementedError

    def _check_built(self) -> None:
        if self.built_for is None:
            raise HeadError(
                f"{type(self).__name__} is not built: call head.build(analyzer) (or use "
                "clipsieve.build_heads) before compute()"
            )

    def captions_for(self, items: Sequence[ItemResult]) -> list[Any] | None:
        """The captions of ``items`` from the head's caption source (``None``: no captions)."""
        return None

    def apply(self, items: list[ItemResult], embeddings: np.ndarray, text: Any) -> None:
        """Build for ``text``'s model, compute, and set :attr:`field` on each item."""
        if not items:
            return
        self.build(text)
        captions = embed_captions(self.captions_for(items), text)
        results = self.compute(embeddings, [it.features for it in items], captions)
        for item, value in zip(items, results, strict=True):
            set_field(item, self.field, value)

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)
