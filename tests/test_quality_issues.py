"""quality/issues.py: named image issues with the component that triggered each, and
``filter --where "issue('blurry')"`` on files never scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from clipsieve.cli import main
from clipsieve.quality.issues import ISSUE_NAMES, ISSUE_THRESHOLDS, detect_issues


def test_each_issue_names_its_component_and_threshold() -> None:
    comps = {"sharpness": 1.0, "exposure_under": 2.0, "exposure_over": 9.0, "contrast": 1.0,
             "colourfulness": 0.05, "jpeg": 1.0}
    got = {it["name"]: it for it in detect_issues(comps, 4000, 1000)}
    assert list(got) == ["blurry", "dark", "low_information", "grayscale", "odd_aspect_ratio",
                         "jpeg_artifacts"]
    assert got["blurry"] == {"name": "blurry", "component": "sharpness", "value": 1.0,
                             "threshold": ISSUE_THRESHOLDS["blurry"]["below"]}
    assert got["odd_aspect_ratio"]["component"] == "aspect_ratio"
    assert got["odd_aspect_ratio"]["value"] == 4.0
    assert detect_issues({"exposure_over": 0.5})[0]["name"] == "light"
    assert detect_issues({}, 60, 80) == [{"name": "odd_size", "component": "size", "value": 60,
                                         "threshold": 100.0, "side": "shorter"}]
    assert detect_issues({"sharpness": 9.0}, 800, 600) == []
    assert detect_issues({"sharpness": float("nan")}) == []  # not measured: no issue
    assert set(ISSUE_NAMES) >= {it["name"] for it in detect_issues(comps, 10, 10_000)}


def _img(folder: Path, name: str, arr: np.ndarray, **save: object) -> Path:
    p = folder / name
    Image.fromarray(arr.astype(np.uint8)).save(p, **save)
    return p


@pytest.fixture(scope="module")
def defects(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, Path]) -> Path:
    """Real photos with one defect each."""
    folder = tmp_path_factory.mktemp("defects")
    base = Image.open(photos["chelsea"]).convert("RGB")
    arr = np.asarray(base).astype(np.float32)
    base.save(folder / "good.png")
    base.filter(ImageFilter.GaussianBlur(8)).save(folder / "blurry.png")
    _img(folder, "dark.png", arr * 0.06)
    _img(folder, "light.png", np.clip(arr * 0.3 + 200, 0, 255))
    _img(folder, "flat.png", np.full((300, 400, 3), 128.0))
    base.convert("L").convert("RGB").save(folder / "gray.png")
    base.resize((1200, 200)).save(folder / "wide.png")
    base.resize((60, 45)).save(folder / "tiny.png")
    base.save(folder / "blocky.jpg", quality=3)
    return folder


def test_quality_head_reports_named_issues_on_real_images(defects: Path, tiny_clip: Path) -> None:
    from clipsieve.pipeline import Analyzer
    from clipsieve.quality import QualityHead

    an = Analyzer(model=str(tiny_clip), store=False)
    names = {}
    for r in an.scan([str(defects)], heads=[QualityHead()]):
        assert r.ok, r.error
        names[Path(r.path).stem] = {it["name"] for it in r.quality.issues}
        assert r.to_dict()["quality"]["issues"] == r.quality.issues
    assert "blurry" in names["blurry"] and "blurry" not in names["good"]
    assert "dark" in names["dark"] and "light" in names["light"]
    assert "low_information" in names["flat"]
    assert "grayscale" in names["gray"] and "grayscale" not in names["good"]
    assert "odd_aspect_ratio" in names["wide"] and "odd_size" in names["tiny"]
    assert "jpeg_artifacts" in names["blocky"]
    assert names["good"] & {"dark", "light", "blurry", "odd_size", "odd_aspect_ratio"} == set()


def test_filter_where_issue_on_files_never_scored(
    defects: Path, tiny_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's own `--where` examples work on a fresh store: quality is computed."""
    manifest = tmp_path / "m.csv"
    store = str(tmp_path / "fresh.sqlite")
    with pytest.raises(SystemExit) as info:
        main(["filter", str(defects), "--action", "none", "--where", "not issue('blurry')",
              "--where", "quality.aesthetic >= 0", "--manifest", str(manifest),
              "--model", str(tiny_clip), "--store", store])
    err = capsys.readouterr().err
    assert info.value.code == 0, err
    rows = manifest.read_text().splitlines()[1:]
    rejected = {Path(r.split(",")[0]).stem for r in rows if ",reject," in r}
    assert "blurry" in rejected and "good" not in rejected
    assert any("issue blurry (sharpness" in r for r in rows)
    # a typo in the issue name is a usage error that lists the issues
    with pytest.raises(SystemExit) as info:
        main(["filter", str(defects), "--action", "none", "--where", "issue('blury')",
              "--model", str(tiny_clip), "--store", store])
    assert info.value.code == 2 and 'did you mean "blurry"' in capsys.readouterr().err


def test_dedupe_marks_near_duplicates_as_an_issue(
    defects: Path, tiny_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("good.png", "gray.png"):
        (src / name).write_bytes((defects / name).read_bytes())
    (src / "copy.png").write_bytes((defects / "good.png").read_bytes())
    from clipsieve.filtering import filter_collection
    from clipsieve.pipeline import Analyzer

    an = Analyzer(model=str(tiny_clip), store=str(tmp_path / "s.sqlite"))
    run = filter_collection([str(src)], analyzer=an, action="none", dedupe=0.999)
    dup = [d for d in run.decisions if d.duplicate_of]
    assert len(dup) == 1
    issues = dup[0].result["quality"]["issues"]
    assert issues[-1] == {"name": "near_duplicate", "component": "embedding",
                          "of": dup[0].duplicate_of}
