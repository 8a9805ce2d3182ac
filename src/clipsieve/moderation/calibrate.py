"""Calibrating policy thresholds on labelled scores, and the per-group false-positive audit.

Inputs are plain arrays: one score per item (a category probability from
:func:`~clipsieve.moderation.scoring.moderate`) and a binary label (1 = the item really belongs
to the category). A threshold ``t`` flags an item when ``score >= t``, the same rule as the
policy's review and block thresholds.

The bias audit follows the recommendation of the CLIP paper (Radford et al. 2021, section 7):
measure how often benign items of each demographic or content group are flagged, with and
without the neutral classes in the softmax, since the choice of classes changes who is
misclassified.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from clipsieve.moderation.policy import Policy
from clipsieve.moderation.scoring import MIN_THRESHOLD

#: Calibrated thresholds are written with this many decimals.
THRESHOLD_DECIMALS = 3

__all__ = [
    "FLAGGED",
    "CategoryCalibration",
    "GroupFPR",
    "PRCurve",
    "ThresholdChoice",
    "auroc",
    "bias_audit",
    "calibrate_policy",
    "false_positive_rate_by_group",
    "precision_recall",
    "threshold_for_precision",
    "threshold_for_recall",
]

#: Decisions that count as flagging an item (a false positive when its label is 0).
FLAGGED: tuple[str, ...] = ("review", "block")


@dataclass(frozen=True)
class PRCurve:
    """Precision and recall at every distinct score used as a threshold.

    Attributes:
        thresholds: ``(K,)`` distinct scores, increasing.
        precision: ``(K,)`` precision of ``score >= thresholds[k]``.
        recall: ``(K,)`` recall of ``score >= thresholds[k]`` (non-increasing).
        average_precision: area under the curve, scikit-learn's ``average_precision_score``.
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    average_precision: float


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold picked on a precision-recall curve.

    Attributes:
        threshold: flag items with ``score >= threshold``.
        precision: precision achieved on the data.
        recall: recall achieved on the data.
        reached: whether the requested target was met; if not, ``threshold`` is the best the
            data allows (see the function that made it).
    """

    threshold: float
    precision: float
    recall: float
    reached: bool


@dataclass(frozen=True)
class CategoryCalibration:
    """Calibration outcome of one category.

    Attributes:
        category: category name.
        positives: items labelled 1.
        negatives: items labelled 0.
        auroc: area under the ROC curve, ``None`` without both labels.
        curve: precision-recall curve, ``None`` without positives.
        choice: threshold chosen for the target, ``None`` without positives.
        review: review threshold in the calibrated policy.
        block: block threshold in the calibrated policy.
    """

    category: str
    positives: int
    negatives: int
    auroc: float | None
    curve: PRCurve | None
    choice: ThresholdChoice | None
    review: float
    block: float


@dataclass(frozen=True)
class GroupFPR:
    """False-positive rates of one group, with and without neutral classes.

    Attributes:
        group: the group value.
        negatives: items of the group labelled 0 (the denominator).
        fpr_with_neutral: share of them flagged with neutral classes, ``None`` if no negatives.
        fpr_without_neutral: the same without neutral classes.
    """

    group: str
    negatives: int
    fpr_with_neutral: float | None
    fpr_without_neutral: float | None


def auroc(scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float | None:
    """Return the area under the ROC curve, or ``None`` if only one label value occurs.

    Raises:
        ValueError: for mismatched lengths, empty input, non-binary labels or non-finite scores.
    """
    s, y = _check(scores, labels)
    if y.min() == y.max():
        return None
    return float(roc_auc_score(y, s))


def precision_recall(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray
) -> PRCurve:
    """Return precision and recall at every distinct score.

    Raises:
        ValueError: as :func:`auroc`, and when there is no positive label.
    """
    s, y = _check(scores, labels)
    if y.sum() == 0:
        raise ValueError("precision-recall needs at least one positive label")
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(1 - y)
    last_of_tie = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tp, fp = tp[last_of_tie], fp[last_of_tie]
    return PRCurve(
        thresholds=s[last_of_tie][::-1].copy(),
        precision=(tp / (tp + fp))[::-1].copy(),
        recall=(tp / tp[-1])[::-1].copy(),
        average_precision=float(average_precision_score(y, s)),
    )


def threshold_for_precision(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, target: float
) -> ThresholdChoice:
    """Return the smallest threshold whose precision is at least ``target``.

    The smallest such threshold has the highest recall among those meeting the target. If no
    threshold meets it, the result has ``reached=False`` and the threshold of highest precision
    (the smallest one among ties).

    Args:
        scores: one score per item.
        labels: 1 for items of the category, 0 otherwise.
        target: required precision, in (0, 1].

    Raises:
        ValueError: as :func:`precision_recall`, or for a target outside (0, 1].
    """
    _check_target(target)
    curve = precision_recall(scores, labels)
    meets = np.flatnonzero(curve.precision >= target)
    k = int(meets[0]) if meets.size else int(np.argmax(curve.precision))
    return _choice(curve, k, reached=bool(meets.size))


def threshold_for_recall(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, target: float
) -> ThresholdChoice:
    """Return the largest threshold whose recall is at least ``target``.

    Recall falls as the threshold rises, so this is the strictest threshold that still catches
    the requested share of positives; the lowest score always reaches recall 1.

    Args:
        scores: one score per item.
        labels: 1 for items of the category, 0 otherwise.
        target: required recall, in (0, 1].

    Raises:
        ValueError: as :func:`precision_recall`, or for a target outside (0, 1].
    """
    _check_target(target)
    curve = precision_recall(scores, labels)
    k = int(np.flatnonzero(curve.recall >= target)[-1])
    return _choice(curve, k, reached=True)


def calibrate_policy(
    policy: Policy,
    scores: Mapping[str, Sequence[float] | np.ndarray],
    labels: Mapping[str, Sequence[int] | np.ndarray],
    *,
    target_precision: float | None = None,
    target_recall: float | None = None,
    level: Literal["review", "block"] | None = None,
    version: str | None = None,
) -> tuple[Policy, list[CategoryCalibration]]:
    """Choose new thresholds for the labelled categories and return the calibrated policy.

    For each category present in both ``scores`` and ``labels``, the threshold meeting the
    target replaces the ``level`` threshold, rounded to :data:`THRESHOLD_DECIMALS` decimals in
    the direction that keeps the target (down for recall, up for precision). The other
    threshold moves only when needed to keep ``review <= block``: a new block at or below the
    old review scales review by the policy's review/block ratio, so a review tier stays below
    block; a new review above the old block raises block to it. A category without positives, or whose precision target cannot
    be met, keeps its thresholds.

    Args:
        policy: the policy to calibrate.
        scores: category name → one score per item.
        labels: category name → one binary label per item (same items as ``scores``).
        target_precision: required precision (exactly one of the two targets).
        target_recall: required recall.
        level: which threshold to set; by default ``"block"`` for a precision target (block
            only what is right that often) and ``"review"`` for a recall target (send that share
            of harmful items to a person).
        version: version of the calibrated policy; default ``"<old version>+calibrated"``.

    Returns:
        The calibrated policy and one :class:`CategoryCalibration` per calibrated category, in
        policy order.

    Raises:
        ValueError: for not exactly one target, an unknown category, or bad score/label arrays.
        PolicyError: if the resulting policy is invalid.
    """
    if target_precision is not None and target_recall is None:
        choose, target = threshold_for_precision, target_precision
    elif target_recall is not None and target_precision is None:
        choose, target = threshold_for_recall, target_recall
    else:
        raise ValueError("give exactly one of target_precision and target_recall")
    if level is None:
        level = "block" if choose is threshold_for_precision else "review"
    if level not in ("review", "block"):
        raise ValueError(f'level must be "review" or "block", got {level!r}')
    unknown = sorted((set(scores) | set(labels)) - set(policy.categories))
    if unknown:
        raise ValueError(f"unknown categories for policy {policy.name!r}: {', '.join(unknown)}")
    report = []
    thresholds: dict[str, dict[str, float]] = {}
    for name, category in policy.categories.items():
        if name not in scores or name not in labels:
            continue
        s, y = _check(scores[name], labels[name])
        positives = int(y.sum())
        review, block = category.review, category.block
        curve = choice = None
        if positives:
            curve = precision_recall(s, y)
            choice = choose(s, y, target)
            if choice.reached:
                # 3 decimals, rounded so that the target still holds: down for a recall
                # target (every item at or above the exact threshold stays flagged), up for a
                # precision target (only items at or above the exact threshold are flagged)
                exact = max(choice.threshold, MIN_THRESHOLD)
                step = 10**THRESHOLD_DECIMALS
                if choose is threshold_for_recall:
                    t = math.floor(exact * step + 1e-9) / step
                else:
                    t = math.ceil(exact * step - 1e-9) / step
                t = min(max(t, MIN_THRESHOLD), 1.0)
                if level == "block":
                    block = t
                    if review >= t:
                        # keep a review tier below block, in the policy's own proportion
                        # (review 0.35 / block 0.65 → review 0.54 × the new block)
                        ratio = category.review / category.block
                        review = max(round(t * ratio, THRESHOLD_DECIMALS), MIN_THRESHOLD)
                        review = min(review, t)
                else:
                    review, block = t, max(block, t)
        thresholds[name] = {"review": review, "block": block}
        report.append(
            CategoryCalibration(
                category=name,
                positives=positives,
                negatives=int(y.size - positives),
                auroc=auroc(s, y),
                curve=curve,
                choice=choice,
                review=review,
                block=block,
            )
        )
    new_version = version if version is not None else f"{policy.version}+calibrated"
    return policy.with_thresholds(thresholds, version=new_version), report


def false_positive_rate_by_group(
    decisions: Sequence[str],
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[str],
    *,
    flagged: Sequence[str] = FLAGGED,
) -> dict[str, float | None]:
    """Return, per group, the share of items labelled 0 whose decision is in ``flagged``.

    Args:
        decisions: one decision per item (``"allow"``, ``"review"``, ``"block"``).
        labels: 1 for harmful items, 0 for benign ones.
        groups: one group value per item.
        flagged: decisions that count as flagging.

    Returns:
        Group → false-positive rate, ``None`` for a group without benign items; sorted by group.

    Raises:
        ValueError: for mismatched lengths or non-binary labels.
    """
    y = _check_labels(labels)
    if not len(decisions) == len(groups) == y.size:
        raise ValueError(
            f"decisions, labels and groups differ in length: "
            f"{len(decisions)}, {y.size}, {len(groups)}"
        )
    is_flagged = np.isin(np.asarray(decisions, dtype=str), list(flagged))
    group_arr = np.asarray(groups, dtype=str)
    rates: dict[str, float | None] = {}
    for group in sorted(set(group_arr.tolist())):
        benign = (group_arr == group) & (y == 0)
        rates[group] = float(is_flagged[benign].mean()) if benign.any() else None
    return rates


def bias_audit(
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[str],
    decisions_with_neutral: Sequence[str],
    decisions_without_neutral: Sequence[str],
    *,
    flagged: Sequence[str] = FLAGGED,
) -> list[GroupFPR]:
    """Compare per-group false-positive rates with and without the neutral classes.

    The two decision lists come from :func:`~clipsieve.moderation.scoring.moderate` run on the
    same items with ``use_neutral=True`` and ``use_neutral=False``.

    Args:
        labels: 1 for harmful items, 0 for benign ones.
        groups: one group value per item.
        decisions_with_neutral: decisions with neutral classes in the softmax.
        decisions_without_neutral: decisions without them.
        flagged: decisions that count as flagging.

    Returns:
        One :class:`GroupFPR` per group, sorted by group.

    Raises:
        ValueError: for mismatched lengths or non-binary labels.
    """
    with_neutral = false_positive_rate_by_group(
        decisions_with_neutral, labels, groups, flagged=flagged
    )
    without_neutral = false_positive_rate_by_group(
        decisions_without_neutral, labels, groups, flagged=flagged
    )
    y = _check_labels(labels)
    group_arr = np.asarray(groups, dtype=str)
    return [
        GroupFPR(
            group=group,
            negatives=int(((group_arr == group) & (y == 0)).sum()),
            fpr_with_neutral=rate,
            fpr_without_neutral=without_neutral[group],
        )
        for group, rate in with_neutral.items()
    ]


def _choice(curve: PRCurve, k: int, *, reached: bool) -> ThresholdChoice:
    return ThresholdChoice(
        threshold=float(curve.thresholds[k]),
        precision=float(curve.precision[k]),
        recall=float(curve.recall[k]),
        reached=reached,
    )


def _check_target(target: float) -> None:
    if not 0 < target <= 1:
        raise ValueError(f"target must be in (0, 1], got {target}")


def _check_labels(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be a 1-D sequence of 0/1 (or booleans)")
    return y.astype(np.int64)


def _check(
    scores: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = _check_labels(labels)
    if s.ndim != 1 or s.shape != y.shape:
        raise ValueError(
            f"scores and labels must be 1-D of one length, got {s.shape} and {y.shape}"
        )
    if s.size == 0:
        raise ValueError("no scores given")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return s, y
