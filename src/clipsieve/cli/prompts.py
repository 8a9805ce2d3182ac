"""``clipsieve prompts``: compare prompt templates on labelled examples, keep the best."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from clipsieve.cli.common import Progress, make_analyzer, model_options, plural


@click.command()
@click.argument("labels_csv", metavar="LABELS.csv|FOLDER", type=click.Path(exists=True))
@click.option("--labels-file", required=True, type=click.Path(dir_okay=False),
              help="The labels (and their own prompts) to evaluate: .toml or text, as for "
                   "classify.")
@click.option("--template", "template_list", multiple=True, metavar="TEXT",
              help="A template to compare (repeat); replaces the labels file's or built-in set.")
@click.option("--templates", "template_set", metavar="NAME",
              help="A built-in template set to compare: default, single or imagenet7.")
@click.option("--out", "-o", type=click.Path(dir_okay=False),
              help="Where to write the best labels file [default: <labels file>-best.toml].")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@model_options
def prompts(labels_csv: str, labels_file: str, template_list: tuple[str, ...],
            template_set: str | None, out: str | None, quiet: bool, **kw: Any) -> None:
    """Measure how the wording of prompts changes zero-shot accuracy, and keep the best.

    LABELS.csv has path,label rows (or give a folder with one sub-folder per label, as for
    train-probe); every label must be in the labels file. Prints the top-1 accuracy of
    each template alone, of the full ensemble, and of the best ensemble of the k most
    accurate templates, then writes a labels file (TOML) with the winning templates and
    the labels' own prompts. Files that cannot be read are listed and skipped (exit 4).

    \b
    Example:
      clipsieve prompts labelled.csv --labels-file labels.txt --out labels-best.toml
      clipsieve prompts pets/ --labels-file pets.toml --templates imagenet7
      clipsieve classify photos/ --labels-file labels-best.toml
    """
    import numpy as np

    from clipsieve.errors import ConfigError
    from clipsieve.heads.prompt_checks import evaluate_templates, label_warnings
    from clipsieve.heads.zeroshot import check_templates, load_labels, load_templates
    from clipsieve.training import read_dataset

    if template_list and template_set:
        raise click.UsageError("give --template (repeatable) or --templates NAME, not both")
    spec = load_labels(labels_file)
    templates = None
    if template_list:
        templates = check_templates(list(template_list), source="--template")
    elif template_set:
        templates = load_templates(template_set)
    rows = read_dataset(labels_csv)
    unknown = sorted({label for _, label in rows if label not in spec.labels})
    if unknown:
        raise ConfigError(
            f"{labels_csv}: labels not in {labels_file}: {', '.join(unknown)} "
            f"(its labels: {', '.join(spec.labels)})"
        )
    for warning in label_warnings(list(spec.labels)):
        click.echo(f"clipsieve: warning: {warning}", err=True)

    analyzer = make_analyzer(kw)
    files = list(dict.fromkeys(os.path.realpath(p) for p, _ in rows))
    progress = Progress(len(files), "embed", enabled=None if not quiet else False,
                        analyzer=analyzer)
    emb: dict[str, Any] = {}
    failed = []
    try:
        for item in analyzer.scan(files):
            progress.advance(item)
            if item.ok:
                emb[item.path] = item.embedding
            else:
                failed.append(item)
        progress.close()
        usable = [(os.path.realpath(p), label) for p, label in rows
                  if os.path.realpath(p) in emb]
        if not usable:
            raise ConfigError(f"{labels_csv}: no image could be read")
        result = evaluate_templates(
            analyzer, np.stack([emb[p] for p, _ in usable]), [lb for _, lb in usable],
            spec, templates,
        )
    finally:
        progress.close()
        analyzer.close()

    click.echo(f"{plural(len(usable), 'labelled image')}, {plural(len(spec.labels), 'label')}, "
               f"model {analyzer.model_id}")
    width = max(len(s.name) for s in result.per_template) if result.per_template else 10
    width = min(max(width, 22), 70)
    click.echo(f"{'TEMPLATE':<{width}}  ACCURACY")
    for s in result.per_template:
        click.echo(f"{s.name[:width]:<{width}}  {s.accuracy:.3f}  ({s.correct}/{s.total})")
    for s in (result.ensemble, result.greedy):
        click.echo(f"{s.name:<{width}}  {s.accuracy:.3f}  ({s.correct}/{s.total})")
    spread = [s.accuracy for s in result.per_template]
    if spread:
        click.echo(f"single templates range from {min(spread):.3f} to {max(spread):.3f}: "
                   "that is how much the wording alone moves accuracy here")
    best = result.best
    click.echo(f"best: {best.name} ({len(best.templates)} template"
               f"{'s' if len(best.templates) != 1 else ''}), accuracy {best.accuracy:.3f}")
    for label, acc in result.per_label.items():
        click.echo(f"  {label}: {acc:.3f}")

    dest = out or f"{os.path.splitext(labels_file)[0]}-best.toml"
    lines = [
        f"# Written by `clipsieve prompts` from {labels_file} on {len(usable)} labelled images",
        f"# ({labels_csv}), model {analyzer.model_id}: {best.name}, accuracy "
        f"{best.accuracy:.3f} (full ensemble {result.ensemble.accuracy:.3f}).",
        "templates = [",
        *[f"    {json.dumps(t, ensure_ascii=False)}," for t in best.templates],
        "]",
        "",
        "[labels]",
    ]
    for label, own in spec.labels.items():
        lines.append(f"{json.dumps(label, ensure_ascii=False)} = "
                     f"{json.dumps(list(own), ensure_ascii=False)}")
    with open(dest, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    load_labels(dest)  # what we wrote reads back
    click.echo(f"wrote {dest}")
    if failed:
        click.echo(f"skipped {plural(len(failed), 'file')} that could not be read:", err=True)
        for item in failed:
            click.echo(f"  {item.path}: {item.error.code}: {item.error.message}", err=True)
    sys.exit(4 if failed else 0)
