"""Video: sampled frames through the same heads as images; segments, a verdict, quality, checks.

Needs PyAV (``pip install 'clipsieve[video]'``), imported only when a video is opened.

    from clipsieve import Analyzer, build_heads
    from clipsieve.video import VideoOptions, analyze_video, Sampling

    an = Analyzer()
    heads = build_heads(an, policy="default")
    r = analyze_video(an, "clip.mp4", heads=heads, options=VideoOptions(Sampling(fps=1)))
    print(r.verdict, [s["category"] for s in r.segments])
"""

from clipsieve.media.sniff import VIDEO_EXTENSIONS, media_kind, sniff_bytes
from clipsieve.video.analyze import (
    MEDIA_EXTENSIONS,
    VideoOptions,
    VideoResult,
    analyze_video,
    analyze_videos,
    default_timeout_s,
    scan_media,
)
from clipsieve.video.decode import Sampling, VideoInfo, VideoReader
from clipsieve.video.timeline import (
    CheckSettings,
    VideoSettings,
    build_segments,
    find_checks,
    quality_summary,
    video_verdict,
)

__all__ = [
    "MEDIA_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "CheckSettings",
    "Sampling",
    "VideoInfo",
    "VideoOptions",
    "VideoReader",
    "VideoResult",
    "VideoSettings",
    "analyze_video",
    "analyze_videos",
    "build_segments",
    "default_timeout_s",
    "find_checks",
    "media_kind",
    "quality_summary",
    "scan_media",
    "sniff_bytes",
    "video_verdict",
]
