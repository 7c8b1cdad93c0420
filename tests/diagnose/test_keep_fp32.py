"""The fix the localisation points to: keep the destroyed layers in fp32 (``keep_fp32`` of both int8
forms), then the same localisation finds nothing and the output is back within the int8 policy."""

from __future__ import annotations

import pytest
import torch
from support.diagnose_nets import build, inputs, request, spec

from parbench.backends.executorch import ExecuTorchInt8Backend
from parbench.backends.quantized import QuantizedInt8Backend
from parbench.compare import compare
from parbench.diagnose.intermediates import final_outputs

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend_cls", [QuantizedInt8Backend, ExecuTorchInt8Backend])
def test_keep_fp32_restores_the_layer_int8_destroyed(backend_cls, spiky, tmp_path):
    s, m = spiky
    x = inputs(s, 64)
    req = request(m, s, 64, int8=True)
    golden = final_outputs(m, x)
    verdicts = {}
    for keep in ((), ("spike", "mix")):
        backend = backend_cls(keep_fp32=keep)
        assert ("keep_fp32" in backend.options()) == bool(keep)  # part of the cache key only when set
        art = backend.export(req, tmp_path / f"keep{len(keep)}")
        verdicts[keep] = compare(backend.load(art).run(x), golden, "generic", "int8")
    assert not verdicts[()].passed
    fixed = verdicts[("spike", "mix")]
    assert fixed.passed, fixed.explain()
    assert fixed.outputs[0].metrics["cosine"] > 0.99


@pytest.mark.parametrize("backend_cls", [QuantizedInt8Backend, ExecuTorchInt8Backend])
def test_localising_the_fixed_form_finds_nothing_left(backend_cls, spiky):
    from parbench.diagnose.localise import localise

    s, m = spiky
    req = request(m, s, 64, int8=True)
    variant = backend_cls.name
    before = localise(m, variant, req, inputs(s, 64))
    after = localise(m, variant, req, inputs(s, 64), backend=backend_cls(keep_fp32=("spike", "mix")))
    assert before.first_layer() == "spike"
    assert after.flagged.empty, after.render()
    spike = after.table[after.table.layer == "spike"].iloc[0]
    assert spike.status == "skipped" or spike.ch_snr_db > 25, after.table.to_string()  # was ~0 dB


class _Sandwich(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.norm = torch.nn.InstanceNorm2d(4, affine=True)
        self.act = torch.nn.LeakyReLU(0.2)
        self.out = torch.nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.norm(self.conv(x))))


def test_keep_fp32_says_when_fx_quantizes_the_layer_anyway(tmp_path):
    s = spec("sandwich", _Sandwich, (32,), 32)
    m = build(s)
    req = request(m, s, 32, int8=True)
    art = QuantizedInt8Backend(keep_fp32=("norm",)).export(req, tmp_path / "a")
    assert any("keep_fp32 'norm': norm still int8" in n for n in art.meta["notes"]), art.meta["notes"]
    art = QuantizedInt8Backend(keep_fp32=("conv", "norm", "act")).export(req, tmp_path / "b")
    assert not any("keep_fp32" in n for n in art.meta["notes"]), art.meta["notes"]
