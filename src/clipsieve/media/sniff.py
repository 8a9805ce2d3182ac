"""What a file is, from its first bytes: never from its name or a declared content type.

:func:`sniff` reads the magic numbers of the image formats clipsieve decodes and of the
common video containers, and returns a :class:`Sniffed` kind (``"image"`` or ``"video"``) with
a format name and a MIME type, or ``None`` for anything else. 64 bytes are enough
(:data:`SNIFF_BYTES`).

ISO base media files (MP4, MOV, HEIC, AVIF) share the ``ftyp`` box; its major and compatible
brands tell still images (``heic``, ``mif1``, ``avif``…) from movies (``isom``, ``mp42``,
``qt  ``…). Animated GIF and WebP are images here (their first frame is analysed).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SNIFF_BYTES", "Sniffed", "sniff"]

#: Bytes of the head of a file that :func:`sniff` looks at.
SNIFF_BYTES = 64

_IMAGE_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1",
                           b"msf1", b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"})
_VIDEO_BRANDS = frozenset({b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42",
                           b"avc1", b"dash", b"M4V ", b"M4VP", b"mmp4", b"qt  ", b"3gp4",
                           b"3gp5", b"3gp6", b"3g2a", b"f4v ", b"MSNV", b"XAVC"})


@dataclass(frozen=True)
class Sniffed:
    """The kind and format of some bytes.

    Attributes:
        kind: ``"image"`` or ``"video"``.
        format: a short name: ``jpeg``, ``png``, ``gif``, ``webp``, ``bmp``, ``tiff``,
            ``heif``, ``avif``; ``mp4``, ``mov``, ``matroska`` (MKV and WebM), ``avi``.
        mime: the matching MIME type.
    """

    kind: str
    format: str
    mime: str


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
        return Sniffed("image", "webp", "image/webp")
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
    return None


def _iso_bmff(head: bytes) -> Sniffed | None:
    size = int.from_bytes(head[:4], "big")
    end = min(len(head), size if size >= 16 else len(head))
    major = head[8:12]
    brands = {major} | {head[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _IMAGE_BRANDS or (brands & _IMAGE_BRANDS and not brands & _VIDEO_BRANDS):
        if major in (b"avif", b"avis") or (b"avif" in brands and not brands & _HEIF_BRANDS):
            return Sniffed("image", "avif", "image/avif")
        return Sniffed("image", "heif", "image/heif")
    if major == b"qt  ":
        return Sniffed("video", "mov", "video/quicktime")
    if brands & _VIDEO_BRANDS:
        return Sniffed("video", "mp4", "video/mp4")
    return None
