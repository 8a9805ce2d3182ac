"""Scan a generated corpus of hostile and odd inputs in ONE `clipsieve scan` process.

The corpus (clipsieve.testing_corpus): zero-byte and truncated files of every format, header
bombs, a 1,000-frame GIF and a 500-page TIFF, odd modes (16-bit, 32-bit, float with NaN and
inf, CMYK, LAB, 1-bit, palette with alpha), bogus EXIF and ICC, crafted headers and unsupported
variants (the equivalents of Pillow's odd test images), text and HTML named as images, FIFOs,
device links, a socket, symbolic link loops, dangling links, unreadable files and folders (the
scan runs without root's file-permission override when started as root), names with newlines, quotes, tabs, 250
characters and bytes that are not UTF-8, and hidden files (documented skips).

Prints the counts per outcome and every broken rule: one line per entry (hidden ones skipped),
a valid code for each failure, the expected code where the cause is known, no hang.

    python benchmarks/nasty_corpus.py [--model CHECKPOINT] [--timeout 600]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="checkpoint folder [default: a tiny random CLIP]")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()

    from clipsieve.testing import build_random_clip
    from clipsieve.testing_corpus import run_nasty_scan

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else build_random_clip(Path(tmp) / "m", "tiny")
        run = run_nasty_scan(model, timeout=args.timeout)
    counts = run.counts()
    print(f"one `clipsieve scan` process over {counts['entries']} entries "
          f"({'without root powers' if run.unprivileged else 'as this user'}): "
          f"{run.seconds:.1f} s, exit code {run.returncode}")
    print(f"{'outcome':<20} {'entries':>7}")
    for key, n in counts.items():
        if key not in ("entries", "lines"):
            print(f"{key:<20} {n:>7}")
    print(f"{'result lines':<20} {counts['lines']:>7}")
    for p in run.problems:
        print(f"PROBLEM: {p}")
    print("all rules held" if not run.problems else f"{len(run.problems)} problem(s)")
    return 1 if run.problems else 0


if __name__ == "__main__":
    sys.exit(main())
