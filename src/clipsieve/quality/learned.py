"""Learned quality heads: trained on users' ratings, or a LAION aesthetic predictor file.

**Trained heads** (``clipsieve train-quality``). Ratings are a CSV of ``path,score`` rows on any
scale; the scores are rescaled to 0–10 by the min–max of the training ratings (recorded). The
input of a head is the image's L2-normalised embedding followed by its technical component
scores divided by 10 (:data:`TECHNICAL_FEATURES`; a component that cannot be measured, e.g.
``jpeg`` for a PNG, is replaced by its training mean), each standardised by the training mean
and standard deviation. ``ridge`` fits scikit-learn's ``RidgeCV`` (the penalty picked by
leave-one-out among :data:`RIDGE_ALPHAS`), ``mlp`` a small ``MLPRegressor`` (one hidden layer
of 64 ReLU units, L-BFGS). k-fold cross-validation reports SRCC and PLCC of the out-of-fold
predictions, then the head is fitted on every rating. A head is two files side by side:

* ``NAME.npz`` — plain arrays (no pickles): ``mean``, ``scale``, ``impute`` and ``coef``,
  ``intercept`` (ridge) or ``W0``, ``b0``, ``W1``, ``b1`` (mlp);
* ``NAME.json`` — the sidecar: format and version, kind, the model id and preprocessing version
  of the embeddings, the features version and names, the rating scale, the metrics, training
  parameters, versions, creation time and the SHA-256 of the ``.npz``.

Applying a head is plain numpy; :func:`load_quality_head` refuses (:class:`HeadError` naming both
model ids) a head trained on another model.

**LAION aesthetic predictor** (``.pth``): the state dict of christophschuhmann's
improved-aesthetic-predictor MLP — ``layers.0`` Linear(768, 1024), Dropout, ``layers.2``
Linear(1024, 128), Dropout, ``layers.4`` Linear(128, 64), Dropout, ``layers.6`` Linear(64, 16),
``layers.7`` Linear(16, 1) — with no activations, so it composes to one affine map, applied here
to **L2-normalised** CLIP ViT-L/14 image embeddings (unnormalised embeddings give nonsense),
giving roughly 1–10. Its input dimension must equal the model's embedding dimension (768).
"""

from __future__ import annotations

import datetime
import hashlib
import io
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipsieve.errors import ConfigError, HeadError
from clipsieve.heads._files import (
    WeightsFormat,
    check_finite,
    model_mismatch,
    read_sidecar,
    read_weights,
    trained_on,
    weights_path,
    write_weights,
)
from clipsieve.quality.config import default_quality_config
from clipsieve.quality.technical import technical_scores

if TYPE_CHECKING:
    pass

__all__ = [
    "HEAD_KINDS",
    "QUALITY_FEATURES_VERSION",
    "QUALITY_HEAD_FORMAT",
    "QUALITY_HEAD_FORMAT_VERSION",
    "RIDGE_ALPHAS",
    "TECHNICAL_FEATURES",
    "LearnedHead",
    "cross_validate_quality",
    "head_features",
    "load_laion_aesthetic",
    "load_quality_head",
    "train_quality_head",
]

#: ``format`` of every quality head sidecar.
QUALITY_HEAD_FORMAT = "clipsieve-quality-head"
#: Bump when the file layout changes; older readers refuse newer files.
QUALITY_HEAD_FORMAT_VERSION = 1
#: Version of the head input (embedding + technical components / 10, imputed, standardised).
QUALITY_FEATURES_VERSION = "qfeat-1"
#: Technical components appended to the embedding, in this order.


def _technical_features() -> tuple[str, ...]:
    return default_quality_config().components


def _technical_version() -> str:
    return default_quality_config().technical_version


def __getattr__(name: str) -> Any:
    """``TECHNICAL_FEATURES``: the technical components a head reads, in order (from the
    shipped quality configuration, read on first use)."""
    if name == "TECHNICAL_FEATURES":
        return _technical_features()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
#: Kinds a user can train.
HEAD_KINDS = ("ridge", "mlp")
#: Penalties RidgeCV chooses among.
RIDGE_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-2, 4, 13))
#: Hidden layer of the ``mlp`` kind.
MLP_HIDDEN = 64
#: L-BFGS iterations of the ``mlp`` kind.
MLP_MAX_ITER = 300
#: Fewest usable ratings to train on.
MIN_RATINGS = 5

_HEAD_FILES = WeightsFormat(
    name=QUALITY_HEAD_FORMAT,
    version=QUALITY_HEAD_FORMAT_VERSION,
    noun="quality head",
    short="head",
    file_noun="quality head file",
    read_noun="quality head",
    not_weights=("not a quality head (.npz written by clipsieve train-quality, or a LAION "
                 "aesthetic .pth)"),
    sidecar_records="the model the head was trained on and its rating scale",
    retrain="clipsieve train-quality RATINGS.csv",
)
_LAION_LAYERS = (0, 2, 4, 6, 7)
_ROW_BLOCK = 32


# -- features -------------------------------------------------------------------------------
def _normalise_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    return x / np.maximum(np.sqrt((x * x).sum(axis=1, keepdims=True)), 1e-12)


def _technical_row(stats: Mapping[str, Any] | None) -> list[float]:
    if not stats:
        return [math.nan] * len(_technical_features())
    clean = {k: math.nan if v is None else float(v) for k, v in stats.items()}
    comps = technical_scores(clean)
    return [comps.get(name, math.nan) / 10.0 for name in _technical_features()]


def head_features(
    embeddings: np.ndarray, features: Sequence[Mapping[str, Any] | None]
) -> np.ndarray:
    """The raw head input ``(N, D + T)``: normalised embeddings, then technical components / 10.

    Args:
        embeddings: ``(N, D)`` image embeddings.
        features: each image's pixel statistics (``ItemResult.features``) or ``None``.

    Returns:
        float64 features; unmeasurable components are NaN (imputed by the head).
    """
    x = _normalise_rows(embeddings)
    if len(features) != x.shape[0]:
        raise ValueError(f"{len(features)} feature rows for {x.shape[0]} embeddings")
    tech = np.array([_technical_row(f) for f in features], dtype=np.float64).reshape(
        x.shape[0], len(_technical_features())
    )
    return np.concatenate([x, tech], axis=1)


def _rowdot(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``x @ w`` computed one row at a time (so a row's result never depends on the batch)."""
    out = np.empty((x.shape[0], w.shape[1]), dtype=np.float64)
    for start in range(0, x.shape[0], _ROW_BLOCK):
        rows = x[start : start + _ROW_BLOCK]
        out[start : start + _ROW_BLOCK] = (rows[:, :, None] * w[None, :, :]).sum(axis=1)
    return out


# -- the head -------------------------------------------------------------------------------
@dataclass(eq=False)
class LearnedHead:
    """A learned quality head (trained ``ridge`` / ``mlp``, or ``laion``).

    Attributes:
        kind: ``"ridge"``, ``"mlp"`` or ``"laion"``.
        arrays: the weights (see the module docstring).
        model_id: the model whose embeddings it was trained on (``None`` for LAION files,
            which are checked by embedding dimension only).
        info: the sidecar content (metrics, scale, versions…).
        path: the file it was loaded from or saved to, if any.
    """

    kind: str
    arrays: dict[str, np.ndarray]
    model_id: str | None
    info: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    @property
    def embedding_dim(self) -> int:
        """Dimension of the embeddings it takes."""
        if self.kind == "laion":
            return int(self.arrays["w"].shape[0])
        return int(self.info["embedding_dim"])

    @property
    def name(self) -> str:
        return os.path.basename(self.path) if self.path else f"{self.kind} head"

    def describe(self) -> dict[str, Any]:
        """What the head is, recorded with each result it produces."""
        return {
            "file": self.path,
            "kind": self.kind,
            "model": self.model_id,
            "weights_sha256": self.info.get("weights_sha256"),
        }

    def check_model(self, model_id: str) -> None:
        """Refuse another model than the one the head was trained on.

        Raises:
            HeadError: naming both model ids.
        """
        if self.model_id is not None and self.model_id != model_id:
            raise model_mismatch(self.path or "quality head", _HEAD_FILES, self.model_id,
                                 model_id)

    def _check_dim(self, dim: int, model_id: str | None) -> None:
        if dim == self.embedding_dim:
            return
        model = f"model '{model_id}'" if model_id else "the model"
        if self.kind == "laion":
            raise HeadError(
                f"{self.path or 'LAION aesthetic head'}: the LAION aesthetic predictor takes "
                f"{self.embedding_dim}-dimensional embeddings (CLIP ViT-L/14, e.g. "
                f"openai/clip-vit-large-patch14) but {model} gives {dim}-dimensional ones; "
                "use it with {model} openai/clip-vit-large-patch14", params={"model": "model"}
            )
        raise HeadError(
            f"{self.path or 'quality head'}: expects {self.embedding_dim}-dimensional embeddings "
            f"of model '{self.model_id}', {model} gives {dim}-dimensional ones"
        )

    def predict(
        self,
        embeddings: np.ndarray,
        features: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        model_id: str | None = None,
    ) -> np.ndarray:
        """Predicted quality on the head's 0–10 scale (LAION: its own ~1–10), not clipped.

        Args:
            embeddings: ``(N, D)`` image embeddings (normalised here).
            features: each image's pixel statistics (ignored by LAION heads); ``None`` for none.
            model_id: the model of the embeddings, checked when given.

        Raises:
            HeadError: another model, or embeddings of another dimension.
        """
        x = _normalise_rows(embeddings)
        if model_id is not None:
            self.check_model(model_id)
        self._check_dim(x.shape[1], model_id)
        a = self.arrays
        if self.kind == "laion":
            return _rowdot(x, a["w"][:, None])[:, 0] + float(a["b"])
        feats = features if features is not None else [None] * x.shape[0]
        return self._predict_features(head_features(x, feats))

    def _predict_features(self, raw: np.ndarray) -> np.ndarray:
        """Predict from raw head features (:func:`head_features`) of a trained head."""
        a = self.arrays
        dim = self.embedding_dim
        filled = raw.copy()
        tech = raw[:, dim:]
        filled[:, dim:] = np.where(np.isnan(tech), a["impute"][None, :], tech)
        z = (filled - a["mean"]) / a["scale"]
        if self.kind == "ridge":
            return _rowdot(z, a["coef"][:, None])[:, 0] + float(a["intercept"])
        h = np.maximum(_rowdot(z, a["W0"]) + a["b0"], 0.0)
        return _rowdot(h, a["W1"])[:, 0] + float(a["b1"][0])

    def save(self, path: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``path`` (``.npz`` added if missing) and its ``.json`` sidecar.

        Returns:
            ``(weights path, sidecar path)``.

        Raises:
            HeadError: a LAION head (it is the user's file; nothing to save).
        """
        if self.kind == "laion":
            raise HeadError("a LAION aesthetic head is read from its .pth file, not saved")
        arrays = {k: np.asarray(v, dtype=np.float64) for k, v in self.arrays.items()}
        fields = {"kind": self.kind, "model": self.model_id}
        lead = ("format", "format_version", "kind", "model", "preprocess_version")
        npz, side, ordered = write_weights(path, arrays, self.info, _HEAD_FILES, fields, lead)
        self.path = str(npz)
        self.info = ordered
        return npz, side


# -- loading --------------------------------------------------------------------------------
_NPZ_KEYS = {"ridge": ("mean", "scale", "impute", "coef", "intercept"),
             "mlp": ("mean", "scale", "impute", "W0", "b0", "W1", "b1")}


def load_quality_head(path: str | os.PathLike[str], model_id: str | None = None) -> LearnedHead:
    """Read a quality head: a trained ``.npz`` (+ ``.json``) or a LAION aesthetic ``.pth``.

    Args:
        path: the ``.npz`` (or its ``.json`` sidecar), or a LAION ``.pth``/``.pt`` state dict.
        model_id: the resolved id of the model that will produce the embeddings; a trained head
            for another model is refused. ``None`` skips the check.

    Raises:
        HeadError: missing or invalid files, a sidecar that does not describe these weights, or a
            head trained on another model (the message names both model ids).
    """
    p = Path(path)
    if p.suffix.lower() in (".pth", ".pt", ".ckpt", ".bin"):
        return load_laion_aesthetic(p)
    npz = weights_path(p)
    src = str(npz)
    data, arrays = read_weights(npz, _HEAD_FILES, np.float64)
    side, info = read_sidecar(npz, data, _HEAD_FILES)
    kind = info.get("kind")
    if kind not in _NPZ_KEYS:
        raise HeadError(f"{side}: unknown head kind {kind!r} (expected ridge or mlp)")
    missing = [k for k in _NPZ_KEYS[kind] if k not in arrays]
    if missing:
        raise HeadError(f"{src}: not a {kind} quality head: lacks {', '.join(missing)}")
    trained = trained_on(info, side, _HEAD_FILES)
    dim = info.get("embedding_dim")
    width = int(dim) + len(_technical_features()) if isinstance(dim, int) else -1
    if arrays["mean"].shape != (width,) or arrays["scale"].shape != (width,):
        raise HeadError(
            f"{src}: inconsistent quality head: {dim}-dimensional embeddings + "
            f"{len(_technical_features())} technical features, but mean {arrays['mean'].shape}"
        )
    if info.get("features_version") != QUALITY_FEATURES_VERSION or info.get(
        "feature_names", {}
    ).get("technical") != list(_technical_features()):
        raise HeadError(
            f"{side}: the head takes features {info.get('features_version')!r} "
            f"({info.get('feature_names')}), this clipsieve computes {QUALITY_FEATURES_VERSION!r} "
            f"({list(_technical_features())}); retrain it with clipsieve train-quality"
        )
    if info.get("technical_version") != _technical_version():
        warnings.warn(
            f"{src}: trained with technical measures {info.get('technical_version')!r}, now "
            f"{_technical_version()!r}; predictions may drift a little (retrain to refresh)",
            stacklevel=2,
        )
    head = LearnedHead(kind, arrays, trained, info, src)
    if model_id is not None:
        head.check_model(model_id)
    return head


def _strip_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(state)
    for prefix in ("module.", "model.", "mlp."):
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix):]: v for k, v in out.items()}
    return out


def load_laion_aesthetic(path: str | os.PathLike[str]) -> LearnedHead:
    """Read a LAION improved-aesthetic-predictor state dict and compose it into one affine map.

    Args:
        path: the ``.pth`` (e.g. ``sac+logos+ava1-l14-linearMSE.pth``), a state dict with keys
            ``layers.{0,2,4,6,7}.{weight,bias}`` (a ``state_dict`` entry, or a ``module.`` /
            ``model.`` prefix, is accepted).

    Raises:
        HeadError: missing or unreadable file, missing keys, or shapes that do not chain.
    """
    import torch

    src = os.fspath(path)
    try:
        data = Path(src).read_bytes()
    except FileNotFoundError:
        raise HeadError(f"{src}: no such LAION aesthetic head file") from None
    except OSError as exc:
        raise HeadError(f"{src}: cannot read: {exc.strerror}") from None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise HeadError(
            f"{src}: not a PyTorch state dict (LAION aesthetic predictor .pth): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise HeadError(f"{src}: expected a state dict, got {type(state).__name__}")
    state = _strip_prefix(state)
    need = [f"layers.{i}.{p}" for i in _LAION_LAYERS for p in ("weight", "bias")]
    missing = [k for k in need if k not in state]
    if missing:
        raise HeadError(
            f"{src}: not a LAION improved-aesthetic-predictor state dict: lacks "
            f"{', '.join(missing[:4])}{'…' if len(missing) > 4 else ''} (found: "
            f"{', '.join(sorted(state)[:6])})"
        )
    w = b = None
    for i in _LAION_LAYERS:
        wi = state[f"layers.{i}.weight"].detach().cpu().double().numpy()
        bi = state[f"layers.{i}.bias"].detach().cpu().double().numpy()
        chained = w is None or wi.shape[1] == w.shape[0]
        if wi.ndim != 2 or bi.shape != (wi.shape[0],) or not chained:
            raise HeadError(
                f"{src}: layers.{i} has weight {tuple(wi.shape)} and bias {tuple(bi.shape)}, "
                "which do not chain with the previous layer"
            )
        # y = wi (w x + b) + bi
        w, b = (wi, bi) if w is None else (wi @ w, wi @ b + bi)
    assert w is not None and b is not None
    check_finite(src, {"weight": w, "bias": b}, "LAION aesthetic head")
    if w.shape[0] != 1:
        raise HeadError(f"{src}: the last layer gives {w.shape[0]} outputs, expected 1")
    info = {"weights_sha256": hashlib.sha256(data).hexdigest(), "input_dim": int(w.shape[1]),
            "scale": {"note": "LAION aesthetic score, roughly 1-10"}}
    return LearnedHead("laion", {"w": w[0], "b": np.array(b[0])}, None, info, src)


# -- training -------------------------------------------------------------------------------
def _prepare(raw: np.ndarray, dim: int) -> dict[str, np.ndarray]:
    """Imputation values and standardisation of the training features."""
    tech = raw[:, dim:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        impute = np.nanmean(tech, axis=0) if tech.size else np.zeros(0)
    impute = np.where(np.isnan(impute), 1.0, impute)  # never measured: assume no defect
    filled = raw.copy()
    filled[:, dim:] = np.where(np.isnan(tech), impute[None, :], tech)
    mean = filled.mean(axis=0)
    scale = filled.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return {"impute": impute, "mean": mean, "scale": scale}


def _fit_arrays(raw: np.ndarray, y10: np.ndarray, dim: int, kind: str, seed: int
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    prep = _prepare(raw, dim)
    filled = raw.copy()
    tech = raw[:, dim:]
    filled[:, dim:] = np.where(np.isnan(tech), prep["impute"][None, :], tech)
    z = (filled - prep["mean"]) / prep["scale"]
    if kind == "ridge":
        from sklearn.linear_model import RidgeCV

        est = RidgeCV(alphas=RIDGE_ALPHAS).fit(z, y10)
        arrays = dict(prep, coef=np.asarray(est.coef_, dtype=np.float64).reshape(-1),
                      intercept=np.array(float(est.intercept_)))
        return arrays, {"alpha": float(est.alpha_)}
    from sklearn.neural_network import MLPRegressor
    from threadpoolctl import threadpool_limits

    # small matrices: one BLAS thread is faster (and never oversubscribes the machine)
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")  # ConvergenceWarning on tiny data sets
        est = MLPRegressor(hidden_layer_sizes=(MLP_HIDDEN,), activation="relu", solver="lbfgs",
                           alpha=1.0, max_iter=MLP_MAX_ITER, random_state=seed).fit(z, y10)
    arrays = dict(prep, W0=np.asarray(est.coefs_[0], dtype=np.float64),
                  b0=np.asarray(est.intercepts_[0], dtype=np.float64),
                  W1=np.asarray(est.coefs_[1], dtype=np.float64),
                  b1=np.asarray(est.intercepts_[1], dtype=np.float64))
    return arrays, {"alpha": 1.0, "hidden": MLP_HIDDEN, "iterations": int(est.n_iter_)}


def _correlations(y: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(SRCC, PLCC); NaN when either side is constant."""
    if y.size < 3 or np.ptp(y) == 0 or np.ptp(pred) == 0:
        return math.nan, math.nan
    from scipy.stats import pearsonr, spearmanr

    return float(spearmanr(y, pred).statistic), float(pearsonr(y, pred).statistic)


def cross_validate_quality(
    raw: np.ndarray, y10: np.ndarray, dim: int, *, kind: str = "ridge", folds: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """k-fold SRCC and PLCC of a head (preprocessing fitted inside each fold).

    Returns:
        ``{"srcc", "plcc"}`` of the pooled out-of-fold predictions, per-fold lists
        ``fold_srcc``/``fold_plcc`` (NaN for folds of fewer than 3 ratings) with their means,
        ``folds`` used and ``folds_requested``.
    """
    from sklearn.model_selection import KFold

    n = raw.shape[0]
    k = min(folds, n)
    oof = np.empty(n, dtype=np.float64)
    fold_srcc, fold_plcc = [], []
    for train, test in KFold(k, shuffle=True, random_state=seed).split(raw):
        arrays, _ = _fit_arrays(raw[train], y10[train], dim, kind, seed)
        head = LearnedHead(kind, arrays, None, {"embedding_dim": dim})
        pred = head._predict_features(raw[test])
        oof[test] = pred
        s, p = _correlations(y10[test], pred)
        fold_srcc.append(s)
        fold_plcc.append(p)
    srcc, plcc = _correlations(y10, oof)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {
            "srcc": srcc,
            "plcc": plcc,
            "fold_srcc": fold_srcc,
            "fold_plcc": fold_plcc,
            "fold_srcc_mean": float(np.nanmean(fold_srcc)) if fold_srcc else math.nan,
            "fold_plcc_mean": float(np.nanmean(fold_plcc)) if fold_plcc else math.nan,
            "rmse": float(np.sqrt(np.mean((oof - y10) ** 2))),
            "folds": k,
            "folds_requested": folds,
        }




def train_quality_head(
    embeddings: np.ndarray,
    features: Sequence[Mapping[str, Any] | None],
    ratings: Sequence[float],
    *,
    model_id: str,
    preprocess_version: str | None = None,
    kind: str = "ridge",
    folds: int = 5,
    seed: int = 0,
    extra_info: dict[str, Any] | None = None,
) -> LearnedHead:
    """Rescale ratings to 0–10, cross-validate, then fit a head on every rating.

    Args:
        embeddings: ``(N, D)`` image embeddings of model ``model_id``.
        features: each image's pixel statistics (``ItemResult.features``) or ``None``.
        ratings: one score per image, on any scale.
        model_id: the resolved model id (recorded; loading on another model is refused).
        preprocess_version: preprocessing version of the embeddings (recorded).
        kind: ``"ridge"`` or ``"mlp"``.
        folds: cross-validation folds (at least 2; at most the number of ratings).
        seed: seed of the folds and of the MLP's initialisation.
        extra_info: more sidecar keys.

    Returns:
        The head (not saved); ``info["metrics"]`` holds the cross-validated SRCC and PLCC.

    Raises:
        ConfigError: unknown kind, folds < 2, too few ratings, all ratings equal, or lengths
            that do not match.
    """
    import sklearn

    from clipsieve._version import __version__

    if kind not in HEAD_KINDS:
        raise ConfigError(f"unknown quality head kind {kind!r}; choose {' or '.join(HEAD_KINDS)}")
    if folds < 2:
        raise ConfigError(f"folds must be at least 2, got {folds}")
    y = np.asarray(ratings, dtype=np.float64)
    emb = np.asarray(embeddings, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] != y.size or len(features) != y.size:
        raise ConfigError(f"{y.size} ratings for embeddings of shape {emb.shape} and "
                          f"{len(features)} feature rows")
    if y.size < MIN_RATINGS:
        raise ConfigError(f"a quality head needs at least {MIN_RATINGS} rated images, got {y.size}")
    lo, hi = float(y.min()), float(y.max())
    if hi == lo:
        raise ConfigError(f"every rating is {lo:g}: nothing to learn from")
    y10 = 10.0 * (y - lo) / (hi - lo)
    dim = int(emb.shape[1])
    raw = head_features(emb, features)
    metrics = cross_validate_quality(raw, y10, dim, kind=kind, folds=folds, seed=seed)
    arrays, fit_info = _fit_arrays(raw, y10, dim, kind, seed)
    head = LearnedHead(kind, arrays, model_id, {"embedding_dim": dim})
    train_pred = head._predict_features(raw)
    metrics["train_srcc"], metrics["train_plcc"] = _correlations(y10, train_pred)
    estimator = ("sklearn.linear_model.RidgeCV" if kind == "ridge"
                 else "sklearn.neural_network.MLPRegressor")
    info: dict[str, Any] = {
        "model": model_id,
        "preprocess_version": preprocess_version,
        "features_version": QUALITY_FEATURES_VERSION,
        "technical_version": _technical_version(),
        "embedding_dim": dim,
        "feature_names": {"embedding": dim, "technical": list(_technical_features())},
        "scale": {"min": lo, "max": hi, "to": [0.0, 10.0],
                  "note": "ratings rescaled to 0-10 by the min-max of the training ratings"},
        "n_examples": int(y.size),
        "metrics": metrics,
        "params": {"kind": kind, "folds": folds, "seed": seed, "estimator": estimator,
                   **fit_info},
        "sklearn_version": sklearn.__version__,
        "clipsieve_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    info.update(extra_info or {})
    head.info = info
    return head
