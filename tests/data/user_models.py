"""Models of the kind users bring: shape-dependent control flow, several inputs, tuple/dict outputs."""

import torch
import torch.nn.functional as F
from torch import nn


class ShapeBranch(nn.Module):
    """Large inputs are processed at half resolution: a branch on the input's shape, which
    tracing at a small size freezes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.mix = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        if x.shape[-1] > 300:
            y = F.interpolate(F.avg_pool2d(self.mix(y), 2), scale_factor=2.0, mode="nearest")
        return y


class ImageAndMask(nn.Module):
    """Inpainting-style: an image and a mask in, a dict of two tensors out."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(4, 16, 3, padding=1)
        self.norm = nn.BatchNorm2d(16)
        self.rgb = nn.Conv2d(16, 3, 1)
        self.conf = nn.Conv2d(16, 1, 1)

    def forward(self, image, mask):
        h = torch.relu(self.norm(self.enc(torch.cat([image * (1 - mask), mask], dim=1))))
        return {"image": torch.tanh(self.rgb(h)), "confidence": torch.sigmoid(self.conf(h))}


class TwoHeads(nn.Module):
    """A feature vector input and a tuple output."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(32, 64)
        self.a = nn.Linear(64, 10)
        self.b = nn.Linear(64, 3)

    def forward(self, x):
        h = torch.relu(self.fc(x))
        return self.a(h), self.b(h)


def shape_branch():
    return ShapeBranch()


def image_and_mask():
    return ImageAndMask()


def two_heads():
    return TwoHeads()
