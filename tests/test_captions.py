"""moderation/captions.py: caption lookup order, sidecars, and the JSONL input."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from clipsieve.errors import ConfigError
from clipsieve.moderation.captions import (
    MAX_SIDECAR_BYTES,
    Caption,
    CaptionSource,
    InputItem,
    read_items_jsonl,
)


def test_lookup_order_explicit_then_default_then_sidecar(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jpg", tmp_path / "b.jpg", tmp_path / "c.jpg"
    for p in (a, b, c):
        p.write_bytes(b"")
        p.with_suffix(".txt").write_text(f"sidecar of {p.stem}\n", encoding="utf-8")
    src = CaptionSource({str(a): "  explicit a  "}, default="for everyone")
    assert src.caption_for(a) == Caption("explicit a", "input")
    assert src.caption_for(b) == Caption("for everyone", "option")
    only_sidecars = CaptionSource()
    assert only_sidecars.caption_for(c) == Caption("sidecar of c", "sidecar")
    assert CaptionSource(sidecars=False).caption_for(c) is None


def test_blank_or_null_captions_fall_through(tmp_path: Path) -> None:
    img = tmp_path / "x.png"
    img.with_suffix(".txt").write_text("from the sidecar", encoding="utf-8")
    src = CaptionSource({str(img): "   "}, default=None)
    assert src.caption_for(img) == Caption("from the sidecar", "sidecar")
    assert CaptionSource({str(img): None}, default="\n").caption_for(img).source == "sidecar"
    img.with_suffix(".txt").write_text(" \n ", encoding="utf-8")
    assert CaptionSource().caption_for(img) is None
    assert CaptionSource().caption_for(tmp_path / "no-sidecar.jpg") is None


def test_paths_match_whatever_their_spelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    src = CaptionSource({"sub/../a.jpg": "hello"}, sidecars=False)
    assert src.caption_for("./a.jpg") == Caption("hello", "input")
    assert src.caption_for(tmp_path / "a.jpg") == Caption("hello", "input")


def test_sidecar_is_utf8_without_bom_and_bounded(tmp_path: Path) -> None:
    img = tmp_path / "p.jpeg"
    img.with_suffix(".txt").write_bytes("\ufeffcafé ☕".encode() + b"\xff")
    cap = CaptionSource().caption_for(img)
    assert cap is not None and cap.text == "café ☕\ufffd"
    img.with_suffix(".txt").write_bytes(b"x" * (MAX_SIDECAR_BYTES + 100))
    cap = CaptionSource().caption_for(img)
    assert cap is not None and len(cap.text) == MAX_SIDECAR_BYTES


def test_sidecar_needs_the_same_stem_in_the_same_folder(tmp_path: Path) -> None:
    (tmp_path / "a.jpg.txt").write_text("wrong name", encoding="utf-8")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.txt").write_text("wrong folder", encoding="utf-8")
    assert CaptionSource().caption_for(tmp_path / "a.jpg") is None


def test_read_items_jsonl_resolves_against_the_file_folder(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    jsonl = tmp_path / "d" / "items.jsonl"
    absolute = str(tmp_path / "abs.jpg")
    jsonl.write_text(
        '{"path": "img/1.jpg", "caption": "one", "extra": 3}\n'
        "\n"
        f'{{"path": "{absolute}"}}\n'
        '{"path": "2.jpg", "caption": null}\n',
        encoding="utf-8",
    )
    items = read_items_jsonl(jsonl)
    assert items == [
        InputItem(os.path.join(str(tmp_path / "d"), "img/1.jpg"), "one", 1),
        InputItem(absolute, None, 3),
        InputItem(os.path.join(str(tmp_path / "d"), "2.jpg"), None, 4),
    ]
    src = CaptionSource.from_items(items, default="fallback", sidecars=False)
    assert src.caption_for(tmp_path / "d" / "img" / "1.jpg") == Caption("one", "input")
    assert src.caption_for(tmp_path / "d" / "2.jpg") == Caption("fallback", "option")


def test_read_items_jsonl_from_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('{"path": "rel.jpg", "caption": "c"}\n'))
    assert read_items_jsonl("-") == [InputItem("rel.jpg", "c", 1)]


@pytest.mark.parametrize(
    "text,message",
    [
        ('{"path": "a.jpg"}\nnot json\n', "items.jsonl:2: not valid JSON"),
        ('["a.jpg"]\n', 'items.jsonl:1: expected a JSON object with a "path" key'),
        ('{"caption": "x"}\n', 'items.jsonl:1: "path" must be a non-empty string'),
        ('{"path": ""}\n', 'items.jsonl:1: "path" must be a non-empty string'),
        ('{"path": "a.jpg", "caption": 5}\n', 'items.jsonl:1: "caption" must be a string or null'),
    ],
)
def test_read_items_jsonl_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_items_jsonl(path)
    assert str(info.value).startswith(str(path)[: -len("items.jsonl")] + message)


def test_read_items_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such input file"):
        read_items_jsonl(tmp_path / "nope.jsonl")


def test_a_fifo_sidecar_is_never_opened(tmp_path) -> None:
    """Issue #8: a FIFO named photo.txt beside photo.jpg would block a plain open() forever."""
    import os
    import threading

    from clipsieve.moderation.captions import _read_sidecar

    os.mkfifo(tmp_path / "photo.txt")
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(_read_sidecar(tmp_path / "photo.txt")),
                         daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive() and got == [None]
