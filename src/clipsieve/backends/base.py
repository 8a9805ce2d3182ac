"""The :class:`Encoder` protocol: what every model backend offers the rest of clipsieve."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from clipsieve.media.preprocess import Preprocess


@runtime_checkable
class Encoder(Protocol):
    """A loaded image-text model that turns pixels and texts into L2-normalised embeddings.

    Attributes:
        kind: the registry name it was created under (``"torch"``, later ``"onnx"``…).
        model_id: the resolved model id (a local folder's absolute path, or a hub id);
            recorded in results and used in cache keys.
        device: the device it computes on (``cpu``, ``cuda``…).
        precision: ``float32``, ``bfloat16`` or ``float16``.
        preprocess: PIL RGB image → ``(3, H, W)`` float32 (its ``version`` keys stored
            embeddings).
        logit_scale: the model's ``exp(logit_scale)`` (about 100 for CLIP).
    """

    kind: str
    model_id: str
    device: str
    precision: str
    preprocess: Preprocess
    logit_scale: float

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocessed pixels ``(N, 3, H, W)`` float32 → ``(N, D)`` float32, L2-normalised."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts → ``(N, D)`` float32, L2-normalised."""
        ...
