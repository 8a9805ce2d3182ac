"""Prompt embeddings kept in the cache folder, per model and encoder.

Heads embed their prompt banks (the moderation policy's class prompts, the quality anchors,
zero-shot label prompts) once per model. With a store they are kept there; this file cache
keeps them for runs without one (``--no-store``), so that such a run does not load the text
tower and re-encode a few hundred prompts every time. Only prompt banks go here, never
captions (they are user data).

One ``.npz`` per (model fingerprint, encoder kind, requested precision) under ``<cache folder>/prompts/``, holding
the texts and their vectors; written whole to a temporary file and renamed into place, so a
reader sees the old or the new file, never half of one. An unreadable file is ignored (and
replaced on the next write).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: Beyond this many texts per file the oldest entries are dropped on write.
MAX_TEXTS = 50_000


class PromptCache:
    """The prompt embeddings of one model under one encoder, in the cache folder.

    Args:
        model_id: the resolved model id.
        encoder: the encoder kind (``torch``, ``onnx``, ``onnx-int8``).
        cache_dir: the cache folder (default: :func:`clipsieve.settings.cache_dir`).
        precision: the requested precision (``auto``, ``float32``, …), part of the file name:
            prompts embedded in bfloat16 are never served to a float32 run.
    """

    def __init__(self, model_id: str, encoder: str, cache_dir: str | Path | None = None,
                 precision: str | None = None) -> None:
        from clipsieve import settings

        self.model_id = model_id
        self.encoder = encoder
        root = Path(cache_dir) if cache_dir is not None else settings.cache_dir()
        self.path: Path | None = None
        from clipsieve.fingerprint import derived_fingerprint

        try:
            fp = derived_fingerprint(model_id)  # None: a model not on disk, nothing to key by
        except OSError:  # an unreadable checkpoint folder: loading it names the cause
            fp = None
        if fp is not None:
            tag = f"-{precision}" if precision else ""
            self.path = root / "prompts" / f"{fp}-{encoder}{tag}.npz"
        self._lock = threading.Lock()
        self._data: dict[str, np.ndarray] | None = None

    def _load(self) -> dict[str, np.ndarray]:
        if self._data is None:
            self._data = {}
            if self.path is not None:
                try:  # is_file itself raises when the folder cannot be searched
                    if not self.path.is_file():
                        return self._data
                    with np.load(self.path, allow_pickle=False) as z:
                        texts = [str(t) for t in z["texts"]]
                        vecs = np.asarray(z["vectors"], dtype=np.float32)
                    if len(texts) == len(vecs):
                        self._data = dict(zip(texts, vecs))
                except Exception as exc:  # unreadable: start again
                    log.warning("ignoring unreadable prompt cache %s: %s", self.path, exc)
        return self._data

    def get(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The cached vectors of those ``texts`` that are cached."""
        with self._lock:
            data = self._load()
            return {t: data[t].copy() for t in texts if t in data}

    def put(self, items: dict[str, np.ndarray]) -> None:
        """Add prompt embeddings and rewrite the file (atomically); a no-op if nothing is new."""
        if self.path is None or not items:
            return
        with self._lock:
            data = self._load()
            new = {t: v for t, v in items.items()
                   if t not in data or not np.array_equal(data[t], v)}
            if not new:
                return
            data.update({t: np.asarray(v, dtype=np.float32) for t, v in new.items()})
            while len(data) > MAX_TEXTS:
                data.pop(next(iter(data)))
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}-"
                                          f"{threading.get_ident()}")
                with open(tmp, "wb") as fh:
                    np.savez(fh, texts=np.array(list(data), dtype=str),
                             vectors=np.stack(list(data.values())))
                os.replace(tmp, self.path)
            except OSError as exc:  # a read-only cache folder only costs speed
                log.warning("cannot write prompt cache %s: %s", self.path, exc)
                with contextlib.suppress(Exception):
                    os.unlink(tmp)
