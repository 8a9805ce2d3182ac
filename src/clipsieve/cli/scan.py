"""``clipsieve scan``."""

from __future__ import annotations

import sys
from typing import Any

import click

from clipsieve.cli.classify import label_head_options, label_options
from clipsieve.cli.common import (
    Progress,
    collect_sources,
    input_options,
    load_cli_policy,
    make_analyzer,
    model_options,
    open_output,
    threshold_option,
    write_jsonl,
)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--out", "-o", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the output here instead of stdout; a name ending .parquet or .csv "
                   "writes that format directly, in row groups (bounded memory).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "table", "csv", "parquet"]),
              default=None, help="One JSON object per file (jsonl), a table for people, csv or "
                                 "parquet [default: from the --out name, else jsonl].")
@click.option("--policy", "-p", default="default", show_default=True, metavar="NAME|FILE",
              help="Moderation policy (shipped name or .toml file); adds `moderation`.")
@threshold_option
@click.option("--no-moderation", is_flag=True, help="Skip moderation (no `moderation` field).")
@click.option("--quality-head", type=click.Path(dir_okay=False),
              help="Learned head for the aesthetic part of `quality` (.npz from train-quality, "
                   "or a LAION aesthetic .pth).")
@click.option("--no-quality", is_flag=True, help="Skip the quality score (no `quality` field).")
@click.option("--caption", metavar="TEXT",
              help="Caption scored with every image (a sidecar PHOTO.txt is read otherwise).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="Also write a self-contained HTML report of this scan here.")
@click.option("--no-recursive", is_flag=True, help="Do not descend into sub-folders.")
@click.option("--embeddings", is_flag=True, help="Include each embedding in the JSONL.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line.")
@input_options
@label_options
@model_options
def scan(paths: tuple[str, ...], out: str | None, fmt: str, policy: str,
         thresholds: tuple[str, ...], no_moderation: bool,
         quality_head: str | None, no_quality: bool, caption: str | None,
         report_path: str | None, no_recursive: bool, embeddings: bool, quiet: bool,
         **kw: Any) -> None:
    """Embed and analyse images in files and folders; one JSON line per file.

    Folders are walked recursively in sorted order. Each result carries the
    moderation decision under the policy, the 0–10 quality score, and `labels` / `probe` when --labels,
    --labels-file or --probe are given. Embeddings are kept in the store, so a
    second scan of the same files does no model work, and re-scoring them with
    another policy does not touch the image encoder.

    \b
    Example:
      clipsieve scan photos/ --out results.jsonl --report report.html
      clipsieve scan uploads/ --policy my-policy.toml
      clipsieve scan photos/ --labels "cat,dog,car" --no-moderation
      clipsieve scan photos/ --format table
      CLIPSIEVE_MODEL=/models/clip-vit-b32 clipsieve scan a.jpg b.png
    """

    from clipsieve.factory import build_heads
    from clipsieve.moderation import CaptionSource

    analyzer = make_analyzer(kw)
    captions = None if no_moderation else CaptionSource(default=caption)
    # a bad policy, --threshold, probe or head file fails here, before any model work
    heads = build_heads(
        analyzer,
        policy=None if no_moderation else load_cli_policy(policy, thresholds),
        quality=False if no_quality else (quality_head or True),
        captions=captions,
        **label_head_options(kw, required=False),
        lazy=True,
    )
    fmt = _output_format(fmt, out)
    files = collect_sources(paths, kw, recursive=not no_recursive, captions=captions)
    progress = Progress(len(files), "scan", enabled=None if not quiet else False)
    kept: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    try:
        if fmt in ("csv", "parquet"):
            from clipsieve.report.streaming import ResultWriter

            with ResultWriter(out or "-", fmt, metadata={
                "clipsieve.model": analyzer.model_id,
                "clipsieve.preprocess_version": analyzer.preprocess.version,
            }) as writer:
                for item in analyzer.scan(files, heads=heads, recursive=not no_recursive):
                    writer.write(item.to_dict(include_embedding=embeddings))
                    if report_path:
                        kept.append(item.to_dict())
                    progress.advance(item)
        else:
            with open_output(out) as fh:
                for item in analyzer.scan(files, heads=heads, recursive=not no_recursive):
                    if fmt == "jsonl":
                        write_jsonl(fh, item.to_dict(include_embedding=embeddings))
                    else:
                        rows.append(item.to_dict())
                    if report_path:
                        kept.append(item.to_dict())
                    progress.advance(item)
                progress.close()
                if fmt == "table":
                    _print_table(fh, rows)
    finally:
        progress.close()
        analyzer.close()
    if report_path:
        from clipsieve.report import write_report

        write_report(kept, report_path)
    if not quiet:
        click.echo(progress.summary(), err=True)
        if report_path:
            click.echo(f"report: {report_path}", err=True)
    sys.exit(progress.exit_code())


def _output_format(fmt: str | None, out: str | None) -> str:
    """The output format: --format, else from the --out name (.csv, .parquet), else jsonl."""
    named = None
    if out and out != "-":
        low = out.lower()
        named = ("csv" if low.endswith(".csv") else
                 "parquet" if low.endswith((".parquet", ".pq")) else None)
    if fmt is None:
        return named or "jsonl"
    if named is not None and fmt != named:
        raise click.UsageError(f"--format {fmt} does not match the --out name {out!r}")
    if fmt == "parquet" and (not out or out == "-"):
        raise click.UsageError("--format parquet needs --out FILE.parquet")
    return fmt


def _print_table(fh: Any, rows: list[dict[str, Any]]) -> None:
    """path | moderation decision | quality score (technical / aesthetic) | top label | note."""
    from rich.table import Table
    from rich.text import Text

    from clipsieve.cli.common import make_console
    from clipsieve.cli.moderate import DECISION_STYLE

    table = Table(header_style="bold")
    for name in ("path", "decision", "quality", "tech", "aesth", "top label", "note"):
        table.add_column(name, overflow="fold", no_wrap=name in ("decision", "quality"))
    for r in rows:
        mod, q, labels = r.get("moderation") or {}, r.get("quality") or {}, r.get("labels") or {}
        decision = "error" if r["status"] != "ok" else mod.get("decision", "-")
        top = max(labels.items(), key=lambda kv: kv[1]) if labels else None
        note = f"{r['error']['code']}: {r['error']['message']}" if r.get("error") else (
            (mod.get("reasons") or [""])[0] if decision in ("review", "block") else "")

        def num(v: Any) -> str:
            return f"{v:.1f}" if isinstance(v, (int, float)) else "-"

        table.add_row(
            Text(r["path"]), Text(decision, style=DECISION_STYLE.get(decision, "")),
            num(q.get("score")), num(q.get("technical")), num(q.get("aesthetic")),
            Text(f"{top[0]} {top[1]:.2f}" if top else "-"), Text(note),
        )
    make_console(fh).print(table)
    fh.flush()
