"""latency.csv: one row per model x form, columns per size."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from parbench.report.tables import Report

CSV_LEADING = (
    "model",
    "form",
    "variant",
    "executor",
    "threads",
    "load_ms",
    "first_run_ms_min",
    "first_run_ms_max",
    "artifact_bytes",
    "peak_rss_mb",
    "peak_rss_delta_mb",
    "parity",
    "parity_per_size",
)
CSV_PER_COLUMN = ("median_ms", "iqr_ms", "speedup", "first_run_ms")


def _no_formula(value: object) -> object:
    """Text a spreadsheet would run as a formula (a device may name itself '=...') gets a leading '."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def write_csv(rep: Report, path: Path) -> Path:
    """One row per model x form; per latency column (host size, then device columns):
    "<column> median_ms", "<column> iqr_ms", "<column> speedup", "<column> first_run_ms"."""
    frames = [t.numbers for t in rep.tables]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(CSV_LEADING))
    host = sorted({c for t in rep.tables for c in t.columns if c.isdigit()}, key=int)
    device = sorted({c for t in rep.tables for c in t.columns if not c.isdigit()})
    ordered = list(CSV_LEADING) + [f"{c} {k}" for c in host + device for k in CSV_PER_COLUMN]
    df = df.reindex(columns=ordered + [c for c in df.columns if c not in ordered])
    df = df.rename(columns=_no_formula).map(_no_formula)
    df.to_csv(path, index=False, float_format="%.6g")
    return path
