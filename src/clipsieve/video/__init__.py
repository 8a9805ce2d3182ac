"""Video: decoding and sampling, segments with hysteresis, a verdict, quality and checks.

Needs PyAV (``pip install 'clipsieve[video]'``), imported only when a video is opened.
The driver that runs sampled frames through the analyzer's batch step follows.
"""

from clipsieve.video.decode import Sampling, VideoInfo, VideoReader
from clipsieve.video.sniff import VIDEO_EXTENSIONS, media_kind, sniff_bytes
from clipsieve.video.timeline import (
    CheckSettings,
    VideoSettings,
    build_segments,
    find_checks,
    quality_summary,
    video_verdict,
)

__all__ = [
    "VIDEO_EXTENSIONS",
    "CheckSettings",
    "Sampling",
    "VideoInfo",
    "VideoReader",
    "VideoSettings",
    "build_segments",
    "find_checks",
    "media_kind",
    "quality_summary",
    "sniff_bytes",
    "video_verdict",
]
