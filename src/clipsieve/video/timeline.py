"""From per-frame results to a video's segments, verdict, quality summary and checks.

Pure functions over the frame dicts of a video result (``timestamp_ms``, ``moderation``,
``quality``) and the frame metrics recorded while decoding; nothing here decodes or runs a
model, so re-scoring a stored video with another policy is cheap.

* :func:`build_segments` — per moderation category, segments with hysteresis (the shape of
  AWS Rekognition's segment results): start at the review threshold, end below
  ``end_factor`` × it, merge small gaps, drop short segments (:class:`VideoSettings`, the
  policy's ``[video]`` table).
* :func:`video_verdict` — the worst decision and the segment that caused it.
* :func:`quality_summary` — mean, median and 10th percentile of frame quality, plus checks.
* :func:`find_checks` — ``black``, ``frozen`` and ``low_bitrate`` stretches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clipsieve.moderation.policy import VideoSettings

__all__ = [
    "CheckSettings",
    "VideoSettings",
    "build_segments",
    "find_checks",
    "quality_summary",
    "video_verdict",
]

_RANK = {"allow": 0, "review": 1, "block": 2}


def _score(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def build_segments(
    frames: Sequence[Mapping[str, Any]],
    end_ms: int,
    settings: VideoSettings = VideoSettings(),
) -> list[dict[str, Any]]:
    """Segments per moderation category, in order of start time (then category).

    Args:
        frames: frame dicts in time order, each with ``timestamp_ms`` and ``moderation``
            (``categories`` {name: score} and ``thresholds`` {name: {review, block}}).
        end_ms: where a segment still open at the last frame ends (the video's duration).
        settings: hysteresis, merging and minimum duration.

    Returns:
        ``{category, start_ms, end_ms, duration_ms, max_score, mean_score, decision}`` dicts;
        ``decision`` is ``block`` when a frame of the segment reached its block threshold,
        else ``review``.
    """
    cats: list[str] = []
    for f in frames:
        mod = f.get("moderation")
        if isinstance(mod, Mapping) and isinstance(mod.get("categories"), Mapping):
            for name in mod["categories"]:
                if name not in cats:
                    cats.append(name)
    out: list[dict[str, Any]] = []
    for cat in cats:
        raw: list[tuple[int, int, list[float], bool]] = []  # start, end, scores, blocked
        cur: tuple[int, list[float], list[bool]] | None = None
        for f in frames:
            mod = f.get("moderation")
            if not isinstance(mod, Mapping):
                continue
            s = _score((mod.get("categories") or {}).get(cat))
            thr = (mod.get("thresholds") or {}).get(cat) or {}
            review, block = _score(thr.get("review")), _score(thr.get("block"))
            if s is None or review is None:
                continue
            t = int(f["timestamp_ms"])
            if cur is None:
                if s >= review:
                    cur = (t, [s], [block is not None and s >= block])
            elif s < settings.end_factor * review:
                raw.append((cur[0], t, cur[1], any(cur[2])))
                cur = None
            else:
                cur[1].append(s)
                cur[2].append(block is not None and s >= block)
        if cur is not None:
            last_t = int(frames[-1]["timestamp_ms"]) if frames else cur[0]
            raw.append((cur[0], max(end_ms, last_t), cur[1], any(cur[2])))
        merged: list[tuple[int, int, list[float], bool]] = []
        for seg in raw:
            if merged and seg[0] - merged[-1][1] <= settings.merge_gap_ms:
                a = merged[-1]
                merged[-1] = (a[0], seg[1], a[2] + seg[2], a[3] or seg[3])
            else:
                merged.append(seg)
        for start, end, scores, blocked in merged:
            if end - start < settings.min_duration_ms:
                continue
            out.append({
                "category": cat,
                "start_ms": start,
                "end_ms": end,
                "duration_ms": end - start,
                "max_score": float(max(scores)),
                "mean_score": float(np.mean(scores)),
                "decision": "block" if blocked else "review",
            })
    out.sort(key=lambda s: (s["start_ms"], cats.index(s["category"])))
    return out


def video_verdict(
    segments: Sequence[Mapping[str, Any]], policy: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The worst decision of the segments and the segment that caused it.

    Among segments with the worst decision, the one with the highest ``max_score`` (the
    earliest on ties) is named. Without segments the verdict is ``allow``.

    Returns:
        ``{decision, category, start_ms, end_ms, max_score, reason, policy}``; the segment
        fields are ``None`` for ``allow``.
    """
    worst = None
    for seg in segments:
        if worst is None or (_RANK[seg["decision"]], seg["max_score"]) > (
            _RANK[worst["decision"]], worst["max_score"]
        ):
            worst = seg
    if worst is None:
        return {"decision": "allow", "category": None, "start_ms": None, "end_ms": None,
                "max_score": None, "reason": "no segment reached a review threshold",
                "policy": dict(policy) if policy else None}
    reason = (
        f"{worst['category']} {worst['max_score']:.2f} ({worst['decision']}) from "
        f"{_clock(worst['start_ms'])} to {_clock(worst['end_ms'])}"
    )
    return {
        "decision": worst["decision"],
        "category": worst["category"],
        "start_ms": worst["start_ms"],
        "end_ms": worst["end_ms"],
        "max_score": worst["max_score"],
        "reason": reason,
        "policy": dict(policy) if policy else None,
    }


def _clock(ms: int) -> str:
    s = ms / 1000
    return f"{int(s // 60)}:{s % 60:04.1f}"


@dataclass(frozen=True)
class CheckSettings:
    """Thresholds of the technical checks of a video.

    Attributes:
        black_pixel: 64×36 luma at or below which a pixel counts as dark (0–255).
        black_fraction: a frame is black when at least this fraction of it is dark.
        black_min_ms: shortest black stretch reported.
        frozen_diff: mean absolute luma difference (0–255, 64×36) below which two consecutive
            sampled frames are the same picture.
        frozen_min_ms: shortest frozen stretch reported.
        low_bpp: bits per pixel per frame below which a second of video is low-bitrate
            (H.264 and older codecs; ×0.6 for HEVC, VP9 and AV1).
        low_bitrate_min_ms: shortest low-bitrate stretch reported.
    """

    black_pixel: float = 32.0
    black_fraction: float = 0.98
    black_min_ms: int = 2000
    frozen_diff: float = 1.5
    frozen_min_ms: int = 2000
    low_bpp: float = 0.02
    low_bitrate_min_ms: int = 3000


_EFFICIENT_CODECS = ("hevc", "h265", "vp9", "av1", "libdav1d", "libaom-av1", "vvc")


def _runs(flags: Sequence[bool], times: Sequence[int], end_ms: int) -> list[tuple[int, int]]:
    """(start, end) of each run of True; a run ends at the time of the next frame."""
    out = []
    start: int | None = None
    for flag, t in zip(flags, times):
        if flag and start is None:
            start = t
        elif not flag and start is not None:
            out.append((start, t))
            start = None
    if start is not None:
        out.append((start, max(end_ms, times[-1] if times else start)))
    return out


def find_checks(
    times: Sequence[int],
    metrics: Sequence[Mapping[str, Any] | None],
    end_ms: int,
    *,
    bytes_per_second: Sequence[int] | None = None,
    width: int | None = None,
    height: int | None = None,
    fps: float | None = None,
    codec: str | None = None,
    settings: CheckSettings = CheckSettings(),
) -> list[dict[str, Any]]:
    """Black, frozen and low-bitrate stretches as ``{kind, start_ms, end_ms}``, by start.

    Args:
        times: timestamps of the sampled frames, in order.
        metrics: per frame ``dark_fraction`` and ``diff_prev`` (see
            :class:`clipsieve.video.decode.KeptFrame`).
        end_ms: the video's duration (a stretch open at the last frame ends there).
        bytes_per_second: video packet bytes per second of the stream (for ``low_bitrate``).
        width, height, fps, codec: the stream's, for bits per pixel.
        settings: thresholds.
    """
    m = [x or {} for x in metrics]
    black = [
        (_score(x.get("dark_fraction")) or 0.0) >= settings.black_fraction for x in m
    ]
    checks: list[dict[str, Any]] = []
    for a, b in _runs(black, times, end_ms):
        if b - a >= settings.black_min_ms:
            checks.append({"kind": "black", "start_ms": a, "end_ms": b})
    # frame i is frozen when it shows the same picture as frame i+1 (and is not black)
    same_next = []
    for i in range(len(m)):
        nxt = m[i + 1].get("diff_prev") if i + 1 < len(m) else None
        d = _score(nxt)
        same_next.append(d is not None and d < settings.frozen_diff and not black[i])
    for a, b in _runs(same_next, times, end_ms):
        # the run's last frame equals the frame after it, which belongs to the stretch too
        idx = times.index(b) if b in times else None
        end = times[idx + 1] if idx is not None and idx + 1 < len(times) else end_ms
        if end - a >= settings.frozen_min_ms:
            checks.append({"kind": "frozen", "start_ms": a, "end_ms": end})
    if bytes_per_second and width and height and fps and codec not in ("gif", "webp"):
        thr = settings.low_bpp * (0.6 if (codec or "").lower() in _EFFICIENT_CODECS else 1.0)
        pixels = width * height * fps
        excluded = [(c["start_ms"], c["end_ms"]) for c in checks]
        seconds = list(range(len(bytes_per_second)))
        low = []
        for k in seconds:
            s0, s1 = k * 1000, min((k + 1) * 1000, end_ms)
            if s1 - s0 < 500:  # a last partial second says nothing
                low.append(False)
                continue
            bpp = bytes_per_second[k] * 8 * 1000 / (s1 - s0) / pixels
            covered = any(a < s1 and s0 < b for a, b in excluded)
            low.append(bpp < thr and not covered)
        for a, b in _runs(low, [k * 1000 for k in seconds], min(end_ms, len(seconds) * 1000)):
            if b - a >= settings.low_bitrate_min_ms:
                checks.append({"kind": "low_bitrate", "start_ms": a, "end_ms": b})
    checks.sort(key=lambda c: (c["start_ms"], c["kind"]))
    return checks


def quality_summary(
    frames: Sequence[Mapping[str, Any]], checks: list[dict[str, Any]]
) -> dict[str, Any]:
    """``{score, mean, median, p10, frames, checks}`` of the frames' quality scores (0–10).

    ``score`` equals ``mean`` (so rules on ``quality.score`` work for videos as for images).
    Without frame quality scores (``--no-quality``) the statistics are ``None`` and only the
    checks are reported.
    """
    scores = [
        s for f in frames
        if isinstance(f.get("quality"), Mapping)
        and (s := _score(f["quality"].get("score"))) is not None
    ]
    if not scores:
        return {"score": None, "mean": None, "median": None, "p10": None, "frames": 0,
                "checks": checks}
    arr = np.asarray(scores, dtype=np.float64)
    mean = float(arr.mean())
    return {
        "score": mean,
        "mean": mean,
        "median": float(np.median(arr)),
        "p10": float(np.percentile(arr, 10)),
        "frames": len(scores),
        "checks": checks,
    }
