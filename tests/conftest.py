"""Shared fixtures: tiny random CLIP checkpoints and real photos, built once per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# No model hub is reachable in tests: fail fast instead of retrying the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# ONNX exports and cached prompt embeddings go to a folder of this test session, not the user's
os.environ.setdefault("CLIPSIEVE_CACHE_DIR", tempfile.mkdtemp(prefix="clipsieve-cache-"))

PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket")


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP checkpoint folder (32-pixel input), loaded like any real one."""
    from clipsieve.testing import build_random_clip

    return build_random_clip(tmp_path_factory.mktemp("tiny-clip"), "tiny")


@pytest.fixture(scope="session")
def clip224(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random CLIP with the real 224-pixel input and preprocessing."""
    from clipsieve.testing import build_random_clip

    return build_random_clip(tmp_path_factory.mktemp("clip-224"), "small-224")


def photo_array(name: str) -> np.ndarray:
    from skimage import data

    arr = getattr(data, name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return arr[..., :3]


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real photos from scikit-image written as JPEG files."""
    folder = tmp_path_factory.mktemp("photos")
    out = {}
    for name in PHOTO_NAMES:
        path = folder / f"{name}.jpg"
        Image.fromarray(photo_array(name)).save(path, quality=92)
        out[name] = path
    return out


@pytest.fixture(scope="session")
def big_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real multi-megapixel JPEG (the astronaut upscaled to 2400×2400)."""
    path = tmp_path_factory.mktemp("big") / "astronaut-big.jpg"
    im = Image.fromarray(photo_array("astronaut")).resize((2400, 2400), Image.Resampling.BICUBIC)
    im.save(path, quality=90)
    return path
