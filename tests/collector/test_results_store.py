"""parbench.history.store: idempotent writes, all-or-nothing batches, concurrency, versions, ingestion."""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support.collector_helpers import device_run, make_result

from parbench.history.ingest import ingest_benchmark_json
from parbench.history.store import (
    SCHEMA_VERSION,
    RunConflictError,
    RunNotFoundError,
    Store,
    StoreError,
    StoreVersionError,
)
from parbench.records.device import RESULT_FIELDS, ResultOut, RunSummary


def _run(run_id: str, **over) -> dict:
    return {"run_id": run_id, **device_run(run_id), **over}


def _count(path: Path, sql: str = "SELECT COUNT(*) FROM results") -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchone()[0]


def test_store_is_wal_and_versioned(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite")
    assert store.schema_version() == SCHEMA_VERSION
    with sqlite3.connect(tmp_path / "h.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_put_run_is_idempotent_and_refuses_changed_metadata(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite")
    assert store.put_run(_run("dev-run-0001")) is True
    assert store.put_run(_run("dev-run-0001")) is False
    with pytest.raises(RunConflictError, match=r"different metadata \(fields \['commit'\]\)"):
        store.put_run(_run("dev-run-0001", commit="other"))
    assert store.get_run("dev-run-0001")["commit"] == "3f2a9c1"


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"run_id": "short"}, r"run_id: String should match pattern '\^\[A-Za-z0-9._-\]\{8,128\}"),
        ({"run_id": "bad/slash-id"}, "run_id: String should match pattern"),
        ({"source": "cloud"}, "source: Input should be 'device' or 'host'"),
        ({"created_utc": "yesterday"}, "created_utc: String should have at least 10 characters"),
        ({"created_utc": "the day before"}, "created_utc: must be an RFC 3339 date-time"),
        ({"device": None}, "a device run needs 'device'"),
        ({"device": {"model": "iPhone15,2"}}, "device.os: Field required"),
        ({"runtime": {"version": "1"}}, "runtime.name: Field required"),
        ({"machine": {"t": float("nan")}}, "machine: t is nan: only finite numbers are allowed"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"machine": {"when": {1, 2}}}, "cannot be stored as JSON"),
    ],
)
def test_put_run_rejects_bad_metadata(tmp_path: Path, over: dict, message: str) -> None:
    store = Store(tmp_path / "h.sqlite")
    with pytest.raises(StoreError, match=message):
        store.put_run({**_run("dev-run-0001"), **over})
    assert _count(tmp_path / "h.sqlite", "SELECT COUNT(*) FROM runs") == 0


def test_put_results_counts_duplicates_and_refuses_conflicts(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite")
    store.put_run(_run("dev-run-0001"))
    batch = [make_result(i) for i in range(5)]
    assert store.put_results("dev-run-0001", batch) == (5, 0)
    assert store.put_results("dev-run-0001", batch[:3] + [make_result(5)]) == (1, 3)
    # Same key, different content: the whole batch is refused, including its new result.
    changed = dict(batch[0], load_ms=99.0)
    with pytest.raises(RunConflictError, match="different values"):
        store.put_results("dev-run-0001", [make_result(6), changed])
    assert _count(tmp_path / "h.sqlite") == 6
    # compute_units=None and "all" are different keys (NULL must not defeat the unique key).
    assert store.put_results("dev-run-0001", [make_result(0, compute_units="all")]) == (1, 0)
    assert store.put_results("dev-run-0001", [make_result(0, compute_units="all")]) == (0, 1)
    with pytest.raises(RunNotFoundError, match="create it first"):
        store.put_results("dev-run-9999", batch)


def test_put_results_is_all_or_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite")
    store.put_run(_run("dev-run-0001"))
    bad = [make_result(i) for i in range(50)] + [make_result(50, samples_ns=[])]
    with pytest.raises(StoreError, match=r"results\[50\].*needs samples_ns \(non-empty\)"):
        store.put_results("dev-run-0001", bad)
    # A conflict found inside the transaction (after 50 inserts) rolls them all back.
    store.put_results("dev-run-0001", [make_result(999)])
    late_conflict = [make_result(i) for i in range(50)] + [make_result(999, first_run_ms=1.0)]
    with pytest.raises(RunConflictError):
        store.put_results("dev-run-0001", late_conflict)
    assert _count(tmp_path / "h.sqlite") == 1


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"size": 8}, r"results\[1\] \(tiny_net-lite-8\): size: Input should be greater than or equal to 16"),
        ({"size": 256.0}, "size: Input should be a valid integer"),
        ({"model": "Tiny-Net"}, "model: String should match pattern"),
        ({"load_ms": -1.0}, "load_ms: Input should be greater than or equal to 0"),
        ({"first_run_ms": float("inf")}, "first_run_ms: Input should be a finite number"),
        ({"samples_ns": [10, 0]}, r"samples_ns.1: Input should be greater than 0"),
        ({"samples_ns": [10, True]}, "samples_ns.1: Input should be a valid integer"),
        ({"compute_units": "gpu"}, "compute_units: Input should be 'cpuOnly'"),
        (
            {"metrics": {"output": {"snr_db": float("nan")}}},
            "metrics.output.snr_db: Input should be a finite",
        ),
        ({"extra": {"when": {1, 2}}}, "cannot be stored as JSON"),
        ({"speed": 3}, "speed: Extra inputs are not permitted"),
    ],
)
def test_put_results_rejects_bad_results(tmp_path: Path, over: dict, message: str) -> None:
    store = Store(tmp_path / "h.sqlite")
    store.put_run(_run("dev-run-0001"))
    with pytest.raises(StoreError, match=message):
        store.put_results("dev-run-0001", [make_result(0), make_result(1, **over)])
    assert _count(tmp_path / "h.sqlite") == 0


def test_error_results_need_no_samples(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite")
    store.put_run(_run("dev-run-0001"))
    failed = make_result(0, samples_ns=[], load_ms=None, first_run_ms=None, error="load failed: bad op")
    assert store.put_results("dev-run-0001", [failed]) == (1, 0)
    row = store.results().iloc[0]
    assert row["error"] == "load failed: bad op" and row["n_samples"] == 0 and row["median_ms"] is None


def test_results_table_keeps_json_columns_with_some_nulls(tmp_path: Path) -> None:
    """Rows with and without metrics/xctest/extra read back as objects and None (pandas would make a
    column of text and NULLs a string column with NaN)."""
    store = Store(tmp_path / "h.sqlite")
    store.put_run(_run("dev-run-0001"))
    failed = make_result(
        1, samples_ns=[], load_ms=None, first_run_ms=None, error="bad op", metrics=None, extra=None
    )
    store.put_results("dev-run-0001", [make_result(0, xctest={"clock_ms": [1.5]}), failed])
    df = store.results().set_index("run_index")
    assert df.loc[0, "xctest"] == {"clock_ms": [1.5]} and df.loc[1, "xctest"] is None
    assert df.loc[1, "metrics"] is None and df.loc[1, "extra"] is None and df.loc[1, "samples_ns"] == []
    runs = store.runs()
    assert runs.loc[0, "fixture_set"] == {"manifest_sha256": "0" * 64}


def test_what_the_store_returns_is_what_the_api_declares(tmp_path: Path) -> None:
    """The API's output types list what the store returns: a result's posted fields (the record's)
    and the store's own; a run's metadata and its state."""
    store = Store(tmp_path / "h.sqlite")
    store.put_run(_run("dev-run-0001"))
    store.put_results("dev-run-0001", [make_result(0)])
    [result] = store.run_results("dev-run-0001")
    assert list(result)[: len(RESULT_FIELDS)] == list(RESULT_FIELDS)
    assert set(result) == set(ResultOut.model_fields)
    assert set(store.get_run("dev-run-0001")) == set(RunSummary.model_fields)


def test_complete_run(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite")
    store.put_run(_run("dev-run-0001"))
    store.put_results("dev-run-0001", [make_result(i) for i in range(3)])
    with pytest.raises(RunConflictError, match="has 3 results stored but 4 were expected"):
        store.complete_run("dev-run-0001", expected_results=4)
    run = store.complete_run("dev-run-0001", expected_results=3)
    assert run["status"] == "complete" and run["completed_utc"] and run["n_results"] == 3
    assert store.complete_run("dev-run-0001")["completed_utc"] == run["completed_utc"]
    with pytest.raises(RunConflictError, match="already marked 'complete'"):
        store.complete_run("dev-run-0001", status="failed")
    # A late retry of an already-stored batch is still fine; new results are not.
    assert store.put_results("dev-run-0001", [make_result(0)]) == (0, 1)
    with pytest.raises(RunConflictError, match="already complete"):
        store.put_results("dev-run-0001", [make_result(7)])
    with pytest.raises(RunNotFoundError):
        store.complete_run("dev-run-0404")


def test_results_dataframe_joins_run_metadata(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite")
    store.put_run(_run("dev-run-0001"))
    store.put_run(
        _run(
            "dev-run-0002",
            device={"model": "iPhone16,1", "os": "iOS 18.2"},
            runtime={"name": "coreml", "version": "8.0"},
            created_utc="2026-11-24T09:30:00Z",
        )
    )
    store.put_results("dev-run-0001", [make_result(i) for i in range(4)])
    store.put_results(
        "dev-run-0002",
        [make_result(i, variant="coreml_fp16", compute_units="all", compile_ms=250.0) for i in range(2)],
    )
    df = store.results()
    assert len(df) == 6
    assert list(df["run_id"]) == ["dev-run-0001"] * 4 + ["dev-run-0002"] * 2  # oldest run first
    r = df.iloc[0]
    sent = make_result(0)
    assert r["samples_ns"] == sent["samples_ns"]
    assert r["median_ms"] == pytest.approx(statistics.median(sent["samples_ns"]) / 1e6)
    assert r["min_ms"] == pytest.approx(min(sent["samples_ns"]) / 1e6)
    assert (r["device_model"], r["device_os"], r["runtime_name"], r["source"]) == (
        "iPhone15,2",
        "iOS 18.1",
        "libtorch-lite",
        "device",
    )
    assert r["metrics"] == {"output": {"max_abs": 1.5e-6, "cosine": 0.9999999}}
    coreml = store.results(variant="coreml_fp16")
    assert len(coreml) == 2 and set(coreml["device_model"]) == {"iPhone16,1"}
    assert set(coreml["compute_units"]) == {"all"} and set(coreml["compile_ms"]) == {250.0}
    assert len(store.results(model="tiny_net", size=64, source="device")) == 6
    assert store.results(source="host").empty and "median_ms" in store.results(source="host").columns
    runs = store.runs()
    assert list(runs["run_id"]) == ["dev-run-0002", "dev-run-0001"]
    assert list(runs["n_results"]) == [2, 4]


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(
        StoreVersionError, match=r"schema version 99.*knows versions up to 1.*upgrade parbench"
    ):
        Store(path)


def test_foreign_files_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
    with pytest.raises(StoreError, match="not a parbench store"):
        Store(other)
    text = tmp_path / "notes.sqlite"
    text.write_text("just some notes, not a database " * 100)
    with pytest.raises(StoreError, match="is it an SQLite file"):
        Store(text)
    with pytest.raises(StoreError, match="is a folder"):
        Store(tmp_path)


_WRITER = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    from support.collector_helpers import device_run, make_result
    from parbench.history.store import Store

    worker, path = int(sys.argv[1]), sys.argv[2]
    store = Store(path)  # several processes may create the schema at the same moment
    own = f"proc-run-{{worker:04d}}"
    store.put_run({{"run_id": own, **device_run(own)}})
    shared_created = store.put_run({{"run_id": "proc-shared-run", **device_run("proc-shared-run")}})
    stored_shared = dups_shared = 0
    for batch in range(25):
        store.put_results(own, [make_result(batch * 4 + k) for k in range(4)])
        # every worker posts the same shared results: exactly one of them may store each
        s, d = store.put_results("proc-shared-run", [make_result(batch)])
        stored_shared += s
        dups_shared += d
    print(json.dumps({{"created": shared_created, "stored": stored_shared, "dups": dups_shared}}))
""")


def test_concurrent_writer_processes(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(tests=str(Path(__file__).parents[1])))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(w), str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(4)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
    assert sum(o["created"] for o in outs) == 1
    assert sum(o["stored"] for o in outs) == 25 and sum(o["dups"] for o in outs) == 75
    store = Store(path)
    counts = store.runs().set_index("run_id")["n_results"].to_dict()
    assert counts == {**{f"proc-run-{w:04d}": 100 for w in range(4)}, "proc-shared-run": 25}
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert (
            conn.execute(
                "SELECT COUNT(*) FROM (SELECT run_id, run_index FROM results "
                "GROUP BY run_id, run_index HAVING COUNT(*) > 1)"
            ).fetchone()[0]
            == 0
        )


_BENCH_TEST = textwrap.dedent("""
    import time
    import pytest

    @pytest.mark.parametrize("size", [64, 128], ids=lambda s: f"tiny_net-lite-{s}")
    def test_latency(benchmark, size):
        samples = []

        def run():
            t0 = time.perf_counter_ns()
            sum(range(size * 50))
            samples.append(time.perf_counter_ns() - t0)

        benchmark.pedantic(run, rounds=7, iterations=1, warmup_rounds=2)
        benchmark.extra_info.update(
            model="tiny_net", variant="lite", size=size, threads=1, executor="python",
            artifact_bytes=4096, load_ms=1.25, first_run_ms=0.5, peak_rss_mb=123.5,
            samples_ns=samples[2:], run_index=0, source="host")
""")


@pytest.fixture(scope="module")
def benchmark_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real pytest-benchmark JSON, written by pytest-benchmark itself."""
    work = tmp_path_factory.mktemp("bench")
    (work / "test_tiny_bench.py").write_text(_BENCH_TEST)
    out = work / "bench.json"
    # A clean pytest: no xdist worker variables (pytest-benchmark turns itself off under xdist).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYTHONBREAKPOINT"))}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "--benchmark-json",
            str(out),
            "test_tiny_bench.py",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0 and out.is_file(), proc.stdout + proc.stderr
    return out


def test_ingest_benchmark_json_round_trip(tmp_path: Path, benchmark_json: Path) -> None:
    doc = json.loads(benchmark_json.read_text())
    store = Store(tmp_path / "h.sqlite")
    run_id = ingest_benchmark_json(store, benchmark_json)
    assert run_id.startswith("host-")
    assert ingest_benchmark_json(store, benchmark_json) == run_id  # same file: same run, nothing new
    df = store.results(source="host")
    assert len(df) == 2
    by_size = df.set_index("size")
    for bench in doc["benchmarks"]:
        extra = bench["extra_info"]
        row = by_size.loc[extra["size"]]
        assert row["samples_ns"] == extra["samples_ns"] and row["n_samples"] == 7
        assert (row["model"], row["variant"], row["executor"], row["threads"]) == (
            "tiny_net",
            "lite",
            "python",
            1,
        )
        assert (row["load_ms"], row["first_run_ms"], row["peak_memory_mb"]) == (1.25, 0.5, 123.5)
        assert row["median_ms"] == pytest.approx(statistics.median(extra["samples_ns"]) / 1e6)
        assert row["extra"]["artifact_bytes"] == 4096
        assert row["extra"]["benchmark"] == bench["fullname"]
        assert row["device_model"] is None and row["compute_units"] is None
    run = store.get_run(run_id)
    assert run["machine"]["cpu"] == doc["machine_info"]["cpu"]["brand_raw"]
    assert run["machine"]["os"].startswith(doc["machine_info"]["system"])
    assert doc["commit_info"]["id"] == "unversioned" and run["commit"] is None  # not a git checkout
    assert run["env"]["pytest-benchmark"] == doc["version"]
    assert str(df["created_utc"].iloc[0].year) == doc["datetime"][:4]
    # An explicit run id is honoured; then the same content under that id is a no-op too.
    assert ingest_benchmark_json(store, benchmark_json, run_id="nightly-2026-11-23") == "nightly-2026-11-23"
    assert len(store.results(source="host")) == 4


def test_ingest_refuses_files_it_cannot_read(tmp_path: Path, benchmark_json: Path) -> None:
    store = Store(tmp_path / "h.sqlite")
    doc = json.loads(benchmark_json.read_text())
    del doc["benchmarks"][1]["extra_info"]["samples_ns"]
    del doc["benchmarks"][1]["stats"]["data"]
    no_samples = tmp_path / "no_samples.json"
    no_samples.write_text(json.dumps(doc))
    with pytest.raises(StoreError, match=r"no raw samples \(extra_info.samples_ns or stats.data\)"):
        ingest_benchmark_json(store, no_samples)
    # pytest-benchmark's own samples (stats.data, seconds) are used when present.
    doc["benchmarks"][1]["stats"]["data"] = [0.002, 0.003]
    with_data = tmp_path / "with_data.json"
    with_data.write_text(json.dumps(doc))
    run_id = ingest_benchmark_json(store, with_data)
    assert sorted(store.results(run_id=run_id)["n_samples"]) == [2, 7]
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(StoreError, match="not a pytest-benchmark JSON file"):
        ingest_benchmark_json(store, tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{not json")
    with pytest.raises(StoreError, match="is not valid JSON"):
        ingest_benchmark_json(store, tmp_path / "y.json")
    assert _count(tmp_path / "h.sqlite", "SELECT COUNT(*) FROM runs") == 1


def test_ingest_user_model_names(tmp_path: Path, benchmark_json: Path) -> None:
    """A model named like MyNet2, in extra_info or only in the test id, is ingested as it is named."""
    doc = json.loads(benchmark_json.read_text())
    for bench in doc["benchmarks"]:
        size = bench["extra_info"].pop("size")
        del bench["extra_info"]["model"], bench["extra_info"]["variant"]
        bench["name"] = f"test_latency[MyNet2-onnx-{size}]"
        bench["fullname"] = f"bench/test_latency.py::{bench['name']}"
    only_ids = tmp_path / "ids.json"
    only_ids.write_text(json.dumps(doc))
    store = Store(tmp_path / "h.sqlite")
    run_id = ingest_benchmark_json(store, only_ids)
    df = store.results(run_id=run_id)
    assert set(df["model"]) == {"MyNet2"} and set(df["variant"]) == {"onnx"} and set(df["size"]) == {64, 128}
    doc["benchmarks"][0]["name"] = "test_latency[My-Net2-onnx-64]"
    doc["benchmarks"][0]["fullname"] = "bench/test_latency.py::test_latency[My-Net2-onnx-64]"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(StoreError, match=r"has no model/variant/size.*not written by parbench's bench/"):
        ingest_benchmark_json(store, bad)


_BIG_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from support.collector_helpers import make_result
    from parbench.history.store import Store

    store = Store(sys.argv[1])
    batch = [make_result(i, n_samples=200) for i in range(8000)]
    print("writing", flush=True)
    store.put_results("dev-run-0001", batch)
    print("committed", flush=True)
""")


def test_writer_killed_inside_a_transaction_leaves_no_trace(tmp_path: Path) -> None:
    """SIGKILL a process while its put_results transaction is spilling pages into the WAL."""
    path = tmp_path / "h.sqlite"
    store = Store(path)
    store.put_run(_run("dev-run-0001"))
    store.put_results("dev-run-0001", [make_result(100_000)])
    script = tmp_path / "big_writer.py"
    script.write_text(_BIG_WRITER.format(tests=str(Path(__file__).parents[1])))
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        wal = Path(f"{path}-wal")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not wal.exists() or wal.stat().st_size < 4 << 20):
            time.sleep(0.005)
        assert wal.stat().st_size >= 4 << 20, "the writer never spilled its transaction into the WAL"
        assert proc.poll() is None, "the writer finished before it could be killed"
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert _count(path) == 1  # only the result committed before
    store.close()
    store = Store(path)  # and the store still takes writes
    assert store.put_results("dev-run-0001", [make_result(i) for i in range(3)]) == (3, 0)
