"""ONNX Runtime encoders: ``onnx`` (float32) and ``onnx-int8`` (dynamic int8 quantisation).

The vision and text towers of a CLIP-family checkpoint are exported once with
``torch.onnx.export`` into the cache folder (``<user cache>/clipsieve/onnx/``), in a folder
named by the model's fingerprint (:func:`clipsieve.fingerprint.derived_fingerprint`, the
project's one checkpoint fingerprint plus the tokenizer and processor files) and the export
settings; ``meta.json`` records that fingerprint and a folder whose record differs is exported
again. The exported graphs take what the
torch backend takes (preprocessed pixels; token ids and, where the tokenizer makes one, the
attention mask) and output the projected, L2-normalised embeddings. ``onnx-int8`` quantises
the exported vision graph with ``onnxruntime.quantization.quantize_dynamic``; the settings in
:data:`DEFAULT_QUANT` (which depend on whether the CPU has VNNI) were picked by measured
agreement and speed
(``benchmarks/onnx_quantization.py``; the table is in the README).

Exporting needs torch and transformers (once per model). Inference does not: an
:class:`OnnxEncoder` imports only onnxruntime, ``tokenizers`` (from the ``tokenizer.json``
saved at export time) and numpy, so a process that answers from an exported model never
loads torch.

Every file is written under a temporary name and renamed into place; ``meta.json`` is written
last and lists each file with its size. A folder whose ``meta.json`` is missing or unreadable,
whose files are missing or of the wrong size, or whose graphs onnxruntime cannot load, is
exported again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipsieve.backends._split import BatchSplitter, default_threads, split_enabled
from clipsieve.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

#: Bump when the export code changes the graphs it writes.
EXPORT_CODE_VERSION = 1
#: Bump when the quantisation code changes the graphs it writes.
QUANT_CODE_VERSION = 1
META = "meta.json"


@dataclass(frozen=True)
class ExportSettings:
    """How the towers are exported (part of the cache key).

    Attributes:
        opset: ONNX opset.
        attention: transformers attention implementation traced into the graph
            (``eager`` or ``sdpa``).
    """

    opset: int = 17
    attention: str = "eager"

    def key(self) -> str:
        blob = json.dumps([EXPORT_CODE_VERSION, asdict(self)], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class QuantSettings:
    """Dynamic int8 quantisation of the exported vision graph (part of the cache key).

    Attributes:
        op_types: operator types quantised (``MatMul``; ``Conv`` for the patch embedding;
            ``Gather``…); empty = onnxruntime's default set.
        per_channel: one weight scale per output channel instead of per tensor.
        reduce_range: 7-bit weights (for CPUs without VNNI, where u8×s8 can saturate).
        pre_process: run ``quant_pre_process`` (symbolic shape inference + graph
            optimisation) before quantising.
        keep_float: leave the first and last encoder layers and the projection in float32.
        fuse: fuse attention, layer norm and GELU first (onnxruntime.transformers optimizer).
        text: quantise the text tower as well (otherwise the int8 encoder shares the float32
            text graph).
        weight_type: ``QInt8`` (signed weights: u8×s8 products) or ``QUInt8`` (u8×u8).
    """

    op_types: tuple[str, ...] = ("MatMul",)
    per_channel: bool = True
    reduce_range: bool = False
    pre_process: bool = True
    keep_float: bool = False
    fuse: bool = False
    text: bool = False
    weight_type: str = "QInt8"

    def key(self) -> str:
        fields = asdict(self)
        if fields["weight_type"] == "QInt8":  # the setting before there was a choice: same key
            del fields["weight_type"]
        blob = json.dumps([QUANT_CODE_VERSION, fields], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]


def cpu_has_vnni() -> bool | None:
    """Whether this x86 CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX);
    ``None`` when unknown (not x86, or no ``/proc/cpuinfo``)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return None
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    except OSError:
        pass
    return None


#: Picked by ``benchmarks/onnx_quantization.py`` (agreement with torch float32 and speed) on
#: a CPU with VNNI/AMX: per-channel weight scales halve the error of per-tensor ones.
VNNI_QUANT = QuantSettings()
#: Picked the same way on an AVX2-only CPU: without VNNI, onnxruntime's u8 x s8 kernels add
#: pairs of products in saturating int16, and per-channel scales (every channel's weights
#: stretched to +-127) saturate more often: per-tensor scales there gave 0.99981 mean cosine
#: against 0.99973 at the same speed.
NO_VNNI_QUANT = QuantSettings(per_channel=False)


def default_quant() -> QuantSettings:
    """The int8 settings for this machine's CPU (:data:`NO_VNNI_QUANT` on x86 without VNNI)."""
    return NO_VNNI_QUANT if cpu_has_vnni() is False else VNNI_QUANT


DEFAULT_QUANT = default_quant()
DEFAULT_EXPORT = ExportSettings()


# -- fingerprint and cache folder ------------------------------------------------------------
def export_fingerprint(model_id: str) -> str:
    """The checkpoint's key in the export cache: :func:`clipsieve.fingerprint.derived_fingerprint`.

    That is the project's checkpoint fingerprint (size, mtime and first and last MiB of each
    weight file, ``config.json``) plus the model id and its tokenizer and processor files, so
    a checkpoint folder overwritten with other weights (or another tokenizer) is exported again.

    Raises:
        ModelError: the checkpoint has no ``config.json`` on disk (nothing to export).
    """
    from clipsieve.backends.clip import _checkpoint_file
    from clipsieve.fingerprint import derived_fingerprint

    fp = derived_fingerprint(model_id) if _checkpoint_file(model_id, "config.json") else None
    if fp is None:
        raise ModelError(
            f"cannot export model '{model_id}' to ONNX: no config.json found (a local "
            "checkpoint folder, or a Hugging Face id already in the cache)"
        )
    return fp


def onnx_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir`` or ``CLIPSIEVE_CACHE_DIR``/onnx or the user cache folder's ``onnx``."""
    if cache_dir is not None:
        return Path(cache_dir)
    from clipsieve import settings

    return settings.cache_dir() / "onnx"


def export_folder(model_id: str, settings: ExportSettings = DEFAULT_EXPORT,
                  cache_dir: str | Path | None = None) -> Path:
    """Where the export of ``model_id`` with ``settings`` lives (it may not exist yet)."""
    return _folder_for(export_fingerprint(model_id), settings, cache_dir)


def _folder_for(fp: str, settings: ExportSettings, cache_dir: str | Path | None) -> Path:
    return onnx_cache_dir(cache_dir) / f"{fp}-{settings.key()}"


def _usable(folder: Path, meta: dict[str, Any] | None, fp: str) -> bool:
    """A complete export made from the checkpoint ``fp`` names (not an older key's, not a copy
    of another model's folder)."""
    return (meta is not None and meta.get("fingerprint") == fp
            and _files_ok(folder, meta["files"]))


def is_exported(model: str, *, int8: bool = False, settings: ExportSettings = DEFAULT_EXPORT,
                quant: QuantSettings = DEFAULT_QUANT,
                cache_dir: str | Path | None = None) -> bool:
    """Whether ``model`` is already exported (and, with ``int8``, quantised) in the cache."""
    try:
        fp = export_fingerprint(model)
    except ModelError:
        return False
    folder = _folder_for(fp, settings, cache_dir)
    meta = _read_meta(folder)
    if meta is None or not _usable(folder, meta, fp):
        return False
    return not int8 or quant.key() in meta.get("quantized", {})


# -- atomic files and locking ------------------------------------------------------------------
def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = _tmp_name(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path to write; renamed onto ``path`` when the block succeeds."""
    tmp = _tmp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on a cache folder, across threads and (where fcntl exists) processes."""
    folder.mkdir(parents=True, exist_ok=True)
    with _thread_locks_guard:
        tlock = _thread_locks.setdefault(str(folder), threading.Lock())
    with tlock:
        fh = open(folder / ".lock", "a+")
        try:
            try:
                import fcntl

                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - Windows: threads only
                pass
            yield
        finally:
            fh.close()


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        return None
    return meta


def _files_ok(folder: Path, files: dict[str, int]) -> bool:
    for name, size in files.items():
        try:
            if os.path.getsize(folder / name) != size:
                return False
        except OSError:
            return False
    return True


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    _atomic_write_bytes(folder / META, json.dumps(meta, indent=1, sort_keys=True).encode())


# -- export ------------------------------------------------------------------------------------
def export_model(
    model: str,
    *,
    settings: ExportSettings = DEFAULT_EXPORT,
    cache_dir: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Export the vision and text towers of ``model`` (once; cached). Returns the folder.

    The folder holds ``vision.onnx``, ``text.onnx``, the tokenizer as ``tokenizer.json`` and
    ``meta.json`` (model id, logit scale, embedding size, text inputs and padding, export
    settings, file sizes). Needs torch and transformers.

    Raises:
        ModelError: the checkpoint cannot be loaded or exported.
    """
    from clipsieve.backends.clip import resolve_model_id

    model_id = resolve_model_id(model)
    fp = export_fingerprint(model_id)
    folder = _folder_for(fp, settings, cache_dir)
    if not force and _usable(folder, _read_meta(folder), fp):
        return folder
    with _folder_lock(folder):
        if not force and _usable(folder, _read_meta(folder), fp):
            return folder  # another process exported it meanwhile
        with contextlib.suppress(FileNotFoundError):
            (folder / META).unlink()  # invalid from now on, until rewritten
        t0 = time.perf_counter()
        meta = _export(model_id, folder, settings)
        meta["fingerprint"] = fp  # the key the folder is named by, taken before exporting
        meta["export_seconds"] = round(time.perf_counter() - t0, 2)
        _write_meta(folder, meta)
    return folder


def _export(model_id: str, folder: Path, settings: ExportSettings) -> dict[str, Any]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    from clipsieve.backends.clip import _model_error, _quiet_transformers

    try:
        with _quiet_transformers():
            try:
                net = AutoModel.from_pretrained(model_id, attn_implementation=settings.attention)
            except (ValueError, TypeError):  # a model without that attention implementation
                net = AutoModel.from_pretrained(model_id)
            tok = AutoTokenizer.from_pretrained(model_id)
    except Exception as exc:
        raise _model_error(model_id, exc) from None
    if not (hasattr(net, "get_image_features") and hasattr(net, "get_text_features")):
        raise ModelError(f"model '{model_id}' is a {type(net).__name__}, not a CLIP-like model")
    net.eval()
    cfg = net.config
    model_type = getattr(cfg, "model_type", "")
    scale = getattr(net, "logit_scale", None)
    logit_scale = float(np.exp(np.float64(scale.item()))) if scale is not None else 100.0
    dim = int(getattr(cfg, "projection_dim", 0)
              or getattr(getattr(cfg, "vision_config", None), "hidden_size", 0))
    max_len = int(getattr(cfg.text_config, "max_position_embeddings", 77))
    pad_to_max = model_type.startswith("siglip")
    input_names = [n for n in getattr(tok, "model_input_names", ["input_ids"])
                   if n in ("input_ids", "attention_mask")] or ["input_ids"]

    def features(out: Any) -> Any:
        if hasattr(out, "pooler_output"):
            return out.pooler_output
        if isinstance(out, (tuple, list)):
            return out[0]
        return out

    def normalise(f: Any) -> Any:
        f = f.float()
        return f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    class Vision(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixel_values: Any) -> Any:
            return normalise(features(self.net.get_image_features(pixel_values=pixel_values)))

    class Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, *args: Any) -> Any:
            kw = dict(zip(input_names, args))
            return normalise(features(self.net.get_text_features(**kw)))

    folder.mkdir(parents=True, exist_ok=True)
    hw = _vision_input_hw(model_id, cfg)
    pixels = torch.zeros(2, 3, *hw)
    enc = tok(["a photo of a cat.", "two dogs playing in the snow"],
              padding="max_length" if pad_to_max else True, truncation=True,
              max_length=max_len, return_tensors="pt")
    text_args = tuple(enc[n] for n in input_names)
    import warnings

    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, module, args, inputs, axes in (
            ("vision.onnx", Vision(), (pixels,), ["pixel_values"],
             {"pixel_values": {0: "batch"}}),
            ("text.onnx", Text(), text_args, input_names,
             {n: {0: "batch", 1: "sequence"} for n in input_names}),
        ):
            with _atomic_path(folder / name) as tmp:
                try:
                    torch.onnx.export(
                        module, args, str(tmp), input_names=inputs,
                        output_names=["embeddings"],
                        dynamic_axes={**axes, "embeddings": {0: "batch"}},
                        opset_version=settings.opset, dynamo=False, do_constant_folding=True,
                    )
                except Exception as exc:
                    raise ModelError(
                        f"cannot export model '{model_id}' to ONNX ({name}): "
                        f"{type(exc).__name__}: {exc}"
                    ) from None
    tokenizer = _save_tokenizer(tok, folder)
    files = {n: os.path.getsize(folder / n) for n in ("vision.onnx", "text.onnx")}
    if tokenizer:
        files[tokenizer] = os.path.getsize(folder / tokenizer)
    return {
        "model_id": model_id,
        "model_type": model_type,
        "export": asdict(settings),
        "export_code_version": EXPORT_CODE_VERSION,
        "torch_version": torch.__version__,
        "logit_scale": logit_scale,
        "dim": dim,
        "image_hw": list(hw),
        "text": {
            "inputs": input_names,
            "max_length": max_len,
            "pad_to_max_length": pad_to_max,
            "pad_id": tok.pad_token_id if tok.pad_token_id is not None else 0,
            "pad_token": tok.pad_token,
            "tokenizer": tokenizer,
        },
        "files": files,
        "quantized": {},
        "created": time.time(),
    }


def _vision_input_hw(model_id: str, cfg: Any) -> tuple[int, int]:
    from clipsieve.backends.clip import load_preprocess

    try:
        return load_preprocess(model_id).output_hw
    except Exception:
        size = int(getattr(cfg.vision_config, "image_size", 224))
        return (size, size)


def _save_tokenizer(tok: Any, folder: Path) -> str | None:
    """The tokenizer's ``tokenizers`` backend as ``tokenizer.json`` (None: it has none)."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    clone = Tokenizer.from_str(backend.to_str())
    clone.no_padding()
    clone.no_truncation()
    _atomic_write_bytes(folder / "tokenizer.json", clone.to_str().encode("utf-8"))
    return "tokenizer.json"


# -- quantisation ------------------------------------------------------------------------------
def quantize_model(
    folder: str | Path,
    quant: QuantSettings = DEFAULT_QUANT,
) -> dict[str, str]:
    """Quantise an export folder's graphs (once; cached). Returns ``{"vision": name, "text": name}``.

    The text graph is quantised only with ``quant.text``; otherwise the float32 one is named.
    """
    folder = Path(folder)
    key = quant.key()
    meta = _read_meta(folder)
    if meta is None:
        raise ModelError(f"{folder}: not an ONNX export folder (no readable {META})")
    done = meta.get("quantized", {}).get(key)
    if done and _files_ok(folder, {n: meta["files"].get(n, -1) for n in done.values()}):
        return dict(done)
    with _folder_lock(folder):
        meta = _read_meta(folder) or meta
        done = meta.get("quantized", {}).get(key)
        if done and _files_ok(folder, {n: meta["files"].get(n, -1) for n in done.values()}):
            return dict(done)
        names = {"vision": f"vision.int8-{key}.onnx",
                 "text": f"text.int8-{key}.onnx" if quant.text else "text.onnx"}
        towers = ["vision", "text"] if quant.text else ["vision"]
        for tower in towers:
            _quantize_file(folder / f"{tower}.onnx", folder / names[tower], quant)
            meta["files"][names[tower]] = os.path.getsize(folder / names[tower])
        meta.setdefault("quantized", {})[key] = names
        meta.setdefault("quant_settings", {})[key] = asdict(quant)
        _write_meta(folder, meta)
        return names


def _quantize_file(src: Path, dest: Path, quant: QuantSettings) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    work = src
    scratch: list[Path] = []
    try:
        if quant.fuse:
            from onnxruntime.transformers.optimizer import optimize_model

            fused = _tmp_name(dest.with_suffix(".fused.onnx"))
            scratch.append(fused)
            optimize_model(str(work), model_type="clip", opt_level=1).save_model_to_file(
                str(fused))
            work = fused
        if quant.pre_process:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            pre = _tmp_name(dest.with_suffix(".pre.onnx"))
            scratch.append(pre)
            # after fusion the graph holds onnxruntime's own operators: only symbolic shape
            # inference (which knows them) runs, no second optimisation
            quant_pre_process(str(work), str(pre), skip_optimization=quant.fuse,
                              skip_symbolic_shape=False)
            work = pre
        exclude = _float_nodes(onnx.load(str(work), load_external_data=False)) \
            if quant.keep_float else []
        with _atomic_path(dest) as tmp:
            quantize_dynamic(
                str(work), str(tmp),
                op_types_to_quantize=list(quant.op_types) or None,
                per_channel=quant.per_channel,
                reduce_range=quant.reduce_range,
                weight_type=getattr(QuantType, quant.weight_type),
                nodes_to_exclude=exclude or None,
            )
    finally:
        for path in scratch:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _float_nodes(model: Any) -> list[str]:
    """MatMul nodes of the first encoder layer and after the last one (projection)."""
    names = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    first = [n for n in names if "layers.0/" in n or "layers.0." in n]
    last_layer = max((int(part.split(".")[1].split("/")[0])
                      for n in names for part in n.split("/")
                      if part.startswith("layers.") and part.split(".")[1].split("/")[0].isdigit()),
                     default=-1)
    after = [n for n in names if "projection" in n or "post_layernorm" in n
             or (last_layer >= 0 and f"layers.{last_layer}/" in n)]
    return first + after


# -- inference ---------------------------------------------------------------------------------
def session_options(threads: int | None = None) -> Any:
    """onnxruntime session options for a shared CPU.

    ``threads`` intra-op threads (default: the cores this process may use), one inter-op
    thread, and no spin-waiting: idle encoder threads sleep instead of spinning, so the decode
    threads running beside them get the cores.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or default_threads())
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


@dataclass
class _Tokenize:
    """Texts → model inputs, as the checkpoint's tokenizer makes them."""

    meta: dict[str, Any]
    folder: Path
    _tok: Any = field(default=None, repr=False)
    _hf: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        t = self.meta["text"]
        if t.get("tokenizer"):
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self.folder / t["tokenizer"]))
            tok.enable_truncation(max_length=int(t["max_length"]))
            pad: dict[str, Any] = {"pad_id": int(t["pad_id"])}
            if t.get("pad_token") is not None:
                pad["pad_token"] = t["pad_token"]
            if t.get("pad_to_max_length"):
                pad["length"] = int(t["max_length"])
            tok.enable_padding(**pad)
            self._tok = tok
        else:  # no tokenizers backend: transformers' tokenizer (tokenizer code only)
            from transformers import AutoTokenizer

            self._hf = AutoTokenizer.from_pretrained(self.meta["model_id"])

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        t = self.meta["text"]
        if self._tok is not None:
            encs = self._tok.encode_batch(texts)
            arrays = {
                "input_ids": np.asarray([e.ids for e in encs], dtype=np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in encs], dtype=np.int64),
            }
        else:
            out = self._hf(texts, padding="max_length" if t.get("pad_to_max_length") else True,
                           truncation=True, max_length=int(t["max_length"]), return_tensors="np")
            arrays = {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}
        return {n: arrays[n] for n in t["inputs"]}


class OnnxEncoder:
    """A CLIP-family model exported to ONNX, run by onnxruntime (float32).

    Args:
        model: Hugging Face id (already in the cache) or local checkpoint folder.
        device: ``auto`` or ``cpu``; ``cuda``/``cuda:N`` when onnxruntime has the CUDA provider.
        precision: ``auto`` or ``float32`` (``float32`` is what runs).
        cache_dir: where exports live (default: the user cache folder's ``onnx``).
        threads: intra-op threads (default: the cores this process may use).
        export: export settings (part of the cache key).

    The first use of a model exports it (needs torch and transformers; seconds to a minute);
    later processes load the exported graphs without importing either.
    """

    kind = "onnx"
    int8 = False

    def __init__(
        self,
        model: str,
        *,
        device: str = "auto",
        precision: str = "auto",
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        export: ExportSettings = DEFAULT_EXPORT,
        quant: QuantSettings = DEFAULT_QUANT,
    ) -> None:
        from clipsieve.backends.clip import load_preprocess, resolve_model_id

        self.model_id = resolve_model_id(model)
        self.precision = self._pick_precision(precision)
        self.device, self._providers = _pick_providers(device, self.kind)
        self.threads = int(threads or default_threads())
        self.export_settings = export
        self.quant_settings = quant if self.int8 else None
        self.folder = export_model(self.model_id, settings=export, cache_dir=cache_dir)
        self.preprocess = load_preprocess(self.model_id)
        self._lock = threading.Lock()
        # the image tower's batches run as one single-threaded call per core (encode_pixels)
        split = self.threads > 1 and self.device == "cpu" and split_enabled()
        self._splitter = BatchSplitter(self.threads, "onnx") if split else None
        for attempt in (0, 1):
            try:
                self._open()
                break
            except _BadCache as exc:
                if attempt:
                    raise ModelError(f"ONNX export of '{self.model_id}' is unusable: {exc}") from None
                log.warning("rebuilding ONNX export in %s: %s", self.folder, exc)
                export_model(self.model_id, settings=export, cache_dir=cache_dir, force=True)

    def _pick_precision(self, precision: str | None) -> str:
        if precision in (None, "", "auto", "float32"):
            return "float32"
        raise ConfigError(
            f"--precision {precision}: the {self.kind} encoder runs in float32; "
            "use --precision auto or float32 (bfloat16 and float16 are for --encoder torch)"
        )

    def _graph_names(self) -> dict[str, str]:
        return {"vision": "vision.onnx", "text": "text.onnx"}

    def _open(self) -> None:
        import onnxruntime as ort

        meta = _read_meta(self.folder)
        if meta is None or not _files_ok(self.folder, meta["files"]):
            raise _BadCache("meta.json or a file is missing or truncated")
        try:
            names = self._graph_names()
        except ModelError:
            raise
        meta = _read_meta(self.folder) or meta
        self.meta = meta
        self.graphs = names
        # the image tower runs one intra-op thread per call and splits a batch over
        # `self.threads` concurrent calls (see encode_pixels)
        so = session_options(1 if self._split_runs else self.threads)
        try:
            self._vision = ort.InferenceSession(str(self.folder / names["vision"]), so,
                                                providers=self._providers)
            self._text_session: Any = None
            self._text_name = names["text"]
        except Exception as exc:  # onnxruntime raises its own exception types
            raise _BadCache(f"{names['vision']}: {_short(exc)}") from None
        self.logit_scale = float(meta["logit_scale"])
        self.dim = int(meta["dim"])
        self._tokenize: _Tokenize | None = None

    @property
    def _text(self) -> Any:
        """The text session, opened on first use (an image-only scan never pays for it)."""
        if self._text_session is None:
            import onnxruntime as ort

            try:
                self._text_session = ort.InferenceSession(
                    str(self.folder / self._text_name), session_options(self.threads),
                    providers=self._providers)
            except Exception as exc:
                raise ModelError(f"ONNX export of '{self.model_id}' ({self._text_name}) cannot "
                                 f"be loaded: {_short(exc)}; delete {self.folder}") from None
            self._tokenize = _Tokenize(self.meta, self.folder)
        return self._text_session

    @property
    def _split_runs(self) -> bool:
        return self._splitter is not None

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocessed pixels (N, 3, H, W) → L2-normalised embeddings (N, D) float32.

        On the CPU a batch is split into up to ``threads`` slices that run at once, each on one
        intra-op thread, instead of one call whose every operator is split over the threads:
        a single-threaded call never waits at a per-operator barrier for a thread that a
        decode thread has taken the core from (``benchmarks/encoders.py``: int8 scan about 7%
        faster beside the decoders on 2 cores, encoder alone the same). A single image then
        runs on one core.
        """
        x = np.ascontiguousarray(pixels, dtype=np.float32)
        n = x.shape[0]
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        run = self._vision.run
        with self._lock:
            if self._splitter is None:
                out = run(None, {"pixel_values": x})[0]
            else:
                out = self._splitter.run(lambda sl: run(None, {"pixel_values": sl})[0], x)
        return _renormalise(out)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Texts → L2-normalised embeddings (N, D) float32."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        outs = []
        with self._lock:
            session = self._text
            assert self._tokenize is not None
            for i in range(0, len(texts), batch_size):
                feeds = self._tokenize(texts[i : i + batch_size])
                outs.append(session.run(None, feeds)[0])
        return _renormalise(np.concatenate(outs))


class OnnxInt8Encoder(OnnxEncoder):
    """:class:`OnnxEncoder` with the vision graph quantised to dynamic int8 (:data:`DEFAULT_QUANT`).

    ``precision`` is recorded as ``int8``. The graph is quantised once per export and cached.
    """

    kind = "onnx-int8"
    int8 = True

    def _pick_precision(self, precision: str | None) -> str:
        if precision in (None, "", "auto", "int8"):
            return "int8"
        raise ConfigError(
            f"--precision {precision}: the onnx-int8 encoder runs in int8; use --precision auto "
            "(or --encoder onnx for float32)"
        )

    def _graph_names(self) -> dict[str, str]:
        assert self.quant_settings is not None
        try:
            return quantize_model(self.folder, self.quant_settings)
        except ModelError:
            raise
        except Exception as exc:
            raise _BadCache(f"quantisation failed: {_short(exc)}") from None


class _BadCache(Exception):
    pass


def _renormalise(out: np.ndarray) -> np.ndarray:
    out = np.asarray(out, dtype=np.float32)
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norm, 1e-12)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _pick_providers(device: str | None, kind: str) -> tuple[str, list[Any]]:
    if device in (None, "", "auto", "cpu"):
        return "cpu", ["CPUExecutionProvider"]
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError(
                f"--device {device}: this onnxruntime has no CUDA provider (install "
                f"onnxruntime-gpu), or use --encoder torch"
            )
        idx = int(device[5:]) if ":" in device else 0
        return device, [("CUDAExecutionProvider", {"device_id": idx}), "CPUExecutionProvider"]
    raise ConfigError(f"--device {device!r}: the {kind} encoder runs on auto, cpu, cuda or cuda:N")


def remove_exports(model: str, cache_dir: str | Path | None = None) -> int:
    """Delete every cached export of ``model``; returns how many folders were removed.

    That is the folders of its current fingerprint and every folder whose ``meta.json`` names
    the model (exports of its earlier weights, and of earlier versions of the cache key).
    """
    from clipsieve.backends.clip import resolve_model_id

    model_id = resolve_model_id(model)
    try:
        prefix: str | None = export_fingerprint(model_id) + "-"
    except ModelError:  # no longer on disk: only the folders that name it
        prefix = None
    root = onnx_cache_dir(cache_dir)
    n = 0
    try:
        folders = sorted(d for d in root.iterdir() if d.is_dir())
    except OSError:
        return 0
    for d in folders:
        meta = _read_meta(d)
        if (prefix is not None and d.name.startswith(prefix)) or (
            meta is not None and meta.get("model_id") == model_id
        ):
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    return n
