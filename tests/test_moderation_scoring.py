"""Moderation arithmetic checked exactly with a deterministic fake text encoder.

The fake gives class ``k`` its own axis ``e_k`` and every prompt ``p`` its own axis ``f_p``;
prompt ``p`` of class ``k`` embeds to ``(3 e_k + f_p) / sqrt(10)``. The prompt-ensembled class
embedding is then, by hand, ``q_k = (3 e_k + (1/n) sum_p f_p) / sqrt(9 + 1/n)`` for a class
with ``n`` prompts, and the ``q_k`` are orthonormal. An "image" ``x = sum_k c_k q_k + r z``
(``z`` a spare axis) therefore has cosine exactly ``c_k`` with class ``k``. Choosing
``c_k = 0.25 + ln(w_k) / 100`` at logit scale 100 makes the softmax probability of class ``k``
exactly ``w_k / sum(w)`` over whichever classes take part.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from clipsieve.moderation import (
    MIN_THRESHOLD,
    ClassBank,
    Policy,
    bank_cache_key,
    build_class_embeddings,
    clip_score,
    load_policy,
    moderate,
    moderate_texts,
    policy_from_dict,
)

SCALE = 100.0

VIOLENCE = [
    "a photo of a violent fight",
    "a photo of a street brawl",
    "a photo of someone being punched",
    "a photo of a riot",
    "a photo of an assault",
]
NUDITY = [
    "a nude photo",
    "an explicit photo",
    "a photo of a naked person",
    "a pornographic image",
    "a sexually explicit scene",
]


def policy_data(**special: dict) -> dict:
    """Return a two-category, three-neutral-class policy with ``special`` as special care."""
    data = {
        "name": "test",
        "version": "1",
        "categories": {
            "violence": {"review": 0.3, "block": 0.6, "prompts": list(VIOLENCE)},
            "nudity": {"group": "sexual", "review": 0.4, "block": 0.8, "prompts": list(NUDITY)},
        },
        "neutral": {
            "people": {"prompts": ["a photo of a person", "a portrait"]},
            "children": {"prompts": ["a photo of a child", "a photo of kids", "a baby"]},
            "food": {"prompts": ["a photo of food"]},
        },
    }
    if special:
        data["special_care"] = special
    return data


MINOR = {"class": "children", "trigger": 0.5, "targets": ["sexual"], "factor": 0.5}
FLAME = {"prompts": ["a fire", "flames"], "trigger": 0.5, "targets": ["violence"], "delta": 0.1}


class FakeEncoder:
    """Maps each known prompt to a constructed vector (see the module docstring)."""

    model_id = "fake/clip-test"
    logit_scale = SCALE

    def __init__(self, policy: Policy) -> None:
        self.classes: list[tuple[str, tuple[str, ...]]] = (
            [(c.name, c.prompts) for c in policy.categories.values()]
            + [(n.name, n.prompts) for n in policy.neutral.values()]
            + [(s.name, s.prompts) for s in policy.special_care.values() if s.prompts]
        )
        n_classes = len(self.classes)
        n_prompts = sum(len(prompts) for _, prompts in self.classes)
        self.dim = n_classes + n_prompts + 1  # + one spare axis for the residual
        self.class_axis: dict[str, int] = {}
        self.prompt_axis: dict[str, int] = {}
        next_axis = n_classes
        for k, (name, prompts) in enumerate(self.classes):
            self.class_axis[name] = k
            for prompt in prompts:
                self.prompt_axis[prompt] = next_axis
                next_axis += 1
        self.prompt_class = {p: name for name, prompts in self.classes for p in prompts}
        self.calls = 0

    def axis(self, i: int) -> np.ndarray:
        v = np.zeros(self.dim)
        v[i] = 1.0
        return v

    def prompt_vector(self, prompt: str) -> np.ndarray:
        k = self.class_axis[self.prompt_class[prompt]]
        return (3 * self.axis(k) + self.axis(self.prompt_axis[prompt])) / math.sqrt(10)

    def class_vector(self, name: str) -> np.ndarray:
        prompts = dict(self.classes)[name]
        n = len(prompts)
        v = 3 * self.axis(self.class_axis[name])
        for p in prompts:
            v += self.axis(self.prompt_axis[p]) / n
        return v / math.sqrt(9 + 1 / n)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return np.stack([self.prompt_vector(t) for t in texts]).astype(np.float32)

    def image(self, weights: dict[str, float], *tilts: tuple[str, int, int, int]) -> np.ndarray:
        """Return an embedding whose cosine with class ``k`` is ``0.25 + ln(w_k)/100``.

        Classes not in ``weights`` get cosine 0. Each tilt ``(class, a, b, c)`` adds
        ``0.2 f_a + 0.1 f_b - 0.3 f_c`` over that class's prompts ``a, b, c``: orthogonal to
        every class vector, it makes prompt ``a`` the nearest and ``b`` the second nearest.
        """
        x = np.zeros(self.dim)
        for name, w in weights.items():
            x += (0.25 + math.log(w) / SCALE) * self.class_vector(name)
        for name, a, b, c in tilts:
            prompts = dict(self.classes)[name]
            for index, coef in ((a, 0.2), (b, 0.1), (c, -0.3)):
                x += coef * self.axis(self.prompt_axis[prompts[index]])
        x += math.sqrt(1 - x @ x) * self.axis(self.dim - 1)
        return x


def setup(**special: dict) -> tuple[Policy, FakeEncoder, ClassBank]:
    policy = policy_from_dict(policy_data(**special), source="test.toml")
    encoder = FakeEncoder(policy)
    return policy, encoder, build_class_embeddings(encoder, policy)


def probs(weights: dict[str, float], names: list[str]) -> dict[str, float]:
    """Hand-computed softmax: w_k / sum(w) over ``names`` (classes not in weights: cos 0)."""
    logits = np.array([SCALE * (0.25 + math.log(weights[n]) / SCALE) if n in weights else 0.0
                       for n in names])
    e = np.exp(logits - logits.max())
    return dict(zip(names, (e / e.sum()).tolist(), strict=True))


ALL = ["violence", "nudity", "people", "children", "food"]


def test_class_bank_is_the_normalised_prompt_mean() -> None:
    policy, encoder, bank = setup(minor=MINOR, flame=FLAME)
    assert encoder.calls == 1
    assert bank.names == ("violence", "nudity", "people", "children", "food", "flame")
    assert bank.kinds == ("category",) * 2 + ("neutral",) * 3 + ("special_care",)
    expected = np.stack([encoder.class_vector(n) for n in bank.names])
    np.testing.assert_allclose(bank.embeddings, expected, atol=1e-6)
    np.testing.assert_allclose(bank.embeddings @ bank.embeddings.T, np.eye(6), atol=1e-6)
    assert bank.prompts[:5] == tuple(VIOLENCE)
    assert bank.prompt_owner.tolist() == [0] * 5 + [1] * 5 + [2] * 2 + [3] * 3 + [4] + [5] * 2
    np.testing.assert_allclose(bank.prompt_embeddings[7], encoder.prompt_vector(NUDITY[2]),
                               atol=1e-6)
    assert bank.embeddings.dtype == np.float32
    assert (bank.model_id, bank.policy_name, bank.policy_version) == ("fake/clip-test", "test", "1")


def test_cache_key_depends_on_model_name_version_and_prompts() -> None:
    policy, encoder, bank = setup(minor=MINOR)
    assert bank.cache_key == bank_cache_key("fake/clip-test", policy)
    assert bank.cache_key.startswith("fake/clip-test|test|1|")
    recalibrated = policy.with_thresholds({"violence": {"block": 0.7}})
    assert bank_cache_key("fake/clip-test", recalibrated) == bank.cache_key
    keys = {
        bank.cache_key,
        bank_cache_key("other/model", policy),
        bank_cache_key("fake/clip-test", policy.with_thresholds({}, version="2")),
        bank_cache_key("fake/clip-test", policy.with_thresholds({}, name="renamed")),
    }
    data = policy_data(minor=MINOR)
    data["neutral"]["food"]["prompts"] = ["a photo of a meal"]
    keys.add(bank_cache_key("fake/clip-test", policy_from_dict(data)))
    assert len(keys) == 5


def test_bank_arrays_round_trip_through_npz() -> None:
    policy, encoder, bank = setup(flame=FLAME)
    buffer = io.BytesIO()
    np.savez(buffer, **bank.to_arrays())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as arrays:
        restored = ClassBank.from_arrays(dict(arrays))
    assert restored.cache_key == bank.cache_key
    assert (restored.names, restored.kinds, restored.prompts) == (bank.names, bank.kinds,
                                                                   bank.prompts)
    np.testing.assert_array_equal(restored.embeddings, bank.embeddings)
    np.testing.assert_array_equal(restored.prompt_embeddings, bank.prompt_embeddings)
    np.testing.assert_array_equal(restored.prompt_owner, bank.prompt_owner)
    x = encoder.image({"violence": 7, "nudity": 1, "people": 1, "children": 0.5, "food": 0.5})
    assert moderate(x[None], restored, policy, SCALE) == moderate(x[None], bank, policy, SCALE)


def test_bank_arrays_are_checked() -> None:
    _, _, bank = setup()
    arrays = bank.to_arrays()
    with pytest.raises(ValueError, match="^class bank arrays: missing kinds$"):
        ClassBank.from_arrays({k: v for k, v in arrays.items() if k != "kinds"})
    with pytest.raises(ValueError, match="prompt_owner does not index the classes"):
        ClassBank.from_arrays({**arrays, "prompt_owner": arrays["prompt_owner"] + 1})
    with pytest.raises(ValueError, match="names, kinds and embeddings rows disagree"):
        ClassBank.from_arrays({**arrays, "embeddings": arrays["embeddings"][:-1]})


def test_block_with_exact_probabilities_and_nearest_prompt_reason() -> None:
    policy, encoder, bank = setup()
    weights = {"violence": 7, "nudity": 1, "people": 1, "children": 0.5, "food": 0.5}
    x = encoder.image(weights, ("violence", 2, 4, 0))
    (result,) = moderate(x[None], bank, policy, SCALE)
    # by hand: weights / 10
    assert result.categories == pytest.approx({"violence": 0.7, "nudity": 0.1}, abs=1e-6)
    assert result.neutral == pytest.approx({"people": 0.1, "children": 0.05, "food": 0.05},
                                           abs=1e-6)
    assert result.categories == pytest.approx({k: v for k, v in probs(weights, ALL).items()
                                               if k in ("violence", "nudity")}, abs=1e-6)
    assert result.decision == "block"
    assert result.category_decisions == {"violence": "block", "nudity": "allow"}
    assert result.reasons == [
        'violence 0.70 >= block 0.60 (nearest prompts: "a photo of someone being punched", '
        '"a photo of an assault")'
    ]
    assert result.thresholds == {"violence": {"review": 0.3, "block": 0.6},
                                 "nudity": {"review": 0.4, "block": 0.8}}
    assert result.policy == {"name": "test", "version": "1"}
    assert result.model == "fake/clip-test"
    assert (result.special_care, result.special_care_scores) == ([], {})


def test_review_and_allow_bands_and_reason_order() -> None:
    policy, encoder, bank = setup()
    review = encoder.image(
        {"violence": 4, "nudity": 5, "people": 1}, ("nudity", 0, 1, 2), ("violence", 3, 1, 2)
    )
    allow = encoder.image({"violence": 2, "nudity": 1, "people": 7})
    results = moderate(np.stack([review, allow]), bank, policy, SCALE, nearest=1)
    # children and food have cosine 0: exp(0) against exp(25) * w, i.e. about 1e-11
    assert results[0].categories == pytest.approx({"violence": 0.4, "nudity": 0.5}, abs=1e-6)
    assert results[0].decision == "review"
    assert results[0].reasons == [
        'nudity 0.50 >= review 0.40 (nearest prompts: "a nude photo")',
        'violence 0.40 >= review 0.30 (nearest prompts: "a photo of a riot")',
    ]
    assert results[1].categories == pytest.approx({"violence": 0.2, "nudity": 0.1}, abs=1e-6)
    assert results[1].decision == "allow"
    assert results[1].reasons == [
        "no category reached its review threshold (highest: violence 0.20 < review 0.30)"
    ]


def test_most_severe_reason_comes_first() -> None:
    policy, encoder, bank = setup()
    x = encoder.image({"violence": 3.5, "nudity": 6, "people": 0.5})[None]
    (result,) = moderate(x, bank, policy, SCALE, nearest=0)
    assert result.categories == pytest.approx({"violence": 0.35, "nudity": 0.6}, abs=1e-6)
    # both are reviews: the higher score comes first
    assert result.reasons == ["nudity 0.60 >= review 0.40", "violence 0.35 >= review 0.30"]
    strict = policy.with_thresholds({"violence": {"review": 0.2, "block": 0.3}})
    (result,) = moderate(x, bank, strict, SCALE, nearest=0)
    # a block comes before a review with a higher score
    assert result.reasons == ["violence 0.35 >= block 0.30", "nudity 0.60 >= review 0.40"]
    assert result.decision == "block"


def test_threshold_is_inclusive() -> None:
    policy, encoder, bank = setup()
    x = encoder.image({"violence": 7, "nudity": 1, "people": 2})[None]
    score = moderate(x, bank, policy, SCALE)[0].categories["violence"]
    at = policy.with_thresholds({"violence": {"review": 0.1, "block": score}})
    above = policy.with_thresholds({"violence": {"review": 0.1,
                                                 "block": float(np.nextafter(score, 1))}})
    assert moderate(x, bank, at, SCALE)[0].decision == "block"
    assert moderate(x, bank, above, SCALE)[0].decision == "review"


def test_special_care_tightens_the_targeted_categories() -> None:
    plain, encoder, bank = setup()
    careful = policy_from_dict(policy_data(minor=MINOR), source="test.toml")
    assert careful.prompt_hash() == plain.prompt_hash()  # same bank serves both
    # nudity 0.3, children 0.4 of everything but 4 / 6.5 of the neutral classes
    weights = {"nudity": 3, "violence": 0.5, "people": 0.5, "children": 4, "food": 2}
    x = encoder.image(weights, ("nudity", 3, 1, 0))[None]

    (without,) = moderate(x, bank, plain, SCALE)
    assert without.categories["nudity"] == pytest.approx(0.3, abs=1e-6)
    assert without.decision == "allow"

    (with_care,) = moderate(x, bank, careful, SCALE)
    assert with_care.categories == without.categories
    assert with_care.special_care == ["minor"]
    assert with_care.special_care_scores == pytest.approx({"minor": 4 / 6.5}, abs=1e-6)
    assert with_care.thresholds == {"violence": {"review": 0.3, "block": 0.6},
                                    "nudity": {"review": 0.2, "block": 0.4}}
    assert with_care.decision == "review"
    assert with_care.reasons == [
        'special care "minor": children 0.62 >= trigger 0.50; thresholds of nudity x 0.5',
        'nudity 0.30 >= review 0.20 (tightened from 0.40 by special care "minor"; '
        'nearest prompts: "a pornographic image", "an explicit photo")',
    ]

    stronger = encoder.image({**weights, "nudity": 4.5, "food": 0.5})[None]
    (blocked,) = moderate(stronger, bank, careful, SCALE)
    assert blocked.categories["nudity"] == pytest.approx(4.5 / 10, abs=1e-6)
    assert blocked.decision == "block"  # 0.45 >= 0.8 * 0.5
    assert moderate(stronger, bank, plain, SCALE)[0].decision == "review"


def test_special_care_below_trigger_changes_nothing() -> None:
    policy, encoder, bank = setup(minor=MINOR)
    weights = {"nudity": 3, "violence": 2, "people": 2.5, "children": 2, "food": 0.5}
    (result,) = moderate(encoder.image(weights)[None], bank, policy, SCALE)
    assert result.special_care_scores == pytest.approx({"minor": 2 / 5}, abs=1e-6)
    assert result.special_care == []
    assert result.thresholds["nudity"] == {"review": 0.4, "block": 0.8}
    assert result.decision == "allow"


def test_special_care_with_own_prompts_and_delta_stays_out_of_the_main_softmax() -> None:
    policy, encoder, bank = setup(flame=FLAME)
    weights = {"violence": 1, "people": 2, "flame": 4, "food": 1}
    x = encoder.image(weights, ("violence", 0, 1, 2))[None]
    (result,) = moderate(x, bank, policy, SCALE, nearest=1)
    # flame is not a column of the main softmax: violence gets 1 / (1 + 2 + 1), not 1 / 8
    assert result.categories == pytest.approx({"violence": 0.25, "nudity": 0.0}, abs=1e-6)
    assert result.categories == pytest.approx(
        {k: v for k, v in probs(weights, ALL).items() if k in ("violence", "nudity")}, abs=1e-6)
    assert sum(result.categories.values()) + sum(result.neutral.values()) == pytest.approx(1)
    # presence: flame against the neutral classes only
    assert result.special_care_scores == pytest.approx({"flame": 4 / 7}, abs=1e-6)
    assert result.thresholds["violence"] == pytest.approx({"review": 0.2, "block": 0.5})
    assert result.decision == "review"
    assert result.reasons == [
        'special care "flame": flame 0.57 >= trigger 0.50; thresholds of violence - 0.1',
        'violence 0.25 >= review 0.20 (tightened from 0.30 by special care "flame"; '
        'nearest prompts: "a photo of a violent fight")',
    ]
    plain = policy_from_dict(policy_data(flame={**FLAME, "trigger": 0.6}))
    assert moderate(x, bank, plain, SCALE)[0].decision == "allow"


def test_tightened_thresholds_never_fall_below_the_floor() -> None:
    policy, encoder, bank = setup(flame={**FLAME, "delta": 0.5})
    x = encoder.image({"violence": 0.02, "people": 1, "flame": 3})[None]
    (result,) = moderate(x, bank, policy, SCALE)
    assert result.thresholds["violence"] == pytest.approx({"review": MIN_THRESHOLD, "block": 0.1})
    assert result.decision == "review"


def test_without_neutral_classes_the_softmax_covers_categories_only() -> None:
    policy, encoder, bank = setup(minor=MINOR)
    weights = {"violence": 1.5, "nudity": 1.5, "people": 1, "children": 5, "food": 1}
    x = encoder.image(weights)[None]
    (with_neutral,) = moderate(x, bank, policy, SCALE)
    (without,) = moderate(x, bank, policy, SCALE, use_neutral=False)
    assert with_neutral.categories == pytest.approx({"violence": 0.15, "nudity": 0.15}, abs=1e-6)
    assert without.categories == pytest.approx({"violence": 0.5, "nudity": 0.5}, abs=1e-6)
    assert without.neutral == {}
    # special care is judged against the neutral classes either way
    assert without.special_care_scores == with_neutral.special_care_scores
    assert with_neutral.special_care == without.special_care == ["minor"]
    assert with_neutral.decision == "allow"
    assert without.category_decisions == {"violence": "review", "nudity": "block"}


def test_moderate_texts_scores_captions_against_the_same_classes() -> None:
    policy, encoder, bank = setup()
    captions = encoder.embed_texts([VIOLENCE[3], "a photo of food"])
    scale = 5.0  # a small scale keeps the probabilities away from 0 and 1
    texts = moderate_texts(captions, bank, policy, scale, nearest=1)
    assert texts == moderate(captions, bank, policy, scale, nearest=1)
    # a violence prompt has cosine 9.2 / sqrt(10 * 9.2) with its 5-prompt class, 0 elsewhere
    violence = math.exp(scale * math.sqrt(0.92))
    assert texts[0].categories["violence"] == pytest.approx(violence / (violence + 4), abs=1e-6)
    assert texts[0].decision == "block"
    assert texts[0].reasons == [
        f'violence {violence / (violence + 4):.2f} >= block 0.60 '
        '(nearest prompts: "a photo of a riot")'
    ]
    # the food class has a single prompt: cosine 1
    food = math.exp(scale)
    assert texts[1].neutral["food"] == pytest.approx(food / (food + 4), abs=1e-6)
    assert texts[1].decision == "allow"


def test_result_to_dict_is_plain_json() -> None:
    policy, encoder, bank = setup(minor=MINOR)
    x = encoder.image({"violence": 7, "nudity": 1, "children": 2})[None].astype(np.float32)
    data = moderate(x, bank, policy, SCALE)[0].to_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {
        "decision", "categories", "neutral", "reasons", "policy", "model", "thresholds",
        "category_decisions", "special_care", "special_care_scores",
    }
    assert all(type(v) is float for v in data["categories"].values())


def test_inputs_are_checked() -> None:
    policy, encoder, bank = setup()
    x = encoder.image({"violence": 1})[None]
    other = policy_data()
    other["categories"]["violence"]["prompts"][0] = "something else"
    with pytest.raises(ValueError, match="rebuild the bank"):
        moderate(x, bank, policy_from_dict(other), SCALE)
    with pytest.raises(ValueError, match=r"expected embeddings of shape \(N, \d+\)"):
        moderate(x[:, :-1], bank, policy, SCALE)
    with pytest.raises(ValueError, match="expected embeddings"):
        moderate(x[0], bank, policy, SCALE)
    with pytest.raises(ValueError, match="logit_scale must be a positive number"):
        moderate(x, bank, policy, 0.0)
    with pytest.raises(ValueError, match="zero vector"):
        moderate(np.zeros_like(x), bank, policy, SCALE)


def test_default_policy_halves_sexual_thresholds_when_a_child_is_likely() -> None:
    policy = load_policy("default")
    encoder = FakeEncoder(policy)
    bank = build_class_embeddings(encoder, policy)
    assert len(bank.names) == len(policy.categories) + len(policy.neutral)
    x = encoder.image({"suggestive": 3, "children": 5, "people": 2})[None]
    (result,) = moderate(x, bank, policy, SCALE)
    assert result.special_care == ["minor"]
    suggestive = policy.categories["suggestive"]
    assert result.thresholds["suggestive"] == pytest.approx(
        {"review": suggestive.review / 2, "block": suggestive.block / 2})
    assert result.categories["suggestive"] == pytest.approx(0.3, abs=1e-3)
    assert result.decision == "review"
    assert result.thresholds["violence"] == {"review": policy.categories["violence"].review,
                                             "block": policy.categories["violence"].block}


def test_clip_score() -> None:
    image = np.array([1.0, 0.0, 0.0])
    assert clip_score(image, np.array([0.3, math.sqrt(1 - 0.09), 0.0])) == pytest.approx(30.0)
    assert clip_score(image, np.array([-0.5, 0.5, 0.0])) == 0.0
    assert clip_score(2 * image, np.array([3.0, 0.0, 4.0])) == pytest.approx(60.0)
    batch = clip_score(np.stack([image, image]), np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    np.testing.assert_allclose(batch, [100.0, 0.0])
    with pytest.raises(ValueError, match="one shape"):
        clip_score(image, np.ones(4))


def probs_at(weights: dict[str, float], names: list[str], scale: float) -> dict[str, float]:
    """Hand-computed softmax at logit scale ``scale`` of the constructed cosines
    ``0.25 + ln(w)/100`` (0 for classes not in ``weights``)."""
    logits = np.array([scale * (0.25 + math.log(weights[n]) / SCALE) if n in weights else 0.0
                       for n in names])
    e = np.exp(logits - logits.max())
    return dict(zip(names, (e / e.sum()).tolist(), strict=True))


@pytest.mark.parametrize("scale", [14.2857, 50.0, 200.0])
def test_probabilities_use_the_given_logit_scale(scale: float) -> None:
    """Issue #9: other scales than CLIP's 100 (SigLIP-like, random checkpoints) must change the
    probabilities exactly as softmax(scale × cosine) says."""
    policy, encoder, bank = setup()
    weights = {"violence": 7, "nudity": 1, "people": 1, "children": 0.5, "food": 0.5}
    (result,) = moderate(encoder.image(weights)[None], bank, policy, scale)
    want = probs_at(weights, ALL, scale)
    assert result.categories == pytest.approx(
        {k: want[k] for k in ("violence", "nudity")}, abs=1e-6)
    assert result.neutral == pytest.approx(
        {k: want[k] for k in ("people", "children", "food")}, abs=1e-6)
    (cap,) = moderate_texts(encoder.image(weights)[None], bank, policy, scale)
    assert cap.categories == pytest.approx(result.categories, abs=1e-6)


@pytest.mark.parametrize("factor", [0.25, 0.8])
def test_special_care_multiplies_thresholds_by_its_own_factor(factor: float) -> None:
    """Issue #9: with factor 0.5, ``t * factor`` and ``t * (1 - factor)`` agree; not here."""
    policy, encoder, bank = setup(minor={**MINOR, "factor": factor})
    weights = {"nudity": 3, "violence": 0.5, "people": 0.5, "children": 4, "food": 2}
    (result,) = moderate(encoder.image(weights)[None], bank, policy, SCALE)
    assert result.special_care == ["minor"]
    assert result.thresholds["nudity"] == pytest.approx(
        {"review": 0.4 * factor, "block": 0.8 * factor})
    assert result.thresholds["violence"] == {"review": 0.3, "block": 0.6}
    # nudity scores 0.3: under 0.25 the thresholds are 0.1 / 0.2 (block), under 0.8 0.32 / 0.64
    assert result.decision == ("block" if factor == 0.25 else "allow")
    assert f"thresholds of nudity x {factor:g}" in result.reasons[0]
