"""Helpers to check the executor op by op: build a one-op MIL program, run it, and get
coremltools' own answer for the same op (its numpy value inference) when it has one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

_DT = {
    np.dtype(np.float32): "fp32",
    np.dtype(np.float16): "fp16",
    np.dtype(np.int32): "int32",
    np.dtype(np.bool_): "bool",
    np.dtype(np.int8): "int8",
    np.dtype(np.uint8): "uint8",
}


def _target(opset: str) -> Any:
    import coremltools as ct

    return getattr(ct.target, opset)


def mil_program(fn: Callable[..., Any], inputs: dict[str, np.ndarray], opset: str = "iOS17") -> Any:
    """``fn(**placeholders)`` built into a MIL program whose inputs are ``inputs``' names."""
    from coremltools.converters.mil.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    tmap = {
        "fp32": types.fp32,
        "fp16": types.fp16,
        "int32": types.int32,
        "bool": types.bool,
        "int8": types.int8,
        "uint8": types.uint8,
    }
    names = list(inputs)
    specs = [
        mb.TensorSpec(shape=np.asarray(a).shape, dtype=tmap[_DT[np.asarray(a).dtype]])
        for a in inputs.values()
    ]

    def body(*args: Any) -> Any:
        return fn(**dict(zip(names, args, strict=True)))

    # mb.program names inputs after the function's parameters
    src = f"def _f({', '.join(names)}):\n    return body({', '.join(names)})\n"
    ns: dict[str, Any] = {"body": body}
    exec(src, ns)  # noqa: S102 - builds a function with the wanted parameter names
    return mb.program(input_specs=specs, opset_version=_target(opset))(ns["_f"])


def run_mil(
    fn: Callable[..., Any], opset: str = "iOS17", emulate_fp16: bool = True, **inputs: np.ndarray
) -> list[np.ndarray]:
    """Run ``fn`` (MIL builder calls on placeholder inputs) through the reference executor."""
    from parbench.coreml_ref.program import CompiledFunction

    prog = mil_program(fn, inputs, opset)
    cf = CompiledFunction(prog.functions["main"], emulate_fp16=emulate_fp16)
    out = cf.run({k: torch.from_numpy(np.array(v, copy=True, order="C")) for k, v in inputs.items()})
    return [v.numpy() if isinstance(v, torch.Tensor) else v for v in out.values()]


def mil_value(fn: Callable[..., Any], opset: str = "iOS17", **inputs: np.ndarray) -> list[np.ndarray] | None:
    """coremltools' own value for ``fn`` on constant inputs (None if the op has no value inference)."""
    from coremltools.converters.mil.mil import Builder as mb

    out: list[Any] = []

    def body() -> Any:
        res = fn(**{k: mb.const(val=v) for k, v in inputs.items()})
        out.extend(res if isinstance(res, (list, tuple)) else [res])
        return res

    try:
        mb.program(input_specs=[], opset_version=_target(opset))(body)
    except Exception:  # ops without value inference leave outputs non-const; some then refuse
        return None
    vals = [v.val for v in out]
    if any(v is None for v in vals):
        return None
    return [np.asarray(v) for v in vals]


def rel_l2(a: np.ndarray, r: np.ndarray) -> float:
    a64, r64 = np.asarray(a, np.float64).ravel(), np.asarray(r, np.float64).ravel()
    return float(np.linalg.norm(a64 - r64) / max(np.linalg.norm(r64), 1e-12))


def cosine(a: np.ndarray, r: np.ndarray) -> float:
    a64, r64 = np.asarray(a, np.float64).ravel(), np.asarray(r, np.float64).ravel()
    na, nr = np.linalg.norm(a64), np.linalg.norm(r64)
    if na == 0 and nr == 0:
        return 1.0
    if na == 0 or nr == 0:
        return 0.0
    return float(a64 @ r64 / (na * nr))
