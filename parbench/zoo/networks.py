"""Networks written for parbench's zoo, and wrappers that give torchvision models an app's interface.

Everything here is plain PyTorch that traces, exports and converts; shapes follow the input so one
artifact can serve every size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from parbench.zoo.torchvision_shim import import_torchvision

# --------------------------------------------------------------------------------------------
# AnimeGAN-style generator: the image-to-image case that takes seconds per frame on a phone CPU.


class ConvNormLReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1):
        pad = (kernel - 1) // 2
        super().__init__(
            nn.ReflectionPad2d(pad),
            nn.Conv2d(cin, cout, kernel, stride, 0, groups=groups, bias=False),
            nn.InstanceNorm2d(cout, affine=True),
            nn.LeakyReLU(0.2),
        )


class InvertedResBlock(nn.Module):
    def __init__(self, channels: int, expansion: int = 2):
        super().__init__()
        hidden = channels * expansion
        self.expand = ConvNormLReLU(channels, hidden, kernel=1)
        self.depthwise = ConvNormLReLU(hidden, hidden, groups=hidden)
        self.project = nn.Conv2d(hidden, channels, 1, bias=False)
        self.norm = nn.InstanceNorm2d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(self.project(self.depthwise(self.expand(x))))


class AnimeGANGenerator(nn.Module):
    """Encoder, residual body and bilinear-upsampling decoder, as in AnimeGANv2's generator.

    Input: RGB in [-1, 1], any size divisible by 4. Output: RGB in [-1, 1], same size.
    """

    def __init__(self, width: int = 32, n_res: int = 8):
        super().__init__()
        w = width
        self.block_a = nn.Sequential(
            ConvNormLReLU(3, w, 7), ConvNormLReLU(w, 2 * w, stride=2), ConvNormLReLU(2 * w, 2 * w)
        )
        self.block_b = nn.Sequential(ConvNormLReLU(2 * w, 4 * w, stride=2), ConvNormLReLU(4 * w, 4 * w))
        self.body = nn.Sequential(
            ConvNormLReLU(4 * w, 4 * w),
            *[InvertedResBlock(4 * w) for _ in range(n_res)],
            ConvNormLReLU(4 * w, 4 * w),
        )
        self.block_d = nn.Sequential(ConvNormLReLU(4 * w, 2 * w), ConvNormLReLU(2 * w, 2 * w))
        self.block_e = nn.Sequential(ConvNormLReLU(2 * w, w), ConvNormLReLU(w, w, 7))
        self.to_rgb = nn.Conv2d(w, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.block_b(self.block_a(x)))
        x = self.block_d(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        x = self.block_e(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        return torch.tanh(self.to_rgb(x))


# --------------------------------------------------------------------------------------------
# A small vision transformer whose positional information comes from a depthwise convolution
# over the patch grid (conditional positional encoding), so it runs at any input size.


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SmallViT(nn.Module):
    def __init__(self, dim: int = 192, depth: int = 4, heads: int = 3, patch: int = 16, classes: int = 1000):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.pos = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        for m in self.modules():  # ViT-style init: small normal weights, zero biases
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(
                    m.weight, std=0.02 if isinstance(m, nn.Linear) else math.sqrt(2.0 / m.weight[0].numel())
                )
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = x + self.pos(x)
        x = self.blocks(x.flatten(2).transpose(1, 2))
        return self.head(self.norm(x).mean(dim=1))


# --------------------------------------------------------------------------------------------
# torchvision models with the interface apps deploy


class SSDLiteRaw(nn.Module):
    """SSDLite/MobileNetV3 backbone and head: raw box regressions and class logits per anchor,
    before anchor decoding and NMS (which apps run in their own code)."""

    def __init__(self, num_classes: int = 91):
        super().__init__()
        tv = import_torchvision()
        det = tv.models.detection.ssdlite320_mobilenet_v3_large(
            weights=None, weights_backbone=None, num_classes=num_classes
        )
        self.backbone = det.backbone
        self.head = det.head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = list(self.backbone(x).values())
        return {
            "boxes": _per_anchor(self.head.regression_head, features),
            "scores": _per_anchor(self.head.classification_head, features),
        }


def _per_anchor(head: nn.Module, features: list[torch.Tensor]) -> torch.Tensor:
    """torchvision's ``SSDScoringHead.forward``: each map's (N, A*K, H, W) as (N, H*W*A, K), same
    values and order.  torchvision reshapes a permuted view, which is contiguous exactly when the
    map is 1x1; the last maps are 1x1 at some input sizes only, so ``torch.export`` had to pin H and
    W.  An explicit contiguous copy of the permuted map has the same layout at every size."""
    k = head.num_columns
    outs = []
    for module, feature in zip(head.module_list, features, strict=True):
        r = module(feature).permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format)
        outs.append(r.view(r.shape[0], -1, k))
    return torch.cat(outs, dim=1)


class SegmentationOut(nn.Module):
    """torchvision segmentation models return {"out": ..., "aux": ...}; apps ship "out"."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self.model(x)["out"]}


def mobilenet_v2(width_mult: float = 1.0) -> nn.Module:
    return import_torchvision().models.mobilenet_v2(weights=None, width_mult=width_mult)


def resnet50() -> nn.Module:
    return import_torchvision().models.resnet50(weights=None)


def deeplabv3_mobilenet_v3() -> nn.Module:
    seg = import_torchvision().models.segmentation
    return SegmentationOut(
        seg.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, aux_loss=False)
    )


def deeplabv3_resnet101() -> nn.Module:
    seg = import_torchvision().models.segmentation
    return SegmentationOut(seg.deeplabv3_resnet101(weights=None, weights_backbone=None, aux_loss=False))


def tiny_generator() -> nn.Module:
    return AnimeGANGenerator(width=8, n_res=2)


def tiny_classifier() -> nn.Module:
    return mobilenet_v2(width_mult=0.35)
