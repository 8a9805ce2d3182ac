"""``clipsieve classify``: zero-shot labels and/or a trained probe for each image.

:func:`label_options` and :func:`label_head_options` are reusable: any command that scans can
accept the same ``--labels/--labels-file/--template/--templates/--probe`` options.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import IO, Any, TypeVar

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
    write_jsonl,
)
from clipsieve.paths import display

F = TypeVar("F", bound=Callable[..., Any])


def label_options(f: F) -> F:
    """--labels, --labels-file, --template, --templates, --probe."""
    opts = [
        click.option("--labels", "labels_text", metavar="A,B,C",
                     help='Comma-separated labels, e.g. "cat,dog,sports car".'),
        click.option("--labels-file", type=click.Path(dir_okay=False),
                     help="Labels with optional prompts: a .toml file ([labels] cat = "
                          "[\"a photo of a cat\"]) or text, one label per line "
                          "(label: prompt | prompt).",),
        click.option("--template", "template_list", multiple=True, metavar="TEXT",
                     help='A prompt template with {} for the label, e.g. "a photo of a {}."; '
                          "repeat to ensemble. Replaces the built-in set."),
        click.option("--templates", "template_set", metavar="NAME",
                     help="Built-in template set: default (10-prompt ensemble), single "
                          "(\"a photo of a {}.\") or imagenet7 [default: default]."),
        click.option("--probe", "probe_path", type=click.Path(dir_okay=False),
                     help="A probe .npz from `clipsieve train-probe`; its probabilities go in "
                          "the `probe` field."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def label_head_options(kw: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    """The :func:`clipsieve.build_heads` arguments chosen by :func:`label_options`.

    The options are popped from ``kw``; usage errors (both --labels and --labels-file, …) are
    raised here. Label files are read here; the probe is loaded by ``build_heads``.

    Returns:
        ``{"labels": ..., "templates": ..., "probe": ...}`` (values ``None`` when not given).
    """
    from clipsieve.heads.zeroshot import load_labels, parse_labels

    labels_text = kw.pop("labels_text", None)
    labels_file = kw.pop("labels_file", None)
    template_list = kw.pop("template_list", ())
    template_set = kw.pop("template_set", None)
    probe_path = kw.pop("probe_path", None)
    out: dict[str, Any] = {"labels": None, "templates": None, "probe": probe_path}
    if labels_text and labels_file:
        raise click.UsageError("give --labels or --labels-file, not both")
    if template_list and template_set:
        raise click.UsageError("give --template (repeatable) or --templates NAME, not both")
    if not (labels_text or labels_file):
        if template_list or template_set:
            raise click.UsageError("--template/--templates need --labels or --labels-file")
        if probe_path is None and required:
            raise click.UsageError("give --labels, --labels-file or --probe")
        return out
    out["labels"] = parse_labels(labels_text) if labels_text else load_labels(labels_file)
    if template_list:
        from clipsieve.heads.zeroshot import check_templates

        out["templates"] = check_templates(list(template_list), source="--template")
    elif template_set:
        out["templates"] = template_set
    return out


def _top(probs: dict[str, float] | None, k: int) -> str:
    if not probs:
        return ""
    best = sorted(probs.items(), key=lambda kv: -kv[1])[:k]
    return "  ".join(f"{label} {p:.3f}" for label, p in best)


class _Table:
    """The table: path, then the top labels (with --labels), the label stability (with
    several templates) and the probe's top classes (with --probe); no empty columns."""

    def __init__(self, fh: IO[str], path_width: int, top: int, *, labels: bool, probe: bool,
                 stability: bool) -> None:
        self.fh, self.width, self.top = fh, path_width, top
        self.labels, self.probe, self.stability = labels, probe, stability
        cols = []
        if labels:
            cols.append(f"LABELS (top {top})")
        if stability:
            cols.append("STABILITY")
        if probe:
            cols.append(f"PROBE (top {top})")
        self.fh.write(f"{'PATH':<{self.width}}  " + "  |  ".join(cols) + "\n")

    def row(self, item: Any) -> None:
        shown = display(item.path)
        path = shown if len(shown) <= self.width else "…" + shown[-self.width + 1 :]
        if not item.ok:
            err = item.error
            self.fh.write(f"{path:<{self.width}}  error: {err.code}: {err.message}\n")
        else:
            parts = []
            if self.labels:
                parts.append(_top(item.labels, self.top))
            if self.stability:
                v = item.extra.get("label_stability")
                parts.append("" if v is None else f"{v:.2f}")
            if self.probe:
                parts.append(_top(item.extra.get("probe"), self.top))
            self.fh.write(f"{path:<{self.width}}  " + "  |  ".join(parts) + "\n")
        self.fh.flush()


@click.command()
@click.argument("paths", nargs=-1, type=click.Path())
@label_options
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl"]), default="table",
              show_default=True, help="table: top labels per file; jsonl: full results.")
@click.option("--out", "-o", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write here instead of stdout.")
@click.option("--top", default=3, show_default=True, type=click.IntRange(1),
              help="Labels shown per file in the table.")
@click.option("--no-recursive", is_flag=True, help="Do not descend into sub-folders.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line.")
@input_options
@model_options
def classify(paths: tuple[str, ...], fmt: str, out: str | None, top: int, no_recursive: bool,
             quiet: bool, **kw: Any) -> None:
    """Classify images into your own labels (zero-shot) and/or with a trained probe.

    Each label's prompts (its own, or the templates with {} replaced by the label) are
    embedded once and averaged; an image's probabilities are a softmax of the model's
    logit scale times its cosine with each label. Results carry `labels` ({label:
    probability}) and, with --probe, `probe` ({class: probability}). With several
    templates each result also has `label_stability`: the share of templates whose top
    label alone agrees with the ensemble's. Labels that ask for counting ("two dogs") or
    look like names of people get a warning. Embeddings come from the store when the files
    were scanned before.

    \b
    Example:
      clipsieve classify photos/ --labels "cat,dog,car"
      clipsieve classify photos/ --labels-file labels.toml --template "a photo of a {}."
      clipsieve classify photos/ --probe probe.npz --format jsonl --out labels.jsonl
    """

    from clipsieve.factory import build_heads

    analyzer = make_analyzer(kw)
    try:
        option_files = [kw.get("labels_file"), kw.get("probe_path")]
        chosen = label_head_options(kw)
        heads = build_heads(analyzer, policy=None, quality=False, **chosen, lazy=True)
        labels_head = next((h for h in heads if h.field == "labels"), None)
        if labels_head is not None:
            from clipsieve.heads.prompt_checks import LabelStabilityHead, label_warnings

            for warning in label_warnings(list(getattr(labels_head, "labels", ()))):
                click.echo(f"clipsieve: warning: {warning}", err=True)
            tmpl = chosen["templates"]
            if isinstance(tmpl, str):
                from clipsieve.heads.zeroshot import load_templates

                tmpl = load_templates(tmpl)
            stability = LabelStabilityHead(chosen["labels"], tmpl)
            if stability.meaningful:
                heads.append(stability)
        files = collect_sources(paths, kw, recursive=not no_recursive)
        check_outputs({"--out": out}, lambda: input_files(files, option_files))
        progress = Progress(len(files), "classify", enabled=None if not quiet else False,
                            analyzer=analyzer)
        try:
            with open_output(out) as fh:
                table = None
                if fmt == "table":
                    width = min(max([len(f.name) for f in files] + [4]), 60)
                    fields = {h.field for h in heads}
                    table = _Table(fh, width, top, labels="labels" in fields,
                                   probe="probe" in fields,
                                   stability="label_stability" in fields)
                for item in analyzer.scan(files, heads=heads, recursive=not no_recursive):
                    if table is not None:
                        table.row(item)
                    else:
                        write_jsonl(fh, item.to_dict())
                    progress.advance(item)
        finally:
            progress.close()
    finally:
        analyzer.close()
    if not quiet:
        click.echo(progress.summary("classified"), err=True)
    sys.exit(progress.exit_code())
