"""Helpers shared by the service tests: apps served in-process, real servers as subprocesses,
real photos as upload bytes, test videos and policies."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from conftest import photo_array
from PIL import Image

from clipsieve.service import ServiceConfig

DEFAULT_POLICY = Path(__file__).resolve().parent.parent / "src/clipsieve/data/policies/default.toml"


def jpeg_bytes(name: str = "astronaut", size: tuple[int, int] | None = None,
               quality: int = 90) -> bytes:
    im = Image.fromarray(photo_array(name))
    if size is not None:
        im = im.resize(size)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png_bytes(name: str = "coffee") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo_array(name)).resize((96, 64)).save(buf, format="PNG")
    return buf.getvalue()


def flag_all_policy(folder: Path, name: str = "strict") -> Path:
    """The default policy renamed, with thresholds so low that every image is blocked."""
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    text = re.sub(r'(?m)^name = ".*"$', f'name = "{name}"', text)
    text = re.sub(r"(?m)^review = [0-9.]+$", "review = 0.01", text)
    text = re.sub(r"(?m)^block = [0-9.]+$", "block = 0.011", text)
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def mp4_bytes(folder: Path, seconds: int = 2, fps: int = 5) -> bytes:
    """A small real H.264 MP4 (photos as frames)."""
    import av

    path = folder / "clip.mp4"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(seconds * fps):
            arr = np.asarray(Image.fromarray(photo_array(("coffee", "rocket")[i // fps % 2]))
                             .resize((96, 64)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes()


def config(model: Path, **kw: Any) -> ServiceConfig:
    kw.setdefault("store", ":memory:")
    kw.setdefault("precision", "float32")
    kw.setdefault("device", "cpu")
    kw.setdefault("workers", 2)
    return ServiceConfig(model=str(model), **kw)


async def wait_ready(app: Any, timeout: float = 60.0) -> None:
    svc = app.state.service
    deadline = time.monotonic() + timeout
    while not svc.engine.ready:
        if svc.load_error:
            raise RuntimeError(svc.load_error)
        if time.monotonic() > deadline:
            raise TimeoutError("the model did not load")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def serving(app: Any, *, ready: bool = True) -> AsyncIterator[Any]:
    """The app started (lifespan) and an httpx client talking to it in-process."""
    import httpx

    async with app.router.lifespan_context(app):
        if ready:
            await wait_ready(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                     timeout=60) as client:
            yield client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``clipsieve serve`` as a real subprocess on 127.0.0.1 (port chosen by the server)."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                    "PYTHONUNBUFFERED": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clipsieve", "serve", "--host", "127.0.0.1", "--port", "0",
             *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env,
        )
        self.lines: list[str] = []
        self.port: int | None = None
        self._found = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
            if m and self.port is None:
                self.port = int(m.group(1))
                self._found.set()
        self._found.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 90.0) -> None:
        import httpx

        if not self._found.wait(timeout) or self.port is None:
            raise RuntimeError("server did not start:\n" + "".join(self.lines))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited:\n" + "".join(self.lines))
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("server not ready:\n" + "".join(self.lines))

    def terminate(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)


@contextlib.contextmanager
def server_process(args: list[str], env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    server = ServerProcess(args, env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.close()


def rss_mb() -> float | None:
    """This process's resident memory in MB (Linux), else None."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
