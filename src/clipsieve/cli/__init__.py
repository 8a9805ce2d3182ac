"""The ``clipsieve`` command: a thin Click layer over the library.

Each command lives in its own module under ``clipsieve.cli`` and is listed in ``_COMMANDS``.
Library errors become one line on stderr and a documented exit code (see ``clipsieve --help``).
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import signal
import sys

import click

from clipsieve import __version__
from clipsieve.errors import EXIT_CODES, EXIT_FATAL, EXIT_INTERNAL, ClipsieveError

#: (module, command function name) of every subcommand, in help order.
_COMMANDS: list[tuple[str, str]] = [
    ("clipsieve.cli.scan", "scan"),
    ("clipsieve.cli.video", "video"),
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
    ("clipsieve.cli.compare", "compare_encoders"),
]

_EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {k}  {v}" for k, v in EXIT_CODES.items()) + "\n"


class _PipeClosed(Exception):
    """Standard output was closed by its reader (``clipsieve scan DIR | head -1``).

    Not an ``OSError``: Click turns an EPIPE ``OSError`` into exit code 1 on its own.
    """


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except OSError as exc:
            if isinstance(exc, BrokenPipeError) or exc.errno == errno.EPIPE:
                raise _PipeClosed() from None
            raise


def _die_of_sigpipe() -> None:
    """End as Unix tools do when their reader goes away: quietly, killed by SIGPIPE (the shell
    sees status 141), after the ``finally`` blocks have run (stores closed, journal written)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing left to flush into the closed pipe
    except (OSError, ValueError):
        pass
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGPIPE)
    sys.exit(0)  # pragma: no cover - platforms without SIGPIPE


@click.group(
    cls=_Group,
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
    ``--min-quality``), or the environment variable when the value came from one
    (``CLIPSIEVE_DEVICE``; see :func:`clipsieve.cli.common.note_env_sources`)."""
    from clipsieve.cli.common import ENV_SOURCES

    if param in ENV_SOURCES:
        return ENV_SOURCES[param]
    return _FLAGS.get(param, "--" + param.replace("_", "-"))


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning clipsieve errors into one line and an exit code."""
    with contextlib.suppress(AttributeError, ValueError):
        # a file name that is not UTF-8 never makes printing fail (see clipsieve.paths)
        sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    try:
        cli.main(args=argv, prog_name="clipsieve", standalone_mode=False)
        _flush_stdout()
    except SystemExit:
        _flush_stdout()
        raise
    except _PipeClosed:
        _die_of_sigpipe()
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
        _quiet_stdout()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        _die_of_sigpipe()
    except Exception as exc:  # a bug: say so in one line, keep the traceback on request
        if "--debug" in (argv or sys.argv):
            raise
        click.echo(f"clipsieve: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(0)


def _flush_stdout() -> None:
    """Flush what a command printed; a reader that went away ends the process quietly."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _die_of_sigpipe()
    except OSError as exc:
        click.echo(f"clipsieve: error: cannot write to standard output: {exc.strerror or exc}",
                   err=True)
        _quiet_stdout()
        sys.exit(EXIT_FATAL)
    except ValueError:  # stdout closed
        pass


def _quiet_stdout() -> None:
    """After a write to stdout failed (``> /dev/full``), drop what is still buffered, so the
    interpreter's own flush at exit does not print a second error."""
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
