"""clipsieve: moderate, score and filter images and videos with CLIP.

Quick start::

    from clipsieve import Analyzer, build_heads
    an = Analyzer(model="openai/clip-vit-base-patch32")
    heads = build_heads(an, policy="default", quality=True, labels=["cat", "dog"])
    for result in an.scan(["photos/"], heads=heads):         # files and folders
        print(result.to_dict())
    results = an.analyze([pil_image, array], heads=heads)   # in-memory images
"""

from typing import TYPE_CHECKING, Any

from clipsieve._version import __version__  # noqa: E402
from clipsieve.errors import (
    ClipsieveError,
    ConfigError,
    DecodeError,
    HeadError,
    ModelError,
    PolicyError,
    StoreError,
)

# Everything else loads on first use (PEP 562), so that `clipsieve --help` and a scan answered
# from the store do not pay for importing the whole library.
_LAZY = {
    "Encoder": "clipsieve.backends",
    "create_encoder": "clipsieve.backends",
    "list_encoders": "clipsieve.backends",
    "register_encoder": "clipsieve.backends",
    "build_heads": "clipsieve.factory",
    "Head": "clipsieve.heads",
    "LabelsHead": "clipsieve.heads",
    "ProbeHead": "clipsieve.heads",
    "DecodeLimits": "clipsieve.media.decode",
    "ModerationHead": "clipsieve.moderation",
    "load_policy": "clipsieve.moderation",
    "Analyzer": "clipsieve.pipeline",
    "TextEmbedder": "clipsieve.pipeline",
    "QualityHead": "clipsieve.quality",
    "Store": "clipsieve.store",
    "ErrorInfo": "clipsieve.types",
    "ItemResult": "clipsieve.types",
}

if TYPE_CHECKING:
    from clipsieve.backends import Encoder, create_encoder, list_encoders, register_encoder
    from clipsieve.factory import build_heads
    from clipsieve.heads import Head, LabelsHead, ProbeHead
    from clipsieve.media.decode import DecodeLimits
    from clipsieve.moderation import ModerationHead, load_policy
    from clipsieve.pipeline import Analyzer, TextEmbedder
    from clipsieve.quality import QualityHead
    from clipsieve.store import Store
    from clipsieve.types import ErrorInfo, ItemResult


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'clipsieve' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
