"""``clipsieve compare-encoders``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from clipsieve import settings
from clipsieve.cli.common import ENCODERS, Progress, find_files, make_console, open_output


@click.command("compare-encoders")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--encoder", envvar="CLIPSIEVE_ENCODER", default="onnx-int8", show_default=True,
              type=click.Choice(list(ENCODERS)),
              help="The encoder to check against torch float32.")
@click.option("--model", "-m", envvar="CLIPSIEVE_MODEL", default=settings.DEFAULT_MODEL,
              show_default=True, help="Hugging Face model id or local checkpoint folder.")
@click.option("--policy", "-p", default="default", show_default=True, metavar="NAME|FILE",
              help="Moderation policy whose decisions are compared.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--batch-size", default=settings.DEFAULT_BATCH_SIZE, show_default=True,
              type=click.IntRange(1, 4096), help="Images per model call.")
@click.option("--workers", type=click.IntRange(1, 256),
              help="Decode threads [default: number of cores, at least 2].")
@click.option("--max-pixels", default=100_000_000, show_default=True, type=click.IntRange(1),
              help="Refuse images larger than this (width × height).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="A summary for people, or one JSON object.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the output here instead of stdout.")
@click.option("--no-recursive", is_flag=True, help="Do not descend into sub-folders.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def compare_encoders(paths: tuple[str, ...], encoder: str, model: str, policy: str,
                     device: str, batch_size: int, workers: int | None, max_pixels: int,
                     fmt: str, out: str | None, no_recursive: bool, quiet: bool) -> None:
    """Check an encoder against torch float32 on your own images.

    Embeds and moderates the files twice, with torch at float32 and with --encoder (no
    store is read or written, so both really compute), and prints the mean and minimum
    cosine between the two embeddings of each file and how often the moderation decisions
    agree, with the files that differ most.

    \b
    Example:
      clipsieve compare-encoders photos/ --encoder onnx-int8
      clipsieve compare-encoders photos/ --encoder onnx --format json
    """
    from clipsieve.compare import compare_encoders as compare
    from clipsieve.media.decode import DecodeLimits
    from clipsieve.moderation import load_policy

    loaded = load_policy(policy)  # a bad policy fails before any model work
    files = find_files(paths, recursive=not no_recursive)
    progress = Progress(2 * len(files), "compare", enabled=None if not quiet else False)
    try:
        result = compare(files, encoder=encoder, model=model, device=device, policy=loaded,
                         batch_size=batch_size, workers=workers,
                         limits=DecodeLimits(max_pixels=max_pixels),
                         recursive=not no_recursive, on_item=progress.advance,
                         on_status=progress.status)
    finally:
        progress.close()
    with open_output(out) as fh:
        if fmt == "json":
            fh.write(json.dumps(result.to_dict(), indent=1) + "\n")
        else:
            _print(fh, result)
    sys.exit(4 if result.failed else 0)


def _print(fh: Any, r: Any) -> None:
    from rich.table import Table

    console = make_console(fh)
    console.print(f"model {r.model_id}; policy {r.policy}; {r.n} files compared"
                  + (f", {len(r.failed)} could not be read" if r.failed else ""))
    table = Table(header_style="bold")
    for col in ("candidate", "vs", "cosine mean", "cosine min", "decisions agree"):
        table.add_column(col, justify="left" if col in ("candidate", "vs") else "right")
    same = sum(a == b for a, b in zip(r.baseline_decisions, r.candidate_decisions))
    table.add_row(r.candidate, r.baseline, f"{r.mean_cosine:.6f}", f"{r.min_cosine:.6f}",
                  f"{same}/{r.n} ({r.agreement:.1%})" if r.n else "-")
    console.print(table)
    if r.disagreements:
        console.print("decisions that differ:")
        for path, a, b in r.disagreements[:20]:
            console.print(f"  {path}: {a} -> {b}", markup=False)
    if r.n:
        console.print("lowest cosine:")
        for path, cos in r.worst(5):
            console.print(f"  {cos:.6f}  {path}", markup=False)
    for path, why in r.failed:
        console.print(f"  could not read {path}: {why}", markup=False)
    fh.flush()
