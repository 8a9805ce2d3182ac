"""Image quality: technical (no-model) measures of the decoded pixels."""

from clipsieve.quality.technical import (
    ANALYSIS_SIZE,
    COMPONENTS,
    QUALITY_CONFIG_PATH,
    TECHNICAL_VERSION,
    estimate_jpeg_quality,
    pixel_stats,
    technical_score,
    technical_scores,
)

__all__ = [
    "ANALYSIS_SIZE",
    "COMPONENTS",
    "QUALITY_CONFIG_PATH",
    "TECHNICAL_VERSION",
    "estimate_jpeg_quality",
    "pixel_stats",
    "technical_score",
    "technical_scores",
]
