"""One identity for a layer across deployment forms.

A layer is named by its ``nn.Module`` path (``features.3.conv.1``) and by the position of its output in
the eager forward.  The eager side is recorded with forward hooks; every form recovers the same names
from what it keeps of the module structure:

* TorchScript / lite / the traced int8 ``.pt``: the inlined graph's module hierarchy
  (``Node.getModuleHierarchy()``, kept in the saved file);
* torch.export, PT2E and ExecuTorch programs: ``nn_module_stack`` on every FX node (quantize /
  dequantize nodes inherit the scope of the value they wrap);
* ONNX: ``pkg.torch.onnx.name_scopes`` (torch.export-based exporter) or the scoped node names of the
  TorchScript-based exporter (``/inner/features/features.3/conv/conv.1/Conv``);
* Core ML: value names, matched as ``parbench.coreml_ref.bisect`` does.

Which of a form's values is a layer's output follows from the scopes alone: the single value produced
inside the layer's scope and used outside it (or returned).  A layer called twice, a scope that lets
several values out, or a layer the form folded away is skipped with the reason; one exception is
a batch norm folded into the convolution before it (the forms fold it, leaving the convolution's
node carrying the batch norm's output), recognised only when the eager data flow shows the batch
norm as the convolution's sole consumer.  Nothing is matched by value.
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils.weak import WeakIdKeyDictionary

# modules that leave no node of their own when a converter folds them into the op before them
FOLDABLE = (nn.modules.batchnorm._BatchNorm,)


@dataclasses.dataclass
class Layer:
    path: str  # nn.Module path, e.g. "features.3.conv.1"
    order: int  # position of its output in the eager forward
    kind: str  # module class name
    leaf: bool
    shape: tuple[int, ...]
    producers: tuple[str, ...]  # layers its output is computed from (through functional ops)
    consumers: tuple[str, ...]  # modules that read its output tensor directly (innermost running)
    identity_like: bool  # returns its input unchanged (nn.Identity, dropout at inference)
    foldable: bool  # a batch norm: converters fold it into the op before it


@dataclasses.dataclass
class EagerRecord:
    """What the eager forward did, layer by layer."""

    layers: list[Layer]
    values: dict[str, np.ndarray]  # path -> output (float32 copy taken when the layer returned)
    repeated: dict[str, int]  # modules that ran more than once -> times
    ran: set[str]  # every module path whose forward ran
    module_paths: set[str]
    outputs: Any  # the forward's return value
    skipped: dict[str, str]  # modules that are not layers here, and why

    def by_path(self) -> dict[str, Layer]:
        return {layer.path: layer for layer in self.layers}


class _Recorder(TorchFunctionMode):
    """Follows tensors through every torch call of a forward: which layer outputs reach which
    tensor (for producers), and which module reads each layer output (for consumers)."""

    def __init__(self) -> None:
        super().__init__()
        self.origin: WeakIdKeyDictionary = WeakIdKeyDictionary()  # tensor -> frozenset of layer paths
        self.owner: WeakIdKeyDictionary = WeakIdKeyDictionary()  # layer output tensor -> its path
        self.stack: list[str] = []  # running module paths, innermost last
        self.consumers: dict[str, set[str]] = defaultdict(set)
        self.busy = False

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.busy:
            return out
        ins = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        here = self.stack[-1] if self.stack else ""
        front: set[str] = set()
        for t in ins:
            front |= self.origin.get(t, frozenset())
            if (p := self.owner.get(t)) is not None:
                self.consumers[p].add(here)
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.origin[t] = frozenset(front)
        return out


def _tensor_leaves(obj: Any) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(obj) if isinstance(t, torch.Tensor)]


def record_eager(module: nn.Module, inputs: Sequence[torch.Tensor]) -> EagerRecord:
    """Run ``module`` once with hooks on every submodule and record its layers.

    Layers are the leaf modules, plus the container modules that compute something of their own
    (a residual add, an upsampling in the container's forward): a container whose output is its last
    child's output is the same value and is not listed twice.
    """
    rec = _Recorder()
    layers: list[Layer] = []
    values: dict[str, np.ndarray] = {}
    counts: dict[str, int] = defaultdict(int)
    skipped: dict[str, str] = {}
    ran: set[str] = set()
    inputs_at_entry: dict[int, list[tuple[torch.Tensor, int]]] = {}
    named = [(n, m) for n, m in module.named_modules() if n]
    handles = []

    def pre(name: str) -> Any:
        def hook(m: nn.Module, args: Any) -> None:
            rec.busy = True
            try:
                ins = _tensor_leaves(args)
                inputs_at_entry[id(m)] = [(t, t._version) for t in ins]  # _version: in-place writes
                rec.stack.append(name)
                ran.add(name)
                counts[name] += 1
            finally:
                rec.busy = False

        return hook

    def post(name: str, leaf: bool) -> Any:
        def hook(m: nn.Module, _args: Any, out: Any) -> None:
            rec.busy = True
            try:
                rec.stack.pop()
                ins = inputs_at_entry.pop(id(m), [])
                # the layers whose outputs the returned tensor was computed from (for a container:
                # its inputs and its own inner layers, e.g. both sides of a residual add)
                producers = rec.origin.get(out, frozenset()) if isinstance(out, torch.Tensor) else frozenset()
                if counts[name] > 1:
                    return
                if not isinstance(out, torch.Tensor):
                    skipped[name] = f"returns a {type(out).__name__}, not one tensor"
                    return
                if not out.is_floating_point():
                    skipped[name] = f"returns a {out.dtype} tensor"
                    return
                if not leaf and (inner := rec.owner.get(out)) is not None and inner.startswith(name + "."):
                    skipped[name] = f"its output is {inner}'s"
                    return
                identity = any(out is t and out._version == v for t, v in ins)
                layers.append(
                    Layer(
                        path=name,
                        order=len(layers),
                        kind=type(m).__name__,
                        leaf=leaf,
                        shape=tuple(out.shape),
                        producers=tuple(sorted(producers)),
                        consumers=(),
                        identity_like=identity,
                        foldable=isinstance(m, FOLDABLE),
                    )
                )
                values[name] = out.detach().float().cpu().numpy().copy()
                rec.owner[out] = name
                rec.origin[out] = frozenset({name})
            finally:
                rec.busy = False

        return hook

    for name, m in named:
        leaf = not list(m.children())
        handles.append(m.register_forward_pre_hook(pre(name)))
        handles.append(m.register_forward_hook(post(name, leaf)))
    try:
        with torch.no_grad(), rec:
            outputs = module(*inputs)
    finally:
        for h in handles:
            h.remove()
    repeated = {n: c for n, c in counts.items() if c > 1}
    kept = []
    for layer in layers:
        if layer.path in repeated:
            skipped[layer.path] = f"runs {repeated[layer.path]} times in one forward: its output is ambiguous"
            values.pop(layer.path, None)
            continue
        layer.consumers = tuple(sorted(rec.consumers.get(layer.path, ())))
        kept.append(layer)
    for i, layer in enumerate(kept):
        layer.order = i
    return EagerRecord(
        layers=kept,
        values=values,
        repeated=repeated,
        ran=ran,
        module_paths={n for n, m in named if type(m).forward is not nn.Module.forward},
        outputs=outputs,
        skipped=skipped,
    )


# -- a form's graph, reduced to what identity needs ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScopedNode:
    name: str  # the form's node name
    op: str
    scope: str  # module path relative to the user's module; "" for the model's own forward
    inputs: tuple[str, ...]  # value keys read
    outputs: tuple[str, ...]  # tensor value keys written


@dataclasses.dataclass
class LayerMap:
    """Which of a form's values carries each eager layer's output."""

    where: dict[str, str]  # layer path -> the form's value key
    fused: dict[str, list[str]]  # layer path -> layers folded into the same value
    skipped: dict[str, str]  # layer path -> why it is not compared
    absent: dict[str, str]  # layers the eager model ran that the form has no node for (flagged)
    extra: list[str]  # module paths the form runs that the eager model did not run here
    source: str  # how the identity was recovered


def strip_prefix(scope: str, prefix: str) -> str:
    if not prefix:
        return scope
    if scope == prefix:
        return ""
    if scope.startswith(prefix + "."):
        return scope[len(prefix) + 1 :]
    return scope


def _within(scope: str, path: str) -> bool:
    return scope == path or scope.startswith(path + ".")


def _ancestors(scope: str) -> list[str]:
    parts = scope.split(".") if scope else []
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def escaping_values(nodes: Sequence[ScopedNode], graph_outputs: Iterable[str]) -> dict[str, set[str]]:
    """Module path -> the values produced inside its scope and read outside it (or returned)."""
    consumers: dict[str, list[str]] = defaultdict(list)
    for n in nodes:
        for v in n.inputs:
            consumers[v].append(n.scope)
    returned = set(graph_outputs)
    out: dict[str, set[str]] = defaultdict(set)
    for n in nodes:
        for v in n.outputs:
            for path in _ancestors(n.scope):
                if v in returned or any(not _within(c, path) for c in consumers.get(v, ())):
                    out[path].add(v)
    return out


def resolve(
    eager: EagerRecord,
    nodes: Sequence[ScopedNode],
    graph_outputs: Iterable[str],
    *,
    source: str,
    complete: bool = False,
) -> LayerMap:
    """Map eager layers to a form's values by scope.

    ``complete``: the form keeps a node for every module call it ran (a TorchScript trace), so a layer
    with no node at all was not run by the form: it is reported as absent (flagged), not skipped.
    """
    escapes = escaping_values(nodes, graph_outputs)
    scoped: set[str] = set()
    for n in nodes:
        scoped.update(_ancestors(n.scope))
    where: dict[str, str] = {}
    fused: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    absent: dict[str, str] = {}
    layers = eager.by_path()
    for layer in eager.layers:
        path = layer.path
        if layer.identity_like:
            skipped[path] = "returns its input unchanged at inference: nothing to compare"
            continue
        if path in scoped:
            esc = escapes.get(path, set())
            if len(esc) == 1:
                where[path] = next(iter(esc))
            elif len(esc) > 1:
                skipped[path] = f"{len(esc)} values leave this layer's scope in the form: ambiguous"
            else:
                skipped[path] = "no value of its own leaves its scope in the form (fused into a neighbour)"
            continue
        src = layer.producers[0] if len(layer.producers) == 1 else None
        if (
            layer.foldable
            and src is not None
            and src in where
            and src in layers
            and set(layers[src].consumers) == {path}
        ):
            where[path] = where.pop(src)
            fused[path] = [src]
            skipped[src] = f"folded with {path} into one op by the form; compared as {path}"
            continue
        if complete:
            absent[path] = "the eager model ran this layer; the form's graph has no node for it"
        else:
            skipped[path] = "the form keeps no node for it (folded or fused away)"
    # one value must not stand for two layers
    owners: dict[str, list[str]] = defaultdict(list)
    for path, v in where.items():
        owners[v].append(path)
    for paths in owners.values():
        if len(paths) > 1:
            for p in paths:
                where.pop(p)
                skipped[p] = f"shares its value with {', '.join(q for q in paths if q != p)}: ambiguous"
    # modules with ops of their own in the form that eager did not run on this input (a container
    # never called itself, only its children, is not one of them)
    extra = sorted({n.scope for n in nodes if n.scope in eager.module_paths and n.scope not in eager.ran})
    return LayerMap(where, fused, skipped, absent, extra, source)


def attach_fused(lmap: LayerMap, eager: EagerRecord, paths: Iterable[str]) -> None:
    """Layers the form computes inside the kernel of the layer they feed (an int8 convolution fused
    with its activation) are listed with that layer: its row carries them.  Only when the eager data
    flow gives a single consumer that has a value of its own."""
    consumers: dict[str, list[str]] = defaultdict(list)
    for layer in eager.layers:
        for p in layer.producers:
            consumers[p].append(layer.path)
    for path in paths:
        chain = [path]
        cur = path
        while True:
            nxt = consumers.get(cur, [])
            if len(nxt) != 1:
                break
            cur = nxt[0]
            if cur in lmap.where:
                lmap.fused[cur] = lmap.fused.get(cur, []) + chain + lmap.fused.pop(path, [])
                break
            if cur not in lmap.skipped:
                break
            chain.append(cur)


# -- scope extractors ------------------------------------------------------------------------------


_HIER = re.compile(r"([^.()]+)\(([^()]*)\)")


def _is_tensor_value(v: Any) -> bool:
    return v.type().kind() == "TensorType"


def torchscript_nodes(
    script_module: torch.jit.ScriptModule, prefix: str = ""
) -> tuple[list[ScopedNode], list[str], torch.Graph]:
    """Scoped nodes of a (loaded) TorchScript module's inlined graph, its returned values, and the
    graph itself (value keys are debug names, unique within it)."""
    graph = script_module.inlined_graph
    nodes = []
    paths: dict[str, str] = {}
    for node in graph.nodes():
        kind = node.kind()
        if kind in ("prim::Constant", "prim::GetAttr"):
            continue
        hierarchy = node.getModuleHierarchy()
        if hierarchy not in paths:
            paths[hierarchy] = _script_path(script_module, _HIER.findall(hierarchy))
        scope = paths[hierarchy]
        nodes.append(
            ScopedNode(
                name=f"{kind}:{','.join(o.debugName() for o in node.outputs())}",
                op=kind,
                scope=strip_prefix(scope, prefix),
                inputs=tuple(v.debugName() for v in node.inputs()),
                outputs=tuple(o.debugName() for o in node.outputs() if _is_tensor_value(o)),
            )
        )
    returned = [v.debugName() for v in graph.return_node().inputs()]
    return nodes, returned, graph


_NO_FORWARD = ("ModuleList", "ModuleDict")


def _script_path(root: torch.jit.ScriptModule, calls: list[tuple[str, str]]) -> str:
    """The module path of a chain of calls ``[(instance name, class), ...]``.  The chain names each
    called module by its attribute name and leaves out containers that are never called themselves
    (ModuleList, ModuleDict); those are put back when exactly one such container of the caller holds
    a module of that name and class.  Otherwise the scope is unknown ("?": no layer matches it)."""
    cur, path = root, []
    for name, cls in calls:
        children = dict(cur.named_children())
        if name in children:
            cur = children[name]
            path.append(name)
            continue
        found = [
            (holder, dict(c.named_children())[name])
            for holder, c in children.items()
            if getattr(c, "original_name", "") in _NO_FORWARD
            and name in dict(c.named_children())
            and getattr(dict(c.named_children())[name], "original_name", "") == cls
        ]
        if len(found) != 1:
            return "?"
        holder, cur = found[0]
        path += [holder, name]
    return ".".join(path)


def _onnx_scope_from_name(name: str) -> str:
    """``/inner/blocks/blocks.0/conv/conv.0/Conv`` -> ``inner.blocks.0.conv.0`` (TorchScript-based
    exporter: a segment is a child's name, or the previous segment, a dot and the child's name)."""
    parts = name.split("/")
    if len(parts) < 3 or parts[0] != "":
        return ""
    path: list[str] = []
    prev = ""
    for seg in parts[1:-1]:
        path.append(seg[len(prev) + 1 :] if prev and seg.startswith(prev + ".") else seg)
        prev = seg
    return ".".join(path)


def onnx_scope(node: Any) -> str:
    meta = {p.key: p.value for p in node.metadata_props}
    scopes = meta.get("pkg.torch.onnx.name_scopes")
    if scopes:
        import ast

        try:
            names = ast.literal_eval(scopes)
        except (ValueError, SyntaxError):
            names = []
        return names[-2] if len(names) >= 2 else ""
    return _onnx_scope_from_name(node.name)


def onnx_nodes(model: Any, prefix: str = "") -> tuple[list[ScopedNode], list[str]]:
    g = model.graph
    nodes = [
        ScopedNode(
            name=n.name,
            op=n.op_type,
            scope=strip_prefix(onnx_scope(n), prefix),
            inputs=tuple(i for i in n.input if i),
            outputs=tuple(o for o in n.output if o),
        )
        for n in g.node
    ]
    return nodes, [o.name for o in g.output]


_QUANT = ("quantize_per_tensor", "quantize_per_channel")
_DEQUANT = ("dequantize_per_tensor", "dequantize_per_channel")


def _target_name(node: torch.fx.Node) -> str:
    t = node.target
    return getattr(t, "__name__", str(t))


def _is_quant(node: torch.fx.Node) -> bool:
    s = str(node.target)
    return "quantized_decomposed" in s and any(f".{q}." in s for q in _QUANT)


def _is_dequant(node: torch.fx.Node) -> bool:
    s = str(node.target)
    return "quantized_decomposed" in s and any(f".{q}." in s for q in _DEQUANT)


def fx_module_path(node: torch.fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    return re.sub(r"^L\['self'\]\.?", "", path)


def fx_nodes(graph: torch.fx.Graph, prefix: str = "") -> tuple[list[ScopedNode], list[str], dict[str, str]]:
    """Scoped nodes of an FX graph (torch.export / PT2E / symbolic trace).

    quantize/dequantize nodes carry no module stack: they take the scope of the value they wrap, and a
    dequantize's value is keyed by its quantize node (every dequantize of one quantize is one value).
    Returns the nodes, the returned value keys, and value key -> FX node name.
    """
    scope_of: dict[str, str] = {}
    key_of: dict[str, str] = {}
    nodes: list[ScopedNode] = []
    returned: list[str] = []
    for node in graph.nodes:
        if node.op == "output":
            returned = [
                key_of.get(a.name, a.name)
                for a in pytree.tree_leaves(node.args)
                if isinstance(a, torch.fx.Node)
            ]
            continue
        if node.op in ("placeholder", "get_attr"):
            scope_of[node.name] = ""
            key_of[node.name] = node.name
            continue
        ins = [a for a in node.all_input_nodes]
        if _is_quant(node) or _is_dequant(node) or _target_name(node) == "getitem":
            scope = scope_of.get(ins[0].name, "") if ins else ""
        else:
            scope = strip_prefix(fx_module_path(node) or "", prefix)
        scope_of[node.name] = scope
        key = node.name
        if _is_dequant(node) and ins and _is_quant(ins[0]):
            key = key_of.get(ins[0].name, ins[0].name)
        key_of[node.name] = key
        val = node.meta.get("val")
        is_tensor = (
            isinstance(val, torch.Tensor)
            if val is not None
            else _target_name(node) not in ("getattr", "size", "dim")
        )
        outs = (key,) if is_tensor else ()
        nodes.append(
            ScopedNode(
                node.name, _target_name(node), scope, tuple(key_of.get(a.name, a.name) for a in ins), outs
            )
        )
    names = {v: k for k, v in reversed(list(key_of.items()))}
    return nodes, returned, names


def ordered(mapping: Mapping[str, str], eager: EagerRecord) -> OrderedDict[str, str]:
    """A layer -> value map in eager order."""
    return OrderedDict((layer.path, mapping[layer.path]) for layer in eager.layers if layer.path in mapping)
