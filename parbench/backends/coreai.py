"""Core AI forms: ``.aimodel`` assets converted with coreai-torch, run on Core AI's own runtime.

Conversion: ``torch.export`` (decomposed with ``coreai_torch.get_decomp_table()``) and
``coreai_torch.TorchConverter`` in its default debug mode, which keeps the torch-to-Core AI op
mapping that :mod:`parbench.diagnose.coreai_intermediates` needs.  Core AI has no compute-precision switch:
a program computes in the dtypes of the exported graph.  So there are two forms:

* ``coreai_fp32``: the eager model as exported (float32 weights, activations and I/O);
* ``coreai_fp16``: the exported program after coreai-opt's ``cast_fp32_to_fp16`` (Apple's pass:
  weights, float inputs and ops in float16, ops whose constants would overflow float16 kept in
  float32).  By default batch norm is first folded into the convolution before it, in float32
  (``fold_batchnorm``): the cast pass would otherwise round the batch-norm parameters to float16
  before the Core AI compiler folds them.  Float inputs and outputs are float16 in the asset; the
  session feeds the float32 fixtures cast to float16 and returns float32, as an app's caller would.

Sizes: one asset for every size when the graph allows it: a graph with dynamic height and width
(``torch.export.Dim``), checked on the runtime at the smallest and largest size; if that graph
converts but does not run right there, the same program specialized to one static function per
size (``AIProgram.set_static_shape_config``: functions ``main_s<size>``); else one asset per size
(NeedsPerSize).  The decision and its reason are recorded in the artifact meta.

Execution: ``AIModelAsset.executable()``.  Off macOS 27 it lowers the asset to Core AI's ODIX
form in a temporary folder and loads it in the runtime bundled with coreai-core; on macOS 27 it
loads the asset through the OS framework.  Inference is async; every Core AI session drives it
from one event loop thread, so ``run`` is an ordinary blocking call.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
import shutil
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch
from torch import nn

from parbench._util.console import error_text, quiet
from parbench._util.versions import version_of
from parbench.backends.base import Artifact, Availability, ExportRequest, Family
from parbench.backends.export_support import (
    all_sizes,
    artifact_path,
    check_sizes,
    existing_path,
    export_with_size_fallback,
    input_names,
    output_names,
    sized_dims,
    torch_dynamic_shapes,
)
from parbench.errors import BackendUnavailable, ConfigError, ExportError, NeedsPerSize, SessionError
from parbench.zoo.outputs import TorchOutputFlattening

T = TypeVar("T")
EXECUTOR = "coreai-runtime"
ENTRYPOINT = "main"
Shapes = Literal["dynamic", "enumerated"]
SHAPES: tuple[Shapes, ...] = ("dynamic", "enumerated")
PINS = {"coreai-torch": "0.4.3", "coreai-core": "1.0.0b3", "coreai-opt": "0.3.0"}
PACKAGES = {"converter": "coreai-torch", "runtime": "coreai-core", "fp16_pass": "coreai-opt"}
WHEELS = (
    "coreai-core 1.0.0b3 has wheels for CPython 3.11 on Linux x86_64 (glibc 2.34+) and macOS 26+ arm64 only"
)
META_KEY = "parbench"  # the asset's custom metadata entry: how parbench prepared the program

_HINT = (
    "coreai-torch converts a torch.export program: make the model exportable "
    "(torch.export.export(model, example)); an op the converter lacks can be given a lowering "
    "with TorchConverter.register_torch_lowering or rewritten in supported torch ops."
)


# ---------------------------------------------------------------------------------------------
# the packages


def _coreai_torch() -> Any:
    with quiet():  # it warns about torch versions newer than the ones it was validated with
        import coreai_torch

    return coreai_torch


def _cast_fp16() -> Any:
    from coreai_opt.casting import cast_fp32_to_fp16

    return cast_fp32_to_fp16


def _asset_class() -> Any:
    with quiet():
        from coreai.authoring import AIModelAsset

    return AIModelAsset


def _runtime() -> Any:
    with quiet():
        import coreai.runtime

    return coreai.runtime


def runtime_backing() -> str:
    """Which Core AI runs the assets: the OS framework (macOS 27+) or the one in coreai-core."""
    return "os-framework" if getattr(_runtime(), "_use_os_coreai", False) else "bundled"


def versions(precision: str = "float32") -> dict[str, str | None]:
    out = {role: version_of(dist) for role, dist in PACKAGES.items()}
    if precision != "float16":
        out.pop("fp16_pass")
    return out


def install_hint(*dists: str) -> str:
    return "pip install " + " ".join(f"{d}=={PINS[d]}" for d in dists) + " (or parbench[coreai])"


# ---------------------------------------------------------------------------------------------
# preparing the program: batch norm folded in float32


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_BN_OPS = {"batch_norm.default", "_native_batch_norm_legit_no_training.default"}


def _op_name(node: torch.fx.Node) -> str:
    return getattr(node.target, "_opname", "") + "." + getattr(node.target, "_overloadname", "")


def _innermost_module(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""


def conv_bn_pairs(model: nn.Module, example_inputs: Sequence[torch.Tensor]) -> list[tuple[str, str]]:
    """(convolution module, batch-norm module) paths whose batch norm can be folded: the batch
    norm module is called once, directly on the output of a convolution module that is called
    once and whose output feeds nothing else.  Read from ``torch.export``'s graph of ``model``."""
    with quiet(), torch.no_grad():
        ep = torch.export.export(model, tuple(example_inputs))
    sig = ep.graph_signature
    names = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    uses: dict[str, int] = {}
    for node in ep.graph.nodes:
        for a in node.all_input_nodes:
            if a.op == "placeholder":
                uses[a.name] = uses.get(a.name, 0) + 1
    modules = dict(model.named_modules())
    pairs = []
    for bn in ep.graph.nodes:
        if bn.op != "call_function" or _op_name(bn) not in _BN_OPS:
            continue
        conv, weight, mean = bn.args[0], bn.args[1] if len(bn.args) > 1 else None, bn.args[3]
        if not isinstance(conv, torch.fx.Node) or conv.op != "call_function" or len(conv.users) != 1:
            continue
        conv_weight = conv.args[1] if len(conv.args) > 1 else None
        if not all(isinstance(p, torch.fx.Node) and p.name in names for p in (conv_weight, mean)):
            continue
        conv_path, bn_path = names[conv_weight.name].rpartition(".")[0], names[mean.name].rpartition(".")[0]
        if not (
            isinstance(modules.get(conv_path), _CONV)
            and isinstance(modules.get(bn_path), _BN)
            and _innermost_module(conv) == conv_path
            and _innermost_module(bn) == bn_path
            and uses.get(conv_weight.name) == 1
            and uses.get(mean.name) == 1
            and (weight is None or (isinstance(weight, torch.fx.Node) and uses.get(weight.name) == 1))
        ):
            continue
        pairs.append((conv_path, bn_path))
    return pairs


def fold_conv_batchnorm(
    module: nn.Module, example_inputs: Sequence[torch.Tensor]
) -> tuple[nn.Module, list[tuple[str, str]]]:
    """A copy of ``module`` with every foldable batch norm (:func:`conv_bn_pairs`) folded into its
    convolution in float32 and replaced by ``nn.Identity``; the pairs folded."""
    wrapped = TorchOutputFlattening(copy.deepcopy(module)).eval()
    pairs = conv_bn_pairs(wrapped, example_inputs)
    modules = dict(wrapped.named_modules())
    with torch.no_grad():
        for conv_path, bn_path in pairs:
            conv, bn = modules[conv_path], modules[bn_path]
            transposed = isinstance(conv, nn.modules.conv._ConvTransposeNd)
            weight, bias = torch.nn.utils.fusion.fuse_conv_bn_weights(
                conv.weight,
                conv.bias,
                bn.running_mean,
                bn.running_var,
                bn.eps,
                bn.weight,
                bn.bias,
                transpose=transposed,
            )
            conv.weight, conv.bias = weight, bias
            parent, _, leaf = bn_path.rpartition(".")
            setattr(modules[parent] if parent else wrapped, leaf, nn.Identity())
    strip = len("inner.")
    return wrapped.inner, [(c[strip:], b[strip:]) for c, b in pairs]


# ---------------------------------------------------------------------------------------------
# export


def exported_program(
    module: nn.Module,
    example_inputs: Sequence[torch.Tensor],
    dynamic_shapes: Any = None,
    precision: str = "float32",
) -> Any:
    """The decomposed ``torch.export`` program the Core AI forms convert, for ``module`` wrapped
    in ``TorchOutputFlattening`` (flat tuple outputs); float16 casting applied when asked."""
    ct = _coreai_torch()
    model = TorchOutputFlattening(module).eval()
    with quiet(), torch.no_grad():
        ep = torch.export.export(model, tuple(example_inputs), dynamic_shapes=dynamic_shapes)
        ep = ep.run_decompositions(ct.get_decomp_table())
        if precision == "float16":
            ep = _cast_fp16()(ep)
    return ep


def convert(ep: Any, names_in: Sequence[str], names_out: Sequence[str]) -> Any:
    """An exported program -> a Core AI ``AIProgram`` with one function, ``main``."""
    ct = _coreai_torch()
    with quiet():
        converter = ct.TorchConverter().add_exported_program(
            ep, input_names=list(names_in), output_names=list(names_out), entrypoint_name=ENTRYPOINT
        )
        return converter.to_coreai()


def function_name(size: int) -> str:
    return f"{ENTRYPOINT}_s{int(size)}"


def specialize(program: Any, req: ExportRequest, names_in: Sequence[str], sizes: Sequence[int]) -> Any:
    """A copy of a dynamic-size program as one static function per size (``main_s<size>``)."""
    program = copy.deepcopy(program)
    config = {}
    for size in sizes:
        shapes = {
            n: tuple(int(size) if i in dims else d for i, d in enumerate(x.shape))
            for n, x, dims in zip(names_in, req.example_inputs, sized_dims(req), strict=True)
        }
        config[function_name(size)[len(ENTRYPOINT) + 1 :]] = shapes
    with quiet():
        program.set_static_shape_config(ENTRYPOINT, config)
    return program


def _save(program: Any, path: Path, prepared: Mapping[str, Any]) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet():
        program.save_asset(Path(path))
        _asset_class().load(path).update_metadata(lambda m: m.set_custom(META_KEY, dict(prepared)))


def preparation(path: Path) -> dict[str, Any]:
    """How parbench prepared an asset's program (precision, batch norm folded), from its metadata;
    empty for an asset parbench did not write."""
    try:
        # creator_defined_metadata in coreai-core 1.0.0b3 (its type stubs say custom_metadata)
        custom = _asset_class().load(Path(path)).metadata.creator_defined_metadata
    except Exception:
        return {}
    value = custom.get(META_KEY)
    return dict(value) if isinstance(value, Mapping) else {}


# ---------------------------------------------------------------------------------------------
# the runtime: one event loop thread for every Core AI session


class _LoopThread:
    _lock = threading.Lock()
    _loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def run(cls, awaitable: Awaitable[T], timeout: float | None = None) -> T:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="parbench-coreai", daemon=True).start()
                cls._loop = loop
            loop = cls._loop

        async def wrap() -> T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrap(), loop).result(timeout)


def run_async(awaitable: Awaitable[T], timeout: float | None = None) -> T:
    """Await ``awaitable`` on the Core AI event loop thread (usable whether or not the caller
    is itself inside an event loop)."""
    return _LoopThread.run(awaitable, timeout)


def _release(cm: Any) -> None:
    with contextlib.suppress(Exception):
        _LoopThread.run(cm.__aexit__(None, None, None), timeout=60)


def _shape_of(text: str) -> list[int | None]:
    """``'NDArray (Float32, 1 × 3 × ? × ?)'`` -> ``[1, 3, None, None]``."""
    m = re.search(r"\(\w+,\s*(.*)\)\s*$", text)
    if not m:
        return []
    return [None if d.strip() == "?" else int(d) for d in m.group(1).split("×")]


def _dtype_of(text: str) -> str:
    m = re.search(r"\((\w+),", text)
    return m.group(1).lower() if m else ""


Signatures = dict[str, dict[str, tuple[list[int | None], str]]]


def signatures(path: Path) -> Signatures:
    """Per function of an asset, its inputs: ``{function: {input: (dims, dtype)}}``, with
    ``None`` for a dynamic dim, read from the asset's program (nothing is compiled)."""
    summary = _asset_class().load(Path(path)).summary(include_statistics=False)
    if summary is None:
        raise SessionError(f"{path} has no source program (main.mlirb); re-export it")
    return {
        f: {n: (_shape_of(t), _dtype_of(t)) for n, t in summary.function_inputs(f)}
        for f in summary.function_names
    }


def pick_function(
    sigs: Mapping[str, Mapping[str, tuple[list[int | None], str]]], shapes: Mapping[str, tuple[int, ...]]
) -> str:
    """The function whose inputs take these shapes (``None`` dims take any length)."""
    for name, ins in sigs.items():
        if set(ins) == set(shapes) and all(
            len(dims) == len(shapes[n])
            and all(d is None or d == s for d, s in zip(dims, shapes[n], strict=True))
            for n, (dims, _) in ins.items()
        ):
            return name
    takes = {f: {n: dims for n, (dims, _) in ins.items()} for f, ins in sigs.items()}
    raise SessionError(
        f"no function of the asset takes input shapes {dict(shapes)} (it has {takes}); "
        "re-export the artifact with this size"
    )


class CoreAISession:
    """One loaded ``.aimodel``: ``run({name: array}) -> {name: float32 array}``."""

    executor = EXECUTOR

    def __init__(self, path: Path, input_names: Sequence[str], output_names: Sequence[str]):
        self.path = Path(path)
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.backing = runtime_backing()
        self._ndarray = _runtime().NDArray
        self.signatures = signatures(self.path)
        unknown = [n for n in self.input_names if any(n not in ins for ins in self.signatures.values())]
        if unknown:
            raise SessionError(f"{self.path.name} has no inputs {unknown}; re-export the artifact")
        asset = _asset_class().load(self.path)
        t0 = time.perf_counter()
        self._cm = asset.executable()
        try:
            with quiet():  # ODIX lowering and the runtime's load messages
                self.model = _LoopThread.run(self._cm.__aenter__())
        except Exception as exc:
            raise SessionError(
                f"the Core AI runtime could not load {self.path.name}: {error_text(exc)}"
            ) from exc
        self.load_s = time.perf_counter() - t0
        self._finalizer = weakref.finalize(self, _release, self._cm)
        self._functions: dict[str, Any] = {}

    def close(self) -> None:
        self._finalizer()

    def function(self, name: str) -> Any:
        """A loaded inference function (each holds its own weights and buffers)."""
        if name not in self._functions:
            with quiet():
                self._functions[name] = self.model.load_function(name)
        return self._functions[name]

    def run(self, inputs: Mapping[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise SessionError(f"inputs {missing} are missing; the model takes {self.input_names}")
        name = pick_function(self.signatures, {n: tuple(np.shape(inputs[n])) for n in self.input_names})
        sig = self.signatures[name]
        feeds = {
            n: self._ndarray(np.ascontiguousarray(inputs[n], dtype=np.dtype(sig[n][1])))
            for n in self.input_names
        }
        out = _LoopThread.run(self.function(name)(feeds))
        absent = [n for n in self.output_names if n not in out]
        if absent:
            raise SessionError(f"the .aimodel returned {sorted(out)}, missing {absent}; re-export it")
        # copies: the runtime's buffers are only valid while the model is loaded
        return OrderedDict((n, np.array(out[n].numpy(), dtype=np.float32)) for n in self.output_names)


# ---------------------------------------------------------------------------------------------
# the forms


class _CoreAIBase:
    name: str
    family: Family
    precision: Literal["float32", "float16"]
    shape_mode: Literal["any", "per_size"] = "any"
    suffix = ".aimodel"
    fold_batchnorm = False

    def __init__(self, shapes: Shapes = "dynamic"):
        if shapes not in SHAPES:
            raise ConfigError(f"shapes must be one of {SHAPES}, got {shapes!r}")
        self.shapes = shapes  # first choice for a one-for-all-sizes asset

    def available(self) -> Availability:
        try:
            _coreai_torch()
        except Exception as exc:
            return Availability(
                False,
                False,
                f"coreai-torch is not importable ({error_text(exc, 1)}); "
                f"{install_hint('coreai-torch', 'coreai-core')}; {WHEELS}",
                "none",
            )
        if self.precision == "float16":
            try:
                _cast_fp16()
            except Exception as exc:
                return Availability(
                    False,
                    False,
                    f"coreai-opt is not importable ({error_text(exc, 1)}); the fp16 form casts with "
                    f"coreai_opt.casting.cast_fp32_to_fp16: {install_hint('coreai-opt')}",
                    "none",
                )
        try:
            backing = runtime_backing()
        except Exception as exc:
            return Availability(
                True, False, f"the Core AI runtime does not load: {error_text(exc, 2)}", EXECUTOR
            )
        where = "the OS framework" if backing == "os-framework" else "the runtime bundled with coreai-core"
        return Availability(True, True, f"Core AI runtime: {where} {version_of('coreai-core')}", EXECUTOR)

    def options(self) -> dict[str, Any]:
        out = {
            "precision": self.precision,
            "shapes": self.shapes,
            "converter_mode": "debug",
            "torch": torch.__version__,
            **versions(self.precision),
        }
        if self.precision == "float16":
            out["fold_batchnorm"] = self.fold_batchnorm
        return out

    # -- export -----------------------------------------------------------------------------
    def prepare(
        self, module: nn.Module, example_inputs: Sequence[torch.Tensor]
    ) -> tuple[nn.Module, dict[str, Any]]:
        """The module this form exports, and what was done to it (recorded in the asset and meta)."""
        prepared: dict[str, Any] = {"precision": self.precision}
        if not self.fold_batchnorm:
            return module, prepared
        try:
            folded, pairs = fold_conv_batchnorm(module, example_inputs)
        except Exception as exc:  # a graph torch.export cannot take: the export itself will say
            prepared["fold_batchnorm"] = {"folded": 0, "error": error_text(exc, 1)}
            return module, prepared
        prepared["fold_batchnorm"] = {"folded": len(pairs)}
        return folded, prepared

    def _check(self, req: ExportRequest, path: Path, names_in: list[str], names_out: list[str]) -> list[int]:
        """Run a one-for-all asset at the extreme sizes (NeedsPerSize when it fails there)."""
        session = CoreAISession(path, names_in, names_out)
        try:

            def run(xs: tuple[torch.Tensor, ...]) -> list[np.ndarray]:
                feeds = {n: x.numpy() for n, x in zip(names_in, xs, strict=True)}
                return list(session.run(feeds).values())

            return check_sizes(req, self.name, run)
        finally:
            session.close()

    def export(self, req: ExportRequest, out: Path) -> Artifact:
        avail = self.available()
        if not avail.can_export:
            raise BackendUnavailable(avail.reason)
        path = artifact_path(out, self.suffix)
        names_in, names_out = input_names(req), output_names(req)
        module, prepared = self.prepare(req.module, req.example_inputs)
        meta: dict[str, Any] = {
            "precision": self.precision,
            "converter_mode": "debug",
            **versions(self.precision),
            **{k: v for k, v in prepared.items() if k != "precision"},
            "notes": [],
        }
        t0 = time.perf_counter()

        def attempt(dynamic: bool) -> str:
            shapes = torch_dynamic_shapes(req) if dynamic else None
            ep = exported_program(module, req.example_inputs, shapes, self.precision)
            program = convert(ep, names_in, names_out)
            if not dynamic:
                _save(program, path, prepared)
                return "static"
            return self._one_for_all(req, program, path, names_in, names_out, meta, prepared)

        try:
            shapes, dynamic = export_with_size_fallback(req, self.name, attempt, _HINT)
        except ExportError:
            shutil.rmtree(path, ignore_errors=True)  # a fixed-size probe may have saved one
            raise
        meta["shapes"] = shapes
        meta["dynamic_shapes"] = dynamic
        meta["functions"] = self._describe(path, meta)
        meta["convert_s"] = round(time.perf_counter() - t0, 3)
        sizes: list[int] | None
        if shapes == "dynamic":
            meta["size_range"] = [all_sizes(req)[0], all_sizes(req)[-1]]
            sizes = None
        elif shapes == "enumerated":
            sizes = all_sizes(req)
        else:
            sizes = [int(req.export_size)]
        return Artifact(self.name, path, "aimodel", sizes, meta, input_names=names_in, output_names=names_out)

    def _one_for_all(
        self,
        req: ExportRequest,
        program: Any,
        path: Path,
        names_in: list[str],
        names_out: list[str],
        meta: dict[str, Any],
        prepared: Mapping[str, Any],
    ) -> str:
        """Save the dynamic program (or its enumerated specialization) that runs right at the
        extreme sizes; NeedsPerSize when neither does."""
        order = [self.shapes] + [s for s in SHAPES if s != self.shapes]
        reasons = []
        for shapes in order:
            try:
                candidate = (
                    program if shapes == "dynamic" else specialize(program, req, names_in, all_sizes(req))
                )
                _save(candidate, path, prepared)
                meta["sizes_checked"] = self._check(req, path, names_in, names_out)
            except Exception as exc:
                shutil.rmtree(path, ignore_errors=True)
                why = str(exc) if isinstance(exc, ExportError | SessionError) else error_text(exc)
                reasons.append(f"{shapes}: {why}")
                continue
            if reasons:
                meta["notes"].append(f"{reasons[0]}; saved as {shapes} shapes instead")
            return shapes
        raise NeedsPerSize(
            f"{self.name}: no one-for-all-sizes asset runs at sizes {all_sizes(req)}: " + " | ".join(reasons)
        )

    @staticmethod
    def _describe(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
        """Function signatures and the storage/compute types the asset's program uses."""
        try:
            summary = _asset_class().load(path).summary(include_statistics=True)
        except Exception as exc:  # the asset is fine; only its description failed
            meta["notes"].append(f"asset summary failed: {error_text(exc, 1)}")
            return {}
        meta["compute_types"] = sorted(summary.compute_types)
        meta["storage_types"] = dict(summary.storage_types)  # scalar type -> constant elements of that type
        return {
            f: {
                "inputs": [list(io) for io in summary.function_inputs(f)],
                "outputs": [list(io) for io in summary.function_outputs(f)],
            }
            for f in summary.function_names
        }

    def load(self, artifact: Artifact) -> CoreAISession:
        path = existing_path(artifact, folder=True)
        avail = self.available()
        if not avail.can_run:
            raise BackendUnavailable(avail.reason)
        return CoreAISession(path, artifact.input_names, artifact.output_names)


class CoreAIFp32Backend(_CoreAIBase):
    name = "coreai_fp32"
    family: Family = "fp32"
    precision: Literal["float32", "float16"] = "float32"


class CoreAIFp16Backend(_CoreAIBase):
    name = "coreai_fp16"
    family: Family = "fp16"
    precision: Literal["float32", "float16"] = "float16"

    def __init__(self, shapes: Shapes = "dynamic", fold_batchnorm: bool = True):
        super().__init__(shapes)
        if not isinstance(fold_batchnorm, bool):
            raise ConfigError(f"fold_batchnorm must be true or false, got {fold_batchnorm!r}")
        # fold batch norm into its convolution in float32 before the float16 cast
        self.fold_batchnorm = fold_batchnorm
