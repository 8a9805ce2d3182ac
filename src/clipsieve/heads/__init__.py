"""Heads: cheap functions of stored embeddings (and pixel statistics) that fill result fields.

* :class:`Head` — the protocol (``field``, ``score_range``, ``build``, ``compute``);
* :class:`LabelsHead` — zero-shot labels from words with prompt ensembles (``labels``);
* :class:`ProbeHead` — a trained linear probe (``probe``); :func:`train_probe`,
  :func:`load_probe`.

The moderation head lives in :mod:`clipsieve.moderation`, the quality head in
:mod:`clipsieve.quality`.
"""

from clipsieve.heads.base import Head
from clipsieve.heads.probe import Probe, ProbeHead, load_probe, train_probe
from clipsieve.heads.zeroshot import (
    LabelsHead,
    build_zero_shot_classifier,
    list_template_sets,
    load_labels,
    load_templates,
    parse_labels,
    zero_shot_probabilities,
)

__all__ = [
    "Head",
    "LabelsHead",
    "Probe",
    "ProbeHead",
    "build_zero_shot_classifier",
    "list_template_sets",
    "load_labels",
    "load_probe",
    "load_templates",
    "parse_labels",
    "train_probe",
    "zero_shot_probabilities",
]
