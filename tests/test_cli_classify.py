"""`clipsieve classify` and `clipsieve train-probe` end to end on the tiny random CLIP.

Training data are real photos: two classes (astronaut vs coffee), each made of six
augmentations (flips, crops, a rotation) of one photo, written as PNG class folders.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import photo_array
from PIL import Image, ImageOps

from clipsieve.cli import main
from clipsieve.errors import EXIT_FATAL, EXIT_ITEMS_FAILED, EXIT_OK, EXIT_USAGE

CLASSES = {"space": "astronaut", "drink": "coffee"}


def augmentations(im: Image.Image) -> list[Image.Image]:
    w, h = im.size
    return [
        im,
        ImageOps.mirror(im),
        ImageOps.flip(im),
        im.crop((0, 0, int(w * 0.8), int(h * 0.8))),
        im.crop((int(w * 0.2), int(h * 0.2), w, h)),
        ImageOps.mirror(im.rotate(10)),
    ]


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train")
    for label, photo in CLASSES.items():
        (root / label).mkdir()
        for i, im in enumerate(augmentations(Image.fromarray(photo_array(photo)))):
            im.convert("RGB").save(root / label / f"{photo}{i}.png")
    return root


@pytest.fixture(scope="module")
def other_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny CLIP (other seed): a probe trained on tiny_clip must refuse it."""
    from clipsieve.testing import build_random_clip

    return build_random_clip(tmp_path_factory.mktemp("tiny-clip-b"), "tiny", seed=1)


@pytest.fixture(scope="module")
def trained(tiny_clip: Path, train_dir: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, object]:
    """`train-probe` run once, in-process; its output and files."""
    out = tmp_path_factory.mktemp("probe") / "pets.npz"
    store = out.parent / "store.sqlite"
    code, stdout, stderr = run(["train-probe", str(train_dir), "--out", str(out), "--model",
                                str(tiny_clip), "--store", str(store), "--folds", "5",
                                "--C", "10", "--quiet"])
    return {"code": code, "stdout": stdout, "stderr": stderr, "npz": out, "store": store}


def run(argv: list[str]) -> tuple[int, str, str]:
    """Run the CLI in-process; return (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        else:  # pragma: no cover - main always exits
            code = 0
    return code, out.getvalue(), err.getvalue()


def test_train_probe_prints_accuracy_and_writes_probe_and_sidecar(
    trained: dict, tiny_clip: Path
) -> None:
    from clipsieve import Analyzer

    assert trained["code"] == EXIT_OK, trained["stderr"]
    stdout = trained["stdout"]
    assert "classes: drink (6), space (6); 12 images, 0 skipped" in stdout
    assert "5-fold accuracy: " in stdout and " ± " in stdout
    npz: Path = trained["npz"]
    side = npz.with_suffix(".json")
    assert npz.is_file() and side.is_file() and f"wrote {npz} and {side}" in stdout
    meta = json.loads(side.read_text())
    assert meta["model"] == str(tiny_clip.resolve())
    assert meta["preprocess_version"] == Analyzer(model=str(tiny_clip), store=False
                                                  ).preprocess.version
    assert meta["labels"] == ["drink", "space"]
    assert meta["n_per_class"] == {"drink": 6, "space": 6}
    m = meta["metrics"]
    assert m["folds"] == 5 and 0.0 <= m["cv_accuracy_mean"] <= 1.0
    assert f"{m['cv_accuracy_mean']:.3f} ± {m['cv_accuracy_std']:.3f}" in stdout
    assert meta["params"]["C"] == 10.0 and meta["sklearn_version"] and meta["created"]


def test_train_probe_reuses_stored_embeddings_and_skips_bad_files(
    trained: dict, tiny_clip: Path, train_dir: Path, tmp_path: Path
) -> None:
    """A CSV over the same images (plus an unreadable file): embeddings come from the store."""
    rows = [f"{p},{p.parent.name}" for p in sorted(train_dir.rglob("*.png"))]
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    csv_path = tmp_path / "data.csv"
    csv_path.write_text("path,label\n" + "\n".join(rows) + f"\n{bad.name},space\n")
    from clipsieve.store import Store

    with Store(trained["store"]) as store:
        before = store.counts()
    code, stdout, stderr = run(["train-probe", str(csv_path), "--out", str(tmp_path / "p.npz"),
                                "--model", str(tiny_clip), "--store", str(trained["store"]),
                                "--folds", "3", "--quiet"])
    assert code == EXIT_ITEMS_FAILED, stderr
    assert "skipped 1 file(s) that could not be read:" in stderr
    assert f"{bad}: not_an_image" in stderr
    assert "12 images, 1 skipped" in stdout and "3-fold accuracy" in stdout
    with Store(trained["store"]) as store:
        assert store.counts().get("embeddings") == before.get("embeddings")
    assert (tmp_path / "p.json").is_file()


def test_train_probe_refuses_a_class_with_one_example(
    tiny_clip: Path, train_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(train_dir, data)
    (data / "lonely").mkdir()
    shutil.copy(train_dir / "space" / "astronaut0.png", data / "lonely" / "one.png")
    code, _, stderr = run(["train-probe", str(data), "--out", str(tmp_path / "p.npz"),
                                "--model", str(tiny_clip), "--no-store", "--quiet"])
    assert code == EXIT_USAGE
    assert stderr.strip() == ('clipsieve: error: every class needs at least 2 examples (for '
                              'training and cross-validation); too few: "lonely" (1)')
    assert not (tmp_path / "p.npz").exists()


def test_classify_jsonl_with_labels_and_probe(
    trained: dict, tiny_clip: Path, train_dir: Path
) -> None:
    from clipsieve.heads.probe import load_probe

    code, stdout, stderr = run([
        "classify", str(train_dir), "--labels", "astronaut, cup of coffee, cat",
        "--probe", str(trained["npz"]), "--format", "jsonl", "--model", str(tiny_clip),
        "--store", str(trained["store"]), "--quiet"])
    assert code == EXIT_OK, stderr
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert len(rows) == 12 and all(r["cached"] for r in rows)  # embeddings from the store
    probe = load_probe(trained["npz"], str(tiny_clip.resolve()))
    meta = probe.info
    agree = 0
    for r in rows:
        assert list(r["labels"]) == ["astronaut", "cup of coffee", "cat"]
        assert sum(r["labels"].values()) == pytest.approx(1.0, abs=1e-9)
        assert list(r["probe"]) == ["drink", "space"]
        assert sum(r["probe"].values()) == pytest.approx(1.0, abs=1e-9)
        agree += max(r["probe"], key=r["probe"].get) == Path(r["path"]).parent.name
    assert agree / len(rows) == pytest.approx(meta["metrics"]["train_accuracy"])


def test_classify_matches_the_python_api_with_a_labels_file(
    tiny_clip: Path, train_dir: Path, tmp_path: Path
) -> None:
    from clipsieve import Analyzer
    from clipsieve.heads.zeroshot import LabelsHead, load_labels

    labels = tmp_path / "labels.toml"
    labels.write_text('[labels]\nspace = ["an astronaut", "a photo of space"]\ndrink = []\n')
    code, stdout, stderr = run([
        "classify", str(train_dir / "space"), "--labels-file", str(labels), "--template",
        "a photo of a {}.", "--template", "a {} on a table.", "--format", "jsonl",
        "--model", str(tiny_clip), "--no-store", "--quiet"])
    assert code == EXIT_OK, stderr
    got = [json.loads(line)["labels"] for line in stdout.splitlines()]
    head = LabelsHead(load_labels(labels), ["a photo of a {}.", "a {} on a table."])
    assert head.prompts["drink"] == ("a photo of a drink.", "a drink on a table.")
    an = Analyzer(model=str(tiny_clip), store=False)
    want = [r.labels for r in an.scan([train_dir / "space"], heads=[head])]
    assert len(got) == 6
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, abs=1e-6)


def test_classify_table_shows_top_k_and_errors(
    tiny_clip: Path, train_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "imgs"
    shutil.copytree(train_dir / "drink", folder)
    (folder / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "table.txt"
    code, _, stderr = run([
        "classify", str(folder), "--labels", "a,b,c,d", "--templates", "single", "--top", "2",
        "--out", str(out), "--model", str(tiny_clip), "--no-store"])
    assert code == EXIT_ITEMS_FAILED
    lines = out.read_text().splitlines()
    assert lines[0].split() == ["PATH", "LABELS", "(top", "2)"]
    assert len(lines) == 1 + 7
    for line in lines[1:7]:
        assert len(line.split()) == 1 + 4  # path, then 2 × (label, probability)
    assert "zz-broken.png" in lines[7] and "error: " in lines[7]
    assert "classified 7 items: 6 ok, 1 failed" in stderr


@pytest.mark.parametrize(("args", "code", "message"), [
    ([], EXIT_USAGE, "give --labels, --labels-file or --probe"),
    (["--labels", "a,b", "--labels-file", "x.txt"], EXIT_USAGE, "not both"),
    (["--labels", "a,b", "--template", "a {}", "--templates", "single"], EXIT_USAGE, "not both"),
    (["--labels", "a,b", "--template", "no placeholder"], EXIT_USAGE,
     r'--template\[0\]: "no placeholder" must contain \{\} exactly once'),
    (["--labels", "a,b", "--templates", "defualt"], EXIT_USAGE, 'did you mean "default"'),
    (["--labels", "a"], EXIT_USAGE, "needs at least 2 labels"),
    (["--labels-file", "LABELS"], EXIT_FATAL, r"labels.txt:2: duplicate label \"cat\""),
    (["--probe", "nope.npz"], EXIT_FATAL, "nope.npz: no such probe file"),
])
def test_classify_usage_errors(
    tiny_clip: Path, train_dir: Path, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    import re

    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ncat\n")
    args = [str(labels) if a == "LABELS" else a for a in args]
    got, _, stderr = run(["classify", str(train_dir), "--model", str(tiny_clip), "--no-store",
                          *args])
    assert got == code, stderr
    assert re.search(message, stderr), stderr


def test_probe_refuses_another_model(trained: dict, other_clip: Path, train_dir: Path) -> None:
    """Through the real entry point: one line naming both models, exit code 3."""
    proc = subprocess.run(
        [sys.executable, "-m", "clipsieve", "classify", str(train_dir), "--probe",
         str(trained["npz"]), "--model", str(other_clip), "--no-store"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == EXIT_FATAL
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clipsieve: error: ")
    meta = json.loads(Path(trained["npz"]).with_suffix(".json").read_text())
    assert f"trained on model '{meta['model']}'" in lines[0]
    assert f"with model '{other_clip.resolve()}'" in lines[0]
    assert proc.stdout == ""


def test_probe_as_a_policy_category(trained: dict, tiny_clip: Path, train_dir: Path,
                                    other_clip: Path) -> None:
    """A trained probe scores a policy category; the zero-shot softmax is left alone."""
    from clipsieve import Analyzer
    from clipsieve.errors import HeadError
    from clipsieve.heads.probe import load_probe
    from clipsieve.moderation import build_class_embeddings, load_policy, moderate

    npz: Path = trained["npz"]
    policy_path = npz.parent / "policy.toml"
    policy_path.write_text(
        'name = "pets"\nversion = "1"\n'
        "[categories.spacey]\nreview = 0.4\nblock = 0.9\n"
        f'probe = "{npz.name}"\nprobe_class = "space"\n'
        "[categories.violence]\nreview = 0.3\nblock = 0.6\n"
        'prompts = ["a fight", "a riot", "a brawl", "an assault", "a punch"]\n'
        '[neutral.food]\nprompts = ["a photo of food"]\n'
        '[neutral.drink]\nprompts = ["a cup of coffee"]\n'
    )
    policy = load_policy(policy_path)
    an = Analyzer(model=str(tiny_clip), store=trained["store"])
    items = list(an.scan([train_dir]))
    x = np.stack([it.embedding for it in items])
    results = moderate(x, build_class_embeddings(an, policy), policy, an.logit_scale)
    probe = load_probe(npz, an.model_id)
    expected = probe.predict_proba(x)[:, probe.classes.index("space")]
    for r, p in zip(results, expected, strict=True):
        assert r.categories["spacey"] == pytest.approx(p, abs=1e-9)
        assert r.categories["violence"] + sum(r.neutral.values()) == pytest.approx(1.0)
    other = Analyzer(model=str(other_clip), store=False)
    with pytest.raises(HeadError, match="refusing"):
        moderate(other.embed_images([items[0].path]), build_class_embeddings(other, policy),
                 policy, other.logit_scale)
    an.close()


def test_classify_probe_alone_has_no_empty_labels_column(
    trained: dict, tiny_clip: Path, train_dir: Path
) -> None:
    code, stdout, stderr = run([
        "classify", str(train_dir), "--probe", str(trained["npz"]), "--model", str(tiny_clip),
        "--store", str(trained["store"]), "--quiet"])
    assert code == EXIT_OK, stderr
    header, first = stdout.splitlines()[:2]
    assert "LABELS" not in header and "STABILITY" not in header and "PROBE (top 3)" in header
    assert "|" not in first and ("drink" in first or "space" in first)


def test_classify_with_several_templates_adds_label_stability(
    trained: dict, tiny_clip: Path, train_dir: Path
) -> None:
    code, stdout, _ = run([
        "classify", str(train_dir), "--labels", "astronaut,cat", "--format", "jsonl",
        "--model", str(tiny_clip), "--store", str(trained["store"]), "--quiet"])
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert all(0.0 <= r["label_stability"] <= 1.0 for r in rows)
    # the value is the share of the 10 default templates that agree: a multiple of 0.1
    assert all(abs(r["label_stability"] * 10 - round(r["label_stability"] * 10)) < 1e-9
               for r in rows)
    code, stdout, _ = run([
        "classify", str(train_dir), "--labels", "astronaut,cat", "--templates", "single",
        "--format", "jsonl", "--model", str(tiny_clip), "--store", str(trained["store"]),
        "--quiet"])
    assert all("label_stability" not in json.loads(line) for line in stdout.splitlines())
    code, stdout, _ = run([
        "classify", str(train_dir), "--labels", "astronaut,cat", "--model", str(tiny_clip),
        "--store", str(trained["store"]), "--quiet"])
    assert "STABILITY" in stdout.splitlines()[0]


def test_classify_warns_on_counting_and_identity_labels(
    trained: dict, tiny_clip: Path, train_dir: Path
) -> None:
    code, _, stderr = run([
        "classify", str(train_dir), "--labels", "two dogs,3 people,cat,Taylor Swift",
        "--model", str(tiny_clip), "--store", str(trained["store"]), "--quiet"])
    assert code == EXIT_OK
    assert "labels 'two dogs', '3 people' ask for counting" in stderr
    assert "label 'Taylor Swift' look like names or identities of people" in stderr
    code, _, stderr = run([
        "classify", str(train_dir), "--labels", "cat,sports car", "--model", str(tiny_clip),
        "--store", str(trained["store"]), "--quiet"])
    assert "warning" not in stderr
