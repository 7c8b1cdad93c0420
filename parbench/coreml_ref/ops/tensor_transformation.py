"""Ops of coremltools' ``tensor_transformation`` defs (iOS15-iOS18): reshapes, layout changes,
slicing and block/space rearrangements."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from parbench.coreml_ref.registry import CoreMLRefError, OpCtx, Run, kernel


@kernel("reshape", fp16_exact=True)
def _reshape(c: OpCtx) -> Run:
    x, shape = c.get("x"), c.ints_at_run("shape")

    def run(env: list) -> torch.Tensor:
        v = x(env)
        s = list(shape(env))
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


@kernel("transpose", fp16_exact=True)
def _transpose(c: OpCtx) -> Run:
    x, perm = c.get("x"), c.ints("perm")
    return lambda env: x(env).permute(perm)


def _slice_dim(v: torch.Tensor, dim: int, sl: slice) -> torch.Tensor:
    if sl.step is None or sl.step > 0:
        return v[(slice(None),) * dim + (sl,)]
    idx = list(range(*sl.indices(v.shape[dim])))
    return v.index_select(dim, torch.tensor(idx, dtype=torch.long))


def _index_slice(c: OpCtx) -> tuple[int, Any, Any, Any, list[bool], list[bool], list[bool]]:
    """slice_by_index's and slice_update's slice: rank, begin/end/stride getters, and the begin,
    end and squeeze masks."""
    rank = c.in_rank("x")
    begin, end = c.ints_at_run("begin"), c.ints_at_run("end")
    stride = c.ints_at_run("stride", [1] * rank)
    masks = [c.bools(k) or [False] * rank for k in ("begin_mask", "end_mask", "squeeze_mask")]
    return rank, begin, end, stride, *masks


@kernel("slice_by_index", fp16_exact=True)
def _slice_by_index(c: OpCtx) -> Run:
    x = c.get("x")
    rank, begin, end, stride, bm, em, sm = _index_slice(c)
    squeeze_axes = [i for i in range(rank) if sm[i]]

    def run(env: list) -> torch.Tensor:
        v = x(env)
        b, e, s = begin(env), end(env), stride(env)
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
    begin, size = c.ints_at_run("begin"), c.ints_at_run("size")

    def run(env: list) -> torch.Tensor:
        v = x(env)
        b, s = begin(env), size(env)
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
    rank, begin, end, stride, bm, em, sm = _index_slice(c)

    def run(env: list) -> torch.Tensor:
        v = x(env).clone()
        b, e, s = begin(env), end(env), stride(env)
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
