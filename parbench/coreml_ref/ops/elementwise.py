"""Ops of coremltools' ``elementwise_unary``, ``elementwise_binary`` and ``activation`` defs
(iOS15 - iOS18), cast included."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from parbench.coreml_ref.registry import TORCH_DTYPE, OpCtx, Run, kernel


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[OpCtx], Run]:
    def build(c: OpCtx) -> Run:
        x = c.get("x")
        return lambda env: fn(x(env))

    return build


def _float(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_floating_point() else t.float()


_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "abs": torch.abs,
    "acos": lambda t: torch.acos(_float(t)),
    "asin": lambda t: torch.asin(_float(t)),
    "atan": lambda t: torch.atan(_float(t)),
    "atanh": lambda t: torch.atanh(_float(t)),
    "ceil": torch.ceil,
    "cos": lambda t: torch.cos(_float(t)),
    "cosh": lambda t: torch.cosh(_float(t)),
    "erf": lambda t: torch.erf(_float(t)),
    "exp": lambda t: torch.exp(_float(t)),
    "exp2": lambda t: torch.exp2(_float(t)),
    "floor": torch.floor,
    "logical_not": torch.logical_not,
    "round": torch.round,  # half to even: MIL rounds 0.5 to 0
    "sign": torch.sign,
    "sin": lambda t: torch.sin(_float(t)),
    "sinh": lambda t: torch.sinh(_float(t)),
    "sqrt": lambda t: torch.sqrt(_float(t)),
    "square": torch.square,
    "tan": lambda t: torch.tan(_float(t)),
    "tanh": lambda t: torch.tanh(_float(t)),
    "relu": torch.relu,
    "relu6": lambda t: torch.clamp(t, 0.0, 6.0),
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "softplus": F.softplus,
    "softsign": F.softsign,
}

for _name, _fn in _UNARY.items():
    kernel(_name, fp16_exact=_name in ("abs", "ceil", "floor", "round", "sign", "relu", "relu6"))(_unary(_fn))


@kernel("inverse")
def _inverse(c: OpCtx) -> Run:
    x, eps = c.get("x"), c.float("epsilon", 1e-4)
    return lambda env: torch.reciprocal(x(env) + eps)


@kernel("log")
def _log(c: OpCtx) -> Run:
    x, eps = c.get("x"), c.float("epsilon", 1e-45)
    return lambda env: torch.log(x(env) + eps)


@kernel("rsqrt")
def _rsqrt(c: OpCtx) -> Run:
    x, eps = c.get("x"), c.float("epsilon", 1e-12)
    return lambda env: torch.rsqrt(x(env) + eps)


@kernel("threshold", fp16_exact=True)
def _threshold(c: OpCtx) -> Run:
    x, a = c.get("x"), c.get("alpha")
    return lambda env: torch.maximum(x(env), a(env).to(x(env).dtype))


@kernel("clip", fp16_exact=True)
def _clip(c: OpCtx) -> Run:
    x, lo, hi = c.get("x"), c.float("alpha"), c.float("beta")
    return lambda env: torch.clamp(x(env), lo, hi)


@kernel("cast")
def _cast(c: OpCtx) -> Run:
    x = c.get("x")
    dst = c.str("dtype")
    if dst not in TORCH_DTYPE:
        raise c.unsupported(f"cast to {dst!r}")
    want = TORCH_DTYPE[dst]
    src_float = c.in_dtype("x") in ("fp16", "fp32")
    if want in (torch.int32, torch.int64, torch.int16, torch.int8, torch.uint8) and src_float:
        # float -> int truncates toward zero, as numpy's astype (coremltools' own value inference)
        return lambda env: torch.trunc(x(env)).to(want)
    # fp32 -> fp16 rounding happens in the executor, which knows the output is fp16
    return lambda env: x(env).to(want)


# -- binary -------------------------------------------------------------------------------


def _binary(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable[[OpCtx], Run]:
    def build(c: OpCtx) -> Run:
        x, y = c.get("x"), c.get("y")
        return lambda env: fn(x(env), y(env))

    return build


def _floor_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.is_floating_point() or b.is_floating_point():
        return torch.floor(a / b)
    return torch.div(a, b, rounding_mode="floor")


def _real_div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return torch.trunc(a.double() / b.double()).to(a.dtype)


_BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "real_div": _real_div,
    "floor_div": _floor_div,
    "mod": torch.remainder,  # Python semantics: result has the divisor's sign
    "pow": torch.pow,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "equal": torch.eq,
    "not_equal": torch.ne,
    "greater": torch.gt,
    "greater_equal": torch.ge,
    "less": torch.lt,
    "less_equal": torch.le,
    "logical_and": torch.logical_and,
    "logical_or": torch.logical_or,
    "logical_xor": torch.logical_xor,
}

for _name, _fn in _BINARY.items():
    kernel(_name, fp16_exact=_name in ("maximum", "minimum"))(_binary(_fn))


# -- activations ---------------------------------------------------------------------------


@kernel("clamped_relu")
def _clamped_relu(c: OpCtx) -> Run:
    x, alpha, beta = c.get("x"), c.float("alpha"), c.float("beta")

    def run(env: list) -> torch.Tensor:
        v = x(env)
        return torch.clamp_max(torch.where(v >= 0, v, alpha * v), beta)

    return run


@kernel("elu")
def _elu(c: OpCtx) -> Run:
    x, alpha = c.get("x"), c.float("alpha")
    return lambda env: F.elu(x(env), alpha)


@kernel("gelu")
def _gelu(c: OpCtx) -> Run:
    x, mode = c.get("x"), c.str("mode", "EXACT")
    if mode == "EXACT":
        return lambda env: F.gelu(x(env))
    if mode == "TANH_APPROXIMATION":
        return lambda env: F.gelu(x(env), approximate="tanh")
    if mode == "SIGMOID_APPROXIMATION":
        return lambda env: x(env) * torch.sigmoid(1.702 * x(env))
    raise c.unsupported(f"mode {mode!r}")


@kernel("leaky_relu")
def _leaky_relu(c: OpCtx) -> Run:
    x, alpha = c.get("x"), c.float("alpha")
    return lambda env: F.leaky_relu(x(env), alpha)


@kernel("linear_activation")
def _linear_activation(c: OpCtx) -> Run:
    x, alpha, beta = c.get("x"), c.float("alpha"), c.float("beta")
    return lambda env: x(env) * alpha + beta


def _per_channel(t: torch.Tensor, rank: int) -> torch.Tensor:
    """[C] -> [1, C, 1, ...] to broadcast over dim 1 of a rank-``rank`` tensor."""
    return t.reshape([1, -1] + [1] * (rank - 2))


@kernel("prelu")
def _prelu(c: OpCtx) -> Run:
    x = c.get("x")
    alpha = _per_channel(c.tensor("alpha").float(), c.in_rank("x"))

    def run(env: list) -> torch.Tensor:
        v = x(env)
        return torch.where(v > 0, v, v * alpha)

    return run


@kernel("scaled_tanh")
def _scaled_tanh(c: OpCtx) -> Run:
    x, alpha, beta = c.get("x"), c.float("alpha"), c.float("beta")
    return lambda env: alpha * torch.tanh(beta * x(env))


@kernel("sigmoid_hard")
def _sigmoid_hard(c: OpCtx) -> Run:
    x, alpha, beta = c.get("x"), c.float("alpha"), c.float("beta")
    return lambda env: torch.clamp(alpha * x(env) + beta, 0.0, 1.0)


@kernel("softplus_parametric")
def _softplus_parametric(c: OpCtx) -> Run:
    x = c.get("x")
    r = c.in_rank("x")
    alpha = _per_channel(c.tensor("alpha").float(), r)
    beta = _per_channel(c.tensor("beta").float(), r)
    return lambda env: alpha * F.softplus(beta * x(env))


@kernel("thresholded_relu")
def _thresholded_relu(c: OpCtx) -> Run:
    x, alpha = c.get("x"), c.float("alpha")

    def run(env: list) -> torch.Tensor:
        v = x(env)
        return torch.where(v >= alpha, v, torch.zeros((), dtype=v.dtype))

    return run


@kernel("softmax")
def _softmax(c: OpCtx) -> Run:
    x, axis = c.get("x"), c.int("axis", -1)
    return lambda env: torch.softmax(x(env), axis)
