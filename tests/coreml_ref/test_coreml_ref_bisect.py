"""bisect: eager leaf modules vs Core ML values by name, and fp16 vs fp32 compute, op by op."""

from __future__ import annotations

import copy
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

pytest.importorskip("coremltools")

from support.mil import convert  # noqa: E402

from parbench.cli.bisect import bisect_command
from parbench.coreml_ref.model import MLModel  # noqa: E402
from parbench.diagnose.bisect import bisect, match_modules, normalize_name


class Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.act2 = nn.Hardswish()
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.act3 = nn.Sigmoid()
        self.shared = nn.Tanh()  # called twice: its output is ambiguous
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act1(self.bn1(self.conv1(x)))
        y = self.act2(self.conv2(y))
        y = self.shared(self.act3(self.conv3(y)))
        return self.head(self.shared(y).mean((2, 3)))


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = Chain().eval()
    m.bn1.running_mean.uniform_(-0.1, 0.1)
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    d = tmp_path_factory.mktemp("bisect")
    fp32 = convert(m, x, d / "fp32.mlpackage", precision="fp32", target="iOS15")
    fp16 = convert(m, x, d / "fp16.mlpackage", precision="fp16", target="iOS16", source="export")
    return m, x, fp32, fp16


def test_normalize_name():
    assert normalize_name("input.5") == "input_5" == normalize_name("input_5_cast_fp16")
    assert normalize_name("14") == "var_14" == normalize_name("var_14")
    assert normalize_name("conv2d_3_cast_fp16") == "conv2d_3"


def test_matches_are_unique_and_skip_ambiguous_modules(chain):
    m, x, fp32, fp16 = chain
    for pkg, source in ((fp32, "trace"), (fp16, "export")):
        matches, used = match_modules(m, MLModel(pkg), (x,))
        assert used == source  # read from the package's metadata
        mods = {mm.module for mm in matches}
        assert {"bn1", "act1", "act2", "act3"} <= mods, (source, mods)  # the last value takes the output name
        assert "conv1" not in mods  # folded into bn1's conv: no value of its own
        assert len({mm.mil_name for mm in matches}) == len(matches)


def test_correct_fp32_conversion_has_nothing_over_threshold(chain):
    m, x, fp32, _ = chain
    res = bisect(m, fp32, {"x": x.numpy()})
    t = res.table
    assert isinstance(t, pd.DataFrame) and set(t.comparison) == {"eager_vs_coreml"}
    assert len(t) >= 5 and not t.over.any()
    assert (t.snr_db > 80).all() and "shared" not in set(t.module)
    assert res.first.empty
    assert "no fp16 comparison" in res.render()


def test_a_wrong_layer_is_found_first(chain):
    m, x, fp32, _ = chain
    broken = copy.deepcopy(m)
    with torch.no_grad():  # the package no longer matches this eager model from conv2 on
        broken.conv2.weight.mul_(1.2)
    res = bisect(broken, fp32, {"x": x.numpy()})
    first = res.first[res.first.comparison == "eager_vs_coreml"].iloc[0]
    assert first.module in ("conv2", "act2")
    before = res.table[(res.table.comparison == "eager_vs_coreml") & (res.table.order < first.order)]
    assert len(before) >= 2 and not before.over.any()  # bn1, act1 still agree
    text = res.render()
    assert "over threshold" in text and first["name"] in text
    # the op where the error enters has the largest SNR drop
    worst = res.table[res.table.comparison == "eager_vs_coreml"].sort_values("snr_drop").iloc[-1]
    assert worst.module in ("conv2", "act2") and worst.snr_drop > 40
    assert "largest SNR drops" in text


def test_fp16_program_compares_fp16_against_fp32_compute(chain):
    m, x, _, fp16 = chain
    res = bisect(m, fp16, [x.numpy()], threshold_snr=30)
    comps = res.table.groupby("comparison").size()
    assert comps["fp32_vs_fp16"] >= 8 and comps["eager_vs_coreml"] >= 4
    f = res.table[res.table.comparison == "fp32_vs_fp16"]
    assert (f.snr_db > 30).all() and (f.snr_db < 200).any()  # fp16 rounding is visible but small
    strict = bisect(m, fp16, [x.numpy()], threshold_snr=300)
    assert strict.first.groupby("comparison").size().get("fp32_vs_fp16", 0) >= 1
    assert np.all(np.diff(strict.first[strict.first.comparison == "fp32_vs_fp16"].order) > 0)


def test_bisect_command_on_a_user_model(tmp_path):
    from click.testing import CliRunner

    (tmp_path / "bisect_user_nets.py").write_text(
        textwrap.dedent("""
        import torch
        from torch import nn

        def build():
            return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                 nn.Conv2d(8, 4, 3, padding=1), nn.Sigmoid())
    """)
    )
    cfg = tmp_path / "parbench.toml"
    cfg.write_text(
        textwrap.dedent("""
        [models.bisect_tiny]
        factory = "bisect_user_nets:build"
        task = "generic"
        sizes = [32]
    """)
    )
    out_csv = tmp_path / "table.csv"
    res = CliRunner().invoke(
        bisect_command,
        [
            "bisect_tiny",
            "--variant",
            "coreml_fp16",
            "--size",
            "32",
            "--config",
            str(cfg),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--threshold-snr",
            "30",
            "--csv",
            str(out_csv),
        ],
    )
    assert res.exit_code == 0, res.output
    # layers by module path (the BatchNorm carries the conv it was folded into), then the same
    # program at fp32 against fp16 compute, op by op
    assert "bisect_tiny as coreml_fp16 at 32px" in res.output and "fp32 compute vs fp16 compute" in res.output
    table = pd.read_csv(out_csv)
    compared = table[table.status == "compared"]
    assert {"1", "3"} <= set(compared.layer.astype(str)) and (compared.snr_db > 30).all()
    bad = CliRunner().invoke(
        bisect_command, ["no_such_model", "--config", str(cfg), "--cache-dir", str(tmp_path / "c")]
    )
    assert bad.exit_code != 0 and "unknown model 'no_such_model'" in bad.output
