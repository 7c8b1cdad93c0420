"""TorchScript, traced and saved as .pt (what `torch::jit::load` in an app reads).

Tracing records one path through the model at the example size: a branch on the input's shape is
frozen, which is exactly the bug parity at other sizes exists to catch.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from parbench._util.stages import stage
from parbench.backends.base import Artifact, Availability, ExportRequest
from parbench.backends.export_support import exported_artifact
from parbench.backends.torch_session import TorchModuleSession
from parbench.errors import ExportError


def trace(req: ExportRequest) -> tuple[torch.jit.ScriptModule, list[str]]:
    """Trace the model at the example inputs; returns the module and the tracer's warnings
    (e.g. "Converting a tensor to a Python boolean might cause the trace to be incorrect")."""
    with warnings.catch_warnings(record=True) as caught, stage("trace"):
        warnings.simplefilter("always", torch.jit.TracerWarning)
        try:
            traced = torch.jit.trace(req.module, req.example_inputs, strict=False, check_trace=False)
        except Exception as exc:
            raise ExportError(
                f"torch.jit.trace failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            ) from exc
    notes = sorted(
        {str(w.message).splitlines()[0] for w in caught if issubclass(w.category, torch.jit.TracerWarning)}
    )
    return traced, notes


class TorchScriptBackend:
    name = "torchscript"
    family = "fp32"
    shape_mode = "any"
    suffix = ".pt"

    def available(self) -> Availability:
        return Availability(True, True, executor="torch-jit")

    def options(self) -> dict:
        return {"method": "trace", "torch": torch.__version__}

    def export(self, req: ExportRequest, out: Path) -> Artifact:
        traced, notes = trace(req)
        path = out.with_suffix(self.suffix)
        traced.save(str(path))
        meta = {"method": "torch.jit.trace", "tracer_warnings": notes}
        return exported_artifact(self.name, req, path, "pt", not req.per_size, meta)

    def load(self, artifact: Artifact) -> TorchModuleSession:
        module = torch.jit.load(str(artifact.path), map_location="cpu")
        return TorchModuleSession(module.eval(), "torch-jit", artifact.input_names, artifact.output_names)
