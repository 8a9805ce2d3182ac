"""``clipsieve train-probe``: fit a linear probe on stored embeddings."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from clipsieve.cli.common import (
    check_outputs,
    model_options,
    train_with_progress,
    weights_outputs,
    writing,
)


@click.command("train-probe")
@click.argument("data", type=click.Path(exists=True))
@click.option("--out", "-o", default="probe.npz", show_default=True,
              type=click.Path(dir_okay=False),
              help="Weights file (.npz); the sidecar goes beside it with .json.")
@click.option("--folds", default=5, show_default=True, type=click.IntRange(2),
              help="Stratified cross-validation folds (fewer when a class is smaller).")
@click.option("--C", "c", default=1.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Inverse regularisation strength of the logistic regression.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@model_options
def train_probe(data: str, out: str, folds: int, c: float, quiet: bool, **kw: Any) -> None:
    """Train a linear probe (logistic regression) on image embeddings.

    DATA is a folder with one sub-folder of images per class, or a CSV file of
    path,label rows. Images are embedded once (stored embeddings are reused); files that
    cannot be read are listed and skipped. Prints the stratified k-fold accuracy, then
    fits on all images and writes the weights (.npz) and a .json sidecar recording the
    model, labels and metrics. A probe only loads with the model it was trained on.

    \b
    Example:
      clipsieve train-probe training/ --out probes/pets.npz
      clipsieve train-probe labels.csv --folds 10 --C 10
      clipsieve classify photos/ --probe probes/pets.npz
    """
    from clipsieve.training import read_dataset, train_probe_from_data

    npz, side = weights_outputs(out)
    check_outputs({"--out": npz, "sidecar": side}, lambda: _data_files(data))
    probe, failed, progress = train_with_progress(
        kw, quiet, lambda: len(read_dataset(data)),
        lambda analyzer, on_item: train_probe_from_data(
            analyzer, data, C=c, folds=folds, on_item=on_item
        ),
    )
    info = probe.info
    m = info["metrics"]
    counts = ", ".join(f"{label} ({k})" for label, k in info["n_per_class"].items())
    click.echo(f"classes: {counts}; {info['n_examples']} images, {len(failed)} skipped")
    folds_note = ""
    if m["folds"] < m["folds_requested"]:
        folds_note = (f" (folds reduced from {m['folds_requested']} to {m['folds']}: the "
                      f"smallest class has {min(info['n_per_class'].values())} images)")
    per_fold = ", ".join(f"{a:.3f}" for a in m["cv_fold_accuracies"])
    click.echo(f"{m['folds']}-fold accuracy: {m['cv_accuracy_mean']:.3f} ± "
               f"{m['cv_accuracy_std']:.3f} [{per_fold}]{folds_note}")
    click.echo(f"training accuracy: {m['train_accuracy']:.3f} (C={c:g})")
    with writing(npz):
        saved, saved_side = probe.save(out)
    click.echo(f"wrote {saved} and {saved_side} (model {probe.model_id})")
    sys.exit(progress.exit_code())


def _data_files(data: str) -> list[str]:
    from clipsieve.training import read_dataset

    files = [p for p, _ in read_dataset(data)]
    return [data, *files] if os.path.isfile(data) else files
