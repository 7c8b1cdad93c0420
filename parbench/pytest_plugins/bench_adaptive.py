"""``pytest bench/ --runs auto --budget MINUTES``: fresh-process runs added only to the cases whose
median is still loose (:mod:`parbench.run.adaptive`), each run pinned to one core where the OS
allows it.

--runs auto              adaptive runs instead of a fixed K
--budget MINUTES         wall time for all runs together (default 30)
--auto-target SHARE      stop a case when its median's 95% CI is within this share either side (0.01)
--auto-min-runs N / --auto-max-runs N    runs per case before judging / at most (3 / 20)
--pin-cpu CPU            the core the timed processes of --runs run on (default: the last one
                         this process may use; 'none' leaves them unpinned)
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from parbench.errors import ConfigError
from parbench.run import adaptive


def add_options(group: Any) -> None:
    group.addoption("--budget", type=float, default=30.0, metavar="MINUTES", help="--runs auto: time budget")
    group.addoption(
        "--auto-target",
        type=float,
        default=adaptive.DEFAULT_TARGET,
        metavar="SHARE",
        help="--runs auto: a case is done when its median's 95%% CI is within this share either side",
    )
    group.addoption("--auto-min-runs", type=int, default=adaptive.DEFAULT_MIN_RUNS, metavar="N")
    group.addoption("--auto-max-runs", type=int, default=adaptive.DEFAULT_MAX_RUNS, metavar="N")
    group.addoption(
        "--pin-cpu",
        default="auto",
        metavar="CPU",
        help="core for the timed processes of --runs (default: the last allowed one; 'none': unpinned)",
    )
    group.addoption("--parbench-only", default=None, help="internal: node ids file for a --runs auto child")


def runs_option(config: pytest.Config) -> int | None:
    """K of --runs K, None for --runs auto (checked in :func:`check_options`)."""
    try:
        return adaptive.parse_runs(config.getoption("--runs"))
    except ConfigError:
        return 1


def plan(config: pytest.Config) -> adaptive.Plan:
    return adaptive.Plan(
        budget_s=config.getoption("--budget") * 60,
        min_runs=config.getoption("--auto-min-runs"),
        max_runs=config.getoption("--auto-max-runs"),
        target=config.getoption("--auto-target"),
    )


def check_options(config: pytest.Config) -> list[str]:
    try:
        if adaptive.parse_runs(config.getoption("--runs")) is None:
            plan(config)
        pin_cpu(config)
    except ConfigError as exc:
        return [str(exc)]
    return []


def pin_cpu(config: pytest.Config) -> int | None:
    """The core --runs children are pinned to; None when unpinned or the OS cannot pin."""
    value = str(config.getoption("--pin-cpu")).strip().lower()
    if value == "none" or not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if value == "auto":
        return allowed[-1]
    try:
        cpu = int(value)
    except ValueError:
        raise ConfigError(f"--pin-cpu takes a core number, 'auto' or 'none'; got {value!r}") from None
    if cpu not in allowed:
        raise ConfigError(f"--pin-cpu {cpu}: this process may run on cores {allowed} only")
    return cpu


def affinity() -> list[int] | None:
    """The cores this process may run on (recorded with every timed case)."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def keep_only(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a --runs auto child: deselect the cases that are already settled."""
    path = config.getoption("--parbench-only")
    if not path:
        return
    wanted = set(json.loads(Path(path).read_text()))
    drop = [i for i in items if i.nodeid not in wanted and getattr(i, "originalname", "") == "test_latency"]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [i for i in items if i not in drop]


def run_auto(config: pytest.Config, workdir: Path) -> Any:
    """Runs until every case's median is tight, a case has max runs, or the budget is spent."""
    from parbench.pytest_plugins.bench import PROGRESS_PREFIX, ChildRuns, progress, run_child

    p = plan(config)
    cpu = pin_cpu(config)
    docs: list[dict[str, Any]] = []
    outcomes: list[dict[str, dict[str, str]]] = []
    logs: list[Path] = []
    times: list[float] = []
    start = time.monotonic()
    open_ids: list[str] | None = None  # None: the whole selection
    stopped = "every case's median is within the target"
    while True:
        index = len(docs)
        extra = [f"--pin-cpu={cpu if cpu is not None else 'none'}"]
        if open_ids is not None:
            only = workdir / f"only-{index}.json"
            only.write_text(json.dumps(open_ids))
            extra.append(f"--parbench-only={only}")
        t0 = time.monotonic()
        doc, outcome, log = run_child(config, index, f"{index + 1} (auto)", workdir, extra)
        times.append(time.monotonic() - t0)
        docs.append(doc)
        outcomes.append(outcome)
        logs.append(log)
        per_case: dict[str, list[dict[str, Any]]] = {}
        for d in docs:
            for e in d.get("benchmarks", []):
                per_case.setdefault(e["fullname"], []).append(e)
        medians = {k: adaptive.run_medians(v) for k, v in per_case.items()}
        open_ids = adaptive.open_cases(medians, p)
        widths = {k: adaptive.relative_halfwidth(v) for k, v in medians.items()}
        progress(
            config,
            f"{PROGRESS_PREFIX} after run {index + 1}: {len(open_ids)} of {len(medians)} case(s) open; "
            f"widest CI ±{max(widths.values(), default=0):.2%}",
        )
        if not open_ids:
            break
        if not adaptive.fits(time.monotonic() - start, times, p):
            stopped = f"budget: the next run would pass {p.budget_s / 60:g} min"
            break
    config.stash[AUTO_SUMMARY] = {
        "budget_min": p.budget_s / 60,
        "target": p.target,
        "min_runs": p.min_runs,
        "max_runs": p.max_runs,
        "runs": len(docs),
        "elapsed_min": round((time.monotonic() - start) / 60, 2),
        "stopped": stopped,
        "open": open_ids or [],
        "pinned_cpu": cpu,
    }
    progress(config, f"{PROGRESS_PREFIX} --runs auto: {len(docs)} runs; stopped: {stopped}")
    return ChildRuns(docs, outcomes, logs, adaptive=True)


AUTO_SUMMARY = pytest.StashKey[dict]()


def pin_self(config: pytest.Config) -> None:
    """In a --runs child: pin this process to the parent's chosen core."""
    if config.getoption("--parbench-run-index") is None:
        return
    cpu = pin_cpu(config)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
