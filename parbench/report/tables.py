"""Latency and parity tables: Markdown, CSV and one self-contained HTML page with plots.

Inputs are the files the suites write:

* bench results: pytest-benchmark JSON (``pytest bench/`` writes ``reports/bench/<UTC>.json``
  unless ``--benchmark-json`` says otherwise), one benchmark per model x variant x size and
  run index, with parbench's fields in ``extra_info``;
* parity results: JSON lines (``reports/parity/<UTC>.jsonl``), one line per case;
* device results, optionally: a history store (``--store``), whose device runs become their
  own columns ("iPhone15,2 / cpuOnly 256") in the same tables.

With no files named, the newest bench JSON and the newest parity JSON lines under ``reports/``
are used.  Outputs, in ``--out`` (default ``reports/``): ``latency.md``, ``latency.csv`` and
``report.html`` (inline CSS and inline SVG plots; it fetches nothing).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from parbench.backends.registry import all_variants
from parbench.run.timing import quantiles_ns

DEFAULT_REPORTS_DIR = Path("reports")
BENCH_SUBDIR = "bench"  # reports/bench/<UTC timestamp>.json
PARITY_SUBDIR = "parity"  # reports/parity/<UTC timestamp>.jsonl

# worst first: a form's verdict over several sizes is its worst one
VERDICT_ORDER = ("error", "fail", "xfail", "pass", "skip")
VERDICT_COLORS = {
    "pass": "#2e9d4f",
    "xfail": "#e0a526",
    "fail": "#d64541",
    "error": "#7b2d8e",
    "skip": "#a9adb3",
    "none": "#f2f3f5",
}
VERDICT_MEANING = {
    "pass": "within tolerance at every size",
    "xfail": "known failure (expected)",
    "fail": "outside tolerance at some size",
    "error": "export or run failed",
    "skip": "not run here (backend unavailable)",
    "none": "no parity result",
}
_KEY_METRICS = ("cosine", "max_abs", "rel_l2", "psnr_db", "snr_db", "top1_agree")


# ---------------------------------------------------------------------------------------------
# tables


def _variant_rank(v: str) -> tuple[int, str]:
    """Forms in the registry's order, then any other by name."""
    order = all_variants()
    return (order.index(v), v) if v in order else (len(order), v)


def _quartiles_ms(samples_ns: Sequence[np.ndarray]) -> tuple[float, float, float, int]:
    """(q1, median, q3) in ms of the pooled samples, and how many there are."""
    pooled = np.concatenate([np.asarray(s, dtype=np.float64) for s in samples_ns])
    q1, med, q3 = quantiles_ns(pooled.tolist())
    return q1 / 1e6, med / 1e6, q3 / 1e6, int(pooled.size)


def _first_valid(values: Iterable[Any]) -> Any:
    for v in values:
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            return v
    return None


def _median_of(values: Iterable[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.median(vals)) if vals else None


def summarize(bench: pd.DataFrame, device: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long table: one row per model x form x column (host size, or device/compute units/size).

    Samples of several runs (run_index) of one case are pooled; load and first-run times are
    the median over runs.  ``speedup`` is eager's median / this form's median in the same column.
    """
    rows: list[dict[str, Any]] = []
    if not bench.empty:
        threads_per_model = bench.groupby("model")["threads"].nunique(dropna=False)
        for (model, variant, size, threads), g in bench.groupby(
            ["model", "variant", "size", "threads"], dropna=False, sort=False
        ):
            q1, med, q3, n = _quartiles_ms(list(g["samples_ns"]))
            form = variant if threads_per_model[model] <= 1 else f"{variant} ({threads}t)"
            rows.append(
                {
                    "model": model,
                    "form": form,
                    "variant": variant,
                    "kind": "host",
                    "column": str(size),
                    "size": int(size),
                    "threads": threads,
                    "median_ms": med,
                    "q1_ms": q1,
                    "q3_ms": q3,
                    "iqr_ms": q3 - q1,
                    "n_samples": n,
                    "runs": int(g["run_index"].nunique()),
                    "load_ms": _median_of(g["load_ms"]),
                    "first_run_ms": _median_of(g["first_run_ms"]),
                    "artifact_bytes": _first_valid(g["artifact_bytes"]),
                    "peak_rss_mb": _median_of(g["peak_rss_mb"]),
                    "peak_rss_delta_mb": _median_of(g["peak_rss_delta_mb"]),
                    "executor": _first_valid(g["executor"]),
                }
            )
    if device is not None and not device.empty:
        for (dev, cu, model, variant, size), g in device.groupby(
            ["device_model", "compute_units", "model", "variant", "size"], dropna=False, sort=False
        ):
            label = f"{dev} / {cu}" if isinstance(cu, str) and cu else str(dev)
            samples = [s for s in g["samples_ns"] if s]
            base = {
                "model": model,
                "form": variant,
                "variant": variant,
                "kind": "device",
                "column": f"{label} {int(size)}",
                "device": label,
                "size": int(size),
                "threads": _first_valid(g["threads"]),
                "runs": int(g["run_index"].nunique()),
                "load_ms": _median_of(g["load_ms"]),
                "first_run_ms": _median_of(g["first_run_ms"]),
                "artifact_bytes": None,
                "peak_rss_mb": _median_of(g["peak_memory_mb"]),
                "peak_rss_delta_mb": None,
                "executor": _first_valid(g["executor"]) or _first_valid(g["runtime_name"]),
            }
            if samples:
                q1, med, q3, n = _quartiles_ms(samples)
                base.update(median_ms=med, q1_ms=q1, q3_ms=q3, iqr_ms=q3 - q1, n_samples=n)
            else:
                errors = [e for e in g["error"] if e]
                base.update(
                    median_ms=None,
                    q1_ms=None,
                    q3_ms=None,
                    iqr_ms=None,
                    n_samples=0,
                    error=errors[0] if errors else "no samples",
                )
            rows.append(base)
    cols = [
        "model",
        "form",
        "variant",
        "kind",
        "column",
        "device",
        "size",
        "threads",
        "median_ms",
        "q1_ms",
        "q3_ms",
        "iqr_ms",
        "n_samples",
        "runs",
        "load_ms",
        "first_run_ms",
        "artifact_bytes",
        "peak_rss_mb",
        "peak_rss_delta_mb",
        "executor",
        "error",
    ]
    df = pd.DataFrame(rows).reindex(columns=cols)
    if df.empty:
        return df
    eager = df[df["variant"] == "eager"].set_index(["model", "column", "threads"])["median_ms"]
    eager = eager[~eager.index.duplicated()]

    def speedup(r: pd.Series) -> float | None:
        key = (r["model"], r["column"], r["threads"])
        base = eager.get(key) if key in eager.index else None
        if base is None or r["median_ms"] is None or pd.isna(r["median_ms"]) or not r["median_ms"]:
            return None
        return float(base) / float(r["median_ms"])

    df["speedup"] = df.apply(speedup, axis=1)
    return df


def parity_by_form(parity: pd.DataFrame) -> pd.DataFrame:
    """One row per model x variant: worst verdict over sizes, the verdict per size and a
    one-line description of the metrics (for hover titles and table cells)."""
    rows = []
    for (model, variant), g in parity.groupby(["model", "variant"], sort=False):
        g = g.sort_values("size")
        verdicts = list(g["verdict"])
        worst = min(verdicts, key=lambda v: VERDICT_ORDER.index(v) if v in VERDICT_ORDER else 0)
        per_size = "; ".join(f"{s}: {v}" for s, v in zip(g["size"], verdicts, strict=True))
        details = []
        for _, r in g.iterrows():
            details.append(
                f"{r['size']} px {r['verdict']}: {_metric_line(r['metrics']) or r['message'] or '-'}"
            )
        if len(set(verdicts)) == 1:
            short = worst
        else:
            bad = [str(s) for s, v in zip(g["size"], verdicts, strict=True) if v == worst]
            short = f"{worst} @{','.join(bad)}"
        rows.append(
            {
                "model": model,
                "variant": variant,
                "verdict": worst,
                "short": short,
                "per_size": per_size,
                "detail": "\n".join(details),
            }
        )
    return pd.DataFrame(rows, columns=["model", "variant", "verdict", "short", "per_size", "detail"])


def _metric_line(metrics: Mapping[str, Any]) -> str:
    """The key metrics of the worst output: lowest cosine, else first output."""
    if not isinstance(metrics, Mapping) or not metrics:
        return ""
    outputs = {k: v for k, v in metrics.items() if isinstance(v, Mapping)}
    if not outputs:
        return ""
    name = min(
        outputs,
        key=lambda k: (
            outputs[k].get("cosine", 1.0) if isinstance(outputs[k].get("cosine"), int | float) else 1.0
        ),
    )
    parts = [f"{k} {_fmt_metric(outputs[name][k])}" for k in _KEY_METRICS if k in outputs[name]]
    prefix = f"{name}: " if len(outputs) > 1 else ""
    return prefix + ", ".join(parts)


def _fmt_metric(v: Any) -> str:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return str(v)
    if v == 0 or 1e-3 <= abs(v) < 1e4:
        return f"{v:.4g}"
    return f"{v:.2e}"


def _fmt_ms(v: float | None) -> str:
    if v is None or pd.isna(v):
        return ""
    for floor, spec in ((99.95, ".0f"), (9.995, ".1f"), (0.9995, ".2f")):  # 3 significant digits
        if v >= floor:
            return format(v, spec)
    return f"{v:.3f}"


def _fmt_mb(nbytes: Any) -> str:
    if nbytes is None or pd.isna(nbytes):
        return ""
    return f"{float(nbytes) / 1e6:.2f}"


def _column_order(df: pd.DataFrame) -> list[str]:
    host = sorted(df[df["kind"] == "host"]["column"].unique(), key=int)
    dev = df[df["kind"] == "device"].drop_duplicates("column").sort_values(["device", "size"])["column"]
    return list(host) + list(dev)


@dataclasses.dataclass
class ModelTable:
    model: str
    columns: list[str]  # latency columns: host sizes, then device columns
    display: pd.DataFrame  # formatted strings, index = form
    numbers: pd.DataFrame  # one row per form, numeric (the CSV)
    cells: dict[tuple[str, str], dict[str, Any]]  # (form, column) -> summary row (for titles)
    verdicts: dict[str, str]  # form -> worst parity verdict


def model_tables(summary: pd.DataFrame, parity: pd.DataFrame) -> list[ModelTable]:
    """Per model: rows = forms, columns = input sizes (then device columns)."""
    pf = (
        parity_by_form(parity)
        if not parity.empty
        else parity_by_form(
            pd.DataFrame(columns=["model", "variant", "size", "verdict", "metrics", "message"])
        )
    )
    tables = []
    models = list(dict.fromkeys(summary["model"])) if not summary.empty else []
    for model in sorted(models):
        sub = summary[summary["model"] == model]
        columns = _column_order(sub)
        forms = sorted(sub["form"].unique(), key=lambda f: _variant_rank(f.split(" ")[0]) + (f,))
        pm = pf[pf["model"] == model].set_index("variant")
        display_rows, number_rows = [], []
        cells: dict[tuple[str, str], dict[str, Any]] = {}
        verdicts: dict[str, str] = {}
        for form in forms:
            fr = sub[sub["form"] == form]
            variant = fr["variant"].iloc[0]
            disp: dict[str, Any] = {"form": form}
            num: dict[str, Any] = {
                "model": model,
                "form": form,
                "variant": variant,
                "executor": _first_valid(fr["executor"]),
                "threads": _first_valid(fr["threads"]),
            }
            for col in columns:
                hit = fr[fr["column"] == col]
                if hit.empty:
                    disp[col] = ""
                    for k in ("median_ms", "iqr_ms", "speedup", "first_run_ms"):
                        num[f"{col} {k}"] = None
                    continue
                r = hit.iloc[0].to_dict()
                cells[(form, col)] = r
                disp[col] = _cell_text(r)
                num[f"{col} median_ms"] = r["median_ms"]
                num[f"{col} iqr_ms"] = r["iqr_ms"]
                num[f"{col} speedup"] = r["speedup"]
                num[f"{col} first_run_ms"] = r["first_run_ms"]
            host = fr[fr["kind"] == "host"]
            loads = [v for v in host["load_ms"] if v is not None and not pd.isna(v)]
            firsts = [v for v in host["first_run_ms"] if v is not None and not pd.isna(v)]
            arts = sorted({int(v) for v in host["artifact_bytes"] if v is not None and not pd.isna(v)})
            peaks = [v for v in host["peak_rss_mb"] if v is not None and not pd.isna(v)]
            rises = [v for v in host["peak_rss_delta_mb"] if v is not None and not pd.isna(v)]
            verdict = pm["verdict"].get(variant) if variant in pm.index else None
            verdicts[form] = verdict or "none"
            disp["load ms"] = _fmt_ms(float(np.median(loads))) if loads else ""
            disp["first run ms"] = _range_text(firsts, _fmt_ms)
            disp["artifact MB"] = _range_text(arts, _fmt_mb)
            disp["peak RSS MB"] = (
                (f"{max(peaks):.0f}" + (f" (+{max(rises):.0f})" if rises else "")) if peaks else ""
            )
            disp["parity"] = pm["short"].get(variant, "") if variant in pm.index else ""
            num.update(
                {
                    "load_ms": float(np.median(loads)) if loads else None,
                    "first_run_ms_min": min(firsts) if firsts else None,
                    "first_run_ms_max": max(firsts) if firsts else None,
                    "artifact_bytes": max(arts) if arts else None,
                    "peak_rss_mb": max(peaks) if peaks else None,
                    "peak_rss_delta_mb": max(rises) if rises else None,
                    "parity": verdict,
                    "parity_per_size": pm["per_size"].get(variant) if variant in pm.index else None,
                }
            )
            display_rows.append(disp)
            number_rows.append(num)
        tables.append(
            ModelTable(
                model=model,
                columns=columns,
                display=pd.DataFrame(display_rows).set_index("form"),
                numbers=pd.DataFrame(number_rows),
                cells=cells,
                verdicts=verdicts,
            )
        )
    return tables


def _cell_text(r: Mapping[str, Any]) -> str:
    if r.get("median_ms") is None or pd.isna(r.get("median_ms")):
        return "error" if r.get("error") else ""
    text = f"{_fmt_ms(r['median_ms'])} ±{_fmt_ms(r['iqr_ms'])}"
    s = r.get("speedup")
    if s is not None and not pd.isna(s) and r.get("variant") != "eager":
        text += f" · {s:.2f}×"
    return text


def _range_text(values: Sequence[float], fmt: Any) -> str:
    if not values:
        return ""
    lo, hi = min(values), max(values)
    a, b = fmt(lo), fmt(hi)
    return a if a == b else f"{a}–{b}"


@dataclasses.dataclass
class Report:
    tables: list[ModelTable]
    summary: pd.DataFrame
    parity: pd.DataFrame
    bench_files: list[Path]
    parity_files: list[Path]
    store: Path | None
    machines: list[dict[str, Any]]
    notes: list[str]
    generated_utc: str
