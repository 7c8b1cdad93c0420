"""The harness must fail parity, with a message that helps, on the bugs that ship for real."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from parbench import compare as cmp
from parbench._util.hashing import sha256_path
from parbench.backends import get_backend
from parbench.backends.base import ExportRequest
from parbench.run.harness import Harness
from parbench.run.parity import check

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return Harness(DATA / "user_models.toml", tmp_path_factory.mktemp("cache"))


def test_frozen_shape_branch_fails_at_other_sizes(harness):
    ok = check(harness, "shape_branch", "torchscript", 256).record
    assert ok.verdict == "pass"
    bad = check(harness, "shape_branch", "torchscript", 400).record
    assert bad.verdict == "fail"
    assert "exported at 256px" in bad.message
    assert "tracer warned" in bad.message and "Python boolean" in bad.message
    assert "rel_l2" in bad.message and "FAIL" in bad.message
    assert bad.metrics["output"]["cosine"] < 0.99
    assert check(harness, "shape_branch", "eager", 400).record.verdict == "pass"


def test_swapped_rgb_bgr_preprocessing_fails(harness, tmp_path):
    """An artifact that feeds its network BGR where the eager pipeline feeds RGB."""
    spec = harness.spec("image_and_mask")
    module = harness.module("image_and_mask")

    class SwapsChannels(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, image, mask):
            return self.inner(image.flip(1), mask)

    case = harness.cases("image_and_mask", 128)[0]
    example = tuple(torch.from_numpy(v) for v in case.inputs.values())
    backend = get_backend("torchscript")
    art = backend.export(
        ExportRequest(SwapsChannels(module), spec, example, 128, [128], False), tmp_path / "m"
    )
    assert art.input_names == ["image", "mask"] and art.output_names == list(case.golden)
    out = backend.load(art).run(case.inputs)
    comp = cmp.compare(out, case.golden, spec.task, "fp32")
    assert not comp.passed
    text = comp.explain()
    assert "output 'image': FAIL" in text and "psnr_db" in text and "worst elements" in text
    # the same export without the swap passes: the failure is the swap, not the form
    art2 = backend.export(ExportRequest(module, spec, example, 128, [128], False), tmp_path / "n")
    assert cmp.compare(backend.load(art2).run(case.inputs), case.golden, spec.task, "fp32").passed


def test_corrupted_weight_in_artifact_fails(harness):
    """A converter that writes one wrong weight: the artifact is self-consistent (hash recorded
    after the damage) but its outputs are wrong."""
    art = harness.artifact("image_and_mask", "torchscript", 128)
    assert check(harness, "image_and_mask", "torchscript", 128).record.verdict == "pass"
    scripted = torch.jit.load(str(art.path))
    with torch.no_grad():
        scripted.enc.weight[3, 1, 1, 1] += 5.0
    scripted.save(str(art.path))
    entry = art.path.parent / "entry.json"
    record = json.loads(entry.read_text())
    record["sha256"] = sha256_path(art.path)
    entry.write_text(json.dumps(record))
    harness._sessions.clear()
    bad = check(harness, "image_and_mask", "torchscript", 128).record
    assert bad.verdict == "fail"
    assert "worst elements" in bad.message and "FAIL" in bad.message


def test_corrupt_cache_entry_is_rebuilt_not_used(harness):
    art = harness.artifact("two_heads", "lite", 32)
    data = bytearray(art.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    art.path.write_bytes(bytes(data))
    harness._sessions.clear()
    result = check(harness, "two_heads", "lite", 32).record
    assert result.verdict == "pass"
    assert result.cache.startswith("rebuilt") and "sha256" in result.cache
    assert check(harness, "two_heads", "lite", 32).record.cache == "hit"


def test_multi_input_and_tuple_outputs(harness):
    r = check(harness, "image_and_mask", "lite", 192).record
    assert r.verdict == "pass" and set(r.metrics) == {"image", "confidence"}
    assert r.export["input_names"] == ["image", "mask"] and r.export["output_names"] == [
        "image",
        "confidence",
    ]
    # export time: once, measured by the cache, under one name (also on a cache hit)
    assert isinstance(r.export["export_seconds"], float)
    assert not {"inputs", "outputs", "export_s", "cache"} & set(r.export)
    r = check(harness, "two_heads", "torchscript", 32).record
    assert r.verdict == "pass" and set(r.metrics) == {"output_0", "output_1"}
    assert "top1_agree" in r.metrics["output_0"]


def test_export_failure_is_a_result_not_a_crash(harness, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("Unsupported op aten::frobnicate")

    monkeypatch.setattr(torch.jit, "trace", broken)
    shutil.rmtree(harness.cache_dir / "artifacts" / "two_heads", ignore_errors=True)
    r = check(harness, "two_heads", "torchscript", 32).record
    assert r.verdict == "error" and "aten::frobnicate" in r.message and "torchscript export" in r.message
