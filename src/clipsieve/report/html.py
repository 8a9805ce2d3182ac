"""One self-contained HTML report over results.

Everything is inside the file: thumbnails as base64 JPEG (about 128 px; or, with
``thumbnails_dir``, JPEG files beside it), the styles, a vanilla script and the charts as
inline SVG (quality histogram, one score distribution per moderation category with its review
and block thresholds). It loads nothing from the network. The items travel as JSON in a
``<script type="application/json">`` block (every ``<``, ``>`` and ``&`` escaped) and the
script draws one page of the table or gallery at a time through ``textContent``, so the page
stays fast at 10,000 items and no result text is ever parsed as HTML. Bounded sections
(flagged items, disagreements between people and the model, named image issues, duplicate
groups) are rendered by the template. Thumbnails of items that moderation blocked or sent to
review are blurred until clicked. Review marks live in the browser's localStorage under the
report id (:func:`report_id`) and are exported as JSON or CSV (:mod:`clipsieve.review`).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from clipsieve.errors import ConfigError
from clipsieve.outfiles import atomic_text
from clipsieve.paths import clean_text, display, from_json
from clipsieve.report.exports import as_dict

#: Default thumbnail side in pixels.
THUMB_SIZE = 128
#: Flagged cards shown above the table (all flagged items are in the table).
FLAGGED_SHOWN = 60
#: Example thumbnails per named image issue.
ISSUE_EXAMPLES = 8
#: Duplicate groups shown side by side.
DUPLICATE_GROUPS_SHOWN = 50
_FLAG_DECISIONS = ("block", "review")


def _num(v: Any) -> float | None:
    if isinstance(v, Mapping):
        v = v.get("score")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def thumbnail_data_uri(path: str, size: int = THUMB_SIZE) -> str | None:
    """A ``data:image/jpeg;base64,…`` thumbnail of an image file, or ``None`` if unreadable."""
    data = thumbnail_bytes(path, size)
    if data is None:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def thumbnail_bytes(path: str, size: int = THUMB_SIZE) -> bytes | None:
    """A JPEG thumbnail (longer side ``size``) of an image file or a tar member
    (``shard.tar#member``), or ``None`` if unreadable."""
    try:
        from clipsieve.media.decode import DecodeLimits, decode_image
        from clipsieve.media.inputs import read_named

        limits = DecodeLimits()
        dec = decode_image(read_named(path, limits), path, min_side=size, limits=limits)
        im = dec.image
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", quality=70, optimize=True)
        return buf.getvalue()
    except Exception:  # noqa: BLE001 - any unreadable file gets "no preview"
        return None


#: Frames in a video's strip, and their height in pixels.
STRIP_FRAMES = 6
STRIP_HEIGHT = 54


def video_strip_data_uris(path: str, duration_ms: int | None, n: int = STRIP_FRAMES,
                          height: int = STRIP_HEIGHT) -> list[str]:
    """``n`` frames of a video evenly spread over its length, as JPEG data URIs (seeks only)."""
    try:
        from clipsieve.video.decode import VideoReader

        with VideoReader(path) as reader:
            dur = duration_ms or reader.info.duration_ms or 0
            times = [int(dur * (k + 0.5) / n) for k in range(n)] if dur else [0]
            w, h = reader.info.width, reader.info.height
            side = max(1, int(round(height * max(w, h) / max(1, h))))
            out = []
            for _t, im in reader.grab(times, side):
                buf = io.BytesIO()
                im.convert("RGB").save(buf, "JPEG", quality=70)
                out.append("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode())
            return out
    except Exception:  # noqa: BLE001 - an unreadable video gets no strip
        return []


def _clock(ms: Any) -> str:
    s = float(ms) / 1000
    return f"{int(s // 60)}:{s % 60:04.1f}"


def _video_row(r: Mapping[str, Any]) -> dict[str, Any] | None:
    """Strip and segment bars of a video result (positions in % of its duration)."""
    if r.get("kind") != "video":
        return None
    dur = r.get("duration_ms") or 0
    bars = []
    lanes = [("segments", r.get("segments") or []),
             ("checks", (_field(r, "quality").get("checks") or []))]
    for lane, items in lanes:
        for it in items:
            if not dur or not isinstance(it, Mapping):
                continue
            a, b = float(it.get("start_ms") or 0), float(it.get("end_ms") or 0)
            kind = it.get("decision") if lane == "segments" else "check"
            what = it.get("category") if lane == "segments" else it.get("kind")
            bars.append({
                "lane": lane,
                "kind": kind,
                "left": round(100 * a / dur, 2),
                "width": round(max(0.6, 100 * (b - a) / dur), 2),
                "title": f"{what} {_clock(a)}–{_clock(b)}"
                + (f" {kind} max {float(it.get('max_score') or 0):.2f}" if lane == "segments"
                   else ""),
            })
    verdict = _field(r, "verdict")
    return {
        "duration": _clock(dur) if dur else "",
        "bars": bars,
        "strip": [],
        "verdict_reason": verdict.get("reason") if verdict.get("category") else None,
        "partial": bool(r.get("partial")),
        "decoded_fraction": r.get("decoded_fraction"),
    }


@dataclass
class Bar:
    """One histogram bar in SVG coordinates."""

    x: float
    y: float
    w: float
    h: float
    count: int
    lo: float
    hi: float


@dataclass
class Histogram:
    """Bars of a histogram of ``values`` over ``[lo, hi]``, ready for the template."""

    title: str
    bars: list[Bar]
    lo: float
    hi: float
    n: int
    width: int
    height: int
    mean: float | None
    marks: list[tuple[str, float, float]] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        title: str,
        values: Sequence[float],
        lo: float,
        hi: float,
        bins: int = 20,
        width: int = 360,
        height: int = 110,
        marks: Mapping[str, float] | None = None,
    ) -> Histogram:
        counts = [0] * bins
        for v in values:
            k = int((min(max(v, lo), hi) - lo) / (hi - lo) * bins)
            counts[min(k, bins - 1)] += 1
        top = max(counts) if counts and max(counts) > 0 else 1
        bw = width / bins
        bars = []
        for k, c in enumerate(counts):
            h = (height - 4) * c / top
            bars.append(
                Bar(
                    round(k * bw + 0.5, 2),
                    round(height - h, 2),
                    round(bw - 1, 2),
                    round(h, 2),
                    c,
                    lo + (hi - lo) * k / bins,
                    lo + (hi - lo) * (k + 1) / bins,
                )
            )
        mean = sum(values) / len(values) if values else None
        lines = [
            (name, float(v), round((min(max(v, lo), hi) - lo) / (hi - lo) * width, 2))
            for name, v in sorted((marks or {}).items(), key=lambda kv: kv[1])
        ]
        return cls(title, bars, lo, hi, len(values), width, height, mean, lines)


def _top(d: Any, n: int = 3) -> list[tuple[str, float]]:
    if not isinstance(d, Mapping):
        return []
    scored = [(str(k), s) for k, v in d.items() if (s := _num(v)) is not None]
    return sorted(scored, key=lambda kv: -kv[1])[:n]


def _field(r: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = r.get(name)
    return value if isinstance(value, Mapping) else {}


def _issues(r: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = _field(r, "quality").get("issues")
    out = []
    for it in raw if isinstance(raw, list) else []:
        if isinstance(it, Mapping) and it.get("name"):
            out.append(dict(it))
        elif isinstance(it, str):
            out.append({"name": it})
    return out


def report_root(paths: Sequence[str]) -> str:
    """The deepest folder holding every path (paths are shown relative to it)."""
    dirs = [os.path.dirname(os.path.abspath(p)) for p in paths if p]
    if not dirs:
        return ""
    try:
        return os.path.commonpath(dirs)
    except ValueError:  # different drives
        return ""


def _rel(path: str, root: str) -> str:
    if not path or not root:
        return path
    try:
        rel = os.path.relpath(os.path.abspath(path), root)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def _row(r: dict[str, Any], index: int, root: str) -> dict[str, Any]:
    q = _field(r, "quality")
    mod = _field(r, "moderation")
    flt = _field(r, "filter")
    err = _field(r, "error")
    human = _field(r, "human")
    decision = mod.get("decision")
    cats = _top(mod.get("categories"), 1)
    reasons = [str(x) for x in (mod.get("reasons") or []) if x]
    video = _video_row(r)
    if video is not None:  # a video is judged by its verdict
        verdict = _field(r, "verdict")
        decision = verdict.get("decision")
        cats = ([(str(verdict["category"]), float(verdict.get("max_score") or 0))]
                if verdict.get("category") else [])
        reasons = [str(verdict["reason"])] if verdict.get("category") else []
    freasons = [str(x) for x in (flt.get("reasons") or []) if x]
    flagged = decision in _FLAG_DECISIONS or flt.get("decision") == "review"
    path = display(str(r.get("path", "")))  # names that are not UTF-8 shown with U+FFFD
    dest = display(str(flt["destination"])) if flt.get("destination") else None
    return {
        "index": index,
        "path": path,
        "rel": _rel(path, root),
        "name": os.path.basename(path),
        "sha256": r.get("sha256"),
        "status": r.get("status", "ok"),
        "error": err.get("message") if err else None,
        "size": f"{r['width']}×{r['height']}" if r.get("width") and r.get("height") else "",
        "pixels": (r.get("width") or 0) * (r.get("height") or 0),
        "quality": _num(q.get("score")),
        "technical": _num(q.get("technical")),
        "aesthetic": _num(q.get("aesthetic")),
        "moderation": decision or "",
        "top_category": cats[0] if cats else None,
        "mod_reasons": reasons,
        "labels": _top(r.get("labels")),
        "issues": _issues(r),
        "filter_decision": flt.get("decision") or "",
        "filter_reasons": freasons,
        "destination": dest,
        "dest_rel": _rel(str(dest), root) if dest else None,
        "duplicate_of": flt.get("duplicate_of"),
        "human": human.get("decision") or "",
        "human_by": human.get("reviewer") or "",
        "human_note": human.get("note") or "",
        "blur": decision in _FLAG_DECISIONS,
        "flagged": flagged,
        "thumb": None,
        "video": video,
    }


def report_id(items: Sequence[Mapping[str, Any]], title: str) -> str:
    """A stable id of the report's item set (review marks in the browser are kept under it)."""
    h = hashlib.sha256(title.encode("utf-8"))
    for r in items:
        h.update(b"\0" + str(r.get("path", "")).encode("utf-8", "replace"))
        h.update(b"\1" + str(r.get("sha256") or "").encode("ascii", "replace"))
    return h.hexdigest()[:16]


def _thresholds(items: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per category, the most common review and block thresholds the results were judged by."""
    seen: dict[str, dict[str, Counter[float]]] = {}
    for r in items:
        th = _field(r, "moderation").get("thresholds")
        if not isinstance(th, Mapping):
            continue
        for cat, levels in th.items():
            if not isinstance(levels, Mapping):
                continue
            for level in ("review", "block"):
                v = _num(levels.get(level))
                if v is not None:
                    seen.setdefault(str(cat), {}).setdefault(level, Counter())[round(v, 6)] += 1
    return {
        cat: {level: c.most_common(1)[0][0] for level, c in levels.items()}
        for cat, levels in seen.items()
    }


def _duplicate_groups(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups of duplicates: from a filter run (``duplicate of``), ``near_duplicate`` issues,
    or identical content hashes; each with the kept file first."""
    by_path = {r["path"]: r for r in rows}
    groups: dict[str, list[dict[str, Any]]] = {}
    member: set[int] = set()

    def add(keeper: str, r: dict[str, Any]) -> None:
        g = groups.setdefault(keeper, [])
        if r["index"] not in member:
            g.append(r)
            member.add(r["index"])

    for r in rows:
        of = r.get("duplicate_of")
        if not of:
            for it in r["issues"]:
                if it.get("name") == "near_duplicate" and it.get("of"):
                    of = str(it["of"])
                    break
        if of:
            add(of, r)
    for r in rows:  # identical bytes, not grouped by a filter run
        if r["index"] in member or r["path"] in groups or not r.get("sha256"):
            continue
        same = [
            o for o in rows
            if o is not r and o.get("sha256") == r["sha256"] and o["index"] not in member
            and o["path"] not in groups
        ]
        if same:
            for o in same:
                add(r["path"], o)
    out = []
    for keeper, dups in groups.items():
        k = by_path.get(keeper)
        out.append({"keeper": k, "keeper_path": keeper, "members": dups})
    return out


def build_context(
    results: Iterable[Any],
    *,
    title: str = "clipsieve report",
    thumbnails: bool = True,
    thumb_size: int = THUMB_SIZE,
    workers: int | None = None,
    thumbnails_dir: str | os.PathLike[str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Everything the template needs, computed from result dicts or ItemResults.

    Args:
        thumbnails_dir: write thumbnails there as JPEG files and link them (relative to
            ``base_dir``, the report's folder) instead of embedding them.
    """
    items = [as_dict(r) for r in results]
    root = report_root(
        [str(r.get("path", "")) for r in items]
        + [str(_field(r, "filter").get("destination")) for r in items
           if _field(r, "filter").get("destination")]
    )
    rows = [_row(r, i, root) for i, r in enumerate(items)]
    thumbs: dict[str, str] = {}
    if thumbnails and rows:

        def thumb_source(r: dict[str, Any]) -> str:
            dest = (
                (r.get("filter") or {}).get("destination")
                if isinstance(r.get("filter"), Mapping)
                else None
            )
            return dest if dest and os.path.exists(dest) else from_json(r)

        keys = [
            f"s{r.get('sha256')}" if r.get("sha256") else f"p{i}" for i, r in enumerate(items)
        ]
        todo: dict[str, str] = {}
        for k, r, row in zip(keys, items, rows):
            if row["video"] is None:  # videos get a strip of frames below
                todo.setdefault(k, thumb_source(r))
        out_dir = os.fspath(thumbnails_dir) if thumbnails_dir is not None else None
        if out_dir is not None:
            os.makedirs(out_dir, exist_ok=True)
        base = os.path.abspath(os.fspath(base_dir)) if base_dir is not None else os.getcwd()

        def make(kv: tuple[str, str]) -> tuple[str, str | None]:
            k, src = kv
            if out_dir is None:
                return k, thumbnail_data_uri(src, thumb_size)
            name = hashlib.sha256(f"{k}:{thumb_size}".encode()).hexdigest()[:24] + ".jpg"
            dest = os.path.join(out_dir, name)
            if not os.path.exists(dest):
                data = thumbnail_bytes(src, thumb_size)
                if data is None:
                    return k, None
                tmp = f"{dest}.tmp-{os.getpid()}-{threading.get_ident()}"
                with open(tmp, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, dest)
            rel = os.path.relpath(os.path.abspath(dest), base)
            return k, urllib.parse.quote(rel.replace(os.sep, "/"))

        with ThreadPoolExecutor(max_workers=workers or max(2, os.cpu_count() or 2)) as pool:
            for k, uri in pool.map(make, todo.items()):
                if uri is not None:
                    thumbs[k] = uri
        for row, k in zip(rows, keys):
            row["thumb"] = thumbs.get(k)
        videos = [i for i, row in enumerate(rows) if row["video"] is not None]
        if videos:
            with ThreadPoolExecutor(max_workers=workers or max(2, os.cpu_count() or 2)) as pool:
                strips = pool.map(
                    lambda i: video_strip_data_uris(thumb_source(items[i]),
                                                    items[i].get("duration_ms")), videos)
                for i, strip in zip(videos, strips):
                    rows[i]["video"]["strip"] = strip
                    rows[i]["thumb"] = strip[0] if strip else None
    qualities = [row["quality"] for row in rows if row["quality"] is not None]
    per_cat: dict[str, list[float]] = {}
    for r in items:
        mod = r.get("moderation")
        cats = mod.get("categories") if isinstance(mod, Mapping) else None
        if isinstance(cats, Mapping):
            for name, v in cats.items():
                s = _num(v)
                if s is not None:
                    per_cat.setdefault(str(name), []).append(s)
    thresholds = _thresholds(items)
    n_ok = sum(row["status"] == "ok" for row in rows)
    counts: dict[str, int] = {
        "items": len(rows),
        "errors": len(rows) - n_ok,
    }
    for key in ("allow", "review", "block"):
        counts[key] = sum(row["moderation"] == key and row["status"] == "ok" for row in rows)
    counts["unmoderated"] = n_ok - counts["allow"] - counts["review"] - counts["block"]
    for key in ("accept", "review", "reject"):
        counts[f"route_{key}"] = sum(row["filter_decision"] == key for row in rows)
    counts["unrouted"] = n_ok - sum(counts[f"route_{k}"] for k in ("accept", "review", "reject"))
    issue_rows: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        for it in row["issues"]:
            issue_rows.setdefault(str(it["name"]), []).append({**row, "issue": it})
    issues = [
        {"name": name, "count": len(rs), "examples": rs[:ISSUE_EXAMPLES]}
        for name, rs in sorted(issue_rows.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]
    disagreements = [
        row for row in rows if row["human"] and row["moderation"] and row["human"] != row["moderation"]
    ]
    models = sorted({str(r.get("model")) for r in items if r.get("model")})
    policies = sorted(
        {
            str((r.get("moderation") or {}).get("policy", {}).get("name"))
            for r in items
            if isinstance(r.get("moderation"), Mapping)
            and isinstance(r["moderation"].get("policy"), Mapping)
            and r["moderation"]["policy"].get("name")
        }
    )
    from clipsieve.provenance import is_mixed, summary

    provenance = [
        f"{field}: " + ", ".join(f"{label} ({n})" for label, n in sorted(counts_.items()))
        for field, counts_ in summary(list(items)).items()
    ]
    mixed = sum(1 for r in items if is_mixed(r))
    flagged = [row for row in rows if row["flagged"]]
    has = {
        "quality": bool(qualities),
        "moderation": any(row["moderation"] for row in rows),
        "labels": any(row["labels"] for row in rows),
        "filter": any(row["filter_decision"] for row in rows),
        "issues": bool(issue_rows),
        "human": any(row["human"] for row in rows),
    }
    rid = report_id(items, title)
    return {
        "title": title,
        "report_id": rid,
        "root": root,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": rows,
        "rows_json": _script_json(
            {
                "report_id": rid,
                "has": has,
                "thumb_size": thumb_size,
                "rows": [_js_row(row) for row in rows],
            }
        ),
        "flagged": flagged[:FLAGGED_SHOWN],
        "flagged_total": len(flagged),
        "counts": counts,
        "models": models,
        "policies": policies,
        "provenance": provenance,
        "mixed_runs": mixed,
        "has_quality": has["quality"],
        "has_video": any(row["video"] is not None for row in rows),
        "has_moderation": has["moderation"],
        "has_labels": has["labels"],
        "has_filter": has["filter"],
        "has_issues": has["issues"],
        "issues": issues,
        "duplicates": _duplicate_groups(rows)[:DUPLICATE_GROUPS_SHOWN],
        "disagreements": disagreements,
        "quality_hist": Histogram.build("quality score", qualities, 0, 10) if qualities else None,
        "category_hists": [
            Histogram.build(
                name, vals, 0, 1, width=240, height=70, marks=thresholds.get(name, {})
            )
            for name, vals in sorted(per_cat.items())
        ],
        "thumb_size": thumb_size,
    }


def _js_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """The compact form of a row that the page's script renders."""
    return {
        "i": row["index"],
        "p": row["path"],
        "r": row["rel"],
        "n": row["name"],
        "h": row["sha256"],
        "s": row["status"],
        "e": row["error"],
        "z": row["size"],
        "px": row["pixels"],
        "q": row["quality"],
        "qt": row["technical"],
        "qa": row["aesthetic"],
        "m": row["moderation"],
        "c": list(row["top_category"]) if row["top_category"] else None,
        "why": row["mod_reasons"] + row["filter_reasons"],
        "l": [list(x) for x in row["labels"]],
        "iss": [str(it["name"]) for it in row["issues"]],
        "f": row["filter_decision"],
        "d": row["dest_rel"],
        "hd": row["human"],
        "hb": row["human_by"],
        "t": row["thumb"],
        "b": row["blur"],
        "v": row["video"],
    }


def _script_json(data: Any) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``</script>`` or ``<!--``)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def render_report(
    results: Iterable[Any],
    *,
    title: str = "clipsieve report",
    thumbnails: bool = True,
    thumb_size: int = THUMB_SIZE,
    thumbnails_dir: str | os.PathLike[str] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
) -> str:
    """The report as one HTML string.

    Raises:
        ConfigError: Jinja2 is not installed.
    """
    try:
        import jinja2
    except ImportError:
        raise ConfigError("the HTML report needs Jinja2: pip install 'Jinja2>=3.1'") from None
    from importlib.resources import files

    source = (files("clipsieve.report") / "templates" / "report.html.j2").read_text("utf-8")
    env = jinja2.Environment(
        autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined
    )
    env.filters["fmt"] = lambda v, nd=2: "" if v is None else f"{v:.{nd}f}"
    ctx = build_context(
        results,
        title=title,
        thumbnails=thumbnails,
        thumb_size=thumb_size,
        thumbnails_dir=thumbnails_dir,
        base_dir=base_dir,
    )
    return env.from_string(source).render(**ctx)


def write_report(
    results: Iterable[Any],
    path: str | os.PathLike[str],
    *,
    title: str = "clipsieve report",
    thumbnails: bool = True,
    thumb_size: int = THUMB_SIZE,
    thumbnails_dir: str | os.PathLike[str] | None = None,
) -> int:
    """Write the self-contained HTML report of ``results`` to ``path`` (atomically).

    Args:
        results: result dicts (:meth:`ItemResult.to_dict` schema, optionally with a
            ``filter`` field from a filter run) or :class:`~clipsieve.types.ItemResult`.
        path: the HTML file.
        title: the page title.
        thumbnails: embed thumbnails (read from each file, or from its filter destination).
        thumb_size: thumbnail side in pixels.
        thumbnails_dir: write the thumbnails as JPEG files into this folder and link them
            (relative to the report's folder) instead of embedding them: the HTML stays small
            for large collections.

    Returns:
        The number of items in the report.

    Example:
        >>> from clipsieve.report import write_report
        >>> write_report(store.iter_results(), "report.html")
    """
    items = [as_dict(r) for r in results]
    path = os.fspath(path)
    html = render_report(
        items,
        title=title,
        thumbnails=thumbnails,
        thumb_size=thumb_size,
        thumbnails_dir=thumbnails_dir,
        base_dir=os.path.dirname(os.path.abspath(path)),
    )
    with atomic_text(path) as fh:
        fh.write(clean_text(html))
    return len(items)
