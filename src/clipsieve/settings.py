"""Defaults and environment variables.

| variable            | meaning                                              | default |
|---------------------|------------------------------------------------------|---------|
| ``CLIPSIEVE_MODEL`` | model id (Hugging Face) or local checkpoint folder   | ``openai/clip-vit-base-patch32`` |
| ``CLIPSIEVE_STORE`` | path of the SQLite store                             | user cache dir / ``clipsieve/store.sqlite`` |
| ``CLIPSIEVE_DEVICE``| ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``     | ``auto`` |
| ``CLIPSIEVE_PRECISION`` | ``auto``, ``float32``, ``bfloat16``, ``float16`` | ``auto`` |
| ``CLIPSIEVE_CONFIG_DIR`` | user configuration folder (``policies/`` inside)     | XDG config dir / ``clipsieve`` |
| ``CLIPSIEVE_CACHE_DIR`` | cache folder (ONNX exports, prompt embeddings)     | user cache dir / ``clipsieve`` |
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
#: The shipped quality configuration (technical measures, CLIP-IQA pairs, combination).
QUALITY_CONFIG_PATH = Path(__file__).resolve().parent / "data" / "quality.toml"
DEFAULT_BATCH_SIZE = 32


def default_model() -> str:
    return os.environ.get("CLIPSIEVE_MODEL") or DEFAULT_MODEL


def default_device() -> str:
    return os.environ.get("CLIPSIEVE_DEVICE") or "auto"


def default_precision() -> str:
    return os.environ.get("CLIPSIEVE_PRECISION") or "auto"


def user_cache_dir() -> Path:
    """The per-user cache folder (XDG on Linux, Library/Caches on macOS, LOCALAPPDATA on Windows)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "clipsieve"


def user_config_dir() -> Path:
    """The per-user configuration folder (``CLIPSIEVE_CONFIG_DIR``, else XDG_CONFIG_HOME or
    ~/.config on Linux, Library/Application Support on macOS, APPDATA on Windows)."""
    env = os.environ.get("CLIPSIEVE_CONFIG_DIR")
    if env:
        return Path(env)
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "clipsieve"


def user_policy_dir() -> Path:
    """Where ``clipsieve policy init`` writes policies and ``--policy NAME`` finds them."""
    return user_config_dir() / "policies"


def cache_dir() -> Path:
    """Where exported models and cached prompt embeddings live (``CLIPSIEVE_CACHE_DIR``)."""
    env = os.environ.get("CLIPSIEVE_CACHE_DIR")
    return Path(env).expanduser() if env else user_cache_dir()


def default_store_path() -> Path:
    env = os.environ.get("CLIPSIEVE_STORE")
    return Path(env) if env else user_cache_dir() / "store.sqlite"


def default_workers() -> int:
    """Decode threads: one per core, at least two (decoding releases the GIL)."""
    return max(2, os.cpu_count() or 2)
