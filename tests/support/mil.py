"""Helpers to check the executor: build a one-op MIL program, run it, and get coremltools' own
answer for the same op (its numpy value inference) when it has one; convert a torch module to an ML
program the way an app's build would (traced or exported, any precision and deployment target)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from parbench.compare import generic_metrics

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


def convert(
    module: nn.Module,
    example: torch.Tensor | tuple[torch.Tensor, ...],
    out: str | Path,
    *,
    precision: str = "fp16",
    target: str = "iOS16",
    source: str = "trace",
    input_names: Sequence[str] | None = None,
    inputs: list[Any] | None = None,
    **kwargs: Any,
) -> Path:
    """ct.convert a module (traced TorchScript or torch.export) to an ML program and save it."""
    import coremltools as ct

    ex = example if isinstance(example, tuple) else (example,)
    module = module.eval()
    if source == "trace":
        with torch.no_grad():
            src: Any = torch.jit.trace(module, ex)
        if inputs is None:
            names = list(input_names or [f"x{i}" if len(ex) > 1 else "x" for i in range(len(ex))])
            inputs = [ct.TensorType(name=n, shape=t.shape) for n, t in zip(names, ex, strict=True)]
    elif source == "export":
        src = torch.export.export(module, ex).run_decompositions({})
    else:
        raise ValueError(f"source must be 'trace' or 'export', got {source!r}")
    ml = ct.convert(
        src,
        inputs=inputs,
        convert_to="mlprogram",
        minimum_deployment_target=getattr(ct.target, target),
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        **kwargs,
    )
    out = Path(out)
    ml.save(str(out))
    return out


def rel_l2(a: np.ndarray, r: np.ndarray) -> float:
    return generic_metrics(a, r)["rel_l2"]


def cosine(a: np.ndarray, r: np.ndarray) -> float:
    return generic_metrics(a, r)["cosine"]
