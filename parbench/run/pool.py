"""Worker processes that run a suite's cases ahead of pytest's items, so that a 2-core machine
exports (and runs) two model x form jobs at once.

A job is one model x form with all its sizes, so one worker exports each artifact and loads it once,
and a per-model-and-form step (localising a failure) happens once.  Each worker is a *spawned*
process (torch must not be forked) with its own :class:`~parbench.run.harness.Harness` on the same
cache: the cache's file locks keep two processes from exporting one artifact twice.  A worker's
stdout and stderr go to a log file, not the terminal.

Workers send back, per case, whatever the job function returns (a parity record), and stage events
(case started, stage entered or left) for a progress display.  Nothing is lost when a worker dies
or a job raises: :meth:`CasePool.result` returns None for the cases it did not finish, and the
caller runs those itself, where the error is reported as usual.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from parbench._util import stages
from parbench.errors import ConfigError

CaseId = tuple[str, str, int]  # model, variant, size
JobFn = Callable[[Any, str, str, int], Any]  # (harness, model, variant, size) -> result
WORKER_BYTES = 4 << 30  # memory one worker may need at the default tier's largest models
ENV = "PARBENCH_WORKERS"


@dataclasses.dataclass(frozen=True)
class Job:
    model: str
    variant: str
    sizes: tuple[int, ...]

    def cases(self) -> list[CaseId]:
        return [(self.model, self.variant, s) for s in self.sizes]


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _available_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def default_workers() -> int:
    """One worker per usable core, fewer when the available memory cannot hold that many."""
    cores = _usable_cores()
    mem = _available_bytes()
    by_memory = cores if mem is None else max(1, mem // WORKER_BYTES)
    return max(1, min(cores, by_memory))


def parse_workers(value: str | None) -> int:
    """``auto`` (or unset) -> :func:`default_workers`; a count -> that count (0 and 1: no pool)."""
    text = (value or os.environ.get(ENV) or "auto").strip().lower()
    if text == "auto":
        return default_workers()
    if not text.isdigit():
        raise ConfigError(
            f"workers must be 'auto' or a count (0, 1, 2, ...), got {text!r} (--parbench-workers or {ENV})"
        )
    return int(text)


def jobs_for(cases: Sequence[CaseId], weight: Callable[[Job], float] = lambda job: 1.0) -> list[Job]:
    """Group cases into model x form jobs, the heaviest first by ``weight`` (its expected seconds:
    longest first keeps both workers busy to the end), the cases' own order otherwise."""
    sizes: dict[tuple[str, str], list[int]] = {}
    for model, variant, size in cases:
        got = sizes.setdefault((model, variant), [])
        if size not in got:
            got.append(size)
    jobs = [Job(m, v, tuple(s)) for (m, v), s in sizes.items()]
    order = {job: i for i, job in enumerate(jobs)}
    return sorted(jobs, key=lambda job: (-weight(job), order[job]))


# ---- the worker side -------------------------------------------------------------------------
_harness: Any = None
_events: Any = None


def _init(events: Any, log_path: str, make_harness: Callable[[], Any]) -> None:
    global _harness, _events
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when workers stop
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    _events = events
    pid = os.getpid()
    stages.observe(lambda name, entering: events.put(("stage", pid, name, entering, time.time())))
    _harness = make_harness()
    events.put(("hello", pid, time.time()))


def _run_job(fn: JobFn, job: Job) -> dict[CaseId, tuple[str, Any]]:
    """Run every case of the job; per case ("ok", result) or ("error", traceback text)."""
    pid, out = os.getpid(), {}
    for case in job.cases():
        _events.put(("start", pid, case, time.time()))
        try:
            got = ("ok", fn(_harness, *case))
        except BaseException:  # reported back; the main process reruns the case itself
            got = ("error", traceback.format_exc())
        out[case] = got
        _events.put(("result", pid, case, got, time.time()))
    return out


# ---- the main side ---------------------------------------------------------------------------
class CasePool:
    """Runs ``fn(harness, model, variant, size)`` for every case of ``jobs`` in ``workers`` spawned
    processes, as soon as it starts.  ``on_event(kind, pid, *args)`` sees every event (from a
    background thread): ``hello``, ``start`` (case), ``stage`` (name, entering, time), ``result``."""

    def __init__(
        self,
        fn: JobFn,
        jobs: Sequence[Job],
        workers: int,
        make_harness: Callable[[], Any],
        log_path: Path,
        on_event: Callable[..., None] | None = None,
    ):
        self.fn, self.jobs, self.workers = fn, list(jobs), workers
        self._submitted = {case for job in self.jobs for case in job.cases()}
        self.log_path = Path(log_path)
        self.on_event = on_event
        self._ctx = mp.get_context("spawn")
        # written straight to a pipe (no feeder thread), so a worker that dies has sent what it sent
        self._events = self._ctx.SimpleQueue()
        self._make_harness = make_harness
        self._results: dict[CaseId, tuple[str, Any]] = {}
        self._finished: set[CaseId] = set()  # cases whose job ended (with or without a result)
        self._cond = threading.Condition()
        self._pids: set[int] = set()
        self._executor: cf.ProcessPoolExecutor | None = None
        self._reader: threading.Thread | None = None
        self.broken: str = ""  # why the pool stopped early, if it did

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._executor = cf.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=self._ctx,
            initializer=_init,
            initargs=(self._events, str(self.log_path), self._make_harness),
        )
        self._reader = threading.Thread(target=self._read_events, name="parbench-pool", daemon=True)
        self._reader.start()
        for job in self.jobs:
            future = self._executor.submit(_run_job, self.fn, job)
            future.add_done_callback(lambda f, job=job: self._job_done(job, f))

    def _read_events(self) -> None:
        while True:
            try:
                event = self._events.get()
            except (EOFError, OSError):
                return
            kind, pid = event[0], event[1]
            if kind == "stop":
                return
            if kind == "hello":
                self._pids.add(pid)
            elif kind == "result":
                with self._cond:
                    self._results.setdefault(event[2], event[3])
                    self._cond.notify_all()
            if self.on_event is not None:
                self.on_event(*event)

    def _job_done(self, job: Job, future: cf.Future) -> None:
        try:
            results = future.result()
        except cf.CancelledError:
            results = {}
        except BaseException as exc:  # a worker died (BrokenProcessPool) or could not start
            results = {}
            self.broken = self.broken or f"{type(exc).__name__}: {exc}"
        with self._cond:
            for case, got in results.items():
                self._results.setdefault(case, got)
            self._finished.update(job.cases())
            self._cond.notify_all()

    def result(self, case: CaseId) -> Any | None:
        """The case's result once a worker has it; None when the pool will not deliver it (the job
        raised, a worker died, or the case was never submitted): run it in this process then."""
        if case not in self._submitted:
            return None
        with self._cond:
            while case not in self._results and case not in self._finished:
                self._cond.wait(0.5)
            status, value = self._results.get(case, ("missing", None))
        return value if status == "ok" else None

    def error(self, case: CaseId) -> str | None:
        """The traceback a worker reported for the case, if its job raised."""
        status, value = self._results.get(case, ("missing", None))
        return value if status == "error" else None

    def close(self) -> None:
        """Stop: cancel queued jobs and end the workers (also those still busy).  Every event the
        workers sent before this has been handed to ``on_event`` when it returns."""
        if self._reader is not None:
            self._events.put(("stop", 0))
            self._reader.join(timeout=10)
            self._reader = None
        if self._executor is not None:
            # the executor's own process list too: a worker still starting up has not said hello,
            # and one left alive keeps this interpreter from exiting
            procs = list((getattr(self._executor, "_processes", None) or {}).values())
            for pid in self._pids | {p.pid for p in procs if p.pid}:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            for proc in _still_running(procs, timeout=10):
                proc.kill()
            # the executor's own thread reaps the workers, and this waits for it; this thread must
            # not wait on them as well: of two threads waiting on one child, one can miss its exit
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def _still_running(procs: Sequence[Any], timeout: float) -> list[Any]:
    """The processes that have not exited within ``timeout`` seconds (seen by their sentinels,
    without reaping them)."""
    pending = {proc.sentinel: proc for proc in procs}
    deadline = time.monotonic() + timeout
    while pending and (left := deadline - time.monotonic()) > 0:
        for sentinel in multiprocessing.connection.wait(list(pending), left):
            pending.pop(sentinel)
    return list(pending.values())
