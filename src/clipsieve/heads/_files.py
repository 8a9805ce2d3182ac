"""The "weights ``.npz`` + JSON sidecar" file pair shared by probes and quality heads.

A head is saved as ``NAME.npz`` (plain arrays, no pickles) and ``NAME.json`` (the sidecar:
``format``, ``format_version``, the model id, ``weights`` and ``weights_sha256`` plus whatever
the head records). :class:`WeightsFormat` holds one kind's format name, version and the words
its error messages use, so that every kind reads and writes the pair with the same checks.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipsieve.errors import ConfigError, HeadError


@dataclass(frozen=True)
class WeightsFormat:
    """One kind of weights file pair, and the words of its error messages.

    Attributes:
        name: the sidecar's ``format`` value.
        version: the newest ``format_version`` this clipsieve reads (and the one it writes).
        noun: what the file is, e.g. ``"probe"`` (``unreadable probe sidecar``).
        short: the noun after "the model the … was trained on", e.g. ``"head"``.
        file_noun: ``"no such {file_noun}"``, ``"is a folder, not a {file_noun}"``.
        read_noun: ``"cannot read {read_noun}: …"``.
        not_weights: the start of the message for a file numpy cannot read.
        sidecar_records: why the sidecar is needed, after "the sidecar records".
        retrain: the command that retrains it, before ``--model ID``.
    """

    name: str
    version: int
    noun: str
    short: str
    file_noun: str
    read_noun: str
    not_weights: str
    sidecar_records: str
    retrain: str


def read_bytes(path: str | os.PathLike[str], file_noun: str, read_noun: str | None = None) -> bytes:
    """The bytes of ``path``, or a :class:`HeadError` saying why not (``no such {file_noun}``)."""
    src = os.fspath(path)
    try:
        return Path(src).read_bytes()
    except FileNotFoundError:
        raise HeadError(f"{src}: no such {file_noun}") from None
    except IsADirectoryError:
        raise HeadError(f"{src}: is a folder, not a {file_noun}") from None
    except OSError as exc:
        raise HeadError(f"{src}: cannot read {read_noun or file_noun}: {exc.strerror}") from None


def weights_path(path: str | os.PathLike[str]) -> Path:
    """The ``.npz`` of a pair given either file (``head.json`` → ``head.npz``)."""
    p = Path(path)
    return p.with_suffix(".npz") if p.suffix.lower() == ".json" else p


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The ``.json`` sidecar of an ``.npz`` (``head.npz`` → ``head.json``)."""
    return Path(path).with_suffix(".json")


def read_weights(
    npz: Path, fmt: WeightsFormat, dtype: Any = None
) -> tuple[bytes, dict[str, np.ndarray]]:
    """Read an ``.npz`` (no pickles): its bytes and ``{name: array}`` (converted to ``dtype``).

    Raises:
        HeadError: missing, unreadable, or not an ``.npz`` of plain arrays.
    """
    data = read_bytes(npz, fmt.file_noun, fmt.read_noun)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k], dtype=dtype) for k in z.files}
    except Exception as exc:
        raise HeadError(f"{npz}: {fmt.not_weights}: {type(exc).__name__}: {exc}") from None
    check_finite(npz, arrays, fmt.noun)
    return data, arrays


def check_finite(src: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], noun: str) -> None:
    """Refuse weights holding NaN or infinite values: they would give ``null`` scores for
    every image instead of an error.

    Raises:
        HeadError: naming the file and the array.
    """
    for name, arr in arrays.items():
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            bad = int(arr.size - np.isfinite(arr).sum())
            raise HeadError(
                f"{os.fspath(src)}: the {noun} weights hold NaN or infinite values "
                f"({bad} in {name!r}); retrain it"
            )


def read_sidecar(npz: Path, data: bytes, fmt: WeightsFormat) -> tuple[Path, dict[str, Any]]:
    """Read the sidecar of ``npz`` and check its format, version and weights digest.

    Args:
        npz: the weights file.
        data: its bytes (compared with the sidecar's ``weights_sha256``).
        fmt: the expected format.

    Returns:
        ``(sidecar path, its content)``.

    Raises:
        HeadError: a missing or unreadable sidecar, another format, a newer version, or a
            sidecar written for other weights.
    """
    side = sidecar_path(npz)
    try:
        info = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HeadError(
            f"{npz}: its sidecar {side} is missing; the sidecar records {fmt.sidecar_records} "
            "(keep both files together)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HeadError(f"{side}: unreadable {fmt.noun} sidecar: {exc}") from None
    if not isinstance(info, dict) or info.get("format") != fmt.name:
        raise HeadError(
            f"{side}: not a clipsieve {fmt.noun} sidecar (no \"format\": \"{fmt.name}\")"
        )
    version = info.get("format_version")
    if not isinstance(version, int) or version > fmt.version:
        raise HeadError(
            f"{side}: {fmt.noun} format version {version!r} is newer than this clipsieve reads "
            f"({fmt.version}); upgrade clipsieve"
        )
    if info.get("weights_sha256") not in (None, hashlib.sha256(data).hexdigest()):
        raise HeadError(
            f"{side}: describes other weights than {npz} (SHA-256 differs); keep the .npz and "
            "the .json written together, or retrain"
        )
    return side, info


def trained_on(info: Mapping[str, Any], side: Path, fmt: WeightsFormat) -> str:
    """The sidecar's model id.

    Raises:
        HeadError: no model id.
    """
    model = info.get("model")
    if not isinstance(model, str) or not model:
        raise HeadError(f"{side}: lacks the model id the {fmt.short} was trained on")
    return model


def model_mismatch(
    where: str, fmt: WeightsFormat, trained: str, model_id: str, *, advice: bool = True
) -> HeadError:
    """The error for a head trained on model ``trained`` used with ``model_id`` (both named)."""
    msg = (f"{where}: {fmt.noun} was trained on model '{trained}', refusing to use it with "
           f"model '{model_id}'")
    if advice:
        msg += (" (embeddings of different models are not comparable); retrain it with: "
                f"{fmt.retrain} --model {model_id}")
    return HeadError(msg)


def write_weights(
    path: str | os.PathLike[str],
    arrays: Mapping[str, np.ndarray],
    info: Mapping[str, Any],
    fmt: WeightsFormat,
    fields: Mapping[str, Any],
    lead: Sequence[str],
) -> tuple[Path, Path, dict[str, Any]]:
    """Write ``path`` (``.npz`` added if missing) and its ``.json`` sidecar.

    Args:
        path: the weights file.
        arrays: what the ``.npz`` holds, in this order.
        info: the head's sidecar content so far.
        fmt: the format written.
        fields: more sidecar keys (after ``format`` and ``format_version``, before
            ``weights`` and ``weights_sha256``), e.g. the model id.
        lead: keys written first, in this order (the others follow in insertion order).

    Returns:
        ``(weights path, sidecar path, the sidecar content as written)``.
    """
    npz = Path(path)
    if npz.suffix.lower() != ".npz":
        npz = npz.with_name(npz.name + ".npz")
    npz.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    data = buf.getvalue()
    npz.write_bytes(data)
    full = dict(info)
    full.update(format=fmt.name, format_version=fmt.version, **fields, weights=npz.name,
                weights_sha256=hashlib.sha256(data).hexdigest())
    ordered = {k: full[k] for k in lead if k in full}
    ordered.update((k, v) for k, v in full.items() if k not in ordered)
    side = sidecar_path(npz)
    side.write_text(json.dumps(ordered, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return npz, side, ordered


def csv_pairs(src: str, columns: str) -> Iterator[tuple[int, str, str]]:
    """``(line number, first cell, second cell)`` of each row of a two-column training CSV.

    The file is UTF-8 (a BOM is skipped); blank rows are skipped and cells stripped.

    Args:
        src: the CSV file.
        columns: the expected columns, for messages (``"path,label"``).

    Raises:
        ConfigError: an unreadable file, or a row of another width (naming ``file:line``).
    """
    try:
        text = Path(src).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{src}: cannot read as a UTF-8 CSV file: {exc}") from None
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 2:
            raise ConfigError(f"{src}:{lineno}: expected 2 columns ({columns}), got {len(row)}")
        yield lineno, row[0].strip(), row[1].strip()
