"""What a file is, from its first bytes: never from its name or a declared content type.

The one content sniffer of clipsieve, for images and videos alike:

* :func:`sniff` reads the magic numbers of the image formats clipsieve decodes and of the video
  containers PyAV reads, and returns a :class:`Sniffed` kind (``"image"`` or ``"video"``) with a
  format name and a MIME type, or ``None`` for anything else. The service routes uploads by it
  and URL downloads are checked with it.
* :func:`sniff_bytes` is the container family the video decoder opens (``"mp4"``,
  ``"matroska"``… and ``"gif"``/``"webp"`` for animations), from the same tables.
* :func:`media_kind` routes a file for ``clipsieve scan``: ``"video"`` for video containers and
  *animated* GIF and WebP, ``"image"`` for everything else.

:data:`SNIFF_BYTES` bytes are enough for all three (an MPEG transport stream needs two packet
sync bytes, 188 apart).

ISO base media files (MP4, MOV, HEIC, AVIF) share the ``ftyp`` box; its major and compatible
brands tell still images (``heic``, ``mif1``, ``avif``…) from movies (``isom``, ``mp42``,
``qt  ``…). A brand in neither list is not a format :func:`sniff` vouches for (``None``), but a
file routed by :func:`sniff_bytes`/:func:`media_kind` goes to the video decoder, which reads
the many MP4 brands not listed here and otherwise names the cause (``no_video_stream`` for an
M4A audio file, ``not_a_video``). Animated GIF and WebP are images to :func:`sniff` (their first
frame is analysed when one is uploaded as an image) and videos to :func:`media_kind`.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

__all__ = ["SNIFF_BYTES", "VIDEO_EXTENSIONS", "Sniffed", "media_kind", "sniff", "sniff_bytes"]

#: Bytes of the head of a file that :func:`sniff`, :func:`sniff_bytes` and :func:`media_kind`
#: look at.
SNIFF_BYTES = 512

#: File name endings (lower case) that folder walks treat as videos (besides animated GIF/WebP,
#: whose endings are image endings already). A file named on the command line is sniffed
#: whatever its name.
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
        ".m2ts", ".mts", ".flv", ".ogv", ".3gp", ".3g2",
    }
)

#: ``ftyp`` brands of still-image formats in the ISO base media file format.
_IMAGE_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1",
                           b"msf1", b"avif", b"avis", b"avci", b"jxl "})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"avci"})
#: ``ftyp`` brands of movies.
_VIDEO_BRANDS = frozenset({b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42",
                           b"avc1", b"dash", b"M4V ", b"M4VP", b"mmp4", b"qt  ", b"3gp4",
                           b"3gp5", b"3gp6", b"3g2a", b"f4v ", b"MSNV", b"XAVC"})
#: Top-level atoms a QuickTime file without an ``ftyp`` box may start with.
_QT_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
#: :attr:`Sniffed.format` → the container family the video decoder names.
_FAMILY = {"mov": "mp4"}


@dataclass(frozen=True)
class Sniffed:
    """The kind and format of some bytes.

    Attributes:
        kind: ``"image"`` or ``"video"``.
        format: a short name: ``jpeg``, ``png``, ``gif``, ``webp``, ``bmp``, ``tiff``,
            ``heif``, ``avif``, ``jxl``; ``mp4``, ``mov``, ``matroska`` (MKV and WebM),
            ``avi``, ``mpegts``, ``mpegps``, ``flv``, ``ogg``.
        mime: the matching MIME type.
        animated: for WebP, whether the header sets the animation flag; ``None`` where the
            head cannot tell (GIF: only a second frame says so) or it does not apply.
    """

    kind: str
    format: str
    mime: str
    animated: bool | None = None


def sniff(head: bytes) -> Sniffed | None:
    """The kind of file that starts with ``head`` (at least :data:`SNIFF_BYTES` bytes when
    the file is that long), or ``None`` when it is neither an image nor a video we read."""
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image", "jpeg", "image/jpeg")
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image", "png", "image/png")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("image", "gif", "image/gif")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        # a VP8X chunk with the animation flag (bit 1 of its flags byte)
        animated = head[12:16] == b"VP8X" and len(head) > 20 and bool(head[20] & 0x02)
        return Sniffed("image", "webp", "image/webp", animated)
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Sniffed("video", "avi", "video/x-msvideo")
    if head[:2] == b"BM" and len(head) >= 14:
        return Sniffed("image", "bmp", "image/bmp")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return Sniffed("image", "tiff", "image/tiff")
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return Sniffed("video", "matroska", "video/webm" if b"webm" in head else "video/x-matroska")
    if head[4:8] == b"ftyp":
        return _iso_bmff(head)
    if len(head) >= 8 and head[4:8] in _QT_ATOMS:
        return Sniffed("video", "mov", "video/quicktime")
    if head.startswith(b"\x00\x00\x01\xba"):
        return Sniffed("video", "mpegps", "video/mpeg")
    if head[:3] == b"FLV":
        return Sniffed("video", "flv", "video/x-flv")
    if head[:4] == b"OggS":
        return Sniffed("video", "ogg", "video/ogg")
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return Sniffed("video", "mpegts", "video/mp2t")
    return None


def _iso_bmff(head: bytes) -> Sniffed | None:
    size = int.from_bytes(head[:4], "big")
    end = min(len(head), size if size >= 16 else len(head))
    major = head[8:12]
    brands = {major} | {head[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _IMAGE_BRANDS or (brands & _IMAGE_BRANDS and not brands & _VIDEO_BRANDS):
        if major in (b"avif", b"avis") or (b"avif" in brands and not brands & _HEIF_BRANDS):
            return Sniffed("image", "avif", "image/avif")
        if major == b"jxl ":
            return Sniffed("image", "jxl", "image/jxl")
        return Sniffed("image", "heif", "image/heif")
    if major == b"qt  ":
        return Sniffed("video", "mov", "video/quicktime")
    if brands & _VIDEO_BRANDS:
        return Sniffed("video", "mp4", "video/mp4")
    return None


def sniff_bytes(head: bytes) -> str | None:
    """The container family the video decoder opens, from a file's first bytes, or ``None``.

    Returns one of ``"mp4"`` (MP4 and QuickTime), ``"matroska"``, ``"avi"``, ``"mpegts"``,
    ``"mpegps"``, ``"flv"``, ``"ogg"``, ``"gif"`` (animated or not: the head cannot tell),
    ``"webp"`` (animated only) or ``None`` (a still image, or unknown). An ``ftyp`` box of a
    brand :func:`sniff` does not know is ``"mp4"``: PyAV reads it or names the cause.
    """
    got = sniff(head)
    if got is None:
        return "mp4" if len(head) >= 12 and head[4:8] == b"ftyp" else None
    if got.kind == "video":
        return _FAMILY.get(got.format, got.format)
    if got.format == "gif":
        return "gif"
    if got.format == "webp" and got.animated:
        return "webp"
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
            head = fh.read(SNIFF_BYTES)
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
