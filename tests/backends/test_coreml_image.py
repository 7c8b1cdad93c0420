"""The coreml_image form: ImageType input with the normalization inside the package, classifier
outputs and metadata, parity measured from the 8-bit image the eager pipeline normalized.

Two tiny models (a 2-conv, 10-class classifier and a segmenter that upsamples to the input size),
with batch-norm statistics from real images, run through the real harness: each package is
converted once per module and cached.  Random weights are more sensitive to a small input
scale error than trained ones, so the folded-normalization error is measured and checked to be
the fold's own error, not asserted to pass.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

ct = pytest.importorskip("coremltools")

from parbench import compare, zoo  # noqa: E402
from parbench.backends import coreml_image as ci  # noqa: E402
from parbench.backends import coreml_labels as labels_mod  # noqa: E402
from parbench.backends import get_backend  # noqa: E402
from parbench.backends.base import ExportRequest  # noqa: E402
from parbench.backends.registry import Form, register, unregister  # noqa: E402
from parbench.errors import ExportError, SessionError  # noqa: E402
from parbench.run.harness import Harness  # noqa: E402
from parbench.run.parity import check  # noqa: E402

try:
    import parbench.coreml_ref  # noqa: F401

    _EXECUTOR_REASON = ""
except Exception as exc:  # the reference executor is still optional
    _EXECUTOR_REASON = f"parbench.coreml_ref is not importable ({type(exc).__name__}: {exc})"
if sys.platform == "darwin":
    _EXECUTOR_REASON = ""
needs_executor = pytest.mark.skipif(bool(_EXECUTOR_REASON), reason=_EXECUTOR_REASON or "no executor")

CLS, SEG = "ci_classifier", "ci_segmenter"
SIZES = (48, 64)


class SmallClassifier(nn.Module):
    """Two convolutions, 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.conv2 = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(self.conv1(x)).mean((2, 3)))


class SmallSegmenter(nn.Module):
    """Per-pixel scores for 4 classes, upsampled to the input's size (DeepLab's pattern)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.head(self.body(x))
        return {"out": F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)}


def _image_spec(name: str, task: str, factory, **kw) -> zoo.ModelSpec:
    return zoo.ModelSpec(name, task, factory, SIZES, SIZES[0], **kw)


# deliberately broken variants: what a wrong ImageType does to parity
class BGRBackend(ci.CoreMLImageBackend):
    """ImageType declared BGR: Core ML hands the model the channels swapped."""

    name = "coreml_image_test_bgr"

    def _image_type(self, req, name, dynamic):
        t = super()._image_type(req, name, dynamic)
        return ct.ImageType(
            name=t.name, shape=t.shape, scale=t.scale, bias=t.bias, color_layout=ct.colorlayout.BGR
        )


class FlippedBiasBackend(ci.CoreMLImageBackend):
    """ImageType bias with the sign flipped (mean added instead of subtracted)."""

    name = "coreml_image_test_flipped_bias"

    def _image_type(self, req, name, dynamic):
        t = super()._image_type(req, name, dynamic)
        return ct.ImageType(
            name=t.name,
            shape=t.shape,
            scale=t.scale,
            bias=[-b for b in t.bias],
            color_layout=ct.colorlayout.RGB,
        )


class IdentityBackend(ci.CoreMLImageBackend):
    """The model's own output in the classifier dictionary; the session rebuilds the tensor."""

    name = "coreml_image_test_identity"

    def __init__(self) -> None:
        super().__init__(normalization="exact", classifier="identity")


TEST_FORMS = {
    cls.name: Form(__name__, cls.__name__) for cls in (BGRBackend, FlippedBiasBackend, IdentityBackend)
}


@pytest.fixture(scope="module")
def h(tmp_path_factory):
    """A harness with the two tiny models and the deliberately broken test forms registered;
    artifacts are cached in the module's temp dir, so each converts once."""
    torch.set_num_threads(1)
    for variant, form in TEST_FORMS.items():
        register(variant, form)
    harness = Harness(cache_dir=tmp_path_factory.mktemp("coreml_image_cache"))
    harness.registry[CLS] = _image_spec(CLS, "classification", SmallClassifier)
    # equal stds: Core ML's single scale folds this normalization exactly
    harness.registry[SEG] = _image_spec(SEG, "segmentation", SmallSegmenter, mean=(0.5,) * 3, std=(0.5,) * 3)
    yield harness
    for variant in TEST_FORMS:
        unregister(variant)


def _parity(h: Harness, model: str, variant: str, size: int = SIZES[0]):
    r = check(h, model, variant, size).record
    if r.verdict == "skip":
        pytest.skip(r.message)
    assert r.verdict != "error", r.message
    return r


# ---------------------------------------------------------------------------------------------
# the arithmetic: fold and pixel recovery


def test_fold_is_a_pure_per_channel_scale_error_of_least_squares_size() -> None:
    mean, std = zoo.spec.IMAGENET_MEAN, zoo.spec.IMAGENET_STD
    f = ci.fold(mean, std)
    p = np.arange(256, dtype=np.float64)[:, None]
    exact = (p / 255 - np.array(mean)) / np.array(std)
    folded = f["scale"] * p + np.array(f["bias"])
    # channel c gets its exact normalized value times (1 + scale_error[c]), no offset
    np.testing.assert_allclose(folded, exact * (1 + np.array(f["scale_error"])), rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        f["scale_error"],
        [0.229 / f["shared_std"] - 1, 0.224 / f["shared_std"] - 1, 0.225 / f["shared_std"] - 1],
    )
    assert 0.013 < f["max_scale_error"] < 0.0135  # red: 0.229 against a shared 0.2260

    def sq(s: float) -> float:
        return sum((x / s - 1) ** 2 for x in std)

    for other in (np.mean(std), (min(std) + max(std)) / 2, f["shared_std"] * 1.001, f["shared_std"] * 0.999):
        assert sq(f["shared_std"]) <= sq(other) + 1e-15
    equal = ci.fold((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert equal["max_scale_error"] == 0 and equal["scale"] == pytest.approx(1 / 127.5)
    assert equal["bias"] == [-1.0, -1.0, -1.0]


@pytest.mark.parametrize(
    "mean,std",
    [
        (zoo.spec.IMAGENET_MEAN, zoo.spec.IMAGENET_STD),
        ((0.5,) * 3, (0.5,) * 3),
        ((0.9, 0.1, 0.3), (0.01, 0.7, 3.0)),
    ],
)
def test_fixture_inputs_invert_to_their_exact_pixels(mean, std) -> None:
    from PIL import Image

    from parbench.zoo import inputs as images

    pixels = np.stack([np.arange(256, dtype=np.uint8)] * 3, axis=-1)[None]  # every level, every channel
    pixels = np.concatenate([pixels, pixels[:, ::-1]], axis=0)  # 2 x 256
    x = images.to_tensor_array(Image.fromarray(pixels, "RGB"), mean, std)
    np.testing.assert_array_equal(ci.to_pixels(x, mean, std), pixels)
    photo = images.variation(3, 40)
    np.testing.assert_array_equal(
        np.asarray(ci.to_image(images.to_tensor_array(photo, mean, std), mean, std)), np.asarray(photo)
    )


def test_inputs_that_are_not_8bit_images_are_refused() -> None:
    mean, std = zoo.spec.IMAGENET_MEAN, zoo.spec.IMAGENET_STD
    noise = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    with pytest.raises(SessionError, match="not an 8-bit RGB image normalized with mean"):
        ci.to_pixels(noise, mean, std)
    with pytest.raises(SessionError, match=r"shape \(1, 1, 8, 8\); coreml_image takes one RGB image"):
        ci.to_pixels(noise[:, :1], mean, std)


def test_labels_are_deterministic_and_unique() -> None:
    assert labels_mod.class_labels(10, "classification") == ([f"class_{i}" for i in range(10)], "generic")
    labels, source = labels_mod.class_labels(1000, "classification")
    assert len(labels) == len(set(labels)) == 1000
    if source.startswith("imagenet"):
        assert labels[0] == "tench"
    assert labels_mod.unique(["a", "b", "a", "a"]) == ["a", "b", "a (2)", "a (3)"]


# ---------------------------------------------------------------------------------------------
# which models the form applies to


@pytest.mark.parametrize(
    "inputs,match",
    [
        ((zoo.InputSpec("gray", (1, 1, "size", "size")),), "RGB-image models only: input 'gray'"),
        ((zoo.InputSpec("tokens", (1, 16), "int64"),), "RGB-image models only: input 'tokens'"),
        (
            (zoo.InputSpec("a", (1, 3, "size", "size")), zoo.InputSpec("b", (1, 3, "size", "size"))),
            "feeds one RGB image; m takes 2 inputs",
        ),
        ((zoo.InputSpec("image", (2, 3, "size", "size")),), "take one image; .* has batch 2"),
    ],
)
def test_non_image_models_are_refused_clearly(inputs, match) -> None:
    spec = zoo.ModelSpec("m", "generic", SmallClassifier, (32,), 32, inputs=inputs)
    backend = get_backend("coreml_image")
    assert backend.applies_to(spec) is not None
    example = tuple(torch.zeros(i.concrete(32)) for i in inputs)
    req = ExportRequest(SmallClassifier(), spec, example, 32, [32], True)
    with pytest.raises(ExportError, match=match):
        backend.export(req, Path("unused"))
    assert backend.applies_to(_image_spec("ok", "classification", SmallClassifier)) is None


def test_options_select_the_package() -> None:
    folded, exact = get_backend("coreml_image").options(), get_backend("coreml_image_exact").options()
    assert folded["normalization"] == "folded" and exact["normalization"] == "exact"
    assert folded != exact  # different cache keys
    assert get_backend("coreml_image", normalization="exact").options() == exact
    assert get_backend("coreml_image").family == "fp16"
    # bad options: test_forms.test_bad_backend_options_are_refused


# ---------------------------------------------------------------------------------------------
# converted packages: parity through the harness


@needs_executor
@pytest.mark.parametrize("size", SIZES)
def test_exact_mode_is_within_fp16_policy(h, size) -> None:
    r = _parity(h, CLS, "coreml_image_exact", size)
    assert r.verdict == "pass", r.message
    assert r.executor == ("coreml" if sys.platform == "darwin" else "reference")
    assert r.export["sizes"] == list(SIZES)  # one package, enumerated image sizes
    assert r.export["normalization"]["mode"] == "exact"


@needs_executor
def test_exact_mode_matches_the_tensor_input_form(h) -> None:
    """The image path adds no error of its own: same metrics as coreml_fp16 fed the tensor."""
    img = _parity(h, CLS, "coreml_image_exact")
    tensor = _parity(h, CLS, "coreml_fp16")
    for metric in ("rel_l2", "max_abs", "cosine"):
        assert img.metrics["output"][metric] == pytest.approx(
            tensor.metrics["output"][metric], rel=0.05, abs=1e-6
        )


@needs_executor
def test_folded_mode_error_is_the_fold_error(h) -> None:
    """The folded package computes exactly scale * pixel + bias (up to fp16 noise), and its
    parity error is the one the fold costs this model (recorded at export, eager fp32)."""
    r = _parity(h, CLS, "coreml_image")
    norm = r.export["normalization"]
    assert norm["mode"] == "folded" and norm["max_scale_error"] > 0.013
    predicted = norm["fold_error"]["output"]["rel_l2"]
    noise = 2 * _parity(h, CLS, "coreml_image_exact").metrics["output"]["rel_l2"] + 2e-3  # fp16 noise bound
    measured = r.metrics["output"]["rel_l2"]
    assert 0.5 * predicted <= measured <= predicted + noise, (measured, predicted, noise)
    # against eager fed the folded normalization, the package differs only by fp16 noise
    spec, module, session = h.spec(CLS), h.module(CLS), h.session(CLS, "coreml_image", SIZES[0])
    f = ci.fold(spec.mean, spec.std)
    for case in h.cases(CLS, SIZES[0]):
        pixels = ci.to_pixels(case.inputs["image"], spec.mean, spec.std).astype(np.float32)
        folded = torch.from_numpy(
            pixels.transpose(2, 0, 1)[None] * f["scale"] + np.array(f["bias"], np.float32).reshape(1, 3, 1, 1)
        )
        with torch.no_grad():
            ref = module(folded).numpy()
        got = session.run(case.inputs)["output"]
        assert compare.generic_metrics(got, ref)["rel_l2"] <= noise


def test_recorded_fold_error_is_the_eager_models_error_under_the_fold(h) -> None:
    """The fold error in the artifact's meta: the eager model fed the folded normalization of
    the example image against the exact one, as parbench.compare measures it."""
    art = h.artifact(CLS, "coreml_image", SIZES[0])
    spec, module = h.spec(CLS), h.module(CLS)
    x = zoo.example_inputs(spec, spec.example_size)["image"]
    f = ci.fold(spec.mean, spec.std)
    pixels = ci.to_pixels(x, spec.mean, spec.std).astype(np.float64).transpose(2, 0, 1)[None]
    folded = pixels * f["scale"] + np.array(f["bias"]).reshape(1, 3, 1, 1)
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
        got = module(torch.from_numpy(folded).float()).numpy()
    want = compare.generic_metrics(got, ref)
    recorded = art.meta["normalization"]["fold_error"]["output"]
    assert set(recorded) == {"max_abs", "rel_l2", "cosine"}
    for metric, value in recorded.items():
        assert value == pytest.approx(want[metric], rel=1e-3, abs=2e-6), metric
    assert recorded["rel_l2"] > 1e-3  # the fold costs this model something measurable


@needs_executor
def test_folded_is_exact_when_the_stds_are_equal(h) -> None:
    r = _parity(h, SEG, "coreml_image")
    assert r.export["normalization"]["max_scale_error"] == 0
    assert r.verdict == "pass", r.message


@needs_executor
@pytest.mark.parametrize("variant", [BGRBackend.name, FlippedBiasBackend.name])
def test_wrong_imagetype_fails_parity_with_a_clear_message(h, variant) -> None:
    r = _parity(h, CLS, variant)
    assert r.verdict == "fail"
    assert f"{CLS} as {variant} differs from eager at {SIZES[0]}px" in r.message
    assert "rel_l2" in r.message and "FAIL" in r.message
    assert r.metrics["output"]["rel_l2"] > 5 * compare.POLICY["fp16"]["rel_l2"]  # far outside, not borderline


@needs_executor
def test_segmenter_converts_once_for_every_size_and_passes_exact(h) -> None:
    """Bilinear upsampling to the input's size converts with flexible image sizes (iOS 17's
    ``resize``): one package serves both sizes."""
    for size in SIZES:
        r = _parity(h, SEG, "coreml_image_exact", size)
        assert r.verdict == "pass", r.message
        assert r.export["sizes"] == list(SIZES)
        assert "per_size_reason" not in r.export


# ---------------------------------------------------------------------------------------------
# what an app sees: classifier outputs and metadata


@needs_executor
def test_classifier_outputs_label_and_probability_dictionary(h) -> None:
    session = h.session(CLS, "coreml_image", SIZES[0])
    case = h.cases(CLS, SIZES[0])[0]
    out = session.run(case.inputs)
    raw = session.last_raw
    labels = [f"class_{i}" for i in range(10)]
    assert set(raw) == {"classLabel", "classLabel_probs", "output"}
    probs = raw["classLabel_probs"]
    assert set(probs) == set(labels)
    p = np.array([probs[k] for k in labels])
    assert raw["classLabel"] == labels[int(np.argmax(p))]
    assert p.sum() == pytest.approx(1.0, abs=2e-3)
    logits = torch.from_numpy(out["output"])
    np.testing.assert_allclose(p, torch.softmax(logits, -1)[0].numpy(), atol=2e-3)
    assert out["output"].shape == (1, 10)


@needs_executor
def test_identity_classifier_rebuilds_the_output_from_the_dictionary(h) -> None:
    r = _parity(h, CLS, IdentityBackend.name)
    assert r.export["package_outputs"] == ["classLabel", "classLabel_probs"]
    assert r.verdict == "pass", r.message


def test_metadata_in_the_saved_package(h) -> None:
    art = h.artifact(CLS, "coreml_image", SIZES[0])
    spec = ct.utils.load_spec(str(art.path))
    desc = spec.description
    md = desc.metadata
    assert "classification from an RGB image" in md.shortDescription and "folded" in md.shortDescription
    assert md.author == "parbench" and CLS in md.versionString and md.license
    ud = dict(md.userDefined)
    assert ud[labels_mod.PREVIEW_TYPE] == "imageClassifier"
    assert ud["parbench.normalization"] == "folded"
    assert json.loads(ud["parbench.image_bias"]) == pytest.approx(
        ci.fold(zoo.spec.IMAGENET_MEAN, zoo.spec.IMAGENET_STD)["bias"]
    )
    (image,) = desc.input
    assert image.type.WhichOneof("Type") == "imageType"
    assert (
        ct.proto.FeatureTypes_pb2.ImageFeatureType.ColorSpace.Name(image.type.imageType.colorSpace) == "RGB"
    )
    assert [(s.width, s.height) for s in image.type.imageType.enumeratedSizes.sizes] == [
        (s, s) for s in SIZES
    ]
    assert "RGB image" in image.shortDescription
    assert desc.predictedFeatureName == "classLabel" and desc.predictedProbabilitiesName == "classLabel_probs"
    assert labels_mod.package_labels(spec) == [f"class_{i}" for i in range(10)]

    seg = ct.utils.load_spec(str(h.artifact(SEG, "coreml_image", SIZES[0]).path))
    ud = dict(seg.description.metadata.userDefined)
    assert ud[labels_mod.PREVIEW_TYPE] == "imageSegmenter"
    assert json.loads(ud[labels_mod.PREVIEW_PARAMS]) == {"labels": [f"class_{i}" for i in range(4)]}
    assert not seg.description.predictedFeatureName


@needs_executor
def test_repeated_runs_reuse_the_image_but_not_after_the_input_changes(h) -> None:
    session = h.session(CLS, "coreml_image_exact", SIZES[0])
    x = h.cases(CLS, SIZES[0])[0].inputs["image"].copy()
    first = session.image(x)
    assert session.image(x) is first  # timing rounds do not pay the inversion again
    x[0, 0, 0, 0] = -x[0, 0, 0, 0] + (1 - 2 * 0.485) / 0.229  # red level p -> 255 - p: still on the grid
    second = session.image(x)
    assert second is not first
    assert np.asarray(second)[0, 0, 0] == 255 - np.asarray(first)[0, 0, 0]


@needs_executor
def test_torch_export_frontend_with_flexible_sizes(h, tmp_path) -> None:
    """The fallback frontend (models the tracer cannot convert) gives the same package shape."""
    spec, module = h.spec(CLS), h.module(CLS)
    example = tuple(torch.from_numpy(v) for v in zoo.example_inputs(spec, SIZES[0]).values())
    req = ExportRequest(module, spec, example, SIZES[0], list(SIZES), False, output_names=["output"])
    backend = get_backend("coreml_image", normalization="exact", frontend="torch.export")
    art = backend.export(req, tmp_path / "te")
    assert art.meta["frontend"] == "torch.export" and art.sizes == list(SIZES)
    assert art.input_names == ["image"] and art.output_names == ["output"]
    session = backend.load(art)
    for size in SIZES:
        case = h.cases(CLS, size)[0]
        comp = compare.compare(session.run(case.inputs), case.golden, spec.task, "fp16")
        assert comp.passed, comp.explain()
