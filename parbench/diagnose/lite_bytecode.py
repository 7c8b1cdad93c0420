"""Will the phone load it? Lite-interpreter bytecode versions of .ptl artifacts against an app's runtime, and backports."""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from parbench.errors import DeviceError

# ---------------------------------------------------------------------------------------------
# "will the phone load it?": lite-interpreter bytecode versions


@dataclasses.dataclass(frozen=True)
class LiteRuntime:
    name: str
    min_bytecode: int
    max_bytecode: int
    max_file_format: int  # operator versioning: the archive's `version` record
    source: str


# Bounds compiled into each runtime (caffe2/serialize/versions.h of that release:
# kMin/kMaxSupportedBytecodeVersion, kMaxSupportedFileFormatVersion).
RUNTIMES: dict[str, LiteRuntime] = {
    "LibTorch-Lite 2.1.0": LiteRuntime(
        "LibTorch-Lite 2.1.0",
        4,
        9,
        10,
        "torch 2.1 caffe2/serialize/versions.h: bytecode 4..9, file format <= 10",
    ),
}
DEFAULT_RUNTIME = "LibTorch-Lite 2.1.0"


def ptl_info(path: Path | str) -> dict[str, Any]:
    """Bytecode version, file-format (operator) version, contained types and operators of a .ptl."""
    from torch.jit.mobile import (
        _get_mobile_model_contained_types,
        _get_model_bytecode_version,
        _get_model_ops_and_info,
    )

    path = str(path)
    try:
        bytecode = int(_get_model_bytecode_version(path))
    except RuntimeError as exc:
        raise DeviceError(f"{path} is not a lite-interpreter model: {exc}") from exc
    file_format = None
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.count("/") == 1 and name.endswith("/version"):
                file_format = int(z.read(name).decode().strip())
    ops = _get_model_ops_and_info(path)
    return {
        "bytecode_version": bytecode,
        "file_format_version": file_format,
        "types": sorted(_get_mobile_model_contained_types(path)),
        "ops": {name: int(info.num_schema_args) for name, info in sorted(ops.items())},
    }


def _lite_outputs(path: Path, inputs: Sequence[Any]) -> dict[str, Any]:
    import torch
    from torch.jit.mobile import _load_for_lite_interpreter

    from parbench.backends.base import flatten_outputs

    module = _load_for_lite_interpreter(str(path))
    with torch.inference_mode():
        return dict(flatten_outputs(module(*inputs)))


def check_and_backport(
    fixture_dir: Path | str,
    max_bytecode: int | None = None,
    *,
    runtime: str = DEFAULT_RUNTIME,
    backport: bool = True,
) -> list[dict[str, Any]]:
    """For every .ptl artifact of the fixture set: will `runtime` load it? Backport it where its
    bytecode is too new and torch can, check that the backported file loads and gives the very
    same outputs on the set's cases, and point the manifest at it (meta.backported_from keeps
    the original). Returns one report row per artifact; a row's status is ok, backported or
    failed (with the reason). The manifest is saved when something was backported.

    `max_bytecode` overrides the runtime's upper bound (e.g. 7 for an older app).
    """
    import numpy as np
    import torch
    from torch.jit.mobile import _backport_for_mobile, _get_model_bytecode_version

    from parbench._util.hashing import sha256_path
    from parbench.fixtures import FixtureError, FixtureSet

    if runtime not in RUNTIMES:
        raise DeviceError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)} (or give max_bytecode)")
    rt = RUNTIMES[runtime]
    upper = rt.max_bytecode if max_bytecode is None else int(max_bytecode)
    lower = rt.min_bytecode
    if upper < lower:
        raise DeviceError(f"max bytecode {upper} is below the lowest version {runtime} reads ({lower})")
    try:
        fs = FixtureSet.open(fixture_dir)
    except FixtureError as exc:
        raise DeviceError(str(exc)) from exc
    rows: list[dict[str, Any]] = []
    changed = False
    for model in fs.models():
        entry = fs.model(model)
        for variant, artifacts in entry.artifacts.items():
            for art in artifacts:
                if art.format != "ptl":
                    continue
                path = fs.root / art.path
                row: dict[str, Any] = {
                    "model": model,
                    "variant": variant,
                    "path": art.path,
                    "runtime": runtime,
                    "max_bytecode": upper,
                    "status": "ok",
                    "reason": "",
                }
                rows.append(row)
                if not path.is_file():
                    row.update(status="failed", reason=f"{art.path} is listed in the manifest but missing")
                    continue
                if sha256_path(path) != art.sha256:
                    row.update(
                        status="failed", reason=f"refused {art.path}: sha256 does not match the manifest"
                    )
                    continue
                info = ptl_info(path)
                row.update(
                    bytecode_version=info["bytecode_version"],
                    file_format_version=info["file_format_version"],
                    types=info["types"],
                    n_ops=len(info["ops"]),
                )
                bc = info["bytecode_version"]
                if (
                    info["file_format_version"] is not None
                    and info["file_format_version"] > rt.max_file_format
                ):
                    row.update(
                        status="failed",
                        reason=(
                            f"file format (operator) version {info['file_format_version']} > {rt.max_file_format}, "
                            f"the newest {runtime} reads: an operator changed semantics since; re-export with an "
                            "older torch or avoid the operator"
                        ),
                    )
                    continue
                if bc < lower:
                    row.update(
                        status="failed",
                        reason=f"bytecode {bc} is older than {runtime} reads ({lower}..): "
                        "re-export it with this torch",
                    )
                    continue
                if bc <= upper:
                    continue
                if not backport:
                    row.update(
                        status="failed",
                        reason=f"bytecode {bc} > {upper}: {runtime} refuses it (backport disabled)",
                    )
                    continue
                new_rel = str(Path(art.path).with_suffix("")) + f".bc{upper}.ptl"
                new_path = fs.root / new_rel
                try:
                    ok = _backport_for_mobile(str(path), str(new_path), upper)
                except RuntimeError as exc:
                    ok, why = False, str(exc).splitlines()[0]
                else:
                    why = "torch returned False"
                if not ok or not new_path.is_file():
                    new_path.unlink(missing_ok=True)
                    row.update(
                        status="failed",
                        reason=(
                            f"bytecode {bc} > {upper} and torch {torch.__version__} cannot backport it to {upper} "
                            f"({why}); export with an older torch or upgrade the app's runtime"
                        ),
                    )
                    continue
                got = int(_get_model_bytecode_version(str(new_path)))
                if got != upper:
                    new_path.unlink(missing_ok=True)
                    row.update(status="failed", reason=f"backport wrote bytecode {got}, not {upper}")
                    continue
                # Same outputs as the original on every case this artifact serves.
                worst = 0.0
                try:
                    for case in fs.cases(model):
                        if art.sizes is not None and case.size not in art.sizes:
                            continue
                        inputs = [torch.from_numpy(np.ascontiguousarray(v)) for v in case.inputs.values()]
                        before = _lite_outputs(path, inputs)
                        after = _lite_outputs(new_path, inputs)
                        if list(before) != list(after):
                            raise DeviceError(f"outputs {list(after)} instead of {list(before)}")
                        for name in before:
                            diff = (before[name].double() - after[name].double()).abs()
                            worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
                except (RuntimeError, DeviceError) as exc:
                    new_path.unlink(missing_ok=True)
                    row.update(status="failed", reason=f"the backported file does not load or run: {exc}")
                    continue
                if worst != 0.0:
                    new_path.unlink(missing_ok=True)
                    row.update(
                        status="failed", reason=f"the backported file's outputs differ (max abs {worst:g})"
                    )
                    continue
                old = {"path": art.path, "sha256": art.sha256, "bytecode_version": bc}
                art.path, art.sha256, art.bytes = new_rel, sha256_path(new_path), new_path.stat().st_size
                art.meta["backported_from"] = old
                art.meta["bytecode_version"] = upper
                row.update(
                    status="backported",
                    path=new_rel,
                    backported_from=bc,
                    bytecode_version=upper,
                    max_abs_diff=worst,
                )
                changed = True
    if changed:
        fs.save()
    return rows
