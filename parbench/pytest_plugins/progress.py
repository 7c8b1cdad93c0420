"""A progress line for the parity suite: which case runs (model, form, size), the stage it is in
(torch.export, lowering, calibration, conversion, load, run, compare, ...), how long that stage
has run, cases done out of the total, and an estimate of the time left.

Drawn on the terminal's stderr while a case runs, on the line below pytest's own output, and wiped
before pytest writes again.  Off when stderr is not a terminal, with ``-q``, ``-s`` or xdist
workers, and with ``--parbench-progress off`` (or ``PARBENCH_PROGRESS=off``).

The estimate is the mean time of the cases done so far times the cases left; while an export
runs, the line also shows the mean time this form's exports have taken so far in the run.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
from collections import defaultdict
from typing import Any

import pytest

from parbench._util import stages

CHOICES = ("auto", "on", "off")
TICK = 1.0  # seconds between redraws


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


@dataclasses.dataclass
class _Slot:
    """One process running cases: this one ("main") or a pool worker."""

    label: str = ""
    variant: str = ""
    started: float = 0.0
    key: Any = None  # the case, where the caller names it (for expected times)
    stack: list[tuple[str, float]] = dataclasses.field(default_factory=list)  # innermost last


class Progress:
    """What the line shows; no terminal here (``line()`` is the text, given the time).

    Cases run in slots: this process (``"main"``) and, with a worker pool, one slot per worker; the
    line shows what each busy slot is doing, and the estimate divides the work left among them."""

    def __init__(self, total: int, now: float, workers: int = 1):
        self.total, self.done, self.started = total, 0, now
        self.workers = max(1, workers)
        self.busy = 0.0  # seconds spent inside finished cases
        self.slots: dict[Any, _Slot] = {}
        self._exports: dict[str, list[float]] = defaultdict(list)  # variant -> export seconds
        self.expected: dict[Any, float] = {}  # case -> seconds it is expected to take, where known
        self._done_expected = 0.0  # the expected seconds of the finished cases that had one
        self._done_actual = 0.0  # and what they took
        self._finished: set[Any] = set()

    def _slot(self, slot: Any) -> _Slot:
        return self.slots.setdefault(slot, _Slot())

    def start_case(self, label: str, variant: str, now: float, slot: Any = "main", key: Any = None) -> None:
        self.slots[slot] = _Slot(label, variant, now, key=key)

    def end_case(self, now: float, slot: Any = "main") -> None:
        s = self._slot(slot)
        self.done += 1
        if s.label:
            self.busy += now - s.started
            if s.key in self.expected:
                self._done_expected += self.expected[s.key]
                self._done_actual += now - s.started
        if s.key is not None:
            self._finished.add(s.key)
        self.slots[slot] = _Slot()

    def stage(self, name: str, entering: bool, now: float, slot: Any = "main") -> None:
        s = self._slot(slot)
        if entering:
            s.stack.append((name, now))
            return
        for i in range(len(s.stack) - 1, -1, -1):
            if s.stack[i][0] == name:
                started = s.stack[i][1]
                del s.stack[i:]
                if name == "export" and s.variant:
                    self._exports[s.variant].append(now - started)
                break

    def eta(self, now: float) -> float | None:
        """Seconds left: the mean finished case's time times the cases not finished, less the time
        the running cases have already run, shared among the slots; None before a case finishes."""
        if not self.done:
            return None
        if self.expected and self._done_expected > 0:
            return self._eta_expected(now)
        mean = self.busy / self.done
        left = mean * (self.total - self.done)
        for s in self.slots.values():
            if s.label:
                left -= min(mean, now - s.started)
        return max(0.0, left) / self.workers

    def _eta_expected(self, now: float) -> float:
        """With expected times per case (a worker pool's job weights): the expected seconds of the
        cases left, scaled by how the finished ones compared with theirs, shared among the slots."""
        pace = self._done_actual / self._done_expected
        left = sum(t for key, t in self.expected.items() if key not in self._finished) * pace
        for s in self.slots.values():
            if s.label and s.key in self.expected:
                left -= min(self.expected[s.key] * pace, now - s.started)
        return max(0.0, left) / self.workers

    def _slot_text(self, s: _Slot, now: float) -> str:
        parts = [s.label]
        if s.stack:
            name, since = s.stack[-1]
            text = f"{name} {_clock(now - since)}"
            seen = self._exports.get(s.variant)
            if any(n == "export" for n, _ in s.stack) and seen:
                text += f" (this form's exports took ~{_clock(sum(seen) / len(seen))})"
            parts.append(text)
        return " · ".join(parts)

    def line(self, now: float) -> str:
        parts = [f"parbench {self.done}/{self.total}"]
        busy = [self._slot_text(s, now) for s in self.slots.values() if s.label]
        if busy:
            parts.append(" | ".join(busy))
        parts.append(f"elapsed {_clock(now - self.started)}")
        eta = self.eta(now)
        parts.append("ETA " + ("after the first case" if eta is None else f"~{_clock(eta)}"))
        return " · ".join(parts)


def wanted(config: pytest.Config, fd_is_tty: bool) -> bool:
    choice = config.getoption("parbench_progress", "auto")
    if choice == "auto":
        choice = os.environ.get("PARBENCH_PROGRESS", "auto").lower()
        if choice not in CHOICES:
            raise pytest.UsageError(f"PARBENCH_PROGRESS is {choice!r}; use one of {', '.join(CHOICES)}")
    if choice == "off" or hasattr(config, "workerinput"):
        return False
    if choice == "on":
        return True
    if config.getoption("numprocesses", None) or config.getoption("capture", "fd") == "no":
        return False
    return fd_is_tty and config.get_verbosity() >= 0


class ProgressPlugin:
    """Draws :class:`Progress` on a duplicate of the terminal's stderr (pytest's capture redirects
    fd 2 while a test runs), from a ticker thread, only while a parity case runs."""

    def __init__(self, config: pytest.Config, fd: int):
        self.config, self.fd = config, fd
        self.progress: Progress | None = None
        self.cases: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.drawn = False
        self.in_case = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._below = os.isatty(1)  # pytest's own output on the same terminal: draw one line below it
        self.pooled = False  # cases run in a worker pool: its events move the line, not pytest's items

    # -- pytest hooks
    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.cases = {item.nodeid: case for item in session.items if (case := case_of(item)) is not None}
        if self.cases:
            self.progress = Progress(len(self.cases), time.monotonic())
            stages.observe(self._on_stage)
            self._thread = threading.Thread(target=self._tick, name="parbench-progress", daemon=True)
            self._thread.start()

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        case = self.cases.get(nodeid)
        if case is not None and self.progress is not None and not self.pooled:
            with self.lock:
                self.progress.start_case(_label(case), case.variant, time.monotonic())

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        if item.nodeid not in self.cases or self.progress is None:
            return (yield)
        with self.lock:
            self.in_case = True
            self._draw()
        try:
            return (yield)
        finally:
            with self.lock:
                self.in_case = False
                self._wipe()

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        if nodeid in self.cases and self.progress is not None and not self.pooled:
            with self.lock:
                self.progress.end_case(time.monotonic())

    # -- a worker pool's cases (parbench.run.pool), and the ones it hands back to this process
    def use_pool(self, workers: int, expected: dict[Any, float] | None = None) -> None:
        """The cases run in ``workers`` pool processes; ``expected``: seconds per case, for the ETA."""
        if self.progress is not None:
            with self.lock:
                self.pooled = True
                self.progress.workers = max(1, workers)
                self.progress.expected = dict(expected or {})
                self.progress.slots.pop("main", None)  # the item that started the pool waits for it

    def pool_event(self, kind: str, pid: int, *args: Any) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        with self.lock:
            if kind == "start":
                model, variant, size = args[0]
                self.progress.start_case(f"{model} {variant} {size}px", variant, now, slot=pid, key=args[0])
            elif kind == "stage":
                self.progress.stage(args[0], args[1], now, slot=pid)
            elif kind == "result":
                self.progress.end_case(now, slot=pid)

    def local_case(self, case: Any, starting: bool) -> None:
        """A case this process runs itself while the pool is on (one the pool could not finish)."""
        if self.progress is None:
            return
        with self.lock:
            if starting:
                self.progress.start_case(_label(case), case.variant, time.monotonic())
            else:
                self.progress.end_case(time.monotonic())

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        stages.observe(None)
        with self.lock:
            self._wipe()
        os.close(self.fd)

    # -- drawing
    def _on_stage(self, name: str, entering: bool) -> None:
        if self.progress is not None:
            with self.lock:
                self.progress.stage(name, entering, time.monotonic())

    def _tick(self) -> None:
        while not self._stop.wait(TICK):
            with self.lock:
                if self.in_case:
                    self._draw()

    def _write(self, text: str) -> None:
        try:
            os.write(self.fd, text.encode())
        except OSError:
            self._stop.set()

    def _draw(self) -> None:
        assert self.progress is not None
        width = shutil.get_terminal_size().columns - 1
        text = self.progress.line(time.monotonic())[:width]
        if self._below:
            col = self.config.get_terminal_writer().width_of_current_line
            self._write(f"\n\r\x1b[K{text}\x1b[1A\x1b[{col + 1}G")
        else:
            self._write(f"\r\x1b[K{text}")
        self.drawn = True

    def _wipe(self) -> None:
        if not self.drawn:
            return
        if self._below:
            col = self.config.get_terminal_writer().width_of_current_line
            self._write(f"\n\r\x1b[K\x1b[1A\x1b[{col + 1}G")
        else:
            self._write("\r\x1b[K")
        self.drawn = False


def _label(case: Any) -> str:
    return f"{case.model} {case.variant} {case.size}px"


def case_of(item: pytest.Item) -> Any:
    """The item's parity case (its ``parbench_case`` parameter), None for other items and latency runs."""
    callspec = getattr(item, "callspec", None)
    fixtures = getattr(item, "fixturenames", ())
    if callspec is None or "benchmark" in fixtures:  # never draw while latencies are measured
        return None
    return callspec.params.get("parbench_case")


def addoption(group: Any) -> None:
    group.addoption(
        "--parbench-progress",
        choices=CHOICES,
        default="auto",
        help="a progress line (case, stage, done/total, ETA) on stderr: auto (when stderr is a "
        "terminal; the default), on, or off; also PARBENCH_PROGRESS",
    )


def configure(config: pytest.Config) -> None:
    """Register the plugin when the line is wanted (called from the parity plugin's configure)."""
    fd = os.dup(2)
    if wanted(config, os.isatty(fd)):
        config.pluginmanager.register(ProgressPlugin(config, fd), "parbench-progress")
    else:
        os.close(fd)


def _short(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s" if seconds >= 60 else f"{seconds:.1f}s"


def time_spent(records: Any, workers: int = 1) -> str:
    """One line: where the cases' time went, by stage (exports also by form), largest first; with
    ``workers`` > 1 the cases ran side by side, so their seconds add up to more than the run's."""
    by_stage: dict[str, float] = defaultdict(float)
    export_by_form: dict[str, float] = defaultdict(float)
    cpu = 0.0
    for r in records:
        for name, seconds in r.timing.items():
            by_stage[name] += seconds
            if name == "export":
                export_by_form[r.variant] += seconds
        cpu += sum(r.timing_cpu.values())
    total = sum(by_stage.values())
    if not total:
        return "time: no stage timings recorded"
    parts = []
    for name, seconds in sorted(by_stage.items(), key=lambda kv: -kv[1])[:6]:
        text = f"{name} {_short(seconds)}"
        if name == "export" and export_by_form:
            top = sorted(export_by_form.items(), key=lambda kv: -kv[1])[:3]
            text += " (" + ", ".join(f"{v} {_short(s)}" for v, s in top) + ")"
        parts.append(text)
    where = f" across {workers} worker processes" if workers > 1 else ""
    return f"time: {_short(total)} in cases{where} ({_short(cpu)} CPU): " + ", ".join(parts)
