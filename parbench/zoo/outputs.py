"""A model's outputs, named: the rule every form, fixture and comparison follows.

A tensor is ``"output"``; a tuple/list is ``"output_0"``, ``"output_1"``, ...; a dict keeps its keys
(nested containers join keys with ``.``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch


def flatten_outputs(out: Any, prefix: str = "output") -> OrderedDict[str, torch.Tensor]:
    """Flatten a model's output into ordered, named tensors (see module docstring)."""
    flat: OrderedDict[str, torch.Tensor] = OrderedDict()

    def walk(obj: Any, name: str, top: bool) -> None:
        if isinstance(obj, torch.Tensor):
            flat[name] = obj
        elif isinstance(obj, Mapping):
            for k, v in obj.items():
                walk(v, str(k) if top else f"{name}.{k}", False)
        elif isinstance(obj, (tuple, list)):
            for i, v in enumerate(obj):
                walk(v, f"{name}_{i}", False)
        else:
            raise TypeError(
                f"model output {name!r} is a {type(obj).__name__}; parbench compares tensors, "
                "tuples/lists of tensors and dicts of tensors"
            )

    walk(out, prefix, True)
    return flat


class TorchOutputFlattening(torch.nn.Module):
    """Wraps a model so that it returns a flat tuple of tensors (what most exporters want)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.inner = module

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(flatten_outputs(self.inner(*args)).values())
