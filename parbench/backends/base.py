"""The contract every deployment form implements.

A Backend turns an eager ``nn.Module`` into an Artifact (a file or folder on disk) and loads
an Artifact into a Session that runs inputs.  Inputs and outputs cross this boundary as
ordered ``{name: numpy array}`` dicts, so every form is compared the same way:

* input names come from the ModelSpec (``spec.input_names``), in the model's argument order;
* output names come from flattening the eager model's output (see :mod:`parbench.zoo.outputs`):
  a tensor is ``"output"``, a tuple/list is ``"output_0"``, ``"output_1"``, ..., a dict
  keeps its keys (nested containers join keys with ``.``).

An Artifact carries both lists (``input_names``, ``output_names``); its ``meta`` holds only what
the export decided (exporter, opset, notes, ...), which every result records.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
import torch

from parbench._util.hashing import path_bytes
from parbench.zoo.outputs import flatten_outputs

__all__ = ["Artifact", "Availability", "Backend", "ExportRequest", "Family", "Session", "flatten_outputs"]

if TYPE_CHECKING:
    from parbench.zoo import ModelSpec

Family = Literal["fp32", "fp16", "int8"]


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
    # where the forms that lower from one torch.export program share it (None: each exports its own)
    programs: Path | None = None


@dataclasses.dataclass
class Artifact:
    """One exported file or folder, plus what the export decided (recorded in every result)."""

    variant: str
    path: Path
    format: str  # pt | ptl | onnx | pte | mlpackage | eager | ...
    sizes: list[int] | None  # None: serves every size; else the sizes it was exported for
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    module: torch.nn.Module | None = None  # in-memory forms (eager, quantized eager) only
    input_names: list[str] = dataclasses.field(default_factory=list)  # what a session is fed, in order
    output_names: list[str] = dataclasses.field(default_factory=list)  # what a session returns, in order

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
