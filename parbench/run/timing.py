"""How one session is timed.

The clock is ``time.perf_counter_ns`` (monotonic, integer nanoseconds, no float rounding).
Every round also records the process's CPU time (``time.process_time_ns``, all threads, so
intra-op pools count): on a shared machine it moves far less than wall time when other jobs
take the cores, and ``parbench compare --clock cpu`` decides on it.
A timed session has four phases, each recorded on its own:

1. **load**: the caller times it with :func:`time_call` and passes ``load_ns``;
2. **first run**: the first call after load (lazy init, allocator growth, JIT) is timed alone;
3. **warm-up**: calls until both ``warmup.min_time_s`` and ``warmup.min_calls`` are reached,
   or ``warmup.max_calls`` — the warm-up samples calibrate the round count;
4. **rounds**: ``ceil(min_time_s / per_call)`` calls, clamped to ``[min_rounds, max_rounds]``,
   every one kept as a raw sample.

Threads are set with ``torch.set_num_threads`` (and restored afterwards); the count in effect is
recorded.  Peak memory is the process's resident-set high-water mark over the window: on Linux
the kernel's ``VmHWM`` is reset through ``/proc/self/clear_refs`` at the start of the window and
read at the end, so the peak belongs to this window only and includes native allocations
(torch, ONNX Runtime, ExecuTorch) that ``tracemalloc`` cannot see.  Where that reset is not
possible (macOS, locked-down /proc) ``getrusage(RUSAGE_SELF).ru_maxrss`` is used: the process's
peak so far, an upper bound of the window's peak; ``Timing.memory_method`` says which.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

CLOCK = "time.perf_counter_ns"
CPU_CLOCK = "time.process_time_ns"  # CPU time of every thread of the process (pools included)
_MB = 1024.0 * 1024.0
_PROC_STATUS = Path("/proc/self/status")
_PROC_CLEAR_REFS = Path("/proc/self/clear_refs")


# ---------------------------------------------------------------------------------------------
# calibration


@dataclasses.dataclass(frozen=True)
class Warmup:
    """Warm-up policy: at least ``min_calls`` calls and ``min_time_s`` seconds, at most
    ``max_calls`` calls.  A slow model (seconds per call) stops after ``min_calls``; a fast one
    runs until the time is reached."""

    min_calls: int = 2
    min_time_s: float = 0.2
    max_calls: int = 100

    def __post_init__(self) -> None:
        if self.min_calls < 0 or self.max_calls < self.min_calls:
            raise ValueError(
                f"warm-up needs 0 <= min_calls <= max_calls, got min_calls={self.min_calls}, "
                f"max_calls={self.max_calls}"
            )
        if self.min_time_s < 0:
            raise ValueError(f"warm-up min_time_s must be >= 0, got {self.min_time_s}")


def plan_rounds(per_call_ns: float, *, min_time_s: float, min_rounds: int, max_rounds: int) -> int:
    """Rounds that fill ``min_time_s`` at ``per_call_ns`` per call, within the bounds."""
    if min_rounds < 1 or max_rounds < min_rounds:
        raise ValueError(
            f"rounds need 1 <= min_rounds <= max_rounds, got min_rounds={min_rounds}, max_rounds={max_rounds}"
        )
    if min_time_s < 0:
        raise ValueError(f"min_time_s must be >= 0, got {min_time_s}")
    per_call_ns = max(float(per_call_ns), 1.0)
    wanted = math.ceil(min_time_s * 1e9 / per_call_ns)
    return max(min_rounds, min(max_rounds, wanted))


# ---------------------------------------------------------------------------------------------
# threads and memory


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Set torch's intra-op thread count for the block (None: leave as is); yields the count in
    effect.  Backends that size their own thread pools at load time (ONNX Runtime) must be
    loaded inside this block to see it."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if threads is not None:
            torch.set_num_threads(previous)


def _status_kb(field: str) -> int | None:
    try:
        text = _PROC_STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def _ru_maxrss_bytes() -> int:
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024  # macOS: bytes, Linux: KiB


@dataclasses.dataclass(frozen=True)
class MemoryUsage:
    peak_mb: float  # resident-set peak of the process during the window
    start_mb: float  # resident set at the start of the window
    method: str

    @property
    def delta_mb(self) -> float:
        return max(0.0, self.peak_mb - self.start_mb)


class PeakMemory:
    """Peak resident memory of this process over a window (see the module docstring)."""

    def __init__(self) -> None:
        self._start_bytes: int | None = None
        self.method = ""

    def start(self) -> PeakMemory:
        rss_kb = _status_kb("VmRSS")
        reset = False
        if rss_kb is not None:
            try:
                _PROC_CLEAR_REFS.write_text("5")  # "5": reset the peak RSS (Linux >= 4.0)
                reset = _status_kb("VmHWM") is not None
            except OSError:
                reset = False
        if reset and rss_kb is not None:
            self.method = "VmHWM (reset via /proc/self/clear_refs)"
            self._start_bytes = rss_kb * 1024
        else:
            self.method = "ru_maxrss (process peak so far; upper bound)"
            self._start_bytes = _ru_maxrss_bytes()
        return self

    def stop(self) -> MemoryUsage:
        if self._start_bytes is None:
            raise RuntimeError("PeakMemory.stop() called before start()")
        if self.method.startswith("VmHWM"):
            hwm_kb = _status_kb("VmHWM")
            peak = hwm_kb * 1024 if hwm_kb is not None else _ru_maxrss_bytes()
        else:
            peak = _ru_maxrss_bytes()
        return MemoryUsage(peak_mb=peak / _MB, start_mb=self._start_bytes / _MB, method=self.method)


# ---------------------------------------------------------------------------------------------
# timing


def time_call(fn: Callable[[], T]) -> tuple[T, int]:
    """Call ``fn`` once; return its result and the elapsed nanoseconds."""
    t0 = time.perf_counter_ns()
    result = fn()
    return result, time.perf_counter_ns() - t0


def quantiles_ns(samples: Sequence[float]) -> tuple[float, float, float]:
    """(q1, median, q3) of the samples, interpolated linearly between order statistics (numpy's
    default method; pytest-benchmark's own q1/q3 use another one)."""
    if not samples:
        raise ValueError("no samples")
    if len(samples) == 1:
        return float(samples[0]), float(samples[0]), float(samples[0])
    q1, med, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return float(q1), float(med), float(q3)


@dataclasses.dataclass
class Timing:
    """Everything measured for one session; ``samples_ns`` holds every timed round (wall clock)
    and ``samples_cpu_ns`` the same rounds' process CPU time."""

    samples_ns: list[int]
    warmup_ns: list[int]
    first_run_ns: int | None
    load_ns: int | None
    threads: int | None  # requested (None: left as it was)
    torch_threads: int  # in effect while timing
    memory: MemoryUsage | None
    min_time_s: float
    min_rounds: int
    max_rounds: int
    wall_ns: int  # first run + warm-up + rounds, including the loop's own bookkeeping
    rounds_wall_ns: int  # the rounds loop alone, bookkeeping included
    samples_cpu_ns: list[int] = dataclasses.field(default_factory=list)
    clock: str = CLOCK
    cpu_clock: str = CPU_CLOCK

    @property
    def rounds(self) -> int:
        return len(self.samples_ns)

    @property
    def warmup_rounds(self) -> int:
        return len(self.warmup_ns)

    @property
    def median_ns(self) -> float:
        return float(statistics.median(self.samples_ns))

    @property
    def iqr_ns(self) -> float:
        q1, _, q3 = quantiles_ns(self.samples_ns)
        return q3 - q1

    @property
    def mean_ns(self) -> float:
        return float(statistics.fmean(self.samples_ns))

    @property
    def min_ns(self) -> int:
        return min(self.samples_ns)

    @property
    def median_ms(self) -> float:
        return self.median_ns / 1e6

    @property
    def load_ms(self) -> float | None:
        return None if self.load_ns is None else self.load_ns / 1e6

    @property
    def first_run_ms(self) -> float | None:
        return None if self.first_run_ns is None else self.first_run_ns / 1e6

    @property
    def peak_rss_mb(self) -> float | None:
        return None if self.memory is None else self.memory.peak_mb

    def summary(self) -> dict[str, Any]:
        """JSON-ready fields (what bench records in pytest-benchmark's extra_info)."""
        return {
            "threads": self.torch_threads,
            "load_ms": _round(self.load_ms),
            "first_run_ms": _round(self.first_run_ms),
            "peak_rss_mb": _round(self.peak_rss_mb),
            "peak_rss_delta_mb": _round(None if self.memory is None else self.memory.delta_mb),
            "memory_method": None if self.memory is None else self.memory.method,
            "warmup_rounds": self.warmup_rounds,
            "warmup_ns": list(self.warmup_ns),
            "samples_ns": list(self.samples_ns),
            "samples_cpu_ns": list(self.samples_cpu_ns),
            "clock": self.clock,
            "cpu_clock": self.cpu_clock,
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def time_session(
    run_fn: Callable[[], object],
    *,
    threads: int | None = 1,
    min_time_s: float = 1.0,
    max_rounds: int = 1000,
    min_rounds: int = 5,
    warmup: Warmup | None = None,
    load_ns: int | None = None,
    memory: PeakMemory | None = None,
    first_run: bool = True,
    disable_gc: bool = False,
) -> Timing:
    """Time the steady state of ``run_fn`` (a loaded session's run, inputs bound).

    ``memory``: a started :class:`PeakMemory` when the window should include the load (start
    it before loading); otherwise one is started here.  ``first_run=False`` when the caller
    already made (and timed) the first call.  ``disable_gc`` turns Python's collector off
    during the rounds (it is collected once before them either way).
    """
    warmup = warmup or Warmup()
    plan_rounds(1.0, min_time_s=min_time_s, min_rounds=min_rounds, max_rounds=max_rounds)  # validate
    mem = memory if memory is not None else PeakMemory().start()
    clock = time.perf_counter_ns
    with torch_threads(threads) as in_effect:
        t_start = clock()
        first_ns: int | None = None
        if first_run:
            t0 = clock()
            run_fn()
            first_ns = clock() - t0

        warm: list[int] = []
        deadline = clock() + int(warmup.min_time_s * 1e9)
        while len(warm) < warmup.max_calls and (len(warm) < warmup.min_calls or clock() < deadline):
            t0 = clock()
            run_fn()
            warm.append(clock() - t0)

        # per-call estimate: the faster half of the warm-up (early calls may still be warming)
        basis = sorted(warm)[: max(1, len(warm) // 2)] if warm else ([first_ns] if first_ns else [])
        per_call = statistics.fmean(basis) if basis else 0.0
        if not basis:  # no first run, no warm-up: one probe call, kept as warm-up
            t0 = clock()
            run_fn()
            warm.append(clock() - t0)
            per_call = float(warm[-1])
        rounds = plan_rounds(per_call, min_time_s=min_time_s, min_rounds=min_rounds, max_rounds=max_rounds)

        samples = [0] * rounds
        cpu_samples = [0] * rounds
        cpu_clock = time.process_time_ns
        gc.collect()
        gc_was_enabled = gc.isenabled()
        if disable_gc:
            gc.disable()
        t_rounds = clock()
        try:
            for i in range(rounds):
                c0 = cpu_clock()
                t0 = clock()
                run_fn()
                samples[i] = clock() - t0
                cpu_samples[i] = cpu_clock() - c0
        finally:
            if disable_gc and gc_was_enabled:
                gc.enable()
        t_end = clock()
        wall = t_end - t_start
    return Timing(
        samples_ns=samples,
        warmup_ns=warm,
        first_run_ns=first_ns,
        load_ns=load_ns,
        threads=threads,
        torch_threads=in_effect,
        memory=mem.stop(),
        min_time_s=min_time_s,
        min_rounds=min_rounds,
        max_rounds=max_rounds,
        wall_ns=wall,
        rounds_wall_ns=t_end - t_rounds,
        samples_cpu_ns=cpu_samples,
    )
