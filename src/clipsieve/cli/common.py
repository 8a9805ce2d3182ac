"""Options and helpers shared by the commands."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any, TypeVar

import click

from clipsieve import settings
from clipsieve.errors import (
    EXIT_BLOCKED,
    EXIT_BLOCKED_AND_FAILED,
    EXIT_ITEMS_FAILED,
    EXIT_OK,
)
from clipsieve.paths import display

F = TypeVar("F", bound=Callable[..., Any])

#: The encoders --encoder offers (registered in clipsieve.backends).
ENCODERS = ("torch", "onnx", "onnx-int8")
T = TypeVar("T")


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 item"``, ``"2 items"``; ``many`` for irregular plurals."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def store_option(*, show_envvar: bool = True) -> Callable[[F], F]:
    """The ``--store`` option (``store_path``; CLIPSIEVE_STORE)."""
    return click.option("--store", "store_path", envvar="CLIPSIEVE_STORE",
                        show_envvar=show_envvar, type=click.Path(dir_okay=False),
                        help="SQLite store file [default: user cache dir/clipsieve/store.sqlite].")


def threshold_option(f: F) -> F:
    """``--threshold CATEGORY.LEVEL=VALUE`` (repeatable): per-run policy threshold overrides."""
    return click.option(
        "--threshold", "thresholds", multiple=True, metavar="CATEGORY.LEVEL=VALUE",
        help="Override one policy threshold for this run, e.g. violence.block=0.5 or "
             "violence.review=0.3; repeatable. Validated like the policy file and recorded "
             "in each result's moderation.policy.overrides.")(f)


def load_cli_policy(policy: Any, thresholds: Any = ()) -> Any:
    """The policy named on the command line, with its ``--threshold`` overrides applied."""
    from clipsieve.moderation import load_policy

    return load_policy(policy).with_overrides(list(thresholds or ()))


def open_existing_store(path: str | None, *, write: bool = True) -> Any:
    """The store at ``path`` (default: the user store); an error if it does not exist.

    With ``write=False`` (report, export) a read-only store is opened read-only."""
    from clipsieve.errors import StoreError
    from clipsieve.store import Store

    p = str(path) if path else str(settings.default_store_path())
    if p != ":memory:" and not os.path.exists(p):
        raise StoreError(f"no store at {p} (pass --store or set CLIPSIEVE_STORE)")
    return Store(p, write=write)


def model_options(f: F) -> F:
    """--model, --encoder, --device, --precision, --store/--no-store, --batch-size, --workers,
    --max-pixels."""
    opts = [
        click.option("--model", "-m", envvar="CLIPSIEVE_MODEL", default=settings.DEFAULT_MODEL,
                     show_default=True, show_envvar=True,
                     help="Hugging Face model id or local checkpoint folder."),
        click.option("--encoder", envvar="CLIPSIEVE_ENCODER", default="torch", show_default=True,
                     show_envvar=True, type=click.Choice(list(ENCODERS)),
                     help="torch (PyTorch), onnx (ONNX Runtime, float32) or onnx-int8 "
                          "(ONNX Runtime, dynamic int8; fastest on CPUs). The first ONNX use "
                          "of a model exports it into the cache folder."),
        click.option("--device", envvar="CLIPSIEVE_DEVICE", default="auto", show_default=True,
                     show_envvar=True,
                     help="auto, cpu, cuda, cuda:N or mps."),
        click.option("--precision", envvar="CLIPSIEVE_PRECISION", default="auto",
                     show_envvar=True,
                     show_default=True,
                     type=click.Choice(["auto", "float32", "bfloat16", "float16"]),
                     help="auto = float16 on CUDA, bfloat16 on CPUs with native bf16, else "
                          "float32 (torch); the onnx encoder runs float32, onnx-int8 int8."),
        store_option(show_envvar=True),
        click.option("--no-store", is_flag=True,
                     help="Keep nothing: no store read or written."),
        click.option("--batch-size", default=settings.DEFAULT_BATCH_SIZE, show_default=True,
                     type=click.IntRange(1, 4096), help="Images per model call."),
        click.option("--workers", type=click.IntRange(1, 256),
                     help="Decode threads [default: number of cores, at least 2]."),
        click.option("--max-pixels", default=100_000_000, show_default=True,
                     type=click.IntRange(1), help="Refuse images larger than this (width × height)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


#: Parameters whose value came from an environment variable in this run (parameter →
#: variable), so that errors name the variable rather than a flag nobody typed.
ENV_SOURCES: dict[str, str] = {}


def note_env_sources(names: dict[str, str]) -> None:
    """Record which of ``names`` (parameter → variable) were set from the environment."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return
    from click.core import ParameterSource

    for param, var in names.items():
        try:
            if ctx.get_parameter_source(param) == ParameterSource.ENVIRONMENT:
                ENV_SOURCES[param] = var
            else:
                ENV_SOURCES.pop(param, None)
        except Exception:  # noqa: BLE001 - not an option of this command
            continue


def make_analyzer(kw: dict[str, Any], **options: Any) -> Any:
    """Build an Analyzer from the options of :func:`model_options` (popped from ``kw``).

    ``options`` are more Analyzer arguments (e.g. ``pixel_features=False``).
    """
    from clipsieve.media.decode import DecodeLimits
    from clipsieve.pipeline import Analyzer

    note_env_sources({"device": "CLIPSIEVE_DEVICE", "precision": "CLIPSIEVE_PRECISION",
                      "model": "CLIPSIEVE_MODEL", "store_path": "CLIPSIEVE_STORE"})
    store: Any = False if kw.pop("no_store") else kw.pop("store_path", None)
    kw.pop("store_path", None)
    return Analyzer(
        model=kw.pop("model"),
        encoder=kw.pop("encoder"),
        device=kw.pop("device"),
        precision=kw.pop("precision"),
        store=store,
        batch_size=kw.pop("batch_size"),
        workers=kw.pop("workers"),
        limits=DecodeLimits(max_pixels=kw.pop("max_pixels")),
        **options,
    )


def train_with_progress(
    kw: dict[str, Any],
    quiet: bool,
    count: Callable[[], int],
    train: Callable[[Any, Callable[[Any], None]], tuple[T, list[Any]]],
) -> tuple[T, list[Any], Progress]:
    """Run a training command's embedding and fitting, with an "embed" progress bar.

    Args:
        kw: the options of :func:`model_options` (the Analyzer is built from them).
        quiet: no progress bar.
        count: reads the training data and returns how many images it lists (called before
            the model loads, so bad data fails fast).
        train: ``train(analyzer, on_item)`` returns the trained object and the items that
            could not be read.

    Returns:
        The trained object, the unreadable items (listed on stderr) and the progress counter.
    """
    analyzer = make_analyzer(kw)
    try:
        n = count()  # fail fast on bad data, before loading anything
        progress = Progress(n, "embed", enabled=None if not quiet else False, analyzer=analyzer)
        try:
            result, failed = train(analyzer, progress.advance)
        finally:
            progress.close()
    finally:
        analyzer.close()
    if failed:
        click.echo(f"skipped {len(failed)} file(s) that could not be read:", err=True)
        for item in failed:
            click.echo(f"  {display(item.path)}: {item.error.code}: {item.error.message}", err=True)
    return result, failed, progress


def make_console(fh: IO[str]) -> Any:
    """A Rich console writing to ``fh``: colours on a terminal, plain 120-column text elsewhere."""
    from rich.console import Console

    tty = fh.isatty()
    width = None if tty or "COLUMNS" in os.environ else 120
    return Console(file=fh, width=width, highlight=False, soft_wrap=False)


# -- output files -------------------------------------------------------------------------------


def _regular_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of ``path`` when it is an existing regular file."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def check_outputs(
    outputs: Mapping[str, str | os.PathLike[str] | None],
    inputs: Iterable[str | os.PathLike[str]] | Callable[[], Iterable[Any]] = (),
) -> None:
    """Check every output path of a command before any work starts.

    The one place where commands check their output files (``--out``, ``--report``,
    ``--manifest``, the weights and sidecar of the training commands…):

    - ``None`` and ``-`` (standard output) are skipped;
    - two options naming the same file are a usage error (exit code 2);
    - an output that is an input file (the same device and inode: a photo being scanned, the
      policy being calibrated) is a usage error, before anything is written (exit 2);
    - missing parent folders are created;
    - the file must be writable: an existing regular file is opened for appending (nothing is
      truncated), a new one is created and removed again; a device or FIFO must be writable
      (``/dev/null`` and ``/dev/stdout`` are fine outputs). Otherwise :class:`OutputError`
      (exit code 3) naming the option, the file and the reason.

    Args:
        outputs: option name → path.
        inputs: the files the command reads, or a function returning them (called only when
            an output already exists: a new file cannot be an input).

    Raises:
        click.UsageError: same file twice, or an output that is an input.
        OutputError: a folder cannot be created or the file cannot be written.
    """
    from clipsieve.errors import OutputError

    named = {opt: os.fspath(p) for opt, p in outputs.items() if p is not None and p != "-"}
    seen: dict[str, str] = {}
    for opt, p in named.items():
        key = os.path.realpath(p)
        if key in seen:
            raise click.UsageError(f"{seen[key]} and {opt} name the same file: {display(p)}")
        seen[key] = opt
    existing = {opt: ident for opt, p in named.items()
                if (ident := _regular_identity(p)) is not None}
    if existing:
        files = inputs() if callable(inputs) else inputs
        by_ident = {ident: opt for opt, ident in existing.items()}
        for f in files:
            ident = _regular_identity(os.fspath(f))
            if ident is not None and ident in by_ident:
                opt = by_ident[ident]
                raise click.UsageError(
                    f"{opt} {display(named[opt])} is also an input ({display(os.fspath(f))}); "
                    "refusing to overwrite an input: choose another output file"
                )
    for opt, p in named.items():
        _check_writable(opt, p, OutputError)


def _check_writable(opt: str, p: str, error: type[Exception]) -> None:
    def fail(why: str) -> None:
        raise error(f"{opt} {display(p)}: {why}")

    if os.path.isdir(p):
        fail("is a folder; give a file name")
    parent = os.path.dirname(os.path.abspath(p))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create the folder {display(parent)}: {exc.strerror or exc}")
    try:
        st: os.stat_result | None = os.stat(p)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        fail(f"cannot write: {exc.strerror or exc}")
        return
    if st is not None and not stat.S_ISREG(st.st_mode):
        if not os.access(p, os.W_OK):
            fail("cannot write: permission denied")
        return
    try:
        if st is not None:
            fd = os.open(p, os.O_WRONLY | os.O_APPEND)
            os.close(fd)
        else:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            os.close(fd)
            os.unlink(p)
    except OSError as exc:
        fail(f"cannot write: {exc.strerror or exc}")


class _Writer:
    """A text stream whose write errors become :class:`OutputError` (one line, exit code 3).

    A closed pipe stays a ``BrokenPipeError`` (the command then ends quietly, as Unix tools do).
    """

    def __init__(self, fh: IO[str], name: str) -> None:
        self._fh = fh
        self._name = name

    def _fail(self, exc: OSError) -> None:
        from clipsieve.errors import OutputError

        if isinstance(exc, BrokenPipeError) or exc.errno == errno.EPIPE:
            raise exc
        raise OutputError(f"cannot write {self._name}: {exc.strerror or exc}") from None

    def write(self, text: str) -> int:
        try:
            return self._fh.write(text)
        except OSError as exc:
            self._fail(exc)
            raise

    def flush(self) -> None:
        try:
            self._fh.flush()
        except OSError as exc:
            self._fail(exc)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


@contextlib.contextmanager
def open_output(path: str | None) -> Iterator[IO[str]]:
    """A file opened for writing, or stdout when ``path`` is None or '-'.

    Check ``path`` with :func:`check_outputs` before any work; here a failed write becomes
    :class:`OutputError` naming the file. Names that are not UTF-8 are written as U+FFFD.
    """
    if path in (None, "-"):
        yield _Writer(sys.stdout, "to standard output")  # type: ignore[misc]
        return
    from clipsieve.errors import OutputError

    try:
        fh = open(path, "w", encoding="utf-8", errors="replace")  # type: ignore[arg-type]
    except OSError as exc:
        raise OutputError(f"cannot write {display(str(path))}: {exc.strerror or exc}") from None
    writer = _Writer(fh, display(str(path)))
    try:
        yield writer  # type: ignore[misc]
        writer.flush()
    finally:
        try:
            fh.close()
        except OSError as exc:  # the last buffered write failed
            writer._fail(exc)


@contextlib.contextmanager
def writing(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn an ``OSError`` while writing ``path`` into :class:`OutputError` (exit code 3)."""
    from clipsieve.errors import OutputError

    try:
        yield
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) or exc.errno == errno.EPIPE:
            raise  # a closed pipe ends the command quietly (see clipsieve.cli.main)
        raise OutputError(f"cannot write {display(os.fspath(path))}: {exc.strerror or exc}"
                          ) from None


def write_jsonl(fh: IO[str], obj: dict[str, Any]) -> None:
    """One JSON line, always valid UTF-8 (see :mod:`clipsieve.paths` for file names)."""
    from clipsieve.paths import clean_text

    fh.write(clean_text(json.dumps(obj, ensure_ascii=False)) + "\n")
    fh.flush()


class Progress:
    """A Rich progress bar on stderr (items/s, ETA, errors so far), only on a terminal."""

    def __init__(self, total: int | None, label: str, enabled: bool | None = None,
                 analyzer: Any = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.label = label
        self._status_shown = False
        self.errors = 0
        self.done = 0
        self.cached = 0
        self.blocked = 0
        self.review = 0
        self.moderated = 0
        self.start = time.perf_counter()
        self._bar: Any = None
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} items/s"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TimeElapsedColumn(),
                TextColumn("[red]{task.fields[errors]} errors"),
                console=Console(stderr=True),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(label, total=total, rate="0.0", errors=0)
            if analyzer is not None:  # "loading model …" in place of the label meanwhile
                analyzer.on_status = self.status

    def status(self, text: str) -> None:
        """Show ``text`` (e.g. "loading model …") as the bar's label until the next item."""
        if self._bar is not None:
            self._bar.update(self._task, description=text)
            self._status_shown = True

    def advance(self, item: Any) -> None:
        self.done += 1
        if getattr(item, "status", "ok") != "ok":
            self.errors += 1
        if getattr(item, "cached", False):
            self.cached += 1
        mod = getattr(item, "moderation", None)
        decision = None
        if getattr(item, "kind", None) == "video":  # a video is judged by its verdict
            decision = getattr(item, "decision", None)
            self.moderated += decision is not None
        elif mod is not None:
            self.moderated += 1
            decision = getattr(mod, "decision", None)
        self.blocked += decision == "block"
        self.review += decision == "review"
        if self._bar is not None:
            rate = self.done / max(time.perf_counter() - self.start, 1e-9)
            extra: dict[str, Any] = {}
            if self._status_shown:
                extra["description"] = self.label
                self._status_shown = False
            self._bar.update(self._task, advance=1, rate=f"{rate:.1f}", errors=self.errors,
                             **extra)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def summary(self, verb: str = "scanned") -> str:
        ok = self.done - self.errors
        rate = self.done / max(self.elapsed, 1e-9)
        parts = [f"{verb} {plural(self.done, 'item')}: {ok} ok, {self.errors} failed"]
        parts.append(f"{self.cached} from store")
        if self.moderated or verb == "moderated":  # both counts, zeros included
            parts.append(f"{self.blocked} blocked, {self.review} to review")
        return ", ".join(parts) + f" in {self.elapsed:.1f}s ({rate:.1f} items/s)"

    def exit_code(self) -> int:
        if self.blocked and self.errors:
            return EXIT_BLOCKED_AND_FAILED
        if self.blocked:
            return EXIT_BLOCKED
        if self.errors:
            return EXIT_ITEMS_FAILED
        return EXIT_OK


def input_options(f: F | None = None, *, urls: bool = True) -> Any:
    """--input, --include, --exclude, --limit, --allow-urls: what every image-reading command
    accepts besides PATHS (see :func:`clipsieve.media.inputs.iter_sources`).

    ``input_options(urls=False)`` (``filter``, which acts on local files) leaves out
    --allow-urls.
    """
    if f is None:
        return lambda g: input_options(g, urls=urls)
    opts = [
        click.option("--input", "input_path", type=click.Path(dir_okay=False, allow_dash=True),
                     help="A list of inputs: .txt (one a line), .csv or .parquet (a `path` "
                          "column, optional `caption`), .jsonl ({\"path\", \"caption\"} "
                          "objects), or - for stdin. Relative paths: from the list's folder."),
        click.option("--include", multiple=True, metavar="GLOB",
                     help="Only inputs whose name or path matches (repeatable)."),
        click.option("--exclude", multiple=True, metavar="GLOB",
                     help="Leave out inputs whose name or path matches (repeatable)."),
        click.option("--limit", type=click.IntRange(1), metavar="N",
                     help="Stop after N inputs."),
    ]
    if urls:
        opts.append(click.option(
            "--allow-urls", is_flag=True,
            help="Download http(s) inputs (bounded size and time, public addresses only, "
                 "content sniffed); refused otherwise."))
    for opt in reversed(opts):
        f = opt(f)
    return f


def collect_sources(
    paths: Any, kw: dict[str, Any], *, recursive: bool = True, captions: Any = None,
    max_pixels: int | None = None, videos: bool = False,
) -> list[Any]:
    """The inputs of a command, from PATHS and the options of :func:`input_options` (popped
    from ``kw``): a list of :class:`clipsieve.media.inputs.Source`.

    Captions that come with the inputs (list columns, webdataset ``.txt``) are added to the
    :class:`~clipsieve.moderation.CaptionSource` ``captions`` when given. A URL among PATHS
    without --allow-urls is a usage error; one inside a list fails as its own item. Says so
    on stderr when nothing was found. With ``videos``, folder walks pick up video files too.
    """
    from clipsieve.media.inputs import IMAGE_EXTENSIONS, is_url, iter_sources, with_captions

    extensions = IMAGE_EXTENSIONS
    if videos:
        from clipsieve.video.analyze import MEDIA_EXTENSIONS as extensions

    input_path = kw.pop("input_path", None)
    allow_urls = kw.pop("allow_urls", False)
    paths = [str(p) for p in paths]
    if not allow_urls:
        urls = [p for p in paths if is_url(p)]
        if urls:
            raise click.UsageError(f"{urls[0]}: URL inputs are refused unless --allow-urls "
                                   "is given")
    if not paths and not input_path:
        raise click.UsageError("give at least one PATH or --input FILE")
    it = iter_sources(
        paths, input_file=input_path, recursive=recursive,
        include=kw.pop("include", ()) or (), exclude=kw.pop("exclude", ()) or (),
        limit=kw.pop("limit", None), allow_urls=allow_urls, extensions=extensions,
    )
    if captions is not None:
        it = with_captions(it, captions.add)
    sources = list(it)
    if not sources:
        where = ", ".join([*paths, *([input_path] if input_path else [])]) or "the given paths"
        what = "image or video" if videos else "image"
        click.echo(f"clipsieve: warning: no {what} files found under {where}", err=True)
    return sources


def local_sources(paths: Any, kw: dict[str, Any]) -> list[str]:
    """PATHS plus the entries of --input, for a command that acts on local files (``filter``):
    a tar shard or URL among them is a usage error. Pops --input from ``kw``."""
    from clipsieve.media.inputs import is_tar, is_url, read_list

    input_path = kw.pop("input_path", None)
    out = [str(p) for p in paths]
    if input_path:
        out += [e.target for e in read_list(input_path)]
    for p in out:
        if is_url(p) or is_tar(p):
            raise click.UsageError(f"{p}: filter moves, copies or links files; a URL or tar "
                                   "shard cannot be a filter source (scan it instead)")
    if not out:
        raise click.UsageError("give at least one SOURCE or --input FILE")
    return out


def find_files(paths: Any, *, recursive: bool = True) -> list[str]:
    """The files under ``paths`` (see :func:`clipsieve.media.discover.iter_files`).

    Says so on stderr when a folder holds no image: an empty result is rarely what was meant.
    """
    from clipsieve.media.discover import iter_files

    paths = list(paths)
    files = list(iter_files(paths, recursive=recursive))
    if not files:
        where = ", ".join(str(p) for p in paths) or "the given paths"
        click.echo(f"clipsieve: warning: no image files found under {where}", err=True)
    return files



def input_files(
    files: Iterable[Any], options: Iterable[str | None] = (), *, sidecars: bool = False
) -> Iterator[str]:
    """Everything a scanning command reads, for :func:`check_outputs`: the image files, the
    files named by options (policy, heads, labels; names that are not files are ignored)
    and, with ``sidecars``, each image's caption sidecar (``photo.txt``)."""
    for opt in options:
        if opt:
            yield opt
    for f in files:
        if not isinstance(f, str):  # a clipsieve.media.inputs.Source
            f = getattr(f, "path", None) or getattr(f, "tar", None)
            if not f:
                continue
        yield f
        if sidecars:
            yield os.path.splitext(f)[0] + ".txt"


def weights_outputs(out: str) -> tuple[str, str]:
    """The two files a training command writes for ``--out``: the ``.npz`` (added when
    missing) and its ``.json`` sidecar."""
    from clipsieve.heads._files import sidecar_path

    npz = out if out.lower().endswith(".npz") else out + ".npz"
    return npz, str(sidecar_path(npz))
