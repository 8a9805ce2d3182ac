"""``clipsieve video`` and the video options shared with ``scan``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO, Any, TypeVar

import click

from clipsieve.cli.classify import label_head_options, label_options
from clipsieve.cli.common import (
    Progress,
    load_cli_policy,
    make_analyzer,
    model_options,
    open_output,
    threshold_option,
    write_jsonl,
)

F = TypeVar("F", bound=Callable[..., Any])


def video_options(f: F) -> F:
    """--fps, --keyframes, --scenes, --max-frames, --video-timeout, --stop-on-block, --thumbnail."""
    opts = [
        click.option("--fps", type=click.FloatRange(0, 120, min_open=True), default=None,
                     help="Frames per second kept from each video [default: 1; with "
                          "--scenes or --keyframes: none besides theirs]."),
        click.option("--keyframes", is_flag=True,
                     help="Decode keyframes only (fast; as many frames as the video has "
                          "keyframes)."),
        click.option("--scenes", is_flag=True,
                     help="Keep the first frame of every shot (shot boundaries from "
                          "low-resolution frame differences)."),
        click.option("--max-frames", type=click.IntRange(1), default=None,
                     help="At most N frames per video, spread over its whole length."),
        click.option("--video-timeout", type=click.FloatRange(0, min_open=True), default=None,
                     metavar="SECONDS",
                     help="Time limit per video [default: 60 s + 2 × its duration]; a video "
                          "cut short is reported partial."),
        click.option("--stop-on-block", is_flag=True,
                     help="Stop decoding a video at its first block segment."),
        click.option("--thumbnail", "thumbnail_dir", type=click.Path(file_okay=False),
                     help="Write each video's best allowed frame (highest quality) here as "
                          "a JPEG."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def video_options_from(kw: dict[str, Any]) -> Any:
    """Pop the :func:`video_options` from ``kw`` into a :class:`~clipsieve.video.VideoOptions`."""
    from clipsieve.video import Sampling, VideoOptions

    sampling = Sampling(fps=kw.pop("fps"), keyframes=kw.pop("keyframes"),
                        scenes=kw.pop("scenes"), max_frames=kw.pop("max_frames"))
    return VideoOptions(sampling=sampling, timeout_s=kw.pop("video_timeout"),
                        stop_on_block=kw.pop("stop_on_block"),
                        thumbnail_dir=kw.pop("thumbnail_dir"))


@click.command("video")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table",
              show_default=True, help="A timeline per video for people, or one JSON object "
                                      "per video.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the output here instead of stdout.")
@click.option("--policy", "-p", default="default", show_default=True, metavar="NAME|FILE",
              help="Moderation policy (its [video] table sets the segment rules).")
@threshold_option
@click.option("--no-moderation", is_flag=True,
              help="No moderation: no segments and no verdict.")
@click.option("--quality-head", type=click.Path(dir_okay=False),
              help="Learned head for the aesthetic part of frame quality.")
@click.option("--no-quality", is_flag=True, help="No frame quality (checks are still made).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line.")
@video_options
@label_options
@model_options
def video(files: tuple[str, ...], fmt: str, out: str | None, policy: str,
          thresholds: tuple[str, ...], no_moderation: bool,
          quality_head: str | None, no_quality: bool, quiet: bool, **kw: Any) -> None:
    """Analyse videos (and animated GIF/WebP): sampled frames through the same heads as
    images; per video, segments per moderation category with times, a verdict, a quality
    summary with black / frozen / low-bitrate checks.

    Frames are kept at --fps (default 1 per second, decoded sequentially), or keyframes
    only (--keyframes), or one per shot (--scenes). Frame embeddings are stored, so running
    again with another policy or other labels decodes nothing and runs no model.

    \b
    Example:
      clipsieve video clip.mp4
      clipsieve video clips/*.mp4 --format jsonl --out videos.jsonl --thumbnail thumbs/
      clipsieve video long.mkv --keyframes --stop-on-block
    """
    from clipsieve.factory import build_heads
    from clipsieve.video import analyze_videos

    options = video_options_from(kw)
    analyzer = make_analyzer(kw)
    heads = build_heads(
        analyzer,
        policy=None if no_moderation else load_cli_policy(policy, thresholds),
        quality=False if no_quality else (quality_head or True),
        **label_head_options(kw, required=False),
        lazy=True,
    )
    progress = Progress(len(files), "video", enabled=None if not quiet else False,
                        analyzer=analyzer)
    try:
        with open_output(out) as fh:
            for res in analyze_videos(analyzer, files, heads=heads, options=options):
                if fmt == "jsonl":
                    write_jsonl(fh, res.to_dict())
                else:
                    print_timeline(fh, res.to_dict())
                progress.advance(res)
    finally:
        progress.close()
        analyzer.close()
    if not quiet:
        click.echo(progress.summary("analysed"), err=True)
    sys.exit(progress.exit_code())


def _clock(ms: Any) -> str:
    if not isinstance(ms, (int, float)):
        return "-"
    s = ms / 1000
    return f"{int(s // 60)}:{s % 60:04.1f}"


def print_timeline(fh: IO[str], r: dict[str, Any]) -> None:
    """One video as a heading line and a table of its segments and checks, in time order."""
    from rich.table import Table
    from rich.text import Text

    from clipsieve.cli.common import make_console
    from clipsieve.cli.moderate import DECISION_STYLE

    console = make_console(fh)
    if r.get("status") != "ok":
        err = r.get("error") or {}
        console.print(Text(f"{r['path']}: error: {err.get('code')}: {err.get('message')}",
                           style="red"))
        fh.flush()
        return
    verdict = r.get("verdict") or {}
    q = r.get("quality") or {}
    head = Text(f"{r['path']}  ")
    head.append(f"{_clock(r.get('duration_ms'))}  {r.get('width')}×{r.get('height')} "
                f"{r.get('codec')} {r.get('fps') or '?'} fps  {len(r.get('frames') or [])} frames")
    if verdict:
        d = verdict.get("decision", "-")
        head.append("  verdict: ")
        head.append(d, style=DECISION_STYLE.get(d, ""))
        if verdict.get("category"):
            head.append(f" ({verdict['reason']})")
    if isinstance(q.get("mean"), (int, float)):
        head.append(f"  quality {q['mean']:.1f} (median {q['median']:.1f}, p10 {q['p10']:.1f})")
    if r.get("partial"):
        head.append(f"  partial: {r.get('decoded_fraction')} decoded; "
                    + "; ".join(r.get("partial_reasons") or []), style="yellow")
    console.print(head)
    rows = [(s["start_ms"], s["end_ms"], s["category"], s["decision"],
             f"max {s['max_score']:.2f} mean {s['mean_score']:.2f}")
            for s in r.get("segments") or []]
    rows += [(c["start_ms"], c["end_ms"], c["kind"], "check", "") for c in q.get("checks") or []]
    if rows:
        table = Table(header_style="bold", show_edge=False, pad_edge=False)
        for name in ("from", "to", "what", "decision", "score"):
            table.add_column(name, no_wrap=True)
        for a, b, what, d, score in sorted(rows, key=lambda x: (x[0], x[2])):
            table.add_row(_clock(a), _clock(b), what, Text(d, style=DECISION_STYLE.get(d, "")),
                          score)
        console.print(table)
    if r.get("thumbnail"):
        console.print(f"  thumbnail: {r['thumbnail']['path']} at "
                      f"{_clock(r['thumbnail']['timestamp_ms'])}")
    fh.flush()
