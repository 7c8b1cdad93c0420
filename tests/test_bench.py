"""bench/: the latency suite, run for real on the smoke tier (eager and TorchScript, short
budgets) in a subprocess, and its JSON checked against pytest-benchmark's own reader."""

from __future__ import annotations

import fcntl
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from parbench.pytest_plugins import bench as bench_plugin

ROOT = Path(__file__).resolve().parents[1]
PYTEST = [sys.executable, "-m", "pytest"]
QUICK = [
    "--tier",
    "smoke",
    "--bench-min-time",
    "0.05",
    "--bench-max-rounds",
    "12",
    "--bench-min-rounds",
    "3",
    "--bench-warmup-time",
    "0.01",
    "-p",
    "no:cacheprovider",
]
SMOKE_SELECTION = "eager or torchscript"
EXTRA_KEYS = {
    "model",
    "variant",
    "size",
    "threads",
    "executor",
    "artifact_bytes",
    "load_ms",
    "first_run_ms",
    "peak_rss_mb",
    "samples_ns",
    "samples_cpu_ns",
    "run_index",
    "source",
}


def run_bench(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run(
        [*PYTEST, "bench/", *QUICK, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


def smoke_bench_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bench JSON of the smoke tier's eager and TorchScript forms, made once per test
    session (shared by the bench, report and browser tests)."""
    folder = tmp_path_factory.getbasetemp() / "smoke-bench"
    folder.mkdir(exist_ok=True)
    out = folder / "bench.json"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.exists():
            proc = run_bench(["-k", SMOKE_SELECTION, f"--benchmark-json={out}"])
            (folder / "output.txt").write_text(proc.stdout + proc.stderr)
            assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    path = smoke_bench_json(tmp_path_factory)
    return json.loads(path.read_text()), (path.parent / "output.txt").read_text()


# -- the real run ---------------------------------------------------------------------------------


def test_one_benchmark_per_case_with_parbench_fields(smoke_run: tuple[dict[str, Any], str]) -> None:
    doc, _ = smoke_run
    names = sorted(b["name"] for b in doc["benchmarks"])
    expected = sorted(
        f"test_latency[{m}-{v}-{s}]"
        for m, sizes in (("tiny_classifier", (224, 320)), ("tiny_generator", (256, 320)))
        for v in ("eager", "torchscript")
        for s in sizes
    )
    assert names == expected
    for b in doc["benchmarks"]:
        extra = b["extra_info"]
        assert EXTRA_KEYS <= set(extra), EXTRA_KEYS - set(extra)
        assert f"[{extra['model']}-{extra['variant']}-{extra['size']}]" in b["name"]
        assert extra["source"] == "host" and extra["run_index"] == 0 and extra["threads"] == 1
        assert isinstance(extra["size"], int)
        assert extra["executor"] in {"torch-eager", "torch-jit"}
        assert extra["artifact_bytes"] > 10_000  # weights of a real model, not a folder listing
        assert extra["load_ms"] >= 0 and extra["first_run_ms"] > 0 and extra["peak_rss_mb"] > 50
        samples = extra["samples_ns"]
        assert all(isinstance(s, int) and s > 0 for s in samples)
        assert 3 <= len(samples) <= 12  # --bench-min-rounds / --bench-max-rounds
        cpu = extra["samples_cpu_ns"]  # the same rounds on the process CPU clock
        assert len(cpu) == len(samples) and all(isinstance(c, int) and c > 0 for c in cpu)
        # pytest-benchmark's stats are these very samples
        stats = b["stats"]
        assert stats["rounds"] == len(samples) and stats["iterations"] == 1
        assert stats["data"] == pytest.approx([s / 1e9 for s in samples])
        assert stats["median"] == pytest.approx(statistics.median(samples) / 1e9)
        assert b["options"]["timer"] == "time.perf_counter_ns"
        assert extra["warmup_rounds"] == len(extra["warmup_ns"]) >= 2


def test_torchscript_load_is_timed_and_eager_is_instant(smoke_run: tuple[dict[str, Any], str]) -> None:
    doc, _ = smoke_run
    by = {
        (b["extra_info"]["model"], b["extra_info"]["variant"], b["extra_info"]["size"]): b["extra_info"]
        for b in doc["benchmarks"]
    }
    for model, size in (("tiny_classifier", 224), ("tiny_generator", 256)):
        # loading a .pt from disk takes real time; the eager "load" hands over a module in memory
        assert by[(model, "torchscript", size)]["load_ms"] > by[(model, "eager", size)]["load_ms"]


def test_progress_line_per_case(smoke_run: tuple[dict[str, Any], str]) -> None:
    _, output = smoke_run
    lines = [line for line in output.splitlines() if line.startswith("[bench] [")]
    assert len(lines) == 8
    assert any("tiny_generator-torchscript-320: median" in line for line in lines)
    assert "[8/8]" in output


def test_pytest_benchmark_compare_reads_the_file(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = smoke_bench_json(tmp_path_factory)
    env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")  # its reader needs no pytest plugins
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "compare", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "test_latency[tiny_generator-eager-320]" in proc.stdout


def test_runs_repeat_in_fresh_processes_and_merge(tmp_path: Path) -> None:
    proc = run_bench(
        [
            "-k",
            "tiny_classifier and eager and 224",
            "--runs",
            "2",
            "--threads",
            "2",
            "--bench-out",
            str(tmp_path),
        ]
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    files = list(tmp_path.glob("*.json"))  # the default file name: <UTC timestamp>.json
    assert len(files) == 1 and files[0].stem.endswith("Z")
    doc = json.loads(files[0].read_text())
    entries = doc["benchmarks"]
    assert [e["name"] for e in entries] == ["test_latency[tiny_classifier-eager-224]"] * 2
    assert [e["extra_info"]["run_index"] for e in entries] == [0, 1]
    assert all(e["extra_info"]["threads"] == 2 for e in entries)
    assert entries[0]["extra_info"]["samples_ns"] != entries[1]["extra_info"]["samples_ns"]
    assert doc["parbench"]["runs"] == 2
    assert "[run 1/2]" in proc.stdout and "[run 2/2]" in proc.stdout
    assert "over 2 runs" in proc.stdout and "1 passed" in proc.stdout
    # the nightly's comparison reads the CPU clock of the same file (2 runs: too few to decide)
    sides = []
    for i, entry in enumerate(entries):
        sides.append(tmp_path / f"side{i}.json")
        sides[-1].write_text(json.dumps({**doc, "benchmarks": [entry]}))
    cmp = subprocess.run(
        [sys.executable, "-m", "parbench", "compare", *map(str, sides), "--clock", "cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert "unknown" in cmp.stdout and "cpu clock" in cmp.stdout


# -- pieces of the suite, in process ---------------------------------------------------------------


def test_child_args_drop_what_the_parent_handles() -> None:
    mod = bench_plugin
    args = [
        "bench/",
        "--tier",
        "smoke",
        "--benchmark-json",
        "out.json",
        "--runs=3",
        "-k",
        "eager",
        "--benchmark-save=x",
        "--benchmark-autosave",
        "--benchmark-compare",
        "0001",
        "--threads",
        "2",
        "--bench-out",
        "o",
        "--benchmark-histogram",
    ]
    assert mod.child_args(args) == ["bench/", "--tier", "smoke", "-k", "eager", "--threads", "2"]


class FakeConfig:
    def __init__(self, **options: Any) -> None:
        self.options = {
            "--threads": 1,
            "--runs": 1,
            "--bench-min-time": 1.0,
            "--bench-min-rounds": 5,
            "--bench-max-rounds": 500,
            "--bench-warmup-time": 0.2,
            "--parbench-run-index": None,
            "--instructions": False,
            "--budget": 30.0,
            "--auto-target": 0.01,
            "--auto-min-runs": 3,
            "--auto-max-runs": 20,
            "--pin-cpu": "auto",
        }
        self.options.update(options)

    def getoption(self, name: str) -> Any:
        return self.options[name]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"--runs": 0}, "--runs must be >= 1"),
        ({"--runs": "many"}, "--runs takes a number of runs"),
        ({"--runs": "auto", "--budget": 0.0}, "--budget must be > 0"),
        ({"--runs": "auto", "--auto-min-runs": 1}, "--auto-min-runs"),
        ({"--pin-cpu": "999"}, "--pin-cpu 999"),
        ({"--instructions": True, "--instr-sizes": "big", "--instr-calls": 1}, "--instr-sizes"),
        ({"--instructions": True, "--instr-sizes": "smallest", "--instr-calls": 0}, "calls must be >= 1"),
        ({"--threads": 0}, "--threads must be >= 1"),
        ({"--bench-min-rounds": 10, "--bench-max-rounds": 3}, "--bench-min-rounds <= --bench-max-rounds"),
        ({"--bench-min-time": -1.0}, "--bench-min-time"),
    ],
)
def test_bad_option_values_are_usage_errors(options: dict[str, Any], message: str) -> None:
    mod = bench_plugin
    with pytest.raises(pytest.UsageError, match=message):
        mod._settings(FakeConfig(**options))
    assert mod._settings(FakeConfig(**{"--parbench-run-index": 3})).run_index == 3


def test_merge_runs_orders_by_benchmark_then_run() -> None:
    mod = bench_plugin

    def doc(index: int, names: list[str]) -> dict[str, Any]:
        return {"benchmarks": [{"fullname": n, "extra_info": {"run_index": index}} for n in names]}

    merged = mod.merge_runs([doc(0, ["a", "b"]), doc(1, ["a", "b"])])
    assert [(b["fullname"], b["extra_info"]["run_index"]) for b in merged] == [
        ("a", 0),
        ("a", 1),
        ("b", 0),
        ("b", 1),
    ]
    with pytest.raises(RuntimeError, match="run_index"):
        mod.merge_runs([doc(0, ["a"]), doc(0, ["a"])])
