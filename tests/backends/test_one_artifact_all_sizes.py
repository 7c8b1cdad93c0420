"""One ExecuTorch artifact for every size when a feature map shrinks to 1x1 at the smallest size.

A detector's last feature maps are 1x1 at small inputs and larger at big ones.  ``torch.export``
then pins height and width (0/1 specialization); the ExecuTorch forms retry with size-oblivious
reasoning, which works once no tensor's layout depends on a map being 1x1.
"""

from __future__ import annotations

import pytest
import torch
from support.forms import compare, make_request
from torch import nn

from parbench.backends import get_backend
from parbench.backends.export_support import size_oblivious
from parbench.errors import NeedsPerSize
from parbench.zoo import networks
from parbench.zoo.torchvision_shim import import_torchvision

SIZES = [32, 48, 64]  # the last map is 1x1 at 32 px, 2x2 at 48 and 64 px


class TinyDetector(nn.Module):
    """Five stride-2 convs and an SSD-style head: (N, A*K, H, W) -> (N, H*W*A, K) per map."""

    def __init__(self, copy_permuted: bool) -> None:
        super().__init__()
        chans = [3, 8, 8, 8, 8, 8]
        self.down = nn.ModuleList(nn.Conv2d(a, b, 3, 2, 1) for a, b in zip(chans, chans[1:], strict=False))
        self.heads = nn.ModuleList(nn.Conv2d(8, 2 * 4, 1) for _ in range(2))
        self.copy_permuted = copy_permuted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = []
        for conv in self.down:
            x = torch.relu(conv(x))
            maps.append(x)
        outs = []
        for head, m in zip(self.heads, maps[-2:], strict=True):
            r = head(m)
            n, _, h, w = r.shape
            if self.copy_permuted:  # as parbench's SSDLiteRaw
                r = r.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format).view(n, -1, 4)
            else:  # as torchvision's SSDScoringHead
                r = r.view(n, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
            outs.append(r)
        return torch.cat(outs, dim=1)


@pytest.mark.parametrize("form", ["executorch_fp32", "executorch_int8"])
def test_one_artifact_serves_sizes_where_a_map_is_1x1_at_some_sizes_only(form, photo, tmp_path) -> None:
    torch.manual_seed(0)
    model = TinyDetector(copy_permuted=True).eval()
    backend = get_backend(form)
    art = backend.export(make_request(model, photo, SIZES[0], SIZES), tmp_path / "det")
    assert art.sizes is None
    assert art.meta["dynamic_shapes"] is True and art.meta["size_oblivious"] is True
    session = backend.load(art)
    for size in SIZES:
        (m,) = compare(session, model, photo, size).values()
        if form == "executorch_fp32":
            assert m["rel_l2"] < 1e-4, (size, m)
        else:
            assert m["cosine"] > 0.99, (size, m)


def test_a_layout_that_depends_on_a_1x1_map_still_needs_one_artifact_per_size(photo, tmp_path) -> None:
    model = TinyDetector(copy_permuted=False).eval()
    with pytest.raises(NeedsPerSize, match="Constraints violated"):
        get_backend("executorch_fp32").export(make_request(model, photo, SIZES[0], SIZES), tmp_path / "det")


def _torchvision_ssdlite(num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    return import_torchvision().models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=num_classes
    )


def test_ssdlite_raw_is_torchvision_backbone_and_head_bit_for_bit() -> None:
    det = _torchvision_ssdlite(num_classes=5).eval()
    raw = networks.SSDLiteRaw(num_classes=5).eval()
    keys = [f"backbone.{k}" for k in det.backbone.state_dict()] + [f"head.{k}" for k in det.head.state_dict()]
    assert list(raw.state_dict()) == keys
    raw.backbone.load_state_dict(det.backbone.state_dict())
    raw.head.load_state_dict(det.head.state_dict())
    with torch.no_grad():
        for size in (256, 300, 640):
            x = torch.randn(1, 3, size, size)
            ref = det.head(list(det.backbone(x).values()))
            out = raw(x)
            assert torch.equal(out["boxes"], ref["bbox_regression"]), size
            assert torch.equal(out["scores"], ref["cls_logits"]), size


def test_ssdlite_raw_exports_with_dynamic_height_and_width() -> None:
    torch.manual_seed(0)
    model = networks.SSDLiteRaw(num_classes=3).eval()
    h = torch.export.Dim("height", min=256, max=640)
    w = torch.export.Dim("width", min=256, max=640)
    with size_oblivious():
        ep = torch.export.export(model, (torch.randn(1, 3, 256, 256),), dynamic_shapes=({2: h, 3: w},))
    with torch.no_grad():
        for size in (256, 640):
            x = torch.randn(1, 3, size, size)
            ref, got = model(x), ep.module()(x)
            for k in ref:
                assert torch.equal(got[k], ref[k]), (size, k)
