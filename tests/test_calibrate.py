"""Threshold calibration and the per-group false-positive audit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve

from clipsieve.moderation import load_policy
from clipsieve.moderation.calibrate import (
    GroupFPR,
    auroc,
    bias_audit,
    calibrate_policy,
    false_positive_rate_by_group,
    precision_recall,
    threshold_for_precision,
    threshold_for_recall,
)

# scikit-learn's documentation example
SCORES = [0.1, 0.4, 0.35, 0.8]
LABELS = [0, 0, 1, 1]


def tail(t: float, mean: float, sd: float = 0.1) -> float:
    """P(X >= t) for X ~ N(mean, sd)."""
    return 0.5 * math.erfc((t - mean) / (sd * math.sqrt(2)))


def solve(f, target: float, lo: float = 0.0, hi: float = 1.0) -> float:
    """Bisection for an increasing f."""
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) < target else (lo, mid)
    return (lo + hi) / 2


@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, np.ndarray]:
    """20 000 positives ~ N(0.7, 0.1) and 20 000 negatives ~ N(0.3, 0.1)."""
    rng = np.random.default_rng(1234)
    n = 20_000
    scores = np.concatenate([rng.normal(0.7, 0.1, n), rng.normal(0.3, 0.1, n)])
    labels = np.r_[np.ones(n, dtype=int), np.zeros(n, dtype=int)]
    return scores, labels


def test_curve_on_a_small_example() -> None:
    curve = precision_recall(SCORES, LABELS)
    np.testing.assert_allclose(curve.thresholds, [0.1, 0.35, 0.4, 0.8])
    np.testing.assert_allclose(curve.precision, [0.5, 2 / 3, 0.5, 1.0])
    np.testing.assert_allclose(curve.recall, [1.0, 1.0, 0.5, 0.5])
    assert curve.average_precision == pytest.approx(0.8333333, abs=1e-6)
    assert auroc(SCORES, LABELS) == pytest.approx(0.75)


def test_ties_share_one_threshold() -> None:
    curve = precision_recall([0.5, 0.5, 0.2], [1, 0, 1])
    np.testing.assert_allclose(curve.thresholds, [0.2, 0.5])
    np.testing.assert_allclose(curve.precision, [2 / 3, 0.5])
    np.testing.assert_allclose(curve.recall, [1.0, 0.5])


def test_curve_agrees_with_scikit_learn(synthetic) -> None:
    scores, labels = synthetic
    curve = precision_recall(scores, labels)
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    points = zip(curve.precision, curve.recall, strict=True)
    ours = dict(zip(curve.thresholds.tolist(), points, strict=True))
    for t, p, r in zip(thresholds, precision[:-1], recall[:-1], strict=True):
        assert ours[t] == pytest.approx((p, r))


def test_threshold_for_precision_is_the_smallest_reaching_the_target() -> None:
    # precision is not monotone here: 0.35 reaches 2/3, 0.4 only 1/2
    choice = threshold_for_precision(SCORES, LABELS, 0.6)
    assert (choice.threshold, choice.precision, choice.recall, choice.reached) == (
        0.35, pytest.approx(2 / 3), 1.0, True)
    choice = threshold_for_precision(SCORES, LABELS, 0.9)
    assert (choice.threshold, choice.precision, choice.recall) == (0.8, 1.0, 0.5)
    choice = threshold_for_precision(SCORES, LABELS, 0.5)
    assert choice.threshold == 0.1


def test_unreachable_precision_reports_the_best_threshold() -> None:
    choice = threshold_for_precision([0.9, 0.8, 0.2], [0, 1, 1], 0.9)
    assert choice.reached is False
    assert (choice.threshold, choice.precision, choice.recall) == (0.2, pytest.approx(2 / 3), 1.0)


def test_threshold_for_recall_is_the_largest_keeping_the_target() -> None:
    assert threshold_for_recall(SCORES, LABELS, 0.6).threshold == 0.35
    choice = threshold_for_recall(SCORES, LABELS, 0.5)
    assert (choice.threshold, choice.precision, choice.recall, choice.reached) == (
        0.8, 1.0, 0.5, True)


def test_precision_target_recovers_the_analytic_threshold(synthetic) -> None:
    scores, labels = synthetic
    # balanced classes: precision(t) = tail_pos / (tail_pos + tail_neg)
    precision = lambda t: tail(t, 0.7) / (tail(t, 0.7) + tail(t, 0.3))  # noqa: E731
    expected = solve(precision, 0.9)
    assert expected == pytest.approx(0.4225, abs=0.001)
    choice = threshold_for_precision(scores, labels, 0.9)
    assert choice.reached
    assert choice.threshold == pytest.approx(expected, abs=0.01)
    assert choice.precision >= 0.9
    assert choice.recall == pytest.approx(tail(expected, 0.7), abs=0.01)
    assert auroc(scores, labels) == pytest.approx(tail(0, 0.4, 0.1 * math.sqrt(2)), abs=0.005)


def test_recall_target_recovers_the_analytic_threshold(synthetic) -> None:
    scores, labels = synthetic
    choice = threshold_for_recall(scores, labels, 0.95)
    # recall(t) = P(N(0.7, 0.1) >= t) = 0.95 at t = 0.7 - 1.6449 * 0.1
    assert choice.threshold == pytest.approx(0.7 - 0.16449, abs=0.01)
    assert choice.recall >= 0.95
    assert choice.recall == pytest.approx(0.95, abs=1e-3)


def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="at least one positive"):
        precision_recall([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="one length"):
        auroc([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match="0/1"):
        auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="finite"):
        auroc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="target must be in"):
        threshold_for_precision(SCORES, LABELS, 1.2)
    assert auroc([0.1, 0.2], [1, 1]) is None


def test_calibrate_policy_with_a_precision_target(synthetic, tmp_path) -> None:
    scores, labels = synthetic
    policy = load_policy("default")
    calibrated, report = calibrate_policy(
        policy,
        {"violence": scores, "weapons": scores},
        {"violence": labels, "weapons": np.zeros_like(labels)},
        target_precision=0.9,
    )
    assert calibrated.version == "1+calibrated"
    violence, weapons = report
    assert violence.category == "violence"
    assert (violence.positives, violence.negatives) == (20_000, 20_000)
    assert violence.choice.threshold == pytest.approx(0.4225, abs=0.01)
    # precision targets set the block threshold, rounded up to 3 decimals (the target holds);
    # review (0.35) is already below it
    assert calibrated.categories["violence"].block == violence.block == 0.424
    assert 0 <= violence.block - violence.choice.threshold < 0.001
    assert calibrated.categories["violence"].review == 0.35
    assert (weapons.auroc, weapons.curve, weapons.choice) == (None, None, None)
    assert calibrated.categories["weapons"] == policy.categories["weapons"]
    assert calibrated.categories["gore"] == policy.categories["gore"]
    assert calibrated.prompt_hash() == policy.prompt_hash()
    assert load_policy(calibrated.save(tmp_path / "calibrated.toml")) == calibrated


def test_calibrate_policy_keeps_review_at_most_block() -> None:
    policy = load_policy("default")  # suggestive: review 0.45, block 0.8
    lowered, _ = calibrate_policy(policy, {"suggestive": SCORES}, {"suggestive": LABELS},
                                  target_precision=0.6, version="2")
    assert lowered.version == "2"
    suggestive = lowered.categories["suggestive"]
    # block fell below the old review (0.45): review keeps its tier below block, scaled by
    # the policy's own review/block ratio (0.45 / 0.8)
    assert suggestive.block == 0.35
    assert suggestive.review == round(0.35 * 0.45 / 0.8, 3) == 0.197
    # recall targets set the review threshold; violence block (0.65) rises to meet it
    raised, report = calibrate_policy(policy, {"violence": SCORES}, {"violence": LABELS},
                                      target_recall=0.5)
    assert (report[0].review, report[0].block) == (0.8, 0.8)
    explicit, _ = calibrate_policy(policy, {"violence": SCORES}, {"violence": LABELS},
                                   target_recall=0.5, level="block")
    assert (explicit.categories["violence"].review, explicit.categories["violence"].block) == (
        0.35, 0.8)


def test_calibrated_thresholds_have_three_decimals_and_keep_the_target() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    s = np.clip(rng.normal(0.3 + 0.3 * y, 0.12), 0, 1)
    policy = load_policy("default")
    for kw in ({"target_precision": 0.9}, {"target_recall": 0.9}):
        new, (cal,) = calibrate_policy(policy, {"violence": s}, {"violence": y}, **kw)
        c = new.categories["violence"]
        for v in (c.review, c.block):
            assert v == round(v, 3)
        t = c.block if "target_precision" in kw else c.review
        flagged = s >= t
        if "target_precision" in kw:
            assert y[flagged].mean() >= 0.9
        else:
            assert y[flagged].sum() / y.sum() >= 0.9
        assert c.review < c.block


def test_calibrate_policy_leaves_unreached_targets_alone() -> None:
    policy = load_policy("default")
    calibrated, (gore,) = calibrate_policy(policy, {"gore": [0.9, 0.8, 0.2]},
                                           {"gore": [0, 1, 1]}, target_precision=0.9)
    assert gore.choice.reached is False
    assert calibrated.categories["gore"] == policy.categories["gore"]


def test_calibrate_policy_arguments_are_checked() -> None:
    policy = load_policy("default")
    with pytest.raises(ValueError, match="exactly one of"):
        calibrate_policy(policy, {}, {}, target_precision=0.9, target_recall=0.9)
    with pytest.raises(ValueError, match="exactly one of"):
        calibrate_policy(policy, {}, {})
    with pytest.raises(ValueError, match="unknown categories for policy 'default': violense"):
        calibrate_policy(policy, {"violense": SCORES}, {"violense": LABELS}, target_recall=0.9)
    with pytest.raises(ValueError, match="level must be"):
        calibrate_policy(policy, {}, {}, target_recall=0.9, level="warn")


GROUPS = ["a", "a", "a", "b", "b", "c"]
TRUTH = [0, 0, 1, 0, 0, 1]
WITH_NEUTRAL = ["allow", "review", "block", "allow", "allow", "block"]
WITHOUT_NEUTRAL = ["block", "review", "block", "review", "allow", "block"]


def test_false_positive_rate_by_group() -> None:
    assert false_positive_rate_by_group(WITH_NEUTRAL, TRUTH, GROUPS) == {
        "a": 0.5, "b": 0.0, "c": None}
    assert false_positive_rate_by_group(WITHOUT_NEUTRAL, TRUTH, GROUPS, flagged=("block",)) == {
        "a": 0.5, "b": 0.0, "c": None}
    with pytest.raises(ValueError, match="differ in length"):
        false_positive_rate_by_group(WITH_NEUTRAL[:-1], TRUTH, GROUPS)


def test_bias_audit_compares_with_and_without_neutral_classes() -> None:
    assert bias_audit(TRUTH, GROUPS, WITH_NEUTRAL, WITHOUT_NEUTRAL) == [
        GroupFPR("a", 2, 0.5, 1.0),
        GroupFPR("b", 2, 0.0, 0.5),
        GroupFPR("c", 0, None, None),
    ]
