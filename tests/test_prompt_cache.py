"""backends/prompt_cache.py: prompt embeddings in the cache folder, per model and encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clipsieve.backends.prompt_cache import PromptCache


def test_roundtrip_per_model_and_encoder(tiny_clip: Path, tmp_path: Path) -> None:
    model = str(tiny_clip.resolve())
    c = PromptCache(model, "onnx", tmp_path)
    assert c.get(["a cat"]) == {}
    v = np.arange(4, dtype=np.float32)
    c.put({"a cat": v, "a dog": v + 1})
    again = PromptCache(model, "onnx", tmp_path)  # a new process reads the file
    got = again.get(["a cat", "a dog", "a car"])
    assert set(got) == {"a cat", "a dog"} and np.array_equal(got["a dog"], v + 1)
    assert PromptCache(model, "torch", tmp_path).get(["a cat"]) == {}  # another encoder
    assert c.path is not None and c.path.parent == tmp_path / "prompts"
    assert [p.name for p in c.path.parent.iterdir()] == [c.path.name]  # no temporary left


def test_unreadable_file_is_ignored_and_replaced(tiny_clip: Path, tmp_path: Path) -> None:
    c = PromptCache(str(tiny_clip.resolve()), "torch", tmp_path)
    assert c.path is not None
    c.path.parent.mkdir(parents=True)
    c.path.write_bytes(b"not a zip file")
    assert c.get(["x"]) == {}
    c.put({"x": np.ones(3, np.float32)})
    assert set(PromptCache(str(tiny_clip.resolve()), "torch", tmp_path).get(["x"])) == {"x"}


def test_model_not_on_disk_caches_nothing(tmp_path: Path) -> None:
    c = PromptCache("nobody/not-downloaded", "torch", tmp_path)
    c.put({"x": np.ones(3, np.float32)})
    assert c.path is None and c.get(["x"]) == {}
    assert not (tmp_path / "prompts").exists()


def test_prompts_embedded_at_one_precision_are_not_served_at_another(
    tiny_clip: Path, tmp_path: Path
) -> None:
    """A bfloat16 ("auto" on CPUs with AMX) run must not hand its prompt embeddings to a
    float32 run: that changed the golden outputs depending on test order."""
    model = str(tiny_clip.resolve())
    PromptCache(model, "torch", tmp_path, precision="auto").put({"a cat": np.ones(3, np.float32)})
    assert PromptCache(model, "torch", tmp_path, precision="float32").get(["a cat"]) == {}
    assert set(PromptCache(model, "torch", tmp_path, precision="auto").get(["a cat"])) == {"a cat"}


def test_a_cache_folder_that_cannot_be_searched_only_costs_speed(
    tiny_clip: Path, tmp_path: Path, monkeypatch: object
) -> None:
    """Another user's 0700 cache folder: is_file() raises EACCES; the run must go on."""
    import pytest

    c = PromptCache(str(tiny_clip.resolve()), "torch", tmp_path)
    c.put({"x": np.ones(3, np.float32)})

    def denied(self: Path) -> bool:
        raise PermissionError(13, "Permission denied", str(self))

    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(Path, "is_file", denied)
        assert PromptCache(str(tiny_clip.resolve()), "torch", tmp_path).get(["x"]) == {}
    finally:
        mp.undo()
