"""Vector helpers shared by the heads and moderation: L2 normalisation, prompt embedding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """``x`` with each row (last axis) scaled to unit length.

    Raises:
        ValueError: a zero vector.
    """
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("cannot L2-normalise a zero vector")
    return x / norms


def embed_prompts(encoder: Any, prompts: Sequence[str]) -> np.ndarray:
    """``encoder.embed_texts(prompts)`` as L2-normalised float64 rows, shape checked.

    Raises:
        ValueError: the encoder returned a wrong shape or a zero vector.
    """
    emb = np.asarray(encoder.embed_texts(prompts), dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] != len(prompts):
        raise ValueError(
            f"embed_texts returned shape {emb.shape} for {len(prompts)} prompts; "
            f"expected ({len(prompts)}, D)"
        )
    return l2_normalize(emb)
