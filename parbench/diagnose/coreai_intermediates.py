"""Where a Core AI asset starts to depart from eager PyTorch, op by op.

The Core AI side: the runtime's ``IntermediateLogger`` captures the value of every requested
compiled op during one call.  It speaks in compiled ids (ODIX instruction, delegate); the debug
info that a debug-mode asset carries maps them back to Core AI ops, and the converter's location
info maps those to the ``torch.export`` nodes they came from.  coreai-torch's debugging package
does both halves (``CoreAIInspector`` around the logger, ``get_torch_to_coreai_output_mapping``),
and its ``TorchFXInspector`` captures the same nodes in eager PyTorch; both are used here.  Its
one-call comparisons (``compare_program_intermediates``, ``create_comparator_for_programs``)
are not: they load the model through ``SpecializationOptions``, which exist on macOS only, and
judge with ``allclose`` tolerances, which say nothing useful about fp16 programs.  Here the asset
is lowered with debug info directly (the same lowering ``AIModelAsset.executable()`` does off
macOS) and every matched op is judged by SNR and cosine against eager.

The eager side re-exports the module exactly as the Core AI forms did (``TorchOutputFlattening``,
batch norm folded when the asset's metadata says the form folded it, ``coreai_torch.get_decomp_table()``,
the asset's dynamic dims), in float32, so node names match the asset's and values are eager fp32
(a folded convolution computes what eager's batch norm returns, to float32 rounding).  Ops the compiler fused away have no value of their own;
the first departing op lists its unverified ancestors (``suspects``): the ops between it and the
last values that still agreed, one of which introduced the difference.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from parbench._util.console import error_text, quiet
from parbench.backends.base import Artifact
from parbench.backends.coreai import (
    ENTRYPOINT,
    exported_program,
    fold_conv_batchnorm,
    pick_function,
    preparation,
    run_async,
    signatures,
)
from parbench.compare import generic_metrics
from parbench.errors import SessionError
from parbench.records.parity import FirstDivergence

COLUMNS = [
    "order",
    "node",
    "op",
    "module",
    "matched",
    "coreai_op",
    "shape",
    "snr_db",
    "snr_drop",
    "cosine",
    "rel_l2",
    "max_abs",
    "over",
]
_WRAPPER_PREFIX = "inner."  # TorchOutputFlattening's attribute


@dataclasses.dataclass
class Localisation:
    table: pd.DataFrame  # every op compared, in graph order
    first: dict[str, Any] | None  # the first row over threshold, plus its suspects
    threshold_snr: float
    threshold_cos: float
    function: str
    counts: dict[str, int]  # mapped ops by outcome: compared, no_value, shape_mismatch, ...
    notes: list[str] = dataclasses.field(default_factory=list)

    def render(self, rows: int = 5) -> str:
        t = self.table
        head = (
            f"Core AI vs eager, op by op ({self.function}): {len(t)} ops compared, "
            f"{int(t.over.sum()) if len(t) else 0} over threshold "
            f"(SNR < {self.threshold_snr:g} dB or cosine < {self.threshold_cos:g})"
        )
        lines = [head]
        if t.empty:
            lines.append("  nothing could be compared")
        elif self.first is None:
            worst = t.sort_values("snr_db").iloc[0]
            lines.append(
                f"  none departs; worst: {worst.node} ({worst.op}) SNR {worst.snr_db:.1f} dB, "
                f"cosine {worst.cosine:.6f}"
            )
        else:
            f = self.first
            mod = f" [{f['module']}]" if f["module"] else ""
            lines.append(
                f"  first departing op: #{f['order']} {f['node']} ({f['op']}){mod} SNR {f['snr_db']:.1f} dB, "
                f"cosine {f['cosine']:.6f}, max|d| {f['max_abs']:.3g}"
            )
            if f["suspects"]:
                shown = ", ".join(
                    f"{s['node']} [{s['module']}]" if s["module"] else s["node"] for s in f["suspects"][:6]
                )
                more = len(f["suspects"]) - 6
                lines.append(
                    f"  computed from unverified ops: {shown}" + (f" (+{more} more)" if more > 0 else "")
                )
            over = t[t.over]
            for _, r in over.iloc[1:rows].iterrows():
                mod = f" [{r.module}]" if r.module else ""
                lines.append(
                    f"  then #{r.order} {r.node} ({r.op}){mod} SNR {r.snr_db:.1f} dB, cosine {r.cosine:.6f}"
                )
        drops = t[t.snr_drop > 3.0].sort_values("snr_drop", ascending=False).head(3) if len(t) else t
        if len(drops):
            lines.append(
                "  largest SNR drops: "
                + ", ".join(
                    f"{r.node}" + (f" [{r.module}]" if r.module else "") + f" -{r.snr_drop:.1f} dB"
                    for _, r in drops.iterrows()
                )
            )
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()

    def summary(self) -> dict[str, Any]:
        """The first departing op (or none) as plain values, for a parity record."""
        out: dict[str, Any] = {
            "tool": "coreai-intermediates",
            "function": self.function,
            "threshold_snr_db": self.threshold_snr,
            "threshold_cosine": self.threshold_cos,
            "compared": int(len(self.table)),
        }
        if self.first is None:
            return out | {"node": None}
        f = self.first
        return out | {
            "node": f["node"],
            "op": f["op"],
            "module": f["module"],
            "matched": f["matched"],
            "snr_db": float(f["snr_db"]),
            "cosine": float(f["cosine"]),
            "suspects": [s["node"] for s in f["suspects"][:10]],
        }


# -- the asset --------------------------------------------------------------------------------


def _size_bounds(artifact: Artifact | str | Path, funcs: Mapping[str, Any], size: int) -> tuple[int, int]:
    """Bounds for the re-export's size dims: the artifact's own range when it says, the sizes of
    an enumerated asset's functions, else a range around the input's size (too wide a range
    fails ``torch.export`` where a model's downsampling needs a minimum size)."""
    if isinstance(artifact, Artifact) and artifact.meta.get("size_range"):
        lo, hi = artifact.meta["size_range"]
        return min(int(lo), size), max(int(hi), size)
    sized = [int(m.group(1)) for f in funcs if (m := re.fullmatch(rf"{ENTRYPOINT}_s(\d+)", f))]
    if len(sized) > 1:
        return min(*sized, size), max(*sized, size)
    return max(2, size // 2), size * 4


def _dynamic_shapes(funcs: Mapping[str, Any], names: Sequence[str], bounds: tuple[int, int]) -> Any:
    """The ``torch.export`` dims the asset was exported with: the dims that are dynamic in
    ``main``, or that differ between the static functions of an enumerated asset."""
    dyn: dict[str, set[int]] = {n: set() for n in names}
    if ENTRYPOINT in funcs:
        for n in names:
            dyn[n] = {i for i, d in enumerate(funcs[ENTRYPOINT][n][0]) if d is None}
    elif len(funcs) > 1:
        for n in names:
            variants = [tuple(ins[n][0]) for ins in funcs.values()]
            dyn[n] = {i for i in range(len(variants[0])) if len({v[i] for v in variants}) > 1}
    if not any(dyn.values()):
        return None
    dims: dict[int, Any] = {}
    specs = []
    for n in names:
        spec = {}
        for i in sorted(dyn[n]):
            if i not in dims:
                label = {2: "height", 3: "width"}.get(i, f"dim{i}")
                dims[i] = torch.export.Dim(label, min=bounds[0], max=bounds[1])
            spec[i] = dims[i]
        specs.append(spec or None)
    return (tuple(specs),)


def _one_static_function(
    path: Path, funcs: Mapping[str, Any], function: str, shapes: Mapping[str, tuple[int, ...]]
) -> tuple[Any, str, str]:
    """The asset's program reduced to one function with static input shapes: ``(program,
    function, note)``.  The runtime's intermediate values are only attributable in static
    programs: in a dynamic-shape program (coreai-core 1.0.0b3) the debug info maps an op's value
    to the instruction that allocates its buffer, which logs nothing."""
    from coreai.authoring import AIModelAsset

    program = AIModelAsset.load(path).program
    if any(d is None for dims, _ in funcs[function].values() for d in dims):
        program.set_static_shape_config(function, {"static": {n: tuple(shapes[n]) for n in funcs[function]}})
        return (
            program,
            f"{function}_static",
            f"values from the asset's program specialized to the input shapes {dict(shapes)} "
            "(set_static_shape_config): a dynamic-shape program logs no attributable intermediates",
        )
    others = [f for f in funcs if f != function]
    for other in others:  # an enumerated asset: its functions share the op mapping
        program._get_graph(other).operation.erase()
    return program, function, ""


async def _coreai_values(
    path: Path, function: str, op_ids: list[int], feeds: Mapping[str, np.ndarray]
) -> dict[int, Any]:
    """Intermediate values of an asset's Core AI ops, through the runtime's IntermediateLogger."""
    from coreai.authoring import AIModelAsset
    from coreai.runtime import AIModel, SpecializationOptions
    from coreai_torch.debugging.inspector import CoreAIInspector

    asset = AIModelAsset.load(path)
    if SpecializationOptions.is_supported():  # the OS framework (macOS 27): debug specialization
        options = SpecializationOptions.default().with_debug(enabled=True)
        model = await AIModel.load(asset.path, options)
        return await CoreAIInspector(model=model, function_name=function).get_intermediates_for_ops(
            op_ids, dict(feeds)
        )
    # elsewhere: the lowering AIModelAsset.executable() does, with debug info kept
    with tempfile.TemporaryDirectory(suffix=".aimodelx") as tmp:
        await asyncio.to_thread(asset._write_odix, Path(tmp), enable_debug_info=True)
        model = await AIModel.load(tmp)
        inspector = CoreAIInspector(model=model, function_name=function)
        return await inspector.get_intermediates_for_ops(op_ids, dict(feeds))


# -- the comparison ---------------------------------------------------------------------------


def _module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = str(list(stack.values())[-1][0])
    if path.startswith(_WRAPPER_PREFIX):
        path = path[len(_WRAPPER_PREFIX) :]
    return "" if path == "inner" else path


def _successors(node: torch.fx.Node, limit: int = 3) -> list[str]:
    """The ops that consume ``node``'s value alone, one after the other (conv -> batch norm ->
    its getitem), up to ``limit`` steps."""
    out, cur = [], node
    for _ in range(limit):
        users = list(cur.users)
        if len(users) != 1 or users[0].op != "call_function":
            break
        cur = users[0]
        out.append(cur.name)
    return out


def _snr_drops(table: pd.DataFrame, by_name: Mapping[str, torch.fx.Node]) -> list[float]:
    """Per compared op, how much SNR it lost: the lowest SNR among the nearest compared values
    it is computed from, minus its own (0 where none of its inputs was compared)."""
    snr = dict(zip(table.node, table.snr_db, strict=True))
    drops = []
    for name in table.node:
        sources, stack, seen = [], list(by_name[name].all_input_nodes), set()
        while stack:
            n = stack.pop()
            if n.name in seen:
                continue
            seen.add(n.name)
            if n.name in snr:
                sources.append(snr[n.name])
            else:
                stack.extend(n.all_input_nodes)
        drops.append(min(sources) - snr[name] if sources else 0.0)
    return drops


def _suspects(graph: torch.fx.Graph, first: str, good: set[str]) -> list[dict[str, str]]:
    """Ancestors of ``first`` (itself included) that no earlier agreeing value depends on."""
    nodes = {n.name: n for n in graph.nodes}
    verified: set[str] = set()
    for n in reversed(list(graph.nodes)):
        if n.name in good or n.name in verified:
            verified.update(a.name for a in n.all_input_nodes)
            verified.add(n.name)
    out, stack, seen = [], [nodes[first]], set()
    while stack:
        n = stack.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        if n.name in verified and n.name != first:
            continue
        if n.op == "call_function" and n.name != first:
            out.append(n)
        stack.extend(n.all_input_nodes)
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    return [
        {"node": n.name, "op": str(n.target), "module": _module_path(n)}
        for n in sorted(out, key=lambda n: order[n.name], reverse=True)
    ]


def localise(
    module: nn.Module,
    artifact: Artifact | str | Path,
    inputs: Mapping[str, np.ndarray],
    *,
    threshold_snr: float = 30.0,
    threshold_cos: float = 0.999,
) -> Localisation:
    """Compare every Core AI op of ``artifact`` whose value maps to an eager op with that op.

    ``module``: the eager model (fp32, eval).  ``artifact``: a ``coreai_fp32``/``coreai_fp16``
    Artifact or the path of its ``.aimodel`` (converted in coreai-torch's default debug mode).
    ``inputs``: ``{name: array}`` as the asset's inputs, at one of the sizes it serves.
    """
    from coreai_torch.debugging.inspector import TorchFXInspector
    from coreai_torch.debugging.torch_utils import get_torch_to_coreai_output_mapping

    path = Path(artifact.path if isinstance(artifact, Artifact) else artifact)
    if not path.is_dir():
        raise SessionError(f"{path} is not a .aimodel folder; export the Core AI artifact first")
    with quiet():
        funcs = signatures(path)
    names = list(inputs)
    shapes = {n: tuple(np.shape(v)) for n, v in inputs.items()}
    function = pick_function(funcs, shapes)
    tensors = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in names]
    notes: list[str] = []
    with quiet(), tempfile.TemporaryDirectory() as tmp:
        program, run_fn, note = _one_static_function(path, funcs, function, shapes)
        if note:
            notes.append(note)
        mapping = get_torch_to_coreai_output_mapping(program)
        if not mapping:
            raise SessionError(
                f"{path} carries no torch-to-Core AI op mapping: convert it with "
                "coreai_torch.TorchConverter() in its default debug mode (not Mode.RELEASE)"
            )
        size = max((d for x in tensors if x.dim() == 4 for d in x.shape[2:]), default=1)
        bounds = _size_bounds(artifact, funcs, int(size))
        prepared = preparation(path)
        if (prepared.get("fold_batchnorm") or {}).get("folded"):
            module, _ = fold_conv_batchnorm(module, tensors)
            notes.append(
                "eager side: batch norm folded into its convolution in float32, as the form did "
                "before casting (folded convolutions compare with eager's batch-norm output)"
            )
        ep = exported_program(module, tensors, _dynamic_shapes(funcs, names, bounds), "float32")
        graph_nodes = [n for n in ep.graph.nodes if n.op == "call_function"]
        order = {n.name: i for i, n in enumerate(graph_nodes)}
        by_name = {n.name: n for n in graph_nodes}
        unknown = sorted(set(mapping) - set(by_name))
        if unknown:
            notes.append(
                f"{len(unknown)} mapped ops are not in the re-exported eager graph (e.g. {unknown[:3]}): "
                "ops the fp16 pass inserted, or a module that differs from the converted one"
            )
        mapped = {k: v for k, v in mapping.items() if k in by_name}
        feeds = {}
        for n in names:
            dtype = funcs[function][n][1]
            feeds[n] = np.ascontiguousarray(inputs[n], dtype=np.float16 if dtype == "float16" else None)
        static_path = Path(tmp) / "static.aimodel"
        program.save_asset(static_path)
        op_ids = sorted({m.target_op_id for m in mapped.values()})
        coreai_vals = run_async(_coreai_values(static_path, run_fn, op_ids, feeds))

    # the compiler folds some ops into the one before (batch norm into its convolution) and the
    # folded value keeps the first op's name: try the op's single-consumer successors too
    chains = {name: _successors(by_name[name]) for name in mapped}
    wanted = sorted(set(mapped) | {c for chain in chains.values() for c in chain})

    async def eager() -> dict[Any, Any]:
        with torch.no_grad():  # grad mode is per thread: set it where the graph runs
            return await TorchFXInspector(ep).get_intermediates_for_ops(wanted, tuple(tensors))

    torch_vals = run_async(eager())

    def judge(a: np.ndarray, r: np.ndarray) -> tuple[dict[str, float], bool] | None:
        if a.shape != r.shape:
            if a.size != r.size or np.squeeze(a).shape != np.squeeze(r).shape:
                return None
            a, r = np.squeeze(a), np.squeeze(r)
        met = generic_metrics(a.astype(np.float32), r.astype(np.float32))
        return met, bool(met["snr_db"] < threshold_snr or met["cosine"] < threshold_cos)

    counts = {"mapped": len(mapped), "compared": 0, "no_value": 0, "shape_mismatch": 0, "non_float": 0}
    counts["folded"] = 0
    rows = []
    for name in sorted(mapped, key=order.__getitem__):
        m = mapped[name]
        ours = coreai_vals.get(m.target_op_id)
        ref = torch_vals.get(name)
        if not ours or m.target_output >= len(ours) or ours[m.target_output] is None:
            counts["no_value"] += 1
            continue
        if not ref or m.source_output >= len(ref) or ref[m.source_output] is None:
            counts["no_value"] += 1
            continue
        a, r = np.asarray(ours[m.target_output]), np.asarray(ref[m.source_output])
        if not (np.issubdtype(r.dtype, np.floating) and np.issubdtype(a.dtype, np.floating)):
            counts["non_float"] += 1
            continue
        verdict = judge(a, r)
        if verdict is None:
            counts["shape_mismatch"] += 1
            continue
        met, over = verdict
        matched = name
        for succ in chains[name] if over else ():
            vals = torch_vals.get(succ)
            if not vals or len(vals) != 1 or vals[0] is None:
                continue
            alt = judge(a, np.asarray(vals[0]))
            if alt is not None and alt[0]["snr_db"] > met["snr_db"]:
                (met, over), matched = alt, succ
        counts["folded"] += matched != name
        counts["compared"] += 1
        rows.append(
            {
                "order": order[name],
                "node": name,
                "op": str(by_name[name].target),
                "module": _module_path(by_name[name]),
                "matched": matched,
                "coreai_op": m.target_op_id,
                "shape": tuple(np.shape(r)),
                "snr_db": met["snr_db"],
                "cosine": met["cosine"],
                "rel_l2": met["rel_l2"],
                "max_abs": met["max_abs"],
                "over": over,
            }
        )
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "snr_drop"])
    table.insert(COLUMNS.index("snr_drop"), "snr_drop", _snr_drops(table, by_name))
    first = None
    over = table[table.over]
    if not over.empty:
        first = over.iloc[0].to_dict()
        good = set(table[(~table.over) & (table.order < first["order"])].node)
        first["suspects"] = _suspects(ep.graph, first["node"], good)
    return Localisation(table, first, threshold_snr, threshold_cos, run_fn, counts, notes)


def failure_note(
    module: nn.Module, artifact: Artifact, inputs: Mapping[str, np.ndarray]
) -> tuple[str, dict[str, Any] | None]:
    """Lines for a failed parity message and the record's ``first_divergence``; never raises (the
    verdict stands without it)."""
    try:
        found = localise(module, artifact, inputs)
    except Exception as exc:
        return f"first departing op: the Core AI localisation could not run: {error_text(exc, 3)}", None
    return found.render(), found.summary()


def annotate(record: Any, module: nn.Module, artifact: Artifact, inputs: Mapping[str, np.ndarray]) -> None:
    """Add the first departing op to a failed parity record (message and ``first_divergence``)."""
    text, first = failure_note(module, artifact, inputs)
    record.message += "\n" + text
    record.first_divergence = _as_first_divergence(first, text)


def _as_first_divergence(first: dict[str, Any] | None, text: str) -> FirstDivergence:
    """The record's typed ``first_divergence`` from :meth:`Localisation.summary` (``None``: the
    localisation could not run, ``text`` says why).  Core AI localises ops, so ``layer`` is the
    eager module the departing op came from, and ``node``/``op``/``suspects`` are kept as extras."""
    if first is None:
        return FirstDivergence(status="not_run", reason=text.split(": ", 1)[-1], tool="coreai-intermediates")
    common = {
        "tool": first["tool"],
        "compared": first["compared"],
        "thresholds": {"snr_db": first["threshold_snr_db"], "cosine": first["threshold_cosine"]},
        "identity": "coreai-torch debug info (op -> eager node)",
    }
    if first.get("node") is None:
        return FirstDivergence(status="none", reason="every compared op is within the limits", **common)
    return FirstDivergence(
        status="found",
        how="compared",
        layer=first.get("module") or first["node"],
        kind=first.get("op", ""),
        snr_db=first["snr_db"],
        cosine=first["cosine"],
        reason=f"first departing op {first['node']} ({first.get('op', '')})",
        node=first["node"],
        suspects=first.get("suspects", []),
        **common,
    )


__all__ = ["Localisation", "annotate", "failure_note", "localise"]
