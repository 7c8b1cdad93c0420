"""The op of coremltools' ``transformers`` defs (iOS18): scaled dot-product attention."""

from __future__ import annotations

import math

import torch

from parbench.coreml_ref.registry import OpCtx, Run, kernel


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
