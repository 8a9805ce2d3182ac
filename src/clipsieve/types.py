"""Typed results shared by the Python API, the CLI's JSON output, the service and the reports."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

#: Version of the per-item JSON schema (documented in the README).
SCHEMA_VERSION = 1

#: The score range of each shipped head's result field, declared once: the heads'
#: ``score_range`` and the command-line checks (``--min-score``, ``--min-quality``) read it.
SCORE_RANGES: dict[str, tuple[float, float]] = {
    "moderation": (0.0, 1.0),
    "quality": (0.0, 10.0),
    "labels": (0.0, 1.0),
    "probe": (0.0, 1.0),
}


@dataclass(frozen=True)
class ErrorInfo:
    """Why one item failed: a reason code from :data:`clipsieve.errors.ERROR_CODES` and a message."""

    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class Caption:
    """A caption and where it came from.

    Attributes:
        text: the caption, stripped of surrounding white space (never empty).
        source: ``"input"`` (a JSONL line or an explicit mapping), ``"option"`` (the default
            caption) or ``"sidecar"``.
        embedding: the caption's text embedding, once computed (the batch step fills it
            before the heads run, so heads stay pure functions of arrays).
    """

    text: str
    source: str
    embedding: Any = field(default=None, compare=False, repr=False)


@dataclass
class ResultEnvelope:
    """What every result carries, whatever it is about (an image, a video): the envelope.

    :class:`ItemResult` (images, frames) and :class:`clipsieve.video.VideoResult` extend it, so
    the field names the CLI's JSON, the service, the store and the reports read are declared once.

    Attributes:
        path: the file as given or discovered.
        status: ``"ok"`` or ``"error"``.
        error: why it failed, or ``None``.
        sha256: hex digest of the file's bytes (``None`` when it could not be read).
        width: pixel width after EXIF orientation (a video: as displayed), or ``None``.
        height: pixel height after EXIF orientation (a video: as displayed), or ``None``.
        model: the resolved model id the embeddings came from.
        device: the device that computed the embeddings (``cpu``, ``cuda``…).
        precision: the precision they were computed in (``float32``, ``bfloat16``,
            ``float16``; ``int8`` for the ``onnx-int8`` encoder).
        encoder: the encoder that computed them (``torch``, ``onnx``, ``onnx-int8``).
        timing: milliseconds spent, e.g. ``{"decode_ms": .., "encode_ms": .., "total_ms": ..}``.
        cached: whether the embeddings came from the store (no model work).
    """

    path: str
    status: str = "ok"
    error: ErrorInfo | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    model: str | None = None
    device: str | None = None
    precision: str | None = None
    encoder: str | None = None
    timing: dict[str, float] = field(default_factory=dict)
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def envelope_dict(self, *, kind: str | None = None) -> dict[str, Any]:
        """The envelope's JSON fields, in the documented order; ``kind`` (a video's
        ``"video"``) goes after ``error``."""
        from clipsieve.paths import json_fields

        out: dict[str, Any] = {
            **json_fields(self.path),  # a name that is not UTF-8 also gets path_bytes
            "status": self.status,
            "error": self.error.to_dict() if self.error else None,
        }
        if kind is not None:
            out["kind"] = kind
        out.update({
            "sha256": self.sha256,
            "width": self.width,
            "height": self.height,
            "model": self.model,
            "device": self.device,
            "precision": self.precision,
            "encoder": self.encoder,
            "cached": self.cached,
            "timing": {k: round(v, 3) for k, v in self.timing.items()},
        })
        return out


@dataclass
class ItemResult(ResultEnvelope):
    """The result for one input file: the envelope (:class:`ResultEnvelope`) plus what the
    heads found.

    Attributes:
        embedding: the L2-normalised image embedding (not serialised by default).
        features: pixel statistics computed during decoding (input to the quality heads).
        moderation / quality / labels: filled by the heads that ran, else ``None``.
        extra: further head outputs keyed by field name.
    """

    embedding: Any = field(default=None, repr=False)
    features: dict[str, float] | None = field(default=None, repr=False)
    moderation: Any = None
    quality: Any = None
    labels: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def probe(self) -> Any:
        """The probe head's ``{class: probability}`` (``extra["probe"]``), or ``None``."""
        return self.extra.get("probe")

    @probe.setter
    def probe(self, value: Any) -> None:
        if value is None:
            self.extra.pop("probe", None)
        else:
            self.extra["probe"] = value

    def to_dict(self, *, include_embedding: bool = False) -> dict[str, Any]:
        """Plain JSON-ready dict, the schema documented in the README."""
        out = self.envelope_dict()
        for name in ("moderation", "quality", "labels"):
            value = getattr(self, name)
            if value is not None:
                out[name] = to_jsonable(value)
        for name, value in self.extra.items():
            out[name] = to_jsonable(value)
        if include_embedding and self.embedding is not None:
            out["embedding"] = [float(x) for x in self.embedding]
        return out


#: The JSON names of the envelope's fields (``path_bytes`` too: a name that is not UTF-8):
#: what describes the item and the run, as opposed to a head's output.
ENVELOPE_FIELDS: frozenset[str] = frozenset(
    {f.name for f in dataclasses.fields(ResultEnvelope)} | {"path_bytes"}
)


def to_jsonable(value: Any) -> Any:
    """Convert result objects (dataclasses, numpy scalars/arrays) to plain JSON types.

    Non-finite floats (NaN, ±inf) become ``None``: the output must stay valid JSON.
    """
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict:
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [to_jsonable(v) for v in value]
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclass_dict(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return to_jsonable(value.tolist())
    return value


def dataclass_dict(obj: Any) -> dict[str, Any]:
    """A dataclass as a JSON-ready dict; like ``dataclasses.asdict`` without its deep copies."""
    return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
