"""The HTTP service (``clipsieve serve``): one more driver over the library's batch step.

Needs the ``service`` extra (FastAPI, uvicorn, prometheus-client). Nothing in the core library
imports this package; importing it does not import FastAPI until :func:`create_app` is used.

    from clipsieve.service import ServiceConfig, create_app
    app = create_app(ServiceConfig(model="openai/clip-vit-base-patch32", policies=("default",)))
"""

from __future__ import annotations

from typing import Any

from clipsieve.service.config import ServiceConfig, load_api_keys, parse_size

__all__ = ["ServiceConfig", "create_app", "load_api_keys", "parse_size"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """See :func:`clipsieve.service.app.create_app`."""
    from clipsieve.service.app import create_app as _create_app

    return _create_app(*args, **kwargs)
