"""Latency of every deployment form at every input size.

One pytest-benchmark entry per model x variant x size (``test_latency[{model}-{variant}-{size}]``),
selected with the same --models --variants --sizes --tier options as parity/.  Each case loads
its artifact into a fresh session (load timed), times the first run, warms up and times
calibrated rounds of ``session.run(inputs)`` with :func:`parbench.timing.time_session`; the raw
rounds become pytest-benchmark's stats and ``extra_info["samples_ns"]``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import statistics
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from parbench.backends import get_backend
from parbench.backends.base import BackendUnavailable, ExportError
from parbench.timing import PeakMemory, Warmup, time_call, time_session, torch_threads

REFERENCE_SKIP = ("{variant} would run on the {executor!r} executor here, not its deployment runtime: "
                  "its latency would mean nothing (time it on a device)")


def is_reference(executor: str | None) -> bool:
    return "reference" in (executor or "").lower()


@contextlib.contextmanager
def backend_threads(backend: Any, threads: int) -> Iterator[None]:
    """Backends with their own thread pool size (ExecuTorch's XNNPACK pool) take ``threads``
    for this load; ONNX Runtime reads torch's count, set by the caller."""
    if not hasattr(backend, "threads"):
        yield
        return
    previous = backend.threads
    backend.threads = threads
    try:
        yield
    finally:
        backend.threads = previous


def artifact_bytes(artifact: Any) -> int:
    """Size of what ships: the file or folder; for in-memory forms (eager, eager int8), the size
    of the module's state dict as torch.save writes it."""
    module = getattr(artifact, "module", None)
    if module is not None:
        buf = io.BytesIO()
        torch.save(module.state_dict(), buf)
        return buf.tell()
    return int(artifact.bytes)


def _ms(ns: float | None) -> str:
    if ns is None:
        return "-"
    ms = ns / 1e6
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.3g} ms"


def test_latency(parbench_case: Any, benchmark: Any, parbench_harness: Any, bench: Any) -> None:
    if bench.parent:
        _merge_child_runs(parbench_case, benchmark, bench)
        return
    case, h, s = parbench_case, parbench_harness, bench.settings
    model, variant, size = case.model, case.variant, case.size
    if reason := h.skip_reason(model, variant, size):
        pytest.skip(reason)
    backend = get_backend(variant)
    avail = backend.available()
    if not avail.can_run:
        pytest.skip(f"{variant} cannot run here: {avail.reason}")
    if is_reference(avail.executor):
        pytest.skip(REFERENCE_SKIP.format(variant=variant, executor=avail.executor))
    known = h.spec(model).known_failures.get(variant)
    try:
        artifact = h.artifact(model, variant, size)
    except ExportError as exc:
        if known:
            pytest.xfail(f"known failure ({known}): {exc}")
        pytest.fail(f"{variant} export of {model} failed, nothing to time: {exc}", pytrace=False)
    inputs = h.inputs(model, size)

    with torch_threads(s.threads):  # around load too: some runtimes size their pools at load
        memory = PeakMemory().start()
        try:
            with backend_threads(backend, s.threads):
                session, load_ns = time_call(lambda: backend.load(artifact))
        except BackendUnavailable as exc:
            pytest.skip(f"{variant} cannot run here: {exc}")
        except Exception as exc:
            if known:
                pytest.xfail(f"known failure ({known}): loading failed: {type(exc).__name__}: {exc}")
            raise
        executor = str(getattr(session, "executor", ""))
        if is_reference(executor):
            pytest.skip(REFERENCE_SKIP.format(variant=variant, executor=executor))
        if benchmark.disabled:  # --benchmark-disable: one run as a smoke check
            session.run(inputs)
            return
        try:
            timing = time_session(
                functools.partial(session.run, inputs), threads=s.threads, min_time_s=s.min_time_s,
                min_rounds=s.min_rounds, max_rounds=s.max_rounds,
                warmup=Warmup(min_calls=2, min_time_s=s.warmup_time_s), load_ns=load_ns, memory=memory)
        except Exception as exc:
            if known:
                pytest.xfail(f"known failure ({known}): {type(exc).__name__}: {exc}")
            raise

    extra = {
        "model": model, "variant": variant, "size": size, **timing.summary(),
        "executor": executor, "runtime_threads": getattr(session, "threads", None),
        "artifact_bytes": artifact_bytes(artifact), "artifact_format": artifact.format,
        "shape_mode": artifact.meta.get("shape_mode"), "run_index": s.run_index, "source": "host",
    }
    bench.record(benchmark, timing.samples_ns, extra, options={
        "timer": "time.perf_counter_ns", "min_time": s.min_time_s, "min_rounds": s.min_rounds,
        "max_rounds": s.max_rounds, "warmup": True, "warmup_iterations": timing.warmup_rounds})
    bench.progress(f"{case.id}: median {_ms(timing.median_ns)} (IQR {_ms(timing.iqr_ns)}, {timing.rounds} rounds, "
                   f"{timing.warmup_rounds} warm-up; load {_ms(load_ns)}, first run {_ms(timing.first_run_ns)}, "
                   f"peak RSS {timing.peak_rss_mb:.0f} MB)")


def _merge_child_runs(case: Any, benchmark: Any, bench: Any) -> None:
    """--runs K parent: this test passes, fails or skips as the K runs did; its own stats pool
    their samples (for the terminal table); the JSON file gets every run's entry."""
    runs = bench.child_runs()
    nodeid = bench.node.nodeid
    outcomes = [o.get(nodeid) for o in runs.outcomes]
    missing = [i for i, o in enumerate(outcomes) if o is None]
    if missing:
        pytest.fail(f"runs {missing} did not run {nodeid}; see their logs: {[str(runs.logs[i]) for i in missing]}",
                    pytrace=False)
    failed = [(i, o) for i, o in enumerate(outcomes) if o["outcome"] == "failed"]
    if failed:
        i, o = failed[0]
        pytest.fail(f"run {i} of {len(outcomes)} failed (log {runs.logs[i]}):\n{o['message']}", pytrace=False)
    kinds = {o["outcome"] for o in outcomes}
    if kinds == {"xfailed"}:
        pytest.xfail(outcomes[0]["message"])
    if kinds <= {"skipped", "xfailed"}:
        pytest.skip(outcomes[0]["message"])
    entries = runs.entries_for(nodeid)
    if len(entries) != len(outcomes):
        pytest.fail(f"{nodeid}: {len(entries)} of {len(outcomes)} runs wrote a benchmark entry "
                    f"(outcomes: {sorted(kinds)})", pytrace=False)
    pooled = [ns for _, e in entries for ns in e["extra_info"]["samples_ns"]]
    extra = dict(entries[0][1]["extra_info"])
    extra.update(run_index=-1, runs=len(entries), samples_ns=pooled)
    if all(e["extra_info"].get("samples_cpu_ns") for _, e in entries):
        extra["samples_cpu_ns"] = [ns for _, e in entries for ns in e["extra_info"]["samples_cpu_ns"]]
    bench.record(benchmark, pooled, extra)
    per_run = ", ".join(_ms(statistics.median(e["extra_info"]["samples_ns"])) for _, e in entries)
    bench.progress(f"{case.id}: median {_ms(statistics.median(pooled))} over {len(entries)} runs (per run: {per_run})")
