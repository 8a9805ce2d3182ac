"""``clipsieve quality`` and ``clipsieve train-quality``."""

from __future__ import annotations

import math
import sys
from typing import Any

import click

from clipsieve.cli.common import (
    Progress,
    check_outputs,
    collect_sources,
    input_files,
    input_options,
    make_analyzer,
    model_options,
    open_output,
    train_with_progress,
    weights_outputs,
    write_jsonl,
    writing,
)
from clipsieve.paths import display
from clipsieve.types import SCORE_RANGES

#: Components shown in the table (besides score, technical and aesthetic).
_TABLE_COMPONENTS = (("sharpness", "sharp"), ("noise", "noise"), ("exposure", "exposure"),
                     ("jpeg", "jpeg"), ("clip_quality", "clip good"))


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):.2f}"


def _row(item: Any) -> list[str]:
    """path, score, technical, aesthetic, the components, issues, error: a failed file has
    its error code and message in the error column and nothing under the scores."""
    if not item.ok:
        err = item.error
        return [display(item.path), "", "", "", *[""] * len(_TABLE_COMPONENTS), "",
                f"{err.code}: {err.message}" if err else "failed"]
    q = item.quality
    comps = dict(q.components)
    under, over = comps.get("exposure_under"), comps.get("exposure_over")
    if under is not None or over is not None:
        comps["exposure"] = min(v for v in (under, over) if v is not None)
    issues = ", ".join(str(it.get("name")) for it in (q.issues or []))
    return [display(item.path), _fmt(q.score), _fmt(q.technical), _fmt(q.aesthetic),
            *(_fmt(comps.get(key)) for key, _ in _TABLE_COMPONENTS), issues, ""]


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--quality-head", type=click.Path(dir_okay=False),
              help="Learned head for the aesthetic part: a .npz from train-quality, or a LAION "
                   "aesthetic predictor .pth (ViT-L/14 models).")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table",
              show_default=True, help="A table, or one JSON line per file (the scan schema).")
@click.option("--out", "-o", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write here instead of stdout.")
@click.option("--min-score", type=click.FloatRange(*SCORE_RANGES["quality"]),
              help="List only images whose score is at least this (errors are always listed).")
@click.option("--no-recursive", is_flag=True, help="Do not descend into sub-folders.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line.")
@input_options
@model_options
def quality(paths: tuple[str, ...], quality_head: str | None, fmt: str, out: str | None,
            min_score: float | None, no_recursive: bool, quiet: bool, **kw: Any) -> None:
    """Score image quality 0–10: technical (pixels + CLIP-IQA) and aesthetic parts.

    Each image gets score, technical and aesthetic on 0–10 (10 best) and a breakdown of
    every technical component and CLIP-IQA pair; the weights are in the package's
    data/quality.toml. With --quality-head, a learned head (train-quality, or a LAION
    aesthetic .pth) gives the aesthetic part. Stored embeddings are reused.

    \b
    Example:
      clipsieve quality photos/
      clipsieve quality photos/ --format jsonl --out quality.jsonl --min-score 6
      clipsieve quality photos/ --quality-head my-ratings.npz
    """
    from clipsieve.factory import build_heads

    analyzer = make_analyzer(kw)
    below = 0
    rows: list[list[str]] = []
    try:
        # fail fast: a bad head file, or one trained on another model
        heads = build_heads(analyzer, policy=None, quality=quality_head or True, lazy=True)
        files = collect_sources(paths, kw, recursive=not no_recursive)
        check_outputs({"--out": out}, lambda: input_files(files, [quality_head]))
        progress = Progress(len(files), "quality", enabled=None if not quiet else False,
                            analyzer=analyzer)
        try:
            with open_output(out) as fh:
                for item in analyzer.scan(files, heads=heads, recursive=False):
                    progress.advance(item)
                    if (item.ok and min_score is not None and item.quality is not None
                            and item.quality.score < min_score):
                        below += 1
                        continue
                    if fmt == "jsonl":
                        write_jsonl(fh, item.to_dict())
                    else:
                        rows.append(_row(item))
                if fmt == "table":
                    _print_table(fh, rows, out)
        finally:
            progress.close()
    finally:
        analyzer.close()
    if not quiet:
        extra = f"; {below} below --min-score {min_score:g} not listed" if below else ""
        click.echo(progress.summary("scored") + extra, err=True)
    sys.exit(progress.exit_code())


def _print_table(fh: Any, rows: list[list[str]], out: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False, header_style="bold")
    table.add_column("path", overflow="fold")
    for name in ("score", "technical", "aesthetic", *(label for _, label in _TABLE_COMPONENTS)):
        table.add_column(name, justify="right")
    table.add_column("issues")
    table.add_column("error", overflow="fold")
    for row in rows:
        table.add_row(*row)
    to_terminal = out in (None, "-") and sys.stdout.isatty()
    # off a terminal, wide enough that paths are never folded
    width = max((len(r[0]) + len(r[-1]) + len(r[-2]) for r in rows), default=0) + 100
    console = Console(file=fh, width=None if to_terminal else max(width, 120),
                      force_terminal=to_terminal, no_color=not to_terminal)
    console.print(table)


@click.command("train-quality")
@click.argument("ratings", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "-o", default="quality-head.npz", show_default=True,
              type=click.Path(dir_okay=False),
              help="Weights file (.npz); the sidecar goes beside it with .json.")
@click.option("--kind", type=click.Choice(["ridge", "mlp"]), default="ridge", show_default=True,
              help="Ridge regression, or a small MLP (one hidden layer of 64).")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(2),
              help="Cross-validation folds (at most the number of rated images).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@model_options
def train_quality(ratings: str, out: str, kind: str, folds: int, quiet: bool,
                  **kw: Any) -> None:
    """Learn a quality head from your ratings (a path,score CSV on any scale).

    Scores are rescaled to 0–10 by the min and max of the ratings. The head (ridge or a
    small MLP) reads each image's embedding plus its technical components; the k-fold
    SRCC and PLCC are printed, then it is fitted on every rating and saved (.npz and a
    .json sidecar with the model id, features, scale and metrics). Use it with
    clipsieve quality --quality-head; it only loads with the model it was trained on.

    \b
    Example:
      clipsieve train-quality ratings.csv --out my-taste.npz
      clipsieve train-quality ratings.csv --kind mlp --folds 10
      clipsieve quality photos/ --quality-head my-taste.npz
    """
    from clipsieve.training import read_ratings, train_quality_head_from_csv

    npz, side = weights_outputs(out)
    check_outputs({"--out": npz, "sidecar": side},
                  lambda: [ratings, *(p for p, _ in read_ratings(ratings))])
    head, failed, progress = train_with_progress(
        kw, quiet, lambda: len(read_ratings(ratings)),
        lambda analyzer, on_item: train_quality_head_from_csv(
            analyzer, ratings, kind=kind, folds=folds, on_item=on_item
        ),
    )
    info = head.info
    m = info["metrics"]
    sc = info["scale"]
    click.echo(f"{info['n_examples']} rated images, {len(failed)} skipped; ratings "
               f"{sc['min']:g}–{sc['max']:g} rescaled to 0–10")
    note = (f" (folds reduced from {m['folds_requested']} to {m['folds']})"
            if m["folds"] < m["folds_requested"] else "")
    click.echo(f"{m['folds']}-fold {kind}: SRCC {_fmt(m['srcc'])}, PLCC {_fmt(m['plcc'])}, "
               f"RMSE {_fmt(m['rmse'])} (out-of-fold; per-fold mean SRCC "
               f"{_fmt(m['fold_srcc_mean'])}, PLCC {_fmt(m['fold_plcc_mean'])}){note}")
    click.echo(f"training fit: SRCC {_fmt(m['train_srcc'])}, PLCC {_fmt(m['train_plcc'])}")
    with writing(npz):
        saved, saved_side = head.save(out)
    click.echo(f"wrote {saved} and {saved_side} (model {head.model_id})")
    sys.exit(progress.exit_code())
