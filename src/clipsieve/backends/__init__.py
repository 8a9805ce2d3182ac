"""Model backends: encoders that turn pixels and texts into embeddings, and their registry.

* :class:`Encoder` — the protocol (``kind``, ``model_id``, ``device``, ``precision``,
  ``preprocess``, ``logit_scale``, ``encode_pixels``, ``encode_texts``);
* :func:`create_encoder` / :func:`register_encoder` / :func:`list_encoders` — the registry;
* ``"torch"`` — CLIP-family checkpoints through transformers (:class:`ClipBackend`).

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


def _torch_encoder(model: str, *, device: str = "auto", precision: str = "auto") -> Encoder:
    return ClipBackend(model, device=device, precision=precision)


register_encoder(
    "torch",
    _torch_encoder,
    read_preprocess=load_preprocess,
    read_logit_scale=read_logit_scale,
    resolve_model_id=resolve_model_id,
    description="CLIP-family checkpoints (CLIP, SigLIP) through transformers and PyTorch",
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
