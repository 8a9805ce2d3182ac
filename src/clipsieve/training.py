"""Training and calibration as library functions: the CLI's train-probe, train-quality and
calibrate commands only parse their options and print what these return.

* :func:`embed_files` — the shared step: embed a list of files with an analyzer (stored
  embeddings reused), keeping the readable ones and the failures apart;
* probes: :func:`read_dataset` (class folders or a ``path,label`` CSV) and
  :func:`train_probe_from_data` (over :func:`clipsieve.heads.probe.train_probe`);
* quality heads: :func:`read_ratings` (``path,score`` CSV) and
  :func:`train_quality_head_from_csv` (over :func:`clipsieve.quality.learned.train_quality_head`);
* moderation thresholds: :func:`read_labels_csv` / :func:`labels_from_store` (the labels
  schema), then :func:`calibrate_from_labels` (scan, score under the policy, choose thresholds
  with :func:`clipsieve.moderation.calibrate.calibrate_policy`).
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipsieve.errors import ConfigError, did_you_mean
from clipsieve.heads._files import csv_pairs
from clipsieve.heads.probe import Probe, train_probe
from clipsieve.media.discover import iter_files
from clipsieve.quality.learned import MIN_RATINGS, LearnedHead, train_quality_head
from clipsieve.types import ItemResult

if TYPE_CHECKING:
    from clipsieve.pipeline import Analyzer
    from clipsieve.store import Store

__all__ = [
    "NEGATIVE_LABELS",
    "Calibration",
    "EmbeddedFiles",
    "LabelFile",
    "LabelRow",
    "calibrate_from_labels",
    "embed_files",
    "labels_from_store",
    "read_dataset",
    "read_labels_csv",
    "read_ratings",
    "train_probe_from_data",
    "train_quality_head_from_csv",
]


@dataclass
class EmbeddedFiles:
    """What :func:`embed_files` returns.

    Attributes:
        items: the readable files' results, in input order.
        embeddings: their embeddings (float32), same order.
        failed: the results of the files that could not be read.
    """

    items: list[ItemResult] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    failed: list[ItemResult] = field(default_factory=list)


def embed_files(
    analyzer: Analyzer,
    paths: Sequence[str],
    *,
    on_item: Callable[[ItemResult], None] | None = None,
) -> EmbeddedFiles:
    """Embed files with ``analyzer.scan`` (no heads; stored embeddings are reused).

    Args:
        analyzer: the analyzer (its store, if any, keeps the embeddings).
        paths: the files (not folders), in order.
        on_item: called with each result (e.g. to advance a progress bar).
    """
    out = EmbeddedFiles()
    for item in analyzer.scan(list(paths), recursive=False):
        if on_item is not None:
            on_item(item)
        if not item.ok or item.embedding is None:
            out.failed.append(item)
            continue
        out.items.append(item)
        out.embeddings.append(np.asarray(item.embedding, dtype=np.float32))
    return out


# -- probes ---------------------------------------------------------------------------------
def read_dataset(data: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """List ``(image path, label)`` pairs from a class-folder tree or a ``path,label`` CSV.

    A folder: each sub-folder (not starting with ``.``) is a class named after it; its images
    are found recursively (by extension). Files directly inside ``data`` are ignored. A CSV:
    rows ``path,label`` with an optional ``path,label`` header; relative paths are taken
    relative to the CSV file's folder; a path listed twice must carry the same label.

    Raises:
        ConfigError: no such path, an empty class folder, a malformed CSV row, or a path
            listed with two labels; messages name the folder or ``file:line``.
    """
    src = os.fspath(data)
    if os.path.isdir(src):
        with os.scandir(src) as it:
            subdirs = sorted(
                (e.name, e.path) for e in it
                if e.is_dir(follow_symlinks=True) and not e.name.startswith(".")
            )
        rows: list[tuple[str, str]] = []
        for name, sub in subdirs:
            files = list(iter_files([sub]))
            if not files:
                raise ConfigError(f"{sub}: no images found (each sub-folder of {src} is a class)")
            rows += [(f, name) for f in files]
        if not subdirs:
            raise ConfigError(
                f"{src}: no class sub-folders (give a folder with one sub-folder of images per "
                "class, or a CSV file of path,label rows)"
            )
        return rows
    if not os.path.exists(src):
        raise ConfigError(f"{src}: no such folder or CSV file")
    base = Path(src).resolve().parent
    out: dict[str, tuple[str, str, int]] = {}
    for lineno, path, label in csv_pairs(src, "path,label"):
        if lineno == 1 and (path.lower(), label.lower()) == ("path", "label"):
            continue
        if not path or not label:
            raise ConfigError(f"{src}:{lineno}: empty {'path' if not path else 'label'}")
        full = path if os.path.isabs(path) else str(base / path)
        if os.path.isdir(full):
            raise ConfigError(f"{src}:{lineno}: {path} is a folder; list image files")
        key = os.path.realpath(full)
        if key in out:
            first_label, _, first_line = out[key]
            if first_label != label:
                raise ConfigError(
                    f"{src}:{lineno}: {path} is labelled {json.dumps(label)} here but "
                    f"{json.dumps(first_label)} on line {first_line}"
                )
            continue
        out[key] = (label, full, lineno)
    if not out:
        raise ConfigError(f"{src}: no path,label rows")
    return [(full, label) for label, full, _ in out.values()]


def train_probe_from_data(
    analyzer: Analyzer,
    data: str | os.PathLike[str],
    *,
    C: float = 1.0,
    folds: int = 5,
    seed: int = 0,
    on_item: Callable[[ItemResult], None] | None = None,
) -> tuple[Probe, list[ItemResult]]:
    """Embed the images of a dataset with ``analyzer`` (stored embeddings reused) and train.

    Args:
        analyzer: supplies the embeddings and the model id.
        data: class-folder tree or CSV (see :func:`read_dataset`).
        C: inverse regularisation strength.
        folds: requested cross-validation folds.
        seed: shuffling seed of the folds.
        on_item: called with each scanned item (e.g. to advance a progress bar).

    Returns:
        The probe (not yet saved) and the items that failed to decode (skipped).

    Raises:
        ConfigError: bad data, or too few examples per class once failed files are skipped.
    """
    rows = read_dataset(data)
    label_of = dict(rows)
    got = embed_files(analyzer, [p for p, _ in rows], on_item=on_item)
    embs, failed = got.embeddings, got.failed
    labels = [label_of[it.path] for it in got.items]
    if not embs:
        raise ConfigError(f"{os.fspath(data)}: none of the {len(rows)} images could be read")
    try:
        probe = train_probe(
            np.stack(embs),
            labels,
            model_id=analyzer.model_id,
            preprocess_version=analyzer.preprocess.version,
            C=C,
            folds=folds,
            seed=seed,
            extra_info={
                "data": os.path.abspath(os.fspath(data)),
                "skipped_files": [i.path for i in failed],
            },
        )
    except ConfigError as exc:
        if not failed:
            raise
        first = failed[0]
        why = f"{first.error.code}: {first.error.message}" if first.error else "failed"
        raise ConfigError(
            f"{exc} (after skipping {len(failed)} unreadable file(s), e.g. {first.path}: {why})"
        ) from None
    return probe, failed


# -- quality heads -----------------------------------------------------------------------
def read_ratings(ratings: str | os.PathLike[str]) -> list[tuple[str, float]]:
    """Read a ``path,score`` CSV (optional header; relative paths relative to the CSV's folder).

    Raises:
        ConfigError: no such file, a malformed row, a non-numeric score, or a path rated twice
            with different scores; messages name ``file:line``.
    """
    src = os.fspath(ratings)
    if not os.path.isfile(src):
        raise ConfigError(f"{src}: no such ratings CSV file")
    base = Path(src).resolve().parent
    out: dict[str, tuple[str, float, int]] = {}
    for lineno, path, raw in csv_pairs(src, "path,score"):
        try:
            score = float(raw)
        except ValueError:
            if lineno == 1 and not out:  # a header
                continue
            raise ConfigError(f"{src}:{lineno}: score {raw!r} is not a number") from None
        if not math.isfinite(score):
            raise ConfigError(f"{src}:{lineno}: score {raw!r} is not a finite number")
        if not path:
            raise ConfigError(f"{src}:{lineno}: empty path")
        full = path if os.path.isabs(path) else str(base / path)
        key = os.path.realpath(full)
        if key in out:
            if out[key][1] != score:
                raise ConfigError(
                    f"{src}:{lineno}: {path} is rated {raw} here but {out[key][1]:g} on line "
                    f"{out[key][2]}"
                )
            continue
        out[key] = (full, score, lineno)
    if not out:
        raise ConfigError(f"{src}: no path,score rows")
    return [(full, score) for full, score, _ in out.values()]


def train_quality_head_from_csv(
    analyzer: Analyzer,
    ratings: str | os.PathLike[str],
    *,
    kind: str = "ridge",
    folds: int = 5,
    seed: int = 0,
    on_item: Callable[[ItemResult], None] | None = None,
) -> tuple[LearnedHead, list[ItemResult]]:
    """Embed the rated images with ``analyzer`` (stored embeddings reused) and train a head.

    Returns:
        The head (not yet saved) and the items that could not be read (skipped).

    Raises:
        ConfigError: bad CSV, or too few readable images.
    """
    rows = read_ratings(ratings)
    score_of = dict(rows)
    got = embed_files(analyzer, [p for p, _ in rows], on_item=on_item)
    embs, failed = got.embeddings, got.failed
    feats: list[Mapping[str, Any] | None] = [it.features for it in got.items]
    ys = [score_of[it.path] for it in got.items]
    if len(embs) < MIN_RATINGS:
        raise ConfigError(
            f"{os.fspath(ratings)}: only {len(embs)} of the {len(rows)} rated images could be "
            f"read; a quality head needs at least {MIN_RATINGS}"
        )
    head = train_quality_head(
        np.stack(embs), feats, ys,
        model_id=analyzer.model_id,
        preprocess_version=analyzer.preprocess.version,
        kind=kind, folds=folds, seed=seed,
        extra_info={"ratings": os.path.abspath(os.fspath(ratings)),
                    "skipped_files": [i.path for i in failed]},
    )
    return head, failed


# -- moderation thresholds ----------------------------------------------------------------
#: Cell values of a ``label`` column that mean "belongs to no category".
NEGATIVE_LABELS = frozenset({"", "none", "safe"})

_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"", "0", "false", "no"})


@dataclass
class LabelRow:
    """One usable row of a labels CSV.

    Attributes:
        line: line number in the file (the header is line 1).
        path: the image path, resolved against the CSV's folder when relative.
        labels: category → 0/1 for every calibrated category.
        group: the ``group`` cell, or ``None`` without a group column.
    """

    line: int
    path: str
    labels: dict[str, int]
    group: str | None = None


@dataclass
class LabelFile:
    """A parsed labels CSV.

    Attributes:
        rows: the rows with a path.
        categories: categories to calibrate, in policy order.
        has_group: whether the file has a ``group`` column.
        errors: per-row problems (``"line N: ..."``) of rows that were skipped.
    """

    rows: list[LabelRow]
    categories: list[str]
    has_group: bool
    errors: list[str] = field(default_factory=list)


def read_labels_csv(path: str, policy: Any) -> LabelFile:
    """Read a labels CSV for ``policy``.

    The file has a ``path`` column, an optional ``group`` column, and either a ``label``
    column naming one category per row (several separated by ``;``; ``none``, ``safe`` or an
    empty cell for benign items) or one 0/1 column per category (``1``/``true``/``yes``,
    ``0``/``false``/``no`` or empty). Relative paths are relative to the CSV's folder.

    Raises:
        ConfigError: unreadable file, no ``path`` column, unknown columns or categories (with
            a "did you mean"), or a cell that is not a valid label.
    """
    cats = list(policy.categories)
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise ConfigError(f"{path}: empty file (expected a header row)") from None
            raw_rows = [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such labels file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read labels CSV: {exc}") from None

    shown = ", ".join(json.dumps(h) for h in header)
    if "path" not in header:
        raise ConfigError(
            f'{path}: no "path" column{did_you_mean("path", [h.lower() for h in header])}'
            f" (columns: {shown})"
        )
    for name in set(header):
        if header.count(name) > 1:
            raise ConfigError(f"{path}: column {json.dumps(name)} appears twice")
    extra = [h for h in header if h not in ("path", "group", "label")]
    label_mode = "label" in header
    if label_mode and extra:
        raise ConfigError(
            f'{path}: give either a "label" column or one 0/1 column per category, not both '
            f"(extra columns: {', '.join(json.dumps(h) for h in extra)})"
        )
    unknown = [h for h in extra if h not in cats]
    if unknown:
        problems = "; ".join(
            f"unknown category column {json.dumps(h)}{did_you_mean(h.lower(), cats)}"
            for h in unknown
        )
        raise ConfigError(
            f'{path}: {problems} (categories of policy "{policy.name}": {", ".join(cats)}; '
            f'other columns allowed: "path", "group", "label")'
        )
    if not label_mode and not extra:
        raise ConfigError(
            f'{path}: needs a "label" column or one 0/1 column per category '
            f"(columns: {shown})"
        )

    index = {h: i for i, h in enumerate(header)}
    base = os.path.dirname(path)
    rows: list[LabelRow] = []
    errors: list[str] = []
    seen_labels: set[str] = set()
    for line, cells in raw_rows:
        if not any(c.strip() for c in cells):
            continue
        cells = cells + [""] * (len(header) - len(cells))

        def cell(name: str, cells: list[str] = cells) -> str:
            return cells[index[name]].strip()

        img = cell("path")
        if not img:
            errors.append(f"line {line}: empty path")
            continue
        if label_mode:
            values = [v.strip().lower() for v in cell("label").split(";")]
            named = [v for v in values if v not in NEGATIVE_LABELS]
            for v in named:
                if v not in cats:
                    raise ConfigError(
                        f"{path}: line {line}: label {json.dumps(v)} is not a category of "
                        f'policy "{policy.name}"{did_you_mean(v.lower(), cats)} '
                        f"(use none, safe or an empty cell for benign items)"
                    )
            seen_labels.update(named)
            labels = {c: int(c in named) for c in cats}
        else:
            labels = {}
            for c in extra:
                v = cell(c).lower()
                if v not in _TRUE and v not in _FALSE:
                    raise ConfigError(
                        f"{path}: line {line}, column {json.dumps(c)}: expected 0 or 1, "
                        f"got {json.dumps(cell(c))}"
                    )
                labels[c] = int(v in _TRUE)
        if not os.path.isabs(img) and base:
            img = os.path.join(base, img)
        group = (cell("group") or "(blank)") if "group" in index else None
        rows.append(LabelRow(line=line, path=img, labels=labels, group=group))
    if label_mode:
        categories = [c for c in cats if c in seen_labels]
        for row in rows:
            row.labels = {c: row.labels[c] for c in categories}
    else:
        categories = [c for c in cats if c in extra]
    return LabelFile(rows=rows, categories=categories, has_group="group" in index, errors=errors)


def labels_from_store(store: Store, policy: Any) -> tuple[LabelFile, list[Any]]:
    """Labels from the human decisions in the store (``clipsieve review import``).

    ``block`` is a positive for its category: the one the reviewer's export names (the
    model's top category when the item was marked), else the top category of the stored
    moderation result; ``allow`` is benign for every category; ``review`` is undecided and
    left out.

    Returns:
        The label file (paths as stored; line numbers count the labels from 1) and the
        human labels used, in the same order.
    """
    cats = list(policy.categories)
    human = store.human_labels()
    rows: list[LabelRow] = []
    used: list[Any] = []
    errors: list[str] = []
    for n, lab in enumerate(human, 1):
        if lab["decision"] == "review":
            continue  # undecided: not a label
        named: list[str] = []
        if lab["decision"] == "block":
            cat = lab.get("category")
            if not cat or cat not in cats:
                stored = store.execute(
                    "SELECT result FROM results WHERE path=? OR (sha256 IS NOT NULL AND "
                    "sha256=?) ORDER BY updated_at DESC LIMIT 1",
                    (lab["path"], lab.get("sha256") or ""),
                )
                mod = json.loads(stored[0][0]).get("moderation") if stored else None
                scores = (mod or {}).get("categories") or {}
                known = {k: v for k, v in scores.items() if k in cats}
                cat = max(known, key=lambda k: known[k]) if known else None
            if cat is None:
                errors.append(
                    f"review {n}: {lab['path']}: blocked, but no category is known "
                    "(give a category column or moderate the file first)"
                )
                continue
            named = [cat]
        rows.append(
            LabelRow(line=n, path=lab["path"], labels={c: int(c in named) for c in cats})
        )
        used.append(lab)
    seen = {c for r in rows for c, v in r.labels.items() if v}
    categories = [c for c in cats if c in seen]
    for r in rows:
        r.labels = {c: r.labels[c] for c in categories}
    return LabelFile(rows=rows, categories=categories, has_group=False, errors=errors), used


@dataclass
class Calibration:
    """What :func:`calibrate_from_labels` returns.

    Attributes:
        policy: the calibrated policy (not yet written).
        report: per-category calibration (from ``calibrate_policy``).
        usable: the label rows whose image could be read, in file order.
        embeddings: their embeddings ``(N, D)``.
        row_errors: problems of the rows that were skipped (``"line N: ..."``).
        bank: the policy's class bank under the analyzer's model.
        logit_scale: the model's logit scale.
        model_id: the analyzer's model id.
    """

    policy: Any
    report: Any
    usable: list[LabelRow]
    embeddings: np.ndarray
    row_errors: list[str]
    bank: Any
    logit_scale: float
    model_id: str


def calibrate_from_labels(
    analyzer: Analyzer,
    labels: LabelFile,
    policy: Any,
    *,
    target_precision: float | None = None,
    target_recall: float | None = None,
    level: str | None = None,
    source: str = "labels",
    on_item: Callable[[ItemResult], None] | None = None,
    on_files: Callable[[int], None] | None = None,
) -> Calibration:
    """Scan each labelled image once, score it under ``policy``, and choose new thresholds.

    Args:
        analyzer: embeds the images (stored embeddings reused) and the policy's prompts.
        labels: from :func:`read_labels_csv` or :func:`labels_from_store`.
        policy: the policy to calibrate.
        target_precision, target_recall, level: see
            :func:`clipsieve.moderation.calibrate.calibrate_policy`.
        source: the labels' name, for messages.
        on_item: called with each scanned result.
        on_files: called once with the number of files to scan, before scanning.

    Raises:
        ConfigError: no row could be used, or the labels cannot calibrate the policy.
    """
    from clipsieve.moderation import ModerationHead, moderate
    from clipsieve.moderation.calibrate import calibrate_policy

    row_errors = list(labels.errors)
    candidates = []
    for row in labels.rows:
        if os.path.isdir(row.path):
            row_errors.append(f"line {row.line}: {row.path}: is a folder, not an image")
        else:
            candidates.append(row)
    files = list(dict.fromkeys(os.path.realpath(r.path) for r in candidates))
    if on_files is not None:
        on_files(len(files))
    embedding: dict[str, Any] = {}
    failure: dict[str, str] = {}
    for item in analyzer.scan(files):
        if on_item is not None:
            on_item(item)
        if item.ok:
            embedding[item.path] = item.embedding
        else:
            err = item.error
            failure[item.path] = f"{err.code}: {err.message}" if err else "failed"
    usable = []
    for row in candidates:
        key = os.path.realpath(row.path)
        if key in embedding:
            usable.append(row)
        else:
            row_errors.append(f"line {row.line}: {row.path}: {failure.get(key, 'not read')}")
    if not usable:
        shown = "; ".join(row_errors[:3]) + ("; ..." if len(row_errors) > 3 else "")
        raise ConfigError(f"{source}: no row could be used ({len(row_errors)} failed: {shown})")
    embs = np.stack([embedding[os.path.realpath(r.path)] for r in usable])
    bank = ModerationHead(policy).bank(analyzer)
    scale = analyzer.logit_scale
    results = moderate(embs, bank, policy, scale)
    scores = {c: np.array([r.categories[c] for r in results]) for c in labels.categories}
    y = {c: np.array([row.labels[c] for row in usable]) for c in labels.categories}
    try:
        new_policy, report = calibrate_policy(
            policy, scores, y, target_precision=target_precision, target_recall=target_recall,
            level=level,  # type: ignore[arg-type]
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: cannot calibrate: {exc}") from None
    return Calibration(new_policy, report, usable, embs, row_errors, bank, scale,
                       analyzer.model_id)
