"""ExecuTorch forms: ``.pte`` programs lowered to XNNPACK, fp32 and int8 (PT2E quantization).

The model goes through ``torch.export`` (one program for every size when the graph allows
dynamic height/width, else one per size), ``to_edge_transform_and_lower`` with the XNNPACK
partitioner, and ``to_executorch``; the ``.pte`` runs with ``executorch.runtime.Runtime``, the
same C++ runtime an iOS app links.

The first half of this module holds helpers that the other converter-based forms (ONNX,
quantized, Core ML) share: input/output names, the dynamic-size description for
``torch.export``, the size probe, quiet conversion and error summaries.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from parbench.backends.base import (
    Artifact,
    Availability,
    BackendUnavailable,
    ExportError,
    ExportRequest,
    Family,
    NeedsPerSize,
    TorchOutputFlattening,
    flatten_outputs,
)

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# helpers shared by the converter-based forms


def artifact_path(out: Path, suffix: str) -> Path:
    """``out`` plus the form's suffix (``with_suffix`` would eat dots inside the cache name)."""
    out = Path(out)
    return out.parent / f"{out.name}{suffix}"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _lines(exc: BaseException) -> list[str]:
    msg = _ANSI.sub("", str(exc)).strip() or repr(exc)
    return [ln.rstrip() for ln in msg.splitlines() if ln.strip()]


def error_text(exc: BaseException, max_lines: int = 6, max_chars: int = 900) -> str:
    """The first lines of an exception's own message, prefixed by its type, plus the first line
    of its root cause when that differs (converters often wrap the useful message)."""
    text = "\n".join(_lines(exc)[:max_lines])
    root = exc
    seen = {id(exc)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        root = nxt
    if root is not exc:
        first = (_lines(root) or [""])[0]
        if first and first not in text:
            text += f"\n(root cause: {type(root).__name__}: {first})"
    if len(text) > max_chars:
        text = text[: max_chars - 3] + "..."
    return f"{type(exc).__name__}: {text}"


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence converter chatter for a block: Python prints and progress bars, warnings, and
    what native code writes to the stdout/stderr file descriptors (restored after)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved: list[tuple[int, int]] = []
    with tempfile.TemporaryFile() as sink:
        try:
            for fd in (1, 2):
                try:
                    saved.append((fd, os.dup(fd)))
                    os.dup2(sink.fileno(), fd)
                except OSError:  # no such descriptor (embedded interpreters): nothing to silence
                    pass
            buf = io.StringIO()
            with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                warnings.simplefilter("ignore")
                yield
        finally:
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)


def input_names(req: ExportRequest) -> list[str]:
    """Input names from the spec, in argument order; ``input_<i>`` if the spec has none."""
    names = list(getattr(req.spec, "input_names", None) or [])
    n = len(req.example_inputs)
    if not names:
        return ["input"] if n == 1 else [f"input_{i}" for i in range(n)]
    if len(names) != n:
        raise ExportError(
            f"the model spec names {len(names)} inputs {names} but the example has {n} tensors; "
            "make spec.input_names match the model's forward arguments"
        )
    return names


def output_names(req: ExportRequest, module: torch.nn.Module | None = None) -> list[str]:
    """``req.output_names``, or the eager model's flattened output names when not given."""
    if req.output_names:
        return list(req.output_names)
    with torch.no_grad():
        return list(flatten_outputs((module or req.module)(*req.example_inputs)))


def sized_dims(req: ExportRequest) -> list[tuple[int, ...]]:
    """Per input, the dims that follow the input size: H and W of 4-D floating inputs."""
    dims: list[tuple[int, ...]] = []
    for x in req.example_inputs:
        if x.dim() == 4 and x.is_floating_point():
            dims.append(tuple(d for d in (2, 3) if x.shape[d] == req.export_size))
        else:
            dims.append(())
    return dims


def all_sizes(req: ExportRequest) -> list[int]:
    return sorted({int(s) for s in req.sizes} | {int(req.export_size)})


def wants_dynamic(req: ExportRequest) -> bool:
    """One artifact must serve several sizes (and the inputs have size dims to vary)."""
    return (not req.per_size) and len(all_sizes(req)) > 1 and any(sized_dims(req))


def torch_dynamic_shapes(req: ExportRequest) -> tuple[tuple[dict[int, Any] | None, ...]]:
    """``dynamic_shapes`` for ``torch.export`` of ``TorchOutputFlattening`` (``*args``).

    Height and width get their own ``Dim`` bounded by the smallest and largest requested
    size (ExecuTorch plans memory for the upper bound).
    """
    lo, hi = all_sizes(req)[0], all_sizes(req)[-1]
    h = torch.export.Dim("height", min=lo, max=hi)
    w = torch.export.Dim("width", min=lo, max=hi)
    specs: list[dict[int, Any] | None] = []
    for dims in sized_dims(req):
        specs.append({d: (h if d == 2 else w) for d in dims} or None)
    return (tuple(specs),)


def inputs_at(req: ExportRequest, size: int) -> tuple[torch.Tensor, ...]:
    """The example inputs resized to ``size`` (bilinear on the size dims; others unchanged)."""
    out = []
    for x, dims in zip(req.example_inputs, sized_dims(req), strict=True):
        if not dims or size == req.export_size:
            out.append(x)
            continue
        hw = [size if d in dims else x.shape[d] for d in (2, 3)]
        out.append(F.interpolate(x, size=hw, mode="bilinear", align_corners=False).contiguous())
    return tuple(out)


def probe_sizes(req: ExportRequest) -> list[int]:
    """The sizes a one-for-all artifact is tried at during export: the extremes."""
    return sorted({s for s in (all_sizes(req)[0], all_sizes(req)[-1]) if s != req.export_size})


def check_sizes(
    req: ExportRequest, form: str, run: Callable[[tuple[torch.Tensor, ...]], Sequence[np.ndarray]]
) -> list[int]:
    """Run a one-for-all artifact at the extreme sizes; NeedsPerSize if it fails or its output
    shapes differ from eager's there.  Returns the sizes checked."""
    checked = []
    for size in probe_sizes(req):
        xs = inputs_at(req, size)
        try:
            with torch.no_grad():
                ref = [tuple(t.shape) for t in flatten_outputs(req.module(*xs)).values()]
        except Exception as exc:
            raise ExportError(
                f"{form}: the eager model itself fails at {size} px ({error_text(exc, 2)}); "
                "remove that size from the model's sizes"
            ) from exc
        try:
            with quiet():  # runtimes log their own copy of the error to stderr
                got = [tuple(np.shape(a)) for a in run(xs)]
        except NeedsPerSize:
            raise
        except Exception as exc:  # the runtime's own error is the reason
            raise NeedsPerSize(
                f"{form}: the artifact exported at {req.export_size} px does not run at {size} px: "
                f"{error_text(exc)}; export one artifact per size"
            ) from exc
        if got != ref:
            raise NeedsPerSize(
                f"{form}: the artifact exported at {req.export_size} px returns shapes {got} at {size} px, "
                f"eager returns {ref} (sizes baked into the graph); export one artifact per size"
            )
        checked.append(size)
    return checked


def _describe(exc: BaseException) -> str:
    # ExportErrors raised by the forms already carry the converters' summarized messages
    return str(exc) if isinstance(exc, ExportError) else error_text(exc)


_SHAPE_ERRORS = ("Constraints violated", "specialized it to be a constant", "ConstraintViolation")


def is_dynamic_shape_error(exc: BaseException) -> bool:
    """torch.export's own verdict that the graph cannot keep the size dims dynamic."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if any(k in str(cur) or k in type(cur).__name__ for k in _SHAPE_ERRORS):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def export_with_size_fallback(
    req: ExportRequest, form: str, attempt: Callable[[bool], T], hint: str
) -> tuple[T, bool]:
    """``attempt(dynamic)`` once for all sizes when wanted, else at the export size.

    If the all-sizes attempt fails, the fixed-size attempt decides: it works -> NeedsPerSize
    (the failure is about dynamic shapes), it fails too -> ExportError with its message.
    Returns (result, dynamic).
    """
    if not wants_dynamic(req):
        try:
            return attempt(False), False
        except (NeedsPerSize, BackendUnavailable):
            raise
        except Exception as exc:
            raise ExportError(f"{form} export failed: {_describe(exc)}\n{hint}") from exc
    try:
        return attempt(True), True
    except (NeedsPerSize, BackendUnavailable):
        raise
    except Exception as exc:
        dyn_exc = exc
    if is_dynamic_shape_error(dyn_exc):  # no need to prove it with a fixed-size export
        raise NeedsPerSize(
            f"{form}: the graph cannot serve sizes {all_sizes(req)} from one artifact "
            f"({_describe(dyn_exc)}); export one artifact per size"
        ) from dyn_exc
    try:
        attempt(False)  # only to learn whether the failure is about dynamic shapes
    except Exception as exc:
        raise ExportError(f"{form} export failed (at a fixed size too): {_describe(exc)}\n{hint}") from exc
    raise NeedsPerSize(
        f"{form}: one artifact for sizes {all_sizes(req)} failed ({_describe(dyn_exc)}); "
        f"the fixed-size export works: export one artifact per size"
    ) from dyn_exc


def version_of(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def as_float32(a: Any) -> np.ndarray:
    """Outputs are compared as float32, as ``base.to_numpy_outputs`` does for eager."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().float().numpy()
    return np.asarray(a).astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------
# ExecuTorch


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
            raise ExportError(f"{path} has no 'forward' method; re-export it")
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
            raise ExportError(
                f"the .pte returns {len(outs)} outputs, the eager model {len(self.output_names)}"
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

    def __init__(self, threads: int | None = None):
        self.threads = threads  # XNNPACK threadpool size at load (None: runtime default)

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
        }

    # -- export -----------------------------------------------------------------------------
    def _program(self, req: ExportRequest, model: torch.nn.Module, dynamic: bool, meta: dict) -> bytes:
        shapes = torch_dynamic_shapes(req) if dynamic else None
        with quiet():
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            ep = torch.export.export(model, tuple(req.example_inputs), dynamic_shapes=shapes)
            if self.quantize:
                ep = self._quantize(req, ep, shapes, dynamic, meta)
            edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
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
        prepared = prepare_pt2e(ep.module(), quantizer)
        batches, note = calibration_batches(req, fixed=not dynamic)
        with torch.no_grad():
            for xs in batches:
                prepared(*xs)
        meta["calibration"] = len(batches)
        if note:
            meta.setdefault("notes", []).append(note)
        converted = convert_pt2e(prepared)
        # the converted graph takes the inputs as plain positional arguments, not ``*args``
        flat_shapes = shapes[0] if shapes is not None else None
        return torch.export.export(converted, tuple(req.example_inputs), dynamic_shapes=flat_shapes)

    def export(self, req: ExportRequest, out: Path) -> Artifact:
        path = artifact_path(out, self.suffix)
        names_in, names_out = input_names(req), output_names(req)
        model = TorchOutputFlattening(req.module).eval()
        meta: dict[str, Any] = {"inputs": names_in, "outputs": names_out, "partitioner": "xnnpack"}
        t0 = time.perf_counter()

        def attempt(dynamic: bool) -> bytes:
            meta.pop("delegation", None)
            return self._program(req, model, dynamic, meta)

        buffer, dynamic = export_with_size_fallback(req, self.name, attempt, _HINT)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer)
        meta["export_s"] = round(time.perf_counter() - t0, 3)
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
            except Exception:
                path.unlink(missing_ok=True)  # not an artifact for these sizes
                raise
        return Artifact(
            variant=self.name,
            path=path,
            format="pte",
            sizes=None if dynamic else [int(req.export_size)],
            meta=meta,
        )

    def load(self, artifact: Artifact) -> ExecuTorchSession:
        meta = artifact.meta
        if not Path(artifact.path).is_file():
            raise ExportError(f"{artifact.path} does not exist; re-export the {self.name} artifact")
        return ExecuTorchSession(artifact.path, meta["inputs"], meta["outputs"], self.threads)


def calibration_batches(req: ExportRequest, fixed: bool) -> tuple[list[tuple[torch.Tensor, ...]], str]:
    """Calibration inputs for int8 forms, plus a note when they had to be adapted.

    A fixed-size graph takes only export-size inputs: other sizes are resized to it.  With no
    calibration set at all, the example input is used (and said so).
    """
    batches = [tuple(b) for b in req.calibration]
    if not batches:
        return [
            tuple(req.example_inputs)
        ], "no calibration inputs given: calibrated on the example input only"
    if not fixed:
        return batches, ""
    want = [tuple(x.shape) for x in req.example_inputs]
    out, resized = [], 0
    for b in batches:
        if [tuple(x.shape) for x in b] == want:
            out.append(b)
            continue
        adapted = []
        for x, ref in zip(b, req.example_inputs, strict=True):
            if x.shape != ref.shape and x.dim() == 4 and x.is_floating_point():
                x = F.interpolate(x, size=tuple(ref.shape[-2:]), mode="bilinear", align_corners=False)
            adapted.append(x)
        out.append(tuple(adapted))
        resized += 1
    note = (
        f"{resized} calibration inputs resized to {req.export_size} px (fixed-size graph)" if resized else ""
    )
    return out, note


class ExecuTorchFp32Backend(_ExecuTorchBase):
    name = "executorch_fp32"
    family: Family = "fp32"


class ExecuTorchInt8Backend(_ExecuTorchBase):
    name = "executorch_int8"
    family: Family = "int8"
    quantize = True


BACKENDS = [ExecuTorchFp32Backend, ExecuTorchInt8Backend]

__all__ = [
    "BACKENDS",
    "ExecuTorchFp32Backend",
    "ExecuTorchInt8Backend",
    "ExecuTorchSession",
    "artifact_path",
    "check_sizes",
    "error_text",
    "export_with_size_fallback",
    "input_names",
    "output_names",
    "quiet",
]
