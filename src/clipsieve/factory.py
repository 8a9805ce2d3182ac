"""One head factory: :func:`build_heads`, used by every command, ``filter`` and the drivers.

The policy is loaded and checked (its probe categories against the model) once, here; a probe
or learned quality head file is loaded and checked against the model here too, so bad inputs
fail before any image is read. Unless ``lazy``, the heads are then built at once (prompt banks
and anchors computed); afterwards each head's ``compute`` is a pure function of arrays.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from clipsieve.heads.base import Head
from clipsieve.heads.probe import Probe, ProbeHead, load_probe
from clipsieve.heads.zeroshot import LabelsArg, LabelsHead, LabelSpec, load_templates
from clipsieve.moderation.captions import CaptionSource
from clipsieve.moderation.head import ModerationHead
from clipsieve.moderation.policy import Policy, load_policy
from clipsieve.moderation.scoring import LOW_AGREEMENT_CLIP_SCORE
from clipsieve.pipeline import TextEmbedder
from clipsieve.quality.head import QualityHead
from clipsieve.quality.learned import LearnedHead

__all__ = ["build_heads", "text_source"]


def text_source(source: Any) -> Any:
    """What heads are built against: an Analyzer or text source as is; an Encoder wrapped in a
    :class:`~clipsieve.pipeline.TextEmbedder` (which caches the prompt embeddings)."""
    if hasattr(source, "embed_texts") and hasattr(source, "model_id"):
        return source
    if hasattr(source, "encode_texts") and hasattr(source, "model_id"):
        return TextEmbedder(source)
    raise TypeError(
        f"build_heads needs an Analyzer, an Encoder or a text source, got {type(source).__name__}"
    )


def build_heads(
    source: Any,
    *,
    policy: Policy | str | os.PathLike[str] | None = "default",
    quality: bool | str | os.PathLike[str] | LearnedHead = True,
    quality_prompts: Any = None,
    quality_config: Any = None,
    labels: LabelsArg | LabelSpec | None = None,
    templates: Sequence[str] | str | None = None,
    probe: Probe | str | os.PathLike[str] | None = None,
    captions: CaptionSource | None = None,
    min_clip_score: float = LOW_AGREEMENT_CLIP_SCORE,
    lazy: bool = False,
) -> list[Head]:
    """Build the heads of an analysis, in result order: moderation, quality, labels, probe.

    Args:
        source: an :class:`~clipsieve.pipeline.Analyzer` (prompt embeddings are cached in its
            store), an :class:`~clipsieve.backends.Encoder`, or any text source with
            ``model_id``, ``logit_scale`` and ``embed_texts``.
        policy: moderation policy (a :class:`Policy`, a shipped name or a file); ``None``: no
            moderation.
        quality: ``True`` for the quality score, ``False`` for none, or a learned head (a
            ``.npz`` from train-quality, a LAION ``.pth``, or a loaded head) for its
            aesthetic part.
        quality_prompts: extra CLIP-IQA pairs reported as quality components.
        quality_config: a :class:`~clipsieve.quality.config.QualityConfig` or quality TOML
            file (default: the shipped ``quality.toml``).
        labels: zero-shot labels (names, label → prompts, or a :class:`LabelSpec`); ``None``:
            no labels.
        templates: prompt templates for the labels, or the name of a built-in set.
        probe: a trained probe (or its ``.npz``) for the ``probe`` field.
        captions: where the moderation head finds each scanned file's caption.
        min_clip_score: CLIPScore below which a caption does not describe its image.
        lazy: check files now but leave the prompt embeddings to the first batch (the CLI does
            this, so a run whose every file fails never loads the model).

    Returns:
        The heads (possibly empty).

    Raises:
        PolicyError, HeadError, ConfigError: a bad policy, probe, head file, labels or templates.

    Example:
        >>> an = Analyzer(store=False)
        >>> heads = build_heads(an, policy="default", labels=["cat", "dog"])
        >>> [h.field for h in heads]
        ['moderation', 'quality', 'labels']
    """
    # lazy: only the model id is needed now (the driver builds the heads on its first batch)
    text = None if lazy else text_source(source)
    model_id = str(source.model_id if text is None else text.model_id)
    heads: list[Any] = []
    if policy is not None:
        loaded = policy if isinstance(policy, Policy) else load_policy(policy)
        loaded.check_probes(model_id)
        heads.append(ModerationHead(loaded, captions, min_clip_score=min_clip_score))
    if quality is not False and quality is not None:
        head_file = None if quality is True else quality
        q = QualityHead(head_file, prompts=quality_prompts,  # type: ignore[arg-type]
                        config=quality_config)
        q.learned_for(model_id)
        heads.append(q)
    if labels is not None:
        tmpl = load_templates(templates) if isinstance(templates, str) else templates
        heads.append(LabelsHead(labels, tmpl))
    if probe is not None:
        loaded_probe = probe if isinstance(probe, Probe) else load_probe(probe, model_id)
        head = ProbeHead(loaded_probe)
        head.probe_for(model_id)
        heads.append(head)
    if text is not None:
        if hasattr(text, "build_heads"):  # an Analyzer: its prompt banks are cached too
            heads = text.build_heads(heads)
        else:
            heads = [h.build(text) for h in heads]
    return heads


