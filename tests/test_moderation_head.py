"""moderation/head.py: decisions, memoised class banks, caption merge and CLIPScore review.

Logic tests use a fake analyzer whose prompts embed to constructed vectors (the construction of
``tests/test_moderation_scoring.py``): the prompt-ensembled class embeddings ``q_k`` are
orthonormal, and an embedding ``sum_k (0.25 + ln(w_k)/100) q_k + r z`` has, at logit scale 100,
the softmax probability ``w_k / sum(w)`` for class ``k`` (classes left out get ~e^-25). Each
embedding puts its residual ``r z`` on a spare axis of its own, so two different embeddings have
a cosine of exactly ``sum_k c_k c'_k``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from clipsieve.cli.common import Progress
from clipsieve.errors import EXIT_BLOCKED, EXIT_OK, PolicyError
from clipsieve.moderation import (
    LOW_AGREEMENT_CLIP_SCORE,
    Caption,
    CaptionSource,
    ItemModeration,
    ModerationHead,
    ModerationResult,
    clip_score,
    load_policy,
    moderate,
    moderate_texts,
    policy_from_dict,
)
from clipsieve.types import ItemResult

SCALE = 100.0

POLICY = {
    "name": "test",
    "version": "7",
    "categories": {
        "violence": {"review": 0.3, "block": 0.6,
                     "prompts": [f"violence prompt {i}" for i in range(5)]},
        "nudity": {"review": 0.4, "block": 0.8,
                   "prompts": [f"nudity prompt {i}" for i in range(5)]},
    },
    "neutral": {
        "people": {"prompts": ["a person", "a portrait"]},
        "food": {"prompts": ["food"]},
    },
}


class FakeAnalyzer:
    """``embed_texts`` / ``logit_scale`` / ``model_id`` over constructed vectors."""

    logit_scale = SCALE

    def __init__(self, policy, model_id: str = "fake/clip", spare: int = 16) -> None:
        self.model_id = model_id
        self.classes = [(c.name, c.prompts) for c in policy.categories.values()]
        self.classes += [(n.name, n.prompts) for n in policy.neutral.values()]
        n_prompts = sum(len(p) for _, p in self.classes)
        self.dim = len(self.classes) + n_prompts + spare
        self.prompt_vec: dict[str, np.ndarray] = {}
        self.class_vec: dict[str, np.ndarray] = {}
        axis = len(self.classes)
        for k, (name, prompts) in enumerate(self.classes):
            q = 3 * self._e(k)
            for p in prompts:
                self.prompt_vec[p] = (3 * self._e(k) + self._e(axis)) / math.sqrt(10)
                q += self._e(axis) / len(prompts)
                axis += 1
            self.class_vec[name] = q / math.sqrt(9 + 1 / len(prompts))
        self.next_spare = axis
        self.captions: dict[str, np.ndarray] = {}
        self.prompt_calls = 0
        self.caption_calls = 0

    def _e(self, i: int) -> np.ndarray:
        v = np.zeros(self.dim)
        v[i] = 1.0
        return v

    def vector(self, weights: dict[str, float]) -> np.ndarray:
        """An embedding with softmax probabilities ``w_k / sum(w)`` (own residual axis)."""
        x = sum((0.25 + math.log(w) / SCALE) * self.class_vec[n] for n, w in weights.items())
        x = x + math.sqrt(1 - x @ x) * self._e(self.next_spare)
        self.next_spare += 1
        return x

    def caption(self, text: str, weights: dict[str, float] | None = None,
                vector: np.ndarray | None = None) -> str:
        self.captions[text] = vector if vector is not None else self.vector(weights or {})
        return text

    def embed_texts(self, texts):
        texts = list(texts)
        if all(t in self.prompt_vec for t in texts):
            self.prompt_calls += 1
        else:
            self.caption_calls += 1
        return np.stack([self.prompt_vec.get(t, self.captions.get(t)) for t in texts]
                        ).astype(np.float32)


@pytest.fixture()
def policy():
    return policy_from_dict(POLICY, source="test.toml")


@pytest.fixture()
def fake(policy) -> FakeAnalyzer:
    return FakeAnalyzer(policy)


def items_for(n: int) -> list[ItemResult]:
    return [ItemResult(path=f"img{i}.jpg") for i in range(n)]


def run(head: ModerationHead, fake: FakeAnalyzer, embs: list[np.ndarray]) -> list[ItemResult]:
    items = items_for(len(embs))
    head.apply(items, np.stack(embs).astype(np.float32), fake)
    return items


def test_decisions_reasons_policy_and_model(policy, fake: FakeAnalyzer) -> None:
    head = ModerationHead(policy)
    assert head.field == "moderation"
    allow, review, block = run(head, fake, [
        fake.vector({"people": 1.0}),
        fake.vector({"violence": 4.0, "people": 6.0}),
        fake.vector({"violence": 7.0, "food": 3.0}),
    ])
    assert [i.moderation.decision for i in (allow, review, block)] == ["allow", "review", "block"]
    mod = block.moderation
    assert isinstance(mod, ItemModeration) and isinstance(mod, ModerationResult)
    assert mod.categories["violence"] == pytest.approx(0.7, abs=1e-6)
    assert mod.reasons[0].startswith('violence 0.70 >= block 0.60 (nearest prompts: "violence')
    assert mod.policy == {"name": "test", "version": "7"} and mod.model == "fake/clip"
    assert mod.image_decision == "block" and mod.caption is None
    assert review.moderation.reasons[0].startswith("violence 0.40 >= review 0.30")
    assert allow.moderation.reasons[0].startswith("no category reached its review threshold")


def test_head_equals_moderate_on_the_same_embeddings(policy, fake: FakeAnalyzer) -> None:
    embs = np.stack([fake.vector({"violence": 5.0, "nudity": 2.0, "people": 3.0}),
                     fake.vector({"nudity": 9.0, "food": 1.0})])
    head = ModerationHead(policy)
    items = items_for(2)
    head.apply(items, embs, fake)
    expected = moderate(embs, head.bank(fake), policy, SCALE)
    for item, exp in zip(items, expected):
        got = item.moderation
        assert (got.decision, got.categories, got.reasons, got.thresholds) == (
            exp.decision, exp.categories, exp.reasons, exp.thresholds)


def test_class_bank_is_built_once_per_model(policy, fake: FakeAnalyzer) -> None:
    head = ModerationHead(policy)
    for _ in range(3):
        run(head, fake, [fake.vector({"people": 1.0})])
    assert fake.prompt_calls == 1
    other = FakeAnalyzer(policy, model_id="fake/other")
    bank = head.bank(other)
    assert other.prompt_calls == 1 and bank.model_id == "fake/other"
    assert head.bank(fake) is not bank and fake.prompt_calls == 1


def test_policy_by_name_and_bad_policy() -> None:
    head = ModerationHead()
    assert head.policy == load_policy("default")
    with pytest.raises(PolicyError, match="did you mean"):
        ModerationHead("defualt")


def test_low_clip_score_sends_to_review(policy, fake: FakeAnalyzer) -> None:
    img = fake.vector({"people": 1.0})
    text = fake.caption("win a free phone, click now", {"food": 1.0})
    head = ModerationHead(policy, CaptionSource({"img0.jpg": text}, sidecars=False))
    (item,) = run(head, fake, [img])
    mod = item.moderation
    assert mod.image_decision == "allow" and mod.decision == "review"
    cap = mod.caption
    assert cap.text == text and cap.source == "input" and cap.low_agreement
    assert cap.clip_score == pytest.approx(0.0, abs=1e-4)  # disjoint classes: cosine 0
    assert cap.decision == "review"
    why = "caption does not match the image: CLIPScore 0.0 < 18 (possible spam or clickbait)"
    assert mod.reasons[0] == why and cap.reasons[-1] == why
    assert mod.reasons[1].startswith("no category reached")  # the image's own reason follows


def test_matching_caption_keeps_the_image_decision(policy, fake: FakeAnalyzer) -> None:
    img = fake.vector({"violence": 4.0, "people": 6.0})
    text = fake.caption("two people arguing", vector=img)  # the same vector: CLIPScore 100
    head = ModerationHead(policy, CaptionSource(default=text, sidecars=False))
    (item,) = run(head, fake, [img])
    mod = item.moderation
    assert mod.caption.clip_score == pytest.approx(100.0, abs=1e-3)
    assert not mod.caption.low_agreement and mod.caption.source == "option"
    assert mod.decision == mod.image_decision == mod.caption.decision == "review"
    # Equally severe sources: the image's reasons first, then the caption's.
    assert mod.reasons[0].startswith("violence 0.40 >= review 0.30")
    assert mod.reasons[1].startswith("caption: violence 0.40 >= review 0.30")
    assert len(mod.reasons) == 2 and mod.caption.reasons == [mod.reasons[0]]


def test_harmful_caption_on_a_benign_image_blocks(policy, fake: FakeAnalyzer) -> None:
    img = fake.vector({"people": 1.0})
    text = fake.caption("explicit caption", {"nudity": 9.0, "people": 1.0})
    head = ModerationHead(policy, CaptionSource({"img0.jpg": text}, sidecars=False))
    (item,) = run(head, fake, [img])
    mod = item.moderation
    expected = moderate_texts(fake.embed_texts([text]), head.bank(fake), policy, SCALE)[0]
    assert mod.caption.categories == expected.categories
    assert mod.caption.category_decisions == expected.category_decisions
    assert mod.caption.decision == "block" and mod.image_decision == "allow"
    assert mod.decision == "block"
    # Most severe source first: caption (block), agreement (review), image (allow).
    assert mod.reasons[0].startswith("caption: nudity 0.90 >= block 0.80")
    assert mod.reasons[1].startswith("caption does not match the image")
    assert mod.reasons[2].startswith("no category reached")
    # Image scores stay the image's: the top-level categories are not the caption's.
    assert mod.categories["nudity"] < 1e-6


def test_blocked_image_with_a_benign_caption_stays_blocked(policy, fake: FakeAnalyzer) -> None:
    img = fake.vector({"violence": 9.0, "people": 1.0})
    text = fake.caption("a quiet street", {"people": 1.0})
    head = ModerationHead(policy, CaptionSource(default=text, sidecars=False),
                          min_clip_score=0.0)
    (item,) = run(head, fake, [img])
    mod = item.moderation
    assert mod.decision == "block" and mod.caption.decision == "allow"
    assert not mod.caption.low_agreement
    assert mod.reasons[0].startswith("violence 0.90 >= block 0.60")


def test_clip_score_is_reported_and_threshold_configurable(policy, fake: FakeAnalyzer) -> None:
    img = fake.vector({"people": 1.0})
    # Caption sharing the "people" class: cosine = c_people^2 = 0.25^2 = 0.0625 -> 6.25.
    text = fake.caption("someone", {"people": 1.0})
    embs = [img]
    strict = ModerationHead(policy, CaptionSource(default=text, sidecars=False))
    lenient = ModerationHead(policy, CaptionSource(default=text, sidecars=False),
                             min_clip_score=6.0)
    (a,) = run(strict, fake, embs)
    (b,) = run(lenient, fake, embs)
    expected = clip_score(img, fake.captions[text])
    assert a.moderation.caption.clip_score == pytest.approx(expected, abs=1e-4)
    assert expected == pytest.approx(6.25, abs=1e-4) and expected < LOW_AGREEMENT_CLIP_SCORE
    assert a.moderation.decision == "review" and b.moderation.decision == "allow"


def test_items_without_a_caption_in_a_captioned_batch(policy, fake: FakeAnalyzer,
                                                      tmp_path: Path) -> None:
    text = fake.caption("hello", {"people": 1.0})
    src = CaptionSource({"img1.jpg": text}, sidecars=False)
    head = ModerationHead(policy, src)
    a, b, c = run(head, fake, [fake.vector({"people": 1.0}) for _ in range(3)])
    assert a.moderation.caption is None and c.moderation.caption is None
    assert b.moderation.caption.text == "hello"
    assert fake.caption_calls == 1  # all captions of a batch in one call
    with pytest.raises(ValueError, match="captions"):
        head.moderate_embeddings(np.zeros((2, fake.dim)) + 0.1, fake, [None])
    assert head.moderate_embeddings(np.zeros((0, fake.dim)), fake) == []
    caps: list[Caption | None] = [None]
    res = head.moderate_embeddings(fake.vector({"people": 1.0})[None], fake, caps)
    assert res[0].caption is None


def test_result_dict_contract_and_exit_code(policy, fake: FakeAnalyzer) -> None:
    text = fake.caption("caption", {"food": 1.0})
    head = ModerationHead(policy, CaptionSource(default=text, sidecars=False))
    items = run(head, fake, [fake.vector({"violence": 9.0, "people": 1.0}),
                             fake.vector({"people": 1.0})])
    data = json.loads(json.dumps(items[0].to_dict()))
    mod = data["moderation"]
    assert list(mod)[:6] == ["decision", "categories", "reasons", "policy", "model", "thresholds"]
    assert mod["decision"] == "block" and set(mod["categories"]) == {"violence", "nudity"}
    assert mod["policy"] == {"name": "test", "version": "7"}
    assert {"image_decision", "category_decisions", "neutral", "special_care",
            "caption"} <= set(mod)
    assert set(mod["caption"]) >= {"text", "decision", "categories", "reasons", "clip_score",
                                   "source", "low_agreement"}
    progress = Progress(2, "t", enabled=False)
    for item in items:
        progress.advance(item)
    assert progress.exit_code() == EXIT_BLOCKED
    benign = Progress(1, "t", enabled=False)
    benign.advance(items[1])
    assert items[1].moderation.decision == "review" and benign.exit_code() == EXIT_OK


def test_end_to_end_with_the_tiny_clip(tiny_clip: Path, photos: dict[str, Path],
                                       tmp_path: Path) -> None:
    """Through Analyzer.scan: the decision is what moderate() makes of the stored embedding,
    prompt embeddings land in the store, and a second analyzer reads them from there."""
    from clipsieve import Analyzer

    store = tmp_path / "s.sqlite"
    (tmp_path / "imgs").mkdir()
    files = []
    for src in photos.values():
        dst = tmp_path / "imgs" / src.name
        dst.write_bytes(src.read_bytes())
        files.append(str(dst))
    Path(files[0]).with_suffix(".txt").write_text("an astronaut in a white suit", "utf-8")
    policy = load_policy("default")
    head = ModerationHead(policy, CaptionSource())
    an = Analyzer(model=str(tiny_clip), store=store)
    items = list(an.scan(files, heads=[head]))
    assert all(it.ok and isinstance(it.moderation, ItemModeration) for it in items)
    bank = head.bank(an)
    for item in items:
        stored = an.store.get_embedding(item.sha256, an.model_id, an.preprocess.version)
        (expected,) = moderate(stored[None], bank, policy, an.logit_scale)
        assert item.moderation.image_decision == expected.decision
        assert item.moderation.categories == pytest.approx(expected.categories)
        assert item.moderation.model == an.model_id
    cap = items[0].moderation.caption
    assert cap.source == "sidecar" and cap.text == "an astronaut in a white suit"
    assert cap.clip_score == pytest.approx(
        clip_score(items[0].embedding, an.embed_texts([cap.text])[0]), abs=1e-4)
    assert all(it.moderation.caption is None for it in items[1:])
    n_prompts = sum(len(p) for _, _, p in policy.prompt_classes())
    assert an.store.counts()["text_embeddings"] == n_prompts + 1  # prompts + the caption
    an.close()

    again = Analyzer(model=str(tiny_clip), store=store).load()

    def refuse(texts):
        raise AssertionError(f"re-encoded {len(texts)} texts")

    again.backend.encode_texts = refuse
    second = ModerationHead(policy)
    redo = list(again.scan(files, heads=[second]))
    assert all(it.cached for it in redo), [(it.cached, it.status, it.error) for it in redo]
    assert [r.moderation.image_decision for r in redo] == [
        i.moderation.image_decision for i in items]
    again.close()


@pytest.mark.parametrize("scale", [25.0, 60.0])
def test_head_uses_the_analyzers_logit_scale(policy, scale: float) -> None:
    """Issue #9: a head that used 100 instead of the model's own scale would pass with
    SCALE = 100; at other scales the probabilities follow softmax(scale × cosine)."""
    fake = FakeAnalyzer(policy)
    fake.logit_scale = scale  # type: ignore[misc]
    weights = {"violence": 6, "nudity": 1, "people": 2, "food": 0.5}
    (item,) = run(ModerationHead(policy), fake, [fake.vector(weights)])
    names = ["violence", "nudity", "people", "food"]
    logits = np.array([scale * (0.25 + math.log(weights[n]) / SCALE) for n in names])
    want = np.exp(logits - logits.max())
    want /= want.sum()
    assert item.moderation.categories == pytest.approx(
        {"violence": want[0], "nudity": want[1]}, abs=1e-6)
