"""The service's settings, as one value (built by ``clipsieve serve`` or by hand in Python)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from clipsieve.errors import ConfigError

__all__ = ["ServiceConfig", "load_api_keys", "parse_size", "passive_openmp"]

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
          "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_size(text: str | int) -> int:
    """Bytes from ``"25MB"``, ``"512KiB"``, ``"1.5GB"`` or a plain number of bytes.

    Raises:
        ConfigError: not a size, or not positive.
    """
    if isinstance(text, int):
        value = text
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
        if not m or m.group(2).lower() not in _UNITS:
            raise ConfigError(f"not a size: {text!r} (use e.g. 25MB, 512KiB or a number of bytes)")
        value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if value <= 0:
        raise ConfigError(f"size must be positive, got {text!r}")
    return value


def passive_openmp() -> bool:
    """Let torch's idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``).

    In the service the model thread's OpenMP team shares the cores with the decode pool and
    the event loop (and, on a shared machine, with other processes). With OpenMP's default
    active waiting, a team thread that finishes its share spins until the others do, and a
    team thread descheduled by a decode thread holds up the whole model call: on a 2-core
    EPYC with other work running, model calls became 2–3× slower and the service fell to
    41–57% of offline ``scan`` (``benchmarks/service_load.py``). Passive waiting gives those
    cores to the decode threads instead (the ONNX encoders already run without spinning).

    OpenMP reads the variable once, when torch is first imported, so this must run before that;
    a value already in the environment is kept.

    Returns:
        Whether the policy is now passive for this process (``False``: torch was imported
        already, or the environment asks for another policy).
    """
    import sys

    if "torch" in sys.modules:
        return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"


def load_api_keys(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """API keys from a file: one per line; blank lines and lines starting with ``#`` skipped.

    Raises:
        ConfigError: the file cannot be read, holds no key, or a key is shorter than 16
            characters or contains white space (the message never shows a key).
    """
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: cannot read the API key file: {exc}") from None
    keys: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if len(key) < 16 or any(c.isspace() for c in key):
            raise ConfigError(
                f"{source}:{n}: an API key must be at least 16 characters without spaces"
            )
        keys.append(key)
    if not keys:
        raise ConfigError(f"{source}: no API key in the file (one key per line)")
    return tuple(dict.fromkeys(keys))


@dataclass
class ServiceConfig:
    """Everything ``clipsieve serve`` can be told.

    Attributes:
        model: Hugging Face id or checkpoint folder (``None``: ``CLIPSIEVE_MODEL`` / default).
        device, precision: as for the other commands.
        policies: moderation policies to load (names or files); the first is the default and a
            request picks another by its ``name``.
        store: the SQLite store (jobs, results, text embeddings); ``None``: the default store.
        max_batch_size: images per model call at most.
        max_wait_ms: how long the first image of a batch waits for others.
        max_upload_bytes: largest request body (413 beyond, counted while it streams in).
        max_images: images per request at most.
        max_pixels: largest image (width × height) decoded.
        request_timeout_s: time limit per request (504 beyond).
        queue_size: requests admitted at once; more get 503 with ``Retry-After``.
        workers: decode threads.
        torch_threads: CPU threads of the torch encoder (``torch.set_num_threads``, set on
            the model thread before it loads; the encoder then runs each batch as that many
            single-threaded slices, :mod:`clipsieve.backends._split`); ``None``: torch's
            default (one per core).
        api_keys: accepted keys (empty: no key needed).
        cors_origins: origins allowed by CORS (empty: CORS off).
        fetch_allow: hosts that ``url`` may name (empty: URL fetching off); ``*.example.com``
            matches sub-domains.
        max_video_bytes: largest video upload for ``POST /v1/videos``.
        video_timeout_s: time limit of one video job.
    """

    model: str | None = None
    device: str | None = None
    precision: str | None = None
    policies: tuple[str, ...] = ("default",)
    thresholds: tuple[str, ...] = ()
    store: str | None = None
    max_batch_size: int = 32
    max_wait_ms: float = 10.0
    max_upload_bytes: int = 20 * 1000**2
    max_images: int = 64
    max_pixels: int = 100_000_000
    request_timeout_s: float = 30.0
    queue_size: int = 64
    workers: int | None = None
    torch_threads: int | None = None
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    cors_origins: tuple[str, ...] = ()
    fetch_allow: tuple[str, ...] = ()
    max_video_bytes: int = 500 * 1000**2
    video_timeout_s: float = 3600.0

    def __post_init__(self) -> None:
        checks = [
            ("max_batch_size", self.max_batch_size >= 1),
            ("max_wait_ms", self.max_wait_ms >= 0),
            ("max_upload_bytes", self.max_upload_bytes >= 1),
            ("max_images", self.max_images >= 1),
            ("max_pixels", self.max_pixels >= 1),
            ("request_timeout_s", self.request_timeout_s > 0),
            ("queue_size", self.queue_size >= 1),
            ("workers", self.workers is None or self.workers >= 1),
            ("torch_threads", self.torch_threads is None or self.torch_threads >= 1),
            ("max_video_bytes", self.max_video_bytes >= 1),
            ("video_timeout_s", self.video_timeout_s > 0),
        ]
        for name, ok in checks:
            if not ok:
                raise ConfigError(f"{name} out of range: {getattr(self, name)!r}")
        if not self.policies:
            raise ConfigError("at least one policy is needed")
        self.policies = tuple(self.policies)
        self.api_keys = tuple(self.api_keys)
        self.cors_origins = tuple(self.cors_origins)
        self.fetch_allow = tuple(h.strip().lower() for h in self.fetch_allow if h.strip())
