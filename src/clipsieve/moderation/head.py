"""The moderation head: a policy applied to each scanned image (and its caption, if any).

:class:`ModerationHead` plugs into :meth:`clipsieve.pipeline.Analyzer.scan` and sets
``item.moderation`` to an :class:`ItemModeration`. The work per batch is one matrix product:

* the policy's class bank (prompt-ensembled class embeddings) is built once per model through
  ``analyzer.embed_texts``, which keeps every prompt embedding in the store, and memoised on the
  head;
* the images are scored by :func:`~clipsieve.moderation.scoring.moderate`;
* with a :class:`~clipsieve.moderation.captions.CaptionSource`, each image's caption is embedded
  by the CLIP text encoder, scored against the same categories by
  :func:`~clipsieve.moderation.scoring.moderate_texts`, and compared with the image by CLIPScore
  (:func:`~clipsieve.moderation.scoring.clip_score`). A CLIPScore below
  ``min_clip_score`` (default :data:`~clipsieve.moderation.scoring.LOW_AGREEMENT_CLIP_SCORE`)
  sends the item to review: the caption does not describe the image, so it may be spam or
  clickbait.

The item's decision is the most severe of the image's, the caption's and the agreement's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from clipsieve.heads.base import BuiltHead, embed_captions
from clipsieve.moderation.captions import Caption, CaptionSource
from clipsieve.moderation.policy import Policy, load_policy
from clipsieve.moderation.scoring import (
    DECISIONS,
    LOW_AGREEMENT_CLIP_SCORE,
    ClassBank,
    ModerationResult,
    TextEncoder,
    bank_cache_key,
    build_class_embeddings,
    clip_score,
    moderate,
    moderate_texts,
)
from clipsieve.types import SCORE_RANGES, dataclass_dict

if TYPE_CHECKING:
    from clipsieve.heads.probe import Probe
    from clipsieve.types import ItemResult

__all__ = ["CaptionModeration", "ItemModeration", "ModerationHead", "worst_decision"]

#: Leading keys of :meth:`ItemModeration.to_dict`, in this order; the rest follow.
_LEADING_KEYS = ("decision", "categories", "reasons", "policy", "model", "thresholds")


def worst_decision(*decisions: str) -> str:
    """Return the most severe of ``decisions`` (``"allow"`` < ``"review"`` < ``"block"``)."""
    return max(decisions, key=DECISIONS.index, default="allow")


@dataclass
class CaptionModeration:
    """What an image's caption contributed to its moderation.

    Attributes:
        text: the caption.
        source: ``"input"`` (JSONL), ``"option"`` (``--caption``) or ``"sidecar"``.
        decision: the most severe of the caption's category decision and, if the caption does
            not match the image, ``"review"``.
        categories: probability of every category for the caption text.
        reasons: the caption's category reasons, then the low-agreement reason if any.
        clip_score: image-caption agreement, ``100 * max(cos, 0)``.
        low_agreement: whether ``clip_score`` is below the head's ``min_clip_score``.
        category_decisions: decision of every category for the caption text.
    """

    text: str
    source: str
    decision: str
    categories: dict[str, float]
    reasons: list[str]
    clip_score: float
    low_agreement: bool
    category_decisions: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        """Return the caption result as plain JSON-serialisable types."""
        return dataclass_dict(self)


@dataclass
class ItemModeration(ModerationResult):
    """The moderation of one scanned item: its image's result plus its caption's, if any.

    The fields inherited from :class:`~clipsieve.moderation.scoring.ModerationResult` describe
    the image, except ``decision`` and ``reasons``, which cover the whole item: ``decision`` is
    the most severe of the image, caption and agreement decisions, and ``reasons`` lists the
    reasons of the most severe source first (caption reasons start with ``"caption: "``).

    Attributes:
        image_decision: the decision from the image alone.
        caption: the caption's part, or ``None`` when the item had no caption.
    """

    image_decision: str = "allow"
    caption: CaptionModeration | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return ``{decision, categories, reasons, policy, model, thresholds, ...}``."""
        data = dataclass_dict(self)
        lead = {key: data.pop(key) for key in _LEADING_KEYS}
        return {**lead, **data}


class ModerationHead(BuiltHead):
    """Moderate scanned images (and their captions) with a policy.

    Built once per model (:meth:`build`): the policy's class bank is embedded and the probes of
    probe categories are loaded and checked. :meth:`compute` is then a pure function of the
    image embeddings and the (already embedded) captions.

    Args:
        policy: a :class:`Policy`, a shipped policy name or a policy file path.
        captions: where captions come from during a scan; ``None`` moderates images only
            (captions can still be passed to :meth:`compute` or ``Analyzer.analyze``).
        min_clip_score: CLIPScore below which a caption is taken not to describe its image.
        nearest: prompts quoted per flagged category in the reasons.

    Raises:
        PolicyError: the policy cannot be loaded.

    Example:
        >>> from clipsieve import Analyzer
        >>> head = ModerationHead("default")
        >>> for r in Analyzer().scan(["uploads/"], heads=[head]):
        ...     print(r.path, r.moderation.decision, r.moderation.reasons[0])
    """

    field = "moderation"
    score_range = SCORE_RANGES["moderation"]

    def __init__(
        self,
        policy: Policy | str | os.PathLike[str] = "default",
        captions: CaptionSource | None = None,
        *,
        min_clip_score: float = LOW_AGREEMENT_CLIP_SCORE,
        nearest: int = 2,
    ) -> None:
        self.policy = policy if isinstance(policy, Policy) else load_policy(policy)
        self.captions = captions
        self.min_clip_score = float(min_clip_score)
        self.nearest = nearest
        self._banks: dict[str, ClassBank] = {}
        self._bank: ClassBank | None = None
        self._scale = 0.0
        self._probes: dict[str, Probe] = {}

    def bank(self, encoder: TextEncoder) -> ClassBank:
        """Return the policy's class bank for ``encoder``'s model, built on first use."""
        key = bank_cache_key(encoder.model_id, self.policy)
        if key not in self._banks:
            self._banks[key] = build_class_embeddings(encoder, self.policy)
        return self._banks[key]

    def _build(self, text: TextEncoder) -> None:
        self._bank = self.bank(text)
        self._scale = float(text.logit_scale)
        self._probes = self.policy.load_probes(text.model_id)

    def captions_for(self, items: Sequence[ItemResult]) -> list[Caption | None] | None:
        if self.captions is None:
            return None
        return [self.captions.caption_for(it.path) for it in items]

    def compute(
        self,
        embeddings: np.ndarray,
        features: Sequence[Any] | None = None,
        captions: Sequence[Caption | None] | None = None,
    ) -> list[ItemModeration]:
        """Moderate image embeddings (rows) with optional embedded captions (one per row).

        Args:
            embeddings: ``(N, D)`` image embeddings from the model the head was built for.
            features: unused (the pixel statistics; part of the head protocol).
            captions: one :class:`Caption` (with its ``embedding``) or ``None`` per row.

        Returns:
            One :class:`ItemModeration` per row.
        """
        self._check_built()
        assert self._bank is not None
        embeddings = np.asarray(embeddings)
        if embeddings.shape[0] == 0:
            return []
        bank = self._bank
        scale = self._scale
        images = moderate(embeddings, bank, self.policy, scale, nearest=self.nearest,
                          probes=self._probes)
        out = [
            ItemModeration(
                **{f.name: getattr(r, f.name) for f in fields(ModerationResult)},
                image_decision=r.decision,
            )
            for r in images
        ]
        if captions is None:
            return out
        if len(captions) != len(out):
            raise ValueError(f"got {len(captions)} captions for {len(out)} embeddings")
        rows = [i for i, c in enumerate(captions) if c is not None]
        if not rows:
            return out
        missing = [i for i in rows if captions[i].embedding is None]  # type: ignore[union-attr]
        if missing:
            raise ValueError(
                "captions need their text embeddings (Caption.embedding): Analyzer.analyze and "
                "ModerationHead.moderate_embeddings compute them"
            )
        text_embs = np.stack([np.asarray(captions[i].embedding) for i in rows])  # type: ignore[union-attr]
        text_results = moderate_texts(text_embs, bank, self.policy, scale, nearest=self.nearest)
        agreement = np.atleast_1d(clip_score(embeddings[rows], text_embs))
        for i, text_result, score in zip(rows, text_results, agreement, strict=True):
            caption = captions[i]
            assert caption is not None
            self._merge(out[i], caption, text_result, float(score))
        return out

    def moderate_embeddings(
        self,
        embeddings: np.ndarray,
        encoder: TextEncoder,
        captions: list[Caption | None] | None = None,
    ) -> list[ItemModeration]:
        """Build for ``encoder``'s model, embed the captions, and :meth:`compute`.

        Args:
            embeddings: ``(N, D)`` image embeddings from ``encoder``'s model.
            encoder: embeds prompts and captions; supplies ``model_id`` and ``logit_scale``.
            captions: one caption or ``None`` per row; ``None`` for no captions at all.

        Returns:
            One :class:`ItemModeration` per row.
        """
        embeddings = np.asarray(embeddings)
        if embeddings.shape[0] == 0:
            return []
        self.build(encoder)
        if captions is not None and len(captions) != embeddings.shape[0]:
            raise ValueError(f"got {len(captions)} captions for {embeddings.shape[0]} embeddings")
        return self.compute(embeddings, None, embed_captions(captions, encoder))

    def _merge(
        self, item: ItemModeration, caption: Caption, text: ModerationResult, score: float
    ) -> None:
        low = score < self.min_clip_score
        agreement_reasons = (
            [
                (
                    f"caption does not match the image: CLIPScore {score:.1f} < "
                    f"{self.min_clip_score:g} (possible spam or clickbait)"
                )
            ]
            if low
            else []
        )
        item.caption = CaptionModeration(
            text=caption.text,
            source=caption.source,
            decision=worst_decision(text.decision, "review" if low else "allow"),
            categories=text.categories,
            reasons=list(text.reasons) + agreement_reasons,
            clip_score=score,
            low_agreement=low,
            category_decisions=text.category_decisions,
        )
        sources = [(item.image_decision, list(item.reasons))]
        if text.decision != "allow":
            sources.append((text.decision, [f"caption: {r}" for r in text.reasons]))
        if low:
            sources.append(("review", agreement_reasons))
        sources.sort(key=lambda s: -DECISIONS.index(s[0]))  # stable: image first among equals
        item.decision = worst_decision(*(d for d, _ in sources))
        item.reasons = [reason for _, reasons in sources for reason in reasons]
