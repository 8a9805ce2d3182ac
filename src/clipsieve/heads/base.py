"""The head protocol (defined in :mod:`clipsieve.protocols`, below the pipeline; re-exported)."""

from clipsieve.protocols import (
    RESULT_FIELDS,
    BuiltHead,
    Head,
    TextSource,
    embed_captions,
    set_field,
)

__all__ = ["RESULT_FIELDS", "BuiltHead", "Head", "TextSource", "embed_captions", "set_field"]
