"""Small models and helpers that exercise the reference executor (tests, speed script, bisect).

``TinyViT`` (patch conv, attention as matmul + softmax, layer norm, GELU) and
``AnimeGANGenerator`` (conv, instance norm, residual blocks, upsampling, tanh) stand in for the
zoo's transformer and image-to-image models; torchvision's CNNs come from
``parbench.zoo.torchvision_shim.import_torchvision``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn


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


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, 1, 1)
        self.norm1 = nn.InstanceNorm2d(ch, affine=True)
        self.act = nn.LeakyReLU(0.2)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, 1)
        self.norm2 = nn.InstanceNorm2d(ch, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))


class AnimeGANGenerator(nn.Module):
    """AnimeGAN-style image-to-image generator: down, residual blocks, up, tanh."""

    def __init__(self, ch: int = 32, blocks: int = 4):
        super().__init__()
        self.stem = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(3, ch, 7), nn.InstanceNorm2d(ch, affine=True), nn.LeakyReLU(0.2)
        )
        self.down = nn.Sequential(
            nn.Conv2d(ch, ch * 2, 3, 2, 1),
            nn.InstanceNorm2d(ch * 2, affine=True),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ch * 2, ch * 4, 3, 2, 1),
            nn.InstanceNorm2d(ch * 4, affine=True),
            nn.LeakyReLU(0.2),
        )
        self.res = nn.Sequential(*[ResBlock(ch * 4) for _ in range(blocks)])
        self.up1 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(ch * 4, ch * 2, 3, 1, 1),
            nn.InstanceNorm2d(ch * 2, affine=True),
            nn.LeakyReLU(0.2),
        )
        self.up2 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(ch * 2, ch, 3, 1, 1),
            nn.InstanceNorm2d(ch, affine=True),
            nn.LeakyReLU(0.2),
        )
        self.out = nn.Conv2d(ch, 3, 7, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.out(self.up2(self.up1(self.res(self.down(self.stem(x)))))))


class DictToTuple(nn.Module):
    """Wraps a model returning a dict (torchvision segmentation) so it returns a tuple."""

    def __init__(self, model: nn.Module, keys: Sequence[str] | None = None):
        super().__init__()
        self.model = model
        self.keys = list(keys) if keys else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        keys = self.keys or list(out)
        return tuple(out[k] for k in keys)


class SSDLiteHead(nn.Module):
    """ssdlite320_mobilenet_v3_large's backbone + head, returning raw (boxes, logits), no NMS."""

    def __init__(self, ssd: nn.Module):
        super().__init__()
        self.backbone = ssd.backbone
        self.head = ssd.head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = list(self.backbone(x).values())
        out = self.head(feats)
        return out["bbox_regression"], out["cls_logits"]


def calibrate_batchnorm(model: nn.Module, images: torch.Tensor, passes: int = 2) -> nn.Module:
    """Re-estimate batch-norm statistics on ``images`` so activations keep a realistic scale."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            model(images)
    return model.eval()


def torchvision_model(name: str, size: int = 96, seed: int = 0) -> nn.Module:
    """A torchvision model with seeded weights and calibrated batch norm, eval mode."""
    from parbench.zoo.torchvision_shim import import_torchvision

    tv = import_torchvision()
    torch.manual_seed(seed)
    if name == "mobilenet_v2":
        m: nn.Module = tv.models.mobilenet_v2()
    elif name == "resnet50":
        m = tv.models.resnet50()
    elif name == "resnet18":
        m = tv.models.resnet18()
    elif name == "deeplabv3_mobilenet_v3_large":
        m = DictToTuple(
            tv.models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None)
        )
    elif name == "ssdlite320_mobilenet_v3_large":
        m = SSDLiteHead(
            tv.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)
        )
    else:
        raise ValueError(f"unknown torchvision model {name!r}")
    g = torch.Generator().manual_seed(seed + 1)
    return calibrate_batchnorm(m, torch.rand(4, 3, size, size, generator=g))


def make_model(name: str, size: int = 96, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if name == "tiny_vit":
        return TinyViT().eval()
    if name == "animegan":
        return AnimeGANGenerator().eval()
    return torchvision_model(name, size, seed)


def convert(
    module: nn.Module,
    example: torch.Tensor | tuple[torch.Tensor, ...],
    out: str | Path,
    *,
    precision: str = "fp16",
    target: str = "iOS16",
    source: str = "trace",
    input_names: Sequence[str] | None = None,
    inputs: list[Any] | None = None,
    **kwargs: Any,
) -> Path:
    """ct.convert a module (traced TorchScript or torch.export) to an ML program and save it."""
    import coremltools as ct

    ex = example if isinstance(example, tuple) else (example,)
    module = module.eval()
    if source == "trace":
        with torch.no_grad():
            src: Any = torch.jit.trace(module, ex)
        if inputs is None:
            names = list(input_names or [f"x{i}" if len(ex) > 1 else "x" for i in range(len(ex))])
            inputs = [ct.TensorType(name=n, shape=t.shape) for n, t in zip(names, ex, strict=True)]
    elif source == "export":
        src = torch.export.export(module, ex).run_decompositions({})
    else:
        raise ValueError(f"source must be 'trace' or 'export', got {source!r}")
    ml = ct.convert(
        src,
        inputs=inputs,
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, target),
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        **kwargs,
    )
    out = Path(out)
    ml.save(str(out))
    return out


__all__ = [
    "AnimeGANGenerator",
    "DictToTuple",
    "SSDLiteHead",
    "TinyViT",
    "calibrate_batchnorm",
    "convert",
    "make_model",
    "torchvision_model",
]
