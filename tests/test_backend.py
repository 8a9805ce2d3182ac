"""backends/clip.py: loading real checkpoints, refusing random weights, clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from clipsieve.backends.clip import ClipBackend, pick_precision
from clipsieve.errors import ConfigError, ModelError


def test_loads_checkpoint_folder_and_normalises(tiny_clip: Path) -> None:
    b = ClipBackend(str(tiny_clip), precision="float32")
    assert b.model_id == str(tiny_clip.resolve())
    t = b.encode_texts(["a photo of a cat", "a dog", ""])
    assert t.shape == (3, 16)
    assert np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    px = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    e = b.encode_pixels(px)
    assert e.shape == (2, 16) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert b.logit_scale == pytest.approx(np.exp(2.6592), rel=1e-3)


def test_missing_hub_model_gives_one_clear_error() -> None:
    with pytest.raises(ModelError) as info:
        ClipBackend("nobody/no-such-clip-model")
    msg = str(info.value)
    assert "nobody/no-such-clip-model" in msg and "CLIPSIEVE_MODEL" in msg
    assert "\n" not in msg


def test_folder_without_weights_is_refused(tiny_clip: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_clip, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="broken"):
        ClipBackend(str(broken))


def test_partial_weights_are_refused_not_randomly_filled(tiny_clip: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    partial = tmp_path / "partial"
    shutil.copytree(tiny_clip, partial)
    sd = load_file(str(partial / "model.safetensors"))
    del sd["visual_projection.weight"]
    save_file(sd, str(partial / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelError, match="randomly initialised"):
        ClipBackend(str(partial))


def test_precision_choice() -> None:
    assert pick_precision("cuda", "auto") == "float16"
    assert pick_precision("cpu", "float32") == "float32"
    assert pick_precision("cpu", "auto") in ("bfloat16", "float32")
    with pytest.raises(ConfigError):
        pick_precision("cpu", "float16")
    with pytest.raises(ConfigError):
        pick_precision("cpu", "int4")


def test_bfloat16_close_to_float32(tiny_clip: Path) -> None:
    px = np.random.default_rng(1).normal(size=(4, 3, 32, 32)).astype(np.float32)
    a = ClipBackend(str(tiny_clip), precision="float32").encode_pixels(px)
    b = ClipBackend(str(tiny_clip), precision="bfloat16").encode_pixels(px)
    assert (a * b).sum(1).min() > 0.98


def test_siglip_checkpoint_loads_and_scans(tmp_path: Path, photos: dict) -> None:
    """SigLIP: exact (h, w) resize without crop, max_length padding, embeddings as for CLIP."""
    import torch
    from transformers import AutoImageProcessor, AutoModel

    from clipsieve import Analyzer
    from clipsieve.testing import build_random_siglip

    folder = build_random_siglip(tmp_path / "siglip")
    an = Analyzer(model=str(folder), store=False, precision="float32", pixel_features=False)
    assert an.preprocess.resize_hw == (32, 32) and an.preprocess.crop_hw is None
    assert an.preprocess.mean == (0.5, 0.5, 0.5)
    (res,) = an.scan([photos["chelsea"]])
    assert res.ok and res.embedding.shape == (an.backend.dim,) == (32,)
    t = an.embed_texts(["a cat", "a photo of a dog"])
    assert np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    # the same image through transformers' own SigLIP processor and model
    from PIL import Image

    proc = AutoImageProcessor.from_pretrained(str(folder))
    net = AutoModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        out = net.get_image_features(**proc(images=[Image.open(photos["chelsea"]).convert("RGB")],
                                            return_tensors="pt"))
    ref = torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1)[0].numpy()
    assert float(res.embedding @ ref) > 0.99


@pytest.mark.parametrize("device", ["bogus", "mps", "cuda:x"])
def test_bad_or_absent_devices_are_config_errors(device: str) -> None:
    import torch

    from clipsieve.backends.clip import pick_device

    if device == "mps" and torch.backends.mps.is_available():  # pragma: no cover - macOS
        pytest.skip("this machine has MPS")
    with pytest.raises(ConfigError, match=f"device={device}") as info:
        pick_device(device)
    assert info.value.render(lambda p: "--" + p).startswith(f"--device={device}")
    assert pick_device("cpu") == "cpu"
