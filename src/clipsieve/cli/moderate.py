"""``clipsieve moderate``."""

from __future__ import annotations

import sys
from typing import IO, Any

import click

from clipsieve.cli.common import (
    Progress,
    check_outputs,
    collect_sources,
    input_files,
    input_options,
    load_cli_policy,
    make_analyzer,
    make_console,
    model_options,
    open_output,
    threshold_option,
    write_jsonl,
)
from clipsieve.paths import display

#: Colour of each decision in the table (terminals only).
DECISION_STYLE = {"allow": "green", "review": "yellow", "block": "bold red", "error": "magenta"}


def top_categories(categories: dict[str, float], n: int = 3) -> str:
    """``"violence 0.71, weapons 0.12, gore 0.05"``: the ``n`` highest scores."""
    best = sorted(categories.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{name} {score:.2f}" for name, score in best)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--policy", "-p", default="default", show_default=True, metavar="NAME|FILE",
              help="Shipped policy name or path to a policy .toml file.")
@threshold_option
@click.option("--caption", metavar="TEXT",
              help="Caption for every image (unless the --input line gives one); "
                   "scored with the image.")
@click.option("--no-sidecars", is_flag=True,
              help="Do not read a caption from <stem>.txt beside each image.")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table",
              show_default=True, help="A table for people, or one JSON object per line.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the table or JSONL here instead of stdout.")
@click.option("--no-recursive", is_flag=True, help="Do not descend into sub-folders.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line.")
@input_options
@model_options
def moderate(paths: tuple[str, ...], policy: str, thresholds: tuple[str, ...],
             caption: str | None, no_sidecars: bool, fmt: str, out: str | None, no_recursive: bool, quiet: bool,
             **kw: Any) -> None:
    """Moderate images (and their captions) with a policy: allow, review or block.

    Each image's category scores come from a softmax over the policy's categories and
    neutral classes; a caption (--caption, an --input JSONL line or a sidecar PHOTO.txt
    beside PHOTO.jpg) is scored against the same categories, and a caption that does not
    match its image (low CLIPScore) goes to review. Exit code 5 when something was
    blocked, 6 when something was blocked and some files failed, 4 when files failed.

    \b
    Example:
      clipsieve moderate uploads/ --policy default
      clipsieve moderate a.jpg --caption "cheap pills, click here" --format jsonl
      clipsieve moderate --input batch.jsonl --policy my-policy.toml --out report.txt
      clipsieve moderate uploads/ --threshold violence.block=0.5 --threshold violence.review=0.3
    """
    from clipsieve.factory import build_heads
    from clipsieve.moderation import CaptionSource

    # a bad policy or --threshold fails before the model loads
    head_policy = load_cli_policy(policy, thresholds)
    captions = CaptionSource(default=caption, sidecars=not no_sidecars)
    recursive = not no_recursive
    input_list = kw.get("input_path")
    files = collect_sources(paths, kw, recursive=recursive, captions=captions)
    check_outputs({"--out": out},
                  lambda: input_files(files, [policy, input_list], sidecars=not no_sidecars))

    analyzer = make_analyzer(kw)
    heads = build_heads(analyzer, policy=head_policy, quality=False, captions=captions, lazy=True)
    progress = Progress(len(files), "moderate", enabled=None if not quiet else False,
                            analyzer=analyzer)
    rows: list[tuple[str, str, str, str]] = []
    try:
        with open_output(out) as fh:
            for item in analyzer.scan(files, heads=heads, recursive=recursive):
                progress.advance(item)
                if fmt == "jsonl":
                    write_jsonl(fh, item.to_dict())
                elif item.ok and item.moderation is not None:
                    mod = item.moderation
                    first = mod.reasons[0] if mod.reasons else ""
                    rows.append((display(item.path), mod.decision,
                                 top_categories(mod.categories), first))
                else:
                    err = item.error
                    why = f"{err.code}: {err.message}" if err else "not moderated"
                    rows.append((display(item.path), "error", "", why))
            progress.close()
            if fmt == "table":
                _print_table(fh, rows, head_policy)
    finally:
        progress.close()
        analyzer.close()
    if not quiet:
        click.echo(progress.summary("moderated"), err=True)
    sys.exit(progress.exit_code())


def _print_table(fh: IO[str], rows: list[tuple[str, str, str, str]], policy: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    # Cells are Text, never markup: paths and reasons may contain square brackets.
    title = Text(f'policy "{policy.name}" version {policy.version}')
    table = Table(title=title, title_justify="left")
    table.add_column("path", overflow="fold")
    table.add_column("decision", no_wrap=True)
    table.add_column("top categories")
    table.add_column("reason", overflow="fold")
    for path, decision, top, reason in rows:
        table.add_row(Text(path), Text(decision, style=DECISION_STYLE.get(decision, "")),
                      Text(top), Text(reason))
    make_console(fh).print(table)
