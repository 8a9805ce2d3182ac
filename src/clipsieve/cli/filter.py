"""``clipsieve filter``."""

from __future__ import annotations

import sys
from typing import Any

import click

from clipsieve.cli.common import (
    Progress,
    check_outputs,
    input_options,
    load_cli_policy,
    local_sources,
    make_analyzer,
    model_options,
    plural,
    threshold_option,
    writing,
)
from clipsieve.paths import clean_text, display
from clipsieve.types import SCORE_RANGES


@click.command("filter")
@click.argument("sources", nargs=-1, type=click.Path())
@click.option(
    "--accept",
    type=click.Path(file_okay=False),
    help="Folder for accepted files (left in place when not given).",
)
@click.option(
    "--reject",
    type=click.Path(file_okay=False),
    help="Folder for rejected files and duplicates (left in place when not given).",
)
@click.option(
    "--review",
    type=click.Path(file_okay=False),
    help="Folder for files that need a human look; without it they are rejected.",
)
@click.option(
    "--action",
    required=True,
    type=click.Choice(["copy", "move", "link", "none"]),
    help="copy, move, link (hard link; symbolic link across file systems) or none.",
)
@click.option(
    "--min-quality",
    type=click.FloatRange(*SCORE_RANGES["quality"]),
    help="Reject files whose quality.score is below this (0–10).",
)
@click.option(
    "--policy",
    "-p",
    metavar="NAME|FILE",
    help="Moderation policy (name or file); makes a moderation decision required for every file.",
)
@threshold_option
@click.option(
    "--prefer-human",
    is_flag=True,
    help="A person's decision imported with `clipsieve review import` overrides the "
    "model's moderation decision for that file.",
)
@click.option(
    "--where",
    "where",
    multiple=True,
    metavar="EXPR",
    help="Condition on result fields, e.g. 'labels.cat > 0.8 and "
    "moderation.categories.violence < 0.2'. Operators: and, or, not, ( ), comparisons "
    "< <= > >= == != , exists(FIELD), issue('blurry'). Fields a head computes (quality.*, "
    "moderation.* with --policy) are computed on demand. Repeat to combine with and.",
)
@click.option(
    "--dedupe",
    type=click.FloatRange(0, 1, min_open=True),
    metavar="COSINE",
    help="Group exact and near duplicates (embedding cosine >= COSINE, e.g. 0.95); "
    "keep the best of each group, reject the others.",
)
@click.option("--dry-run", is_flag=True, help="Decide and show destinations; touch nothing.")
@click.option(
    "--manifest",
    type=click.Path(dir_okay=False),
    help="Write every decision with its reasons to this CSV file.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False),
    help="Write a self-contained HTML report of the run to this file.",
)
@click.option("--no-recursive", is_flag=True, help="Do not descend into sub-folders.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@input_options(urls=False)
@model_options
def filter_cmd(
    sources: tuple[str, ...],
    accept: str | None,
    reject: str | None,
    review: str | None,
    action: str,
    min_quality: float | None,
    policy: str | None,
    thresholds: tuple[str, ...],
    prefer_human: bool,
    where: tuple[str, ...],
    dedupe: float | None,
    dry_run: bool,
    manifest: str | None,
    report_path: str | None,
    no_recursive: bool,
    quiet: bool,
    **kw: Any,
) -> None:
    """Sort files into accept / review / reject folders by quality, safety and any field.

    Every file gets one decision with its reasons. Rules: moderation "block" rejects and
    "review" goes to --review (or is rejected without it); --min-quality rejects low
    scores; --where rejects files for which the condition is false. A rule on a field a
    file lacks is "unknown" and sends the file to review, never to accept; a rule on a field
    that no file has stops the run with an error. Files that could not be scanned stay
    where they are and count as failures.

    Results come from the store when a file is unchanged since it was scanned, so an
    already-scanned collection needs no model work; other files are scanned now.

    Relative folders below each source are kept under each destination, and an existing
    file is never overwritten (photo.jpg becomes photo_1.jpg). Each action is journalled
    in the store before and after it happens; a run that was killed is completed or rolled
    back at the start of the next one, and `clipsieve undo RUN_ID` reverses a run.

    Exit status: 0, or 4 when some files failed (see the manifest's error column).

    \b
    Example:
      clipsieve filter photos/ --accept keep/ --reject aside/ --review check/ \\
          --action move --min-quality 6.5 --where 'labels.cat > 0.8' \\
          --dedupe 0.95 --manifest decisions.csv --report run.html
      clipsieve filter photos/ --accept keep/ --action copy --dry-run
    """
    from clipsieve.filtering import filter_collection, write_manifest
    from clipsieve.media.discover import iter_files

    store_arg = kw.get("store_path")
    if thresholds and not policy:
        raise click.UsageError("--threshold needs --policy (the policy whose thresholds change)")
    loaded = load_cli_policy(policy, thresholds) if policy else None
    sources = tuple(local_sources(sources, kw))
    include, exclude, limit = kw.pop("include", ()), kw.pop("exclude", ()), kw.pop("limit", None)
    # before anything is scanned or touched
    check_outputs({"--manifest": manifest, "--report": report_path},
                  lambda: iter_files(sources, recursive=not no_recursive))
    analyzer = make_analyzer(kw)
    enabled = None if not quiet else False
    scan_progress: Progress | None = None
    act_progress: Progress | None = None

    def on_scanned(item: Any) -> None:
        nonlocal scan_progress
        if scan_progress is None:
            scan_progress = Progress(None, "scan", enabled=enabled, analyzer=analyzer)
        scan_progress.advance(item)

    def on_item(d: Any) -> None:
        nonlocal act_progress
        if act_progress is None:
            act_progress = Progress(None, action, enabled=enabled)
        act_progress.advance(d)

    started: list[str] = []
    try:
        run = filter_collection(
            sources,
            analyzer=analyzer,
            accept=accept,
            reject=reject,
            review=review,
            action=action,
            min_quality=min_quality,
            policy=loaded,
            where=list(where) or None,
            dedupe=dedupe,
            dry_run=dry_run,
            recursive=not no_recursive,
            on_item=on_item,
            on_scanned=on_scanned,
            prefer_human=prefer_human,
            include=include,
            exclude=exclude,
            limit=limit,
            on_run_started=started.append,
        )
    except BaseException:
        if started:  # files may have been touched: always say how to undo them
            click.echo(f"filter run {started[0]} stopped before it finished; "
                       f"{_undo_hint(started[0], store_arg)}", err=True)
        raise
    finally:
        for p in (scan_progress, act_progress):
            if p is not None:
                p.close()
        analyzer.close()
    try:
        if not quiet:
            _summary(run, manifest, store_arg)
        if manifest:
            with writing(manifest):
                write_manifest(run.decisions, manifest)
        if report_path:
            from clipsieve.report import write_report

            with writing(report_path):
                write_report(
                    [d.report_dict(run.run_id) for d in run.decisions],
                    report_path,
                    title=f"clipsieve filter {run.run_id or '(dry run)'}",
                )
    except BaseException:
        if run.run_id and quiet:
            click.echo(f"filter run {run.run_id}: {_undo_hint(run.run_id, store_arg)}",
                       err=True)
        raise
    sys.exit(4 if run.failed else 0)


def _undo_hint(run_id: str, store: str | None) -> str:
    where = f" --store {store}" if store else ""
    return f"undo with: clipsieve undo {run_id}{where}"


def _summary(run: Any, manifest: str | None, store: str | None) -> None:
    c = run.counts()
    for r in run.recovered:
        click.echo(
            f"recovered an interrupted action: {r.src} -> {r.dest or '-'} ({r.state}"
            f"{': ' + r.error if r.error else ''})",
            err=True,
        )
    if run.pending_recovery:
        click.echo(
            f"note: {plural(run.pending_recovery, 'action')} of an interrupted run "
            f"{'is' if run.pending_recovery == 1 else 'are'} still open; the next run without "
            "--dry-run completes them",
            err=True,
        )
    if run.dry_run:
        for d in run.decisions:
            dest = d.destination or ("(stays)" if d.decision != "error" else "(error)")
            click.echo(clean_text(f"{d.decision:7} {display(d.path)} -> {display(dest)}  "
                                  f"[{'; '.join(d.reasons)}]"))
    for d in run.failed:
        click.echo(f"failed: {display(d.path)}: {d.error or '; '.join(d.reasons)}", err=True)
    head = (
        f"filter run {run.run_id}"
        if run.run_id
        else ("dry run" if run.dry_run else "filter (action none)")
    )
    extra = f", {c['already_there']} already there" if c["already_there"] else ""
    click.echo(
        f"{head}: {plural(len(run.decisions), 'file')}: {c['accept']} accept, {c['review']} "
        f"review, {c['reject']} reject ({plural(c['duplicates'], 'duplicate')}), "
        f"{c['error']} unreadable, {c['failed']} failed{extra}"
        + (f"; manifest {manifest}" if manifest else ""),
        err=True,
    )
    if run.run_id:
        click.echo(_undo_hint(run.run_id, store), err=True)
