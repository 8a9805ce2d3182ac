"""The video driver: decode and sample frames, run them through the analyzer's batch step.

:func:`analyze_video` decodes a video once in a background thread (bounded queue, so memory
stays flat however long the video is) while the calling thread sends batches of sampled frames
through :meth:`clipsieve.pipeline.Analyzer.analyze` — the same per-batch work as image scans:
pixel statistics, preprocessing, encoding and the heads. Per-frame results then become the
video's segments, verdict, quality summary and checks (:mod:`clipsieve.video.timeline`).

Frame embeddings are stored keyed by (video sha256, timestamp, model, preprocessing version),
with a record of the sampling; analysing the same video again with the same sampling — say with
another policy or other labels — decodes nothing and runs no model: the heads run over the
stored embeddings through :meth:`~clipsieve.pipeline.Analyzer.score`.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipsieve.errors import DecodeError
from clipsieve.media.discover import IMAGE_EXTENSIONS
from clipsieve.media.sniff import VIDEO_EXTENSIONS, media_kind
from clipsieve.moderation.policy import VideoSettings
from clipsieve.types import ErrorInfo, ResultEnvelope, to_jsonable
from clipsieve.video.decode import KeptFrame, Sampling, VideoReader
from clipsieve.video.timeline import (
    CheckSettings,
    build_segments,
    find_checks,
    quality_summary,
    video_verdict,
)

__all__ = [
    "MEDIA_EXTENSIONS",
    "VideoOptions",
    "VideoResult",
    "analyze_video",
    "analyze_videos",
    "default_timeout_s",
    "scan_media",
]

#: Pixel statistics of frames are measured with the shorter side at least this long (as for
#: images; see :data:`clipsieve.pipeline.ANALYSIS_MIN_SIDE`).
ANALYSIS_MIN_SIDE = 224

#: File endings that folder walks pick up when videos are analysed beside images.
MEDIA_EXTENSIONS: frozenset[str] = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS

#: Longer side of thumbnails written with ``--thumbnail``.
THUMBNAIL_MAX_SIDE = 640


def default_timeout_s(duration_ms: int | None) -> float:
    """The default per-video time limit: 60 s plus twice the video's duration (10 min if unknown)."""
    if not duration_ms:
        return 600.0
    return 60.0 + 2.0 * duration_ms / 1000.0


@dataclass(frozen=True)
class VideoOptions:
    """How videos are analysed.

    Attributes:
        sampling: which frames (``--fps``, ``--keyframes``, ``--scenes``, ``--max-frames``).
        timeout_s: per-video time limit in seconds (``None``: :func:`default_timeout_s`).
        stop_on_block: stop decoding once a block segment is found.
        thumbnail_dir: write the best allowed frame there as a JPEG.
        checks: thresholds of the black / frozen / low-bitrate checks.
        segments: segment settings; ``None`` takes the moderation policy's ``[video]`` table.
    """

    sampling: Sampling = field(default_factory=Sampling)
    timeout_s: float | None = None
    stop_on_block: bool = False
    thumbnail_dir: str | None = None
    checks: CheckSettings = field(default_factory=CheckSettings)
    segments: VideoSettings | None = None


@dataclass
class VideoResult(ResultEnvelope):
    """The result for one video: the envelope images carry
    (:class:`~clipsieve.types.ResultEnvelope`: path, status, error, sha256, width, height,
    model, device, precision, encoder, cached, timing) plus the video fields (README: Video).
    ``device``, ``precision`` and ``encoder`` are those of the frame embeddings."""

    duration_ms: int | None = None
    fps: float | None = None
    codec: str | None = None
    container: str | None = None
    frames_decoded: int = 0
    partial: bool = False
    decoded_fraction: float | None = None
    partial_reasons: list[str] = field(default_factory=list)
    sampling: dict[str, Any] = field(default_factory=dict)
    frames: list[dict[str, Any]] = field(default_factory=list)
    segments: list[dict[str, Any]] | None = None
    verdict: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    thumbnail: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None
    kind: str = "video"

    @property
    def decision(self) -> str | None:
        """The verdict's decision (``None`` without moderation)."""
        return self.verdict.get("decision") if self.verdict else None

    def to_dict(self, *, include_embedding: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            **self.envelope_dict(kind="video"),
            "duration_ms": self.duration_ms,
            "fps": None if self.fps is None else round(self.fps, 3),
            "codec": self.codec,
            "container": self.container,
            "frames_decoded": self.frames_decoded,
            "partial": self.partial,
            "decoded_fraction": self.decoded_fraction,
        }
        if self.partial_reasons:
            out["partial_reasons"] = list(self.partial_reasons)
        if self.status == "ok":
            out["sampling"] = dict(self.sampling)
            out["frames"] = self.frames
            if self.segments is not None:
                out["segments"] = self.segments
                out["verdict"] = self.verdict
            if self.quality is not None:
                out["quality"] = self.quality
            if self.thumbnail is not None:
                out["thumbnail"] = self.thumbnail
            if self.provenance is not None:
                out["provenance"] = self.provenance
        return to_jsonable(out)


# -- helpers ----------------------------------------------------------------------------------


def _encoder_kind(analyzer: Any) -> str:
    """The analyzer's encoder kind (``torch``, ``onnx``, ``onnx-int8``): part of the frames' key."""
    return str(getattr(analyzer, "encoder_kind", None) or "torch")


def _hash_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _moderation_policy(heads: Sequence[Any]) -> Any:
    for head in heads:
        if getattr(head, "field", None) == "moderation" and hasattr(head, "policy"):
            return head.policy
    return None


def _slim_moderation(mod: Mapping[str, Any]) -> dict[str, Any]:
    out = {"decision": mod.get("decision"), "categories": mod.get("categories")}
    if mod.get("decision") in ("review", "block"):
        out["reasons"] = mod.get("reasons")
    return out


def _slim_quality(q: Mapping[str, Any]) -> dict[str, Any]:
    return {k: q.get(k) for k in ("score", "technical", "aesthetic")}


class _Timeline:
    """Frames collected so far, with what the segments need (thresholds interned)."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []  # output frame dicts
        self.seg_input: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any] | None] = []
        self.times: list[int] = []
        self._thresholds: dict[str, Any] = {}
        self.best: tuple[float, int] | None = None  # (quality, timestamp) of the best allowed
        self.provenance: Any = None  # of the first frame's head fields: the video's

    def add(self, t: int, item: Any, metrics: dict[str, Any] | None) -> None:
        d = item.to_dict()
        frame: dict[str, Any] = {"timestamp_ms": t}
        mod = d.get("moderation")
        if isinstance(mod, Mapping):
            frame["moderation"] = _slim_moderation(mod)
            key = repr(mod.get("thresholds"))
            thr = self._thresholds.setdefault(key, mod.get("thresholds"))
            self.seg_input.append({
                "timestamp_ms": t,
                "moderation": {"categories": mod.get("categories"), "thresholds": thr},
            })
        q = d.get("quality")
        if isinstance(q, Mapping):
            frame["quality"] = _slim_quality(q)
        if self.provenance is None and d.get("provenance") is not None:
            self.provenance = d["provenance"]
        for name, value in d.items():
            if name == "provenance":
                continue
            if name in ("labels", "probe") or (
                name not in frame and name in getattr(item, "extra", {})
            ):
                frame[name] = value
        self.frames.append(frame)
        self.metrics.append(metrics)
        self.times.append(t)
        allowed = not isinstance(mod, Mapping) or mod.get("decision") == "allow"
        score = q.get("score") if isinstance(q, Mapping) else None
        if allowed:
            s = float(score) if isinstance(score, (int, float)) else 0.0
            if self.best is None or s > self.best[0]:
                self.best = (s, t)


# -- the driver ---------------------------------------------------------------------------------


def analyze_video(
    analyzer: Any,
    path: str | os.PathLike[str],
    *,
    heads: Sequence[Any] = (),
    options: VideoOptions | None = None,
) -> VideoResult:
    """Analyse one video; never raises for a bad file (the result carries the error).

    Args:
        analyzer: a :class:`clipsieve.pipeline.Analyzer` (its store, model and batch step).
        path: the video file.
        heads: the heads to run on every sampled frame (as for :meth:`Analyzer.scan`).
        options: sampling, time limit, stop-on-block, thumbnail.
    """
    options = options or VideoOptions()
    path = os.fspath(path)
    t0 = time.perf_counter()
    res = VideoResult(path=path, model=analyzer.model_id)
    res.sampling = options.sampling.describe()
    try:
        _run(analyzer, path, list(heads), options, res)
    except DecodeError as exc:
        res.status, res.error = "error", ErrorInfo(exc.code, exc.message)
    except OSError as exc:
        res.status, res.error = "error", ErrorInfo("io_error", f"cannot read: {exc}")
    res.timing["total_ms"] = (time.perf_counter() - t0) * 1000
    store = analyzer.store
    if store is not None:
        store.put_results([res.to_dict()], model=analyzer.model_id)
    return res


def analyze_videos(
    analyzer: Any,
    paths: Iterable[str | os.PathLike[str]],
    *,
    heads: Sequence[Any] = (),
    options: VideoOptions | None = None,
) -> Iterator[VideoResult]:
    """:func:`analyze_video` for each path, in order."""
    for p in paths:
        yield analyze_video(analyzer, p, heads=heads, options=options)


def scan_media(
    analyzer: Any,
    paths: Iterable[Any],
    *,
    heads: Sequence[Any] = (),
    options: VideoOptions | None = None,
    recursive: bool = True,
) -> Iterator[Any]:
    """Images and videos under ``paths``, in order: images through :meth:`Analyzer.scan`,
    videos (local files sniffed by content: :func:`~clipsieve.media.sniff.media_kind`) through
    :func:`analyze_video`. ``paths`` are what :meth:`Analyzer.scan` takes (files, folders, tar
    shards, :class:`~clipsieve.media.inputs.Source` objects); folder walks add the video file
    endings. Yields :class:`~clipsieve.types.ItemResult` and :class:`VideoResult` objects.
    """
    from clipsieve.media.decode import DecodeLimits
    from clipsieve.media.inputs import iter_sources

    sources = iter_sources(paths, recursive=recursive, extensions=MEDIA_EXTENSIONS,
                           limits=getattr(analyzer, "limits", None) or DecodeLimits())
    video: list[str] = []

    def images() -> Iterator[Any]:
        for src in sources:
            if src.path is not None and src.error is None and media_kind(src.path) == "video":
                video.append(src.path)
                return
            # a plain file goes on as its path, anything else (caption, tar member, URL) as is
            plain = src.path is not None and src.path == src.name and src.caption is None
            yield src.name if plain else src

    while True:
        yield from analyzer.scan(images(), heads=heads, recursive=recursive)
        if not video:
            return
        yield analyze_video(analyzer, video.pop(), heads=heads, options=options)


def _run(analyzer: Any, path: str, heads: list[Any], options: VideoOptions,
         res: VideoResult) -> None:
    from clipsieve.media.decode import stat_input

    st = stat_input(path)  # a FIFO or device is refused before it is opened (issue #8)
    store = analyzer.store
    sha = store.lookup_file(path, st.st_size, st.st_mtime_ns) if store is not None else None
    if sha is None:
        t = time.perf_counter()
        sha = _hash_file(path)
        res.timing["read_ms"] = (time.perf_counter() - t) * 1000
        if store is not None:
            store.record_file(path, st.st_size, st.st_mtime_ns, sha)
    res.sha256 = sha
    prep = analyzer.preprocess.version
    key = options.sampling.key()
    policy = _moderation_policy(heads)
    if store is not None:
        stored = store.get_video_sampling(sha, key, analyzer.model_id, prep)
        found = _from_store(analyzer, heads, res, stored, prep) if stored else None
        if found is not None:
            _finish(analyzer, path, res, options, policy, *found)
            return
    found = _decode_and_analyze(analyzer, path, heads, options, res, prep, key, policy)
    _finish(analyzer, path, res, options, policy, *found)


def _info_fields(res: VideoResult, info: Mapping[str, Any]) -> None:
    v = info["video"]
    res.width, res.height = v["width"], v["height"]
    if v.get("rotation") in (90, 270):
        res.width, res.height = res.height, res.width
    res.fps, res.codec, res.container = v["fps"], v["codec"], v["container"]
    res.duration_ms = info["duration_ms"]
    res.frames_decoded = info["frames_decoded"]
    res.partial = bool(info.get("partial"))
    res.decoded_fraction = info.get("decoded_fraction")
    res.partial_reasons = list(info.get("partial_reasons") or [])


_Found = tuple["_Timeline", "list[int] | None", int]


def _from_store(analyzer: Any, heads: list[Any], res: VideoResult,
                stored: tuple[dict[str, Any], list[int]], prep: str) -> _Found | None:
    """Re-score a stored sampling: heads over stored embeddings; no decoding, no model."""
    info, times = stored
    if info.get("features_version") != analyzer.features_version:
        return None
    encoder = _encoder_kind(analyzer)
    # frames embedded by another encoder are not this run's embeddings: decode again
    rows = analyzer.store.get_video_frames(res.sha256, analyzer.model_id, prep, encoder=encoder)
    if not times or any(t not in rows for t in times):
        return None
    _info_fields(res, info)
    timeline = _Timeline()
    bs = max(1, int(getattr(analyzer, "batch_size", 32)))
    for i in range(0, len(times), bs):
        chunk = times[i : i + bs]
        embs = np.stack([rows[t][0] for t in chunk]) if chunk else np.zeros((0, 0), np.float32)
        feats = [(rows[t][1] or {}).get("features") for t in chunk]
        items = analyzer.score(embs, feats, heads=heads, ids=[f"{res.path}@{t}ms" for t in chunk])
        for t, item in zip(chunk, items):
            timeline.add(t, item, (rows[t][1] or {}).get("metrics"))
    if times:
        res.device, res.precision = rows[times[0]][2], rows[times[0]][3]
        res.encoder = encoder
    res.cached = True
    return timeline, info.get("bytes_per_second"), int(res.duration_ms or times[-1] + 1000)


class _End:
    pass


def _video_resolution(features: dict[str, Any] | None, width: int, height: int) -> None:
    """Frames are analysed at a reduced size; their ``megapixels`` is the video's frame size
    (the resolution component of quality), as an image's is its file's."""
    if isinstance(features, dict) and "megapixels" in features:
        features["megapixels"] = width * height / 1e6


def _decode_and_analyze(analyzer: Any, path: str, heads: list[Any], options: VideoOptions,
                        res: VideoResult, prep: str, key: str, policy: Any) -> _Found:
    reader = VideoReader(path, analyzer.limits)
    info = reader.info
    res.width, res.height, res.fps = info.width, info.height, info.fps
    res.codec, res.container = info.codec, info.container
    timeout = options.timeout_s if options.timeout_s is not None \
        else default_timeout_s(info.duration_ms)
    deadline = time.monotonic() + timeout
    stop = threading.Event()
    batch_size = max(1, int(getattr(analyzer, "batch_size", 32)))
    q: queue.Queue[Any] = queue.Queue(maxsize=2 * batch_size)
    min_side = max(analyzer.preprocess.min_side, ANALYSIS_MIN_SIDE)
    decode_ms = [0.0]

    def put(obj: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(obj, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        t = time.perf_counter()
        try:
            for kf in reader.frames(options.sampling, min_side=min_side, deadline=deadline,
                                    stop=stop):
                if not put(kf):
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(exc)
        finally:
            decode_ms[0] = (time.perf_counter() - t) * 1000
            try:
                q.put_nowait(_End())
            except queue.Full:
                pass

    thread = threading.Thread(target=work, name="video-decode", daemon=True)
    thread.start()
    timeline = _Timeline()
    model = analyzer.model_id
    encode_ms = 0.0
    timed_out = stopped_on_block = False
    pending: list[KeptFrame] = []
    device: str | None = None
    precision: str | None = None
    encoder: str | None = None

    def flush() -> None:
        nonlocal encode_ms, device, precision, encoder
        if not pending:
            return
        t = time.perf_counter()
        ids = [f"{path}@{kf.timestamp_ms}ms" for kf in pending]
        # the batch step without heads: pixel statistics, preprocessing, encoding
        items = analyzer.analyze([kf.image for kf in pending], ids=ids)
        encode_ms += (time.perf_counter() - t) * 1000
        good = [(kf, item) for kf, item in zip(pending, items) if item.ok]
        for _kf, item in good:
            if device is None:
                device, precision = item.device, item.precision
                encoder = item.encoder or _encoder_kind(analyzer)
            _video_resolution(item.features, info.width, info.height)
        rows = []
        if good:
            # then the heads, over the embeddings and the corrected statistics
            scored = analyzer.score(
                np.stack([item.embedding for _kf, item in good]),
                [item.features for _kf, item in good], heads=heads,
                ids=[item.path for _kf, item in good],
            )
            for (kf, item), result in zip(good, scored):
                timeline.add(kf.timestamp_ms, result, kf.metrics)
                rows.append((kf.timestamp_ms, item.embedding,
                             {"features": item.features, "metrics": kf.metrics}))
        if analyzer.store is not None and rows:
            analyzer.store.put_video_frames(res.sha256, rows, model=model, prep=prep,
                                            precision=precision, device=device,
                                            encoder=encoder or _encoder_kind(analyzer))
        pending.clear()

    try:
        while True:
            remaining = deadline - time.monotonic()
            try:
                obj = q.get(timeout=max(0.05, min(remaining, 1.0)))
            except queue.Empty:
                if time.monotonic() > deadline:
                    timed_out = True
                    break
                continue
            if isinstance(obj, _End):
                break
            if isinstance(obj, BaseException):
                raise obj
            pending.append(obj)
            if len(pending) >= batch_size:
                flush()
                if options.stop_on_block and policy is not None and _blocked(
                    timeline, policy, options
                ):
                    stopped_on_block = True
                    break
        if not stopped_on_block and not timed_out:
            flush()
            if options.stop_on_block and policy is not None and _blocked(
                timeline, policy, options
            ):
                stopped_on_block = True
    finally:
        stop.set()
        thread.join(timeout=5)
        if not thread.is_alive():
            reader.close()
    stats = reader.stats
    if stats.stop_reason == "timeout":
        timed_out = True
    res.frames_decoded = stats.frames_decoded
    res.width, res.height = info.display_size
    res.timing["decode_ms"] = decode_ms[0]
    res.timing["encode_ms"] = encode_ms
    res.device, res.precision, res.encoder = device, precision, encoder
    if not timeline.times:
        if timed_out:
            raise DecodeError("timeout", f"no frame analysed within the time limit of "
                              f"{timeout:g} s", path)
        if stats.demux_error or stats.bad_packets:
            raise DecodeError("truncated", "no frame could be decoded"
                              + (f" ({stats.demux_error})" if stats.demux_error else ""), path)
        raise DecodeError("empty_video", "zero duration: no frame to decode", path)

    # duration, coverage and damage
    frame_ms = 1000.0 / info.fps if info.fps else 0.0
    last = stats.last_ms if stats.last_ms is not None else timeline.times[-1]
    res.duration_ms = info.duration_ms or int(round(last + frame_ms))
    reasons = []
    deliberate = stopped_on_block or stats.stop_reason == "max_frames"
    covered = min(1.0, (last + frame_ms) / res.duration_ms) if res.duration_ms else 1.0
    if deliberate:
        covered = 1.0
    if timed_out:
        reasons.append(f"time limit of {timeout:g} s reached at {last / 1000:.1f} s")
    elif covered < 0.97:
        reasons.append(f"the stream ends early at {last / 1000:.1f} s of "
                       f"{res.duration_ms / 1000:.1f} s (truncated)"
                       + (f": {stats.demux_error}" if stats.demux_error else ""))
    # frames lost inside the stream (a damaged stretch the demuxer skipped over): compare
    # the frames decoded with those the header promises, when every frame was decoded
    frames_frac = 1.0
    if (not options.sampling.keyframes and not deliberate and not timed_out and info.fps
            and res.duration_ms and covered >= 0.97):
        expected = info.frames or int(round(res.duration_ms * info.fps / 1000))
        if expected > 0:
            frames_frac = min(1.0, stats.frames_decoded / expected)
            if frames_frac < 0.95:
                reasons.append(f"{expected - stats.frames_decoded} of {expected} frames missing "
                               "(a damaged stretch was skipped)")
            else:
                frames_frac = 1.0
    damaged = stats.bad_packets + stats.damaged_frames
    if damaged:
        reasons.append(f"{damaged} corrupt packet(s) or frame(s) skipped")
    if stopped_on_block:
        reasons.append(f"stopped at the first block (--stop-on-block) at {last / 1000:.1f} s")
    damage_frac = min(1.0, damaged / max(1, stats.packets + stats.bad_packets))
    res.decoded_fraction = round(min(covered, frames_frac) * (1.0 - damage_frac), 4)
    res.partial = bool(reasons)
    res.partial_reasons = reasons
    end_ms = (
        int(round(last + max(frame_ms, 1000.0 / (options.sampling.effective_fps or 1.0))))
        if (stopped_on_block or timed_out) else res.duration_ms
    )
    if analyzer.store is not None and not timed_out and not stopped_on_block:
        analyzer.store.put_video_sampling(
            res.sha256 or "", key, model=model, prep=prep,
            info={
                "video": info.to_dict(),
                "duration_ms": res.duration_ms,
                "frames_decoded": res.frames_decoded,
                "partial": res.partial,
                "decoded_fraction": res.decoded_fraction,
                "partial_reasons": res.partial_reasons,
                "bytes_per_second": stats.bytes_per_second,
                "features_version": analyzer.features_version,
            },
            timestamps=timeline.times,
        )
    return timeline, stats.bytes_per_second, end_ms


def _blocked(timeline: _Timeline, policy: Any, options: VideoOptions) -> bool:
    settings = options.segments or policy.video
    if not timeline.seg_input:
        return False
    segs = build_segments(timeline.seg_input, timeline.seg_input[-1]["timestamp_ms"] + 1000,
                          settings)
    return any(s["decision"] == "block" for s in segs)


def _finish(analyzer: Any, path: str, res: VideoResult, options: VideoOptions, policy: Any,
            timeline: _Timeline, bytes_per_second: list[int] | None, end_ms: int) -> None:
    res.frames = timeline.frames
    res.provenance = timeline.provenance
    if policy is not None:
        settings = options.segments or policy.video
        res.segments = build_segments(timeline.seg_input, end_ms, settings)
        res.verdict = video_verdict(
            res.segments, policy.provenance()
        )
    checks = find_checks(
        timeline.times, timeline.metrics, end_ms,
        bytes_per_second=bytes_per_second, width=res.width, height=res.height,
        fps=res.fps, codec=res.codec, settings=options.checks,
    )
    res.quality = quality_summary(timeline.frames, checks)
    if options.thumbnail_dir and timeline.best is not None:
        res.thumbnail = _write_thumbnail(path, res, timeline.best, options.thumbnail_dir,
                                         analyzer)


def _write_thumbnail(path: str, res: VideoResult, best: tuple[float, int], folder: str,
                     analyzer: Any) -> dict[str, Any] | None:
    score, t = best
    try:
        with VideoReader(path, analyzer.limits) as reader:
            got = reader.grab([t], THUMBNAIL_MAX_SIDE)
    except DecodeError:
        got = []
    if not got:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    out = Path(folder) / f"{Path(path).stem}-{(res.sha256 or '')[:8]}-{t}ms.jpg"
    got[0][1].convert("RGB").save(out, "JPEG", quality=88)
    return {"path": str(out), "timestamp_ms": t, "quality": score}
