"""The micro-batcher alone, with a fake model."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from clipsieve.service.batcher import MicroBatcher

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Model:
    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[int]] = []
        self.delay = delay
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> list[int]:
        self.threads.add(threading.current_thread().name)
        self.calls.append(list(items))
        if self.delay:
            time.sleep(self.delay)
        if -1 in items:
            raise RuntimeError("model failed")
        return [x * 10 for x in items]


async def test_concurrent_submits_share_calls_in_order() -> None:
    model = Model(delay=0.05)
    b = MicroBatcher(model, max_batch_size=4, max_wait_ms=200)
    await b.start()
    try:
        got = await asyncio.gather(*(b.submit([i, i + 100]) for i in range(6)))
    finally:
        await b.stop()
    assert got == [[i * 10, (i + 100) * 10] for i in range(6)]
    assert all(len(c) <= 4 for c in model.calls)
    assert sum(map(len, model.calls)) == 12 and len(model.calls) == 3
    assert all(t.startswith("model") for t in model.threads)


async def test_no_wait_when_nothing_is_on_its_way() -> None:
    model = Model()
    b = MicroBatcher(model, max_batch_size=32, max_wait_ms=5000, incoming=lambda: 0)
    await b.start()
    try:
        t = time.monotonic()
        assert await b.submit([1]) == [10]
        assert time.monotonic() - t < 2.0
    finally:
        await b.stop()


async def test_waits_for_images_on_their_way() -> None:
    model = Model()
    coming = {"n": 1}
    b = MicroBatcher(model, max_batch_size=8, max_wait_ms=5000, incoming=lambda: coming["n"])
    await b.start()
    try:
        first = asyncio.create_task(b.submit([1]))
        await asyncio.sleep(0.2)
        assert model.calls == []  # held: one more image is being decoded
        coming["n"] = 0
        second = await b.submit([2])
        assert await first == [10] and second == [20]
        assert model.calls == [[1, 2]]
    finally:
        await b.stop()


async def test_timed_out_items_never_reach_the_model() -> None:
    gate = threading.Event()
    seen: list[list[int]] = []

    def model(items: list[int]) -> list[int]:
        gate.wait(10)
        seen.append(list(items))
        return items

    b = MicroBatcher(model, max_batch_size=8, max_wait_ms=0)
    await b.start()
    try:
        busy = asyncio.create_task(b.submit([1]))
        await asyncio.sleep(0.1)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(b.submit([2, 3]), 0.2)
        later = asyncio.create_task(b.submit([4]))
        await asyncio.sleep(0.05)
        gate.set()
        assert await busy == [1] and await later == [4]
    finally:
        await b.stop()
    assert seen == [[1], [4]]


async def test_a_failing_batch_fails_its_requests_only() -> None:
    model = Model()
    b = MicroBatcher(model, max_batch_size=8, max_wait_ms=0)
    await b.start()
    try:
        with pytest.raises(RuntimeError, match="model failed"):
            await b.submit([-1])
        assert await b.submit([3]) == [30]
    finally:
        await b.stop()


async def test_under_load_a_batch_waits_for_the_requests_answers_bring_back() -> None:
    model = Model()
    b = MicroBatcher(model, max_batch_size=8, max_wait_ms=400, incoming=lambda: 0)
    await b.start()
    try:
        assert await b.submit([1]) == [10]  # idle model: runs at once
        # the model has just finished: the next batch waits for the requests that follow
        first = asyncio.create_task(b.submit([2]))
        await asyncio.sleep(0.1)
        assert await b.submit([3]) == [30]
        assert await first == [20]
    finally:
        await b.stop()
    assert model.calls == [[1], [2, 3]]
