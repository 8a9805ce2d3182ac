"""Video decoding and frame sampling with PyAV (imported lazily: ``pip install 'clipsieve[video]'``).

One path for every input: containers that FFmpeg reads (MP4, MOV, MKV, WebM, AVI, …) and
animated GIF through PyAV; animated WebP, which this FFmpeg cannot decode, through Pillow. Both
yield raw frames (time, keyframe flag, a cheap low-resolution luma, a converter to an RGB image
of a given size) to the same :class:`Sampler`, which keeps:

* ``fps`` mode (default, 1 frame per second): frames are decoded sequentially and the first
  frame at or after each sampling time is kept (seeking per sample is several times slower
  unless keyframes are about a second apart);
* ``keyframes`` mode: only keyframes are decoded (``skip_frame="NONKEY"``) and all are kept;
* ``scenes`` mode: shot boundaries are found from the mean absolute difference of consecutive
  low-resolution luma images (16×9 block means, taken from the decoded Y plane without a colour
  conversion), and the first frame of every shot is kept (with ``fps`` as well, also the frames
  at that interval);
* ``max_frames``: at most that many frames, spread over the whole video when its duration is
  known (the interval widens to duration / N), and decoding stops once N are kept.

Only kept frames are converted to RGB, straight to the analysis size (shorter side
``min_side``) by swscale; everything else is dropped after decoding, so memory does not grow
with the video's length. Codec threading is on (``thread_type="AUTO"``).

Broken input becomes a :class:`~clipsieve.errors.DecodeError` with a reason code
(``not_a_video``, ``no_video_stream``, ``empty_video``, ``too_large``, ``truncated``) or, when
some frames decoded, statistics that make the result partial (:class:`DecodeStats`).
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from clipsieve.errors import ConfigError, DecodeError
from clipsieve.media.decode import DecodeLimits, to_rgb
from clipsieve.media.sniff import SNIFF_BYTES, sniff_bytes

#: Side lengths of the low-resolution luma image used for shot detection and frame checks.
LUMA_W, LUMA_H = 64, 36

#: Largest side accepted (besides the pixel limit): no codec makes frames wider than this.
MAX_SIDE = 32768


@dataclass(frozen=True)
class Sampling:
    """How frames are chosen.

    Attributes:
        fps: frames per second to keep (``None``: 1 in the default mode, none besides the shot
            starts with ``scenes``, all keyframes with ``keyframes``).
        keyframes: decode keyframes only and keep them.
        scenes: keep the first frame of every shot.
        max_frames: keep at most this many frames, spread over the video.
        scene_threshold: mean absolute difference (0–255) of the 16×9 block-mean luma of
            consecutive frames that starts a new shot.
        min_shot_ms: a cut closer than this to the previous one is ignored (flashes).
    """

    fps: float | None = None
    keyframes: bool = False
    scenes: bool = False
    max_frames: int | None = None
    scene_threshold: float = 30.0
    min_shot_ms: int = 500

    def __post_init__(self) -> None:
        if self.fps is not None and not (0 < self.fps <= 120):
            raise ConfigError(f"--fps must be between 0 and 120, got {self.fps:g}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--max-frames must be at least 1, got {self.max_frames}")
        if self.keyframes and self.scenes:
            raise ConfigError("--keyframes and --scenes cannot be combined")

    @property
    def effective_fps(self) -> float | None:
        """Frames per second kept by the interval rule (``None``: no interval rule)."""
        if self.fps is not None:
            return self.fps
        return None if (self.keyframes or self.scenes) else 1.0

    def key(self) -> str:
        """A canonical text for the store: same key, same frames."""
        parts = []
        if self.keyframes:
            parts.append("keyframes")
        if self.scenes:
            parts.append(f"scenes:{self.scene_threshold:g}:{self.min_shot_ms}")
        if self.effective_fps is not None:
            parts.append(f"fps:{self.effective_fps:g}")
        if self.max_frames is not None:
            parts.append(f"max:{self.max_frames}")
        return ",".join(parts)

    def describe(self) -> dict[str, Any]:
        return {
            "mode": "keyframes" if self.keyframes else "scenes" if self.scenes else "fps",
            "fps": self.effective_fps,
            "max_frames": self.max_frames,
        }


@dataclass
class VideoInfo:
    """What the container says about the video stream."""

    container: str
    codec: str
    width: int
    height: int
    fps: float | None
    duration_ms: int | None
    bit_rate: int | None
    frames: int | None
    #: display rotation (0, 90, 180, 270; counter-clockwise, as FFmpeg's display matrix),
    #: known once the first frame is decoded; kept frames are turned upright
    rotation: int = 0

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown: swapped for a quarter turn."""
        if self.rotation in (90, 270):
            return self.height, self.width
        return self.width, self.height

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class KeptFrame:
    """A sampled frame, converted to the analysis size.

    Attributes:
        timestamp_ms: presentation time from the start of the stream.
        image: RGB image, shorter side ``min_side`` (or smaller when the video is).
        keyframe: whether it was a keyframe.
        metrics: ``luma_mean`` and ``dark_fraction`` (0–255 luma at 64×36) and ``diff_prev``
            (mean absolute luma difference to the previous kept frame, ``None`` for the first):
            inputs to the black and frozen checks.
    """

    timestamp_ms: int
    image: Image.Image
    keyframe: bool
    metrics: dict[str, float | None]


@dataclass
class DecodeStats:
    """Counters of one decode, filled while frames are yielded."""

    frames_decoded: int = 0
    packets: int = 0
    bad_packets: int = 0
    damaged_frames: int = 0
    shots: int = 0
    last_ms: int | None = None
    stop_reason: str | None = None
    demux_error: str | None = None
    #: bytes of video packets per second of the stream (index = second)
    bytes_per_second: list[int] = field(default_factory=list)

    def add_bytes(self, t_s: float | None, size: int) -> None:
        if t_s is None or size <= 0 or not math.isfinite(t_s):
            return
        k = max(0, int(t_s))
        if k > 10_000_000:
            return
        if k >= len(self.bytes_per_second):
            self.bytes_per_second.extend([0] * (k + 1 - len(self.bytes_per_second)))
        self.bytes_per_second[k] += size


def analysis_size(width: int, height: int, min_side: int) -> tuple[int, int]:
    """(w, h) with the shorter side ``min_side`` (never larger than the frame), even numbers."""
    short = min(width, height)
    if short <= min_side:
        return width, height
    s = min_side / short
    return max(2, round(width * s)), max(2, round(height * s))


def luma_of(image: Image.Image) -> np.ndarray:
    """64×36 luma (float32, 0–255) of an RGB image."""
    small = image.convert("L").resize((LUMA_W, LUMA_H), Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.float32)


# -- raw frames -----------------------------------------------------------------------------


@dataclass
class _Raw:
    t_ms: int
    key: bool
    luma: Callable[[], np.ndarray]
    convert: Callable[[int, int], Image.Image]


def _require_av() -> Any:
    try:
        import av
    except ImportError:
        raise ConfigError(
            "video needs PyAV: pip install 'clipsieve[video]' (or pip install av)"
        ) from None
    return av


class VideoReader:
    """An opened video: its :attr:`info`, and :meth:`frames` to sample it once.

    Args:
        path: the file.
        limits: the pixel limit applies to the frame size.

    Raises:
        DecodeError: ``io_error``, ``not_a_video``, ``truncated`` (an unreadable container),
            ``no_video_stream``, ``too_large``.
    """

    def __init__(self, path: str, limits: DecodeLimits = DecodeLimits()) -> None:
        self.path = path
        self.limits = limits
        self.stats = DecodeStats()
        try:
            with open(path, "rb") as fh:
                head = fh.read(SNIFF_BYTES)
        except FileNotFoundError:
            raise DecodeError("io_error", "no such file", path) from None
        except IsADirectoryError:
            raise DecodeError("io_error", "is a directory", path) from None
        except PermissionError:
            raise DecodeError("io_error", "permission denied", path) from None
        except OSError as exc:
            raise DecodeError("io_error", f"cannot read: {exc.strerror or exc}", path) from None
        if not head:
            raise DecodeError("not_a_video", "empty file (0 bytes)", path)
        self.family = sniff_bytes(head)
        self._pil = self.family == "webp"
        self._container: Any = None
        if self._pil:
            self.info = self._open_pil()
        else:
            self.info = self._open_av()
        w, h = self.info.width, self.info.height
        if w <= 0 or h <= 0:
            raise DecodeError("truncated", f"invalid frame size {w}x{h}", path)
        if w > MAX_SIDE or h > MAX_SIDE or w * h > limits.max_pixels:
            raise DecodeError(
                "too_large",
                f"frame size {w}x{h} = {w * h} pixels, over the limit of {limits.max_pixels}",
                path,
            )

    # -- opening ----------------------------------------------------------------------------
    def _open_av(self) -> VideoInfo:
        av = _require_av()
        try:
            container = av.open(self.path, metadata_errors="ignore")
        except av.error.FileNotFoundError:
            raise DecodeError("io_error", "no such file", self.path) from None
        except av.error.EOFError:
            if self.family is None:
                raise DecodeError(
                    "not_a_video", "not a recognised video or animation format", self.path
                ) from None
            raise DecodeError("empty_video", "zero duration: the file ends after its header",
                              self.path) from None
        except av.error.FFmpegError as exc:
            if self.family is None:
                raise DecodeError(
                    "not_a_video", "not a recognised video or animation format", self.path
                ) from None
            raise DecodeError(
                "truncated", f"cannot read the {self.family} container: {_msg(exc)}", self.path
            ) from None
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams})
            container.close()
            if not kinds:
                raise DecodeError("empty_video", "zero duration: the container holds no stream",
                                  self.path)
            raise DecodeError(
                "no_video_stream", f"no video stream (streams: {', '.join(kinds)})", self.path
            )
        self._container = container
        stream = container.streams.video[0]
        cc = stream.codec_context
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else None
        if fps is not None and not (0 < fps < 10_000):
            fps = None
        duration_ms: int | None = None
        if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
            duration_ms = int(round(float(stream.duration * stream.time_base) * 1000))
        elif container.duration and container.duration > 0:
            duration_ms = int(round(container.duration / 1000))
        bit_rate = int(cc.bit_rate or container.bit_rate or 0) or None
        return VideoInfo(
            container=container.format.name.split(",")[0],
            codec=cc.name,
            width=int(cc.width or stream.width or 0),
            height=int(cc.height or stream.height or 0),
            fps=fps,
            duration_ms=duration_ms,
            bit_rate=bit_rate,
            frames=int(stream.frames) or None,
        )

    def _open_pil(self) -> VideoInfo:
        try:
            im = Image.open(self.path)
            n = int(getattr(im, "n_frames", 1))
        except Exception as exc:  # noqa: BLE001
            raise DecodeError("truncated", f"cannot read the animation: {exc}", self.path) from None
        self._pil_image = im
        total = sum(_webp_durations(self.path)) or None
        fps = (n * 1000.0 / total) if total else None
        return VideoInfo(
            container="webp", codec="webp", width=im.width, height=im.height, fps=fps,
            duration_ms=total, bit_rate=None, frames=n,
        )

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._pil:
            self._pil_image.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw frame sources ------------------------------------------------------------------
    def _raw_av(self, keyframes_only: bool, want_luma: bool,
                should_stop: Callable[[], str | None]) -> Iterator[_Raw]:
        av = _require_av()
        container = self._container
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if keyframes_only:
            stream.codec_context.skip_frame = "NONKEY"
        tb = float(stream.time_base) if stream.time_base else None
        start = stream.start_time
        first_pts: int | None = None
        st = self.stats
        fps = self.info.fps or 25.0
        index = 0
        level = av.logging.get_level()
        av.logging.set_level(av.logging.ERROR)
        logs: list[tuple[int, str, str]] = []
        try:
            with av.logging.Capture(local=False) as logs:
                packets = container.demux(stream)
                while True:
                    reason = should_stop()
                    if reason:
                        st.stop_reason = reason
                        return
                    try:
                        packet = next(packets)
                    except StopIteration:
                        break
                    except av.error.FFmpegError as exc:
                        st.demux_error = _msg(exc)
                        break
                    if packet.size:
                        st.packets += 1
                        pts = packet.pts if packet.pts is not None else packet.dts
                        if pts is not None and tb is not None:
                            st.add_bytes((pts - (start or 0)) * tb, packet.size)
                    try:
                        frames = packet.decode()
                    except av.error.FFmpegError:
                        st.bad_packets += 1
                        continue
                    for frame in frames:
                        if st.frames_decoded == 0:
                            self.info.rotation = int(getattr(frame, "rotation", 0) or 0) % 360
                        st.frames_decoded += 1
                        if frame.pts is not None and tb is not None:
                            if first_pts is None:
                                first_pts = start if start is not None else frame.pts
                            t_ms = int(round((frame.pts - first_pts) * tb * 1000))
                        else:
                            t_ms = int(round(index * 1000 / fps))
                        index += 1
                        yield _Raw(
                            t_ms=t_ms,
                            key=bool(frame.key_frame),
                            luma=functools.partial(_av_luma, frame) if want_luma else _no_luma,
                            convert=functools.partial(_av_convert, frame),
                        )
        finally:
            st.damaged_frames = sum(
                1 for _lvl, _name, text in logs if "error while decoding" in text
            )
            av.logging.set_level(level)

    def _raw_pil(self, want_luma: bool, should_stop: Callable[[], str | None]) -> Iterator[_Raw]:
        im = self._pil_image
        t = 0
        for i in range(int(getattr(im, "n_frames", 1))):
            reason = should_stop()
            if reason:
                self.stats.stop_reason = reason
                return
            try:
                im.seek(i)
                rgb = to_rgb(im.convert("RGBA"))
            except Exception:  # noqa: BLE001 - a broken frame: skip it, go on
                self.stats.bad_packets += 1
                continue
            self.stats.packets += 1
            self.stats.frames_decoded += 1
            t_ms = t
            t += int(im.info.get("duration") or 0) or 100

            def convert(w: int, h: int, rgb: Image.Image = rgb) -> Image.Image:
                return rgb if rgb.size == (w, h) else rgb.resize((w, h), Image.Resampling.BOX)

            yield _Raw(t_ms=t_ms, key=True,
                       luma=functools.partial(luma_of, rgb) if want_luma else _no_luma,
                       convert=convert)

    # -- sampling ---------------------------------------------------------------------------
    def frames(
        self,
        sampling: Sampling,
        *,
        min_side: int,
        deadline: float | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[KeptFrame]:
        """Decode once, yielding the kept frames in order (see the module docstring).

        Args:
            sampling: which frames to keep.
            min_side: shorter side of the kept images.
            deadline: ``time.monotonic()`` value after which decoding stops
                (``stats.stop_reason = "timeout"``).
            stop: set it to stop decoding (``stats.stop_reason = "stopped"``).
        """

        def should_stop() -> str | None:
            if stop is not None and stop.is_set():
                return "stopped"
            if deadline is not None and time.monotonic() > deadline:
                return "timeout"
            return None

        w, h = analysis_size(self.info.width, self.info.height, min_side)
        sampler = Sampler(sampling, self.info.duration_ms)
        if self._pil:
            raw = self._raw_pil(sampling.scenes, should_stop)
        else:
            raw = self._raw_av(sampling.keyframes, sampling.scenes, should_stop)
        prev_luma: np.ndarray | None = None
        try:
            for r in raw:
                self.stats.last_ms = r.t_ms
                if not sampler.keep(r.t_ms, r.luma):
                    continue
                image = r.convert(w, h)
                luma = luma_of(image)
                metrics: dict[str, float | None] = {
                    "luma_mean": float(luma.mean()),
                    "dark_fraction": float((luma <= 32).mean()),
                    "diff_prev": None if prev_luma is None
                    else float(np.abs(luma - prev_luma).mean()),
                }
                prev_luma = luma
                yield KeptFrame(r.t_ms, image, r.key, metrics)
                if sampler.full:
                    self.stats.stop_reason = "max_frames"
                    break
        finally:
            self.stats.shots = sampler.shots

    def grab(self, timestamps_ms: list[int], max_side: int) -> list[tuple[int, Image.Image]]:
        """Frames at (or just after) the given times, by seeking; for thumbnails and strips.

        Unreadable positions are left out. The image's longer side is at most ``max_side``.
        """
        out: list[tuple[int, Image.Image]] = []
        wanted = sorted(set(int(t) for t in timestamps_ms))
        if not wanted:
            return out
        w, h = self.info.width, self.info.height
        s = min(1.0, max_side / max(w, h))
        tw, th = max(1, round(w * s)), max(1, round(h * s))
        if self._pil:
            for r in self._raw_pil(False, lambda: None):
                while wanted and r.t_ms >= wanted[0] - 1:
                    out.append((r.t_ms, r.convert(tw, th)))
                    wanted.pop(0)
                if not wanted:
                    break
            return out
        av = _require_av()
        stream = self._container.streams.video[0]
        tb = float(stream.time_base) if stream.time_base else None
        start = stream.start_time or 0
        for t in wanted:
            try:
                if tb:
                    self._container.seek(start + int(t / 1000 / tb), stream=stream, backward=True)
                else:
                    self._container.seek(0)
                for frame in self._container.decode(stream):
                    ft = ((frame.pts - start) * tb * 1000) if (frame.pts is not None and tb) else t
                    if ft >= t - 1:
                        out.append((int(round(ft)), _av_convert(frame, tw, th)))
                        break
            except (av.error.FFmpegError, ValueError):
                continue
        return out


class Sampler:
    """Decides which decoded frames to keep (see the module docstring)."""

    def __init__(self, sampling: Sampling, duration_ms: int | None) -> None:
        self.s = sampling
        fps = sampling.effective_fps
        interval = 1000.0 / fps if fps else None
        self.min_gap = 0.0
        if sampling.max_frames and duration_ms:
            spread = duration_ms / sampling.max_frames
            if interval is not None:
                interval = max(interval, spread)
            else:
                self.min_gap = spread
        self.interval = interval
        self.next_t = 0.0
        self.kept = 0
        self.last_kept: float | None = None
        self.prev_luma: np.ndarray | None = None
        self.last_cut: float | None = None
        self.shots = 0

    @property
    def full(self) -> bool:
        return self.s.max_frames is not None and self.kept >= self.s.max_frames

    def keep(self, t_ms: int, luma: Callable[[], np.ndarray]) -> bool:
        s = self.s
        cut = False
        if s.scenes:
            # 16×9 block means: a pan across a detailed picture changes them little, a cut a lot
            cur = luma().reshape(LUMA_H // 4, 4, LUMA_W // 4, 4).mean(axis=(1, 3))
            if self.prev_luma is None:
                cut = True
            else:
                diff = float(np.abs(cur - self.prev_luma).mean())
                if diff > s.scene_threshold and (
                    self.last_cut is None or t_ms - self.last_cut >= s.min_shot_ms
                ):
                    cut = True
            self.prev_luma = cur
            if cut:
                self.last_cut = t_ms
                self.shots += 1
        take = cut
        if self.interval is not None and t_ms >= self.next_t - 0.5:
            take = True
        elif s.keyframes and not s.scenes and self.interval is None:
            take = True  # keyframes mode: every decoded frame is a keyframe
        if take and self.min_gap and self.last_kept is not None:
            if t_ms - self.last_kept < self.min_gap - 0.5:
                take = False
        if take and self.interval is not None:
            while self.next_t <= t_ms + 0.5:
                self.next_t += self.interval
        if take:
            self.kept += 1
            self.last_kept = t_ms
        return take


def _no_luma() -> np.ndarray:
    raise RuntimeError("luma not requested")


def _av_luma(frame: Any) -> np.ndarray:
    """64×36 luma of a decoded frame: block means of the Y plane (no colour conversion).

    Each block of the plane is averaged over a grid of about 5×5 of its pixels, so a pan
    across a detailed picture does not alias into a false cut.
    """
    name = frame.format.name
    h, w = frame.height, frame.width
    planar8 = name.startswith(("yuv", "yuvj", "nv12", "nv21", "gray")) and not any(
        x in name for x in ("p10", "p12", "p14", "p16", "16", "a")
    )
    if planar8 and h >= LUMA_H and w >= LUMA_W:
        plane = frame.planes[0]
        y = np.frombuffer(plane, np.uint8).reshape(h, plane.line_size)
        sy, sx = h // LUMA_H, w // LUMA_W
        step_y, step_x = max(1, sy // 5), max(1, sx // 5)
        blocks = y[: sy * LUMA_H, : sx * LUMA_W].reshape(LUMA_H, sy, LUMA_W, sx)
        return blocks[:, ::step_y, :, ::step_x].mean(axis=(1, 3), dtype=np.float32)
    small = frame.reformat(width=LUMA_W, height=LUMA_H, format="gray",
                           interpolation="AREA")
    return np.frombuffer(small.planes[0], np.uint8).reshape(
        LUMA_H, small.planes[0].line_size)[:, :LUMA_W].astype(np.float32)


def _av_convert(frame: Any, w: int, h: int) -> Image.Image:
    image = frame.to_image(width=w, height=h, interpolation="BILINEAR")
    rotation = int(getattr(frame, "rotation", 0) or 0) % 360
    if rotation == 90:
        image = image.transpose(Image.Transpose.ROTATE_90)
    elif rotation == 180:
        image = image.transpose(Image.Transpose.ROTATE_180)
    elif rotation == 270:
        image = image.transpose(Image.Transpose.ROTATE_270)
    return image.convert("RGB") if image.mode != "RGB" else image


def _webp_durations(path: str) -> list[int]:
    """Frame durations (ms) from the ANMF chunks of an animated WebP, without decoding."""
    out: list[int] = []
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return out
    pos = 12
    while pos + 8 <= len(data):
        tag, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if tag == b"ANMF" and pos + 8 + 15 <= len(data):
            out.append(int.from_bytes(data[pos + 8 + 12 : pos + 8 + 15], "little"))
        pos += 8 + size + (size & 1)
    return out


def _msg(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(": '")[0]


def file_size(path: str) -> int:
    return os.stat(path).st_size
