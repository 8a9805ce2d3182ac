"""Zero-shot classification over your own labels: prompt templates, labels files, LabelsHead.

The steps, each a plain function so the arithmetic can be checked without a model:

1. :func:`label_prompts` — every label gets its own prompt list if it has one, else every
   template with ``{}`` replaced by the label.
2. :func:`build_zero_shot_classifier` — all prompts are embedded once (through any object with
   ``embed_texts``, e.g. an :class:`~clipsieve.pipeline.Analyzer`, which caches them in the
   store); each prompt embedding is L2-normalised, the prompts of a label are averaged and the
   mean is L2-normalised again (open_clip's ``build_zero_shot_classifier``).
3. :func:`zero_shot_probabilities` — ``softmax(logit_scale * cosine)`` over the labels, the
   same arithmetic as CLIP's ``logits_per_image`` and transformers' zero-shot pipeline. With the
   single template ``"a photo of a {}."`` the probabilities equal that pipeline's (a test checks
   agreement within 1e-5).

:class:`LabelsHead` wraps them for :meth:`Analyzer.scan <clipsieve.pipeline.Analyzer.scan>`: it
fills ``ItemResult.labels`` with ``{label: probability}`` in label order.

Labels files (:func:`load_labels`) come in two formats, chosen by the file name:

* ``*.toml``::

      templates = ["a photo of a {}.", "a close-up photo of a {}."]   # optional
      [labels]
      cat = ["a photo of a cat", "a cat sleeping"]    # prompts of its own
      dog = []                                        # none: the templates are used
      "sports car" = []

* any other name, plain text, one label per line; ``#`` starts a comment line, blank lines are
  skipped, and ``label: prompt | prompt`` gives a label prompts of its own::

      cat: a photo of a cat | a cat sleeping
      dog
      sports car

  (a label that itself contains ``:`` needs the TOML format).

Template sets ship in ``clipsieve/data/templates.toml`` (:func:`list_template_sets`,
:func:`load_templates`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipsieve._compat import tomllib
from clipsieve.errors import ClipsieveError, ConfigError, HeadError, did_you_mean
from clipsieve.heads._files import read_bytes
from clipsieve.heads._vectors import embed_prompts, l2_normalize
from clipsieve.heads.base import BuiltHead
from clipsieve.protocols import TextSource as _TextSource
from clipsieve.types import SCORE_RANGES

if TYPE_CHECKING:
    pass

__all__ = [
    "DEFAULT_TEMPLATE_SET",
    "TEMPLATES_PATH",
    "LabelSpec",
    "LabelsHead",
    "build_zero_shot_classifier",
    "check_templates",
    "label_prompts",
    "list_template_sets",
    "load_labels",
    "load_templates",
    "parse_labels",
    "zero_shot_probabilities",
]

#: The data file of built-in template sets.
TEMPLATES_PATH = Path(__file__).resolve().parent.parent / "data" / "templates.toml"

#: The template set used when none is chosen.
DEFAULT_TEMPLATE_SET = "default"

#: The placeholder a template must hold exactly once.
PLACEHOLDER = "{}"

LabelsArg = Sequence[str] | Mapping[str, Sequence[str] | None]


#: What the classifier needs from a model (:class:`clipsieve.protocols.TextSource`).
TextSource = _TextSource


# -- templates ------------------------------------------------------------------------------
def _template_sets() -> dict[str, dict[str, Any]]:
    data = tomllib.loads(TEMPLATES_PATH.read_text(encoding="utf-8"))
    return dict(data["sets"])


def list_template_sets() -> list[str]:
    """Return the names of the built-in template sets, sorted."""
    return sorted(_template_sets())


def load_templates(name: str = DEFAULT_TEMPLATE_SET) -> tuple[str, ...]:
    """Return the templates of a built-in set.

    Args:
        name: ``"default"`` (a small ensemble), ``"single"`` (``"a photo of a {}."``) or
            ``"imagenet7"`` (the CLIP paper's seven ImageNet templates); see
            :func:`list_template_sets`.

    Raises:
        ConfigError: unknown name (with a "did you mean").
    """
    sets = _template_sets()
    if name not in sets:
        raise ConfigError(
            f"unknown template set {json.dumps(name)}{did_you_mean(name, sets)} "
            f"(built-in sets: {', '.join(sorted(sets))})"
        )
    return check_templates(sets[name]["templates"], source=f"templates.toml: sets.{name}")


def check_templates(templates: Sequence[str], *, source: str = "templates") -> tuple[str, ...]:
    """Validate templates: a non-empty list of distinct strings, each with exactly one ``{}``.

    Args:
        templates: the templates.
        source: prefix of error messages (an option name or file).

    Raises:
        ConfigError: the first problem found.
    """
    if isinstance(templates, str) or not templates:
        raise ConfigError(f"{source}: needs at least one template, e.g. \"a photo of a {{}}.\"")
    out: list[str] = []
    for i, t in enumerate(templates):
        if not isinstance(t, str) or not t.strip():
            raise ConfigError(f"{source}[{i}]: must be a non-empty string, got {t!r}")
        if t.count(PLACEHOLDER) != 1:
            raise ConfigError(
                f"{source}[{i}]: {json.dumps(t)} must contain {{}} exactly once "
                f"(where the label goes), e.g. \"a photo of a {{}}.\""
            )
        if t in out:
            raise ConfigError(f"{source}[{i}]: duplicate template {json.dumps(t)}")
        out.append(t)
    return tuple(out)


# -- labels ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LabelSpec:
    """Labels with their optional prompt lists, as read from ``--labels`` or a labels file.

    Attributes:
        labels: label → its own prompts, or ``()`` to use the templates; in file order.
        templates: templates named by the file (TOML ``templates = [...]``), else ``None``.
        source: where it came from, for messages.
    """

    labels: dict[str, tuple[str, ...]]
    templates: tuple[str, ...] | None = None
    source: str = "--labels"


#: The ``{labels}`` marker of messages about a comma-separated label list (the CLI: --labels).
_LABELS = {"labels": "labels"}


def parse_labels(text: str) -> LabelSpec:
    """Parse a comma-separated label list such as ``"cat,dog,sports car"``.

    Raises:
        ConfigError: an empty label, a duplicate, or fewer than two labels.
    """
    labels: dict[str, tuple[str, ...]] = {}
    for i, raw in enumerate(text.split(",")):
        label = raw.strip()
        if not label:
            raise ConfigError(f"{{labels}}: label {i + 1} is empty in {json.dumps(text)}",
                              params=_LABELS)
        if label in labels:
            raise ConfigError(f"{{labels}}: duplicate label {json.dumps(label)}",
                              params=_LABELS)
        labels[label] = ()
    _check_count(len(labels), "{labels}", ConfigError)
    return LabelSpec(labels)


def load_labels(path: str | os.PathLike[str]) -> LabelSpec:
    """Read a labels file (TOML when the name ends in ``.toml``, else plain text).

    See the module docstring for both formats.

    Raises:
        HeadError: missing or unreadable file, invalid TOML or UTF-8, an empty or duplicate
            label, an empty prompt, a bad template, or fewer than two labels; the message
            names the file and the line or key.
    """
    source = os.fspath(path)
    raw = read_bytes(source, "labels file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise HeadError(f"{source}: not UTF-8 text: {exc.reason}") from None
    if source.lower().endswith(".toml"):
        return _labels_from_toml(text, source)
    return _labels_from_text(text, source)


def _labels_from_text(text: str, source: str) -> LabelSpec:
    labels: dict[str, tuple[str, ...]] = {}
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{lineno}"
        label, sep, rest = line.partition(":")
        label = label.strip()
        if not label:
            raise HeadError(f"{where}: empty label before ':'")
        prompts: tuple[str, ...] = ()
        if sep:
            parts = [p.strip() for p in rest.split("|")]
            if not any(parts):
                raise HeadError(
                    f"{where}: no prompts after {json.dumps(label + ':')}; write "
                    f"\"{label}: prompt | prompt\" or just \"{label}\" to use the templates"
                )
            for k, p in enumerate(parts, start=1):
                if not p:
                    raise HeadError(f"{where}: prompt {k} of {json.dumps(label)} is empty")
            if len(set(parts)) != len(parts):
                raise HeadError(f"{where}: {json.dumps(label)} lists a prompt twice")
            prompts = tuple(parts)
        if label in labels:
            raise HeadError(
                f"{where}: duplicate label {json.dumps(label)} (first on line {first_line[label]})"
            )
        labels[label] = prompts
        first_line[label] = lineno
    _check_count(len(labels), source, HeadError)
    return LabelSpec(labels, None, source)


def _labels_from_toml(text: str, source: str) -> LabelSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HeadError(f"{source}: invalid TOML: {exc}") from None
    for key in data:
        if key not in ("labels", "templates"):
            raise HeadError(
                f"{source}: {key}: unknown key{did_you_mean(key, ('labels', 'templates'))} "
                "(expected: labels, templates)"
            )
    table = data.get("labels")
    if not isinstance(table, dict):
        got = "missing" if table is None else f"a {type(table).__name__}"
        raise HeadError(
            f"{source}: labels: must be a table such as [labels] cat = [\"a photo of a cat\"], "
            f"got {got}"
        )
    labels: dict[str, tuple[str, ...]] = {}
    for label, value in table.items():
        where = f"{source}: labels.{json.dumps(label)}"
        if not label.strip():
            raise HeadError(f"{where}: empty label")
        if not isinstance(value, list):
            raise HeadError(
                f"{where}: must be a list of prompts ([] to use the templates), "
                f"got {_describe(value)}"
            )
        for i, p in enumerate(value):
            if not isinstance(p, str) or not p.strip():
                raise HeadError(f"{where}[{i}]: must be a non-empty string, got {_describe(p)}")
        if len(set(value)) != len(value):
            raise HeadError(f"{where}: lists a prompt twice")
        if label.strip() in labels:
            raise HeadError(f"{where}: duplicate label {json.dumps(label.strip())}")
        labels[label.strip()] = tuple(value)
    templates = None
    if "templates" in data:
        value = data["templates"]
        if not isinstance(value, list):
            raise HeadError(f"{source}: templates: must be a list, got {_describe(value)}")
        try:
            templates = check_templates(value, source=f"{source}: templates")
        except ConfigError as exc:
            raise HeadError(str(exc)) from None
    _check_count(len(labels), source, HeadError)
    return LabelSpec(labels, templates, source)


def _check_count(n: int, source: str, error: type[Exception]) -> None:
    if n < 2:
        msg = (f"{source}: needs at least 2 labels, got {n} (zero-shot probabilities are a "
               "softmax over the labels; a single label would always get 1.0)")
        if issubclass(error, ClipsieveError):
            raise error(msg, params=_LABELS)
        raise error(msg)


def label_prompts(
    labels: LabelsArg | LabelSpec, templates: Sequence[str] | None = None
) -> dict[str, tuple[str, ...]]:
    """Return every label's prompts: its own if it has some, else the formatted templates.

    Args:
        labels: label names, or label → own prompts (empty or ``None`` to use the templates),
            or a :class:`LabelSpec`.
        templates: templates with one ``{}`` each (default: the built-in ``default`` set, or
            the labels file's own templates for a :class:`LabelSpec` that names some).

    Raises:
        ConfigError: fewer than two labels, an empty or duplicate label, a bad template or
            prompt.
    """
    if isinstance(labels, LabelSpec):
        if templates is None:
            templates = labels.templates
        labels = labels.labels
    if templates is None:
        templates = load_templates(DEFAULT_TEMPLATE_SET)
    templates = check_templates(templates)
    if isinstance(labels, str):
        raise ConfigError("labels: give a list of labels, not one string (see parse_labels)")
    items = list(labels.items()) if isinstance(labels, Mapping) else [(lb, None) for lb in labels]
    out: dict[str, tuple[str, ...]] = {}
    for label, own in items:
        if not isinstance(label, str) or not label.strip():
            raise ConfigError(f"labels: every label must be a non-empty string, got {label!r}")
        if label in out:
            raise ConfigError(f"labels: duplicate label {json.dumps(label)}")
        if own:
            if isinstance(own, str):
                raise ConfigError(f"labels.{label}: give a list of prompts, not one string")
            for p in own:
                if not isinstance(p, str) or not p.strip():
                    raise ConfigError(f"labels.{label}: prompts must be non-empty strings")
            out[label] = tuple(own)
        else:
            out[label] = tuple(t.replace(PLACEHOLDER, label) for t in templates)
    _check_count(len(out), "labels", ConfigError)
    return out


# -- arithmetic -----------------------------------------------------------------------------
def build_zero_shot_classifier(
    encoder: TextSource, prompts: Mapping[str, Sequence[str]]
) -> np.ndarray:
    """Embed every prompt once and return one L2-normalised row per label (prompt ensembling).

    Args:
        encoder: anything with ``embed_texts`` (an Analyzer caches the prompts in its store).
        prompts: label → prompts, e.g. from :func:`label_prompts`.

    Returns:
        ``(L, D)`` float64 array, rows in label order.

    Raises:
        ValueError: the encoder returned a wrong shape or a zero vector.
    """
    groups = [list(p) for p in prompts.values()]
    flat = [p for group in groups for p in group]
    unique = list(dict.fromkeys(flat))
    emb = embed_prompts(encoder, unique)
    row = {p: i for i, p in enumerate(unique)}
    means = np.stack([emb[[row[p] for p in group]].mean(axis=0) for group in groups])
    return l2_normalize(means)


def zero_shot_probabilities(
    embeddings: np.ndarray, classifier: np.ndarray, logit_scale: float
) -> np.ndarray:
    """Return ``softmax(logit_scale * cosine)`` over the classifier's rows, per image.

    Args:
        embeddings: ``(N, D)`` image embeddings (re-normalised here).
        classifier: ``(L, D)`` from :func:`build_zero_shot_classifier`.
        logit_scale: the model's ``exp(logit_scale)`` (about 100 for trained CLIP).

    Returns:
        ``(N, L)`` float64 probabilities; rows sum to 1.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != classifier.shape[1]:
        raise ValueError(
            f"expected embeddings of shape (N, {classifier.shape[1]}), got {x.shape}"
        )
    if not (np.isfinite(logit_scale) and logit_scale > 0):
        raise ValueError(f"logit_scale must be a positive number, got {logit_scale}")
    logits = float(logit_scale) * (l2_normalize(x) @ classifier.T)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


class LabelsHead(BuiltHead):
    """Zero-shot probabilities over your labels, as the ``labels`` result field.

    Args:
        labels: label names, or label → own prompts (empty to use the templates), or a
            :class:`LabelSpec` from :func:`parse_labels` / :func:`load_labels`.
        templates: templates with one ``{}`` each; default the built-in ``default`` ensemble
            (or the labels file's own templates).

    Attributes:
        field: ``"labels"``.
        prompts: label → the prompts that are averaged into its class embedding.

    Example:
        >>> head = LabelsHead(["cat", "dog", "car"], templates=["a photo of a {}."])
        >>> for r in analyzer.scan(["photos/"], heads=[head]):
        ...     print(r.path, r.labels)          # {"cat": 0.91, "dog": 0.06, "car": 0.03}
    """

    field = "labels"
    score_range = SCORE_RANGES["labels"]

    def __init__(
        self, labels: LabelsArg | LabelSpec, templates: Sequence[str] | None = None
    ) -> None:
        self.prompts = label_prompts(labels, templates)
        self.labels = tuple(self.prompts)
        self._classifier: dict[str, np.ndarray] = {}

    def classifier(self, encoder: TextSource) -> np.ndarray:
        """The ``(L, D)`` class embeddings under ``encoder``'s model (computed once per model)."""
        key = str(getattr(encoder, "model_id", id(encoder)))
        if key not in self._classifier:
            self._classifier[key] = build_zero_shot_classifier(encoder, self.prompts)
        return self._classifier[key]

    def probabilities(
        self, embeddings: np.ndarray, encoder: TextSource, logit_scale: float
    ) -> np.ndarray:
        """``(N, L)`` probabilities of ``embeddings`` (label order of :attr:`labels`)."""
        return zero_shot_probabilities(embeddings, self.classifier(encoder), logit_scale)

    def _build(self, text: Any) -> None:
        self._built = self.classifier(text)
        self._scale = float(text.logit_scale)

    def compute(
        self,
        embeddings: np.ndarray,
        features: Sequence[Any] | None = None,
        captions: Sequence[Any] | None = None,
    ) -> list[dict[str, float]]:
        """``{label: probability}`` per row of ``embeddings`` (the head must be built)."""
        self._check_built()
        if len(embeddings) == 0:
            return []
        probs = zero_shot_probabilities(embeddings, self._built, self._scale)
        return [{label: float(p) for label, p in zip(self.labels, row, strict=True)}
                for row in probs]


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    return repr(value)
