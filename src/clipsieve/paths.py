"""File names that are not valid UTF-8: how they are shown, written as JSON and stored.

Python names such files with surrogate escapes (``os.fsdecode(b"a\\xff.jpg")`` is
``"a\\udcff.jpg"``), which no UTF-8 writer accepts. The rule everywhere in clipsieve:

- **Text a person reads** (tables, messages, the HTML report, CSV manifests) shows the name
  with each byte that is not UTF-8 replaced by U+FFFD (``a�.jpg``): :func:`display`.
- **JSON** (scan output, exports, stored results) stays valid UTF-8 and lossless: ``path`` is the
  displayed name and, only for such names, ``path_bytes`` holds the name's raw bytes in base64
  (:func:`json_fields`); :func:`from_json` gives the real path back.
- **The SQLite store** keeps a valid UTF-8 path as TEXT and any other as a BLOB of its raw
  bytes (:func:`to_db` / :func:`from_db`), so lookups, moves and undo work for every name.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")


def is_clean(path: str) -> bool:
    """Whether ``path`` encodes to UTF-8 as it is (no surrogate escapes)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def display(path: str | os.PathLike[str]) -> str:
    """The name for people: bytes that are not UTF-8 become U+FFFD (one per byte)."""
    text = os.fspath(path)
    if is_clean(text):
        return text
    try:
        raw = os.fsencode(text)
    except UnicodeEncodeError:  # not a file-system name at all: replace any surrogate
        return _SURROGATE.sub("\ufffd", text)
    return raw.decode("utf-8", errors="replace")


def clean_text(text: str) -> str:
    """Any string made safe for a UTF-8 writer (lone surrogates become U+FFFD)."""
    return text if is_clean(text) else _SURROGATE.sub("\ufffd", text)


def json_fields(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{"path": display(path)}``, plus ``"path_bytes"`` (base64 of the raw name) when the
    name is not valid UTF-8."""
    text = os.fspath(path)
    if is_clean(text):
        return {"path": text}
    return {
        "path": display(text),
        "path_bytes": base64.b64encode(os.fsencode(text)).decode("ascii"),
    }


def from_json(d: Mapping[str, Any]) -> str:
    """The real path of a JSON result (``path_bytes`` when present, else ``path``)."""
    raw = d.get("path_bytes")
    if isinstance(raw, str) and raw:
        return os.fsdecode(base64.b64decode(raw))
    return str(d.get("path", ""))


def to_db(path: str) -> str | bytes:
    """How the store keeps a path: TEXT when valid UTF-8, else a BLOB of its raw bytes."""
    return path if is_clean(path) else os.fsencode(path)


def from_db(value: Any) -> Any:
    """The inverse of :func:`to_db` (other values pass through)."""
    return os.fsdecode(bytes(value)) if isinstance(value, (bytes, bytearray)) else value


def with_path(d: Mapping[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
    """A copy of the JSON result ``d`` naming ``path`` instead (``path`` first, as in
    :func:`json_fields`; a stale ``path_bytes`` is dropped)."""
    rest = {k: v for k, v in d.items() if k not in ("path", "path_bytes")}
    return {**json_fields(path), **rest}
