"""Zero-shot moderation arithmetic: class banks, softmax scores, decisions and reasons.

Nothing here loads a model. Text is embedded through any :class:`TextEncoder`; images and
captions arrive as embedding matrices. The design choices:

* **Class embeddings** (prompt ensembling, as in open_clip's ``build_zero_shot_classifier``):
  every prompt is embedded and L2-normalised, the prompts of a class are averaged, and the mean
  is L2-normalised again. Per-prompt embeddings are kept too, to name the nearest prompts.
* **Category scores**: one softmax, at the model's own logit scale, over
  ``logit_scale * cosine`` for all categories and all neutral classes. A category's score is its
  probability in it. Neutral classes give benign images somewhere better to go. Special-care
  concepts do **not** take part: they would take probability away from the very categories they
  are meant to tighten. ``use_neutral=False`` drops the neutral classes (softmax over categories
  only); it exists for the bias audit in :mod:`clipsieve.moderation.calibrate`.
* **Special care**: a concept's presence probability comes from a separate softmax over the
  neutral classes only (plus the concept itself when it has prompts of its own instead of
  naming a neutral class with ``class = ...``). Leaving categories out means a strong category
  score cannot mask the concept: a sexual image of a child is exactly the case where the sexual
  categories take most of the main softmax. Presence is computed the same way with or without
  ``use_neutral``, so the audit compares like with like. When presence >= ``trigger``, the
  targeted categories' review and block thresholds are multiplied by ``factor`` (or lowered by
  ``delta``), never below :data:`MIN_THRESHOLD`; several triggered concepts apply in policy
  order.
* **Probe categories** (``probe`` + ``probe_class`` in the policy): the score is the linear
  probe's probability for ``probe_class`` (:mod:`clipsieve.heads.probe`), computed separately;
  such a category takes no part in the zero-shot softmax (its prompts, if any, are only quoted
  in reasons), so adding one leaves every other score unchanged. The same review/block rule and
  special care apply. A probe is trained on image embeddings of one model: it raises
  :class:`~clipsieve.errors.HeadError` for another model, and it does not score captions
  (:func:`moderate_texts` gives probe categories 0.0).
* **Decisions**: per category ``block`` if score >= block threshold, ``review`` if score >=
  review threshold, else ``allow``; the item's decision is the most severe one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipsieve.heads._vectors import embed_prompts, l2_normalize
from clipsieve.moderation.policy import Policy
from clipsieve.protocols import TextSource
from clipsieve.types import dataclass_dict

__all__ = [
    "DECISIONS",
    "LOW_AGREEMENT_CLIP_SCORE",
    "MIN_THRESHOLD",
    "ClassBank",
    "ModerationResult",
    "TextEncoder",
    "bank_cache_key",
    "build_class_embeddings",
    "clip_score",
    "moderate",
    "moderate_texts",
]

#: Decisions from least to most severe.
DECISIONS: tuple[str, ...] = ("allow", "review", "block")

#: Floor of a threshold tightened by special care (a threshold of 0 would flag everything).
MIN_THRESHOLD = 0.01

#: CLIPScore (``100 * max(cos, 0)``) below which an image and its caption are considered not to
#: describe each other, so the caption may be spam or clickbait and the item goes to review.
#: For CLIP ViT-B/32 and ViT-L/14, matching image-caption pairs typically have a cosine of
#: 0.25-0.35 and unrelated pairs 0.10-0.17; 18 sits just above the unrelated range, so it flags
#: captions that have nothing to do with the image while leaving terse but true captions alone.
LOW_AGREEMENT_CLIP_SCORE = 18.0

_KINDS = ("category", "neutral", "special_care")
_BANK_KEYS = (
    "meta",
    "names",
    "kinds",
    "prompts",
    "prompt_owner",
    "embeddings",
    "prompt_embeddings",
)


#: What moderation needs from a model's text side: ``model_id``, ``logit_scale`` and
#: ``embed_texts`` (one protocol for every head: :class:`clipsieve.protocols.TextSource`).
TextEncoder = TextSource


@dataclass(frozen=True, eq=False)
class ClassBank:
    """Prompt-ensembled class embeddings of one policy under one model.

    Rows follow :meth:`Policy.prompt_classes`: categories, then neutral classes, then
    special-care concepts that have prompts of their own.

    Attributes:
        model_id: model the prompts were embedded with.
        policy_name: name of the policy.
        policy_version: version of the policy.
        prompt_hash: :meth:`Policy.prompt_hash` of the policy.
        names: class names, one per row of ``embeddings``.
        kinds: ``"category"``, ``"neutral"`` or ``"special_care"`` for each class.
        embeddings: ``(C, D)`` float32 L2-normalised class embeddings.
        prompts: every prompt, grouped by class in row order.
        prompt_owner: ``(P,)`` int64 row index of each prompt's class.
        prompt_embeddings: ``(P, D)`` float32 L2-normalised prompt embeddings.
    """

    model_id: str
    policy_name: str
    policy_version: str
    prompt_hash: str
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    embeddings: np.ndarray
    prompts: tuple[str, ...]
    prompt_owner: np.ndarray
    prompt_embeddings: np.ndarray

    @property
    def cache_key(self) -> str:
        """Key to store the bank under; equals :func:`bank_cache_key` for its model and policy."""
        return _cache_key(self.model_id, self.policy_name, self.policy_version, self.prompt_hash)

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.embeddings.shape[1])

    def index(self, name: str) -> int:
        """Return the row of class ``name``."""
        return self.names.index(name)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Return the bank as numpy arrays (no object arrays), e.g. for ``np.savez``.

        Returns:
            Arrays under the keys ``meta`` (model id, policy name, version, prompt hash),
            ``names``, ``kinds``, ``prompts``, ``prompt_owner``, ``embeddings`` and
            ``prompt_embeddings``.
        """
        meta = [self.model_id, self.policy_name, self.policy_version, self.prompt_hash]
        return {
            "meta": np.array(meta, dtype=np.str_),
            "names": np.array(self.names, dtype=np.str_),
            "kinds": np.array(self.kinds, dtype=np.str_),
            "prompts": np.array(self.prompts, dtype=np.str_),
            "prompt_owner": self.prompt_owner.copy(),
            "embeddings": self.embeddings.copy(),
            "prompt_embeddings": self.prompt_embeddings.copy(),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ClassBank:
        """Rebuild a bank from :meth:`to_arrays` output (e.g. an ``np.load`` of an ``.npz``).

        Args:
            arrays: mapping with the keys that :meth:`to_arrays` writes.

        Returns:
            The bank.

        Raises:
            ValueError: if a key is missing or the arrays are inconsistent.
        """
        missing = [key for key in _BANK_KEYS if key not in arrays]
        if missing:
            raise ValueError(f"class bank arrays: missing {', '.join(missing)}")
        meta = [str(s) for s in np.asarray(arrays["meta"]).tolist()]
        names = tuple(str(s) for s in np.asarray(arrays["names"]).tolist())
        kinds = tuple(str(s) for s in np.asarray(arrays["kinds"]).tolist())
        prompts = tuple(str(s) for s in np.asarray(arrays["prompts"]).tolist())
        owner = np.asarray(arrays["prompt_owner"], dtype=np.int64)
        emb = np.asarray(arrays["embeddings"], dtype=np.float32)
        pemb = np.asarray(arrays["prompt_embeddings"], dtype=np.float32)
        problems = []
        if len(meta) != 4:
            problems.append(f"meta has {len(meta)} entries, expected 4")
        if emb.ndim != 2 or emb.shape[0] != len(names) or len(kinds) != len(names):
            problems.append("names, kinds and embeddings rows disagree")
        if set(kinds) - set(_KINDS):
            problems.append(f"unknown kinds {sorted(set(kinds) - set(_KINDS))}")
        if pemb.ndim != 2 or pemb.shape != (len(prompts), emb.shape[-1]):
            problems.append("prompt_embeddings shape disagrees with prompts or embeddings")
        in_range = owner.size == 0 or 0 <= owner.min() <= owner.max() < len(names)
        if owner.shape != (len(prompts),) or not in_range:
            problems.append("prompt_owner does not index the classes")
        if problems:
            raise ValueError(f"class bank arrays: {'; '.join(problems)}")
        return cls(meta[0], meta[1], meta[2], meta[3], names, kinds, emb, prompts, owner, pemb)


@dataclass
class ModerationResult:
    """The moderation outcome of one image (or caption).

    Attributes:
        decision: ``"allow"``, ``"review"`` or ``"block"``: the most severe category decision.
        categories: probability of every category, in policy order.
        neutral: probability of every neutral class (empty with ``use_neutral=False``).
        reasons: human-readable explanations, special care first, then flagged categories
            (most severe first); an allowed item gets one line naming its highest category.
        policy: ``{"name": ..., "version": ...}``.
        model: model id the class bank was built with.
        thresholds: ``{category: {"review": r, "block": b}}`` as applied (after special care).
        category_decisions: decision of every category.
        special_care: names of the special-care concepts that triggered.
        special_care_scores: presence probability of every special-care concept.
    """

    decision: str
    categories: dict[str, float]
    neutral: dict[str, float]
    reasons: list[str]
    policy: dict[str, str]
    model: str
    thresholds: dict[str, dict[str, float]]
    category_decisions: dict[str, str]
    special_care: list[str]
    special_care_scores: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """Return the result as plain JSON-serialisable types."""
        return dataclass_dict(self)


def bank_cache_key(model_id: str, policy: Policy) -> str:
    """Return the cache key of the class bank of ``policy`` under ``model_id``.

    It can be computed before embedding anything, to look a stored bank up.
    """
    return _cache_key(model_id, policy.name, policy.version, policy.prompt_hash())


def build_class_embeddings(encoder: TextEncoder, policy: Policy) -> ClassBank:
    """Embed every prompt of ``policy`` and average them per class (prompt ensembling).

    Args:
        encoder: embeds the prompts; called once with all of them.
        policy: the policy whose classes to embed.

    Returns:
        The class bank.

    Raises:
        ValueError: if the encoder returns an array of the wrong shape or a zero vector.
    """
    rows = policy.prompt_classes()
    prompts = [prompt for _, _, class_prompts in rows for prompt in class_prompts]
    owner = np.repeat(np.arange(len(rows)), [len(class_prompts) for _, _, class_prompts in rows])
    emb = embed_prompts(encoder, prompts)
    sums = np.zeros((len(rows), emb.shape[1]))
    np.add.at(sums, owner, emb)
    classes = l2_normalize(sums / np.bincount(owner)[:, None])
    return ClassBank(
        model_id=encoder.model_id,
        policy_name=policy.name,
        policy_version=policy.version,
        prompt_hash=policy.prompt_hash(),
        names=tuple(name for name, _, _ in rows),
        kinds=tuple(kind for _, kind, _ in rows),
        embeddings=classes.astype(np.float32),
        prompts=tuple(prompts),
        prompt_owner=owner.astype(np.int64),
        prompt_embeddings=emb.astype(np.float32),
    )


def moderate(
    image_embs: np.ndarray,
    bank: ClassBank,
    policy: Policy,
    logit_scale: float,
    *,
    use_neutral: bool = True,
    nearest: int = 2,
    probes: Mapping[str, Any] | None = None,
) -> list[ModerationResult]:
    """Moderate images given their CLIP embeddings.

    Args:
        image_embs: ``(N, D)`` image embeddings (rows are L2-normalised here if they are not).
        bank: class bank built from ``policy`` (same prompts) for the model of ``image_embs``.
        policy: supplies thresholds and special care; may differ from the bank's policy in
            thresholds, version or special care, but not in classes or prompts.
        logit_scale: the model's ``exp(logit_scale)`` (about 100 for CLIP).
        use_neutral: include the neutral classes in the softmax (turn off only for audits).
        nearest: how many of a flagged category's prompts to quote in its reason.
        probes: the loaded probe of each probe category (``Policy.load_probes``); ``None``
            loads them here.

    Returns:
        One :class:`ModerationResult` per row.

    Raises:
        ValueError: bank built from other prompts, wrong shapes, or a bad ``logit_scale``.
        HeadError: a probe category's probe was trained on another model than the bank's.
    """
    return _moderate(image_embs, bank, policy, logit_scale, use_neutral, nearest,
                     loaded=probes)


def moderate_texts(
    text_embs: np.ndarray,
    bank: ClassBank,
    policy: Policy,
    logit_scale: float,
    *,
    use_neutral: bool = True,
    nearest: int = 2,
) -> list[ModerationResult]:
    """Moderate captions, embedded by the CLIP text encoder, against the same categories.

    The arithmetic is that of :func:`moderate`. Text-to-text cosines run higher than
    image-to-text ones (there is no modality gap), so at the same logit scale caption scores are
    more peaked than image scores; the policy's thresholds are applied unchanged.

    Args:
        text_embs: ``(N, D)`` caption embeddings.
        bank: class bank built from ``policy`` with the same model.
        policy: supplies thresholds and special care.
        logit_scale: the model's ``exp(logit_scale)``.
        use_neutral: include the neutral classes in the softmax.
        nearest: how many of a flagged category's prompts to quote in its reason.

    Returns:
        One :class:`ModerationResult` per caption.

    Raises:
        ValueError: bank built from other prompts, wrong shapes, or a bad ``logit_scale``.
    """
    return _moderate(text_embs, bank, policy, logit_scale, use_neutral, nearest, probes=False)


def clip_score(image_emb: np.ndarray, text_emb: np.ndarray) -> float | np.ndarray:
    """Return CLIPScore, ``100 * max(cos, 0)`` (Hessel et al. 2021, as computed by torchmetrics).

    The paper rescales by w = 2.5 instead of 100; the ranking is the same. Compare against
    :data:`LOW_AGREEMENT_CLIP_SCORE`.

    Args:
        image_emb: ``(D,)`` or ``(N, D)`` image embeddings.
        text_emb: caption embeddings of the same shape (row ``i`` pairs with row ``i``).

    Returns:
        A float for 1-D inputs, an ``(N,)`` array for 2-D inputs.

    Raises:
        ValueError: if the shapes differ or are not 1-D/2-D.
    """
    image = np.asarray(image_emb, dtype=np.float64)
    text = np.asarray(text_emb, dtype=np.float64)
    if image.shape != text.shape or image.ndim not in (1, 2):
        raise ValueError(
            f"clip_score needs two (D,) or (N, D) arrays of one shape, got "
            f"{image.shape} and {text.shape}"
        )
    cos = np.sum(l2_normalize(image) * l2_normalize(text), axis=-1)
    score = 100.0 * np.maximum(cos, 0.0)
    return float(score) if image.ndim == 1 else score


def _moderate(
    embs: np.ndarray,
    bank: ClassBank,
    policy: Policy,
    logit_scale: float,
    use_neutral: bool,
    nearest: int,
    probes: bool = True,
    loaded: Mapping[str, Any] | None = None,
) -> list[ModerationResult]:
    if nearest < 0:
        raise ValueError(f"nearest must be >= 0, got {nearest}")
    if bank.prompt_hash != policy.prompt_hash():
        raise ValueError(
            f"class bank was built for policy {bank.policy_name!r} version "
            f"{bank.policy_version!r}, whose classes or prompts differ from policy "
            f"{policy.name!r} version {policy.version!r}; rebuild the bank"
        )
    x = np.asarray(embs, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != bank.dim:
        raise ValueError(f"expected embeddings of shape (N, {bank.dim}), got {x.shape}")
    if not (math.isfinite(logit_scale) and logit_scale > 0):
        raise ValueError(f"logit_scale must be a positive number, got {logit_scale}")
    x = l2_normalize(x)
    cos = x @ bank.embeddings.astype(np.float64).T
    prompt_cos = x @ bank.prompt_embeddings.astype(np.float64).T

    zero_shot = [c.name for c in policy.categories.values() if c.probe is None]
    cat_rows = [bank.index(name) for name in zero_shot]
    neu_rows = [bank.index(name) for name in policy.neutral]
    columns = cat_rows + neu_rows if use_neutral else cat_rows
    probs = _softmax(logit_scale * cos[:, columns]) if columns else cos[:, :0]
    category_scores = dict(zip(zero_shot, probs[:, : len(cat_rows)].T, strict=True))
    neu_probs = probs[:, len(cat_rows) :]
    category_scores.update(_probe_scores(x, policy, bank.model_id, probes, loaded))

    presence: dict[str, np.ndarray] = {}
    for concept in policy.special_care.values():
        if concept.neutral_class is not None:
            rows, target = neu_rows, list(policy.neutral).index(concept.neutral_class)
        else:
            rows, target = neu_rows + [bank.index(concept.name)], len(neu_rows)
        presence[concept.name] = _softmax(logit_scale * cos[:, rows])[:, target]

    policy_info = policy.provenance()
    results = []
    for i in range(x.shape[0]):
        scores = {name: float(category_scores[name][i]) for name in policy.categories}
        care_scores = {name: float(p[i]) for name, p in presence.items()}
        triggered = [
            name for name, p in care_scores.items() if p >= policy.special_care[name].trigger
        ]
        thresholds, reasons, tightened_by = _apply_special_care(policy, triggered, care_scores)
        decisions = {
            name: _decide(scores[name], thresholds[name]["review"], thresholds[name]["block"])
            for name in policy.categories
        }
        flagged = sorted(
            (name for name in policy.categories if decisions[name] != "allow"),
            key=lambda name: (-DECISIONS.index(decisions[name]), -scores[name]),
        )
        for name in flagged:
            level = decisions[name]
            quoted = ""
            if name in bank.names:
                row = bank.index(name)
                prompt_ids = np.flatnonzero(bank.prompt_owner == row)
                order = prompt_ids[np.argsort(-prompt_cos[i, prompt_ids], kind="stable")][:nearest]
                quoted = ", ".join(f'"{bank.prompts[j]}"' for j in order)
            notes = []
            category = policy.categories[name]
            if category.probe is not None:
                notes.append(
                    f'probe "{os.path.basename(category.probe)}" class "{category.probe_class}"'
                )
            if tightened_by[name]:
                original = getattr(policy.categories[name], level)
                concepts = ", ".join(f'"{c}"' for c in tightened_by[name])
                notes.append(f"tightened from {original:.2f} by special care {concepts}")
            if quoted:
                notes.append(f"nearest prompts: {quoted}")
            detail = f" ({'; '.join(notes)})" if notes else ""
            reasons.append(
                f"{name} {scores[name]:.2f} >= {level} {thresholds[name][level]:.2f}{detail}"
            )
        if not flagged:
            top = max(scores, key=scores.__getitem__)
            reasons.append(
                f"no category reached its review threshold (highest: {top} "
                f"{scores[top]:.2f} < review {thresholds[top]['review']:.2f})"
            )
        results.append(
            ModerationResult(
                decision=max(decisions.values(), key=DECISIONS.index),
                categories=scores,
                neutral=(
                    {name: float(p) for name, p in zip(policy.neutral, neu_probs[i], strict=True)}
                    if use_neutral
                    else {}
                ),
                reasons=reasons,
                policy=dict(policy_info),
                model=bank.model_id,
                thresholds=thresholds,
                category_decisions=decisions,
                special_care=triggered,
                special_care_scores=care_scores,
            )
        )
    return results


def _probe_scores(
    x: np.ndarray, policy: Policy, model_id: str, apply: bool,
    loaded: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """Score each probe category: its probe's probability of ``probe_class``.

    With ``apply`` false (captions), every probe category scores 0.
    """
    out: dict[str, np.ndarray] = {}
    for c in policy.categories.values():
        if c.probe is None:
            continue
        if not apply:
            out[c.name] = np.zeros(x.shape[0])
            continue
        if loaded is None:
            loaded = policy.load_probes(model_id)
        probe = loaded[c.name]
        assert c.probe_class is not None
        out[c.name] = probe.predict_proba(x)[:, probe.class_index(c.probe_class)]
    return out


def _apply_special_care(
    policy: Policy, triggered: Sequence[str], care_scores: Mapping[str, float]
) -> tuple[dict[str, dict[str, float]], list[str], dict[str, list[str]]]:
    """Tighten thresholds for the triggered concepts.

    Returns:
        The applied thresholds per category, one reason per triggered concept, and for each
        category the concepts that tightened it.
    """
    thresholds = {
        c.name: {"review": c.review, "block": c.block} for c in policy.categories.values()
    }
    tightened_by: dict[str, list[str]] = {name: [] for name in policy.categories}
    reasons = []
    for name in triggered:
        concept = policy.special_care[name]
        targets = policy.targeted_categories(name)
        for category in targets:
            for level in ("review", "block"):
                t = thresholds[category][level]
                if concept.factor is not None:
                    t *= concept.factor
                elif concept.delta is not None:
                    t -= concept.delta
                thresholds[category][level] = max(t, MIN_THRESHOLD)
            tightened_by[category].append(name)
        what = concept.neutral_class or name
        change = f"x {concept.factor:g}" if concept.factor is not None else f"- {concept.delta:g}"
        reasons.append(
            f'special care "{name}": {what} {care_scores[name]:.2f} >= trigger '
            f"{concept.trigger:.2f}; thresholds of {', '.join(targets)} {change}"
        )
    return thresholds, reasons, tightened_by


def _decide(score: float, review: float, block: float) -> str:
    if score >= block:
        return "block"
    if score >= review:
        return "review"
    return "allow"


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _cache_key(model_id: str, name: str, version: str, prompt_hash: str) -> str:
    return f"{model_id}|{name}|{version}|{prompt_hash}"
