"""Act on the scores: sort files into accept / review / reject folders, never losing one.

* :mod:`~clipsieve.filtering.rules` — minimum quality, moderation routing and ``--where``
  expressions (a small safe parser, never ``eval``), with reasons.
* :mod:`~clipsieve.filtering.dedupe` — exact and near duplicates in bounded memory.
* :mod:`~clipsieve.filtering.actions` — journalled copy / move / link, crash recovery, undo.
* :mod:`~clipsieve.filtering.engine` — :func:`filter_collection`, the call behind
  ``clipsieve filter``.

Example::

    from clipsieve import Analyzer
    from clipsieve.filtering import filter_collection, write_manifest

    run = filter_collection(["photos"], analyzer=Analyzer(), accept="keep", reject="aside",
                            action="move", min_quality=6.5, where="labels.cat > 0.8")
    write_manifest(run.decisions, "decisions.csv")
"""

from clipsieve.filtering.actions import (
    ACTIONS,
    ActionResult,
    FileActions,
    FilterError,
    Journal,
    UndoResult,
    recover,
    run_lock,
    undo_run,
)
from clipsieve.filtering.dedupe import (
    UnionFind,
    duplicate_groups,
    naive_groups,
    near_duplicate_groups,
    similar_pairs,
)
from clipsieve.filtering.engine import (
    MANIFEST_COLUMNS,
    Entry,
    FilterRun,
    ItemDecision,
    collect_results,
    decide,
    default_heads,
    discover,
    filter_collection,
    write_manifest,
)
from clipsieve.filtering.rules import (
    DECISIONS,
    Rules,
    Verdict,
    WhereError,
    WhereExpr,
    missing_everywhere,
    parse_where,
)

__all__ = [
    "ACTIONS",
    "DECISIONS",
    "MANIFEST_COLUMNS",
    "ActionResult",
    "Entry",
    "FileActions",
    "FilterError",
    "FilterRun",
    "ItemDecision",
    "Journal",
    "Rules",
    "UndoResult",
    "UnionFind",
    "Verdict",
    "WhereError",
    "WhereExpr",
    "collect_results",
    "decide",
    "default_heads",
    "discover",
    "duplicate_groups",
    "filter_collection",
    "missing_everywhere",
    "naive_groups",
    "near_duplicate_groups",
    "parse_where",
    "recover",
    "run_lock",
    "similar_pairs",
    "undo_run",
    "write_manifest",
]
