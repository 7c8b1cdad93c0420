"""Ops of coremltools' ``tensor_operation`` defs (iOS15-iOS18): concat/split/stack, pad, tile,
identity, creation (fill, range_1d, one_hot, band_part), cumsum, sorting, non-maximum suppression."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from parbench.coreml_ref.registry import CoreMLRefError, OpCtx, Run, kernel


@kernel("identity", fp16_exact=True)
def _identity(c: OpCtx) -> Run:
    return c.get("x")


@kernel("flatten2d", fp16_exact=True)
def _flatten2d(c: OpCtx) -> Run:
    x, axis = c.get("x"), c.int("axis", 1)

    def run(env: list) -> torch.Tensor:
        v = x(env)
        a = axis % v.dim() if axis < 0 else axis
        return v.reshape(math.prod(v.shape[:a]), math.prod(v.shape[a:]))

    return run


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
    x, pad = c.get("x"), c.ints_at_run("pad")
    mode = c.str("mode", "constant")
    value = c.float("constant_val", 0.0)
    tmode = {"constant": "constant", "reflect": "reflect", "replicate": "replicate"}.get(mode)
    if tmode is None:
        raise c.unsupported(f"pad mode {mode!r}")

    def run(env: list) -> torch.Tensor:
        v = x(env)
        p = pad(env)
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
    x, reps = c.get("x"), c.ints_at_run("reps")
    return lambda env: x(env).repeat(*reps(env))


@kernel("fill")
def _fill(c: OpCtx) -> Run:
    shape = c.ints_at_run("shape")
    value = c.get_opt("value")
    dt = c.out_dtype()

    def run(env: list) -> torch.Tensor:
        val = value(env) if value is not None else torch.tensor(0.0)
        return torch.full(shape(env), float(val) if dt.startswith("fp") else int(val))

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


def _iou_xywh(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of one center-size box ``a`` [4] against boxes ``b`` [N, 4]."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0 = b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2
    bx1, by1 = b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2
    iw = (torch.minimum(ax1, bx1) - torch.maximum(ax0, bx0)).clamp(min=0)
    ih = (torch.minimum(ay1, by1) - torch.maximum(ay0, by0)).clamp(min=0)
    inter = iw * ih
    union = a[2] * a[3] + b[:, 2] * b[:, 3] - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


@kernel("non_maximum_suppression")
def _nms(c: OpCtx) -> Run:
    boxes_g, scores_g = c.get("boxes"), c.get("scores")
    iou_t = c.float("iou_threshold")
    score_t = c.float("score_threshold", -math.inf)
    max_boxes = c.int("max_boxes")
    per_class = bool(c.bool("per_class_suppression", False))

    ios17 = c.opset in ("iOS17", "iOS18")  # [n, 4, B] / [n, K, B] layout, no count output

    def run(env: list) -> tuple:
        boxes, scores = boxes_g(env).double(), scores_g(env).double()
        if ios17:
            boxes, scores = boxes.transpose(1, 2), scores.transpose(1, 2)
        n, _, k = scores.shape
        ob = torch.zeros(n, max_boxes, 4, dtype=torch.float64)
        os_ = torch.zeros(n, max_boxes, k, dtype=torch.float64)
        oi = torch.full((n, max_boxes), -1, dtype=torch.int32)
        oc = torch.zeros(n, dtype=torch.int32)
        for b in range(n):
            best, cls = scores[b].max(-1)
            order = [int(i) for i in torch.argsort(best, descending=True, stable=True) if best[i] >= score_t]
            kept: list[int] = []
            for i in order:
                if len(kept) == max_boxes:
                    break
                if kept:
                    cand = torch.tensor(kept)
                    if per_class:
                        cand = cand[cls[cand] == cls[i]]
                    if cand.numel() and bool((_iou_xywh(boxes[b, i], boxes[b, cand]) > iou_t).any()):
                        continue
                kept.append(i)
            for j, i in enumerate(kept):
                ob[b, j], os_[b, j], oi[b, j] = boxes[b, i], scores[b, i], i
            oc[b] = len(kept)
        if ios17:
            return ob.float().transpose(1, 2), os_.float().transpose(1, 2), oi
        return ob.float(), os_.float(), oi, oc

    return run
