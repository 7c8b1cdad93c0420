"""Models, inputs, requests and metrics for the deployment-form tests (not collected)."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from parbench.backends.base import ExportRequest, flatten_outputs

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def crop(photo: torch.Tensor, size: int, index: int) -> torch.Tensor:
    """A normalized square crop of the photo (position and scale vary with index)."""
    _, _, h, w = photo.shape
    side = int(min(h, w) * (0.55 + 0.4 * ((index * 37) % 10) / 10))
    top = (index * 53) % (h - side + 1)
    left = (index * 29) % (w - side + 1)
    x = photo[:, :, top : top + side, left : left + side]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return ((x - MEAN) / STD).contiguous()


@torch.no_grad()
def recalibrate_bn(module: nn.Module, batches: Sequence[torch.Tensor]) -> nn.Module:
    """Batch-norm statistics from real images, so activations have a realistic scale."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    module.train()
    for b in batches:
        module(b)
    return module.eval()


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


def make_request(
    module: nn.Module,
    photo: torch.Tensor,
    export_size: int,
    sizes: Sequence[int],
    per_size: bool = False,
    n_calibration: int = 4,
) -> ExportRequest:
    example = (crop(photo, export_size, 0),)
    calibration = [(crop(photo, export_size, 100 + i),) for i in range(n_calibration)]
    with torch.no_grad():
        names = list(flatten_outputs(module(*example)))
    return ExportRequest(
        module=module,
        spec=SimpleNamespace(name=type(module).__name__, input_names=["image"]),
        example_inputs=example,
        export_size=export_size,
        sizes=list(sizes),
        per_size=per_size,
        calibration=calibration,
        output_names=names,
    )


def metrics(a: np.ndarray, r: np.ndarray) -> dict[str, float]:
    """The project's rel_l2 and cosine, computed in float64 on flattened arrays."""
    a64, r64 = np.asarray(a, np.float64).ravel(), np.asarray(r, np.float64).ravel()
    na, nr = np.linalg.norm(a64), np.linalg.norm(r64)
    return {
        "rel_l2": float(np.linalg.norm(a64 - r64) / max(nr, 1e-12)),
        "cosine": float(a64 @ r64 / (na * nr)) if na and nr else float(na == nr),
        "max_abs": float(np.max(np.abs(a64 - r64))),
    }


def compare(session, module: nn.Module, photo: torch.Tensor, size: int, index: int = 7) -> dict[str, dict]:
    """Run a session and eager on the same crop; metrics per output name."""
    x = crop(photo, size, index)
    out = session.run({"image": x.numpy()})
    with torch.no_grad():
        ref = flatten_outputs(module(x))
    assert list(out) == list(ref), f"output names {list(out)} != eager {list(ref)}"
    for k in ref:
        assert out[k].shape == tuple(ref[k].shape), (
            f"{k}: shape {out[k].shape} != eager {tuple(ref[k].shape)}"
        )
    return {k: metrics(out[k], ref[k].numpy()) for k in ref}


def load_photo() -> torch.Tensor:
    """matplotlib's sample photograph (600x512 RGB) as a float tensor in [0, 1], 1x3xHxW."""
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()
