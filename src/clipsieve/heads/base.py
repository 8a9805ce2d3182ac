"""The protocol every head follows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from clipsieve.pipeline import Analyzer
    from clipsieve.types import ItemResult


@runtime_checkable
class Head(Protocol):
    """Something that turns a batch of embeddings into one result field per item.

    Attributes:
        field: the result attribute it fills (``"moderation"``, ``"quality"``, ``"labels"``)
            or any other name, which lands in :attr:`ItemResult.extra`.
    """

    field: str

    def apply(
        self, items: list[ItemResult], embeddings: np.ndarray, analyzer: Analyzer
    ) -> None:
        """Set ``field`` on each of ``items`` (all with status ok); rows of ``embeddings`` match."""
        ...
