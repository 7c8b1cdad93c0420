"""A localisation's result: the per-layer table of one form against eager, and what it says.

Per layer: SNR and cosine of the whole output, and the median of the channels' own SNRs (every
channel weighs alike: channels crushed by a shared int8 scale show there while the whole-tensor
SNR, dominated by the largest channel, stays high); the error a layer *introduces*: its SNR
against the worst SNR of the layers feeding it (eager data flow), not only the accumulated error.
A layer is flagged when its output alone would fail the family's output policy (SNR below
``-20 log10(rel_l2 limit)``, cosine below the cosine limit), when its shape differs, or when the
eager model ran it and a complete trace does not contain it.

:class:`LayerReport` holds the table (pandas; ``to_csv``), the first flagged layers, the largest
introduced drops, a text rendering, Model Explorer node data, and its summary as the parity
record's ``first_divergence``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from parbench import compare as cmp
from parbench.diagnose.intermediates import FormRun
from parbench.diagnose.layers import EagerRecord
from parbench.records.parity import FirstDivergence, LayerPoint

COLUMNS = [
    "order",
    "layer",
    "kind",
    "status",
    "form_value",
    "fused_with",
    "shape",
    "snr_db",
    "cosine",
    "ch_snr_db",
    "rel_l2",
    "max_abs",
    "input_snr_db",
    "introduced_db",
    "over",
    "why",
]


def layer_thresholds(
    family: str, overrides: Mapping[str, Mapping[str, float]] | None = None, variant: str = ""
) -> dict[str, float]:
    """Per-layer limits from the family's output policy: a layer is flagged when its output alone
    would fail it.  SNR from the relative-L2 limit (SNR = -20 log10 rel_l2)."""
    policy = cmp.thresholds(family, variant, overrides)
    snr = -20.0 * math.log10(policy["rel_l2"])
    return {"snr_db": round(snr, 2), "cosine": policy["cosine"], "ch_snr_db": round(snr, 2)}


def channel_snr_db(a: np.ndarray, r: np.ndarray) -> float:
    """The median over channels (dim 1) of each channel's own SNR: every channel weighs alike, so a
    channel crushed by a shared int8 scale shows even when a larger channel dominates the tensor;
    the median keeps a few near-zero channels from deciding it.  Channels that are exactly zero in
    the reference are left out."""
    if r.ndim < 2 or r.shape[1] < 2:
        return float("nan")
    c = r.shape[1]
    rr = np.moveaxis(r.astype(np.float64), 1, 0).reshape(c, -1)
    aa = np.moveaxis(a.astype(np.float64), 1, 0).reshape(c, -1)
    sig = (rr * rr).sum(axis=1)
    err = ((aa - rr) ** 2).sum(axis=1)
    live = sig > 0
    if not live.any():
        return float("nan")
    with np.errstate(divide="ignore", over="ignore"):
        per = np.where(err[live] == 0, cmp.CAP_DB, 10.0 * np.log10(sig[live] / np.maximum(err[live], 1e-300)))
    return float(min(cmp.CAP_DB, np.median(per)))


@dataclasses.dataclass
class LayerReport:
    model: str
    variant: str
    family: str
    size: int | None
    table: pd.DataFrame
    thresholds: dict[str, float]
    identity_source: str
    tool: str
    graph_id: str
    names: dict[str, str]  # layer -> the form's own name for its value
    notes: list[str]
    seconds: dict[str, float]
    artifact_check: dict[str, Any]
    extra: list[str]

    @property
    def compared(self) -> pd.DataFrame:
        return self.table[self.table.status == "compared"]

    @property
    def flagged(self) -> pd.DataFrame:
        return self.table[self.table.over]

    def first(self, n: int = 3) -> pd.DataFrame:
        return self.flagged.head(n)

    def first_layer(self) -> str | None:
        f = self.flagged
        return None if f.empty else str(f.iloc[0]["layer"])

    def largest_drops(self, n: int = 5) -> pd.DataFrame:
        """The layers that lose the most SNR against the layers feeding them.  Layers fed only by
        exact values (the model's inputs) are left out: their whole error is their SNR."""
        t = self.compared
        t = t[(t.introduced_db > 0) & (t.input_snr_db < cmp.CAP_DB)]
        return t.sort_values("introduced_db", ascending=False).head(n)

    def onset(self) -> str | None:
        """Does one layer start the damage, or does it build up?  Between the first compared layer
        and the first flagged one, the largest single SNR drop against the whole loss."""
        comp, flagged = self.compared, self.flagged
        if comp.empty or flagged.empty or flagged.iloc[0].status != "compared":
            return None
        f = flagged.iloc[0]
        upstream = comp[comp.order <= f.order]
        start = upstream.iloc[0]
        if start.layer == f.layer:
            return f"the damage starts at {f.layer}, the first layer compared"
        steps = upstream.iloc[1:]
        top = steps.sort_values("introduced_db", ascending=False).iloc[0]
        total = float(start.snr_db - f.snr_db)
        if total <= 0 or top.introduced_db <= 0:
            return (
                f"the damage starts at {f.layer}: {f.why} there, while the whole-tensor SNR did not fall "
                f"before it ({start.snr_db:.1f} dB at {start.layer}, {f.snr_db:.1f} dB at {f.layer})"
            )
        if total > 0 and top.introduced_db >= 0.5 * total:
            return f"the damage starts at {top.layer}: it loses {top.introduced_db:.1f} dB of the {total:.1f} dB lost before {f.layer}"
        return (
            f"no single layer starts it: SNR falls from {start.snr_db:.1f} dB ({start.layer}) to {f.snr_db:.1f} dB "
            f"({f.layer}) over {len(steps)} compared layers; the largest single drop is {top.introduced_db:.1f} dB "
            f"({top.layer})"
        )

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(path, index=False)
        return path

    def node_data(self, metric: str = "snr_db") -> dict[str, Any]:
        """Model Explorer node data (``ModelNodeData`` JSON: graph id -> results and thresholds), keyed
        by the form's node / tensor names: ONNX output tensor names, FX node names of the exported
        program for ExecuTorch, TorchScript debug names, Core ML value names."""
        if metric not in ("snr_db", "cosine", "ch_snr_db", "introduced_db"):
            raise ValueError(f"metric must be snr_db, cosine, ch_snr_db or introduced_db, got {metric!r}")
        results = {}
        for _, r in self.compared.iterrows():
            v = r[metric]
            key = self.names.get(r["layer"])
            if key is None or v is None or (isinstance(v, float) and not math.isfinite(v)):
                continue
            results[key] = {"value": round(float(v), 6)}
        if metric == "introduced_db":
            cuts = [(3.0, "#ffffff"), (10.0, "#fde68a"), (1e9, "#ef4444")]
        elif metric == "cosine":
            t = self.thresholds["cosine"]
            cuts = [(t, "#ef4444"), (1 - (1 - t) / 10, "#fde68a"), (2.0, "#bbf7d0")]
        else:
            t = self.thresholds["snr_db" if metric == "snr_db" else "ch_snr_db"]
            cuts = [(t, "#ef4444"), (t + 10, "#fde68a"), (1e9, "#bbf7d0")]
        return {
            self.graph_id: {"results": results, "thresholds": [{"value": v, "bgColor": c} for v, c in cuts]}
        }

    def write_node_data(self, path: str | Path, metric: str = "snr_db") -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.node_data(metric), indent=1))
        return path

    def render(self, rows: int = 10) -> str:
        t = self.table
        comp = self.compared
        where = f" at {self.size}px" if self.size else ""
        lines = [
            f"{self.model} as {self.variant}{where}: {len(comp)} of {len(t)} layers compared with eager "
            f"({self.identity_source}); values: {self.tool}",
            f"flag: SNR < {self.thresholds['snr_db']:g} dB, cosine < {self.thresholds['cosine']:g} or "
            f"median channel SNR < {self.thresholds['ch_snr_db']:g} dB ({self.family} policy), "
            "shape differs, or absent from the form",
        ]
        flagged = self.flagged
        if flagged.empty:
            if not comp.empty:
                w = comp.sort_values("snr_db").iloc[0]
                lines.append(
                    f"no layer flagged; worst: {w.layer} SNR {w.snr_db:.1f} dB, cosine {w.cosine:.6f}"
                )
        else:
            lines.append(f"first flagged layers ({len(flagged)} flagged in all):")
            for _, r in flagged.head(rows).iterrows():
                lines.append("  " + _row_text(r))
            if (story := self.onset()) is not None:
                lines.append(story)
        drops = self.largest_drops(5)
        near = not comp.empty and comp.snr_db.min() < self.thresholds["snr_db"] + 20
        if not drops.empty and (near or not flagged.empty):
            lines.append("largest error introduced (SNR lost against the layers feeding it):")
            for _, r in drops.iterrows():
                lines.append(
                    f"  #{int(r.order):<4d} {r.layer} ({r.kind}): -{r.introduced_db:.1f} dB "
                    f"(inputs {r.input_snr_db:.1f} dB -> {r.snr_db:.1f} dB)"
                )
        if self.extra:
            lines.append(
                "the form runs layers the eager model did not run on this input (a branch fixed at export?): "
                + ", ".join(self.extra[:8])
            )
        check = self.artifact_check
        if check:
            if check.get("ok"):
                lines.append(f"rebuilt program matches the shipped artifact (max |d| {check['max_abs']:.3g})")
            else:
                lines.append(f"WARNING: the rebuilt program differs from the shipped artifact: {check}")
        skipped = t[t.status == "skipped"]
        if not skipped.empty:
            paths = sorted(t.layer, key=len, reverse=True)
            general = skipped.why.map(lambda w: _without_paths(str(w), paths))
            reasons = general.groupby(general).size().sort_values(ascending=False)
            lines.append("not compared: " + "; ".join(f"{n} x {why}" for why, n in reasons.head(4).items()))
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items()))
        return "\n".join(lines)

    def table_text(self, rows: int | None = None) -> str:
        """The per-layer table as text: every compared (or flagged) layer in eager order, with its
        SNR, cosine, median channel SNR and the error it introduces; ``rows`` limits the lines."""
        t = self.table[self.table.status != "skipped"]
        if rows is not None:
            t = t.head(rows)
        width = max([len("layer"), *(len(str(x)) for x in t.layer)])
        head = (
            f"{'#':>4}  {'layer':<{width}}  {'kind':<18} {'SNR dB':>7} {'cosine':>9} {'ch-SNR':>7} "
            f"{'introduced':>10}  flag"
        )
        lines = [head]
        for _, r in t.iterrows():
            if r.status != "compared":
                lines.append(
                    f"{int(r.order):>4}  {r.layer:<{width}}  {r.kind:<18} {r.status.upper()}: {r.why}"
                )
                continue
            if pd.isna(r.introduced_db):
                intro = ""
            elif r.input_snr_db >= cmp.CAP_DB:
                intro = "(inputs)"  # fed by exact values: its whole error, as its SNR says
            else:
                intro = f"{-r.introduced_db:+.1f}"
            lines.append(
                f"{int(r.order):>4}  {r.layer:<{width}}  {str(r.kind)[:18]:<18} {r.snr_db:7.1f} "
                f"{r.cosine:9.5f} {_num(r.ch_snr_db):>7} {intro:>10}  {'<<' if r.over else ''}"
            )
        return "\n".join(lines)

    def first_divergence(self, case: str = "", top: int = 5) -> FirstDivergence:
        """The summary a parity record carries (``first_divergence``), with the SNR profile."""
        comp = self.compared
        profile = [
            LayerPoint(
                order=int(r.order),
                layer=str(r.layer),
                snr_db=_finite(r.snr_db),
                introduced_db=_finite(r.introduced_db),
                flagged=bool(r.over),
            )
            for _, r in comp.iterrows()
        ]
        drops = self.largest_drops(1)
        common: dict[str, Any] = {
            "thresholds": dict(self.thresholds),
            "layers": len(self.table),
            "compared": len(comp),
            "identity": self.identity_source,
            "tool": self.tool,
            "case": case,
            "size": self.size,
            "seconds": round(float(self.seconds.get("total", 0.0)), 2),
            "profile": profile,
            "largest_drop": (
                f"{drops.iloc[0].layer} -{drops.iloc[0].introduced_db:.1f} dB" if not drops.empty else ""
            ),
        }
        flagged = self.flagged
        if flagged.empty:
            worst = comp.sort_values("snr_db").iloc[0] if not comp.empty else None
            reason = "no layer crosses the per-layer limits"
            if worst is not None:
                reason += f"; worst {worst.layer} SNR {worst.snr_db:.1f} dB, cosine {worst.cosine:.5f}"
            return FirstDivergence(status="none", reason=reason, **common)
        f = flagged.iloc[0]
        return FirstDivergence(
            status="found",
            layer=str(f.layer),
            kind=str(f.kind),
            how=str(f.status),
            reason=str(f.why or ""),
            fused_with=[x for x in str(f.fused_with or "").split(",") if x],
            snr_db=_finite(f.snr_db),
            cosine=_finite(f.cosine),
            ch_snr_db=_finite(f.ch_snr_db),
            introduced_db=_finite(f.introduced_db),
            flagged=[str(x) for x in flagged.layer.head(top)],
            onset=self.onset() or "",
            **common,
        )

    def __str__(self) -> str:
        return self.render()


def _finite(v: Any) -> float | None:
    """A table value as a JSON-safe float: None for missing, NaN or infinite values."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)) or pd.isna(v):
        return None
    return float(v)


def _num(v: Any) -> str:
    return "" if _finite(v) is None else f"{float(v):.1f}"


def _without_paths(why: str, paths: list[str]) -> str:
    """A skip reason with layer names taken out, to count reasons."""
    for p in paths:
        why = re.sub(rf"(?<![\w.]){re.escape(p)}(?![\w.])", "<layer>", why)
    return why


def _row_text(r: Any) -> str:
    if r.status == "absent":
        return f"#{int(r.order):<4d} {r.layer} ({r.kind}): ABSENT from the form: {r.why}"
    if r.status == "shape":
        return f"#{int(r.order):<4d} {r.layer} ({r.kind}): {r.why}"
    fused = f" [with {r.fused_with}]" if r.fused_with else ""
    return (
        f"#{int(r.order):<4d} {r.layer} ({r.kind}){fused}: SNR {r.snr_db:6.1f} dB  cos {r.cosine:.5f}  "
        f"ch-SNR {r.ch_snr_db:6.1f} dB  introduced {-r.introduced_db:+.1f} dB  ({r.why})"
    )


def compare_layers(eager: EagerRecord, run: FormRun, limits: Mapping[str, float]) -> pd.DataFrame:
    rows = []
    snr_of: dict[str, float] = {}
    layers = eager.by_path()
    for layer in eager.layers:
        row: dict[str, Any] = dict.fromkeys(COLUMNS)
        row.update(
            order=layer.order,
            layer=layer.path,
            kind=layer.kind,
            shape=tuple(layer.shape),
            over=False,
            fused_with=",".join(run.map.fused.get(layer.path, [])),
        )
        key = run.map.where.get(layer.path)
        if layer.path in run.map.absent:
            row.update(status="absent", why=run.map.absent[layer.path], over=True)
        elif key is None or key not in run.values:
            row.update(status="skipped", why=run.map.skipped.get(layer.path, "no value read from the form"))
        else:
            a, r = run.values[key], eager.values[layer.path]
            row["form_value"] = run.names.get(key, key)
            if a.shape != r.shape:
                if a.size == r.size:
                    a = a.reshape(r.shape)
                else:
                    row.update(
                        status="shape",
                        over=True,
                        why=f"the form's value has shape {list(a.shape)}, eager {list(r.shape)}",
                    )
                    rows.append(row)
                    continue
            if not np.all(np.isfinite(a)):
                row.update(
                    status="compared",
                    over=True,
                    snr_db=-math.inf,
                    cosine=0.0,
                    ch_snr_db=-math.inf,
                    why=f"{int((~np.isfinite(a)).sum())} NaN/inf values",
                )
                snr_of[layer.path] = -math.inf
                rows.append(row)
                continue
            m = cmp.generic_metrics(a, r)
            ch = channel_snr_db(a, r)
            why = []
            if m["snr_db"] < limits["snr_db"]:
                why.append("SNR")
            if m["cosine"] < limits["cosine"]:
                why.append("cosine")
            if math.isfinite(ch) and ch < limits["ch_snr_db"]:
                why.append("channel SNR")
            row.update(
                status="compared",
                snr_db=m["snr_db"],
                cosine=m["cosine"],
                ch_snr_db=ch,
                rel_l2=m["rel_l2"],
                max_abs=m["max_abs"],
                over=bool(why),
                why=" and ".join(why) + " below limit" if why else "",
            )
            snr_of[layer.path] = m["snr_db"]
        rows.append(row)

    memo: dict[str, float] = {}

    def effective(path: str, depth: int = 0) -> float:
        """The SNR a layer's output carries: measured, or inherited from its inputs if not compared."""
        if path in snr_of:
            return snr_of[path]
        if path in memo:
            return memo[path]
        memo[path] = cmp.CAP_DB  # cycles cannot occur in one forward; this guards recursion anyway
        layer = layers.get(path)
        v = (
            cmp.CAP_DB
            if layer is None or depth > 50
            else min((effective(p, depth + 1) for p in layer.producers), default=cmp.CAP_DB)
        )
        memo[path] = v
        return v

    for row in rows:
        if row["status"] != "compared" or row["snr_db"] is None:
            continue
        layer = layers[row["layer"]]
        base = min((effective(p) for p in layer.producers), default=cmp.CAP_DB)
        row["input_snr_db"] = base
        row["introduced_db"] = base - row["snr_db"] if math.isfinite(row["snr_db"]) else math.inf
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table
