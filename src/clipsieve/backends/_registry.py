"""The encoder registry: ``register_encoder`` / ``create_encoder`` / ``list_encoders``.

Like timm's ``register_model`` / ``create_model``: a backend module registers a factory under a
kind name; :func:`create_encoder` builds one by name. A registration may also say how to read
the preprocessing and the logit scale of a model *without loading it* (a fully cached re-scan
needs nothing more), which :class:`~clipsieve.pipeline.Analyzer` uses before any model work.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clipsieve.backends.base import Encoder
from clipsieve.errors import ConfigError
from clipsieve.media.preprocess import Preprocess

EncoderFactory = Callable[..., Encoder]


@dataclass(frozen=True)
class EncoderEntry:
    """A registered encoder kind.

    Attributes:
        kind: the name (``"torch"``).
        factory: ``factory(model, device=, precision=, **options) -> Encoder``.
        read_preprocess: ``model_id -> Preprocess`` without loading weights, or ``None``.
        read_logit_scale: ``model_id -> float | None`` without loading weights, or ``None``.
        resolve_model_id: ``model -> model_id`` (default: unchanged).
        description: one line for listings.
    """

    kind: str
    factory: EncoderFactory
    read_preprocess: Callable[[str], Preprocess] | None = None
    read_logit_scale: Callable[[str], float | None] | None = None
    resolve_model_id: Callable[[str], str] | None = None
    description: str = ""


_REGISTRY: dict[str, EncoderEntry] = {}
_LOCK = threading.Lock()


def register_encoder(
    kind: str,
    factory: EncoderFactory | None = None,
    *,
    read_preprocess: Callable[[str], Preprocess] | None = None,
    read_logit_scale: Callable[[str], float | None] | None = None,
    resolve_model_id: Callable[[str], str] | None = None,
    description: str = "",
    replace: bool = False,
) -> Any:
    """Register an encoder factory under ``kind``; usable as a decorator.

    Example:
        >>> @register_encoder("mine")
        ... def make(model, *, device="auto", precision="auto"):
        ...     return MyEncoder(model, device, precision)

    Raises:
        ValueError: ``kind`` is already registered (and ``replace`` is false).
    """

    def add(f: EncoderFactory) -> EncoderFactory:
        with _LOCK:
            if kind in _REGISTRY and not replace:
                raise ValueError(f"encoder kind {kind!r} is already registered")
            _REGISTRY[kind] = EncoderEntry(kind, f, read_preprocess, read_logit_scale,
                                           resolve_model_id, description)
        return f

    if factory is None:
        return add
    return add(factory)


def list_encoders() -> list[str]:
    """The registered encoder kinds, sorted."""
    return sorted(_REGISTRY)


def is_encoder(kind: str) -> bool:
    """Whether ``kind`` is a registered encoder kind."""
    return kind in _REGISTRY


def encoder_entry(kind: str) -> EncoderEntry:
    """The registration of ``kind``.

    Raises:
        ConfigError: no such kind (with the closest names).
    """
    try:
        return _REGISTRY[kind]
    except KeyError:
        close = difflib.get_close_matches(str(kind), list(_REGISTRY), n=2)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"unknown encoder {kind!r}: choose one of {', '.join(list_encoders())}{hint}"
        ) from None


def create_encoder(
    kind: str, model: str, *, device: str = "auto", precision: str = "auto", **options: Any
) -> Encoder:
    """Build and load an encoder of a registered kind.

    Args:
        kind: a name from :func:`list_encoders` (``"torch"``).
        model: Hugging Face id or local checkpoint folder.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        options: further arguments of that kind's factory; ``None`` values are dropped.

    Raises:
        ConfigError: unknown kind, device or precision.
        ModelError: the model cannot be loaded.
    """
    entry = encoder_entry(kind)
    kw = {k: v for k, v in options.items() if v is not None}
    return entry.factory(model, device=device or "auto", precision=precision or "auto", **kw)
