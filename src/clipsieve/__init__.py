"""clipsieve: moderate, score and filter images and videos with CLIP.

Quick start::

    from clipsieve import Analyzer, build_heads
    an = Analyzer(model="openai/clip-vit-base-patch32")
    heads = build_heads(an, policy="default", quality=True, labels=["cat", "dog"])
    for result in an.scan(["photos/"], heads=heads):         # files and folders
        print(result.to_dict())
    results = an.analyze([pil_image, array], heads=heads)   # in-memory images
"""

from clipsieve._version import __version__  # noqa: E402
from clipsieve.backends import Encoder, create_encoder, list_encoders, register_encoder
from clipsieve.errors import (
    ClipsieveError,
    ConfigError,
    DecodeError,
    HeadError,
    ModelError,
    PolicyError,
    StoreError,
)
from clipsieve.factory import build_heads
from clipsieve.heads import Head, LabelsHead, ProbeHead
from clipsieve.media.decode import DecodeLimits
from clipsieve.moderation import ModerationHead, load_policy
from clipsieve.pipeline import Analyzer, TextEmbedder
from clipsieve.quality import QualityHead
from clipsieve.store import Store
from clipsieve.types import ErrorInfo, ItemResult


def samples_dir() -> str:
    """Folder of the sample photos shipped with the package."""
    from pathlib import Path

    return str(Path(__file__).parent / "samples")


__all__ = [
    "Analyzer",
    "ClipsieveError",
    "ConfigError",
    "DecodeError",
    "DecodeLimits",
    "Encoder",
    "ErrorInfo",
    "Head",
    "HeadError",
    "ItemResult",
    "LabelsHead",
    "ModelError",
    "ModerationHead",
    "PolicyError",
    "ProbeHead",
    "QualityHead",
    "Store",
    "StoreError",
    "TextEmbedder",
    "__version__",
    "build_heads",
    "create_encoder",
    "list_encoders",
    "load_policy",
    "register_encoder",
    "samples_dir",
]
