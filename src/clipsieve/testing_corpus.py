"""A corpus of hostile and odd inputs, generated (nothing vendored), for tests and benchmarks.

:func:`odd_files` gives the bytes of generated equivalents of the odd files in Pillow's own
test corpus (crafted headers, unsupported variants, truncated streams, header bombs, odd
modes, bogus metadata). :func:`build_nasty_corpus` writes them, plus file-system oddities
(FIFOs, device links, sockets, symbolic link loops, unreadable files and folders, names that
are not UTF-8 or hold newlines and quotes), into a folder and says what ``clipsieve scan``
must report for each entry.
"""

from __future__ import annotations

import io
import os
import socket
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from clipsieve.errors import ERROR_CODES

# -- generated odd files -------------------------------------------------------------------


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _photo(size: int = 64) -> Image.Image:
    """A smooth colourful picture (compresses like a photo, unlike flat colour)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    arr = np.stack([x * 255, y * 255, (1 - x) * y * 255], axis=-1).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def _tiff_ifd(entries: list[tuple[int, int, int, int]], next_ifd: int = 0) -> bytes:
    return (struct.pack("<H", len(entries))
            + b"".join(struct.pack("<HHII", *e) for e in entries)
            + struct.pack("<I", next_ifd))


def _tiff_no_dimensions() -> bytes:
    """A TIFF whose only page lacks ImageWidth and ImageLength."""
    entries = [(258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, 8), (279, 4, 1, 1)]
    return b"II*\x00" + struct.pack("<I", 8) + _tiff_ifd(entries)


def _tiff_bad_second_page() -> bytes:
    """A valid 4×4 grey first page, then a page without dimensions (Pillow's
    ``TypeError: Missing dimensions`` when anything seeks to it)."""
    pixels = bytes(range(16))
    first_at = 8 + len(pixels)
    first = [(256, 3, 1, 4), (257, 3, 1, 4), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
             (273, 4, 1, 8), (277, 3, 1, 1), (278, 3, 1, 4), (279, 4, 1, 16)]
    second_at = first_at + 2 + 12 * len(first) + 4
    second = [(258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, 8), (279, 4, 1, 1)]
    return (b"II*\x00" + struct.pack("<I", first_at) + pixels
            + _tiff_ifd(first, second_at) + _tiff_ifd(second))


def _dds(fourcc: bytes) -> bytes:
    pf = struct.pack("<II4sIIIII", 32, 0x4, fourcc, 0, 0, 0, 0, 0)
    hdr = (struct.pack("<IIIIIII", 124, 0x1007, 4, 4, 0, 0, 0) + b"\0" * 44 + pf
           + struct.pack("<IIIII", 0x1000, 0, 0, 0, 0))
    return b"DDS " + hdr + b"\0" * 64


def _bmp(compression: int, bits: int, width: int = 4, height: int = 4) -> bytes:
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, compression, 0, 2835, 2835, 0, 0)
    body = b"\0" * 64
    head = struct.pack("<IHHI", 14 + len(dib) + len(body), 0, 0, 14 + len(dib))
    return b"BM" + head + dib + body


def _gif_header(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b"\x2c" + struct.pack(
        "<HHHHB", 0, 0, width, height, 0) + b"\x08"


def _jpeg_bomb() -> bytes:
    """A JPEG whose frame header claims 65500×65500 pixels."""
    data = bytearray(_save(_photo(16), "JPEG"))
    i = 2
    while i < len(data):
        marker = data[i + 1]
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC2):
            data[i + 5 : i + 9] = struct.pack(">HH", 65500, 65500)
            break
        i += 2 + length
    return bytes(data)


def _many_frames_gif(n: int) -> bytes:
    frames = [Image.new("P", (8, 8), i % 256) for i in range(n)]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=10)


def _many_pages_tiff(n: int) -> bytes:
    pages = [Image.new("L", (8, 8), i % 256) for i in range(n)]
    return _save(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def _bogus_exif_jpeg() -> bytes:
    """A JPEG whose Exif segment is garbage: a TIFF header pointing at a broken directory."""
    raw = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff" + b"\x12\x01\x03\x00" * 8
    data = _save(_photo(), "JPEG")
    seg = b"\xff\xe1" + struct.pack(">H", len(raw) + 2) + raw
    return data[:2] + seg + data[2:]


def _bogus_icc_png() -> bytes:
    png = _save(_photo(), "PNG")
    iccp = b"bogus\x00\x00" + zlib.compress(b"this is not an ICC profile" * 10)
    pos = png.index(b"IDAT") - 4
    return png[:pos] + _png_chunk(b"iCCP", iccp) + png[pos:]


def _bogus_icc_jpeg() -> bytes:
    return _save(_photo(), "JPEG", icc_profile=b"\x00\x00\x00\x10not-a-profile-at-all")


def _float_nan_inf_tiff() -> bytes:
    arr = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    arr[0, :8] = np.nan
    arr[1, :8] = np.inf
    arr[2, :8] = -np.inf
    return _save(Image.fromarray(arr), "TIFF")


def _truncate(data: bytes) -> bytes:
    return data[: max(len(data) * 2 // 3, 1)]


@lru_cache(maxsize=1)
def odd_files() -> dict[str, bytes]:
    """Name → bytes of generated odd files (the equivalents of Pillow's odd test images)."""
    import clipsieve.media.decode  # noqa: F401 - registers the HEIF opener when installed

    photo = _photo()
    out: dict[str, bytes] = {
        # unsupported variants and crafted headers
        "bmp_unsupported_compression": _bmp(99, 24),
        "bmp_unsupported_depth": _bmp(0, 7),
        "dds_unknown_fourcc": _dds(b"ZZZZ"),
        "eps_needs_ghostscript": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
                                  b"%%EndComments\nshowpage\n"),
        "tiff_no_dimensions": _tiff_no_dimensions(),
        "tiff_bad_second_page": _tiff_bad_second_page(),
        "png_bad_header_crc": _png_header_only(16, 16)[:29] + b"\0\0\0\0",
        "random_bytes": bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
        # truncated streams
        "png_truncated": _truncate(_save(photo, "PNG")),
        "jpeg_truncated": _truncate(_save(_photo(256), "JPEG", quality=95)),
        "gif_truncated": _truncate(_save(_photo(128).convert("P"), "GIF")),
        # header bombs
        "png_header_bomb": _png_header_only(100_000, 100_000),
        "gif_header_bomb": _gif_header(65535, 65535),
        "bmp_header_bomb": _bmp(0, 24, 200_000, 200_000),
        "jpeg_header_bomb": _jpeg_bomb(),
        # many frames or pages
        "gif_1000_frames": _many_frames_gif(1000),
        "tiff_500_pages": _many_pages_tiff(500),
        # odd modes
        "mode_i16": _save(Image.fromarray(
            np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16), "PNG"),
        "mode_i32": _save(Image.fromarray(
            np.arange(-2048, 2048, dtype=np.int32).reshape(64, 64)), "TIFF"),
        "mode_f_nan_inf": _float_nan_inf_tiff(),
        "mode_cmyk": _save(photo.convert("CMYK"), "JPEG"),
        "mode_cmyk_tiff": _save(photo.convert("CMYK"), "TIFF"),
        "mode_lab": _save(Image.new("LAB", (64, 64), (128, 150, 100)), "TIFF"),
        "mode_1": _save(photo.convert("1"), "PNG"),
        "mode_p_alpha": _save(photo.convert("P"), "PNG", transparency=3),
        "mode_la": _save(photo.convert("LA"), "PNG"),
        "mode_rgba_webp": _save(photo.convert("RGBA"), "WEBP"),
        # bogus metadata
        "bogus_exif": _bogus_exif_jpeg(),
        "bogus_icc": _bogus_icc_png(),
        "bogus_icc_jpeg": _bogus_icc_jpeg(),
    }
    return out


# -- the corpus on disk --------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One entry of the nasty corpus.

    Attributes:
        name: file name (``str``; may hold surrogate escapes of bytes that are not UTF-8).
        expect: ``"ok"``, an error code, ``"error"`` (any valid code), ``"io_error"``, or
            ``"skip"`` (hidden: walks skip it, as documented).
        note: what it is.
    """

    name: str
    expect: str
    note: str


def _formats() -> dict[str, bytes]:
    """A small valid file of each format clipsieve reads (by extension)."""
    import clipsieve.media.decode  # noqa: F401 - registers the HEIF opener when installed

    photo = _photo(96)
    out = {
        "jpg": _save(photo, "JPEG"), "png": _save(photo, "PNG"), "gif": _save(photo, "GIF"),
        "webp": _save(photo, "WEBP"), "bmp": _save(photo, "BMP"), "tiff": _save(photo, "TIFF"),
    }
    for ext, fmt in (("avif", "AVIF"), ("heic", "HEIF")):
        try:
            out[ext] = _save(photo, fmt)
        except (KeyError, OSError, ValueError):  # no encoder in this installation
            pass
    return out


def build_nasty_corpus(folder: str | Path, *, unprivileged: bool = True) -> list[Entry]:
    """Write the nasty corpus into ``folder`` (which must exist and be empty).

    Args:
        folder: where to write.
        unprivileged: the scan will run without root's powers, so a ``chmod 000`` file or
            folder really is unreadable (its entries expect ``io_error``); when ``False``
            those entries are left out.

    Returns:
        The entries, each with what ``clipsieve scan FOLDER`` must report for it.
    """
    root = Path(folder)
    entries: list[Entry] = []

    def put(name: str, data: bytes, expect: str, note: str) -> None:
        (root / name).write_bytes(data)
        entries.append(Entry(name, expect, note))

    formats = _formats()
    for ext, data in formats.items():
        put(f"ok.{ext}", data, "ok", f"a valid {ext}")
        put(f"empty.{ext}", b"", "not_an_image", f"zero-byte {ext}")
        put(f"truncated.{ext}", _truncate(data), "error", f"truncated {ext}")
    codes = {
        "bmp_unsupported_compression": ("bmp", "unsupported"),
        "bmp_unsupported_depth": ("bmp", "unsupported"),
        "dds_unknown_fourcc": ("jpg", "unsupported"),
        "eps_needs_ghostscript": ("jpg", "unsupported"),
        "tiff_no_dimensions": ("tif", "not_an_image"),
        "tiff_bad_second_page": ("tif", "ok"),
        "png_bad_header_crc": ("png", "not_an_image"),
        "random_bytes": ("webp", "not_an_image"),
        "png_truncated": ("png", "truncated"),
        "jpeg_truncated": ("jpg", "truncated"),
        "gif_truncated": ("gif", "truncated"),
        "png_header_bomb": ("png", "too_large"),
        "gif_header_bomb": ("gif", "too_large"),
        "bmp_header_bomb": ("bmp", "too_large"),
        "jpeg_header_bomb": ("jpg", "too_large"),
        "gif_1000_frames": ("gif", "ok"),
        "tiff_500_pages": ("tiff", "ok"),
        "mode_i16": ("png", "ok"),
        "mode_i32": ("tif", "ok"),
        "mode_f_nan_inf": ("tif", "ok"),
        "mode_cmyk": ("jpg", "ok"),
        "mode_cmyk_tiff": ("tif", "ok"),
        "mode_lab": ("tif", "ok"),
        "mode_1": ("png", "ok"),
        "mode_p_alpha": ("png", "ok"),
        "mode_la": ("png", "ok"),
        "mode_rgba_webp": ("webp", "ok"),
        "bogus_exif": ("jpg", "ok"),
        "bogus_icc": ("png", "ok"),
        "bogus_icc_jpeg": ("jpg", "ok"),
    }
    odd = odd_files()
    for name, (ext, expect) in codes.items():
        put(f"{name}.{ext}", odd[name], expect, name.replace("_", " "))
    # not images at all
    put("text.jpg", b"hello, this is text\n", "not_an_image", "text named .jpg")
    put("page.png", b"<!doctype html><html><body>x</body></html>", "not_an_image", "HTML named .png")
    put("doc.jpg", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", "not_an_image", "PDF named .jpg")
    put("archive.gif", zlib.compress(b"x" * 1000), "not_an_image", "zlib data named .gif")
    # names
    jpg = formats["jpg"]
    put("new\nline.jpg", jpg, "ok", "a newline in the name")
    put("quote\"d.jpg", jpg, "ok", "a double quote in the name")
    put("it's.jpg", jpg, "ok", "a single quote in the name")
    put("back\\slash.jpg", jpg, "ok", "a backslash in the name")
    put("-dash.jpg", jpg, "ok", "a name starting with a dash")
    put("tab\there.jpg", jpg, "ok", "a tab in the name")
    put("n" * 246 + ".jpg", jpg, "ok", "a 250-character name")
    put("émoji-\U0001f600.jpg", jpg, "ok", "non-ASCII UTF-8 name")
    put(os.fsdecode(b"latin1-\xe9t\xe9.jpg"), jpg, "ok", "a name that is not UTF-8 (Latin-1)")
    put(os.fsdecode(b"bad-\xff\xfe.png"), formats["png"], "ok", "a name with bytes 0xff 0xfe")
    put(os.fsdecode(b"broken-\xc3.jpg"), b"", "not_an_image", "empty file, name not UTF-8")
    # hidden (skipped by folder walks, as documented)
    put(".hidden.jpg", jpg, "skip", "hidden file")
    put("._ok.jpg", b"\x00\x05\x16\x07", "skip", "macOS resource fork")
    # file-system oddities
    os.mkfifo(root / "fifo.jpg")
    entries.append(Entry("fifo.jpg", "io_error", "a FIFO"))
    os.symlink("/dev/zero", root / "zero.jpg")
    entries.append(Entry("zero.jpg", "io_error", "symbolic link to /dev/zero"))
    os.symlink("/dev/null", root / "null.png")
    entries.append(Entry("null.png", "io_error", "symbolic link to /dev/null"))
    os.symlink("loop.jpg", root / "loop.jpg")
    entries.append(Entry("loop.jpg", "io_error", "a symbolic link to itself"))
    os.symlink("nowhere.jpg", root / "dangling.jpg")
    entries.append(Entry("dangling.jpg", "io_error", "a dangling symbolic link"))
    _make_socket(root / "sock.jpg")
    entries.append(Entry("sock.jpg", "io_error", "a Unix socket"))
    (root / ".pipes").mkdir()  # hidden: walks skip it, so the link is the only way in
    os.mkfifo(root / ".pipes" / "p")
    os.symlink(".pipes/p", root / "to-fifo.jpg")
    entries.append(Entry("to-fifo.jpg", "io_error", "a symbolic link to a FIFO"))
    (root / "folder.jpg").mkdir()
    (root / "folder.jpg" / "inside.png").write_bytes(formats["png"])
    entries.append(Entry("folder.jpg/inside.png", "ok", "an image in a folder named .jpg"))
    if unprivileged:
        put("locked.jpg", jpg, "io_error", "a file without read permission")
        os.chmod(root / "locked.jpg", 0)
        (root / "locked-dir").mkdir()
        (root / "locked-dir" / "x.jpg").write_bytes(jpg)
        os.chmod(root / "locked-dir", 0)
        entries.append(Entry("locked-dir", "io_error", "a sub-folder without read permission"))
    return entries


def _make_socket(path: Path) -> None:
    """Bind a Unix socket at ``path`` (through a short relative name: socket paths are
    limited to about 100 bytes)."""
    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.bind(path.name)
        finally:
            s.close()
    finally:
        os.chdir(cwd)


def check_expectation(entry: Entry, result: dict[str, object]) -> str | None:
    """Why ``result`` does not meet ``entry.expect`` (``None`` when it does)."""
    status = result.get("status")
    err = result.get("error")
    code = err.get("code") if isinstance(err, dict) else None
    if entry.expect == "ok":
        return None if status == "ok" else f"expected ok, got {code}: {err}"
    if status != "error" or code not in ERROR_CODES:
        return f"expected an error ({entry.expect}), got status {status!r}, code {code!r}"
    if entry.expect in ("error",) or entry.expect == code:
        return None
    return f"expected {entry.expect}, got {code}: {err}"




# -- one scan over the corpus ------------------------------------------------------------------


@dataclass
class CorpusRun:
    """The outcome of :func:`run_nasty_scan`.

    Attributes:
        entries: the corpus entries.
        results: entry name → its result line (entries without a line are missing).
        problems: every way the run broke the rules (empty when it passed).
        returncode: the scan's exit code.
        seconds: wall time of the scan.
        stderr: what the scan wrote on stderr.
        unprivileged: whether the scan ran without root's powers.
    """

    entries: list[Entry]
    results: dict[str, dict[str, object]]
    problems: list[str]
    returncode: int
    seconds: float
    stderr: str
    unprivileged: bool

    def counts(self) -> dict[str, int]:
        """How many entries ended which way (``ok``, each error code, ``skipped``)."""
        out: dict[str, int] = {"entries": len(self.entries), "lines": len(self.results)}
        for e in self.entries:
            r = self.results.get(e.name)
            if r is None:
                key = "skipped (hidden)" if e.expect == "skip" else "missing"
            elif r.get("status") == "ok":
                key = "ok"
            else:
                err = r.get("error")
                key = str(err.get("code")) if isinstance(err, dict) else "error?"
            out[key] = out.get(key, 0) + 1
        return out


def run_nasty_scan(model: str | Path, *, timeout: float = 600, workers: int | None = None
                   ) -> CorpusRun:
    """Build the nasty corpus and scan it in one ``clipsieve scan`` process.

    As root, the scan runs without root's powers over files (``setpriv``, see
    :func:`clipsieve.testing.unprivileged_prefix`) so that permissions apply; the corpus and a
    copy of the model live in a folder every user can read (in case that means ``nobody``).

    Args:
        model: a checkpoint folder (a tiny random CLIP is enough).
        timeout: seconds before the scan counts as hung (it is killed).
        workers: ``--workers`` for the scan.
    """
    import base64
    import json
    import shutil
    import subprocess
    import sys
    import time

    from clipsieve.testing import public_temp_dir, unprivileged_prefix

    prefix = unprivileged_prefix()
    top = public_temp_dir("clipsieve-corpus-")
    try:
        model_copy = top / "model"
        shutil.copytree(model, model_copy)
        for p in [model_copy, *model_copy.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        corpus = top / "corpus"
        corpus.mkdir()
        entries = build_nasty_corpus(corpus, unprivileged=prefix is not None)
        os.chmod(corpus, 0o755)
        for e in entries:
            p = corpus / e.name
            if p.is_file() and not p.is_symlink() and "locked" not in e.name:
                os.chmod(p, 0o644)
        args = [*(prefix or []), sys.executable, "-m", "clipsieve", "scan", str(corpus),
                "--no-store", "--model", str(model_copy), "--no-moderation", "--quiet"]
        if workers:
            args += ["--workers", str(workers)]
        env = {**os.environ, "HOME": str(top)}
        t0 = time.perf_counter()
        problems: list[str] = []
        try:
            proc = subprocess.run(args, capture_output=True, env=env, timeout=timeout)
            returncode, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            returncode, out, err = -1, exc.stdout or b"", exc.stderr or b""
            problems.append(f"the scan did not finish within {timeout:.0f} s (hung)")
        seconds = time.perf_counter() - t0
        try:
            text = out.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"stdout is not valid UTF-8: {exc}")
            text = out.decode("utf-8", errors="replace")
        by_name: dict[str, dict[str, object]] = {}
        for line in text.splitlines():
            row = json.loads(line)
            raw = row.get("path_bytes")
            path = os.fsdecode(base64.b64decode(raw)) if raw else str(row["path"])
            name = os.path.relpath(path, corpus)
            if name in by_name:
                problems.append(f"two lines for {name!r}")
            by_name[name] = row
        known = {e.name for e in entries}
        for name in by_name:
            if name not in known:
                problems.append(f"a line for {name!r}, which is no corpus entry")
        for e in entries:
            r = by_name.get(e.name)
            if e.expect == "skip":
                if r is not None:
                    problems.append(f"{e.name!r} ({e.note}) should be skipped, got a line")
                continue
            if r is None:
                problems.append(f"no line for {e.name!r} ({e.note})")
                continue
            why = check_expectation(e, r)
            if why:
                problems.append(f"{e.name!r} ({e.note}): {why}")
        stderr = err.decode("utf-8", errors="replace")
        if "internal error" in stderr or "Traceback" in stderr:
            problems.append(f"stderr: {stderr.strip()[-500:]}")
        expect_rc = 4  # some entries always fail
        if returncode != expect_rc and not any("hung" in p for p in problems):
            problems.append(f"exit code {returncode}, expected {expect_rc}")
        return CorpusRun(entries, by_name, problems, returncode, seconds, stderr,
                         prefix is not None)
    finally:
        for p in [top, *top.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
        shutil.rmtree(top, ignore_errors=True)
