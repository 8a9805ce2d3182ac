"""video/timeline.py: segments with hysteresis, the verdict, quality summary and checks."""

from __future__ import annotations

import pytest

from clipsieve.moderation.policy import VideoSettings
from clipsieve.video.timeline import build_segments, find_checks, quality_summary, video_verdict

THR = {"violence": {"review": 0.4, "block": 0.7}, "drugs": {"review": 0.4, "block": 0.7}}


def frames(violence: list[float], drugs: list[float] | None = None, step: int = 1000) -> list:
    drugs = drugs or [0.0] * len(violence)
    return [
        {"timestamp_ms": i * step,
         "moderation": {"categories": {"violence": v, "drugs": d}, "thresholds": THR}}
        for i, (v, d) in enumerate(zip(violence, drugs))
    ]


NO_MERGE = VideoSettings(end_factor=0.8, min_duration_ms=0, merge_gap_ms=0)


def test_hysteresis_starts_at_review_and_ends_below_the_lower_threshold() -> None:
    # 0.35 is below review (0.4) but above 0.8 × 0.4 = 0.32: the segment goes on
    segs = build_segments(frames([0.1, 0.5, 0.35, 0.33, 0.2, 0.1]), 6000, NO_MERGE)
    assert segs == [{
        "category": "violence", "start_ms": 1000, "end_ms": 4000, "duration_ms": 3000,
        "max_score": 0.5, "mean_score": pytest.approx((0.5 + 0.35 + 0.33) / 3),
        "decision": "review",
    }]
    # without hysteresis (end_factor 1) it ends at the first frame below review
    flat = build_segments(frames([0.1, 0.5, 0.35, 0.33, 0.2, 0.1]), 6000,
                          VideoSettings(end_factor=1.0, min_duration_ms=0, merge_gap_ms=0))
    assert [(s["start_ms"], s["end_ms"]) for s in flat] == [(1000, 2000)]


def test_block_decision_merge_and_minimum_duration() -> None:
    v = [0.5, 0.8, 0.1, 0.5, 0.1, 0.1, 0.1, 0.6, 0.1]
    merged = build_segments(frames(v), 9000, VideoSettings(min_duration_ms=0, merge_gap_ms=1000))
    # 0–2 s and 3–4 s are 1 s apart: merged; 7–8 s is alone
    assert [(s["start_ms"], s["end_ms"], s["decision"]) for s in merged] == [
        (0, 4000, "block"), (7000, 8000, "review")]
    assert merged[0]["max_score"] == 0.8
    short = build_segments(frames(v), 9000, VideoSettings(min_duration_ms=1500, merge_gap_ms=1000))
    assert [(s["start_ms"], s["end_ms"]) for s in short] == [(0, 4000)]


def test_open_segment_ends_at_the_video_end_and_categories_are_separate() -> None:
    segs = build_segments(frames([0.1, 0.1, 0.9], [0.5, 0.1, 0.1]), 3500, NO_MERGE)
    assert [(s["category"], s["start_ms"], s["end_ms"]) for s in segs] == [
        ("drugs", 0, 1000), ("violence", 2000, 3500)]


def test_special_care_thresholds_per_frame_are_used() -> None:
    fs = frames([0.3, 0.3, 0.3])
    fs[1]["moderation"]["thresholds"] = {**THR, "violence": {"review": 0.2, "block": 0.25}}
    segs = build_segments(fs, 3000, NO_MERGE)
    # frame 2 is back on the normal thresholds: 0.3 < 0.8 × 0.4 ends the segment
    assert [(s["start_ms"], s["end_ms"], s["decision"]) for s in segs] == [(1000, 2000, "block")]


def test_verdict_names_the_worst_segment() -> None:
    segs = build_segments(frames([0.5, 0.1, 0.1, 0.75, 0.1], [0.1, 0.1, 0.9, 0.1, 0.1]), 5000,
                          NO_MERGE)
    v = video_verdict(segs, {"name": "default", "version": "1"})
    assert v["decision"] == "block" and v["category"] == "drugs"
    assert (v["start_ms"], v["end_ms"], v["max_score"]) == (2000, 3000, 0.9)
    assert "drugs 0.90 (block) from 0:02.0 to 0:03.0" in v["reason"]
    assert v["policy"] == {"name": "default", "version": "1"}
    allow = video_verdict([], None)
    assert allow["decision"] == "allow" and allow["category"] is None


def test_quality_summary() -> None:
    fs = [{"timestamp_ms": i, "quality": {"score": s}} for i, s in enumerate([2.0, 4.0, 6.0, 8.0])]
    q = quality_summary(fs, [{"kind": "black", "start_ms": 0, "end_ms": 1}])
    assert q["mean"] == q["score"] == 5.0 and q["median"] == 5.0
    assert q["p10"] == pytest.approx(2.6) and q["frames"] == 4 and q["checks"][0]["kind"] == "black"
    none = quality_summary([{"timestamp_ms": 0}], [])
    assert none["mean"] is None and none["checks"] == []


def test_checks_black_frozen_and_minimum_lengths() -> None:
    times = list(range(0, 10000, 1000))
    m = [{"dark_fraction": 0.0, "diff_prev": 20.0} for _ in times]
    m[0]["diff_prev"] = None
    for i in (2, 3):  # black 2–4 s
        m[i]["dark_fraction"] = 1.0
    for i in (6, 7, 8):  # frames 5..8 show the same picture
        m[i]["diff_prev"] = 0.2
    checks = find_checks(times, m, 10000)
    assert checks == [{"kind": "black", "start_ms": 2000, "end_ms": 4000},
                      {"kind": "frozen", "start_ms": 5000, "end_ms": 9000}]
    # a single black sample (1 s) is below the 2 s minimum
    m[3]["dark_fraction"] = 0.0
    assert [c["kind"] for c in find_checks(times, m, 10000)] == ["frozen"]
