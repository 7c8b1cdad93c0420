"""Stage timers: wall seconds per named stage (``torch.export``, ``lowering``, ``run``, ...).

Always on and cheap (two ``perf_counter`` calls per stage).  ``stage(name)`` adds its *exclusive*
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
from collections.abc import Iterator

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
    nested: float = 0.0  # seconds spent in stages nested in this one


class Timings(dict[str, float]):
    """Stage name -> seconds, in the order stages first ran."""

    def add(self, name: str, seconds: float) -> None:
        self[name] = self.get(name, 0.0) + seconds

    def rounded(self, digits: int = 3) -> dict[str, float]:
        return {k: round(v, digits) for k, v in self.items()}

    def merge(self, other: dict[str, float]) -> None:
        for k, v in other.items():
            self.add(k, float(v))


_stack: contextvars.ContextVar[tuple[_Frame, ...]] = contextvars.ContextVar("parbench_stages", default=())
_active: contextvars.ContextVar[Timings | None] = contextvars.ContextVar("parbench_timings", default=None)


def _close(frame: _Frame, outer: tuple[_Frame, ...]) -> float:
    elapsed = time.perf_counter() - frame.start
    if frame.timings is not None:
        frame.timings.add(frame.name, max(0.0, elapsed - frame.nested))
    if outer:
        outer[-1].nested += elapsed
    return elapsed


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Time a block as ``name`` in the innermost ``collect()`` block (if any)."""
    timings = _active.get()
    outer = _stack.get()
    if timings is None and not outer:
        yield
        return
    frame = _Frame(timings, name, time.perf_counter())
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
    start = time.perf_counter()
    t_active = _active.set(timings)
    t_stack = _stack.set(())
    try:
        yield timings
    finally:
        _active.reset(t_active)
        _stack.reset(t_stack)
        if as_stage:
            elapsed = time.perf_counter() - start
            if outer_timings is not None:
                outer_timings.add(as_stage, elapsed)
            if outer:
                outer[-1].nested += elapsed


def current() -> Timings | None:
    """The innermost collecting block's timings, if any."""
    return _active.get()
