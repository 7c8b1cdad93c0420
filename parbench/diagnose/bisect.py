"""Find the first op where a Core ML program drifts from eager PyTorch.

Two comparisons, op by op, in program order:

* ``eager_vs_coreml``: the output of every leaf module of the eager model (forward hooks) against
  the Core ML value that carries it.  coremltools names MIL values after the torch graph's
  values -- TorchScript debug names (``input.5`` -> ``input_5``) for traced models, FX node names
  (``conv2d_3``) for ``torch.export`` programs -- plus suffixes such as ``_cast_fp16``.  We trace
  (or export) the module the same way, find the graph value each leaf module returns (its scope /
  ``nn_module_stack``), and look that name up in the program.  A match must be unique and agree in
  shape; anything ambiguous (a module called twice, a name two values share, a fused-away op such
  as a conv whose batch norm was folded into it) is skipped, not guessed.
* ``fp32_vs_fp16``: the same program run with fp16 rounding (Core ML's fp16 compute) against the
  program run at fp32 over the same weights; every value matches by name.  This isolates where
  fp16 compute loses precision from where the conversion itself is wrong.

``bisect()`` returns the full per-op table (pandas), the first rows whose SNR or cosine cross the
thresholds, and a short text rendering.  ``parbench bisect MODEL`` runs it on a zoo model.
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from parbench.compare import generic_metrics
from parbench.coreml_ref.model import MLModel
from parbench.zoo.outputs import TorchOutputFlattening

_SUFFIXES = ("_cast_fp16", "_cast_fp32", "_to_fp16", "_to_fp32", "_cast")
COLUMNS = [
    "comparison",
    "order",
    "name",
    "op_type",
    "module",
    "shape",
    "snr_db",
    "snr_drop",
    "cosine",
    "max_abs",
    "rel_l2",
    "over",
]


def normalize_name(name: str) -> str:
    """A MIL value name or torch value name -> the common key coremltools derives both from."""
    n = re.sub(r"\W", "_", name)
    changed = True
    while changed:
        changed = False
        for s in _SUFFIXES:
            if n.endswith(s) and len(n) > len(s):
                n, changed = n[: -len(s)], True
    if re.fullmatch(r"\d+", n):
        n = f"var_{n}"
    return n


# -- eager side -----------------------------------------------------------------------------------


def _leaf_modules(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in module.named_modules() if n and not list(m.children())]


def eager_outputs(
    module: nn.Module, inputs: Sequence[torch.Tensor], only: set[str] | None = None
) -> tuple[OrderedDict[str, np.ndarray], set[str]]:
    """Leaf modules' outputs (float32, copied at hook time: later in-place ops can't touch them),
    and the set of modules that ran more than once (their output is ambiguous).  ``only``
    limits the hooks to these module paths."""
    captured: OrderedDict[str, np.ndarray] = OrderedDict()
    repeated: set[str] = set()
    handles = []

    def hook_for(name: str) -> Any:
        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            if name in captured:
                repeated.add(name)
            if isinstance(out, torch.Tensor) and out.is_floating_point():
                captured[name] = out.detach().float().cpu().numpy().copy()

        return hook

    for name, m in _leaf_modules(module):
        if only is None or name in only:
            handles.append(m.register_forward_hook(hook_for(name)))
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for h in handles:
            h.remove()
    return captured, repeated


# -- which torch value each leaf module returns ---------------------------------------------------


def traced_value_names(module: nn.Module, inputs: Sequence[torch.Tensor]) -> dict[str, list[str]]:
    """Leaf module path -> debug names of the value it returns, from a TorchScript trace."""
    with torch.no_grad():
        tr = torch.jit.trace(module, tuple(inputs), check_trace=False)
    last: dict[str, list[str]] = {}
    for node in tr.inlined_graph.nodes():
        if node.kind().startswith("prim::"):
            continue
        scope = node.scopeName()
        if not scope:
            continue
        path = scope.split("/")[-1].removeprefix("__module.")
        names = [o.debugName() for o in node.outputs() if o.type().kind() == "TensorType"]
        if names:
            last[path] = names  # the module's last tensor-producing node is what it returns
    return last


def exported_value_names(module: nn.Module, inputs: Sequence[torch.Tensor]) -> dict[str, list[str]]:
    """Leaf module path -> FX node names of the value it returns, from ``torch.export``."""
    with torch.no_grad():
        ep = torch.export.export(module, tuple(inputs)).run_decompositions({})
    last: dict[str, list[str]] = {}
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        stack = node.meta.get("nn_module_stack")
        if not stack:
            continue
        path = list(stack.values())[-1][0]
        path = re.sub(r"^L\['self'\]\.?", "", path)
        names = [node.name]
        # a tuple-returning op (batch norm) is read through getitem; MIL names it after the op
        if node.target.__name__ == "getitem" if hasattr(node.target, "__name__") else False:
            src = node.args[0]
            names.append(getattr(src, "name", ""))
        last[path] = [n for n in names if n]
    return last


@dataclasses.dataclass
class Match:
    module: str
    mil_name: str
    op_type: str


def match_modules(
    module: nn.Module, ml: MLModel, inputs: Sequence[torch.Tensor], source: str = "auto"
) -> tuple[list[Match], str]:
    """Pair eager leaf modules with Core ML values by name; returns the matches and the frontend
    whose naming was used ("trace" or "export")."""
    dialect = ml.user_defined_metadata.get("com.github.apple.coremltools.source_dialect", "")
    if source == "auto":
        source = "export" if dialect.startswith("TorchExport") else "trace"
    ops = ml.op_types()
    by_key: dict[str, list[str]] = {}
    for name in ops:
        by_key.setdefault(normalize_name(name), []).append(name)
    value_names = (
        traced_value_names(module, inputs) if source == "trace" else exported_value_names(module, inputs)
    )
    matches = []
    used: dict[str, int] = {}
    for path, names in value_names.items():
        hits = {m for n in names for m in by_key.get(normalize_name(n), [])}
        if len(hits) != 1:
            continue
        (mil,) = hits
        matches.append(Match(path, mil, ops[mil]))
        used[mil] = used.get(mil, 0) + 1
    # a MIL value claimed by two modules is ambiguous
    matches = [m for m in matches if used[m.mil_name] == 1]
    return matches, source


# -- the bisect itself ----------------------------------------------------------------------------


@dataclasses.dataclass
class BisectResult:
    table: pd.DataFrame  # every compared op, both comparisons, program order
    first: pd.DataFrame  # the first rows over threshold, per comparison
    threshold_snr: float
    threshold_cos: float
    notes: list[str] = dataclasses.field(default_factory=list)

    def render(self, rows: int = 8) -> str:
        lines = []
        for comp, title in (
            ("eager_vs_coreml", "eager PyTorch vs Core ML program"),
            ("fp32_vs_fp16", "same program: fp32 compute vs fp16 compute"),
        ):
            t = self.table[self.table.comparison == comp]
            if t.empty:
                lines.append(f"{title}: nothing compared")
                continue
            over = t[t.over]
            head = (
                f"{title}: {len(t)} ops compared, {len(over)} over threshold "
                f"(SNR < {self.threshold_snr:g} dB or cosine < {self.threshold_cos:g})"
            )
            lines.append(head)
            if over.empty:
                worst = t.sort_values("snr_db").iloc[0]
                lines.append(
                    f"  worst: {worst['name']} ({worst['op_type']}) SNR {worst.snr_db:.1f} dB, "
                    f"cosine {worst.cosine:.6f}"
                )
                continue
            show = over.head(rows)
            width = max(len(str(n)) for n in show["name"])
            for _, r in show.iterrows():
                mod = f"  [{r.module}]" if r.module else ""
                lines.append(
                    f"  #{r.order:<4d} {r['name']:<{width}}  {r.op_type:<16s} SNR {r.snr_db:7.1f} dB  "
                    f"cos {r.cosine:.6f}  max|d| {r.max_abs:.3g}{mod}"
                )
            drops = t[t.snr_drop > 3.0].sort_values("snr_drop", ascending=False).head(3)
            if not drops.empty:
                lines.append(
                    "  largest SNR drops: "
                    + ", ".join(
                        f"{r['name']} ({r.op_type}) -{r.snr_drop:.1f} dB" for _, r in drops.iterrows()
                    )
                )
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


def _row(
    comp: str,
    order: int,
    name: str,
    op_type: str,
    module: str,
    a: np.ndarray,
    r: np.ndarray,
    snr_t: float,
    cos_t: float,
) -> dict[str, Any]:
    m = generic_metrics(a, r)
    return {
        "comparison": comp,
        "order": order,
        "name": name,
        "op_type": op_type,
        "module": module,
        "shape": tuple(r.shape),
        "snr_db": m["snr_db"],
        "cosine": m["cosine"],
        "max_abs": m["max_abs"],
        "rel_l2": m["rel_l2"],
        "over": bool(m["snr_db"] < snr_t or m["cosine"] < cos_t),
    }


def _as_tensors(
    inputs: Mapping[str, np.ndarray] | Sequence[Any],
) -> tuple[list[str] | None, tuple[torch.Tensor, ...]]:
    if isinstance(inputs, Mapping):
        return list(inputs), tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values())
    return None, tuple(torch.as_tensor(np.asarray(v)) for v in inputs)


def bisect(
    module: nn.Module,
    mlpackage: str | Path | MLModel,
    inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    *,
    threshold_snr: float = 30.0,
    threshold_cos: float = 0.999,
    source: str = "auto",
    first: int = 10,
    compare_fp16: bool = True,
) -> BisectResult:
    """Compare ``module`` (eager fp32) with its Core ML package op by op.

    ``inputs``: the eager model's inputs, as ``{name: array}`` (names as the package's inputs)
    or in argument order.  ``source``: how the package was converted ("trace", "export", or
    "auto" from the package metadata).  Rows "over" threshold have SNR below ``threshold_snr``
    dB or cosine below ``threshold_cos``.
    """
    ml = mlpackage if isinstance(mlpackage, MLModel) else MLModel(mlpackage)
    names, tensors = _as_tensors(inputs)
    feed_names = names if names is not None and set(names) == set(ml.input_names) else ml.input_names
    if len(feed_names) != len(tensors):
        raise ValueError(f"the package takes inputs {ml.input_names}; got {len(tensors)} inputs")
    feeds = {n: t.numpy() for n, t in zip(feed_names, tensors, strict=True)}
    module = module.eval()
    notes: list[str] = []

    order = {n: i for i, n in enumerate(ml.op_types())}
    op_types = ml.op_types()
    rows: list[dict[str, Any]] = []

    # one emulated (fp16) run; fp16-exact values are kept as float16, so at 640 px a large
    # network's values fit in memory, and the fp32 run below is compared on the fly
    emulated: dict[str, np.ndarray] = {}

    def keep(name: str, _op: str, v: Any) -> None:
        if isinstance(v, torch.Tensor) and v.is_floating_point() and name in order:
            h = v.to(torch.float16)
            emulated[name] = h.numpy() if torch.equal(h.float(), v) else v.numpy().copy()

    ml.predict(feeds, hook=keep)

    try:
        matches, used = match_modules(module, ml, tensors, source)
    except Exception as exc:  # the trace/export used only for names failed: still do fp16 vs fp32
        matches, used = [], source
        notes.append(f"could not {source} the module to match names ({type(exc).__name__}: {exc})")
    wanted = {m.module for m in matches}
    ref, repeated = eager_outputs(module, tensors, only=wanted)
    skipped = 0
    for m in matches:
        if m.module in repeated or m.module not in ref or m.mil_name not in emulated:
            skipped += 1
            continue
        a, r = emulated[m.mil_name], ref[m.module]
        if a.shape != r.shape:
            skipped += 1
            continue
        rows.append(
            _row(
                "eager_vs_coreml",
                order[m.mil_name],
                m.mil_name,
                m.op_type,
                m.module,
                a,
                r,
                threshold_snr,
                threshold_cos,
            )
        )
    n_leaf = len(_leaf_modules(module))
    notes.append(
        f"{len(rows)} of {n_leaf} leaf modules matched to Core ML values by {used} names"
        + (f" ({skipped} ambiguous or reshaped, skipped)" if skipped else "")
    )
    del ref

    if compare_fp16:
        has_fp16 = any(f.dtype == "fp16" for f in ml.inputs.values()) or _program_has_fp16(ml)
        if has_fp16:
            plain = MLModel(ml.mlmodel, function_name=ml.function_name, emulate_fp16=False)

            def against(name: str, _op: str, v: Any) -> None:
                if (
                    name in emulated
                    and name in order
                    and isinstance(v, torch.Tensor)
                    and v.is_floating_point()
                ):
                    rows.append(
                        _row(
                            "fp32_vs_fp16",
                            order[name],
                            name,
                            op_types[name],
                            "",
                            emulated[name],
                            v.numpy(),
                            threshold_snr,
                            threshold_cos,
                        )
                    )

            plain.predict(feeds, hook=against)
        else:
            notes.append("the program computes in fp32; no fp16 comparison")

    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "snr_drop"])
    table = table.sort_values(["comparison", "order"], kind="stable").reset_index(drop=True)
    # SNR this op lost against the previous compared value: where error enters, not only where
    # it has piled up past the threshold
    prev = table.groupby("comparison", sort=False)["snr_db"].shift(1)
    table.insert(COLUMNS.index("snr_drop"), "snr_drop", (prev - table["snr_db"]).fillna(0.0))
    firsts = table[table.over].groupby("comparison", sort=False).head(first).reset_index(drop=True)
    return BisectResult(table, firsts, threshold_snr, threshold_cos, notes)


def _program_has_fp16(ml: MLModel) -> bool:
    from parbench.coreml_ref.registry import var_dtype

    return any(
        var_dtype(v) == "fp16" for op in ml.program.functions[ml.function_name].operations for v in op.outputs
    )


# tensor-input Core ML forms, whose programs the reference executor can walk op by op
BISECT_VARIANTS = ("coreml_fp16", "coreml_fp32")


def note(module: nn.Module, artifact_path: Path, inputs: Mapping[str, np.ndarray], rows: int = 5) -> str:
    """Where a Core ML program starts to differ from eager, op by op, as lines for a failure
    message; says why when it cannot run (the verdict stands without it)."""
    try:
        # trace the same wrapper the Core ML forms convert, so value names line up
        found = bisect(TorchOutputFlattening(module), artifact_path, inputs, first=rows)
    except Exception as exc:
        return f"first diverging op: bisect could not run: {type(exc).__name__}: {exc}"
    return "first diverging ops (parbench bisect):\n" + found.render(rows=rows)
