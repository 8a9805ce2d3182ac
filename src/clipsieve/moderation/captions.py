"""Where the caption of an image comes from: one text for all, a JSONL input, or a sidecar file.

Three sources, looked up in this order for each image:

1. **An explicit caption for that file**, e.g. from a JSONL input whose lines are
   ``{"path": "img/001.jpg", "caption": "..."}`` (:func:`read_items_jsonl`).
2. **A default caption** for every image (``clipsieve moderate --caption TEXT``).
3. **A sidecar file**: ``photo.txt`` beside ``photo.jpg`` (same folder, same stem), read as
   UTF-8.

A missing, ``null`` or blank caption counts as none, so the lookup goes on to the next source.
Files are matched by absolute, normalised path, so ``./a.jpg`` and ``a.jpg`` are the same file.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from clipsieve.errors import ConfigError
from clipsieve.types import Caption

__all__ = [
    "MAX_SIDECAR_BYTES",
    "Caption",
    "CaptionSource",
    "InputItem",
    "read_items_jsonl",
]

#: Bytes read from a sidecar ``.txt`` at most (CLIP reads 77 tokens; more would be wasted).
MAX_SIDECAR_BYTES = 64 * 1024


@dataclass(frozen=True)
class InputItem:
    """One line of a JSONL input.

    Attributes:
        path: the image path, resolved against the JSONL file's folder when relative.
        caption: the caption, or ``None``.
        line: 1-based line number in the file.
    """

    path: str
    caption: str | None
    line: int


def _key(path: str | os.PathLike[str]) -> str:
    return os.path.normpath(os.path.abspath(os.fspath(path)))


def _clean(text: object) -> str | None:
    if not isinstance(text, str):
        return None
    text = text.strip()
    return text or None


class CaptionSource:
    """Finds the caption of each image (see the module docstring for the lookup order).

    Args:
        captions: explicit captions by image path.
        default: a caption for every image that has no explicit one.
        sidecars: look for ``<stem>.txt`` beside the image as the last resort.

    Example:
        >>> src = CaptionSource({"a.jpg": "a cat on a sofa"}, sidecars=False)
        >>> src.caption_for("a.jpg").text
        'a cat on a sofa'
    """

    def __init__(
        self,
        captions: Mapping[str, str | None] | None = None,
        default: str | None = None,
        *,
        sidecars: bool = True,
    ) -> None:
        self._explicit: dict[str, str] = {}
        for path, text in (captions or {}).items():
            cleaned = _clean(text)
            if cleaned is not None:
                self._explicit[_key(path)] = cleaned
        self.default = _clean(default)
        self.sidecars = sidecars

    @classmethod
    def from_items(
        cls, items: Iterable[InputItem], default: str | None = None, *, sidecars: bool = True
    ) -> CaptionSource:
        """Build a source from JSONL input items (their captions count as explicit)."""
        return cls({it.path: it.caption for it in items}, default, sidecars=sidecars)

    def add(self, path: str | os.PathLike[str], text: str | None) -> None:
        """Give ``path`` an explicit caption (e.g. from an input list or a tar shard)."""
        cleaned = _clean(text)
        if cleaned is not None:
            self._explicit[_key(path)] = cleaned

    def caption_for(self, path: str | os.PathLike[str]) -> Caption | None:
        """Return the caption of the image at ``path``, or ``None`` if it has none."""
        key = _key(path)
        if key in self._explicit:
            return Caption(self._explicit[key], "input")
        if self.default is not None:
            return Caption(self.default, "option")
        if self.sidecars:
            text = _read_sidecar(Path(key).with_suffix(".txt"))
            if text is not None:
                return Caption(text, "sidecar")
        return None


def _read_sidecar(path: Path) -> str | None:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None  # a FIFO or device named photo.txt is never opened (it could block)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read(MAX_SIDECAR_BYTES)
    except (OSError, ValueError):  # no sidecar (or unreadable: treated as none)
        return None
    return _clean(raw.decode("utf-8", errors="replace").lstrip("\ufeff"))


def read_items_jsonl(path: str | os.PathLike[str]) -> list[InputItem]:
    """Read a JSONL input: one object per line with ``path`` and optionally ``caption``.

    Blank lines are skipped. A relative ``path`` is taken relative to the JSONL file's folder
    (for ``-``, standard input, relative to the current folder). Other keys are ignored.

    Args:
        path: the JSONL file, or ``"-"`` for standard input.

    Returns:
        The items, in file order.

    Raises:
        ConfigError: the file cannot be read, or a line is not an object with a string ``path``
            and a string or null ``caption`` (the message names the line).
    """
    name = os.fspath(path)
    if name == "-":
        text, base = sys.stdin.read(), ""
    else:
        try:
            text = Path(name).read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise ConfigError(f"{name}: no such input file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{name}: cannot read input file: {exc}") from None
        base = os.path.dirname(name)
    items = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}:{lineno}: not valid JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise ConfigError(f"{name}:{lineno}: expected a JSON object with a \"path\" key")
        img = obj.get("path")
        if not isinstance(img, str) or not img.strip():
            raise ConfigError(f"{name}:{lineno}: \"path\" must be a non-empty string")
        caption = obj.get("caption")
        if caption is not None and not isinstance(caption, str):
            raise ConfigError(f"{name}:{lineno}: \"caption\" must be a string or null")
        if not os.path.isabs(img) and base:
            img = os.path.normpath(os.path.join(base, img))  # no "batch/../lib/…"
        items.append(InputItem(path=img, caption=caption, line=lineno))
    return items
