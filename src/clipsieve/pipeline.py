"""The Analyzer: decode and encode each image once, keep the embedding, run heads on it.

Decoding (read, hash, decode with DCT scaling, pixel statistics, preprocessing) runs in a
thread pool, overlapped with model inference in the calling thread; at most a bounded number
of decoded images wait at any time, so memory stays flat for any number of files. Results
come out in input order.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipsieve import settings
from clipsieve.backends import Encoder, EncoderEntry, create_encoder, encoder_entry
from clipsieve.backends.prompt_cache import PromptCache
from clipsieve.errors import DecodeError
from clipsieve.fingerprint import checkpoint_fingerprint
from clipsieve.media.decode import (
    Decoded,
    DecodeLimits,
    decode_image,
    from_image,
    read_bytes,
    stat_input,
    to_rgb,
)
from clipsieve.media.inputs import Source, iter_sources
from clipsieve.media.preprocess import Preprocess
from clipsieve.protocols import Head, embed_captions, set_field
from clipsieve.provenance import head_provenance, new_run_id
from clipsieve.store import Store
from clipsieve.types import Caption, ErrorInfo, ItemResult, to_jsonable

PixelFeatures = Callable[[Decoded], dict[str, float]]

#: Images are decoded with both sides at least this large (JPEG DCT scaling or a box reduce
#: stops there), whatever the model's input size, so the pixel statistics are measured at the
#: same scale for every model: shorter side between 224 and 448 px (longer side capped at 512
#: by the quality module), or the image's own size when it is smaller.
ANALYSIS_MIN_SIDE = 224


def _default_pixel_features() -> tuple[PixelFeatures, str]:
    from clipsieve.media.stats import load_pixel_stats_config, pixel_stats

    config = load_pixel_stats_config()

    def compute(dec: Decoded) -> dict[str, float]:
        return pixel_stats(
            dec.image, config=config, original_size=(dec.width, dec.height),
            jpeg_quant=dec.jpeg_quant, grid_luma=dec.grid_luma,
        )

    return compute, config.version


def _grid_crop_options() -> dict[str, Any]:
    """decode_image options that keep a native-resolution crop for blockiness (issue #9)."""
    from clipsieve.media.stats import load_pixel_stats_config

    measure = load_pixel_stats_config().measure
    return {"grid_crop": int(measure["blockiness_crop"]),
            "grid_crop_jpeg_quality": float(measure.get("native_crop_min_jpeg_quality", 90))}


class TextEmbedder:
    """An encoder's text side with a cache: what heads are built against.

    Each text is encoded once: kept in memory here and, with a store, in the store's text
    embedding table (keyed by the model id), so later runs need no model for known prompts.

    Args:
        encoder: an :class:`~clipsieve.backends.Encoder`, or a callable returning one (so
            the encoder is loaded only when a text is not cached).
        store: a :class:`Store` for the persistent cache, or ``None``.
        model_id: the model id (default: the encoder's).
        logit_scale: the model's logit scale, or a callable giving it (default: the
            encoder's).
    """

    def __init__(
        self,
        encoder: Encoder | Callable[[], Encoder],
        store: Store | None = None,
        *,
        model_id: str | None = None,
        logit_scale: float | Callable[[], float] | None = None,
        encoder_kind: str | None = None,
        prompt_cache: PromptCache | None = None,
    ) -> None:
        self._get: Callable[[], Encoder] = (
            encoder if callable(encoder) and not hasattr(encoder, "encode_texts")  # type: ignore[assignment]
            else (lambda: encoder)  # type: ignore[return-value]
        )
        self.model_id = str(model_id if model_id is not None else self._get().model_id)
        self.encoder_kind = str(encoder_kind if encoder_kind is not None
                                else getattr(self._get(), "kind", "torch"))
        self._scale = logit_scale
        self.store = store
        self.prompt_cache = prompt_cache
        self._cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._collecting = threading.local()

    @contextlib.contextmanager
    def prompts(self) -> Iterator[None]:
        """Texts embedded in this block (by this thread) are prompt banks: besides the store,
        they are looked up in and written to the prompt cache of the cache folder."""
        if getattr(self._collecting, "items", None) is not None or self.prompt_cache is None:
            yield
            return
        self._collecting.items = {}
        try:
            yield
            if self._collecting.items:
                self.prompt_cache.put(self._collecting.items)
        finally:
            self._collecting.items = None

    @property
    def logit_scale(self) -> float:
        if self._scale is None:
            return float(self._get().logit_scale)
        return float(self._scale() if callable(self._scale) else self._scale)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings ``(N, D)``, each text encoded at most once."""
        texts = list(texts)
        collect = getattr(self._collecting, "items", None)
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
            if missing and self.store is not None:
                found = self.store.get_text_embeddings(self.model_id, missing,
                                                       encoder=self.encoder_kind)
                self._cache.update(found)
                missing = [t for t in missing if t not in found]
            if missing and collect is not None and self.prompt_cache is not None:
                found = self.prompt_cache.get(missing)
                self._cache.update(found)
                missing = [t for t in missing if t not in found]
                if found and self.store is not None:  # the store keeps every prompt it used
                    self.store.put_text_embeddings(self.model_id, found,
                                                   encoder=self.encoder_kind)
            if missing:
                vecs = self._get().encode_texts(missing)
                new = dict(zip(missing, vecs))
                self._cache.update(new)
                if self.store is not None:
                    self.store.put_text_embeddings(self.model_id, new, encoder=self.encoder_kind)
            if collect is not None:
                collect.update({t: self._cache[t] for t in texts})
            if not texts:
                return np.zeros((0, 0), dtype=np.float32)
            return np.stack([self._cache[t] for t in texts])


@dataclass
class Prepared:
    """One image made ready for the encoder (:meth:`Analyzer.prepare`).

    The first phase of the batch step, done anywhere (a decode pool, a Ray task); the second,
    :meth:`Analyzer.analyze` over a list of these, encodes them in one matrix and runs heads.

    Attributes:
        item: the result so far: ``path``, ``model``, ``sha256`` (for bytes), ``width`` and
            ``height`` of the original image, ``features`` (pixel statistics) and
            ``timing["decode_ms"]``; ``status="error"`` with ``error`` for an unusable image.
        pixels: the model's input, ``(3, H, W)`` float32, or ``None`` (an error, or encoded).
        record: what the files driver stores for the file (``scan`` only; else ``None``).
    """

    item: ItemResult
    pixels: np.ndarray | None = None
    record: dict[str, Any] | None = field(default=None, repr=False)


#: What :meth:`Analyzer.prepare` and :meth:`Analyzer.analyze` take as one image.
ImageInput = bytes | bytearray | memoryview | Decoded | Image.Image | np.ndarray


def error_of(exc: Exception) -> ErrorInfo:
    """The per-item error for an exception raised while reading or decoding one input."""
    if isinstance(exc, DecodeError):
        return ErrorInfo(exc.code, exc.message)
    code = "too_large" if isinstance(exc, MemoryError) else "unsupported"
    return ErrorInfo(code, f"unexpected {type(exc).__name__}: {exc}")


def _set_error(item: ItemResult, exc: Exception) -> None:
    item.status = "error"
    item.error = error_of(exc)


#: How many distinct file contents a scan remembers for sharing between copies (about 5 KB
#: each: the embedding and the head results). Copies further apart than this in scan order
#: take the stored embedding (same bits) or, without a store, are encoded again.
SAME_CONTENT_MEMORY = 8192


@dataclass
class _Content:
    event: threading.Event
    first: list[Prepared]
    embedding: tuple[np.ndarray, str | None, str | None] | None = None
    scored: ItemResult | None = None


class _SameContent:
    """Per-scan sharing between files with the same sha256 (copies in a collection).

    The first file with a given hash decodes it; the others wait for that decode and take its
    pixels, size and pixel statistics (or its error). The first embedding computed for a hash
    is given to every later file with that hash, and so is the first set of head results, so
    identical bytes get identical numbers within a scan, whatever batch rows they land in.
    The most recent :data:`SAME_CONTENT_MEMORY` hashes are remembered (memory stays flat).
    """

    def __init__(self, capacity: int = SAME_CONTENT_MEMORY) -> None:
        self.lock = threading.Lock()
        self.capacity = capacity
        self.entries: OrderedDict[str, _Content] = OrderedDict()

    def _entry(self, sha: str) -> tuple[_Content, bool]:
        """The entry for ``sha`` and whether it is new (caller holds the lock)."""
        got = self.entries.get(sha)
        if got is not None:
            return got, False
        got = self.entries[sha] = _Content(threading.Event(), [])
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
        return got, True

    def claim(self, sha: str) -> _Content | None:
        """``None`` if the caller is first with ``sha`` (it must call :meth:`publish`)."""
        with self.lock:
            entry, new = self._entry(sha)
            if new:
                return None
            return entry

    def publish(self, sha: str, prepared: Prepared) -> None:
        with self.lock:
            entry, _ = self._entry(sha)
        entry.first.append(prepared)
        entry.event.set()

    def embedding(self, sha: str) -> tuple[np.ndarray, str | None, str | None] | None:
        with self.lock:
            entry = self.entries.get(sha)
            return entry.embedding if entry else None

    def set_embedding(self, sha: str, value: tuple[np.ndarray, str | None, str | None]) -> None:
        with self.lock:
            self._entry(sha)[0].embedding = value

    def scored(self, sha: str) -> ItemResult | None:
        with self.lock:
            entry = self.entries.get(sha)
            return entry.scored if entry else None

    def set_scored(self, sha: str, item: ItemResult) -> None:
        with self.lock:
            self._entry(sha)[0].scored = item


class Analyzer:
    """Scan images into embeddings and results.

    Args:
        model: Hugging Face id or local checkpoint folder (default: ``CLIPSIEVE_MODEL`` or
            ``openai/clip-vit-base-patch32``).
        encoder: the encoder kind (``"torch"``; see :func:`clipsieve.backends.list_encoders`),
            or an already created :class:`~clipsieve.backends.Encoder` (then ``model``,
            ``device`` and ``precision`` are its own).
        device: ``auto`` (default), ``cpu``, ``cuda``…
        precision: ``auto`` (default), ``float32``, ``bfloat16``, ``float16``.
        store: a :class:`Store`, a path, ``None`` for the default store, or ``False`` for none.
        batch_size: images per model call.
        workers: decode threads.
        limits: decode limits (max pixels, max file size).
        pixel_features: compute technical pixel statistics during decoding (quality inputs).

    The one batch step is :meth:`analyze` (in-memory images → results); :meth:`scan` (files
    and folders, with the store) and :meth:`score` (stored embeddings, heads only) are built on
    it. The encoder loads lazily, once, under a lock, so threads may share an Analyzer.

    Example:
        >>> an = Analyzer(model="openai/clip-vit-base-patch32", store=False)
        >>> for r in an.scan(["photos/"]):
        ...     print(r.path, r.status)
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        encoder: str | Encoder = "torch",
        device: str | None = None,
        precision: str | None = None,
        store: Store | str | Path | None | bool = None,
        batch_size: int = settings.DEFAULT_BATCH_SIZE,
        workers: int | None = None,
        limits: DecodeLimits | None = None,
        pixel_features: bool = True,
    ) -> None:
        self._encoder: Encoder | None = None
        self._entry: EncoderEntry | None
        if isinstance(encoder, str):
            self.encoder_kind = encoder
            self._entry = encoder_entry(encoder)
            self.model_name = model or settings.default_model()
            resolve = self._entry.resolve_model_id
            self.model_id = resolve(self.model_name) if resolve else self.model_name
            self.device = device or settings.default_device()
            self.precision_request = precision or settings.default_precision()
        else:
            self._encoder = encoder
            self.encoder_kind = str(getattr(encoder, "kind", type(encoder).__name__))
            self._entry = None
            self.model_name = self.model_id = str(encoder.model_id)
            self.device = str(encoder.device)
            self.precision_request = str(encoder.precision)
        self._load_lock = threading.Lock()
        self._heads_lock = threading.RLock()
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
        self.texts = TextEmbedder(lambda: self.encoder, self.store, model_id=self.model_id,
                                  logit_scale=lambda: self.logit_scale,
                                  encoder_kind=self.encoder_kind,
                                  prompt_cache=PromptCache(self.model_id, self.encoder_kind,
                                                           precision=self.precision_request))
        #: Called with a line ("loading model …") just before the encoder loads; the CLI
        #: shows it on a terminal.
        self.on_status: Callable[[str], None] | None = None
        self._logit_scale: float | None = None
        self._pixel_features: PixelFeatures | None = None
        self._decode_options: dict[str, Any] = {}
        self.features_version: str | None = None
        # weights replaced in place under the same folder name are noticed (issue #9)
        self.model_fingerprint = checkpoint_fingerprint(self.model_id)
        if self.store is not None:
            self.store.check_checkpoint(self.model_id, self.model_fingerprint)
        if pixel_features:
            self._pixel_features, self.features_version = _default_pixel_features()
            self._decode_options = _grid_crop_options()

    # -- lazily loaded parts ----------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        """The :class:`~clipsieve.backends.Encoder` (created on first use, once, under a lock)."""
        enc = self._encoder
        if enc is None:
            with self._load_lock:
                if self._encoder is None:
                    if self.on_status is not None:
                        self.on_status(self._loading_line())
                    self._encoder = create_encoder(
                        self.encoder_kind, self.model_id, device=self.device,
                        precision=self.precision_request,
                    )
                    self._preprocess = self._encoder.preprocess
                enc = self._encoder
        return enc

    def _loading_line(self) -> str:
        name = self.model_name if len(self.model_name) <= 60 else "…" + self.model_name[-59:]
        line = f"loading model {name} ({self.encoder_kind})"
        if self.encoder_kind.startswith("onnx"):
            from clipsieve.backends.onnx import is_exported

            if not is_exported(self.model_id, int8=self.encoder_kind == "onnx-int8"):
                line += ", exporting it to ONNX once (a minute or two)"
        return line + " …"

    @property
    def backend(self) -> Encoder:
        """The encoder (the name before encoders were pluggable)."""
        return self.encoder

    @property
    def preprocess(self) -> Preprocess:
        """Preprocessing from the checkpoint's config (read without loading weights)."""
        if self._preprocess is None:
            if self._encoder is not None:
                self._preprocess = self._encoder.preprocess
            elif self._entry is not None and self._entry.read_preprocess is not None:
                self._preprocess = self._entry.read_preprocess(self.model_id)
            else:
                self._preprocess = self.encoder.preprocess
        return self._preprocess

    @property
    def model_loaded(self) -> bool:
        return self._encoder is not None

    @property
    def logit_scale(self) -> float:
        """The model's exp(logit_scale); read from the checkpoint file without loading it."""
        if self._encoder is not None:
            return float(self._encoder.logit_scale)
        if self._logit_scale is None and self._entry is not None:
            reader = self._entry.read_logit_scale
            self._logit_scale = reader(self.model_id) if reader is not None else None
        if self._logit_scale is None:
            return float(self.encoder.logit_scale)
        return self._logit_scale

    @property
    def precision(self) -> str:
        return self._encoder.precision if self._encoder is not None else self.precision_request

    def load(self) -> Analyzer:
        """Load the model now (otherwise it loads on first use); returns self."""
        _ = self.encoder
        return self

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    # -- texts ------------------------------------------------------------------------------
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings (N, D), cached in memory and in the store."""
        return self.texts.embed_texts(texts)

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

    @property
    def decode_options(self) -> dict[str, Any]:
        """Extra :func:`~clipsieve.media.decode.decode_image` options every driver passes so
        that the pixel statistics match ``scan``'s (the native-resolution blockiness crop)."""
        return dict(self._decode_options)

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
            self.encoder.encode_pixels(np.stack(pixels[i : i + self.batch_size]))
            for i in range(0, len(pixels), self.batch_size)
        ]
        return np.concatenate(out)

    @property
    def decode_min_side(self) -> int:
        """Smallest side a decoder may reduce an image to (model input, pixel statistics)."""
        return self._decode_min_side(self.preprocess)

    @property
    def pixel_features_enabled(self) -> bool:
        """Whether pixel statistics (quality inputs) are computed while preparing images."""
        return self._pixel_features is not None

    def prepare(
        self, image: ImageInput, *, id: str | None = None, sha256: str | None = None
    ) -> Prepared:
        """The first phase of the batch step for one image: decode if needed, measure, preprocess.

        Thread-safe and free of model work, so drivers run it where decoding runs (a decode
        pool, a Ray task) and hand the results to :meth:`analyze`, which encodes a whole batch
        in one call. ``analyze(images)`` is the same as ``analyze([prepare(i) for i in
        images])``.

        Args:
            image: one of
                * ``bytes`` of an image file: hashed (``sha256``) and decoded exactly as
                  :meth:`scan` decodes a file (JPEG DCT scaling, EXIF orientation, size
                  limits), so the result equals ``scan``'s for that file;
                * a :class:`~clipsieve.media.decode.Decoded` (from
                  :func:`~clipsieve.media.decode.decode_image` called with
                  :attr:`decode_min_side` and :attr:`decode_options`): its original size and
                  JPEG tables are used for the pixel statistics;
                * a PIL image or an array (``(H, W)``, ``(H, W, 3|4)``; uint8 or floats in
                  0..1), taken as the original.
            id: becomes :attr:`ItemResult.path` (default ``"0"``).
            sha256: the hex digest of ``image``'s bytes when already known (not recomputed).

        Returns:
            A :class:`Prepared`; an unusable image gives one whose ``item`` has
            ``status="error"`` and an ``error`` (``not_an_image``, ``truncated``, ``too_large``…),
            never an exception.
        """
        t0 = time.perf_counter()
        item = ItemResult(path=str(id) if id is not None else "0", model=self.model_id,
                          sha256=sha256)
        try:
            prep = self.preprocess
            if isinstance(image, (bytes, bytearray, memoryview)):
                data = bytes(image)
                if item.sha256 is None:
                    item.sha256 = hashlib.sha256(data).hexdigest()
                if len(data) > self.limits.max_file_bytes:
                    raise DecodeError("too_large", f"file is {len(data)} bytes, over the limit "
                                      f"of {self.limits.max_file_bytes}", item.path)
                dec = decode_image(data, item.path, min_side=self._decode_min_side(prep),
                                   limits=self.limits, **self._decode_options)
                del data
            elif isinstance(image, Decoded):
                dec = image
            else:
                dec = from_image(image, min_side=self._decode_min_side(prep),
                                 **self._decode_options)
            pixels = self._pixels(item, dec, prep)
        except Exception as exc:  # never let one image stop the batch
            _set_error(item, exc)
            item.timing["decode_ms"] = item.timing["total_ms"] = (time.perf_counter() - t0) * 1000
            return Prepared(item)
        item.timing["decode_ms"] = (time.perf_counter() - t0) * 1000
        return Prepared(item, pixels=pixels)

    def _decode_min_side(self, prep: Preprocess) -> int:
        if self._pixel_features is None:
            return prep.min_side
        return max(prep.min_side, ANALYSIS_MIN_SIDE)

    def _prepare(
        self, src: Source, prep: Preprocess, shared: _SameContent | None = None
    ) -> Prepared:
        t0 = time.perf_counter()
        path = src.name
        item = ItemResult(path=path, model=self.model_id)
        try:
            store = self.store
            record: dict[str, Any]
            if src.path is not None:  # a local file: its (size, mtime) may name its hash
                st = stat_input(src.path)  # no FIFO, device or folder is ever opened
                if store is not None:
                    sha = store.lookup_file(src.path, st.st_size, st.st_mtime_ns)
                    if sha and self._from_store(item, sha, prep):
                        item.timing["total_ms"] = (time.perf_counter() - t0) * 1000
                        return Prepared(item)
                data = read_bytes(src.path, self.limits)
                record = {"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
            else:  # a tar member or a URL: bytes only (no file record)
                data = src.read(self.limits)
                record = {"path": path}
            item.sha256 = hashlib.sha256(data).hexdigest()
            record["sha256"] = item.sha256
            t1 = time.perf_counter()
            item.timing["read_ms"] = (t1 - t0) * 1000
            if store is not None and self._from_store(item, item.sha256, prep):
                item.timing["total_ms"] = (time.perf_counter() - t0) * 1000
                return Prepared(item, record=record)
            if shared is not None:
                first = shared.claim(item.sha256)
                if first is not None:  # a copy of a file decoded (or being decoded) already
                    del data
                    return self._copy_of(item, record, first, t0)
                out = Prepared(item, record=record)
                try:
                    return self._decode(out, data, path, prep, t1)
                except Exception as exc:
                    _set_error(item, exc)  # before publishing: copies take the error
                    out.pixels = None
                finally:
                    shared.publish(item.sha256, out)
            else:
                return self._decode(Prepared(item, record=record), data, path, prep, t1)
        except Exception as exc:  # never let one file stop the batch
            _set_error(item, exc)
        item.timing["total_ms"] = (time.perf_counter() - t0) * 1000
        return Prepared(item)

    def _decode(
        self, out: Prepared, data: bytes, path: str, prep: Preprocess, t1: float
    ) -> Prepared:
        """Decode, measure and preprocess into ``out`` (errors propagate to the caller)."""
        item, record = out.item, out.record
        assert record is not None
        dec = decode_image(data, path, min_side=self._decode_min_side(prep), limits=self.limits,
                           **self._decode_options)
        del data
        out.pixels = self._pixels(item, dec, prep)
        item.timing["decode_ms"] = (time.perf_counter() - t1) * 1000
        record.update(
            width=dec.width, height=dec.height, format=dec.format,
            features=item.features, features_version=self.features_version,
        )
        return out

    def _pixels(self, item: ItemResult, dec: Decoded, prep: Preprocess) -> np.ndarray:
        """Size, pixel statistics and preprocessed pixels of one decoded image."""
        item.width, item.height = dec.width, dec.height
        if self._pixel_features is not None:  # JSON-clean, so stored == fresh
            item.features = to_jsonable(self._pixel_features(dec))
        return prep(dec.image)

    def _copy_of(
        self, item: ItemResult, record: dict[str, Any], first: _Content, t0: float
    ) -> Prepared:
        """Take the decode of the first file with the same bytes (waits for it)."""
        first.event.wait()
        src = first.first[0]
        if src.item.error is not None:
            item.status = "error"
            item.error = src.item.error
            item.timing["total_ms"] = (time.perf_counter() - t0) * 1000
            return Prepared(item)
        item.width, item.height, item.features = src.item.width, src.item.height, src.item.features
        src_rec = src.record or {}
        record.update({k: src_rec.get(k) for k in ("width", "height", "format", "features",
                                                   "features_version")})
        item.timing["decode_ms"] = (time.perf_counter() - t0) * 1000 - item.timing["read_ms"]
        # pixels may already be gone (encoded): _finish then takes the shared embedding
        return Prepared(item, pixels=src.pixels, record=record)

    def _from_store(self, item: ItemResult, sha: str, prep: Preprocess) -> bool:
        assert self.store is not None
        row = self.store.get_embedding_row(sha, self.model_id, prep.version,
                                           encoder=self.encoder_kind)
        if row is None:
            return False
        emb, item.device, item.precision = row
        item.encoder = self.encoder_kind
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
        paths: Iterable[str | os.PathLike[str] | Source],
        *,
        heads: Sequence[Head] = (),
        recursive: bool = True,
    ) -> Iterator[ItemResult]:
        """Analyse files and folders; yields one :class:`ItemResult` per file, in order.

        ``paths`` may also name tar shards (each image member is an item, ``a.tar#member``)
        and hold :class:`clipsieve.media.inputs.Source` objects (list files, URLs: see
        :func:`clipsieve.media.inputs.iter_sources`).

        Files whose embedding is in the store are neither decoded nor encoded. Failures
        become results with ``status="error"``; the scan always goes on.
        """
        prep = self.preprocess
        files = iter_sources(paths, recursive=recursive, limits=self.limits)
        shared = _SameContent()
        run = new_run_id()
        window = max(self.batch_size * 2, self.workers * 4)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="decode") as pool:
            pending: deque[Future[Prepared]] = deque()
            done: list[Prepared] = []
            exhausted = False
            while True:
                while not exhausted and len(pending) < window:
                    nxt = next(files, None)
                    if nxt is None:
                        exhausted = True
                        break
                    pending.append(pool.submit(self._prepare, nxt, prep, shared))
                if not pending:
                    break
                done.append(pending.popleft().result())
                to_encode = sum(p.pixels is not None for p in done)
                if to_encode >= self.batch_size or len(done) >= window or not pending:
                    yield from self._finish(done, heads, shared, run)
                    done = []
            if done:
                yield from self._finish(done, heads, shared, run)

    def _finish(
        self, batch: list[Prepared], heads: Sequence[Head], shared: _SameContent | None = None,
        run: str | None = None,
    ) -> list[ItemResult]:
        """The files driver's end of a batch: the batch step, provenance, then the store."""
        items = self._step(batch, heads, shared, run=run)
        if self.store is not None:
            records = [p.record for p in batch if p.record is not None]
            if records:
                loaded = self.model_loaded
                self.store.put_items(
                    records, model=self.model_id, prep=self.preprocess.version,
                    precision=self.encoder.precision if loaded else None,
                    device=self.encoder.device if loaded else None,
                    encoder=self.encoder_kind,
                )
            self.store.put_results([it.to_dict() for it in items], model=self.model_id)
        return items

    # -- the batch step ---------------------------------------------------------------------
    def _step(
        self,
        batch: list[Prepared],
        heads: Sequence[Head],
        shared: _SameContent | None = None,
        captions: Sequence[Caption | str | None] | None = None,
        run: str | None = None,
        head_sets: Sequence[Sequence[Head]] | None = None,
    ) -> list[ItemResult]:
        """Encode the items that need it (one model row per content, one encoder call), then
        run the heads (``head_sets``: each item's own heads, one pass per distinct set)."""
        shared = shared or _SameContent()
        need = [p for p in batch if p.item.ok and p.item.embedding is None]
        # one model row per content hash: copies share the first embedding computed for it
        fresh: dict[str, Prepared] = {}
        for p in need:
            sha = _content_key(p.item)
            if sha not in fresh and p.pixels is not None and shared.embedding(sha) is None:
                fresh[sha] = p
        if fresh:
            encoder = self.encoder  # load outside the timed region
            t0 = time.perf_counter()
            embs = encoder.encode_pixels(np.stack([p.pixels for p in fresh.values()
                                                   if p.pixels is not None]))
            per_item = (time.perf_counter() - t0) * 1000 / len(fresh)
            for sha, e in zip(fresh, embs):
                shared.set_embedding(sha, (e, encoder.device, encoder.precision))
                fresh[sha].item.timing["encode_ms"] = per_item
        for p in need:
            got = shared.embedding(_content_key(p.item))
            if got is None:  # cannot happen while a batch is far smaller than the memory
                _set_error(p.item, RuntimeError("copy lost its shared embedding"))
                p.record = None
                continue
            e, p.item.device, p.item.precision = got
            p.item.encoder = self.encoder_kind
            p.item.embedding = e
            p.pixels = None
            if p.record is not None:
                p.record["embedding"] = e
            p.item.timing.setdefault("encode_ms", 0.0)
            p.item.timing["total_ms"] = sum(
                p.item.timing.get(k, 0.0) for k in ("read_ms", "decode_ms", "encode_ms")
            )
        items = [p.item for p in batch]
        if head_sets is None:
            groups = [(heads, list(range(len(items))), shared)]
        else:  # one head list per item: items with the same heads are scored together
            by_heads: dict[tuple[int, ...], tuple[Sequence[Head], list[int], _SameContent]] = {}
            for i, hs in enumerate(head_sets):
                key = tuple(id(h) for h in hs)
                by_heads.setdefault(key, (hs, [], _SameContent()))[1].append(i)
            groups = list(by_heads.values())  # (copies share results within a group only)
        for group_heads, rows, scored in groups:
            ok = [i for i in rows if items[i].ok]
            if ok and group_heads:
                self._apply_heads([items[i] for i in ok], group_heads, scored,
                                  None if captions is None else [captions[i] for i in ok],
                                  run=run)
        return items

    def build_heads(self, heads: Sequence[Head]) -> list[Head]:
        """Build each head for this analyzer's model (prompt banks etc.; once per model)."""
        with self._heads_lock, self.texts.prompts():
            return [h.build(self) if hasattr(h, "build") else h for h in heads]

    def _apply_heads(
        self,
        ok: list[ItemResult],
        heads: Sequence[Head],
        shared: _SameContent,
        captions: Sequence[Caption | str | None] | None = None,
        run: str | None = None,
    ) -> None:
        """Run ``heads`` once per content hash; copies take the first result computed for it.

        Identical bytes then get identical scores even where a matrix product would give rows
        in other positions other last bits. Heads that also read a per-file caption (and every
        head, when ``captions`` are given) run on every item.
        """
        firsts: dict[str, ItemResult] = {}
        for it in ok:
            sha = _content_key(it)
            if sha not in firsts and shared.scored(sha) is None:
                firsts[sha] = it
        todo = list(firsts.values())
        for head in self.build_heads(heads):
            every = captions is not None or _per_item(head)
            targets = ok if every else todo
            if not targets:
                continue
            mat = np.stack([it.embedding for it in targets])
            if not hasattr(head, "compute"):  # a head of the older protocol: apply(items, ...)
                head.apply(targets, mat, self)  # type: ignore[attr-defined]
                continue
            if captions is not None:
                caps: Sequence[Any] | None = captions
            else:
                source = getattr(head, "captions_for", None)
                caps = source(targets) if source is not None else None
            results = head.compute(mat, [it.features for it in targets],
                                   embed_captions(caps, self))
            for item, value in zip(targets, results, strict=True):
                set_field(item, head.field, value)
        for sha, it in firsts.items():
            shared.set_scored(sha, it)
        for it in ok:
            sha = _content_key(it)
            src = firsts.get(sha) or shared.scored(sha)
            if src is None or src is it:
                continue
            for head in heads:
                if captions is not None or _per_item(head):
                    continue
                name = head.field
                if name in _CORE_FIELDS:
                    setattr(it, name, copy.deepcopy(getattr(src, name)))
                elif name in src.extra:
                    it.extra[name] = copy.deepcopy(src.extra[name])
        _stamp_provenance(ok, heads, self, run or new_run_id())

    def analyze(
        self,
        images: Sequence[ImageInput | Prepared],
        *,
        heads: Sequence[Head] = (),
        ids: Sequence[str] | None = None,
        captions: Sequence[Caption | str | None] | None = None,
        head_sets: Sequence[Sequence[Head]] | None = None,
    ) -> list[ItemResult]:
        """The batch step: pixel statistics, preprocessing, one encoder call per batch, heads.

        Writes nothing to the store. Video frames, service requests and Ray batches call this,
        and :meth:`scan` runs the same step for files. Images already made ready by
        :meth:`prepare` (in a decode pool, say) are only encoded and scored here; anything else
        goes through :meth:`prepare` first. Each run of :attr:`batch_size` images is encoded
        in one call of the encoder; copies (same ``sha256``) share one row.

        Args:
            images: :class:`Prepared` values, or what :meth:`prepare` takes: bytes of image
                files, :class:`~clipsieve.media.decode.Decoded` images, PIL images or arrays.
            heads: built or unbuilt heads (see :func:`clipsieve.build_heads`), for every image.
            ids: one id per image, which becomes :attr:`ItemResult.path` (default: a
                :class:`Prepared` keeps its own, others get ``"0"``, ``"1"``…).
            captions: one caption (a string or :class:`~clipsieve.types.Caption`) or ``None``
                per image, for heads that use captions (moderation).
            head_sets: instead of ``heads``, one list of heads per image: every image of a
                batch is still encoded in the same call, then each distinct set of heads (the
                same head objects) runs once over its images (the service batches requests
                that asked for different heads this way).

        Returns:
            One :class:`ItemResult` per image, in order; an unusable image gives a result with
            ``status="error"`` and the others go on.
        """
        images = list(images)
        n = len(images)
        if ids is not None and len(ids) != n:
            raise ValueError(f"got {len(ids)} ids for {n} images")
        if captions is not None and len(captions) != n:
            raise ValueError(f"got {len(captions)} captions for {n} images")
        if head_sets is not None:
            if heads:
                raise ValueError("give heads or head_sets, not both")
            if len(head_sets) != n:
                raise ValueError(f"got {len(head_sets)} head sets for {n} images")
        prepared: list[Prepared] = []
        for i, image in enumerate(images):
            if isinstance(image, Prepared):
                if ids is not None:
                    image.item.path = str(ids[i])
                prepared.append(image)
            else:
                prepared.append(self.prepare(image, id=str(ids[i]) if ids is not None else str(i)))
        shared = _SameContent()
        run = new_run_id()
        out: list[ItemResult] = []
        for start in range(0, n, self.batch_size):
            end = start + self.batch_size
            out += self._step(
                prepared[start:end], heads, shared,
                None if captions is None else captions[start:end], run=run,
                head_sets=None if head_sets is None else head_sets[start:end],
            )
        return out

    def score(
        self,
        embeddings: np.ndarray,
        features: Sequence[dict[str, Any] | None] | None = None,
        *,
        heads: Sequence[Head] = (),
        ids: Sequence[str] | None = None,
        captions: Sequence[Caption | str | None] | None = None,
    ) -> list[ItemResult]:
        """The heads alone, over stored or precomputed embeddings (no image model work).

        Args:
            embeddings: ``(N, D)`` image embeddings of this analyzer's model.
            features: the pixel statistics of each image (``None``: none known).
            heads, ids, captions: as for :meth:`analyze`.
        """
        embs = np.asarray(embeddings, dtype=np.float32)
        if embs.ndim != 2:
            raise ValueError(f"expected (N, D) embeddings, got shape {embs.shape}")
        n = embs.shape[0]
        feats = list(features) if features is not None else [None] * n
        if len(feats) != n or (ids is not None and len(ids) != n):
            raise ValueError("embeddings, features and ids must have one row per image")
        items = [
            ItemResult(path=str(ids[i]) if ids is not None else str(i), model=self.model_id,
                       embedding=embs[i], features=feats[i])
            for i in range(n)
        ]
        if items and heads:
            self._apply_heads(items, heads, _SameContent(), captions)
        return items


def _stamp_provenance(
    items: Sequence[ItemResult], heads: Sequence[Head], analyzer: Analyzer, run: str
) -> None:
    """Record where each head field of ``items`` came from (``provenance``; issue #9)."""
    prov = {h.field: head_provenance(h, analyzer, run) for h in heads}
    for it in items:
        it.extra["provenance"] = {k: dict(v) for k, v in prov.items()}
        if "quality" in prov and it.quality is not None:
            it.extra["provenance"]["quality"]["version"] = getattr(it.quality, "version", None)


_CORE_FIELDS = ("moderation", "quality", "labels")


def _per_item(head: Head) -> bool:
    """Heads whose result depends on more than the image (a caption found by path)."""
    return getattr(head, "captions", None) is not None


def _content_key(item: ItemResult) -> str:
    """What copies share by: the content hash (in-memory images: each its own)."""
    return item.sha256 or f"\0{id(item)}"
