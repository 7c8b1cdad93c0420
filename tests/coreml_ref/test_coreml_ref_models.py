"""Models the executor has never seen: torch modules converted with ct.convert (traced and
exported, fp32 and fp16, iOS15-iOS18), run by the executor, compared to eager PyTorch.

Policy: fp32 programs match eager within 1e-4 (max abs error relative to the output's scale);
fp16 programs reach cosine >= 0.999 and relative L2 error <= 2e-2.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("coremltools")

from support.mil import convert, cosine, rel_l2  # noqa: E402
from support.nets import TinyViT  # noqa: E402

from parbench.coreml_ref import MLModel  # noqa: E402
from parbench.zoo import networks, recalibrate_batchnorm  # noqa: E402


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, 2, 1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, 1, 1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.up = nn.ConvTranspose2d(16, 8, 4, 2, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.c1(x)))
        y = F.hardswish(self.dw(y))
        y = F.max_pool2d(F.relu6(self.pw(y)), 2, ceil_mode=True)
        y = F.avg_pool2d(self.up(y), 3, 1, 1)
        return torch.softmax(self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1)), -1)


class KitchenSink(nn.Module):
    """Many op patterns in one graph: activations, reductions, layout, indexing, norms.

    No Python shape arithmetic: traced shape ints trip coremltools 9's torch frontend (numpy 2).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.gn = nn.GroupNorm(2, 8)
        self.ln = nn.LayerNorm(4)
        self.prelu = nn.PReLU(8)
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = self.prelu(self.gn(self.conv(x)))
        a, b = torch.chunk(y, 2, dim=1)
        y = torch.cat([torch.sigmoid(a) * b, F.silu(b), F.elu(a), F.leaky_relu(b, 0.1)], dim=1)[:, ::2]
        y = F.pad(y, (1, 2, 0, 1), mode="reflect") + F.pad(y, (1, 2, 0, 1), mode="replicate")
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True)
        y = F.pixel_shuffle(torch.cat([y, y.flip(3)], 1), 2)[:, :, 1:-1:2, ::3]  # 4 channels
        t = self.ln(y.flatten(2).transpose(1, 2))
        t = F.gelu(self.lin(t)) + torch.sqrt(t.abs() + 1) - torch.exp(-t.pow(2))
        att = torch.softmax(t @ t.transpose(1, 2) / 4.0, dim=-1) @ t
        s = att.mean(1) + att.amax(1) - att.sum(1).clamp(-1, 1)
        idx = torch.argmax(att.sum(-1), dim=1)
        return s, torch.cumsum(att, dim=1)[:, -3:], idx


CASES = {
    # name: (module factory, input shape, [(precision, target, source), ...])
    "convnet": (ConvNet, (1, 3, 32, 32), [("fp32", "iOS15", "trace"), ("fp16", "iOS18", "export")]),
    "kitchen": (
        KitchenSink,
        (1, 4, 10, 12),
        [("fp16", "iOS17", "trace"), ("fp32", "iOS16", "trace"), ("fp32", "iOS17", "export")],
    ),
    "vit": (
        lambda: TinyViT(dim=32, depth=1, heads=2, patch=8),
        (1, 3, 32, 32),
        [("fp32", "iOS16", "trace"), ("fp16", "iOS17", "export")],
    ),
    "animegan": (
        lambda: networks.AnimeGANGenerator(width=8, n_res=1),
        (1, 3, 32, 32),
        [("fp16", "iOS15", "trace")],
    ),
}


def _build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    factory, shape, _ = CASES[name]
    torch.manual_seed(seed)
    m = factory().eval()
    for mod in m.modules():  # non-trivial norm statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(seed + 1))
    return m, x


def _check(out: np.ndarray, ref: np.ndarray, precision: str) -> None:
    if not np.issubdtype(ref.dtype, np.floating):
        # argmax-style outputs: exact at fp32; under fp16 near-ties legitimately flip, so only shape
        assert out.shape == ref.shape
        if precision == "fp32":
            np.testing.assert_array_equal(out, ref)
        return
    if precision == "fp32":
        scale = max(1.0, float(np.abs(ref).max()))
        assert float(np.abs(out.astype(np.float64) - ref).max()) <= 1e-4 * scale
    else:
        assert cosine(out, ref) >= 0.999, cosine(out, ref)
        assert rel_l2(out, ref) <= 2e-2, rel_l2(out, ref)


PARAMS = [(n, *cfg) for n, (_, _, cfgs) in CASES.items() for cfg in cfgs]


@pytest.mark.parametrize("name,precision,target,source", PARAMS, ids=["-".join(p) for p in PARAMS])
def test_converted_module_matches_eager(name, precision, target, source, tmp_path_factory):
    torch.set_num_threads(1)
    m, x = _build(name)
    path = convert(
        m, x, tmp_path_factory.mktemp(name) / "m.mlpackage", precision=precision, target=target, source=source
    )
    ml = MLModel(path)
    with torch.no_grad():
        ref = m(x)
    refs = [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]
    out = ml.predict({ml.input_names[0]: x.numpy()})
    assert len(out) == len(refs)
    for o, r in zip(out.values(), refs, strict=True):
        assert o.shape == r.shape
        _check(o, r, precision)
    # a different input through the same program still matches (nothing was baked in)
    x2 = torch.rand(*x.shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref2 = m(x2)
    out2 = ml.predict({ml.input_names[0]: x2.numpy()})
    first = ref2[0] if isinstance(ref2, tuple) else ref2
    _check(next(iter(out2.values())), first.numpy(), precision)


@pytest.fixture(scope="module")
def mobilenet_fp16(tmp_path_factory):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = networks.mobilenet_v2()
    recalibrate_batchnorm(m, [(torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1)),)])
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    path = convert(m, x, tmp_path_factory.mktemp("mnv2") / "m.mlpackage", precision="fp16", target="iOS16")
    return m, x, path


def test_torchvision_mobilenet_v2_fp16(mobilenet_fp16):
    m, x, path = mobilenet_fp16
    ml = MLModel(path)
    with torch.no_grad():
        ref = m(x).numpy()
    out = ml.predict({"x": x.numpy()})
    (o,) = out.values()
    # coremltools 9 gives iOS16+ fp16 programs FLOAT16 inputs/outputs; predict returns the described type
    assert ml.outputs[ml.output_names[0]].dtype == "fp16"
    assert o.dtype == np.float16 and o.shape == (1, 1000)
    assert cosine(o, ref) >= 0.999
    assert np.argmax(o) == np.argmax(ref)
    # the same program at fp32 compute (fp16 weights kept) is closer to eager, but not by much:
    # for this network most of the fp16 error comes from rounding the weights, not the compute
    o32 = next(iter(MLModel(path, emulate_fp16=False).predict({"x": x.numpy()}).values()))
    assert o32.dtype == np.float32
    assert 0 < rel_l2(o32, ref) < rel_l2(o, ref)


class Recurrent(nn.Module):
    """torch LSTM converts to MIL lstm; GRU converts to a while_loop (control flow)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 6, bidirectional=True)
        self.gru = nn.GRU(12, 4)
        self.rnn = nn.RNN(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, (h, c) = self.lstm(x)
        z, _ = self.gru(y)
        return self.rnn(z)[0], h + c.sum()


def test_recurrent_layers_and_control_flow(tmp_path):
    torch.manual_seed(0)
    m = Recurrent().eval()
    x = torch.randn(7, 2, 5)
    path = convert(m, x, tmp_path / "r.mlpackage", precision="fp32", target="iOS17")
    ml = MLModel(path)
    assert {"lstm", "while_loop", "rnn"} <= set(ml.op_types().values())
    with torch.no_grad():
        ref = m(x)
    for o, r in zip(ml.predict({"x": x.numpy()}).values(), ref, strict=True):
        np.testing.assert_allclose(o, r.numpy(), rtol=1e-5, atol=1e-5)
