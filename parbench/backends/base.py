"""The contract every deployment form implements.

A Backend turns an eager ``nn.Module`` into an Artifact (a file or folder on disk) and loads
an Artifact into a Session that runs inputs.  Inputs and outputs cross this boundary as
ordered ``{name: numpy array}`` dicts, so every form is compared the same way:

* input names come from the ModelSpec (``spec.input_names``), in the model's argument order;
* output names come from flattening the eager model's output (see ``flatten_outputs``):
  a tensor is ``"output"``, a tuple/list is ``"output_0"``, ``"output_1"``, ..., a dict
  keeps its keys (nested containers join keys with ``.``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from parbench.zoo import ModelSpec

Family = Literal["fp32", "fp16", "int8"]
Outputs = "OrderedDict[str, np.ndarray]"


class BackendUnavailable(RuntimeError):
    """This form cannot export or run on this machine; the message says why."""


class ExportError(RuntimeError):
    """Converting the model to this form failed; the message carries the converter's own words."""


@dataclasses.dataclass(frozen=True)
class Availability:
    can_export: bool
    can_run: bool
    reason: str = ""  # why not, or which executor is used ("reference executor on Linux")
    executor: str = "native"  # what actually runs the artifact: native | reference | coreml | ...


@dataclasses.dataclass
class ExportRequest:
    """Everything a backend may need to convert one model."""

    module: torch.nn.Module  # eager fp32, eval mode, deterministic weights
    spec: ModelSpec
    example_inputs: tuple[torch.Tensor, ...]  # at the export size
    export_size: int  # the size example_inputs were made at
    sizes: Sequence[int]  # every size the artifact will be asked to run at
    per_size: bool  # True: this artifact serves only export_size
    calibration: Sequence[tuple[torch.Tensor, ...]] = ()  # fixture images, for int8 forms
    output_names: Sequence[str] = ()
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Artifact:
    """One exported file or folder, plus what the export decided (recorded in every result)."""

    variant: str
    path: Path
    format: str  # pt | ptl | onnx | pte | mlpackage | eager | ...
    sizes: list[int] | None  # None: serves every size; else the sizes it was exported for
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    module: torch.nn.Module | None = None  # in-memory forms (eager, quantized eager) only

    @property
    def bytes(self) -> int:
        if self.module is not None or str(self.path) in ("", "."):  # in-memory forms ship no file
            return 0
        return path_bytes(self.path) if self.path.exists() else 0


class Session(Protocol):
    executor: str

    def run(self, inputs: Mapping[str, np.ndarray]) -> OrderedDict[str, np.ndarray]: ...


class Backend(Protocol):
    name: str  # variant id used in test ids and results, e.g. "coreml_fp16"
    family: Family
    # "any": one artifact serves all sizes (exported at the model's example size);
    # "per_size": one artifact per input size.  A backend may still fall back from "any" to
    # "per_size" for one model by raising NeedsPerSize from export().
    shape_mode: Literal["any", "per_size"]
    suffix: str  # artifact file name suffix, e.g. ".ptl"; "" for folders chosen by the backend

    def available(self) -> Availability: ...

    def options(self) -> dict[str, Any]: ...  # everything that changes the artifact (cache key)

    def export(self, req: ExportRequest, out: Path) -> Artifact: ...

    def load(self, artifact: Artifact) -> Session: ...

    # Optional: `applies_to(spec) -> str | None` returns why a form does not apply to a model
    # (e.g. image-input forms on a model without an RGB input); the harness then skips it.


class NeedsPerSize(ExportError):
    """The form cannot serve several sizes from one artifact for this model; export per size."""


# ---------------------------------------------------------------------------------------------
# helpers shared by the backends


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


def to_numpy_outputs(out: Any, names: Sequence[str]) -> OrderedDict[str, np.ndarray]:
    """Eager/TorchScript output -> named numpy arrays, checked against the expected names."""
    flat = flatten_outputs(out)
    if names and list(flat) != list(names):
        raise ExportError(
            f"the artifact returns outputs {list(flat)} but the eager model returns {list(names)}"
        )
    return OrderedDict((k, v.detach().float().cpu().numpy()) for k, v in flat.items())


def inputs_to_tensors(inputs: Mapping[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values())


class TorchOutputFlattening(torch.nn.Module):
    """Wraps a model so that it returns a flat tuple of tensors (what most exporters want)."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.inner = module

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(flatten_outputs(self.inner(*args)).values())


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(path)).encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def path_bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def stable_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
