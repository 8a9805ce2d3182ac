"""Find input files under the paths a user gives: recursive, sorted, safe against symlink loops."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

#: File name endings (lower case) treated as images when walking folders.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".dib",
        ".tif", ".tiff", ".heic", ".heif", ".avif",
    }
)


def iter_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    extensions: frozenset[str] = IMAGE_EXTENSIONS,
    recursive: bool = True,
) -> Iterator[str]:
    """Yield the files named by ``paths``, walking folders in sorted order.

    Within a folder, files and sub-folders are taken in name order together, so the files
    come out sorted by their full paths (``a/x.jpg`` before ``b.jpg``).

    A path that names a file is yielded as given, whatever its extension (so that a wrongly
    named file becomes a per-item error rather than silently vanishing). A missing path is
    yielded too, and fails later with ``io_error``. Inside folders only files whose
    extension is in ``extensions`` are yielded, and hidden files and folders (names starting
    with a dot, such as macOS ``._IMG_0001.jpg`` metadata files) are skipped; symbolic links are followed, but a folder
    already visited (same device and inode) is never entered twice, so link loops end.
    Nothing is skipped in silence: an entry with an image extension that cannot be checked
    (a symbolic link loop ``x.jpg -> x.jpg``, a FIFO, a device) is yielded like a file, and
    a folder that cannot be listed is yielded itself, so that each fails later with
    ``io_error`` and a reason. Each file is yielded at most once.
    """
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    for raw in paths:
        path = os.fspath(raw)
        if os.path.isdir(path):
            for found in _walk(path, extensions, recursive, seen_dirs):
                key = os.path.realpath(found)
                if key not in seen_files:
                    seen_files.add(key)
                    yield found
        else:
            key = os.path.realpath(path)
            if key not in seen_files:
                seen_files.add(key)
                yield path


def _walk(
    top: str, extensions: frozenset[str], recursive: bool, seen_dirs: set[tuple[int, int]]
) -> Iterator[str]:
    try:
        st = os.stat(top)
    except OSError:
        yield top  # vanished or unreadable meanwhile: it gets a line saying why
        return
    ident = (st.st_dev, st.st_ino)
    if ident in seen_dirs:
        return
    seen_dirs.add(ident)
    try:
        with os.scandir(top) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        # A folder that cannot be listed (permission denied…) is never skipped in silence:
        # it is yielded itself, and reading it fails with io_error "cannot read folder".
        yield top
        return
    for entry in entries:  # files and folders interleaved: the order of the full paths
        if entry.name.startswith("."):  # hidden: .git, .thumbnails, macOS ._IMG.jpg forks
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=True)
        except OSError:  # a symbolic link loop, or a target that cannot be checked
            is_dir = False
        if is_dir:
            if recursive:
                yield from _walk(entry.path, extensions, recursive, seen_dirs)
        elif os.path.splitext(entry.name)[1].lower() in extensions:
            yield entry.path
