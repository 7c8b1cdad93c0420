"""Eager PyTorch fp32: the reference every other form is compared against (and timed against)."""

from __future__ import annotations

from pathlib import Path

from parbench.backends.base import Artifact, Availability, ExportRequest
from parbench.backends.torch_session import TorchModuleSession


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
            self.name,
            Path(),
            "eager",
            None,
            {"note": "the eager module itself"},
            module=req.module,
            input_names=list(getattr(req.spec, "input_names", None) or []),
            output_names=list(req.output_names),
        )

    def load(self, artifact: Artifact) -> TorchModuleSession:
        return TorchModuleSession(artifact.module, "torch-eager", artifact.input_names, artifact.output_names)
