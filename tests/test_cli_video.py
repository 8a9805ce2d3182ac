"""cli/video.py and videos in `clipsieve scan` / `export`, end to end with the tiny CLIP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import photo_array

from clipsieve.cli import main
from clipsieve.errors import EXIT_ITEMS_FAILED, EXIT_OK
from clipsieve.testing import write_test_video

pytest.importorskip("av")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shots = [(photo_array("astronaut"), 3), ("black", 2), (photo_array("coffee"), 2),
             ("freeze", 3)]
    return write_test_video(tmp_path_factory.mktemp("clip") / "clip.mp4", shots, fps=10)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_video_command_jsonl_then_from_store(tiny_clip: Path, clip: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "s.sqlite"
    args = ["video", str(clip), "--model", str(tiny_clip), "--store", str(store),
            "--format", "jsonl", "--thumbnail", str(tmp_path / "thumbs")]
    code, out, err = run(args, capsys)
    assert code == EXIT_OK, err
    (d,) = [json.loads(line) for line in out.splitlines()]
    assert d["kind"] == "video" and d["status"] == "ok" and d["cached"] is False
    assert (d["width"], d["height"], d["codec"], d["fps"]) == (320, 240, "h264", 10.0)
    assert d["duration_ms"] == 10000 and d["frames_decoded"] == 100
    assert [f["timestamp_ms"] for f in d["frames"]] == list(range(0, 10000, 1000))
    assert {"moderation", "quality"} <= set(d["frames"][0])
    assert isinstance(d["segments"], list) and d["verdict"]["decision"] in ("allow", "review", "block")
    assert {c["kind"] for c in d["quality"]["checks"]} == {"black", "frozen"}
    assert Path(d["thumbnail"]["path"]).is_file()
    assert "analysed 1 item" in err and "1 ok, 0 failed, 0 from store" in err
    code, out, err = run(args[:-2], capsys)
    again = json.loads(out)
    assert again["cached"] is True and again["frames"] == d["frames"]
    assert "1 from store" in err


def test_video_table_and_bad_file(tiny_clip: Path, clip: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_text("nope")
    code, out, err = run(["video", str(clip), str(bad), "--model", str(tiny_clip), "--no-store",
                          "--fps", "2"], capsys)
    assert code == EXIT_ITEMS_FAILED
    assert "clip.mp4" in out and "20 frames" in out and "verdict:" in out and "black" in out
    assert "bad.mp4: error: not_a_video" in out


def test_scan_takes_videos_beside_images_and_export_frames(
    tiny_clip: Path, clip: Path, tmp_path: Path, photos: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    shutil.copy(photos["coffee"], folder / "a.jpg")
    shutil.copy(clip, folder / "b.mov")
    store = tmp_path / "s.sqlite"
    code, out, err = run(["scan", str(folder), "--model", str(tiny_clip), "--store", str(store),
                          "--max-frames", "4"], capsys)
    assert code == EXIT_OK, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["a.jpg", "b.mov"]
    assert "kind" not in rows[0] and rows[1]["kind"] == "video" and len(rows[1]["frames"]) == 4
    code, out, err = run(["export", "--store", str(store), "--format", "jsonl", "--frames"],
                         capsys)
    exported = [json.loads(line) for line in out.splitlines()]
    assert [r.get("kind") for r in exported] == [None, "video"] + ["frame"] * 4
    assert "frames" not in exported[1]


def test_frame_embeddings_are_kept_per_encoder(tiny_clip: Path, clip: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A `video --encoder onnx-int8` run never re-scores from torch frame embeddings (nor the
    other way round): the encoder is part of the frames' key (store migration 10), and the
    video result's envelope records encoder, precision and device as an image's does."""
    pytest.importorskip("onnxruntime")
    store = tmp_path / "s.sqlite"
    base = ["video", str(clip), "--model", str(tiny_clip), "--store", str(store),
            "--format", "jsonl", "--max-frames", "3"]

    def once(encoder: str) -> dict:
        code, out, err = run([*base, "--encoder", encoder], capsys)
        assert code == EXIT_OK, err
        (d,) = [json.loads(line) for line in out.splitlines()]
        assert d["status"] == "ok" and d["kind"] == "video"
        return d

    torch1 = once("torch")
    assert not torch1["cached"] and torch1["encoder"] == "torch"
    assert torch1["precision"] and torch1["device"] == "cpu"
    int8 = once("onnx-int8")
    assert not int8["cached"], "served from the torch encoder's frame embeddings"
    assert (int8["encoder"], int8["precision"]) == ("onnx-int8", "int8")
    torch2, int8_2 = once("torch"), once("onnx-int8")
    assert torch2["cached"] and torch2["encoder"] == "torch"
    assert torch2["precision"] == torch1["precision"] and torch2["frames"] == torch1["frames"]
    assert int8_2["cached"] and (int8_2["encoder"], int8_2["precision"]) == ("onnx-int8", "int8")
    assert int8_2["frames"] == int8["frames"]
    from clipsieve.store import Store

    with Store(store) as s:
        rows = s.query("SELECT encoder, COUNT(*) AS n FROM video_frames GROUP BY encoder "
                       "ORDER BY encoder")
    assert rows == [{"encoder": "onnx-int8", "n": 3}, {"encoder": "torch", "n": 3}]
