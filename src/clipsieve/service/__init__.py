"""The HTTP service (``clipsieve serve``): one more driver over the library's batch step.

Uploads are prepared in a decode pool with ``Analyzer.prepare`` and micro-batched across
requests into ``Analyzer.analyze`` on one model thread (``head_sets``: one encoder call even
when requests asked for different heads); see :mod:`clipsieve.service.engine`. The service holds
no decoding, statistics or scoring code of its own. For an ASGI server of your own, set
``OMP_WAIT_POLICY=PASSIVE`` before torch loads, as ``clipsieve serve`` does
(:func:`~clipsieve.service.config.passive_openmp`).

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
