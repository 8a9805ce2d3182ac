"""Throughput and latency of `clipsieve serve` under load, against offline scanning.

On N real multi-megapixel JPEGs (as in scan_throughput.py: the scikit-image photos cropped and
upscaled to 6 MP) with a randomly initialised CLIP ViT-B/32, measured in one run:

  (a) offline: `Analyzer.scan` over the files with the moderation and quality heads (what
      `clipsieve scan` computes by default), model already loaded, no store;
  (b) the service: a real `clipsieve serve` process on 127.0.0.1 (model loaded, /readyz 200)
      and a bounded load generator with --clients concurrent clients, each sending one JPEG per
      request as the raw body to POST /v1/images, until N requests are answered.

(a) and (b) alternate over --rounds rounds; the best and median rates and each round's ratio
are printed (this machine is shared; single runs vary). For (b) it prints p50 and p99 latency
per request, the mean batch size of the model calls and how busy the model thread was (from the
server's /metrics, over the timed requests only). `--noise N` runs N busy-looping processes
beside both (a) and (b), as on a machine shared with other work; `--torch-threads`,
`--workers`, `--max-wait-ms`, `--serve-arg` and `--serve-env NAME=VALUE` change the server
only (e.g. `--serve-env OMP_WAIT_POLICY=ACTIVE` undoes serve's passive OpenMP waiting).

Target: (b) >= 80% of (a) in images per second.

Traffic goes only to 127.0.0.1; the generator sends exactly N requests per round and stops.

Usage: .venv/bin/python benchmarks/service_load.py [--n 200] [--clients 16] [--rounds 2]
           [--noise N] [--serve-env NAME=VALUE] [--torch-threads N] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scan_throughput import make_photos, model_dir  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".bench"


def offline(analyzer: object, heads: list[object], paths: list[Path]) -> float:
    t = time.perf_counter()
    n = sum(1 for r in analyzer.scan([str(p) for p in paths], heads=heads) if r.ok)  # type: ignore[attr-defined]
    dt = time.perf_counter() - t
    assert n == len(paths), f"offline: {n} of {len(paths)} ok"
    return n / dt


class Server:
    def __init__(self, model: Path, store: Path, args: list[str],
                 env_extra: dict[str, str] | None = None) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "PYTHONUNBUFFERED": "1", **(env_extra or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clipsieve", "serve", "--host", "127.0.0.1", "--port", "0",
             "--model", str(model), "--store", str(store), "--log-level", "warning", *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.port = 0
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                break
        if not self.port:
            raise RuntimeError("server did not start")
        threading.Thread(target=self._drain, daemon=True).start()
        import httpx

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server not ready")

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for _ in self.proc.stdout:
            pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def batches(self) -> tuple[float, float, float]:
        """(images, model calls, seconds in model calls) so far, from /metrics."""
        import httpx

        text = httpx.get(self.url + "/metrics", timeout=10).text

        def metric(name: str) -> float:
            return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]

        return (metric("clipsieve_batch_size_sum"), metric("clipsieve_batch_size_count"),
                metric("clipsieve_batch_duration_seconds_sum"))

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(60)


def load(port: int, bodies: list[bytes], n: int, clients: int
         ) -> tuple[float, list[float], float]:
    """Send n requests with `clients` concurrent clients; returns (images/s, latencies s,
    wall seconds).

    The clients use the standard library's http.client with keep-alive: the generator shares
    the machine's cores with the server, so it should cost as little as possible.
    """
    import http.client

    lock = threading.Lock()
    state = {"next": 0}
    latencies: list[float] = []
    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            while True:
                with lock:
                    i = state["next"]
                    if i >= n:
                        return
                    state["next"] += 1
                body = bodies[i % len(bodies)]
                t = time.perf_counter()
                conn.request("POST", f"/v1/images?name=p{i}.jpg", body=body,
                              headers={"Content-Type": "application/octet-stream"})
                resp = conn.getresponse()
                data = resp.read()
                dt = time.perf_counter() - t
                with lock:
                    latencies.append(dt)
                    if resp.status != 200:
                        errors.append(f"{resp.status} {data[:200]!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return n / wall, latencies, wall


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="images per round")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=None,
                    help="passed to serve (default: serve's own default)")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="passed to serve (default: serve's own default)")
    ap.add_argument("--workers", type=int, default=None,
                    help="decode threads, passed to serve (default: serve's own default)")
    ap.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                    help="one more argument for clipsieve serve (repeatable)")
    ap.add_argument("--serve-env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for the server process only (repeatable)")
    ap.add_argument("--noise", type=int, default=0, metavar="N",
                    help="run N busy-looping processes during every round (a shared machine)")
    args = ap.parse_args()

    from clipsieve import Analyzer
    from clipsieve.moderation import ModerationHead
    from clipsieve.quality import QualityHead

    paths = make_photos(args.n, BENCH / "photos-6mp")
    bodies = [p.read_bytes() for p in paths]
    model = model_dir()
    print(f"{args.n} JPEGs of 6 MP ({sum(map(len, bodies)) / len(bodies) / 1e6:.1f} MB each), "
          f"random CLIP ViT-B/32, {args.clients} clients, precision {args.precision}, "
          f"{os.cpu_count()} cores", flush=True)

    analyzer = Analyzer(str(model), store=False, precision=args.precision,
                        batch_size=args.max_batch_size)
    heads: list[object] = [ModerationHead("default"), QualityHead()]
    offline(analyzer, heads, paths[:16])  # load and warm up
    with tempfile.TemporaryDirectory() as tmp:
        serve_args = ["--precision", args.precision, "--max-batch-size",
                      str(args.max_batch_size), "--queue-size", str(4 * args.clients)]
        for flag, value in (("--max-wait-ms", args.max_wait_ms),
                            ("--torch-threads", args.torch_threads),
                            ("--workers", args.workers)):
            if value is not None:
                serve_args += [flag, str(value)]
        serve_args += args.serve_arg
        print("clipsieve serve " + " ".join(serve_args), flush=True)
        env_extra = dict(kv.split("=", 1) for kv in args.serve_env)
        if env_extra:
            print("server environment: " + " ".join(args.serve_env), flush=True)
        server = Server(model, Path(tmp) / "store.sqlite", serve_args, env_extra)
        noise = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                 for _ in range(args.noise)]
        if noise:
            print(f"{args.noise} busy-looping process(es) running beside both", flush=True)
        try:
            load(server.port, bodies, 2 * args.clients, args.clients)  # warm up
            off_rates: list[float] = []
            svc_rates: list[float] = []
            lats: list[float] = []
            batch_means: list[float] = []
            busy: list[float] = []
            for r in range(args.rounds):
                off_rates.append(offline(analyzer, heads, paths))
                s0, c0, m0 = server.batches()
                rate, lat, wall = load(server.port, bodies, args.n, args.clients)
                s1, c1, m1 = server.batches()
                svc_rates.append(rate)
                lats += lat
                batch_means.append((s1 - s0) / max(1.0, c1 - c0))
                busy.append((m1 - m0) / wall)
                print(f"round {r + 1}: offline {off_rates[-1]:.1f} img/s, service {rate:.1f} "
                      f"img/s ({rate / off_rates[-1]:.0%}), mean batch {batch_means[-1]:.1f}, "
                      f"model thread busy {busy[-1]:.0%}", flush=True)
        finally:
            for p in noise:
                p.kill()
                p.wait()
            code = server.stop()
    best_off, best_svc = max(off_rates), max(svc_rates)
    print()
    print(f"{'case':<42} {'best img/s':>10} {'median':>8}")
    print(f"{'(a) offline Analyzer.scan (moderation+quality)':<42} {best_off:>10.1f} "
          f"{statistics.median(off_rates):>8.1f}")
    print(f"{'(b) clipsieve serve, ' + str(args.clients) + ' clients':<42} {best_svc:>10.1f} "
          f"{statistics.median(svc_rates):>8.1f}")
    ratio = best_svc / best_off
    print(f"\n(b)/(a) = {ratio:.0%} (target >= 80%: {'met' if ratio >= 0.8 else 'NOT met'})")
    print(f"latency per request: p50 {pct(lats, 50) * 1000:.0f} ms, p99 "
          f"{pct(lats, 99) * 1000:.0f} ms ({len(lats)} requests)")
    print(f"mean batch size: {statistics.mean(batch_means):.1f} (max {args.max_batch_size}); "
          f"model thread busy {statistics.median(busy):.0%} of the time (median)")
    ratios = [s / o for s, o in zip(svc_rates, off_rates)]
    print(f"per-round (b)/(a): {', '.join(f'{x:.0%}' for x in ratios)} "
          f"(median {statistics.median(ratios):.0%})")
    print(f"load average after the run: {os.getloadavg()[0]:.1f}")
    print(f"server exit code after SIGTERM: {code}")


if __name__ == "__main__":
    main()
