"""Video jobs end to end: a real MP4 through the library's video driver, in-process."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
from conftest import photo_array
from PIL import Image
from service_support import config, flag_all_policy, mp4_bytes, serving

pytest.importorskip("fastapi")
pytest.importorskip("av")

from clipsieve.service.app import create_app  # noqa: E402

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _wait(client: Any, job_id: str) -> dict[str, Any]:
    for _ in range(3000):
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] not in ("queued", "running"):
            return job
        await asyncio.sleep(0.02)
    raise AssertionError("job did not end")


def _gif(frames: int) -> bytes:
    ims = [Image.fromarray(photo_array(n)).resize((64, 48))
           for n in ("coffee", "rocket", "chelsea")[:frames]]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=frames > 1, append_images=ims[1:], duration=500,
                loop=0)
    return buf.getvalue()


async def test_a_real_video_job(tiny_clip: Path, tmp_path: Path) -> None:
    strict = flag_all_policy(tmp_path, "strict")
    store = tmp_path / "store.sqlite"
    app = create_app(config(tiny_clip, store=str(store), policies=("default", str(strict))))
    video = mp4_bytes(tmp_path, seconds=4, fps=5)
    async with serving(app) as client:
        resp = await client.post("/v1/videos?fps=2&policy=strict",
                                 files={"file": ("cuts.mp4", video, "application/octet-stream")})
        assert resp.status_code == 202, resp.text
        job = await _wait(client, resp.json()["id"])
        assert job["status"] == "done", job
        assert job["progress"] == 1.0 and job["error"] is None
        r = job["result"]
        assert r["kind"] == "video" and r["path"] == "cuts.mp4" and r["status"] == "ok"
        assert r["width"] == 96 and r["height"] == 64 and r["cached"] is False
        times = [f["timestamp_ms"] for f in r["frames"]]
        assert len(times) == 8 and times == sorted(times) and times[0] == 0  # 2 per second
        assert r["verdict"]["decision"] == "block"
        assert r["segments"] and all(s["decision"] == "block" for s in r["segments"])
        assert 0 <= r["quality"]["mean"] <= 10
        # the same video again under another policy: frames come from the store
        again = await client.post("/v1/videos?fps=2", content=video)
        job2 = await _wait(client, again.json()["id"])
        assert job2["status"] == "done", job2
        assert job2["result"]["cached"] is True
        assert job2["result"]["verdict"]["policy"]["name"] == "default"
        assert [f["timestamp_ms"] for f in job2["result"]["frames"]] == \
            [f["timestamp_ms"] for f in r["frames"]]
        # the spooled uploads are not left as stored results
        paths = [row[0] for row in app.state.service.store.execute("SELECT path FROM results")]
        assert not [p for p in paths if "service-spool" in p]
        # options are checked before a job starts
        bad = await client.post("/v1/videos?policy=nope", content=video)
        assert bad.status_code == 422 and "nope" in bad.json()["error"]["message"]
        bad = await client.post("/v1/videos?keyframes=true&scenes=true", content=video)
        assert bad.status_code == 422
        bad = await client.post("/v1/videos", files={"file": ("v.mp4", video)},
                                data={"max_frames": "many"})
        assert bad.status_code == 422 and "max_frames" in bad.json()["error"]["message"]


async def test_broken_video_fails_the_job_with_its_code(tiny_clip: Path, tmp_path: Path) -> None:
    app = create_app(config(tiny_clip, store=str(tmp_path / "s.sqlite")))
    video = mp4_bytes(tmp_path, seconds=2, fps=5)
    async with serving(app) as client:
        resp = await client.post("/v1/videos?name=cut.mp4", content=video[: len(video) // 3])
        assert resp.status_code == 202
        job = await _wait(client, resp.json()["id"])
        assert job["status"] in ("failed", "done"), job
        if job["status"] == "failed":
            assert job["error"]["code"] and "cut.mp4" in job["error"]["message"]
        else:  # what could be decoded, marked partial
            assert job["result"]["partial"] is True


async def test_animated_gif_is_a_video_and_a_still_one_is_not(tiny_clip: Path,
                                                              tmp_path: Path) -> None:
    app = create_app(config(tiny_clip, store=str(tmp_path / "s.sqlite")))
    async with serving(app) as client:
        resp = await client.post("/v1/videos?name=anim.gif", content=_gif(3))
        assert resp.status_code == 202, resp.text
        job = await _wait(client, resp.json()["id"])
        assert job["status"] == "done", job
        assert len(job["result"]["frames"]) >= 1
        still = await client.post("/v1/videos", content=_gif(1))
        assert still.status_code == 415
        assert "/v1/images" in still.json()["error"]["message"]
