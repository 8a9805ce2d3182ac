"""Video jobs: the library's video driver (:func:`clipsieve.video.analyze.analyze_video`) run on
a spooled upload, with its model calls on the service's one model thread.

The driver decodes and samples frames on its own thread and sends batches through the
analyzer's batch step. Here the analyzer is wrapped so that every such call (``analyze`` and
``score``) runs on the model thread between image batches — images and video frames never use
the model at the same time — and reports the job's progress (the timestamp of the frames
reached, over the video's duration), which is also where a cancelled job stops.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

from clipsieve.service.errors import ServiceError

__all__ = ["make_video_runner", "sampling_from_options"]

_TS = re.compile(r"@(\d+)ms$")


class _OnModelThread:
    """The analyzer, with its batch step run on the model thread and progress reported."""

    def __init__(self, analyzer: Any, executor: Executor, ctx: Any, duration_ms: int | None):
        self._analyzer = analyzer
        self._executor = executor
        self._ctx = ctx
        self._duration = duration_ms

    def __getattr__(self, name: str) -> Any:
        return getattr(self._analyzer, name)

    def _progress(self, ids: Sequence[str] | None) -> None:
        fraction = 0.0
        if ids and self._duration:
            m = _TS.search(str(ids[-1]))
            if m:
                fraction = min(0.99, int(m.group(1)) / self._duration)
        self._ctx.progress(fraction)  # raises when the job is cancelled or out of time

    def analyze(self, images: Sequence[Any], **kw: Any) -> Any:
        self._progress(kw.get("ids"))
        return self._executor.submit(self._analyzer.analyze, images, **kw).result()

    def score(self, embeddings: Any, features: Any = None, **kw: Any) -> Any:
        self._progress(kw.get("ids"))
        return self._executor.submit(self._analyzer.score, embeddings, features, **kw).result()


def sampling_from_options(options: dict[str, Any]) -> Any:
    """The :class:`~clipsieve.video.decode.Sampling` of a job's options (ConfigError if bad)."""
    from clipsieve.video.decode import Sampling

    return Sampling(
        fps=float(options["fps"]) if options.get("fps") is not None else None,
        keyframes=bool(options.get("keyframes")),
        scenes=bool(options.get("scenes")),
        max_frames=int(options["max_frames"]) if options.get("max_frames") is not None else None,
    )


def make_video_runner(service: Any) -> Callable[[Any], dict[str, Any]] | None:
    """The ``video`` job runner, or ``None`` when video support is not installed."""
    try:
        from clipsieve.video.analyze import VideoOptions, analyze_video
        from clipsieve.video.decode import VideoReader
    except ImportError:
        return None
    if not hasattr(service.engine.analyzer, "analyze"):
        return None

    def run(ctx: Any) -> dict[str, Any]:
        engine = service.engine
        opts = ctx.options
        key = engine.image_heads(opts.get("policy"), opts.get("labels"))
        executor = service.batcher.executor
        heads = executor.submit(engine.heads_for, key).result()
        try:
            with VideoReader(ctx.path, engine.analyzer.limits) as reader:
                duration = reader.info.duration_ms
        except Exception:  # the driver reports what is wrong with the file
            duration = None
        import time

        options = VideoOptions(
            sampling=sampling_from_options(opts),
            timeout_s=max(1.0, ctx.deadline - time.monotonic()),
            stop_on_block=bool(opts.get("stop_on_block")),
        )
        analyzer = _OnModelThread(engine.analyzer, executor, ctx, duration)
        try:
            result = analyze_video(analyzer, ctx.path, heads=heads, options=options)
        finally:
            _forget_spool_path(engine.analyzer.store, ctx.path)
        out = result.to_dict()
        out["path"] = ctx.name
        ctx.progress(1.0)
        if result.status != "ok":
            err = out.get("error") or {}
            raise ServiceError(422, err.get("code", "video_error"),
                               f"{ctx.name}: {err.get('message', 'cannot analyse the video')}")
        return out

    return run


def _forget_spool_path(store: Any, path: str) -> None:
    """The driver records results by file path; the spooled upload's path means nothing."""
    if store is None:
        return
    from clipsieve.store import path_key

    key = path_key(path)
    store.execute("DELETE FROM results WHERE path=?", (key,))
    store.execute("DELETE FROM files WHERE path=?", (key,))
