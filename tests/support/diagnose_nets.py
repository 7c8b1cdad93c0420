"""Small networks and helpers for the localisation tests (not collected)."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from parbench import zoo
from parbench.backends.base import ExportRequest, flatten_outputs


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 1, act: type[nn.Module] = nn.ReLU):
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            act(inplace=True),
        )


class Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            ConvBNAct(c, c, groups=c, act=nn.Hardswish), nn.Conv2d(c, c, 1), nn.BatchNorm2d(c)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class HeldOut(nn.Module):
    """A multi-layer net outside the zoo: conv/BN/activation stages with in-place activations, a
    plain conv + ReLU (where the fault is planted), a residual block, two branches held in a
    ModuleList and summed, a pooled linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvBNAct(3, 16, stride=2),
            ConvBNAct(16, 16, groups=16, act=nn.Hardswish),
            nn.Sequential(nn.Conv2d(16, 24, 1), nn.ReLU(inplace=True)),
            Residual(24),
            ConvBNAct(24, 32, stride=2),
        )
        self.branches = nn.ModuleList(
            [nn.Conv2d(32, 32, 1), nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())]
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.features(x)
        y = self.branches[0](y) + self.branches[1](y)
        return self.head(torch.flatten(self.pool(y), 1))


PLANTED = "features.2.0"  # the conv that gets the wrong weights


def plant_fault(module: nn.Module, path: str = PLANTED) -> nn.Module:
    """A copy with half of one conv's output channels negated: a wrong weight in one layer."""
    broken = copy.deepcopy(module)
    conv = broken.get_submodule(path)
    with torch.no_grad():
        conv.weight[: conv.out_channels // 2].neg_()
    return broken


class Spiky(nn.Module):
    """One channel of ``spike`` spans ~1e4 while the others span ~1: a per-tensor int8 scale for
    that activation crushes every other channel.  ``mix`` scales that channel down again, so the
    float network is well behaved."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 16, stride=2)
        self.spike = nn.Conv2d(16, 16, 3, padding=1)
        self.mix = nn.Conv2d(16, 16, 1)
        self.act = nn.ReLU()
        self.head = nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.mix(self.spike(self.stem(x)))))


def make_spiky(net: Spiky) -> Spiky:
    with torch.no_grad():
        net.spike.weight[0].mul_(1e3)
        net.spike.bias[0] = 1e4
        net.mix.weight[:, 0].mul_(1e-4)
    return net


class Branchy(nn.Module):
    """A forward whose path depends on the input width: tracing freezes the branch it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.big = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.small = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.stem(x))
        if x.shape[-1] > 40:
            y = self.big(y)
        else:
            y = self.small(y)
        return self.head(y)


def spec(name: str, factory: Callable[[], nn.Module], sizes: tuple[int, ...], example: int) -> zoo.ModelSpec:
    return zoo.ModelSpec(
        name, "generic", factory, sizes, example, inputs=(zoo.InputSpec("image", (1, 3, "size", "size")),)
    )


def build(spec_: zoo.ModelSpec, seed: int = 0) -> nn.Module:
    """The model with seeded weights and batch-norm statistics from the photo's variations."""
    torch.manual_seed(seed)
    module = spec_.resolve_factory()()
    if any(isinstance(m, nn.BatchNorm2d) for m in module.modules()):
        zoo.recalibrate_batchnorm(module, zoo.calibration_inputs(spec_, spec_.example_size))
    return module.eval()


def inputs(spec_: zoo.ModelSpec, size: int, index: int = 0) -> OrderedDict[str, np.ndarray]:
    return zoo.example_inputs(spec_, size, index)


def request(
    module: nn.Module,
    spec_: zoo.ModelSpec,
    size: int,
    *,
    int8: bool = False,
    sizes: tuple[int, ...] | None = None,
) -> ExportRequest:
    example = tuple(torch.from_numpy(v) for v in zoo.example_inputs(spec_, size).values())
    with torch.no_grad():
        names = list(flatten_outputs(module(*example)))
    return ExportRequest(
        module=module,
        spec=spec_,
        example_inputs=example,
        export_size=size,
        sizes=list(sizes or [size]),
        per_size=sizes is None,
        calibration=zoo.calibration_inputs(spec_, size) if int8 else (),
        output_names=names,
    )


def carries(report, path: str) -> bool:  # noqa: ANN001
    """Does the first flagged row of a LayerReport stand for ``path`` (its layer, or fused into it)?"""
    first = report.flagged.iloc[0]
    return first["layer"] == path or path in str(first["fused_with"] or "").split(",")


def spiky_model() -> Spiky:
    """A config factory (``support.diagnose_nets:spiky_model``) for the command-line tests."""
    return make_spiky(Spiky())
