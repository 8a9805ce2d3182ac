"""What the native-resolution blockiness crop (issue #9) costs per image.

Decodes real photos (scikit-image, upscaled to about 6 MP like camera files) the way `scan`
does — `decode_image(min_side=224)` then the pixel statistics — with and without the native
crop (`grid_crop=512`), alternating rounds, and prints milliseconds per image and the ratio,
per kind of file: a JPEG at quality 95 (the tables say >= 90: decoded a second time at full
scale), a JPEG at quality 80 (tables only: no extra decode) and a PNG (cropped before the
reduction).

    python benchmarks/native_crop_overhead.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from skimage import data

    from clipsieve.media.decode import decode_image
    from clipsieve.media.stats import load_pixel_stats_config, pixel_stats

    config = load_pixel_stats_config()
    photos = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        a = getattr(data, name)()
        im = Image.fromarray(a[..., :3] if a.ndim == 3 else np.stack([a] * 3, -1))
        f = (6e6 / (im.width * im.height)) ** 0.5
        photos.append(im.resize((int(im.width * f), int(im.height * f)), Image.Resampling.BICUBIC))
    files: dict[str, list[bytes]] = {"JPEG q95": [], "JPEG q80": [], "PNG": []}
    for im in photos:
        for kind, fmt, kw in (("JPEG q95", "JPEG", {"quality": 95}),
                              ("JPEG q80", "JPEG", {"quality": 80}),
                              ("PNG", "PNG", {"compress_level": 1})):
            buf = io.BytesIO()
            im.save(buf, fmt, **kw)
            files[kind].append(buf.getvalue())

    def once(blobs: list[bytes], crop: int) -> float:
        t0 = time.perf_counter()
        for b in blobs:
            dec = decode_image(b, min_side=224, grid_crop=crop)
            pixel_stats(dec.image, config=config, original_size=(dec.width, dec.height),
                        jpeg_quant=dec.jpeg_quant, grid_luma=dec.grid_luma)
        return (time.perf_counter() - t0) * 1000 / len(blobs)

    print(f"{'file kind':<10} {'without ms':>11} {'with ms':>9} {'ratio':>6}  (median of "
          f"{args.rounds} alternating rounds, {len(photos)} photos of ~6 MP)")
    for kind, blobs in files.items():
        base, new = [], []
        for _ in range(args.rounds):
            base.append(once(blobs, 0))
            new.append(once(blobs, 512))
        b, n = statistics.median(base), statistics.median(new)
        print(f"{kind:<10} {b:>11.1f} {n:>9.1f} {n / b:>6.2f}")


if __name__ == "__main__":
    main()
