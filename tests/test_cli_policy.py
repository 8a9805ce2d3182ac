"""Policies on the command line: --threshold overrides, clipsieve policy list|show|init, and
calibrate's output file (comments kept, 3 decimals)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipsieve.cli import main
from clipsieve.errors import EXIT_FATAL, PolicyError
from clipsieve.moderation import load_policy
from clipsieve.moderation.policy import POLICY_DIR, text_with_thresholds


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    return int(info.value.code or 0), out.out, out.err


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "config"
    monkeypatch.setenv("CLIPSIEVE_CONFIG_DIR", str(folder))
    return folder


def test_overrides_are_validated_like_the_file_and_recorded() -> None:
    base = load_policy("default")
    p = base.with_overrides(["violence.block=0.5", "violence.review=0.3"])
    assert (p.categories["violence"].review, p.categories["violence"].block) == (0.3, 0.5)
    assert p.provenance() == {
        "name": "default", "version": "1",
        "overrides": {"violence.block": 0.5, "violence.review": 0.3},
    }
    assert base.provenance() == {"name": "default", "version": "1"}
    assert p.categories["gore"] == base.categories["gore"]
    with pytest.raises(PolicyError, match=r'categories.violence.block: must be a number between '
                                          r'0 and 1, got "high"'):
        base.with_overrides(["violence.block=high"])
    with pytest.raises(PolicyError, match=r"^threshold violense.block=0.5: unknown category "
                                          r'"violense".*did you mean "violence"'):
        base.with_overrides(["violense.block=0.5"])
    with pytest.raises(PolicyError, match=r"categories.violence.review: must be at most block"):
        base.with_overrides(["violence.review=0.9"])
    with pytest.raises(PolicyError, match=r'"blok" is not a threshold.*did you mean "block"'):
        base.with_overrides(["violence.blok=0.5"])
    with pytest.raises(PolicyError, match="expected CATEGORY.review=VALUE"):
        base.with_overrides(["violence=0.5"])


@pytest.fixture(scope="module")
def imgs(tmp_path_factory: pytest.TempPathFactory, photos: dict[str, Path]) -> Path:
    folder = tmp_path_factory.mktemp("policy-imgs")
    for p in list(photos.values())[:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    return folder


def test_threshold_on_every_command_that_moderates(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_clip: Path, imgs: Path
) -> None:
    common = ["--model", str(tiny_clip), "--store", str(tmp_path / "s.sqlite"), "-q"]
    every = [f"{c}.review=0.001" for c in load_policy("default").categories]
    every += [f"{c}.block=0.001" for c in load_policy("default").categories]
    args = [x for spec in every for x in ("--threshold", spec)]
    code, out, _ = run_main(capsys, "moderate", str(imgs), "--format", "jsonl", *args, *common)
    assert code == 5  # everything is blocked at 0.001
    for line in out.splitlines():
        pol = json.loads(line)["moderation"]["policy"]
        assert pol["name"] == "default" and pol["overrides"]["violence.block"] == 0.001
    code, out, _ = run_main(capsys, "scan", str(imgs), *args, *common)
    assert code == 5
    assert all(json.loads(x)["moderation"]["policy"]["overrides"] for x in out.splitlines())
    code, _, err = run_main(capsys, "filter", str(imgs), "--action", "none", "-p", "default",
                            "--threshold", "violence.block=0.001", "--threshold",
                            "violence.review=0.001", *common[:-1])
    assert code == 0 and "2 reject" in err, err
    code, _, err = run_main(capsys, "moderate", str(imgs), "--threshold", "violence.block=2",
                            *common)
    assert code == EXIT_FATAL
    assert "--threshold violence.block=2: categories.violence.block: must be a number" in err
    code, _, err = run_main(capsys, "filter", str(imgs), "--action", "none",
                            "--threshold", "violence.block=0.5", *common)
    assert code == 2 and "--threshold needs --policy" in err


def test_policy_list_show_init_and_policy_name_lookup(
    capsys: pytest.CaptureFixture[str], config_dir: Path, tmp_path: Path, tiny_clip: Path,
    imgs: Path
) -> None:
    code, out, _ = run_main(capsys, "policy", "list")
    assert code == 0 and out.startswith("default") and "shipped" in out and "no user policies" in out
    code, out, _ = run_main(capsys, "policy", "show", "default")
    assert code == 0 and out == (POLICY_DIR / "default.toml").read_text()
    code, _, err = run_main(capsys, "policy", "init", "forum", "--from", "default")
    assert code == 0
    made = config_dir / "policies" / "forum.toml"
    assert f"wrote {made}" in err
    text = made.read_text()
    assert "# Threshold rationale (review <= block):" in text  # the comments came along
    forum = load_policy("forum")
    assert forum.name == "forum" and forum.categories == load_policy("default").categories
    code, out, _ = run_main(capsys, "policy", "list")
    assert "forum" in out and str(made) in out
    code, _, err = run_main(capsys, "policy", "init", "forum")
    assert code == 2 and "exists" in err and "--force" in err
    # --policy NAME finds it
    made.write_text(text.replace("review = 0.35", "review = 0.001").replace(
        "block = 0.65", "block = 0.002"))
    code, out, _ = run_main(capsys, "moderate", str(imgs), "--policy", "forum", "--format",
                            "jsonl", "--model", str(tiny_clip), "--no-store", "-q")
    rows = [json.loads(x) for x in out.splitlines()]
    assert {r["moderation"]["policy"]["name"] for r in rows} == {"forum"}
    assert {r["moderation"]["thresholds"]["violence"]["block"] for r in rows} <= {0.002, 0.001}
    code, _, err = run_main(capsys, "policy", "show", "forun")
    assert code == EXIT_FATAL and 'did you mean "forum"' in err


def test_calibrated_file_keeps_the_source_comments() -> None:
    src = (POLICY_DIR / "default.toml").read_text()
    out = text_with_thresholds(src, {"violence": {"review": 0.2, "block": 0.4237}},
                               version="1+calibrated")
    assert out.count("\n#") == src.count("\n#")
    new = load_policy("default").with_thresholds(
        {"violence": {"review": 0.2, "block": 0.424}}, version="1+calibrated")
    from clipsieve._compat import tomllib
    from clipsieve.moderation.policy import policy_from_dict

    assert policy_from_dict(tomllib.loads(out)) == new
    assert "block = 0.424" in out


def test_threshold_on_the_video_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, tiny_clip: Path
) -> None:
    pytest.importorskip("av")
    from conftest import photo_array

    from clipsieve.testing import write_test_video

    clip = write_test_video(tmp_path / "c.mp4", [(photo_array("coffee"), 2)], fps=5)
    code, out, err = run_main(
        capsys, "video", str(clip), "--format", "jsonl", "--threshold", "violence.block=0.001",
        "--threshold", "violence.review=0.001", "--model", str(tiny_clip), "--no-store", "-q")
    (d,) = [json.loads(line) for line in out.splitlines()]
    assert d["verdict"]["decision"] == "block", err
    text = json.dumps(d)
    assert '"overrides": {"violence.block": 0.001, "violence.review": 0.001}' in text
