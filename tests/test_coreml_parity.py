"""Core ML forms in `pytest parity/` run (through the reference executor on Linux) and a broken
conversion fails with a message naming the first diverging layer."""

import pytest
import torch

from parbench.diagnose.localise import localise_failure
from parbench.run.harness import Harness
from parbench.run.parity import check

pytest.importorskip("coremltools")


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return Harness(cache_dir=tmp_path_factory.mktemp("cache"))


def test_coreml_forms_run_and_record_the_executor(harness):
    r = check(harness, "tiny_generator", "coreml_fp32", 256).record
    assert r.verdict == "pass", r.message
    assert r.executor in ("reference", "coreml")
    assert r.export["format"] == "mlpackage"


def test_broken_conversion_names_the_first_diverging_op(tmp_path, monkeypatch):
    from parbench.backends import get_backend

    harness = Harness(cache_dir=tmp_path)
    name, size = "tiny_generator", 256
    good = harness.module(name)
    broken = type(good)(width=8, n_res=2)
    broken.load_state_dict(good.state_dict())
    with torch.no_grad():  # a converter that mangles one layer's weights
        broken.body[1].expand[1].weight.mul_(-1.0)
    broken.eval()
    backend = get_backend("coreml_fp32")
    convert = backend.export

    def broken_converter(req, out):
        req.module = broken
        return convert(req, out)

    monkeypatch.setattr(backend, "export", broken_converter)
    outcome = check(harness, name, "coreml_fp32", size)
    localise_failure(harness, outcome)  # what the parity suite does with a failure
    result = outcome.record
    assert result.verdict == "fail"
    fd = result.first_divergence
    assert fd is not None and fd.status == "found", result.message
    # the first layer over the fp32 limits is the mangled conv (or the norm it was folded into)
    assert fd.layer.startswith("body.1.expand.1") or "body.1.expand.1" in fd.fused_with, result.message
    assert (
        f"first diverging layer (parbench bisect {name} --variant coreml_fp32 --size {size}): "
        in result.message
    )

    # a warm run reuses the localisation: the artifact, the case and the code are the same
    from parbench.diagnose import localise as localise_module

    def not_again(*args, **kwargs):
        raise AssertionError("localised again although the result is cached")

    monkeypatch.setattr(localise_module, "localise_model", not_again)
    again = check(harness, name, "coreml_fp32", size)
    localise_failure(harness, again)
    assert again.record.first_divergence == fd
    assert again.record.message.endswith("(the cached result for this artifact)"), again.record.message
    # an unreadable cached result is not trusted: the case is localised again
    for path in (tmp_path / "localise").glob("*.json"):
        path.write_text("{ torn")
    monkeypatch.undo()
    monkeypatch.setattr(backend, "export", broken_converter)
    third = check(harness, name, "coreml_fp32", size)
    localise_failure(harness, third)
    assert third.record.first_divergence.layer == fd.layer
    assert "cached result" not in third.record.message
