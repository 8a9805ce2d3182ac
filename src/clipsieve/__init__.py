"""clipsieve: moderate, score and filter images and videos with CLIP.

Quick start::

    from clipsieve import Analyzer, LabelsHead, ModerationHead, QualityHead
    an = Analyzer(model="openai/clip-vit-base-patch32")
    heads = [ModerationHead("default"), QualityHead(), LabelsHead(["cat", "dog"])]
    for result in an.scan(["photos/"], heads=heads):
        print(result.to_dict())
"""

from clipsieve.errors import (
    ClipsieveError,
    ConfigError,
    DecodeError,
    HeadError,
    ModelError,
    PolicyError,
    StoreError,
)
from clipsieve.heads import Head, LabelsHead, ProbeHead
from clipsieve.media.decode import DecodeLimits
from clipsieve.moderation import ModerationHead, load_policy
from clipsieve.pipeline import Analyzer
from clipsieve.quality import QualityHead
from clipsieve.store import Store
from clipsieve.types import ErrorInfo, ItemResult

__version__ = "0.1.0"


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
    "__version__",
    "load_policy",
    "samples_dir",
]
