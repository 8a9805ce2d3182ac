"""One filter run: find files, get their results, decide, deduplicate, act, record.

:func:`filter_collection` is the Python call behind ``clipsieve filter``. Results come from
the store whenever a file is unchanged since it was scanned (same path, size, mtime and hash),
so a collection that was already scanned needs no model work; other files go through
:meth:`clipsieve.pipeline.Analyzer.scan` with the heads of :func:`default_heads`.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipsieve.filtering.actions import (
    ACTIONS,
    ActionResult,
    FileActions,
    FilterError,
    Journal,
    collision_names,
    recover,
    run_lock,
)
from clipsieve.filtering.dedupe import duplicate_groups, tie_round
from clipsieve.filtering.rules import Rules, missing_everywhere, parse_where
from clipsieve.media.discover import iter_files
from clipsieve.media.inputs import matches_glob
from clipsieve.paths import clean_text, display, with_path
from clipsieve.store import Store
from clipsieve.types import SCORE_RANGES

#: Columns of the decisions manifest (CSV), in order.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "decision",
    "destination",
    "outcome",
    "reasons",
    "quality",
    "moderation",
    "duplicate_of",
    "error",
    "sha256",
)


def default_heads(
    analyzer: Any,
    *,
    policy: Any = None,
    need_quality: bool = False,
    need_moderation: bool = False,
) -> list[Any]:
    """The heads a filter run asks :meth:`Analyzer.scan` to apply to the files it scans.

    With a ``policy``, :class:`~clipsieve.moderation.ModerationHead`; with ``need_quality``,
    :class:`~clipsieve.quality.QualityHead`. Without a policy no moderation is computed
    (unless ``need_moderation``); :func:`filter_collection` then adds
    :func:`stale_moderation_head`, so stored decisions of other policies are not applied.

    Args:
        analyzer: the analyzer the heads will run in (its model id checks probe categories).
        policy: moderation policy name or file, a loaded
            :class:`~clipsieve.moderation.policy.Policy` (e.g. with ``--threshold``
            overrides), or ``None``.
        need_quality: whether quality scores are needed (``--min-quality``, ``--dedupe``,
            a ``--where`` on ``quality.*`` or ``issue(...)``).
        need_moderation: a ``--where`` reads ``moderation.*`` without a policy: files that
            have no stored moderation are moderated with the ``default`` policy.
    """
    from clipsieve.factory import build_heads

    pol = policy if policy else ("default" if need_moderation else None)
    return build_heads(analyzer, policy=pol, quality=need_quality, lazy=True)


def stale_moderation_head(analyzer: Any) -> Any:
    """Without ``--policy``: an *optional* moderation head of the policy ``scan`` uses.

    Stored decisions count only when made under it (issue #9); a decision stored under another
    policy is recomputed under it from the stored embedding; a file without a stored decision
    gets none (the head is never the reason to scan a file, nor run on files scanned anyway).
    """
    from clipsieve.factory import build_heads

    (head,) = build_heads(analyzer, policy=DEFAULT_POLICY, quality=False, lazy=True)
    head.optional = True  # type: ignore[attr-defined]
    return head


# -- decisions --------------------------------------------------------------------------------


@dataclass
class ItemDecision:
    """What a filter run decided and did for one file.

    Attributes:
        path: the file as discovered under its source.
        root: the source folder it was found under (relative structure is kept from here).
        rel: its path relative to ``root``.
        decision: ``accept``, ``review``, ``reject`` or ``error`` (could not be scanned).
        reasons: why.
        result: the stored or fresh result dict it was judged on.
        duplicate_of: the kept file, for a duplicate.
        destination: where the file is now (or would go, in a dry run); ``None`` when it
            stayed where it was.
        outcome: ``done``, ``failed``, ``kept`` (no folder for its decision, or action
            ``none``), ``planned`` (dry run) or ``skipped`` (scan error: left in place).
        error: the per-file failure, if any.
    """

    path: str
    root: str
    rel: str
    decision: str
    reasons: list[str]
    result: dict[str, Any]
    duplicate_of: str | None = None
    destination: str | None = None
    outcome: str = "kept"
    error: str | None = None
    sidecars: list[str] = field(default_factory=list)
    already_there: bool = False

    @property
    def quality(self) -> float | None:
        q = self.result.get("quality")
        s = q.get("score") if isinstance(q, Mapping) else None
        return float(s) if isinstance(s, (int, float)) and not isinstance(s, bool) else None

    @property
    def moderation(self) -> str | None:
        m = self.result.get("moderation")
        return str(m.get("decision")) if isinstance(m, Mapping) and m.get("decision") else None

    @property
    def failed(self) -> bool:
        return self.outcome == "failed" or self.decision == "error"

    def manifest_row(self) -> dict[str, Any]:
        q = self.quality
        # CSV for people and spreadsheets: names that are not UTF-8 are shown with U+FFFD
        return {
            "path": display(self.path),
            "decision": self.decision,
            "destination": display(self.destination or ""),
            "outcome": self.outcome,
            "reasons": clean_text("; ".join(self.reasons)),
            "quality": "" if q is None else f"{q:.4g}",
            "moderation": self.moderation or "",
            "duplicate_of": display(self.duplicate_of or ""),
            "error": clean_text(self.error or ""),
            "sha256": self.result.get("sha256") or "",
        }

    def report_dict(self, run_id: str | None = None) -> dict[str, Any]:
        """The result dict with a ``filter`` field, for reports."""
        out = with_path(self.result, self.path)
        out["filter"] = {
            "decision": self.decision,
            "reasons": [clean_text(r) for r in self.reasons],
            "destination": self.destination,  # the real path (the report reads thumbnails)
            "outcome": self.outcome,
            "duplicate_of": display(self.duplicate_of) if self.duplicate_of else None,
            "error": clean_text(self.error) if self.error else None,
            "run": run_id,
        }
        return out


@dataclass
class FilterRun:
    """The outcome of :func:`filter_collection`.

    Attributes:
        run_id: the journal's run id (``None`` for a dry run or action ``none``).
        action: the file action.
        dry_run: whether nothing was touched.
        decisions: one per file, in path order.
        recovered: actions of earlier, killed runs that were completed or rolled back.
        pending_recovery: unfinished actions left by a killed run (dry runs only report them).
    """

    run_id: str | None
    action: str
    dry_run: bool
    decisions: list[ItemDecision]
    recovered: list[ActionResult] = field(default_factory=list)
    pending_recovery: int = 0

    def counts(self) -> dict[str, int]:
        """Files per decision, ``duplicates``, ``failed`` (the action failed; files that could
        not be scanned count once, as ``error``), and ``already_there`` (a copy or link whose
        destination already held the same bytes)."""
        out = {k: 0 for k in ("accept", "review", "reject", "error", "duplicates", "failed",
                              "already_there")}
        for d in self.decisions:
            out[d.decision] = out.get(d.decision, 0) + 1
            out["duplicates"] += d.duplicate_of is not None
            out["failed"] += d.outcome == "failed"
            out["already_there"] += d.already_there
        return out

    @property
    def failed(self) -> list[ItemDecision]:
        return [d for d in self.decisions if d.failed]


# -- discovery and checks ---------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A discovered file: its path, the source folder and the path relative to it."""

    path: str
    root: str
    rel: str


def discover(
    sources: Sequence[str | os.PathLike[str]],
    *,
    recursive: bool = True,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    limit: int | None = None,
) -> list[Entry]:
    """Files under the sources, each once, with the source folder they were found under.

    ``include`` / ``exclude`` globs and ``limit`` select as for every other command
    (:func:`clipsieve.media.inputs.matches_glob`; the first ``limit`` in path order).

    Raises:
        FilterError: a source does not exist.
    """
    missing = [os.fspath(s) for s in sources if not os.path.exists(s)]
    if missing:
        raise FilterError("source not found: " + ", ".join(missing))
    out: list[Entry] = []
    seen: set[str] = set()
    for src in [os.fspath(s) for s in sources]:
        found: Iterable[tuple[str, str]]
        if os.path.isdir(src):
            found = ((f, src) for f in iter_files([src], extensions=_media_extensions(),
                                                   recursive=recursive))
        else:
            found = [(src, os.path.dirname(src) or ".")]
        for path, root in found:
            if include and not matches_glob(path, include):
                continue
            if exclude and matches_glob(path, exclude):
                continue
            key = os.path.realpath(path)
            if key in seen:
                continue
            seen.add(key)
            out.append(Entry(path, root, os.path.relpath(path, root)))
    out.sort(key=lambda e: e.path)
    return out if limit is None else out[:limit]


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def check_destinations(sources: Sequence[str], destinations: Mapping[str, str | None]) -> None:
    """Refuse destinations that are files, or that overlap a source.

    Raises:
        FilterError: with the offending pair.
    """
    for label, dest in destinations.items():
        if dest is None:
            continue
        if os.path.exists(dest) and not os.path.isdir(dest):
            raise FilterError(f"{{{label}}} {dest} exists and is not a folder", params=[label])
        rd = os.path.realpath(dest)
        for src in sources:
            rs = os.path.realpath(src)
            folder = rs if os.path.isdir(src) else os.path.dirname(rs)
            if os.path.isdir(src) and _inside(rd, rs):
                raise FilterError(
                    f"{{{label}}} {dest} is inside the source {src}: its files would be found "
                    "again as sources; choose a folder outside every source", params=[label]
                )
            if _inside(folder, rd):
                raise FilterError(
                    f"the source {src} is inside {{{label}}} {dest}; "
                    "choose a folder outside every source", params=[label]
                )


# -- results ----------------------------------------------------------------------------------


def _fresh_result(store: Store, model: str, path: str) -> dict[str, Any] | None:
    """The stored result for ``path`` if the file is unchanged since it was scanned."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    for key in dict.fromkeys([path, os.path.abspath(path)]):
        res = store.get_result(key, model)
        if (
            res
            and res.get("status") == "ok"
            and res.get("sha256")
            and store.lookup_file(key, st.st_size, st.st_mtime_ns) == res["sha256"]
        ):
            return with_path(res, path)
    return None


def _media_extensions() -> frozenset[str]:
    """Folder walks pick up videos too (filter routes a video by its verdict)."""
    from clipsieve.video.analyze import MEDIA_EXTENSIONS

    return MEDIA_EXTENSIONS


#: The policy ``scan`` and ``moderate`` use without ``--policy``.
DEFAULT_POLICY = "default"


def _needs_heads(
    result: Mapping[str, Any], heads: Sequence[Any], policy: Any,
    analyzer: Any = None,
) -> bool:
    """Whether a stored result lacks, or holds a stale version of, a field ``heads`` compute.

    A stored head field is reused only when it was made with what this run would use now:
    moderation under the same policy (name and version), quality with the same quality head
    (or none), version and model, and any field with the same model weights (fingerprint).
    Keys a stored field lacks are not held against it.
    """
    prov = result.get("provenance")
    prov = prov if isinstance(prov, Mapping) else {}
    fingerprint = getattr(analyzer, "model_fingerprint", None)
    model_id = getattr(analyzer, "model_id", None)
    if result.get("kind") == "video":  # a video's moderation is its verdict
        verdict = result.get("verdict")
        result = {k: v for k, v in result.items() if k != "moderation"}
        if isinstance(verdict, Mapping):
            result["moderation"] = {"policy": verdict.get("policy")}
    for head in heads:
        name = getattr(head, "field", None)
        if not name:
            continue
        if name not in result:
            if getattr(head, "optional", False):
                continue  # only replaces a stale stored field; never computed from nothing
            return True
        p = prov.get(name)
        if fingerprint is not None and isinstance(p, Mapping) and p.get("model_fingerprint") not in (
            None, fingerprint
        ):
            return True
        if name == "moderation" and getattr(head, "policy", None) is not None:
            # stored decisions count only when made under this very policy (name, version
            # and any --threshold overrides)
            stored = (result.get("moderation") or {}).get("policy") or {}
            want = head.policy
            overrides = dict(getattr(want, "overrides", ()) or ())
            if not isinstance(stored, Mapping):
                return True
            if stored and (
                stored.get("name"), str(stored.get("version")), stored.get("overrides") or {}
            ) != (want.name, str(want.version), overrides):
                return True
            if not stored and policy:
                return True
        if name == "quality":
            q = result.get("quality")
            if not isinstance(q, Mapping):
                return True
            if _quality_stale(q, head, model_id):
                return True
    return False


def _quality_stale(q: Mapping[str, Any], head: Any, model_id: str | None) -> bool:
    from clipsieve.quality.score import QUALITY_VERSION

    if q.get("version") is not None and q.get("version") != QUALITY_VERSION:
        return True
    if model_id is not None and q.get("model") not in (None, model_id):
        return True
    want_head = getattr(head, "head_path", None)
    stored_head = q.get("head")
    if want_head is None:
        return stored_head is not None
    if not isinstance(stored_head, Mapping):
        return True
    learned = head.learned_for(model_id) if model_id else None
    want_sha = learned.describe().get("weights_sha256") if learned is not None else None
    return stored_head.get("weights_sha256") != want_sha


def collect_results(
    analyzer: Any,
    entries: Sequence[Entry],
    heads: Sequence[Any] = (),
    *,
    policy: str | None = None,
    on_scanned: Callable[[Any], None] | None = None,
    need_embeddings: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Result dicts for ``entries`` (stored when fresh, else scanned) and fresh embeddings.

    With ``need_embeddings`` (near-duplicate grouping), a stored result counts as fresh only
    when its embedding is stored for the analyzer's current model and preprocessing version;
    otherwise the file is scanned again, so no file silently drops out of the grouping.

    Returns:
        ``(results, embeddings)``: one result dict per entry, in order, and
        ``{sha256: embedding}`` for the files scanned now.
    """
    store: Store | None = analyzer.store
    results: list[dict[str, Any] | None] = [None] * len(entries)
    to_scan: dict[str, int] = {}
    restale: set[str] = set()  # stored results whose optional fields must be recomputed
    prep = _prep_version(analyzer) if need_embeddings and store is not None else None
    for i, e in enumerate(entries):
        res = _fresh_result(store, analyzer.model_id, e.path) if store is not None else None
        # a video has no single embedding: it takes part in exact (sha256) grouping only
        if (res is not None and prep is not None and res.get("status") == "ok"
                and res.get("kind") != "video"):
            assert store is not None
            if store.get_embedding(res.get("sha256") or "", analyzer.model_id, prep,
                                   encoder=_encoder_kind(analyzer)) is None:
                res = None
        if res is not None and not _needs_heads(res, heads, policy, analyzer):
            results[i] = res
        else:
            to_scan[e.path] = i
            if res is not None and any(
                getattr(h, "optional", False) and h.field in res for h in heads
            ):
                restale.add(e.path)
    embeddings: dict[str, np.ndarray] = {}
    plain = [h for h in heads if not getattr(h, "optional", False)]
    for group, group_heads in (
        ([p for p in to_scan if p not in restale], plain),
        ([p for p in to_scan if p in restale], list(heads)),
    ):
        if not group:
            continue
        from clipsieve.video.analyze import scan_media

        for item in scan_media(analyzer, group, heads=group_heads, recursive=False):
            k = to_scan.get(item.path)
            if k is None:
                continue
            results[k] = item.to_dict()
            if item.sha256 and getattr(item, "embedding", None) is not None:
                embeddings[item.sha256] = np.asarray(item.embedding, dtype=np.float32)
            if on_scanned is not None:
                on_scanned(item)
    for i, r in enumerate(results):  # a file the scan did not report (should not happen)
        if r is None:
            results[i] = {
                "path": entries[i].path,
                "status": "error",
                "error": {"code": "io_error", "message": "not scanned"},
            }
    return results, embeddings  # type: ignore[return-value]


def _prep_version(analyzer: Any) -> str | None:
    """The analyzer's preprocessing version, or None when its model config cannot be read
    (then embeddings of any preprocessing version are used)."""
    try:
        return str(analyzer.preprocess.version)
    except Exception:  # noqa: BLE001 - e.g. the checkpoint is not on this machine
        return None


def _encoder_kind(analyzer: Any) -> str:
    """The analyzer's encoder kind (stored embeddings are keyed by it)."""
    return str(getattr(analyzer, "encoder_kind", "torch"))


def load_embeddings(
    store: Store, shas: Iterable[str], model: str, prep: str | None, encoder: str = "torch"
) -> dict[str, np.ndarray]:
    """Stored embeddings by sha256 for ``model`` and ``encoder`` (and ``prep`` when known)."""
    return store.get_embeddings([s for s in shas if s], model, prep, encoder=encoder)


#: What provides each top-level result field, for errors about a field no result has.
FIELD_SOURCES: dict[str, str] = {
    "moderation": "pass --policy NAME (computed now for files that lack it) or run "
    "`clipsieve moderate` first",
    "quality": "run `clipsieve quality` first (filter computes it when --min-quality, "
    "--dedupe or --where asks for it)",
    "labels": "run `clipsieve classify --labels ...` (or `scan --labels ...`) with that label "
    "first",
    "probe": "run `clipsieve classify --probe FILE` (or `scan --probe FILE`) first",
    "human": "import review marks with `clipsieve review import FILE` and pass --prefer-human",
    "video": "run the video analysis first",
}


def _missing_message(names: list[str], results: Sequence[Mapping[str, Any]]) -> str:
    present: set[str] = set()
    for r in results[:1000]:
        if r.get("status") == "ok":
            present.update(_flat_keys(r))
    hints = []
    for name in names:
        top = name.split(".")[0]
        close = difflib.get_close_matches(name, sorted(present), n=3)
        hint = f"no result has {name}"
        if close:
            hint += f" (did you mean {', '.join(close)}?)"
        source = FIELD_SOURCES.get(top)
        if source:
            hint += f": {source}"
        elif not close:
            tops = sorted({k.split('.')[0] for k in present})
            hint += f" (results have: {', '.join(tops)})" if tops else ""
        hints.append(hint)
    return "; ".join(hints)


def _flat_keys(d: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out += _flat_keys(v, key + ".")
        else:
            out.append(key)
    return out


def decide(
    entries: Sequence[Entry],
    results: Sequence[dict[str, Any]],
    rules: Rules,
    *,
    dedupe: float | None = None,
    embeddings: Mapping[str, np.ndarray] | None = None,
) -> list[ItemDecision]:
    """Apply the rules, then (optionally) route duplicates to reject.

    In each duplicate group the kept file is the best by (decision accept < review < reject,
    highest ``quality.score`` rounded to 1e-6, earliest path); every other member is rejected with the reason
    ``duplicate of PATH``. Preferring an accepted member means a blocked or low-quality copy
    never causes a good copy to be rejected.
    """
    out = []
    for e, res in zip(entries, results):
        v = rules.decide(res)
        out.append(ItemDecision(e.path, e.root, e.rel, v.decision, v.reasons, res))
    if dedupe is None:
        return out
    idx = [i for i, d in enumerate(out) if d.decision != "error"]
    shas = [out[i].result.get("sha256") for i in idx]
    groups = duplicate_groups(shas, dict(embeddings or {}), dedupe)
    rank = {"accept": 0, "review": 1, "reject": 2}
    for g in groups:
        members = [out[idx[k]] for k in g]
        keeper = min(
            members,
            key=lambda d: (
                rank.get(d.decision, 3),
                -(tie_round(q) or 0.0 if (q := d.quality) is not None else -1e9),
                d.path,
            ),
        )
        for d in members:
            if d is keeper:
                continue
            prior = d.reasons if d.decision != "accept" else []
            d.decision = "reject"
            d.duplicate_of = keeper.path
            d.reasons = [f"duplicate of {keeper.path}"] + prior
            q = d.result.get("quality")
            if isinstance(q, Mapping):  # the named issue, for reports and manifests
                from clipsieve.quality.issues import near_duplicate

                issues = [it for it in (q.get("issues") or []) if isinstance(it, Mapping)
                          and it.get("name") != "near_duplicate"]
                d.result = {
                    **d.result,
                    "quality": {**q, "issues": [*issues, near_duplicate(keeper.path)]},
                }
    return out


# -- acting -----------------------------------------------------------------------------------


def plan_destinations(
    decisions: Sequence[ItemDecision], destinations: Mapping[str, str | None]
) -> None:
    """Fill ``destination`` with where each file would go now (dry runs)."""
    taken: set[str] = set()
    for d in decisions:
        root = destinations.get(d.decision)
        if d.decision == "error" or root is None:
            d.outcome = "skipped" if d.decision == "error" else "kept"
            continue
        folder = os.path.join(os.path.abspath(root), os.path.dirname(d.rel))
        for cand in collision_names(folder, os.path.basename(d.rel)):
            if cand not in taken and not os.path.lexists(cand):
                taken.add(cand)
                d.destination = cand
                break
        d.outcome = "planned"


#: Caption files that travel with their image (``photo.txt`` beside ``photo.jpg``).
SIDECAR_SUFFIXES: tuple[str, ...] = (".txt",)


def sidecars_of(path: str) -> list[str]:
    """The sidecar caption files of an image that exist (``photo.txt`` for ``photo.jpg``)."""
    stem = os.path.splitext(path)[0]
    return [stem + ext for ext in SIDECAR_SUFFIXES if os.path.isfile(stem + ext)]


def identical_destination(
    root: str, rel: str, sha256: str | None, size: int | None
) -> str | None:
    """A file already at the destination (``rel`` or a collision variant of it) with the same
    bytes, or ``None``: a repeated copy or link run counts it as done instead of copying
    again as ``photo_1.jpg``."""
    if not sha256:
        return None
    from clipsieve.filtering.actions import sha256_file

    folder = os.path.join(os.path.abspath(root), os.path.dirname(rel))
    for cand in collision_names(folder, os.path.basename(rel)):
        if not os.path.lexists(cand):
            return None
        try:
            if size is not None and os.path.getsize(cand) != size:
                continue
            if os.path.isfile(cand) and sha256_file(cand) == sha256:
                return cand
        except OSError:
            continue
    return None


def execute(
    decisions: Sequence[ItemDecision],
    journal: Journal,
    run_id: str,
    action: str,
    destinations: Mapping[str, str | None],
    *,
    on_item: Callable[[ItemDecision], None] | None = None,
) -> None:
    """Carry out ``action`` for every decision, journalled; failures are recorded per file.

    Sidecar captions (``photo.txt``) go with their image, named after the image's
    destination, in the same journal (so ``undo`` brings them back too). A copy or link
    whose destination already holds the same bytes counts as done (``outcome`` ``done``,
    ``error`` ``None``, the existing file as destination) and is not journalled, so undo
    leaves that file alone.
    """
    acts = FileActions(journal, run_id, action)
    for d in decisions:
        root = destinations.get(d.decision)
        if d.decision == "error":
            d.outcome, d.error = "skipped", d.reasons[0] if d.reasons else "scan failed"
        elif root is None:
            d.outcome = "kept"
        else:
            sha = d.result.get("sha256")
            same = None
            if action in ("copy", "link"):
                try:
                    size = os.path.getsize(d.path)
                except OSError:
                    size = None
                same = identical_destination(root, d.rel, sha, size)
            if same is not None:
                d.outcome, d.destination, d.error = "done", same, None
                d.already_there = True
            else:
                sides = sidecars_of(d.path)
                r = acts.apply(d.path, root, d.rel, decision=d.decision, sha256=sha)
                d.outcome = "done" if r.ok else "failed"
                d.destination = r.dest if r.ok else None
                d.error = r.error
                if r.ok and r.dest and action == "move":  # results follow the file
                    journal.store.move_path(d.path, r.dest)
                if r.ok and r.dest:
                    stem = os.path.splitext(os.path.relpath(r.dest, os.path.abspath(root)))[0]
                    for side in sides:
                        sr = acts.apply(side, root, stem + os.path.splitext(side)[1],
                                        decision=d.decision)
                        if sr.ok and sr.dest:
                            d.sidecars.append(sr.dest)
                        else:
                            d.error = f"sidecar {side}: {sr.error}"
        if on_item is not None:
            on_item(d)


def filter_collection(
    sources: Sequence[str | os.PathLike[str]],
    *,
    analyzer: Any,
    accept: str | None = None,
    reject: str | None = None,
    review: str | None = None,
    action: str = "none",
    min_quality: float | None = None,
    policy: Any = None,
    where: str | Sequence[str] | None = None,
    dedupe: float | None = None,
    dry_run: bool = False,
    recursive: bool = True,
    on_item: Callable[[ItemDecision], None] | None = None,
    on_scanned: Callable[[Any], None] | None = None,
    prefer_human: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    limit: int | None = None,
    on_run_started: Callable[[str], None] | None = None,
) -> FilterRun:
    """Sort files into accept / review / reject folders by their results; never lose one.

    Args:
        sources: files and folders (folders are walked; structure below them is kept).
        analyzer: a :class:`~clipsieve.pipeline.Analyzer` (its store holds the results and
            the journal).
        accept: folder for accepted files, or ``None`` to leave them in place.
        reject: folder for rejected files (and duplicates), or ``None``.
        review: folder for files needing review; without it they are rejected.
        action: ``copy``, ``move``, ``link`` (hard link, or a symbolic link across file
            systems) or ``none``.
        min_quality: minimum ``quality.score`` (0–10).
        policy: moderation policy (name, file or loaded
            :class:`~clipsieve.moderation.policy.Policy`); makes a moderation decision
            required.
        where: expression(s) over result fields, see :mod:`clipsieve.filtering.rules`.
        dedupe: cosine threshold for near duplicates (exact duplicates always group).
        dry_run: decide and plan destinations, touch nothing.
        recursive: walk sub-folders.
        include, exclude: globs selecting files (see :func:`discover`).
        limit: act on the first ``limit`` files (in path order) only.
        on_item: called after each file's action.
        on_scanned: called for each file scanned now.
        prefer_human: a person's decision stored by ``clipsieve review import`` replaces
            the model's moderation decision for that file.
        on_run_started: called with the run id once the run is journalled, before the first
            file is touched (so a caller can always say how to undo it, even if the run
            then fails).

    Raises:
        FilterError: missing source, destination overlapping a source, a rule field that no
            result has, no store for the journal, the store locked by another run.
        WhereError: the where expression does not parse.

    Example:
        >>> run = filter_collection(["photos"], analyzer=Analyzer(), accept="keep",
        ...                         reject="aside", action="move", min_quality=6.5)
        >>> run.counts()["accept"]
    """
    if action not in ACTIONS:
        raise FilterError(f"unknown action {action!r} (choose {', '.join(ACTIONS)})")
    if dedupe is not None and not 0.0 < dedupe <= 1.0:
        raise FilterError(f"{{dedupe}} {dedupe} is outside (0, 1]", params=["dedupe"])
    low, high = SCORE_RANGES["quality"]
    if min_quality is not None and not low <= min_quality <= high:
        raise FilterError(f"{{min_quality}} {min_quality} is outside {low:g}–{high:g}",
                          params=["min_quality"])
    wexpr = parse_where(where) if where else None
    rules = Rules(
        min_quality=min_quality,
        where=wexpr,
        require_moderation=policy is not None,
        review=review is not None,
        prefer_human=prefer_human,
    )
    destinations = {"accept": accept, "reject": reject, "review": review}
    srcs = [os.fspath(s) for s in sources]
    if not srcs:
        raise FilterError("no source given")
    missing = [s for s in srcs if not os.path.exists(s)]
    if missing:
        raise FilterError("source not found: " + ", ".join(missing))
    if action != "none":
        if all(v is None for v in destinations.values()):
            raise FilterError(f"{{action}} {action} needs {{accept}}, {{reject}} or {{review}}",
                              params={"action": "action", "accept": "accept=",
                                      "reject": "reject=", "review": "review="})
        check_destinations(srcs, destinations)
    acting = action != "none" and not dry_run
    store: Store | None = analyzer.store
    if acting and store is None:
        raise FilterError(
            "a filter run that touches files needs the store for its journal; "
            "drop {no_store} (or use {dry_run})",
            params={"no_store": "store=False", "dry_run": "dry_run=True"},
        )
    lock = run_lock(store) if acting and store is not None else contextlib.nullcontext()
    with lock:
        recovered: list[ActionResult] = []
        pending = 0
        if acting:
            assert store is not None
            Journal(store).durable()
            recovered = recover(store)
        elif store is not None:
            pending = len(Journal(store).open_rows())
        entries = discover(srcs, recursive=recursive, include=include, exclude=exclude,
                           limit=limit)
        where_tops = {f.parts[0] for f in wexpr.fields()} if wexpr is not None else set()
        heads = default_heads(
            analyzer,
            policy=policy,
            need_quality=min_quality is not None or dedupe is not None or "quality" in where_tops,
            need_moderation="moderation" in where_tops,
        )
        if not any(getattr(h, "field", None) == "moderation" for h in heads):
            heads = [stale_moderation_head(analyzer), *heads]
        results, embeddings = collect_results(
            analyzer, entries, heads, policy=policy, on_scanned=on_scanned,
            need_embeddings=dedupe is not None,
        )
        if prefer_human and store is not None:
            from clipsieve.review import attach_human

            results = attach_human(results, store.human_labels())
        lacking = missing_everywhere(rules, results)
        if lacking:
            raise FilterError(_missing_message(lacking, results))
        if dedupe is not None and store is not None:
            need = [
                r["sha256"] for r in results if r.get("sha256") and r["sha256"] not in embeddings
            ]
            embeddings.update(
                load_embeddings(store, need, analyzer.model_id, _prep_version(analyzer),
                                _encoder_kind(analyzer))
            )
        decisions = decide(entries, results, rules, dedupe=dedupe, embeddings=embeddings)
        del embeddings
        run = FilterRun(None, action, dry_run, decisions, recovered, pending)
        if not acting:
            if action != "none":
                plan_destinations(decisions, destinations)
            else:
                for d in decisions:
                    d.outcome = "skipped" if d.decision == "error" else "kept"
            return run
        assert store is not None
        journal = Journal(store)
        args = {
            "sources": [os.path.abspath(s) for s in srcs],
            "accept": accept and os.path.abspath(accept),
            "reject": reject and os.path.abspath(reject),
            "review": review and os.path.abspath(review),
            "min_quality": min_quality,
            "policy": policy if policy is None or isinstance(policy, str) else (
                getattr(policy, "provenance", lambda: str(policy))()
            ),
            "where": where,
            "dedupe": dedupe,
            "prefer_human": prefer_human,
        }
        run.run_id = journal.start_run("filter", action, args)
        if on_run_started is not None:
            on_run_started(run.run_id)
        status = "interrupted"
        try:
            execute(decisions, journal, run.run_id, action, destinations, on_item=on_item)
            status = "finished"
        finally:
            journal.finish_run(run.run_id, status, run.counts())
        return run


def write_manifest(decisions: Iterable[ItemDecision], path: str | os.PathLike[str]) -> int:
    """Write the decisions as CSV (:data:`MANIFEST_COLUMNS`), atomically; returns rows."""
    from clipsieve.outfiles import atomic_text

    n = 0
    with atomic_text(path, newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(MANIFEST_COLUMNS))
        w.writeheader()
        for d in decisions:
            w.writerow(d.manifest_row())
            n += 1
    return n
