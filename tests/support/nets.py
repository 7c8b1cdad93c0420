"""The tests' own small networks.  The zoo's networks (``parbench.zoo.networks``) serve wherever a
test needs a real architecture; these exist for what the zoo has no equivalent of:

- ``TinyNet`` / ``TinySeg``: milliseconds to export in every form, with batch norm to recalibrate,
  a tuple output and a dict output that upsamples to the input's size;
- ``TinyClassifier`` / ``TinySegmenter``: no batch norm to calibrate, and torchvision's two-key
  segmentation output (``out``, ``aux``), for the device runner's hand-written fixture set;
- ``TinyViT``: a transformer without shape arithmetic in ``forward``, so coremltools 9's traced
  frontend converts it (the zoo's ``SmallViT`` reshapes with traced shape ints, which that frontend
  cannot convert with numpy 2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TinyNet(nn.Module):
    """Two outputs (a tuple): class logits and a 2x-upsampled feature map (scale factor)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.ReLU())
        self.proj = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.stem(x)
        y = y + self.block(y)
        y = self.proj(y)
        return self.fc(y.mean((2, 3))), F.interpolate(y, scale_factor=2.0, mode="nearest")


class TinySeg(nn.Module):
    """A segmentation head that upsamples to the input's size (DeepLab's pattern), dict output."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.head(self.body(x))
        return {"out": F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)}


class TinyClassifier(torch.nn.Module):
    """Tuple output: logits [1, 10] and a feature map, so outputs are output_0, output_1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.head = torch.nn.Linear(6, 10)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = torch.relu(self.conv(image))
        return self.head(feat.mean(dim=(2, 3))), feat


class TinySegmenter(torch.nn.Module):
    """Dict output, as torchvision's segmentation models: {"out": ..., "aux": ...}."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.out = torch.nn.Conv2d(8, 4, 1)
        self.aux = torch.nn.Conv2d(8, 4, 1)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.tanh(self.body(image))
        return {"out": self.out(h), "aux": self.aux(h)}


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # no shape arithmetic: traced shape ints trip coremltools 9 with numpy 2
        hd = self.proj.in_features // self.heads
        qkv = self.qkv(x).unflatten(-1, (3, self.heads, hd)).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(hd)), dim=-1)
        out = torch.matmul(att, v).transpose(1, 2).flatten(2)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class TinyViT(nn.Module):
    """A small vision transformer: works at any input size divisible by ``patch``."""

    def __init__(self, dim: int = 64, depth: int = 2, heads: int = 4, patch: int = 16, classes: int = 10):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, dim * 2) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand_as(t[:, :1]), t], dim=1) + self.pos
        t = self.norm(self.blocks(t))
        return self.head(t[:, 0])
