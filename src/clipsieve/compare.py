"""Compare two encoders on your own images: embedding cosine and moderation-decision agreement.

:func:`compare_encoders` scans the same files with a baseline encoder (torch, float32) and a
candidate (``onnx`` or ``onnx-int8``), with no store on either side so that both really
compute, and reports per file the cosine between the two embeddings and both moderation
decisions under one policy. ``clipsieve compare-encoders`` prints the summary.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["EncoderComparison", "compare_encoders"]


@dataclass
class EncoderComparison:
    """What :func:`compare_encoders` found.

    Attributes:
        model_id: the model both encoders ran.
        baseline, candidate: ``kind (precision)`` of each encoder.
        policy: ``name version`` of the moderation policy.
        paths: the files both encoders embedded, in scan order.
        cosines: cosine between the two embeddings of each file.
        baseline_decisions, candidate_decisions: moderation decision of each file.
        failed: ``(path, reason)`` of files either side could not read.
    """

    model_id: str
    baseline: str
    candidate: str
    policy: str
    paths: list[str] = field(default_factory=list)
    cosines: list[float] = field(default_factory=list)
    baseline_decisions: list[str] = field(default_factory=list)
    candidate_decisions: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.paths)

    @property
    def mean_cosine(self) -> float:
        return float(np.mean(self.cosines)) if self.cosines else float("nan")

    @property
    def min_cosine(self) -> float:
        return float(np.min(self.cosines)) if self.cosines else float("nan")

    @property
    def agreement(self) -> float:
        """Share of files whose moderation decision is the same under both encoders."""
        if not self.paths:
            return float("nan")
        same = sum(a == b for a, b in zip(self.baseline_decisions, self.candidate_decisions))
        return same / self.n

    @property
    def disagreements(self) -> list[tuple[str, str, str]]:
        """``(path, baseline decision, candidate decision)`` where they differ."""
        return [(p, a, b) for p, a, b in zip(self.paths, self.baseline_decisions,
                                             self.candidate_decisions) if a != b]

    def worst(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` files with the lowest cosine."""
        order = np.argsort(self.cosines)[:k]
        return [(self.paths[i], float(self.cosines[i])) for i in order]

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_id, "baseline": self.baseline, "candidate": self.candidate,
            "policy": self.policy, "files": self.n, "failed": len(self.failed),
            "cosine_mean": self.mean_cosine, "cosine_min": self.min_cosine,
            "decision_agreement": self.agreement,
            "decisions": {
                "baseline": dict(Counter(self.baseline_decisions)),
                "candidate": dict(Counter(self.candidate_decisions)),
            },
            "disagreements": [{"path": p, "baseline": a, "candidate": b}
                              for p, a, b in self.disagreements],
            "lowest_cosine": [{"path": p, "cosine": c} for p, c in self.worst()],
        }


def compare_encoders(
    paths: Iterable[str | os.PathLike[str]],
    *,
    encoder: str = "onnx-int8",
    baseline: str = "torch",
    model: str | None = None,
    precision: str = "auto",
    baseline_precision: str = "float32",
    device: str = "cpu",
    policy: Any = "default",
    batch_size: int = 32,
    workers: int | None = None,
    limits: Any = None,
    recursive: bool = True,
    on_item: Callable[[Any], None] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> EncoderComparison:
    """Embed and moderate the same files with two encoders and compare.

    Args:
        paths: files and folders.
        encoder: the candidate encoder kind (``onnx``, ``onnx-int8``…).
        baseline: the reference encoder kind (``torch``), run at ``baseline_precision``.
        model: Hugging Face id or checkpoint folder (default: ``CLIPSIEVE_MODEL``…).
        precision: the candidate's precision (``auto``).
        device: where both run.
        policy: moderation policy (name, file or :class:`~clipsieve.moderation.Policy`).
        on_item: called with each result of either scan (progress).
        on_status: called with "loading model …" before each encoder loads.

    Raises:
        ConfigError, ModelError, PolicyError: as for a scan.
    """
    from clipsieve.factory import build_heads
    from clipsieve.moderation import load_policy
    from clipsieve.pipeline import Analyzer

    loaded = policy if hasattr(policy, "categories") else load_policy(policy)
    files = [os.fspath(p) for p in paths]
    runs: dict[str, dict[str, tuple[np.ndarray, str]]] = {}
    names: dict[str, str] = {}
    failed: dict[str, str] = {}
    model_id = ""
    order: list[str] = []
    for role, kind, prec in (("baseline", baseline, baseline_precision),
                             ("candidate", encoder, precision)):
        an = Analyzer(model=model, encoder=kind, device=device, precision=prec, store=False,
                      batch_size=batch_size, workers=workers, limits=limits,
                      pixel_features=False)
        an.on_status = on_status
        try:
            heads = build_heads(an, policy=loaded, quality=False)
            got: dict[str, tuple[np.ndarray, str]] = {}
            for item in an.scan(files, heads=heads, recursive=recursive):
                if on_item is not None:
                    on_item(item)
                if role == "baseline":
                    order.append(item.path)
                if not item.ok:
                    err = item.error
                    failed.setdefault(item.path, f"{err.code}: {err.message}" if err else "failed")
                    continue
                got[item.path] = (np.asarray(item.embedding, dtype=np.float64),
                                  item.moderation.decision)
            runs[role] = got
            names[role] = f"{an.encoder.kind} ({an.encoder.precision})"
            model_id = an.model_id
        finally:
            an.close()
    out = EncoderComparison(model_id, names["baseline"], names["candidate"],
                            f"{loaded.name} {loaded.version}")
    for path in order:
        a, b = runs["baseline"].get(path), runs["candidate"].get(path)
        if a is None or b is None:
            continue
        cos = float(a[0] @ b[0] / max(np.linalg.norm(a[0]) * np.linalg.norm(b[0]), 1e-12))
        out.paths.append(path)
        out.cosines.append(cos)
        out.baseline_decisions.append(a[1])
        out.candidate_decisions.append(b[1])
    out.failed = sorted(failed.items())
    return out
