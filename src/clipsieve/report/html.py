"""One self-contained HTML report over results.

Everything is inside the file: thumbnails as base64 JPEG (about 128 px), the styles, a few
lines of vanilla JavaScript (sortable and filterable table, click to un-blur) and the charts as
inline SVG (quality histogram, one score distribution per moderation category). It loads
nothing from the network. Thumbnails of items that moderation blocked or sent to review are
blurred until clicked.
"""

from __future__ import annotations

import base64
import io
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from clipsieve.errors import ConfigError
from clipsieve.report.exports import as_dict

#: Default thumbnail side in pixels.
THUMB_SIZE = 128
_FLAG_DECISIONS = ("block", "review")


def _num(v: Any) -> float | None:
    if isinstance(v, Mapping):
        v = v.get("score")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def thumbnail_data_uri(path: str, size: int = THUMB_SIZE) -> str | None:
    """A ``data:image/jpeg;base64,…`` thumbnail of an image file, or ``None`` if unreadable."""
    try:
        from clipsieve.media.decode import DecodeLimits, decode_image, read_bytes

        limits = DecodeLimits()
        dec = decode_image(read_bytes(path, limits), path, min_side=size, limits=limits)
        im = dec.image
        im.thumbnail((size, size))
        buf = io.BytesIO()
        im.convert("RGB").save(buf, "JPEG", quality=70, optimize=True)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    except Exception:  # noqa: BLE001 - any unreadable file gets "no preview"
        return None


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
        return cls(title, bars, lo, hi, len(values), width, height, mean)


def _top(d: Any, n: int = 3) -> list[tuple[str, float]]:
    if not isinstance(d, Mapping):
        return []
    scored = [(str(k), s) for k, v in d.items() if (s := _num(v)) is not None]
    return sorted(scored, key=lambda kv: -kv[1])[:n]


def _field(r: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = r.get(name)
    return value if isinstance(value, Mapping) else {}


def _row(r: dict[str, Any], index: int) -> dict[str, Any]:
    q = _field(r, "quality")
    mod = _field(r, "moderation")
    flt = _field(r, "filter")
    err = _field(r, "error")
    decision = mod.get("decision")
    cats = _top(mod.get("categories"), 1)
    reasons = [str(x) for x in (mod.get("reasons") or []) if x]
    freasons = [str(x) for x in (flt.get("reasons") or []) if x]
    flagged = decision in _FLAG_DECISIONS or flt.get("decision") == "review"
    return {
        "index": index,
        "path": str(r.get("path", "")),
        "name": os.path.basename(str(r.get("path", ""))),
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
        "filter_decision": flt.get("decision") or "",
        "filter_reasons": freasons,
        "destination": flt.get("destination"),
        "blur": decision in _FLAG_DECISIONS,
        "flagged": flagged,
        "thumb": None,
    }


def build_context(
    results: Iterable[Any],
    *,
    title: str = "clipsieve report",
    thumbnails: bool = True,
    thumb_size: int = THUMB_SIZE,
    workers: int | None = None,
) -> dict[str, Any]:
    """Everything the template needs, computed from result dicts or ItemResults."""
    items = [as_dict(r) for r in results]
    rows = [_row(r, i) for i, r in enumerate(items)]
    if thumbnails and rows:

        def thumb_source(r: dict[str, Any]) -> str:
            dest = (
                (r.get("filter") or {}).get("destination")
                if isinstance(r.get("filter"), Mapping)
                else None
            )
            return dest if dest and os.path.exists(dest) else str(r.get("path", ""))

        sources = [thumb_source(r) for r in items]
        with ThreadPoolExecutor(max_workers=workers or max(2, os.cpu_count() or 2)) as pool:
            for row, uri in zip(
                rows, pool.map(lambda p: thumbnail_data_uri(p, thumb_size), sources)
            ):
                row["thumb"] = uri
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
    counts: dict[str, int] = {
        "items": len(rows),
        "errors": sum(row["status"] != "ok" for row in rows),
    }
    for key in ("allow", "review", "block"):
        counts[key] = sum(row["moderation"] == key for row in rows)
    for key in ("accept", "reject"):
        counts[key] = sum(row["filter_decision"] == key for row in rows)
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
    return {
        "title": title,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": rows,
        "flagged": [row for row in rows if row["flagged"]],
        "counts": counts,
        "models": models,
        "policies": policies,
        "has_quality": bool(qualities),
        "has_moderation": any(row["moderation"] for row in rows),
        "has_labels": any(row["labels"] for row in rows),
        "has_filter": any(row["filter_decision"] for row in rows),
        "quality_hist": Histogram.build("quality score", qualities, 0, 10) if qualities else None,
        "category_hists": [
            Histogram.build(name, vals, 0, 1, width=240, height=70)
            for name, vals in sorted(per_cat.items())
        ],
        "thumb_size": thumb_size,
    }


def render_report(
    results: Iterable[Any],
    *,
    title: str = "clipsieve report",
    thumbnails: bool = True,
    thumb_size: int = THUMB_SIZE,
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
    ctx = build_context(results, title=title, thumbnails=thumbnails, thumb_size=thumb_size)
    return env.from_string(source).render(**ctx)


def write_report(
    results: Iterable[Any],
    path: str | os.PathLike[str],
    *,
    title: str = "clipsieve report",
    thumbnails: bool = True,
    thumb_size: int = THUMB_SIZE,
) -> int:
    """Write the self-contained HTML report of ``results`` to ``path`` (atomically).

    Args:
        results: result dicts (:meth:`ItemResult.to_dict` schema, optionally with a
            ``filter`` field from a filter run) or :class:`~clipsieve.types.ItemResult`.
        path: the HTML file.
        title: the page title.
        thumbnails: embed thumbnails (read from each file, or from its filter destination).
        thumb_size: thumbnail side in pixels.

    Returns:
        The number of items in the report.

    Example:
        >>> from clipsieve.report import write_report
        >>> write_report(store.iter_results(), "report.html")
    """
    items = [as_dict(r) for r in results]
    html = render_report(items, title=title, thumbnails=thumbnails, thumb_size=thumb_size)
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(html)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return len(items)
