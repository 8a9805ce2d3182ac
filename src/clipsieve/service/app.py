"""The FastAPI application of ``clipsieve serve``.

Build it with :func:`create_app` (``ServiceConfig`` in, ASGI app out). The model loads in the
background when the app starts (``/readyz`` says when it is done); requests go through
admission (a bounded number at once, 503 beyond), a streamed body read with its size limit
(413), content sniffing (415), ``Analyzer.prepare`` in the decode pool, the micro-batcher and
``Analyzer.analyze`` on the model thread, all under one time limit (504). Every error has the shape
``{"error": {"code": ..., "message": ...}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from clipsieve import __version__, settings
from clipsieve.errors import ClipsieveError, ConfigError, DecodeError
from clipsieve.service.config import ServiceConfig
from clipsieve.service.errors import STATUS_CODES, ServiceError, error_body
from clipsieve.service.uploads import Body, read_body, require_kind

__all__ = ["Service", "create_app"]

log = logging.getLogger("clipsieve.service")

#: HTTP status of a per-image decode failure, by its reason code.
DECODE_STATUS = {"not_an_image": 415, "unsupported": 415, "truncated": 422, "too_large": 413,
                 "io_error": 422}

#: Paths that need an API key (when keys are configured).
PROTECTED = ("/v1/", "/metrics")

STATIC_FILES = {"index.html": "text/html; charset=utf-8",
                "app.js": "text/javascript; charset=utf-8",
                "app.css": "text/css; charset=utf-8"}

_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}},
        "required": ["code", "message"]}},
    "required": ["error"],
}


def _error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"description": STATUS_CODES.get(c, "error"),
                "content": {"application/json": {"schema": _ERROR_SCHEMA}}} for c in codes}


def _upload_body(*fields: str, video: bool = False) -> dict[str, Any]:
    props: dict[str, Any] = {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                 "description": "one or more files (any part that is not an option field)"},
    }
    for f in fields:
        props[f] = {"type": "string"}
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": props}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                     "description": f"one {'video' if video else 'image'} "
                                                    "as the raw body"},
    }}}


class Service:
    """The state of one running service: engine, batcher, jobs, metrics, limits.

    Args:
        config: the settings.
        engine: a ready-made :class:`~clipsieve.service.engine.Engine` (tests), else built.
        store: an opened store, else opened from ``config.store`` (and closed at the end).
        runners: job runners by kind; default the video runner when video support is installed.
    """

    def __init__(self, config: ServiceConfig, *, engine: Any = None, store: Any = None,
                 runners: dict[str, Callable[..., dict[str, Any]]] | None = None) -> None:
        from clipsieve.service.batcher import MicroBatcher
        from clipsieve.service.engine import Engine
        from clipsieve.service.jobs import Jobs
        from clipsieve.service.metrics import Metrics
        from clipsieve.store import Store

        self.config = config
        self._own_store = store is None
        self.store = store if store is not None else Store(
            config.store or settings.default_store_path())
        self.engine = engine if engine is not None else Engine(config, self.store)
        self.in_flight = 0
        self.decoding = 0  # images admitted and not yet queued for the model
        self.model_seconds = 0.0
        self.batcher: MicroBatcher[Any, Any] = MicroBatcher(
            self.engine.run_batch, max_batch_size=config.max_batch_size,
            max_wait_ms=config.max_wait_ms, on_batch=self._on_batch,
            incoming=lambda: self.decoding)
        self.metrics = Metrics(lambda: self.batcher.depth, lambda: self.in_flight)
        self.decode_pool = ThreadPoolExecutor(
            max_workers=config.workers or settings.default_workers(),
            thread_name_prefix="decode")
        if runners is None:
            runners = _default_runners(self)
        spool = Path(self.store.path).parent / "service-spool" if self.store.path != ":memory:" \
            else Path(_tempdir()) / "clipsieve-service-spool"
        self.jobs = Jobs(self.store, spool, runners, timeout_s=config.video_timeout_s,
                         on_finish=lambda s: self.metrics.jobs.labels(s).inc())
        self.load_error: str | None = None
        self.on_fatal: Callable[[str], None] | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._keys = tuple(hashlib.sha256(k.encode()).digest() for k in config.api_keys)

    # -- life -------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        interrupted = self.jobs.recover()
        if interrupted:
            log.warning("marked %d job(s) left unfinished by a previous server as failed",
                        interrupted)
        await self.batcher.start()
        self.jobs.start()
        self._load_task = asyncio.get_running_loop().create_task(self._load())
        try:
            yield
        finally:
            if self._load_task is not None and not self._load_task.done():
                self._load_task.cancel()
            # a running video job stops at its next model call (marked failed: interrupted),
            # while the model thread still serves it; then the batcher and the model thread
            await asyncio.get_running_loop().run_in_executor(None, self.jobs.stop)
            await self.batcher.stop()
            self.decode_pool.shutdown(wait=True)
            if self._own_store:
                self.store.close()

    async def _load(self) -> None:
        t0 = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(self.batcher.executor,
                                                             self.engine.load)
        except Exception as exc:
            self.load_error = str(exc) if isinstance(exc, ClipsieveError) else \
                f"{type(exc).__name__}: {exc}"
            log.error("cannot load the model: %s", self.load_error)
            if self.on_fatal is not None:
                self.on_fatal(self.load_error)
            return
        log.info("model %s ready in %.1f s", self.engine.model_id, time.perf_counter() - t0)

    def _on_batch(self, size: int, seconds: float) -> None:
        self.model_seconds += seconds
        self.metrics.observe_batch(size, seconds)

    # -- API keys ---------------------------------------------------------------------------
    def key_ok(self, given: str | None) -> bool:
        """Whether ``given`` is one of the keys (each compared in constant time)."""
        if not self._keys:
            return True
        digest = hashlib.sha256((given or "").encode()).digest()
        ok = False
        for key in self._keys:  # no early exit: the time does not tell which key matched
            ok |= hmac.compare_digest(digest, key)
        return ok and bool(given)

    # -- analysis ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def admit(self) -> Any:
        if not self.engine.ready:
            self.metrics.rejected.labels("not_ready").inc()
            msg = (f"the model could not be loaded: {self.load_error}" if self.load_error
                   else "the model is still loading")
            raise ServiceError(503, "not_ready", msg, {"Retry-After": "5"})
        if self.in_flight >= self.config.queue_size:
            self.metrics.rejected.labels("overloaded").inc()
            raise ServiceError(503, "overloaded",
                               f"{self.in_flight} requests are already being served; retry "
                               "later", {"Retry-After": str(self.retry_after())})
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def retry_after(self) -> int:
        """Seconds until the queue has likely drained (at least 1)."""
        b = self.batcher
        per_image = self.model_seconds / b.items if b.items else 0.05
        return max(1, math.ceil(b.depth * per_image))

    async def analyze(self, request: Request, endpoint: str, opts: dict[str, Any]) -> JSONResponse:
        with self.admit():
            try:
                return await asyncio.wait_for(self._analyze(request, endpoint, opts),
                                              self.config.request_timeout_s)
            except asyncio.TimeoutError:
                self.metrics.rejected.labels("timeout").inc()
                raise ServiceError(
                    504, "timeout",
                    f"the request took longer than {self.config.request_timeout_s:g} s"
                ) from None

    async def _analyze(self, request: Request, endpoint: str, opts: dict[str, Any]) -> JSONResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = await read_body(request.stream(), headers, limit=self.config.max_upload_bytes,
                               max_uploads=self.config.max_images,
                               default_name=opts.get("name") or "upload")
        opts = _merge_options(opts, body)
        if opts.get("url"):
            if body.uploads:
                raise ServiceError(422, "invalid_request", "give a url or files, not both")
            from clipsieve.service.fetch import fetch_url

            body.uploads.append(await fetch_url(
                opts["url"], self.config.fetch_allow, limit=self.config.max_upload_bytes,
                timeout=self.config.request_timeout_s))
        if not body.uploads:
            raise ServiceError(400, "no_image",
                               "the request holds no image (send multipart files or a raw body)")
        try:
            if endpoint == "classify":
                heads = self.engine.classify_heads(opts.get("labels"), opts.get("templates"))
            else:
                heads = self.engine.image_heads(opts.get("policy"), opts.get("labels"),
                                                opts.get("templates"))
        except ClipsieveError as exc:
            raise ServiceError(422, "invalid_request", str(exc)) from None
        for up in body.uploads:
            require_kind(up, "image", f"/v1/{endpoint}")
        caption = (opts.get("caption") or "").strip() or None
        loop = asyncio.get_running_loop()
        decoding = [
            loop.run_in_executor(self.decode_pool, self.engine.decode, up.data, up.name, heads,
                                 caption, up.sha256)
            for up in body.uploads
        ]
        del body
        self.decoding += len(decoding)
        try:
            outcomes = await asyncio.gather(*decoding, return_exceptions=True)
        finally:
            self.decoding -= len(decoding)
        for out in outcomes:
            if isinstance(out, DecodeError):
                raise ServiceError(DECODE_STATUS.get(out.code, 422), out.code, str(out))
            if isinstance(out, BaseException):
                raise out
        results = await self.batcher.submit(list(outcomes))
        dicts = [r.to_dict() for r in results]
        self.metrics.observe_results(endpoint, dicts)
        return JSONResponse({"results": dicts})

    # -- videos -----------------------------------------------------------------------------
    async def submit_video(self, request: Request, opts: dict[str, Any]) -> JSONResponse:
        if not self.jobs.supports("video"):
            raise ServiceError(501, "not_implemented",
                               "video analysis is not available in this version of clipsieve")
        if not self.engine.ready:
            raise ServiceError(503, "not_ready", "the model is still loading",
                               {"Retry-After": "5"})
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = await read_body(request.stream(), headers, limit=self.config.max_video_bytes,
                               max_uploads=1, default_name=opts.get("name") or "upload",
                               spool=self.jobs.new_spool_path)
        try:
            opts = _merge_options(opts, body)
            if not body.uploads:
                raise ServiceError(400, "no_video", "the request holds no video")
            up = body.uploads[0]
            assert up.path is not None
            _require_video(up)
            options = _video_options(opts)
            try:
                self.engine.image_heads(options.get("policy"), options.get("labels"))
                from clipsieve.service.video import sampling_from_options

                sampling_from_options(options)
            except ClipsieveError as exc:
                raise ServiceError(422, "invalid_request", str(exc)) from None
            job = self.jobs.submit("video", up.path, name=up.name, sha256=up.sha256,
                                   size=up.size, options=options)
        except BaseException:
            for u in body.uploads:
                if u.path is not None:
                    u.path.unlink(missing_ok=True)
            raise
        return JSONResponse(job, status_code=202,
                            headers={"Location": f"/v1/jobs/{job['id']}"})


def _tempdir() -> str:
    import tempfile

    return tempfile.gettempdir()


def _default_runners(service: Service) -> dict[str, Callable[..., dict[str, Any]]]:
    try:
        from clipsieve.service.video import make_video_runner
    except ImportError:
        return {}
    runner = make_video_runner(service)
    return {"video": runner} if runner is not None else {}


def _require_video(up: Any) -> None:
    """A video container, or an animated GIF or WebP (which the video driver reads too)."""
    from clipsieve.media.sniff import media_kind, sniff

    got = sniff(up.head)
    if (got is not None and got.kind == "image" and got.format in ("gif", "webp")
            and up.path is not None and media_kind(up.path) == "video"):
        up.sniffed = got
        return
    require_kind(up, "video", "/v1/videos")


_VIDEO_OPTIONS = {"policy": str, "labels": str, "fps": float, "max_frames": int,
                  "keyframes": bool, "scenes": bool, "stop_on_block": bool}


def _video_options(opts: dict[str, Any]) -> dict[str, Any]:
    """The job's options, typed (form fields arrive as text)."""
    out: dict[str, Any] = {}
    for name, kind in _VIDEO_OPTIONS.items():
        value = opts.get(name)
        if value in (None, "", []):
            continue
        try:
            if kind is bool:
                if isinstance(value, str):
                    if value.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                        raise ValueError(value)
                    value = value.lower() in ("1", "true", "yes", "on")
                out[name] = bool(value)
            else:
                out[name] = kind(value)
        except ValueError:
            raise ServiceError(422, "invalid_request",
                               f"{name}: not a valid {kind.__name__}: {value!r}") from None
    return out


def _merge_options(query: dict[str, Any], body: Body) -> dict[str, Any]:
    """Query options, overridden by multipart fields of the same name; ``templates`` may be
    repeated (``template``) or one set name."""
    out = dict(query)
    for name, values in body.fields.items():
        if name in ("template", "templates"):
            out["templates"] = list(out.get("templates") or []) + values
        else:
            out[name] = values[-1]
    return out


def _route_of(scope: dict[str, Any]) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class _Guard:
    """ASGI middleware: API keys for protected paths, and request metrics for every path."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        path = scope.get("path", "")
        try:
            if path.startswith(PROTECTED) and scope.get("method") != "OPTIONS":
                headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                           for k, v in scope.get("headers", [])}
                given = headers.get("x-api-key")
                auth = headers.get("authorization", "")
                if given is None and auth[:7].lower() == "bearer ":
                    given = auth[7:].strip()
                if not self.service.key_ok(given):
                    resp = JSONResponse(
                        error_body("unauthorized", "a valid API key is required (header "
                                   "'Authorization: Bearer KEY' or 'X-API-Key: KEY')"),
                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
                    await resp(scope, receive, send_wrapper)
                    return
            await self.app(scope, receive, send_wrapper)
        finally:
            self.service.metrics.observe_request(
                _route_of(scope) if status["code"] != 404 or scope.get("route") else "unmatched",
                scope.get("method", ""), status["code"], time.perf_counter() - t0)


def create_app(config: ServiceConfig | None = None, *, engine: Any = None, store: Any = None,
               runners: dict[str, Callable[..., dict[str, Any]]] | None = None) -> FastAPI:
    """The ASGI app serving ``config`` (see the README's "Run as a service").

    The :class:`Service` is ``app.state.service``.
    """
    config = config or ServiceConfig()
    service = Service(config, engine=engine, store=store, runners=runners)
    app = FastAPI(
        title="clipsieve",
        version=__version__,
        description=(
            "Moderation, quality and zero-shot labels for images (and videos as jobs) with "
            "CLIP. Every error is `{\"error\": {\"code\", \"message\"}}`. With API keys, send "
            "`Authorization: Bearer KEY` or `X-API-Key: KEY`."
        ),
        lifespan=service.lifespan,
    )
    app.state.service = service
    _routes(app, service)
    _handlers(app)
    app.add_middleware(_Guard, service=service)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    return app


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return JSONResponse(error_body(code, message), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:3]:
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else err.get("msg", ""))
        return JSONResponse(error_body("invalid_request", "; ".join(parts) or "invalid request"),
                            status_code=422)

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, exc: ConfigError) -> JSONResponse:
        return JSONResponse(error_body("invalid_request", str(exc)), status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal_error", "internal error (see the server log)"),
                            status_code=500)


def _routes(app: FastAPI, service: Service) -> None:
    caption_q = Query(None, max_length=4096,
                      description="caption moderated with every image of the request")
    policy_q = Query(None, description="name of a policy the server loaded (default: the first)")
    labels_q = Query(None, description='comma-separated zero-shot labels, e.g. "cat,dog,car"')
    template_q = Query(None, description='prompt template with {} (repeat to ensemble), or one '
                       'built-in set name (default, single, imagenet7)')
    url_q = Query(None, description="fetch the image from this URL (only hosts on the server's "
                  "allow-list)")
    name_q = Query(None, max_length=256, description="name of a raw-body upload in the result's "
                   "`path` (default `upload`)")

    @app.post("/v1/images", tags=["analysis"], openapi_extra=_upload_body(
        "caption", "policy", "labels", "url"),
        responses=_error_responses(400, 401, 403, 413, 415, 422, 503, 504),
        summary="Moderation, quality and labels for one or more images")
    async def images(request: Request, caption: str | None = caption_q,
                     policy: str | None = policy_q, labels: str | None = labels_q,
                     template: list[str] | None = template_q, url: str | None = url_q,
                     name: str | None = name_q) -> JSONResponse:
        """Send images as multipart files (any number up to the server's limit) or one image
        as the raw body. Returns `{"results": [...]}`: one object per image, in order, the same
        objects as `clipsieve scan`'s JSONL (`moderation`, `quality`, and `labels` when asked).
        """
        return await service.analyze(request, "images", {
            "caption": caption, "policy": policy, "labels": labels, "templates": template,
            "url": url, "name": name})

    @app.post("/v1/classify", tags=["analysis"], openapi_extra=_upload_body(
        "labels", "templates", "url"),
        responses=_error_responses(400, 401, 403, 413, 415, 422, 503, 504),
        summary="Zero-shot labels for one or more images")
    async def classify(request: Request, labels: str | None = labels_q,
                       template: list[str] | None = template_q, url: str | None = url_q,
                       name: str | None = name_q) -> JSONResponse:
        """Images as for `/v1/images`, plus `labels` (required) and optional templates.
        Returns `{"results": [...]}` with `labels: {label: probability}` per image."""
        return await service.analyze(request, "classify", {
            "labels": labels, "templates": template, "url": url, "name": name})

    @app.post("/v1/videos", tags=["videos"], status_code=202, openapi_extra=_upload_body(
        "policy", "labels", "fps", "keyframes", "scenes", "max_frames", "stop_on_block",
        video=True),
        responses=_error_responses(400, 401, 413, 415, 422, 501, 503),
        summary="Analyse a video in the background")
    async def videos(request: Request, policy: str | None = policy_q,
                     labels: str | None = labels_q, name: str | None = name_q,
                     fps: float | None = Query(None, gt=0, le=120, description="frames sampled "
                                               "per second (default 1)"),
                     keyframes: bool | None = Query(None, description="keyframes only"),
                     scenes: bool | None = Query(None, description="one frame per shot (and "
                                                 "fps, if given)"),
                     max_frames: int | None = Query(None, ge=1, description="frames at most"),
                     stop_on_block: bool | None = Query(None, description="stop at the first "
                                                        "block segment"),
                     ) -> JSONResponse:
        """One video (MP4, MOV, MKV, WebM, AVI, or an animated GIF or WebP) as the raw body or
        one multipart file. Answers `202` with the job (`id`, `status`…) and a `Location`
        header; poll `GET /v1/jobs/{id}`: when `done`, its `result` is the object
        `clipsieve video` prints for the file (frames, segments, verdict, quality, checks)."""
        return await service.submit_video(request, {
            "policy": policy, "labels": labels, "name": name, "fps": fps,
            "keyframes": keyframes, "scenes": scenes, "max_frames": max_frames,
            "stop_on_block": stop_on_block})

    @app.get("/v1/jobs/{job_id}", tags=["videos"], responses=_error_responses(401, 404),
             summary="A job's status, progress and result")
    async def get_job(job_id: str) -> JSONResponse:
        job = service.jobs.get(job_id)
        if job is None:
            raise ServiceError(404, "not_found", f"no job {job_id!r}")
        return JSONResponse(job)

    @app.delete("/v1/jobs/{job_id}", tags=["videos"], responses=_error_responses(401, 404, 409),
                summary="Cancel a queued or running job")
    async def cancel_job(job_id: str) -> JSONResponse:
        return JSONResponse(service.jobs.cancel(job_id))

    @app.get("/v1/info", tags=["operations"], summary="Model, policies and limits")
    async def info() -> JSONResponse:
        c = service.config
        return JSONResponse({
            **service.engine.info(),
            "version": __version__,
            "videos": service.jobs.supports("video"),
            "limits": {
                "max_upload_bytes": c.max_upload_bytes, "max_images": c.max_images,
                "max_batch_size": c.max_batch_size, "max_wait_ms": c.max_wait_ms,
                "request_timeout_s": c.request_timeout_s, "queue_size": c.queue_size,
                "max_video_bytes": c.max_video_bytes, "url_fetch": bool(c.fetch_allow),
            },
            "auth": bool(c.api_keys),
        })

    @app.get("/healthz", tags=["operations"], summary="The process is up")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", tags=["operations"], summary="The model is loaded",
             responses=_error_responses(503))
    async def readyz() -> JSONResponse:
        if service.engine.ready:
            return JSONResponse({"status": "ready", "model": service.engine.model_id})
        msg = (f"the model could not be loaded: {service.load_error}" if service.load_error
               else "the model is loading")
        return JSONResponse(error_body("not_ready", msg), status_code=503,
                            headers={"Retry-After": "5"})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics() -> Response:
        data, ctype = service.metrics.render()
        return Response(data, media_type=ctype)

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return _static("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise ServiceError(404, "not_found", f"no static file {name!r}")
        return _static(name)


def _static(name: str) -> Response:
    data = resources.files("clipsieve.service").joinpath("static").joinpath(name).read_bytes()
    return Response(data, media_type=STATIC_FILES[name],
                    headers={"Cache-Control": "no-cache",
                             "Content-Security-Policy": "default-src 'self'; img-src 'self' "
                             "blob: data:; media-src 'self' blob:; style-src 'self'; "
                             "script-src 'self'; connect-src 'self'",
                             "X-Content-Type-Options": "nosniff"})

