"""Where zero-shot CLIP is out of its depth, measured or flagged.

* :class:`LabelStabilityHead` — field ``label_stability``: for each image, the share of the
  templates whose top-1 label (each template alone) agrees with the ensemble's top-1. A low
  value means the answer depends on the wording (Radford et al. 2021, §3.1.4: prompt
  engineering and ensembling move ImageNet accuracy by several points).
* :func:`evaluate_templates` — accuracy of each template, of the full ensemble and of the
  best greedy sub-ensemble on labelled examples (``clipsieve prompts``).
* :func:`label_warnings` — labels that ask for counting ("two dogs", "3 people") or look like
  the names of people; CLIP counts poorly, and clipsieve is not a tool for identifying people.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipsieve.heads._vectors import embed_prompts, l2_normalize
from clipsieve.heads.base import BuiltHead
from clipsieve.heads.zeroshot import (
    PLACEHOLDER,
    LabelsArg,
    LabelSpec,
    build_zero_shot_classifier,
    label_prompts,
    zero_shot_probabilities,
)

__all__ = [
    "LabelStabilityHead",
    "TemplateScore",
    "TemplateEvaluation",
    "evaluate_templates",
    "label_warnings",
    "per_template_classifiers",
]


def _own_and_templated(
    labels: LabelsArg | LabelSpec, templates: Sequence[str] | None
) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...], set[str]]:
    """(ensemble prompts per label, the templates, labels that use the templates)."""
    prompts = label_prompts(labels, templates)
    spec_templates = labels.templates if isinstance(labels, LabelSpec) else None
    from clipsieve.heads.zeroshot import DEFAULT_TEMPLATE_SET, load_templates

    tmpl = tuple(templates or spec_templates or load_templates(DEFAULT_TEMPLATE_SET))
    raw = labels.labels if isinstance(labels, LabelSpec) else labels
    own = {k for k, v in raw.items() if v} if isinstance(raw, Mapping) else set()
    return prompts, tmpl, {label for label in prompts if label not in own}


def per_template_classifiers(
    text: Any, prompts: Mapping[str, Sequence[str]], templates: Sequence[str],
    templated: set[str],
) -> np.ndarray:
    """``(T, L, D)``: one classifier per template (labels with their own prompts keep their
    ensemble in every one)."""
    ensemble = build_zero_shot_classifier(text, prompts)
    labels = list(prompts)
    texts = [t.replace(PLACEHOLDER, label) for t in templates for label in labels
             if label in templated]
    emb = embed_prompts(text, list(dict.fromkeys(texts))) if texts else None
    row = {p: i for i, p in enumerate(dict.fromkeys(texts))}
    out = np.repeat(ensemble[None, :, :], len(templates), axis=0).copy()
    for ti, t in enumerate(templates):
        for li, label in enumerate(labels):
            if label in templated and emb is not None:
                out[ti, li] = emb[row[t.replace(PLACEHOLDER, label)]]
    return np.stack([l2_normalize(c) for c in out])


class LabelStabilityHead(BuiltHead):
    """Field ``label_stability``: the share of templates whose top-1 label, each template
    alone, agrees with the ensemble's top-1 (1.0 = the wording does not matter here).

    Args:
        labels, templates: as for :class:`~clipsieve.heads.zeroshot.LabelsHead`.
    """

    field = "label_stability"
    score_range = (0.0, 1.0)

    def __init__(
        self, labels: LabelsArg | LabelSpec, templates: Sequence[str] | None = None
    ) -> None:
        self.prompts, self.templates, self.templated = _own_and_templated(labels, templates)

    @property
    def meaningful(self) -> bool:
        """At least two templates and one label that uses them."""
        return len(self.templates) >= 2 and bool(self.templated)

    def _build(self, text: Any) -> None:
        self._ensemble = build_zero_shot_classifier(text, self.prompts)
        self._each = per_template_classifiers(text, self.prompts, self.templates, self.templated)
        self._scale = float(text.logit_scale)

    def compute(
        self,
        embeddings: np.ndarray,
        features: Sequence[Any] | None = None,
        captions: Sequence[Any] | None = None,
    ) -> list[float]:
        self._check_built()
        if len(embeddings) == 0:
            return []
        x = l2_normalize(np.asarray(embeddings, dtype=np.float64))
        top = np.argmax(x @ self._ensemble.T, axis=1)
        each = np.argmax(np.einsum("nd,tld->tnl", x, self._each), axis=2)  # (T, N)
        return [round(float(v), 4) for v in (each == top[None, :]).mean(axis=0)]


@dataclass
class TemplateScore:
    """Accuracy of one template (or ensemble) on the labelled examples."""

    name: str
    templates: tuple[str, ...]
    accuracy: float
    correct: int
    total: int


@dataclass
class TemplateEvaluation:
    """What :func:`evaluate_templates` found.

    Attributes:
        per_template: one score per template, in the given order.
        ensemble: all templates averaged.
        greedy: the best ensemble of the k most accurate single templates (k = 1…T).
        best: the winner (ties go to the larger ensemble, which is less sensitive to wording).
        per_label: accuracy of the best choice per true label.
    """

    per_template: list[TemplateScore]
    ensemble: TemplateScore
    greedy: TemplateScore
    best: TemplateScore
    per_label: dict[str, float] = field(default_factory=dict)


def evaluate_templates(
    text: Any,
    embeddings: np.ndarray,
    truth: Sequence[str],
    labels: LabelsArg | LabelSpec,
    templates: Sequence[str] | None = None,
) -> TemplateEvaluation:
    """Top-1 accuracy of each template, the full ensemble and the best greedy ensemble.

    Args:
        text: a text source (an Analyzer) for the prompt embeddings.
        embeddings: ``(N, D)`` image embeddings.
        truth: the true label of each image (one of the labels).
        labels, templates: as for :class:`~clipsieve.heads.zeroshot.LabelsHead`.

    Raises:
        ValueError: a true label that is not a label, or no examples.
    """
    prompts, tmpl, templated = _own_and_templated(labels, templates)
    names = list(prompts)
    unknown = sorted({t for t in truth if t not in prompts})
    if unknown:
        raise ValueError(f"labels not in the labels file: {', '.join(unknown)}")
    if len(truth) == 0:
        raise ValueError("no labelled examples")
    y = np.array([names.index(t) for t in truth])
    x = l2_normalize(np.asarray(embeddings, dtype=np.float64))
    each = per_template_classifiers(text, prompts, tmpl, templated)
    scale = float(text.logit_scale)

    def score(name: str, idx: Sequence[int]) -> TemplateScore:
        clf = l2_normalize(each[list(idx)].mean(axis=0))
        pred = np.argmax(zero_shot_probabilities(x, clf, scale), axis=1)
        ok = int((pred == y).sum())
        return TemplateScore(name, tuple(tmpl[i] for i in idx), ok / len(y), ok, len(y))

    singles = [score(t, [i]) for i, t in enumerate(tmpl)]
    full = score(f"ensemble of {len(tmpl)}", range(len(tmpl)))
    order = sorted(range(len(tmpl)), key=lambda i: (-singles[i].accuracy, i))
    greedy = max(
        (score(f"best {k}", order[:k]) for k in range(1, len(tmpl) + 1)),
        key=lambda s: (s.accuracy, len(s.templates)),
    )
    best = max([full, greedy, *singles], key=lambda s: (s.accuracy, len(s.templates)))
    clf = l2_normalize(each[[tmpl.index(t) for t in best.templates]].mean(axis=0))
    pred = np.argmax(x @ clf.T, axis=1)
    per_label = {n: float((pred[y == i] == i).mean()) for i, n in enumerate(names)
                 if (y == i).any()}
    return TemplateEvaluation(singles, full, greedy, best, per_label)


_NUMBER_WORDS = (
    "two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|dozen|a dozen|"
    "a pair of|a couple of|several|many|multiple|a few|no|zero|single|one"
)
_COUNTING = re.compile(
    rf"^\s*(?:\d+|{_NUMBER_WORDS})\s+\w+|\b(?:number of|how many|count of|counting)\b",
    re.IGNORECASE,
)
_IDENTITY_WORDS = re.compile(
    r"\b(?:person named|photo of (?:mr|mrs|ms|dr)\.?|who is|identity of|celebrity)\b",
    re.IGNORECASE,
)
_NAME = re.compile(r"^(?:[A-Z][a-z'’-]+|[A-Z]\.)(?:\s+(?:[A-Z][a-z'’-]+|[A-Z]\.|van|von|de|da|bin)){1,3}$")


def label_warnings(labels: Sequence[str]) -> list[str]:
    """Warnings about labels zero-shot CLIP handles badly or should not be used for.

    Returns one message per kind of problem (counting; identities of people), naming the
    labels; an empty list when there is nothing to say.
    """
    counting = [lb for lb in labels if _COUNTING.search(lb)]
    identity = [lb for lb in labels if _IDENTITY_WORDS.search(lb) or _NAME.match(lb.strip())]
    out = []
    if counting:
        out.append(
            f"label{'s' if len(counting) > 1 else ''} {', '.join(repr(x) for x in counting)} "
            "ask for counting, which CLIP does poorly (it barely tells two objects from three); "
            "expect near-random answers between such labels (README: Limits)"
        )
    if identity:
        out.append(
            f"label{'s' if len(identity) > 1 else ''} {', '.join(repr(x) for x in identity)} "
            "look like names or identities of people: clipsieve is not a tool for identifying "
            "people, and zero-shot CLIP must not be used for it (README: Limits)"
        )
    return out
