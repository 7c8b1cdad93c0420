"""Eager PyTorch fp32: the reference every other form is compared against (and timed against)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from parbench.backends.base import Artifact, Availability, ExportRequest, inputs_to_tensors, to_numpy_outputs


class EagerSession:
    executor = "torch-eager"

    def __init__(self, module: torch.nn.Module, output_names: list[str]):
        self.module, self.output_names = module, output_names

    @torch.inference_mode()
    def run(self, inputs: Mapping[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
        return to_numpy_outputs(self.module(*inputs_to_tensors(inputs)), self.output_names)


class EagerBackend:
    name = "eager"
    family = "fp32"
    shape_mode = "any"
    suffix = ""

    def available(self) -> Availability:
        return Availability(True, True, executor="torch-eager")

    def options(self) -> dict:
        return {}

    def export(self, req: ExportRequest, out: Path) -> Artifact:
        return Artifact(
            self.name, Path(), "eager", None, {"note": "the eager module itself"}, module=req.module
        )

    def load(self, artifact: Artifact) -> EagerSession:
        return EagerSession(artifact.module, list(artifact.meta.get("output_names", [])))
