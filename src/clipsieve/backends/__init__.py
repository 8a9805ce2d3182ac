"""Model backends: load a CLIP-family checkpoint and turn pixels and texts into embeddings."""

from clipsieve.backends.clip import ClipBackend, load_preprocess, resolve_model_id

__all__ = ["ClipBackend", "load_preprocess", "resolve_model_id"]
