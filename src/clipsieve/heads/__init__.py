"""Heads: cheap functions of stored embeddings (and pixel statistics) that fill result fields."""

from clipsieve.heads.base import Head

__all__ = ["Head"]
