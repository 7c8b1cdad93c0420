"""ONNX form: one ``.onnx`` file run by ONNX Runtime on CPU.

Two exporters exist.  The TorchScript exporter (``torch.onnx.export(dynamo=False)``) is the
default: about 0.5 s for MobileNetV2 here against 10 s or more for the ``torch.export``-based
one, and its ``dynamic_axes`` give one file for every size.  When it fails, the
``torch.export``-based exporter (``dynamo=True``, needs onnxscript) is tried, and the reason is
recorded in the artifact's notes.  ``OnnxBackend(exporter="dynamo")`` swaps the order.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from parbench._util.console import error_text, quiet
from parbench._util.stages import stage
from parbench._util.versions import version_of
from parbench.backends.base import Artifact, Availability, ExportRequest, Family
from parbench.backends.export_support import (
    artifact_path,
    as_float32,
    check_sizes,
    checked_threads,
    existing_path,
    export_with_size_fallback,
    exported_artifact,
    input_names,
    output_names,
    sized_dims,
    torch_dynamic_shapes,
)
from parbench.errors import ConfigError, ExportError, SessionError
from parbench.zoo.outputs import TorchOutputFlattening

Exporter = Literal["torchscript", "dynamo"]
_EXPORTERS: tuple[Exporter, ...] = ("torchscript", "dynamo")
# opset 17: supported by every onnxruntime (mobile) release of the last years; the
# torch.export-based exporter starts at 18.
_OPSET = {"torchscript": 17, "dynamo": 18}

_HINT = (
    "Both ONNX exporters failed. If an op is missing, register a symbolic (TorchScript exporter) "
    "or an onnxscript translation (dynamo exporter), or rewrite the op in supported torch ops."
)


class OnnxSession:
    executor = "onnxruntime"

    def __init__(self, path: Path, input_names: Sequence[str], output_names: Sequence[str], threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 4  # fatal only: errors reach the caller as exceptions
        self.threads = threads
        self.providers = ["CPUExecutionProvider"]
        self.sess = ort.InferenceSession(str(path), sess_options=so, providers=self.providers)
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        graph_outputs = [o.name for o in self.sess.get_outputs()]
        if graph_outputs != self.output_names:
            raise SessionError(
                f"{path} has outputs {graph_outputs}, the eager model {self.output_names}; re-export it"
            )

    def run(self, inputs: Mapping[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
        feeds = {n: np.ascontiguousarray(inputs[n]) for n in self.input_names}
        outs = self.sess.run(self.output_names, feeds)
        return OrderedDict((n, as_float32(o)) for n, o in zip(self.output_names, outs, strict=True))


class OnnxBackend:
    name = "onnx"
    family: Family = "fp32"
    shape_mode: Literal["any", "per_size"] = "any"
    suffix = ".onnx"

    def __init__(
        self, exporter: Exporter = "torchscript", opset: int | None = None, threads: int | None = None
    ):
        if exporter not in _EXPORTERS:
            raise ConfigError(f"exporter must be one of {_EXPORTERS}, got {exporter!r}")
        if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 1):
            raise ConfigError(f"opset must be an ONNX opset number or None (per exporter), got {opset!r}")
        self.exporter = exporter
        self.opset = opset  # None: per exporter, see _OPSET
        self.threads = checked_threads(threads)  # intra-op threads at load; None: torch.get_num_threads()

    def available(self) -> Availability:
        try:
            import onnx  # noqa: F401
            import onnxruntime as ort
        except Exception as exc:
            return Availability(False, False, f"onnx/onnxruntime not importable: {error_text(exc, 1)}")
        if "CPUExecutionProvider" not in ort.get_available_providers():
            return Availability(True, False, "onnxruntime has no CPUExecutionProvider", "onnxruntime")
        return Availability(True, True, "", "onnxruntime")

    def options(self) -> dict[str, Any]:
        return {
            "exporter": self.exporter,
            "opset": self.opset,
            "torch": torch.__version__,
            "onnx": version_of("onnx"),
            "onnxscript": version_of("onnxscript"),
        }

    def _export_one(
        self, exporter: Exporter, model: torch.nn.Module, req: ExportRequest, dest: Path, dynamic: bool
    ) -> None:
        names_in, names_out = input_names(req), output_names(req)
        opset = self.opset or _OPSET[exporter]
        kwargs: dict[str, Any] = {"input_names": names_in, "output_names": names_out, "opset_version": opset}
        if exporter == "torchscript":
            if dynamic:
                axes = {}
                for name, dims in zip(names_in, sized_dims(req), strict=True):
                    if dims:
                        axes[name] = {d: ("height" if d == 2 else "width") for d in dims}
                kwargs["dynamic_axes"] = axes
            kwargs.update(dynamo=False, do_constant_folding=True)
        else:
            kwargs.update(
                dynamo=True,
                dynamic_shapes=torch_dynamic_shapes(req) if dynamic else None,
                external_data=False,
                verbose=False,
                optimize=True,
            )
        with quiet(), torch.no_grad(), stage("conversion"):
            torch.onnx.export(model, tuple(req.example_inputs), str(dest), **kwargs)

    def export(self, req: ExportRequest, out: Path) -> Artifact:
        import onnx

        path = artifact_path(out, self.suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp"
        model = TorchOutputFlattening(req.module).eval()
        names_in, names_out = input_names(req), output_names(req)
        order = [self.exporter] + [e for e in _EXPORTERS if e != self.exporter]
        notes: list[str] = []

        def attempt(dynamic: bool) -> Exporter:
            errors = []
            for exporter in order:
                try:
                    self._export_one(exporter, model, req, tmp, dynamic)
                    if errors:
                        notes.append(f"{errors[0]}; used the {exporter} exporter instead")
                    return exporter
                except Exception as exc:
                    errors.append(f"{exporter} exporter failed: {error_text(exc)}")
            raise ExportError("\n".join(errors))

        try:
            used, dynamic = export_with_size_fallback(req, self.name, attempt, _HINT)
            if dynamic:  # probe the other sizes before the file takes its final name
                try:
                    session = OnnxSession(tmp, names_in, names_out, self._threads())
                except SessionError as exc:
                    raise ExportError(f"{self.name}: the exported file does not load: {exc}") from exc
                checked = check_sizes(
                    req,
                    self.name,
                    lambda xs: session.sess.run(
                        names_out, {n: x.numpy() for n, x in zip(names_in, xs, strict=True)}
                    ),
                )
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        proto = onnx.load(str(path), load_external_data=False)
        opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
        meta: dict[str, Any] = {"exporter": used, "opset": opset, "dynamic_shapes": dynamic, "notes": notes}
        if dynamic:
            meta["sizes_checked"] = checked
        return exported_artifact(self.name, req, path, "onnx", dynamic, meta)

    def _threads(self) -> int:
        return int(self.threads or torch.get_num_threads())

    def load(self, artifact: Artifact) -> OnnxSession:
        path = existing_path(artifact)
        return OnnxSession(path, artifact.input_names, artifact.output_names, self._threads())
