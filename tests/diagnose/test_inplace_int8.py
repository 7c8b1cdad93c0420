"""An int8 op that rewrites its input in place must not be blamed on the layer before it: torch
2.13's qnnpack ReLU6 (in place, as torchvision builds it) scrambles channels-last tensors, and the
localisation names the ReLU6, with the convolution before it intact."""

from __future__ import annotations

import pytest
import torch
from support.diagnose_nets import ConvBNAct, build, inputs, request, spec
from torch import nn

from parbench.diagnose.localise import localise

pytestmark = pytest.mark.slow


class Clamped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 16, stride=2, act=nn.ReLU6)
        self.head = nn.Conv2d(16, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stem(x))


def test_the_in_place_clamp_is_found_not_the_conv_before_it():
    s = spec("clamped", Clamped, (64,), 64)
    m = build(s)
    rep = localise(m, "quantized_int8", request(m, s, 64, int8=True), inputs(s, 64))
    if rep.flagged.empty:
        pytest.skip("this torch's qnnpack clamp keeps channels-last layouts: nothing to localise")
    assert rep.first_layer() == "stem.2", rep.render()
    conv = rep.table[rep.table.layer == "stem.1"].iloc[0]  # the conv + batch norm, one int8 kernel
    assert conv.status == "compared" and not conv.over and conv.snr_db > 25, rep.table.to_string()
