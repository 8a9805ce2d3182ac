"""Reports and exports over results: one self-contained HTML page; JSONL, CSV, Parquet.

Example::

    from clipsieve import Store
    from clipsieve.report import export_results, write_report

    store = Store("store.sqlite")
    write_report(store.iter_results(), "report.html")
    export_results(store.iter_results(), "results.csv")

Jinja2 is imported only when an HTML report is rendered, and pyarrow only for Parquet.
"""

from clipsieve.report.exports import (
    FORMATS,
    export_results,
    flatten,
    read_export,
    unflatten,
)
from clipsieve.report.html import build_context, render_report, thumbnail_data_uri, write_report

__all__ = [
    "FORMATS",
    "build_context",
    "export_results",
    "flatten",
    "read_export",
    "render_report",
    "thumbnail_data_uri",
    "unflatten",
    "write_report",
]
