"""On macOS, where Core ML itself runs, the reference executor must agree with it."""

import sys

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(
    sys.platform != "darwin",
    reason="Core ML prediction needs macOS; on Linux only the reference executor runs",
)


@pytest.mark.parametrize("precision", ["FLOAT16", "FLOAT32"])
def test_reference_executor_matches_core_ml(tmp_path, precision):
    import coremltools as ct

    from parbench.coreml_ref import MLModel as ReferenceModel
    from parbench.run.harness import Harness

    h = Harness(cache_dir=tmp_path)
    module = h.module("tiny_classifier")
    x = h.inputs("tiny_classifier", 224)["image"]
    traced = torch.jit.trace(module, torch.from_numpy(x))
    ml = ct.convert(
        traced,
        inputs=[ct.TensorType(name="image", shape=x.shape)],
        convert_to="mlprogram",
        compute_precision=getattr(ct.precision, precision),
        compute_units=ct.ComputeUnit.CPU_ONLY,
    )
    path = tmp_path / "m.mlpackage"
    ml.save(str(path))
    name = ml.get_spec().description.output[0].name
    native = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_ONLY).predict({"image": x})[name]
    ours = ReferenceModel(str(path)).predict({"image": x})[name]
    a, b = np.asarray(native, np.float64).ravel(), np.asarray(ours, np.float64).ravel()
    rel = np.linalg.norm(a - b) / np.linalg.norm(a)
    assert rel < (1e-2 if precision == "FLOAT16" else 1e-5), rel
