"""CLIP-IQA: zero-shot quality from antonym prompt pairs (Wang, Chan and Loy, AAAI 2023).

For each pair of prompts (``"Good photo."`` / ``"Bad photo."``) the score of an image is the
probability of the positive prompt in a softmax over ``logit_scale × cosine(image, prompt)``
of the two prompts. The computation is a small functional core of named steps, as in
torchmetrics' ``clip_image_quality_assessment``:

1. :func:`format_prompts` — pair names and custom ``(positive, negative)`` tuples, in one
   argument, become a flat prompt list (positive, negative, positive, …) and pair names;
2. :func:`anchor_vectors` — the prompts' L2-normalised text embeddings ("anchors"), computed
   through a text encoder such as ``Analyzer.embed_texts`` (which caches them in the store);
3. :func:`clip_iqa_compute` — per image, the two-way softmax of each pair; the result is
   ``{pair name: probability of the positive prompt}``.

:class:`ClipIQA` is the thin stateful wrapper: it holds the prompts and computes the anchors
once per model. :func:`clip_iqa` is the one-call convenience over an analyzer.

The built-in pairs live in the ``[clip_iqa.pairs]`` table of ``clipsieve/data/quality.toml``:
torchmetrics' 16 pairs under its names and wording (so that the two agree, which a test checks
within 1e-5 on the same weights) followed by aesthetic pairs. Scores are computed in float64
row by row, so an image's scores do not depend on the other images of its batch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from clipsieve.errors import ConfigError, did_you_mean
from clipsieve.quality.config import QualityConfig, default_quality_config

if TYPE_CHECKING:
    from clipsieve.pipeline import Analyzer

__all__ = [
    "BUILTIN_PAIRS",
    "CLIP_IQA_LOGIT_SCALE",
    "TORCHMETRICS_PAIRS",
    "ClipIQA",
    "PromptSpec",
    "anchor_vectors",
    "clip_iqa",
    "clip_iqa_compute",
    "format_prompts",
    "list_pairs",
]

#: One pair: a built-in pair name, or a ``(positive, negative)`` tuple of prompts.
PromptSpec = str | tuple[str, str]

def config_table(name: str) -> dict[str, Any]:
    """A top-level table of the shipped quality.toml (see :class:`QualityConfig`).

    Raises:
        ConfigError: the table is missing.
    """
    return default_quality_config().table(name)


def __getattr__(name: str) -> Any:
    """The shipped configuration's values under their module names, read on first use:
    ``BUILTIN_PAIRS`` (every built-in pair: name → (positive, negative), in quality.toml
    order), ``TORCHMETRICS_PAIRS`` (the names of torchmetrics' 16 pairs, the first 16) and
    ``CLIP_IQA_LOGIT_SCALE`` (the softmax scale, 100 as in the paper)."""
    if name not in ('BUILTIN_PAIRS', 'TORCHMETRICS_PAIRS', 'CLIP_IQA_LOGIT_SCALE'):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cfg = default_quality_config()
    if name == "BUILTIN_PAIRS":
        return cfg.pairs
    if name == "TORCHMETRICS_PAIRS":
        return tuple(cfg.pairs)[:16]
    if name == "CLIP_IQA_LOGIT_SCALE":
        return cfg.clip_logit_scale
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def list_pairs(config: QualityConfig | None = None) -> list[str]:
    """Names of the built-in pairs, in quality.toml order."""
    return list((config or default_quality_config()).pairs)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug or "pair"


def format_prompts(
    prompts: PromptSpec | Sequence[PromptSpec] | Mapping[str, tuple[str, str]] = ("quality",),
    config: QualityConfig | None = None,
    *,
    derive_names: bool = False,
) -> tuple[list[str], list[str]]:
    """Turn pair names and custom pairs into a flat prompt list and pair names.

    Like torchmetrics' ``_clip_iqa_format_prompts``: each element is a built-in pair name or a
    ``(positive, negative)`` tuple; custom tuples are named ``user_defined_0``,
    ``user_defined_1``… in order. A single name is accepted on its own. Custom pairs can be
    named: a mapping ``{name: (positive, negative)}``, or an element
    ``(name, (positive, negative))``.

    Args:
        prompts: the pairs.
        config: where the built-in pairs come from (default: the shipped configuration).
        derive_names: name unnamed custom pairs after their positive prompt
            (``"Crisp photo."`` → ``crisp_photo``) instead of ``user_defined_N``.

    Returns:
        ``(prompts_list, names)``: ``prompts_list`` holds each pair's positive then negative
        prompt, so it is twice as long as ``names``.

    Raises:
        ConfigError: an unknown name (with a "did you mean"), a tuple that is not two non-empty
            strings, a repeated name, or no pairs.

    Example:
        >>> format_prompts(("quality", ("Crisp.", "Soft.")))
        (['Good photo.', 'Bad photo.', 'Crisp.', 'Soft.'], ['quality', 'user_defined_0'])
        >>> format_prompts([("crisp", ("Crisp.", "Soft."))])
        (['Crisp.', 'Soft.'], ['crisp'])
    """
    if isinstance(prompts, Mapping):
        items: list[tuple[str | None, Any]] = [(str(k), v) for k, v in prompts.items()]
    else:
        seq = (prompts,) if isinstance(prompts, str) else tuple(prompts)
        items = [(None, p) for p in seq]
    builtin = (config or default_quality_config()).pairs
    names: list[str] = []
    prompts_list: list[str] = []
    count = 0
    for name, p in items:
        if (
            name is None and isinstance(p, (tuple, list)) and len(p) == 2
            and isinstance(p[0], str) and isinstance(p[1], (tuple, list))
        ):
            name, p = p[0], p[1]  # a named custom pair
        if name is None and isinstance(p, str):
            if p not in builtin:
                raise ConfigError(
                    f"unknown CLIP-IQA pair {json.dumps(p)}{did_you_mean(p, builtin)} "
                    f"(built-in: {', '.join(builtin)}; or give a (positive, negative) tuple)"
                )
            names.append(p)
            prompts_list.extend(builtin[p])
            continue
        if not (isinstance(p, (tuple, list)) and len(p) == 2
                and all(isinstance(s, str) and s.strip() for s in p)):
            raise ConfigError(
                "a custom CLIP-IQA pair must be a (positive, negative) tuple of two non-empty "
                f"prompts, got {p!r}"
            )
        if name is None:
            if derive_names:
                name = _slug(p[0])
            else:
                name = f"user_defined_{count}"
                count += 1
        names.append(name)
        prompts_list.extend((p[0], p[1]))
    if not names:
        raise ConfigError("no CLIP-IQA pairs given")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"CLIP-IQA pair names repeated: {', '.join(dup)}")
    return prompts_list, names


def anchor_vectors(
    encode_texts: Callable[[Sequence[str]], np.ndarray], prompts_list: Sequence[str]
) -> np.ndarray:
    """The prompts' L2-normalised text embeddings, ``(2K, D)`` float32.

    Args:
        encode_texts: texts → embeddings, e.g. ``Analyzer.embed_texts`` (cached in the store).
        prompts_list: from :func:`format_prompts`.
    """
    anchors = np.asarray(encode_texts(list(prompts_list)), dtype=np.float32)
    norms = np.linalg.norm(anchors.astype(np.float64), axis=1, keepdims=True)
    return (anchors / np.maximum(norms, 1e-12)).astype(np.float32)


#: Rows per block in :func:`clip_iqa_compute` (bounds memory; results do not depend on it).
_BLOCK = 64


def clip_iqa_compute(
    image_features: np.ndarray,
    anchors: np.ndarray,
    names: Sequence[str],
    *,
    logit_scale: float | None = None,
) -> dict[str, np.ndarray]:
    """Per image, the probability of each pair's positive prompt.

    ``p = exp(s·c⁺) / (exp(s·c⁺) + exp(s·c⁻))`` with ``c`` the cosine between the image and a
    prompt and ``s`` the logit scale. Computed in float64; each cosine is a sum over the
    embedding dimension for that image alone, so the result for an image is the same bit for
    bit whatever else is in the batch.

    Args:
        image_features: ``(N, D)`` image embeddings (normalised here).
        anchors: ``(2K, D)`` from :func:`anchor_vectors`, positive and negative alternating.
        names: the ``K`` pair names.
        logit_scale: the softmax scale.

    Returns:
        ``{name: (N,) float64 probabilities}`` in ``names`` order.

    Raises:
        ValueError: shapes that do not match.
    """
    if logit_scale is None:
        logit_scale = default_quality_config().clip_logit_scale
    x = np.asarray(image_features, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    a = np.asarray(anchors, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != 2 * len(names) or x.ndim != 2 or x.shape[1] != a.shape[1]:
        raise ValueError(
            f"CLIP-IQA: {len(names)} pairs need anchors of shape (2K, D) matching image features; "
            f"got anchors {a.shape} and features {x.shape}"
        )
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    probs = np.empty((x.shape[0], len(names)), dtype=np.float64)
    for start in range(0, x.shape[0], _BLOCK):
        rows = x[start : start + _BLOCK]
        rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
        cos = (rows[:, None, :] * a[None, :, :]).sum(axis=-1)  # (n, 2K), row-independent
        logits = float(logit_scale) * cos
        diff = logits[:, 1::2] - logits[:, 0::2]  # negative minus positive
        # p = 1 / (1 + exp(diff)), evaluated without overflow on either side
        e = np.exp(-np.abs(diff))
        probs[start : start + _BLOCK] = np.where(diff > 0, e / (1.0 + e), 1.0 / (1.0 + e))
    return {name: probs[:, i] for i, name in enumerate(names)}


class ClipIQA:
    """CLIP-IQA for a set of pairs, with the anchors computed once per model.

    Args:
        prompts: built-in pair names and/or ``(positive, negative)`` tuples (see
            :func:`format_prompts`); default: every built-in pair.
        logit_scale: the softmax scale (default: the configuration's, 100).
        config: the quality configuration (default: the shipped one).

    Example:
        >>> iqa = ClipIQA(("quality", "sharpness", ("Crisp photo.", "Smeared photo.")))
        >>> scores = iqa(analyzer.embed_images(["a.jpg"]), analyzer)
        >>> scores["quality"][0], scores["user_defined_0"][0]
    """

    def __init__(
        self,
        prompts: PromptSpec | Sequence[PromptSpec] | Mapping[str, tuple[str, str]] | None = None,
        *,
        logit_scale: float | None = None,
        config: QualityConfig | None = None,
    ) -> None:
        cfg = config or default_quality_config()
        self.prompts_list, self.names = format_prompts(
            tuple(cfg.pairs) if prompts is None else prompts, cfg
        )
        self.logit_scale = float(cfg.clip_logit_scale if logit_scale is None else logit_scale)
        self._anchors: dict[str, np.ndarray] = {}

    def anchors(self, analyzer: Analyzer) -> np.ndarray:
        """The anchors for ``analyzer``'s model (text encoder run at most once per model)."""
        key = analyzer.model_id
        if key not in self._anchors:
            self._anchors[key] = anchor_vectors(analyzer.embed_texts, self.prompts_list)
        return self._anchors[key]

    def __call__(self, embeddings: np.ndarray, analyzer: Analyzer) -> dict[str, np.ndarray]:
        """``{pair name: (N,) probability of the positive prompt}`` for image embeddings."""
        return clip_iqa_compute(
            embeddings, self.anchors(analyzer), self.names, logit_scale=self.logit_scale
        )


def clip_iqa(
    analyzer: Analyzer,
    images: Iterable[Any] | np.ndarray,
    prompts: PromptSpec | Sequence[PromptSpec] | Mapping[str, tuple[str, str]] = ("quality",),
) -> dict[str, np.ndarray]:
    """CLIP-IQA of images (paths or PIL images) or of their ``(N, D)`` embeddings.

    Args:
        analyzer: supplies the model (text and, for images, image embeddings).
        images: paths / PIL images, or an embedding array.
        prompts: see :func:`format_prompts`.

    Returns:
        ``{pair name: (N,) probability of the positive prompt}``.

    Example:
        >>> clip_iqa(Analyzer(), ["a.jpg", "b.jpg"], ("quality", "sharpness"))["quality"]
    """
    if isinstance(images, np.ndarray):
        embeddings = images
    else:
        embeddings = analyzer.embed_images(images)
    return ClipIQA(prompts)(embeddings, analyzer)
