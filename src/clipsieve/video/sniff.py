"""Tell videos from images by their first bytes (content sniffing), not by their names.

``clipsieve scan`` routes each file by :func:`media_kind`: ``"video"`` for containers PyAV reads
(MP4/MOV, Matroska/WebM, AVI, MPEG-TS/PS, FLV, Ogg) and for *animated* GIF and WebP, ``"image"``
for everything else (including HEIC/AVIF, which share MP4's ``ftyp`` box, and single-frame GIF
and WebP). Only a few header bytes are read; for a GIF, Pillow checks whether a second frame
exists.
"""

from __future__ import annotations

import os
import stat

#: File name endings (lower case) that folder walks treat as videos (besides animated GIF/WebP,
#: whose endings are image endings already). A file named on the command line is sniffed
#: whatever its name.
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
        ".m2ts", ".mts", ".flv", ".ogv", ".3gp", ".3g2",
    }
)

#: ``ftyp`` major brands of still-image formats in the ISO base media file format.
_IMAGE_BRANDS = frozenset(
    {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis",
     b"jxl ", b"avci"}
)
_QT_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


def sniff_bytes(head: bytes) -> str | None:
    """The container family named by a file's first bytes (at least 32), or ``None``.

    Returns one of ``"mp4"``, ``"matroska"``, ``"avi"``, ``"mpegts"``, ``"mpegps"``, ``"flv"``,
    ``"ogg"``, ``"gif"``, ``"webp"`` (animated) or ``None`` (an image or unknown).
    """
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return None if head[8:12] in _IMAGE_BRANDS else "mp4"
    if len(head) >= 8 and head[4:8] in _QT_ATOMS:
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        # VP8X chunk with the animation flag (bit 1 of the flags byte)
        if head[12:16] == b"VP8X" and len(head) > 20 and head[20] & 0x02:
            return "webp"
        return None
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "mpegps"
    if head[:3] == b"FLV":
        return "flv"
    if head[:4] == b"OggS":
        return "ogg"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "mpegts"
    return None


def media_kind(path: str | os.PathLike[str]) -> str:
    """``"video"`` or ``"image"`` for a file, from its content.

    Unreadable or unknown files are ``"image"``: the image decoder then reports why.
    An animated GIF (more than one frame) and an animated WebP are ``"video"``.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return "image"  # a FIFO or device is never opened: the image reader says why
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as fh:
            head = fh.read(512)
    except (OSError, ValueError):
        return "image"
    family = sniff_bytes(head)
    if family is None:
        return "image"
    if family == "gif":
        return "video" if _gif_is_animated(path) else "image"
    return "video"


def _gif_is_animated(path: str | os.PathLike[str]) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return bool(getattr(im, "is_animated", False))
    except Exception:  # noqa: BLE001 - a broken GIF is left to the image decoder
        return False
