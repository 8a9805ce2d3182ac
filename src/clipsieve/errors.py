"""The clipsieve exception hierarchy.

Every error that clipsieve raises on purpose derives from :class:`ClipsieveError`::

    ClipsieveError
    ├── ConfigError            bad option values, unknown names
    ├── ModelError             a checkpoint cannot be found or loaded
    ├── DecodeError            one input file cannot be read (carries a reason code)
    ├── PolicyError            a moderation policy file is invalid
    ├── HeadError              a probe / quality head file is invalid or for another model
    ├── StoreError             the SQLite store cannot be opened or migrated
    └── OutputError            an output file cannot be created or written

The command line turns each into a one-line message and the exit code in :data:`EXIT_CODES`.
Per-file problems (:class:`DecodeError`) never stop a batch: they become an ``error`` on the
item's result instead.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Mapping

#: Documented process exit codes of the ``clipsieve`` command.
EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_FATAL = 3
EXIT_ITEMS_FAILED = 4
EXIT_BLOCKED = 5
EXIT_BLOCKED_AND_FAILED = 6

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "every item was processed (and, for moderation, nothing was blocked)",
    EXIT_INTERNAL: "unexpected internal error (a bug: please report it)",
    EXIT_USAGE: "bad command-line usage",
    EXIT_FATAL: "the job could not start or could not write: model, policy, head, store or "
                "output error",
    EXIT_ITEMS_FAILED: "some items failed (see their `error`); the others were processed",
    EXIT_BLOCKED: "at least one item was blocked by the moderation policy",
    EXIT_BLOCKED_AND_FAILED: "at least one item was blocked and some items failed",
}

#: Reason codes carried by per-item errors.
ERROR_CODES: dict[str, str] = {
    "not_an_image": "the file is not an image format clipsieve can read",
    "truncated": "the file ends early or its data is corrupt",
    "too_large": "the image, video frame or file exceeds the configured limits (decompression-bomb guard)",
    "unsupported": "an image format or mode that this installation cannot decode",
    "io_error": "the file could not be read (missing, permission denied, vanished)",
    "not_a_video": "the file is not a video or animation format clipsieve can read",
    "no_video_stream": "the container holds no video stream (audio only, subtitles…)",
    "empty_video": "the video has zero duration or no decodable frame",
    "timeout": "the per-video time limit passed before any frame was analysed",
}


class ClipsieveError(Exception):
    """Base class of every error clipsieve raises on purpose.

    A message about an argument names it with a ``{marker}``; ``params`` maps each marker to
    its spelling in the library (``{"dedupe": "dedupe"}``, ``{"no_store": "store=False"}``).
    ``str(exc)`` uses those spellings, and a front end shows its own with :meth:`render` (the
    CLI: ``--dedupe``, ``--no-store``), so the library never speaks in command-line flags.
    """

    exit_code: int = EXIT_FATAL
    code: str = "error"

    def __init__(
        self, *args: object, params: Mapping[str, str] | Iterable[str] = ()
    ) -> None:
        super().__init__(*args)
        self.params: dict[str, str] = (
            dict(params) if isinstance(params, Mapping) else {p: p for p in params}
        )

    def render(self, name: Callable[[str], str] | None = None) -> str:
        """The message with each ``{marker}`` replaced by ``name(marker)`` (default: the
        library spelling)."""
        text = super().__str__()
        for marker, spelling in getattr(self, "params", {}).items():
            text = text.replace("{" + marker + "}", name(marker) if name else spelling)
        return text

    def __str__(self) -> str:
        return self.render()


class ConfigError(ClipsieveError):
    """An option value, name or setting is invalid."""

    exit_code = EXIT_USAGE
    code = "config_error"


class ModelError(ClipsieveError):
    """A model checkpoint cannot be found or loaded."""

    code = "model_error"


class PolicyError(ClipsieveError):
    """A moderation policy file is invalid or unknown."""

    code = "policy_error"


class HeadError(ClipsieveError):
    """A probe or quality head file is invalid or belongs to another model."""

    code = "head_error"


class StoreError(ClipsieveError):
    """The SQLite store cannot be opened, migrated or written."""

    code = "store_error"


class OutputError(ClipsieveError):
    """An output file cannot be created or written (checked before work starts; a write that
    fails later, such as a full disk, raises it too)."""

    code = "output_error"


class DecodeError(ClipsieveError):
    """One input file could not be decoded.

    Args:
        code: one of :data:`ERROR_CODES`.
        message: a human-readable reason.
        path: the file concerned, if known.
    """

    def __init__(self, code: str, message: str, path: str | None = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown decode error code {code!r}")
        self.code = code
        self.message = message
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """Return ``'; did you mean "x"?'`` for the candidate closest to ``word``, or ``""``.

    For the end of an "unknown name" message; the closest candidate is difflib's (cutoff 0.6).
    """
    matches = difflib.get_close_matches(word, list(candidates), n=1)
    return f"; did you mean {json.dumps(matches[0])}?" if matches else ""
