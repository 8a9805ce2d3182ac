"""Model backends: encoders that turn pixels and texts into embeddings, and their registry.

* :class:`Encoder` — the protocol (``kind``, ``model_id``, ``device``, ``precision``,
  ``preprocess``, ``logit_scale``, ``encode_pixels``, ``encode_texts``);
* :func:`create_encoder` / :func:`register_encoder` / :func:`list_encoders` — the registry;
* ``"torch"`` — CLIP-family checkpoints through transformers (:class:`ClipBackend`);
* ``"onnx"`` / ``"onnx-int8"`` — the same checkpoints exported to ONNX and run by ONNX Runtime
  in float32 or with the image tower quantised to int8 (:mod:`clipsieve.backends.onnx`).

Example:
    >>> enc = create_encoder("torch", "openai/clip-vit-base-patch32", device="cpu")
    >>> enc.encode_texts(["a photo of a cat"]).shape
    (1, 512)
"""

from clipsieve.backends._registry import (
    EncoderEntry,
    create_encoder,
    encoder_entry,
    is_encoder,
    list_encoders,
    register_encoder,
)
from clipsieve.backends.base import Encoder
from clipsieve.backends.clip import (
    ClipBackend,
    load_preprocess,
    read_logit_scale,
    resolve_model_id,
)


def _torch_encoder(model: str, *, device: str = "auto", precision: str = "auto",
                   threads: int | None = None) -> Encoder:
    return ClipBackend(model, device=device, precision=precision, threads=threads)


register_encoder(
    "torch",
    _torch_encoder,
    read_preprocess=load_preprocess,
    read_logit_scale=read_logit_scale,
    resolve_model_id=resolve_model_id,
    description="CLIP-family checkpoints (CLIP, SigLIP) through transformers and PyTorch",
)

def _onnx_encoder(model: str, *, device: str = "auto", precision: str = "auto",
                  **options: object) -> Encoder:
    from clipsieve.backends.onnx import OnnxEncoder

    return OnnxEncoder(model, device=device, precision=precision, **options)  # type: ignore[arg-type]


def _onnx_int8_encoder(model: str, *, device: str = "auto", precision: str = "auto",
                       **options: object) -> Encoder:
    from clipsieve.backends.onnx import OnnxInt8Encoder

    return OnnxInt8Encoder(model, device=device, precision=precision, **options)  # type: ignore[arg-type]


# onnxruntime is imported only when one of these is created (the ``onnx`` extra)
register_encoder(
    "onnx",
    _onnx_encoder,
    read_preprocess=load_preprocess,
    read_logit_scale=read_logit_scale,
    resolve_model_id=resolve_model_id,
    description="the same checkpoints exported to ONNX and run by ONNX Runtime, float32",
)
register_encoder(
    "onnx-int8",
    _onnx_int8_encoder,
    read_preprocess=load_preprocess,
    read_logit_scale=read_logit_scale,
    resolve_model_id=resolve_model_id,
    description="ONNX Runtime with the image tower quantised to dynamic int8 (fastest on CPUs)",
)

__all__ = [
    "ClipBackend",
    "Encoder",
    "EncoderEntry",
    "create_encoder",
    "encoder_entry",
    "is_encoder",
    "list_encoders",
    "load_preprocess",
    "read_logit_scale",
    "register_encoder",
    "resolve_model_id",
]
