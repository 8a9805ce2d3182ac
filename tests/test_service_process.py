"""A real ``clipsieve serve`` process on 127.0.0.1: requests over TCP, then SIGTERM while
requests are in flight. They finish, and the process exits 0."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from service_support import jpeg_bytes, server_process

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.slow


def test_serve_answers_and_stops_gracefully_on_sigterm(tiny_clip: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    key = "process-test-key-0123456789"
    keys.write_text(key + "\n")
    args = ["--model", str(tiny_clip), "--store", str(tmp_path / "store.sqlite"),
            "--device", "cpu", "--precision", "float32", "--workers", "2",
            "--max-wait-ms", "1500", "--max-batch-size", "64", "--api-key-file", str(keys),
            "--log-level", "info"]
    auth = {"Authorization": f"Bearer {key}"}
    with server_process(args) as server:
        url = server.url
        assert httpx.get(url + "/healthz").json() == {"status": "ok"}
        assert httpx.post(url + "/v1/images", content=jpeg_bytes()).status_code == 401
        one = httpx.post(url + "/v1/images?name=a.jpg", content=jpeg_bytes(), headers=auth,
                         timeout=30)
        assert one.status_code == 200 and one.json()["results"][0]["path"] == "a.jpg"

        # eight requests that wait in the batcher for 1.5 s; SIGTERM arrives meanwhile
        results: list[httpx.Response | Exception] = []
        lock = threading.Lock()

        def send(i: int) -> None:
            try:
                r = httpx.post(f"{url}/v1/images?name=r{i}.jpg",
                               content=jpeg_bytes(("coffee", "rocket")[i % 2], (120, 90)),
                               headers=auth, timeout=60)
            except Exception as exc:  # recorded, asserted below
                r = exc  # type: ignore[assignment]
            with lock:
                results.append(r)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # all eight admitted and waiting
            metrics = httpx.get(url + "/metrics", headers=auth).text
            if "clipsieve_requests_in_flight 8.0" in metrics:
                break
            time.sleep(0.05)
        else:
            pytest.fail("requests were not in flight:\n" + metrics)
        code = server.terminate()
        for t in threads:
            t.join(30)
        out = "".join(server.lines)
        assert code == 0, out
        assert len(results) == 8
        for r in results:
            assert isinstance(r, httpx.Response), f"{r!r}\n{out}"
            assert r.status_code == 200, r.text
            (item,) = r.json()["results"]
            assert item["status"] == "ok" and item["quality"]["score"] is not None
        assert key not in out
        assert "Shutting down" in out
