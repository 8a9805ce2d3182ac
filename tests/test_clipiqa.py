"""quality/clipiqa.py: prompt formatting, anchors, softmax — and agreement with torchmetrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsieve.errors import ConfigError
from clipsieve.pipeline import Analyzer
from clipsieve.quality.clipiqa import (
    BUILTIN_PAIRS,
    TORCHMETRICS_PAIRS,
    ClipIQA,
    anchor_vectors,
    clip_iqa,
    clip_iqa_compute,
    format_prompts,
    list_pairs,
)

tm_clip_iqa = pytest.importorskip("torchmetrics.functional.multimodal.clip_iqa")


def test_builtin_pairs_are_torchmetrics_pairs_then_aesthetic_ones() -> None:
    assert dict(list(BUILTIN_PAIRS.items())[:16]) == tm_clip_iqa._PROMPTS
    assert TORCHMETRICS_PAIRS == tuple(tm_clip_iqa._PROMPTS)
    extra = list_pairs()[16:]
    assert {"professional", "well_composed"} <= set(extra)
    assert BUILTIN_PAIRS["well_composed"] == ("Well-composed photo.", "Badly composed photo.")
    assert BUILTIN_PAIRS["beautiful"] == ("Beautiful photo.", "Ugly photo.")


@pytest.mark.parametrize("prompts", [
    ("quality",),
    ("quality", "brightness", "sharpness"),
    ("quality", ("Super good photo.", "Super bad photo."), "noisiness", ("A", "B")),
    tuple(tm_clip_iqa._PROMPTS),
])
def test_format_prompts_matches_torchmetrics(prompts: tuple) -> None:
    assert format_prompts(prompts) == tm_clip_iqa._clip_iqa_format_prompts(prompts)


def test_format_prompts_extras_and_errors() -> None:
    assert format_prompts("sharpness") == (["Sharp photo.", "Blurry photo."], ["sharpness"])
    assert format_prompts({"crisp": ("Crisp photo.", "Soft photo.")}) == (
        ["Crisp photo.", "Soft photo."], ["crisp"])
    assert format_prompts(["professional"])[1] == ["professional"]
    with pytest.raises(ConfigError, match='did you mean "sharpness"'):
        format_prompts(("sharpnes",))
    with pytest.raises(ConfigError, match="tuple of two"):
        format_prompts((("only one",),))
    with pytest.raises(ConfigError, match="repeated"):
        format_prompts(("quality", "quality"))
    with pytest.raises(ConfigError, match="no CLIP-IQA pairs"):
        format_prompts(())


def test_compute_is_the_pairwise_softmax_and_row_independent() -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(size=(70, 8)).astype(np.float32)
    anchors = rng.normal(size=(6, 8)).astype(np.float32)
    names = ["a", "b", "c"]
    out = clip_iqa_compute(img, anchors, names)
    x = img.astype(np.float64) / np.linalg.norm(img.astype(np.float64), axis=1, keepdims=True)
    t = anchors.astype(np.float64)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    logits = 100 * x @ t.T
    pairs = logits.reshape(70, 3, 2)
    ref = np.exp(pairs[..., 0]) / np.exp(pairs).sum(-1)
    for i, n in enumerate(names):
        np.testing.assert_allclose(out[n], ref[:, i], rtol=1e-9, atol=1e-15)
    # an image's scores do not depend on the rest of its batch, bit for bit
    for i in (0, 33, 69):
        alone = clip_iqa_compute(img[i : i + 1], anchors, names)
        assert all(alone[n][0] == out[n][i] for n in names)
    # extreme logits do not overflow
    far = clip_iqa_compute(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0], [-1.0, 0.0]]),
                           ["x"], logit_scale=1e4)
    assert far["x"][0] == 1.0
    with pytest.raises(ValueError):
        clip_iqa_compute(img, anchors[:4], names)


def test_anchors_computed_once_per_model(tiny_clip: Path, photos: dict[str, Path]) -> None:
    an = Analyzer(str(tiny_clip), store=False, precision="float32")
    calls: list[list[str]] = []
    real = an.embed_texts

    def counting(texts):  # type: ignore[no-untyped-def]
        calls.append(list(texts))
        return real(texts)

    an.embed_texts = counting  # type: ignore[method-assign]
    iqa = ClipIQA()
    emb = an.embed_images([photos["coffee"], photos["rocket"]])
    first = iqa(emb, an)
    second = iqa(emb, an)
    assert len(calls) == 1 and len(calls[0]) == 2 * len(BUILTIN_PAIRS)
    assert set(first) == set(BUILTIN_PAIRS)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert all(((v >= 0) & (v <= 1)).all() for v in first.values())
    direct = clip_iqa(an, [photos["coffee"], photos["rocket"]], ("quality", ("A", "B")))
    np.testing.assert_array_equal(direct["quality"], first["quality"])
    np.testing.assert_allclose(
        anchor_vectors(real, ["Good photo."]), real(["Good photo."]), atol=1e-6)


def _torchmetrics_factory(folder: Path):  # type: ignore[no-untyped-def]
    """A (model, processor) factory for torchmetrics; on transformers 5 the feature calls
    return model outputs, so the wrapper hands back their ``pooler_output`` tensors."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    class PooledFeatures(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        @staticmethod
        def _tensor(out):  # type: ignore[no-untyped-def]
            return out if isinstance(out, torch.Tensor) else out.pooler_output

        def get_image_features(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return self._tensor(self.model.get_image_features(*args, **kwargs))

        def get_text_features(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return self._tensor(self.model.get_text_features(*args, **kwargs))

    def factory():  # type: ignore[no-untyped-def]
        model = CLIPModel.from_pretrained(str(folder), torch_dtype=torch.float32).eval()
        return PooledFeatures(model), CLIPProcessor.from_pretrained(str(folder))

    return factory


def test_builtin_pairs_equal_torchmetrics_clip_iqa(
    clip224: Path, photos: dict[str, Path]
) -> None:
    """Same weights, same pixel_values: our anchors + softmax equal torchmetrics' within 1e-5."""
    import torch
    from torchmetrics.multimodal import CLIPImageQualityAssessment

    factory = _torchmetrics_factory(clip224)
    prompts = (*TORCHMETRICS_PAIRS, ("Crisp photo of a thing.", "Smeared photo."))
    metric = CLIPImageQualityAssessment(model_name_or_path=factory, prompts=prompts,
                                        data_range=1.0)
    arrays = [np.asarray(Image.open(p).convert("RGB").resize((160, 120))) for p in
              photos.values()]
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()  # 0..255
    metric.update(images[:2])
    metric.update(images[2:])
    theirs = metric.compute()

    # The image features: the very pixel_values torchmetrics' processor makes, through our
    # backend; the anchors, prompt formatting and softmax are ours.
    _, processor = factory()
    pixel_values = processor(images=[i for i in images], return_tensors="pt")["pixel_values"]
    an = Analyzer(str(clip224), store=False, precision="float32", device="cpu")
    emb = an.backend.encode_pixels(pixel_values.numpy())
    ours = ClipIQA(prompts)(emb, an)

    assert list(ours) == list(theirs) and "user_defined_0" in ours
    both = np.array([ours[k] for k in ours])
    ref = np.array([theirs[k].numpy() for k in ours])
    np.testing.assert_allclose(both, ref, atol=1e-5, rtol=0)
    # the comparison is not trivial: many probabilities lie well inside (0, 1)
    assert ((ref > 0.02) & (ref < 0.98)).mean() > 0.3
    # and it would catch swapped prompts or another scale
    swapped = ClipIQA([(b, a) for a, b in (BUILTIN_PAIRS[n] for n in TORCHMETRICS_PAIRS)])
    assert np.abs(np.array(list(swapped(emb, an).values())) - ref[:16]).max() > 0.1
    scaled = ClipIQA(prompts, logit_scale=an.logit_scale)
    assert np.abs(np.array(list(scaled(emb, an).values())) - ref).max() > 1e-3

    # the functional form agrees too
    functional = tm_clip_iqa.clip_image_quality_assessment(
        images, model_name_or_path=factory, data_range=1.0, prompts=("quality", "sharpness"))
    for k in ("quality", "sharpness"):
        np.testing.assert_allclose(ours[k], functional[k].numpy(), atol=1e-5, rtol=0)
