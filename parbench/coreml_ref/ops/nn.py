"""Convolution, linear algebra, normalization and pooling ops."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from parbench.coreml_ref.registry import OpCtx, Run, kernel

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def same_pads(
    in_sizes: list[int], kernel: list[int], strides: list[int], dilations: list[int], lower: bool
) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim for MIL's ``same`` / ``same_lower`` pad types."""
    pads = []
    for i, k, s, d in zip(in_sizes, kernel, strides, dilations, strict=True):
        eff = (k - 1) * d + 1
        total = max(0, (math.ceil(i / s) - 1) * s + eff - i)
        small, big = total // 2, total - total // 2
        pads.append((big, small) if lower else (small, big))
    return pads


def _torch_pad(pads: list[tuple[int, int]]) -> list[int]:
    """[(b0, a0), (b1, a1)] for spatial dims 0, 1 -> F.pad's order (last dim first)."""
    out: list[int] = []
    for b, a in reversed(pads):
        out += [b, a]
    return out


def resolve_pads(pad_type: str, pad: list[int] | None, n: int) -> tuple[str, list[tuple[int, int]] | None]:
    if pad_type == "valid":
        return "fixed", [(0, 0)] * n
    if pad_type == "custom":
        p = pad or [0] * (2 * n)
        return "fixed", [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        return pad_type, None
    raise ValueError(pad_type)


@kernel("conv")
def _conv(c: OpCtx) -> Run:
    x, w_get = c.get("x"), c.get("weight")
    n = c.in_rank("x") - 2
    if n not in _CONV:
        raise c.unsupported(f"{n}-D convolution")
    conv = _CONV[n]
    strides = c.ints("strides", [1] * n)
    dil = c.ints("dilations", [1] * n)
    groups = c.int("groups", 1)
    bias = c.tensor("bias") if c.has("bias") and c.is_const("bias") else None
    bias_get = c.get("bias") if c.has("bias") and bias is None else None
    kind, pads = resolve_pads(c.str("pad_type", "valid"), c.ints("pad"), n)
    w_const = c.tensor("weight") if c.is_const("weight") else None
    kernel_sizes = list(c.in_shape("weight")[2:])

    def run(env: list) -> torch.Tensor:
        v = x(env)
        w = w_const if w_const is not None else w_get(env)
        b = bias if bias_get is None else bias_get(env)
        p = pads
        if p is None:
            p = same_pads(list(v.shape[2:]), kernel_sizes, strides, dil, kind == "same_lower")
        if all(b_ == a_ for b_, a_ in p):
            return conv(v, w, b, strides, [b_ for b_, _ in p], dil, groups)
        return conv(F.pad(v, _torch_pad(p)), w, b, strides, 0, dil, groups)

    return run


@kernel("conv_transpose")
def _conv_transpose(c: OpCtx) -> Run:
    x = c.get("x")
    n = c.in_rank("x") - 2
    if n not in _CONVT:
        raise c.unsupported(f"{n}-D transposed convolution")
    convt = _CONVT[n]
    w = c.tensor("weight") if c.is_const("weight") else None
    w_get = c.get("weight")
    strides = c.ints("strides", [1] * n)
    dil = c.ints("dilations", [1] * n)
    groups = c.int("groups", 1)
    bias = c.tensor("bias") if c.has("bias") else None
    pad_type = c.str("pad_type", "valid")
    pad = c.ints("pad") or [0] * (2 * n)
    out_shape = c.ints("output_shape")
    ksz = list(c.in_shape("weight")[2:])

    def run(env: list) -> torch.Tensor:
        v = x(env)
        wt = w if w is not None else w_get(env)
        full = [(v.shape[2 + i] - 1) * strides[i] + (ksz[i] - 1) * dil[i] + 1 for i in range(n)]
        if pad_type == "custom":
            before = [pad[2 * i] for i in range(n)]
            sizes = [full[i] - pad[2 * i] - pad[2 * i + 1] for i in range(n)]
        elif pad_type == "same":
            sizes = [v.shape[2 + i] * strides[i] for i in range(n)]
            before = [max(0, full[i] - sizes[i]) // 2 for i in range(n)]
        else:
            before, sizes = [0] * n, list(full)
        if out_shape is not None:
            sizes = list(out_shape[2:])
        # torch pads symmetrically and adds extra rows at the end via output_padding
        sym = all(full[i] - before[i] - sizes[i] >= 0 for i in range(n))
        after = [full[i] - before[i] - sizes[i] for i in range(n)]
        if sym and all(before[i] == after[i] for i in range(n)):
            return convt(v, wt, bias, strides, before, 0, groups, dil)
        y = convt(v, wt, None, strides, 0, 0, groups, dil)
        # crop (or zero-extend) to the requested window, then add the bias
        for i in range(n):
            dim = 2 + i
            lo, size = before[i], sizes[i]
            avail = y.shape[dim] - lo
            if avail >= size:
                y = y.narrow(dim, lo, size)
            else:
                y = y.narrow(dim, lo, max(avail, 0))
                padspec = [0, 0] * (y.dim() - dim - 1) + [0, size - max(avail, 0)]
                y = F.pad(y, padspec)
        if bias is not None:
            y = y + bias.reshape([1, -1] + [1] * n)
        return y

    return run


@kernel("linear")
def _linear(c: OpCtx) -> Run:
    x, w = c.get("x"), c.get("weight")
    b = c.get_opt("bias")
    if b is None:
        return lambda env: F.linear(x(env), w(env))
    return lambda env: F.linear(x(env), w(env), b(env))


@kernel("matmul")
def _matmul(c: OpCtx) -> Run:
    x, y = c.get("x"), c.get("y")
    tx, ty = c.bool("transpose_x", False), c.bool("transpose_y", False)

    def run(env: list) -> torch.Tensor:
        a, b = x(env), y(env)
        if tx:
            a = a.transpose(-1, -2)
        if ty:
            b = b.transpose(-1, -2)
        return torch.matmul(a, b)

    return run


@kernel("einsum")
def _einsum(c: OpCtx) -> Run:
    vals, eq = c.gets("values"), c.str("equation")
    return lambda env: torch.einsum(eq, *[g(env) for g in vals])


# -- normalization -------------------------------------------------------------------------


def _opt_tensor(c: OpCtx, key: str) -> torch.Tensor | None:
    return c.tensor(key).float() if c.has(key) and c.is_const(key) else None


@kernel("batch_norm")
def _batch_norm(c: OpCtx) -> Run:
    x = c.get("x")
    getters = {k: c.get_opt(k) for k in ("mean", "variance", "gamma", "beta")}
    eps = c.float("epsilon", 1e-5)

    def run(env: list) -> torch.Tensor:
        g = {k: (f(env) if f is not None else None) for k, f in getters.items()}
        return F.batch_norm(x(env), g["mean"], g["variance"], g["gamma"], g["beta"], False, 0.0, eps)

    return run


@kernel("instance_norm")
def _instance_norm(c: OpCtx) -> Run:
    x, eps = c.get("x"), c.float("epsilon", 1e-5)
    gamma, beta = c.get_opt("gamma"), c.get_opt("beta")

    def run(env: list) -> torch.Tensor:
        return F.instance_norm(
            x(env),
            weight=gamma(env) if gamma is not None else None,
            bias=beta(env) if beta is not None else None,
            eps=eps,
        )

    return run


@kernel("layer_norm")
def _layer_norm(c: OpCtx) -> Run:
    x, eps = c.get("x"), c.float("epsilon", 1e-5)
    rank = c.in_rank("x")
    axes = c.ints("axes")
    axes = sorted(a % rank for a in (axes if axes is not None else range(rank)))
    gamma, beta = c.get_opt("gamma"), c.get_opt("beta")
    trailing = axes == list(range(rank - len(axes), rank))

    if trailing:

        def run(env: list) -> torch.Tensor:
            v = x(env)
            shape = v.shape[rank - len(axes) :]
            g = gamma(env).reshape(shape) if gamma is not None else None
            b = beta(env).reshape(shape) if beta is not None else None
            return F.layer_norm(v, shape, g, b, eps)

        return run

    def run_general(env: list) -> torch.Tensor:
        v = x(env)
        mean = v.mean(dim=axes, keepdim=True)
        var = (v - mean).square().mean(dim=axes, keepdim=True)
        out = (v - mean) / torch.sqrt(var + eps)
        bshape = [v.shape[i] if i in axes else 1 for i in range(rank)]
        if gamma is not None:
            out = out * gamma(env).reshape(bshape)
        if beta is not None:
            out = out + beta(env).reshape(bshape)
        return out

    return run_general


@kernel("l2_norm")
def _l2_norm(c: OpCtx) -> Run:
    x, eps = c.get("x"), c.float("epsilon", 1e-6)
    rank = c.in_rank("x")

    def run(env: list) -> torch.Tensor:
        v = x(env)
        flat = v.reshape(-1) if rank == 3 else v.reshape(math.prod(v.shape[: rank - 3]), -1)
        ss = flat.square().sum(dim=-1, keepdim=True)
        return (flat / torch.sqrt(ss + eps)).reshape(v.shape)

    return run


@kernel("local_response_norm")
def _lrn(c: OpCtx) -> Run:
    x, size = c.get("x"), c.int("size")
    alpha, beta, k = c.float("alpha", 1e-4), c.float("beta", 0.75), c.float("k", 1.0)
    return lambda env: F.local_response_norm(x(env), size, alpha, beta, k)


# -- pooling -------------------------------------------------------------------------------

_MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVGPOOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _pool_params(c: OpCtx) -> tuple[int, list[int], list[int], str, list[tuple[int, int]] | None, bool]:
    n = c.in_rank("x") - 2
    k = c.ints("kernel_sizes")
    s = c.ints("strides", [1] * n)
    kind, pads = resolve_pads(c.str("pad_type", "valid"), c.ints("pad"), n)
    return n, k, s, kind, pads, bool(c.bool("ceil_mode", False))


def _pads_for(v: torch.Tensor, k: list[int], s: list[int], kind: str, pads: list | None) -> list:
    if pads is not None:
        return pads
    return same_pads(list(v.shape[2:]), k, s, [1] * len(k), kind == "same_lower")


def _torch_can_pad(p: list[tuple[int, int]], k: list[int]) -> bool:
    return all(b == a and 2 * b <= kk for (b, a), kk in zip(p, k, strict=True))


@kernel("max_pool", fp16_exact=True)
def _max_pool(c: OpCtx) -> Run:
    x = c.get("x")
    n, k, s, kind, pads, ceil = _pool_params(c)
    if n not in _MAXPOOL:
        raise c.unsupported(f"{n}-D pooling")
    pool = _MAXPOOL[n]

    def run(env: list) -> torch.Tensor:
        v = x(env)
        p = _pads_for(v, k, s, kind, pads)
        if _torch_can_pad(p, k):
            return pool(v, k, s, [b for b, _ in p], 1, ceil)
        return pool(F.pad(v, _torch_pad(p), value=-math.inf), k, s, 0, 1, ceil)

    return run


@kernel("avg_pool")
def _avg_pool(c: OpCtx) -> Run:
    x = c.get("x")
    n, k, s, kind, pads, ceil = _pool_params(c)
    if n not in _AVGPOOL:
        raise c.unsupported(f"{n}-D pooling")
    exclude = bool(c.bool("exclude_padding_from_average", False))
    pool = _AVGPOOL[n]

    def run(env: list) -> torch.Tensor:
        v = x(env)
        p = _pads_for(v, k, s, kind, pads)
        if _torch_can_pad(p, k):
            return pool(v, k, s, [b for b, _ in p], ceil, not exclude)
        tp = _torch_pad(p)
        if not exclude:
            return pool(F.pad(v, tp), k, s, 0, ceil, True)
        ones = torch.ones((1, 1) + tuple(v.shape[2:]), dtype=v.dtype)
        num = pool(F.pad(v, tp), k, s, 0, ceil, True)
        den = pool(F.pad(ones, tp), k, s, 0, ceil, True)
        return num / den

    return run


@kernel("l2_pool")
def _l2_pool(c: OpCtx) -> Run:
    x = c.get("x")
    n, k, s, kind, pads, ceil = _pool_params(c)
    if n not in (1, 2):
        raise c.unsupported(f"{n}-D l2 pooling")
    pool = _AVGPOOL[n]
    area = math.prod(k)

    def run(env: list) -> torch.Tensor:
        v = x(env)
        p = _pads_for(v, k, s, kind, pads)
        sq = F.pad(v.square(), _torch_pad(p))
        return torch.sqrt(pool(sq, k, s, 0, ceil, True) * area)

    return run
