"""A network outside the zoo with a wrong weight planted in one conv: every form that can carry the
fault (it is exported from the patched copy; eager stays the original) is localised to that conv."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.diagnose_nets import PLANTED, carries, inputs, plant_fault, request

from parbench.backends import get_backend
from parbench.diagnose.localise import localise

pytestmark = pytest.mark.slow

FORMS = [
    "torchscript",
    "lite",
    "quantized_int8",
    "onnx",
    "executorch_fp32",
    "executorch_int8",
    "coreml_fp32",
    "coreml_fp16",
]


@pytest.mark.parametrize("variant", FORMS)
def test_planted_fault_is_localised_in_every_form(variant, heldout, tmp_path):
    backend = get_backend(variant)
    avail = backend.available()
    if not avail.can_export or not avail.can_run:
        pytest.skip(f"{variant} cannot export and run here: {avail.reason}")
    s, m = heldout
    req = request(plant_fault(m), s, 64, int8=backend.family == "int8")
    art = backend.export(req, tmp_path / "model")
    x = inputs(s, 64)
    shipped = backend.load(art).run(x)  # the shipped artifact really carries the fault
    with torch.no_grad():
        eager_out = m(torch.from_numpy(x["image"])).numpy()
    got = shipped["output"]
    cos = float((got * eager_out).sum() / (np.linalg.norm(got) * np.linalg.norm(eager_out)))
    assert cos < 0.99

    source = req if variant in ("quantized_int8", "executorch_fp32", "executorch_int8") else art
    rep = localise(m, variant, source, x, artifact=art if source is req else None)
    if rep.artifact_check:
        assert rep.artifact_check["ok"], rep.artifact_check
    assert carries(rep, PLANTED), rep.render()
    first = rep.flagged.iloc[0]
    before = rep.table[rep.table.order < first.order]
    assert not before.over.any(), rep.render()
    assert len(before[before.status == "compared"]) >= 2, rep.table.to_string()
