"""``clipsieve undo``."""

from __future__ import annotations

import sys
import time

import click

from clipsieve.cli.common import open_existing_store, store_option
from clipsieve.paths import display


@click.command()
@click.argument("run_id", required=False)
@click.option("--list", "list_runs", is_flag=True, help="List recent runs instead.")
@store_option()
def undo(run_id: str | None, list_runs: bool, store_path: str | None) -> None:
    """Reverse a filter run: move its files back, or delete the copies or links it made.

    Moved files return to their original paths (a collision-safe name next to it when
    that path was taken meanwhile). Copies and links are deleted only while the original
    is still there with the same bytes, so nothing is lost. Like filter, undo is
    journalled: an interrupted undo is finished by running it again.

    Exit status: 0, or 4 when some files could not be reversed (each one is listed).

    \b
    Example:
      clipsieve undo --list
      clipsieve undo 20250101-120000-a1b2c3
    """
    from clipsieve.filtering import Journal, undo_run

    store = open_existing_store(store_path)
    try:
        if list_runs or not run_id:
            if not list_runs:
                raise click.UsageError("give a RUN_ID (see clipsieve undo --list)")
            for r in Journal(store).runs(50):
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started_at"]))
                counts = ", ".join(f"{v} {k}" for k, v in sorted(r["counts"].items())) or "-"
                click.echo(
                    f"{r['id']}  {when}  {r['kind']:6} {r['action']:6} {r['status']:13} {counts}"
                )
            return
        res = undo_run(store, run_id)
    finally:
        store.close()
    for failure in res.failed:
        click.echo(f"failed: {display(failure.src)}: {failure.error}", err=True)
    ok = len(res.results) - len(res.failed)
    click.echo(
        f"undo run {res.run_id}: reversed {ok} of "
        f"{len(res.results)} {'action' if len(res.results) == 1 else 'actions'} of {res.undone}",
        err=True,
    )
    sys.exit(4 if res.failed else 0)
