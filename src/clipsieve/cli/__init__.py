"""The ``clipsieve`` command: a thin Click layer over the library.

Each command lives in its own module under ``clipsieve.cli`` and is listed in ``_COMMANDS``.
Library errors become one line on stderr and a documented exit code (see ``clipsieve --help``).
"""

from __future__ import annotations

import importlib
import sys

import click

from clipsieve import __version__
from clipsieve.errors import EXIT_CODES, EXIT_INTERNAL, ClipsieveError

#: (module, command function name) of every subcommand, in help order.
_COMMANDS: list[tuple[str, str]] = [
    ("clipsieve.cli.scan", "scan"),
    ("clipsieve.cli.classify", "classify"),
    ("clipsieve.cli.probe", "train_probe"),
    ("clipsieve.cli.filter", "filter_cmd"),
    ("clipsieve.cli.undo", "undo"),
    ("clipsieve.cli.report", "report"),
    ("clipsieve.cli.report", "export"),
    ("clipsieve.cli.moderate", "moderate"),
    ("clipsieve.cli.calibrate", "calibrate"),
    ("clipsieve.cli.quality", "quality"),
    ("clipsieve.cli.quality", "train_quality"),
    ("clipsieve.cli.search", "search"),
    ("clipsieve.cli.search", "similar"),
    ("clipsieve.cli.search", "index"),
    ("clipsieve.cli.review", "review"),
    ("clipsieve.cli.serve", "serve"),
    ("clipsieve.cli.policy", "policy"),
    ("clipsieve.cli.prompts", "prompts"),
]

_EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {k}  {v}" for k, v in EXIT_CODES.items()) + "\n"


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=_EPILOG,
)
@click.version_option(__version__, prog_name="clipsieve")
def cli() -> None:
    """Moderate, score and filter images with CLIP.

    Every command reads the model from --model or CLIPSIEVE_MODEL (default
    openai/clip-vit-base-patch32; a local checkpoint folder works offline) and keeps
    embeddings in a SQLite store, so a second run over the same files does no model work.
    """


for _module, _name in _COMMANDS:
    cli.add_command(getattr(importlib.import_module(_module), _name))


#: Library parameters whose command-line flag is not simply ``--name-with-dashes``.
_FLAGS = {"no_store": "--no-store", "dry_run": "--dry-run"}


def option_flag(param: str) -> str:
    """The command-line flag of a library parameter named in an error (``min_quality`` →
    ``--min-quality``)."""
    return _FLAGS.get(param, "--" + param.replace("_", "-"))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning clipsieve errors into one line and an exit code."""
    try:
        cli.main(args=argv, prog_name="clipsieve", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except ClipsieveError as exc:
        click.echo(f"clipsieve: error: {exc.render(option_flag)}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # a bug: say so in one line, keep the traceback on request
        if "--debug" in (argv or sys.argv):
            raise
        click.echo(f"clipsieve: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(0)
