"""media/discover.py: recursive, sorted, symlink-loop-safe discovery."""

from __future__ import annotations

import os
from pathlib import Path

from clipsieve.media.discover import iter_files


def test_recursive_sorted_and_filtered(tmp_path: Path) -> None:
    for rel in ["b.jpg", "a.PNG", "notes.txt", "sub/z.webp", "sub/deeper/c.jpeg", "a_dir/x.gif"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    got = [os.path.relpath(p, tmp_path) for p in iter_files([tmp_path])]
    assert got == ["a.PNG", "a_dir/x.gif", "b.jpg", "sub/deeper/c.jpeg", "sub/z.webp"]
    flat = [os.path.relpath(p, tmp_path) for p in iter_files([tmp_path], recursive=False)]
    assert flat == ["a.PNG", "b.jpg"]


def test_symlink_loop_terminates_and_dedupes(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "img.jpg").write_bytes(b"x")
    os.symlink(tmp_path, tmp_path / "d" / "loop")
    os.symlink(tmp_path / "d" / "img.jpg", tmp_path / "alias.jpg")
    got = list(iter_files([tmp_path, tmp_path / "d"]))
    assert len(got) == 1  # the same file reached three ways is yielded once


def test_explicit_files_kept_even_with_odd_names_or_missing(tmp_path: Path) -> None:
    odd = tmp_path / "photo.dat"
    odd.write_bytes(b"x")
    missing = tmp_path / "gone.jpg"
    assert list(iter_files([odd, missing])) == [str(odd), str(missing)]


def test_hidden_files_and_folders_are_skipped_unless_named(tmp_path: Path) -> None:
    for rel in ["a.jpg", "._a.jpg", ".thumbs/t.jpg", "sub/.hidden.png", "sub/b.png"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    got = [os.path.relpath(p, tmp_path) for p in iter_files([tmp_path])]
    assert got == ["a.jpg", "sub/b.png"]
    assert list(iter_files([tmp_path / "._a.jpg"])) == [str(tmp_path / "._a.jpg")]


def test_symlink_loop_with_an_image_name_is_yielded_not_dropped(tmp_path: Path) -> None:
    """Issue #8 case 4: a link loop named x.jpg inside a folder must get a line."""
    (tmp_path / "a.jpg").write_bytes(b"x")
    os.symlink("loop.jpg", tmp_path / "loop.jpg")
    assert [Path(p).name for p in iter_files([tmp_path])] == ["a.jpg", "loop.jpg"]


def test_unreadable_sub_folder_is_yielded_itself(tmp_path: Path) -> None:
    """Issue #8 case 4: a sub-folder that cannot be listed is yielded (it then fails with
    io_error "cannot read folder"), never skipped in silence. Run without root's powers over files: root
    reads any folder."""
    import subprocess
    import sys

    from clipsieve.testing import public_temp_dir, unprivileged_prefix

    prefix = unprivileged_prefix()
    if prefix is None:
        import pytest

        pytest.skip("root without setpriv: cannot drop privileges to test permissions")
    top = public_temp_dir()
    try:
        (top / "a.jpg").write_bytes(b"x")
        (top / "locked").mkdir()
        (top / "locked" / "b.jpg").write_bytes(b"x")
        os.chmod(top / "locked", 0)
        code = ("import sys; from clipsieve.media.discover import iter_files; "
                "print('\\n'.join(iter_files([sys.argv[1]])))")
        out = subprocess.run([*prefix, sys.executable, "-c", code, str(top)],
                             capture_output=True, text=True, timeout=60, check=True)
        assert out.stdout.split("\n")[:2] == [str(top / "a.jpg"), str(top / "locked")]
    finally:
        os.chmod(top / "locked", 0o755)
        import shutil

        shutil.rmtree(top)
