"""Fingerprints of local checkpoints, so weights replaced in place are noticed.

A local model is named by its folder; copying other weights into that folder keeps the name.
:func:`checkpoint_fingerprint` summarises the weight files: per file its name, size, mtime and
the sha256 of its first and last MiB (cheap: at most 2 MiB read per file, whatever the model's
size), plus the full hash of ``config.json``. The store records the fingerprint per model id
and drops the embeddings (image, text, video frames) computed with other weights
(:meth:`clipsieve.store.Store.check_checkpoint`), so a stale vector is never returned.

A Hugging Face id resolved from the local hub cache is fingerprinted by the snapshot
(commit) it resolves to; a hub id not in the cache has no fingerprint (``None``).
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
