"""Kernel registry of the reference executor, and the view of one MIL op that kernels build from.

A kernel *builder* runs once per op when a program is loaded: it reads the op's constant
parameters (strides, axes, modes, weights) into Python values and torch tensors, and returns a
small closure ``run(env) -> Tensor | tuple`` that only touches the op's runtime inputs.  ``env``
is the executor's list of live values, indexed by slot numbers assigned at load time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

Env = list
Run = Callable[[Env], Any]
Getter = Callable[[Env], Any]
Builder = Callable[["OpCtx"], Run]
# a nested block (cond's branches, while_loop's cond and body) compiled into the enclosing
# program: called with the env and the block's inputs, it returns the block's outputs
BlockRun = Callable[[Env, Sequence[Any]], list[Any]]
BlockCompiler = Callable[[Any], BlockRun]

_BUILDERS: dict[str, Builder] = {}
# ops whose fp16 output is exactly representable when their inputs are (pure data movement,
# selection, max/min): the executor skips the fp16 rounding pass after them.
_FP16_EXACT: set[str] = set()


class CoreMLRefError(RuntimeError):
    """The reference executor cannot load or run this model; the message says why."""


class UnsupportedOpError(CoreMLRefError, NotImplementedError):
    """The program uses an op (or an op option) that the reference executor does not implement."""


def kernel(*op_types: str, fp16_exact: bool = False) -> Callable[[Builder], Builder]:
    """Register ``fn`` as the builder of ``op_types``."""

    def deco(fn: Builder) -> Builder:
        for t in op_types:
            if t in _BUILDERS:
                raise RuntimeError(f"kernel for MIL op {t!r} registered twice")
            _BUILDERS[t] = fn
            if fp16_exact:
                _FP16_EXACT.add(t)
        return fn

    return deco


def builder_for(op_type: str) -> Builder | None:
    return _BUILDERS.get(op_type)


def is_fp16_exact(op_type: str) -> bool:
    return op_type in _FP16_EXACT


def registered_ops() -> list[str]:
    return sorted(_BUILDERS)


# --------------------------------------------------------------------------------------------
# MIL dtypes <-> torch dtypes.  fp16 values live in float32 tensors that hold exactly
# representable fp16 numbers (the executor rounds after each fp16 op); this keeps every
# kernel on torch's fast fp32 CPU paths.

TORCH_DTYPE: dict[str, torch.dtype] = {
    "fp16": torch.float32,
    "fp32": torch.float32,
    "fp64": torch.float64,
    "int32": torch.int32,
    "int64": torch.int64,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "uint16": torch.int32,
    "uint32": torch.int64,
    "uint64": torch.int64,
    "int4": torch.int8,
    "uint4": torch.uint8,
    "uint1": torch.uint8,
    "uint2": torch.uint8,
    "uint3": torch.uint8,
    "uint6": torch.uint8,
    "bool": torch.bool,
}

NUMPY_DTYPE: dict[str, Any] = {
    "fp16": np.float16,
    "fp32": np.float32,
    "fp64": np.float64,
    "int32": np.int32,
    "int64": np.int64,
    "int16": np.int16,
    "int8": np.int8,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "bool": np.bool_,
}


def mil_dtype_name(dtype: Any) -> str:
    """'fp16', 'fp32', 'int32', 'bool', 'str', ... for a PyMIL builtin type (tensor or scalar)."""
    from coremltools.converters.mil.mil import types

    if dtype is None:
        return "unknown"
    if types.is_tensor(dtype):
        dtype = dtype.get_primitive()
    try:
        return types.builtin_to_string(dtype)
    except Exception:  # list / dict / tuple types
        return getattr(dtype, "__name__", str(dtype))


def var_dtype(var: Any) -> str:
    """:func:`mil_dtype_name` of a Var; ``"list"`` for list values (classify's class labels)."""
    try:
        return mil_dtype_name(var.dtype)
    except ValueError:
        return "list"


def to_tensor(value: Any, mil_dtype: str | None = None) -> Any:
    """A constant's value as the executor holds it: str/list of str stay Python, numbers -> tensor."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        return list(value)
    arr = np.asarray(value)
    if arr.dtype.kind in "US" or arr.dtype == object:
        return arr.tolist()
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.int32)
    elif arr.dtype in (np.uint32, np.uint64):
        arr = arr.astype(np.int64)
    t = torch.from_numpy(np.array(arr, copy=True, order="C"))  # (ascontiguousarray makes 0-d 1-d)
    if mil_dtype in ("fp16", "fp32") and not t.is_floating_point():
        t = t.float()
    return t


class OpCtx:
    """What a kernel builder sees of one op: its constant params and getters for runtime inputs."""

    def __init__(
        self,
        op: Any,
        opset: str,
        slot_of: Callable[[Any], int],
        const_of: Callable[[Any], tuple[bool, Any, Any]],
        emulate_fp16: bool,
        compile_block: BlockCompiler | None = None,
    ):
        self.op = op
        self.op_type: str = op.op_type
        self.name: str = op.name
        self.opset = opset  # the op definition's opset: "iOS15" | "iOS16" | "iOS17" | "iOS18"
        self.emulate_fp16 = emulate_fp16
        self._slot_of = slot_of
        self._const_of = const_of
        self._compile_block = compile_block

    # -- errors -------------------------------------------------------------------------
    def unsupported(self, what: str) -> UnsupportedOpError:
        return UnsupportedOpError(
            f"MIL op {self.op_type!r} ({self.opset} opset, op {self.name!r}): {what} is not "
            "supported by parbench's Core ML reference executor"
        )

    # -- inputs -------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return self.op.inputs.get(key) is not None

    def var(self, key: str) -> Any:
        v = self.op.inputs.get(key)
        if v is None:
            raise CoreMLRefError(f"MIL op {self.op_type!r} ({self.name!r}) has no input {key!r}")
        return v

    def is_const(self, key: str) -> bool:
        v = self.op.inputs.get(key)
        return v is not None and not isinstance(v, (list, tuple)) and self._const_of(v)[0]

    def raw(self, key: str, default: Any = None) -> Any:
        """The numpy/Python value of a constant input (``default`` if the input is absent)."""
        v = self.op.inputs.get(key)
        if v is None:
            return default
        is_c, _, raw = self._const_of(v)
        if not is_c:
            raise self.unsupported(f"a non-constant {key!r} input")
        return raw

    def raws(self, key: str) -> list[Any]:
        """Constant values of a tuple input (one per element)."""
        v = self.var(key)
        out = []
        for x in v if isinstance(v, (list, tuple)) else [v]:
            is_c, _, raw = self._const_of(x)
            if not is_c:
                raise self.unsupported(f"a non-constant {key!r} input")
            out.append(raw)
        return out

    def ints(self, key: str, default: Sequence[int] | None = None) -> list[int] | None:
        r = self.raw(key, None)
        if r is None:
            return None if default is None else list(default)
        return [int(i) for i in np.asarray(r).reshape(-1)]

    def int(self, key: str, default: int | None = None) -> int | None:
        r = self.raw(key, None)
        return default if r is None else int(np.asarray(r).reshape(-1)[0])

    def float(self, key: str, default: float | None = None) -> float | None:
        r = self.raw(key, None)
        return default if r is None else float(np.asarray(r, dtype=np.float64).reshape(-1)[0])

    def bool(self, key: str, default: bool | None = None) -> bool | None:
        r = self.raw(key, None)
        return default if r is None else bool(np.asarray(r).reshape(-1)[0])

    def bools(self, key: str) -> list[bool] | None:
        r = self.raw(key, None)
        return None if r is None else [bool(b) for b in np.asarray(r).reshape(-1)]

    def str(self, key: str, default: str | None = None) -> str | None:
        r = self.raw(key, None)
        if r is None:
            return default
        return str(np.asarray(r).reshape(-1)[0]) if not isinstance(r, str) else r

    def ints_at_run(
        self, key: str, default: Sequence[int] | None = None
    ) -> Callable[[Env], list[int]] | None:
        """An int-list input (shape, begin, pad, reps) that may be computed at run time, as a
        getter of its value; a constant is read once here (``default`` when the input is absent)."""
        if not self.has(key):
            return None if default is None else (lambda env, _v=list(default): _v)
        if self.is_const(key):
            return lambda env, _v=self.ints(key): _v
        g = self.get(key)

        def read(env: Env) -> list[int]:
            v = g(env)
            return [int(i) for i in (v.reshape(-1).tolist() if isinstance(v, torch.Tensor) else v)]

        return read

    def tensor(self, key: str) -> torch.Tensor | None:
        """A constant input as a tensor (float inputs as float32)."""
        v = self.op.inputs.get(key)
        if v is None:
            return None
        is_c, t, _ = self._const_of(v)
        if not is_c:
            raise self.unsupported(f"a non-constant {key!r} input")
        return t

    def get(self, key: str) -> Getter:
        """Getter for an input's value at run time (constants are captured, not looked up)."""
        return self._getter(self.var(key))

    def get_opt(self, key: str) -> Getter | None:
        return self.get(key) if self.has(key) else None

    def gets(self, key: str) -> list[Getter]:
        """Getters of a tuple input (concat's ``values`` ...)."""
        v = self.var(key)
        vs = v if isinstance(v, (list, tuple)) else [v]
        return [self._getter(x) for x in vs]

    def _getter(self, v: Any) -> Getter:
        is_c, t, _ = self._const_of(v)
        if is_c:
            return lambda env, _t=t: _t
        slot = self._slot_of(v)
        return lambda env, _s=slot: env[_s]

    # -- nested blocks ------------------------------------------------------------------
    def block(self, index: int) -> BlockRun:
        """The op's nested block ``index``, compiled into the enclosing program."""
        if self._compile_block is None:
            raise CoreMLRefError(f"MIL op {self.op_type!r} ({self.name!r}) has blocks but no block compiler")
        return self._compile_block(self.op.blocks[index])

    # -- types --------------------------------------------------------------------------
    def in_dtype(self, key: str) -> str:
        return var_dtype(self.var(key))

    def in_rank(self, key: str) -> int:
        return len(self.var(key).shape)

    def in_shape(self, key: str) -> tuple:
        return tuple(self.var(key).shape)

    def out_dtype(self, i: int = 0) -> str:
        return var_dtype(self.op.outputs[i])

    def out_rank(self, i: int = 0) -> int:
        return len(self.op.outputs[i].shape)
