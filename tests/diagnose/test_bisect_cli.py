"""`parbench bisect` on a model from a user's TOML: the verdict, the first diverging layer, the
per-layer table as CSV and Model Explorer node data, and the fix it points to (keep_fp32 from the
command line or from ``[models.X.options.quantized_int8]``)."""

from __future__ import annotations

import json
import textwrap

import pandas as pd
import pytest
from click.testing import CliRunner

from parbench.cli.bisect import bisect_command

pytestmark = pytest.mark.slow

CONFIG = """
[models.spiky]
factory = "support.diagnose_nets:spiky_model"
task = "generic"
sizes = [64]

[models.spiky_kept]
factory = "support.diagnose_nets:spiky_model"
task = "generic"
sizes = [64]

[models.spiky_kept.options.quantized_int8]
keep_fp32 = ["spike", "mix"]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bisect")
    cfg = tmp / "parbench.toml"
    cfg.write_text(textwrap.dedent(CONFIG))

    def invoke(*args: str):
        common = ["--config", str(cfg), "--cache-dir", str(tmp / "cache")]
        return CliRunner().invoke(bisect_command, [*args, *common])

    return tmp, invoke


def test_bisect_names_the_layer_int8_destroys_and_writes_its_tables(run):
    tmp, invoke = run
    csv, nodes = tmp / "layers.csv", tmp / "nodes.json"
    res = invoke("spiky", "--variant", "quantized_int8", "--csv", str(csv), "--node-data", str(nodes))
    assert res.exit_code == 0, res.output
    out = res.output
    assert "verdict: fail" in out
    first = out.split("first flagged layers", 1)[1].splitlines()[1]
    assert " spike (Conv2d)" in first and "channel SNR below limit" in first, out
    assert "the damage starts at spike" in out
    table = pd.read_csv(csv)
    assert table.loc[table.over, "layer"].iloc[0] == "spike"
    data = json.loads(nodes.read_text())
    (graph,) = data.values()
    assert graph["results"] and all("value" in v for v in graph["results"].values())


def test_keep_fp32_from_the_command_line_and_from_toml_fixes_it(run):
    _, invoke = run
    for args in (("spiky", "--keep-fp32", "spike", "--keep-fp32", "mix"), ("spiky_kept",)):
        res = invoke(*args, "--variant", "quantized_int8", "--no-table")
        assert res.exit_code == 0, res.output
        assert "verdict: pass" in res.output and "no layer flagged" in res.output, res.output


def test_bad_requests_say_what_was_wrong(run):
    _, invoke = run
    res = invoke("spiky", "--variant", "onnx", "--keep-fp32", "spike")
    assert res.exit_code == 2 and "options.onnx" in res.output and "keep_fp32" in res.output, res.output
    res = invoke("spiky", "--variant", "quantized_int8", "--keep-fp32", "no.such.layer")
    assert res.exit_code != 0 and "no.such.layer" in res.output, res.output
    res = invoke("spiky", "--variant", "quantized_int8", "--case", "7")
    assert res.exit_code == 1 and "case 7: spiky has 2 fixture cases at 64 px (0..1)" in res.output
    res = invoke("nope", "--variant", "onnx")
    assert res.exit_code == 2 and "unknown model 'nope'" in res.output
