"""Load: 500 requests, valid and invalid mixed, 32 at a time, in-process.

Nothing is lost: every valid request gets its own image's result, every invalid one its 4xx,
none gets a 5xx, and the process's memory stays bounded.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path
from typing import Any

import pytest
from service_support import config, jpeg_bytes, png_bytes, rss_mb, serving

pytest.importorskip("fastapi")

from clipsieve.service.app import create_app  # noqa: E402

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

N_REQUESTS = 500
CONCURRENCY = 32
LIMIT = 300_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _cases() -> list[tuple[str, dict[str, Any], int, str | None]]:
    """(kind, request kwargs, expected status, sha256 of the image or None)."""
    rng = random.Random(12)
    names = ["astronaut", "coffee", "chelsea", "rocket"]
    images = [jpeg_bytes(n, (rng.randint(48, 160), rng.randint(48, 160)), quality=rng.randint(60, 95))
              for n in names for _ in range(3)] + [png_bytes(n) for n in names]
    big = jpeg_bytes("astronaut") + b"\x00" * LIMIT
    cut = jpeg_bytes("coffee")
    cut = cut[: len(cut) // 3]
    cases: list[tuple[str, dict[str, Any], int, str | None]] = []
    for i in range(N_REQUESTS):
        kind = rng.choices(
            ["raw", "multi", "labels", "text", "truncated", "big", "policy", "empty", "method",
             "badlabels"],
            weights=[30, 10, 10, 8, 8, 6, 6, 5, 5, 5])[0]
        img = rng.choice(images)
        sha = hashlib.sha256(img).hexdigest()
        if kind == "raw":
            cases.append((kind, {"url": f"/v1/images?name=r{i}", "content": img}, 200, sha))
        elif kind == "multi":
            cases.append((kind, {"url": "/v1/images",
                                 "files": [("f", (f"m{i}.jpg", img))]}, 200, sha))
        elif kind == "labels":
            cases.append((kind, {"url": "/v1/classify?labels=cat,dog,car", "content": img},
                          200, sha))
        elif kind == "text":
            cases.append((kind, {"url": "/v1/images", "content": b"not an image " * 20}, 415,
                          None))
        elif kind == "truncated":
            cases.append((kind, {"url": "/v1/images", "content": cut}, 422, None))
        elif kind == "big":
            cases.append((kind, {"url": "/v1/images", "content": big}, 413, None))
        elif kind == "policy":
            cases.append((kind, {"url": "/v1/images?policy=nope", "content": img}, 422, None))
        elif kind == "empty":
            cases.append((kind, {"url": "/v1/images", "content": b""}, 400, None))
        elif kind == "method":
            cases.append((kind, {"url": "/v1/images", "method": "GET"}, 405, None))
        else:
            cases.append((kind, {"url": "/v1/classify?labels=solo", "content": img}, 422, None))
    return cases


async def test_500_mixed_requests_lose_nothing(tiny_clip: Path) -> None:
    app = create_app(config(tiny_clip, max_upload_bytes=LIMIT, queue_size=64,
                            max_batch_size=16, max_wait_ms=5))
    cases = _cases()
    statuses: list[int] = []
    peak = {"in_flight": 0}
    async with serving(app) as client:
        svc = app.state.service

        async def one(case: tuple[str, dict[str, Any], int, str | None]) -> None:
            kind, kw, want, sha = case
            kw = dict(kw)
            method = kw.pop("method", "POST")
            async with sem:
                resp = await client.request(method, kw.pop("url"), **kw)
                peak["in_flight"] = max(peak["in_flight"], svc.in_flight)
            statuses.append(resp.status_code)
            assert resp.status_code == want, f"{kind}: {resp.status_code} {resp.text[:300]}"
            if want == 200:
                (item,) = resp.json()["results"]
                assert item["status"] == "ok" and item["sha256"] == sha
                if kind == "labels":
                    assert set(item["labels"]) == {"cat", "dog", "car"}
                else:
                    assert item["moderation"]["decision"] in ("allow", "review", "block")
                    assert 0 <= item["quality"]["score"] <= 10
            else:
                body = resp.json()
                assert set(body) == {"error"} and body["error"]["code"]

        sem = asyncio.Semaphore(CONCURRENCY)
        warm, rest = cases[:100], cases[100:]
        await asyncio.gather(*(one(c) for c in warm))
        before = rss_mb()
        await asyncio.gather(*(one(c) for c in rest))
        after = rss_mb()
        assert svc.batcher.depth == 0 and svc.in_flight == 0
        batches, items = svc.batcher.batches, svc.batcher.items
    assert len(statuses) == N_REQUESTS
    assert not [s for s in statuses if s >= 500]
    assert sum(s == 200 for s in statuses) > 200 and sum(400 <= s < 500 for s in statuses) > 100
    assert peak["in_flight"] <= CONCURRENCY
    assert items / batches > 1.5  # requests shared model calls
    if before is not None and after is not None:
        # 400 requests of up to 300 kB each: growth must stay far below what keeping them would
        # cost (120 MB of bodies plus their decoded pixels)
        assert after - before < 60, f"RSS grew from {before:.0f} MB to {after:.0f} MB"
