"""The parity plugin (registered as the ``parbench`` pytest11 entry point): options shared by the
parity and latency suites, case parametrization, the harness and recorder fixtures, localisation of
failures, and the end-of-run table.

A repository uses it with no files copied from parbench: its models go in ``parbench.toml`` (or
``[tool.parbench.models.NAME]`` in its pyproject.toml, or ``--parbench-config FILE``), and
``pytest --pyargs parbench.suites.parity`` runs the suite (``parbench.suites.latency`` for timings).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from parbench._util.clock import file_stamp
from parbench.backends import VARIANTS
from parbench.backends.registry import default_variants
from parbench.errors import ConfigError, ParbenchError
from parbench.pytest_plugins import progress
from parbench.records import parity as parity_records
from parbench.records.config import declares_models
from parbench.records.ids import CaseKey
from parbench.zoo import TIERS, ModelSpec, registry, select

REPORT_DIR = Path("reports") / "parity"
CONFIG_FILE = "parbench.toml"

_REGISTRY = pytest.StashKey[dict[str, ModelSpec]]()
_RUN_ID = pytest.StashKey[str]()
_WORKERS = pytest.StashKey[int]()  # worker processes that ran the parity cases, when more than one


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("parbench")
    g.addoption("--models", help="comma-separated model names (default: the tier's models)")
    g.addoption(
        "--variants",
        help=f"comma-separated variants (default: the tier's: {', '.join(default_variants('default'))}; "
        f"the smoke tier adds {', '.join(sorted(set(default_variants('smoke')) - set(default_variants('default'))))})",
    )
    g.addoption("--sizes", help="comma-separated input sizes, replacing each model's own sizes")
    g.addoption("--tier", choices=TIERS, help="model tier: smoke, default (the default) or full")
    g.addoption(
        "--parbench-config",
        help=f"TOML file with [models.NAME] tables (default: {CONFIG_FILE} or "
        "[tool.parbench.models.NAME] in pyproject.toml, if present)",
    )
    g.addoption("--parbench-cache", default=".parbench-cache", help="artifact and fixture cache folder")
    g.addoption("--parbench-reports", default=str(REPORT_DIR), help="where parity JSON lines are written")
    g.addoption(
        "--localise",
        choices=("failures", "all", "off"),
        default="failures",
        help="name the first layer where a failing form departs from eager: failures (default), all "
        "(declared known failures too) or off",
    )
    g.addoption(
        "--localise-budget",
        type=float,
        default=300.0,
        help="seconds one localisation may take; a case predicted to take longer is not started (default: 300)",
    )
    g.addoption(
        "--parbench-workers",
        default=None,
        help="processes that run the parity cases (exports included) side by side: auto (the default: "
        "one per core the memory allows), or a count; 0 or 1 runs them in pytest's own process; "
        "also PARBENCH_WORKERS",
    )
    progress.addoption(g)


def config_path(config: pytest.Config) -> str | None:
    """--parbench-config, else parbench.toml or a pyproject.toml with parbench models in the rootdir
    or the directory pytest was started from."""
    path = config.getoption("parbench_config")
    if path:
        return path
    for folder in dict.fromkeys((Path(config.invocation_params.dir), Path(config.rootpath))):
        if (folder / CONFIG_FILE).is_file():
            return str(folder / CONFIG_FILE)
        if (folder / "pyproject.toml").is_file() and declares_models(folder / "pyproject.toml"):
            return str(folder / "pyproject.toml")
    return None


def model_registry(config: pytest.Config) -> dict[str, ModelSpec]:
    if _REGISTRY not in config.stash:
        try:
            reg = registry(config_path(config))
        except ParbenchError as exc:
            raise pytest.UsageError(str(exc)) from None
        sizes = _csv(config.getoption("sizes"))
        if sizes:
            try:
                ints = tuple(int(s) for s in sizes)
            except ValueError:
                raise pytest.UsageError(
                    f"--sizes takes integers, got {config.getoption('sizes')!r}"
                ) from None
            reg = {k: dataclasses.replace(v, sizes=ints) for k, v in reg.items()}
        config.stash[_REGISTRY] = reg
    return config.stash[_REGISTRY]


def selected_cases(config: pytest.Config) -> list[CaseKey]:
    """model x variant x size for the options given, in an order that reuses loaded sessions."""
    reg = model_registry(config)
    try:
        specs = select(reg, config.getoption("tier"), _csv(config.getoption("models")))
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    variants = _csv(config.getoption("variants")) or default_variants(config.getoption("tier") or "default")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise pytest.UsageError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    return [CaseKey(s.name, v, size) for s in specs for v in variants for size in s.sizes]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "parbench_case" in metafunc.fixturenames:
        cases = selected_cases(metafunc.config)
        metafunc.parametrize("parbench_case", cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def parbench_harness(request: pytest.FixtureRequest):
    from parbench.run.harness import Harness

    config = request.config
    harness = Harness(None, config.getoption("parbench_cache"), registry=model_registry(config))
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and not hasattr(config, "workerinput"):
        harness.log = lambda msg: reporter.write_line(f"[parbench] {msg}")
    return harness


class Recorder:
    """Appends each parity record as a JSON line to reports/parity/<run>[-<worker>].jsonl."""

    def __init__(self, folder: Path, run_id: str, worker: str | None):
        self.path = folder / (f"{run_id}-{worker}.jsonl" if worker else f"{run_id}.jsonl")

    def record(self, record: parity_records.ParityRecord) -> None:
        parity_records.append(self.path, record)


@pytest.fixture(scope="session")
def parbench_recorder(request: pytest.FixtureRequest) -> Recorder:
    config = request.config
    worker = getattr(config, "workerinput", {}).get("workerid")
    return Recorder(Path(config.getoption("parbench_reports")), config.stash[_RUN_ID], worker)


@pytest.fixture(scope="session")
def parbench_localise(request: pytest.FixtureRequest):
    from parbench.diagnose.localise import LocalisePolicy

    budget = request.config.getoption("localise_budget")
    return LocalisePolicy(request.config.getoption("localise"), budget if budget > 0 else None)


def _parity_case(
    h: Any, model: str, variant: str, size: int, policy: Any = None
) -> parity_records.ParityRecord:
    """One parity case, localised when it fails: what a pool worker and this process both run."""
    from parbench.run.parity import check

    outcome = check(h, model, variant, size)
    if policy is not None:
        policy.apply(h, outcome)
    return outcome.record


class ParityRunner:
    """Gives each parity case's record: from the worker pool when one runs the cases, else (and for
    any case the pool could not finish) by running the case in this process."""

    def __init__(self, harness: Any, policy: Any, pool: Any = None, progress_plugin: Any = None):
        self.harness, self.policy, self.pool, self.progress = harness, policy, pool, progress_plugin

    def record(self, case: CaseKey) -> parity_records.ParityRecord:
        if self.pool is not None:
            record = self.pool.result((case.model, case.variant, case.size))
            if record is not None:
                return record
            if self.progress is not None:
                self.progress.local_case(case, True)
        try:
            return _parity_case(self.harness, case.model, case.variant, case.size, self.policy)
        finally:
            if self.pool is not None and self.progress is not None:
                self.progress.local_case(case, False)


# a model x form's export cost, relative, for the job order when no earlier run says better
_EXPORT_WEIGHT = {"executorch_int8": 120.0, "executorch_fp32": 60.0, "quantized_int8": 10.0}


def _job_weight(reports: Path, cache_dir: Path) -> Any:
    """Expected seconds of a job: its cases' times in the newest earlier run in ``reports``, less
    their export time when the cache already holds the form's artifacts; a guess by form else."""
    seen: dict[tuple[str, str, int], tuple[float, float]] = {}
    for path in sorted(reports.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True)[:1]:
        try:
            for r in parity_records.read([path]):
                seen[(r.model, r.variant, r.size)] = (sum(r.timing.values()), r.timing.get("export", 0.0))
        except ParbenchError:
            seen = {}

    def weight(job: Any) -> float:
        cached = any((cache_dir / "artifacts" / job.model).glob(f"{job.variant}-*/entry.json"))
        if all(case in seen for case in job.cases()):
            return sum(total - (export if cached else 0.0) for total, export in map(seen.get, job.cases()))
        guess = _EXPORT_WEIGHT.get(job.variant, 20.0 if job.variant.startswith("coreml") else 5.0)
        return (0.0 if cached else guess) + 2.0 * len(job.sizes)

    return weight


def _pool_for(request: pytest.FixtureRequest, harness: Any, policy: Any) -> Any:
    """A worker pool for this session's parity cases, or None (one worker, xdist, one job)."""
    import functools

    from parbench.run import pool as case_pool
    from parbench.run.harness import Harness

    config = request.config
    if hasattr(config, "workerinput") or config.getoption("numprocesses", None):
        return None
    try:
        workers = case_pool.parse_workers(config.getoption("parbench_workers"))
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    cases = [
        (c.model, c.variant, c.size)
        for item in request.session.items
        if (c := progress.case_of(item)) is not None
        and "parbench_parity" in getattr(item, "fixturenames", ())
    ]
    reports = Path(config.getoption("parbench_reports"))
    weigh = _job_weight(reports, harness.cache_dir)  # before any export: what is cached now
    jobs = case_pool.jobs_for(cases, weigh)
    workers = min(workers, len(jobs))
    if workers < 2:
        return None
    pool = case_pool.CasePool(
        functools.partial(_parity_case, policy=policy),
        jobs,
        workers,
        functools.partial(Harness, None, harness.cache_dir, registry=harness.registry),
        reports / f"{config.stash[_RUN_ID]}-workers.log",
    )
    config.stash[_WORKERS] = workers
    plugin = config.pluginmanager.get_plugin("parbench-progress")
    if plugin is not None:
        per_case = {case: weigh(job) / len(job.sizes) for job in jobs for case in job.cases()}
        plugin.use_pool(workers, per_case)
        pool.on_event = plugin.pool_event
    pool.start()
    return pool


@pytest.fixture(scope="session")
def parbench_parity(request: pytest.FixtureRequest, parbench_harness, parbench_localise):
    """The parity cases' records (:class:`ParityRunner`), from a worker pool when there is one."""
    pool = _pool_for(request, parbench_harness, parbench_localise)
    runner = ParityRunner(
        parbench_harness,
        parbench_localise,
        pool,
        request.config.pluginmanager.get_plugin("parbench-progress"),
    )
    try:
        yield runner
    finally:
        if pool is not None:
            pool.close()


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        config.stash[_RUN_ID] = workerinput["parbench_run_id"]
    else:
        import uuid

        config.stash[_RUN_ID] = f"{file_stamp()}-{uuid.uuid4().hex[:6]}"
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "parbench-xdist")
    if config.getoption("parbench_config") or config.getoption("models"):
        model_registry(config)  # a bad config or model name is a usage error before collection
    progress.configure(config)


class _XdistHooks:
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["parbench_run_id"] = node.config.stash[_RUN_ID]


_ABBREV = {"pass": "ok", "fail": "FAIL", "error": "ERR", "skip": "skip", "xfail": "xfail"}


def _cell(r: parity_records.ParityRecord) -> str:
    v = _ABBREV.get(r.verdict, r.verdict)
    worst = r.worst("rel_l2", higher_is_better=False)
    return v if worst is None else f"{v} {worst:.1e}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or _RUN_ID not in config.stash:
        return
    folder = Path(config.getoption("parbench_reports"))
    files = sorted(folder.glob(f"{config.stash[_RUN_ID]}*.jsonl"))
    rows = parity_records.read(files)
    if not rows:
        return
    tr = terminalreporter
    tr.section("parbench parity: verdict and relative L2 error vs eager fp32 (worst output and case)")
    by_model: dict[str, dict[str, dict[int, parity_records.ParityRecord]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for r in rows:
        by_model[r.model][r.variant][r.size] = r
    order = list(VARIANTS)
    for model, variants in by_model.items():
        sizes = sorted({s for v in variants.values() for s in v})
        tr.write_line(f"{model}:")
        tr.write_line("  " + f"{'variant':<19}" + "".join(f"{s:>14}" for s in sizes) + "  executor")
        for variant, cells in sorted(
            variants.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99
        ):
            executor = next((c.executor for c in cells.values() if c.executor), "")
            tr.write_line(
                "  "
                + f"{variant:<19}"
                + "".join(f"{_cell(cells[s]) if s in cells else '':>14}" for s in sizes)
                + f"  {executor}"
            )
    skipped = {r.variant: r.message.splitlines()[0] for r in rows if r.verdict == "skip"}
    for variant, why in skipped.items():
        tr.write_line(f"skipped {variant}: {why}")
    hits = sum(r.cache == "hit" for r in rows)
    built = sum(r.cache not in ("", "hit") for r in rows)
    tr.write_line(
        f"artifacts: {built} exported, {hits} reused from the cache ({config.getoption('parbench_cache')})"
        + ("; nothing converted" if built == 0 else "")
    )
    tr.write_line(progress.time_spent(rows, config.stash.get(_WORKERS, 1)))
    tr.write_line(f"results: {', '.join(str(f) for f in files)}")
    if (workers := config.stash.get(_WORKERS, 1)) > 1:
        log = folder / f"{config.stash[_RUN_ID]}-workers.log"
        tr.write_line(
            f"cases ran in {workers} worker processes (--parbench-workers 0 runs them in this one); "
            f"their output: {log}"
        )
