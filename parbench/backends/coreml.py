"""Core ML forms: ML programs (``.mlpackage``) in fp16 and fp32 compute precision.

Conversion: coremltools from traced TorchScript by default (coremltools' main path; about 5 s
for MobileNetV2 here against 30 s or more through ``torch.export`` with dynamic sizes, same
program), from a ``torch.export`` program as the fallback: the traced frontend fails on
``F.interpolate(size=y.shape[-2:])`` and on ViT with numpy 2, the ``torch.export`` one converts
them.  Which frontend was used and why is recorded.  Inputs and outputs keep float32 types (what an
app feeds through ``MLMultiArray``), named as the eager model's.  One package serves every
requested size through ``EnumeratedShapes`` (what an app with known sizes ships; ``RangeDim``
with ``flexible="range"``); a model that does not convert with flexible shapes is exported per
size (NeedsPerSize).

Prediction needs Core ML, i.e. macOS.  Elsewhere the package runs on parbench's reference
executor (``parbench.coreml_ref``) when it is importable; the session says which ran it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from parbench._util.console import error_text, quiet
from parbench._util.stages import stage
from parbench._util.versions import version_of
from parbench.backends.base import Artifact, Availability, ExportRequest, Family
from parbench.backends.export_support import (
    all_sizes,
    artifact_path,
    as_float32,
    existing_path,
    export_with_size_fallback,
    flat_program,
    input_names,
    output_names,
    sized_dims,
)
from parbench.errors import BackendUnavailable, ConfigError, ExportError, SessionError
from parbench.zoo.outputs import TorchOutputFlattening

Frontend = Literal["torch.export", "trace"]
Flexible = Literal["enumerated", "range"]
Executor = Literal["auto", "coreml", "reference"]
FRONTENDS: tuple[Frontend, ...] = ("trace", "torch.export")
_FLEXIBLE: tuple[Flexible, ...] = ("enumerated", "range")
_EXECUTORS: tuple[Executor, ...] = ("auto", "coreml", "reference")
_COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
_MACOS = sys.platform == "darwin"
NEEDS_MACOS = "Core ML prediction needs macOS"

_HINT = (
    "coremltools could not convert the model with either frontend. If an op is missing, "
    "register a composite op (coremltools.converters.mil.frontend.torch.register_torch_op) "
    "or rewrite it in supported torch ops."
)


def _ct() -> Any:
    """coremltools, imported quietly (its import logs warnings about untested versions)."""
    with quiet():
        import coremltools

    return coremltools


@contextlib.contextmanager
def resize_to_runtime_size() -> Iterator[None]:
    """Inside the block, a bilinear upsample to a size computed at run time converts.

    coremltools maps such an upsample to Core ML's ``upsample_bilinear`` only when the size is a
    fixed multiple of the upsample's own input, and fails the conversion otherwise; DeepLabV3
    upsamples its 1/16 features to the network input's size.  iOS 17's ``resize`` takes the target
    size as a tensor: it is used there instead (LINEAR, UNALIGN_CORNERS, i.e. PyTorch's
    ``align_corners=False``).  Targets before iOS 17 have no ``resize`` and still fail.
    """
    try:  # a coremltools internal: without it, such models convert per size, as they did before
        from coremltools.converters.mil.frontend.torch.ssa_passes import torch_upsample_to_core_upsample as p

        original = p._try_replace_with_core_upsample
    except (ImportError, AttributeError):
        yield
        return
    p._try_replace_with_core_upsample = lambda op: original(op) or _to_resize(op)
    try:
        yield
    finally:
        p._try_replace_with_core_upsample = original


def _to_resize(op: Any) -> bool:
    if op.op_type != "torch_upsample_bilinear" or op.align_corners.val:
        return False
    from coremltools.converters.mil.mil import Builder as mb

    try:
        hw = mb.concat(
            values=[mb.expand_dims(x=v, axes=[0], before_op=op) for v in (op.output_height, op.output_width)],
            axis=0,
            before_op=op,
        )
        new = mb.resize(
            x=op.x,
            shape=hw,
            resized_dims=np.uint32(2),
            interpolation_mode="LINEAR",
            sampling_mode="UNALIGN_CORNERS",
            name=op.name,
            before_op=op,
        )
    except Exception:  # no iOS 17 opset: coremltools' own error follows
        return False
    op.enclosing_block.replace_uses_of_var_after_op(anchor_op=op, old_var=op.outputs[0], new_var=new)
    op.enclosing_block.remove_ops([op])
    return True


def _reference_model() -> Any:
    """The reference executor's MLModel class; ImportError when it is not available."""
    from parbench.coreml_ref import MLModel

    return MLModel


def _predictor(path: Path, compute_units: str = "ALL", prefer: str = "auto") -> tuple[Any, str]:
    """Something with ``predict({name: array}) -> {name: array}`` for a saved package, and
    which executor it is: ``"coreml"`` (macOS) or ``"reference"`` (parbench.coreml_ref)."""
    if _MACOS and prefer != "reference":
        ct = _ct()
        return ct.models.MLModel(str(path), compute_units=ct.ComputeUnit[compute_units]), "coreml"
    if prefer == "coreml":
        raise BackendUnavailable(f"{NEEDS_MACOS} (this is {sys.platform}); executor='coreml' was asked for")
    try:
        model_cls = _reference_model()
    except ImportError as exc:
        raise BackendUnavailable(
            f"{NEEDS_MACOS} (this is {sys.platform}) and the reference executor "
            f"parbench.coreml_ref is not importable ({exc}); run on a Mac"
        ) from exc
    return model_cls(str(path)), "reference"


def _served_sizes(req: ExportRequest, dynamic: bool, flexible: str, meta: dict[str, Any]) -> list[int] | None:
    """The sizes a converted package serves: the enumerated ones, any (a range, noted in meta),
    or only the export size."""
    if dynamic and flexible == "enumerated":
        return all_sizes(req)
    if dynamic:
        meta["size_range"] = [all_sizes(req)[0], all_sizes(req)[-1]]
        return None
    return [int(req.export_size)]


def _convert_with_fallback(
    order: Sequence[Frontend], convert: Callable[[Frontend], Any], notes: list[str]
) -> tuple[Any, Frontend]:
    """Try each frontend in order; the first that converts wins, and why the others failed is noted."""
    errors = []
    for frontend in order:
        try:
            mlmodel = convert(frontend)
        except Exception as exc:
            errors.append(f"{frontend} frontend: {error_text(exc)}")
            continue
        if errors:
            notes.append(f"{errors[0]}; converted with the {frontend} frontend instead")
        return mlmodel, frontend
    raise ExportError("coremltools conversion failed:\n" + "\n".join(errors))


class CoreMLSession:
    def __init__(
        self,
        path: Path,
        input_names: Sequence[str],
        output_names: Sequence[str],
        compute_units: str,
        prefer: str,
    ):
        self.model, self.executor = _predictor(path, compute_units, prefer)
        self.compute_units = compute_units if self.executor == "coreml" else None
        self.input_names = list(input_names)
        self.output_names = list(output_names)

    def run(self, inputs: Mapping[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
        feeds = {n: np.ascontiguousarray(inputs[n]) for n in self.input_names}
        out = self.model.predict(feeds)
        missing = [n for n in self.output_names if n not in out]
        if missing:
            raise SessionError(f"the Core ML model returned {sorted(out)}, missing {missing}; re-export it")
        return OrderedDict((n, as_float32(out[n])) for n in self.output_names)


@dataclasses.dataclass
class Converted:
    """A converted model before it is saved, and how it was converted."""

    mlmodel: Any
    frontend: Frontend  # the one that converted it
    dynamic: bool  # one package for every requested size
    notes: list[str]  # why other frontends failed


def _one_of(key: str, value: Any, allowed: Sequence[Any]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {tuple(allowed)}, got {value!r}")


class CoreMLBase:
    """What every Core ML form shares: options, availability, the frontend fallback inside the size
    fallback (``_converted``), saving and describing the package (``_package``), loading it.  A
    form that converts another model (the image form) overrides ``export`` on top of those two."""

    name: str
    family: Family
    precision: Literal["float16", "float32"]
    shape_mode: Literal["any", "per_size"] = "any"
    suffix = ".mlpackage"

    def __init__(
        self,
        frontend: Frontend = "trace",
        flexible: Flexible = "enumerated",
        target: str = "iOS17",
        compute_units: str = "ALL",
        executor: Executor = "auto",
    ):
        _one_of("frontend", frontend, FRONTENDS)
        _one_of("flexible", flexible, _FLEXIBLE)
        _one_of("compute_units", compute_units, _COMPUTE_UNITS)
        _one_of("executor", executor, _EXECUTORS)
        self.frontend = frontend
        self.flexible = flexible
        # iOS17: the ML program opset of iOS 17 (2023); older phones need iOS15/16 here
        self.target = target
        self.compute_units = compute_units  # macOS only: ALL | CPU_ONLY | CPU_AND_GPU | CPU_AND_NE
        self.executor = executor

    def available(self) -> Availability:
        try:
            _ct()
        except Exception as exc:
            return Availability(False, False, f"coremltools is not importable: {error_text(exc, 1)}")
        if _MACOS and self.executor != "reference":
            return Availability(True, True, "", "coreml")
        if self.executor != "coreml":
            try:
                _reference_model()
            except ImportError:
                pass
            else:
                return Availability(True, True, f"{NEEDS_MACOS}; using the reference executor", "reference")
        return Availability(True, False, NEEDS_MACOS, "coreml")

    def options(self) -> dict[str, Any]:
        return {
            "convert_to": "mlprogram",
            "precision": self.precision,
            "target": self.target,
            "frontend": self.frontend,
            "flexible": self.flexible,
            "io_dtype": "float32",
            "upsample_to_runtime_size": "resize",
            "torch": torch.__version__,
            "coremltools": version_of("coremltools"),
        }

    # -- export -----------------------------------------------------------------------------
    def _input_types(self, req: ExportRequest, dynamic: bool) -> list[Any]:
        ct = _ct()
        sizes = all_sizes(req)
        types = []
        for name, x, dims in zip(input_names(req), req.example_inputs, sized_dims(req), strict=True):
            dtype = np.float32 if x.is_floating_point() else np.int32
            base = list(x.shape)
            if not (dynamic and dims):
                shape: Any = tuple(base)
            elif self.flexible == "enumerated":
                shapes = [tuple(s if i in dims else d for i, d in enumerate(base)) for s in sizes]
                shape = ct.EnumeratedShapes(shapes=shapes, default=tuple(base))
            else:
                shape = ct.Shape(
                    [
                        ct.RangeDim(sizes[0], sizes[-1], default=d) if i in dims else d
                        for i, d in enumerate(base)
                    ]
                )
            types.append(ct.TensorType(name=name, shape=shape, dtype=dtype))
        return types

    def _convert(self, frontend: Frontend, req: ExportRequest, dynamic: bool) -> Any:
        ct = _ct()
        model = TorchOutputFlattening(req.module).eval()
        example = tuple(req.example_inputs)
        with quiet(), torch.no_grad(), resize_to_runtime_size():
            if frontend == "torch.export":  # the program the ExecuTorch forms lower, when shared
                source: Any = flat_program(req, dynamic, {}).run_decompositions({})
            else:
                with stage("trace"):
                    source = torch.jit.trace(model, example, check_trace=False)
            precision = ct.precision.FLOAT16 if self.precision == "float16" else ct.precision.FLOAT32
            with stage("conversion"):
                return ct.convert(
                    source,
                    inputs=self._input_types(req, dynamic),
                    outputs=[ct.TensorType(name=n, dtype=np.float32) for n in output_names(req)],
                    convert_to="mlprogram",
                    compute_precision=precision,
                    minimum_deployment_target=getattr(ct.target, self.target),
                )

    def _converted(
        self, req: ExportRequest, convert: Callable[[Frontend, bool], Any], hint: str
    ) -> Converted:
        """``convert(frontend, dynamic)`` with the frontend fallback inside the size fallback."""
        order = [self.frontend] + [f for f in FRONTENDS if f != self.frontend]
        notes: list[str] = []

        def attempt(dynamic: bool) -> tuple[Any, Frontend]:
            return _convert_with_fallback(order, lambda f: convert(f, dynamic), notes)

        (mlmodel, used), dynamic = export_with_size_fallback(req, self.name, attempt, hint)
        return Converted(mlmodel, used, dynamic, notes)

    def _package(self, req: ExportRequest, out: Path, conv: Converted, meta: dict[str, Any]) -> Artifact:
        """Save the package; ``meta`` (the form's own entries) gets what every Core ML form records."""
        path = artifact_path(out, self.suffix)
        if path.exists():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with quiet(), stage("save"):
            conv.mlmodel.save(str(path))
        meta.update(
            frontend=conv.frontend,
            precision=self.precision,
            target=self.target,
            spec_version=int(conv.mlmodel.get_spec().specificationVersion),
            dynamic_shapes=conv.dynamic,
            flexible=self.flexible if conv.dynamic else None,
            notes=conv.notes,
        )
        sizes = _served_sizes(req, conv.dynamic, self.flexible, meta)
        return Artifact(
            self.name,
            path,
            "mlpackage",
            sizes,
            meta,
            input_names=input_names(req),
            output_names=output_names(req),
        )

    def export(self, req: ExportRequest, out: Path) -> Artifact:
        conv = self._converted(req, lambda f, dynamic: self._convert(f, req, dynamic), _HINT)
        return self._package(req, out, conv, {})

    def load(self, artifact: Artifact) -> CoreMLSession:
        path = existing_path(artifact, folder=True)
        return CoreMLSession(
            path, artifact.input_names, artifact.output_names, self.compute_units, self.executor
        )


class CoreMLFp16Backend(CoreMLBase):
    name = "coreml_fp16"
    family: Family = "fp16"
    precision: Literal["float16", "float32"] = "float16"


class CoreMLFp32Backend(CoreMLBase):
    name = "coreml_fp32"
    family: Family = "fp32"
    precision: Literal["float16", "float32"] = "float32"
