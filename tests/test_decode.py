"""media/decode.py: formats, modes, orientation, limits and the reason codes of bad files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsieve.errors import DecodeError
from clipsieve.media.decode import BACKGROUND, DecodeLimits, decode_image, read_bytes


def _decode(data: bytes, **kw):
    return decode_image(data, "x", **kw)


def _code(data: bytes, **kw) -> str:
    with pytest.raises(DecodeError) as info:
        _decode(data, **kw)
    return info.value.code


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


# -- bad files --------------------------------------------------------------------------------

def test_zero_bytes_is_not_an_image() -> None:
    assert _code(b"") == "not_an_image"


def test_text_renamed_jpg_is_not_an_image(tmp_path: Path) -> None:
    p = tmp_path / "notes.jpg"
    p.write_text("this is a shopping list, not a photo\n")
    with pytest.raises(DecodeError) as info:
        decode_image(read_bytes(str(p)), str(p))
    assert info.value.code == "not_an_image"
    assert str(p) in str(info.value)


def test_truncated_jpeg(photos: dict[str, Path]) -> None:
    data = photos["astronaut"].read_bytes()
    assert _code(data[: len(data) // 2]) == "truncated"


def test_png_header_claiming_10_gigapixels_is_refused_before_decoding() -> None:
    with pytest.raises(DecodeError) as info:
        _decode(_png_header_only(100_000, 100_000))
    assert info.value.code == "too_large"
    assert "100000x100000" in info.value.message


def test_file_size_limit(tmp_path: Path) -> None:
    p = tmp_path / "big.bin"
    p.write_bytes(b"\0" * 2048)
    with pytest.raises(DecodeError) as info:
        read_bytes(str(p), DecodeLimits(max_file_bytes=1024))
    assert info.value.code == "too_large"


def test_missing_file_is_io_error(tmp_path: Path) -> None:
    with pytest.raises(DecodeError) as info:
        read_bytes(str(tmp_path / "nope.jpg"))
    assert info.value.code == "io_error"
    assert "no such file" in info.value.message


def test_huge_valid_image_just_under_the_default_limit_decodes() -> None:
    side = 9999  # 99,980,001 pixels < 100 MP
    data = _save(Image.new("RGB", (side, side), (10, 200, 30)), "JPEG", quality=80)
    dec = _decode(data, min_side=224)
    assert (dec.width, dec.height) == (side, side)
    assert min(dec.image.size) >= 224 and max(dec.image.size) < side  # DCT-scaled decode
    assert np.allclose(np.asarray(dec.image).reshape(-1, 3).mean(0), (10, 200, 30), atol=3)
    # one pixel over a limit set exactly at its size
    assert _code(data, limits=DecodeLimits(max_pixels=side * side - 1)) == "too_large"


# -- modes and formats ------------------------------------------------------------------------

def test_cmyk_jpeg_becomes_correct_rgb() -> None:
    data = _save(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95)
    dec = _decode(data)
    assert dec.image.mode == "RGB"
    r, g, b = np.asarray(dec.image).reshape(-1, 3).mean(0)
    assert r > 240 and g < 15 and b < 15  # pure red


def test_16_bit_png_is_scaled_not_clipped() -> None:
    arr = np.full((16, 16), 32768, dtype=np.uint16)  # mid-grey in 16 bits
    data = _save(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    dec = _decode(data)
    assert dec.image.mode == "RGB"
    assert np.all(np.abs(np.asarray(dec.image).astype(int) - 128) <= 1)


def test_palette_png_with_transparency_is_composited_on_grey() -> None:
    im = Image.new("P", (20, 10), 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    im.paste(1, (10, 0, 20, 10))  # right half opaque blue
    data = _save(im, "PNG", transparency=0)  # index 0 (left half, red) transparent
    dec = _decode(data)
    px = np.asarray(dec.image)
    assert tuple(px[5, 2]) == BACKGROUND
    assert tuple(px[5, 15]) == (0, 0, 255)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited(mode: str) -> None:
    im = Image.new(mode, (8, 8), (255, 0) if mode == "LA" else (255, 255, 255, 0))
    dec = _decode(_save(im, "PNG"))
    assert tuple(np.asarray(dec.image)[0, 0]) == BACKGROUND


def test_exif_orientation_is_applied() -> None:
    im = Image.new("RGB", (60, 40), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 30, 40))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90° clockwise
    dec = _decode(_save(im, "JPEG", quality=95, exif=exif.tobytes()))
    assert (dec.width, dec.height) == (40, 60)
    assert dec.image.size == (40, 60)
    px = np.asarray(dec.image).astype(int)
    assert px[5, 20, 0] > 200 and px[5, 20, 2] < 60  # top is the former left: red
    assert px[55, 20, 2] > 200 and px[55, 20, 0] < 60  # bottom: blue


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "BMP", "TIFF", "GIF", "HEIF", "AVIF"])
def test_formats_decode_to_rgb(fmt: str) -> None:
    im = Image.new("RGB", (48, 32), (40, 120, 200))
    kw = {"lossless": True} if fmt == "WEBP" else {}
    dec = _decode(_save(im, fmt, **kw))
    assert dec.image.mode == "RGB" and dec.image.size == (48, 32)
    assert np.allclose(np.asarray(dec.image).reshape(-1, 3).mean(0), (40, 120, 200), atol=8)


def test_gif_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    px = np.asarray(_decode(buf.getvalue()).image)
    assert px[0, 0, 0] > 200 and px[0, 0, 1] < 50


def test_jpeg_draft_keeps_at_least_min_side(big_photo: Path) -> None:
    dec = _decode(big_photo.read_bytes(), min_side=224)
    assert (dec.width, dec.height) == (2400, 2400)
    assert 224 <= min(dec.image.size) < 600
    assert dec.jpeg_quant  # quantisation tables kept for the quality measures


def test_large_png_is_box_reduced_like_a_jpeg_draft() -> None:
    im = Image.new("RGB", (2000, 1000), (10, 20, 30))
    dec = _decode(_save(im, "PNG"), min_side=224)
    assert (dec.width, dec.height) == (2000, 1000)
    assert dec.image.size == (500, 250)  # factor 4: another halving would go under 224
    assert _decode(_save(im, "PNG")).image.size == (2000, 1000)  # no min_side: full size


# -- reading: only regular files, bounded reads ------------------------------------------------


def test_fifo_is_not_opened(tmp_path: Path) -> None:
    import os
    import threading

    from clipsieve.media.decode import stat_input

    fifo = tmp_path / "f.jpg"
    os.mkfifo(fifo)  # opening it for reading would block forever without a writer
    caught: list[BaseException] = []

    def read() -> None:
        try:
            read_bytes(str(fifo))
        except BaseException as exc:  # noqa: BLE001
            caught.append(exc)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "read_bytes blocked on a FIFO"
    assert isinstance(caught[0], DecodeError) and caught[0].code == "io_error"
    assert "not a regular file (a FIFO" in caught[0].message
    with pytest.raises(DecodeError) as e:
        stat_input(str(fifo))
    assert "FIFO" in e.value.message


def test_symlink_to_dev_zero_is_refused_not_read(tmp_path: Path) -> None:
    link = tmp_path / "z.jpg"
    link.symlink_to("/dev/zero")
    with pytest.raises(DecodeError) as e:
        read_bytes(str(link))
    assert e.value.code == "io_error"
    assert e.value.message == "not a regular file (a character device)"


def test_read_is_bounded_whatever_stat_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that reports a small size (like /proc files, or one that grows) is still cut
    off one byte past the limit."""
    import os

    import clipsieve.media.decode as dec

    p = tmp_path / "grows.jpg"
    p.write_bytes(b"\xff" * 5000)
    real_fstat = os.fstat

    class _Small:
        def __init__(self, st: os.stat_result) -> None:
            self.st_mode, self.st_size = st.st_mode, 10

    monkeypatch.setattr(dec.os, "fstat", lambda fd: _Small(real_fstat(fd)))
    with pytest.raises(DecodeError) as e:
        read_bytes(str(p), DecodeLimits(max_file_bytes=1024))
    assert e.value.code == "too_large"
    assert len(read_bytes(str(p), DecodeLimits(max_file_bytes=5000))) == 5000


def test_symlink_loop_and_broken_link_are_io_errors(tmp_path: Path) -> None:
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop.name)
    with pytest.raises(DecodeError) as e:
        read_bytes(str(loop))
    assert e.value.code == "io_error" and "symbolic link loop" in e.value.message
    broken = tmp_path / "broken.jpg"
    broken.symlink_to("nowhere.jpg")
    with pytest.raises(DecodeError) as e:
        read_bytes(str(broken))
    assert e.value.code == "io_error" and "broken symbolic link" in e.value.message


def test_folder_is_io_error(tmp_path: Path) -> None:
    (tmp_path / "d.jpg").mkdir()
    with pytest.raises(DecodeError) as e:
        read_bytes(str(tmp_path / "d.jpg"))
    assert e.value.code == "io_error" and e.value.message == "is a folder, not a file"


# -- reason codes by cause (generated equivalents of Pillow's odd test files) ----------------


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("bmp_unsupported_compression", "unsupported"),
        ("bmp_unsupported_depth", "unsupported"),
        ("dds_unknown_fourcc", "unsupported"),
        ("eps_needs_ghostscript", "unsupported"),
        ("tiff_no_dimensions", "not_an_image"),
        ("png_truncated", "truncated"),
        ("jpeg_truncated", "truncated"),
        ("gif_truncated", "truncated"),
        ("random_bytes", "not_an_image"),
        ("png_bad_header_crc", "not_an_image"),
        ("png_header_bomb", "too_large"),
    ],
)
def test_odd_files_get_the_code_of_their_cause(name: str, code: str) -> None:
    from clipsieve.testing_corpus import odd_files

    with pytest.raises(DecodeError) as e:
        _decode(odd_files()[name])
    assert e.value.code == code, e.value.message


def test_second_tiff_page_without_dimensions_does_not_fail_the_first() -> None:
    """Pillow raises TypeError("Missing dimensions") when it seeks to such a page; only the
    first page is decoded, and nothing walks the others."""
    from clipsieve.testing_corpus import odd_files

    dec = _decode(odd_files()["tiff_bad_second_page"])
    assert dec.image.size == (4, 4)


@pytest.mark.parametrize(
    ("exc", "opened", "code"),
    [
        (TypeError("Missing dimensions"), False, "not_an_image"),
        (TypeError("Missing dimensions"), True, "not_an_image"),
        (NotImplementedError("Unimplemented pixel format"), False, "unsupported"),
        (OSError("Unsupported bitcount"), False, "unsupported"),
        (OSError("Unsupported BMP compression (4)"), False, "unsupported"),
        (OSError("Unable to locate Ghostscript on paths"), True, "unsupported"),
        (OSError("decoder jpeg2k not available"), True, "unsupported"),
        (OSError("image file is truncated (3 bytes not processed)"), True, "truncated"),
        (EOFError(), True, "truncated"),
        (OSError("broken data stream when reading image file"), True, "truncated"),
        (SyntaxError("not a TIFF file"), False, "not_an_image"),
        (KeyError(7), True, "not_an_image"),
        (struct.error("unpack requires a buffer of 4 bytes"), False, "not_an_image"),
        (MemoryError(), True, "too_large"),
    ],
)
def test_decoder_exceptions_map_by_cause_never_to_io_error(
    exc: BaseException, opened: bool, code: str
) -> None:
    from clipsieve.media.decode import classify_decoder_error

    assert classify_decoder_error(exc, opened=opened)[0] == code


@pytest.mark.parametrize(
    "name",
    ["mode_i16", "mode_f_nan_inf", "mode_cmyk", "mode_lab", "mode_1", "mode_p_alpha",
     "mode_la", "bogus_exif", "bogus_icc", "gif_1000_frames", "tiff_500_pages"],
)
def test_odd_but_valid_images_decode(name: str) -> None:
    from clipsieve.testing_corpus import odd_files

    dec = _decode(odd_files()[name])
    assert dec.image.mode == "RGB" and dec.width > 0


def test_float_image_with_nan_and_inf_maps_to_black_and_white() -> None:
    arr = np.array([[np.nan, np.inf], [-np.inf, 0.5]], dtype=np.float32)
    px = np.asarray(_decode(_save(Image.fromarray(arr), "TIFF")).image)[..., 0]
    assert px.tolist() == [[0, 255], [0, 128]]


def test_lab_is_converted_through_a_colour_transform() -> None:
    """Pillow's plain convert("RGB") would read L*a*b* channels as R, G, B."""
    px = _decode(_save(Image.new("LAB", (4, 4), (128, 128, 128)), "TIFF")).image.getpixel((0, 0))
    assert max(px) - min(px) <= 3 and 100 <= px[0] <= 140  # mid grey, not (128, 128, 128) RGB


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_pixel_limit_is_inclusive_at_exactly_the_limit(fmt: str) -> None:
    """An image of exactly max_pixels decodes; one pixel more is refused."""
    data = _save(Image.new("RGB", (30, 20), (90, 120, 30)), fmt)
    dec = _decode(data, limits=DecodeLimits(max_pixels=600))
    assert (dec.width, dec.height) == (30, 20)
    assert _code(data, limits=DecodeLimits(max_pixels=599)) == "too_large"


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("size", [(2400, 1600), (1600, 2400), (1200, 1200)])
def test_native_grid_crop_decodes_only_the_rows_it_needs(
    tmp_path: Path, progressive: bool, size: tuple[int, int]
) -> None:
    """The blockiness crop of a draft-reduced high-quality JPEG stops decoding at the crop's
    bottom row (issue #14) and gives exactly the luma of a full decode's crop."""
    from conftest import photo_array

    from clipsieve.media.stats import native_grid_luma

    im = Image.fromarray(photo_array("astronaut")).resize(size, Image.Resampling.BICUBIC)
    path = tmp_path / "big.jpg"
    im.save(path, quality=95, progressive=progressive)
    data = path.read_bytes()
    dec = decode_image(data, str(path), min_side=224, grid_crop=512, grid_crop_jpeg_quality=90)
    assert dec.image.width < size[0] and dec.grid_luma is not None  # the draft path + crop
    full = Image.open(path)
    full.draft("L", full.size)
    full.load()
    want = native_grid_luma(full, 512)
    assert want is not None and dec.grid_luma.shape == want.shape
    assert np.array_equal(dec.grid_luma, want)


def test_native_grid_crop_of_a_cut_jpeg_is_not_invented(tmp_path: Path) -> None:
    """A JPEG cut inside the crop's rows is an error of the decode (or no crop), never a crop
    of blank rows."""
    from conftest import photo_array

    im = Image.fromarray(photo_array("astronaut")).resize((2400, 1600), Image.Resampling.BICUBIC)
    path = tmp_path / "big.jpg"
    im.save(path, quality=95)
    data = path.read_bytes()[: len(path.read_bytes()) // 2]
    try:
        dec = decode_image(data, str(path), min_side=224, grid_crop=512,
                           grid_crop_jpeg_quality=90)
    except DecodeError as exc:
        assert exc.code == "truncated"
    else:
        assert dec.grid_luma is None
