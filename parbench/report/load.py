"""The report's inputs: benchmark files, parity JSON lines and device results from the store."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from parbench.errors import RecordError, ReportError
from parbench.records import bench, parity
from parbench.report.tables import BENCH_SUBDIR, PARITY_SUBDIR


def find_latest(directory: Path, suffix: str) -> Path | None:
    """The newest file with this suffix in ``directory`` (by modification time, then name), or
    None."""
    if not directory.is_dir():
        return None
    files = [p for p in directory.iterdir() if p.is_file() and p.name.endswith(suffix)]
    if not files:
        return None
    return max(files, key=lambda p: (p.stat().st_mtime, p.name))


def classify_results(paths: Iterable[Path]) -> tuple[list[Path], list[Path]]:
    """Split files into (bench JSON, parity JSON lines); directories contribute their newest of
    each kind."""
    bench_files: list[Path] = []
    parity_files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            found = False
            for sub, suffix, bucket in (
                (BENCH_SUBDIR, ".json", bench_files),
                (PARITY_SUBDIR, ".jsonl", parity_files),
            ):
                latest = find_latest(path / sub, suffix) or find_latest(path, suffix)
                if latest is not None:
                    bucket.append(latest)
                    found = True
            if not found:
                raise ReportError(f"{path} holds no bench JSON (*.json) or parity JSON lines (*.jsonl)")
        elif not path.exists():
            raise ReportError(f"{path} does not exist")
        elif path.suffix == ".jsonl":
            parity_files.append(path)
        elif path.suffix == ".json":
            bench_files.append(path)
        else:
            raise ReportError(
                f"{path}: unknown kind of result file; expected a pytest-benchmark .json or parity .jsonl"
            )
    return bench_files, parity_files


_BENCH_COLUMNS = (
    "model",
    "variant",
    "size",
    "run_index",
    "threads",
    "executor",
    "artifact_bytes",
    "load_ms",
    "first_run_ms",
    "peak_rss_mb",
    "peak_rss_delta_mb",
)


def load_bench(paths: Sequence[Path]) -> tuple[pd.DataFrame, list[dict[str, Any]], list[str]]:
    """One row per benchmark entry (model x variant x size x run); also machine infos and notes."""
    rows: list[dict[str, Any]] = []
    machines: list[dict[str, Any]] = []
    notes: list[str] = []
    for path in paths:
        try:
            doc = bench.read(path)
        except RecordError as exc:
            raise ReportError(str(exc)) from exc
        machines.append(
            {
                "file": str(path),
                "datetime": doc.datetime,
                "machine_info": doc.machine_info,
                "commit_info": doc.commit_info,
            }
        )
        for i, entry in enumerate(doc.benchmarks):
            label = entry.name or f"benchmarks[{i}]"
            try:
                extra = entry.parbench()
                if extra is None:
                    notes.append(f"{path}: skipped {label}: not a parbench benchmark (no model/variant/size)")
                    continue
                samples = entry.samples("wall")
            except RecordError as exc:
                notes.append(f"{path}: skipped {label}: {exc}")
                continue
            row = {k: getattr(extra, k) for k in _BENCH_COLUMNS}
            rows.append({**row, "samples_ns": np.asarray(samples, dtype=np.float64), "file": str(path)})
    return pd.DataFrame(rows, columns=[*_BENCH_COLUMNS, "samples_ns", "file"]), machines, notes


def load_parity(paths: Sequence[Path]) -> pd.DataFrame:
    """One row per parity case; a later record for the same model x variant x size wins."""
    try:
        records = parity.latest(parity.read(paths))
    except RecordError as exc:
        raise ReportError(str(exc)) from exc
    columns = ["model", "variant", "size", "verdict", "metrics", "message", "executor", "first_divergence"]
    return pd.DataFrame([{c: getattr(r, c) for c in columns} for r in records], columns=columns)


def load_device(store_path: Path) -> pd.DataFrame:
    """Device results from a history store: the newest run per device x compute units x case."""
    from parbench.history.store import Store

    if not Path(store_path).exists():
        raise ReportError(
            f"store {store_path} does not exist; pass the history file the collector "
            "writes (parbench serve --store ...)"
        )
    with Store(store_path) as store:
        df = store.results(source="device")
    if df.empty:
        return df
    df = df.sort_values("created_utc").drop_duplicates(
        ["device_model", "compute_units", "model", "variant", "size", "run_index", "case"], keep="last"
    )
    newest = df.groupby(["device_model", "compute_units", "model", "variant", "size"], dropna=False)[
        "run_id"
    ].transform("last")
    return df[df["run_id"] == newest].reset_index(drop=True)
