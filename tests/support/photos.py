"""The zoo's photograph as a tensor, and normalized square crops of it (the form tests' inputs)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from parbench.zoo.inputs import photo

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_photo() -> torch.Tensor:
    """The zoo's photograph (matplotlib's sample, 600x512 RGB) in [0, 1], 1x3xHxW."""
    arr = np.asarray(photo(), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def crop(image: torch.Tensor, size: int, index: int) -> torch.Tensor:
    """A normalized square crop of the photo (position and scale vary with index)."""
    _, _, h, w = image.shape
    side = int(min(h, w) * (0.55 + 0.4 * ((index * 37) % 10) / 10))
    top = (index * 53) % (h - side + 1)
    left = (index * 29) % (w - side + 1)
    x = image[:, :, top : top + side, left : left + side]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return ((x - MEAN) / STD).contiguous()


def crops(image: torch.Tensor, size: int, indices: range) -> list[tuple[torch.Tensor]]:
    """Crops as ``parbench.zoo.recalibrate_batchnorm`` takes its batches."""
    return [(crop(image, size, i),) for i in indices]
