"""Real test images with no download: the photograph matplotlib ships, plus seeded variations."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

PHOTO = "grace_hopper.jpg"  # 512 x 600 RGB, ships with matplotlib


@functools.lru_cache(maxsize=1)
def photo() -> Image.Image:
    from matplotlib import cbook

    with cbook.get_sample_data(PHOTO) as f:  # type: ignore[no-untyped-call]
        img = Image.open(f)
        img.load()
    return img.convert("RGB")


def variation(index: int, size: int) -> Image.Image:
    """Image number `index` at `size` x `size`: 0 is the centre-cropped photo; others are
    seeded crops, flips and colour changes of it (deterministic for a given index)."""
    img = photo()
    w, h = img.size
    side = min(w, h)
    if index == 0:
        box = ((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2)
        return img.crop(box).resize((size, size), Image.BILINEAR)
    rng = np.random.default_rng(1000 + index)
    crop = int(side * rng.uniform(0.55, 1.0))
    x0 = int(rng.integers(0, w - crop + 1))
    y0 = int(rng.integers(0, h - crop + 1))
    out = img.crop((x0, y0, x0 + crop, y0 + crop)).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        out = ImageOps.mirror(out)
    out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.7, 1.3))
    out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.7, 1.3))
    return ImageEnhance.Color(out).enhance(rng.uniform(0.5, 1.5))


def to_tensor_array(img: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """PIL RGB -> float32 [1, 3, H, W], scaled to [0, 1] then normalized per channel."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1)[None])


def to_gray_array(img: Image.Image) -> np.ndarray:
    """PIL -> float32 [1, 1, H, W] luminance in [0, 1]."""
    return (np.asarray(img.convert("L"), dtype=np.float32) / 255.0)[None, None].copy()
