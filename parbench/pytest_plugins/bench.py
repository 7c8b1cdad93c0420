"""The latency plugin (registered as the ``parbench_bench`` pytest11 entry point): options, timing
settings, progress lines, and ``--runs K`` (K fresh processes merged into one file).

Options (besides the plugin's --models --variants --sizes --tier --parbench-config):

--threads N            torch intra-op threads for every session (default 1), recorded per result
--runs K               run the whole selection K times, each in a fresh pytest process, and merge
                       the K result sets into one --benchmark-json file (run_index 0..K-1)
--bench-min-time S     seconds of timed rounds to aim for per case (default 1.0)
--bench-min-rounds N / --bench-max-rounds N    bounds on the calibrated round count (5 / 500)
--bench-warmup-time S  warm-up length (at least 2 calls; default 0.2 s)
--runs auto --budget MINUTES    adaptive runs (:mod:`.bench_adaptive`)
--instructions         instruction counts under callgrind (:mod:`.bench_instructions`)

Results go to ``--benchmark-json`` when given, else (when the run holds latency cases) to
``reports/bench/<UTC timestamp>.json`` (``--bench-out DIR`` changes the folder; ``parbench report``
reads the newest file there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from parbench._util.clock import file_stamp
from parbench.pytest_plugins import bench_adaptive, bench_instructions
from parbench.pytest_plugins.benchmark_adapter import record_samples
from parbench.run.latency import Measured, Settings, pooled

PROGRESS_PREFIX = "[bench]"
CHILD_ENV = "PARBENCH_BENCH_CHILD"
DEFAULT_OUT = Path("reports") / "bench"  # relative to the working directory, like reports/parity


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("parbench-bench", "parbench latency suite (bench/)")
    group.addoption(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch intra-op threads for every timed session (default 1)",
    )
    group.addoption(
        "--runs",
        default="1",
        metavar="K",
        help="repeat every benchmark in K separate fresh processes and merge the results; 'auto': "
        "add runs to the cases whose median is not yet known tightly, within --budget",
    )
    group.addoption(
        "--bench-min-time",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds of timed rounds to aim for per case (default 1.0)",
    )
    group.addoption(
        "--bench-min-rounds",
        type=int,
        default=5,
        metavar="N",
        help="fewest timed rounds per case (default 5)",
    )
    group.addoption(
        "--bench-max-rounds",
        type=int,
        default=500,
        metavar="N",
        help="most timed rounds per case (default 500)",
    )
    group.addoption(
        "--bench-warmup-time",
        type=float,
        default=0.2,
        metavar="S",
        help="warm-up seconds before the timed rounds (at least 2 calls; default 0.2)",
    )
    group.addoption(
        "--bench-out",
        default=None,
        metavar="DIR",
        help="folder for the default results file (default reports/bench)",
    )
    bench_instructions.add_options(group)
    bench_adaptive.add_options(group)
    # internal: set on the child processes of --runs
    group.addoption("--parbench-run-index", type=int, default=None, help=argparse.SUPPRESS)
    group.addoption("--parbench-outcomes", default=None, help=argparse.SUPPRESS)


def _settings(config: pytest.Config) -> Settings:
    s = Settings(
        threads=config.getoption("--threads"),
        min_time_s=config.getoption("--bench-min-time"),
        min_rounds=config.getoption("--bench-min-rounds"),
        max_rounds=config.getoption("--bench-max-rounds"),
        warmup_time_s=config.getoption("--bench-warmup-time"),
        run_index=config.getoption("--parbench-run-index") or 0,
    )
    problems = []
    if s.threads < 1:
        problems.append(f"--threads must be >= 1, got {s.threads}")
    problems += bench_adaptive.check_options(config)
    if s.min_time_s < 0 or s.warmup_time_s < 0:
        problems.append("--bench-min-time and --bench-warmup-time must be >= 0 seconds")
    if s.min_rounds < 1 or s.max_rounds < s.min_rounds:
        problems.append(
            f"need 1 <= --bench-min-rounds <= --bench-max-rounds, got {s.min_rounds} and {s.max_rounds}"
        )
    problems += bench_instructions.check_options(config)
    if problems:
        raise pytest.UsageError("; ".join(problems))
    return s


def is_parent(config: pytest.Config) -> bool:
    """True in the process that spawns the --runs children (and times nothing itself)."""
    return bench_adaptive.runs_option(config) != 1 and config.getoption("--parbench-run-index") is None


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SETTINGS] = _settings(config)
    bench_adaptive.pin_self(config)
    config.pluginmanager.register(_Reporter(config), "parbench-bench-reporter")


def _default_json(config: pytest.Config) -> None:
    """A run that times cases and names no --benchmark-json writes reports/bench/<UTC>.json."""
    if config.getoption("--parbench-run-index") is not None or getattr(
        config.option, "benchmark_disable", False
    ):
        return
    session = getattr(config, "_benchmarksession", None)
    if session is None or getattr(session, "json", None):
        return
    out = Path(config.getoption("--bench-out") or DEFAULT_OUT)
    out.mkdir(parents=True, exist_ok=True)
    session.json = config.option.benchmark_json = out / f"{file_stamp()}.json"


_SETTINGS = pytest.StashKey[Settings]()


@pytest.fixture(scope="session")
def bench_settings(pytestconfig: pytest.Config) -> Settings:
    return pytestconfig.stash[_SETTINGS]


def progress(config: pytest.Config, line: str) -> None:
    """One line on the terminal, outside pytest's output capture."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if tr is None:
        return
    ctx = capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
    with ctx:
        tw = getattr(tr, "_tw", None)
        if tw is not None and getattr(tw, "width_of_current_line", 0):
            tw.line()  # after the progress dots, start a fresh line
        tr.ensure_newline()
        tr.write_line(line)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    bench_adaptive.keep_only(config, items)


def pytest_collection_finish(session: pytest.Session) -> None:
    bench_items = [i for i in session.items if getattr(i, "originalname", "") == "test_latency"]
    if bench_items:
        _default_json(session.config)
    for n, item in enumerate(bench_items, 1):
        item.stash[_POSITION] = (n, len(bench_items))


_POSITION = pytest.StashKey[tuple[int, int]]()


class _Reporter:
    """Prints each case's progress line after its result; in a --runs child, also writes every
    test's outcome for the parent."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.outcomes_path = config.getoption("--parbench-outcomes")
        self.outcomes: dict[str, dict[str, str]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for key, value in report.user_properties:
            if key == "parbench_progress" and report.when == "call":
                progress(self.config, value)
        if not self.outcomes_path:
            return
        rec = self.outcomes.setdefault(report.nodeid, {"outcome": "passed", "message": ""})
        if report.failed:
            rec["outcome"], rec["message"] = "failed", f"{report.when}: {report.longreprtext[-2000:]}"
        elif report.skipped and rec["outcome"] != "failed":
            if hasattr(report, "wasxfail"):
                rec["outcome"], rec["message"] = "xfailed", str(report.wasxfail)
            else:
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
                rec["outcome"], rec["message"] = "skipped", str(reason).removeprefix("Skipped: ")

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.outcomes_path:
            Path(self.outcomes_path).write_text(json.dumps(self.outcomes, indent=1))


@dataclass
class Bench:
    """What a latency test needs from the suite: settings, where it is, how to record and report."""

    config: pytest.Config
    settings: Settings
    node: pytest.Item
    request: pytest.FixtureRequest

    @property
    def parent(self) -> bool:
        return is_parent(self.config)

    @property
    def position(self) -> str:
        n, total = self.node.stash.get(_POSITION, (0, 0))
        return f"[{n}/{total}]" if total else ""

    def record(self, benchmark: Any, m: Measured) -> None:
        """One timed case into pytest-benchmark (its stats and JSON), and its progress line."""
        s, t = self.settings, m.timing
        record_samples(
            benchmark,
            t.samples_ns,
            {**m.extra.model_dump(mode="json"), "cpu_affinity": bench_adaptive.affinity()},
            options={
                "timer": t.clock,
                "min_time": s.min_time_s,
                "min_rounds": s.min_rounds,
                "max_rounds": s.max_rounds,
                "warmup": True,
                "warmup_iterations": t.warmup_rounds,
            },
        )
        self.progress(
            f"{m.extra.key.id}: median {_ms(t.median_ns)} (IQR {_ms(t.iqr_ns)}, {t.rounds} rounds, "
            f"{t.warmup_rounds} warm-up; load {_ms(m.load_ns)}, first run {_ms(t.first_run_ns)}, "
            f"peak RSS {t.peak_rss_mb:.0f} MB)"
        )

    def merge_child_runs(self, benchmark: Any) -> None:
        """--runs K parent: this test passes, fails or skips as the K runs did; its own stats pool
        their samples (for the terminal table); the JSON file gets every run's entry."""
        runs = self.child_runs()
        nodeid = self.node.nodeid
        outcomes = [o.get(nodeid) for o in runs.outcomes]
        if runs.adaptive:  # later runs time only the cases still open
            outcomes = [o for o in outcomes if o is not None]
        missing = [i for i, o in enumerate(outcomes) if o is None]
        if missing:
            pytest.fail(
                f"runs {missing} did not run {nodeid}; see their logs: "
                f"{[str(runs.logs[i]) for i in missing]}",
                pytrace=False,
            )
        failed = [(i, o) for i, o in enumerate(outcomes) if o["outcome"] == "failed"]
        if failed:
            i, o = failed[0]
            pytest.fail(
                f"run {i} of {len(outcomes)} failed (log {runs.logs[i]}):\n{o['message']}", pytrace=False
            )
        kinds = {o["outcome"] for o in outcomes}
        if kinds == {"xfailed"}:
            pytest.xfail(outcomes[0]["message"])
        if kinds <= {"skipped", "xfailed"}:
            pytest.skip(outcomes[0]["message"])
        entries = [e for _, e in runs.entries_for(nodeid)]
        if len(entries) != len(outcomes):
            pytest.fail(
                f"{nodeid}: {len(entries)} of {len(outcomes)} runs wrote a benchmark entry "
                f"(outcomes: {sorted(kinds)})",
                pytrace=False,
            )
        extra = pooled(entries)
        record_samples(benchmark, extra.samples_ns, extra.model_dump(mode="json"))
        per_run = ", ".join(_ms(statistics.median(e["extra_info"]["samples_ns"])) for e in entries)
        self.progress(
            f"{extra.key.id}: median {_ms(statistics.median(extra.samples_ns))} over {len(entries)} "
            f"runs (per run: {per_run})"
        )

    def progress(self, line: str) -> None:
        """Printed after the case's result (a line per case), relayed by a --runs parent."""
        self.node.user_properties.append(("parbench_progress", f"{PROGRESS_PREFIX} {self.position} {line}"))

    def child_runs(self) -> ChildRuns:
        return self.request.getfixturevalue("bench_child_runs")


def _ms(ns: float | None) -> str:
    if ns is None:
        return "-"
    ms = ns / 1e6
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.3g} ms"


@pytest.fixture
def bench(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> Bench:
    return Bench(pytestconfig, pytestconfig.stash[_SETTINGS], request.node, request)


# ---------------------------------------------------------------------------------------------
# --runs K: K fresh processes, merged


_VALUE_OPTIONS = (
    "--benchmark-json",
    "--benchmark-save",
    "--runs",
    "--parbench-run-index",
    "--parbench-outcomes",
    "--bench-out",
)
_FLAG_OPTIONS = ("--benchmark-autosave",)
_OPTIONAL_VALUE_OPTIONS = ("--benchmark-compare", "--benchmark-histogram")


def child_args(args: Sequence[str]) -> list[str]:
    """The user's pytest arguments without the ones the parent handles itself (output files,
    saving and comparing, --runs)."""
    out: list[str] = []
    skip_next = False
    for i, arg in enumerate(args):
        if skip_next:
            skip_next = False
            continue
        name = arg.split("=", 1)[0]
        if name in _VALUE_OPTIONS:
            skip_next = "=" not in arg
            continue
        if name in _FLAG_OPTIONS:
            continue
        if name in _OPTIONAL_VALUE_OPTIONS:
            nxt = args[i + 1] if i + 1 < len(args) else ""
            # the optional value: a run number / id prefix, or a histogram file prefix
            skip_next = "=" not in arg and bool(re.fullmatch(r"[0-9a-f]{1,40}|\d+", nxt))
            continue
        out.append(arg)
    return out


def merge_runs(docs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Benchmarks of K run documents, each tagged with its run index (already set by the child;
    checked here), ordered by benchmark then run."""
    merged: list[dict[str, Any]] = []
    for index, doc in enumerate(docs):
        for bench in doc.get("benchmarks", []):
            extra = bench.setdefault("extra_info", {})
            if extra.get("run_index", index) != index:
                raise RuntimeError(f"run {index}'s results say run_index={extra.get('run_index')}")
            extra["run_index"] = index
            merged.append(bench)
    order = {b["fullname"]: n for n, b in reversed(list(enumerate(merged)))}
    return sorted(merged, key=lambda b: (order[b["fullname"]], b["extra_info"]["run_index"]))


@dataclass
class ChildRuns:
    docs: list[dict[str, Any]]  # pytest-benchmark JSON of each run
    outcomes: list[dict[str, dict[str, str]]]  # nodeid -> outcome, per run
    logs: list[Path]
    adaptive: bool = False

    def entries_for(self, nodeid: str) -> list[tuple[int, dict[str, Any]]]:
        """(run index, benchmark entry) of every run that timed this test."""
        return [
            (index, bench)
            for index, doc in enumerate(self.docs)
            for bench in doc.get("benchmarks", [])
            if bench.get("fullname") == nodeid
        ]


def _run_children(config: pytest.Config, runs: int, workdir: Path) -> ChildRuns:
    docs, outcomes, logs = [], [], []
    for index in range(runs):
        doc, outcome, log_path = run_child(config, index, f"{index + 1}/{runs}", workdir)
        docs.append(doc)
        outcomes.append(outcome)
        logs.append(log_path)
    return ChildRuns(docs, outcomes, logs)


def run_child(
    config: pytest.Config, index: int, label: str, workdir: Path, extra_args: Sequence[str] = ()
) -> tuple[dict[str, Any], dict[str, dict[str, str]], Path]:
    """One fresh pytest process timing the user's selection: its document, outcomes and log."""
    base = child_args(config.invocation_params.args)
    json_path = workdir / f"run-{index}.json"
    outcomes_path = workdir / f"outcomes-{index}.json"
    log_path = workdir / f"run-{index}.log"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        *base,
        "--runs=1",
        f"--parbench-run-index={index}",
        f"--benchmark-json={json_path}",
        f"--parbench-outcomes={outcomes_path}",
        "-p",
        "no:cacheprovider",
        *extra_args,
    ]
    progress(config, f"{PROGRESS_PREFIX} run {label}: fresh process (log: {log_path})")
    env = dict(os.environ, **{CHILD_ENV: str(index)})
    with (
        open(log_path, "w") as log,
        subprocess.Popen(
            cmd,
            cwd=config.invocation_params.dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        ) as proc,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            at = line.find(PROGRESS_PREFIX)
            if at >= 0:
                progress(config, f"  [run {label}] {line[at + len(PROGRESS_PREFIX) :].strip()}")
        code = proc.wait()
    if code not in (0, 1) or not outcomes_path.exists():
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
        raise RuntimeError(
            f"bench run {index} (a separate pytest process) exited with {code}; "
            f"its log is {log_path}; last lines:\n{tail}"
        )
    outcome = json.loads(outcomes_path.read_text())
    doc = json.loads(json_path.read_text()) if json_path.exists() else {"benchmarks": []}
    return doc, outcome, log_path


@pytest.fixture(scope="session")
def bench_child_runs(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChildRuns]:
    workdir = tmp_path_factory.mktemp("bench-runs")
    k = bench_adaptive.runs_option(pytestconfig)
    runs = _run_children(pytestconfig, k, workdir) if k else bench_adaptive.run_auto(pytestconfig, workdir)
    pytestconfig.stash[_CHILD_DOCS] = runs.docs
    yield runs


_CHILD_DOCS = pytest.StashKey[list]()


def pytest_benchmark_update_json(
    config: pytest.Config, benchmarks: list, output_json: dict[str, Any]
) -> None:
    """In the parent of --runs: the file holds every run's own entries, not the pooled ones."""
    docs = config.stash.get(_CHILD_DOCS, None)
    if docs is not None:
        output_json["benchmarks"] = merge_runs(docs)
        output_json.setdefault("parbench", {})["runs"] = len(docs)
        if bench_adaptive.AUTO_SUMMARY in config.stash:
            output_json["parbench"]["auto"] = config.stash[bench_adaptive.AUTO_SUMMARY]
    bench_instructions.count_into(config, output_json, lambda m: progress(config, f"{PROGRESS_PREFIX} {m}"))
