"""Fingerprints of local checkpoints, so weights replaced in place are noticed.

A local model is named by its folder; copying other weights into that folder keeps the name.
:func:`checkpoint_fingerprint` summarises the weight files: per file its name, size, mtime and
the sha256 of its first and last MiB (cheap: at most 2 MiB read per file, whatever the model's
size), plus the full hash of ``config.json``. The store records the fingerprint per model id
and drops the embeddings (image, text, video frames) computed with other weights
(:meth:`clipsieve.store.Store.check_checkpoint`), so a stale vector is never returned.

A Hugging Face id resolved from the local hub cache is fingerprinted by the snapshot
(commit) it resolves to; a hub id not in the cache has no fingerprint (``None``).

Caches made *from* a checkpoint in the cache folder (ONNX exports, prompt embeddings) are keyed
by :func:`derived_fingerprint`: the checkpoint fingerprint plus the model id and the
tokenizer and image-processor files, which such a cache bakes in besides the weights.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: Files whose bytes are model weights.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".msgpack", ".h5",
                   ".gguf", ".npz")
#: Bytes hashed at each end of a weight file.
EDGE_BYTES = 1 << 20
#: Files besides the weights and ``config.json`` that a derived cache (an ONNX export, prompt
#: embeddings) depends on: the tokenizer and the image processor's configuration.
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json", "spiece.model", "tokenizer.model")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
#: Bump when what :func:`derived_fingerprint` hashes changes (old derived caches then miss).
DERIVED_VERSION = 2


def _file_part(path: Path) -> bytes:
    st = path.stat()
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            h.update(fh.read(EDGE_BYTES))
            if st.st_size > EDGE_BYTES:
                fh.seek(max(EDGE_BYTES, st.st_size - EDGE_BYTES))
                h.update(fh.read(EDGE_BYTES))
    except OSError:  # unreadable weights: size and date only; loading them names the cause
        h.update(b"unreadable")
    return f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\0{h.hexdigest()}\n".encode()


def checkpoint_fingerprint(model_id: str) -> str | None:
    """``w-<16 hex>`` for a local checkpoint folder, ``rev-<commit>`` for a cached hub id.

    Returns ``None`` for a hub id that is not in the local cache (nothing to fingerprint).
    """
    folder = Path(model_id)
    if folder.is_dir():
        h = hashlib.sha256()
        files = sorted(
            p for p in folder.rglob("*")
            if p.is_file() and p.suffix.lower() in WEIGHT_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        for p in files:
            h.update(str(p.relative_to(folder)).encode() + b"\0")
            h.update(_file_part(p))
        config = folder / "config.json"
        if config.is_file():
            h.update(b"config.json\0" + hashlib.sha256(config.read_bytes()).digest())
        return "w-" + h.hexdigest()[:16]
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model_id, "config.json")
    except Exception:  # noqa: BLE001 - malformed ids, no hub library
        return None
    if isinstance(found, str):
        return "rev-" + os.path.basename(os.path.dirname(found))[:12]
    return None


def _checkpoint_folder(model_id: str) -> Path | None:
    """The folder holding the checkpoint's files: the local folder or the cached hub snapshot."""
    if Path(model_id).is_dir():
        return Path(model_id)
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model_id, "config.json")
    except Exception:  # noqa: BLE001 - malformed ids, no hub library
        return None
    return Path(found).parent if isinstance(found, str) else None


def derived_fingerprint(model_id: str) -> str | None:
    """``d-<16 hex>``: the key of caches made from ``model_id`` (ONNX exports, prompt embeddings).

    It hashes the model id, :func:`checkpoint_fingerprint` (weights and ``config.json``) and,
    for each tokenizer and image-processor file present, what is hashed for a weight file
    (name, size, mtime, first and last MiB): new weights, a new tokenizer or new preprocessing
    in the same folder give a new key, so a derived cache is made again rather than served
    stale. Returns ``None`` where :func:`checkpoint_fingerprint` does (a hub id not in the
    local cache: nothing to derive from).
    """
    weights = checkpoint_fingerprint(model_id)
    folder = _checkpoint_folder(model_id)
    if weights is None or folder is None:
        return None
    h = hashlib.sha256(f"derived-{DERIVED_VERSION}\0{model_id}\0{weights}\0".encode())
    for name in (*TOKENIZER_FILES, *PROCESSOR_FILES):
        path = folder / name
        try:
            if not path.is_file():
                continue
            h.update(_file_part(path))
        except OSError:  # unsearchable or vanished: the name alone (loading names the cause)
            h.update(f"{name}\0unreadable\n".encode())
    return "d-" + h.hexdigest()[:16]
