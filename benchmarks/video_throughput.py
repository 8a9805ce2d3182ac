"""Throughput of `clipsieve video` against decoding alone and the encoder alone.

A 60 s 1280×720 H.264 30 fps video made from real photos (six 10 s shots panning across the
scikit-image photos), sampled at 1 frame per second, with a randomly initialised CLIP ViT-B/32
(the real architecture: honest FLOPs; no hub is reachable here). Measured in one run, on one
loaded model:

  (a) decode and sample only: `VideoReader.frames` at --fps 1 (sampled frames per second);
  (b) the encoder alone on the same number of ready, preprocessed frames (frames per second);
  (c) `clipsieve video` end to end in process (decode in a thread, pixel statistics,
      preprocessing, encoding, moderation and quality heads, segments, checks; no store),
      and the real-time factor (video seconds per wall second);
  plus the real-time factor of `--keyframes`, and the `clipsieve video` command itself (new
  process: model loading included).

Decoding and encoding share the same cores, so the best (c) can reach is the shared-core limit
1 / (1/a + 1/b) frames per second. Targets: (c) >= 0.9 × that limit; >= 15× real time where
the encoder alone allows it.

Usage: .venv/bin/python benchmarks/video_throughput.py [--rounds 2] [--precision auto]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".bench"
SECONDS, FPS, SIZE = 60, 30, (1280, 720)


def make_video() -> Path:
    """The 60 s 720p30 H.264 test video (cached in .bench/)."""
    path = BENCH / "video-60s-720p30.mp4"
    if path.exists():
        return path
    from skimage import data

    from clipsieve.testing import write_test_video

    BENCH.mkdir(exist_ok=True)
    names = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
    shots = [(getattr(data, n)()[..., :3], SECONDS / len(names)) for n in names]
    tmp = path.with_suffix(".tmp.mp4")
    write_test_video(tmp, shots, fps=FPS, size=SIZE, options={"preset": "veryfast", "crf": "23"})
    tmp.rename(path)
    return path


def model_dir() -> Path:
    d = BENCH / "clip-vit-b-32-random"
    if not (d / "model.safetensors").exists():
        from clipsieve.testing import build_random_clip

        build_random_clip(d, "vit-b-32")
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--no-cli", action="store_true", help="skip the `clipsieve video` process")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    from clipsieve import Analyzer, build_heads
    from clipsieve.video import Sampling, VideoOptions, VideoReader, analyze_video

    video, model = make_video(), model_dir()
    an = Analyzer(model=str(model), store=False, precision=args.precision)
    an.load()
    heads = build_heads(an, policy="default", quality=True)
    min_side = max(an.preprocess.min_side, 224)

    def decode_only(sampling: Sampling) -> tuple[float, list]:
        t = time.perf_counter()
        with VideoReader(str(video)) as r:
            frames = list(r.frames(sampling, min_side=min_side))
        return time.perf_counter() - t, frames

    def encoder_only(frames: list) -> float:
        pixels = np.stack([an.preprocess(f.image) for f in frames])
        enc = an.encoder
        t = time.perf_counter()
        for i in range(0, len(pixels), an.batch_size):
            enc.encode_pixels(pixels[i : i + an.batch_size])
        return time.perf_counter() - t

    def end_to_end(sampling: Sampling) -> tuple[float, object]:
        t = time.perf_counter()
        res = analyze_video(an, video, heads=heads, options=VideoOptions(sampling=sampling))
        return time.perf_counter() - t, res

    # warm up (first batch, prompt banks, caches)
    _, warm = decode_only(Sampling(max_frames=4))
    encoder_only(warm)
    a_s, b_s, c_s = [], [], []
    n = 0
    for _ in range(args.rounds):
        t, frames = decode_only(Sampling(fps=1))
        n = len(frames)
        a_s.append(n / t)
        b_s.append(n / encoder_only(frames))
        t, res = end_to_end(Sampling(fps=1))
        assert res.status == "ok" and len(res.frames) == n, res.error  # type: ignore[attr-defined]
        c_s.append(n / t)
    tk, res_k = end_to_end(Sampling(keyframes=True))
    a, b, c = max(a_s), max(b_s), max(c_s)
    limit = 1.0 / (1.0 / a + 1.0 / b)
    print(f"video: {SECONDS} s {SIZE[0]}x{SIZE[1]} H.264 {FPS} fps; {n} frames at 1 fps; "
          f"model ViT-B/32 (random), device {an.encoder.device}, precision {an.precision}; "
          f"best of {args.rounds} rounds; {os.cpu_count()} CPUs")
    print(f"{'case':46s} {'frames/s':>9s} {'x real time':>12s}")
    rows = [
        ("(a) decode + sample (1 fps)", a, a * SECONDS / n),
        ("(b) encoder alone", b, b * SECONDS / n),
        ("shared-core limit 1/(1/a+1/b)", limit, limit * SECONDS / n),
        ("(c) clipsieve video end to end", c, c * SECONDS / n),
    ]
    for name, fps, rt in rows:
        print(f"{name:46s} {fps:9.1f} {rt:12.1f}")
    kf = len(res_k.frames)  # type: ignore[attr-defined]
    print(f"{'--keyframes end to end (' + str(kf) + ' frames)':46s} {kf / tk:9.1f} "
          f"{SECONDS / tk:12.1f}")
    print(f"(c) / limit = {c / limit:.2f} (target >= 0.9); real-time factor (c) = "
          f"{c * SECONDS / n:.1f}x (target >= 15x where (b) allows: (b) alone is "
          f"{b * SECONDS / n:.1f}x); medians a={np.median(a_s):.1f} b={np.median(b_s):.1f} "
          f"c={np.median(c_s):.1f}")
    if not args.no_cli:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "clipsieve", "video", str(video), "--model", str(model),
                 "--no-store", "--format", "jsonl", "--out", os.path.join(tmp, "v.jsonl"),
                 "--precision", args.precision, "--quiet"],
                capture_output=True, text=True,
            )
            wall = time.perf_counter() - t
        print(f"`clipsieve video` command (new process, model load included): {wall:.1f} s, "
              f"{SECONDS / wall:.1f}x real time, exit {proc.returncode}")


if __name__ == "__main__":
    main()
