"""``clipsieve serve``: the HTTP service (FastAPI + uvicorn, the ``service`` extra)."""

from __future__ import annotations

from typing import Any

import click

from clipsieve import settings


def _size(ctx: click.Context, param: click.Parameter, value: Any) -> int | None:
    if value is None:
        return None
    from clipsieve.errors import ConfigError
    from clipsieve.service.config import parse_size

    try:
        return parse_size(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port, printed at start).")
@click.option("--model", "-m", envvar="CLIPSIEVE_MODEL", default=settings.DEFAULT_MODEL,
              show_default=True, show_envvar=True,
              help="Hugging Face model id or local checkpoint folder.")
@click.option("--device", envvar="CLIPSIEVE_DEVICE", default="auto", show_default=True,
              help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--precision", envvar="CLIPSIEVE_PRECISION", default="auto", show_default=True,
              type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
              help="auto = float16 on CUDA, bfloat16 on CPUs with native bf16, else float32.")
@click.option("--policy", "-p", "policies", multiple=True, metavar="NAME|FILE",
              help="Moderation policy to load (repeatable; the first is the default, requests "
                   "pick another by its name) [default: default].")
@click.option("--threshold", "thresholds", multiple=True, metavar="CATEGORY.LEVEL=VALUE",
              help="Override one threshold of every loaded policy, e.g. violence.block=0.5; "
                   "repeatable. Validated like the policy file and recorded in each result's "
                   "moderation.policy.overrides.")
@click.option("--store", "store_path", envvar="CLIPSIEVE_STORE", type=click.Path(dir_okay=False),
              help="SQLite store for jobs and text embeddings [default: user cache "
                   "dir/clipsieve/store.sqlite].")
@click.option("--max-batch-size", default=32, show_default=True, type=click.IntRange(1, 1024),
              help="Images per model call at most (micro-batching across requests).")
@click.option("--max-wait-ms", default=10.0, show_default=True, type=click.FloatRange(0, 10000),
              help="How long the first image of a batch waits for more.")
@click.option("--max-upload-size", default="20MB", show_default=True, callback=_size,
              metavar="SIZE", help="Largest request body for images (413 beyond), e.g. 20MB.")
@click.option("--max-images", default=64, show_default=True, type=click.IntRange(1, 4096),
              help="Images per request at most.")
@click.option("--max-pixels", default=100_000_000, show_default=True, type=click.IntRange(1),
              help="Refuse images larger than this (width × height).")
@click.option("--request-timeout", default=30.0, show_default=True,
              type=click.FloatRange(0.1, 3600), metavar="SECONDS",
              help="Time limit per request (504 beyond).")
@click.option("--queue-size", default=64, show_default=True, type=click.IntRange(1, 100000),
              help="Requests admitted at once; more get 503 with Retry-After.")
@click.option("--workers", type=click.IntRange(1, 256),
              help="Decode threads [default: number of cores, at least 2].")
@click.option("--torch-threads", type=click.IntRange(1, 1024),
              help="CPU threads of the torch encoder: each batch runs as this many "
                   "single-threaded slices at once [default: torch's, one per core]. "
                   "serve also sets OMP_WAIT_POLICY=PASSIVE unless it is set.")
@click.option("--api-key-file", type=click.Path(dir_okay=False),
              help="File of API keys, one per line: /v1/* and /metrics then need one.")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Allow browser calls from this origin (repeatable; CORS is off without it).")
@click.option("--fetch-allow", "fetch_allow", multiple=True, metavar="HOST",
              help="Let requests name an image `url` on this host (repeatable; *.example.com "
                   "for sub-domains). URL fetching is off without it.")
@click.option("--max-video-size", default="500MB", show_default=True, callback=_size,
              metavar="SIZE", help="Largest video upload.")
@click.option("--video-timeout", default=3600.0, show_default=True,
              type=click.FloatRange(1), metavar="SECONDS", help="Time limit of one video job.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              help="Server log level (request lines at info).")
def serve(host: str, port: int, model: str, device: str, precision: str,
          policies: tuple[str, ...], thresholds: tuple[str, ...], store_path: str | None, max_batch_size: int,
          max_wait_ms: float, max_upload_size: int, max_images: int, max_pixels: int,
          request_timeout: float, queue_size: int, workers: int | None,
          torch_threads: int | None,
          api_key_file: str | None, cors_origins: tuple[str, ...], fetch_allow: tuple[str, ...],
          max_video_size: int, video_timeout: float, log_level: str) -> None:
    """Serve moderation, quality and labels over HTTP (needs the `service` extra).

    POST /v1/images and /v1/classify analyse uploads (concurrent requests share model
    calls); POST /v1/videos starts a job, GET /v1/jobs/ID polls it. GET / is a web page,
    /docs the API reference, /healthz, /readyz and /metrics are for operations. The model
    loads after the port opens; /readyz answers 200 once it has. SIGTERM or Ctrl-C stops
    taking connections, lets requests in flight finish, and exits 0.

    \b
    Example:
      clipsieve serve --port 8000 --policy default --policy my-policy.toml
      curl -F file=@photo.jpg http://127.0.0.1:8000/v1/images
    """
    from clipsieve.service.config import passive_openmp

    passive_openmp()  # before torch loads: idle model threads sleep, decode threads get cores
    try:
        import uvicorn

        from clipsieve.service import ServiceConfig, load_api_keys
        from clipsieve.service.app import create_app
    except ImportError as exc:
        from clipsieve.errors import ClipsieveError

        raise ClipsieveError(
            f"the service needs its extra: pip install 'clipsieve[service]' ({exc.name} is "
            "missing)") from None
    import logging
    import signal

    config = ServiceConfig(
        model=model, device=device, precision=precision,
        policies=policies or ("default",), thresholds=thresholds, store=store_path,
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
        max_upload_bytes=max_upload_size, max_images=max_images, max_pixels=max_pixels,
        request_timeout_s=request_timeout, queue_size=queue_size, workers=workers,
        torch_threads=torch_threads,
        api_keys=load_api_keys(api_key_file) if api_key_file else (),
        cors_origins=cors_origins, fetch_allow=fetch_allow,
        max_video_bytes=max_video_size, video_timeout_s=video_timeout,
    )
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s: %(name)s: %(message)s")
    app = create_app(config)  # policies, store and model folder fail here, before listening
    service = app.state.service
    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, log_level=log_level, lifespan="on",
        timeout_graceful_shutdown=int(request_timeout) + 5, server_header=False,
    ))

    def fatal(message: str) -> None:
        server.should_exit = True

    service.on_fatal = fatal
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; with
    # these handlers in place that is a no-op, so a clean stop exits 0.
    sock = _bind(host, port)
    click.echo(f"clipsieve: serving {service.engine.model_id} on "
               f"http://{_url_host(host)}:{sock.getsockname()[1]} (docs at /docs)", err=True)
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if service.load_error:
        from clipsieve.errors import ModelError

        raise ModelError(service.load_error)
    if not server.started:
        from clipsieve.errors import ClipsieveError

        raise ClipsieveError(f"the server could not start on {host}:{port}")


def _bind(host: str, port: int) -> Any:
    """A listening socket on host:port (port 0: a free one), or a one-line error."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        from clipsieve.errors import ClipsieveError

        raise ClipsieveError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
