"""``clipsieve policy list|show|init``: shipped and user moderation policies."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import click


@click.group()
def policy() -> None:
    """List, show and copy moderation policies.

    Shipped policies live inside clipsieve; your own live in the user configuration folder
    (CLIPSIEVE_CONFIG_DIR, else ~/.config/clipsieve on Linux) under policies/, where
    `clipsieve policy init` writes them and `--policy NAME` finds them (a user policy
    shadows a shipped one of the same name).

    \b
    Example:
      clipsieve policy list
      clipsieve policy show default
      clipsieve policy init forum --from default
      clipsieve moderate uploads/ --policy forum
    """


@policy.command("list")
def list_cmd() -> None:
    """List shipped and user policies with their version and description."""
    from clipsieve.moderation.policy import (
        PolicyError,
        list_policies,
        list_user_policies,
        load_policy,
    )
    from clipsieve.settings import user_policy_dir

    mine = list_user_policies()
    rows = [(n, "shipped" + (" (shadowed by yours)" if n in mine else "")) for n in list_policies()]
    rows += [(n, f"user: {user_policy_dir() / (n + '.toml')}") for n in mine]
    for name, where in rows:
        try:
            pol = load_policy(user_policy_dir() / f"{name}.toml" if where.startswith("user")
                              else _shipped_path(name))
            info = f"version {pol.version}" + (f" — {pol.description}" if pol.description else "")
        except PolicyError as exc:
            info = f"invalid: {exc}"
        click.echo(f"{name:<20} {where:<10} {info}")
    if not mine:
        click.echo(f"(no user policies yet in {user_policy_dir()}; "
                   "create one with `clipsieve policy init NAME`)")


def _shipped_path(name: str) -> Any:
    from clipsieve.moderation.policy import POLICY_DIR

    return POLICY_DIR / f"{name}.toml"


@policy.command("show")
@click.argument("name", metavar="NAME|FILE")
def show_cmd(name: str) -> None:
    """Print a policy's TOML, comments included."""
    from clipsieve.moderation.policy import load_policy, policy_text

    load_policy(name)  # valid, or a clear error
    click.echo(policy_text(name), nl=False)


_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@policy.command("init")
@click.argument("name")
@click.option("--from", "source", default="default", show_default=True, metavar="NAME|FILE",
              help="The policy to copy (shipped, yours, or a file).")
@click.option("--force", is_flag=True, help="Overwrite an existing user policy of that name.")
def init_cmd(name: str, source: str, force: bool) -> None:
    """Write an editable copy of a policy, comments included, to the user policy folder.

    The copy is named NAME (its `name` key too); `--policy NAME` finds it afterwards.
    """
    from clipsieve.errors import ConfigError
    from clipsieve.moderation.policy import load_policy, policy_text, text_with_thresholds
    from clipsieve.settings import user_policy_dir

    if not _FILE_NAME.match(name) or name.endswith(".toml"):
        raise click.UsageError(
            f"policy name {json.dumps(name)}: use letters, digits, '_', '-' and '.' "
            "(no .toml, no folder)"
        )
    load_policy(source)
    text = text_with_thresholds(policy_text(source), {}, name=name)
    header = (
        f"# Editable copy of {source}, written by `clipsieve policy init` on "
        f"{time.strftime('%Y-%m-%d')}.\n# Use it with --policy {name}.\n"
    )
    folder = user_policy_dir()
    dest = folder / f"{name}.toml"
    if dest.exists() and not force:
        raise ConfigError(f"{dest} exists (pass --force to overwrite it)")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.write_text(header + text, encoding="utf-8")
    try:
        load_policy(tmp)
    except Exception:
        tmp.unlink()
        raise
    tmp.replace(dest)
    click.echo(f"wrote {dest} (a copy of {source}); use it with --policy {name}", err=True)
