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


class Progress:
    """What the line shows; no terminal here (``line()`` is the text, given the time)."""

    def __init__(self, total: int, now: float):
        self.total, self.done, self.started = total, 0, now
        self.case: str = ""
        self.variant: str = ""
        self.case_started = now
        self.busy = 0.0  # seconds spent inside finished cases
        self._stack: list[tuple[str, float]] = []  # stages entered and not left, innermost last
        self._exports: dict[str, list[float]] = defaultdict(list)  # variant -> export seconds

    def start_case(self, label: str, variant: str, now: float) -> None:
        self.case, self.variant, self.case_started = label, variant, now
        self._stack.clear()

    def end_case(self, now: float) -> None:
        self.done += 1
        self.busy += now - self.case_started
        self.case = ""
        self._stack.clear()

    def stage(self, name: str, entering: bool, now: float) -> None:
        if entering:
            self._stack.append((name, now))
            return
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == name:
                started = self._stack[i][1]
                del self._stack[i:]
                if name == "export" and self.variant:
                    self._exports[self.variant].append(now - started)
                break

    def eta(self, now: float) -> float | None:
        """Seconds left: the mean finished case's time times the cases not finished, minus the
        time the current case has already run; None before the first case finishes."""
        if not self.done:
            return None
        mean = self.busy / self.done
        left = mean * (self.total - self.done)
        if self.case:
            left -= min(mean, now - self.case_started)
        return max(0.0, left)

    def line(self, now: float) -> str:
        parts = [f"parbench {self.done}/{self.total}"]
        if self.case:
            parts.append(self.case)
        if self._stack:
            name, since = self._stack[-1]
            text = f"{name} {_clock(now - since)}"
            seen = self._exports.get(self.variant)
            if any(n == "export" for n, _ in self._stack) and seen:
                text += f" (this form's exports took ~{_clock(sum(seen) / len(seen))})"
            parts.append(text)
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

    # -- pytest hooks
    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.cases = {item.nodeid: case for item in session.items if (case := _case(item)) is not None}
        if self.cases:
            self.progress = Progress(len(self.cases), time.monotonic())
            stages.observe(self._on_stage)
            self._thread = threading.Thread(target=self._tick, name="parbench-progress", daemon=True)
            self._thread.start()

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        case = self.cases.get(nodeid)
        if case is not None and self.progress is not None:
            with self.lock:
                label = f"{case.model} {case.variant} {case.size}px"
                self.progress.start_case(label, case.variant, time.monotonic())

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
        if nodeid in self.cases and self.progress is not None:
            with self.lock:
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


def _case(item: pytest.Item) -> Any:
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


def time_spent(records: Any) -> str:
    """One line: where the cases' time went, by stage (exports also by form), largest first."""
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
    return f"time: {_short(total)} in cases ({_short(cpu)} CPU): " + ", ".join(parts)
