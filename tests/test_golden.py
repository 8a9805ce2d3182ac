"""Golden outputs: scan, moderate, classify, quality (and the training commands) on real photos.

``tests/data/golden.json`` was written by this test (``CLIPSIEVE_UPDATE_GOLDEN=1``) from the
code *before* the analysis kernel was restructured (issue #10). The restructuring must keep every
output the same: the JSONL of each command (paths reduced to file names, the model folder to
``MODEL``, timings dropped), and the trained probe / quality head. Strings, keys, decisions and
the order of everything are compared exactly; floats to 1e-4 absolute or 1e-5 relative (see
``ABS_TOL``), so the test does not depend on last-bit agreement of float arithmetic across
machines.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import photo_array
from PIL import Image, ImageOps

from clipsieve.cli import main

GOLDEN = Path(__file__).parent / "data" / "golden.json"
UPDATE = os.environ.get("CLIPSIEVE_UPDATE_GOLDEN") == "1"
#: Compare floats bitwise (same machine, same libraries as the golden file).
EXACT = os.environ.get("CLIPSIEVE_GOLDEN_EXACT") == "1"
#: Float tolerance across CPUs. CLIP-IQA components and moderation probabilities are softmaxes
#: at logit scale 100, which multiply a cosine difference by up to 100 x 1/4 = 25: float32
#: cosines that differ by a few 1e-7 between torch's kernels (no SIMD, AVX2, AVX-512, AMX) move
#: a probability by up to ~1e-5, i.e. 1e-4 on the 0-10 quality scale. Measured on the tiny test
#: model against this file: AVX2 1.6e-5, no-SIMD (ATEN_CPU_CAPABILITY=default) 5.9e-5 (0-10).
ABS_TOL, REL_TOL = 1e-4, 1e-5


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:  # pragma: no cover
            code = 0
    return code, out.getvalue(), err.getvalue()


def _hash(value: Any) -> str:
    """A trained weight file's sha256 changes with the weights' last bits (another CPU's
    kernels train other last bits): check its form; the weights are compared within the
    tolerance."""
    assert isinstance(value, str) and len(value) == 64 and int(value, 16) >= 0, value
    return "SHA256"


def normalise(obj: Any, model: str) -> Any:
    if isinstance(obj, dict):
        # provenance (issue #9) holds run ids and the weights fingerprint: new in every run
        return {k: _hash(v) if k == "weights_sha256" else normalise(v, model)
                for k, v in obj.items() if k not in ("timing", "provenance")}
    if isinstance(obj, list):
        return [normalise(v, model) for v in obj]
    if isinstance(obj, str):
        if obj == model:
            return "MODEL"
        if os.sep in obj and os.path.isabs(obj):
            return Path(obj).name
    return obj


def rows(text: str, model: str) -> list[Any]:
    return [normalise(json.loads(line), model) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def outputs(tiny_clip: Path, photos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("golden")
    imgs = root / "imgs"
    imgs.mkdir()
    for p in photos.values():
        shutil.copy(p, imgs / p.name)
    gray = Image.fromarray(photo_array("camera")).convert("L")
    gray.save(imgs / "camera.png")
    (imgs / "coffee.txt").write_text("a cup of coffee on a saucer", encoding="utf-8")
    (imgs / "zz-broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    model = str(Path(tiny_clip).resolve())
    common = ["--model", str(tiny_clip), "--device", "cpu", "--precision", "float32"]
    out: dict[str, Any] = {}

    def cmd(name: str, argv: list[str]) -> None:
        code, stdout, stderr = run(argv)
        out[name] = {"code": code, "rows": rows(stdout, model)}

    store = str(root / "store.sqlite")
    cmd("scan", ["scan", str(imgs), "--embeddings", "--labels", "cat,dog,rocket,cup of coffee",
                 "--caption", "an astronaut in a space suit", *common, "--no-store",
                 "--batch-size", "3"])
    cmd("scan_store", ["scan", str(imgs), *common, "--store", store])
    cmd("scan_cached", ["scan", str(imgs), *common, "--store", store, "--templates", "single",
                        "--labels", "cat,dog"])
    cmd("moderate", ["moderate", str(imgs), "--format", "jsonl", *common, "--no-store"])
    from clipsieve.moderation import load_policy

    base = load_policy("default")
    strict = root / "strict.toml"
    base.with_thresholds({c: {"review": 0.08, "block": 0.12} for c in base.categories},
                         name="strict").save(strict)
    cmd("moderate_strict", ["moderate", str(imgs), "--format", "jsonl", "--policy", str(strict),
                            "--caption", "cheap pills, click here", "--no-sidecars", *common,
                            "--store", store])
    cmd("classify", ["classify", str(imgs), "--labels", "cat,dog,car", "--format", "jsonl",
                     "--template", "a photo of a {}.", "--template", "a blurry photo of a {}.",
                     *common, "--no-store"])
    cmd("quality", ["quality", str(imgs), "--format", "jsonl", *common, "--no-store"])

    # training: a probe over two classes of augmented photos, and a quality head over ratings
    train = root / "train"
    ratings = ["path,score"]
    for label, photo in (("space", "astronaut"), ("drink", "coffee")):
        (train / label).mkdir(parents=True)
        im = Image.fromarray(photo_array(photo))
        w, h = im.size
        for i, aug in enumerate([im, ImageOps.mirror(im), ImageOps.flip(im),
                                 im.crop((0, 0, int(w * .8), int(h * .8))),
                                 im.crop((int(w * .2), int(h * .2), w, h))]):
            path = train / label / f"{photo}{i}.png"
            aug.convert("RGB").save(path)
            ratings.append(f"{label}/{photo}{i}.png,{(i * 7 + len(label)) % 10 + 1}")
    (train / "ratings.csv").write_text("\n".join(ratings) + "\n", encoding="utf-8")
    probe = root / "probe.npz"
    code, _, _ = run(["train-probe", str(train), "--out", str(probe), *common, "--store", store,
                      "--folds", "3", "--quiet"])
    out["trained_probe"] = {"code": code, **_npz(probe)}
    head = root / "head.npz"
    code, _, _ = run(["train-quality", str(train / "ratings.csv"), "--out", str(head), *common,
                      "--store", store, "--folds", "3", "--quiet"])
    out["trained_quality_head"] = {"code": code, **_npz(head)}
    cmd("classify_probe", ["classify", str(imgs), "--probe", str(probe), "--format", "jsonl",
                           *common, "--store", store])
    cmd("quality_head", ["quality", str(imgs), "--quality-head", str(head), "--format", "jsonl",
                         *common, "--store", store])
    return out


def _npz(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k].tolist() for k in sorted(z.files)}
    side = json.loads(path.with_suffix(".json").read_text())
    return {"arrays": arrays, "sidecar": side}


def assert_same(got: Any, want: Any, where: str = "") -> None:
    if isinstance(want, float) or isinstance(got, float):
        assert isinstance(got, (int, float)) and isinstance(want, (int, float)), where
        if EXACT:
            assert got == want, f"{where}: {got!r} != {want!r} (exact)"
        elif math.isnan(want):
            assert math.isnan(got), where
        else:
            assert math.isclose(got, want, rel_tol=REL_TOL, abs_tol=ABS_TOL), \
                f"{where}: {got} != {want}"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: keys {list(got)}"
        for k in want:
            assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: length"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def test_outputs_match_golden(outputs: dict[str, Any], tiny_clip: Path) -> None:
    model = str(Path(tiny_clip).resolve())
    for section in ("trained_quality_head", "trained_probe"):
        side = dict(outputs[section]["sidecar"])
        for key in ("created", "created_at", "clipsieve_version", "trained_at"):
            side.pop(key, None)
        outputs[section] = {**outputs[section], "sidecar": normalise(side, model)}
    if UPDATE:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(outputs, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        pytest.skip("golden file written")
    want = json.loads(GOLDEN.read_text(encoding="utf-8"))
    want = normalise(want, model)
    assert list(outputs) == list(want)
    for name in want:
        assert_same(outputs[name], want[name], name)


def test_golden_covers_every_head_and_an_error(outputs: dict[str, Any]) -> None:
    scan = outputs["scan"]["rows"]
    assert {"moderation", "quality", "labels", "embedding"} <= set(scan[0])
    assert scan[-1]["status"] == "error"
    assert all(r["cached"] for r in outputs["scan_cached"]["rows"] if r["status"] == "ok")
    assert "probe" in outputs["classify_probe"]["rows"][0]
    assert outputs["quality_head"]["rows"][0]["quality"]["head"] is not None
