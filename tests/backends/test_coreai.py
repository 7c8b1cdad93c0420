"""The Core AI forms: coreai-torch conversion, run on Core AI's own runtime.

Every test that converts or runs needs coreai-torch 0.4.3 and coreai-core 1.0.0b3 (the fp16 form
also coreai-opt 0.3.0) and skips with the reason where they are not importable; the tests of what
a machine without them sees run everywhere.

Tolerances, from what was measured here (random weights, batch-norm statistics from photo
crops, 48-64 px): fp32 forms rel_l2 1e-7 .. 2e-6 -> asserted rel_l2 < 1e-4; fp16 cosine >= 0.9999
on the tiny nets -> asserted cosine > 0.999 and rel_l2 < 0.05.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from support.forms import compare, make_request
from support.photos import crop, crops
from torch import nn

from parbench.backends import coreai as coreai_mod
from parbench.backends import get_backend
from parbench.backends.base import ExportRequest, flatten_outputs
from parbench.backends.coreai import EXECUTOR, CoreAIFp16Backend, CoreAIFp32Backend
from parbench.compare import generic_metrics
from parbench.errors import BackendUnavailable, ConfigError, ExportError, NeedsPerSize, SessionError
from parbench.run.harness import Harness
from parbench.run.parity import check

FORMS = {"coreai_fp32": CoreAIFp32Backend, "coreai_fp16": CoreAIFp16Backend}


def _missing_packages(form: str = "coreai_fp16") -> str:
    avail = FORMS[form]().available()
    return "" if avail.can_run else avail.reason


needs_coreai = pytest.mark.skipif(bool(_missing_packages()), reason=_missing_packages() or "ok")


def check_parity(family: str, results: dict[str, dict]) -> None:
    for out, m in results.items():
        where = f"{family} {out}: {json.dumps(m)}"
        if family == "fp32":
            assert m["rel_l2"] < 1e-4, where
        else:
            assert m["cosine"] > 0.999 and m["rel_l2"] < 0.05, where


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny, tiny_seg, photo):
    """Each form converts each model once for the module (export at 64 px for 48 and 64 px)."""
    cache: dict = {}
    root = tmp_path_factory.mktemp("coreai")
    models = {"tiny": tiny, "tiny_seg": tiny_seg}

    def get(form: str, model: str):
        if (form, model) not in cache:
            backend = FORMS[form]()
            req = make_request(models[model], photo, 64, [48, 64])
            cache[form, model] = (backend, backend.export(req, root / f"{model}.{form}"), models[model])
        return cache[form, model]

    return get


# ---------------------------------------------------------------------------------------------
# what every machine sees


def test_registered_and_contract() -> None:
    for form, cls in FORMS.items():
        backend = get_backend(form)
        assert isinstance(backend, cls) and backend.name == form
        assert backend.shape_mode == "any" and backend.suffix == ".aimodel"
        json.dumps(backend.options())
    assert get_backend("coreai_fp32").family == "fp32" and get_backend("coreai_fp16").family == "fp16"
    assert CoreAIFp16Backend().options()["precision"] == "float16"
    assert CoreAIFp32Backend().options()["precision"] == "float32"
    with pytest.raises(ConfigError, match="shapes must be one of"):
        CoreAIFp32Backend(shapes="range")


def test_coreai_extra_installs_only_where_wheels_exist() -> None:
    """The ``coreai`` extra's platform markers: pip installs nothing where coreai-core has no wheel,
    so ``scripts/setup.sh`` never tries (and fails) there."""
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    reqs = [Requirement(r) for r in pyproject["project"]["optional-dependencies"]["coreai"]]
    assert {r.name: str(r.specifier) for r in reqs} == {d: f"=={v}" for d, v in coreai_mod.PINS.items()}

    def wanted(system: str, machine: str) -> list[str]:
        env = {"sys_platform": system, "platform_machine": machine}
        return [r.name for r in reqs if r.marker is None or r.marker.evaluate(env)]

    assert wanted("linux", "x86_64") == wanted("darwin", "arm64") == list(coreai_mod.PINS)
    for system, machine in (("linux", "aarch64"), ("darwin", "x86_64"), ("win32", "AMD64")):
        assert wanted(system, machine) == [], (system, machine)


def test_without_the_packages_the_forms_say_why(monkeypatch, photo, tmp_path) -> None:
    def no_converter():
        raise ModuleNotFoundError("No module named 'coreai_torch'")

    monkeypatch.setattr(coreai_mod, "_coreai_torch", no_converter)
    for form in FORMS:
        avail = FORMS[form]().available()
        assert not avail.can_export and not avail.can_run
        assert "coreai-torch is not importable" in avail.reason
        assert "coreai-torch==0.4.3" in avail.reason and "No module named 'coreai_torch'" in avail.reason
    with pytest.raises(BackendUnavailable, match="coreai-torch is not importable"):
        CoreAIFp32Backend().export(make_request(nn.Conv2d(3, 4, 1).eval(), photo, 32, [32]), tmp_path / "m")


def test_fp16_without_coreai_opt_says_why(monkeypatch) -> None:
    def no_opt():
        raise ModuleNotFoundError("No module named 'coreai_opt'")

    monkeypatch.setattr(coreai_mod, "_cast_fp16", no_opt)
    if not _missing_packages("coreai_fp32"):
        assert CoreAIFp32Backend().available().can_run  # fp32 does not need coreai-opt
    monkeypatch.setattr(coreai_mod, "_coreai_torch", lambda: None)  # the converter is there
    avail = CoreAIFp16Backend().available()
    assert not avail.can_export and "coreai-opt is not importable" in avail.reason
    assert "coreai-opt==0.3.0" in avail.reason and "No module named 'coreai_opt'" in avail.reason


def test_harness_skips_with_the_reason(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(
        coreai_mod, "_coreai_torch", lambda: (_ for _ in ()).throw(ModuleNotFoundError("no coreai_torch"))
    )
    result = check(Harness(cache_dir=tmp_path / "cache"), "tiny_classifier", "coreai_fp32", 224).record
    assert result.verdict == "skip"
    assert "coreai_fp32 cannot export here: coreai-torch is not importable" in result.message


# ---------------------------------------------------------------------------------------------
# conversion and runs on the runtime


@needs_coreai
@pytest.mark.parametrize("form", list(FORMS))
def test_tiny_net_tuple_output_one_asset_two_sizes(form: str, exported, photo) -> None:
    backend, art, module = exported(form, "tiny")
    assert art.format == "aimodel" and art.path.name.endswith(".aimodel") and art.bytes > 0
    assert (art.path / "main.mlirb").is_file() and (art.path / "metadata.json").is_file()
    assert art.output_names == ["output_0", "output_1"]
    assert art.meta["shapes"] == "dynamic" and art.meta["dynamic_shapes"] is True
    assert art.sizes is None and art.meta["size_range"] == [48, 64] and art.meta["sizes_checked"] == [48]
    assert art.meta["converter"] == "0.4.3" and art.meta["runtime"] == "1.0.0b3"
    main = art.meta["functions"]["main"]
    dtype = "Float16" if form == "coreai_fp16" else "Float32"
    assert main["inputs"] == [["image", f"NDArray ({dtype}, 1 × 3 × ? × ?)"]]
    assert [o[0] for o in main["outputs"]] == ["output_0", "output_1"]
    assert ("Float16" in art.meta["compute_types"]) == (form == "coreai_fp16")
    session = backend.load(art)
    assert session.executor == EXECUTOR == "coreai-runtime"
    for size in (48, 64):  # one asset, two sizes
        check_parity(backend.family, compare(session, module, photo, size))


@needs_coreai
def test_fp16_asset_stores_fp16_weights(exported, photo, tmp_path) -> None:
    _, a16, _ = exported("coreai_fp16", "tiny")
    _, a32, _ = exported("coreai_fp32", "tiny")
    assert a16.meta["fp16_pass"] == "0.3.0" and "fp16_pass" not in a32.meta
    st16 = a16.meta["storage_types"]  # a few float32 constants remain (shape arithmetic, scales)
    assert st16["Float16"] > 20 * st16.get("Float32", 0), st16
    assert "Float32" in a32.meta["storage_types"] and "Float16" not in a32.meta["storage_types"]
    torch.manual_seed(2)
    heavy = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1)).eval()
    sizes = {
        form: cls().export(make_request(heavy, photo, 16, [16]), tmp_path / form).bytes
        for form, cls in FORMS.items()
    }
    assert 0.45 < sizes["coreai_fp16"] / sizes["coreai_fp32"] < 0.6, sizes


@needs_coreai
@pytest.mark.parametrize("form", list(FORMS))
def test_dict_output_upsampled_to_input_size(form: str, exported, photo) -> None:
    """DeepLab's pattern (bilinear upsampling to the input's size, dict output): one dynamic
    asset, where Core ML's flexible-shape conversion needs one package per size."""
    backend, art, module = exported(form, "tiny_seg")
    assert art.output_names == ["out"] and art.meta["shapes"] == "dynamic"
    session = backend.load(art)
    for size in (48, 64):
        results = compare(session, module, photo, size)
        assert list(results) == ["out"]
        check_parity(backend.family, results)


class TwoInputs(nn.Module):
    """An image and a per-channel gain vector in; a tuple of (map, pooled vector) out."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, image: torch.Tensor, gain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.relu(self.conv(image)) * gain.view(1, -1, 1, 1)
        return y, self.fc(y.mean((2, 3)))


@needs_coreai
def test_multi_input_tuple_output(photo, tmp_path) -> None:
    torch.manual_seed(3)
    module = TwoInputs().eval()
    gain = torch.linspace(0.5, 1.5, 8).view(1, 8)
    example = (crop(photo, 40, 0), gain)
    with torch.no_grad():
        names = list(flatten_outputs(module(*example)))
    req = ExportRequest(
        module=module,
        spec=SimpleNamespace(name="two_inputs", input_names=["image", "gain"]),
        example_inputs=example,
        export_size=40,
        sizes=[32, 40],
        per_size=False,
        output_names=names,
    )
    backend = CoreAIFp32Backend()
    art = backend.export(req, tmp_path / "two")
    assert art.input_names == ["image", "gain"] and art.output_names == ["output_0", "output_1"]
    assert art.meta["shapes"] == "dynamic"
    session = backend.load(art)
    for size in (32, 40):
        x = crop(photo, size, 5)
        out = session.run({"image": x.numpy(), "gain": gain.numpy()})
        with torch.no_grad():
            ref = flatten_outputs(module(x, gain))
        assert list(out) == ["output_0", "output_1"]
        for k in ref:
            assert generic_metrics(out[k], ref[k].numpy())["rel_l2"] < 1e-4, k
    with pytest.raises(SessionError, match=r"inputs \['gain'\] are missing"):
        session.run({"image": crop(photo, 32, 5).numpy()})


class PinnedSize(nn.Module):
    """Adds a learned map of a fixed size: height and width cannot vary (like SSDLite's anchors)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bias_map = nn.Parameter(torch.randn(1, 4, size, size) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.bias_map


@needs_coreai
def test_pinned_size_needs_per_size(photo, tmp_path) -> None:
    module = PinnedSize(32).eval()
    backend = CoreAIFp32Backend()
    with pytest.raises(NeedsPerSize, match="export one artifact per size"):
        backend.export(make_request(module, photo, 32, [32, 48]), tmp_path / "pinned")
    assert not list(tmp_path.iterdir())
    art = backend.export(make_request(module, photo, 32, [32, 48], per_size=True), tmp_path / "pinned-32")
    assert art.sizes == [32] and art.meta["shapes"] == "static" and art.meta["dynamic_shapes"] is False
    check_parity("fp32", compare(backend.load(art), module, photo, 32))


@needs_coreai
def test_enumerated_shapes(exported, photo, tmp_path) -> None:
    """shapes="enumerated": one static function per size in one asset; the session picks the
    function that takes the input's shape and refuses a size the asset does not have."""
    _, _, module = exported("coreai_fp32", "tiny")
    backend = CoreAIFp32Backend(shapes="enumerated")
    assert backend.options()["shapes"] == "enumerated"
    art = backend.export(make_request(module, photo, 64, [48, 64]), tmp_path / "enum")
    assert art.meta["shapes"] == "enumerated" and art.sizes == [48, 64]
    assert sorted(art.meta["functions"]) == ["main_s48", "main_s64"]
    assert art.meta["functions"]["main_s48"]["inputs"] == [["image", "NDArray (Float32, 1 × 3 × 48 × 48)"]]
    session = backend.load(art)
    for size in (48, 64):
        check_parity("fp32", compare(session, module, photo, size))
    with pytest.raises(
        SessionError, match=r"no function of the asset takes input shapes \{'image': \(1, 3, 56, 56\)\}"
    ):
        session.run({"image": crop(photo, 56, 0).numpy()})


class OddOp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.erfinv(torch.tanh(self.conv(x)) * 0.5)


@needs_coreai
def test_unsupported_op_is_an_export_error_with_the_converters_words(photo, tmp_path) -> None:
    req = make_request(OddOp().eval(), photo, 32, [32, 48])
    with pytest.raises(ExportError) as info:
        CoreAIFp32Backend().export(req, tmp_path / "odd")
    assert not isinstance(info.value, NeedsPerSize)
    msg = str(info.value)
    assert msg.startswith("coreai_fp32 export failed (at a fixed size too)")
    assert "The exported program contains unsupported ATen ops: aten.erfinv.default" in msg
    assert "register_torch_lowering" in msg
    assert not list(tmp_path.iterdir())


@needs_coreai
def test_conversion_failure_is_a_recorded_result(tmp_path) -> None:
    """Through the harness: an xfail/error row with the converter's message, not a crash, and the
    failure is cached (the next run reuses the recorded error)."""
    config = tmp_path / "models.toml"
    config.write_text(
        "[models.odd_op]\n"
        'factory = "test_coreai:OddOp"\n'
        'task = "generic"\n'
        "sizes = [32]\n"
        'inputs = [{name = "image", shape = [1, 3, "size", "size"]}]\n'
    )
    harness = Harness(config, cache_dir=tmp_path / "cache")
    first = check(harness, "odd_op", "coreai_fp32", 32).record
    assert first.verdict == "error"
    assert "coreai_fp32 export of odd_op failed" in first.message
    assert "unsupported ATen ops: aten.erfinv.default" in first.message
    again = check(Harness(config, cache_dir=tmp_path / "cache"), "odd_op", "coreai_fp32", 32).record
    assert again.verdict == "error" and "aten.erfinv.default" in again.message


@needs_coreai
@pytest.mark.slow  # the smoke tier's parity run covers the same path in CI (pass, executor)
def test_harness_result_row(tmp_path) -> None:
    result = check(Harness(cache_dir=tmp_path / "cache"), "tiny_classifier", "coreai_fp32", 224).record
    assert result.verdict == "pass", result.message
    assert result.executor == "coreai-runtime"
    assert result.export["format"] == "aimodel" and result.export["shapes"] == "dynamic"
    assert result.export["converter"] == "0.4.3" and result.export["runtime"] == "1.0.0b3"


@needs_coreai
def test_session_outputs_are_copies(exported, photo) -> None:
    backend, art, _ = exported("coreai_fp32", "tiny")
    session = backend.load(art)
    a = session.run({"image": crop(photo, 48, 1).numpy()})
    keep = {k: v.copy() for k, v in a.items()}
    session.run({"image": crop(photo, 48, 2).numpy()})
    for k in a:
        np.testing.assert_array_equal(a[k], keep[k])
    session.close()
    session.close()  # idempotent


# ---------------------------------------------------------------------------------------------
# selection and the float16 batch-norm fold


def test_opt_in_beyond_the_smoke_tier() -> None:
    from parbench.backends.registry import default_variants

    for form in FORMS:
        assert form in default_variants("smoke")
        assert form not in default_variants("default") and form not in default_variants("full")
    assert "eager" in default_variants("default") and "coreml_fp16" in default_variants("full")


def test_parity_suite_leaves_them_out_of_the_default_tier(tmp_path) -> None:
    """The suite's selection goes through ``default_variants`` (the smoke tier's inclusion shows in
    CI's own smoke run, which runs them)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[2]
    cmd = [sys.executable, "-m", "pytest", str(root / "parity"), "-p", "no:cacheprovider", "-q"]
    cmd += ["--collect-only", "--parbench-cache", str(tmp_path / "cache"), "--tier", "default"]
    cmd += ["--models", "mobilenet_v2"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = [ln for ln in proc.stdout.splitlines() if "test_parity[" in ln]
    assert any("mobilenet_v2-coreml_fp16-256" in t for t in ids), ids
    assert not any("coreai" in t for t in ids), ids


class SharedConvOutput(nn.Module):
    """A convolution whose output feeds its batch norm and a skip: folding would change the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_fold_conv_batchnorm(tiny, photo) -> None:
    x = crop(photo, 48, 3)
    folded, pairs = coreai_mod.fold_conv_batchnorm(tiny, (x,))
    assert pairs == [("stem.0", "stem.1"), ("block.0", "block.1")]
    assert isinstance(folded.stem[1], nn.Identity) and isinstance(tiny.stem[1], nn.BatchNorm2d)
    with torch.no_grad():
        ref, got = flatten_outputs(tiny(x)), flatten_outputs(folded(x))
    for k in ref:
        assert generic_metrics(got[k].numpy(), ref[k].numpy())["rel_l2"] < 1e-5, k
    shared = SharedConvOutput().eval()
    assert coreai_mod.fold_conv_batchnorm(shared, (x,))[1] == []


@needs_coreai
def test_fp16_folds_batchnorm_in_fp32_first(photo, tmp_path) -> None:
    """MobileNetV2 x0.35 (the smoke tier's classifier): casting batch norm's parameters to float16
    before the compiler folds them costs accuracy; folding in float32 first recovers it."""
    from parbench.zoo import networks, recalibrate_batchnorm

    torch.manual_seed(0)
    net = networks.tiny_classifier().eval()
    recalibrate_batchnorm(net, crops(photo, 96, range(8)))
    req = make_request(net, photo, 96, [96])
    err = {}
    for fold in (False, True):
        backend = CoreAIFp16Backend(fold_batchnorm=fold)
        art = backend.export(req, tmp_path / f"fold{fold}")
        assert art.meta.get("fold_batchnorm", {}).get("folded", 0) == (52 if fold else 0), art.meta
        err[fold] = max(m["rel_l2"] for m in compare(backend.load(art), net, photo, 96).values())
    assert err[True] < 0.75 * err[False], err
