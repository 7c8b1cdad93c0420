"""One-op MIL programs through the reference executor, against coremltools' own value
inference (the op definitions' numpy semantics) or torch / numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil.mil import Builder as mb  # noqa: E402
from support.mil import mil_value, run_mil  # noqa: E402

from parbench.coreml_ref import UnsupportedOpError, supported_ops  # noqa: E402
from parbench.coreml_ref.ops.image import grid_points  # noqa: E402

RNG = np.random.default_rng(0)


def rand(*shape: int, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    return RNG.uniform(lo, hi, size=shape).astype(np.float32)


def check_vs_coremltools(fn, opset: str = "iOS17", rtol: float = 1e-5, atol: float = 1e-6, **inputs):
    ours = run_mil(fn, opset=opset, **inputs)
    ref = mil_value(fn, opset=opset, **inputs)
    assert ref is not None, "coremltools has no value inference for this op; use an explicit reference"
    assert len(ours) == len(ref)
    for o, r in zip(ours, ref, strict=True):
        assert o.shape == r.shape, (o.shape, r.shape)
        np.testing.assert_allclose(o.astype(np.float64), r.astype(np.float64), rtol=rtol, atol=atol)
    return ours


UNARY = {
    "abs": (-2, 2),
    "acos": (-0.9, 0.9),
    "asin": (-0.9, 0.9),
    "atan": (-3, 3),
    "atanh": (-0.9, 0.9),
    "ceil": (-3, 3),
    "cos": (-3, 3),
    "cosh": (-2, 2),
    "erf": (-2, 2),
    "exp": (-2, 2),
    "exp2": (-2, 2),
    "floor": (-3, 3),
    "round": (-3, 3),
    "rsqrt": (0.1, 3),
    "sign": (-2, 2),
    "sin": (-3, 3),
    "sinh": (-2, 2),
    "sqrt": (0, 4),
    "square": (-2, 2),
    "tan": (-1, 1),
    "tanh": (-3, 3),
    "relu": (-2, 2),
    "relu6": (-3, 9),
    "sigmoid": (-4, 4),
    "silu": (-4, 4),
    "softplus": (-4, 4),
    "softsign": (-4, 4),
    "inverse": (0.5, 3),
    "log": (0.1, 5),
}


NP_UNARY = {
    "abs": np.abs,
    "acos": np.arccos,
    "asin": np.arcsin,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "ceil": np.ceil,
    "cos": np.cos,
    "cosh": np.cosh,
    "erf": lambda v: torch.erf(torch.from_numpy(v)).numpy(),
    "exp": np.exp,
    "exp2": np.exp2,
    "floor": np.floor,
    "round": np.round,
    "rsqrt": lambda v: 1 / np.sqrt(v + 1e-12),
    "sign": np.sign,
    "sin": np.sin,
    "sinh": np.sinh,
    "sqrt": np.sqrt,
    "square": np.square,
    "tan": np.tan,
    "tanh": np.tanh,
    "relu": lambda v: np.maximum(v, 0),
    "relu6": lambda v: np.clip(v, 0, 6),
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "silu": lambda v: v / (1 + np.exp(-v)),
    "softplus": lambda v: np.log1p(np.exp(v)),
    "softsign": lambda v: v / (1 + np.abs(v)),
    "inverse": lambda v: 1 / (v + 1e-4),
    "log": lambda v: np.log(v + 1e-45),
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(op):
    lo, hi = UNARY[op]
    x = rand(3, 5, lo=lo, hi=hi)
    x[0, 0] = 0.5 if op == "round" else x[0, 0]  # MIL rounds half to even
    (out,) = run_mil(lambda x: getattr(mb, op)(x=x), x=x)
    np.testing.assert_allclose(out, NP_UNARY[op](x.astype(np.float64)), rtol=2e-6, atol=1e-6)
    ref = mil_value(lambda x: getattr(mb, op)(x=x), x=x)
    if ref is not None:  # and coremltools' own numpy semantics, where it has them
        np.testing.assert_allclose(out, ref[0], rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize(
    "op,kw",
    [
        ("clip", {"alpha": -0.5, "beta": 0.5}),
        ("threshold", {"alpha": 0.2}),
        ("elu", {"alpha": 0.7}),
        ("leaky_relu", {"alpha": 0.1}),
        ("linear_activation", {"alpha": 2.0, "beta": -1.0}),
        ("scaled_tanh", {"alpha": 2.0, "beta": 0.5}),
        ("sigmoid_hard", {"alpha": 0.2, "beta": 0.5}),
        ("thresholded_relu", {"alpha": 0.3}),
        ("clamped_relu", {"alpha": 0.1, "beta": 0.6}),
        ("gelu", {"mode": "EXACT"}),
        ("gelu", {"mode": "TANH_APPROXIMATION"}),
        ("gelu", {"mode": "SIGMOID_APPROXIMATION"}),
        ("softmax", {"axis": 1}),
        ("softmax", {"axis": -1}),
    ],
)
def test_activations(op, kw):
    x = rand(2, 4, 3, lo=-2, hi=2)
    check_vs_coremltools(lambda x: getattr(mb, op)(x=x, **kw), x=x, rtol=1e-5)


def test_prelu_and_softplus_parametric():
    x = rand(1, 3, 4, 4, lo=-2, hi=2)
    a, b = np.array([0.1, 0.2, 0.3], np.float32), np.array([1.0, 2.0, 0.5], np.float32)
    (out,) = run_mil(lambda x: mb.prelu(x=x, alpha=a), x=x)
    np.testing.assert_allclose(out, F.prelu(torch.from_numpy(x), torch.from_numpy(a)).numpy(), rtol=1e-6)
    (out,) = run_mil(lambda x: mb.softplus_parametric(x=x, alpha=a, beta=b), x=x)
    ref = a[None, :, None, None] * np.log1p(np.exp(b[None, :, None, None] * x))
    np.testing.assert_allclose(out, ref, rtol=1e-5)


BINARY = [
    "add",
    "sub",
    "mul",
    "real_div",
    "floor_div",
    "mod",
    "pow",
    "maximum",
    "minimum",
    "equal",
    "not_equal",
    "greater",
    "greater_equal",
    "less",
    "less_equal",
]


@pytest.mark.parametrize("op", BINARY)
def test_binary_broadcast(op):
    x = rand(2, 1, 4, lo=0.5, hi=3)
    y = (
        rand(3, 1, lo=-2, hi=2)
        if op not in ("pow", "mod", "floor_div", "real_div")
        else rand(3, 1, lo=0.5, hi=2)
    )
    y[0, 0] = x[0, 0, 0] if op in ("equal", "not_equal", "greater_equal", "less_equal") else y[0, 0]
    check_vs_coremltools(lambda x, y: getattr(mb, op)(x=x, y=y), x=x, y=y)


def test_int_binary_and_logical():
    x = np.array([[7, -7, 3]], np.int32)
    y = np.array([[2, 2, -2]], np.int32)
    for op in ("add", "sub", "mul", "floor_div", "mod", "maximum"):
        check_vs_coremltools(lambda x, y, op=op: getattr(mb, op)(x=x, y=y), x=x, y=y)
    a, b = np.array([True, False, True]), np.array([True, True, False])
    for op in ("logical_and", "logical_or", "logical_xor"):
        check_vs_coremltools(lambda x, y, op=op: getattr(mb, op)(x=x, y=y), x=a, y=b)
    check_vs_coremltools(lambda x: mb.logical_not(x=x), x=a)


def test_select_and_cast():
    c = np.array([[True, False, True]])
    a, b = rand(2, 3), rand(2, 3)
    check_vs_coremltools(lambda c, a, b: mb.select(cond=c, a=a, b=b), c=c, a=a, b=b)
    x = np.array([1.7, -1.7, 2.5, -0.2], np.float32)
    (i,) = check_vs_coremltools(lambda x: mb.cast(x=x, dtype="int32"), x=x)
    assert i.dtype == np.int32 and i.tolist() == [1, -1, 2, 0]  # truncation toward zero
    (f,) = run_mil(lambda x: mb.cast(x=x, dtype="fp16"), x=np.array([1 / 3], np.float32))
    assert f[0] == np.float32(np.float16(1 / 3)) != np.float32(1 / 3)


# -- fp16 policy -------------------------------------------------------------------------------


def test_fp16_values_are_rounded_after_each_op():
    x = np.array([1.0, 2.0, 3.0], np.float16)
    y = np.array([3e-4, 3e-4, 3e-4], np.float16)
    (out,) = run_mil(lambda x, y: mb.add(x=x, y=y), x=x, y=y)
    np.testing.assert_array_equal(out, (x + y).astype(np.float32))  # numpy fp16 add rounds too
    assert out[2] == 3.0  # 3.0003 is not representable in fp16 (spacing 0.002 at 3)
    (raw,) = run_mil(lambda x, y: mb.add(x=x, y=y), emulate_fp16=False, x=x, y=y)
    assert raw[2] == np.float32(3.0) + np.float32(np.float16(3e-4)) != 3.0


def test_fp16_overflow_becomes_inf():
    x = np.array([60000.0], np.float16)
    (out,) = run_mil(lambda x: mb.mul(x=x, y=np.float16(2.0)), x=x)
    assert np.isinf(out[0])


# -- linear algebra, conv, norms, pooling ----------------------------------------------------


def test_linear_matmul_einsum():
    x, w, b = rand(2, 3, 5), rand(4, 5), rand(4)
    check_vs_coremltools(lambda x: mb.linear(x=x, weight=w, bias=b), x=x, rtol=1e-5)
    y = rand(2, 6, 5)
    check_vs_coremltools(lambda x, y: mb.matmul(x=x, y=y, transpose_y=True), x=x, y=y, rtol=1e-5)
    check_vs_coremltools(
        lambda x, y: mb.matmul(x=x, y=y, transpose_x=True), x=rand(3, 4), y=rand(3, 2), rtol=1e-5
    )
    a, c = rand(2, 3, 4, 5), rand(2, 5, 4, 6)
    check_vs_coremltools(
        lambda a, c: mb.einsum(values=(a, c), equation="nchw,nwhu->nchu"), a=a, c=c, rtol=1e-5
    )
    (out,) = run_mil(lambda a, c: mb.einsum(values=(a, c), equation="chw,whr->chr"), a=a[0], c=c[0])
    np.testing.assert_allclose(out, np.einsum("chw,whr->chr", a[0], c[0]), rtol=1e-5, atol=1e-6)


CONV_CASES = [
    dict(pad_type="valid"),
    dict(pad_type="same"),
    dict(pad_type="same", strides=[2, 2]),
    dict(pad_type="same_lower", strides=[2, 2]),
    dict(pad_type="custom", pad=[1, 2, 0, 3]),
    dict(pad_type="custom", pad=[1, 1, 1, 1], dilations=[2, 2]),
    dict(pad_type="valid", groups=2),
]


@pytest.mark.parametrize("kw", CONV_CASES)
def test_conv2d(kw):
    x = rand(1, 4, 9, 10)
    groups = kw.get("groups", 1)
    w, b = rand(6, 4 // groups, 3, 3), rand(6)
    (out,) = run_mil(lambda x: mb.conv(x=x, weight=w, bias=b, **kw), x=x)
    s, d = kw.get("strides", [1, 1]), kw.get("dilations", [1, 1])
    if kw["pad_type"] == "custom":
        p = kw["pad"]
        pads = [(p[0], p[1]), (p[2], p[3])]
    elif kw["pad_type"] == "valid":
        pads = [(0, 0), (0, 0)]
    else:  # TF-style same: out = ceil(in / stride), extra padding after (same) or before (same_lower)
        pads = []
        for n, st, k in zip(x.shape[2:], s, [3, 3], strict=True):
            total = max(0, (math.ceil(n / st) - 1) * st + (k - 1) * 1 + 1 - n)
            lo, hi = total // 2, total - total // 2
            pads.append((hi, lo) if kw["pad_type"] == "same_lower" else (lo, hi))
    xt = F.pad(torch.from_numpy(x), [pads[1][0], pads[1][1], pads[0][0], pads[0][1]])
    ref = F.conv2d(xt, torch.from_numpy(w), torch.from_numpy(b), s, 0, d, groups)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-5, atol=1e-5)
    if kw["pad_type"] in ("same", "same_lower"):
        assert out.shape[2:] == tuple(math.ceil(n / st) for n, st in zip(x.shape[2:], s, strict=True))


def test_conv1d_conv3d_and_dynamic_weight():
    x1, w1 = rand(1, 3, 11), rand(2, 3, 3)
    (out,) = run_mil(lambda x: mb.conv(x=x, weight=w1, strides=[2], pad_type="valid"), x=x1)
    np.testing.assert_allclose(
        out, F.conv1d(torch.from_numpy(x1), torch.from_numpy(w1), stride=2).numpy(), rtol=1e-5, atol=1e-6
    )
    x3, w3 = rand(1, 2, 4, 5, 6), rand(3, 2, 2, 2, 2)
    (out,) = run_mil(lambda x: mb.conv(x=x, weight=w3, pad_type="valid"), x=x3)
    np.testing.assert_allclose(
        out, F.conv3d(torch.from_numpy(x3), torch.from_numpy(w3)).numpy(), rtol=1e-5, atol=1e-6
    )
    x, w = rand(1, 2, 6, 6), rand(3, 2, 3, 3)
    (out,) = run_mil(lambda x, w: mb.conv(x=x, weight=w, pad_type="valid"), x=x, w=w)
    np.testing.assert_allclose(
        out, F.conv2d(torch.from_numpy(x), torch.from_numpy(w)).numpy(), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "kw,torch_kw",
    [
        (dict(pad_type="valid", strides=[2, 2]), dict(stride=2)),
        (dict(pad_type="custom", pad=[1, 1, 1, 1], strides=[2, 2]), dict(stride=2, padding=1)),
        (
            dict(pad_type="custom", pad=[1, 1, 1, 1], strides=[2, 2], output_shape=[1, 4, 10, 10]),
            dict(stride=2, padding=1, output_padding=1),
        ),
        (dict(pad_type="valid", groups=2, dilations=[2, 1]), dict(groups=2, dilation=(2, 1))),
    ],
)
def test_conv_transpose(kw, torch_kw):
    x = rand(1, 4, 5, 5)
    g = kw.get("groups", 1)
    w, b = rand(4, 4 // g, 3, 3), rand(4)
    (out,) = run_mil(lambda x: mb.conv_transpose(x=x, weight=w, bias=b, **kw), x=x)
    ref = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), **torch_kw)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-5, atol=1e-5)


def test_conv_transpose_same_padding_shape():
    x, w = rand(1, 2, 5, 7), rand(2, 3, 4, 4)
    (out,) = run_mil(lambda x: mb.conv_transpose(x=x, weight=w, pad_type="same", strides=[2, 2]), x=x)
    full = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), stride=2).numpy()
    assert out.shape == (1, 3, 10, 14)
    np.testing.assert_allclose(out, full[:, :, 1:11, 1:15], rtol=1e-5, atol=1e-6)


def test_batch_instance_layer_norm():
    x = rand(2, 3, 4, 5, lo=-3, hi=3)
    mean, var, g, b = rand(3), rand(3, lo=0.5, hi=2), rand(3), rand(3)
    (out,) = run_mil(
        lambda x: mb.batch_norm(x=x, mean=mean, variance=var, gamma=g, beta=b, epsilon=1e-3), x=x
    )
    ref = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-3) * g[:, None, None] + b[:, None, None]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    (out,) = run_mil(lambda x: mb.instance_norm(x=x, gamma=g, beta=b, epsilon=1e-5), x=x)
    m, v = x.mean((2, 3), keepdims=True), x.var((2, 3), keepdims=True)
    np.testing.assert_allclose(
        out, (x - m) / np.sqrt(v + 1e-5) * g[:, None, None] + b[:, None, None], rtol=1e-4, atol=1e-5
    )
    gl, bl = rand(4, 5), rand(4, 5)
    check_vs_coremltools(
        lambda x: mb.layer_norm(x=x, axes=[2, 3], gamma=gl, beta=bl, epsilon=1e-5), x=x, rtol=1e-4, atol=1e-5
    )
    check_vs_coremltools(lambda x: mb.layer_norm(x=x, axes=[1], gamma=g, beta=b), x=x, rtol=1e-4, atol=1e-5)
    check_vs_coremltools(lambda x: mb.l2_norm(x=x, epsilon=1e-6), x=x, rtol=1e-5)
    (out,) = run_mil(lambda x: mb.local_response_norm(x=x, size=3, alpha=1e-2, beta=0.75, k=1.0), x=x)
    np.testing.assert_allclose(
        out, F.local_response_norm(torch.from_numpy(x), 3, 1e-2, 0.75, 1.0).numpy(), rtol=1e-5
    )


@pytest.mark.parametrize(
    "kw,torch_kw",
    [
        (dict(kernel_sizes=[3, 3], strides=[2, 2], pad_type="valid"), dict(kernel_size=3, stride=2)),
        (
            dict(kernel_sizes=[3, 3], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1]),
            dict(kernel_size=3, stride=2, padding=1),
        ),
        (
            dict(kernel_sizes=[3, 3], strides=[2, 2], pad_type="valid", ceil_mode=True),
            dict(kernel_size=3, stride=2, ceil_mode=True),
        ),
        (
            dict(kernel_sizes=[2, 2], strides=[2, 2], pad_type="custom", pad=[1, 1, 1, 1], ceil_mode=True),
            dict(kernel_size=2, stride=2, padding=1, ceil_mode=True),
        ),
    ],
)
def test_pools_match_torch(kw, torch_kw):
    x = rand(1, 2, 9, 10)
    xt = torch.from_numpy(x)
    (mx,) = run_mil(lambda x: mb.max_pool(x=x, **kw), x=x)
    np.testing.assert_array_equal(mx, F.max_pool2d(xt, **torch_kw).numpy())
    for excl in (False, True):
        (av,) = run_mil(lambda x, e=excl: mb.avg_pool(x=x, exclude_padding_from_average=e, **kw), x=x)
        ref = F.avg_pool2d(xt, count_include_pad=not excl, **torch_kw)
        np.testing.assert_allclose(av, ref.numpy(), rtol=1e-5, atol=1e-6)


def test_pool_same_padding_asymmetric():
    x = rand(1, 1, 6, 6)
    (mx,) = run_mil(lambda x: mb.max_pool(x=x, kernel_sizes=[2, 2], strides=[1, 1], pad_type="same"), x=x)
    ref = F.max_pool2d(F.pad(torch.from_numpy(x), [0, 1, 0, 1], value=-math.inf), 2, 1)
    np.testing.assert_array_equal(mx, ref.numpy())
    (av,) = run_mil(
        lambda x: mb.avg_pool(
            x=x, kernel_sizes=[2, 2], strides=[1, 1], pad_type="same", exclude_padding_from_average=True
        ),
        x=x,
    )
    assert av[0, 0, -1, -1] == pytest.approx(x[0, 0, -1, -1])  # only the one real pixel counts
    (l2,) = run_mil(lambda x: mb.l2_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid"), x=x)
    np.testing.assert_allclose(l2, np.sqrt(F.avg_pool2d(torch.from_numpy(x) ** 2, 2).numpy() * 4), rtol=1e-5)


# -- reductions --------------------------------------------------------------------------------

REDUCE = [
    "reduce_sum",
    "reduce_mean",
    "reduce_max",
    "reduce_min",
    "reduce_prod",
    "reduce_l1_norm",
    "reduce_l2_norm",
    "reduce_sum_square",
    "reduce_log_sum",
    "reduce_log_sum_exp",
]


@pytest.mark.parametrize("op", REDUCE)
@pytest.mark.parametrize("axes,keep", [([1], False), ([0, 2], True), (None, False)])
def test_reductions(op, axes, keep):
    x = rand(2, 3, 4, lo=0.2, hi=1.5)
    kw = {"keep_dims": keep} if axes is None else {"axes": axes, "keep_dims": keep}
    check_vs_coremltools(lambda x: getattr(mb, op)(x=x, **kw), x=x, rtol=1e-5)


def test_arg_reductions_topk_argsort():
    x = rand(3, 5)
    (am,) = check_vs_coremltools(lambda x: mb.reduce_argmax(x=x, axis=1), x=x)
    assert am.dtype == np.int32
    check_vs_coremltools(lambda x: mb.reduce_argmin(x=x, axis=0, keep_dims=True), x=x)
    check_vs_coremltools(lambda x: mb.topk(x=x, k=2, axis=1), x=x)
    check_vs_coremltools(lambda x: mb.topk(x=x, k=2, axis=0, ascending=True), x=x)
    check_vs_coremltools(lambda x: mb.argsort(x=x, axis=1), x=x)
    check_vs_coremltools(lambda x: mb.argsort(x=x, axis=0, ascending=True), x=x)


# -- shape and indexing ----------------------------------------------------------------------


def test_shape_ops():
    x = rand(2, 3, 4)
    check_vs_coremltools(lambda x: mb.reshape(x=x, shape=[0, -1, 2]), x=x)
    check_vs_coremltools(lambda x: mb.reshape(x=x, shape=[4, 6]), x=x)
    check_vs_coremltools(lambda x: mb.expand_dims(x=x, axes=[0, -1]), x=x)
    check_vs_coremltools(lambda x: mb.squeeze(x=x, axes=[0]), x=x[:1])
    check_vs_coremltools(lambda x: mb.squeeze(x=x), x=x[:1, :1])
    check_vs_coremltools(lambda x: mb.transpose(x=x, perm=[2, 0, 1]), x=x)
    check_vs_coremltools(lambda x: mb.concat(values=[x, mb.mul(x=x, y=2.0)], axis=1), x=x)
    # interleave: the op definition's own example (coremltools' value inference ignores interleave)
    a = np.array([[1, 2], [3, 4], [5, 6]], np.float32)
    b = np.array([[7, 8], [9, 10], [11, 12]], np.float32)
    (il,) = run_mil(lambda a, b: mb.concat(values=[a, b], axis=0, interleave=True), a=a, b=b)
    assert il.tolist() == [[1, 2], [7, 8], [3, 4], [9, 10], [5, 6], [11, 12]]
    # scalars (e.g. dimensions gathered from `shape`, as SSDLite's flexible program does) concat
    # to a vector, one element each, per concat's type inference
    (vec,) = run_mil(
        lambda x: mb.concat(
            values=[mb.gather(x=mb.shape(x=x), indices=2), mb.gather(x=mb.shape(x=x), indices=0)], axis=0
        ),
        x=x,
    )
    assert vec.tolist() == [4, 2]
    check_vs_coremltools(lambda x: mb.stack(values=[x, x], axis=2), x=x)
    check_vs_coremltools(lambda x: mb.split(x=x, num_splits=2, axis=2), x=x)
    check_vs_coremltools(lambda x: mb.split(x=x, split_sizes=[1, 2], axis=1), x=x)
    check_vs_coremltools(lambda x: mb.tile(x=x, reps=[1, 2, 3]), x=x)
    check_vs_coremltools(lambda x: mb.reverse(x=x, axes=[0, 2]), x=x)
    check_vs_coremltools(lambda x: mb.flatten2d(x=x, axis=2), x=x)
    (s,) = run_mil(lambda x: mb.shape(x=x), x=x)
    assert s.tolist() == [2, 3, 4] and s.dtype == np.int32


@pytest.mark.parametrize(
    "kw",
    [
        dict(begin=[0, 1, 0], end=[2, 3, 4]),
        dict(begin=[0, 0, 3], end=[2, 3, 0], stride=[1, 1, -1]),
        dict(
            begin=[1, 0, 0],
            end=[0, 3, 4],
            stride=[1, 2, 2],
            begin_mask=[False, True, False],
            end_mask=[True, False, True],
        ),
        dict(begin=[0, -1, 0], end=[2, 0, 4], squeeze_mask=[False, True, False]),
        dict(
            begin=[-1, 0, -2],
            end=[0, 3, 0],
            stride=[-1, 1, -2],
            begin_mask=[False] * 3,
            end_mask=[True, False, True],
        ),
    ],
)
def test_slice_by_index(kw):
    x = rand(2, 3, 4)
    check_vs_coremltools(lambda x: mb.slice_by_index(x=x, **kw), x=x)


def test_slice_by_size_and_dynamic_begin():
    x = rand(3, 4, 5)
    check_vs_coremltools(lambda x: mb.slice_by_size(x=x, begin=[1, 0, 2], size=[2, -1, 2]), x=x)
    b = np.array([1, 1, 0], np.int32)
    (out,) = run_mil(lambda x, b: mb.slice_by_size(x=x, begin=b, size=[1, 2, 3]), x=x, b=b)
    np.testing.assert_array_equal(out, x[1:2, 1:3, 0:3])


def test_pad_modes():
    x = rand(1, 2, 4, 5)
    xt = torch.from_numpy(x)
    for mode, tmode in (("constant", "constant"), ("reflect", "reflect"), ("replicate", "replicate")):
        (out,) = run_mil(lambda x, m=mode: mb.pad(x=x, pad=[1, 2, 2, 1], mode=m, constant_val=0.5), x=x)
        kwargs = {"value": 0.5} if mode == "constant" else {}
        np.testing.assert_array_equal(out, F.pad(xt, [2, 1, 1, 2], mode=tmode, **kwargs).numpy())
    (out,) = run_mil(lambda x: mb.pad(x=x, pad=[0, 0, 1, 0, 0, 0, 2, 1], mode="reflect"), x=x)  # rank-4 pad
    ref = np.pad(x, [(0, 0), (1, 0), (0, 0), (2, 1)], mode="reflect")
    np.testing.assert_array_equal(out, ref)


def test_gather_family():
    x = rand(4, 5, 3)
    idx = np.array([[0, 3], [-1, 2]], np.int32)
    check_vs_coremltools(lambda x, i: mb.gather(x=x, indices=i, axis=1), opset="iOS15", x=x, i=idx)
    idx_pos = np.array([[0, 3], [4, 2]], np.int32)
    check_vs_coremltools(lambda x, i: mb.gather(x=x, indices=i, axis=1), opset="iOS17", x=x, i=idx_pos)
    b_idx = np.array([[0, 2], [1, 1], [4, 0], [3, 3]], np.int32)
    check_vs_coremltools(
        lambda x, i: mb.gather(x=x, indices=i, axis=1, batch_dims=1), opset="iOS16", x=x, i=b_idx
    )
    ga = RNG.integers(0, 4, size=(2, 5, 3)).astype(np.int32)
    check_vs_coremltools(lambda x, i: mb.gather_along_axis(x=x, indices=i, axis=0), x=x, i=ga)
    nd = np.array([[0, 1], [3, 4], [2, 2]], np.int32)
    (out,) = run_mil(lambda x, i: mb.gather_nd(x=x, indices=i), x=x, i=nd)
    np.testing.assert_array_equal(out, x[nd[:, 0], nd[:, 1]])
    bnd = np.array([[[1], [4]], [[0], [0]], [[2], [3]], [[4], [1]]], np.int32)
    (out,) = run_mil(lambda x, i: mb.gather_nd(x=x, indices=i, batch_dims=1), opset="iOS16", x=x, i=bnd)
    np.testing.assert_array_equal(out, np.stack([x[b][bnd[b, :, 0]] for b in range(4)]))


def test_gather_rejects_out_of_range_and_ios17_negative():
    x = rand(4, 3)
    with pytest.raises(RuntimeError, match="out of range"):
        run_mil(lambda x, i: mb.gather(x=x, indices=i, axis=0), x=x, i=np.array([4], np.int32))
    with pytest.raises(RuntimeError, match="negative"):
        run_mil(
            lambda x, i: mb.gather(x=x, indices=i, axis=0), opset="iOS17", x=x, i=np.array([-1], np.int32)
        )


def test_scatter_family():
    data = rand(4, 3)
    upd = rand(2, 3)
    idx = np.array([3, 1], np.int32)
    for mode in ("update", "add", "sub", "mul", "max", "min"):
        (out,) = run_mil(
            lambda d, u, m=mode: mb.scatter(data=d, indices=idx, updates=u, axis=0, mode=m), d=data, u=upd
        )
        ref = data.copy()
        for j, i in enumerate(idx):
            ref[i] = {
                "update": upd[j],
                "add": ref[i] + upd[j],
                "sub": ref[i] - upd[j],
                "mul": ref[i] * upd[j],
                "max": np.maximum(ref[i], upd[j]),
                "min": np.minimum(ref[i], upd[j]),
            }[mode]
        np.testing.assert_allclose(out, ref, rtol=1e-6)
    ia = np.array([[0, 2, 1], [3, 0, 1]], np.int32)
    (out,) = run_mil(
        lambda d, u: mb.scatter_along_axis(data=d, indices=ia, updates=u, axis=0, mode="add"), d=data, u=upd
    )
    ref = data.copy()
    np.add.at(ref, (ia, np.arange(3)[None].repeat(2, 0)), upd)
    np.testing.assert_allclose(out, ref, rtol=1e-6)
    ind = np.array([[1, 2], [3, 0]], np.int32)
    (out,) = run_mil(
        lambda d, u: mb.scatter_nd(data=d, indices=ind, updates=u, mode="update"),
        d=data,
        u=np.array([5.0, 6.0], np.float32),
    )
    ref = data.copy()
    ref[1, 2], ref[3, 0] = 5.0, 6.0
    np.testing.assert_array_equal(out, ref)


def test_layout_ops():
    x = rand(1, 8, 3, 4)
    (d2s,) = run_mil(lambda x: mb.depth_to_space(x=x, block_size=2), x=x)
    # TF DCR order: channel (i * b + j) * C_out + c goes to pixel (h * b + i, w * b + j)
    ref = x.reshape(1, 2, 2, 2, 3, 4).transpose(0, 3, 4, 1, 5, 2).reshape(1, 2, 6, 8)
    np.testing.assert_array_equal(d2s, ref)
    (back,) = run_mil(lambda x: mb.space_to_depth(x=x, block_size=2), x=d2s)
    np.testing.assert_array_equal(back, x)
    (ps,) = run_mil(lambda x: mb.pixel_shuffle(x=x, upscale_factor=2), x=x)
    np.testing.assert_array_equal(ps, F.pixel_shuffle(torch.from_numpy(x), 2).numpy())
    (pu,) = run_mil(lambda x: mb.pixel_unshuffle(x=x, downscale_factor=np.uint32(2)), opset="iOS16", x=ps)
    np.testing.assert_array_equal(pu, x)
    y = rand(1, 2, 4, 6)
    (s2b,) = run_mil(lambda x: mb.space_to_batch(x=x, block_shape=[2, 2], paddings=[[0, 0], [1, 1]]), x=y)
    assert s2b.shape == (4, 2, 2, 4)
    (b2s,) = run_mil(lambda x: mb.batch_to_space(x=x, block_shape=[2, 2], crops=[[0, 0], [1, 1]]), x=s2b)
    np.testing.assert_array_equal(b2s, y)
    (sw,) = run_mil(lambda x: mb.sliding_windows(x=x, axis=1, size=3, stride=2), x=rand(2, 7, 3))
    assert sw.shape == (2, 3, 3, 3)


def test_sequence_and_creation_ops():
    x = rand(3, 4)
    check_vs_coremltools(lambda x: mb.cumsum(x=x, axis=1), x=x)
    (cs,) = run_mil(lambda x: mb.cumsum(x=x, axis=0, exclusive=True, reverse=True), x=x)
    np.testing.assert_allclose(cs, np.flip(np.cumsum(np.flip(x, 0), 0), 0) - x, rtol=1e-5, atol=1e-6)
    check_vs_coremltools(lambda x: mb.band_part(x=x, lower=1, upper=0), x=x)
    (oh,) = run_mil(
        lambda i: mb.one_hot(indices=i, one_hot_vector_size=4, axis=0, on_value=2.0, off_value=-1.0),
        i=np.array([0, 3, 1], np.int32),
    )
    np.testing.assert_array_equal(oh, np.where(np.eye(4)[[0, 3, 1]].T == 1, 2.0, -1.0))
    (nz,) = run_mil(lambda x: mb.non_zero(x=x), x=np.array([[0.0, 1.0], [2.0, 0.0]], np.float32))
    assert nz.tolist() == [[0, 1], [1, 0]]
    (r,) = run_mil(
        lambda e: mb.range_1d(start=np.int32(1), end=mb.squeeze(x=e), step=np.int32(2)),
        e=np.array([8], np.int32),
    )
    assert r.tolist() == [1, 3, 5, 7]
    (f,) = run_mil(lambda s: mb.fill(shape=s, value=1.5), s=np.array([2, 3], np.int32))
    assert f.shape == (2, 3) and (f == 1.5).all()
    rs = np.array([2, 1, 0], np.int32)
    (rv,) = run_mil(lambda x, ln: mb.reverse_sequence(x=x, lengths=ln, seq_axis=1, batch_axis=0), x=x, ln=rs)
    np.testing.assert_array_equal(rv, np.stack([x[0, [1, 0, 2, 3]], x[1], x[2]]))


# -- resizing ----------------------------------------------------------------------------------


def test_grid_points_match_the_op_documentation():
    # the worked examples in resize_bilinear's definition (Xin = 2)
    cases = {
        ("UNALIGN_CORNERS", 5): [0.0, 0.1, 0.5, 0.9, 1.0],
        ("ALIGN_CORNERS", 5): [0.0, 0.25, 0.5, 0.75, 1.0],
        ("DEFAULT", 5): [0.0, 0.4, 0.8, 1.0, 1.0],
        ("OFFSET_CORNERS", 5): [0.1, 0.3, 0.5, 0.7, 0.9],
        ("UNALIGN_CORNERS", 6): [0.0, 0.0, 1 / 3, 2 / 3, 1.0, 1.0],
        ("DEFAULT", 6): [0.0, 1 / 3, 2 / 3, 1.0, 1.0, 1.0],
        ("OFFSET_CORNERS", 6): [1 / 12, 0.25, 5 / 12, 7 / 12, 0.75, 11 / 12],
    }
    for (mode, n), ref in cases.items():
        np.testing.assert_allclose(grid_points(2, n, mode).numpy(), ref, atol=1e-9, err_msg=mode)


@pytest.mark.parametrize(
    "mode", ["STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS", "UNALIGN_CORNERS"]
)
def test_resize_bilinear_on_a_ramp(mode):
    x = np.array([0.0, 1.0], np.float32).reshape(1, 1, 1, 2).repeat(2, axis=2)
    (out,) = run_mil(
        lambda x: mb.resize_bilinear(x=x, target_size_height=2, target_size_width=5, sampling_mode=mode), x=x
    )
    np.testing.assert_allclose(out[0, 0, 0], grid_points(2, 5, mode).numpy(), atol=1e-6)


def test_upsample_matches_torch():
    x = rand(1, 2, 5, 6)
    xt = torch.from_numpy(x)
    (a,) = run_mil(
        lambda x: mb.upsample_bilinear(
            x=x, scale_factor_height=2.0, scale_factor_width=3.0, align_corners=True
        ),
        x=x,
    )
    np.testing.assert_allclose(
        a, F.interpolate(xt, size=(10, 18), mode="bilinear", align_corners=True).numpy(), atol=1e-6
    )
    (b,) = run_mil(
        lambda x: mb.upsample_bilinear(
            x=x, scale_factor_height=2.0, scale_factor_width=2.0, align_corners=False
        ),
        x=x,
    )
    np.testing.assert_allclose(
        b, F.interpolate(xt, scale_factor=2, mode="bilinear", align_corners=False).numpy(), atol=1e-6
    )
    (c,) = run_mil(
        lambda x: mb.upsample_nearest_neighbor(x=x, scale_factor_height=2, scale_factor_width=3), x=x
    )
    np.testing.assert_array_equal(c, F.interpolate(xt, scale_factor=(2, 3), mode="nearest").numpy())
    (d,) = run_mil(lambda x: mb.resize_nearest_neighbor(x=x, target_size_height=7, target_size_width=4), x=x)
    np.testing.assert_array_equal(d, F.interpolate(xt, size=(7, 4), mode="nearest").numpy())
    (e,) = run_mil(
        lambda x: mb.upsample_bilinear(
            x=x,
            scale_factor_height=2.0,
            scale_factor_width=2.0,
            align_corners=False,
            half_pixel_centers=False,
        ),
        opset="iOS16",
        x=x,
    )
    (f,) = run_mil(
        lambda x: mb.resize_bilinear(
            x=x, target_size_height=10, target_size_width=12, sampling_mode="DEFAULT"
        ),
        x=x,
    )
    np.testing.assert_allclose(e, f, atol=1e-6)


def test_ios17_resize_with_runtime_shape():
    x = rand(1, 2, 5, 6)
    s = np.array([1, 10, 12], np.int32)
    (out,) = run_mil(
        lambda x, s: mb.resize(x=x, shape=s, resized_dims=np.uint32(2), sampling_mode="UNALIGN_CORNERS"),
        x=x,
        s=s,
    )
    np.testing.assert_allclose(
        out, F.interpolate(torch.from_numpy(x), size=(10, 12), mode="bilinear").numpy(), atol=1e-6
    )


def test_crop_and_crop_resize():
    x = rand(2, 3, 6, 7)
    check_vs_coremltools(lambda x: mb.crop(x=x, crop_height=[1, 2], crop_width=[0, 3]), x=x) if mil_value(
        lambda x: mb.crop(x=x, crop_height=[1, 2], crop_width=[0, 3]), x=x
    ) else None
    (c,) = run_mil(lambda x: mb.crop(x=x, crop_height=[1, 2], crop_width=[0, 3]), x=x)
    np.testing.assert_array_equal(c, x[:, :, 1:4, 0:4])
    boxes = np.array([[0.0, 0.0, 5.0, 6.0], [1.0, 2.0, 3.0, 4.0]], np.float32)
    (cr,) = run_mil(
        lambda x, b: mb.crop_resize(
            x=x,
            boxes=b,
            box_indices=np.array([1, 0], np.int32),
            target_height=6,
            target_width=7,
            sampling_mode="ALIGN_CORNERS",
            box_coordinate_mode="CORNERS_HEIGHT_FIRST",
        ),
        x=x,
        b=boxes,
    )
    assert cr.shape == (2, 3, 6, 7)
    np.testing.assert_allclose(cr[0], x[1], atol=1e-6)  # the full-image box reproduces image 1
    np.testing.assert_allclose(cr[1, :, 0, 0], x[0, :, 1, 2], atol=1e-6)  # box corner hits pixel (1, 2)


def test_resample_and_affine_against_grid_sample():
    x = rand(1, 2, 5, 6)
    coords = rand(1, 4, 3, 2, lo=-1.2, hi=1.2)
    xt, ct_ = torch.from_numpy(x), torch.from_numpy(coords)
    for padding, tmode in (("border", "border"), ("reflection", "reflection"), ("constant", "zeros")):
        (out,) = run_mil(
            lambda x, c, p=padding: mb.resample(
                x=x,
                coordinates=c,
                sampling_mode="bilinear",
                padding_mode=p,
                padding_value=0.0,
                coordinates_mode="normalized_minus_one_to_one",
                align_corners=True,
            ),
            x=x,
            c=coords,
        )
        ref = F.grid_sample(xt, ct_, mode="bilinear", padding_mode=tmode, align_corners=True)
        np.testing.assert_allclose(out, ref.numpy(), atol=1e-5, err_msg=padding)
    ident = np.array([[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]], np.float32)
    (aff,) = run_mil(
        lambda x, m: mb.affine(
            x=x,
            transform_matrix=m,
            output_height=5,
            output_width=6,
            sampling_mode="bilinear",
            padding_mode="constant",
            padding_value=0.0,
            coordinates_mode="normalized_minus_one_to_one",
            align_corners=True,
        ),
        opset="iOS15",
        x=x,
        m=ident,
    )
    np.testing.assert_allclose(aff, x, atol=1e-5)


# -- attention, control flow, misc -------------------------------------------------------------


def test_scaled_dot_product_attention():
    q, k, v = rand(1, 2, 4, 8), rand(1, 2, 5, 8), rand(1, 2, 5, 3)
    mask = RNG.random((4, 5)) > 0.3
    mask[:, 0] = True
    (out,) = run_mil(
        lambda q, k, v, m: mb.scaled_dot_product_attention(query=q, key=k, value=v, attn_mask=m),
        opset="iOS18",
        q=q,
        k=k,
        v=v,
        m=mask,
    )
    ref = F.scaled_dot_product_attention(
        *(torch.from_numpy(t) for t in (q, k, v)), attn_mask=torch.from_numpy(mask)
    )
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-5, atol=1e-6)


def test_cond_and_while_loop():
    def branchy(x):
        p = mb.greater(x=mb.reduce_sum(x=x), y=0.0)
        return mb.cond(pred=p, _true_fn=lambda: mb.mul(x=x, y=2.0), _false_fn=lambda: mb.sub(x=x, y=1.0))

    x = rand(3, lo=0.1, hi=1)
    (t,) = run_mil(branchy, x=x)
    (f,) = run_mil(branchy, x=-x)
    np.testing.assert_allclose(t, x * 2)
    np.testing.assert_allclose(f, -x - 1)

    def loop(a):
        def cond(i, acc):
            return mb.less(x=i, y=np.int32(3))

        def body(i, acc):
            return mb.add(x=i, y=1), mb.mul(x=acc, y=2.0)

        return mb.while_loop(_cond=cond, _body=body, loop_vars=(np.int32(0), a))

    i, acc = run_mil(loop, a=np.array([1.0, 3.0], np.float32))
    assert i.shape == () and int(i) == 3
    np.testing.assert_allclose(acc, [8.0, 24.0])


def test_quantize_dequantize():
    x = rand(2, 3, lo=-2, hi=2)
    scale = np.array([0.02, 0.05, 0.1], np.float32)
    zp = np.array([0, 3, -2], np.int8)
    (q,) = check_vs_coremltools(
        lambda x: mb.quantize(input=x, scale=scale, zero_point=zp, axis=1, output_dtype="int8"), x=x
    )
    assert q.dtype == np.int8
    (d,) = run_mil(lambda q: mb.dequantize(input=q, scale=scale, zero_point=zp, axis=1), q=q)
    np.testing.assert_allclose(d, scale * (q.astype(np.float32) - zp), rtol=1e-6)
    assert np.abs(d - x).max() <= scale.max() / 2 + 1e-6


def test_unsupported_op_is_named_with_its_opset():
    with pytest.raises(UnsupportedOpError, match=r"'random_normal' \(iOS15 opset"):
        run_mil(lambda s: mb.random_normal(shape=s), s=np.array([2, 2], np.int32))


def test_supported_ops_lists_the_common_ops():
    ops = supported_ops()
    assert ops == sorted(ops)
    for op in (
        "conv",
        "conv_transpose",
        "linear",
        "matmul",
        "softmax",
        "layer_norm",
        "instance_norm",
        "upsample_bilinear",
        "resize_bilinear",
        "constexpr_affine_dequantize",
        "constexpr_lut_to_dense",
        "constexpr_sparse_to_dense",
        "constexpr_blockwise_shift_scale",
        "classify",
        "gather_nd",
        "einsum",
    ):
        assert op in ops
    assert "random_normal" not in ops


def test_gru_follows_the_mil_definition():
    """MIL's GRU applies the reset gate to W_ho h only, with one bias: o = tanh(W_io x + r * W_ho h + b_o)."""
    s, b, i, h = 4, 2, 3, 5
    x, h0 = rand(s, b, i), rand(b, h)
    w_ih, w_hh, bias = rand(3 * h, i), rand(3 * h, h), rand(3 * h)
    seq, last = run_mil(
        lambda x, h0: mb.gru(
            x=x, initial_h=h0, weight_ih=w_ih, weight_hh=w_hh, bias=bias, output_sequence=True
        ),
        opset="iOS15",
        x=x,
        h0=h0,
    )
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    (wr, wo, wz), (ur, uo, uz), (br, bo, bz) = np.split(w_ih, 3), np.split(w_hh, 3), np.split(bias, 3)
    hs, ht = [], h0.astype(np.float64)
    for t in range(s):
        r = sig(x[t] @ wr.T + ht @ ur.T + br)
        z = sig(x[t] @ wz.T + ht @ uz.T + bz)
        o = np.tanh(x[t] @ wo.T + r * (ht @ uo.T) + bo)
        ht = (1 - z) * o + z * ht
        hs.append(ht)
    np.testing.assert_allclose(seq, np.stack(hs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(last, hs[-1], rtol=1e-5, atol=1e-6)


def test_non_maximum_suppression():
    # center-size boxes: 0 and 1 overlap heavily, 2 is apart
    boxes = np.array([[[5, 5, 4, 4], [5.2, 5.1, 4, 4], [20, 20, 4, 4]]], np.float32)
    scores = np.array([[[0.9], [0.8], [0.7]]], np.float32)
    b, s, idx, n = run_mil(
        lambda b, s: mb.non_maximum_suppression(
            boxes=b, scores=s, iou_threshold=0.5, score_threshold=0.0, max_boxes=3
        ),
        opset="iOS15",
        b=boxes,
        s=scores,
    )
    assert int(n[0]) == 2 and idx[0, :2].tolist() == [0, 2] and idx[0, 2] == -1
    np.testing.assert_array_equal(b[0, 1], boxes[0, 2])
    np.testing.assert_allclose(s[0, :2, 0], [0.9, 0.7])
    # iOS17: boxes / scores carry the box axis last, and there is no count output
    b17, s17, idx17 = run_mil(
        lambda b, s: mb.non_maximum_suppression(boxes=b, scores=s, iou_threshold=0.5, max_boxes=3),
        opset="iOS17",
        b=boxes.transpose(0, 2, 1).copy(),
        s=scores.transpose(0, 2, 1).copy(),
    )
    assert idx17[0].tolist() == idx[0].tolist()
    np.testing.assert_array_equal(b17, b.transpose(0, 2, 1))


def test_slice_update_reshape_like_fill_like():
    x, u = rand(3, 4), rand(2, 2)
    (out,) = run_mil(
        lambda x, u: mb.slice_update(x=x, update=u, begin=[1, 0], end=[3, 4], stride=[1, 2]),
        opset="iOS18",
        x=x,
        u=u,
    )
    ref = x.copy()
    ref[1:3, 0:4:2] = u
    np.testing.assert_array_equal(out, ref)
    r = rand(2, 6)
    (rl,) = run_mil(
        lambda x, r: mb.reshape_like(x=x, ref_tensors=(r,), begins=[0], ends=[2], end_masks=[False]),
        opset="iOS16",
        x=rand(3, 4),
        r=r,
    )
    assert rl.shape == (2, 6)
    (fl,) = run_mil(lambda r: mb.fill_like(ref_tensor=r, value=2.5), opset="iOS16", r=r)
    assert fl.shape == (2, 6) and (fl == 2.5).all()
