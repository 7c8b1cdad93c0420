"""Where the time of ``pytest parity/`` goes: cold (an empty cache) and warm (the same cache again).

Runs the suite in a subprocess (``python -m pytest parity/ --parbench-cache DIR``), samples the load
average and the process tree's resident memory while it runs, then reads what the run recorded:

* each parity record's ``timing`` (fixtures, model, artifact lookup, export or export wait, load,
  run, compare: the case's wall time by stage);
* each artifact cache entry written during the run (``entry.json``: ``export_seconds`` and its
  ``stages``: torch.export, program load, calibration, quantize, trace, lowering, conversion, save,
  size check; failed attempts, e.g. a one-for-all export that fell back to one per size, included).

It prints the wall time, the load average, peak memory, the verdicts, and the time per stage and
per form x model; ``--out`` keeps the log, the tables (Markdown) and the verdicts (JSON), and
``--verdicts FILE`` lists every case whose verdict differs from an earlier run's.  ``--tabulate``
re-makes the tables of a kept run without running anything.

\b
    python experiments/parity_profile.py --out reports/profile/after            # cold, then warm
    python experiments/parity_profile.py --runs warm --cache .parbench-cache     # warm only
    python experiments/parity_profile.py --tabulate reports/profile/after/cold
    python experiments/parity_profile.py -- --tier smoke                         # pytest options
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from parbench._util.stages import EXPORT_STAGES, RUN_STAGES
from parbench.records import parity as parity_records

# ---------------------------------------------------------------------------------------------
# measuring a run


def _tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = defaultdict(list)
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            rss[int(d.name)] = int((d / "statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
        children[ppid].append(int(d.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, ()))
    return total


class _Sampler:
    """Load average and the process tree's memory every ``every`` seconds while a run goes on."""

    def __init__(self, pid: int, every: float = 2.0):
        self.pid, self.every = pid, every
        self.load: list[float] = []
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.load.append(os.getloadavg()[0])
            with contextlib.suppress(Exception):
                self.peak_rss = max(self.peak_rss, _tree_rss(self.pid))
            self._stop.wait(self.every)

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_suite(label: str, cache: Path, out: Path, pytest_args: list[str]) -> dict[str, Any]:
    """One ``pytest parity/`` run; its log, records and summary go to ``out/label``."""
    folder = out / label
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "reports").mkdir(parents=True)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "parity/",
        "--parbench-cache",
        str(cache),
        "--parbench-reports",
        str(folder / "reports"),
        *pytest_args,
    ]
    click.echo(f"[{label}] {' '.join(cmd)}", err=True)
    load_before = os.getloadavg()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    t0 = time.perf_counter()
    with open(folder / "pytest.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        with _Sampler(proc.pid) as sampler:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                log.flush()
                sys.stderr.buffer.write(line)
                sys.stderr.flush()
            code = proc.wait()
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = {
        "label": label,
        "command": cmd,
        "exit_code": code,
        "started": started,
        "wall_seconds": round(wall, 1),
        "load_before": [round(x, 2) for x in load_before],
        "load_during_mean": round(sum(sampler.load) / max(1, len(sampler.load)), 2),
        "load_during_max": round(max(sampler.load, default=0.0), 2),
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "peak_rss_gb": round(sampler.peak_rss / 2**30, 2),
        "children_cpu_seconds": round(
            ru.ru_utime + ru.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime, 1
        ),
        "cpus": os.cpu_count(),
        "cache": str(cache),
    }
    (folder / "run.json").write_text(json.dumps(summary, indent=1))
    _copy_entries(cache, started, folder / "entries.jsonl")
    return summary


def _copy_entries(cache: Path, since: float, dest: Path) -> None:
    """The cache entries written during the run (one JSON line each, with model and folder)."""
    lines = []
    for entry in sorted((cache / "artifacts").glob("*/*/entry.json")):
        if entry.stat().st_mtime < since - 1:
            continue
        try:
            record = json.loads(entry.read_text())
        except ValueError:
            continue
        record = {
            k: record.get(k)
            for k in ("variant", "error", "kind", "export_seconds", "stages", "stages_cpu", "sizes")
        }
        if not record["variant"]:  # a failed attempt names its variant only in its key
            record["variant"] = (json.loads(entry.read_text()).get("key") or {}).get("variant")
        record.update(model=entry.parent.parent.name, folder=entry.parent.name)
        lines.append(json.dumps(record))
    dest.write_text("\n".join(lines) + ("\n" if lines else ""))


# ---------------------------------------------------------------------------------------------
# tables


def _fmt_s(s: float) -> str:
    if s >= 60:
        return f"{int(s // 60)}m{s % 60:04.1f}s"
    return f"{s:.1f}s"


def _md(header: list[str], rows: list[list[str]]) -> list[str]:
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def tabulate(folder: Path) -> list[str]:
    """The Markdown tables of a kept run (``folder`` holds run.json, reports/, entries.jsonl)."""
    run = json.loads((folder / "run.json").read_text())
    records = parity_records.read(sorted((folder / "reports").glob("*.jsonl")))
    entries = [json.loads(x) for x in (folder / "entries.jsonl").read_text().splitlines() if x.strip()]
    lines = [f"### {run['label']}: {_fmt_s(run['wall_seconds'])} wall", ""]
    lines.append(
        f"exit {run['exit_code']}; load average before {run['load_before']}, during {run['load_during_mean']} "
        f"(mean of 1-min samples, max {run['load_during_max']}) on {run['cpus']} CPUs; "
        f"peak RSS of the process tree {run['peak_rss_gb']} GB; CPU time of the run {_fmt_s(run['children_cpu_seconds'])}"
    )
    verdicts: dict[str, int] = defaultdict(int)
    for r in records:
        verdicts[r.verdict] += 1
    exported = [e for e in entries if not e.get("error")]
    failed = [e for e in entries if e.get("error")]
    lines.append(
        f"{len(records)} cases: "
        + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
        + f"; {len(exported)} artifacts exported, {len(failed)} failed export attempts (cached failures)"
    )
    lines.append("")

    # stages: the cases' wall time by stage, and the exports' own stages
    run_stages: dict[str, float] = defaultdict(float)
    run_cpu: dict[str, float] = defaultdict(float)
    for r in records:
        for k, v in r.timing.items():
            run_stages[k] += v
        for k, v in r.timing_cpu.items():
            run_cpu[k] += v
    exp_stages: dict[str, float] = defaultdict(float)
    exp_cpu: dict[str, float] = defaultdict(float)
    for e in entries:
        stages = e.get("stages") or {}
        for k, v in stages.items():
            exp_stages[k] += v
        for k, v in (e.get("stages_cpu") or {}).items():
            exp_cpu[k] += v
        exp_stages["other (export)"] += max(0.0, (e.get("export_seconds") or 0.0) - sum(stages.values()))
    case_total = sum(run_stages.values())
    lines.append(
        "Where the cases' time went (sum over cases; `export` is the exports run inside a case, "
        "`export wait` the time a case waited for an export running elsewhere):"
    )
    lines.append("")
    order = [s for s in RUN_STAGES if s in run_stages] + sorted(set(run_stages) - set(RUN_STAGES))
    rows = [
        [s, _fmt_s(run_stages[s]), f"{100 * run_stages[s] / max(case_total, 1e-9):.0f}%", _fmt_s(run_cpu[s])]
        for s in order
    ]
    rows.append(["**cases total**", _fmt_s(case_total), "", _fmt_s(sum(run_cpu.values()))])
    rows.append(
        [
            "outside cases (start-up, collection, summary)",
            _fmt_s(max(0.0, run["wall_seconds"] - case_total)) if case_total < run["wall_seconds"] else "-",
            "",
            "",
        ]
    )
    lines += _md(["stage", "wall", "share", "CPU"], rows)
    lines.append("")
    if entries:
        exp_total = sum(exp_stages.values())
        lines.append(
            "Inside the exports (sum over every export written during the run, failed attempts included):"
        )
        lines.append("")
        order = [s for s in EXPORT_STAGES if s in exp_stages] + sorted(set(exp_stages) - set(EXPORT_STAGES))
        rows = [
            [
                s,
                _fmt_s(exp_stages[s]),
                f"{100 * exp_stages[s] / max(exp_total, 1e-9):.0f}%",
                _fmt_s(exp_cpu[s]),
            ]
            for s in order
        ]
        rows.append(["**exports total**", _fmt_s(exp_total), "", _fmt_s(sum(exp_cpu.values()))])
        lines += _md(["stage", "wall", "share", "CPU"], rows)
        lines.append("")

    # per form x model
    models = sorted({r.model for r in records} | {e["model"] for e in entries})
    variants = list(dict.fromkeys([r.variant for r in records] + [e["variant"] for e in entries]))
    exp_cell: dict[tuple[str, str], list[float]] = defaultdict(list)
    for e in entries:
        exp_cell[(e["variant"], e["model"])].append((e.get("export_seconds") or 0.0, bool(e.get("error"))))
    run_cell: dict[tuple[str, str], float] = defaultdict(float)
    for r in records:
        t = r.timing
        run_cell[(r.variant, r.model)] += sum(v for k, v in t.items() if k not in ("export", "export wait"))
    if entries:
        lines.append("Export seconds per form and model (artifacts exported [+ failed attempts]):")
        lines.append("")
        rows = []
        for v in variants:
            cells = []
            for m in models:
                xs = exp_cell.get((v, m), [])
                if not xs:
                    cells.append("")
                    continue
                ok = [s for s, err in xs if not err]
                bad = [s for s, err in xs if err]
                cells.append(f"{sum(ok) + sum(bad):.0f} ({len(ok)}" + (f"+{len(bad)}" if bad else "") + ")")
            tot = sum(s for m in models for s, _ in exp_cell.get((v, m), []))
            rows.append([v, *cells, f"{tot:.0f}"])
        lines += _md(["form", *models, "total"], rows)
        lines.append("")
    lines.append(
        "Comparison seconds per form and model (the cases' time without exports: fixtures, model, "
        "artifact lookup, load, run, compare):"
    )
    lines.append("")
    rows = []
    for v in variants:
        cells = [f"{run_cell[(v, m)]:.1f}" if (v, m) in run_cell else "" for m in models]
        rows.append([v, *cells, f"{sum(run_cell[(v, m)] for m in models):.1f}"])
    lines += _md(["form", *models, "total"], rows)
    lines.append("")
    return lines


def verdicts(folder: Path) -> dict[str, str]:
    records = parity_records.read(sorted((folder / "reports").glob("*.jsonl")))
    return {r.id: r.verdict for r in parity_records.latest(records)}


def verdict_diff(now: dict[str, str], before: dict[str, str]) -> list[str]:
    lines = []
    for case in sorted(set(now) | set(before)):
        a, b = before.get(case, "-"), now.get(case, "-")
        if a != b:
            lines.append(f"  {case}: {a} -> {b}")
    return lines


# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _cache_dir(given: Path | None, runs: str) -> Iterator[Path]:
    if given is not None:
        if runs != "warm" and given.exists() and any(given.iterdir()):
            raise click.UsageError(f"{given} is not empty; a cold run needs an empty (or new) cache folder")
        yield given
        return
    if runs == "warm":
        raise click.UsageError("--runs warm needs --cache (the folder of an earlier run)")
    with tempfile.TemporaryDirectory(prefix="parbench-profile-") as tmp:
        yield Path(tmp)


@click.command(help=__doc__, context_settings={"max_content_width": 110})
@click.option(
    "--runs", type=click.Choice(["cold+warm", "cold", "warm"]), default="cold+warm", show_default=True
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    help="cache folder (default: a fresh temporary one)",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports/profile"),
    show_default=True,
)
@click.option(
    "--verdicts",
    "verdicts_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="verdicts JSON of an earlier run to compare with",
)
@click.option(
    "--tabulate",
    "tabulate_dirs",
    multiple=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="print the tables of a kept run and exit",
)
@click.argument("pytest_args", nargs=-1, type=click.UNPROCESSED)
def main(
    runs: str,
    cache: Path | None,
    out: Path,
    verdicts_file: Path | None,
    tabulate_dirs: tuple[Path, ...],
    pytest_args: tuple[str, ...],
) -> None:
    if tabulate_dirs:
        for folder in tabulate_dirs:
            click.echo("\n".join(tabulate(folder)))
        return
    out.mkdir(parents=True, exist_ok=True)
    labels = {"cold+warm": ["cold", "warm"], "cold": ["cold"], "warm": ["warm"]}[runs]
    summaries = []
    with _cache_dir(cache, runs) as cache_dir:
        for label in labels:
            summaries.append(run_suite(label, cache_dir, out, list(pytest_args)))
    tables: list[str] = []
    for s in summaries:
        tables += tabulate(out / s["label"])
        v = verdicts(out / s["label"])
        (out / s["label"] / "verdicts.json").write_text(json.dumps(v, indent=1, sort_keys=True))
        if verdicts_file is not None:
            diff = verdict_diff(v, json.loads(verdicts_file.read_text()))
            tables.append(
                f"verdicts against {verdicts_file}: "
                + ("the same, case for case" if not diff else f"{len(diff)} differ")
            )
            tables += diff
            tables.append("")
    (out / "tables.md").write_text("\n".join(tables) + "\n")
    click.echo("\n".join(tables))
    click.echo(
        "summary: "
        + "; ".join(
            f"{s['label']} {_fmt_s(s['wall_seconds'])} (load {s['load_during_mean']}, peak RSS {s['peak_rss_gb']} GB, exit {s['exit_code']})"
            for s in summaries
        )
    )


if __name__ == "__main__":
    main()
