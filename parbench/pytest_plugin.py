"""pytest plugin: options shared by parity/ and bench/, case parametrization, result recording and
the end-of-run parity table.  Loaded by the root conftest.py (`pytest_plugins`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from parbench import zoo
from parbench.backends import VARIANTS

REPORT_DIR = Path("reports") / "parity"


@dataclasses.dataclass(frozen=True)
class Case:
    model: str
    variant: str
    size: int

    @property
    def id(self) -> str:
        return f"{self.model}-{self.variant}-{self.size}"


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("parbench")
    g.addoption("--models", help="comma-separated model names (default: the tier's models)")
    g.addoption("--variants", help=f"comma-separated deployment forms (default: all: {', '.join(VARIANTS)})")
    g.addoption("--sizes", help="comma-separated input sizes, replacing each model's own sizes")
    g.addoption("--tier", choices=zoo.TIERS, help="model tier: smoke, default (the default) or full")
    g.addoption("--parbench-config", help="TOML file with [models.NAME] tables (or a pyproject.toml with "
                                          "[tool.parbench.models.NAME])")
    g.addoption("--parbench-cache", default=".parbench-cache", help="artifact and fixture cache folder")
    g.addoption("--parbench-reports", default=str(REPORT_DIR), help="where parity JSON lines are written")


def _config_path(config: pytest.Config) -> str | None:
    path = config.getoption("parbench_config")
    if path:
        return path
    pyproject = Path(config.rootpath) / "pyproject.toml"
    if pyproject.is_file() and "[tool.parbench.models" in pyproject.read_text():
        return str(pyproject)
    return None


def _registry(config: pytest.Config) -> dict[str, zoo.ModelSpec]:
    if not hasattr(config, "_parbench_registry"):
        try:
            reg = zoo.registry(_config_path(config))
        except zoo.ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None
        sizes = _csv(config.getoption("sizes"))
        if sizes:
            try:
                ints = tuple(int(s) for s in sizes)
            except ValueError:
                raise pytest.UsageError(f"--sizes takes integers, got {config.getoption('sizes')!r}") from None
            reg = {k: dataclasses.replace(v, sizes=ints) for k, v in reg.items()}
        config._parbench_registry = reg  # type: ignore[attr-defined]
    return config._parbench_registry  # type: ignore[attr-defined]


def selected_cases(config: pytest.Config) -> list[Case]:
    """model x variant x size for the options given, in an order that reuses loaded sessions."""
    reg = _registry(config)
    try:
        specs = zoo.select(reg, config.getoption("tier"), _csv(config.getoption("models")))
    except zoo.ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    variants = _csv(config.getoption("variants")) or list(VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise pytest.UsageError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    return [Case(s.name, v, size) for s in specs for v in variants for size in s.sizes]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "parbench_case" in metafunc.fixturenames:
        cases = selected_cases(metafunc.config)
        metafunc.parametrize("parbench_case", cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def parbench_harness(request: pytest.FixtureRequest):
    from parbench.harness import Harness

    config = request.config
    harness = Harness(_config_path(config), config.getoption("parbench_cache"))
    harness.registry = _registry(config)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and not hasattr(config, "workerinput"):
        harness.log = lambda msg: reporter.write_line(f"[parbench] {msg}")
    return harness


class Recorder:
    """Appends each result as a JSON line to reports/parity/<run>[-<worker>].jsonl."""

    def __init__(self, folder: Path, run_id: str, worker: str | None):
        self.path = folder / (f"{run_id}-{worker}.jsonl" if worker else f"{run_id}.jsonl")

    def record(self, result: Any) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(result.to_json(), default=str) + "\n")


@pytest.fixture(scope="session")
def parbench_recorder(request: pytest.FixtureRequest) -> Recorder:
    config = request.config
    worker = getattr(config, "workerinput", {}).get("workerid")
    return Recorder(Path(config.getoption("parbench_reports")), config._parbench_run_id, worker)


def pytest_configure(config: pytest.Config) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        config._parbench_run_id = workerinput["parbench_run_id"]
    else:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        config._parbench_run_id = f"{stamp}-{uuid.uuid4().hex[:6]}"
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(), "parbench-xdist")
    if config.getoption("parbench_config") or config.getoption("models"):
        _registry(config)  # a bad config or model name is a usage error before collection


class _XdistHooks:
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["parbench_run_id"] = node.config._parbench_run_id


_ABBREV = {"pass": "ok", "fail": "FAIL", "error": "ERR", "skip": "skip", "xfail": "xfail"}


def _cell(r: dict[str, Any]) -> str:
    v = _ABBREV.get(r["verdict"], r["verdict"])
    if not r.get("metrics"):
        return v
    worst = max(m.get("rel_l2", 0.0) for m in r["metrics"].values())
    return f"{v} {worst:.1e}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    folder = Path(config.getoption("parbench_reports"))
    files = sorted(folder.glob(f"{config._parbench_run_id}*.jsonl"))
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]
    if not rows:
        return
    tr = terminalreporter
    tr.section("parbench parity: verdict and relative L2 error vs eager fp32 (worst output and case)")
    by_model: dict[str, dict[str, dict[int, dict]]] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        by_model[r["model"]][r["variant"]][r["size"]] = r
    for model, variants in by_model.items():
        sizes = sorted({s for v in variants.values() for s in v})
        tr.write_line(f"{model}:")
        tr.write_line("  " + f"{'form':<16}" + "".join(f"{s:>14}" for s in sizes) + "  executor")
        order = list(VARIANTS)
        for variant, cells in sorted(variants.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99):
            executor = next((c.get("executor") for c in cells.values() if c.get("executor")), "")
            tr.write_line("  " + f"{variant:<16}" + "".join(
                f"{_cell(cells[s]) if s in cells else '':>14}" for s in sizes) + f"  {executor}")
    skipped = {r["variant"]: r["message"].splitlines()[0] for r in rows if r["verdict"] == "skip"}
    for variant, why in skipped.items():
        tr.write_line(f"skipped {variant}: {why}")
    hits = sum(r.get("cache") == "hit" for r in rows)
    built = sum(r.get("cache", "") not in ("", "hit") for r in rows)
    tr.write_line(f"artifacts: {built} exported, {hits} reused from the cache ({config.getoption('parbench_cache')})"
                  + ("; nothing converted" if built == 0 else ""))
    tr.write_line(f"results: {', '.join(str(f) for f in files)}")
    os.environ.setdefault("PARBENCH_LAST_PARITY", str(files[0]))
