"""cli/moderate.py end to end with the tiny random CLIP.

A random model gives arbitrary scores, so these tests force outcomes with policies whose
thresholds nothing can miss (every category blocks at 0.01) or reach (review = block = 1.0: a
softmax over several classes never reaches 1), and otherwise check that the output agrees with
what ``moderate()`` makes of the stored embeddings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipsieve.cli import main
from clipsieve.errors import (
    EXIT_BLOCKED,
    EXIT_BLOCKED_AND_FAILED,
    EXIT_FATAL,
    EXIT_ITEMS_FAILED,
    EXIT_OK,
    EXIT_USAGE,
)
from clipsieve.moderation import load_policy


def policy_file(folder: Path, name: str, value: float) -> str:
    base = load_policy("default")
    thresholds = {c: {"review": value, "block": value} for c in base.categories}
    path = folder / f"{name}.toml"
    base.with_thresholds(thresholds, name=name).save(path)
    return str(path)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, Path]) -> dict[str, str]:
    root = tmp_path_factory.mktemp("moderate")
    imgs = root / "imgs"
    imgs.mkdir()
    for p in photos.values():
        (imgs / p.name).write_bytes(p.read_bytes())
    return {
        "root": str(root),
        "imgs": str(imgs),
        "store": str(root / "store.sqlite"),
        "block_all": policy_file(root, "block_all", 0.01),
        "allow_all": policy_file(root, "allow_all", 1.0),
    }


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


def model_args(tiny_clip: Path, env: dict[str, str]) -> list[str]:
    return ["--model", str(tiny_clip), "--store", env["store"]]


def test_jsonl_has_scan_fields_and_moderation(tiny_clip: Path, env: dict[str, str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from clipsieve import Analyzer
    from clipsieve.moderation import ModerationHead, moderate

    code, out, err = run_main(capsys, "moderate", env["imgs"], "--format", "jsonl",
                              "--no-sidecars", *model_args(tiny_clip, env))
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 4 and "moderated 4 items: 4 ok, 0 failed" in err
    policy = load_policy("default")
    an = Analyzer(model=str(tiny_clip), store=env["store"])
    bank = ModerationHead(policy).bank(an)
    for r in rows:
        assert {"path", "status", "sha256", "width", "height", "model", "cached", "timing"} <= set(r)
        mod = r["moderation"]
        assert mod["policy"] == {"name": "default", "version": "1"}
        assert mod["model"] == r["model"] == an.model_id
        assert set(mod["categories"]) == set(policy.categories) and mod["reasons"]
        assert mod["caption"] is None
        emb = an.store.get_embedding(r["sha256"], an.model_id, an.preprocess.version)
        (expected,) = moderate(emb[None], bank, policy, an.logit_scale)
        assert mod["decision"] == expected.decision
        assert mod["categories"] == pytest.approx(expected.categories)
    an.close()
    blocked = any(r["moderation"]["decision"] == "block" for r in rows)
    assert code == (EXIT_BLOCKED if blocked else EXIT_OK)


def test_table_shows_decisions_and_exit_code_5(tiny_clip: Path, env: dict[str, str],
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per row
    code, out, err = run_main(capsys, "moderate", env["imgs"], "--policy", env["block_all"],
                              *model_args(tiny_clip, env))
    assert code == EXIT_BLOCKED
    assert 'policy "block_all" version 1' in out
    for name in ("astronaut.jpg", "coffee.jpg", "chelsea.jpg", "rocket.jpg"):
        line = next(line for line in out.splitlines() if name in line)
        assert "block" in line and ">= block 0.01" in line
    assert "4 blocked" in err


def test_failed_files_give_4_or_6(tiny_clip: Path, env: dict[str, str], tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    one = str(Path(env["imgs"]) / "coffee.jpg")
    code, out, _ = run_main(capsys, "moderate", one, str(bad), "--policy", env["block_all"],
                            "--format", "jsonl", *model_args(tiny_clip, env))
    assert code == EXIT_BLOCKED_AND_FAILED
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows[1]["status"] == "error" and "moderation" not in rows[1]
    code, out, _ = run_main(capsys, "moderate", one, str(bad), "--policy", env["allow_all"],
                            "--no-sidecars", *model_args(tiny_clip, env))
    assert code == EXIT_ITEMS_FAILED
    assert "not_an_image" in out and "error" in out and "allow" in out
    code, _, _ = run_main(capsys, "moderate", one, "--policy", env["allow_all"], "--quiet",
                          "--no-sidecars", *model_args(tiny_clip, env))
    assert code == EXIT_OK


def test_caption_sources(tiny_clip: Path, env: dict[str, str], tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    from clipsieve.moderation import clip_score

    imgs = tmp_path / "cap"
    imgs.mkdir()
    src = Path(env["imgs"])
    for name in ("astronaut.jpg", "coffee.jpg", "rocket.jpg"):
        (imgs / name).write_bytes((src / name).read_bytes())
    (imgs / "astronaut.txt").write_text("an astronaut in a white suit\n", encoding="utf-8")
    (imgs / "sub").mkdir()
    (imgs / "sub" / "chelsea.jpg").write_bytes((src / "chelsea.jpg").read_bytes())
    items = tmp_path / "items.jsonl"
    items.write_text(
        '{"path": "cap/sub/chelsea.jpg", "caption": "a ginger cat"}\n'
        '{"path": "cap/rocket.jpg"}\n', encoding="utf-8")
    out_file = tmp_path / "out.jsonl"

    # Sidecars only; --input adds files with their captions; --out writes the JSONL there.
    code, out, _ = run_main(capsys, "moderate", str(imgs), "--no-recursive", "--input",
                            str(items), "--format", "jsonl", "--out", str(out_file),
                            *model_args(tiny_clip, env))
    assert out == ""
    rows = {Path(r["path"]).name: r for r in map(json.loads, out_file.read_text().splitlines())}
    assert set(rows) == {"astronaut.jpg", "coffee.jpg", "rocket.jpg", "chelsea.jpg"}
    astro = rows["astronaut.jpg"]["moderation"]["caption"]
    assert astro["source"] == "sidecar" and astro["text"] == "an astronaut in a white suit"
    cat = rows["chelsea.jpg"]["moderation"]["caption"]
    assert cat["source"] == "input" and cat["text"] == "a ginger cat"
    assert rows["coffee.jpg"]["moderation"]["caption"] is None
    assert rows["rocket.jpg"]["moderation"]["caption"] is None
    for r in rows.values():
        mod = r["moderation"]
        cap = mod["caption"]
        if cap is None:
            assert mod["decision"] == mod["image_decision"]
            continue
        assert set(cap) >= {"text", "decision", "categories", "reasons", "clip_score"}
        order = ["allow", "review", "block"]
        assert mod["decision"] == max(mod["image_decision"], cap["decision"], key=order.index)
        assert cap["low_agreement"] == (cap["clip_score"] < 18.0)
        if cap["low_agreement"]:
            assert cap["decision"] != "allow"
            assert any("possible spam or clickbait" in reason for reason in mod["reasons"])

    # The CLIPScore is the cosine of the stored image embedding and the caption embedding.
    from clipsieve import Analyzer

    an = Analyzer(model=str(tiny_clip), store=env["store"])
    img = an.store.get_embedding(rows["chelsea.jpg"]["sha256"], an.model_id,
                                 an.preprocess.version)
    assert cat["clip_score"] == pytest.approx(
        clip_score(img, an.embed_texts(["a ginger cat"])[0]), abs=1e-3)
    an.close()

    # --caption applies to every file without a JSONL caption and beats the sidecar.
    code, out, _ = run_main(capsys, "moderate", str(imgs / "astronaut.jpg"), "--input",
                            str(items), "--caption", "buy cheap pills", "--format", "jsonl",
                            *model_args(tiny_clip, env))
    assert code in (EXIT_OK, EXIT_BLOCKED)
    caps = {Path(r["path"]).name: r["moderation"]["caption"]
            for r in map(json.loads, out.splitlines())}
    assert caps["astronaut.jpg"] == caps["astronaut.jpg"] | {"text": "buy cheap pills",
                                                             "source": "option"}
    assert caps["rocket.jpg"]["source"] == "option"
    assert caps["chelsea.jpg"]["text"] == "a ginger cat"


def test_usage_and_policy_errors(tiny_clip: Path, env: dict[str, str], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "moderate", *model_args(tiny_clip, env))
    assert code == EXIT_USAGE and "give at least one PATH or --input FILE" in err
    code, _, err = run_main(capsys, "moderate", env["imgs"], "--policy", "defualt",
                            *model_args(tiny_clip, env))
    assert code == EXIT_FATAL and 'did you mean "default"' in err
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nversion = 1\n', encoding="utf-8")
    code, _, err = run_main(capsys, "moderate", env["imgs"], "--policy", str(bad),
                            *model_args(tiny_clip, env))
    assert code == EXIT_FATAL and "version: must be a non-empty string" in err
    items = tmp_path / "items.jsonl"
    items.write_text('{"caption": "no path"}\n', encoding="utf-8")
    code, _, err = run_main(capsys, "moderate", "--input", str(items),
                            *model_args(tiny_clip, env))
    assert code == EXIT_USAGE and 'items.jsonl:1: "path" must be a non-empty string' in err


def test_real_entry_point_exit_code(tiny_clip: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "clipsieve", "moderate", env["imgs"], "--policy",
         env["block_all"], "--format", "jsonl", *model_args(tiny_clip, env)],
        capture_output=True, text=True, timeout=300, env={**os.environ}, check=False,
    )
    assert proc.returncode == EXIT_BLOCKED, proc.stderr
    assert all(json.loads(line)["moderation"]["decision"] == "block"
               for line in proc.stdout.splitlines())
