"""classify, control flow (cond, while_loop), attention and non-maximum suppression."""

from __future__ import annotations

import math
from typing import Any

import torch

from parbench.coreml_ref.registry import OpCtx, Run, kernel


@kernel("classify")
def _classify(c: OpCtx) -> Run:
    probs = c.get("probabilities")
    classes = c.raw("classes")
    labels = [x.item() if hasattr(x, "item") else x for x in list(classes)]
    labels = [int(x) if isinstance(x, (int,)) and not isinstance(x, bool) else x for x in labels]

    def run(env: list) -> tuple[Any, dict]:
        p = probs(env).reshape(-1).to(torch.float64)
        if p.numel() != len(labels):
            raise ValueError(f"classify {c.name!r}: {p.numel()} probabilities for {len(labels)} classes")
        vals = p.tolist()
        best = max(range(len(vals)), key=vals.__getitem__)
        return labels[best], dict(zip(labels, vals, strict=True))

    return run


@kernel("cond")
def _cond(c: OpCtx) -> Run:
    from parbench.coreml_ref.program import run_block

    pred = c.get("pred")
    true_b = c.compile_block(c.op.blocks[0])  # type: ignore[attr-defined]
    false_b = c.compile_block(c.op.blocks[1])  # type: ignore[attr-defined]
    single = len(c.op.outputs) == 1

    def run(env: list) -> Any:
        p = pred(env)
        blk = true_b if bool(p.reshape(-1)[0]) else false_b
        outs = run_block(blk, env, [], None)
        return outs[0] if single else tuple(outs)

    return run


@kernel("while_loop")
def _while_loop(c: OpCtx) -> Run:
    from parbench.coreml_ref.program import run_block

    init = c.gets("loop_vars")
    cond_b = c.compile_block(c.op.blocks[0])  # type: ignore[attr-defined]
    body_b = c.compile_block(c.op.blocks[1])  # type: ignore[attr-defined]
    single = len(c.op.outputs) == 1

    def run(env: list) -> Any:
        vals = [g(env) for g in init]
        while True:
            (p,) = run_block(cond_b, env, vals, None)
            if not bool(p.reshape(-1)[0]):
                break
            vals = run_block(body_b, env, vals, None)
        return vals[0] if single else tuple(vals)

    return run


@kernel("scaled_dot_product_attention")
def _sdpa(c: OpCtx) -> Run:
    q, k, v = c.get("query"), c.get("key"), c.get("value")
    mask = c.get_opt("attn_mask")

    def run(env: list) -> torch.Tensor:
        qq, kk = q(env), k(env)
        scores = torch.matmul(qq, kk.transpose(-1, -2)) / math.sqrt(qq.shape[-1])
        if mask is not None:
            m = mask(env)
            if m.dtype == torch.bool:
                scores = scores.masked_fill(~m, -math.inf)
            else:
                scores = scores + m
        return torch.matmul(torch.softmax(scores, -1), v(env))

    return run


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
