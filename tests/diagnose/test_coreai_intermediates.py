"""Localising a Core AI departure from eager: a planted broken op must be the one found.

The asset is converted from a copy of the model whose middle convolution has negated weights;
eager is the original.  Everything before that convolution must agree, and the first op that
departs must be the convolution or computed from it (a fused conv + ReLU exposes only the ReLU's
value).  Needs coreai-torch, coreai-core (and coreai-opt for fp16); skips with the reason without.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from parbench.backends.base import ExportRequest, flatten_outputs
from parbench.backends.coreai import CoreAIFp16Backend, CoreAIFp32Backend
from parbench.errors import SessionError

FORMS = {"coreai_fp32": CoreAIFp32Backend, "coreai_fp16": CoreAIFp16Backend}
_why = CoreAIFp16Backend().available()
pytestmark = pytest.mark.skipif(not _why.can_run, reason=_why.reason or "ok")


class Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.stem(x)
        z = self.act(self.mid(y)) + y
        return {"out": self.head(z), "pooled": z.mean((2, 3))}


def chain() -> nn.Module:
    torch.manual_seed(0)
    return Chain().eval()


def request(module: nn.Module, size: int, sizes: list[int]) -> ExportRequest:
    torch.manual_seed(1)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        names = list(flatten_outputs(module(x)))
    return ExportRequest(
        module=module,
        spec=SimpleNamespace(name="chain", input_names=["image"]),
        example_inputs=(x,),
        export_size=size,
        sizes=sizes,
        per_size=False,
        output_names=names,
    )


def planted(module: nn.Module) -> nn.Module:
    broken = copy.deepcopy(module)
    with torch.no_grad():
        broken.mid.weight.neg_()
    return broken


def inputs(size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {"image": rng.standard_normal((1, 3, size, size)).astype(np.float32)}


@pytest.mark.parametrize("form", list(FORMS))
def test_planted_conv_is_the_first_departure(form: str, tmp_path) -> None:
    from parbench.diagnose.coreai_intermediates import localise

    module = chain()
    art = FORMS[form]().export(request(planted(module), 32, [24, 32]), tmp_path / "broken")
    assert art.meta["shapes"] == "dynamic"
    found = localise(module, art, inputs(24))  # a size other than the export size
    assert found.function == "main_static"  # the dynamic asset, specialized to the input's shape
    assert any("set_static_shape_config" in n for n in found.notes)
    assert found.counts["compared"] >= 3, found.counts
    first = found.first
    assert first is not None, found.render()
    where = {first["module"]} | {s["module"] for s in first["suspects"]}
    assert "mid" in where, found.render()
    assert first["module"] in ("mid", "act", ""), found.render()  # the conv, its ReLU, or the add
    assert first["cosine"] < 0.5
    before = found.table[found.table.order < first["order"]]
    assert not before.empty and not before.over.any(), found.render()
    assert any(m.startswith("stem") for m in before.module), found.render()
    text = found.render()
    assert f"first departing op: #{first['order']} {first['node']}" in text


@pytest.mark.parametrize("form", list(FORMS))
def test_faithful_asset_has_no_departure(form: str, tmp_path) -> None:
    from parbench.diagnose.coreai_intermediates import localise

    module = chain()
    art = FORMS[form]().export(request(module, 32, [32]), tmp_path / "ok")
    found = localise(module, art.path, inputs(32))  # a bare path: facts come from the asset
    assert found.first is None, found.render()
    assert found.counts["compared"] >= 3
    assert (found.table.snr_db > 30).all()
    assert "none departs" in found.render()


def test_release_mode_asset_is_refused(tmp_path) -> None:
    import coreai_torch

    from parbench.backends.coreai import exported_program
    from parbench.diagnose.coreai_intermediates import localise

    module = chain()
    x = torch.from_numpy(inputs(16)["image"])
    ep = exported_program(module, (x,))
    program = (
        coreai_torch.TorchConverter(mode=coreai_torch.TorchConverter.Mode.RELEASE)
        .add_exported_program(ep, input_names=["image"], output_names=["out", "pooled"])
        .to_coreai()
    )
    path = tmp_path / "release.aimodel"
    program.save_asset(path)
    with pytest.raises(SessionError, match="no torch-to-Core AI op mapping"):
        localise(module, path, inputs(16))


def test_input_shape_the_asset_does_not_take(tmp_path) -> None:
    from parbench.diagnose.coreai_intermediates import localise

    module = chain()
    art = CoreAIFp32Backend().export(request(module, 16, [16]), tmp_path / "fixed")
    assert art.meta["shapes"] == "static"
    with pytest.raises(SessionError, match=r"no function of the asset takes input shapes"):
        localise(module, art, inputs(20))


def test_failed_record_is_annotated(tmp_path) -> None:
    from parbench.diagnose.coreai_intermediates import annotate

    module = chain()
    art = CoreAIFp32Backend().export(request(planted(module), 24, [24]), tmp_path / "broken")
    record = SimpleNamespace(message="coreai_fp32 fails parity", first_divergence=None)
    annotate(record, module, art, inputs(24))
    assert record.message.startswith("coreai_fp32 fails parity\nCore AI vs eager, op by op")
    assert "first departing op: #" in record.message
    first = record.first_divergence
    assert first.status == "found" and first.tool == "coreai-intermediates" and first.compared >= 3, first
    assert first.layer and first.snr_db is not None and first.snr_db < 30.0
    # the typed entry survives a parity record's write and read
    from parbench.records.parity import FirstDivergence, ParityRecord

    rec = ParityRecord(model="chain", variant="coreai_fp32", size=24, verdict="fail", first_divergence=first)
    back = ParityRecord.model_validate_json(rec.model_dump_json())
    assert back.first_divergence.layer == first.layer and back.first_divergence.status == "found"
    not_an_asset = SimpleNamespace(message="", first_divergence=None)
    annotate(not_an_asset, module, SimpleNamespace(path=tmp_path / "missing.aimodel"), inputs(24))
    assert "the Core AI localisation could not run" in not_an_asset.message
    assert isinstance(not_an_asset.first_divergence, FirstDivergence)
    assert not_an_asset.first_divergence.status == "not_run" and not_an_asset.first_divergence.reason


def test_bisect_command_on_a_user_model(tmp_path) -> None:
    import textwrap

    import pandas as pd
    from click.testing import CliRunner

    from parbench.cli.bisect import bisect_command

    (tmp_path / "coreai_user_nets.py").write_text(
        textwrap.dedent("""
        import torch
        from torch import nn

        def build():
            torch.manual_seed(0)
            return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.Conv2d(8, 4, 3, padding=1), nn.Sigmoid())
        """)
    )
    cfg = tmp_path / "parbench.toml"
    cfg.write_text('[models.ai_tiny]\nfactory = "coreai_user_nets:build"\ntask = "generic"\nsizes = [32]\n')
    out_csv = tmp_path / "table.csv"
    args = ["ai_tiny", "--variant", "coreai_fp16", "--size", "32", "--config", str(cfg)]
    res = CliRunner().invoke(
        bisect_command, [*args, "--cache-dir", str(tmp_path / "cache"), "--csv", str(out_csv)]
    )
    assert res.exit_code == 0, res.output
    assert "ai_tiny coreai_fp16 32px" in res.output and "Core AI vs eager, op by op" in res.output
    assert "none departs" in res.output
    assert "batch norm folded into its convolution in float32" in res.output
    table = pd.read_csv(out_csv)
    assert len(table) >= 3 and (table.snr_db > 30).all()
