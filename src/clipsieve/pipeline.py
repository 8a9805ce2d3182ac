"""The Analyzer: decode and encode each image once, keep the embedding, run heads on it.

Decoding (read, hash, decode with DCT scaling, pixel statistics, preprocessing) runs in a
thread pool, overlapped with model inference in the calling thread; at most a bounded number
of decoded images wait at any time, so memory stays flat for any number of files. Results
come out in input order.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipsieve import settings
from clipsieve.backends.clip import load_preprocess, resolve_model_id
from clipsieve.errors import DecodeError
from clipsieve.heads.base import Head
from clipsieve.media.decode import (
    Decoded,
    DecodeLimits,
    decode_image,
    read_bytes,
    stat_input,
    to_rgb,
)
from clipsieve.media.discover import iter_files
from clipsieve.media.preprocess import Preprocess
from clipsieve.store import Store
from clipsieve.types import ErrorInfo, ItemResult, to_jsonable

PixelFeatures = Callable[[Decoded], dict[str, float]]

#: Images are decoded with both sides at least this large (JPEG DCT scaling or a box reduce
#: stops there), whatever the model's input size, so the pixel statistics are measured at the
#: same scale for every model: shorter side between 224 and 448 px (longer side capped at 512
#: by the quality module), or the image's own size when it is smaller.
ANALYSIS_MIN_SIDE = 224


def _default_pixel_features() -> tuple[PixelFeatures, str]:
    from clipsieve.quality.technical import TECHNICAL_VERSION, pixel_stats

    def compute(dec: Decoded) -> dict[str, float]:
        return pixel_stats(
            dec.image, original_size=(dec.width, dec.height), jpeg_quant=dec.jpeg_quant
        )

    return compute, TECHNICAL_VERSION


@dataclass
class _Prepared:
    item: ItemResult
    pixels: np.ndarray | None = None
    record: dict[str, Any] | None = None


class Analyzer:
    """Scan images into embeddings and results.

    Args:
        model: Hugging Face id or local checkpoint folder (default: ``CLIPSIEVE_MODEL`` or
            ``openai/clip-vit-base-patch32``).
        device: ``auto`` (default), ``cpu``, ``cuda``…
        precision: ``auto`` (default), ``float32``, ``bfloat16``, ``float16``.
        store: a :class:`Store`, a path, ``None`` for the default store, or ``False`` for none.
        batch_size: images per model call.
        workers: decode threads.
        limits: decode limits (max pixels, max file size).
        pixel_features: compute technical pixel statistics during decoding (quality inputs).

    Example:
        >>> an = Analyzer(model="openai/clip-vit-base-patch32", store=False)
        >>> for r in an.scan(["photos/"]):
        ...     print(r.path, r.status)
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        device: str | None = None,
        precision: str | None = None,
        store: Store | str | Path | None | bool = None,
        batch_size: int = settings.DEFAULT_BATCH_SIZE,
        workers: int | None = None,
        limits: DecodeLimits | None = None,
        pixel_features: bool = True,
    ) -> None:
        self.model_name = model or settings.default_model()
        self.model_id = resolve_model_id(self.model_name)
        self.device = device or settings.default_device()
        self.precision_request = precision or settings.default_precision()
        self.batch_size = max(1, int(batch_size))
        self.workers = workers or settings.default_workers()
        self.limits = limits or DecodeLimits()
        if store is False:
            self.store: Store | None = None
        elif isinstance(store, Store):
            self.store = store
        elif store is None or store is True:
            self.store = Store(settings.default_store_path())
        else:
            self.store = Store(store)
        self._preprocess: Preprocess | None = None
        self._backend: Any = None
        self._text_cache: dict[str, np.ndarray] = {}
        self._logit_scale: float | None = None
        self._pixel_features: PixelFeatures | None = None
        self.features_version: str | None = None
        if pixel_features:
            self._pixel_features, self.features_version = _default_pixel_features()

    # -- lazily loaded parts ----------------------------------------------------------------
    @property
    def preprocess(self) -> Preprocess:
        """Preprocessing from the checkpoint's config (read without loading weights)."""
        if self._preprocess is None:
            self._preprocess = load_preprocess(self.model_id)
        return self._preprocess

    @property
    def backend(self) -> Any:
        """The loaded :class:`~clipsieve.backends.clip.ClipBackend` (loaded on first use)."""
        if self._backend is None:
            from clipsieve.backends.clip import ClipBackend

            self._backend = ClipBackend(
                self.model_id, device=self.device, precision=self.precision_request
            )
            self._preprocess = self._backend.preprocess
        return self._backend

    @property
    def model_loaded(self) -> bool:
        return self._backend is not None

    @property
    def logit_scale(self) -> float:
        """The model's exp(logit_scale); read from the checkpoint file without loading it."""
        if self._backend is not None:
            return float(self._backend.logit_scale)
        if self._logit_scale is None:
            from clipsieve.backends.clip import read_logit_scale

            self._logit_scale = read_logit_scale(self.model_id)
        if self._logit_scale is None:
            return float(self.backend.logit_scale)
        return self._logit_scale

    @property
    def precision(self) -> str:
        return self.backend.precision if self._backend else self.precision_request

    def load(self) -> Analyzer:
        """Load the model now (otherwise it loads on first use); returns self."""
        _ = self.backend
        return self

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    # -- texts ------------------------------------------------------------------------------
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings (N, D), cached in memory and in the store."""
        texts = list(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing and self.store is not None:
            found = self.store.get_text_embeddings(self.model_id, missing)
            self._text_cache.update(found)
            missing = [t for t in missing if t not in found]
        if missing:
            vecs = self.backend.encode_texts(missing)
            new = dict(zip(missing, vecs))
            self._text_cache.update(new)
            if self.store is not None:
                self.store.put_text_embeddings(self.model_id, new)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._text_cache[t] for t in texts])

    # -- search -----------------------------------------------------------------------------
    def search(
        self, text: str | None = None, image: Any = None, *, top: int = 20, **options: Any
    ) -> Any:
        """Find stored images by ``text`` or like ``image`` (a file, a sha256, or a PIL image).

        Runs over the store's embeddings of this model: no decoding, and no image model work
        unless ``image`` is a PIL image. Returns a :class:`clipsieve.search.SearchResult`
        (``.hits``, best first). Options: ``min_score``, ``where``, ``exact``,
        ``include_self`` (see :func:`clipsieve.search.search_with`).
        """
        from clipsieve.search import search_with

        return search_with(self, text, image, top=top, **options)

    # -- images -----------------------------------------------------------------------------
    def embed_images(self, images: Iterable[str | os.PathLike[str] | Image.Image]) -> np.ndarray:
        """L2-normalised embeddings (N, D) of paths or PIL images, in order.

        Raises:
            DecodeError: a path cannot be decoded.
        """
        pixels = []
        for im in images:
            if isinstance(im, Image.Image):
                pixels.append(self.preprocess(to_rgb(im)))
            else:
                path = os.fspath(im)
                dec = decode_image(
                    read_bytes(path, self.limits), path,
                    min_side=self._decode_min_side(self.preprocess), limits=self.limits,
                )
                pixels.append(self.preprocess(dec.image))
        if not pixels:
            return np.zeros((0, 0), dtype=np.float32)
        out = [
            self.backend.encode_pixels(np.stack(pixels[i : i + self.batch_size]))
            for i in range(0, len(pixels), self.batch_size)
        ]
        return np.concatenate(out)

    def _decode_min_side(self, prep: Preprocess) -> int:
        if self._pixel_features is None:
            return prep.min_side
        return max(prep.min_side, ANALYSIS_MIN_SIDE)

    def _prepare(self, path: str, prep: Preprocess) -> _Prepared:
        t0 = time.perf_counter()
        item = ItemResult(path=path, model=self.model_id)
        try:
            st = stat_input(path)  # no FIFO, device or folder is ever opened
            store = self.store
            if store is not None:
                sha = store.lookup_file(path, st.st_size, st.st_mtime_ns)
                if sha and self._from_store(item, sha, prep):
                    item.timing["total_ms"] = (time.perf_counter() - t0) * 1000
                    return _Prepared(item)
            data = read_bytes(path, self.limits)
            item.sha256 = hashlib.sha256(data).hexdigest()
            t1 = time.perf_counter()
            item.timing["read_ms"] = (t1 - t0) * 1000
            record = {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                      "sha256": item.sha256}
            if store is not None and self._from_store(item, item.sha256, prep):
                item.timing["total_ms"] = (time.perf_counter() - t0) * 1000
                return _Prepared(item, record=record)
            dec = decode_image(data, path, min_side=self._decode_min_side(prep),
                               limits=self.limits)
            del data
            item.width, item.height = dec.width, dec.height
            if self._pixel_features is not None:  # JSON-clean, so stored == fresh
                item.features = to_jsonable(self._pixel_features(dec))
            pixels = prep(dec.image)
            item.timing["decode_ms"] = (time.perf_counter() - t1) * 1000
            record.update(
                width=dec.width, height=dec.height, format=dec.format,
                features=item.features, features_version=self.features_version,
            )
            return _Prepared(item, pixels=pixels, record=record)
        except DecodeError as exc:
            item.status = "error"
            item.error = ErrorInfo(exc.code, exc.message)
        except Exception as exc:  # never let one file stop the batch
            item.status = "error"
            code = "too_large" if isinstance(exc, MemoryError) else "unsupported"
            item.error = ErrorInfo(code, f"unexpected {type(exc).__name__}: {exc}")
        item.timing["total_ms"] = (time.perf_counter() - t0) * 1000
        return _Prepared(item)

    def _from_store(self, item: ItemResult, sha: str, prep: Preprocess) -> bool:
        assert self.store is not None
        row = self.store.get_embedding_row(sha, self.model_id, prep.version)
        if row is None:
            return False
        emb, item.device, item.precision = row
        info = self.store.get_image(sha)
        if info is None:
            return False
        if self._pixel_features is not None and info["features_version"] != self.features_version:
            return False
        item.sha256 = sha
        item.width, item.height = info["width"], info["height"]
        item.features = info["features"]
        item.embedding = emb
        item.cached = True
        return True

    def scan(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        heads: Sequence[Head] = (),
        recursive: bool = True,
    ) -> Iterator[ItemResult]:
        """Analyse files and folders; yields one :class:`ItemResult` per file, in order.

        Files whose embedding is in the store are neither decoded nor encoded. Failures
        become results with ``status="error"``; the scan always goes on.
        """
        prep = self.preprocess
        files = iter_files(paths, recursive=recursive)
        window = max(self.batch_size * 2, self.workers * 4)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="decode") as pool:
            pending: deque[Future[_Prepared]] = deque()
            done: list[_Prepared] = []
            exhausted = False
            while True:
                while not exhausted and len(pending) < window:
                    nxt = next(files, None)
                    if nxt is None:
                        exhausted = True
                        break
                    pending.append(pool.submit(self._prepare, nxt, prep))
                if not pending:
                    break
                done.append(pending.popleft().result())
                to_encode = sum(p.pixels is not None for p in done)
                if to_encode >= self.batch_size or len(done) >= window or not pending:
                    yield from self._finish(done, heads)
                    done = []
            if done:
                yield from self._finish(done, heads)

    def _finish(self, batch: list[_Prepared], heads: Sequence[Head]) -> list[ItemResult]:
        need = [p for p in batch if p.pixels is not None]
        if need:
            backend = self.backend  # load outside the timed region
            t0 = time.perf_counter()
            embs = backend.encode_pixels(np.stack([p.pixels for p in need if p.pixels is not None]))
            per_item = (time.perf_counter() - t0) * 1000 / len(need)
            for p, e in zip(need, embs):
                p.item.embedding = e
                p.item.device, p.item.precision = backend.device, backend.precision
                p.item.timing["encode_ms"] = per_item
                p.pixels = None
                if p.record is not None:
                    p.record["embedding"] = e
        items = [p.item for p in batch]
        for p in need:
            p.item.timing["total_ms"] = sum(
                p.item.timing.get(k, 0.0) for k in ("read_ms", "decode_ms", "encode_ms")
            )
        ok = [it for it in items if it.ok]
        if ok and heads:
            mat = np.stack([it.embedding for it in ok])
            for head in heads:
                head.apply(ok, mat, self)
        if self.store is not None:
            records = [p.record for p in batch if p.record is not None]
            if records:
                loaded = self.model_loaded
                self.store.put_items(
                    records, model=self.model_id, prep=self.preprocess.version,
                    precision=self.backend.precision if loaded else None,
                    device=self.backend.device if loaded else None,
                )
            self.store.put_results([it.to_dict() for it in items], model=self.model_id)
        return items
