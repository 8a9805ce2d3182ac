"""``clipsieve scan``."""

from __future__ import annotations

import sys
from typing import Any

import click

from clipsieve.cli.classify import label_options, make_label_heads
from clipsieve.cli.common import Progress, make_analyzer, model_options, open_output, write_jsonl


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--out", "-o", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write JSONL here instead of stdout.")
@click.option("--policy", "-p", default="default", show_default=True, metavar="NAME|FILE",
              help="Moderation policy (shipped name or .toml file); adds `moderation`.")
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
@label_options
@model_options
def scan(paths: tuple[str, ...], out: str | None, policy: str, no_moderation: bool,
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
      CLIPSIEVE_MODEL=/models/clip-vit-b32 clipsieve scan a.jpg b.png
    """
    from clipsieve.media.discover import iter_files

    heads: list[Any] = []
    analyzer = make_analyzer(kw)
    if not no_moderation:
        from clipsieve.moderation import CaptionSource, ModerationHead, load_policy

        # a bad policy or probe fails here, before any model work
        loaded = load_policy(policy)
        loaded.check_probes(analyzer.model_id)
        heads.append(ModerationHead(loaded, CaptionSource(default=caption)))
    if not no_quality:
        from clipsieve.quality import QualityHead

        quality = QualityHead(quality_head)
        quality.learned_for(analyzer.model_id)  # a bad head file fails before model work
        heads.append(quality)
    heads += make_label_heads(kw, analyzer.model_id, required=False)
    files = list(iter_files(paths, recursive=not no_recursive))
    progress = Progress(len(files), "scan", enabled=None if not quiet else False)
    kept: list[dict[str, Any]] = []
    try:
        with open_output(out) as fh:
            for item in analyzer.scan(files, heads=heads, recursive=not no_recursive):
                write_jsonl(fh, item.to_dict(include_embedding=embeddings))
                if report_path:
                    kept.append(item.to_dict())
                progress.advance(item)
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
