"""The op of coremltools' ``classify`` defs: a classifier's label and per-class probabilities."""

from __future__ import annotations

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
