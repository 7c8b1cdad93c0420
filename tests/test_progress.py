"""The parity suite's progress line: what it says, when it is drawn, and the end-of-run time line."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from parbench.pytest_plugins.progress import Progress, time_spent, wanted

ROOT = Path(__file__).resolve().parents[1]


def test_line_names_case_stage_count_and_eta():
    p = Progress(total=4, now=0.0)
    assert p.line(0.0) == "parbench 0/4 · elapsed 0:00 · ETA after the first case"
    p.start_case("mnv2 executorch_fp32 224px", "executorch_fp32", 0.0)
    p.stage("export", True, 1.0)
    p.stage("lowering", True, 5.0)
    assert (
        p.line(65.0)
        == "parbench 0/4 · mnv2 executorch_fp32 224px · lowering 1:00 · elapsed 1:05 · ETA after the first case"
    )
    p.stage("lowering", False, 70.0)
    p.stage("export", False, 71.0)
    p.end_case(80.0)
    # one case took 80 s: three left
    assert p.eta(80.0) == 240.0
    p.start_case("mnv2 executorch_fp32 256px", "executorch_fp32", 80.0)
    p.stage("export", True, 80.0)
    line = p.line(100.0)
    assert "export 0:20 (this form's exports took ~1:10)" in line
    assert line.endswith("ETA ~3:40")  # 240 s less the 20 s the current case has run


def test_leaving_an_outer_stage_drops_inner_ones_left_open():
    p = Progress(total=1, now=0.0)
    p.start_case("m v 1px", "v", 0.0)
    p.stage("artifact", True, 0.0)
    p.stage("torch.export", True, 1.0)
    p.stage("artifact", False, 2.0)  # an exception unwound both
    assert "torch.export" not in p.line(3.0) and "artifact" not in p.line(3.0)


def test_time_spent_orders_stages_and_names_the_costliest_exports():
    records = [
        SimpleNamespace(
            variant="executorch_int8", timing={"export": 300.0, "run": 2.0}, timing_cpu={"export": 280.0}
        ),
        SimpleNamespace(variant="onnx", timing={"export": 20.0, "compare": 1.5}, timing_cpu={"export": 19.0}),
    ]
    line = time_spent(records)
    assert line.startswith(
        "time: 5m23s in cases (4m59s CPU): export 5m20s (executorch_int8 5m00s, onnx 20.0s)"
    )
    assert line.index("run 2.0s") < line.index("compare 1.5s")
    assert time_spent([]) == "time: no stage timings recorded"


def _config(progress="auto", verbosity=0, worker=False, **options):
    options = {"parbench_progress": progress, "numprocesses": None, "capture": "fd", **options}
    config = SimpleNamespace(getoption=lambda name, default=None: options.get(name, default))
    config.get_verbosity = lambda: verbosity
    if worker:
        config.workerinput = {}
    return config


def test_line_is_drawn_on_a_terminal_unless_asked_not_to(monkeypatch):
    monkeypatch.delenv("PARBENCH_PROGRESS", raising=False)
    assert wanted(_config(), fd_is_tty=True)
    assert not wanted(_config(), fd_is_tty=False)  # a pipe or a CI log
    assert not wanted(_config(verbosity=-1), fd_is_tty=True)  # -q
    assert not wanted(_config(capture="no"), fd_is_tty=True)  # -s: test output would cut through it
    assert not wanted(_config(numprocesses=2), fd_is_tty=True)  # xdist: cases run in workers
    assert not wanted(_config("off"), fd_is_tty=True)
    assert wanted(_config("on"), fd_is_tty=False)
    assert not wanted(_config("on", worker=True), fd_is_tty=True)
    monkeypatch.setenv("PARBENCH_PROGRESS", "off")
    assert not wanted(_config(), fd_is_tty=True)
    monkeypatch.setenv("PARBENCH_PROGRESS", "loud")
    with pytest.raises(pytest.UsageError, match="PARBENCH_PROGRESS is 'loud'; use one of auto, on, off"):
        wanted(_config(), fd_is_tty=True)


def test_suite_draws_the_line_and_ends_with_where_the_time_went(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PARBENCH_PROGRESS", None)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "parity/", "-p", "no:cacheprovider", "--models", "tiny_classifier",
         "--sizes", "224", "--variants", "eager", "--parbench-cache", str(tmp_path / "cache"),
         "--parbench-reports", str(tmp_path / "reports"), "--parbench-progress", "on"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "parbench 0/1 · tiny_classifier eager 224px · " in run.stderr
    assert run.stderr.endswith("\x1b[K")  # the line is wiped before pytest writes again
    assert "\ntime: " in run.stdout and " in cases (" in run.stdout and "fixtures " in run.stdout


def _suite(tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("PARBENCH_PROGRESS", None)
    env.pop("PARBENCH_WORKERS", None)
    reports = tmp_path / f"reports{len(list(tmp_path.glob('reports*')))}"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "parity/", "-p", "no:cacheprovider", "--models", "tiny_classifier",
         "--sizes", "224,256", "--variants", "eager,torchscript,onnx", "--parbench-cache", str(tmp_path / "cache"),
         "--parbench-reports", str(reports), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    records = [json.loads(line) for f in reports.glob("*.jsonl") for line in f.read_text().splitlines()]
    return run, reports, {(r["model"], r["variant"], r["size"]): r for r in records}


def test_a_worker_pool_runs_the_cases_with_the_same_results(tmp_path):
    pooled, reports, by_pool = _suite(tmp_path, "--parbench-workers", "2", "--parbench-progress", "on")
    assert "cases ran in 2 worker processes" in pooled.stdout
    assert " in cases across 2 worker processes (" in pooled.stdout
    assert "parbench 0/6 · tiny_classifier " in pooled.stderr  # the line follows the workers' cases
    assert len(list(reports.glob("*-workers.log"))) == 1  # the workers' own output, off the terminal
    alone, _, by_self = _suite(tmp_path, "--parbench-workers", "0")
    assert "worker processes" not in alone.stdout
    assert sorted(by_pool) == sorted(by_self) and len(by_pool) == 6
    for case, r in by_pool.items():
        assert (r["verdict"], r["metrics"]) == (by_self[case]["verdict"], by_self[case]["metrics"]), case


def test_eta_with_expected_times_scales_them_by_the_pace_so_far():
    p = Progress(total=4, now=0.0, workers=2)
    p.expected = {"a": 100.0, "b": 10.0, "c": 100.0, "d": 10.0}
    p.start_case("m x 1px", "x", 0.0, slot=1, key="a")
    p.start_case("m y 1px", "y", 0.0, slot=2, key="b")
    p.end_case(20.0, slot=2)  # b: expected 10 s, took 20 s: this machine runs at half the pace
    # left: a (100 s expected, 20 s of it run), c and d: (100 + 100 + 10) x 2 - 20, over 2 workers
    assert p.eta(20.0) == (210.0 * 2 - 20.0) / 2
    assert "ETA ~3:20" in p.line(20.0)
