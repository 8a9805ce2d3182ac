"""The README, --help and the code agree: commands exist, every command and option is documented."""

from __future__ import annotations

import os
import re
from pathlib import Path

import click
import pytest

import clipsieve
from clipsieve.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_setup_commands_exist_and_ci_runs_the_test_one() -> None:
    block = re.search(r"## Set up and run.*?```bash\n(.*?)```", README, re.S)
    assert block, "README lacks the set-up block"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    for cmd in commands:
        script = ROOT / cmd.split()[0]
        assert script.is_file() and os.access(script, os.X_OK), cmd
        assert ".venv" in (ROOT / "scripts" / "_setup.sh").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1].lstrip("./").split()[0] in ci


def _commands() -> list[tuple[str, click.Command]]:
    return sorted(cli.commands.items())


@pytest.mark.parametrize("name,cmd", _commands())
def test_every_command_and_option_is_documented(name: str, cmd: click.Command) -> None:
    assert f"clipsieve {name}" in README, f"README does not document `clipsieve {name}`"
    assert cmd.help and "Example" in cmd.help, f"{name}: --help needs an example"
    for param in cmd.params:
        if isinstance(param, click.Option):
            longest = max(param.opts, key=len)
            assert longest in README, f"README does not document {name} {longest}"


def test_all_is_sorted_and_importable() -> None:
    assert clipsieve.__all__ == sorted(clipsieve.__all__)
    for name in clipsieve.__all__:
        assert hasattr(clipsieve, name)


def test_library_never_imports_cli_or_web_layers() -> None:
    src = ROOT / "src" / "clipsieve"
    offenders = []
    for py in src.rglob("*.py"):
        rel = py.relative_to(src).parts
        if rel[0] in ("cli", "service", "report", "__main__.py"):
            continue
        text = py.read_text(encoding="utf-8")
        if re.search(r"^\s*(from|import) (clipsieve\.cli|clipsieve\.service|click|fastapi|rich)",
                     text, re.M):
            offenders.append(str(py.relative_to(src)))
    assert offenders == []


def test_readme_states_clips_limits_where_users_decide() -> None:
    limits = README.split("## Limits", 1)[1].split("\n## ", 1)[0]
    for needle in (
        "Wording matters", "ensembl", "clipsieve prompts", "label_stability",
        "Counting", "spatial", "fine-grained", "car model", "flower",
        "handwritten digits", "32.3%", "8.7%", "child", "neutral classes", "bias audit",
        "Privacy", "not a tool for identifying people",
        "starting points", "not validated on real model weights", "clipsieve calibrate",
        "--from-reviews", "train-quality",
    ):
        assert needle in limits, needle
