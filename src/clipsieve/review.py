"""Human review decisions: the files the HTML report exports, and matching them to results.

A reviewer marks items ``allow``, ``review`` or ``block`` in the report (with an optional
note); the report exports the marks as JSON or CSV. :func:`read_review_file` reads either,
``Store.put_human_labels`` keeps them (``clipsieve review import``), and
:func:`attach_human` puts the latest human decision of each file on its result dict as the
field ``human`` (``{decision, category, note, reviewer, reviewed_at}``), matched by content
hash first, then by path.

The JSON export::

    {"format": "clipsieve-review", "version": 1, "report_id": "…", "reviewer": "ana",
     "exported_at": "2026-11-29T14:00:00Z",
     "items": [{"path": "/photos/a.jpg", "sha256": "…", "decision": "block",
                "category": "violence", "note": "fight", "marked_at": "2026-11-29T13:59:10Z",
                "model_decision": "review"}, …]}

The CSV export has the columns of :data:`CSV_COLUMNS` (``path`` and ``decision`` required).
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from clipsieve.errors import ConfigError

#: Decisions a reviewer can make.
HUMAN_DECISIONS: tuple[str, ...] = ("allow", "review", "block")

#: Columns of the CSV export, in order.
CSV_COLUMNS: tuple[str, ...] = (
    "path",
    "sha256",
    "decision",
    "category",
    "note",
    "reviewer",
    "marked_at",
    "model_decision",
    "report_id",
)


def _time(value: Any, where: str) -> float | None:
    """Epoch seconds from an ISO 8601 string or a number; ``None`` for empty."""
    if value in (None, ""):
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{where}: not a time: {json.dumps(text)}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


def _label(raw: Mapping[str, Any], where: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    path = str(raw.get("path") or "").strip()
    if not path:
        raise ConfigError(f"{where}: no path")
    decision = str(raw.get("decision") or "").strip().lower()
    if decision not in HUMAN_DECISIONS:
        raise ConfigError(
            f"{where}: decision must be one of {', '.join(HUMAN_DECISIONS)}, "
            f"got {json.dumps(raw.get('decision'))}"
        )
    return {
        "path": path,
        "sha256": str(raw.get("sha256") or "").strip() or None,
        "decision": decision,
        "category": str(raw.get("category") or "").strip() or None,
        "note": str(raw.get("note") or "").strip() or None,
        "reviewer": str(raw.get("reviewer") or defaults.get("reviewer") or "").strip() or None,
        "reviewed_at": _time(raw.get("marked_at", raw.get("reviewed_at")), where)
        or defaults.get("reviewed_at"),
        "model_decision": str(raw.get("model_decision") or "").strip() or None,
        "report_id": str(raw.get("report_id") or defaults.get("report_id") or "").strip()
        or None,
    }


def read_review_file(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a review export (JSON or CSV, told apart by content) into label dicts.

    Each dict has ``path``, ``sha256``, ``decision``, ``category``, ``note``, ``reviewer``,
    ``reviewed_at`` (epoch seconds or ``None``), ``model_decision`` and ``report_id``.

    Raises:
        ConfigError: unreadable file, or an item without a path or with an unknown decision
            (naming the file and the item).
    """
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such review file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read review file: {exc}") from None
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}: invalid JSON: {exc}") from None
        items = data.get("items") if isinstance(data, Mapping) else data
        if not isinstance(items, list):
            raise ConfigError(f'{name}: expected an "items" list')
        defaults: dict[str, Any] = {}
        if isinstance(data, Mapping):
            defaults = {
                "reviewer": data.get("reviewer"),
                "report_id": data.get("report_id"),
                "reviewed_at": _time(data.get("exported_at"), f"{name}: exported_at"),
            }
        out = []
        for i, raw in enumerate(items):
            if not isinstance(raw, Mapping):
                raise ConfigError(f"{name}: items[{i}]: expected an object")
            out.append(_label(raw, f"{name}: items[{i}]", defaults))
        return out
    reader = csv.DictReader(text.splitlines())
    fields = [f.strip() for f in reader.fieldnames or []]
    for need in ("path", "decision"):
        if need not in fields:
            raise ConfigError(f'{name}: no "{need}" column (columns: {", ".join(fields)})')
    return [
        _label({k.strip(): v for k, v in row.items() if k}, f"{name}: line {reader.line_num}", {})
        for row in reader
        if any((v or "").strip() for v in row.values() if isinstance(v, str))
    ]


def labels_to_csv(labels: Iterable[Mapping[str, Any]]) -> str:
    """The CSV export of ``labels`` (the report's format), for tests and tools."""
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
    w.writeheader()
    for lab in labels:
        w.writerow({k: "" if lab.get(k) is None else lab.get(k) for k in CSV_COLUMNS})
    return buf.getvalue()


def human_index(labels: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """``{sha256 or absolute path: label}``; later labels win."""
    idx: dict[str, Mapping[str, Any]] = {}
    for lab in labels:
        idx[os.path.abspath(str(lab["path"]))] = lab
        if lab.get("sha256"):
            idx[str(lab["sha256"])] = lab
    return idx


def human_for(result: Mapping[str, Any], index: Mapping[str, Mapping[str, Any]]) -> Any:
    """The label of one result dict: by ``sha256``, else by path; ``None`` if unlabelled."""
    sha = result.get("sha256")
    lab = index.get(str(sha)) if sha else None
    if lab is None and result.get("path"):
        lab = index.get(os.path.abspath(str(result["path"])))
        # a label made on other content at this path is stale
        if lab is not None and sha and lab.get("sha256") and lab.get("sha256") != sha:
            lab = None
    return lab


def attach_human(
    results: Iterable[dict[str, Any]], labels: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Set ``result["human"]`` from the latest matching label; returns the results."""
    index = human_index(labels)
    out = []
    for r in results:
        lab = human_for(r, index)
        if lab is not None:
            r = {
                **r,
                "human": {
                    k: lab.get(k)
                    for k in ("decision", "category", "note", "reviewer", "reviewed_at")
                },
            }
        out.append(r)
    return out
