"""MLModel's coremltools-like surface: image inputs and preprocessing, classifiers, image
outputs, flexible shapes, compressed weights, intermediates, and the errors users get."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

ct = pytest.importorskip("coremltools")
import coremltools.optimize.coreml as cto  # noqa: E402
from PIL import Image  # noqa: E402
from support.mil import cosine, rel_l2  # noqa: E402

from parbench.coreml_ref import CoreMLRefError, InputShapeError, MLModel  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = 0.226  # Core ML's ImageType has one scale for all channels


class Small(nn.Module):
    def __init__(self, cin: int = 3, classes: int = 3, softmax: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, 8, 3, padding=1)
        self.fc = nn.Linear(8, classes)
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(torch.relu(self.conv(x)).mean((2, 3)))
        return torch.softmax(y, -1) if self.softmax else y


def _trace(m: nn.Module, shape: tuple[int, ...]) -> torch.jit.ScriptModule:
    torch.manual_seed(0)
    return torch.jit.trace(m.eval(), torch.rand(*shape))


def _convert(traced, inputs, path, target="iOS16", precision="fp32", **kw):
    ml = ct.convert(
        traced,
        inputs=inputs,
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, target),
        compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
        **kw,
    )
    ml.save(str(path))
    return path


@pytest.fixture(scope="module")
def rgb_image() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8), "RGB")  # 24 wide, 20 high


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return Small().eval()


def _eager(model: nn.Module, chw_pixels: np.ndarray, scale: float, bias: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(chw_pixels[None].astype(np.float32) * scale + bias.reshape(1, -1, 1, 1))
    with torch.no_grad():
        return model(x).numpy()


def _pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), np.float32).transpose(2, 0, 1)


@pytest.fixture(scope="module")
def image_models(small, tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    tr = _trace(small, (1, 3, 20, 24))
    scale, bias = 1 / (255 * STD), (-MEAN / STD)
    good = _convert(
        tr,
        [ct.ImageType(name="image", shape=(1, 3, 20, 24), scale=scale, bias=bias.tolist())],
        d / "good.mlpackage",
    )
    broken = _convert(
        tr, [ct.ImageType(name="image", shape=(1, 3, 20, 24), scale=scale)], d / "broken.mlpackage"
    )  # bias forgotten
    bgr = _convert(
        tr,
        [
            ct.ImageType(
                name="image",
                shape=(1, 3, 20, 24),
                scale=scale,
                bias=bias.tolist(),
                color_layout=ct.colorlayout.BGR,
            )
        ],
        d / "bgr.mlpackage",
    )
    return good, broken, bgr, scale, bias


def test_image_input_preprocessing_matches_eager(small, image_models, rgb_image):
    good, _, _, scale, bias = image_models
    ml = MLModel(good)
    assert ml.inputs["image"].kind == "image" and ml.inputs["image"].color == "RGB"
    (out,) = ml.predict({"image": rgb_image}).values()
    ref = _eager(small, _pixels(rgb_image), scale, bias)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    # the same pixels as an HxWx3 array, and as a [1, 3, H, W] array, give the same answer
    (arr_out,) = ml.predict({"image": np.asarray(rgb_image)}).values()
    np.testing.assert_array_equal(arr_out, out)
    (chw_out,) = ml.predict({"image": _pixels(rgb_image)[None]}).values()
    np.testing.assert_array_equal(chw_out, out)


def test_wrong_imagetype_bias_is_a_clear_mismatch(small, image_models, rgb_image):
    good, broken, _, scale, bias = image_models
    ref = _eager(small, _pixels(rgb_image), scale, bias)  # what the app meant: Normalize(mean, std)
    (ok,) = MLModel(good).predict({"image": rgb_image}).values()
    (out,) = MLModel(broken).predict({"image": rgb_image}).values()
    assert rel_l2(ok, ref) < 1e-4
    assert rel_l2(out, ref) > 0.2  # three orders of magnitude past any fp32 or fp16 tolerance


def test_bgr_layout_feeds_channels_in_bgr_order(small, image_models, rgb_image):
    _, _, bgr, scale, bias = image_models
    (out,) = MLModel(bgr).predict({"image": rgb_image}).values()
    ref = _eager(small, _pixels(rgb_image)[::-1].copy(), scale, bias)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    wrong = _eager(small, _pixels(rgb_image), scale, bias)
    assert rel_l2(out, wrong) > 1e-3


def test_grayscale_image_input(tmp_path):
    torch.manual_seed(0)
    m = Small(cin=1).eval()
    path = _convert(
        _trace(m, (1, 1, 8, 8)),
        [
            ct.ImageType(
                name="g",
                shape=(1, 1, 8, 8),
                scale=1 / 255,
                bias=[-0.5],
                color_layout=ct.colorlayout.GRAYSCALE,
            )
        ],
        tmp_path / "g.mlpackage",
    )
    img = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 3, "L")
    (out,) = MLModel(path).predict({"g": img}).values()
    ref = _eager(m, np.asarray(img, np.float32)[None], 1 / 255, np.array([-0.5], np.float32))
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_image_size_is_checked(image_models, rgb_image):
    ml = MLModel(image_models[0])
    with pytest.raises(InputShapeError, match=r"is 20x24 \(WxH\).*24x20"):
        ml.predict({"image": rgb_image.resize((20, 24))})


def test_classifier_outputs_label_and_probabilities(tmp_path):
    torch.manual_seed(0)
    m = Small(classes=3, softmax=True).eval()
    tr = _trace(m, (1, 3, 6, 6))
    labels = ["cat", "dog", "bird"]
    path = _convert(
        tr,
        [ct.TensorType(name="x", shape=(1, 3, 6, 6))],
        tmp_path / "c.mlpackage",
        classifier_config=ct.ClassifierConfig(labels),
    )
    ml = MLModel(path)
    assert ml.output_names == ["classLabel", "classLabel_probs"]
    x = np.random.default_rng(2).random((1, 3, 6, 6), dtype=np.float32)
    out = ml.predict({"x": x})
    with torch.no_grad():
        probs = m(torch.from_numpy(x)).numpy()[0]
    assert out["classLabel"] == labels[int(np.argmax(probs))]
    assert set(out["classLabel_probs"]) == set(labels)
    np.testing.assert_allclose([out["classLabel_probs"][k] for k in labels], probs, rtol=1e-5)
    int_path = _convert(
        tr,
        [ct.TensorType(name="x", shape=(1, 3, 6, 6))],
        tmp_path / "ci.mlpackage",
        classifier_config=ct.ClassifierConfig([10, 20, 30]),
    )
    out = MLModel(int_path).predict({"x": x})
    assert out["classLabel"] == [10, 20, 30][int(np.argmax(probs))] and isinstance(out["classLabel"], int)


def test_image_output_is_a_pil_image(tmp_path):
    class ToPixels(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (torch.tanh(self.conv(x)) + 1) * 127.5

    torch.manual_seed(0)
    m = ToPixels().eval()
    path = _convert(
        _trace(m, (1, 3, 8, 10)),
        [ct.TensorType(name="x", shape=(1, 3, 8, 10))],
        tmp_path / "o.mlpackage",
        outputs=[ct.ImageType(name="out", color_layout=ct.colorlayout.RGB)],
    )
    x = np.random.default_rng(3).random((1, 3, 8, 10), dtype=np.float32)
    img = MLModel(path).predict({"x": x})["out"]
    assert isinstance(img, Image.Image) and img.size == (10, 8) and img.mode == "RGB"
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()[0].transpose(1, 2, 0)
    assert np.abs(np.asarray(img, np.float32) - ref).max() <= 0.51


def test_flexible_shapes_are_validated(tmp_path, small):
    tr = _trace(small, (1, 3, 16, 16))
    rng = ct.Shape((1, 3, ct.RangeDim(8, 32, 16), ct.RangeDim(8, 32, 16)))
    ranged = MLModel(
        _convert(tr, [ct.TensorType(name="x", shape=rng)], tmp_path / "r.mlpackage", target="iOS17")
    )
    for h, w in ((8, 8), (32, 20)):
        x = np.random.default_rng(h).random((1, 3, h, w), dtype=np.float32)
        with torch.no_grad():
            ref = small(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(
            ranged.predict({"x": x})["var_24"]
            if "var_24" in ranged.output_names
            else next(iter(ranged.predict({"x": x}).values())),
            ref,
            rtol=1e-4,
            atol=1e-5,
        )
    with pytest.raises(InputShapeError, match=r"shape \(1, 3, 40, 8\).*8\.\.32"):
        ranged.predict({"x": np.zeros((1, 3, 40, 8), np.float32)})
    enum = MLModel(
        _convert(
            tr,
            [ct.TensorType(name="x", shape=ct.EnumeratedShapes([(1, 3, 8, 8), (1, 3, 16, 24)]))],
            tmp_path / "e.mlpackage",
            target="iOS17",
        )
    )
    enum.predict({"x": np.zeros((1, 3, 16, 24), np.float32)})
    with pytest.raises(InputShapeError, match=r"\(1, 3, 8, 8\), \(1, 3, 16, 24\)"):
        enum.predict({"x": np.zeros((1, 3, 16, 16), np.float32)})


def test_input_errors_are_clear(image_models, tmp_path):
    ml = MLModel(image_models[0])
    with pytest.raises(CoreMLRefError, match="missing input 'image'"):
        ml.predict({})
    with pytest.raises(CoreMLRefError, match=r"unknown input\(s\) \['img'\]"):
        ml.predict({"img": np.zeros((20, 24, 3), np.uint8)})
    with pytest.raises(CoreMLRefError, match="takes a PIL image"):
        ml.predict({"image": np.zeros((5, 5), np.float32)})
    with pytest.raises(FileNotFoundError):
        MLModel(tmp_path / "nope.mlpackage")
    (tmp_path / "old.mlmodel").write_bytes(b"")
    with pytest.raises(CoreMLRefError, match="neural network"):
        MLModel(tmp_path / "old.mlmodel")
    with pytest.raises(TypeError, match="mlpackage path"):
        MLModel(42)


def test_in_memory_mlmodel_and_intermediates(small):
    tr = _trace(small, (1, 3, 8, 8))
    mlm = ct.convert(
        tr,
        inputs=[ct.TensorType(name="x", shape=(1, 3, 8, 8))],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS15,
    )
    ml = MLModel(mlm)  # a coremltools MLModel object, as ct.convert returns it
    x = np.random.default_rng(4).random((1, 3, 8, 8), dtype=np.float32)
    out, inter = ml.intermediates({"x": x})
    ops = ml.op_types()
    assert list(inter)[0] == "x" and set(ops) <= set(inter)
    assert [n for n in inter if n in ops] == list(ops)  # program order
    (name,) = out
    np.testing.assert_array_equal(inter[name], out[name])
    conv_out = next(n for n, t in ops.items() if t == "conv")
    assert inter[conv_out].shape == (1, 8, 8, 8)
    # fp16 program: every captured fp16 value is exactly representable in fp16
    assert all(
        np.array_equal(v, v.astype(np.float16).astype(np.float32)) for n, v in inter.items() if n in ops
    )
    seen: list[str] = []
    ml.predict({"x": x}, hook=lambda n, t, v: seen.append(t))
    assert seen[0] == "input" and "conv" in seen


def test_fp16_io_types_follow_the_description(tmp_path, small):
    tr = _trace(small, (1, 3, 8, 8))
    path = _convert(
        tr,
        [ct.TensorType(name="x", shape=(1, 3, 8, 8), dtype=np.float16)],
        tmp_path / "h.mlpackage",
        target="iOS16",
        precision="fp16",
        outputs=[ct.TensorType(name="y", dtype=np.float16)],
    )
    ml = MLModel(path)
    assert ml.inputs["x"].dtype == "fp16" and ml.outputs["y"].dtype == "fp16"
    x = np.random.default_rng(5).random((1, 3, 8, 8)).astype(np.float64)  # any float dtype is accepted
    y = ml.predict({"x": x})["y"]
    assert y.dtype == np.float16
    with torch.no_grad():
        ref = small(torch.from_numpy(x.astype(np.float32))).numpy()
    assert cosine(y, ref) > 0.999


# -- compressed weights ---------------------------------------------------------------------------

COMPRESSIONS = {
    "int8_linear_iOS16": (
        "iOS16",
        cto.linear_quantize_weights,
        cto.OpLinearQuantizerConfig(mode="linear", weight_threshold=64),
    ),
    "palettize4_iOS16": (
        "iOS16",
        cto.palettize_weights,
        cto.OpPalettizerConfig(nbits=4, weight_threshold=64),
    ),
    "prune_iOS16": (
        "iOS16",
        cto.prune_weights,
        cto.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=64),
    ),
    "int4_block_iOS18": (
        "iOS18",
        cto.linear_quantize_weights,
        cto.OpLinearQuantizerConfig(
            mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=8, weight_threshold=64
        ),
    ),
    "palettize_grouped_iOS18": (
        "iOS18",
        cto.palettize_weights,
        cto.OpPalettizerConfig(nbits=2, granularity="per_grouped_channel", group_size=4, weight_threshold=64),
    ),
}


@pytest.fixture(scope="module")
def conv_stack():
    torch.manual_seed(0)
    m = nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.Flatten(), nn.Linear(16 * 4 * 4, 8)
    ).eval()
    return m, torch.jit.trace(m, torch.rand(1, 3, 8, 8))


@pytest.mark.parametrize("kind", list(COMPRESSIONS))
def test_compressed_weights_decompress_like_coremltools(kind, conv_stack, tmp_path):
    m, tr = conv_stack
    target, fn, op_cfg = COMPRESSIONS[kind]
    base = ct.convert(
        tr,
        inputs=[ct.TensorType(name="x", shape=(1, 3, 8, 8))],
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, target),
        compute_precision=ct.precision.FLOAT32,
    )
    fn(base, cto.OptimizationConfig(global_config=op_cfg)).save(str(tmp_path / "c.mlpackage"))
    ml = MLModel(tmp_path / "c.mlpackage")
    fn_ops = list(ml.program.functions["main"].operations)
    constexprs = [op for op in fn_ops if op.op_type.startswith("constexpr_")]
    assert constexprs, "the optimizer produced no compressed weights"
    compiler = ml._fn._compiler
    for op in constexprs:
        ours = compiler.consts[id(op.outputs[0])][1]
        np.testing.assert_array_equal(ours, np.asarray(op.materialized_val_inference(), dtype=ours.dtype))
    x = np.random.default_rng(6).random((1, 3, 8, 8), dtype=np.float32)
    (out,) = ml.predict({"x": x}).values()
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    if kind == "int8_linear_iOS16":
        assert rel_l2(out, ref) < 2e-2  # 8-bit weights stay close to the float model
    assert cosine(out, ref) > 0.5 and out.shape == ref.shape


def test_joint_sparse_and_palettized_weights(conv_stack, tmp_path):
    """iOS18 joint compression: constexpr_lut_to_sparse feeding constexpr_sparse_to_dense."""
    m, tr = conv_stack
    base = ct.convert(
        tr,
        inputs=[ct.TensorType(name="x", shape=(1, 3, 8, 8))],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT32,
    )
    pruned = cto.prune_weights(
        base,
        cto.OptimizationConfig(
            global_config=cto.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=64)
        ),
    )
    joint = cto.palettize_weights(
        pruned,
        cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=4, weight_threshold=64)),
        joint_compression=True,
    )
    joint.save(str(tmp_path / "j.mlpackage"))
    ml = MLModel(tmp_path / "j.mlpackage")
    ops = [op for op in ml.program.functions["main"].operations if op.op_type.startswith("constexpr_")]
    assert "constexpr_lut_to_sparse" in {op.op_type for op in ops}
    dense = [op for op in ops if op.op_type == "constexpr_sparse_to_dense"]
    assert dense
    consts = ml._fn._compiler.consts
    for op in dense:
        w = consts[id(op.outputs[0])][1]
        assert (w == 0).mean() >= 0.45  # still sparse
        assert len(np.unique(w[w != 0])) <= 16  # and palettized to 4 bits
    x = np.random.default_rng(7).random((1, 3, 8, 8), dtype=np.float32)
    (out,) = ml.predict({"x": x}).values()
    (ref,) = MLModel(tmp_path / "j.mlpackage").predict({"x": x}).values()
    np.testing.assert_array_equal(out, ref)
    assert out.shape == (1, 8) and np.isfinite(out).all()
