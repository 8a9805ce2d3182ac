"""provenance.py: choosing the head fields of one run keeps the whole result envelope."""

from __future__ import annotations

from clipsieve.provenance import select
from clipsieve.types import ENVELOPE_FIELDS, ItemResult


def test_selecting_a_run_keeps_the_envelope_and_drops_other_runs_fields() -> None:
    item = ItemResult(path="a\udcff.jpg", sha256="aa", model="m", device="cpu",
                      precision="int8", encoder="onnx-int8")
    item.quality = {"score": 5.0}
    item.moderation = {"decision": "allow"}
    item.extra["provenance"] = {"quality": {"run": "r1"}, "moderation": {"run": "r0"}}
    d = item.to_dict()
    assert "path_bytes" in d  # a name that is not UTF-8
    got = select(d, run="r1")
    assert "quality" in got and "moderation" not in got
    kept = {k for k in d if k in ENVELOPE_FIELDS}
    assert kept >= {"path", "path_bytes", "encoder", "precision", "device"}
    assert {k: got[k] for k in kept} == {k: d[k] for k in kept}  # encoder was dropped before


def _video(run: str, policy: str = "default") -> dict:
    from clipsieve.video.analyze import VideoResult

    res = VideoResult(path="v.mp4", sha256="bb", model="m", duration_ms=4000, fps=25.0,
                      codec="h264", container="mp4", frames_decoded=100)
    res.sampling = {"fps": 1.0}
    res.frames = [{"timestamp_ms": t, "moderation": {"decision": "allow"},
                   "quality": {"score": 5.0}} for t in (0, 1000)]
    res.segments = [{"start_ms": 0, "end_ms": 2000, "category": "violence"}]
    res.verdict = {"decision": "review", "policy": {"name": policy, "version": 1}}
    res.quality = {"score": 5.0}
    res.provenance = {"moderation": {"run": run}, "quality": {"run": run}}
    return res.to_dict()


def test_selecting_a_run_keeps_a_video_of_that_run_whole() -> None:
    """A video is analysed as one unit: its frames, segments, verdict and quality are kept
    (or dropped) together by --run, and what describes the file is always kept."""
    d = _video("r1")
    assert select(d, run="r1") == d
    other = select(d, run="r2")
    for field in ("frames", "segments", "verdict", "quality", "provenance"):
        assert field not in other
    for field in ("path", "sha256", "duration_ms", "fps", "codec", "container", "sampling",
                  "frames_decoded", "kind"):
        assert other[field] == d[field]


def test_selecting_a_policy_keeps_a_video_verdict_only_under_that_policy() -> None:
    d = _video("r1", policy="mine")
    assert select(d, policy="mine") == d
    got = select(d, policy="default")
    assert "verdict" not in got and "segments" not in got
    assert [f.get("moderation") for f in got["frames"]] == [None, None]
    assert [f["quality"] for f in got["frames"]] == [{"score": 5.0}] * 2
    assert got["quality"] == d["quality"] and got["duration_ms"] == 4000
