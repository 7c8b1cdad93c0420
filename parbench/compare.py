"""Parity metrics, the tolerance policy, and the verdict with its explanation.

Every comparison reports all metrics whether it passes or not.  Generic metrics are computed in
float64 on the flattened arrays (candidate ``a`` against reference ``r``); task metrics look at what
the output means (class ranking, segmentation mask, generated image, per-anchor class).
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

CAP_DB = 200.0  # SNR/PSNR of identical arrays (JSON has no infinity)
HIGHER_IS_BETTER = {
    "cosine",
    "snr_db",
    "psnr_db",
    "top1_agree",
    "top5_overlap",
    "pixel_accuracy",
    "mean_iou",
    "class_agree",
}

# family -> metric -> threshold; task-specific entries apply only to outputs of that kind.
POLICY: dict[str, dict[str, float]] = {
    # different kernels and summation orders, same precision
    "fp32": {
        "rel_l2": 1e-3,
        "cosine": 0.9999,
        "top1_agree": 1.0,
        "pixel_accuracy": 0.995,
        "psnr_db": 55.0,
        "class_agree": 0.995,
    },
    # fp16 weights and activations (Core ML default): ~1e-3 relative error per op, compounding
    "fp16": {
        "rel_l2": 3e-2,
        "cosine": 0.999,
        "top5_overlap": 0.8,
        "pixel_accuracy": 0.97,
        "psnr_db": 35.0,
        "class_agree": 0.95,
    },
    # int8 post-training quantization: a visible but bounded change
    "int8": {
        "rel_l2": 0.35,
        "cosine": 0.94,
        "top5_overlap": 0.4,
        "pixel_accuracy": 0.75,
        "psnr_db": 18.0,
        "class_agree": 0.6,
    },
}


_BLOCK = 1 << 16  # elements per step of the error pass: its float64 temporaries stay in cache


@dataclasses.dataclass
class _Errors:
    """Sums over one pass of candidate ``a`` against reference ``r``, in float64."""

    size: int = 0
    err2: float = 0.0  # sum (a - r)^2
    ref2: float = 0.0  # sum r^2
    cand2: float = 0.0  # sum a^2
    cross: float = 0.0  # sum a * r
    abs_sum: float = 0.0
    abs_max: float = 0.0
    ref_min: float = math.inf
    ref_max: float = -math.inf
    worst: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, dtype=np.intp))


def _error_pass(a: np.ndarray, r: np.ndarray, n_worst: int = 0) -> _Errors:
    """Every generic metric's sums, and the ``n_worst`` largest absolute errors (flat indices,
    largest first, ties by position), in one blockwise pass: outputs run to millions of values,
    and whole-array float64 copies of them cost more than the arithmetic."""
    a = np.asarray(a).ravel()
    r = np.asarray(r).ravel()
    e = _Errors(size=r.size)
    idx: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for start in range(0, r.size, _BLOCK):
        ab = a[start : start + _BLOCK].astype(np.float64)
        rb = r[start : start + _BLOCK].astype(np.float64)
        d = ab - rb
        # einsum, not BLAS: OpenBLAS runs a dot this long on a second thread that spins afterwards
        e.err2 += float(np.einsum("i,i->", d, d))
        e.ref2 += float(np.einsum("i,i->", rb, rb))
        e.cand2 += float(np.einsum("i,i->", ab, ab))
        e.cross += float(np.einsum("i,i->", ab, rb))
        e.ref_min = min(e.ref_min, float(rb.min()))
        e.ref_max = max(e.ref_max, float(rb.max()))
        err = np.abs(d, out=d)
        e.abs_sum += float(err.sum())
        e.abs_max = max(e.abs_max, float(err.max()))
        if n_worst:  # each block's own worst hold the whole array's worst
            top = _largest(err, n_worst)
            idx.append(top + start)
            val.append(err[top])
    if idx:
        cand, vals = np.concatenate(idx), np.concatenate(val)
        e.worst = cand[np.lexsort((cand, -vals))][:n_worst]
    return e


def _generic(e: _Errors) -> dict[str, float]:
    na, nr = math.sqrt(e.cand2), math.sqrt(e.ref2)
    if na == 0 and nr == 0:
        cosine = 1.0
    elif na == 0 or nr == 0:
        cosine = 0.0
    else:
        cosine = e.cross / (na * nr)
    peak = e.ref_max - e.ref_min if e.size else 0.0
    peak = peak if peak > 0 else 1.0
    mse = e.err2 / max(e.size, 1)
    return {
        "max_abs": e.abs_max,
        "mean_abs": e.abs_sum / e.size if e.size else 0.0,
        "rel_l2": math.sqrt(e.err2) / max(nr, 1e-12),
        "cosine": cosine,
        "snr_db": CAP_DB if e.err2 == 0 else min(CAP_DB, 10 * math.log10(max(e.ref2, 1e-300) / e.err2)),
        "psnr_db": CAP_DB if mse == 0 else min(CAP_DB, 20 * math.log10(peak) - 10 * math.log10(mse)),
    }


def generic_metrics(a: np.ndarray, r: np.ndarray) -> dict[str, float]:
    return _generic(_error_pass(a, r))


def classification_metrics(a: np.ndarray, r: np.ndarray) -> dict[str, float]:
    """Rows of 2-D logits [N, C]: does the candidate rank classes as the reference does?"""
    a2, r2 = a.reshape(a.shape[0], -1), r.reshape(r.shape[0], -1)
    k = min(5, a2.shape[1])
    top_a = np.argsort(-a2, axis=1, kind="stable")[:, :k]
    top_r = np.argsort(-r2, axis=1, kind="stable")[:, :k]
    overlap = [len(set(x) & set(y)) / k for x, y in zip(top_a, top_r, strict=True)]
    return {"top1_agree": float(np.mean(top_a[:, 0] == top_r[:, 0])), "top5_overlap": float(np.mean(overlap))}


def segmentation_metrics(a: np.ndarray, r: np.ndarray) -> dict[str, float]:
    """[N, C, H, W] class scores: agreement of the argmax masks."""
    ma, mr = a.argmax(axis=1).ravel(), r.argmax(axis=1).ravel()
    n = r.shape[1]
    confusion = np.bincount(ma * n + mr, minlength=n * n).reshape(n, n)  # one pass over the pixels
    inter = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - inter
    present = union > 0  # classes either mask uses
    return {
        "pixel_accuracy": float(inter.sum() / ma.size),
        "mean_iou": float(np.mean(inter[present] / union[present])),
    }


def detection_metrics(a: np.ndarray, r: np.ndarray) -> dict[str, float]:
    """[N, anchors, classes] logits: does each anchor keep its top class?"""
    return {"class_agree": float((a.argmax(axis=-1) == r.argmax(axis=-1)).mean())}


def output_metrics(a: np.ndarray, r: np.ndarray, task: str) -> dict[str, float]:
    return _task_metrics(_generic(_error_pass(a, r)), a, r, task)


def _task_metrics(m: dict[str, float], a: np.ndarray, r: np.ndarray, task: str) -> dict[str, float]:
    if task == "classification" and r.ndim == 2 and r.shape[1] > 1:
        m.update(classification_metrics(a, r))
    elif task == "segmentation" and r.ndim == 4 and r.shape[1] > 1:
        m.update(segmentation_metrics(a, r))
    elif task == "detection" and r.ndim == 3 and r.shape[-1] > 4:
        m.update(detection_metrics(a, r))
    if task != "image-to-image":
        m.pop("psnr_db")  # PSNR is the image task's metric; SNR covers the others
    return m


def thresholds(
    family: str, variant: str, overrides: Mapping[str, Mapping[str, float]] | None = None
) -> dict[str, float]:
    """Policy for a family, with a model's overrides by family and then by variant applied."""
    t = dict(POLICY[family])
    for key in (family, variant):
        t.update((overrides or {}).get(key, {}))
    return t


@dataclasses.dataclass
class Check:
    metric: str
    value: float
    threshold: float
    ok: bool

    @property
    def op(self) -> str:
        return ">=" if self.metric in HIGHER_IS_BETTER else "<="


@dataclasses.dataclass
class OutputComparison:
    name: str
    metrics: dict[str, float]
    checks: list[Check]
    worst: list[tuple[tuple[int, ...], float, float]]  # (index, reference, candidate)
    problem: str = ""  # shape mismatch, NaN, missing output

    @property
    def passed(self) -> bool:
        return not self.problem and all(c.ok for c in self.checks)


@dataclasses.dataclass
class Comparison:
    outputs: list[OutputComparison]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def metrics(self) -> dict[str, dict[str, float]]:
        return {o.name: o.metrics for o in self.outputs}

    def explain(self) -> str:
        """A small table per output: metric, value, threshold, verdict; then the worst elements."""
        lines = []
        for o in self.outputs:
            lines.append(f"output {o.name!r}: {'ok' if o.passed else 'FAIL'}")
            if o.problem:
                lines.append(f"  {o.problem}")
                continue
            checked = {c.metric: c for c in o.checks}
            lines.append(f"  {'metric':<15}{'value':>14}  {'threshold':>13}")
            for name, value in o.metrics.items():
                c = checked.get(name)
                th = f"{c.op} {c.threshold:.6g}" if c else ""
                mark = "" if c is None else ("  ok" if c.ok else "  FAIL")
                lines.append(f"  {name:<15}{value:>14.6g}  {th:>13}{mark}")
            if o.worst:
                lines.append("  worst elements (index: reference -> candidate):")
                lines += [f"    {list(i)}: {ref:.6g} -> {cand:.6g}" for i, ref, cand in o.worst]
        return "\n".join(lines)


def compare(
    candidate: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    task: str,
    family: str,
    variant: str = "",
    overrides: Mapping[str, Mapping[str, float]] | None = None,
    n_worst: int = 3,
) -> Comparison:
    limits = thresholds(family, variant, overrides)
    outs = []
    for name, r in reference.items():
        if name not in candidate:
            outs.append(OutputComparison(name, {}, [], [], f"missing: candidate returned {list(candidate)}"))
            continue
        a = np.asarray(candidate[name])
        if a.shape != r.shape:
            outs.append(
                OutputComparison(
                    name, {}, [], [], f"shape mismatch: candidate {list(a.shape)}, reference {list(r.shape)}"
                )
            )
            continue
        if not np.all(np.isfinite(a)):
            bad = int((~np.isfinite(a)).sum())
            outs.append(OutputComparison(name, {}, [], [], f"{bad} of {a.size} candidate values are NaN/inf"))
            continue
        errors = _error_pass(a, r, n_worst)
        m = _task_metrics(_generic(errors), a, r, task)
        checks = [
            Check(k, m[k], limits[k], m[k] >= limits[k] if k in HIGHER_IS_BETTER else m[k] <= limits[k])
            for k in limits
            if k in m
        ]
        worst = [
            (tuple(int(x) for x in np.unravel_index(i, r.shape)), float(r.ravel()[i]), float(a.ravel()[i]))
            for i in errors.worst
        ]
        outs.append(OutputComparison(name, m, checks, worst))
    return Comparison(outs)


def _largest(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest values, largest first (ties: lowest index first); a partial
    sort, since outputs run to millions of values."""
    n = min(n, values.size)
    if n <= 0:
        return np.empty(0, dtype=np.intp)
    kth = np.partition(values, values.size - n)[values.size - n]  # the n-th largest value
    above = np.flatnonzero(values > kth)
    top = np.concatenate([above, np.flatnonzero(values == kth)[: n - above.size]])
    return top[np.lexsort((top, -values[top]))]


def merge_case_metrics(per_case: list[Comparison]) -> OrderedDict[str, dict[str, float]]:
    """Worst value of each metric over several cases of one size (what a verdict rests on)."""
    merged: OrderedDict[str, dict[str, float]] = OrderedDict()
    for comp in per_case:
        for o in comp.outputs:
            dst = merged.setdefault(o.name, {})
            for k, v in o.metrics.items():
                if k not in dst:
                    dst[k] = v
                else:
                    dst[k] = min(dst[k], v) if k in HIGHER_IS_BETTER else max(dst[k], v)
    return merged
