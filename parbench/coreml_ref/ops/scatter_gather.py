"""Ops of coremltools' ``scatter_gather`` defs (iOS15-iOS18): gather and scatter, along an axis
and n-dimensional.  Negative indices wrap up to iOS16 and are out of range from iOS17 on."""

from __future__ import annotations

import math

import torch

from parbench.coreml_ref.registry import CoreMLRefError, OpCtx, Run, kernel


def _index(t: torch.Tensor, size: int, c: OpCtx, allow_negative: bool) -> torch.Tensor:
    i = t.long()
    if i.numel():
        lo, hi = int(i.min()), int(i.max())
        if hi >= size or lo < -size or (lo < 0 and not allow_negative):
            raise CoreMLRefError(
                f"{c.op_type} {c.name!r}: index out of range [{lo}, {hi}] for a dimension of size "
                f"{size}"
                + ("" if allow_negative else f" ({c.opset} treats negative indices as out of range)")
            )
    return torch.where(i < 0, i + size, i) if allow_negative else i


@kernel("gather", fp16_exact=True)
def _gather(c: OpCtx) -> Run:
    x, ind = c.get("x"), c.get("indices")
    axis, batch_dims = c.int("axis", 0), c.int("batch_dims", 0)
    neg_ok = c.opset in ("iOS15", "iOS16")

    def run(env: list) -> torch.Tensor:
        v = x(env)
        a = axis % v.dim()
        i = _index(ind(env), v.shape[a], c, neg_ok)
        if batch_dims == 0:
            out = v.index_select(a, i.reshape(-1))
            return out.reshape(tuple(v.shape[:a]) + tuple(i.shape) + tuple(v.shape[a + 1 :]))
        bshape = tuple(v.shape[:batch_dims])
        nb = math.prod(bshape)
        vf = v.reshape((nb,) + tuple(v.shape[batch_dims:]))
        ifl = i.reshape((nb,) + tuple(i.shape[batch_dims:]))
        ab = a - batch_dims
        outs = [
            vf[b]
            .index_select(ab, ifl[b].reshape(-1))
            .reshape(tuple(vf.shape[1 : ab + 1]) + tuple(ifl.shape[1:]) + tuple(vf.shape[ab + 2 :]))
            for b in range(nb)
        ]
        out = torch.stack(outs)
        return out.reshape(bshape + tuple(out.shape[1:]))

    return run


@kernel("gather_along_axis", fp16_exact=True)
def _gather_along_axis(c: OpCtx) -> Run:
    x, ind, axis = c.get("x"), c.get("indices"), c.int("axis", 0)
    neg_ok = c.opset in ("iOS15", "iOS16")

    def run(env: list) -> torch.Tensor:
        v = x(env)
        a = axis % v.dim()
        return torch.gather(v, a, _index(ind(env), v.shape[a], c, neg_ok))

    return run


@kernel("gather_nd", fp16_exact=True)
def _gather_nd(c: OpCtx) -> Run:
    x, ind, batch_dims = c.get("x"), c.get("indices"), c.int("batch_dims", 0)

    def run(env: list) -> torch.Tensor:
        v = x(env)
        i = ind(env).long()
        bshape = tuple(v.shape[:batch_dims])
        nb = math.prod(bshape)
        vf = v.reshape((nb,) + tuple(v.shape[batch_dims:]))
        ifl = i.reshape((nb,) + tuple(i.shape[batch_dims:]))
        k = ifl.shape[-1]
        outs = []
        for b in range(nb):
            idx = ifl[b].reshape(-1, k)
            sel = vf[b][tuple(idx[:, j] for j in range(k))]
            outs.append(sel.reshape(tuple(ifl.shape[1:-1]) + tuple(vf.shape[1 + k :])))
        out = torch.stack(outs)
        return out.reshape(bshape + tuple(out.shape[1:]))

    return run


_REDUCE = {"update": None, "add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


def _scatter_apply(
    data: torch.Tensor, dim: int, index: torch.Tensor, upd: torch.Tensor, mode: str
) -> torch.Tensor:
    if mode == "update":
        return data.scatter(dim, index, upd)
    if mode == "sub":
        return data.scatter_reduce(dim, index, -upd, "sum")
    if mode == "div":
        return data.scatter_reduce(dim, index, 1.0 / upd, "prod")
    return data.scatter_reduce(dim, index, upd, _REDUCE[mode])


@kernel("scatter")
def _scatter(c: OpCtx) -> Run:
    data, ind, upd = c.get("data"), c.get("indices"), c.get("updates")
    axis, mode = c.int("axis", 0), c.str("mode", "update")
    neg_ok = c.opset in ("iOS15", "iOS16")
    if mode not in ("update", "add", "sub", "mul", "div", "max", "min"):
        raise c.unsupported(f"mode {mode!r}")

    def run(env: list) -> torch.Tensor:
        d = data(env)
        a = axis % d.dim()
        i = _index(ind(env), d.shape[a], c, neg_ok).reshape(-1)
        u = upd(env).to(d.dtype)
        shape = [1] * d.dim()
        shape[a] = -1
        idx = i.reshape(shape).expand(u.shape)
        return _scatter_apply(d, a, idx, u, mode)

    return run


@kernel("scatter_along_axis")
def _scatter_along_axis(c: OpCtx) -> Run:
    data, ind, upd = c.get("data"), c.get("indices"), c.get("updates")
    axis, mode = c.int("axis", 0), c.str("mode", "add")
    neg_ok = c.opset in ("iOS15", "iOS16")

    def run(env: list) -> torch.Tensor:
        d = data(env)
        a = axis % d.dim()
        return _scatter_apply(d, a, _index(ind(env), d.shape[a], c, neg_ok), upd(env).to(d.dtype), mode)

    return run


@kernel("scatter_nd")
def _scatter_nd(c: OpCtx) -> Run:
    data, ind, upd = c.get("data"), c.get("indices"), c.get("updates")
    mode = c.str("mode", "add")

    def run(env: list) -> torch.Tensor:
        d = data(env)
        i = ind(env).long()
        k = i.shape[-1]
        flat_i = i.reshape(-1, k)
        strides = torch.tensor([math.prod(d.shape[j + 1 : k]) for j in range(k)], dtype=torch.long)
        lin = (flat_i * strides).sum(-1)
        inner = tuple(d.shape[k:])
        dv = d.reshape((-1,) + inner)
        u = upd(env).to(d.dtype).reshape((-1,) + inner)
        idx = lin.reshape((-1,) + (1,) * len(inner)).expand(u.shape)
        return _scatter_apply(dv, 0, idx, u, mode).reshape(d.shape)

    return run
