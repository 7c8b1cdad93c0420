"""The report: table, CSV, Model Explorer node data, text, the time budget and bad requests."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
from support.diagnose_nets import PLANTED, inputs, plant_fault, request

from parbench.backends import get_backend
from parbench.diagnose.layer_report import COLUMNS, channel_snr_db, layer_thresholds
from parbench.diagnose.localise import LocaliseError, LocaliseTimeout, localise


@pytest.fixture(scope="module")
def onnx_fault(heldout, tmp_path_factory):
    s, m = heldout
    art = get_backend("onnx").export(request(plant_fault(m), s, 64), tmp_path_factory.mktemp("onnx") / "m")
    return s, m, art


def test_thresholds_follow_the_family_policy():
    assert layer_thresholds("fp32") == {"snr_db": 60.0, "cosine": 0.9999, "ch_snr_db": 60.0}
    assert layer_thresholds("int8")["snr_db"] == pytest.approx(9.12, abs=0.01)
    assert layer_thresholds("int8", {"int8": {"rel_l2": 0.1}})["snr_db"] == pytest.approx(20.0)


def test_channel_snr_sees_a_crushed_channel_the_whole_tensor_snr_does_not():
    import numpy as np

    r = np.ones((1, 4, 8, 8), np.float32)
    r[:, 0] = 1e4
    a = r.copy()
    a[:, 1:] = 0.0  # three small channels lost
    assert channel_snr_db(a, r) < 2.0
    from parbench.compare import generic_metrics

    assert generic_metrics(a, r)["snr_db"] > 60


def test_table_csv_and_text(onnx_fault, tmp_path):
    s, m, art = onnx_fault
    rep = localise(m, "onnx", art, inputs(s, 64), model="heldout", size=64)
    assert list(rep.table.columns) == COLUMNS
    assert rep.first_layer() == PLANTED
    back = pd.read_csv(rep.to_csv(tmp_path / "t.csv"))
    assert list(back.columns) == COLUMNS and len(back) == len(rep.table)
    assert back.loc[back.over, "layer"].iloc[0] == PLANTED
    text = rep.render()
    assert f"#{int(rep.flagged.iloc[0].order)}" in text and PLANTED in text and "first flagged" in text
    assert "heldout as onnx at 64px" in text and "time:" in text
    # the error a layer introduces: the planted conv, not the layers after it that inherit it
    drops = rep.largest_drops(1)
    assert drops.iloc[0].layer == PLANTED
    after = rep.compared[rep.compared.order > rep.flagged.iloc[0].order]
    assert (after.introduced_db < drops.iloc[0].introduced_db / 2).all()


def test_model_explorer_node_data(onnx_fault, tmp_path):
    import onnx

    s, m, art = onnx_fault
    rep = localise(m, "onnx", art, inputs(s, 64))
    path = rep.write_node_data(tmp_path / "nd.json")
    data = json.loads(path.read_text())
    proto = onnx.load(str(art.path))
    assert list(data) == [proto.graph.name]
    graph = data[proto.graph.name]
    tensors = {o for n in proto.graph.node for o in n.output}
    assert graph["results"] and set(graph["results"]) <= tensors  # keys are the graph's tensor names
    assert all(set(v) == {"value"} for v in graph["results"].values())
    th = graph["thresholds"]
    assert th[0]["value"] == rep.thresholds["snr_db"] and all({"value", "bgColor"} == set(t) for t in th)
    planted = rep.names[PLANTED]
    assert graph["results"][planted]["value"] < rep.thresholds["snr_db"]
    with pytest.raises(ValueError, match="metric must be"):
        rep.node_data("psnr")
    intro = rep.node_data("introduced_db")[proto.graph.name]["results"]
    assert max(intro, key=lambda k: intro[k]["value"]) == planted


def test_budget_and_bad_requests(onnx_fault):
    s, m, art = onnx_fault
    x = inputs(s, 64)
    with pytest.raises(LocaliseTimeout, match="budget"):
        localise(m, "onnx", art, x, budget_s=0.0)
    with pytest.raises(LocaliseError, match="ExportRequest"):
        localise(m, "executorch_int8", art, x)
    with pytest.raises(LocaliseError, match="supported forms"):
        localise(m, "coreml_image", art, x)
    with pytest.raises(LocaliseError, match="unknown threshold"):
        localise(m, "onnx", art, x, {"psnr": 3})
    with pytest.raises(LocaliseError, match="non-empty"):
        localise(m, "onnx", art, {})


def test_onset_tells_one_culprit_from_build_up(onnx_fault):
    s, m, art = onnx_fault
    rep = localise(m, "onnx", art, inputs(s, 64))
    assert rep.onset().startswith(f"the damage starts at {PLANTED}")
    # a table whose SNR falls 3 dB per layer: no layer starts it
    rows = [
        dict.fromkeys(COLUMNS)
        | {
            "order": i,
            "layer": f"l{i}",
            "status": "compared",
            "snr_db": 30.0 - 3 * i,
            "introduced_db": 3.0,
            "over": 30.0 - 3 * i < 9.12,
        }
        for i in range(10)
    ]
    gradual = dataclasses.replace(rep, table=pd.DataFrame(rows, columns=COLUMNS))
    assert gradual.onset().startswith("no single layer starts it: SNR falls from 30.0 dB (l0) to 9.0 dB (l7)")
