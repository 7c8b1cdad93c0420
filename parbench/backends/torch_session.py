"""One session for every form that runs a torch module: eager, TorchScript, the lite interpreter
and the quantized TorchScript file."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from parbench.errors import SessionError
from parbench.zoo.outputs import flatten_outputs


def to_numpy_outputs(out: Any, names: Sequence[str]) -> OrderedDict[str, np.ndarray]:
    """A torch module's output -> named float32 numpy arrays, checked against the expected names
    (no check when ``names`` is empty)."""
    flat = flatten_outputs(out)
    if names and list(flat) != list(names):
        raise SessionError(
            f"the artifact returns outputs {list(flat)} but the eager model returns {list(names)}; "
            "re-export it from the current model"
        )
    return OrderedDict((k, v.detach().float().cpu().numpy()) for k, v in flat.items())


class TorchModuleSession:
    """Runs a torch module (``nn.Module``, ``ScriptModule`` or lite-interpreter module) on named
    numpy inputs.

    Inputs are taken in ``input_names`` order (in the mapping's order when no names are known).
    ``flat_outputs``: the module returns the flat tuple of ``TorchOutputFlattening``, so outputs
    are named by position; otherwise its own output structure must give ``output_names``.
    """

    def __init__(
        self,
        module: Any,
        executor: str,
        input_names: Sequence[str] = (),
        output_names: Sequence[str] = (),
        flat_outputs: bool = False,
    ):
        self.module = module
        self.executor = executor
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.flat_outputs = flat_outputs

    def tensors(self, inputs: Mapping[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
        if not self.input_names:
            arrays = list(inputs.values())
        elif missing := [n for n in self.input_names if n not in inputs]:
            raise SessionError(f"missing input(s) {missing}; the artifact takes {self.input_names}")
        else:
            arrays = [inputs[n] for n in self.input_names]
        return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)

    @torch.inference_mode()
    def run(self, inputs: Mapping[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
        out = self.module(*self.tensors(inputs))
        if not self.flat_outputs:
            return to_numpy_outputs(out, self.output_names)
        flat = list(to_numpy_outputs(out, ()).values())
        if len(flat) != len(self.output_names):
            raise SessionError(
                f"the artifact returns {len(flat)} outputs, the eager model {len(self.output_names)} "
                f"({self.output_names}); re-export it from the current model"
            )
        return OrderedDict(zip(self.output_names, flat, strict=True))
