"""--encoder / CLIPSIEVE_ENCODER on the commands, the store keyed by encoder, cached prompt
embeddings for --no-store, the loading status line and ``clipsieve compare-encoders``."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from clipsieve.cli import main
from clipsieve.errors import EXIT_OK


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


@pytest.fixture()
def folder(tmp_path: Path, photos: dict[str, Path]) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    for p in photos.values():
        shutil.copy(p, d / p.name)
    return d


@pytest.fixture(autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CLIPSIEVE_CACHE_DIR", str(d))
    monkeypatch.delenv("CLIPSIEVE_ENCODER", raising=False)
    return d


def rows(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_scan_with_each_encoder_keeps_separate_store_entries(
    tiny_clip: Path, folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipsieve.store import Store

    store = str(tmp_path / "s.sqlite")
    base = ["scan", str(folder), "--model", str(tiny_clip), "--store", store, "--embeddings"]
    code, out, err = run([*base, "--encoder", "onnx-int8"])
    assert code == EXIT_OK, err
    q = rows(out)
    assert {(r["encoder"], r["precision"], r["cached"]) for r in q} == {("onnx-int8", "int8", False)}
    code, out, _ = run([*base, "--encoder", "torch", "--precision", "float32"])
    t = rows(out)
    assert {(r["encoder"], r["cached"]) for r in t} == {("torch", False)}  # not the int8 entry
    for a, b in zip(q, t):
        assert np.dot(a["embedding"], b["embedding"]) > 0.999
        assert set(a["moderation"]["categories"]) == set(b["moderation"]["categories"])
    monkeypatch.setenv("CLIPSIEVE_ENCODER", "onnx-int8")  # the environment variable
    code, out, err = run(base)
    again = rows(out)
    assert {(r["encoder"], r["precision"], r["cached"]) for r in again} == {
        ("onnx-int8", "int8", True)}
    assert "4 from store" in err
    assert [r["embedding"] for r in again] == [r["embedding"] for r in q]
    with Store(store) as s:
        kinds = {row[0]: row[1] for row in s.execute(
            "SELECT encoder, COUNT(*) FROM embeddings GROUP BY encoder")}
        assert kinds == {"onnx-int8": 4, "torch": 4}
        texts = {row[0] for row in s.execute("SELECT DISTINCT encoder FROM text_embeddings")}
        assert texts == {"onnx-int8", "torch"}


def test_onnx_fp32_scan_agrees_with_torch(tiny_clip: Path, folder: Path) -> None:
    base = ["scan", str(folder), "--model", str(tiny_clip), "--no-store", "--embeddings"]
    _, out_t, _ = run([*base, "--precision", "float32"])
    code, out_o, err = run([*base, "--encoder", "onnx"])
    assert code == EXIT_OK, err
    for a, b in zip(rows(out_t), rows(out_o)):
        assert b["encoder"] == "onnx" and b["precision"] == "float32"
        assert np.dot(a["embedding"], b["embedding"]) >= 0.9999
        assert a["moderation"]["decision"] == b["moderation"]["decision"]
        assert a["quality"]["score"] == pytest.approx(b["quality"]["score"], abs=1e-3)


def test_bad_encoder_and_precision_are_usage_errors(tiny_clip: Path, folder: Path) -> None:
    code, _, err = run(["scan", str(folder), "--model", str(tiny_clip), "--no-store",
                        "--encoder", "tensorrt"])
    assert code == 2 and "tensorrt" in err
    code, _, err = run(["scan", str(folder), "--model", str(tiny_clip), "--no-store",
                        "--encoder", "onnx", "--precision", "bfloat16"])
    assert code == 2 and "float32" in err and "\n" not in err.strip()


def test_no_store_scans_reuse_cached_prompt_embeddings(
    tiny_clip: Path, folder: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipsieve.backends.onnx import OnnxInt8Encoder
    from clipsieve.moderation import load_policy

    argv = ["scan", str(folder), "--model", str(tiny_clip), "--no-store",
            "--encoder", "onnx-int8", "--caption", "a private caption"]
    code, first, err = run(argv)
    assert code == EXIT_OK, err
    files = list((cache / "prompts").iterdir())
    assert len(files) == 1 and files[0].name.endswith("-onnx-int8-auto.npz")
    with np.load(files[0]) as z:
        cached = set(z["texts"].tolist())
    policy = load_policy("default")
    assert {p for _, _, prompts in policy.prompt_classes() for p in prompts} <= cached
    assert "a private caption" not in cached  # captions are not prompt banks
    seen: list[list[str]] = []
    real = OnnxInt8Encoder.encode_texts

    def spy(self: OnnxInt8Encoder, texts: list[str], *a: object, **k: object) -> np.ndarray:
        seen.append(list(texts))
        return real(self, texts, *a, **k)

    monkeypatch.setattr(OnnxInt8Encoder, "encode_texts", spy)
    code, second, _ = run(argv)
    assert code == EXIT_OK
    assert seen == [["a private caption"]]  # only the caption was encoded again
    assert [r["moderation"] for r in rows(second)] == [r["moderation"] for r in rows(first)]


def test_loading_status_line_on_a_terminal(
    tiny_clip: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clipsieve.cli.common import Progress

    shown: list[str] = []
    real = Progress.status

    def spy(self: Progress, text: str) -> None:
        shown.append(text)
        real(self, text)

    init = Progress.__init__

    def on_terminal(self: Progress, *a: object, **k: object) -> None:
        init(self, *a, **{**k, "enabled": True})  # type: ignore[arg-type]

    monkeypatch.setattr(Progress, "status", spy)
    monkeypatch.setattr(Progress, "__init__", on_terminal)
    code, _, err = run(["scan", str(folder), "--model", str(tiny_clip), "--no-store",
                        "--encoder", "onnx"])
    assert code == EXIT_OK, err
    assert len(shown) == 1 and shown[0].startswith("loading model ")
    assert "(onnx)" in shown[0] and shown[0].endswith("…")


def test_compare_encoders_prints_cosine_and_agreement(tiny_clip: Path, folder: Path) -> None:
    (folder / "zz-bad.jpg").write_text("not an image")
    code, out, err = run(["compare-encoders", str(folder), "--model", str(tiny_clip),
                          "--encoder", "onnx-int8", "--format", "json", "--quiet"])
    assert code == 4, err  # one file could not be read
    got = json.loads(out)
    assert got["files"] == 4 and got["failed"] == 1
    assert got["baseline"] == "torch (float32)" and got["candidate"] == "onnx-int8 (int8)"
    assert 0.99 <= got["cosine_min"] <= got["cosine_mean"] <= 1.0 + 1e-6
    assert got["decision_agreement"] == 1.0 and got["disagreements"] == []
    code, out, _ = run(["compare-encoders", str(folder), "--model", str(tiny_clip),
                        "--encoder", "onnx", "--quiet"])
    assert "onnx (float32)" in out and "torch (float32)" in out
    assert "cosine mean" in out and "4/4 (100.0%)" in out


def test_filter_dedupe_with_the_onnx_int8_encoder(
    tiny_clip: Path, folder: Path, tmp_path: Path
) -> None:
    shutil.copy(folder / "coffee.jpg", folder / "coffee-copy.jpg")
    store = str(tmp_path / "s.sqlite")
    base = ["--model", str(tiny_clip), "--store", store, "--encoder", "onnx-int8"]
    assert run(["scan", str(folder), *base, "-q"])[0] == EXIT_OK  # stored: int8 only
    manifest = tmp_path / "m.csv"
    code, _, err = run(["filter", str(folder), *base, "--action", "none", "--dedupe", "0.99",
                        "--manifest", str(manifest), "--quiet"])
    assert code == EXIT_OK, err
    lines = [line for line in manifest.read_text().splitlines() if "coffee" in line]
    assert len(lines) == 2 and any("duplicate" in line.lower() for line in lines), lines


def test_onnx_scan_process_imports_neither_torch_nor_transformers(
    tiny_clip: Path, folder: Path, cache: Path
) -> None:
    import os
    import subprocess
    import sys

    argv = ["scan", str(folder), "--model", str(tiny_clip), "--no-store", "--encoder",
            "onnx-int8", "-q"]
    assert run(argv)[0] == EXIT_OK  # exports, quantises and caches the prompts
    env = {**os.environ, "CLIPSIEVE_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "clipsieve", *argv],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == EXIT_OK, proc.stderr[-2000:]
    assert len(rows(proc.stdout)) == 4
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "onnxruntime" in imported
    assert not {m for m in imported if m == "torch" or m.startswith("transformers")}
