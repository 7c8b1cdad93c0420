"""Fixture sets: inputs per size, golden eager-fp32 outputs, and artifacts, described by a manifest
that C++ and Objective-C++ read with no library (see docs/fixture-format.md)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import parbench
from parbench.backends.base import flatten_outputs, sha256_path
from parbench.zoo import ModelSpec, example_inputs

FORMAT = "parbench-fixtures"
FORMAT_VERSION = 1
DTYPES = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32,
          "uint8": np.uint8, "bool": np.bool_}
DEGENERATE_STD = 1e-4


class FixtureError(ValueError):
    """A fixture set is missing, corrupt or of an unknown format; the message names the file."""


class DegenerateOutputError(FixtureError):
    """A model's golden outputs are (nearly) constant, so every comparison would pass trivially."""


@dataclasses.dataclass
class Case:
    id: str
    model: str
    size: int
    index: int
    inputs: OrderedDict[str, np.ndarray]
    golden: OrderedDict[str, np.ndarray]


def _dtype_name(arr: np.ndarray) -> str:
    for name, dt_ in DTYPES.items():
        if arr.dtype == dt_:
            return name
    raise FixtureError(f"tensor dtype {arr.dtype} cannot be stored in a fixture set ({', '.join(DTYPES)})")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


class FixtureSet:
    def __init__(self, root: Path, manifest: dict[str, Any]):
        self.root = Path(root)
        self.manifest = manifest

    # ---- reading -----------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path | str) -> FixtureSet:
        root = Path(root)
        path = root / "manifest.json"
        if not path.is_file():
            raise FixtureError(f"no fixture set at {root}: {path} is missing (build one with `parbench fixtures`)")
        try:
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FixtureError(f"{path} is not valid JSON ({exc}); rebuild it with `parbench fixtures`") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise FixtureError(f"{path} is not a parbench fixture manifest (format != {FORMAT!r})")
        version = manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise FixtureError(
                f"{path} has format_version {version!r}; this parbench ({parbench.__version__}) reads only "
                f"version {FORMAT_VERSION}. Rebuild the set with this parbench, or use the parbench that wrote it."
            )
        for key in ("tensors", "models"):
            if not isinstance(manifest.get(key), dict):
                raise FixtureError(f"{path}: key {key!r} is missing or not an object")
        return cls(root, manifest)

    def models(self) -> list[str]:
        return list(self.manifest["models"])

    def model(self, name: str) -> dict[str, Any]:
        try:
            return self.manifest["models"][name]
        except KeyError:
            raise FixtureError(f"fixture set {self.root} has no model {name!r} (it has: "
                               f"{', '.join(self.models()) or 'none'})") from None

    def read_tensor(self, rel: str) -> np.ndarray:
        info = self.manifest["tensors"].get(rel)
        if info is None:
            raise FixtureError(f"{self.root}/manifest.json refers to tensor {rel!r} but does not describe it")
        path = self.root / rel
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise FixtureError(f"fixture tensor {path} cannot be read: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise FixtureError(f"fixture tensor {path} is corrupt: its sha256 does not match the manifest "
                               "(rebuild the set with `parbench fixtures`)")
        dtype = np.dtype(DTYPES[info["dtype"]]).newbyteorder("<")
        shape = tuple(info["shape"])
        expected = int(np.prod(shape)) * dtype.itemsize
        if len(data) != expected:
            raise FixtureError(f"fixture tensor {path} has {len(data)} bytes, expected {expected} for "
                               f"{info['dtype']}{list(shape)}")
        return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))

    def cases(self, model: str, size: int | None = None) -> list[Case]:
        entry = self.model(model)
        out = []
        for c in entry["cases"]:
            if size is not None and c["size"] != size:
                continue
            out.append(Case(
                id=c["id"], model=model, size=c["size"], index=c.get("index", 0),
                inputs=OrderedDict((k, self.read_tensor(v)) for k, v in c["inputs"].items()),
                golden=OrderedDict((k, self.read_tensor(v)) for k, v in c["golden"].items()),
            ))
        return out

    def sizes(self, model: str) -> list[int]:
        return sorted({c["size"] for c in self.model(model)["cases"]})

    def artifact_path(self, model: str, variant: str, size: int) -> Path:
        """The verified artifact file that serves `size` for `variant`."""
        for entry in self.model(model).get("artifacts", {}).get(variant, []):
            if entry["sizes"] is None or size in entry["sizes"]:
                path = self.root / entry["path"]
                if not path.exists():
                    raise FixtureError(f"artifact {path} listed in the manifest is missing")
                if sha256_path(path) != entry["sha256"]:
                    raise FixtureError(f"artifact {path} is corrupt: its sha256 does not match the manifest")
                return path
        raise FixtureError(f"fixture set {self.root} has no {variant} artifact for {model} at size {size}")

    # ---- writing -----------------------------------------------------------------------
    def _put_tensor(self, rel: str, arr: np.ndarray) -> str:
        arr = np.ascontiguousarray(arr)
        data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        _atomic_write(self.root / rel, data)
        self.manifest["tensors"][rel] = {"dtype": _dtype_name(arr), "shape": list(arr.shape),
                                         "sha256": hashlib.sha256(data).hexdigest()}
        return rel

    def add_artifact(self, model: str, variant: str, src: Path, fmt: str, sizes: Sequence[int] | None,
                     meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Copy an exported artifact into the set (replacing one for the same sizes)."""
        suffix = "".join(Path(src).suffixes) or ""
        tag = "" if sizes is None else "-" + "_".join(str(s) for s in sizes)
        rel = f"artifacts/{model}/{variant}{tag}{suffix}"
        dst = self.root / rel
        if dst.exists():
            shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst) if Path(src).is_dir() else shutil.copy2(src, dst)
        entry = {"path": rel, "format": fmt, "sha256": sha256_path(dst),
                 "bytes": sum(p.stat().st_size for p in dst.rglob("*") if p.is_file()) if dst.is_dir()
                 else dst.stat().st_size,
                 "sizes": None if sizes is None else list(sizes), "meta": meta or {}}
        entries = self.model(model).setdefault("artifacts", {}).setdefault(variant, [])
        entries[:] = [e for e in entries if e["sizes"] != entry["sizes"]] + [entry]
        return entry

    def save(self) -> None:
        _atomic_write(self.root / "manifest.json", json.dumps(self.manifest, indent=1).encode())


def _installed_version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def new_manifest() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "generator": {"parbench": parbench.__version__, "torch": torch.__version__,
                      "executorch": _installed_version("executorch")},  # which ExecuTorch wrote the .pte files
        "tensors": {},
        "models": {},
    }


def check_not_degenerate(spec: ModelSpec, size: int, golden: OrderedDict[str, np.ndarray]) -> None:
    for name, arr in golden.items():
        if arr.size > 1 and np.issubdtype(arr.dtype, np.floating) and float(arr.std()) < DEGENERATE_STD:
            raise DegenerateOutputError(
                f"model {spec.name!r}: golden output {name!r} at {size}px is degenerate "
                f"(std {float(arr.std()):.2e} < {DEGENERATE_STD:g}); every comparison would pass trivially. "
                "Give real weights (key 'weights') or check that batch-norm statistics are calibrated."
            )


@torch.no_grad()
def add_model(fs: FixtureSet, spec: ModelSpec, module: torch.nn.Module, sizes: Iterable[int] | None = None,
              cases_per_size: int = 2) -> None:
    """Write inputs and golden eager outputs for every size of `spec` into the set."""
    cases = []
    names: list[str] | None = None
    for size in sizes or spec.sizes:
        for index in range(cases_per_size):
            inputs = example_inputs(spec, size, index)
            try:
                out = module(*(torch.from_numpy(v) for v in inputs.values()))
            except Exception as exc:
                shapes = {k: list(v.shape) for k, v in inputs.items()}
                raise FixtureError(
                    f"model {spec.name!r}: eager forward on inputs {shapes} at size {size} failed: "
                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                    f"(check the model's 'inputs' and 'sizes' keys)"
                ) from exc
            golden = OrderedDict((k, v.detach().float().numpy()) for k, v in flatten_outputs(out).items())
            check_not_degenerate(spec, size, golden)
            names = list(golden)
            cid = f"{spec.name}/{size}/{index}"
            stem = f"tensors/{spec.name}/{size}-{index}"
            cases.append({
                "id": cid, "size": size, "index": index,
                "inputs": {k: fs._put_tensor(f"{stem}.input.{k}.bin", v) for k, v in inputs.items()},
                "golden": {k: fs._put_tensor(f"{stem}.golden.{k}.bin", v) for k, v in golden.items()},
            })
    fs.manifest["models"][spec.name] = {
        "task": spec.task,
        "spec_hash": spec.spec_hash,
        "example_size": spec.example_size,
        "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.dtype} for i in spec.inputs],
        "outputs": names or [],
        "artifacts": {},
        "cases": cases,
    }


def build(root: Path | str, specs: Sequence[ModelSpec], load: Callable[[ModelSpec], torch.nn.Module],
          cases_per_size: int = 2, progress: Callable[[str], None] | None = None) -> FixtureSet:
    """A new fixture set at `root` holding every model in `specs`."""
    root = Path(root)
    if (root / "manifest.json").exists():
        shutil.rmtree(root)
    fs = FixtureSet(root, new_manifest())
    for spec in specs:
        if progress:
            progress(f"fixtures: {spec.name} at {', '.join(map(str, spec.sizes))} px")
        add_model(fs, spec, load(spec), cases_per_size=cases_per_size)
    fs.save()
    return fs
