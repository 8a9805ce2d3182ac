"""CLIP-family checkpoints through transformers (CLIP, SigLIP and friends).

Heavy imports (torch, transformers) happen inside the functions that need them, so reading a
checkpoint's preprocessing config — all a fully cached re-scan needs — costs milliseconds.
A checkpoint that cannot be found or that lacks weights raises :class:`ModelError`; clipsieve
never runs on randomly initialised weights.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipsieve.backends._split import BatchSplitter, split_enabled
from clipsieve.errors import ConfigError, ModelError
from clipsieve.media.preprocess import Preprocess

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "bfloat16", "float16")
_CONFIG_FILES = ("preprocessor_config.json", "processor_config.json")
#: torch's intra-op thread count before the first splitting encoder set it to 1
_TORCH_THREADS: int | None = None


def resolve_model_id(model: str) -> str:
    """A local folder becomes its absolute real path; a hub id is kept as written."""
    p = Path(model).expanduser()
    if p.is_dir():
        return str(p.resolve())
    return model


#: The ``{model}`` marker of the model hints (the library's ``model`` argument; the CLI:
#: --model).
_MODEL = {"model": "the model argument"}


def _hint(model: str) -> str:
    return (
        f"Fix: pass {{model}} /path/to/a/local/checkpoint (or set CLIPSIEVE_MODEL), or run once "
        f"with network access so that '{model}' is downloaded into the Hugging Face cache."
    )


def _hub_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        return "~/.cache/huggingface/hub"


def _read_image_processor_config(model_id: str) -> dict[str, Any] | None:
    """The image-processor config of a local folder or a hub id already in the cache."""
    for name in _CONFIG_FILES:
        path: str | None = None
        local = Path(model_id) / name
        if local.is_file():
            path = str(local)
        elif not Path(model_id).is_dir():
            try:
                from huggingface_hub import try_to_load_from_cache

                found = try_to_load_from_cache(model_id, name)
                path = found if isinstance(found, str) else None
            except Exception:  # malformed ids etc. fall through to transformers
                path = None
        if path:
            with open(path, encoding="utf-8") as fh:
                cfg = json.load(fh)
            if name == "processor_config.json":
                cfg = cfg.get("image_processor")
                if not cfg:
                    continue
            return cfg
    return None


def load_preprocess(model_id: str) -> Preprocess:
    """Preprocessing parameters from the checkpoint's own config, without loading weights."""
    try:
        cfg = _read_image_processor_config(model_id)
    except (OSError, ValueError) as exc:  # unreadable (permission denied) or not JSON
        raise _model_error(model_id, exc) from None
    if cfg is None:
        try:
            from transformers import AutoImageProcessor

            with _quiet_transformers():
                proc = AutoImageProcessor.from_pretrained(model_id)
            cfg = proc.to_dict()
        except Exception as exc:
            raise _model_error(model_id, exc) from None
    try:
        return Preprocess.from_config(cfg)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"model '{model_id}': unusable image processor config: {exc}") from None


def read_logit_scale(model_id: str) -> float | None:
    """exp(logit_scale) read straight from the checkpoint's safetensors file, without torch.

    Lets heads that need only the logit scale (softmax over stored embeddings) run without
    loading the model. Returns None when the value cannot be found that way.
    """
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover
        return None
    files: list[str] = []
    index = _checkpoint_file(model_id, "model.safetensors.index.json")
    if index:
        with open(index, encoding="utf-8") as fh:
            shard = json.load(fh).get("weight_map", {}).get("logit_scale")
        found = _checkpoint_file(model_id, shard) if shard else None
        files = [found] if found else []
    else:
        single = _checkpoint_file(model_id, "model.safetensors")
        files = [single] if single else []
    for path in files:
        try:
            with safe_open(path, framework="numpy") as f:
                if "logit_scale" in f.keys():
                    return float(np.exp(np.asarray(f.get_tensor("logit_scale"), dtype=np.float64)))
        except Exception:  # unreadable: the caller loads the model instead
            return None
    return None


def _checkpoint_file(model_id: str, name: str) -> str | None:
    local = Path(model_id) / name
    if local.is_file():
        return str(local)
    if Path(model_id).is_dir():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(model_id, name)
    except Exception:
        return None
    return found if isinstance(found, str) else None


def _unreadable_files(folder: Path) -> list[str]:
    """``"name (reason)"`` for each file of a checkpoint folder that cannot be read."""
    out = []
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        return [f"the folder itself ({exc.strerror or exc})"]
    for p in entries:
        try:
            if p.is_dir():
                continue
            with open(p, "rb") as fh:
                fh.read(1)
        except OSError as exc:
            out.append(f"{p.name} ({(exc.strerror or str(exc)).lower()})")
    return out


def _model_error(model_id: str, exc: BaseException) -> ModelError:
    if Path(model_id).is_dir():
        unreadable = _unreadable_files(Path(model_id))
        if unreadable:
            return ModelError(
                f"cannot load model '{model_id}': cannot read {', '.join(unreadable)}. Fix: "
                "make the checkpoint files readable by this user (chmod a+r), or point {model} "
                "(or CLIPSIEVE_MODEL) at another checkpoint.", params=_MODEL,
            )
        missing = _missing_checkpoint_files(Path(model_id))
        why = f"it lacks {', '.join(missing)}" if missing else _short(exc)
        return ModelError(
            f"cannot load model '{model_id}': the folder holds no loadable CLIP checkpoint "
            f"({why}). Fix: point {{model}} (or CLIPSIEVE_MODEL) at a folder written by "
            "save_pretrained, with config.json, weights, tokenizer and preprocessor config.",
            params=_MODEL,
        )
    if model_id.startswith((".", "/", "~")) or os.sep in model_id.strip("/").replace("/", "", 1):
        return ModelError(
            f"cannot load model '{model_id}': no such folder. Fix: pass {{model}} with an "
            "existing checkpoint folder or a Hugging Face model id (or set CLIPSIEVE_MODEL).",
            params=_MODEL,
        )
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    why = "offline mode is on (HF_HUB_OFFLINE)" if offline else "no network, or no such model id"
    return ModelError(
        f"cannot load model '{model_id}': not in the Hugging Face cache ({_hub_cache_dir()}) "
        f"and could not be downloaded: {why}. {_hint(model_id)}", params=_MODEL,
    )


def _missing_checkpoint_files(folder: Path) -> list[str]:
    names = {p.name for p in folder.iterdir()}
    need = {
        "config.json": {"config.json"},
        "weights (model.safetensors or pytorch_model.bin)": {
            "model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
            "pytorch_model.bin.index.json",
        },
        "an image processor config": set(_CONFIG_FILES),
        "a tokenizer": {"tokenizer.json", "vocab.json", "spiece.model", "tokenizer.model"},
    }
    return [label for label, files in need.items() if not names & files]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


class _quiet_transformers:
    """Silence transformers' logging and progress bars inside a block."""

    def __enter__(self) -> None:
        from transformers.utils import logging as tlog

        self._level = tlog.get_verbosity()
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        from transformers.utils import logging as tlog

        tlog.set_verbosity(self._level)


def pick_device(device: str = "auto") -> str:
    import torch

    if device in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"{{device}}={device}: CUDA is not available on this machine",
                              params={"device": "device"})
        if ":" in device and int(device[5:]) >= torch.cuda.device_count():
            raise ConfigError(
                f"{{device}}={device}: this machine has {torch.cuda.device_count()} CUDA "
                "device(s)", params={"device": "device"},
            )
        return device
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if not (mps and mps.is_available()):
            raise ConfigError("{device}=mps: Apple MPS is not available on this machine",
                              params={"device": "device"})
        return device
    raise ConfigError(f"{{device}}={device}: choose auto, cpu, cuda, cuda:N or mps",
                      params={"device": "device"})


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has native bfloat16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover - old torch
        return False


def pick_precision(device: str, precision: str = "auto") -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"{{precision}}={precision}: choose one of {', '.join(PRECISIONS)}",
                          params={"precision": "precision"})
    if precision != "auto":
        if device == "cpu" and precision == "float16":
            raise ConfigError("{precision}=float16 is not supported on the CPU; use bfloat16",
                              params={"precision": "precision"})
        return precision
    if device.startswith("cuda"):
        return "float16"
    if device == "cpu" and cpu_has_native_bf16():
        return "bfloat16"
    return "float32"


class ClipBackend:
    """A loaded CLIP-family model: the ``"torch"`` :class:`~clipsieve.backends.Encoder`.

    Args:
        model: Hugging Face id or local checkpoint folder.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``auto``, ``float32``, ``bfloat16`` or ``float16``. ``auto`` picks float16
            on CUDA, bfloat16 autocast on CPUs with native bf16, else float32.
        threads: CPU threads of the model (default: torch's own count, ``torch.get_num_threads()``
            when the first encoder loads). On the CPU a batch is split into that many row
            slices that run at once, each on one intra-op thread; this sets
            ``torch.set_num_threads(1)`` for the process (:mod:`clipsieve.backends._split`;
            ``CLIPSIEVE_SPLIT_BATCHES=0`` runs one call on ``threads`` threads instead).

    Raises:
        ModelError: the checkpoint cannot be found, is not CLIP-like, or lacks weights.
    """

    kind = "torch"

    def __init__(self, model: str, *, device: str = "auto", precision: str = "auto",
                 threads: int | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_id = resolve_model_id(model)
        self.device = pick_device(device)
        self.precision = pick_precision(self.device, precision)
        self.preprocess = load_preprocess(self.model_id)
        try:
            with _quiet_transformers():
                net, info = AutoModel.from_pretrained(self.model_id, output_loading_info=True)
                self.tokenizer = AutoTokenizer.from_pretrained(self.model_id)
        except Exception as exc:
            raise _model_error(self.model_id, exc) from None
        if not (hasattr(net, "get_image_features") and hasattr(net, "get_text_features")):
            raise ModelError(
                f"model '{self.model_id}' is a {type(net).__name__}, not a CLIP-like image-text "
                "model (it has no get_image_features / get_text_features)"
            )
        missing = sorted(info.get("missing_keys") or [])
        if missing:
            raise ModelError(
                f"model '{self.model_id}': the checkpoint lacks {len(missing)} weight tensors "
                f"(e.g. {', '.join(missing[:3])}); refusing to run with randomly initialised weights"
            )
        self.model_type = getattr(net.config, "model_type", "")
        # exp in float64 of the stored float32 value, exactly as read_logit_scale() does, so
        # scores are identical whether or not the model was loaded.
        scale = getattr(net, "logit_scale", None)
        self.logit_scale = float(np.exp(np.float64(scale.item()))) if scale is not None else 100.0
        net.eval()
        if self.precision == "float16":
            net = net.half()
        self.net = net.to(self.device)
        self._autocast = self.precision == "bfloat16"
        # CLIP projects to projection_dim; SigLIP's embeddings are the towers' hidden size
        self.dim = int(
            getattr(net.config, "projection_dim", 0)
            or getattr(getattr(net.config, "vision_config", None), "hidden_size", 0)
        )
        self._lock = threading.Lock()
        self._torch = torch
        self.threads, split = _cpu_threads(torch, self.device, threads)
        self._splitter = BatchSplitter(self.threads, "torch") if split else None

    @property
    def input_dtype(self) -> Any:
        return self._torch.float16 if self.precision == "float16" else self._torch.float32

    def _context(self) -> Any:
        torch = self._torch
        if self._autocast:
            dev = "cuda" if self.device.startswith("cuda") else "cpu"
            return torch.autocast(device_type=dev, dtype=torch.bfloat16)
        return torch.autocast(device_type="cpu", enabled=False)

    @staticmethod
    def _features(out: Any) -> Any:
        """transformers 4 returns a tensor, transformers 5 a model output with pooler_output."""
        if hasattr(out, "pooler_output"):
            return out.pooler_output
        if isinstance(out, (tuple, list)):
            return out[0]
        return out

    def _normalise(self, feats: Any) -> np.ndarray:
        feats = feats.float()
        feats = feats / feats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return feats.cpu().numpy().astype(np.float32, copy=False)

    def _image_rows(self, pixels: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode(), self._context():  # both are per thread
            x = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device, self.input_dtype)
            return self._normalise(self._features(self.net.get_image_features(pixel_values=x)))

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Preprocessed pixels (N, 3, H, W) → L2-normalised embeddings (N, D) float32.

        On the CPU the batch runs as up to ``threads`` single-threaded slices at once (see
        :mod:`clipsieve.backends._split`); a single image then runs on one core.
        """
        with self._lock:
            if self._splitter is None:
                return self._image_rows(pixels)
            return self._splitter.run(self._image_rows, pixels)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Texts → L2-normalised embeddings (N, D) float32."""
        torch = self._torch
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        padding: Any = "max_length" if self.model_type.startswith("siglip") else True
        max_len = getattr(self.net.config.text_config, "max_position_embeddings", 77)
        outs = []
        with self._lock:
            for i in range(0, len(texts), batch_size):
                # tokenized here, in one thread (a fast tokenizer is not safe to share), then
                # its rows are split like an image batch
                tok = self.tokenizer(
                    list(texts[i : i + batch_size]),
                    padding=padding,
                    truncation=True,
                    max_length=max_len,
                    return_tensors="pt",
                )
                tok = {k: v.to(self.device) for k, v in tok.items()}

                def rows(a: int, b: int, tok: dict[str, Any] = tok) -> np.ndarray:
                    with torch.inference_mode(), self._context():
                        part = {k: v[a:b] for k, v in tok.items()}
                        return self._normalise(self._features(
                            self.net.get_text_features(**part)))

                n = int(next(iter(tok.values())).shape[0])
                outs.append(rows(0, n) if self._splitter is None
                            else self._splitter.map_rows(rows, n))
        return np.concatenate(outs)


def _cpu_threads(torch: Any, device: str, threads: int | None) -> tuple[int, bool]:
    """(threads, split) of a torch encoder on ``device``; sets torch's intra-op threads.

    Splitting (CPU, more than one thread, ``CLIPSIEVE_SPLIT_BATCHES`` not off) sets
    ``torch.set_num_threads(1)`` for the process; the count it had first is remembered, so a
    second encoder in the same process splits over as many threads as the first.
    """
    global _TORCH_THREADS
    if not device.startswith("cpu"):
        return int(threads or torch.get_num_threads()), False
    n = int(threads or _TORCH_THREADS or torch.get_num_threads())
    if n > 1 and split_enabled():
        if _TORCH_THREADS is None:
            _TORCH_THREADS = int(torch.get_num_threads())
        torch.set_num_threads(1)
        return n, True
    if threads or _TORCH_THREADS is not None:  # asked for, or put back after a splitter
        torch.set_num_threads(n)
    return n, False
