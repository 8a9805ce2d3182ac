"""``clipsieve calibrate``: new policy thresholds from a labelled CSV, and the per-group audit."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from clipsieve.cli.common import (
    Progress,
    check_outputs,
    make_analyzer,
    model_options,
    plural,
)
from clipsieve.errors import EXIT_ITEMS_FAILED, EXIT_OK, ConfigError

#: Recall levels whose strictest threshold is printed in the precision-recall trade-off.
TRADE_OFF_RECALLS = (1.0, 0.95, 0.9, 0.8, 0.5)

#: Precision levels whose loosest threshold is printed in the trade-off too.
TRADE_OFF_PRECISIONS = (0.5, 0.8, 0.9, 0.95)


def labels_from_reviews(store_path: str | None, policy: Any) -> tuple[Any, list[Any]]:
    """:func:`clipsieve.training.labels_from_store` over the store at ``store_path``."""
    from clipsieve.cli.common import open_existing_store
    from clipsieve.training import labels_from_store

    store = open_existing_store(store_path)
    try:
        return labels_from_store(store, policy)
    finally:
        store.close()


def _fmt(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


@click.command()
@click.argument("labels_csv", metavar="[LABELS.csv]", required=False,
                type=click.Path(dir_okay=False))
@click.option("--from-reviews", is_flag=True,
              help="Use the human labels in the store (clipsieve review import) instead of "
                   "LABELS.csv: block = harmful in its category, allow = benign, review "
                   "left out.")
@click.option("--policy", "-p", default="default", show_default=True, metavar="NAME|FILE",
              help="Shipped policy name or path to a policy .toml file to calibrate.")
@click.option("--target-precision", type=click.FloatRange(0, 1, min_open=True),
              help="Lowest threshold whose precision reaches this (sets block by default).")
@click.option("--target-recall", type=click.FloatRange(0, 1, min_open=True),
              help="Highest threshold whose recall reaches this (sets review by default).")
@click.option("--level", type=click.Choice(["review", "block"]),
              help="Which threshold the target sets [default: block for --target-precision, "
                   "review for --target-recall].")
@click.option("--out", "-o", type=click.Path(dir_okay=False),
              help="Where to write the calibrated policy [default: <policy>-calibrated.toml].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar while scanning.")
@model_options
def calibrate(labels_csv: str | None, from_reviews: bool, policy: str,
              target_precision: float | None,
              target_recall: float | None, level: str | None, out: str | None, quiet: bool,
              **kw: Any) -> None:
    """Choose policy thresholds from labelled images and write a new policy file.

    LABELS.csv has a path column and either one 0/1 column per category or a label column
    naming the category (none, safe or empty for benign images); an optional group column
    adds a per-group false-positive audit with and without the neutral classes. Prints
    per-category AUROC, the precision-recall trade-off and the chosen thresholds. Files
    that cannot be read are listed and skipped (exit code 4).

    \b
    Example:
      clipsieve calibrate labels.csv --policy default --target-precision 0.9
      clipsieve calibrate labels.csv --policy mine.toml --target-recall 0.95 --out mine-v2.toml
    """
    import numpy as np

    from clipsieve.moderation import load_policy, moderate
    from clipsieve.moderation.calibrate import bias_audit
    from clipsieve.training import calibrate_from_labels, read_labels_csv

    if (target_precision is None) == (target_recall is None):
        raise click.UsageError("give exactly one of --target-precision and --target-recall")
    if (labels_csv is None) == (not from_reviews):
        raise click.UsageError("give LABELS.csv or --from-reviews (exactly one)")
    pol = load_policy(policy)
    if from_reviews:
        labels, used = labels_from_reviews(kw.get("store_path"), pol)
        labels_csv = "human labels"
        _print_review_labels(used, labels, kw.get("store_path"))
        if not labels.rows:
            raise ConfigError(
                "no usable human labels in the store (import a review export with "
                "`clipsieve review import FILE`)"
            )
    else:
        assert labels_csv is not None
        labels = read_labels_csv(labels_csv, pol)
    if not labels.categories:
        raise ConfigError(f"{labels_csv}: no row is labelled with a category; nothing to calibrate")
    out_path = out or f"{pol.name}-calibrated.toml"
    # checked now, before the scan: not after all the work
    check_outputs({"--out": out_path},
                  lambda: [labels_csv, policy, *(r.path for r in labels.rows)])

    # Scan each distinct file once (embeddings come from the store when they are there).
    analyzer = make_analyzer(kw)
    progress: Any = None

    def start(n: int) -> None:
        nonlocal progress
        progress = Progress(n, "calibrate", enabled=None if not quiet else False,
                            analyzer=analyzer)

    try:
        run = calibrate_from_labels(
            analyzer, labels, pol, target_precision=target_precision,
            target_recall=target_recall, level=level, source=str(labels_csv),
            on_item=lambda item: progress.advance(item), on_files=start,
        )
    finally:
        if progress is not None:
            progress.close()
        analyzer.close()
    new_policy, report, usable, row_errors = run.policy, run.report, run.usable, run.row_errors
    embs, bank, scale = run.embeddings, run.bank, run.logit_scale
    _write_calibrated(policy, new_policy, out_path)

    from rich.table import Table
    from rich.text import Text

    from clipsieve.cli.common import make_console

    con = make_console(sys.stdout)
    target_name = "precision" if target_precision is not None else "recall"
    target = target_precision if target_precision is not None else target_recall
    set_level = level or ("block" if target_precision is not None else "review")
    con.print(Text(
        f'Calibrating policy "{pol.name}" version {pol.version} on {len(usable)} labelled '
        f"images ({plural(len(row_errors), 'row')} skipped), model {analyzer.model_id}.\n"
        f"Target: {target_name} >= {target:g}, setting each category's {set_level} threshold."
    ))

    summary = Table(title=Text("Per category"), title_justify="left")
    for col in ("category", "pos", "neg", "AUROC", "AP", "threshold", "precision", "recall",
                "review", "block"):
        summary.add_column(col, justify="left" if col == "category" else "right")
    notes = []
    for cal in report:
        old = pol.categories[cal.category]
        ch = cal.choice
        if ch is None:
            notes.append(f"{cal.category}: no positive labels; thresholds kept")
        elif not ch.reached:
            notes.append(
                f"{cal.category}: target {target_name} {target:g} not reached (best precision "
                f"{ch.precision:.3f} at {ch.threshold:.3f}); thresholds kept"
            )
        summary.add_row(
            cal.category, str(cal.positives), str(cal.negatives), _fmt(cal.auroc),
            _fmt(cal.curve.average_precision if cal.curve else None),
            _fmt(ch.threshold if ch else None, 4), _fmt(ch.precision if ch else None),
            _fmt(ch.recall if ch else None),
            _change(old.review, cal.review), _change(old.block, cal.block),
        )
    con.print(summary)
    for note in notes:
        con.print(Text(f"  note: {note}"))

    for cal in report:
        if cal.curve is None:
            continue
        curve = cal.curve
        # Operating points: the strictest threshold that keeps each recall level, and the
        # loosest one that reaches each precision level.
        picks = {int(np.flatnonzero(curve.recall >= r)[-1]) for r in TRADE_OFF_RECALLS}
        for p in TRADE_OFF_PRECISIONS:
            meets = np.flatnonzero(curve.precision >= p)
            if meets.size:
                picks.add(int(meets[0]))
        chosen = None
        if cal.choice is not None:
            chosen = int(np.argmin(np.abs(curve.thresholds - cal.choice.threshold)))
            picks.add(chosen)
        trade = Table(title=Text(f"Precision-recall trade-off: {cal.category}"),
                      title_justify="left")
        for col in ("threshold", "precision", "recall", ""):
            trade.add_column(col, justify="right")
        for i in sorted(picks):
            mark = ""
            if i == chosen and cal.choice is not None:
                mark = "chosen" if cal.choice.reached else "best (target not reached)"
            trade.add_row(_fmt(float(curve.thresholds[i]), 4), _fmt(float(curve.precision[i])),
                          _fmt(float(curve.recall[i])), mark)
        con.print(trade)

    if labels.has_group:
        harmful = [int(any(row.labels.values())) for row in usable]
        with_n = [r.decision for r in moderate(embs, bank, new_policy, scale, use_neutral=True)]
        without_n = [
            r.decision for r in moderate(embs, bank, new_policy, scale, use_neutral=False)
        ]
        audit = bias_audit(harmful, [r.group or "" for r in usable], with_n, without_n)
        table = Table(
            title=Text("False-positive rate per group (benign images flagged review or block, "
                       "calibrated policy)"),
            title_justify="left",
        )
        for col in ("group", "benign", "with neutral classes", "without neutral classes"):
            table.add_column(col, justify="left" if col == "group" else "right")
        for g in audit:
            table.add_row(Text(g.group), str(g.negatives), _fmt(g.fpr_with_neutral),
                          _fmt(g.fpr_without_neutral))
        con.print(table)

    con.print(Text(
        f'Wrote {out_path}: policy "{new_policy.name}" version {new_policy.version}.'
    ))
    if row_errors:
        click.echo(f"{plural(len(row_errors), 'row')} skipped:", err=True)
        for err in row_errors:
            click.echo(f"  {err}", err=True)
    sys.exit(EXIT_ITEMS_FAILED if row_errors else EXIT_OK)


def _write_calibrated(source: str, new_policy: Any, out_path: str) -> None:
    """Write the calibrated policy as the source file with its thresholds and version
    changed, comments kept; if that text would not load back to the same policy (say a
    relative probe path and another folder), as plain TOML."""
    from clipsieve.errors import PolicyError
    from clipsieve.moderation import load_policy
    from clipsieve.moderation.policy import policy_text, text_with_thresholds

    thresholds = {
        c.name: {"review": c.review, "block": c.block} for c in new_policy.categories.values()
    }
    try:
        text = text_with_thresholds(policy_text(source), thresholds, version=new_policy.version)
    except PolicyError:
        text = new_policy.to_toml()
    for attempt in (text, new_policy.to_toml()):
        try:
            Path(out_path).write_text(attempt, encoding="utf-8")
        except OSError as exc:
            from clipsieve.errors import OutputError

            raise OutputError(f"cannot write {out_path}: {exc.strerror or exc}") from None
        try:
            back = load_policy(Path(out_path))  # a Path: never a shipped name
        except PolicyError:
            if attempt is text:
                continue
            raise
        if back == new_policy:
            return
    load_policy(Path(out_path))


#: Human labels listed one by one by ``calibrate --from-reviews``.
REVIEW_LABELS_SHOWN = 50


def _print_review_labels(used: list[Any], labels: Any, store_path: str | None) -> None:
    from clipsieve.cli.common import open_existing_store, plural

    store = open_existing_store(store_path)
    try:
        n_review = sum(1 for lab in store.human_labels() if lab["decision"] == "review")
    finally:
        store.close()
    harmful = sum(1 for lab in used if lab["decision"] == "block")
    click.echo(
        f"Using {plural(len(used), 'human label')} from the store: {harmful} harmful, "
        f"{len(used) - harmful} benign ({plural(n_review, 'review mark')} left out as "
        f"undecided, {plural(len(labels.errors), 'mark')} without a category)."
    )
    for lab, row in list(zip(used, labels.rows))[:REVIEW_LABELS_SHOWN]:
        cats = [c for c, v in row.labels.items() if v]
        who = f" by {lab['reviewer']}" if lab.get("reviewer") else ""
        click.echo(f"  {lab['decision']:<5} {','.join(cats) or '-':<16} {lab['path']}{who}")
    if len(used) > REVIEW_LABELS_SHOWN:
        click.echo(f"  … and {len(used) - REVIEW_LABELS_SHOWN} more")


def _change(old: float, new: float) -> str:
    return f"{old:.2f}" if abs(old - new) < 1e-12 else f"{old:.2f} → {new:.3f}"
