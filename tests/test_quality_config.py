"""quality/config.py: quality.toml as a loaded, versioned value that heads receive."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipsieve import settings
from clipsieve.errors import ConfigError
from clipsieve.quality import QualityHead, quality_from_parts
from clipsieve.quality.config import default_quality_config, load_quality_config

SHIPPED = settings.QUALITY_CONFIG_PATH.read_text(encoding="utf-8")


def variant(tmp_path: Path, old: str, new: str) -> Path:
    assert old in SHIPPED
    p = tmp_path / "quality.toml"
    p.write_text(SHIPPED.replace(old, new, 1), encoding="utf-8")
    return p


def test_loaded_config_matches_the_shipped_constants() -> None:
    from clipsieve.quality import clipiqa, score, technical

    cfg = load_quality_config()
    assert cfg == load_quality_config() and cfg.version == score.QUALITY_VERSION
    assert dict(cfg.pairs) == dict(clipiqa.BUILTIN_PAIRS)
    assert cfg.components == technical.COMPONENTS
    assert default_quality_config() is default_quality_config()


def test_a_config_passed_in_changes_scores_and_version(tmp_path: Path) -> None:
    other = load_quality_config(variant(
        tmp_path, "[combine.technical]\npixels = 0.75\nclip_iqa = 0.25",
        "[combine.technical]\npixels = 0.0\nclip_iqa = 1.0"))
    feats = {"sharpness": 0.05, "noise": 1.0, "noise_ratio": 0.02, "luma_mean": 0.5,
             "shadow_clip": 0.0, "highlight_clip": 0.0, "contrast": 0.2,
             "colourfulness": 30.0, "blockiness": 0.0, "jpeg_quality": 90.0, "megapixels": 1.0}
    probs = {name: 0.5 for name in default_quality_config().pairs}
    a = quality_from_parts(feats, probs)
    b = quality_from_parts(feats, probs, config=other)
    assert a.technical != b.technical and b.technical == pytest.approx(b.components["technical_clip"])
    head = QualityHead(config=other)
    assert head.config is other


def test_bad_values_are_path_qualified_errors(tmp_path: Path) -> None:
    bad = variant(tmp_path, "[combine.technical]\npixels = 0.75", "[combine.technical]\npixels = -1")
    with pytest.raises(ConfigError, match=r"quality.toml: combine.technical.pixels: must be a number >= 0"):
        load_quality_config(bad)
    with pytest.raises(ConfigError, match="unreadable"):
        load_quality_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="unreadable"):
        QualityHead(config=tmp_path / "missing.toml")


def test_nothing_is_read_at_import_time() -> None:
    code = ("import clipsieve, clipsieve.cli, clipsieve.quality\n"
            "from clipsieve.quality.config import default_quality_config as d\n"
            "print(d.cache_info().misses)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_quality_head_pickles_with_its_config(tiny_clip: Path) -> None:
    import pickle

    from clipsieve import Analyzer

    an = Analyzer(model=str(tiny_clip), store=False)
    head = QualityHead().build(an)
    clone = pickle.loads(pickle.dumps(head))
    emb = np.eye(16, dtype=np.float32)[:2]
    assert [r.to_dict() for r in clone.compute(emb, [None, None])] == [
        r.to_dict() for r in head.compute(emb, [None, None])]
