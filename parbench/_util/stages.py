"""Stage timers: wall seconds and process CPU seconds per named stage (``torch.export``, ``lowering``,
``run``, ...).

Always on and cheap (two clock reads per stage).  CPU seconds are the whole process's (all its
threads), so on a shared machine they say what a stage cost where wall seconds also count waiting.  ``stage(name)`` adds its *exclusive*
time (its own, minus the stages nested in it) to the innermost ``collect()`` block, so the stages
of a block add up to at most its wall time and nothing is counted twice.  Outside any ``collect()``
block a stage costs nothing and records nothing.

A ``collect(as_stage=...)`` block nested in another reports to the outer one as that single stage
(its detail stays with the inner block): an export inside a parity case shows in the case as
``export``, its own stages go with the artifact.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import time
from collections.abc import Callable, Iterator

# the stages parbench records, in the order reports list them
EXPORT_STAGES = (
    "model",
    "torch.export",
    "program load",
    "calibration",
    "quantize",
    "trace",
    "lowering",
    "conversion",
    "save",
    "size check",
    "verify",
)
RUN_STAGES = ("fixtures", "model", "artifact", "export", "export wait", "load", "run", "compare", "localise")


@dataclasses.dataclass
class _Frame:
    timings: Timings | None  # the block that receives this frame's exclusive time
    name: str
    start: float
    cpu_start: float
    nested: float = 0.0  # seconds spent in stages nested in this one
    nested_cpu: float = 0.0


class Timings(dict[str, float]):
    """Stage name -> wall seconds, in the order stages first ran; ``cpu``: stage -> CPU seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu: dict[str, float] = {}

    def add(self, name: str, seconds: float, cpu: float = 0.0) -> None:
        self[name] = self.get(name, 0.0) + seconds
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu

    def rounded_cpu(self, digits: int = 3) -> dict[str, float]:
        return {k: round(v, digits) for k, v in self.cpu.items()}

    def rounded(self, digits: int = 3) -> dict[str, float]:
        return {k: round(v, digits) for k, v in self.items()}


_stack: contextvars.ContextVar[tuple[_Frame, ...]] = contextvars.ContextVar("parbench_stages", default=())
_active: contextvars.ContextVar[Timings | None] = contextvars.ContextVar("parbench_timings", default=None)


def _close(frame: _Frame, outer: tuple[_Frame, ...]) -> None:
    elapsed = time.perf_counter() - frame.start
    cpu = time.process_time() - frame.cpu_start
    if frame.timings is not None:
        frame.timings.add(frame.name, max(0.0, elapsed - frame.nested), max(0.0, cpu - frame.nested_cpu))
    if outer:
        outer[-1].nested += elapsed
        outer[-1].nested_cpu += cpu


# called with (stage name, True) on entering a stage and (name, False) on leaving it, e.g. by a
# progress display; one process-wide observer at most
_observer: Callable[[str, bool], None] | None = None


def observe(fn: Callable[[str, bool], None] | None) -> None:
    """Set (or with None, clear) the process-wide stage observer."""
    global _observer
    _observer = fn


@contextlib.contextmanager
def _observed(name: str) -> Iterator[None]:
    fn = _observer
    if fn is None:
        yield
        return
    fn(name, True)
    try:
        yield
    finally:
        fn(name, False)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Time a block as ``name`` in the innermost ``collect()`` block (if any)."""
    with _observed(name):
        timings = _active.get()
        outer = _stack.get()
        if timings is None and not outer:
            yield
            return
        frame = _Frame(timings, name, time.perf_counter(), time.process_time())
        token = _stack.set((*outer, frame))
        try:
            yield
        finally:
            _stack.reset(token)
            _close(frame, outer)


@contextlib.contextmanager
def collect(as_stage: str | None = None) -> Iterator[Timings]:
    """Collect the stages run inside the block into a fresh :class:`Timings`.  With ``as_stage``, an
    enclosing ``collect()`` block sees the whole block (its wall time) as that one stage."""
    outer_timings = _active.get()
    outer = _stack.get()
    timings = Timings()
    start, cpu_start = time.perf_counter(), time.process_time()
    t_active = _active.set(timings)
    t_stack = _stack.set(())
    try:
        with _observed(as_stage) if as_stage else contextlib.nullcontext():
            yield timings
    finally:
        _active.reset(t_active)
        _stack.reset(t_stack)
        if as_stage:
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            if outer_timings is not None:
                outer_timings.add(as_stage, elapsed, cpu)
            if outer:
                outer[-1].nested += elapsed
                outer[-1].nested_cpu += cpu


def current() -> Timings | None:
    """The innermost collecting block's timings, if any."""
    return _active.get()
