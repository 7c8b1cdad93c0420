"""Building a report: collect the inputs, write latency.md, latency.csv and report.html."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from parbench.errors import ReportError
from parbench.records import parity as parity_records
from parbench.report.csv_table import write_csv
from parbench.report.html import write_html
from parbench.report.load import (
    classify_results,
    find_latest,
    load_bench,
    load_device,
    load_parity,
)
from parbench.report.markdown import write_markdown
from parbench.report.tables import (
    BENCH_SUBDIR,
    DEFAULT_REPORTS_DIR,
    PARITY_SUBDIR,
    Report,
    model_tables,
    summarize,
)


@dataclasses.dataclass
class ReportOutputs:
    markdown: Path
    csv: Path
    html: Path
    report: Report


def build_report(
    results: Sequence[Path] = (),
    out_dir: Path = DEFAULT_REPORTS_DIR,
    *,
    reports_dir: Path = DEFAULT_REPORTS_DIR,
    store: Path | None = None,
) -> ReportOutputs:
    """Write latency.md, latency.csv and report.html into ``out_dir``."""
    rep = collect(results, reports_dir=reports_dir, store=store)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return ReportOutputs(
        markdown=write_markdown(rep, out_dir / "latency.md"),
        csv=write_csv(rep, out_dir / "latency.csv"),
        html=write_html(rep, out_dir / "report.html"),
        report=rep,
    )


# ---------------------------------------------------------------------------------------------
# outputs


def collect(
    results: Sequence[Path] = (), *, reports_dir: Path = DEFAULT_REPORTS_DIR, store: Path | None = None
) -> Report:
    """Load results (or the newest under ``reports_dir``) and build the tables."""
    notes: list[str] = []
    if results:
        bench_files, parity_files = classify_results(results)
    else:
        b = find_latest(reports_dir / BENCH_SUBDIR, ".json")
        p = find_latest(reports_dir / PARITY_SUBDIR, ".jsonl")
        bench_files, parity_files = ([b] if b else []), (parity_records.run_files(p) if p else [])
    device = load_device(store) if store is not None else None
    if not bench_files and not parity_files and (device is None or device.empty):
        raise ReportError(
            f"no results to report: nothing under {reports_dir / BENCH_SUBDIR} (*.json) or "
            f"{reports_dir / PARITY_SUBDIR} (*.jsonl). Run `pytest bench/` and/or `pytest parity/` "
            "first, or name result files: parbench report FILE.json FILE.jsonl"
        )
    bench, machines, bench_notes = load_bench(bench_files)
    notes += bench_notes
    parity = load_parity(parity_files)
    if store is not None and (device is None or device.empty):
        notes.append(f"store {store} holds no device results")
    summary = summarize(bench, device)
    tables = model_tables(summary, parity) if not summary.empty else []
    if not tables and bench_files:
        notes.append("the bench files hold no parbench benchmarks")
    return Report(
        tables=tables,
        summary=summary,
        parity=parity,
        bench_files=list(bench_files),
        parity_files=list(parity_files),
        store=store,
        machines=machines,
        notes=notes,
        generated_utc=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )
