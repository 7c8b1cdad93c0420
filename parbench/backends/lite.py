"""Lite interpreter (.ptl), what LibTorch-Lite on iOS loads with `_load_for_mobile`.

`optimize_for_mobile` needs XNNPACK; where this torch build lacks it, the plain traced module is
saved and the choice is recorded in the artifact's meta.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.jit.mobile import _get_model_bytecode_version, _load_for_lite_interpreter

from parbench.backends.base import Artifact, Availability, ExportRequest
from parbench.backends.export_support import exported_artifact
from parbench.backends.torch_session import TorchModuleSession
from parbench.backends.torchscript import trace
from parbench.errors import ExportError


def xnnpack_enabled() -> bool:
    return bool(torch._C._is_xnnpack_enabled())


class LiteBackend:
    name = "lite"
    family = "fp32"
    shape_mode = "any"
    suffix = ".ptl"

    def available(self) -> Availability:
        return Availability(
            True,
            True,
            "" if xnnpack_enabled() else "no XNNPACK in this torch build: saved without optimize_for_mobile",
            executor="torch-lite",
        )

    def options(self) -> dict:
        return {"optimize_for_mobile": xnnpack_enabled(), "torch": torch.__version__}

    def export(self, req: ExportRequest, out: Path) -> Artifact:
        traced, notes = trace(req)
        meta: dict = {"tracer_warnings": notes}
        if xnnpack_enabled():
            from torch.utils.mobile_optimizer import optimize_for_mobile

            try:
                traced = optimize_for_mobile(traced)
                meta["optimize_for_mobile"] = "applied"
            except Exception as exc:
                meta["optimize_for_mobile"] = f"failed, saved plain: {type(exc).__name__}: {exc}"
        else:
            meta["optimize_for_mobile"] = "skipped: this torch build has no XNNPACK"
        path = out.with_suffix(self.suffix)
        try:
            traced._save_for_lite_interpreter(str(path))
        except Exception as exc:
            raise ExportError(f"_save_for_lite_interpreter failed: {type(exc).__name__}: {exc}") from exc
        meta["bytecode_version"] = int(_get_model_bytecode_version(str(path)))
        return exported_artifact(self.name, req, path, "ptl", not req.per_size, meta)

    def load(self, artifact: Artifact) -> TorchModuleSession:
        module = _load_for_lite_interpreter(str(artifact.path), map_location="cpu")
        return TorchModuleSession(module, "torch-lite", artifact.input_names, artifact.output_names)
