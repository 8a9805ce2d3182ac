"""Model preprocessing read from the checkpoint's own image-processor config.

The same steps as the checkpoint's processor (resize, centre crop, rescale, normalise) but run
on the reduced image that :func:`clipsieve.media.decode.decode_image` produces, so a 24 MP JPEG
costs a 1/8-scale decode plus one resize. A test checks agreement with the transformers
processor (cosine ≥ 0.99 between embeddings on real photos).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

#: Bump when the preprocessing code changes in a way that changes pixels.
PREPROCESS_CODE_VERSION = 2


@dataclass(frozen=True)
class Preprocess:
    """Resize / crop / normalise parameters.

    Attributes:
        shortest_edge: resize so the shorter side has this length (aspect kept), or ``None``.
        resize_hw: resize to exactly (height, width) when ``shortest_edge`` is ``None``.
        crop_hw: centre crop (height, width), or ``None``.
        rescale: factor applied to 0–255 values (1/255 for every CLIP checkpoint).
        mean: per-channel mean subtracted after rescaling.
        std: per-channel standard deviation divided by.
        resample: Pillow resampling filter id (3 = bicubic).
    """

    shortest_edge: int | None
    resize_hw: tuple[int, int] | None
    crop_hw: tuple[int, int] | None
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int = 3

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Preprocess:
        """Build from an image processor's config dict (``preprocessor_config.json`` keys)."""
        size = cfg.get("size") or {"shortest_edge": 224}
        if isinstance(size, int):
            size = {"shortest_edge": size}
        shortest = resize_hw = None
        if cfg.get("do_resize", True):
            if size.get("shortest_edge"):
                shortest = int(size["shortest_edge"])
            elif size.get("height") and size.get("width"):
                resize_hw = (int(size["height"]), int(size["width"]))
            else:
                raise ValueError(f"unsupported image processor size {size!r}")
        crop = None
        if cfg.get("do_center_crop", False):
            cs = cfg.get("crop_size") or size
            if isinstance(cs, int):
                cs = {"height": cs, "width": cs}
            crop = (int(cs["height"]), int(cs["width"]))
        do_norm = cfg.get("do_normalize", True)
        mean = tuple(float(x) for x in (cfg.get("image_mean") or (0.0, 0.0, 0.0))) if do_norm else (0.0,) * 3
        std = tuple(float(x) for x in (cfg.get("image_std") or (1.0, 1.0, 1.0))) if do_norm else (1.0,) * 3
        rescale = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
        resample = cfg.get("resample", 3)
        return cls(
            shortest_edge=shortest,
            resize_hw=resize_hw,
            crop_hw=crop,
            rescale=rescale,
            mean=mean,  # type: ignore[arg-type]
            std=std,  # type: ignore[arg-type]
            resample=int(resample if resample is not None else 3),
        )

    @property
    def min_side(self) -> int:
        """Smallest image side the resize step needs (used for JPEG draft decoding)."""
        if self.shortest_edge:
            return self.shortest_edge
        assert self.resize_hw is not None
        return max(self.resize_hw)

    @property
    def output_hw(self) -> tuple[int, int]:
        if self.crop_hw:
            return self.crop_hw
        if self.resize_hw:
            return self.resize_hw
        assert self.shortest_edge is not None
        return (self.shortest_edge, self.shortest_edge)

    @property
    def version(self) -> str:
        """Short hash of the parameters and code version; part of every embedding's cache key."""
        blob = json.dumps([PREPROCESS_CODE_VERSION, asdict(self)], sort_keys=True)
        return "p" + hashlib.sha256(blob.encode()).hexdigest()[:12]

    def resize(self, img: Image.Image) -> Image.Image:
        """Resize (and centre-crop) an RGB image; returns an RGB image of :attr:`output_hw`.

        With a centre crop, only the region that survives the crop is resampled (Pillow's
        ``box``): the same filter, scale and pixel centres as resizing the whole image and
        cropping afterwards, for a fraction of the work.
        """
        w, h = img.size
        if self.shortest_edge:
            s = self.shortest_edge
            if w <= h:
                new_w, new_h = s, int(s * h / w)
            else:
                new_w, new_h = int(s * w / h), s
        elif self.resize_hw:
            new_h, new_w = self.resize_hw
        else:
            new_w, new_h = w, h
        resample = Image.Resampling(self.resample)
        if not self.crop_hw:
            return img if (new_w, new_h) == (w, h) else img.resize((new_w, new_h), resample)
        ch, cw = self.crop_hw
        if new_h < ch or new_w < cw:  # pad like transformers' center_crop does
            if (new_w, new_h) != (w, h):
                img = img.resize((new_w, new_h), resample=resample)
            canvas = Image.new("RGB", (max(cw, new_w), max(ch, new_h)))
            canvas.paste(img, ((canvas.width - new_w) // 2, (canvas.height - new_h) // 2))
            img, new_w, new_h, w, h = canvas, canvas.width, canvas.height, canvas.width, canvas.height
        top, left = (new_h - ch) // 2, (new_w - cw) // 2
        if (new_w, new_h) == (w, h):
            return img.crop((left, top, left + cw, top + ch))
        sx, sy = w / new_w, h / new_h
        box = (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)
        return img.resize((cw, ch), resample=resample, box=box)

    def __call__(self, img: Image.Image) -> np.ndarray:
        """RGB image → normalised float32 array of shape (3, H, W).

        Rescale and normalise go through a 256-entry table per channel, computed as
        ``(v * rescale - mean) / std`` like the transformers processor, and written straight
        into channel-first order: one pass instead of three over the pixels.
        """
        arr = np.asarray(self.resize(img))
        lut = _lookup_table(self.rescale, self.mean, self.std)
        out = np.empty((3, arr.shape[0], arr.shape[1]), dtype=np.float32)
        for c in range(3):
            np.take(lut[c], arr[:, :, c], out=out[c])
        return out


@functools.lru_cache(maxsize=16)
def _lookup_table(
    rescale: float, mean: tuple[float, ...], std: tuple[float, ...]
) -> np.ndarray:
    values = np.arange(256, dtype=np.float32)[None, :] * np.float32(rescale)
    m = np.asarray(mean, dtype=np.float32)[:, None]
    s = np.asarray(std, dtype=np.float32)[:, None]
    return (values - m) / s
