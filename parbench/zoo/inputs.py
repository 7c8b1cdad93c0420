"""Model inputs with no download: the photograph matplotlib ships, seeded variations of it, and seeded
noise for inputs that are not images.  Fixture cases use images 0, 1, ...; calibration (batch norm,
int8) uses images 100 and up, never the cases themselves."""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

if TYPE_CHECKING:
    import torch

    from parbench.zoo.spec import ModelSpec

CALIBRATION_IMAGES = 8

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


def example_inputs(spec: ModelSpec, size: int, index: int = 0) -> OrderedDict[str, np.ndarray]:
    """The model's inputs at `size`, made from image number `index` (0 = the photo)."""
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for k, inp in enumerate(spec.inputs):
        shape = inp.concrete(size)
        if inp.kind == "rgb":
            arr = to_tensor_array(variation(index, size), spec.mean, spec.std)
            arr = np.repeat(arr, shape[0], axis=0) if shape[0] > 1 else arr
        elif inp.kind == "gray":
            arr = to_gray_array(variation(index, size))
            arr = np.repeat(arr, shape[0], axis=0) if shape[0] > 1 else arr
        else:
            rng = np.random.default_rng([index, k, size])
            if inp.dtype == "float32":
                arr = rng.standard_normal(shape).astype(np.float32)
            else:
                arr = rng.integers(0, 100, size=shape).astype(inp.dtype)
        out[inp.name] = np.ascontiguousarray(arr)
    return out


def to_tensors(inputs: Mapping[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    import torch

    return tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values())


def calibration_inputs(
    spec: ModelSpec, size: int, n: int = CALIBRATION_IMAGES
) -> list[tuple[torch.Tensor, ...]]:
    """Seeded variations of the photo (never the parity cases themselves), for BN and int8 calibration."""
    return [to_tensors(example_inputs(spec, size, 100 + i)) for i in range(n)]
