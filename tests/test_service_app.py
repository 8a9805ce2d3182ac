"""The HTTP API in-process (httpx's ASGI transport) with the tiny random CLIP."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import logging
import math
import threading
from pathlib import Path
from typing import Any

import pytest
from service_support import (
    config,
    flag_all_policy,
    jpeg_bytes,
    mp4_bytes,
    png_bytes,
    serving,
)

pytest.importorskip("fastapi")

from clipsieve.service.app import create_app  # noqa: E402
from clipsieve.service.engine import Engine  # noqa: E402

pytestmark = pytest.mark.anyio

KEY = "k3y-0123456789abcdef-SECRET"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("policies")
    flag_all_policy(folder, "strict")
    return folder


@pytest.fixture(scope="module")
def engine(tiny_clip: Path, policy_dir: Path) -> Engine:
    """One loaded engine (default + strict policies) shared by the apps of this module."""
    eng = Engine(config(tiny_clip, policies=("default", str(policy_dir / "strict.toml"))))
    eng.load()
    return eng


def make_app(tiny_clip: Path, engine: Any, **kw: Any) -> Any:
    kw.setdefault("policies", ("default", "strict"))
    return create_app(config(tiny_clip, **kw), engine=engine)


def close(a: Any, b: Any, path: str = "") -> None:
    """Recursive equality, floats to 1e-5."""
    if isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None, path
        assert math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5), f"{path}: {a} != {b}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for k in a:
            close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def assert_error(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


# -- results -----------------------------------------------------------------------------------
async def test_images_multipart_gives_the_cli_result_objects(
    tiny_clip: Path, engine: Engine, photos: dict[str, Path], tmp_path: Path
) -> None:
    from test_cli_scan import run_cli  # the CLI as users run it

    paths = [photos["astronaut"], photos["coffee"]]
    done = run_cli("scan", *map(str, paths), "--model", str(tiny_clip), "--no-store",
                   "--device", "cpu", "--precision", "float32", "-q")
    assert done.returncode in (0, 5), done.stderr
    cli = [json.loads(line) for line in done.stdout.splitlines()]
    app = make_app(tiny_clip, engine)
    async with serving(app) as client:
        files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]
        resp = await client.post("/v1/images", files=files)
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [r["path"] for r in results] == ["astronaut.jpg", "coffee.jpg"]
    for got, want in zip(results, cli):
        assert list(got) == list(want)  # same fields, same order
        # provenance: the same fields and policies; run ids differ by design (issue #9)
        assert list(got["provenance"]) == list(want["provenance"])
        for field in got["provenance"]:
            got["provenance"][field].pop("run"), want["provenance"][field].pop("run")
        for key in ("path", "timing", "cached"):
            got.pop(key), want.pop(key)
        close(got, want)
    assert results[0]["quality"]["score"] is not None
    assert set(results[0]["moderation"]["thresholds"]) == set(results[0]["moderation"]["categories"])


async def test_raw_body_labels_caption_and_policy(tiny_clip: Path, engine: Engine) -> None:
    app = make_app(tiny_clip, engine)
    async with serving(app) as client:
        resp = await client.post("/v1/images?name=cat.png&labels=cat,dog,car&caption=a%20cat"
                                 "&policy=strict", content=png_bytes(),
                                 headers={"Content-Type": "image/jpeg"})  # a lie: ignored
        assert resp.status_code == 200, resp.text
        (r,) = resp.json()["results"]
        assert r["path"] == "cat.png" and r["width"] == 96 and r["height"] == 64
        assert list(r["labels"]) == ["cat", "dog", "car"]
        assert math.isclose(sum(r["labels"].values()), 1.0, rel_tol=1e-6)
        mod = r["moderation"]
        assert mod["policy"]["name"] == "strict" and mod["decision"] == "block"
        assert mod["caption"]["text"] == "a cat" and mod["caption"]["source"] == "input"
        # the same options as multipart fields
        resp = await client.post("/v1/images", files={"image": ("x", png_bytes())},
                                 data={"labels": "cat,dog", "policy": "default"})
        (r,) = resp.json()["results"]
        assert r["path"] == "x" and list(r["labels"]) == ["cat", "dog"]
        assert r["moderation"]["policy"]["name"] == "default"
        assert "caption" not in r["moderation"] or r["moderation"]["caption"] is None


async def test_classify_gives_labels_only(tiny_clip: Path, engine: Engine) -> None:
    app = make_app(tiny_clip, engine)
    async with serving(app) as client:
        resp = await client.post("/v1/classify", data={"labels": "cat,dog,sports car",
                                                       "template": "a photo of a {}."},
                                 files=[("f", ("a.jpg", jpeg_bytes())),
                                        ("f", ("b.jpg", jpeg_bytes("rocket")))])
        assert resp.status_code == 200, resp.text
        results = resp.json()["results"]
        assert [r["path"] for r in results] == ["a.jpg", "b.jpg"]
        for r in results:
            assert list(r["labels"]) == ["cat", "dog", "sports car"]
            assert "moderation" not in r and "quality" not in r
        # a built-in template set by name, and the missing-labels error
        ok = await client.post("/v1/classify?labels=a,b&template=imagenet7", content=jpeg_bytes())
        assert ok.status_code == 200, ok.text
        assert_error(await client.post("/v1/classify", content=jpeg_bytes()), 422,
                     "invalid_request")
        err = assert_error(await client.post("/v1/classify?labels=a,b&template=nope",
                                             content=jpeg_bytes()), 422)
        assert "nope" in err["message"]


async def test_bad_options_are_422(tiny_clip: Path, engine: Engine) -> None:
    app = make_app(tiny_clip, engine)
    async with serving(app) as client:
        err = assert_error(await client.post("/v1/images?policy=strikt", content=jpeg_bytes()),
                           422, "invalid_request")
        assert "strikt" in err["message"] and "strict" in err["message"]
        assert_error(await client.post("/v1/images?labels=cat", content=jpeg_bytes()), 422)
        assert_error(await client.post("/v1/images?labels=a,,b", content=jpeg_bytes()), 422)


# -- bad bodies --------------------------------------------------------------------------------
async def test_content_is_sniffed_not_trusted(tiny_clip: Path, engine: Engine,
                                              tmp_path: Path) -> None:
    app = make_app(tiny_clip, engine)
    async with serving(app) as client:
        err = assert_error(await client.post(
            "/v1/images", files={"file": ("photo.jpg", b"GIF? no: plain text", "image/jpeg")}),
            415, "unsupported_media_type")
        assert "photo.jpg" in err["message"]
        # a PNG called .jpg with a JPEG content type is fine
        ok = await client.post("/v1/images", files={"file": ("p.jpg", png_bytes(), "image/jpeg")})
        assert ok.status_code == 200
        # a video sent as an image
        err = assert_error(await client.post("/v1/images", content=mp4_bytes(tmp_path)), 415)
        assert "/v1/videos" in err["message"]
        # one bad part fails the request, naming it
        err = assert_error(await client.post("/v1/images", files=[
            ("f", ("good.jpg", jpeg_bytes())), ("f", ("bad.bin", b"\x00" * 100))]), 415)
        assert "bad.bin" in err["message"]


async def test_truncated_and_empty(tiny_clip: Path, engine: Engine) -> None:
    app = make_app(tiny_clip, engine)
    data = jpeg_bytes()
    async with serving(app) as client:
        err = assert_error(await client.post("/v1/images?name=cut.jpg",
                                             content=data[: len(data) // 2]), 422, "truncated")
        assert "cut.jpg" in err["message"]
        assert_error(await client.post("/v1/images", content=b""), 400, "no_image")
        assert_error(await client.post("/v1/images", files={"caption": (None, "only text")}),
                     400, "no_image")
        assert_error(await client.post(
            "/v1/images", content=b"--x\r\nbroken", headers={
                "Content-Type": "multipart/form-data; boundary=zzz"}), 400)


async def test_too_many_pixels_is_413(tiny_clip: Path, policy_dir: Path) -> None:
    app = create_app(config(tiny_clip, max_pixels=10_000))
    async with serving(app) as client:
        assert_error(await client.post("/v1/images", content=jpeg_bytes()), 413, "too_large")


async def test_upload_limit_is_enforced_while_streaming(tiny_clip: Path, engine: Engine) -> None:
    limit = 50_000
    app = make_app(tiny_clip, engine, max_upload_bytes=limit)
    async with serving(app) as client:
        # a declared length over the limit: refused before reading
        resp = await client.post("/v1/images", content=b"\xff\xd8\xff" + b"0" * (limit + 10))
        assert_error(resp, 413, "payload_too_large")
        ok = await client.post("/v1/images", content=jpeg_bytes("coffee", (64, 64)))
        assert ok.status_code == 200
    # no Content-Length: the body is read only until it passes the limit
    chunk = b"\xff\xd8\xff" + b"1" * 8189
    sent = {"chunks": 0}
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        sent["chunks"] += 1
        if sent["chunks"] > 10_000:  # 80 MB: never reached
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/images", "raw_path": b"/v1/images",
             "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"image/jpeg")],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    app = make_app(tiny_clip, engine, max_upload_bytes=limit)
    async with serving(app):
        await app(scope, receive, send)
    assert messages[0]["status"] == 413
    assert sent["chunks"] * len(chunk) <= limit + 2 * len(chunk)
    assert json.loads(messages[1]["body"])["error"]["code"] == "payload_too_large"


async def test_too_many_images(tiny_clip: Path, engine: Engine) -> None:
    app = make_app(tiny_clip, engine, max_images=2)
    async with serving(app) as client:
        files = [("f", (f"{i}.jpg", jpeg_bytes("coffee", (40, 40)))) for i in range(3)]
        assert_error(await client.post("/v1/images", files=files), 413, "too_many_images")


# -- FastAPI's own errors in the same shape ----------------------------------------------------
async def test_framework_errors_have_the_one_shape(tiny_clip: Path, engine: Engine) -> None:
    app = make_app(tiny_clip, engine)
    async with serving(app) as client:
        assert_error(await client.get("/nope"), 404, "not_found")
        resp = await client.put("/v1/images")
        assert_error(resp, 405, "method_not_allowed")
        assert "POST" in resp.headers["allow"]
        err = assert_error(await client.post("/v1/videos?fps=-1", content=b""), 422,
                           "invalid_request")
        assert "fps" in err["message"]
        assert_error(await client.get("/v1/jobs/nope"), 404, "not_found")
        assert_error(await client.get("/static/../pyproject.toml"), 404)
        assert_error(await client.get("/static/evil.js"), 404, "not_found")


# -- keys ----------------------------------------------------------------------------------------
async def test_api_keys(tiny_clip: Path, engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app(tiny_clip, engine, api_keys=("another-key-0123456789", KEY))
    async with serving(app) as client:
        body = jpeg_bytes("coffee", (64, 64))
        assert_error(await client.post("/v1/images", content=body), 401, "unauthorized")
        wrong = await client.post("/v1/images", content=body,
                                  headers={"Authorization": "Bearer " + KEY[:-1] + "x"})
        assert_error(wrong, 401)
        assert_error(await client.get("/metrics"), 401)
        assert_error(await client.get("/v1/info", headers={"X-API-Key": ""}), 401)
        ok = await client.post("/v1/images", content=body,
                               headers={"Authorization": "Bearer " + KEY})
        assert ok.status_code == 200
        ok = await client.get("/v1/info", headers={"X-API-Key": KEY})
        assert ok.status_code == 200 and ok.json()["auth"] is True
        assert KEY not in ok.text
        for path in ("/healthz", "/readyz", "/", "/static/app.js", "/docs", "/openapi.json"):
            assert (await client.get(path)).status_code == 200, path
    assert KEY not in caplog.text and KEY[:16] not in caplog.text


def test_keys_compare_in_constant_time_per_key(tiny_clip: Path, engine: Engine) -> None:
    app = make_app(tiny_clip, engine, api_keys=(KEY,))
    svc = app.state.service
    assert svc.key_ok(KEY) and not svc.key_ok(KEY + "x") and not svc.key_ok(None)
    assert not svc.key_ok("")
    import inspect

    assert "compare_digest" in inspect.getsource(type(svc).key_ok)


def test_key_file(tmp_path: Path) -> None:
    from clipsieve.errors import ConfigError
    from clipsieve.service import load_api_keys

    f = tmp_path / "keys"
    f.write_text(f"# ops\n\n{KEY}\n  another-key-0123456789  \n{KEY}\n")
    assert load_api_keys(f) == (KEY, "another-key-0123456789")
    f.write_text("short\n")
    with pytest.raises(ConfigError) as err:
        load_api_keys(f)
    assert "short" not in str(err.value) and ":1:" in str(err.value)
    f.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no API key"):
        load_api_keys(f)


# -- load shedding, time limits, readiness ------------------------------------------------------
class Gated:
    """An engine whose model calls wait for ``gate`` (to hold requests in flight)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.gate = threading.Event()
        self.batches: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def run_batch(self, works: list[Any]) -> list[Any]:
        self.gate.wait(30)
        self.batches.append(len(works))
        return self._engine.run_batch(works)


async def test_full_queue_is_503_with_retry_after(tiny_clip: Path, engine: Engine) -> None:
    gated = Gated(engine)
    app = create_app(config(tiny_clip, queue_size=2, max_wait_ms=0), engine=gated)
    body = jpeg_bytes("coffee", (64, 64))
    async with serving(app) as client:
        held = [asyncio.create_task(client.post("/v1/images", content=body)) for _ in range(2)]
        while app.state.service.in_flight < 2:
            await asyncio.sleep(0.01)
        resp = await client.post("/v1/images", content=body)
        assert_error(resp, 503, "overloaded")
        assert int(resp.headers["retry-after"]) >= 1
        gated.gate.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        assert (await client.post("/v1/images", content=body)).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert 'clipsieve_rejected_requests_total{reason="overloaded"} 1.0' in metrics


async def test_time_limit_is_504_and_the_server_goes_on(tiny_clip: Path, engine: Engine) -> None:
    gated = Gated(engine)
    app = create_app(config(tiny_clip, request_timeout_s=0.5, max_wait_ms=0), engine=gated)
    body = jpeg_bytes("coffee", (64, 64))
    async with serving(app) as client:
        first = asyncio.create_task(client.post("/v1/images", content=body))  # holds the model
        await asyncio.sleep(0.1)
        late = await client.post("/v1/images?name=late", content=body)  # waits in the queue
        assert_error(late, 504, "timeout")
        assert_error(await first, 504, "timeout")
        gated.gate.set()
        ok = await client.post("/v1/images", content=body)
        assert ok.status_code == 200
        # the request that timed out while queued never reached the model
        assert sum(gated.batches) == 2


async def test_readiness_and_health(tiny_clip: Path, engine: Engine) -> None:
    class Slow(Gated):
        def load(self) -> None:
            self.gate.wait(30)

        @property
        def ready(self) -> bool:
            return self.gate.is_set()

    slow = Slow(engine)
    app = create_app(config(tiny_clip), engine=slow)
    async with serving(app, ready=False) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        resp = await client.get("/readyz")
        assert_error(resp, 503, "not_ready")
        assert_error(await client.post("/v1/images", content=jpeg_bytes()), 503, "not_ready")
        slow.gate.set()
        resp = await client.get("/readyz")
        assert resp.status_code == 200 and resp.json()["model"] == engine.model_id


async def test_model_that_cannot_load(tmp_path: Path, tiny_clip: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_clip, broken)
    for f in broken.glob("*.safetensors"):
        f.unlink()
    for f in broken.glob("*.bin"):
        f.unlink()
    app = create_app(config(broken))
    async with serving(app, ready=False) as client:
        for _ in range(200):
            if app.state.service.load_error:
                break
            await asyncio.sleep(0.05)
        err = assert_error(await client.get("/readyz"), 503, "not_ready")
        assert "could not be loaded" in err["message"]


# -- batching and metrics ---------------------------------------------------------------------
async def test_concurrent_requests_share_model_calls(tiny_clip: Path, engine: Engine) -> None:
    gated = Gated(engine)
    gated.gate.set()
    app = create_app(config(tiny_clip, max_wait_ms=300, max_batch_size=8), engine=gated)
    names = ["astronaut", "coffee", "chelsea", "rocket"]
    async with serving(app) as client:
        alone = {}
        for n in names:
            r = await client.post(f"/v1/images?name={n}", content=jpeg_bytes(n, (80, 60)))
            alone[n] = r.json()["results"][0]
        gated.batches.clear()
        resps = await asyncio.gather(*[
            client.post(f"/v1/images?name={names[i % 4]}", content=jpeg_bytes(names[i % 4], (80, 60)))
            for i in range(16)])
        assert all(r.status_code == 200 for r in resps)
        assert sum(gated.batches) == 16 and len(gated.batches) <= 4
        assert max(gated.batches) == 8
        for i, r in enumerate(resps):  # each got its own image's result
            got = r.json()["results"][0]
            want = alone[names[i % 4]]
            assert got["path"] == names[i % 4] and got["sha256"] == want["sha256"]
            close(got["quality"], want["quality"])
        metrics = (await client.get("/metrics")).text
    assert "clipsieve_batch_size_count 6.0" in metrics  # 4 alone, then 2 batches of 8
    assert "clipsieve_batch_size_bucket{le=\"8.0\"} 6.0" in metrics
    assert 'clipsieve_http_requests_total{method="POST",route="/v1/images",status="200"} 20.0' \
        in metrics
    assert 'clipsieve_http_request_duration_seconds_count{route="/v1/images"} 20.0' in metrics
    assert "clipsieve_moderation_decisions_total{" in metrics
    assert 'clipsieve_category_decisions_total{category="violence"' in metrics
    assert "clipsieve_queue_depth 0.0" in metrics


# -- URL fetching, CORS, docs, page ---------------------------------------------------------------
@contextlib.contextmanager
def http_files(files: dict[str, bytes]) -> Any:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/a.jpg")
                self.end_headers()
                return
            data = files.get(self.path.lstrip("/"))
            self.send_response(200 if data is not None else 404)
            self.send_header("Content-Length", str(len(data or b"")))
            self.end_headers()
            self.wfile.write(data or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def test_url_fetching_is_off_by_default_and_allow_listed(tiny_clip: Path,
                                                               engine: Engine) -> None:
    with http_files({"a.jpg": jpeg_bytes("rocket", (64, 64)), "big.jpg": b"\xff" * 60_000}) as base:
        app = make_app(tiny_clip, engine)
        async with serving(app) as client:
            assert_error(await client.post(f"/v1/images?url={base}/a.jpg"), 403,
                         "url_fetch_disabled")
        app = make_app(tiny_clip, engine, fetch_allow=("127.0.0.1",), max_upload_bytes=50_000)
        async with serving(app) as client:
            resp = await client.post(f"/v1/images?url={base}/a.jpg")
            assert resp.status_code == 200, resp.text
            assert resp.json()["results"][0]["path"] == "a.jpg"
            assert_error(await client.post(f"/v1/images?url={base}/big.jpg"), 413)
            assert_error(await client.post(f"/v1/images?url={base}/missing.jpg"), 502,
                         "fetch_failed")
            assert_error(await client.post(f"/v1/images?url={base}/redirect"), 502)
            port = base.rsplit(":", 1)[1]
            assert_error(await client.post(f"/v1/images?url=http://localhost:{port}/a.jpg"),
                         403, "url_not_allowed")
            assert_error(await client.post("/v1/images?url=file:///etc/passwd"), 422)
            assert_error(await client.post(f"/v1/images?url={base}/a.jpg",
                                           content=jpeg_bytes("coffee", (32, 32))), 422)


def test_host_allow_list() -> None:
    from clipsieve.service.fetch import host_allowed

    allow = ("images.example.com", "*.cdn.example.org")
    assert host_allowed("images.example.com", allow)
    assert host_allowed("IMAGES.example.com.", allow)
    assert host_allowed("a.cdn.example.org", allow)
    assert not host_allowed("cdn.example.org", allow)
    assert not host_allowed("evilcdn.example.org", allow)
    assert not host_allowed("images.example.com.evil.net", allow)


async def test_cors_is_off_by_default(tiny_clip: Path, engine: Engine) -> None:
    origin = {"Origin": "https://app.example.com"}
    app = make_app(tiny_clip, engine)
    async with serving(app) as client:
        resp = await client.get("/healthz", headers=origin)
        assert "access-control-allow-origin" not in resp.headers
    app = make_app(tiny_clip, engine, cors_origins=("https://app.example.com",))
    async with serving(app) as client:
        resp = await client.get("/healthz", headers=origin)
        assert resp.headers["access-control-allow-origin"] == "https://app.example.com"
        pre = await client.options("/v1/images", headers={
            **origin, "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 200
        other = await client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_docs_and_page(tiny_clip: Path, engine: Engine) -> None:
    app = make_app(tiny_clip, engine)
    async with serving(app) as client:
        spec = (await client.get("/openapi.json")).json()
        for path in ("/v1/images", "/v1/classify", "/v1/videos", "/v1/jobs/{job_id}",
                     "/healthz", "/readyz", "/metrics"):
            assert path in spec["paths"], path
        body = spec["paths"]["/v1/images"]["post"]["requestBody"]["content"]
        assert "multipart/form-data" in body
        assert (await client.get("/docs")).status_code == 200
        page = await client.get("/")
        assert page.headers["content-type"].startswith("text/html")
        assert "/static/app.js" in page.text
        info = (await client.get("/v1/info")).json()
        assert [p["name"] for p in info["policies"]] == ["default", "strict"]
        assert info["limits"]["max_upload_bytes"] == 20_000_000


# -- video jobs -------------------------------------------------------------------------------
async def test_videos_without_a_runner_are_501(tiny_clip: Path, engine: Engine) -> None:
    app = create_app(config(tiny_clip), engine=engine, runners={})
    async with serving(app) as client:
        assert_error(await client.post("/v1/videos", content=b"x"), 501, "not_implemented")


def _fake_video_runner(seen: list[dict[str, Any]], hold: threading.Event | None = None) -> Any:
    def run(ctx: Any) -> dict[str, Any]:
        data = Path(ctx.path).read_bytes()
        seen.append({"size": len(data), "options": ctx.options})
        for i in range(100):
            ctx.progress(i / 100)
            if hold is not None:
                hold.wait(0.05)
        return {"kind": "video", "bytes": len(data), "verdict": {"decision": "allow"}}

    return run


async def test_video_job_lifecycle(tiny_clip: Path, engine: Engine, tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    store = tmp_path / "store.sqlite"
    video = mp4_bytes(tmp_path)
    app = create_app(config(tiny_clip, store=str(store)), engine=engine,
                     runners={"video": _fake_video_runner(seen)})
    async with serving(app) as client:
        assert_error(await client.post("/v1/videos", content=jpeg_bytes()), 415)
        resp = await client.post("/v1/videos?fps=2", files={"file": ("clip.mp4", video)},
                                 data={"policy": "strict"})
        assert resp.status_code == 202, resp.text
        job = resp.json()
        assert resp.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["status"] in ("queued", "running", "done") and job["input"]["name"] == "clip.mp4"
        for _ in range(500):
            job = (await client.get(f"/v1/jobs/{job['id']}")).json()
            if job["status"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.02)
        assert job["status"] == "done" and job["progress"] == 1.0
        assert job["result"] == {"kind": "video", "bytes": len(video),
                                 "verdict": {"decision": "allow"}}
        assert seen == [{"size": len(video), "options": {"policy": "strict", "fps": 2.0}}]
        assert_error(await client.delete(f"/v1/jobs/{job['id']}"), 409, "job_finished")
        spool = app.state.service.jobs.spool
        assert list(spool.glob("*.upload")) == []  # the input is gone once the job ended
    # a finished job survives a restart
    app2 = create_app(config(tiny_clip, store=str(store)), engine=engine, runners={})
    async with serving(app2) as client:
        again = (await client.get(f"/v1/jobs/{job['id']}")).json()
        assert again == job


async def test_cancel_and_interrupted_jobs(tiny_clip: Path, engine: Engine,
                                           tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    hold = threading.Event()
    video = mp4_bytes(tmp_path)
    app = create_app(config(tiny_clip, store=str(store)), engine=engine,
                     runners={"video": _fake_video_runner([], hold)})
    async with serving(app) as client:
        first = (await client.post("/v1/videos", content=video)).json()
        queued = (await client.post("/v1/videos", content=video)).json()
        for _ in range(200):
            if (await client.get(f"/v1/jobs/{first['id']}")).json()["status"] == "running":
                break
            await asyncio.sleep(0.02)
        cancelled = await client.delete(f"/v1/jobs/{queued['id']}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        resp = await client.delete(f"/v1/jobs/{first['id']}")
        assert resp.json()["status"] == "cancelled"
        for _ in range(200):
            await asyncio.sleep(0.02)
            if not app.state.service.jobs.store.execute(
                    "SELECT 1 FROM jobs WHERE status='running'"):
                break
        job = (await client.get(f"/v1/jobs/{first['id']}")).json()
        assert job["status"] == "cancelled" and job["error"]["code"] == "cancelled"
        assert_error(await client.delete("/v1/jobs/unknown"), 404)
        # a job left running by a server that died
        app.state.service.store.execute(
            "INSERT INTO jobs(id, kind, status, progress, created_at, started_at) "
            "VALUES ('crashed', 'video', 'running', 0.4, 1, 1)")
        # and one running while this server stops gracefully
        running = (await client.post("/v1/videos", content=video)).json()
        for _ in range(200):
            if (await client.get(f"/v1/jobs/{running['id']}")).json()["status"] == "running":
                break
            await asyncio.sleep(0.02)
    app2 = create_app(config(tiny_clip, store=str(store)), engine=engine, runners={})
    async with serving(app2) as client:
        job = (await client.get("/v1/jobs/crashed")).json()
        assert job["status"] == "failed" and job["error"]["code"] == "interrupted"
        assert job["progress"] == 0.4
        job = (await client.get(f"/v1/jobs/{running['id']}")).json()
        assert job["status"] == "failed" and job["error"]["code"] == "interrupted"


def test_service_migration_is_recorded(tmp_path: Path) -> None:
    from clipsieve.store import Store

    with Store(tmp_path / "s.sqlite") as s:
        assert (7, "service jobs") in s.migrations()



@pytest.mark.anyio
async def test_threshold_overrides_apply_to_the_loaded_policies(tiny_clip: Path) -> None:
    from clipsieve.errors import PolicyError

    eng = Engine(config(tiny_clip, thresholds=("violence.block=0.999", "violence.review=0.998")))
    eng.load()
    app = make_app(tiny_clip, eng, policies=("default",))
    async with serving(app) as client:
        resp = await client.post("/v1/images?name=a.png", content=png_bytes())
        assert resp.status_code == 200, resp.text
        (r,) = resp.json()["results"]
        pol = r["moderation"]["policy"]
        assert pol["overrides"] == {"violence.block": 0.999, "violence.review": 0.998}
    with pytest.raises(PolicyError):  # validated like the policy file
        Engine(config(tiny_clip, thresholds=("violense.block=0.5",)))


# -- threads (the throughput fix of issue #12) ----------------------------------------------------
def _python(code: str, **env: str) -> str:
    import os
    import subprocess
    import sys

    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**environ, **env}, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]


def test_serve_lets_idle_openmp_threads_sleep_unless_told_otherwise() -> None:
    check = ("from clipsieve.service.config import passive_openmp; import os; "
             "ok = passive_openmp(); import torch; print(f'{ok}:{os.environ[\"OMP_WAIT_POLICY\"]}')")
    assert _python(check) == "True:PASSIVE"
    assert _python(check, OMP_WAIT_POLICY="active") == "False:active"
    late = ("import torch; from clipsieve.service.config import passive_openmp; "
            "print(passive_openmp())")  # too late once torch (and OpenMP) are loaded
    assert _python(late) == "False"


def test_torch_threads_are_set_on_the_model_thread(tiny_clip: Path) -> None:
    code = f"""
from concurrent.futures import ThreadPoolExecutor
from clipsieve.service.engine import Engine
from clipsieve.service.config import ServiceConfig
eng = Engine(ServiceConfig(model={str(tiny_clip)!r}, store=None, torch_threads=1,
                           device="cpu", precision="float32"))
def on_model_thread():
    import torch
    eng.load()
    return torch.get_num_threads()
with ThreadPoolExecutor(1) as model_thread:
    print(model_thread.submit(on_model_thread).result())
"""
    assert _python(code) == "1"
    from clipsieve.errors import ConfigError
    from clipsieve.service.config import ServiceConfig

    with pytest.raises(ConfigError, match="torch_threads"):
        ServiceConfig(torch_threads=0)
