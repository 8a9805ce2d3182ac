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

import errno
import io
import os
import stat
import warnings
from dataclasses import dataclass, field
from typing import Any

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
        grid_luma: with ``grid_crop``, the int16 luma of a central crop at native resolution
            on the file's 8×8 grid (for blockiness), or ``None``.
    """

    image: Image.Image
    width: int
    height: int
    format: str | None
    jpeg_quant: dict[int, list[int]] | None = field(default=None, repr=False)
    grid_luma: np.ndarray | None = field(default=None, repr=False)


#: Reads ask for at most this many bytes per call (then more, up to the size limit).
_READ_CHUNK = 1 << 20

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a plain file"


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (too many levels of symbolic links)"
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long"
    return exc.strerror or str(exc)


def stat_input(path: str) -> os.stat_result:
    """``os.stat`` of an input file, refusing anything that is not a regular file.

    Nothing is opened: a FIFO, a device (``/dev/zero``), a socket, a symbolic link to one of
    those, or a folder fails here with ``io_error``, so no read can block or run without end.

    Raises:
        DecodeError: ``io_error`` naming the reason (no such file, permission denied,
            symbolic link loop, not a regular file (a FIFO…), a folder that cannot be read).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        why = "no such file"
        if os.path.islink(path):
            why = "broken symbolic link (its target does not exist)"
        raise DecodeError("io_error", why, path) from None
    except OSError as exc:
        raise DecodeError("io_error", f"cannot stat: {_os_reason(exc)}", path) from None
    except ValueError as exc:  # embedded NUL and the like
        raise DecodeError("io_error", f"invalid file name: {exc}", path) from None
    if stat.S_ISREG(st.st_mode):
        return st
    if stat.S_ISDIR(st.st_mode):
        raise DecodeError("io_error", _folder_problem(path), path)
    raise DecodeError("io_error", f"not a regular file ({_kind(st.st_mode)})", path)


def _folder_problem(path: str) -> str:
    """Why a folder is an item: it could not be listed (so its files were not scanned)."""
    try:
        with os.scandir(path):
            pass
    except OSError as exc:
        return f"cannot read folder: {_os_reason(exc)}; its files were not scanned"
    return "is a folder, not a file"


def read_bytes(path: str, limits: DecodeLimits = DecodeLimits()) -> bytes:
    """Read a whole regular file, refusing files over ``limits.max_file_bytes``.

    The file is checked with :func:`stat_input` before it is opened; it is opened with
    ``O_NONBLOCK`` (a FIFO swapped in meanwhile cannot block) and checked again with
    ``fstat`` on the open descriptor. The read stops one byte past the limit whatever the
    size ``stat`` gave, so a file that grows (or lies about its size, as ``/proc`` files do)
    is still bounded.

    Raises:
        DecodeError: ``io_error`` or ``too_large``.
    """
    stat_input(path)
    cap = limits.max_file_bytes
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise DecodeError("io_error", f"cannot open: {_os_reason(exc)}", path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DecodeError("io_error", f"not a regular file ({_kind(st.st_mode)})", path)
        if st.st_size > cap:
            raise DecodeError(
                "too_large", f"file is {st.st_size} bytes, over the limit of {cap}", path
            )
        chunks: list[bytes] = []
        total = 0
        want = max(st.st_size + 1, _READ_CHUNK)
        while total <= cap:
            block = os.read(fd, min(want, cap + 1 - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
            want = _READ_CHUNK
        if total > cap:
            raise DecodeError(
                "too_large", f"file is more than {cap} bytes, over the limit", path
            )
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise DecodeError("io_error", "is a folder, not a file", path) from None
        raise DecodeError("io_error", f"cannot read: {_os_reason(exc)}", path) from None
    finally:
        os.close(fd)


def decode_image(
    data: bytes,
    path: str = "<bytes>",
    *,
    min_side: int | None = None,
    limits: DecodeLimits = DecodeLimits(),
    grid_crop: int = 0,
    grid_crop_jpeg_quality: float = 90.0,
) -> Decoded:
    """Decode image bytes safely into 8-bit RGB.

    Args:
        data: the file's bytes.
        path: used in error messages.
        min_side: when set, a JPEG may be decoded at a reduced scale whose sides are both at
            least this many pixels (``Image.draft``); other formats decode at full size.
        limits: size limits checked before decoding.
        grid_crop: when > 0, also keep the luma of a central crop of at most this many px per
            side at native resolution (``Decoded.grid_luma``), taken before any reduction: for
            every format decoded at full size, and for a JPEG decoded at a reduced DCT scale
            only when its quantisation tables say quality ≥ ``grid_crop_jpeg_quality`` (then
            the file is decoded once more at full scale; a low-quality JPEG is already caught
            by its tables, a high-quality re-encode of a blocky image is not).
        grid_crop_jpeg_quality: see ``grid_crop``.

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
    except Exception as exc:  # noqa: BLE001 - every decoder failure gets a reason code
        code, msg = classify_decoder_error(exc, opened=False)
        raise DecodeError(code, f"corrupt image header: {msg}", path) from None

    fmt = im.format
    if fmt in _REFUSED_FORMATS:
        raise DecodeError("unsupported", _REFUSED_FORMATS[fmt], path)
    try:
        width, height = (int(v) for v in im.size)
    except Exception:  # noqa: BLE001
        raise DecodeError("not_an_image", f"invalid image size {im.size!r}", path) from None
    if width <= 0 or height <= 0:
        raise DecodeError("not_an_image", f"invalid image size {width}x{height}", path)
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
        # Image.open leaves a multi-frame file (GIF, TIFF pages…) on its first frame; asking
        # for n_frames would walk every frame of a 1,000-frame GIF first.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stored_size = im.size
            if min_side and fmt == "JPEG" and im.mode in ("RGB", "L"):
                im.draft(im.mode, (min_side, min_side))
            im.load()
    except MemoryError:
        raise DecodeError("too_large", "out of memory while decoding", path) from None
    except Exception as exc:  # noqa: BLE001 - every decoder failure gets a reason code
        code, msg = classify_decoder_error(exc, opened=True)
        raise DecodeError(code, f"cannot decode: {msg}", path) from None

    grid_luma = _native_grid(im, data, stored_size, fmt, jpeg_quant, grid_crop,
                             grid_crop_jpeg_quality) if grid_crop > 0 else None
    oriented: Image.Image = im
    if orientation not in (None, 1):
        try:
            oriented = ImageOps.exif_transpose(im)
        except Exception:  # noqa: BLE001 - bogus EXIF: keep the pixels as stored
            oriented = im
            width, height = im.size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rgb = to_rgb(oriented)
    except MemoryError:
        raise DecodeError("too_large", "out of memory while converting", path) from None
    except Exception as exc:  # noqa: BLE001
        code, msg = classify_decoder_error(exc, opened=True)
        if code == "truncated":
            code = "unsupported"
        raise DecodeError(code, f"cannot convert mode {oriented.mode}: {msg}", path) from None
    if min_side and fmt != "JPEG":
        rgb = _reduce_like_draft(rgb, min_side)
    return Decoded(image=rgb, width=width, height=height, format=fmt, jpeg_quant=jpeg_quant,
                   grid_luma=grid_luma)


def _native_grid(
    im: Image.Image, data: bytes, stored_size: tuple[int, int], fmt: str | None,
    jpeg_quant: dict[int, list[int]] | None, limit: int, min_quality: float,
) -> np.ndarray | None:
    """The native-resolution grid crop's luma, in the file's own (unrotated) coordinates."""
    from clipsieve.media.stats import estimate_jpeg_quality, grid_crop_box, native_grid_luma

    if im.size == stored_size:
        return native_grid_luma(im, limit)
    if fmt != "JPEG" or not estimate_jpeg_quality(jpeg_quant) >= min_quality:
        return None  # the tables already tell a low-quality JPEG
    try:  # decode once more at full scale: only high-quality JPEGs that were draft-reduced
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full = Image.open(io.BytesIO(data))
            box = grid_crop_box(full.width, full.height, limit)
            if box[2] <= box[0]:
                return None
            if full.mode in ("RGB", "L"):  # luma only: libjpeg skips the chroma planes
                full.draft("L", full.size)
                _load_rows(full, box[3])
            return native_grid_luma(full, limit)
    except Exception:  # noqa: BLE001 - the reduced decode worked; go on without the crop
        return None


def _load_rows(im: ImageFile.ImageFile, rows: int) -> None:
    """Decode only the first ``rows`` scanlines of a JPEG (the rest stays blank).

    libjpeg decodes top to bottom; with the tile cut short it stops reading the entropy-coded
    data there, so a crop above the bottom edge costs only the rows down to it (the central
    blockiness crop of a 6 MP photo: about 60% of a full luma decode). libjpeg then reports
    the scanlines left unread, which Pillow raises as an error once the wanted rows are in
    ``im`` (the bytes decoded at reduced scale before, so the data itself is sound); any other
    failure leaves the tile in place and is raised.
    """
    if rows >= im.height or len(im.tile) != 1:
        im.load()
        return
    tile: Any = im.tile[0]  # a named tuple since Pillow 11, a plain tuple before
    cut: Any = (tile._replace(extents=(0, 0, im.width, rows)) if hasattr(tile, "_replace")
                else (tile[0], (0, 0, im.width, rows), *tile[2:]))
    im.tile = [cut]
    try:
        im.load()
    except OSError:
        if im.tile or getattr(im, "im", None) is None:  # it failed before decoding the rows
            raise


#: Formats that Pillow can open but clipsieve refuses to decode, with the reason.
_REFUSED_FORMATS: dict[str, str] = {
    "EPS": "EPS/PostScript is not decoded: it would run Ghostscript on untrusted input",
}

#: Message fragments (lower case) of Pillow errors about a format or feature it cannot decode.
_UNSUPPORTED_HINTS = (
    "unsupported", "not supported", "ghostscript", "not available", "unknown compression",
    "unknown pixel", "unknown raw mode", "unknown mode", "unimplemented", "not implemented",
    "no decoder", "unrecognized mode", "unrecognised mode", "bad mode", "not yet",
    "cannot handle", "unknown image mode", "unknown colour", "unknown color",
)

#: Message fragments (lower case) of errors from a file that ends early.
_TRUNCATED_HINTS = (
    "truncated", "premature end", "ended early", "unexpected end", "end of file",
    "not enough data", "buffer is not large enough", "incomplete", "early eof",
    "reached end", "end of stream", "short read", "could not read",
)


def classify_decoder_error(exc: BaseException, *, opened: bool) -> tuple[str, str]:
    """Reason code and message for an exception raised by the decoder (Pillow, pillow-heif).

    The mapping, by cause:

    - a format or feature the decoder cannot handle (``Unsupported BMP compression``,
      ``Unable to locate Ghostscript``, ``Unsupported bitcount``, ``NotImplementedError``,
      ``decoder … not available``) → ``unsupported``;
    - a file that ends early (``image file is truncated``, ``EOFError``…) → ``truncated``;
      any other failure while decoding the pixels of a file whose header was read (a
      corrupt data stream) → ``truncated`` too;
    - any other failure while reading the header (a corrupt or crafted header), and any
      unexpected exception type (``TypeError: Missing dimensions``, ``KeyError``…) →
      ``not_an_image``;
    - a decompression bomb or ``MemoryError`` → ``too_large``.

    Never ``io_error``: the bytes were already read.

    Args:
        exc: the exception.
        opened: whether ``Image.open`` had succeeded (the failure is in the pixel data).
    """
    text = str(exc).strip() or type(exc).__name__
    low = text.lower()
    if isinstance(exc, (MemoryError, Image.DecompressionBombError)):
        return "too_large", text
    if isinstance(exc, NotImplementedError):
        return "unsupported", f"{type(exc).__name__}: {text}"
    if isinstance(exc, (OSError, SyntaxError, ValueError, EOFError)):
        if any(h in low for h in _UNSUPPORTED_HINTS):
            return "unsupported", text
        if isinstance(exc, EOFError) or any(h in low for h in _TRUNCATED_HINTS):
            return "truncated", text
        return ("truncated" if opened else "not_an_image"), text
    # TypeError, KeyError, IndexError, struct.error, ZeroDivisionError, RecursionError…:
    # the decoder tripped over data it did not expect.
    return "not_an_image", f"{type(exc).__name__}: {text}"


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
        if mode.startswith("I;16") or np.nanmax(arr, initial=0) > 255:
            arr = arr / 257.0
        return _gray_array_to_rgb(arr)
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        finite = np.isfinite(arr)
        # NaN counts as black, +inf as white, -inf as black; the scale comes from the
        # finite values only (floats in 0–1 are scaled to 0–255).
        top = float(arr[finite].max()) if finite.any() else 0.0
        scale = 255.0 if top <= 1.0 else 1.0
        arr = np.where(finite, arr * scale, np.where(arr > 0, 255.0, 0.0))
        return _gray_array_to_rgb(arr)
    if mode == "1":
        return im.convert("L").convert("RGB")
    if mode == "LAB":
        return _lab_to_rgb(im)
    # L, CMYK, YCbCr, HSV, RGBX…: Pillow's own conversion is correct for these.
    return im.convert("RGB")


def _lab_to_rgb(im: Image.Image) -> Image.Image:
    """CIE L*a*b* to sRGB through LittleCMS (Pillow's plain convert reinterprets channels)."""
    from PIL import ImageCms

    transform = ImageCms.buildTransform(
        ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
    )
    out = ImageCms.applyTransform(im, transform)
    assert out is not None
    return out


def _gray_array_to_rgb(arr: np.ndarray) -> Image.Image:
    gray = np.clip(np.rint(np.nan_to_num(arr, nan=0.0)), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, mode="L").convert("RGB")


def from_image(
    image: Image.Image | np.ndarray, *, min_side: int | None = None, grid_crop: int = 0,
    grid_crop_jpeg_quality: float = 90.0,
) -> Decoded:
    """An in-memory image (PIL, or an ``(H, W)`` / ``(H, W, 3|4)`` array) as a :class:`Decoded`.

    Nothing is read or decoded: the image is converted to 8-bit RGB (alpha composited like a
    file's), and, like a decoded file, box-reduced while both sides stay >= ``min_side``;
    ``grid_crop`` keeps the native-resolution crop for blockiness as :func:`decode_image`
    does (``grid_crop_jpeg_quality`` is accepted for the same options and not needed here).
    Arrays are uint8, or floats in 0..1 (scaled by 255) or 0..255.

    Raises:
        DecodeError: an array of another shape, or a float array with values outside 0..255.
    """
    fmt = None
    quant = None
    if isinstance(image, Image.Image):
        fmt = image.format
        if fmt == "JPEG":
            quant = getattr(image, "quantization", None)
        pil = image
    else:
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))) or 0 in arr.shape:
            raise DecodeError("unsupported", f"expected an (H, W) or (H, W, 3|4) array, got "
                                             f"shape {arr.shape}")
        if arr.dtype != np.uint8:
            if arr.dtype.kind not in "fiub":
                raise DecodeError("unsupported", f"cannot use an array of dtype {arr.dtype}")
            arr = arr.astype(np.float64)
            if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255:
                raise DecodeError("unsupported", "array values must lie in 0..1 or 0..255")
            if arr.max() <= 1.0:
                arr = arr * 255.0
            arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        pil = Image.fromarray(arr)
    width, height = pil.size
    rgb = to_rgb(pil)
    grid_luma = None
    if grid_crop > 0:  # in memory the image is at its native size: as decode_image's crop
        from clipsieve.media.stats import native_grid_luma

        grid_luma = native_grid_luma(pil, grid_crop)
    if min_side:
        rgb = _reduce_like_draft(rgb, min_side)
    return Decoded(image=rgb, width=width, height=height, format=fmt, jpeg_quant=quant,
                   grid_luma=grid_luma)
