"""Image quality on 0–10: technical measures of the pixels, CLIP-IQA pairs, learned heads.

* :mod:`~clipsieve.quality.technical` — technical (no-model) measures of the decoded pixels;
* :mod:`~clipsieve.quality.clipiqa` — CLIP-IQA antonym prompt pairs;
* :mod:`~clipsieve.quality.score` — the combination into ``{score, technical, aesthetic}``;
* :mod:`~clipsieve.quality.learned` — heads trained on ratings, and LAION aesthetic files;
* :mod:`~clipsieve.quality.head` — :class:`QualityHead`, which fills ``ItemResult.quality``.
"""

from clipsieve.quality.clipiqa import (
    ClipIQA,
    clip_iqa,
    clip_iqa_compute,
    format_prompts,
    list_pairs,
)
from clipsieve.quality.config import QualityConfig, default_quality_config, load_quality_config
from clipsieve.quality.head import QualityHead
from clipsieve.quality.learned import (
    LearnedHead,
    load_laion_aesthetic,
    load_quality_head,
    train_quality_head,
)
from clipsieve.quality.score import QualityResult, quality_from_parts
from clipsieve.quality.technical import (
    QUALITY_CONFIG_PATH,
    estimate_jpeg_quality,
    pixel_stats,
    technical_score,
    technical_scores,
)

__all__ = [
    "ANALYSIS_SIZE",
    "BUILTIN_PAIRS",
    "COMPONENTS",
    "QUALITY_CONFIG_PATH",
    "QUALITY_VERSION",
    "TECHNICAL_VERSION",
    "ClipIQA",
    "LearnedHead",
    "QualityConfig",
    "QualityHead",
    "QualityResult",
    "clip_iqa",
    "clip_iqa_compute",
    "default_quality_config",
    "estimate_jpeg_quality",
    "format_prompts",
    "list_pairs",
    "load_quality_config",
    "load_laion_aesthetic",
    "load_quality_head",
    "pixel_stats",
    "quality_from_parts",
    "technical_score",
    "technical_scores",
    "train_quality_head",
]


def __getattr__(name: str) -> object:
    """Configuration values of the shipped quality.toml, read on first use (not at import)."""
    from clipsieve.quality import clipiqa, score, technical

    for module in (technical, clipiqa, score):
        if name in module.__all__:
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
