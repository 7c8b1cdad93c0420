"""Ops of coremltools' ``reduction`` defs (iOS15-iOS18): ``reduce_*`` over axes, argmax/argmin."""

from __future__ import annotations

from typing import Any

import torch

from parbench.coreml_ref.registry import OpCtx, Run, kernel


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
