"""ExecuTorch forms: ``.pte`` programs lowered to XNNPACK, fp32 and int8 (PT2E quantization).

The model goes through ``torch.export`` (one program for every size when the graph allows
dynamic height/width, else one per size), ``to_edge_transform_and_lower`` with the XNNPACK
partitioner, and ``to_executorch``; the ``.pte`` runs with ``executorch.runtime.Runtime``, the
same C++ runtime an iOS app links.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from parbench._util.console import error_text, quiet
from parbench._util.hashing import stable_json
from parbench._util.stages import stage
from parbench._util.versions import version_of
from parbench.backends.base import Artifact, Availability, ExportRequest, Family
from parbench.backends.export_support import (
    all_sizes,
    artifact_path,
    as_float32,
    calibration_batches,
    check_module_paths,
    check_sizes,
    checked_keep_fp32,
    checked_threads,
    existing_path,
    export_with_size_fallback,
    exported_artifact,
    flat_program,
    input_names,
    output_names,
    shared_program,
    size_oblivious,
    size_oblivious_retry,
    torch_dynamic_shapes,
)
from parbench.errors import ExportError, SessionError


def _delegation(graph_module: torch.fx.GraphModule) -> dict[str, Any]:
    """How much of the program XNNPACK took (ops inside delegates vs left on portable kernels)."""
    try:
        from executorch.devtools.backend_debug import get_delegation_info

        info = get_delegation_info(graph_module)
    except Exception as exc:  # devtools are optional; the export itself is fine
        return {"error": error_text(exc, 1)}
    portable = sorted(
        op for op, b in info.delegation_by_operator.items() if b.non_delegated and op != "getitem"
    )
    return {
        "subgraphs": info.num_delegated_subgraphs,
        "delegated_nodes": info.num_delegated_nodes,
        "portable_nodes": sum(
            b.non_delegated for op, b in info.delegation_by_operator.items() if op != "getitem"
        ),
        "portable_ops": portable,
    }


class ExecuTorchSession:
    executor = "executorch"

    def __init__(
        self, path: Path, input_names: Sequence[str], output_names: Sequence[str], threads: int | None
    ):
        with quiet():  # the runtime logs CPU detection to stderr on first use
            from executorch.extension.pybindings import portable_lib
            from executorch.runtime import Runtime

            if threads:
                portable_lib._unsafe_reset_threadpool(int(threads))
            self.program = Runtime.get().load_program(Path(path))
            method = self.program.load_method("forward")
        if method is None:
            raise SessionError(f"{path} has no 'forward' method; re-export it")
        self.method = method
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        try:
            self.threads = int(portable_lib._threadpool_get_thread_count())
        except Exception:  # older runtimes do not report it
            self.threads = threads

    def run(self, inputs: Mapping[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
        xs = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in self.input_names]
        outs = self.method.execute(xs)
        if len(outs) != len(self.output_names):
            raise SessionError(
                f"the .pte returns {len(outs)} outputs, the eager model {len(self.output_names)}; "
                "re-export it from the current model"
            )
        return OrderedDict((n, as_float32(o)) for n, o in zip(self.output_names, outs, strict=True))


_HINT = (
    "ExecuTorch lowers through torch.export: make the model exportable "
    "(torch.export.export(model, example)) and check the op is supported by XNNPACK "
    "or the portable kernels."
)


class _ExecuTorchBase:
    name: str
    family: Family
    shape_mode: Literal["any", "per_size"] = "any"
    suffix = ".pte"
    quantize = False

    def __init__(self, threads: int | None = None, keep_fp32: Sequence[str] = ()):
        self.threads = checked_threads(threads)  # XNNPACK threadpool size at load (None: runtime default)
        self.keep_fp32 = checked_keep_fp32(keep_fp32, self.name, self.quantize)

    def available(self) -> Availability:
        try:
            with quiet():
                from executorch.backends.xnnpack.partition.xnnpack_partitioner import (  # noqa: F401
                    XnnpackPartitioner,
                )
                from executorch.runtime import Runtime

                runtime = Runtime.get()
        except Exception as exc:
            return Availability(False, False, f"executorch is not usable here: {error_text(exc, 2)}")
        if not runtime.backend_registry.is_available("XnnpackBackend"):
            return Availability(
                True, False, "the ExecuTorch runtime in this install has no XNNPACK backend", "executorch"
            )
        return Availability(True, True, "", "executorch")

    def options(self) -> dict[str, Any]:
        return {
            "partitioner": "xnnpack",
            "quantization": "pt2e-xnnpack-symmetric-per-channel" if self.quantize else None,
            "torch": torch.__version__,
            "executorch": version_of("executorch"),
            "torchao": version_of("torchao") if self.quantize else None,
        } | ({"keep_fp32": list(self.keep_fp32)} if self.keep_fp32 else {})

    # -- export -----------------------------------------------------------------------------
    def exported_program(self, req: ExportRequest, dynamic: bool, meta: dict | None = None) -> Any:
        """The ``torch.export`` program (PT2E-quantized for int8) that :meth:`export` lowers to
        XNNPACK, for tools that work on the program before lowering (``parbench.diagnose``).

        Both programs are shared through ``req.programs``: the fp32 one with the other forms that
        lower from the same export, the quantized one with the localisation of an int8 failure."""
        meta = {} if meta is None else meta
        meta.pop("size_oblivious", None)
        if not self.quantize:
            return flat_program(req, dynamic, meta)
        options = stable_json({k: v for k, v in self.options().items() if k != "partitioner"})
        shape = "dynamic" if dynamic else f"static{req.export_size}"
        name = f"xnnpack-int8-{shape}-{hashlib.sha256(options.encode()).hexdigest()[:12]}"
        return shared_program(req, name, lambda notes: self._quantized(req, dynamic, notes), meta)

    def _quantized(self, req: ExportRequest, dynamic: bool, notes: dict) -> Any:
        ep = flat_program(req, dynamic, notes)
        shapes = torch_dynamic_shapes(req) if dynamic else None
        with quiet():  # the quantized graph's re-export may pin a size the float one did not
            return size_oblivious_retry(
                dynamic, lambda: self._quantize(req, ep, shapes, dynamic, notes), notes
            )

    def _program(self, req: ExportRequest, dynamic: bool, meta: dict) -> bytes:
        ep = self.exported_program(req, dynamic, meta)
        lowering = size_oblivious(ep) if meta.get("size_oblivious") else contextlib.nullcontext()
        with quiet(), lowering:
            with stage("lowering"):
                edge = lower_to_xnnpack(ep)
                meta["delegation"] = _delegation(edge.exported_program().graph_module)
                program = edge.to_executorch()
        return program.buffer

    def _quantize(self, req: ExportRequest, ep: Any, shapes: Any, dynamic: bool, meta: dict) -> Any:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
        if self.keep_fp32:
            quantizer.set_filter_function(_outside(self.keep_fp32))
            meta["keep_fp32"] = list(self.keep_fp32)
        with stage("quantize"):
            prepared = prepare_pt2e(ep.module(), quantizer)
        batches, note = calibration_batches(req, fixed=not dynamic)
        with stage("calibration"), torch.no_grad():
            for xs in batches:
                prepared(*xs)
        meta["calibration"] = len(batches)
        if note:
            meta.setdefault("notes", []).append(note)
        with stage("quantize"):
            converted = convert_pt2e(prepared)
        # the converted graph takes the inputs as plain positional arguments, not ``*args``
        flat_shapes = shapes[0] if shapes is not None else None
        with stage("torch.export"):
            return torch.export.export(converted, tuple(req.example_inputs), dynamic_shapes=flat_shapes)

    def export(self, req: ExportRequest, out: Path) -> Artifact:
        path = artifact_path(out, self.suffix)
        names_in, names_out = input_names(req), output_names(req)
        check_module_paths(req.module, self.keep_fp32, f"{self.name} keep_fp32")
        meta: dict[str, Any] = {"partitioner": "xnnpack"}

        def attempt(dynamic: bool) -> bytes:
            meta.pop("delegation", None)
            return self._program(req, dynamic, meta)

        buffer, dynamic = export_with_size_fallback(req, self.name, attempt, _HINT)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer)
        meta["dynamic_shapes"] = dynamic
        if self.quantize:
            meta["quant"] = {"flow": "pt2e", "quantizer": "XNNPACKQuantizer", "per_channel": True}
        if dynamic:
            meta["size_range"] = [all_sizes(req)[0], all_sizes(req)[-1]]
            try:
                session = ExecuTorchSession(path, names_in, names_out, self.threads)
                meta["sizes_checked"] = check_sizes(
                    req, self.name, lambda xs: list(session.method.execute(list(xs)))
                )
            except SessionError as exc:
                path.unlink(missing_ok=True)
                raise ExportError(f"{self.name}: the exported program does not load: {exc}") from exc
            except Exception:
                path.unlink(missing_ok=True)  # not an artifact for these sizes
                raise
        return exported_artifact(self.name, req, path, "pte", dynamic, meta)

    def load(self, artifact: Artifact) -> ExecuTorchSession:
        path = existing_path(artifact)
        return ExecuTorchSession(path, artifact.input_names, artifact.output_names, self.threads)


def lower_to_xnnpack(ep: Any) -> Any:
    """``to_edge_transform_and_lower`` with the XNNPACK partitioner: the edge program manager.

    The edge dialect's op check is off: it re-verifies every node of a program ``torch.export``
    already verified (a tenth of the lowering; the ``.pte`` is byte-identical without it).  An op
    with no ExecuTorch kernel still fails, in ``to_executorch``: "Missing out variants: {op}"."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower

    config = EdgeCompileConfig(_check_ir_validity=False)
    return to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()], compile_config=config)


def _outside(paths: Sequence[str]) -> Callable[[torch.fx.Node], bool]:
    """A quantizer filter: False for nodes inside the given module paths (the model is exported
    wrapped in TorchOutputFlattening, whose attribute is ``inner``)."""
    prefixes = tuple(f"inner.{p}" for p in paths)

    def keep_quantizing(node: torch.fx.Node) -> bool:
        stack = node.meta.get("nn_module_stack") or {}
        names = [re.sub(r"^L\['self'\]\.?", "", v[0]) for v in stack.values()]
        return not any(n == p or n.startswith(p + ".") for n in names for p in prefixes)

    return keep_quantizing


class ExecuTorchFp32Backend(_ExecuTorchBase):
    name = "executorch_fp32"
    family: Family = "fp32"


class ExecuTorchInt8Backend(_ExecuTorchBase):
    name = "executorch_int8"
    family: Family = "int8"
    quantize = True
