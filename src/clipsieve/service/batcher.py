"""Micro-batching: images from concurrent requests share one model call.

Requests put their decoded images in one queue. A single loop takes the waiting images as one
batch on the model thread, while the event loop and the decode pool go on. Before it starts a
batch that is not full, it waits for more images for at most ``max_wait_ms``, counted from the
oldest image's arrival or from the end of the previous model call, whichever is later. Under
load (the model has just finished a batch) it waits that whole time, gathering the requests
that its answers bring back; when the model was idle it waits only while images of admitted
requests are still being decoded (``incoming``), so a lone request is not delayed.
An image whose request has gone (timed out, client left) is dropped before the model sees it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["MicroBatcher"]

W = TypeVar("W")
R = TypeVar("R")


@dataclass
class _Pending(Generic[W]):
    work: W
    future: asyncio.Future[Any]
    enqueued: float


class MicroBatcher(Generic[W, R]):
    """Collect work items into batches for ``run_batch``.

    Args:
        run_batch: called on the model thread with a list of items; returns one result per
            item, in order.
        max_batch_size: items per call at most.
        max_wait_ms: how long a batch that is not full may wait for more items.
        on_batch: called on the event loop after each batch with its size and seconds.
        incoming: the number of items on their way (being decoded); ``None``: unknown, so a
            batch that is not full always waits up to ``max_wait_ms``.
    """

    def __init__(
        self,
        run_batch: Callable[[list[W]], Sequence[R]],
        *,
        max_batch_size: int,
        max_wait_ms: float,
        on_batch: Callable[[int, float], None] | None = None,
        incoming: Callable[[], int] | None = None,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1000.0
        self.on_batch = on_batch
        self.incoming = incoming
        self._free_at = 0.0  # when the model thread finished its last batch
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._items: deque[_Pending[W]] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    @property
    def depth(self) -> int:
        """Items waiting for the model."""
        return len(self._items)

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop taking batches (waiting items are cancelled) and release the model thread."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while self._items:
            p = self._items.popleft()
            if not p.future.done():
                p.future.cancel()
        self.executor.shutdown(wait=True)

    async def submit(self, works: Sequence[W]) -> list[R]:
        """Queue ``works`` and wait for their results (in order).

        If the caller is cancelled (a timeout), its items still waiting are dropped.
        """
        if self._task is None or self._wake is None:
            raise RuntimeError("the batcher is not running")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures = [loop.create_future() for _ in works]
        self._items.extend(_Pending(w, f, now) for w, f in zip(works, futures))
        self._wake.set()
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    async def _loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            self._drop_cancelled()
            if not self._items:
                self._wake.clear()
                await self._wake.wait()
                continue
            deadline = max(self._items[0].enqueued, self._free_at) + self.max_wait
            # under load (the model just finished a batch) wait the whole time for the requests
            # that the answers just sent will bring; otherwise only for images on their way
            busy = time.monotonic() - self._free_at < self.max_wait
            while len(self._items) < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if not busy and self.incoming is not None and self.incoming() <= 0:
                    break  # idle, and nothing more is on its way: do not add latency
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            self._drop_cancelled()
            batch: list[_Pending[W]] = []
            while self._items and len(batch) < self.max_batch_size:
                p = self._items.popleft()
                if not p.future.done():
                    batch.append(p)
            if not batch:
                continue
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self.executor, self.run_batch, [p.work for p in batch]
                )
            except Exception as exc:  # the model failed: every request of the batch fails
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            finally:
                self._free_at = time.monotonic()
                self.batches += 1
                self.items += len(batch)
                if self.on_batch is not None:
                    self.on_batch(len(batch), time.perf_counter() - t0)
            for p, r in zip(batch, results):
                if not p.future.done():
                    p.future.set_result(r)

    def _drop_cancelled(self) -> None:
        if any(p.future.done() for p in self._items):
            self._items = deque(p for p in self._items if not p.future.done())
