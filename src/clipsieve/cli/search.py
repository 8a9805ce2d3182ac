"""``clipsieve search``, ``clipsieve similar`` and ``clipsieve index``: parse, call
:mod:`clipsieve.search`, print."""

from __future__ import annotations

import sys
from typing import IO, Any

import click

from clipsieve import settings
from clipsieve.cli.common import (
    ENCODERS,
    check_outputs,
    make_console,
    open_existing_store,
    open_output,
    store_option,
    write_jsonl,
    writing,
)


def _model_option(f: Any) -> Any:
    f = click.option("--encoder", envvar="CLIPSIEVE_ENCODER", default="torch",
                     show_default=True, show_envvar=True, type=click.Choice(list(ENCODERS)),
                     help="Whose stored embeddings: those the scans with this encoder "
                          "computed (a text query is encoded by it too).")(f)
    return click.option("--model", "-m", envvar="CLIPSIEVE_MODEL", default=settings.DEFAULT_MODEL,
                        show_default=True, show_envvar=True,
                        help="Whose stored embeddings to search (id or local folder).")(f)


def _hit_options(f: Any) -> Any:
    opts: list[Any] = [
        click.option("--top", default=20, show_default=True, type=click.IntRange(1, 100_000),
                     help="Number of hits."),
        click.option("--min-score", type=click.FloatRange(-1, 1),
                     help="Leave out hits whose cosine similarity is below this."),
        click.option("--where", "where", multiple=True, metavar="EXPR",
                     help="Only images whose stored result satisfies this condition (the "
                          "`filter --where` grammar); repeatable, combined with `and`."),
        click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table",
                     show_default=True, help="A table, or one JSON object per hit."),
        click.option("--out", "-o", type=click.Path(dir_okay=False, allow_dash=True),
                     help="Write the table or JSONL here instead of stdout."),
        click.option("--report", "report_path", type=click.Path(dir_okay=False),
                     help="Also write an HTML grid of the hits (thumbnails, scores; flagged "
                          "ones blurred)."),
        click.option("--exact", is_flag=True,
                     help="Exact search even when a fresh index exists."),
        click.option("--quiet", "-q", is_flag=True, help="No summary line on stderr."),
        _model_option,
        store_option(),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _analyzer(model: str, store_path: str | None, **kw: Any) -> Any:
    from clipsieve.pipeline import Analyzer

    return Analyzer(model=model, store=open_existing_store(store_path), pixel_features=False,
                    **kw)


def _stored(store_path: str | None) -> list[str]:
    """The store: search outputs must never overwrite it (issue #8)."""
    return [str(store_path or settings.default_store_path())]


def _emit(result: Any, query: str, fmt: str, out: str | None, report_path: str | None,
          quiet: bool) -> None:
    from clipsieve.search import iter_hit_rows

    with open_output(out) as fh:
        if fmt == "jsonl":
            for row in iter_hit_rows(result):
                write_jsonl(fh, row)
        else:
            _print_table(fh, result)
    if report_path:
        from clipsieve.report.search_html import write_search_report

        with writing(report_path):
            write_search_report(result, report_path, query=query)
    if not quiet:
        whose = f", {result.encoder} embeddings" if result.encoder != "torch" else ""
        click.echo(f"{len(result.hits)} hits from {result.candidates} stored embeddings "
                   f"({result.method} search{whose})", err=True)
        if result.note:
            click.echo(f"note: {result.note}", err=True)
        if report_path:
            click.echo(f"report: {report_path}", err=True)


def _print_table(fh: IO[str], result: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(header_style="bold")
    for name in ("#", "score", "path", "decision", "quality"):
        table.add_column(name, overflow="fold", no_wrap=name in ("#", "score"))
    for i, h in enumerate(result.hits, 1):
        row = h.to_dict()
        extra = f" (+{len(h.results) - 1})" if len(h.results) > 1 else ""
        q = (row.get("quality") or {}).get("score")
        table.add_row(str(i), f"{h.score:.4f}", Text((h.path or f"sha256:{h.sha256}") + extra),
                      Text((row.get("moderation") or {}).get("decision") or "-"),
                      f"{q:.1f}" if isinstance(q, (int, float)) else "-")
    make_console(fh).print(table)
    fh.flush()


@click.command()
@click.argument("text")
@_hit_options
@click.option("--device", envvar="CLIPSIEVE_DEVICE", default="auto", show_default=True,
              help="Where the text encoder runs: auto, cpu, cuda, cuda:N or mps.")
@click.option("--precision", envvar="CLIPSIEVE_PRECISION", default="auto", show_default=True,
              type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
              help="Precision of the text encoder.")
def search(text: str, top: int, min_score: float | None, where: tuple[str, ...], fmt: str,
           out: str | None, report_path: str | None, exact: bool, quiet: bool, model: str,
           encoder: str, store_path: str | None, device: str, precision: str) -> None:
    """Find stored images by text: the nearest embeddings to the text's embedding.

    Only the text is encoded (kept in the store for the next time); images are neither
    decoded nor encoded: the candidates are the embeddings of every image scanned with
    --model. Uses the index written by `clipsieve index build` when it is fresh, else an
    exact search.

    \b
    Example:
      clipsieve search "a dog on a beach" --top 20
      clipsieve search "a red car" --where 'moderation.decision == "allow"' --report cars.html
    """
    check_outputs({"--out": out, "--report": report_path}, lambda: _stored(store_path))
    analyzer = _analyzer(model, store_path, encoder=encoder, device=device, precision=precision)
    try:
        result = analyzer.search(text=text, top=top, min_score=min_score,
                                 where=list(where) or None, exact=exact)
    finally:
        analyzer.close()
    _emit(result, f'text "{text}"', fmt, out, report_path, quiet)
    sys.exit(0)


@click.command()
@click.argument("image", metavar="FILE_OR_SHA")
@_hit_options
@click.option("--include-self", is_flag=True, help="Keep the query image itself among the hits.")
def similar(image: str, top: int, min_score: float | None, where: tuple[str, ...], fmt: str,
            out: str | None, report_path: str | None, exact: bool, quiet: bool, model: str,
            encoder: str, store_path: str | None, include_self: bool) -> None:
    """Find stored images like one image: a file already scanned, or a content sha256.

    The query is the image's stored embedding (no decoding, no model work); the image
    itself is left out of the hits unless --include-self.

    \b
    Example:
      clipsieve similar flagged/upload-123.jpg --top 20 --min-score 0.9
      clipsieve similar 3f5a…e1 --format jsonl
    """
    check_outputs({"--out": out, "--report": report_path},
                  lambda: [image, *_stored(store_path)])
    analyzer = _analyzer(model, store_path, encoder=encoder)
    try:
        result = analyzer.search(image=image, top=top, min_score=min_score,
                                 where=list(where) or None, exact=exact,
                                 include_self=include_self)
    finally:
        analyzer.close()
    _emit(result, f"like {image}", fmt, out, report_path, quiet)
    sys.exit(0)


@click.group()
def index() -> None:
    """The approximate search index beside the store (FAISS).

    The default kind, pq, is a 4-bit product-quantisation fast scan over every embedding
    whose best candidates are re-scored exactly; ivf (inverted lists) is the index of
    earlier versions.

    \b
    Example:
      clipsieve index build --store project.sqlite
      clipsieve index status
    """


@index.command("build")
@_model_option
@store_option()
@click.option("--kind", type=click.Choice(["pq", "ivf"]),
              help="pq: a PQ fast scan with exact re-ranking, for any data; ivf: inverted "
                   "lists, for clustered data [default: pq, or ivf with --lists/--probes].")
@click.option("--rerank", type=click.IntRange(1),
              help="(pq) Candidates scored exactly per hit wanted: --top 10 scores 10 × this "
                   "[default: 32].")
@click.option("--lists", type=click.IntRange(1),
              help="(ivf) Inverted lists [default: about 2√N].")
@click.option("--probes", type=click.IntRange(1),
              help="(ivf) Lists visited per query [default: max(8, lists/128)].")
@click.option("--quiet", "-q", is_flag=True, help="No summary line.")
def index_build(model: str, encoder: str, store_path: str | None, kind: str | None,
                rerank: int | None, lists: int | None, probes: int | None, quiet: bool) -> None:
    """Build (or rebuild) the search index of one model's stored embeddings.

    Written beside the store (STORE.index-<tag>.faiss, .ids.npy, .json). Search uses it
    while it covers exactly the store's embeddings, and falls back to exact search after
    new scans until it is built again. Needs faiss-cpu (pip install 'clipsieve[search]').

    \b
    Example:
      clipsieve index build --store project.sqlite
      clipsieve index build --rerank 64        # higher recall, a little slower
      clipsieve index build --kind ivf --lists 2000 --probes 16
    """
    from clipsieve.backends.clip import resolve_model_id
    from clipsieve.search import build_index, index_paths, stored_prep

    store = open_existing_store(store_path)
    try:
        model_id = resolve_model_id(model)
        prep = stored_prep(store, model_id, encoder=encoder)
        info = build_index(store, model_id, prep, kind=kind, rerank=rerank, lists=lists,
                           probes=probes, encoder=encoder)
        where = index_paths(store.path, model_id, prep, encoder)[0]
    finally:
        store.close()
    if not quiet:
        click.echo(f"indexed {info.count} embeddings ({info.dim}-d, {info.kind}: "
                   f"{info.describe()}) in {info.build_seconds:.1f}s: {where}", err=True)


@index.command("status")
@_model_option
@store_option()
def index_status_cmd(model: str, encoder: str, store_path: str | None) -> None:
    """Say whether the index of a model exists and is fresh (one JSON object)."""
    import json

    from clipsieve.backends.clip import resolve_model_id
    from clipsieve.search import index_paths, index_status, stored_prep

    store = open_existing_store(store_path)
    try:
        model_id = resolve_model_id(model)
        prep = stored_prep(store, model_id, encoder=encoder)
        info, why = index_status(store, model_id, prep, encoder=encoder)
        count, _ = store.embedding_fingerprint(model_id, prep, encoder=encoder)
        out = {"model": model_id, "prep": prep, "encoder": encoder, "embeddings": count,
               "index": (str(index_paths(store.path, model_id, prep, encoder)[0])
                         if info or why else None),
               "kind": info.kind if info else None, "params": info.params if info else None,
               "indexed": info.count if info else 0,
               "fresh": bool(info) and why is None, "note": why}
    finally:
        store.close()
    click.echo(json.dumps(out))
