"""Content sniffing on real files written by Pillow, pillow-heif and PyAV."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from conftest import photo_array
from PIL import Image

from clipsieve.media.sniff import SNIFF_BYTES, sniff


def _image_bytes(fmt: str, **kw: object) -> bytes:
    im = Image.fromarray(photo_array("coffee")).resize((64, 48))
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "name", "mime"),
    [
        ("JPEG", "jpeg", "image/jpeg"),
        ("PNG", "png", "image/png"),
        ("GIF", "gif", "image/gif"),
        ("WEBP", "webp", "image/webp"),
        ("BMP", "bmp", "image/bmp"),
        ("TIFF", "tiff", "image/tiff"),
    ],
)
def test_images_written_by_pillow(fmt: str, name: str, mime: str) -> None:
    got = sniff(_image_bytes(fmt)[:SNIFF_BYTES])
    assert got is not None
    assert (got.kind, got.format, got.mime) == ("image", name, mime)


def test_heif_is_an_image_not_a_video() -> None:
    pytest.importorskip("pillow_heif")
    got = sniff(_image_bytes("HEIF")[:SNIFF_BYTES])
    assert got is not None and (got.kind, got.format) == ("image", "heif")


def test_avif_is_an_image() -> None:
    try:
        data = _image_bytes("AVIF")
    except (KeyError, OSError):
        pytest.skip("this Pillow cannot write AVIF")
    got = sniff(data[:SNIFF_BYTES])
    assert got is not None and (got.kind, got.format) == ("image", "avif")


@pytest.mark.parametrize(
    ("container", "codec", "name"),
    [("mp4", "libx264", "mp4"), ("mov", "libx264", "mov"), ("matroska", "libx264", "matroska"),
     ("webm", "libvpx", "matroska"), ("avi", "mpeg4", "avi")],
)
def test_videos_written_by_pyav(tmp_path: Path, container: str, codec: str, name: str) -> None:
    path = tmp_path / f"clip.{container}"
    _pyav_video(path, container, codec)
    got = sniff(path.read_bytes()[:SNIFF_BYTES])
    assert got is not None
    assert (got.kind, got.format) == ("video", name)
    if container == "webm":
        assert got.mime == "video/webm"


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world, this is text\n", b"%PDF-1.7\n", b"PK\x03\x04" + b"\x00" * 60,
     b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"\x00\x00\x00\x18ftypzzzz\x00\x00\x00\x00",
     b"RIFF\x00\x00\x00\x00WAVEfmt "],
)
def test_other_content_is_none(data: bytes) -> None:
    assert sniff(data) is None


def test_the_name_does_not_matter(tmp_path: Path) -> None:
    # a PNG named .jpg is a PNG; a text file named .jpg is nothing
    png = tmp_path / "photo.jpg"
    png.write_bytes(_image_bytes("PNG"))
    got = sniff(png.read_bytes()[:SNIFF_BYTES])
    assert got is not None and got.format == "png"
    assert sniff(b"not an image at all") is None


def _pyav_video(path: Path, container: str, codec: str) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), "w", format=container) as out:
        try:
            stream = out.add_stream(codec, rate=5)
        except Exception:  # pragma: no cover - codec missing from this FFmpeg build
            pytest.skip(f"no {codec} encoder")
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(
                np.full((48, 64, 3), i * 40, dtype=np.uint8), format="rgb24"
            )
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.mark.parametrize(
    ("container", "codec", "name", "family"),
    [("mp4", "libx264", "mp4", "mp4"), ("mov", "libx264", "mov", "mp4"),
     ("matroska", "libx264", "matroska", "matroska"), ("avi", "mpeg4", "avi", "avi"),
     ("mpegts", "mpeg2video", "mpegts", "mpegts"), ("flv", "flv", "flv", "flv"),
     ("vob", "mpeg2video", "mpegps", "mpegps")],
)
def test_one_sniffer_for_the_image_and_video_paths(
    tmp_path: Path, container: str, codec: str, name: str, family: str
) -> None:
    """The service's sniff, the video decoder's container family and scan's routing agree: a
    container the video decoder reads is a video to all three (it used to be two modules, and
    MPEG-TS, MPEG-PS and FLV were videos to scan but unknown to the service)."""
    from clipsieve.media.sniff import media_kind, sniff_bytes

    path = tmp_path / "clip.bin"  # the name says nothing
    _pyav_video(path, container, codec)
    head = path.read_bytes()[:SNIFF_BYTES]
    got = sniff(head)
    assert got is not None and (got.kind, got.format) == ("video", name)
    assert sniff_bytes(head) == family
    assert media_kind(path) == "video"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_still_images_are_images_to_every_path(tmp_path: Path, fmt: str) -> None:
    from clipsieve.media.sniff import media_kind, sniff_bytes

    path = tmp_path / "still.bin"
    path.write_bytes(_image_bytes(fmt))
    got = sniff(path.read_bytes()[:SNIFF_BYTES])
    assert got is not None and got.kind == "image" and not got.animated
    assert media_kind(path) == "image"
    assert sniff_bytes(path.read_bytes()) == ("gif" if fmt == "GIF" else None)  # GIF: by frames


def test_animated_gif_and_webp_are_images_to_sniff_and_videos_to_scan(tmp_path: Path) -> None:
    from clipsieve.media.sniff import media_kind, sniff_bytes

    frames = [Image.fromarray(np.full((48, 64, 3), v, np.uint8)) for v in (0, 120, 240)]
    for fmt, name in (("GIF", "gif"), ("WEBP", "webp")):
        path = tmp_path / f"anim-{name}.bin"
        frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:], duration=200)
        head = path.read_bytes()[:SNIFF_BYTES]
        got = sniff(head)
        assert got is not None and (got.kind, got.format) == ("image", name)
        assert got.animated is (True if name == "webp" else None)
        assert sniff_bytes(head) == name
        assert media_kind(path) == "video"


def test_an_unknown_iso_brand_goes_to_the_video_decoder_but_is_not_vouched_for() -> None:
    from clipsieve.media.sniff import sniff_bytes

    head = b"\x00\x00\x00\x18ftypzzzz\x00\x00\x00\x00" + b"\x00" * 40
    assert sniff(head) is None  # the service refuses it (415)
    assert sniff_bytes(head) == "mp4"  # scan lets PyAV read it or name the cause
    heif_odd_major = b"\x00\x00\x00\x18ftypzzzz\x00\x00\x00\x00mif1heic" + b"\x00" * 40
    assert sniff(heif_odd_major) == sniff(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic")
    assert sniff_bytes(heif_odd_major) is None
