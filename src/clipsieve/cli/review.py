"""``clipsieve review import``: human decisions exported from the HTML report, into the store."""

from __future__ import annotations

import os
from collections import Counter

import click

from clipsieve.cli.common import open_existing_store, plural, store_option


@click.group()
def review() -> None:
    """Human review decisions made in the HTML report.

    In `clipsieve report`'s page a reviewer marks items allow, review or block, adds notes,
    and exports the marks (JSON or CSV). `clipsieve review import FILE` keeps them in the
    store as human labels; `calibrate --from-reviews` and `filter --prefer-human` use them,
    and the report shows where people and the model disagree.

    \b
    Example:
      clipsieve report --out report.html        # mark items, click "Export JSON"
      clipsieve review import clipsieve-review-3f2a9c1e.json
      clipsieve calibrate --from-reviews --target-precision 0.9
    """


@review.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--reviewer", help="Reviewer name for marks that carry none.")
@store_option()
def import_cmd(file: str, reviewer: str | None, store_path: str | None) -> None:
    """Store the decisions of a review export (JSON or CSV) as human labels.

    Each mark is kept with its reviewer, time, note and the model's decision at the time;
    a later mark of the same file wins. Marks without a content hash are matched to the
    stored result of their path.

    \b
    Example:
      clipsieve review import clipsieve-review-3f2a9c1e.json --store project.sqlite
    """
    from clipsieve.review import read_review_file

    labels = read_review_file(file)
    store = open_existing_store(store_path)
    try:
        for lab in labels:
            if reviewer and not lab.get("reviewer"):
                lab["reviewer"] = reviewer
            if not lab.get("sha256"):
                rows = store.execute(
                    "SELECT sha256 FROM results WHERE path=? AND sha256 IS NOT NULL "
                    "ORDER BY updated_at DESC LIMIT 1",
                    (os.path.abspath(lab["path"]),),
                )
                if rows:
                    lab["sha256"] = rows[0][0]
        n = store.put_human_labels(labels, source=os.path.abspath(file))
    finally:
        store.close()
    by = Counter(lab["decision"] for lab in labels)
    who = sorted({lab["reviewer"] for lab in labels if lab.get("reviewer")})
    detail = ", ".join(f"{by[d]} {d}" for d in ("allow", "review", "block") if by[d])
    click.echo(
        f"imported {plural(n, 'human label')} from {file}"
        + (f" ({detail})" if detail else "")
        + (f" by {', '.join(who)}" if who else ""),
        err=True,
    )
