"""Shape, layout, indexing, reduction and sorting ops."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from parbench.coreml_ref.registry import CoreMLRefError, Getter, OpCtx, Run, kernel


def _ints_at_run(g: Getter, env: list) -> list[int]:
    v = g(env)
    if isinstance(v, torch.Tensor):
        return [int(i) for i in v.reshape(-1).tolist()]
    return [int(i) for i in v]


def _int_input(c: OpCtx, key: str, default: list[int] | None = None) -> Any:
    """A list of ints known at load time, or a getter evaluated at run time."""
    if not c.has(key):
        return default
    if c.is_const(key):
        return c.ints(key)
    g = c.get(key)
    return lambda env: _ints_at_run(g, env)


def _resolve(v: Any, env: list) -> Any:
    return v(env) if callable(v) else v


# -- reshape family -------------------------------------------------------------------------


@kernel("reshape", fp16_exact=True)
def _reshape(c: OpCtx) -> Run:
    x, shape = c.get("x"), _int_input(c, "shape")

    def run(env: list) -> torch.Tensor:
        v = x(env)
        s = list(_resolve(shape, env))
        if 0 in s:  # 0 copies the input's dim (only when ranks match)
            if len(s) != v.dim():
                raise CoreMLRefError(f"reshape {c.name!r}: 0 in shape {s} needs rank {v.dim()}")
            s = [v.shape[i] if d == 0 else d for i, d in enumerate(s)]
        return v.reshape(s)

    return run


@kernel("reshape_like", fp16_exact=True)
def _reshape_like(c: OpCtx) -> Run:
    x, refs = c.get("x"), c.gets("ref_tensors")
    # begins / ends / end_masks are tuples of scalars, one per reference tensor
    begins = [int(np.asarray(v).reshape(-1)[0]) for v in c.raws("begins")]
    ends = [int(np.asarray(v).reshape(-1)[0]) for v in c.raws("ends")]
    end_masks = [bool(np.asarray(v).reshape(-1)[0]) for v in c.raws("end_masks")]

    def run(env: list) -> torch.Tensor:
        shape: list[int] = []
        for g, b, e, m in zip(refs, begins, ends, end_masks, strict=True):
            s = list(g(env).shape)
            shape += s[b:] if m else s[b:e]
        return x(env).reshape(shape)

    return run


@kernel("expand_dims", fp16_exact=True)
def _expand_dims(c: OpCtx) -> Run:
    x, axes = c.get("x"), c.ints("axes")
    out_rank = c.in_rank("x") + len(axes)
    axes = sorted(a % out_rank for a in axes)

    def run(env: list) -> torch.Tensor:
        v = x(env)
        for a in axes:
            v = v.unsqueeze(a)
        return v

    return run


@kernel("squeeze", fp16_exact=True)
def _squeeze(c: OpCtx) -> Run:
    x, axes = c.get("x"), c.ints("axes")
    rank = c.in_rank("x")
    if axes is None:
        return lambda env: x(env).squeeze()
    axes_t = tuple(sorted(a % rank for a in axes))
    # non-single dims listed in axes are left alone (PyTorch behaviour, as the op spec says)
    return lambda env: x(env).squeeze(axes_t)


@kernel("flatten2d", fp16_exact=True)
def _flatten2d(c: OpCtx) -> Run:
    x, axis = c.get("x"), c.int("axis", 1)

    def run(env: list) -> torch.Tensor:
        v = x(env)
        a = axis % v.dim() if axis < 0 else axis
        return v.reshape(math.prod(v.shape[:a]), math.prod(v.shape[a:]))

    return run


@kernel("transpose", fp16_exact=True)
def _transpose(c: OpCtx) -> Run:
    x, perm = c.get("x"), c.ints("perm")
    return lambda env: x(env).permute(perm)


@kernel("shape")
def _shape(c: OpCtx) -> Run:
    x = c.get("x")
    return lambda env: torch.tensor(list(x(env).shape), dtype=torch.int32)


@kernel("concat", fp16_exact=True)
def _concat(c: OpCtx) -> Run:
    vals, axis = c.gets("values"), c.int("axis")
    interleave = bool(c.bool("interleave", False))
    if not interleave:

        def cat(env: list) -> torch.Tensor:
            ts = [g(env) for g in vals]
            if ts[0].dim() == 0:  # MIL concat of scalars is a vector, one element each
                return torch.stack(ts)
            return torch.cat(ts, axis)

        return cat

    def run(env: list) -> torch.Tensor:
        ts = [g(env) for g in vals]
        a = axis % ts[0].dim()
        st = torch.stack(ts, a + 1)  # [..., d_a, n, ...] -> interleaved along a
        shape = list(ts[0].shape)
        shape[a] *= len(ts)
        return st.reshape(shape)

    return run


@kernel("stack", fp16_exact=True)
def _stack(c: OpCtx) -> Run:
    vals, axis = c.gets("values"), c.int("axis")
    return lambda env: torch.stack([g(env) for g in vals], axis)


@kernel("split", fp16_exact=True)
def _split(c: OpCtx) -> Run:
    x, axis = c.get("x"), c.int("axis")
    sizes = c.ints("split_sizes")
    num = c.int("num_splits")

    def run(env: list) -> tuple:
        v = x(env)
        if sizes is not None:
            return tuple(torch.split(v, sizes, axis))
        n = v.shape[axis]
        if n % num:
            raise CoreMLRefError(f"split {c.name!r}: size {n} along axis {axis} not divisible by {num}")
        return tuple(torch.split(v, n // num, axis))

    return run


def _slice_dim(v: torch.Tensor, dim: int, sl: slice) -> torch.Tensor:
    if sl.step is None or sl.step > 0:
        return v[(slice(None),) * dim + (sl,)]
    idx = list(range(*sl.indices(v.shape[dim])))
    return v.index_select(dim, torch.tensor(idx, dtype=torch.long))


@kernel("slice_by_index", fp16_exact=True)
def _slice_by_index(c: OpCtx) -> Run:
    x = c.get("x")
    rank = c.in_rank("x")
    begin, end = _int_input(c, "begin"), _int_input(c, "end")
    stride = _int_input(c, "stride", [1] * rank)
    bm = c.bools("begin_mask") or [False] * rank
    em = c.bools("end_mask") or [False] * rank
    sm = c.bools("squeeze_mask") or [False] * rank
    squeeze_axes = [i for i in range(rank) if sm[i]]

    def run(env: list) -> torch.Tensor:
        v = x(env)
        b, e, s = _resolve(begin, env), _resolve(end, env), _resolve(stride, env)
        for d in range(rank):
            if sm[d]:
                i = b[d] if b[d] >= 0 else b[d] + v.shape[d]
                v = v.narrow(d, i, 1)
                continue
            sl = slice(None if bm[d] else b[d], None if em[d] else e[d], s[d])
            if sl == slice(None, None, 1):
                continue
            v = _slice_dim(v, d, sl)
        if squeeze_axes:
            v = v.squeeze(tuple(squeeze_axes))
        return v

    return run


@kernel("slice_by_size", fp16_exact=True)
def _slice_by_size(c: OpCtx) -> Run:
    x = c.get("x")
    begin, size = _int_input(c, "begin"), _int_input(c, "size")

    def run(env: list) -> torch.Tensor:
        v = x(env)
        b, s = _resolve(begin, env), _resolve(size, env)
        for d in range(v.dim()):
            start = b[d] + v.shape[d] if b[d] < 0 else b[d]
            length = v.shape[d] - start if s[d] == -1 else s[d]
            if start != 0 or length != v.shape[d]:
                v = v.narrow(d, start, length)
        return v

    return run


@kernel("slice_update")
def _slice_update(c: OpCtx) -> Run:
    x, upd = c.get("x"), c.get("update")
    rank = c.in_rank("x")
    begin, end = _int_input(c, "begin"), _int_input(c, "end")
    stride = _int_input(c, "stride", [1] * rank)
    bm = c.bools("begin_mask") or [False] * rank
    em = c.bools("end_mask") or [False] * rank
    sm = c.bools("squeeze_mask") or [False] * rank

    def run(env: list) -> torch.Tensor:
        v = x(env).clone()
        b, e, s = _resolve(begin, env), _resolve(end, env), _resolve(stride, env)
        index = []
        for d in range(rank):
            if sm[d]:
                index.append(torch.tensor([b[d] % v.shape[d]]))
                continue
            sl = slice(None if bm[d] else b[d], None if em[d] else e[d], s[d])
            index.append(torch.tensor(list(range(*sl.indices(v.shape[d])))))
        grids = torch.meshgrid(*index, indexing="ij")
        u = upd(env).to(v.dtype).reshape(grids[0].shape)
        v[grids] = u
        return v

    return run


def _pad_edges(v: torch.Tensor, pairs: list[tuple[int, int]], mode: str) -> torch.Tensor:
    """reflect / replicate padding of the trailing ``len(pairs)`` dims of any-rank ``v``."""
    while pairs and pairs[0] == (0, 0):
        pairs = pairs[1:]
    n = len(pairs)
    if n == 0:
        return v
    tp: list[int] = []
    for b, a in reversed(pairs):
        tp += [b, a]
    lead = tuple(v.shape[: v.dim() - n])
    if n <= 3:  # torch pads the last 1-3 dims of a [N, C, ...] tensor in one call
        w = v.reshape((1, math.prod(lead)) + tuple(v.shape[v.dim() - n :]))
        out = F.pad(w, tp, mode=mode)
        return out.reshape(lead + tuple(out.shape[2:]))
    for d, (b, a) in enumerate(pairs):  # more dims: one dim at a time
        if b == 0 and a == 0:
            continue
        dim = v.dim() - n + d
        m = v.movedim(dim, -1)
        shape = tuple(m.shape)
        out = F.pad(m.reshape(1, -1, shape[-1]), [b, a], mode=mode)
        v = out.reshape(shape[:-1] + (out.shape[-1],)).movedim(-1, dim)
    return v


@kernel("pad", fp16_exact=True)
def _pad(c: OpCtx) -> Run:
    x, pad = c.get("x"), _int_input(c, "pad")
    mode = c.str("mode", "constant")
    value = c.float("constant_val", 0.0)
    tmode = {"constant": "constant", "reflect": "reflect", "replicate": "replicate"}.get(mode)
    if tmode is None:
        raise c.unsupported(f"pad mode {mode!r}")

    def run(env: list) -> torch.Tensor:
        v = x(env)
        p = _resolve(pad, env)
        pairs = [(p[2 * i], p[2 * i + 1]) for i in range(len(p) // 2)]
        tp: list[int] = []
        for b, a in reversed(pairs):
            tp += [b, a]
        if tmode == "constant":
            return F.pad(v, tp, value=value)
        return _pad_edges(v, pairs, tmode)

    return run


@kernel("tile", fp16_exact=True)
def _tile(c: OpCtx) -> Run:
    x, reps = c.get("x"), _int_input(c, "reps")
    return lambda env: x(env).repeat(*_resolve(reps, env))


@kernel("reverse", fp16_exact=True)
def _reverse(c: OpCtx) -> Run:
    x, axes = c.get("x"), c.ints("axes")
    rank = c.in_rank("x")
    dims = list(range(rank)) if axes is None else [a % rank for a in axes]
    return lambda env: torch.flip(x(env), dims)


@kernel("reverse_sequence", fp16_exact=True)
def _reverse_sequence(c: OpCtx) -> Run:
    x, lengths = c.get("x"), c.get("lengths")
    seq_axis, batch_axis = c.int("seq_axis", 0), c.int("batch_axis", 0)

    def run(env: list) -> torch.Tensor:
        v = x(env)
        out = v.clone()
        sa, ba = seq_axis % v.dim(), batch_axis % v.dim()
        for b, n in enumerate(lengths(env).reshape(-1).tolist()):
            if n <= 0:
                continue
            src = v.select(ba, b)
            dst = out.select(ba, b)
            sa_b = sa - 1 if sa > ba else sa
            dst.narrow(sa_b, 0, n).copy_(torch.flip(src.narrow(sa_b, 0, n), [sa_b]))
        return out

    return run


@kernel("depth_to_space", fp16_exact=True)
def _depth_to_space(c: OpCtx) -> Run:
    x, bs = c.get("x"), c.int("block_size")

    def run(env: list) -> torch.Tensor:  # DCR order: depth = (i * b + j) * C_out + c
        v = x(env)
        n, ch, h, w = v.shape
        co = ch // (bs * bs)
        return v.reshape(n, bs, bs, co, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, co, h * bs, w * bs)

    return run


@kernel("space_to_depth", fp16_exact=True)
def _space_to_depth(c: OpCtx) -> Run:
    x, bs = c.get("x"), c.int("block_size")

    def run(env: list) -> torch.Tensor:
        v = x(env)
        n, ch, h, w = v.shape
        t = v.reshape(n, ch, h // bs, bs, w // bs, bs).permute(0, 3, 5, 1, 2, 4)
        return t.reshape(n, ch * bs * bs, h // bs, w // bs)

    return run


@kernel("pixel_shuffle", fp16_exact=True)
def _pixel_shuffle(c: OpCtx) -> Run:
    x, f = c.get("x"), c.int("upscale_factor")
    return lambda env: F.pixel_shuffle(x(env), f)


@kernel("pixel_unshuffle", fp16_exact=True)
def _pixel_unshuffle(c: OpCtx) -> Run:
    x, f = c.get("x"), c.int("downscale_factor")
    return lambda env: F.pixel_unshuffle(x(env), f)


@kernel("space_to_batch", fp16_exact=True)
def _space_to_batch(c: OpCtx) -> Run:
    x = c.get("x")
    bh, bw = c.ints("block_shape")
    (pt, pb), (pl, pr) = [c.ints("paddings")[0:2], c.ints("paddings")[2:4]]

    def run(env: list) -> torch.Tensor:
        v = F.pad(x(env), [pl, pr, pt, pb])
        n, ch, h, w = v.shape
        t = v.reshape(n, ch, h // bh, bh, w // bw, bw).permute(3, 5, 0, 1, 2, 4)
        return t.reshape(n * bh * bw, ch, h // bh, w // bw)

    return run


@kernel("batch_to_space", fp16_exact=True)
def _batch_to_space(c: OpCtx) -> Run:
    x = c.get("x")
    bh, bw = c.ints("block_shape")
    (ct, cb), (cl, cr) = [c.ints("crops")[0:2], c.ints("crops")[2:4]]

    def run(env: list) -> torch.Tensor:
        v = x(env)
        nb, ch, h, w = v.shape
        n = nb // (bh * bw)
        t = v.reshape(bh, bw, n, ch, h, w).permute(2, 3, 4, 0, 5, 1).reshape(n, ch, h * bh, w * bw)
        return t[:, :, ct : h * bh - cb, cl : w * bw - cr]

    return run


@kernel("sliding_windows", fp16_exact=True)
def _sliding_windows(c: OpCtx) -> Run:
    x, axis, size, stride = c.get("x"), c.int("axis"), c.int("size"), c.int("stride", 1)

    def run(env: list) -> torch.Tensor:
        v = x(env)
        a = axis % v.dim()
        u = v.unfold(a, size, stride)  # window dim goes last; move it next to the axis
        return u.movedim(-1, a + 1)

    return run


# -- creation -------------------------------------------------------------------------------


@kernel("fill")
def _fill(c: OpCtx) -> Run:
    shape = _int_input(c, "shape")
    value = c.get_opt("value")
    dt = c.out_dtype()

    def run(env: list) -> torch.Tensor:
        val = value(env) if value is not None else torch.tensor(0.0)
        return torch.full(_resolve(shape, env), float(val) if dt.startswith("fp") else int(val))

    return run


@kernel("fill_like")
def _fill_like(c: OpCtx) -> Run:
    ref, value = c.get("ref_tensor"), c.get_opt("value")

    def run(env: list) -> torch.Tensor:
        val = value(env) if value is not None else torch.tensor(0.0)
        return torch.full(tuple(ref(env).shape), val.item())

    return run


@kernel("range_1d")
def _range_1d(c: OpCtx) -> Run:
    start, end, step = c.get("start"), c.get("end"), c.get("step")
    floaty = c.out_dtype().startswith("fp")

    def run(env: list) -> torch.Tensor:
        s, e, st = (g(env).item() for g in (start, end, step))
        return torch.arange(s, e, st, dtype=torch.float32 if floaty else torch.int32)

    return run


@kernel("band_part")
def _band_part(c: OpCtx) -> Run:
    x, lower, upper = c.get("x"), c.int("lower", -1), c.int("upper", -1)

    def run(env: list) -> torch.Tensor:
        v = x(env)
        m, n = v.shape[-2], v.shape[-1]
        i = torch.arange(m).unsqueeze(1)
        j = torch.arange(n).unsqueeze(0)
        keep = torch.ones(m, n, dtype=torch.bool)
        if lower >= 0:
            keep &= (i - j) <= lower
        if upper >= 0:
            keep &= (j - i) <= upper
        return torch.where(keep, v, torch.zeros((), dtype=v.dtype))

    return run


@kernel("one_hot")
def _one_hot(c: OpCtx) -> Run:
    idx, size = c.get("indices"), c.get("one_hot_vector_size")
    axis = c.int("axis", -1)
    on, off = c.float("on_value", 1.0), c.float("off_value", 0.0)

    def run(env: list) -> torch.Tensor:
        i = idx(env).long()
        oh = F.one_hot(i, int(size(env).item())).float() * (on - off) + off
        a = axis % oh.dim()
        return oh.movedim(-1, a)

    return run


@kernel("non_zero")
def _non_zero(c: OpCtx) -> Run:
    x = c.get("x")
    return lambda env: torch.nonzero(x(env)).to(torch.int32)


@kernel("cumsum")
def _cumsum(c: OpCtx) -> Run:
    x, axis = c.get("x"), c.int("axis", 0)
    exclusive, reverse = bool(c.bool("exclusive", False)), bool(c.bool("reverse", False))

    def run(env: list) -> torch.Tensor:
        v = x(env)
        if reverse:
            v = torch.flip(v, [axis])
        out = torch.cumsum(v, axis, dtype=v.dtype)
        if exclusive:
            out = out - v
        if reverse:
            out = torch.flip(out, [axis])
        return out

    return run


# -- gather / scatter ----------------------------------------------------------------------


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


# -- reductions -----------------------------------------------------------------------------


def _reduce(fn: Any) -> Any:
    def build(c: OpCtx) -> Run:
        x = c.get("x")
        axes = c.ints("axes")
        keep = bool(c.bool("keep_dims", False))
        rank = c.in_rank("x")
        dims = list(range(rank)) if axes is None else [a % rank for a in axes]

        def run(env: list) -> torch.Tensor:
            return fn(x(env), dims, keep)

        return run

    return build


def _lse(v: torch.Tensor, d: list[int], k: bool) -> torch.Tensor:
    return torch.logsumexp(v, d, keepdim=k)


def _prod(v: torch.Tensor, d: list[int], k: bool) -> torch.Tensor:
    for a in sorted(d, reverse=True):
        v = torch.prod(v, a, keepdim=True)
    return v if k else v.squeeze(tuple(d))


_REDUCTIONS = {
    "reduce_sum": lambda v, d, k: torch.sum(v, d, keepdim=k, dtype=v.dtype),
    "reduce_mean": lambda v, d, k: torch.mean(v, d, keepdim=k),
    "reduce_max": lambda v, d, k: torch.amax(v, d, keepdim=k),
    "reduce_min": lambda v, d, k: torch.amin(v, d, keepdim=k),
    "reduce_prod": _prod,
    "reduce_l1_norm": lambda v, d, k: torch.sum(torch.abs(v), d, keepdim=k),
    "reduce_l2_norm": lambda v, d, k: torch.sqrt(torch.sum(v * v, d, keepdim=k)),
    "reduce_sum_square": lambda v, d, k: torch.sum(v * v, d, keepdim=k),
    "reduce_log_sum": lambda v, d, k: torch.log(torch.sum(v, d, keepdim=k)),
    "reduce_log_sum_exp": _lse,
}
for _n, _f in _REDUCTIONS.items():
    kernel(_n, fp16_exact=_n in ("reduce_max", "reduce_min"))(_reduce(_f))


def _arg(fn: Any) -> Any:
    def build(c: OpCtx) -> Run:
        x, axis, keep = c.get("x"), c.int("axis", -1), bool(c.bool("keep_dims", False))
        return lambda env: fn(x(env), axis, keepdim=keep).to(torch.int32)

    return build


kernel("reduce_argmax")(_arg(torch.argmax))
kernel("reduce_argmin")(_arg(torch.argmin))


@kernel("topk")
def _topk(c: OpCtx) -> Run:
    x, k, axis = c.get("x"), c.int("k", 1), c.int("axis", -1)
    ascending = bool(c.bool("ascending", False))
    sort = bool(c.bool("sort", True))
    return_indices = bool(c.bool("return_indices", True))

    def run(env: list) -> Any:
        v = x(env)
        kk = v.shape[axis] if k == -1 else k
        vals, idx = torch.topk(v, kk, axis, largest=not ascending, sorted=sort)
        if not return_indices:
            return vals
        return vals, idx.to(torch.int32)

    return run


@kernel("argsort")
def _argsort(c: OpCtx) -> Run:
    x, axis, ascending = c.get("x"), c.int("axis", -1), bool(c.bool("ascending", False))
    return lambda env: torch.argsort(x(env), dim=axis, descending=not ascending, stable=True).to(torch.int32)
