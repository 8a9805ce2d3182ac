"""Linear probes: logistic regression on stored CLIP embeddings (train, save, load, apply).

A probe is a few-shot classifier over the L2-normalised image embeddings of one model. It is
stored as two files side by side:

* ``NAME.npz`` — the weights: ``coef`` (``(K, D)``, or ``(1, D)`` for two classes),
  ``intercept`` and ``classes`` (plain arrays, no pickles);
* ``NAME.json`` — the sidecar: the model id and preprocessing version the embeddings came from,
  the class labels, examples per class, cross-validated metrics, training parameters,
  scikit-learn and clipsieve versions, creation time and the SHA-256 of the ``.npz``.

:func:`load_probe` refuses (:class:`~clipsieve.errors.HeadError` naming both model ids) a probe
trained on another model: embeddings of different models live in unrelated spaces. Applying a
probe is plain numpy (``softmax(x W^T + b)``, or the logistic sigmoid for two classes), so
scikit-learn is imported only to train.

Training data (:func:`clipsieve.training.read_dataset`) is a folder with one sub-folder per class, or a CSV file
of ``path,label`` rows (an optional ``path,label`` header; relative paths are relative to the
CSV file's folder).
"""

from __future__ import annotations

import datetime
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipsieve.errors import ConfigError, HeadError
from clipsieve.heads._files import (
    WeightsFormat,
    model_mismatch,
    read_sidecar,
    read_weights,
    sidecar_path,
    trained_on,
    weights_path,
    write_weights,
)
from clipsieve.heads._vectors import l2_normalize
from clipsieve.heads.base import BuiltHead
from clipsieve.types import SCORE_RANGES

if TYPE_CHECKING:
    pass

__all__ = [
    "PROBE_FORMAT",
    "PROBE_FORMAT_VERSION",
    "Probe",
    "ProbeHead",
    "cross_validate_probe",
    "load_probe",
    "read_probe_classes",
    "sidecar_path",
    "train_probe",
]

#: ``format`` value of every probe sidecar.
PROBE_FORMAT = "clipsieve-probe"
#: Bump when the file layout changes; older readers refuse newer files.
PROBE_FORMAT_VERSION = 1

_PROBE_FILES = WeightsFormat(
    name=PROBE_FORMAT,
    version=PROBE_FORMAT_VERSION,
    noun="probe",
    short="probe",
    file_noun="probe file",
    read_noun="probe file",
    not_weights="not a probe weights file (.npz written by clipsieve train-probe)",
    sidecar_records="the model the probe was trained on, so the probe cannot be checked",
    retrain="clipsieve train-probe DATA",
)

_NPZ_KEYS = ("coef", "intercept", "classes")


@dataclass(frozen=True, eq=False)
class Probe:
    """A trained linear probe.

    Attributes:
        classes: class labels, in the order of :meth:`predict_proba` columns.
        coef: ``(K, D)`` weights, or ``(1, D)`` for two classes (scikit-learn's layout).
        intercept: ``(K,)`` or ``(1,)`` biases.
        model_id: the model whose embeddings it was trained on.
        info: the sidecar content (metrics, versions, counts…).
        path: the ``.npz`` it was loaded from or saved to, if any.
    """

    classes: tuple[str, ...]
    coef: np.ndarray
    intercept: np.ndarray
    model_id: str
    info: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        return int(self.coef.shape[1])

    def predict_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """Return ``(N, K)`` class probabilities of image embeddings (rows re-normalised).

        Equal to scikit-learn's ``LogisticRegression.predict_proba`` on the same inputs.

        Raises:
            HeadError: embeddings of another dimension (another model).
        """
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise HeadError(
                f"{self.path or 'probe'}: expects {self.dim}-dimensional embeddings of model "
                f"'{self.model_id}', got shape {x.shape}"
            )
        x = l2_normalize(x)
        scores = x @ self.coef.astype(np.float64).T + self.intercept.astype(np.float64)
        if len(self.classes) == 2 and scores.shape[1] == 1:
            p1 = 1.0 / (1.0 + np.exp(-scores[:, 0]))
            return np.stack([1.0 - p1, p1], axis=1)
        scores -= scores.max(axis=1, keepdims=True)
        e = np.exp(scores)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, embeddings: np.ndarray) -> list[str]:
        """Return the most probable class of each embedding."""
        return [self.classes[i] for i in self.predict_proba(embeddings).argmax(axis=1)]

    def class_index(self, label: str) -> int:
        """Column of ``label`` in :meth:`predict_proba`.

        Raises:
            HeadError: unknown label.
        """
        if label not in self.classes:
            raise HeadError(
                f"{self.path or 'probe'}: no class {json.dumps(label)} "
                f"(classes: {', '.join(self.classes)})"
            )
        return self.classes.index(label)

    def save(self, path: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``path`` (``.npz`` added if missing) and its ``.json`` sidecar.

        Returns:
            ``(weights path, sidecar path)``.
        """
        arrays = {
            "coef": self.coef.astype(np.float32),
            "intercept": self.intercept.astype(np.float32),
            "classes": np.array(self.classes, dtype=np.str_),
        }
        fields = {"model": self.model_id, "labels": list(self.classes)}
        npz, side, info = write_weights(path, arrays, self.info, _PROBE_FILES, fields, _ORDER)
        object.__setattr__(self, "path", str(npz))
        object.__setattr__(self, "info", info)
        return npz, side


def _read_npz(npz: Path) -> tuple[bytes, dict[str, np.ndarray]]:
    data, arrays = read_weights(npz, _PROBE_FILES)
    missing = [k for k in _NPZ_KEYS if k not in arrays]
    if missing:
        raise HeadError(f"{npz}: not a probe weights file: lacks {', '.join(missing)}")
    return data, arrays


def read_probe_classes(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Return a probe's class labels without checking its model (cheap; used by policies).

    Raises:
        HeadError: missing or invalid file.
    """
    _, arrays = _read_npz(weights_path(path))
    return tuple(str(c) for c in arrays["classes"].tolist())


def load_probe(path: str | os.PathLike[str], model_id: str | None = None) -> Probe:
    """Read a probe (``.npz`` plus its ``.json`` sidecar) and check it belongs to ``model_id``.

    Args:
        path: the ``.npz`` (or its ``.json`` sidecar).
        model_id: the resolved id of the model that will produce the embeddings (e.g.
            ``Analyzer.model_id``); ``None`` skips the check.

    Raises:
        HeadError: missing or invalid files, a sidecar that does not describe these weights, or
            a probe trained on another model (the message names both model ids).
    """
    npz = weights_path(path)
    src = str(npz)
    data, arrays = _read_npz(npz)
    side, info = read_sidecar(npz, data, _PROBE_FILES)
    trained = trained_on(info, side, _PROBE_FILES)
    classes = tuple(str(c) for c in arrays["classes"].tolist())
    coef = np.asarray(arrays["coef"], dtype=np.float32)
    intercept = np.asarray(arrays["intercept"], dtype=np.float32).reshape(-1)
    rows = 1 if len(classes) == 2 else len(classes)
    if len(classes) < 2 or coef.ndim != 2 or coef.shape[0] != rows or intercept.shape != (rows,):
        raise HeadError(
            f"{src}: inconsistent probe: {len(classes)} classes, coef {coef.shape}, "
            f"intercept {intercept.shape}"
        )
    if model_id is not None and trained != model_id:
        raise model_mismatch(src, _PROBE_FILES, trained, model_id)
    return Probe(classes, coef, intercept, trained, info, src)


class ProbeCache:
    """Loaded probes, memoised on (real path, size, mtime, model id); owned by its user (a
    :class:`~clipsieve.moderation.policy.Policy` keeps one for its probe categories)."""

    def __init__(self) -> None:
        self._probes: dict[tuple[str, int, int, str | None], Probe] = {}

    def load(self, path: str | os.PathLike[str], model_id: str | None = None) -> Probe:
        """:func:`load_probe`, or the probe already loaded from the unchanged file."""
        npz = weights_path(path)
        try:
            st = npz.stat()
        except OSError:
            return load_probe(npz, model_id)  # raises the proper HeadError
        key = (os.path.realpath(npz), st.st_size, st.st_mtime_ns, model_id)
        if key not in self._probes:
            self._probes[key] = load_probe(npz, model_id)
        return self._probes[key]


# -- training -------------------------------------------------------------------------------
def _check_examples(labels: Sequence[str]) -> Counter[str]:
    counts = Counter(labels)
    if len(counts) < 2:
        raise ConfigError(
            f"a probe needs at least 2 classes, got {len(counts)}"
            + (f" ({next(iter(counts))!r})" if counts else "")
        )
    small = sorted((n, c) for c, n in counts.items() if n < 2)
    if small:
        listed = ", ".join(f'"{c}" ({n})' for n, c in small)
        raise ConfigError(
            f"every class needs at least 2 examples (for training and cross-validation); "
            f"too few: {listed}"
        )
    return counts


def _fit(x: np.ndarray, y: np.ndarray, C: float, max_iter: int) -> Any:
    from sklearn.linear_model import LogisticRegression

    # lbfgs: multinomial (softmax) for 3+ classes, the usual logistic model for 2.
    return LogisticRegression(C=C, max_iter=max_iter).fit(x, y)


def cross_validate_probe(
    embeddings: np.ndarray,
    labels: Sequence[str],
    *,
    folds: int = 5,
    C: float = 1.0,
    seed: int = 0,
    max_iter: int = 1000,
) -> dict[str, Any]:
    """Stratified k-fold accuracy of a logistic-regression probe.

    The number of folds is reduced to the size of the smallest class when that is smaller.

    Args:
        embeddings: ``(N, D)`` image embeddings.
        labels: one label per row.
        folds: requested folds (at least 2).
        C: inverse regularisation strength.
        seed: shuffling seed of the folds.
        max_iter: solver iterations.

    Returns:
        ``{"cv_accuracy_mean", "cv_accuracy_std", "cv_fold_accuracies", "folds",
        "folds_requested"}`` (the standard deviation is over folds, ddof 0).

    Raises:
        ConfigError: fewer than 2 classes, a class with fewer than 2 examples, or folds < 2.
    """
    from sklearn.model_selection import StratifiedKFold

    if folds < 2:
        raise ConfigError(f"folds must be at least 2, got {folds}")
    counts = _check_examples(labels)
    x = l2_normalize(np.asarray(embeddings, dtype=np.float64))
    y = np.asarray(labels)
    k = min(folds, min(counts.values()))
    accs = []
    for train, test in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        clf = _fit(x[train], y[train], C, max_iter)
        accs.append(float((clf.predict(x[test]) == y[test]).mean()))
    return {
        "cv_accuracy_mean": float(np.mean(accs)),
        "cv_accuracy_std": float(np.std(accs)),
        "cv_fold_accuracies": accs,
        "folds": k,
        "folds_requested": folds,
    }


def train_probe(
    embeddings: np.ndarray,
    labels: Sequence[str],
    *,
    model_id: str,
    preprocess_version: str | None = None,
    C: float = 1.0,
    folds: int = 5,
    seed: int = 0,
    max_iter: int = 1000,
    extra_info: dict[str, Any] | None = None,
) -> Probe:
    """Cross-validate, then fit a logistic-regression probe on all examples.

    Args:
        embeddings: ``(N, D)`` image embeddings of model ``model_id``.
        labels: one class label per row (two or more classes, each with 2+ examples).
        model_id: the resolved model id (recorded; loading on another model is refused).
        preprocess_version: the preprocessing version of the embeddings (recorded).
        C: inverse regularisation strength of scikit-learn's ``LogisticRegression``.
        folds: requested cross-validation folds (reduced for small classes).
        seed: shuffling seed of the folds.
        max_iter: solver iterations.
        extra_info: more keys for the sidecar (e.g. ``{"data": "photos/"}``).

    Returns:
        The probe; its ``info`` holds the metrics (``info["metrics"]``).

    Raises:
        ConfigError: too few classes or examples, or mismatched lengths.
    """
    import sklearn

    from clipsieve._version import __version__

    x = np.asarray(embeddings, dtype=np.float64)
    labels = [str(label) for label in labels]
    if x.ndim != 2 or x.shape[0] != len(labels):
        raise ConfigError(f"{len(labels)} labels for embeddings of shape {x.shape}")
    metrics = cross_validate_probe(x, labels, folds=folds, C=C, seed=seed, max_iter=max_iter)
    x = l2_normalize(x)
    y = np.asarray(labels)
    clf = _fit(x, y, C, max_iter)
    metrics["train_accuracy"] = float((clf.predict(x) == y).mean())
    classes = tuple(str(c) for c in clf.classes_)
    counts = Counter(labels)
    info: dict[str, Any] = {
        "model": model_id,
        "preprocess_version": preprocess_version,
        "labels": list(classes),
        "n_per_class": {c: counts[c] for c in classes},
        "n_examples": len(labels),
        "embedding_dim": int(x.shape[1]),
        "metrics": metrics,
        "params": {"C": C, "folds": folds, "seed": seed, "max_iter": max_iter,
                   "solver": "lbfgs", "estimator": "sklearn.linear_model.LogisticRegression"},
        "sklearn_version": sklearn.__version__,
        "clipsieve_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    info.update(extra_info or {})
    return Probe(
        classes=classes,
        coef=np.asarray(clf.coef_, dtype=np.float32),
        intercept=np.asarray(clf.intercept_, dtype=np.float32).reshape(-1),
        model_id=model_id,
        info=info,
    )


# -- head -----------------------------------------------------------------------------------
class ProbeHead(BuiltHead):
    """Apply a trained probe during a scan; fills the ``probe`` result field.

    Each item gets ``extra["probe"] = {class: probability}`` (in the JSON output: a ``probe``
    object beside ``labels``).

    Args:
        probe: a :class:`Probe`, or the path of its ``.npz`` (loaded, and checked against the
            analyzer's model, on first use).
    """

    field = "probe"
    score_range = SCORE_RANGES["probe"]

    def __init__(self, probe: Probe | str | os.PathLike[str]) -> None:
        self._probe = probe if isinstance(probe, Probe) else None
        self._path = None if isinstance(probe, Probe) else os.fspath(probe)

    def probe_for(self, model_id: str) -> Probe:
        """The probe, checked against ``model_id``.

        Raises:
            HeadError: the probe was trained on another model.
        """
        if self._probe is None:
            assert self._path is not None
            self._probe = load_probe(self._path, model_id)
        elif self._probe.model_id != model_id:
            raise model_mismatch(self._probe.path or "probe", _PROBE_FILES,
                                 self._probe.model_id, model_id, advice=False)
        return self._probe

    def _build(self, text: Any) -> None:
        self._built = self.probe_for(str(text.model_id))

    def compute(
        self,
        embeddings: np.ndarray,
        features: Sequence[Any] | None = None,
        captions: Sequence[Any] | None = None,
    ) -> list[dict[str, float]]:
        """``{class: probability}`` per row of ``embeddings`` (the head must be built)."""
        self._check_built()
        if len(embeddings) == 0:
            return []
        probe = self._built
        probs = probe.predict_proba(embeddings)
        return [{c: float(p) for c, p in zip(probe.classes, row, strict=True)} for row in probs]


_ORDER = ("format", "format_version", "model", "preprocess_version", "labels", "n_per_class",
          "n_examples", "embedding_dim", "metrics", "params", "sklearn_version",
          "clipsieve_version", "created", "data", "skipped_files", "weights", "weights_sha256")
