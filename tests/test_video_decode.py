"""video/decode.py and the video side of media/sniff.py on videos generated with PyAV from real photos."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import photo_array
from PIL import Image

from clipsieve.errors import DecodeError
from clipsieve.media.decode import DecodeLimits
from clipsieve.media.sniff import media_kind, sniff_bytes
from clipsieve.testing import write_test_video
from clipsieve.video.decode import Sampling, VideoReader, analysis_size
from clipsieve.video.timeline import find_checks

av = pytest.importorskip("av")

#: astronaut 0–3 s, coffee 3–6 s, black 6–8 s, chelsea 8–10 s, frozen 10–13 s, rocket 13–15 s
CUTS_MS = [0, 3000, 6000, 8000, 13000]
BLACK_MS = (6000, 8000)
FROZEN_MS = (10000, 13000)
FPS = 10


def shots() -> list[tuple[object, float]]:
    return [
        (photo_array("astronaut"), 3), (photo_array("coffee"), 3), ("black", 2),
        (photo_array("chelsea"), 2), ("freeze", 3), (photo_array("rocket"), 2),
    ]


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("videos")
    out = {}
    for ext in (".mp4", ".mkv", ".webm", ".gif", ".avi", ".mov", ".webp"):
        size = (160, 120) if ext in (".gif", ".webp") else (320, 240)
        out[ext] = write_test_video(folder / f"shots{ext}", shots(), fps=FPS, size=size)
    return out


def read_all(path: Path, sampling: Sampling, min_side: int = 64, **kw: object) -> tuple:
    with VideoReader(str(path)) as r:
        frames = list(r.frames(sampling, min_side=min_side, **kw))  # type: ignore[arg-type]
        return r, frames


def test_sniffing_is_by_content(videos: dict[str, Path], tmp_path: Path,
                                photos: dict[str, Path]) -> None:
    for p in videos.values():
        renamed = tmp_path / (p.stem + p.suffix.replace(".", "_") + ".bin")
        renamed.write_bytes(p.read_bytes())
        assert media_kind(renamed) == "video", p
    assert media_kind(photos["astronaut"]) == "image"
    still = tmp_path / "still.gif"
    Image.fromarray(photo_array("coffee")).save(still)
    assert media_kind(still) == "image"
    still_webp = tmp_path / "still.webp"
    Image.fromarray(photo_array("coffee")).save(still_webp)
    assert media_kind(still_webp) == "image"
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 40
    assert sniff_bytes(heic) is None
    assert sniff_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 40) == "mp4"
    assert media_kind(tmp_path / "missing.mp4") == "image"  # the decoder will say why


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".webm", ".gif", ".avi", ".mov", ".webp"])
def test_fps_sampling_every_container(videos: dict[str, Path], ext: str) -> None:
    r, frames = read_all(videos[ext], Sampling())
    assert r.info.width > 0 and r.info.duration_ms == pytest.approx(15000, abs=150)
    times = [f.timestamp_ms for f in frames]
    assert times[0] == 0 and all(b > a for a, b in zip(times, times[1:]))
    if ext != ".webp":  # the WebP encoder merges repeated frames into longer ones
        assert times == list(range(0, 15000, 1000))
        assert r.stats.frames_decoded == 150
    w, h = frames[0].image.size
    assert min(w, h) == 64 and frames[0].image.mode == "RGB"


def test_keyframes_mode_decodes_only_keyframes(videos: dict[str, Path]) -> None:
    r, frames = read_all(videos[".mp4"], Sampling(keyframes=True))
    assert frames and all(f.keyframe for f in frames)
    assert r.stats.frames_decoded == len(frames) < 30


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".webm", ".gif", ".webp"])
def test_scene_mode_finds_the_cuts(videos: dict[str, Path], ext: str) -> None:
    r, frames = read_all(videos[ext], Sampling(scenes=True))
    times = [f.timestamp_ms for f in frames]
    assert len(times) == len(CUTS_MS), times
    for got, want in zip(times, CUTS_MS):
        assert abs(got - want) <= 1000 / FPS, times
    assert r.stats.shots == len(CUTS_MS)


def test_max_frames_spreads_over_the_video(videos: dict[str, Path]) -> None:
    r, frames = read_all(videos[".mkv"], Sampling(max_frames=5))
    times = [f.timestamp_ms for f in frames]
    assert len(times) == 5 and times[-1] >= 12000
    assert r.stats.stop_reason == "max_frames"


def test_black_and_frozen_checks_on_known_stretches(videos: dict[str, Path]) -> None:
    for ext in (".mp4", ".webm", ".gif"):
        r, frames = read_all(videos[ext], Sampling(), min_side=224)
        checks = find_checks([f.timestamp_ms for f in frames], [f.metrics for f in frames],
                             15000)
        kinds = {c["kind"]: c for c in checks}
        assert set(kinds) == {"black", "frozen"}, (ext, checks)
        for kind, (a, b) in (("black", BLACK_MS), ("frozen", FROZEN_MS)):
            assert abs(kinds[kind]["start_ms"] - a) <= 1000, (ext, checks)
            assert abs(kinds[kind]["end_ms"] - b) <= 1000, (ext, checks)


def test_low_bitrate_check(tmp_path: Path) -> None:
    p = write_test_video(tmp_path / "low.mp4", [(photo_array("astronaut"), 6)], fps=FPS,
                         bit_rate=4000, options={"preset": "veryfast"})
    r, frames = read_all(p, Sampling())
    args = dict(bytes_per_second=r.stats.bytes_per_second, width=r.info.width,
                height=r.info.height, fps=r.info.fps, codec=r.info.codec)
    checks = find_checks([f.timestamp_ms for f in frames], [f.metrics for f in frames],
                         6000, **args)  # type: ignore[arg-type]
    assert [c["kind"] for c in checks] == ["low_bitrate"]
    assert checks[0]["end_ms"] - checks[0]["start_ms"] >= 5000


def test_normal_bitrate_has_no_low_bitrate_check(videos: dict[str, Path]) -> None:
    r, frames = read_all(videos[".mp4"], Sampling())
    checks = find_checks([f.timestamp_ms for f in frames], [f.metrics for f in frames], 15000,
                         bytes_per_second=r.stats.bytes_per_second, width=r.info.width,
                         height=r.info.height, fps=r.info.fps, codec=r.info.codec)
    assert "low_bitrate" not in {c["kind"] for c in checks}


# -- broken input -----------------------------------------------------------------------------


def test_not_a_video(tmp_path: Path) -> None:
    p = tmp_path / "notes.mp4"
    p.write_text("hello")
    with pytest.raises(DecodeError) as info:
        VideoReader(str(p))
    assert info.value.code == "not_a_video"
    with pytest.raises(DecodeError) as info:
        VideoReader(str(tmp_path / "nope.mp4"))
    assert info.value.code == "io_error"


def test_truncated_mp4_without_index(videos: dict[str, Path], tmp_path: Path) -> None:
    data = videos[".mp4"].read_bytes()
    p = tmp_path / "cut.mp4"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(DecodeError) as info:
        VideoReader(str(p))
    assert info.value.code == "truncated" and "mp4" in info.value.message


def test_truncated_mkv_decodes_what_is_there(videos: dict[str, Path], tmp_path: Path) -> None:
    data = videos[".mkv"].read_bytes()
    p = tmp_path / "cut.mkv"
    p.write_bytes(data[: len(data) // 2])
    r, frames = read_all(p, Sampling())
    assert 2 <= len(frames) < 15
    assert r.stats.last_ms is not None and r.stats.last_ms < 12000


def test_audio_only_has_no_video_stream(tmp_path: Path) -> None:
    p = tmp_path / "tone.mka"
    out = av.open(str(p), "w")
    s = out.add_stream("mp2", rate=16000)
    t = np.arange(16000) / 16000
    samples = (np.sin(2 * np.pi * 440 * t) * 3000).astype(np.int16)[None, :]
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = 16000
    for pkt in s.encode(frame):
        out.mux(pkt)
    for pkt in s.encode():
        out.mux(pkt)
    out.close()
    with pytest.raises(DecodeError) as info:
        VideoReader(str(p))
    assert info.value.code == "no_video_stream" and "audio" in info.value.message


def test_absurd_resolution_is_too_large(videos: dict[str, Path]) -> None:
    with pytest.raises(DecodeError) as info:
        VideoReader(str(videos[".mp4"]), DecodeLimits(max_pixels=10_000))
    assert info.value.code == "too_large" and "320x240" in info.value.message


def test_deadline_stops_decoding(videos: dict[str, Path]) -> None:
    r, frames = read_all(videos[".mp4"], Sampling(), deadline=time.monotonic() - 1)
    assert frames == [] and r.stats.stop_reason == "timeout"


def test_grab_returns_frames_at_times(videos: dict[str, Path]) -> None:
    with VideoReader(str(videos[".mp4"])) as r:
        got = r.grab([0, 7000, 9000], 100)
    assert [t for t, _ in got] == [0, 7000, 9000]
    assert max(got[0][1].size) == 100
    black = np.asarray(got[1][1].convert("L"))
    assert black.mean() < 20  # 7 s is in the black stretch


def test_analysis_size() -> None:
    assert analysis_size(1280, 720, 224) == (398, 224)
    assert analysis_size(100, 80, 224) == (100, 80)
    assert analysis_size(720, 1280, 224) == (224, 398)


def test_sampling_key_and_validation() -> None:
    from clipsieve.errors import ConfigError

    assert Sampling().key() == "fps:1"
    assert Sampling(keyframes=True).key() == "keyframes"
    assert Sampling(scenes=True, fps=0.5, max_frames=9).key() == "scenes:30:500,fps:0.5,max:9"
    with pytest.raises(ConfigError):
        Sampling(fps=0)
    with pytest.raises(ConfigError):
        Sampling(keyframes=True, scenes=True)



def test_display_rotation_turns_frames_upright(tmp_path: Path) -> None:
    """A quarter turn in the display matrix (as phones write) turns the kept frames the way
    FFmpeg's autorotate does, and the displayed size is reported."""
    p = tmp_path / "rot.mp4"
    out = av.open(str(p), "w")
    s = out.add_stream("libx264", rate=10)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    s.set_display_rotation(90)  # counter-clockwise
    arr = np.zeros((48, 64, 3), np.uint8)
    arr[:24, :, 0] = 255  # top red, bottom blue
    arr[24:, :, 2] = 255
    for _ in range(10):
        for pkt in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
            out.mux(pkt)
    for pkt in s.encode():
        out.mux(pkt)
    out.close()
    r, frames = read_all(p, Sampling(), min_side=48)
    im = np.asarray(frames[0].image).astype(int)
    assert im.shape == (64, 48, 3)  # portrait
    assert im[:, :8, 0].mean() > 200 and im[:, :8, 2].mean() < 50  # red went to the left
    assert im[:, -8:, 2].mean() > 200 and im[:, -8:, 0].mean() < 50
    assert r.info.rotation == 90 and r.info.display_size == (48, 64)
