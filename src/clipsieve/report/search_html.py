"""A self-contained HTML grid of search hits (``clipsieve search --report``).

One card per hit: thumbnail, cosine score, rank, moderation decision and file name.
Thumbnails of items that moderation blocked or sent to review are blurred until clicked, as
in the report.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clipsieve.errors import ConfigError
from clipsieve.report.html import _FLAG_DECISIONS, THUMB_SIZE, thumbnail_data_uri


def render_search_report(
    result: Any, *, query: str, title: str = "clipsieve search",
    thumbnails: bool = True, thumb_size: int = THUMB_SIZE,
) -> str:
    """The grid of ``result`` (a :class:`clipsieve.search.SearchResult`) as an HTML string."""
    try:
        import jinja2
    except ImportError:
        raise ConfigError("the HTML report needs Jinja2: pip install 'Jinja2>=3.1'") from None
    from importlib.resources import files

    hits = []
    for rank, h in enumerate(result.hits, 1):
        first = h.results[0] if h.results else {}
        mod = first.get("moderation") if isinstance(first.get("moderation"), dict) else {}
        decision = mod.get("decision") if mod else None
        path = h.path or h.sha256
        hits.append({
            "rank": rank, "score": float(h.score), "path": path,
            "name": os.path.basename(path) or path, "decision": decision or "",
            "blur": decision in _FLAG_DECISIONS, "more": max(0, len(h.results) - 1),
            "thumb": None, "source": h.path,
        })
    if thumbnails and hits:
        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
            uris = pool.map(
                lambda p: thumbnail_data_uri(p, thumb_size) if p else None,
                [h["source"] for h in hits],
            )
            for h, uri in zip(hits, uris):
                h["thumb"] = uri
    source = (files("clipsieve.report") / "templates" / "search.html.j2").read_text("utf-8")
    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    return env.from_string(source).render(
        title=title, query=query, hits=hits, method=result.method,
        candidates=result.candidates, model=result.model,
        generated=time.strftime("%Y-%m-%d %H:%M:%S"), thumb_size=thumb_size,
    )


def write_search_report(
    result: Any, path: str | os.PathLike[str], *, query: str,
    title: str = "clipsieve search", thumbnails: bool = True, thumb_size: int = THUMB_SIZE,
) -> int:
    """Write the grid of hits to ``path`` (atomically); returns the number of hits."""
    html = render_search_report(result, query=query, title=title, thumbnails=thumbnails,
                                thumb_size=thumb_size)
    from clipsieve.outfiles import atomic_text
    from clipsieve.paths import clean_text

    with atomic_text(path) as fh:  # never renamed over a device (issue #8)
        fh.write(clean_text(html))
    return len(result.hits)
