"""Layer identity: the eager record, scope parsing, the mapping rules, and correct exports of every
fp32 form agreeing with eager at every layer they map (a wrong mapping would show as a large error)."""

from __future__ import annotations

import pytest
import torch
from support.diagnose_nets import inputs, request
from torch import nn

from parbench.backends import get_backend
from parbench.diagnose.layers import (
    EagerRecord,
    Layer,
    ScopedNode,
    _onnx_scope_from_name,
    record_eager,
    resolve,
)
from parbench.diagnose.localise import localise


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.twice = nn.Tanh()
        self.keep = nn.Identity()
        self.drop = nn.Dropout(0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))
        return self.drop(self.keep(self.twice(self.twice(y) + y)))


def test_eager_record_order_flow_and_ambiguity():
    rec = record_eager(Shared().eval(), (torch.rand(1, 3, 8, 8),))
    layers = rec.by_path()
    assert [layer.path for layer in rec.layers] == ["conv", "act", "keep", "drop"]
    assert layers["conv"].producers == () and layers["act"].producers == ("conv",)
    assert layers["conv"].consumers == ("act",)  # the in-place ReLU reads it
    assert not layers["act"].identity_like  # in place, but it changed the values
    assert layers["keep"].identity_like and layers["drop"].identity_like
    assert rec.repeated == {"twice": 2} and "twice" not in layers and "twice" in rec.skipped
    assert rec.values["act"].min() >= 0 and rec.values["conv"].min() < 0  # copied before ReLU ran in place


def test_containers_are_layers_only_when_they_compute(heldout):
    s, m = heldout
    rec = record_eager(m, tuple(torch.from_numpy(v) for v in inputs(s, 64).values()))
    paths = [layer.path for layer in rec.layers]
    assert "features.3" in paths  # the residual add is its own computation
    assert "features.0" not in paths and "features.0" in rec.skipped  # returns its ReLU's output
    res = rec.by_path()["features.3"]
    assert set(res.producers) == {"features.2.1", "features.3.body.2"}
    assert paths.index("features.2.0") < paths.index("features.3") < paths.index("head")
    assert "branches.0" in paths and "branches.1.0" in paths  # held in a ModuleList, called by the root
    assert not rec.by_path()["features.0.2"].identity_like  # in place, but it changed the values


def test_onnx_scope_from_torchscript_exporter_names():
    assert _onnx_scope_from_name("/inner/blocks/blocks.0/conv/conv.0/Conv") == "inner.blocks.0.conv.0"
    assert _onnx_scope_from_name("/inner/stem/Conv") == "inner.stem"
    name = "/inner/features/features.3/body/body.0/body.0.0/Conv"
    assert _onnx_scope_from_name(name) == "inner.features.3.body.0.0"
    assert _onnx_scope_from_name("/Add") == ""
    assert _onnx_scope_from_name("Constant_12") == ""


def _record(*layers: Layer) -> EagerRecord:
    return EagerRecord(list(layers), {}, {}, {x.path for x in layers}, {x.path for x in layers}, None, {})


def _layer(path: str, order: int, producers=(), consumers=(), foldable=False) -> Layer:
    return Layer(path, order, "X", True, (1,), tuple(producers), tuple(consumers), False, foldable)


def test_folded_batch_norm_takes_the_conv_value_only_when_it_is_the_sole_consumer():
    conv, bn = _layer("c", 0, (), ("b",)), _layer("b", 1, ("c",), ("r",), foldable=True)
    relu = _layer("r", 2, ("b",))
    nodes = [
        ScopedNode("conv", "Conv", "c", ("x",), ("v1",)),
        ScopedNode("relu", "Relu", "r", ("v1",), ("v2",)),
    ]
    m = resolve(_record(conv, bn, relu), nodes, ["v2"], source="t")
    assert m.where == {"b": "v1", "r": "v2"} and m.fused == {"b": ["c"]} and "c" in m.skipped
    # the conv's output also read elsewhere: the batch norm cannot have been folded into it
    conv2 = _layer("c", 0, (), ("b", "other"))
    m = resolve(_record(conv2, bn, relu), nodes, ["v2"], source="t")
    assert m.where == {"c": "v1", "r": "v2"} and "b" in m.skipped


def test_ambiguous_scopes_and_absent_layers():
    a, b = _layer("a", 0), _layer("b", 1, ("a",))
    two_out = [
        ScopedNode("n1", "Op", "a", ("x",), ("v1", "v2")),
        ScopedNode("n2", "Op", "", ("v1", "v2"), ("v3",)),
    ]
    m = resolve(_record(a, b), two_out, ["v3"], source="t", complete=True)
    assert "a" in m.skipped and "ambiguous" in m.skipped["a"]
    assert m.absent == {"b": "the eager model ran this layer; the form's graph has no node for it"}
    m = resolve(_record(a, b), two_out, ["v3"], source="t", complete=False)
    assert not m.absent and "b" in m.skipped


FP32_FORMS = ["torchscript", "lite", "onnx", "onnx-dynamo", "executorch_fp32", "coreml_fp32"]


@pytest.mark.slow
@pytest.mark.parametrize("form", FP32_FORMS)
def test_a_correct_export_agrees_with_eager_at_every_mapped_layer(form, heldout, tmp_path):
    s, m = heldout
    req = request(m, s, 64)
    variant = form.split("-")[0]
    if form == "onnx-dynamo":
        from parbench.backends.onnx import OnnxBackend

        backend = OnnxBackend(exporter="dynamo")
    else:
        backend = get_backend(variant)
    avail = backend.available()
    if not avail.can_export:
        pytest.skip(f"{variant} cannot export here: {avail.reason}")
    x = inputs(s, 64)
    if variant == "executorch_fp32":
        rep = localise(m, variant, req, x)
    else:
        art = backend.export(req, tmp_path / form)
        rep = localise(m, variant, art, x)
    compared = rep.compared
    assert rep.flagged.empty, rep.render()
    assert len(compared) >= (4 if variant == "coreml_fp32" else 10), rep.render()
    assert (compared.snr_db > 80).all() and (compared.cosine > 0.99999).all(), rep.table.to_string()
    if variant == "onnx":
        # the TorchScript-based exporter folds each batch norm into its conv: one row for both
        assert any(rep.table.fused_with.fillna("").str.len() > 0) or form == "onnx-dynamo"
