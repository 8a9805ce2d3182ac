"""The quality head: a 0–10 score for every scanned image.

:class:`QualityHead` plugs into :meth:`clipsieve.pipeline.Analyzer.scan` and sets
``item.quality`` to a :class:`~clipsieve.quality.score.QualityResult`. Per batch it does:

* CLIP-IQA over every built-in pair (and any extra pairs), with the prompt anchors computed
  once per model through ``analyzer.embed_texts`` (which keeps them in the store);
* the technical components from the pixel statistics stored with each embedding
  (``item.features``);
* with a learned head (``head_file``), its prediction as the aesthetic part;
* the combination of :func:`~clipsieve.quality.score.quality_from_parts`.

Nothing here touches the model's image tower: re-scoring stored embeddings is cheap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from clipsieve.heads.base import BuiltHead
from clipsieve.quality.clipiqa import ClipIQA, PromptSpec
from clipsieve.quality.config import QualityConfig, default_quality_config, load_quality_config
from clipsieve.quality.learned import LearnedHead, load_quality_head
from clipsieve.quality.score import QualityResult, quality_from_parts
from clipsieve.types import SCORE_RANGES

if TYPE_CHECKING:
    pass

__all__ = ["QualityHead"]


class QualityHead(BuiltHead):
    """Score the quality of scanned images (field ``quality``).

    Args:
        head_file: a learned head — a ``.npz`` written by ``clipsieve train-quality`` (checked
            against the analyzer's model) or a LAION aesthetic predictor ``.pth`` — or a loaded
            :class:`~clipsieve.quality.learned.LearnedHead`; its prediction becomes the
            aesthetic part. ``None``: the aesthetic part comes from the CLIP-IQA aesthetic pairs.
        prompts: extra CLIP-IQA pairs reported as components (``clip_<name>``): built-in
            names, named pairs ``(name, (positive, negative))``, a mapping
            ``{name: (positive, negative)}``, or bare ``(positive, negative)`` tuples (named
            after the positive prompt: ``("Crisp photo.", "Soft photo.")`` →
            ``clip_crisp_photo``). The built-in pairs are always computed.
        config: the quality configuration (a loaded :class:`~clipsieve.quality.config.
            QualityConfig` or a quality TOML file); default: the shipped ``quality.toml``.

    Example:
        >>> an = Analyzer(store=False)
        >>> for r in an.scan(["photos/"], heads=[QualityHead()]):
        ...     print(r.path, r.quality.score, r.quality.components["sharpness"])
    """

    field = "quality"
    score_range = SCORE_RANGES["quality"]

    def __init__(
        self,
        head_file: str | os.PathLike[str] | LearnedHead | None = None,
        *,
        prompts: PromptSpec | Sequence[PromptSpec] | Mapping[str, tuple[str, str]] | None = None,
        config: QualityConfig | str | os.PathLike[str] | None = None,
    ) -> None:
        if config is None:
            config = default_quality_config()
        elif not isinstance(config, QualityConfig):
            config = load_quality_config(config)
        self.config = config
        pairs: dict[str, tuple[str, str]] = dict(config.pairs)
        if prompts is not None:
            from clipsieve.quality.clipiqa import format_prompts

            plist, names = format_prompts(prompts, config, derive_names=True)
            for i, name in enumerate(names):
                pairs[name] = (plist[2 * i], plist[2 * i + 1])
        self.iqa = ClipIQA(pairs, config=config)
        if isinstance(head_file, LearnedHead):
            self._learned: LearnedHead | None = head_file
            self.head_path: str | None = head_file.path
        else:
            self._learned = None
            self.head_path = None if head_file is None else os.fspath(head_file)

    def learned_for(self, model_id: str) -> LearnedHead | None:
        """The learned head, loaded and checked against ``model_id`` (``None`` without one).

        Raises:
            HeadError: missing or invalid file, or a head trained on another model.
        """
        if self._learned is None and self.head_path is not None:
            self._learned = load_quality_head(self.head_path, model_id)
        if self._learned is not None:
            self._learned.check_model(model_id)
        return self._learned

    def _build(self, text: Any) -> None:
        self._model_id = str(text.model_id)
        self._learned_now = self.learned_for(self._model_id)
        self._anchors = self.iqa.anchors(text)

    def compute(
        self,
        embeddings: np.ndarray,
        features: Sequence[Mapping[str, Any] | None],
        captions: Sequence[Any] | None = None,
    ) -> list[QualityResult]:
        """One :class:`~clipsieve.quality.score.QualityResult` per row.

        Args:
            embeddings: ``(N, D)`` image embeddings of the model the head was built for.
            features: the pixel statistics of each image (``None`` where unknown).
            captions: unused.
        """
        self._check_built()
        if len(embeddings) == 0:
            return []
        from clipsieve.quality.clipiqa import clip_iqa_compute

        probs = clip_iqa_compute(
            embeddings, self._anchors, self.iqa.names, logit_scale=self.iqa.logit_scale
        )
        learned = self._learned_now
        feats = list(features)
        predictions = None
        head_info = None
        if learned is not None:
            predictions = learned.predict(embeddings, feats, model_id=self._model_id)
            head_info = learned.describe()
        return [
            quality_from_parts(
                feats[i],
                {name: float(p[i]) for name, p in probs.items()},
                learned_aesthetic=None if predictions is None else float(predictions[i]),
                model=self._model_id,
                head=head_info,
                config=self.config,
            )
            for i in range(len(feats))
        ]
