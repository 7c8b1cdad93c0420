"""The report's inputs: benchmark files, parity JSON lines and device results from the store."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from parbench.errors import ReportError
from parbench.records.ids import CaseKey
from parbench.report.tables import BENCH_SUBDIR, PARITY_SUBDIR

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
    return sorted(
        p
        for p in newest.parent.glob(f"{m['run']}*.jsonl")
        if (q := _PARITY_RUN_RE.match(p.name)) and q["run"] == m["run"]
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc
    except ValueError as exc:
        raise ReportError(
            f"{path} is not valid JSON ({exc}); pass a pytest-benchmark JSON file or parity JSON lines"
        ) from exc


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
            raise ReportError(
                f"{path}: unknown kind of result file; expected a pytest-benchmark .json or parity .jsonl"
            )
    return bench, parity


def load_bench(paths: Sequence[Path]) -> tuple[pd.DataFrame, list[dict[str, Any]], list[str]]:
    """One row per benchmark entry (model x variant x size x run); also machine infos and notes."""
    rows: list[dict[str, Any]] = []
    machines: list[dict[str, Any]] = []
    notes: list[str] = []
    for path in paths:
        doc = _read_json(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
            raise ReportError(
                f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' list); "
                "write one with `pytest bench/ --benchmark-json=FILE`"
            )
        machines.append(
            {
                "file": str(path),
                "datetime": doc.get("datetime"),
                "machine_info": doc.get("machine_info") or {},
                "commit_info": doc.get("commit_info") or {},
            }
        )
        for i, bench in enumerate(doc["benchmarks"]):
            extra = dict(bench.get("extra_info") or {})
            label = bench.get("name") or f"benchmarks[{i}]"
            case = CaseKey.parse(bench.get("name") or "")
            for key in ("model", "variant", "size"):
                if key not in extra and case:
                    extra[key] = getattr(case, key)
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
            rows.append(
                {
                    "model": str(extra["model"]),
                    "variant": str(extra["variant"]),
                    "size": int(extra["size"]),
                    "run_index": int(extra.get("run_index") or 0),
                    "threads": extra.get("threads"),
                    "executor": extra.get("executor"),
                    "artifact_bytes": extra.get("artifact_bytes"),
                    "load_ms": extra.get("load_ms"),
                    "first_run_ms": extra.get("first_run_ms"),
                    "peak_rss_mb": extra.get("peak_rss_mb"),
                    "peak_rss_delta_mb": extra.get("peak_rss_delta_mb"),
                    "samples_ns": np.asarray(samples, dtype=np.float64),
                    "file": str(path),
                }
            )
    return (
        pd.DataFrame(
            rows,
            columns=[
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
                "samples_ns",
                "file",
            ],
        ),
        machines,
        notes,
    )


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
                raise ReportError(
                    f"{path}:{n}: parity record lacks {missing}; is this a parity "
                    "results file (reports/parity/*.jsonl)?"
                )
            rows.append(
                {
                    "model": str(rec["model"]),
                    "variant": str(rec["variant"]),
                    "size": int(rec["size"]),
                    "verdict": str(rec["verdict"]),
                    "metrics": rec.get("metrics") or {},
                    "message": rec.get("message") or "",
                    "executor": rec.get("executor"),
                }
            )
    df = pd.DataFrame(rows, columns=["model", "variant", "size", "verdict", "metrics", "message", "executor"])
    return df.drop_duplicates(["model", "variant", "size"], keep="last").reset_index(drop=True)


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
