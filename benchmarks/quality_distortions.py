"""Benchmark: technical quality measures against synthetic distortions of real images.

Every image that scikit-image ships offline that is a photograph of something (``cat`` is
the same photo as ``chelsea``; drawings, masks and phantoms are left out), plus
scikit-learn's two sample photos, is distorted at five increasing levels of six kinds:
Gaussian blur, Gaussian noise, JPEG quality, under-exposure, over-exposure and contrast loss.
The images are split into *photographs* (everyday scenes, the domain the measures are
calibrated for) and *other images* (microscopy, astronomy, retinal fundus, a scanned page and
close-up texture samples), reported separately.

For each kind the table gives the Spearman correlation between the level (0 = undistorted,
then 1–5) and the component meant to detect it (mean, worst, and how many images reach
≤ -0.9), the fraction of images whose overall technical score never rises from one level to
the next (levels 0–5, so the first distortion must not raise it either), and the median time
of :func:`clipsieve.quality.pixel_stats` on these images once reduced to the analysis scale.

JPEG is reported twice: as a scan sees a JPEG file (with its quantisation tables) and from
the pixels alone (as for a PNG that was once a JPEG); the headline fraction uses the first.
A last section sets the cost of the measures beside the cost of decoding a 12-megapixel
JPEG.

Run with ``.venv/bin/python benchmarks/quality_distortions.py [--details]``.
"""

from __future__ import annotations

import argparse
import io
import itertools
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from clipsieve.quality import (
    ANALYSIS_SIZE,
    pixel_stats,
    technical_score,
    technical_scores,
)

#: scikit-image photographs of everyday scenes ("motorcycle" is the left stereo view).
SKIMAGE_PHOTOGRAPHS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle",
    "camera",
    "coins",
    "moon",
    "clock",
    "text",
)
#: Other scikit-image images taken with a camera, microscope, telescope or scanner.
SKIMAGE_OTHER = (
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "cell",
    "microaneurysms",
    "page",
    "grass",
    "gravel",
    "brick",
)

#: Distortion levels 1–5 (level 0 is the undistorted image).
LEVELS: dict[str, tuple[float, ...]] = {
    "blur": (1.0, 1.5, 2.2, 3.2, 5.0),  # Gaussian σ, px
    "noise": (5.0, 10.0, 15.0, 22.0, 32.0),  # Gaussian σ per channel, 0–255
    "jpeg": (60, 40, 25, 12, 5),  # Pillow quality
    "jpeg_pixels": (60, 40, 25, 12, 5),  # the same, without the quantisation tables
    "underexposure": (0.75, 1.25, 1.75, 2.25, 3.0),  # stops down, in linear light
    "overexposure": (0.75, 1.25, 1.75, 2.25, 3.0),  # stops up, in linear light
    "contrast": (0.7, 0.55, 0.4, 0.25, 0.12),  # fraction of contrast kept
}
#: The distortion kinds of the issue's criterion (``jpeg_pixels`` is reported besides).
MAIN_KINDS = ("blur", "noise", "jpeg", "underexposure", "overexposure", "contrast")

#: The component expected to fall with each distortion.
MATCHING: dict[str, str] = {
    "blur": "sharpness",
    "noise": "noise",
    "jpeg": "jpeg",
    "jpeg_pixels": "jpeg",
    "underexposure": "exposure_under",
    "overexposure": "exposure_over",
    "contrast": "contrast",
}


def _never_rises(values: Sequence[float]) -> bool:
    return all(b <= a for a, b in itertools.pairwise(values))


@dataclass(frozen=True)
class Outcome:
    """How one image fared under one distortion kind, levels 0–5."""

    image: str
    distortion: str
    spearman: float
    monotone: bool  # the overall score never rises over levels 0-5
    matching: tuple[float, ...]
    overall: tuple[float, ...]
    ms: float


def load_images(
    names: Sequence[str] = SKIMAGE_PHOTOGRAPHS + SKIMAGE_OTHER, *, sklearn: bool = True
) -> dict[str, Image.Image]:
    """Load the named scikit-image images (and scikit-learn's photos) as 8-bit RGB."""
    import skimage.data

    images: dict[str, Image.Image] = {}
    for name in names:
        if name == "motorcycle":
            array = skimage.data.stereo_motorcycle()[0]
        else:
            array = getattr(skimage.data, name)()
        images[name] = Image.fromarray(np.asarray(array, dtype=np.uint8)).convert("RGB")
    if sklearn:
        from sklearn.datasets import load_sample_images

        samples = load_sample_images()
        for path, array in zip(samples.filenames, samples.images):
            images[Path(path).stem] = Image.fromarray(array).convert("RGB")
    return images


def _srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.0031308, 12.92 * v, 1.055 * np.power(v, 1 / 2.4) - 0.055)


def _to_image(array: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8))


def _exposure(img: Image.Image, stops: float) -> Image.Image:
    linear = _srgb_to_linear(np.asarray(img, dtype=np.float64) / 255.0)
    return _to_image(255.0 * _linear_to_srgb(np.clip(linear * 2.0**stops, 0.0, 1.0)))


def _contrast(img: Image.Image, keep: float) -> Image.Image:
    rgb = np.asarray(img, dtype=np.float64)
    grey = float((rgb @ np.array([0.299, 0.587, 0.114])).mean())
    return _to_image(grey + keep * (rgb - grey))


def _noise(img: Image.Image, sigma: float) -> Image.Image:
    rgb = np.asarray(img, dtype=np.float64)
    field = np.random.default_rng(0).standard_normal(rgb.shape)
    return _to_image(rgb + sigma * field)


def _jpeg(img: Image.Image, quality: float) -> Image.Image:
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=int(quality))
    decoded = Image.open(io.BytesIO(buffer.getvalue()))
    decoded.load()
    return decoded


_DISTORTIONS: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    "blur": lambda im, sigma: im.filter(ImageFilter.GaussianBlur(sigma)),
    "noise": _noise,
    "jpeg": _jpeg,
    "jpeg_pixels": _jpeg,
    "underexposure": lambda im, stops: _exposure(im, -stops),
    "overexposure": _exposure,
    "contrast": _contrast,
}


def distort(img: Image.Image, kind: str, level: float) -> Image.Image:
    """Apply one synthetic distortion; JPEG results keep their ``quantization`` tables.

    Args:
        img: 8-bit RGB image.
        kind: a key of :data:`LEVELS`.
        level: the distortion's parameter (see :data:`LEVELS`).
    """
    return _DISTORTIONS[kind](img, level)


def _timed_stats(img: Image.Image, quant: dict | None, repeats: int) -> float:
    """Median time (ms) of ``pixel_stats`` on ``img`` reduced to the analysis scale."""
    scale = min(1.0, ANALYSIS_SIZE / max(img.size))
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    small = img.resize(size, Image.Resampling.BILINEAR) if scale < 1 else img
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        pixel_stats(small, original_size=img.size, jpeg_quant=quant)
        runs.append(time.perf_counter() - start)
    return 1e3 * statistics.median(runs)


def evaluate(
    images: dict[str, Image.Image],
    kinds: Sequence[str] = tuple(LEVELS),
    *,
    timing_repeats: int = 0,
) -> list[Outcome]:
    """Score every image at levels 0–5 of every distortion kind.

    Args:
        images: name → 8-bit RGB image.
        kinds: distortion kinds (keys of :data:`LEVELS`).
        timing_repeats: when positive, also time ``pixel_stats`` at the analysis scale this
            many times per distorted image (``Outcome.ms`` is then the median over levels
            1–5; otherwise NaN).

    Returns:
        One :class:`Outcome` per (image, kind).
    """
    outcomes: list[Outcome] = []
    for name, image in images.items():
        for kind in kinds:
            matching, overall, times = [], [], []
            for level in (None, *LEVELS[kind]):
                img = image if level is None else distort(image, kind, level)
                quant = getattr(img, "quantization", None) if kind != "jpeg_pixels" else None
                components = technical_scores(pixel_stats(img, jpeg_quant=quant))
                matching.append(components[MATCHING[kind]])
                overall.append(technical_score(components))
                if timing_repeats and level is not None:
                    times.append(_timed_stats(img, quant, timing_repeats))
            rho = float(spearmanr(range(len(matching)), matching)[0])
            monotone = _never_rises(overall)
            ms = statistics.median(times) if times else float("nan")
            outcomes.append(Outcome(name, kind, rho, monotone, tuple(matching), tuple(overall), ms))
    return outcomes


def decode_cost(repeats: int = 5) -> dict[str, float]:
    """Milliseconds to decode a 4000×3000 JPEG and to measure it, as a scan would.

    Returns:
        Median times of decoding with libjpeg's DCT scaling to at least 224 px (what the scan
        asks for CLIP) and to at least :data:`ANALYSIS_SIZE` px, and of a full decode, each
        followed by ``pixel_stats`` on the result (which includes the reduction to the
        analysis scale).
    """
    from sklearn.datasets import load_sample_images

    big = Image.fromarray(load_sample_images().images[0]).resize(
        (4000, 3000), Image.Resampling.BICUBIC
    )
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()

    def decode(min_side: int | None) -> Image.Image:
        img = Image.open(io.BytesIO(data))
        if min_side:
            img.draft("RGB", (min_side, min_side))
        img.load()
        return img

    def median_ms(fn: Callable[..., object], *args: object, **kwargs: object) -> float:
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(*args, **kwargs)
            runs.append(time.perf_counter() - start)
        return 1e3 * statistics.median(runs)

    costs: dict[str, float] = {}
    for label, min_side in (("draft >=224", 224), (f"draft >={ANALYSIS_SIZE}", ANALYSIS_SIZE)):
        img = decode(min_side)
        costs[f"{label} decode ({img.width}x{img.height})"] = median_ms(decode, min_side)
        costs[f"{label} pixel_stats"] = median_ms(
            pixel_stats, img, original_size=big.size, jpeg_quant=img.quantization
        )
    full = decode(None)
    costs["full decode"] = median_ms(decode, None)
    costs["full pixel_stats"] = median_ms(pixel_stats, full, jpeg_quant=full.quantization)
    return costs


def _print_table(title: str, outcomes: list[Outcome]) -> None:
    names = sorted({o.image for o in outcomes})
    print(f"{title} ({len(names)}): {', '.join(names)}")
    header = (
        f"{'distortion':<14} {'component':<15} {'mean rho':>9} {'worst rho':>10} "
        f"{'rho<=-0.9':>10} {'mono 0-5':>9} {'mono 1-5':>9} {'ms/image':>9}"
    )
    print(header)
    print("-" * len(header))
    for kind in LEVELS:
        rows = [o for o in outcomes if o.distortion == kind]
        rhos = [o.spearman for o in rows]
        good = sum(r <= -0.9 for r in rhos)
        monotone = sum(o.monotone for o in rows) / len(rows)
        from_one = sum(_never_rises(o.overall[1:]) for o in rows) / len(rows)
        print(
            f"{kind:<14} {MATCHING[kind]:<15} {statistics.fmean(rhos):>9.3f} "
            f"{max(rhos):>10.3f} {good:>5}/{len(rows):<4} {monotone:>9.1%} {from_one:>9.1%} "
            f"{statistics.median(o.ms for o in rows):>9.2f}"
        )
    main = [o for o in outcomes if o.distortion in MAIN_KINDS]
    monotone = sum(o.monotone for o in main)
    from_one = sum(_never_rises(o.overall[1:]) for o in main)
    print(
        f"overall score never rises in {monotone}/{len(main)} = {monotone / len(main):.1%} "
        f"of (image, distortion) pairs over levels 0-5, {from_one}/{len(main)} = "
        f"{from_one / len(main):.1%} over levels 1-5 ({', '.join(MAIN_KINDS)})\n"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Print the tables (and with ``--details`` every image's curves)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--details", action="store_true", help="print every image's curves")
    args = parser.parse_args(argv)

    images = load_images()
    outcomes = evaluate(images, timing_repeats=5)
    photographs = set(SKIMAGE_PHOTOGRAPHS) | {"china", "flower"}
    _print_table("Photographs", [o for o in outcomes if o.image in photographs])
    _print_table("Other images", [o for o in outcomes if o.image not in photographs])
    print(f"All {len(images)} images:")
    main_rows = [o for o in outcomes if o.distortion in MAIN_KINDS]
    print(
        f"overall score never rises over levels 0-5 in {sum(o.monotone for o in main_rows)}/"
        f"{len(main_rows)} = {sum(o.monotone for o in main_rows) / len(main_rows):.1%} of "
        f"pairs; pixel_stats at "
        f"analysis scale ({ANALYSIS_SIZE} px): median "
        f"{statistics.median(o.ms for o in outcomes):.2f} ms, max "
        f"{max(o.ms for o in outcomes):.2f} ms per image, one thread\n"
    )
    print("Cost beside decoding a 4000x3000 JPEG (median ms):")
    for label, ms in decode_cost().items():
        print(f"  {label:<36} {ms:8.2f}")
    if args.details:
        print()
        for o in outcomes:
            flag = "" if o.monotone and o.spearman <= -0.9 else "  <--"
            print(
                f"{o.image:<21} {o.distortion:<14} rho {o.spearman:6.3f}  "
                f"{MATCHING[o.distortion]:<14} {' '.join(f'{v:5.2f}' for v in o.matching)}"
                f"  overall {' '.join(f'{v:5.2f}' for v in o.overall)}{flag}"
            )


if __name__ == "__main__":
    main()
