"""Compile a MIL function into a flat list of torch kernels, and run it.

Loading does the work once: constants (and ``constexpr_*`` decompression, and any op whose
inputs are all constant) become torch tensors, every runtime value gets a slot in a list, and
each op becomes a closure bound to its slots.  Running is then a loop over those closures.

Precision follows the program: a value the program types as fp16 is rounded to fp16 after the
op that makes it (values are held in float32 tensors, so kernels run on torch's fp32 paths);
fp32 values stay fp32.  ``emulate_fp16=False`` skips that rounding, which runs an fp16 program
at fp32 compute over its fp16 weights (used by bisect to split storage from compute error).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from parbench.coreml_ref import ops as _ops  # noqa: F401  (registers the kernels)
from parbench.coreml_ref.registry import (
    TORCH_DTYPE,
    BlockRun,
    CoreMLRefError,
    OpCtx,
    UnsupportedOpError,
    builder_for,
    is_fp16_exact,
    to_tensor,
    var_dtype,
)

Hook = Callable[[str, str, Any], None]  # (output var name, op type, value)

# ops never evaluated at load time even when all their inputs are constant
_NO_FOLD = {"random_bernoulli", "random_categorical", "random_normal", "random_uniform", "read_state"}


def op_opset(op: Any) -> str:
    """'iOS15'..'iOS18' from the module that defines the op's class (its opset version)."""
    mod = type(op).__module__
    for part in mod.split("."):
        if part.startswith("iOS") or part == "coreml_dialect":
            return part
    return "unknown"


@dataclass
class Step:
    run: Callable[[list], Any]
    op_type: str
    name: str
    out_slots: list[int]
    out_names: list[str]
    rounds: list[bool]  # round this output to fp16
    want: list[torch.dtype | None]  # dtype the value must have (None: not a tensor)
    free: list[int] = field(default_factory=list)  # slots whose last reader is this step


@dataclass
class Block:
    input_slots: list[int]
    steps: list[Step]
    outputs: list[Callable[[list], Any]]  # getters of the block outputs


class _Compiler:
    def __init__(self, emulate_fp16: bool):
        self.emulate_fp16 = emulate_fp16
        self.slots: dict[int, int] = {}  # id(var) -> slot
        self.consts: dict[int, tuple[Any, Any]] = {}  # id(var) -> (tensor-ish, raw)
        self.n_slots = 0
        self.keep: list[Any] = []  # keeps vars alive so id() stays unique
        self._compiled_ops: set[int] = set()  # ops that became steps (not folded constants)

    # -- slots and constants ---------------------------------------------------------------
    def new_slot(self, var: Any) -> int:
        self.keep.append(var)
        s = self.n_slots
        self.slots[id(var)] = s
        self.n_slots += 1
        return s

    def slot_of(self, var: Any) -> int:
        try:
            return self.slots[id(var)]
        except KeyError:
            raise CoreMLRefError(f"value {var.name!r} is used before the op that makes it") from None

    def const_of(self, var: Any) -> tuple[bool, Any, Any]:
        c = self.consts.get(id(var))
        if c is None:
            return False, None, None
        return True, c[0], c[1]

    def set_const(self, var: Any, value: Any) -> None:
        self.keep.append(var)
        dt = var_dtype(var)
        if isinstance(value, torch.Tensor):
            t = value
            if dt == "fp16" and self.emulate_fp16 and t.is_floating_point():
                t = t.to(torch.float16).to(torch.float32)
            want = TORCH_DTYPE.get(dt)
            if want is not None and t.dtype != want:
                t = t.to(want)
            raw = t.numpy() if t.dtype != torch.bfloat16 else t.float().numpy()
            self.consts[id(var)] = (t, raw)
        else:
            raw = value
            self.consts[id(var)] = (to_tensor(value, dt), raw)

    # -- ops ---------------------------------------------------------------------------------
    def compile_block(self, block: Any, input_vars: list[Any] | None = None) -> Block:
        first_slot = self.n_slots
        in_slots = [self.new_slot(v) for v in (input_vars if input_vars is not None else block.inputs)]
        steps: list[Step] = []
        for op in block.operations:
            step = self.compile_op(op)
            if step is not None:
                steps.append(step)
        outs = []
        for v in block.outputs:
            is_c, t, _ = self.const_of(v)
            if is_c:
                outs.append(lambda env, _t=t: _t)
            else:
                s = self.slot_of(v)
                outs.append(lambda env, _s=s: env[_s])
        self._plan_frees(steps, block, first_slot)
        return Block(in_slots, steps, outs)

    def block_runner(self, block: Any) -> BlockRun:
        """A nested block compiled into this program, as the function control-flow kernels call."""
        compiled = self.compile_block(block)
        return lambda env, inputs: run_block(compiled, env, inputs, None)

    def _plan_frees(self, steps: list[Step], block: Any, first_slot: int) -> None:
        """Free each runtime value after its last reader (keeps peak memory near eager's).

        Only values made in this block are freed here: a loop body runs many times and must
        not drop a value of the enclosing block that it reads again on the next iteration.
        """
        keep = {id(v) for v in block.outputs}
        last: dict[int, int] = {}
        for i, op in enumerate(o for o in block.operations if id(o) in self._compiled_ops):
            for v in _flat_inputs(op):
                if id(v) in self.slots and id(v) not in keep:
                    last[self.slots[id(v)]] = i
            # values used inside nested blocks count as read by the op that owns the block
            for b in op.blocks:
                for v in _block_reads(b):
                    if id(v) in self.slots and id(v) not in keep:
                        last[self.slots[id(v)]] = i
        for slot, i in last.items():
            if slot >= first_slot:
                steps[i].free.append(slot)

    def compile_op(self, op: Any) -> Step | None:
        op_type = op.op_type
        if op_type == "const":
            self.set_const(op.outputs[0], op.outputs[0].val)
            return None
        builder = builder_for(op_type)
        if builder is None:
            raise UnsupportedOpError(
                f"MIL op {op_type!r} ({op_opset(op)} opset, op {op.name!r}) is not supported by "
                "parbench's Core ML reference executor (see parbench.coreml_ref.supported_ops())"
            )
        ctx = OpCtx(op, op_opset(op), self.slot_of, self.const_of, self.emulate_fp16, self.block_runner)
        run = builder(ctx)
        inputs = _flat_inputs(op)
        foldable = op_type not in _NO_FOLD and not op.blocks and all(self.const_of(v)[0] for v in inputs)
        if foldable:
            out = run([])
            outs = out if isinstance(out, tuple) else (out,)
            for v, val in zip(op.outputs, outs, strict=True):
                self.set_const(v, val)
            return None
        self._compiled_ops.add(id(op))
        out_slots = [self.new_slot(v) for v in op.outputs]
        dts = [var_dtype(v) for v in op.outputs]
        exact = is_fp16_exact(op_type) and all(var_dtype(v) != "fp32" for v in inputs if _is_float(v))
        rounds = [self.emulate_fp16 and d == "fp16" and not exact for d in dts]
        want = [TORCH_DTYPE.get(d) for d in dts]
        return Step(run, op_type, op.name, out_slots, [v.name for v in op.outputs], rounds, want)


def _is_float(v: Any) -> bool:
    return var_dtype(v) in ("fp16", "fp32", "fp64")


def _flat_inputs(op: Any) -> list[Any]:
    out = []
    for v in op.inputs.values():
        if isinstance(v, (list, tuple)):
            out.extend(v)
        elif v is not None:
            out.append(v)
    return out


def _block_reads(block: Any) -> list[Any]:
    reads = list(block.outputs)
    for op in block.operations:
        reads.extend(_flat_inputs(op))
        for b in op.blocks:
            reads.extend(_block_reads(b))
    return reads


def run_steps(steps: list[Step], env: list, hook: Hook | None) -> None:
    """The hot loop."""
    for st in steps:
        out = st.run(env)
        if len(st.out_slots) == 1:
            out = _finish(out, st.rounds[0], st.want[0])
            env[st.out_slots[0]] = out
            if hook is not None:
                hook(st.out_names[0], st.op_type, out)
        else:
            for i, s in enumerate(st.out_slots):
                v = _finish(out[i], st.rounds[i], st.want[i])
                env[s] = v
                if hook is not None:
                    hook(st.out_names[i], st.op_type, v)
        for s in st.free:
            env[s] = None


def _finish(v: Any, round16: bool, want: torch.dtype | None) -> Any:
    if not isinstance(v, torch.Tensor):
        return v
    if want is not None and v.dtype != want:
        v = v.to(want)
    if round16:
        v = v.to(torch.float16).to(torch.float32)
    return v


def run_block(block: Block, env: list, inputs: list[Any], hook: Hook | None) -> list[Any]:
    for s, v in zip(block.input_slots, inputs, strict=True):
        env[s] = v
    run_steps(block.steps, env, hook)
    return [g(env) for g in block.outputs]


class CompiledFunction:
    """One MIL function (usually ``main``) ready to run."""

    def __init__(self, function: Any, emulate_fp16: bool = True):
        self.emulate_fp16 = emulate_fp16
        comp = _Compiler(emulate_fp16)
        self.input_names = list(function.inputs)
        self.input_dtypes = {n: var_dtype(v) for n, v in function.inputs.items()}
        self.input_shapes = {n: tuple(v.shape) for n, v in function.inputs.items()}
        for n in function.inputs:
            if self.input_dtypes[n] == "state":
                raise UnsupportedOpError(
                    f"input {n!r} is a Core ML state: stateful models are not supported by the "
                    "reference executor"
                )
        input_vars = [function.inputs[n] for n in self.input_names]
        self.block = comp.compile_block(function, input_vars)
        self.output_names = [v.name for v in function.outputs]
        self.output_dtypes = {v.name: var_dtype(v) for v in function.outputs}
        self.n_slots = comp.n_slots
        self.n_ops = len(self.block.steps)
        self._compiler = comp

    def run(self, feeds: Mapping[str, torch.Tensor], hook: Hook | None = None) -> dict[str, Any]:
        env: list = [None] * self.n_slots
        ins = []
        for n in self.input_names:
            t = feeds[n]
            if t.is_floating_point() and t.dtype != torch.float32:
                t = t.float()  # fp16 values are held in float32 tensors
            if self.emulate_fp16 and self.input_dtypes[n] == "fp16":
                t = t.to(torch.float16).to(torch.float32)
            ins.append(t)
            if hook is not None:
                hook(n, "input", t)
        with torch.inference_mode():
            outs = run_block(self.block, env, ins, hook)
        return dict(zip(self.output_names, outs, strict=True))


def tensor_to_numpy(v: Any, mil_dtype: str) -> Any:
    """An output value as coremltools would hand it back (fp16 outputs as float16 arrays)."""
    if not isinstance(v, torch.Tensor):
        return v
    arr = v.detach().cpu().numpy()
    if mil_dtype == "fp16":
        return arr.astype(np.float16)
    return arr
