"""Intermediate values of each deployment form, keyed by the layer identity of ``layers.py``.

Each form is read with its own machinery:

* ``torchscript``: the saved ``.pt``'s inlined graph gets the layers' values as extra outputs and runs
  as a TorchScript function on the loaded module;
* ``lite``: the same tapped graph, compiled into the loaded ``.ptl`` as a second method, saved for the
  lite interpreter and run by it;
* ``quantized_int8``: the FX-quantized model is rebuilt from the export request exactly as the backend
  builds it, and torch.ao's Numeric Suite (``add_loggers``/``extract_logger_info``) pairs its int8
  subgraphs with the float model's and logs both; values are dequantized;
* ``onnx``: the ``.onnx`` gets the layers' values as graph outputs and runs in ONNX Runtime;
* ``executorch_fp32`` / ``executorch_int8``: the program is rebuilt from the export request, and
  ExecuTorch's intermediate-output tap (``executorch.devtools.intermediate_output_tap``) adds the
  layers' values as program outputs before lowering, so they come out of the XNNPACK delegate.  In
  int8 programs the tap is put on the quantize node of a value (the int8 tensor the delegate really
  holds), dequantized here with the node's scale and zero point; a float value inside a fused int8
  pattern (a convolution's output before its ReLU) exists in no kernel and is skipped.  ETDump is
  not used: through the XNNPACK delegate it records per-kernel timings and the delegate's inputs and
  outputs, no intermediate values;
* ``coreml_fp16`` / ``coreml_fp32``: the package runs on the reference executor
  (``parbench.coreml_ref``) with every value captured, matched to layers by name as
  ``parbench.diagnose.bisect`` does.

Forms rebuilt from the request are checked against the shipped artifact when one is given: the
rebuilt program's final outputs must be the artifact's (the difference is reported).
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import dataclasses
import tempfile
import time
import types
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils import _pytree as pytree

from parbench._util.console import quiet
from parbench.backends import get_backend
from parbench.backends.base import Artifact, Backend, ExportRequest
from parbench.backends.export_support import wants_dynamic
from parbench.diagnose.layers import (
    EagerRecord,
    LayerMap,
    _is_dequant,
    _is_quant,
    attach_fused,
    fx_nodes,
    onnx_nodes,
    resolve,
    strip_prefix,
    torchscript_nodes,
)
from parbench.errors import ParbenchError
from parbench.zoo.outputs import TorchOutputFlattening, flatten_outputs

WRAPPER = "inner"  # TorchOutputFlattening's attribute: forms converted from the wrapper carry it

SUPPORTED = (
    "torchscript",
    "lite",
    "quantized_int8",
    "onnx",
    "executorch_fp32",
    "executorch_int8",
    "coreml_fp16",
    "coreml_fp32",
)
NEEDS_REQUEST = ("quantized_int8", "executorch_fp32", "executorch_int8")


class LocaliseError(ParbenchError, RuntimeError):
    """The form's intermediates could not be obtained; the message says why and what to do."""


def check_supported(variant: str) -> None:
    """LocaliseError naming the forms that can be localised, when ``variant`` is not one of them."""
    if variant not in SUPPORTED:
        raise LocaliseError(
            f"localise does not read intermediates of {variant!r}; supported forms: {', '.join(SUPPORTED)}"
            + (
                " (localise coreml_fp16: it runs the same program with tensor inputs)"
                if variant.startswith("coreml_image")
                else ""
            )
        )


@dataclasses.dataclass
class FormRun:
    variant: str
    map: LayerMap
    values: dict[str, np.ndarray]  # form value key -> float32 array
    names: dict[str, str]  # form value key -> the form's own name for it (tensor / node / MIL name)
    outputs: list[np.ndarray]  # final outputs of the run that produced the values
    graph_id: str  # Model Explorer graph id for node data
    tool: str  # how the values were obtained
    notes: list[str] = dataclasses.field(default_factory=list)
    artifact_check: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)


def _tensors(inputs: Mapping[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values())


def _np(t: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        if t.is_quantized:
            t = t.dequantize()
        return t.detach().float().cpu().numpy()
    return np.asarray(t, dtype=np.float32)


def _flat(out: Any) -> list[np.ndarray]:
    return [_np(t) for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _compare_outputs(rebuilt: Sequence[np.ndarray], shipped: Sequence[np.ndarray]) -> dict[str, Any]:
    if len(rebuilt) != len(shipped):
        return {"ok": False, "problem": f"{len(rebuilt)} outputs rebuilt, {len(shipped)} shipped"}
    diffs = []
    for a, b in zip(rebuilt, shipped, strict=True):
        if a.shape != b.shape:
            return {"ok": False, "problem": f"shapes {a.shape} rebuilt vs {b.shape} shipped"}
        diffs.append(float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0)))
    scale = max(float(np.max(np.abs(b), initial=0.0)) for b in shipped) or 1.0
    worst = max(diffs, default=0.0)
    return {"ok": worst <= 1e-4 * scale, "max_abs": worst, "scale": scale}


# -- TorchScript and lite -------------------------------------------------------------------------


def _tapped_function(graph: torch.Graph, keys: Sequence[str]) -> tuple[Any, list[str], int]:
    by_name = {}
    for node in graph.nodes():
        for o in node.outputs():
            by_name[o.debugName()] = o
    for v in graph.inputs():
        by_name[v.debugName()] = v
    wanted = [k for k in dict.fromkeys(keys) if k in by_name]
    n_out = len(list(graph.outputs()))
    none = graph.insertConstant(None)
    none.node().moveBefore(next(iter(graph.nodes())))
    for k in wanted:
        v = by_name[k]
        if v.node().kind() == "prim::Param":
            graph.registerOutput(v)
            continue
        # a copy taken where the value is made: an in-place op later in the graph (an activation
        # with inplace=True) would otherwise change what is read at the end
        copy_node = graph.create("aten::clone", [v, none], 1)
        copy_node.insertAfter(v.node())
        copy_node.output().setType(v.type())
        graph.registerOutput(copy_node.output())
    graph.makeMultiOutputIntoTuple()
    fn = torch._C._create_function_from_graph("parbench_taps", graph)
    return fn, wanted, n_out


def run_torchscript(
    eager: EagerRecord,
    path: Path,
    inputs: Mapping[str, np.ndarray],
    *,
    lite: bool = False,
    complete: bool = True,
) -> FormRun:
    t0 = time.perf_counter()
    module = torch.jit.load(str(path), map_location="cpu").eval()
    root = module._c._type().name()
    prefix = WRAPPER if root == "TorchOutputFlattening" else ""
    nodes, returned, graph = torchscript_nodes(module, prefix)
    # a plain trace keeps a node for every module call it recorded; optimize_for_mobile folds some away
    lmap = resolve(
        eager, nodes, returned, source="TorchScript module hierarchy (inlined graph)", complete=complete
    )
    keys = list(lmap.where.values())
    fn, wanted, n_out = _tapped_function(graph, keys)
    xs = _tensors(inputs)
    notes: list[str] = []
    tool = "extra outputs on the .pt's inlined graph, run by TorchScript"
    t1 = time.perf_counter()
    with torch.no_grad():
        if lite:
            got, lite_note = _run_lite(module, fn, xs)
            if lite_note:
                notes.append(lite_note)
                got = fn(module._c, *xs)
            else:
                tool = "extra outputs on the .ptl's graph, compiled as a second method and run by the lite interpreter"
        else:
            got = fn(module._c, *xs)
    got = list(got)
    # the original return value first (one value: a tensor or a tuple of them), then the taps
    outputs = _flat(got[:n_out])
    values = {k: _np(v) for k, v in zip(wanted, got[n_out:], strict=True)}
    return FormRun(
        variant="lite" if lite else "torchscript",
        map=lmap,
        values=values,
        names={k: k for k in values},
        outputs=outputs,
        graph_id="lite" if lite else "torchscript",
        tool=tool,
        notes=notes,
        seconds={"prepare": t1 - t0, "run": time.perf_counter() - t1},
    )


def _run_lite(module: torch.jit.ScriptModule, fn: Any, xs: tuple[torch.Tensor, ...]) -> tuple[Any, str]:
    from torch.jit.mobile import _load_for_lite_interpreter

    try:
        module._c._define(module._concrete_type, fn.code, _serialized_names)
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "tapped.ptl"
            with _quiet_deprecation():
                module._save_for_lite_interpreter(str(p))
            lite = _load_for_lite_interpreter(str(p), map_location="cpu")
            return lite.run_method("parbench_taps", *xs), ""
    except Exception as exc:
        return None, (
            f"the tapped graph could not be compiled for the lite interpreter ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}); its values come from TorchScript running the same graph"
        )


def _aten_fallback(name: str) -> Any:
    return getattr(torch, name) if hasattr(torch, name) else getattr(torch.ops.aten, name)


_TORCH_AS_SERIALIZED = types.ModuleType("torch")
_TORCH_AS_SERIALIZED.__getattr__ = _aten_fallback  # type: ignore[attr-defined]


def _serialized_names(name: str) -> Any:
    """Resolve names in TorchScript's printed code as its loader does: ``torch.size`` and other aten
    ops with no Python ``torch.*`` counterpart are aten ops."""
    if name == "torch":
        return _TORCH_AS_SERIALIZED
    if name == "ops":
        return torch.ops
    return getattr(builtins, name, None)


@contextlib.contextmanager
def _quiet_deprecation() -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


# -- ONNX -----------------------------------------------------------------------------------------


def run_onnx(
    eager: EagerRecord, path: Path, inputs: Mapping[str, np.ndarray], threads: int | None = None
) -> FormRun:
    import onnx
    import onnxruntime as ort

    t0 = time.perf_counter()
    model = onnx.load(str(path))
    first = model.graph.node[0] if model.graph.node else None
    dynamo = first is not None and any(
        p.key == "pkg.torch.onnx.name_scopes" for p in model.graph.node[0].metadata_props
    )
    nodes, returned = onnx_nodes(model, WRAPPER)
    source = (
        "ONNX node metadata (pkg.torch.onnx.name_scopes)"
        if dynamo
        else "ONNX node names (TorchScript-based exporter scopes)"
    )
    lmap = resolve(eager, nodes, returned, source=source)
    keys = [k for k in dict.fromkeys(lmap.where.values())]
    graph_outputs = [o.name for o in model.graph.output]
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    except Exception:  # shape inference is only used for the outputs' element types
        types = {}
    for k in keys:
        if k not in graph_outputs:
            model.graph.output.append(
                onnx.helper.make_tensor_value_info(k, types.get(k, onnx.TensorProto.FLOAT), None)
            )
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or torch.get_num_threads())
    so.log_severity_level = 4
    sess = ort.InferenceSession(
        model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"]
    )
    feeds = {i.name: np.ascontiguousarray(inputs[i.name]) for i in sess.get_inputs()}
    t1 = time.perf_counter()
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(names, feeds), strict=True))
    return FormRun(
        variant="onnx",
        map=lmap,
        values={k: np.asarray(got[k], dtype=np.float32) for k in keys},
        names={k: k for k in keys},
        outputs=[np.asarray(got[n], dtype=np.float32) for n in graph_outputs],
        graph_id=model.graph.name or "main_graph",
        tool="the layers' values added as ONNX graph outputs, run by ONNX Runtime (CPU)",
        seconds={"prepare": t1 - t0, "run": time.perf_counter() - t1},
    )


# -- ExecuTorch -----------------------------------------------------------------------------------


def run_executorch(
    eager: EagerRecord,
    req: ExportRequest,
    variant: str,
    inputs: Mapping[str, np.ndarray],
    backend: Backend,
    artifact: Artifact | None = None,
    max_taps: int | None = None,
) -> FormRun:
    from executorch.devtools.intermediate_output_tap import (
        FULL_TENSOR,
        strip_taps_,
        tap_intermediate_outputs_,
    )

    from parbench.backends.executorch import lower_to_xnnpack

    t0 = time.perf_counter()
    meta: dict[str, Any] = {}
    # The program export() lowers, rebuilt: torch.export (+ PT2E quantization), before XNNPACK.  With
    # the same dynamic height and width as the artifact, even at the example size: a static rebuild
    # lowers faster but is another program (SSDLite int8: outputs up to 0.93 from the shipped .pte).
    ep = backend.exported_program(req, wants_dynamic(req), meta)
    nodes, returned, names = fx_nodes(ep.graph, WRAPPER)
    lmap = resolve(eager, nodes, returned, source="nn_module_stack of the exported program's nodes")
    by_name = {n.name: n for n in ep.graph.nodes}
    notes: list[str] = []
    tap_of: dict[str, str] = {}  # value key -> FX node to tap
    in_pattern: list[str] = []
    qparams: dict[str, tuple[float, int]] = {}
    for path, key in list(lmap.where.items()):
        node = by_name.get(names.get(key, key))
        if node is None:
            lmap.where.pop(path)
            lmap.skipped[path] = "its value has no node in the exported program"
            continue
        if _is_quant(node):
            qparams[key] = (float(node.args[1]), int(node.args[2]))
        elif _inside_int8_pattern(node):
            lmap.where.pop(path)
            lmap.skipped[path] = "a float value inside a fused int8 pattern: no kernel materializes it"
            in_pattern.append(path)
            continue
        tap_of[key] = node.name
    # a value the program returns (through identity ops) is read from its outputs: XNNPACK cannot
    # return one tensor twice
    from_output: dict[str, int] = {}
    for i, chain in enumerate(_returned_sources(ep.graph)):
        for key, name in list(tap_of.items()):
            if name in chain:
                from_output[key] = i
                tap_of.pop(key)
    attach_fused(lmap, eager, in_pattern)
    if max_taps is not None and len(tap_of) > max_taps:
        keep = dict(list(tap_of.items())[:max_taps])
        for path, key in list(lmap.where.items()):
            if key not in keep:
                lmap.where.pop(path)
                lmap.skipped[path] = f"beyond the first {max_taps} layers tapped"
        notes.append(f"only the first {max_taps} of {len(tap_of)} layers were tapped (max_taps)")
        tap_of = keep
    wanted = set(tap_of.values())
    with quiet():
        ep_t, specs = tap_intermediate_outputs_(
            ep, rules=[(lambda n: n.name in wanted, FULL_TENSOR)], error_on_empty=False
        )
        edge = lower_to_xnnpack(ep_t)
        strip_taps_(edge)
        program = edge.to_executorch()
    index = {s.node_name: s.output_index for s in specs}
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pte = Path(tmp) / "tapped.pte"
        pte.write_bytes(program.buffer)
        with quiet():
            from executorch.runtime import Runtime

            method = Runtime.get().load_program(pte).load_method("forward")
        got = list(method.execute([torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()]))
    first_tap = min(index.values(), default=len(got))
    outputs = [_np(t) for t in got[:first_tap]]
    values: dict[str, np.ndarray] = {k: outputs[i] for k, i in from_output.items()}
    for key, node_name in tap_of.items():
        t = got[index[node_name]]
        if key in qparams:
            scale, zp = qparams[key]
            values[key] = ((t.to(torch.int32) - zp).float() * scale).numpy()
        else:
            values[key] = _np(t)
    run = FormRun(
        variant=variant,
        map=lmap,
        values=values,
        names={k: tap_of.get(k) or names.get(k, k) for k in values},
        outputs=outputs,
        graph_id="graph",
        tool=(
            "ExecuTorch intermediate-output taps added before XNNPACK lowering (program rebuilt from the "
            "export request), run by the ExecuTorch runtime"
            + ("; int8 values read at their quantize nodes" if qparams else "")
        ),
        notes=notes,
        seconds={"prepare": t1 - t0, "run": time.perf_counter() - t1},
    )
    if artifact is not None:
        shipped = backend.load(artifact).run(inputs)
        run.artifact_check = _compare_outputs(outputs, list(shipped.values()))
    return run


_PASS_THROUGH = ("aten.dropout.", "aten.clone.", "aten.alias.", "aten.detach.", "aten.contiguous.")


def _inside_int8_pattern(node: torch.fx.Node) -> bool:
    """A float value between the ops of one quantized pattern (a convolution read by the ReLU that
    is quantized with it): it reads dequantized tensors, is not quantized itself, and every op
    reading it is.  XNNPACK runs the pattern as one int8 kernel; the value exists nowhere."""
    users = list(node.users)
    return (
        any(_is_dequant(a) for a in node.all_input_nodes)
        and bool(users)
        and not any(_is_quant(u) for u in users)
        and all(any(_is_quant(w) for w in u.users) for u in users)
    )


def _chain(eager: EagerRecord, start: str, end: str) -> list[str]:
    """The layers from ``start`` up to (not including) ``end`` along single-producer eager data flow;
    just ``[start]`` when the flow does not lead there that way."""
    layers = eager.by_path()
    out: list[str] = []
    cur = end
    while True:
        prods = layers[cur].producers if cur in layers else ()
        if len(prods) != 1:
            return [start]
        cur = prods[0]
        out.append(cur)
        if cur == start:
            return list(reversed(out))
        if len(out) > 16:
            return [start]


def _returned_sources(graph: torch.fx.Graph) -> list[set[str]]:
    """Per program output, the nodes whose value it is: the node computing it and the identity ops,
    and quantize/dequantize pairs of one scale, between it and the output."""
    out = []
    for a in pytree.tree_leaves(graph.output_node().args):
        if not isinstance(a, torch.fx.Node):
            continue
        chain, params = {a.name}, set()
        while (
            a.op == "call_function"
            and a.all_input_nodes
            and (any(p in str(a.target) for p in _PASS_THROUGH) or _is_quant(a) or _is_dequant(a))
        ):
            if _is_quant(a):
                params.add((float(a.args[1]), int(a.args[2])))
            a = a.all_input_nodes[0]
            chain.add(a.name)
        out.append(chain if len(params) <= 1 else {a.name})
    return out


# -- quantized int8 (FX PTQ, Numeric Suite) ---------------------------------------------------------


def _copying_logger(base: type) -> type:
    """Numeric Suite's OutputLogger keeps a reference to the logged tensor; an in-place op after it
    (a quantized ``ReLU6(inplace=True)``) would rewrite the logged value.  This one logs a copy."""

    class CopyingOutputLogger(base):  # type: ignore[misc, valid-type]
        def forward(self, x: Any) -> Any:
            super().forward(x.clone() if isinstance(x, torch.Tensor) else x)
            return x

    return CopyingOutputLogger


def run_quantized(
    eager: EagerRecord,
    req: ExportRequest,
    inputs: Mapping[str, np.ndarray],
    backend: Backend,
    artifact: Artifact | None = None,
) -> FormRun:
    import torch.ao.ns._numeric_suite_fx as ns

    from parbench.backends.quantized import quantized_engine

    t0 = time.perf_counter()
    xs = _tensors(inputs)
    rebuilt, meta = backend.quantized_model(req)  # type: ignore[attr-defined]
    notes = list(meta.get("notes", []))
    if meta.get("flow") != "fx":
        # dynamic quantization keeps the module tree: the same paths, hooked directly
        from parbench.diagnose.layers import record_eager

        with quantized_engine():
            q = record_eager(rebuilt.inner, xs)
            outputs = _flat(rebuilt(*xs))
        where = {p: p for p in q.values if p in eager.values}
        skipped = {
            layer.path: "not a layer of the dynamically quantized model"
            for layer in eager.layers
            if layer.path not in where
        }
        lmap = LayerMap(where, {}, skipped, {}, [], "module paths (dynamic quantization keeps the tree)")
        values = {p: q.values[p] for p in where}
        tool = "forward hooks on the dynamically quantized model"
        converted = None
    else:
        converted = rebuilt.inner
        float_gm = torch.fx.symbolic_trace(copy.deepcopy(req.module).eval())
        fnodes, freturned, fnames = fx_nodes(float_gm.graph)
        fmap = resolve(eager, fnodes, freturned, source="")
        layer_of = {fnames.get(k, k): p for p, k in fmap.where.items()}
        with quantized_engine(), quiet():
            a, b = ns.add_loggers("fp32", float_gm, "int8", converted, _copying_logger(ns.OutputLogger))
            with torch.no_grad():
                a(*xs)
                b(*xs)
            results = ns.extract_logger_info(a, b, ns.OutputLogger, "int8")
            with torch.no_grad():
                outputs = _flat(rebuilt(*xs))
        where, values, fused = {}, {}, {}
        eager_paths = {layer.path for layer in eager.layers}
        # a converted call_module node sits at the path of the first module of its fused pattern
        qnodes = {n.name: str(n.target) for n in converted.graph.nodes if n.op == "call_module"}
        for entry in results.values():
            for kind, per_model in entry.items():
                if kind != "node_output" or "fp32" not in per_model or "int8" not in per_model:
                    continue
                f = [r for r in per_model["fp32"] if r.get("index_within_arg", 0) == 0]
                q = [r for r in per_model["int8"] if r.get("index_within_arg", 0) == 0]
                if not f or not q:
                    continue
                path = layer_of.get(f[0]["prev_node_name"])
                if path is None or not q[0]["values"]:
                    continue
                key = q[0]["prev_node_name"]
                where[path] = key
                values[key] = _np(q[0]["values"][0])
                start = qnodes.get(key)
                if start is not None and start != path and start in eager_paths:
                    fused[path] = _chain(eager, start, path)
        skipped = {}
        for layer in eager.layers:
            if layer.path in where:
                continue
            skipped[layer.path] = fmap.skipped.get(layer.path) or (
                "Numeric Suite pairs no int8 op with it (fused into the next op's kernel, or left float)"
            )
        for path, group in fused.items():
            for g in group:
                if g in skipped:
                    skipped[g] = f"fused with {path} into one kernel; compared as {path}"
        lmap = LayerMap(where, fused, skipped, {}, [], "Numeric Suite subgraph pairs (float FX graph scopes)")
        tool = "torch.ao Numeric Suite (add_loggers / OutputLogger) on the int8 model rebuilt from the export request"
    run = FormRun(
        variant="quantized_int8",
        map=lmap,
        values=values,
        names={k: k for k in values},
        outputs=outputs,
        graph_id="quantized_int8",
        tool=tool,
        notes=notes,
        seconds={"prepare": time.perf_counter() - t0, "run": 0.0},
    )
    del converted
    if artifact is not None:
        shipped = backend.load(artifact).run(inputs)
        run.artifact_check = _compare_outputs(outputs, list(shipped.values()))
    return run


# -- Core ML (reference executor) -------------------------------------------------------------------


def run_coreml(
    eager: EagerRecord, module: nn.Module, artifact: Artifact, inputs: Mapping[str, np.ndarray], variant: str
) -> FormRun:
    from parbench.coreml_ref.model import MLModel
    from parbench.diagnose.bisect import match_modules

    t0 = time.perf_counter()
    ml = MLModel(str(artifact.path))
    xs = _tensors(inputs)
    source = {"torch.export": "export", "trace": "trace"}.get(str(artifact.meta.get("frontend")), "auto")
    matches, used = match_modules(TorchOutputFlattening(module).eval(), ml, xs, source)
    where, fused, skipped = {}, {}, {}
    eager_paths = {layer.path for layer in eager.layers}
    for m in matches:
        path = strip_prefix(m.module, WRAPPER)
        if path in eager_paths:
            where[path] = m.mil_name
    for layer in eager.layers:
        if layer.path not in where:
            skipped[layer.path] = "no Core ML value carries it by name (renamed, folded or fused)"
    lmap = LayerMap(where, fused, skipped, {}, [], f"Core ML value names ({used} names)")
    feeds = {n: np.ascontiguousarray(v) for n, v in zip(ml.input_names, inputs.values(), strict=True)}
    wanted = set(where.values())
    t1 = time.perf_counter()
    out, captured = ml.intermediates(feeds, names=lambda n: n in wanted)
    names_out = list(artifact.output_names or out)
    return FormRun(
        variant=variant,
        map=lmap,
        values={k: v.astype(np.float32) for k, v in captured.items()},
        names={k: k for k in captured},
        outputs=[np.asarray(out[n], dtype=np.float32) for n in names_out if n in out],
        graph_id="main",
        tool="every value captured while parbench's reference executor runs the package",
        seconds={"prepare": t1 - t0, "run": time.perf_counter() - t1},
    )


# -- dispatch -------------------------------------------------------------------------------------


def form_run(
    variant: str,
    eager: EagerRecord,
    module: nn.Module,
    source: Artifact | ExportRequest,
    inputs: Mapping[str, np.ndarray],
    *,
    backend: Backend | None = None,
    artifact: Artifact | None = None,
    max_taps: int | None = None,
) -> FormRun:
    """The form's values for the eager layers it can carry.  ``backend``: the form built with its
    options (default: the registered one); ``source``: the artifact, or the request it is made
    from (exported into a temporary folder for the forms that read a file)."""
    check_supported(variant)
    backend = backend or get_backend(variant)
    if variant in NEEDS_REQUEST:
        if not isinstance(source, ExportRequest):
            raise LocaliseError(
                f"{variant}: its intermediates come from a program rebuilt from the export request "
                "(the shipped file keeps no per-layer values); pass the ExportRequest the artifact was "
                "made from, and the artifact as artifact= to check the rebuild against it"
            )
        if variant == "quantized_int8":
            return run_quantized(eager, source, inputs, backend, artifact)
        return run_executorch(eager, source, variant, inputs, backend, artifact, max_taps)
    if isinstance(source, ExportRequest):
        with tempfile.TemporaryDirectory(prefix="parbench-localise-") as tmp:
            art = backend.export(source, Path(tmp) / f"localise-{variant}")
            return _from_artifact(variant, eager, module, art, inputs)
    return _from_artifact(variant, eager, module, source, inputs)


def _from_artifact(
    variant: str, eager: EagerRecord, module: nn.Module, art: Artifact, inputs: Mapping[str, np.ndarray]
) -> FormRun:
    if variant in ("torchscript", "lite"):
        complete = art.meta.get("optimize_for_mobile") != "applied"
        return run_torchscript(eager, art.path, inputs, lite=variant == "lite", complete=complete)
    if variant == "onnx":
        return run_onnx(eager, art.path, inputs)
    return run_coreml(eager, module, art, inputs, variant)


def final_outputs(module: nn.Module, inputs: Mapping[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
    with torch.no_grad():
        out = module(*_tensors(inputs))
    return OrderedDict((k, _np(v)) for k, v in flatten_outputs(out).items())
