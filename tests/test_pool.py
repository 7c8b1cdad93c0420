"""The worker pool that runs parity cases side by side (parbench.run.pool): every case comes back
from a worker, and a job that raises or a worker that dies hands its cases back to the caller."""

import os
import time

import pytest

from parbench.errors import ConfigError
from parbench.run import pool as case_pool
from parbench.run.pool import CasePool, Job


def _harness():  # what a worker builds once; stands in for parbench's Harness
    return {"built_in": os.getpid()}


def _case(harness, model, variant, size):
    if variant == "raises" and size == 2:
        raise ValueError(f"{model} {variant} cannot run at {size}")
    if variant == "dies" and size == 2:
        os._exit(3)  # a worker killed mid-job (out of memory, a crashing runtime)
    return {"pid": os.getpid(), "harness": harness["built_in"], "case": (model, variant, size)}


def _pool(tmp_path, jobs, workers=2):
    events = []
    pool = CasePool(_case, jobs, workers, _harness, tmp_path / "workers.log", lambda *e: events.append(e))
    pool.start()
    return pool, events


def test_every_case_comes_back_from_a_worker_process(tmp_path):
    jobs = case_pool.jobs_for([("m", "a", 1), ("m", "a", 2), ("m", "b", 1), ("n", "a", 1)])
    pool, events = _pool(tmp_path, jobs)
    try:
        got = {case: pool.result(case) for job in jobs for case in job.cases()}
    finally:
        pool.close()
    assert all(r is not None and r["case"] == case for case, r in got.items())
    pids = {r["pid"] for r in got.values()}
    assert os.getpid() not in pids and len(pids) <= 2
    assert all(r["harness"] == r["pid"] for r in got.values())  # one harness per worker, built there
    # one model x form per job: both sizes of m/a ran in the same worker, in order
    assert got[("m", "a", 1)]["pid"] == got[("m", "a", 2)]["pid"]
    started = [e[2] for e in events if e[0] == "start"]
    assert sorted(started) == sorted(got) and started.index(("m", "a", 1)) < started.index(("m", "a", 2))
    assert pool.result(("m", "never submitted", 1)) is None


class _SlowSecondHarness:
    """The first worker to start builds its harness at once, later ones take ``seconds``."""

    def __init__(self, marker, seconds):
        self.marker, self.seconds = marker, seconds

    def __call__(self):
        try:
            with open(self.marker, "x"):
                pass
        except FileExistsError:
            time.sleep(self.seconds)
        return _harness()


def test_close_ends_a_worker_that_is_still_starting(tmp_path):
    import multiprocessing as mp

    before = set(mp.active_children())  # other tests' processes (a manager) are not this pool's
    jobs = case_pool.jobs_for([("m", "a", 1), ("m", "b", 1), ("m", "c", 1)])
    pool = CasePool(_case, jobs, 2, _SlowSecondHarness(tmp_path / "first", 120), tmp_path / "workers.log")
    pool.start()
    try:
        assert all(pool.result(case) is not None for job in jobs for case in job.cases())
    finally:
        t0 = time.monotonic()
        pool.close()
    # the second worker was still building its harness (no hello yet): close() must end it too,
    # not wait for it to finish starting
    assert time.monotonic() - t0 < 60
    assert not [p for p in set(mp.active_children()) - before if p.is_alive()]


def test_a_case_that_raises_is_handed_back_with_its_traceback(tmp_path):
    jobs = [Job("m", "raises", (1, 2, 3))]
    pool, _ = _pool(tmp_path, jobs)
    try:
        assert pool.result(("m", "raises", 1))["case"] == ("m", "raises", 1)
        assert pool.result(("m", "raises", 2)) is None  # the caller runs it and reports the error
        assert "ValueError: m raises cannot run at 2" in pool.error(("m", "raises", 2))
        assert pool.result(("m", "raises", 3))["case"] == ("m", "raises", 3)  # the job went on
    finally:
        pool.close()


def test_a_dead_worker_hands_back_what_it_did_not_finish(tmp_path):
    jobs = [Job("m", "dies", (1, 2, 3))]
    pool, _ = _pool(tmp_path, jobs)
    t0 = time.monotonic()
    try:
        assert pool.result(("m", "dies", 1))["case"] == ("m", "dies", 1)
        assert pool.result(("m", "dies", 2)) is None
        assert pool.result(("m", "dies", 3)) is None
    finally:
        pool.close()
    assert time.monotonic() - t0 < 60
    assert "BrokenProcessPool" in pool.broken


def test_worker_output_goes_to_the_log_not_the_terminal(tmp_path, capfd):
    pool, _ = _pool(tmp_path, [Job("m", "a", (1,))], workers=1)
    try:
        assert pool.result(("m", "a", 1)) is not None
    finally:
        pool.close()
    assert capfd.readouterr().err == ""
    assert (tmp_path / "workers.log").exists()


def test_jobs_group_sizes_and_put_the_heaviest_forms_first():
    cases = [("m", "light", 1), ("m", "heavy", 1), ("m", "light", 2), ("n", "heavy", 1), ("m", "heavy", 1)]
    jobs = case_pool.jobs_for(cases, lambda job: {"heavy": 2.0, "light": 1.0}[job.variant])
    assert jobs == [Job("m", "heavy", (1,)), Job("n", "heavy", (1,)), Job("m", "light", (1, 2))]


def test_worker_count(monkeypatch):
    monkeypatch.delenv(case_pool.ENV, raising=False)
    assert case_pool.parse_workers("3") == 3
    assert case_pool.parse_workers("0") == 0
    assert 1 <= case_pool.parse_workers("auto") <= (os.cpu_count() or 1)
    monkeypatch.setattr(case_pool, "_usable_cores", lambda: 8)
    monkeypatch.setattr(case_pool, "_available_bytes", lambda: 9 << 30)
    assert case_pool.default_workers() == 2  # memory for two, not eight
    monkeypatch.setenv(case_pool.ENV, "1")
    assert case_pool.parse_workers(None) == 1
    with pytest.raises(ConfigError, match="workers must be 'auto' or a count"):
        case_pool.parse_workers("many")


def test_jobs_are_weighed_by_the_last_run_less_exports_already_cached(tmp_path):
    from parbench.pytest_plugins.parity import _job_weight
    from parbench.records import parity as parity_records

    reports, cache = tmp_path / "reports", tmp_path / "cache"
    for variant, size, timing in [
        ("executorch_int8", 256, {"export": 100.0, "run": 2.0}),
        ("executorch_int8", 512, {"run": 6.0}),
        ("eager", 256, {"run": 30.0}),
    ]:
        parity_records.append(
            reports / "earlier.jsonl",
            parity_records.ParityRecord(
                model="m", variant=variant, size=size, task="classification", family="int8",
                verdict="pass", timing=timing,
            ),
        )  # fmt: skip
    weight = _job_weight(reports, cache)
    et, eager = Job("m", "executorch_int8", (256, 512)), Job("m", "eager", (256,))
    assert weight(et) == 108.0 and weight(eager) == 30.0  # nothing cached: the export is to come
    (cache / "artifacts" / "m" / "executorch_int8-any-0123").mkdir(parents=True)
    (cache / "artifacts" / "m" / "executorch_int8-any-0123" / "entry.json").write_text("{}")
    assert weight(et) == 8.0  # exported already: only its runs are left, so eager goes first
    unseen = Job("m", "executorch_fp32", (256,))
    assert weight(unseen) == 62.0  # no earlier run: a guess by form (export 60 s, 2 s a size)
