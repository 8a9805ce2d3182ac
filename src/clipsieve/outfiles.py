"""Writing output files safely: atomically where that is possible, never onto a device node.

:func:`atomic_text` writes through a temporary file in the same folder and renames it over the
target, so a reader never sees half a file and a failed write leaves the old file intact. A
target that exists and is not a regular file (``/dev/stdout``, ``/dev/null``, ``/dev/full``, a
FIFO) is written directly instead: renaming over it would replace the device node.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import IO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_text(path: str | os.PathLike[str], *, newline: str | None = None) -> Iterator[IO[str]]:
    """A text file (UTF-8) that replaces ``path`` only once the block ends without error."""
    target = os.fspath(path)
    try:
        st: os.stat_result | None = os.stat(target)
    except OSError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        with open(target, "w", encoding="utf-8", newline=newline) as fh:
            yield fh
        return
    folder = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".clipsieve-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as fh:
            yield fh
        os.chmod(tmp, stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
