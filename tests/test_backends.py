"""backends/: the Encoder protocol and the create/register/list registry."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from clipsieve import Analyzer
from clipsieve.backends import (
    ClipBackend,
    Encoder,
    _registry,
    create_encoder,
    encoder_entry,
    is_encoder,
    list_encoders,
    register_encoder,
)
from clipsieve.errors import ConfigError


def test_torch_is_registered_and_creates_a_working_encoder(tiny_clip: Path) -> None:
    assert "torch" in list_encoders() and is_encoder("torch")
    enc = create_encoder("torch", str(tiny_clip), device="cpu", precision="float32")
    assert isinstance(enc, Encoder) and isinstance(enc, ClipBackend)
    from PIL import Image

    assert (enc.kind, enc.model_id, enc.device, enc.precision) == (
        "torch", str(tiny_clip.resolve()), "cpu", "float32")
    assert enc.logit_scale > 0 and enc.preprocess(Image.new("RGB", (5, 5))).shape == (3, 32, 32)

    px = np.stack([enc.preprocess(Image.new("RGB", (40, 50), c)) for c in ("red", "blue")])
    emb = enc.encode_pixels(px)
    txt = enc.encode_texts(["a red square", "a blue square", "a cat"])
    assert emb.shape == (2, 16) and txt.shape == (3, 16)
    assert emb.dtype == txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, rtol=1e-5)


def test_unknown_kind_is_a_config_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"unknown encoder 'trch'.*did you mean 'torch'"):
        create_encoder("trch", "whatever")
    with pytest.raises(ConfigError, match="unknown encoder"):
        Analyzer(model="x", encoder="nope", store=False)


class _FakeEncoder:
    kind = "fake-test"

    def __init__(self, model: str, device: str, precision: str) -> None:
        from clipsieve.media.preprocess import Preprocess

        self.model_id, self.device, self.precision = model, device, precision
        self.preprocess = Preprocess.from_config({"size": {"shortest_edge": 8},
                                                  "crop_size": {"height": 8, "width": 8}})
        self.logit_scale = 50.0

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        v = pixels.reshape(len(pixels), -1)[:, :4].astype(np.float32) + 1.0
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        v = np.array([[len(t), 1.0, t.count("a") + 1.0, 2.0] for t in texts], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture()
def fake_kind() -> object:
    calls: list[tuple[str, str, str]] = []

    def factory(model: str, *, device: str = "auto", precision: str = "auto") -> _FakeEncoder:
        calls.append((model, device, precision))
        time.sleep(0.05)  # wide window for a race between threads
        return _FakeEncoder(model, device, precision)

    register_encoder("fake-test", factory, description="a test encoder")
    yield calls
    _registry._REGISTRY.pop("fake-test", None)


def test_register_a_kind_and_use_it_in_the_analyzer(fake_kind: list) -> None:
    assert "fake-test" in list_encoders() and encoder_entry("fake-test").description
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("fake-test", lambda *a, **k: None)
    an = Analyzer(model="some/model", encoder="fake-test", device="cpu", store=False)
    assert not an.model_loaded and an.encoder_kind == "fake-test"
    results = an.analyze([np.full((10, 12, 3), 200, np.uint8)], ids=["x"])
    assert results[0].ok and results[0].path == "x" and results[0].embedding.shape == (4,)
    assert fake_kind == [("some/model", "cpu", "auto")]
    assert isinstance(an.encoder, Encoder) and an.logit_scale == 50.0


def test_encoder_loads_once_under_concurrent_first_use(fake_kind: list) -> None:
    an = Analyzer(model="m", encoder="fake-test", store=False)
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(an.encoder)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake_kind) == 1 and len({id(e) for e in seen}) == 1


def test_an_encoder_instance_can_be_given_directly() -> None:
    enc = _FakeEncoder("inst/model", "cpu", "float32")
    an = Analyzer(encoder=enc, store=False)
    assert an.model_loaded and an.encoder is enc and an.model_id == "inst/model"
    assert an.encoder_kind == "fake-test" and an.precision == "float32"


def test_model_errors_name_the_argument_and_the_cli_names_its_flag() -> None:
    from clipsieve.cli import option_flag
    from clipsieve.errors import ModelError

    with pytest.raises(ModelError) as info:
        create_encoder("torch", "./no/such/checkpoint", device="cpu")
    assert "--model" not in str(info.value) and "pass the model argument" in str(info.value)
    assert "Fix: pass --model with an existing" in info.value.render(option_flag)


# -- batches split over single-threaded slices (backends/_split.py) ---------------------------
def test_batch_splitter_keeps_row_order_with_uneven_slices() -> None:
    from clipsieve.backends._split import BatchSplitter

    sp = BatchSplitter(3, "t")
    assert sp.bounds(7) == [(0, 2), (2, 4), (4, 7)]
    assert sp.bounds(2) == [(0, 1), (1, 2)] and sp.bounds(1) == [(0, 1)]
    seen: list[str] = []

    def rows(x: np.ndarray) -> np.ndarray:
        seen.append(threading.current_thread().name)
        time.sleep(0.01 * (3 - len(x)))  # the shorter slices finish last
        return x * 2

    x = np.arange(7 * 2).reshape(7, 2)
    assert (sp.run(rows, x) == x * 2).all()
    assert len(seen) == 3 and all(n.startswith("t") for n in seen)
    assert (sp.run(rows, x[:1]) == x[:1] * 2).all()  # one row: no thread at all


@pytest.fixture()
def torch_threads() -> object:
    """Put torch's thread count and the splitting state back after a test."""
    import torch

    from clipsieve.backends import clip

    before, remembered = torch.get_num_threads(), clip._TORCH_THREADS
    yield torch
    clip._TORCH_THREADS = remembered
    torch.set_num_threads(before)


def test_torch_split_batches_give_the_rows_of_one_call(
    tiny_clip: Path, torch_threads: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the CPU the torch encoder runs a batch as `threads` single-threaded slices at once
    (torch.set_num_threads(1) for the process): each image and text gets the embedding one
    call over the whole batch gives, in order; CLIPSIEVE_SPLIT_BATCHES=0 turns it off."""
    from conftest import photo_array
    from PIL import Image

    from clipsieve.backends.clip import ClipBackend

    torch = torch_threads
    split = ClipBackend(str(tiny_clip), device="cpu", precision="float32", threads=3)
    assert split._splitter is not None and split.threads == 3
    assert torch.get_num_threads() == 1  # type: ignore[attr-defined]
    monkeypatch.setenv("CLIPSIEVE_SPLIT_BATCHES", "0")
    whole = ClipBackend(str(tiny_clip), device="cpu", precision="float32", threads=2)
    assert whole._splitter is None and torch.get_num_threads() == 2  # type: ignore[attr-defined]
    names = ("astronaut", "coffee", "chelsea", "rocket")
    px = np.stack([whole.preprocess(Image.fromarray(photo_array(n)).rotate(r))
                   for n in names for r in (0, 90)])[:7]
    a, b = split.encode_pixels(px), whole.encode_pixels(px)
    assert a.shape == b.shape == (7, whole.dim)
    cos = (a * b).sum(axis=1)
    assert cos.min() >= 0.99999, cos
    others = a @ b.T - np.diag(np.diag(a @ b.T))
    assert (cos[:, None] > others).all()  # same order, not a permutation
    texts = [f"a photo of {w}" for w in ("a cat", "a dog", "a rocket", "coffee", "a person")]
    ta, tb = split.encode_texts(texts, batch_size=4), whole.encode_texts(texts, batch_size=4)
    assert (ta * tb).sum(axis=1).min() >= 0.99999
    assert split.encode_pixels(px[:1]).shape == (1, whole.dim)
    # a later encoder in the same process splits over the count torch had first
    monkeypatch.delenv("CLIPSIEVE_SPLIT_BATCHES")
    again = ClipBackend(str(tiny_clip), device="cpu", precision="float32")
    from clipsieve.backends import clip

    assert again.threads == clip._TORCH_THREADS and again._splitter is not None
