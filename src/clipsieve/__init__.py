"""clipsieve: moderate, score and filter images and videos with CLIP.

Quick start::

    from clipsieve import Analyzer
    an = Analyzer(model="openai/clip-vit-base-patch32")
    for result in an.scan(["photos/"]):
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
from clipsieve.media.decode import DecodeLimits
from clipsieve.pipeline import Analyzer
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
    "HeadError",
    "ItemResult",
    "ModelError",
    "PolicyError",
    "Store",
    "StoreError",
    "__version__",
    "samples_dir",
]
