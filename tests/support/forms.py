"""Export requests and eager comparisons for the deployment-form tests (not collected)."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

import torch
from support.photos import crop
from torch import nn

from parbench.backends.base import ExportRequest, flatten_outputs
from parbench.compare import generic_metrics


def make_request(
    module: nn.Module,
    photo: torch.Tensor,
    export_size: int,
    sizes: Sequence[int],
    per_size: bool = False,
    n_calibration: int = 4,
) -> ExportRequest:
    example = (crop(photo, export_size, 0),)
    calibration = [(crop(photo, export_size, 100 + i),) for i in range(n_calibration)]
    with torch.no_grad():
        names = list(flatten_outputs(module(*example)))
    return ExportRequest(
        module=module,
        spec=SimpleNamespace(name=type(module).__name__, input_names=["image"]),
        example_inputs=example,
        export_size=export_size,
        sizes=list(sizes),
        per_size=per_size,
        calibration=calibration,
        output_names=names,
    )


def compare(session, module: nn.Module, photo: torch.Tensor, size: int, index: int = 7) -> dict[str, dict]:
    """Run a session and eager on the same crop; the project's metrics per output name."""
    x = crop(photo, size, index)
    out = session.run({"image": x.numpy()})
    with torch.no_grad():
        ref = flatten_outputs(module(x))
    assert list(out) == list(ref), f"output names {list(out)} != eager {list(ref)}"
    for k in ref:
        assert out[k].shape == tuple(ref[k].shape), (
            f"{k}: shape {out[k].shape} != eager {tuple(ref[k].shape)}"
        )
    return {k: generic_metrics(out[k], ref[k].numpy()) for k in ref}
