"""Split a batch over concurrent single-threaded calls (the CPU encoders' threading).

A model call whose every operator is split over all cores waits at each operator's barrier
for its slowest thread. Beside the decode threads of a scan, one of those threads has often
just lost its core to a decoder, and the whole call waits for it. Running the batch instead as
one slice per core, each slice a separate call on one intra-op thread, has no such barrier:
a slice whose core is taken simply finishes later while the others go on
(``benchmarks/encoders.py``). Both CPU encoders use it: ONNX Runtime (one intra-op thread per
session call) and torch (``torch.set_num_threads(1)``, then one Python thread per slice; torch
releases the GIL inside its operators).

``CLIPSIEVE_SPLIT_BATCHES=0`` turns it off (one call on all the threads, as before), for
comparison or for a process that runs other multi-threaded torch work beside the encoder.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

#: Environment variable: ``0`` (or ``false``/``no``/``off``) runs each batch as one call.
SPLIT_ENV = "CLIPSIEVE_SPLIT_BATCHES"


def default_threads() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def split_enabled() -> bool:
    """Whether CPU encoders split batches (``CLIPSIEVE_SPLIT_BATCHES``, default on)."""
    return os.environ.get(SPLIT_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class BatchSplitter:
    """Runs ``fn`` on up to ``threads`` row slices of a batch at once and joins the outputs.

    ``fn`` must be safe to call from several threads at once (an onnxruntime session's
    ``run``; a torch module in inference mode) and return an array with one row per input
    row. Rows come back in input order. The worker threads are started on first use.
    """

    def __init__(self, threads: int, name: str) -> None:
        self.threads = max(1, int(threads))
        self._name = name
        self._pool: Any = None
        self._lock = threading.Lock()

    def bounds(self, n: int) -> list[tuple[int, int]]:
        """The (start, stop) of each slice of an ``n``-row batch (as even as can be)."""
        parts = max(1, min(self.threads, n))
        edges = np.linspace(0, n, parts + 1).astype(int)
        return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]

    def run(self, fn: Callable[[Any], np.ndarray], batch: Any) -> np.ndarray:
        """``fn`` over the slices of ``batch`` (anything sliceable by rows), concatenated."""
        return self.map_rows(lambda a, b: fn(batch[a:b]), len(batch))

    def map_rows(self, fn: Callable[[int, int], np.ndarray], n: int) -> np.ndarray:
        """``fn(start, stop)`` for each slice of an ``n``-row batch, at once, concatenated."""
        parts = self.bounds(n)
        if len(parts) == 1:
            return fn(0, n)
        with self._lock:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=self._name)
            pool = self._pool
        return np.concatenate(list(pool.map(lambda ab: fn(*ab), parts)))
