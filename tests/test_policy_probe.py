"""Probe categories in moderation policies: validation on load, and scoring outside the softmax.

Model-free: a fake text encoder (as in tests/test_moderation_scoring.py, prompt ``p`` of class
``k`` embeds to ``(3 e_k + f_p) / sqrt(10)``) and a probe trained on constructed embeddings.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from clipsieve.errors import HeadError, PolicyError
from clipsieve.heads.probe import load_probe, train_probe
from clipsieve.moderation import (
    build_class_embeddings,
    load_policy,
    moderate,
    moderate_texts,
    policy_from_dict,
)

VIOLENCE = ["a violent fight", "a street brawl", "someone punched", "a riot", "an assault"]
MODEL = "fake/clip-test"


class FakeEncoder:
    model_id = MODEL
    logit_scale = 100.0

    def __init__(self, prompts: list[str], dim: int) -> None:
        self.index = {p: i for i, p in enumerate(prompts)}
        self.dim = dim

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, t in enumerate(texts):
            out[row, self.index[t]] = 1.0
        return out


@pytest.fixture()
def probe_file(tmp_path: Path) -> Path:
    """A binary probe ("safe" vs "nsfw") on 32-d embeddings: nsfw iff axis 30 dominates."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 32)) * 0.1
    y = ["nsfw" if i % 2 else "safe" for i in range(40)]
    x[1::2, 30] += 1.0
    x[0::2, 31] += 1.0
    npz, _ = train_probe(x, y, model_id=MODEL, C=10.0).save(tmp_path / "probes" / "nsfw.npz")
    return npz


def data(probe: str | None, *, prompts: bool = False, **extra: object) -> dict:
    mine: dict = {"review": 0.5, "block": 0.8}
    if probe is not None:
        mine.update(probe=probe, probe_class="nsfw")
    if prompts:
        mine["prompts"] = ["an explicit photo"]
    mine.update(extra)
    return {
        "name": "p", "version": "1",
        "categories": {
            "violence": {"review": 0.3, "block": 0.6, "prompts": list(VIOLENCE)},
            "mine": mine,
        },
        "neutral": {"food": {"prompts": ["a plate of food"]},
                    "people": {"prompts": ["a portrait"]}},
    }


def test_probe_category_loads_with_path_relative_to_the_policy(
    probe_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy_path = tmp_path / "policy.toml"
    policy_path.write_text(policy_from_dict(data(str(probe_file))).to_toml())
    text = policy_path.read_text().replace(str(probe_file), "probes/nsfw.npz")
    assert 'probe = "probes/nsfw.npz"' in text
    policy_path.write_text(text)
    monkeypatch.chdir(probe_file.parent)  # resolution must not depend on the cwd
    policy = load_policy(policy_path)
    mine = policy.categories["mine"]
    assert mine.probe == str(probe_file.resolve()) and mine.probe_class == "nsfw"
    assert mine.prompts == ()
    assert [name for name, _, _ in policy.prompt_classes()] == ["violence", "food", "people"]
    # written back with the absolute path, it loads to an equal policy from anywhere
    again = tmp_path / "again.toml"
    policy.save(again)
    assert load_policy(again) == policy
    assert policy.with_thresholds({"mine": {"block": 0.9}}).categories["mine"].block == 0.9


@pytest.mark.parametrize(("change", "error"), [
    ({"probe": "missing.npz"}, 'categories.mine.probe: no such probe file ".*missing.npz"'),
    ({"probe_class": "nsfww"},
     ('categories.mine.probe_class: the probe has no class "nsfww"; did you mean "nsfw"\\? '
      '\\(classes: "nsfw", "safe"\\)')),
    ({"probe_class": None}, "categories.mine: needs both probe and probe_class"),
    ({"probe": 3}, "categories.mine.probe: must be a non-empty string, got 3"),
    ({"prompts": []}, "categories.mine.prompts: must be a non-empty list"),
])
def test_probe_category_errors_are_path_qualified(
    probe_file: Path, tmp_path: Path, change: dict, error: str
) -> None:
    d = data(str(probe_file))
    for key, value in change.items():
        if value is None:
            del d["categories"]["mine"][key]
        else:
            d["categories"]["mine"][key] = value
    with pytest.raises(PolicyError, match=f"^pol.toml: {error}"):
        policy_from_dict(d, source="pol.toml", base_dir=tmp_path)


def test_probe_category_file_that_is_not_a_probe(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(PolicyError, match="categories.mine.probe: .*not a probe weights file"):
        policy_from_dict(data("junk.npz"), source="pol.toml", base_dir=tmp_path)


def test_category_without_prompts_or_probe_still_needs_prompts() -> None:
    with pytest.raises(PolicyError, match="categories.mine.prompts: required key is missing"):
        policy_from_dict(data(None))


def _setup(probe_file: Path, prompts: bool = False):  # type: ignore[no-untyped-def]
    policy = policy_from_dict(data(str(probe_file), prompts=prompts))
    plain = policy_from_dict({**data(None), "categories": {
        "violence": data(None)["categories"]["violence"]}})
    all_prompts = VIOLENCE + ["a plate of food", "a portrait", "an explicit photo"]
    enc = FakeEncoder(all_prompts, 32)
    return policy, plain, enc


def test_probe_score_is_separate_from_the_softmax(probe_file: Path) -> None:
    policy, plain, enc = _setup(probe_file)
    bank = build_class_embeddings(enc, policy)
    assert "mine" not in bank.names
    rng = np.random.default_rng(1)
    x = np.abs(rng.standard_normal((6, 32)))
    x[:3, 30] += 3.0  # nsfw-looking
    x[3:, 31] += 3.0
    results = moderate(x, bank, policy, 100.0)
    reference = moderate(x, build_class_embeddings(enc, plain), plain, 100.0)
    probe = load_probe(probe_file, MODEL)
    expected = probe.predict_proba(x)[:, probe.classes.index("nsfw")]
    for r, ref, p in zip(results, reference, expected, strict=True):
        # zero-shot scores are exactly those of the policy without the probe category
        assert r.categories["violence"] == pytest.approx(ref.categories["violence"], abs=1e-12)
        assert r.neutral == pytest.approx(ref.neutral, abs=1e-12)
        assert r.categories["violence"] + sum(r.neutral.values()) == pytest.approx(1.0)
        assert r.categories["mine"] == pytest.approx(p, abs=1e-9)
        assert list(r.categories) == ["violence", "mine"]
    top = results[0]
    assert top.categories["mine"] >= 0.8 and top.category_decisions["mine"] == "block"
    assert top.decision == "block"
    assert any('mine' in s and 'probe "nsfw.npz" class "nsfw"' in s for s in top.reasons)
    assert results[5].category_decisions["mine"] == "allow"


def test_probe_category_with_prompts_quotes_them_and_special_care_tightens_it(
    probe_file: Path,
) -> None:
    d = data(str(probe_file), prompts=True)
    d["neutral"]["children"] = {"prompts": ["a child"]}
    d["special_care"] = {"minor": {"class": "children", "trigger": 0.3, "targets": ["mine"],
                                   "factor": 0.1}}
    policy = policy_from_dict(d)
    enc = FakeEncoder(VIOLENCE + ["a plate of food", "a portrait", "an explicit photo",
                                  "a child"], 32)
    bank = build_class_embeddings(enc, policy)
    assert "mine" in bank.names  # its prompt is in the bank, for reasons only
    x = np.zeros((1, 32))
    x[0, 30] = 0.6  # weakly nsfw
    x[0, 31] = 0.5
    x[0, enc.index["a child"]] = 1.0  # a child is present
    (r,) = moderate(x, bank, policy, 100.0)
    assert r.special_care == ["minor"] and r.thresholds["mine"]["block"] == pytest.approx(0.08)
    assert r.category_decisions["mine"] == "block"
    assert any('nearest prompts: "an explicit photo"' in s for s in r.reasons)
    assert r.categories["violence"] + sum(r.neutral.values()) == pytest.approx(1.0)


def test_probe_categories_do_not_score_captions_and_refuse_other_models(
    probe_file: Path,
) -> None:
    policy, _, enc = _setup(probe_file)
    bank = build_class_embeddings(enc, policy)
    text = enc.embed_texts(["a riot"])
    (r,) = moderate_texts(text, bank, policy, 100.0)
    assert r.categories["mine"] == 0.0
    enc.model_id = "another/model"
    with pytest.raises(HeadError, match="trained on model 'fake/clip-test'.*'another/model'"):
        moderate(np.ones((1, 32)), build_class_embeddings(enc, policy), policy, 100.0)


def test_only_probe_categories_without_neutral_softmax(probe_file: Path) -> None:
    d = data(str(probe_file))
    del d["categories"]["violence"]
    policy = policy_from_dict(d)
    enc = FakeEncoder(["a plate of food", "a portrait"], 32)
    (r,) = moderate(np.ones((1, 32)), build_class_embeddings(enc, policy), policy, 100.0,
                    use_neutral=False)
    assert set(r.categories) == {"mine"} and r.neutral == {}
    assert math.isfinite(r.categories["mine"])
    assert os.path.isabs(policy.categories["mine"].probe or "")


def test_check_probes_fails_fast_for_another_model(probe_file: Path) -> None:
    policy = policy_from_dict(data(str(probe_file)))
    policy.check_probes(MODEL)
    with pytest.raises(HeadError, match="refusing to use it with model 'other/model'"):
        policy.check_probes("other/model")
