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
import html
import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

DEFAULT_REPORTS_DIR = Path("reports")
BENCH_SUBDIR = "bench"  # reports/bench/<UTC timestamp>.json
PARITY_SUBDIR = "parity"  # reports/parity/<UTC timestamp>.jsonl

VARIANT_ORDER = (
    "eager", "torchscript", "lite", "quantized_int8", "onnx", "executorch_fp32", "executorch_int8",
    "coreml_fp16", "coreml_fp32", "coreml_image",
)
# worst first: a form's verdict over several sizes is its worst one
VERDICT_ORDER = ("error", "fail", "xfail", "pass", "skip")
VERDICT_COLORS = {
    "pass": "#2e9d4f", "xfail": "#e0a526", "fail": "#d64541", "error": "#7b2d8e", "skip": "#a9adb3",
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
_NAME_RE = re.compile(r"\[(?P<model>[A-Za-z0-9_]+)-(?P<variant>[A-Za-z0-9_]+)-(?P<size>\d+)\]$")
_KEY_METRICS = ("cosine", "max_abs", "rel_l2", "psnr_db", "snr_db", "top1_agree")


class ReportError(Exception):
    """The report cannot be built from these inputs; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------
# loading


def find_latest(directory: Path, suffix: str) -> Path | None:
    """The newest file with this suffix in ``directory`` (by modification time, then name), or
    None."""
    if not directory.is_dir():
        return None
    files = [p for p in directory.iterdir() if p.is_file() and p.name.endswith(suffix)]
    if not files:
        return None
    return max(files, key=lambda p: (p.stat().st_mtime, p.name))


_PARITY_RUN_RE = re.compile(r"^(?P<run>\d{8}T\d{6}Z-[0-9a-f]+)(?:-gw\d+)?\.jsonl$")


def parity_run_files(newest: Path) -> list[Path]:
    """All files of the parity run that wrote ``newest``: with pytest-xdist each worker writes
    ``<run>-gwN.jsonl``."""
    m = _PARITY_RUN_RE.match(newest.name)
    if not m:
        return [newest]
    return sorted(p for p in newest.parent.glob(f"{m['run']}*.jsonl")
                  if (q := _PARITY_RUN_RE.match(p.name)) and q["run"] == m["run"])


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc
    except ValueError as exc:
        raise ReportError(f"{path} is not valid JSON ({exc}); pass a pytest-benchmark JSON file "
                          "or parity JSON lines") from exc


def classify_results(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """Split files into (bench JSON, parity JSON lines); directories contribute their newest of
    each kind."""
    bench: list[Path] = []
    parity: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found = False
            for sub, suffix, bucket in ((BENCH_SUBDIR, ".json", bench), (PARITY_SUBDIR, ".jsonl", parity)):
                latest = find_latest(path / sub, suffix) or find_latest(path, suffix)
                if latest is not None:
                    bucket.append(latest)
                    found = True
            if not found:
                raise ReportError(f"{path} holds no bench JSON (*.json) or parity JSON lines (*.jsonl)")
        elif not path.exists():
            raise ReportError(f"{path} does not exist")
        elif path.suffix == ".jsonl":
            parity.append(path)
        elif path.suffix == ".json":
            bench.append(path)
        else:
            raise ReportError(f"{path}: unknown kind of result file; expected a pytest-benchmark .json "
                              "or parity .jsonl")
    return bench, parity


def load_bench(paths: Sequence[Path]) -> tuple[pd.DataFrame, list[dict[str, Any]], list[str]]:
    """One row per benchmark entry (model x variant x size x run); also machine infos and notes."""
    rows: list[dict[str, Any]] = []
    machines: list[dict[str, Any]] = []
    notes: list[str] = []
    for path in paths:
        doc = _read_json(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
            raise ReportError(f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' list); "
                              "write one with `pytest bench/ --benchmark-json=FILE`")
        machines.append({"file": str(path), "datetime": doc.get("datetime"),
                         "machine_info": doc.get("machine_info") or {}, "commit_info": doc.get("commit_info") or {}})
        for i, bench in enumerate(doc["benchmarks"]):
            extra = dict(bench.get("extra_info") or {})
            label = bench.get("name") or f"benchmarks[{i}]"
            m = _NAME_RE.search(bench.get("name") or "")
            for key in ("model", "variant", "size"):
                if key not in extra and m:
                    extra[key] = m[key]
            if not all(k in extra for k in ("model", "variant", "size")):
                notes.append(f"{path}: skipped {label}: not a parbench benchmark (no model/variant/size)")
                continue
            samples = extra.get("samples_ns")
            if not samples:
                data = (bench.get("stats") or {}).get("data")
                if not data:
                    notes.append(f"{path}: skipped {label}: no samples (extra_info.samples_ns or stats.data)")
                    continue
                samples = [s * 1e9 for s in data]
            rows.append({
                "model": str(extra["model"]), "variant": str(extra["variant"]), "size": int(extra["size"]),
                "run_index": int(extra.get("run_index") or 0), "threads": extra.get("threads"),
                "executor": extra.get("executor"), "artifact_bytes": extra.get("artifact_bytes"),
                "load_ms": extra.get("load_ms"), "first_run_ms": extra.get("first_run_ms"),
                "peak_rss_mb": extra.get("peak_rss_mb"), "peak_rss_delta_mb": extra.get("peak_rss_delta_mb"),
                "samples_ns": np.asarray(samples, dtype=np.float64), "file": str(path),
            })
    return pd.DataFrame(rows, columns=[
        "model", "variant", "size", "run_index", "threads", "executor", "artifact_bytes", "load_ms",
        "first_run_ms", "peak_rss_mb", "peak_rss_delta_mb", "samples_ns", "file"]), machines, notes


def load_parity(paths: Sequence[Path]) -> pd.DataFrame:
    """One row per parity case; a later line for the same model x variant x size wins."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ReportError(f"cannot read {path}: {exc}") from exc
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise ReportError(f"{path}:{n} is not a JSON line ({exc})") from exc
            missing = [k for k in ("model", "variant", "size", "verdict") if k not in rec]
            if missing:
                raise ReportError(f"{path}:{n}: parity record lacks {missing}; is this a parity "
                                  "results file (reports/parity/*.jsonl)?")
            rows.append({"model": str(rec["model"]), "variant": str(rec["variant"]), "size": int(rec["size"]),
                         "verdict": str(rec["verdict"]), "metrics": rec.get("metrics") or {},
                         "message": rec.get("message") or "", "executor": rec.get("executor")})
    df = pd.DataFrame(rows, columns=["model", "variant", "size", "verdict", "metrics", "message", "executor"])
    return df.drop_duplicates(["model", "variant", "size"], keep="last").reset_index(drop=True)


def load_device(store_path: Path) -> pd.DataFrame:
    """Device results from a history store: the newest run per device x compute units x case."""
    from parbench.store import Store

    if not Path(store_path).exists():
        raise ReportError(f"store {store_path} does not exist; pass the history file the collector "
                          "writes (parbench serve --store ...)")
    with Store(store_path) as store:
        df = store.results(source="device")
    if df.empty:
        return df
    df = df.sort_values("created_utc").drop_duplicates(
        ["device_model", "compute_units", "model", "variant", "size", "run_index", "case"], keep="last")
    newest = df.groupby(["device_model", "compute_units", "model", "variant", "size"], dropna=False)[
        "run_id"].transform("last")
    return df[df["run_id"] == newest].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# tables


def _variant_rank(v: str) -> tuple[int, str]:
    return (VARIANT_ORDER.index(v), v) if v in VARIANT_ORDER else (len(VARIANT_ORDER), v)


def _quartiles(samples: np.ndarray) -> tuple[float, float, float]:
    q1, med, q3 = np.percentile(samples, [25, 50, 75])
    return float(q1), float(med), float(q3)


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
                ["model", "variant", "size", "threads"], dropna=False, sort=False):
            pooled = np.concatenate(list(g["samples_ns"])) / 1e6
            q1, med, q3 = _quartiles(pooled)
            form = variant if threads_per_model[model] <= 1 else f"{variant} ({threads}t)"
            rows.append({
                "model": model, "form": form, "variant": variant, "kind": "host", "column": str(size),
                "size": int(size), "threads": threads, "median_ms": med, "q1_ms": q1, "q3_ms": q3,
                "iqr_ms": q3 - q1, "n_samples": int(pooled.size), "runs": int(g["run_index"].nunique()),
                "load_ms": _median_of(g["load_ms"]), "first_run_ms": _median_of(g["first_run_ms"]),
                "artifact_bytes": _first_valid(g["artifact_bytes"]), "peak_rss_mb": _median_of(g["peak_rss_mb"]),
                "peak_rss_delta_mb": _median_of(g["peak_rss_delta_mb"]),
                "executor": _first_valid(g["executor"]),
            })
    if device is not None and not device.empty:
        for (dev, cu, model, variant, size), g in device.groupby(
                ["device_model", "compute_units", "model", "variant", "size"], dropna=False, sort=False):
            label = f"{dev} / {cu}" if isinstance(cu, str) and cu else str(dev)
            samples = [np.asarray(s, dtype=np.float64) for s in g["samples_ns"] if s]
            base = {"model": model, "form": variant, "variant": variant, "kind": "device",
                    "column": f"{label} {int(size)}", "device": label, "size": int(size),
                    "threads": _first_valid(g["threads"]), "runs": int(g["run_index"].nunique()),
                    "load_ms": _median_of(g["load_ms"]), "first_run_ms": _median_of(g["first_run_ms"]),
                    "artifact_bytes": None, "peak_rss_mb": _median_of(g["peak_memory_mb"]),
                    "peak_rss_delta_mb": None,
                    "executor": _first_valid(g["executor"]) or _first_valid(g["runtime_name"])}
            if samples:
                pooled = np.concatenate(samples) / 1e6
                q1, med, q3 = _quartiles(pooled)
                base.update(median_ms=med, q1_ms=q1, q3_ms=q3, iqr_ms=q3 - q1, n_samples=int(pooled.size))
            else:
                errors = [e for e in g["error"] if e]
                base.update(median_ms=None, q1_ms=None, q3_ms=None, iqr_ms=None, n_samples=0,
                            error=errors[0] if errors else "no samples")
            rows.append(base)
    cols = ["model", "form", "variant", "kind", "column", "device", "size", "threads", "median_ms", "q1_ms",
            "q3_ms", "iqr_ms", "n_samples", "runs", "load_ms", "first_run_ms", "artifact_bytes",
            "peak_rss_mb", "peak_rss_delta_mb", "executor", "error"]
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
            details.append(f"{r['size']} px {r['verdict']}: {_metric_line(r['metrics']) or r['message'] or '-'}")
        if len(set(verdicts)) == 1:
            short = worst
        else:
            bad = [str(s) for s, v in zip(g["size"], verdicts, strict=True) if v == worst]
            short = f"{worst} @{','.join(bad)}"
        rows.append({"model": model, "variant": variant, "verdict": worst, "short": short,
                     "per_size": per_size, "detail": "\n".join(details)})
    return pd.DataFrame(rows, columns=["model", "variant", "verdict", "short", "per_size", "detail"])


def _metric_line(metrics: Mapping[str, Any]) -> str:
    """The key metrics of the worst output: lowest cosine, else first output."""
    if not isinstance(metrics, Mapping) or not metrics:
        return ""
    outputs = {k: v for k, v in metrics.items() if isinstance(v, Mapping)}
    if not outputs:
        return ""
    name = min(outputs, key=lambda k: outputs[k].get("cosine", 1.0) if isinstance(
        outputs[k].get("cosine"), int | float) else 1.0)
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
    pf = parity_by_form(parity) if not parity.empty else parity_by_form(pd.DataFrame(
        columns=["model", "variant", "size", "verdict", "metrics", "message"]))
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
            num: dict[str, Any] = {"model": model, "form": form, "variant": variant,
                                   "executor": _first_valid(fr["executor"]), "threads": _first_valid(fr["threads"])}
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
            disp["peak RSS MB"] = (f"{max(peaks):.0f}" + (f" (+{max(rises):.0f})" if rises else "")) if peaks else ""
            disp["parity"] = pm["short"].get(variant, "") if variant in pm.index else ""
            num.update({"load_ms": float(np.median(loads)) if loads else None,
                        "first_run_ms_min": min(firsts) if firsts else None,
                        "first_run_ms_max": max(firsts) if firsts else None,
                        "artifact_bytes": max(arts) if arts else None,
                        "peak_rss_mb": max(peaks) if peaks else None,
                        "peak_rss_delta_mb": max(rises) if rises else None,
                        "parity": verdict, "parity_per_size": pm["per_size"].get(variant) if variant in pm.index else None})
            display_rows.append(disp)
            number_rows.append(num)
        tables.append(ModelTable(model=model, columns=columns,
                                 display=pd.DataFrame(display_rows).set_index("form"),
                                 numbers=pd.DataFrame(number_rows), cells=cells, verdicts=verdicts))
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


# ---------------------------------------------------------------------------------------------
# outputs


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


def collect(results: Sequence[Path] = (), *, reports_dir: Path = DEFAULT_REPORTS_DIR,
            store: Path | None = None) -> Report:
    """Load results (or the newest under ``reports_dir``) and build the tables."""
    notes: list[str] = []
    if results:
        bench_files, parity_files = classify_results(results)
    else:
        b = find_latest(reports_dir / BENCH_SUBDIR, ".json")
        p = find_latest(reports_dir / PARITY_SUBDIR, ".jsonl")
        bench_files, parity_files = ([b] if b else []), (parity_run_files(p) if p else [])
    device = load_device(store) if store is not None else None
    if not bench_files and not parity_files and (device is None or device.empty):
        raise ReportError(
            f"no results to report: nothing under {reports_dir / BENCH_SUBDIR} (*.json) or "
            f"{reports_dir / PARITY_SUBDIR} (*.jsonl). Run `pytest bench/` and/or `pytest parity/` "
            "first, or name result files: parbench report FILE.json FILE.jsonl")
    bench, machines, bench_notes = load_bench(bench_files)
    notes += bench_notes
    parity = load_parity(parity_files)
    if store is not None and (device is None or device.empty):
        notes.append(f"store {store} holds no device results")
    summary = summarize(bench, device)
    tables = model_tables(summary, parity) if not summary.empty else []
    if not tables and bench_files:
        notes.append("the bench files hold no parbench benchmarks")
    return Report(tables=tables, summary=summary, parity=parity, bench_files=list(bench_files),
                  parity_files=list(parity_files), store=store, machines=machines, notes=notes,
                  generated_utc=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))


def _md_escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(df: pd.DataFrame, index_name: str, right: Sequence[str] = ()) -> str:
    """GitHub Markdown table; ``right``: columns aligned right (numbers)."""
    header = [index_name, *map(str, df.columns)]
    lines = ["| " + " | ".join(map(_md_escape, header)) + " |",
             "|" + "|".join(["---"] + ["---:" if c in right else "---" for c in df.columns]) + "|"]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join(_md_escape(x) for x in [idx, *row.tolist()]) + " |")
    return "\n".join(lines)


def _sources_lines(rep: Report) -> list[str]:
    lines = [f"Generated {rep.generated_utc}."]
    for m in rep.machines:
        info = m["machine_info"]
        cpu = (info.get("cpu") or {}).get("brand_raw") or info.get("processor") or "?"
        lines.append(f"Bench: {m['file']} ({m['datetime'] or '?'}; {cpu}; "
                     f"{info.get('system', '')} {info.get('release', '')}; Python {info.get('python_version', '?')}).")
    for p in rep.parity_files:
        lines.append(f"Parity: {p}.")
    if rep.store is not None:
        lines.append(f"Device results: {rep.store}.")
    return lines


CELL_LEGEND = ("Cells: median ms ±IQR (q3−q1) of every timed round (runs pooled) · speed-up vs eager "
               "in the same column. Load ms: median over sizes; first run ms and artifact MB: range "
               "over sizes. Peak RSS MB: the process's peak resident memory while the case loaded and ran "
               "(in brackets its rise over the case's start), largest over sizes. Parity: worst verdict "
               "over sizes (@ the sizes that have it).")


def write_markdown(rep: Report, path: Path) -> Path:
    out = ["# parbench latency report", "", *[f"- {s}" for s in _sources_lines(rep)], "", CELL_LEGEND, ""]
    for t in rep.tables:
        right = [c for c in t.display.columns if c != "parity"]
        out += [f"## {t.model}", "", _md_table(t.display, "form", right), ""]
    if not rep.parity.empty:
        out += ["## Parity overview", "", _md_table(_parity_matrix(rep.parity), "form"), ""]
    for n in rep.notes:
        out.append(f"> note: {n}")
    path.write_text("\n".join(out).rstrip() + "\n")
    return path


CSV_LEADING = ("model", "form", "variant", "executor", "threads", "load_ms", "first_run_ms_min",
               "first_run_ms_max", "artifact_bytes", "peak_rss_mb", "peak_rss_delta_mb", "parity", "parity_per_size")
CSV_PER_COLUMN = ("median_ms", "iqr_ms", "speedup", "first_run_ms")


def write_csv(rep: Report, path: Path) -> Path:
    """One row per model x form; per latency column (host size, then device columns):
    "<column> median_ms", "<column> iqr_ms", "<column> speedup", "<column> first_run_ms"."""
    frames = [t.numbers for t in rep.tables]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(CSV_LEADING))
    host = sorted({c for t in rep.tables for c in t.columns if c.isdigit()}, key=int)
    device = sorted({c for t in rep.tables for c in t.columns if not c.isdigit()})
    ordered = list(CSV_LEADING) + [f"{c} {k}" for c in host + device for k in CSV_PER_COLUMN]
    df = df.reindex(columns=ordered + [c for c in df.columns if c not in ordered])
    df.to_csv(path, index=False, float_format="%.6g")
    return path


def _parity_matrix(parity: pd.DataFrame) -> pd.DataFrame:
    """form x model -> short verdict."""
    pf = parity_by_form(parity)
    forms = sorted(pf["variant"].unique(), key=_variant_rank)
    models = sorted(pf["model"].unique())
    m = pd.DataFrame("", index=pd.Index(forms, name="form"), columns=models)
    for _, r in pf.iterrows():
        m.loc[r["variant"], r["model"]] = r["short"]
    return m


# -- HTML ---------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1200px;
color:#1d2430;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde1e6;
padding-bottom:4px}
.meta{color:#5b6470;font-size:12px;margin:0;padding-left:18px}
table{border-collapse:collapse;margin:8px 0 12px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d5d9de;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f4f6f8;font-weight:600;white-space:normal;vertical-align:bottom}
.scroll{overflow-x:auto;max-width:100%}td.form,th.form{text-align:left}
td.v-pass{color:#1f7a3a}td.v-fail,td.v-error{color:#b0302c;font-weight:600}td.v-xfail{color:#9a6a00}
.legend{font-size:12px;color:#5b6470}
.heat td{width:90px;text-align:center;color:#fff;font-weight:600}.heat td.form{color:#1d2430;
text-align:left;font-weight:400}
.heat td.v-none{color:#8a9099;font-weight:400}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-1px;margin:0 4px 0 12px;
border:1px solid #c3c8cf}
.plot svg{max-width:100%;height:auto}
.notes{color:#8a4b00}
.med{font-weight:600}.spread{font-size:11px;color:#5b6470}
"""


def _svg_plot(t: ModelTable, summary: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = summary[(summary["model"] == t.model) & summary["median_ms"].notna()]
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=100)
    try:
        cmap = plt.get_cmap("tab10")
        forms = list(t.display.index)
        for i, form in enumerate(forms):
            fr = sub[sub["form"] == form]
            for kind, dev in fr[["kind", "device"]].drop_duplicates().itertuples(index=False):
                g = fr[(fr["kind"] == kind) & ((fr["device"] == dev) if kind == "device" else True)]
                g = g.sort_values("size")
                x = g["size"].to_numpy(dtype=float)
                y = g["median_ms"].to_numpy(dtype=float)
                lo = y - g["q1_ms"].to_numpy(dtype=float)
                hi = g["q3_ms"].to_numpy(dtype=float) - y
                label = form if kind == "host" else f"{form} · {dev}"
                ax.errorbar(x, y, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], label=label,
                            color=cmap(i % 10), marker="o" if kind == "host" else "s",
                            linestyle="-" if kind == "host" else "--", capsize=3, markersize=4, linewidth=1.5)
        sizes = sorted(sub["size"].unique())
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(s) for s in sizes])
        ax.set_xlabel("input size (px)")
        ax.set_ylabel("median latency (ms)")
        y = sub["median_ms"].to_numpy(dtype=float)
        if y.size and y.min() > 0 and y.max() / y.min() > 20:
            ax.set_yscale("log")
        ax.set_title(f"{t.model}: latency vs input size (bars: IQR)", fontsize=11)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        fig.tight_layout()
        buf = io.StringIO()
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": t.model}):
            fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    finally:
        plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML declaration and DOCTYPE
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{html.escape(t.model)} latency vs input size" ', 1)


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _html_model_table(t: ModelTable) -> str:
    cols = list(t.display.columns)
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    rows = []
    for form, row in t.display.iterrows():
        tds = [f'<td class="form">{_e(form)}</td>']
        for c in cols:
            cls = ""
            title = ""
            if (form, c) in t.cells:
                r = t.cells[(form, c)]
                if r.get("median_ms") is not None and not pd.isna(r.get("median_ms")):
                    title = (f"{form} at {c}: median {r['median_ms']:.4g} ms, q1 {r['q1_ms']:.4g}, "
                             f"q3 {r['q3_ms']:.4g}, {r['n_samples']} samples over {r['runs']} run(s)"
                             + (f", executor {r['executor']}" if r.get("executor") else ""))
                elif r.get("error"):
                    title = str(r["error"])
            if c == "parity":
                cls = f' class="v-{_e(t.verdicts.get(form, "none"))}"'
            text = str(row[c])
            if (form, c) in t.cells and " " in text:  # median on top, spread and speed-up below
                main, rest = text.split(" ", 1)
                content = f'<span class="med">{_e(main)}</span><br><span class="spread">{_e(rest)}</span>'
            else:
                content = _e(text)
            title_attr = f' title="{_e(title)}"' if title else ""
            tds.append(f"<td{cls}{title_attr}>{content}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return (f'<table class="latency" data-model="{_e(t.model)}"><thead><tr><th class="form">form</th>{head}'
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _html_heatmap(parity: pd.DataFrame) -> str:
    pf = parity_by_form(parity)
    forms = sorted(pf["variant"].unique(), key=_variant_rank)
    models = sorted(pf["model"].unique())
    index = {(r["variant"], r["model"]): r for _, r in pf.iterrows()}
    head = "".join(f"<th>{_e(m)}</th>" for m in models)
    rows = []
    for form in forms:
        tds = [f'<td class="form">{_e(form)}</td>']
        for model in models:
            r = index.get((form, model))
            verdict = r["verdict"] if r is not None else "none"
            color = VERDICT_COLORS.get(verdict, VERDICT_COLORS["none"])
            title = f"{model} / {form}: {r['per_size']}\n{r['detail']}" if r is not None else f"{model} / {form}: no result"
            tds.append(f'<td class="v-{_e(verdict)}" style="background:{color}" title="{_e(title)}">'
                       f"{_e(r['short'] if r is not None else '–')}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    legend = "".join(f'<span class="swatch" style="background:{VERDICT_COLORS[v]}"></span>{_e(v)}: '
                     f"{_e(VERDICT_MEANING[v])}" for v in ("pass", "xfail", "fail", "error", "skip", "none"))
    return (f'<table class="heat"><thead><tr><th class="form">form \\ model</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
            f'<p class="legend">{legend}<br>Hover a cell for the verdict at each size and its metrics '
            "(worst output: cosine, max abs, relative L2, PSNR/SNR dB, top-1 agreement).</p>")


def write_html(rep: Report, path: Path) -> Path:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>parbench report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>parbench: latency and parity</h1>",
             '<ul class="meta">' + "".join(f"<li>{_e(s)}</li>" for s in _sources_lines(rep)) + "</ul>"]
    if not rep.parity.empty:
        parts += ['<h2 id="parity">Parity overview</h2>', _html_heatmap(rep.parity)]
    if rep.tables:
        parts.append(f'<p class="legend">{_e(CELL_LEGEND)}</p>')
    for t in rep.tables:
        parts += [f'<h2 id="model-{_e(t.model)}">{_e(t.model)}</h2>',
                  f'<div class="scroll">{_html_model_table(t)}</div>',
                  f'<div class="plot">{_svg_plot(t, rep.summary)}</div>']
    if rep.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in rep.notes) + "</ul>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path


@dataclasses.dataclass
class ReportOutputs:
    markdown: Path
    csv: Path
    html: Path
    report: Report


def build_report(results: Sequence[Path] = (), out_dir: Path = DEFAULT_REPORTS_DIR, *,
                 reports_dir: Path = DEFAULT_REPORTS_DIR, store: Path | None = None) -> ReportOutputs:
    """Write latency.md, latency.csv and report.html into ``out_dir``."""
    rep = collect(results, reports_dir=reports_dir, store=store)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return ReportOutputs(markdown=write_markdown(rep, out_dir / "latency.md"),
                         csv=write_csv(rep, out_dir / "latency.csv"),
                         html=write_html(rep, out_dir / "report.html"), report=rep)


@click.command("report")
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_REPORTS_DIR,
              show_default=True, help="Folder for latency.md, latency.csv and report.html.")
@click.option("--store", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="History store (SQLite); its device results become their own columns.")
@click.option("--reports-dir", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_REPORTS_DIR,
              show_default=True, help="Where to look for the newest results when none are named.")
def report_command(results: tuple[Path, ...], out_dir: Path, store: Path | None, reports_dir: Path) -> None:
    """Latency and parity tables (Markdown, CSV, HTML with plots) from bench JSON and parity
    JSON lines. With no RESULTS: the newest reports/bench/*.json and reports/parity/*.jsonl."""
    try:
        outputs = build_report(results, out_dir, reports_dir=reports_dir, store=store)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from exc
    rep = outputs.report
    for p in rep.bench_files:
        click.echo(f"bench:  {p}")
    for p in rep.parity_files:
        click.echo(f"parity: {p}")
    for note in rep.notes:
        click.echo(f"note: {note}", err=True)
    n_forms = sum(len(t.display) for t in rep.tables)
    click.echo(f"{len(rep.tables)} model(s), {n_forms} form row(s)")
    for p in (outputs.markdown, outputs.csv, outputs.html):
        click.echo(f"wrote {p}")
