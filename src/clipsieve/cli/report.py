"""``clipsieve report`` and ``clipsieve export``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import click

from clipsieve.cli.common import (
    ENCODERS,
    check_outputs,
    open_existing_store,
    plural,
    store_option,
    writing,
)
from clipsieve.paths import from_json


def _store_options(f: Any) -> Any:
    # no envvar: CLIPSIEVE_MODEL picks the model that scans, it never hides stored rows here
    f = click.option(
        "--model",
        "-m",
        help="Only results of this model (id or local folder) [default: all models; "
        "CLIPSIEVE_MODEL is not used here].",
    )(f)
    f = click.option(
        "--run",
        "run_id",
        metavar="RUN_ID",
        help="Only the head fields computed in this scan run (see provenance.*.run) "
        "[default: the latest of each field].",
    )(f)
    f = click.option(
        "--policy",
        "policy_name",
        metavar="NAME",
        help="Only moderation made under this policy name [default: the latest].",
    )(f)
    return store_option()(f)


def _under(path: str, prefixes: list[str]) -> bool:
    if not prefixes:
        return True
    p = os.path.abspath(path)
    return any(p == q or p.startswith(q.rstrip(os.sep) + os.sep) for q in prefixes)


def stored_results(
    store_path: str | None, model: str | None, paths: tuple[str, ...], *, human: bool = False,
    run: str | None = None, policy: str | None = None, warn: bool = False,
) -> Iterator[dict[str, Any]]:
    """Stored results (of one model, under some paths), sorted by path.

    With ``human``, each result that a person reviewed carries a ``human`` field. ``run`` and
    ``policy`` keep only head fields of that provenance (:func:`clipsieve.provenance.select`).
    With ``warn``, stderr says how many rows ``--model`` hid and which items hold fields
    from different runs.
    """
    from clipsieve.backends.clip import resolve_model_id
    from clipsieve.provenance import is_mixed, runs_of, select

    store = open_existing_store(store_path, write=False)
    try:
        prefixes = [os.path.abspath(p) for p in paths]
        rows = list(store.iter_results(None))
        labels = store.human_labels() if human else []
    finally:
        store.close()
    rows = [r for r in rows if _under(from_json(r), prefixes)]
    if model:
        want = resolve_model_id(model)
        shown = [r for r in rows if r.get("model") == want]
        hidden = len(rows) - len(shown)
        if warn and hidden:
            others = sorted({str(r.get("model")) for r in rows if r.get("model") != want})
            click.echo(
                f"warning: --model {model} hides {hidden} stored "
                f"{'result' if hidden == 1 else 'results'} of other models "
                f"({', '.join(others)}); leave --model out to show all", err=True,
            )
        rows = shown
    if labels:
        from clipsieve.review import attach_human

        rows = attach_human(rows, labels)
    if run is not None or policy is not None:
        rows = [select(r, run=run, policy=policy) for r in rows]
    if warn:
        mixed = [r for r in rows if is_mixed(r)]
        if mixed:
            ex = mixed[0]
            click.echo(
                f"warning: {len(mixed)} {'item has' if len(mixed) == 1 else 'items have'} "
                f"fields from different runs (e.g. {ex.get('path')}: runs "
                f"{', '.join(sorted(runs_of(ex)))}); --run RUN_ID shows one run's fields",
                err=True,
            )
    yield from rows


def _no_results_message(store_path: str | None, model: str | None, paths: tuple[str, ...]) -> str:
    store = open_existing_store(store_path, write=False)
    try:
        models = [m for (m,) in store.execute("SELECT DISTINCT model FROM results ORDER BY model")]
    finally:
        store.close()
    what = "no stored results"
    if model:
        what += f" for model {model}"
    if paths:
        what += " under " + ", ".join(paths)
    if models:
        what += f" (the store {store.path} has results of: {', '.join(models)})"
    else:
        what += f" (the store {store.path} holds no results: run `clipsieve scan` first)"
    return what


def _inputs(store_path: str | None, results: list[dict[str, Any]]) -> Iterator[str]:
    """The store and the files of its results: what report and export must never overwrite."""
    from clipsieve import settings

    yield str(store_path or settings.default_store_path())
    for r in results:
        yield from_json(r)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--out", "-o", required=True, type=click.Path(dir_okay=False), help="The HTML file to write."
)
@click.option("--title", default="clipsieve report", show_default=True, help="Page title.")
@click.option(
    "--thumb-size",
    default=128,
    show_default=True,
    type=click.IntRange(16, 512),
    help="Thumbnail side in pixels.",
)
@click.option("--no-thumbnails", is_flag=True, help="Leave thumbnails out (smaller file).")
@click.option(
    "--thumbnails-dir",
    type=click.Path(file_okay=False),
    help="Write thumbnails as JPEG files into this folder and link them, instead of "
    "embedding them (keeps the HTML small for large collections).",
)
@_store_options
def report(
    paths: tuple[str, ...],
    out: str,
    title: str,
    thumb_size: int,
    no_thumbnails: bool,
    thumbnails_dir: str | None,
    store_path: str | None,
    model: str | None,
    run_id: str | None,
    policy_name: str | None,
) -> None:
    """Write one self-contained HTML report of the stored results.

    The page embeds everything (thumbnails as JPEG data, styles, script) and loads nothing
    from the network: a sortable, filterable, paginated table with one row per item and a
    gallery view, a quality histogram, score distributions per moderation category with the
    review and block thresholds marked, the flagged items with their reasons, named image
    issues, duplicate groups, and where people and the model disagree. Thumbnails of blocked
    or review items are blurred until clicked. A reviewer can mark items allow / review /
    block (keys a / r / b, or a selection), add notes, and export the marks as JSON or CSV
    for `clipsieve review import`. Give PATHS (files or folders) to report only the
    results under them. With no stored results to show, nothing is written (exit code 3).

    \b
    Example:
      clipsieve report --out report.html
      clipsieve report photos/2024 --out 2024.html --store project.sqlite
    """
    from clipsieve.errors import StoreError
    from clipsieve.report import write_report

    results = list(stored_results(store_path, model, paths, human=True, run=run_id,
                                  policy=policy_name, warn=True))
    if not results:
        raise StoreError(_no_results_message(store_path, model, paths) + "; no report written")
    check_outputs({"--out": out}, lambda: _inputs(store_path, results))
    with writing(out):
        n = write_report(
            results,
            out,
            title=title,
            thumbnails=not no_thumbnails,
            thumb_size=thumb_size,
            thumbnails_dir=thumbnails_dir,
        )
    click.echo(f"report of {plural(n, 'item')} written to {out}", err=True)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "parquet"]),
    help="Output format [default: from the --out name, else jsonl].",
)
@click.option(
    "--out",
    "-o",
    default="-",
    show_default=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Output file ('-' = stdout, for jsonl and csv).",
)
@click.option("--embeddings", is_flag=True,
              help="Add each result's stored embedding: a fixed-size list column in Parquet, a "
                   "JSON list in JSONL and CSV (one model only).")
@click.option("--embeddings-npy", "npy_dir", type=click.Path(file_okay=False),
              help="Write DIR/embeddings.npy + DIR/ids.parquet (+ embeddings.json) as "
                   "clip-retrieval does, instead of --out.")
@click.option("--encoder", type=click.Choice(list(ENCODERS)),
              help="With --embeddings/--embeddings-npy: the embeddings this encoder computed "
                   "[default: the one the results record].")
@click.option("--frames", is_flag=True,
              help="Also one row per sampled frame of each video (kind \"frame\").")
@_store_options
def export(
    paths: tuple[str, ...], fmt: str | None, out: str, embeddings: bool, npy_dir: str | None,
    encoder: str | None, frames: bool, store_path: str | None, model: str | None,
    run_id: str | None, policy_name: str | None,
) -> None:
    """Export the stored results as JSONL, CSV or Parquet, with the same fields.

    JSONL has one result per line (the scan schema). CSV and Parquet have one row per
    result with dotted columns for nested fields (quality.score, labels.cat,
    moderation.categories.violence); lists are JSON text. Parquet needs pyarrow
    (pip install 'clipsieve[parquet]'). Give PATHS to export only results under them.
    A video is one row (without its frames); --frames adds one row per sampled frame.

    \b
    Example:
      clipsieve export --out results.jsonl
      clipsieve export photos/ --format csv --out results.csv
      clipsieve export --format parquet --out results.parquet
      clipsieve export --embeddings --out vectors.parquet
      clipsieve export --embeddings-npy vectors/
    """
    from clipsieve.report import export_results

    results = list(stored_results(store_path, model, paths, run=run_id, policy=policy_name,
                                  warn=True))
    check_outputs({"--out": None if npy_dir else out}, lambda: _inputs(store_path, results))
    if embeddings or npy_dir:
        with writing(npy_dir or out):
            _export_embeddings(paths, fmt, out, npy_dir, store_path, model, encoder)
        return
    with writing(out):
        n = export_results(results, out, fmt, frames=frames)
    if out != "-":
        click.echo(f"{plural(n, 'row')} written to {out}" if frames
                   else f"{plural(n, 'result')} written to {out}",
                   err=True)


def _export_embeddings(paths: tuple[str, ...], fmt: str | None, out: str, npy_dir: str | None,
                       store_path: str | None, model: str | None, encoder: str | None) -> None:
    from clipsieve.errors import ConfigError
    from clipsieve.report.embeddings import export_embeddings_npy, export_with_embeddings
    from clipsieve.search import stored_prep

    results = list(stored_results(store_path, model, paths))
    models = sorted({str(r.get("model")) for r in results if r.get("model")})
    if len(models) > 1:
        raise ConfigError(f"the results are of {len(models)} models ({', '.join(models)}); "
                          "embeddings are exported for one: pass --model")
    if encoder is None:
        kinds = sorted({str(r.get("encoder") or "torch") for r in results
                        if r.get("status", "ok") == "ok"})
        if len(kinds) > 1:
            raise ConfigError(f"the results were encoded by {len(kinds)} encoders "
                              f"({', '.join(kinds)}); embeddings are exported for one: "
                              "pass --encoder")
        encoder = kinds[0] if kinds else "torch"
    store = open_existing_store(store_path, write=False)
    try:
        if not models:
            from clipsieve.errors import StoreError

            raise StoreError(_no_results_message(store_path, model, paths))
        prep = stored_prep(store, models[0], encoder=encoder)
        if npy_dir:
            n = export_embeddings_npy(store, models[0], prep, results, npy_dir, encoder=encoder)
            click.echo(f"{plural(n, 'embedding')} written to {os.path.join(npy_dir, 'embeddings.npy')} "
                       f"(ids.parquet, embeddings.json beside it)", err=True)
        else:
            n = export_with_embeddings(store, models[0], prep, results, out, fmt,
                                       encoder=encoder)
            if out != "-":
                click.echo(f"{plural(n, 'result')} with embeddings written to {out}", err=True)
    finally:
        store.close()
