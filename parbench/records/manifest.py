"""A fixture set's ``manifest.json``: tensors (raw little-endian arrays with dtype, shape and sha256),
per model the inputs, output names, cases and exported artifacts (docs/fixture-format.md).

Python reads it here; the C++ core and the Objective-C++ bridge read the same JSON with no library,
so the shape of the file is the contract: change it only with a new ``format_version``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import parbench
from parbench._util.clock import utc_now
from parbench.errors import FixtureError
from parbench.records._base import describe
from parbench.records.ids import ModelName, VariantName

FORMAT = "parbench-fixtures"
FORMAT_VERSION = 1
DTYPES = ("float32", "float16", "int64", "int32", "uint8", "bool")
MANIFEST = "manifest.json"
_REBUILD = "rebuild the set with `parbench fixtures`"


def _relative(path: str) -> str:
    """Paths in a manifest are relative, use '/', and never leave the set."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"path {path!r} must be relative to the set, use '/', and stay inside it")
    return path


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorInfo(_Part):
    dtype: Literal["float32", "float16", "int64", "int32", "uint8", "bool"]
    shape: list[int] = Field(description="C order; [] for a scalar")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class ArtifactEntry(_Part):
    path: str
    format: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    sizes: list[int] | None = Field(description="null: serves every size; else only these sizes")
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("path")
    @classmethod
    def _path_inside(cls, v: str) -> str:
        return _relative(v)


class CaseEntry(_Part):
    id: str
    size: int = Field(ge=1)
    index: int = 0
    inputs: dict[str, str]
    golden: dict[str, str]


class InputEntry(_Part):
    name: str
    shape: list[int | Literal["size"]]
    dtype: str = "float32"


class ModelEntry(_Part):
    task: str
    spec_hash: str
    example_size: int
    inputs: list[InputEntry]
    outputs: list[str]
    artifacts: dict[VariantName, list[ArtifactEntry]] = Field(default_factory=dict)
    cases: list[CaseEntry] = Field(default_factory=list)

    def artifact_for(self, variant: str, size: int) -> ArtifactEntry | None:
        for entry in self.artifacts.get(variant, []):
            if entry.sizes is None or size in entry.sizes:
                return entry
        return None


class FixtureManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["parbench-fixtures"] = FORMAT
    format_version: Literal[1] = FORMAT_VERSION
    created_utc: str = Field(default_factory=utc_now)
    generator: dict[str, str] = Field(default_factory=lambda: {"parbench": parbench.__version__})
    tensors: dict[str, TensorInfo] = Field(default_factory=dict)
    models: dict[ModelName, ModelEntry] = Field(default_factory=dict)

    @field_validator("tensors")
    @classmethod
    def _tensor_paths(cls, v: dict[str, TensorInfo]) -> dict[str, TensorInfo]:
        for path in v:
            _relative(path)
        return v

    @model_validator(mode="after")
    def _cases_name_known_tensors(self) -> FixtureManifest:
        for name, model in self.models.items():
            for case in model.cases:
                for rel in [*case.inputs.values(), *case.golden.values()]:
                    if rel not in self.tensors:
                        raise ValueError(
                            f"model {name!r} case {case.id!r} refers to tensor {rel!r}, "
                            "which 'tensors' does not describe"
                        )
        return self

    def model(self, name: str, root: Path | str = "the fixture set") -> ModelEntry:
        try:
            return self.models[name]
        except KeyError:
            raise FixtureError(
                f"fixture set {root} has no model {name!r} (it has: {', '.join(self.models) or 'none'})"
            ) from None


def read(root: Path | str) -> FixtureManifest:
    """The manifest of the set at ``root`` (the reader); FixtureError naming the file and the fix."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise FixtureError(
            f"no fixture set at {root}: {path} is missing (build one with `parbench fixtures`)"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FixtureError(f"{path} is not valid JSON ({exc}); {_REBUILD}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise FixtureError(f"{path} is not a parbench fixture manifest (format != {FORMAT!r})")
    if raw.get("format_version") != FORMAT_VERSION:
        raise FixtureError(
            f"{path} has format_version {raw.get('format_version')!r}; this parbench ({parbench.__version__}) "
            f"reads only version {FORMAT_VERSION}. Rebuild the set with this parbench, or use the parbench "
            "that wrote it."
        )
    try:
        return FixtureManifest.model_validate(raw)
    except ValidationError as exc:
        raise FixtureError(
            f"{path} does not follow the fixture format ({describe(exc)}); {_REBUILD}"
        ) from None


def write(root: Path | str, manifest: FixtureManifest) -> Path:
    """Write ``manifest.json`` atomically (the writer)."""
    path = Path(root) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(manifest.model_dump(mode="json"), indent=1), encoding="utf-8")
    tmp.replace(path)
    return path
