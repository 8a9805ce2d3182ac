"""``clipsieve scan``."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from clipsieve.cli.classify import label_head_options, label_options
from clipsieve.cli.common import (
    Progress,
    check_outputs,
    collect_sources,
    input_files,
    input_options,
    load_cli_policy,
    make_analyzer,
    model_options,
    open_output,
    threshold_option,
    write_jsonl,
    writing,
)
from clipsieve.cli.video import video_options, video_options_from


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--out", "-o", type=click.Path(allow_dash=True),
              help="Write the output here instead of stdout; a name ending .parquet or .csv "
                   "writes that format directly, in row groups (bounded memory); with --engine ray, "
                   "a folder.")
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
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True,
              help="local: this process; ray: Ray Data (one INPUT, --out DIR of Parquet files).")
@click.option("--address", metavar="auto|ray://HOST:PORT",
              help="[ray] join this Ray cluster instead of starting a local one.")
@click.option("--ray-num-cpus", type=click.IntRange(1), metavar="N",
              help="[ray] CPUs of the local Ray started when no --address is given "
                   "[default: all cores].")
@click.option("--ray-actors", type=click.IntRange(1), default=1, show_default=True,
              help="[ray] embedding actors (each loads the encoder once).")
@click.option("--ray-cpus-per-actor", type=click.FloatRange(0, min_open=True), default=1.0,
              show_default=True, help="[ray] CPUs reserved by each embedding actor.")
@click.option("--ray-gpus-per-actor", type=click.FloatRange(0), default=0.0, show_default=True,
              help="[ray] GPUs per embedding actor (1 = one actor per GPU, on CUDA).")
@video_options
@label_options
@model_options
def scan(paths: tuple[str, ...], out: str | None, fmt: str, policy: str,
         thresholds: tuple[str, ...], no_moderation: bool,
         quality_head: str | None, no_quality: bool, caption: str | None,
         report_path: str | None, no_recursive: bool, embeddings: bool, quiet: bool,
         engine: str, address: str | None, ray_num_cpus: int | None, ray_actors: int,
         ray_cpus_per_actor: float, ray_gpus_per_actor: float,
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
      clipsieve scan --engine ray s3://bucket/photos/ --out s3://bucket/results/
    """
    if engine == "ray":
        if len(paths) != 1 or not out or out == "-":
            raise click.UsageError(
                "--engine ray takes one INPUT (a folder, a .txt/.csv list of paths or a "
                ".parquet file with a path column) and --out DIR")
        if report_path or fmt not in (None, "jsonl") or embeddings:
            raise click.UsageError("--engine ray writes Parquet only: drop --report, "
                                   "--format and --embeddings")
    elif out and out != "-" and os.path.isdir(out):
        raise click.UsageError(f"--out {out} is a folder (a folder is for --engine ray)")

    from clipsieve.factory import build_heads
    from clipsieve.moderation import CaptionSource
    from clipsieve.video.analyze import scan_media

    kw_inputs = [policy, quality_head, kw.get("labels_file"), kw.get("probe_path")]
    video_opts = video_options_from(kw)
    analyzer = make_analyzer(kw)
    captions = None if no_moderation else CaptionSource(default=caption)
    # a bad policy, --threshold, probe or head file fails here, before any model work
    heads = build_heads(
        analyzer,
        policy=None if no_moderation else load_cli_policy(policy, thresholds),
        quality=False if no_quality else (quality_head or True),
        captions=captions,
        **label_head_options(kw, required=False),
        lazy=engine != "ray",
    )
    if engine == "ray":
        _scan_on_ray(analyzer, heads, paths[0], out or "", quiet=quiet, address=address,
                     num_cpus=ray_num_cpus, actors=ray_actors, cpus=ray_cpus_per_actor,
                     gpus=ray_gpus_per_actor, recursive=not no_recursive)
    fmt = _output_format(fmt, out)
    files = collect_sources(paths, kw, recursive=not no_recursive, captions=captions,
                            videos=True)
    check_outputs({"--out": out, "--report": report_path},
                  lambda: input_files(files, kw_inputs, sidecars=not no_moderation))
    progress = Progress(len(files), "scan", enabled=None if not quiet else False,
                        analyzer=analyzer)
    kept: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    try:
        if fmt in ("csv", "parquet"):
            from clipsieve.report.streaming import ResultWriter

            with writing(out or "standard output"), ResultWriter(out or "-", fmt, metadata={
                "clipsieve.model": analyzer.model_id,
                "clipsieve.preprocess_version": analyzer.preprocess.version,
            }) as writer:
                for item in scan_media(analyzer, files, heads=heads, options=video_opts,
                                       recursive=not no_recursive):
                    writer.write(item.to_dict(include_embedding=embeddings))
                    if report_path:
                        kept.append(item.to_dict())
                    progress.advance(item)
        else:
            with open_output(out) as fh:
                for item in scan_media(analyzer, files, heads=heads, options=video_opts,
                                       recursive=not no_recursive):
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

        with writing(report_path):
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


def _scan_on_ray(analyzer: Any, heads: list[Any], source: str, out: str, *, quiet: bool,
                 address: str | None, num_cpus: int | None, actors: int, cpus: float,
                 gpus: float, recursive: bool) -> None:
    """``scan --engine ray``: the Ray Data driver; prints a summary and exits."""
    from clipsieve.cli.common import plural
    from clipsieve.errors import EXIT_BLOCKED, EXIT_BLOCKED_AND_FAILED, EXIT_ITEMS_FAILED
    from clipsieve.ray_engine import run_ray_scan

    def say(msg: str) -> None:
        if not quiet:
            click.echo(msg, err=True)

    try:
        s = run_ray_scan(source, out, analyzer=analyzer, heads=heads, address=address,
                         num_cpus=num_cpus, actors=actors, cpus_per_actor=cpus,
                         gpus_per_actor=gpus, recursive=recursive, on_progress=say)
    finally:
        analyzer.close()
    if not quiet:
        for path, reason in s.errors:
            click.echo(f"  failed: {path}: {reason}", err=True)
        click.echo(
            f"{plural(s.total, 'file')}: {s.written} written, {s.skipped} already done; "
            f"{s.ok} ok, {s.failed} failed, {s.blocked} blocked in {s.seconds:.1f}s "
            f"-> {s.out_dir}", err=True)
    code = 0
    if s.failed and s.blocked:
        code = EXIT_BLOCKED_AND_FAILED
    elif s.failed:
        code = EXIT_ITEMS_FAILED
    elif s.blocked:
        code = EXIT_BLOCKED
    sys.exit(code)


def _print_table(fh: Any, rows: list[dict[str, Any]]) -> None:
    """path | moderation decision | quality score (technical / aesthetic) | top label | note.

    A video's decision is its verdict's, its quality the mean over its frames."""
    from rich.table import Table
    from rich.text import Text

    from clipsieve.cli.common import make_console
    from clipsieve.cli.moderate import DECISION_STYLE

    table = Table(header_style="bold")
    for name in ("path", "decision", "quality", "tech", "aesth", "top label", "note"):
        table.add_column(name, overflow="fold", no_wrap=name in ("decision", "quality"))
    for r in rows:
        mod, q, labels = r.get("moderation") or {}, r.get("quality") or {}, r.get("labels") or {}
        if r.get("kind") == "video":
            v = r.get("verdict") or {}
            mod = {"decision": v.get("decision", "-"),
                   "reasons": [f"video: {v['reason']}"] if v.get("category") else []}
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
