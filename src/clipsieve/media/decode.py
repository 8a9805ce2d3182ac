"""Safe image decoding.

Every decode checks the limits before the pixels are decoded (the header alone gives the size),
applies EXIF orientation, converts any Pillow mode to 8-bit RGB (alpha composited on
:data:`BACKGROUND`), and for JPEG asks libjpeg for a DCT-scaled image (``Image.draft``) no
smaller than the size the model needs, which is several times faster than a full decode of a
multi-megapixel photo.

Failures raise :class:`clipsieve.errors.DecodeError` with one of the reason codes in
:data:`clipsieve.errors.ERROR_CODES`.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from clipsieve.errors import DecodeError

try:  # HEIC/HEIF (and AVIF on older Pillow) through pillow-heif
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - a dependency, but decoding works without it
    pass

ImageFile.LOAD_TRUNCATED_IMAGES = False
# clipsieve applies its own (configurable) pixel limit before decoding; Pillow's global guard
# would otherwise raise or warn on its own terms.
Image.MAX_IMAGE_PIXELS = None

#: Colour that transparent pixels are composited onto: neutral mid-grey.
BACKGROUND = (128, 128, 128)

#: EXIF orientations that swap width and height.
_TRANSPOSING = {5, 6, 7, 8}


@dataclass(frozen=True)
class DecodeLimits:
    """Limits checked before any pixel is decoded.

    Attributes:
        max_pixels: largest width × height accepted (default 100 megapixels).
        max_file_bytes: largest file accepted (default 512 MiB).
    """

    max_pixels: int = 100_000_000
    max_file_bytes: int = 512 * 1024 * 1024


@dataclass
class Decoded:
    """A decoded image.

    Attributes:
        image: 8-bit RGB image, EXIF-oriented, possibly reduced by DCT scaling.
        width: full width after orientation (before any reduction).
        height: full height after orientation.
        format: Pillow's format name (``"JPEG"``, ``"PNG"``…).
        jpeg_quant: JPEG quantisation tables when the file is a JPEG.
    """

    image: Image.Image
    width: int
    height: int
    format: str | None
    jpeg_quant: dict[int, list[int]] | None = field(default=None, repr=False)


def read_bytes(path: str, limits: DecodeLimits = DecodeLimits()) -> bytes:
    """Read a whole file, refusing files over ``limits.max_file_bytes``."""
    try:
        size = os.stat(path).st_size
        if size > limits.max_file_bytes:
            raise DecodeError(
                "too_large",
                f"file is {size} bytes, over the limit of {limits.max_file_bytes}",
                path,
            )
        with open(path, "rb") as fh:
            return fh.read()
    except IsADirectoryError:
        raise DecodeError("io_error", "is a directory", path) from None
    except FileNotFoundError:
        raise DecodeError("io_error", "no such file", path) from None
    except PermissionError:
        raise DecodeError("io_error", "permission denied", path) from None
    except OSError as exc:
        raise DecodeError("io_error", f"cannot read: {exc.strerror or exc}", path) from None


def decode_image(
    data: bytes,
    path: str = "<bytes>",
    *,
    min_side: int | None = None,
    limits: DecodeLimits = DecodeLimits(),
) -> Decoded:
    """Decode image bytes safely into 8-bit RGB.

    Args:
        data: the file's bytes.
        path: used in error messages.
        min_side: when set, a JPEG may be decoded at a reduced scale whose sides are both at
            least this many pixels (``Image.draft``); other formats decode at full size.
        limits: size limits checked before decoding.

    Raises:
        DecodeError: with code ``not_an_image``, ``truncated``, ``too_large`` or
            ``unsupported``.
    """
    if not data:
        raise DecodeError("not_an_image", "empty file (0 bytes)", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError("not_an_image", "not a recognised image format", path) from None
    except Image.DecompressionBombError as exc:
        raise DecodeError("too_large", str(exc), path) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DecodeError("truncated", f"corrupt image header: {exc}", path) from None

    fmt = im.format
    width, height = im.size
    if width <= 0 or height <= 0:
        raise DecodeError("truncated", f"invalid image size {width}x{height}", path)
    if width * height > limits.max_pixels:
        raise DecodeError(
            "too_large",
            f"{width}x{height} = {width * height} pixels, over the limit of {limits.max_pixels}",
            path,
        )
    orientation = _orientation(im)
    if orientation in _TRANSPOSING:
        width, height = height, width
    jpeg_quant = getattr(im, "quantization", None) if fmt == "JPEG" else None

    try:
        if getattr(im, "n_frames", 1) > 1:
            im.seek(0)
        if min_side and fmt == "JPEG" and im.mode in ("RGB", "L"):
            im.draft(im.mode, (min_side, min_side))
        im.load()
    except Image.DecompressionBombError as exc:
        raise DecodeError("too_large", str(exc), path) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc) or type(exc).__name__
        code = "unsupported" if "decoder" in msg and "not available" in msg else "truncated"
        raise DecodeError(code, f"cannot decode: {msg}", path) from None
    except MemoryError:
        raise DecodeError("too_large", "out of memory while decoding", path) from None

    oriented: Image.Image = im
    if orientation not in (None, 1):
        oriented = ImageOps.exif_transpose(im)
    try:
        rgb = to_rgb(oriented)
    except (ValueError, OSError) as exc:
        raise DecodeError("unsupported", f"cannot convert mode {oriented.mode}: {exc}", path) from None
    if min_side and fmt != "JPEG":
        rgb = _reduce_like_draft(rgb, min_side)
    return Decoded(image=rgb, width=width, height=height, format=fmt, jpeg_quant=jpeg_quant)


def _reduce_like_draft(im: Image.Image, min_side: int) -> Image.Image:
    """Box-reduce by 2, 4 or 8 (as JPEG DCT scaling would) while both sides stay >= min_side.

    Other formats decode at full size; one cheap reduction here spares every later step
    (pixel statistics, the model's resize) from working on millions of pixels, and keeps the
    analysis scale the same as for a draft-decoded JPEG.
    """
    factor = 1
    while factor < 8 and min(im.size) // (factor * 2) >= min_side:
        factor *= 2
    return im.reduce(factor) if factor > 1 else im


def _orientation(im: Image.Image) -> int | None:
    try:
        return im.getexif().get(0x0112)
    except Exception:  # malformed EXIF must not fail the decode
        return None


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; alpha is composited onto :data:`BACKGROUND`."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P":
        im = im.convert("RGBA") if "transparency" in im.info else im.convert("RGB")
        mode = im.mode
    elif mode == "PA":
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im, dtype=np.float64)
        if mode.startswith("I;16") or arr.max(initial=0) > 255:
            arr = arr / 257.0
        return _gray_array_to_rgb(arr)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if arr.max(initial=0) <= 1.0:
            arr = arr * 255.0
        return _gray_array_to_rgb(arr)
    if mode == "1":
        return im.convert("L").convert("RGB")
    # L, CMYK, YCbCr, LAB, HSV, RGBX…: Pillow's own conversion is correct for these.
    return im.convert("RGB")


def _gray_array_to_rgb(arr: np.ndarray) -> Image.Image:
    gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")
