"""store.py: migrations, keys, WAL, text embeddings."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from clipsieve.errors import StoreError
from clipsieve.store import MIGRATIONS, Store


def test_migrations_recorded_once(tmp_path: Path) -> None:
    db = tmp_path / "s.sqlite"
    with Store(db) as s:
        assert s.migrations() == [(v, n) for v, n, _ in MIGRATIONS]
    with Store(db) as s:  # reopening applies nothing twice
        assert len(s.migrations()) == len(MIGRATIONS)
    mode = sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_embeddings_keyed_by_hash_model_and_preprocessing(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.sqlite")
    v = np.arange(4, dtype=np.float32)
    s.put_items([{"path": "a.jpg", "size": 3, "mtime_ns": 7, "sha256": "h", "width": 2,
                  "height": 1, "format": "JPEG", "features": {"x": 1.0},
                  "features_version": "t1", "embedding": v}], model="m", prep="p1")
    assert np.array_equal(s.get_embedding("h", "m", "p1"), v)
    assert s.get_embedding("h", "m", "p2") is None
    assert s.get_embedding("h", "other", "p1") is None
    assert s.lookup_file("a.jpg", 3, 7) == "h"
    assert s.lookup_file("a.jpg", 3, 8) is None  # touched file: re-hash
    assert s.get_image("h")["features"] == {"x": 1.0}
    assert set(s.get_embeddings(["h", "zz"], "m", "p1")) == {"h"}


def test_text_embeddings_and_results_roundtrip(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.sqlite")
    s.put_text_embeddings("m", {"a cat": np.ones(3, np.float32)})
    assert list(s.get_text_embeddings("m", ["a cat", "a dog"])) == ["a cat"]
    b, a = str(tmp_path / "b"), str(tmp_path / "a")
    s.put_results([{"path": b, "status": "ok"}, {"path": a, "status": "error",
                    "error": {"code": "truncated", "message": "x"}}], model="m")
    assert [r["path"] for r in s.iter_results("m")] == [a, b]
    assert s.execute("SELECT error_code FROM results WHERE path=?", (a,)) == [("truncated",)]


def test_files_and_results_are_named_by_absolute_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`a.jpg` typed in two folders is two files, never one cached under the other's name."""
    s = Store(tmp_path / "s.sqlite")
    for folder, sha in (("x3", "h3"), ("x4", "h4")):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        s.put_items([{"path": "a.jpg", "size": 5, "mtime_ns": 9, "sha256": sha}],
                    model="m", prep="p")
        s.put_results([{"path": "a.jpg", "status": "ok", "sha256": sha}], model="m")
    monkeypatch.chdir(tmp_path / "x3")
    assert s.lookup_file("a.jpg", 5, 9) == "h3"
    assert s.get_result("a.jpg", "m")["path"] == str(tmp_path / "x3" / "a.jpg")
    assert s.lookup_file(str(tmp_path / "x4" / "a.jpg"), 5, 9) == "h4"
    assert len(list(s.iter_results("m"))) == 2


def test_unopenable_store_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(StoreError, match="cannot open store"):
        Store(tmp_path / "dir.sqlite")


def test_results_keep_head_fields_of_earlier_commands_for_the_same_content(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.sqlite")
    base = {"path": "a.jpg", "status": "ok", "sha256": "h1", "timing": {}}
    s.put_results([{**base, "moderation": {"decision": "allow"}}], model="m")
    s.put_results([{**base, "quality": {"score": 7.0}}], model="m")
    got = s.get_result("a.jpg", "m")
    assert got["moderation"] == {"decision": "allow"} and got["quality"] == {"score": 7.0}
    s.put_results([{**base, "quality": {"score": 3.0}}], model="m")  # recomputed: replaced
    assert s.get_result("a.jpg", "m")["quality"] == {"score": 3.0}
    s.put_results([{**base, "sha256": "h2"}], model="m")  # the file changed: nothing carried
    assert "moderation" not in s.get_result("a.jpg", "m")
    s.put_results([{**base, "sha256": "h2", "status": "error",
                    "error": {"code": "truncated", "message": "x"}}], model="m")
    assert "quality" not in s.get_result("a.jpg", "m")


def test_video_frames_and_samplings(tmp_path: Path) -> None:
    s = Store(tmp_path / "s.sqlite")
    assert (5, "video frames and samplings") in s.migrations()
    rows = [(t, np.full(3, t, dtype=np.float32), {"metrics": {"diff_prev": t}}) for t in (0, 1000)]
    s.put_video_frames("v", rows, model="m", prep="p", precision="float32", device="cpu")
    got = s.get_video_frames("v", "m", "p")
    assert list(got) == [0, 1000]
    assert np.array_equal(got[1000][0], np.full(3, 1000, dtype=np.float32))
    assert got[1000][1:] == ({"metrics": {"diff_prev": 1000}}, "cpu", "float32")
    assert s.get_video_frames("v", "m", "other") == {}
    assert s.get_video_sampling("v", "fps:1", "m", "p") is None
    s.put_video_sampling("v", "fps:1", model="m", prep="p", info={"duration_ms": 2000},
                         timestamps=[0, 1000])
    assert s.get_video_sampling("v", "fps:1", "m", "p") == ({"duration_ms": 2000}, [0, 1000])
    assert s.get_video_sampling("v", "keyframes", "m", "p") is None
    s.record_file("clip.mp4", 10, 20, "v")
    assert s.lookup_file("clip.mp4", 10, 20) == "v"
    assert s.counts()["video_frames"] == 2
    # frames are kept per encoder: another encoder's frames are another entry
    assert s.get_video_frames("v", "m", "p", encoder="onnx-int8") == {}
    s.put_video_frames("v", rows[:1], model="m", prep="p", precision="int8", device="cpu",
                       encoder="onnx-int8")
    assert list(s.get_video_frames("v", "m", "p", encoder="onnx-int8")) == [0]
    assert s.get_video_frames("v", "m", "p", encoder="onnx-int8")[0][3] == "int8"
    assert s.get_video_frames("v", "m", "p")[0][3] == "float32"  # torch's untouched
    assert s.counts()["video_frames"] == 3


def test_frames_stored_before_migration_10_are_the_torch_encoders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clipsieve.store as store_mod

    db = tmp_path / "old.sqlite"
    monkeypatch.setattr(store_mod, "MIGRATIONS", [m for m in MIGRATIONS if m[0] < 10])
    with Store(db) as old:  # a store as the previous clipsieve left it
        cols = [r[1] for r in old.execute("PRAGMA table_info(video_frames)")]
        assert "encoder" not in cols
        old.execute(
            "INSERT INTO video_frames(sha256,timestamp_ms,model,prep,dim,vector,features,"
            "precision,device,created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            ("v", 500, "m", "p", 3, np.ones(3, np.float32).tobytes(), None, "float32", "cpu",
             1.0),
        )
    monkeypatch.undo()
    with Store(db) as s:
        assert (10, "video frames keyed by encoder") in s.migrations()
        got = s.get_video_frames("v", "m", "p", encoder="torch")
        assert list(got) == [500] and np.array_equal(got[500][0], np.ones(3, np.float32))
        assert got[500][2:] == ("cpu", "float32")
        assert s.get_video_frames("v", "m", "p", encoder="onnx-int8") == {}


def test_paths_that_are_not_utf8_are_stored_looked_up_and_moved(tmp_path) -> None:
    import os

    from clipsieve.paths import from_json
    from clipsieve.store import Store

    odd = str(tmp_path / os.fsdecode(b"a\xff.jpg"))
    moved = str(tmp_path / os.fsdecode(b"b\xfe.jpg"))
    with Store(tmp_path / "s.sqlite") as s:
        s.put_items([{"path": odd, "size": 3, "mtime_ns": 7, "sha256": "h"}], model="m", prep="p")
        s.put_results([{"path": odd, "status": "ok", "sha256": "h", "quality": {"score": 1}}],
                      model="m")
        assert s.lookup_file(odd, 3, 7) == "h"
        assert from_json(s.get_result(odd, "m")) == odd
        s.move_path(odd, moved)
        assert s.lookup_file(odd, 3, 7) is None and s.lookup_file(moved, 3, 7) == "h"
        (r,) = list(s.iter_results())
        assert from_json(r) == moved and r["path"].endswith("b\ufffd.jpg")
        assert r["quality"] == {"score": 1}


def test_embeddings_keyed_by_encoder_and_old_rows_migrate_as_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clipsieve.store as store_mod

    db = tmp_path / "old.sqlite"
    before = [m for m in MIGRATIONS if m[1] != "embeddings keyed by encoder"]
    monkeypatch.setattr(store_mod, "MIGRATIONS", before)
    v = np.arange(4, dtype=np.float32)
    with Store(db) as s:  # a store as it was before the encoder column
        s._db.execute(
            "INSERT INTO embeddings(sha256,model,prep,dim,vector,precision,device,created_at) "
            "VALUES ('h','m','p',4,?,'float32','cpu',1.0)", (v.tobytes(),))
        s._db.execute("INSERT INTO text_embeddings(model,text,vector) VALUES ('m','cat',?)",
                      (v.tobytes(),))
    monkeypatch.setattr(store_mod, "MIGRATIONS", MIGRATIONS)
    with Store(db) as s:
        assert s.migrations()[-1] == (MIGRATIONS[-1][0], MIGRATIONS[-1][1])
        assert np.array_equal(s.get_embedding("h", "m", "p"), v)  # the torch entry
        assert s.get_embedding_row("h", "m", "p", encoder="torch")[1:] == ("cpu", "float32")
        assert s.get_embedding("h", "m", "p", encoder="onnx-int8") is None
        assert set(s.get_text_embeddings("m", ["cat"])) == {"cat"}
        assert s.get_text_embeddings("m", ["cat"], encoder="onnx") == {}
        w = v + 1
        s.put_items([{"path": "a.jpg", "sha256": "h", "embedding": w}], model="m", prep="p",
                    precision="int8", device="cpu", encoder="onnx-int8")
        assert np.array_equal(s.get_embedding("h", "m", "p", encoder="onnx-int8"), w)
        assert np.array_equal(s.get_embedding("h", "m", "p"), v)  # a different entry
        assert s.get_embedding_row("h", "m", "p", encoder="onnx-int8")[2] == "int8"
        assert s.embedding_kinds() == [("m", "p", 1)]
        assert s.embedding_kinds("onnx-int8") == [("m", "p", 1)]
        assert [shas for shas, _ in s.iter_embeddings("m", "p", encoder="onnx-int8")] == [["h"]]
        assert s.embedding_fingerprint("m", "p", encoder="onnx")[0] == 0
        s.put_text_embeddings("m", {"cat": w}, encoder="onnx")
        assert np.array_equal(s.get_text_embeddings("m", ["cat"], encoder="onnx")["cat"], w)
        assert np.array_equal(s.get_text_embeddings("m", ["cat"])["cat"], v)


def test_get_embeddings_is_keyed_by_preprocessing_version(tmp_path: Path) -> None:
    """Dedupe reads many embeddings at once: another preprocessing's vector must not leak in."""
    s = Store(tmp_path / "s.sqlite")
    row = {"path": "a.jpg", "size": 3, "mtime_ns": 7, "sha256": "h", "width": 2, "height": 1,
           "format": "JPEG", "features": None, "features_version": None}
    old, new = np.ones(4, np.float32), np.arange(4, dtype=np.float32)
    s.put_items([{**row, "embedding": old}], model="m", prep="p-old")
    s.put_items([{**row, "embedding": new}], model="m", prep="p-new")
    assert np.array_equal(s.get_embeddings(["h"], "m", "p-new")["h"], new)
    assert np.array_equal(s.get_embeddings(["h"], "m", "p-old")["h"], old)
    assert s.get_embeddings(["h"], "m", "p-other") == {}
    s.close()
