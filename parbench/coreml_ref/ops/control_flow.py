"""Ops of coremltools' ``control_flow`` defs: cond and while_loop, whose nested blocks the program
compiles and hands over through ``OpCtx.block``, and select."""

from __future__ import annotations

from typing import Any

import torch

from parbench.coreml_ref.registry import OpCtx, Run, kernel


@kernel("cond")
def _cond(c: OpCtx) -> Run:
    pred = c.get("pred")
    true_b = c.block(0)
    false_b = c.block(1)
    single = len(c.op.outputs) == 1

    def run(env: list) -> Any:
        p = pred(env)
        blk = true_b if bool(p.reshape(-1)[0]) else false_b
        outs = blk(env, [])
        return outs[0] if single else tuple(outs)

    return run


@kernel("while_loop")
def _while_loop(c: OpCtx) -> Run:
    init = c.gets("loop_vars")
    cond_b = c.block(0)
    body_b = c.block(1)
    single = len(c.op.outputs) == 1

    def run(env: list) -> Any:
        vals = [g(env) for g in init]
        while True:
            (p,) = cond_b(env, vals)
            if not bool(p.reshape(-1)[0]):
                break
            vals = body_b(env, vals)
        return vals[0] if single else tuple(vals)

    return run


@kernel("select", fp16_exact=True)
def _select(c: OpCtx) -> Run:
    cond, a, b = c.get("cond"), c.get("a"), c.get("b")

    def run(env: list) -> torch.Tensor:
        cv = cond(env)
        if cv.dtype != torch.bool:
            cv = cv != 0
        return torch.where(cv, a(env), b(env))

    return run
