"""parbench.run.timing: calibration bounds, phases, raw samples, threads and peak memory."""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
import torch

from parbench.run.timing import (
    PeakMemory,
    Warmup,
    plan_rounds,
    quantiles_ns,
    time_call,
    time_session,
    torch_threads,
)


def busy(seconds: float) -> None:
    """Spin (not sleep) for a wall-clock duration: a CPU workload of known length."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


# -- calibration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("per_call_ns", "min_time_s", "expected"),
    [
        (10e6, 1.0, 100),  # 10 ms calls fill 1 s with 100 rounds
        (1e3, 1.0, 500),  # 1 us calls would need 1e6 rounds: capped at max_rounds
        (2e9, 1.0, 5),  # 2 s calls: min_rounds
        (3e6, 0.01, 5),  # budget smaller than min_rounds calls
        (0.0, 1.0, 500),  # a zero estimate cannot divide by zero
    ],
)
def test_plan_rounds_fills_the_budget_within_bounds(
    per_call_ns: float, min_time_s: float, expected: int
) -> None:
    assert plan_rounds(per_call_ns, min_time_s=min_time_s, min_rounds=5, max_rounds=500) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_time_s": 1.0, "min_rounds": 0, "max_rounds": 10}, "min_rounds"),
        ({"min_time_s": 1.0, "min_rounds": 20, "max_rounds": 10}, "max_rounds"),
        ({"min_time_s": -1.0, "min_rounds": 1, "max_rounds": 10}, "min_time_s"),
    ],
)
def test_plan_rounds_rejects_bad_bounds(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_rounds(1e6, **kwargs)


def test_warmup_rejects_inverted_bounds() -> None:
    with pytest.raises(ValueError, match="min_calls <= max_calls"):
        Warmup(min_calls=5, max_calls=2)
    with pytest.raises(ValueError, match="min_time_s"):
        Warmup(min_time_s=-0.1)


def test_time_session_rejects_bad_rounds_before_running() -> None:
    calls = []
    with pytest.raises(ValueError, match="min_rounds"):
        time_session(lambda: calls.append(1), threads=None, min_rounds=10, max_rounds=2)
    assert calls == []


# -- phases and samples ------------------------------------------------------------------------


def test_first_run_is_timed_apart_from_the_steady_state() -> None:
    state = {"n": 0}

    def run() -> None:
        state["n"] += 1
        busy(0.03 if state["n"] == 1 else 0.001)

    t = time_session(
        run,
        threads=None,
        min_time_s=0.02,
        min_rounds=5,
        max_rounds=200,
        warmup=Warmup(min_calls=2, min_time_s=0.0, max_calls=10),
        load_ns=1234,
    )
    assert t.first_run_ns is not None and t.first_run_ns >= 30e6
    assert t.median_ns < 10e6  # the slow first call is not among the samples
    assert t.load_ns == 1234 and t.load_ms == pytest.approx(0.001234)
    # every call is accounted for: first + warm-up + rounds
    assert state["n"] == 1 + t.warmup_rounds + t.rounds
    assert len(t.samples_ns) == t.rounds and all(isinstance(s, int) and s >= 1e6 for s in t.samples_ns)


def test_rounds_are_calibrated_to_the_workload() -> None:
    # ~2 ms calls and a 0.1 s budget: about 50 rounds (fewer if the machine preempts us)
    t = time_session(
        lambda: busy(0.002),
        threads=None,
        min_time_s=0.1,
        min_rounds=3,
        max_rounds=1000,
        warmup=Warmup(min_calls=2, min_time_s=0.02),
    )
    assert 10 <= t.rounds <= 51
    assert sum(t.samples_ns) >= 0.1e9 * 0.6  # the rounds fill (about) the budget
    # a fast workload is capped by max_rounds, a slow one floored by min_rounds
    fast = time_session(lambda: None, threads=None, min_time_s=1.0, min_rounds=3, max_rounds=50)
    assert fast.rounds == 50
    slow = time_session(
        lambda: busy(0.03),
        threads=None,
        min_time_s=0.01,
        min_rounds=4,
        max_rounds=50,
        warmup=Warmup(min_calls=1, min_time_s=0.0),
    )
    assert slow.rounds == 4


def test_warmup_honours_its_bounds() -> None:
    calls = Warmup(min_calls=3, min_time_s=0.0, max_calls=3)
    t = time_session(lambda: busy(0.0005), threads=None, min_time_s=0.001, warmup=calls)
    assert t.warmup_rounds == 3
    # a time floor keeps a fast workload warming up for that long (but not past max_calls)
    t = time_session(
        lambda: busy(0.001),
        threads=None,
        min_time_s=0.001,
        warmup=Warmup(min_calls=1, min_time_s=0.03, max_calls=1000),
    )
    assert sum(t.warmup_ns) >= 0.025e9 and t.warmup_rounds >= 3
    t = time_session(
        lambda: busy(0.001),
        threads=None,
        min_time_s=0.001,
        warmup=Warmup(min_calls=1, min_time_s=10.0, max_calls=7),
    )
    assert t.warmup_rounds == 7


def test_without_first_run_or_warmup_a_probe_call_calibrates() -> None:
    n = []
    t = time_session(
        lambda: n.append(busy(0.001)),
        threads=None,
        min_time_s=0.01,
        min_rounds=2,
        max_rounds=100,
        warmup=Warmup(min_calls=0, min_time_s=0.0, max_calls=0),
        first_run=False,
    )
    assert t.first_run_ns is None
    assert t.warmup_rounds == 1  # the probe
    assert len(n) == 1 + t.rounds and 2 <= t.rounds <= 11


def test_statistics_match_the_raw_samples() -> None:
    t = time_session(
        lambda: busy(0.0005),
        threads=None,
        min_time_s=0.02,
        min_rounds=9,
        max_rounds=9,
        warmup=Warmup(min_calls=1, min_time_s=0.0),
    )
    assert t.rounds == 9
    assert t.median_ns == statistics.median(t.samples_ns)
    q1, q3 = np.percentile(t.samples_ns, [25, 75])
    assert t.iqr_ns == pytest.approx(q3 - q1)
    assert t.min_ns == min(t.samples_ns)
    summary = t.summary()
    assert summary["samples_ns"] == t.samples_ns and summary["warmup_rounds"] == t.warmup_rounds
    assert summary["clock"] == "time.perf_counter_ns"


def test_cpu_time_is_recorded_per_round_and_does_not_count_waiting() -> None:
    # each round sleeps 20 ms (wall time, no CPU) and then spins 2 ms (CPU): the CPU samples
    # must see the spin and not the sleep, whatever else the machine is doing
    def run() -> None:
        time.sleep(0.02)
        busy(0.002)

    t = time_session(
        run,
        threads=None,
        min_time_s=0.0,
        min_rounds=4,
        max_rounds=4,
        warmup=Warmup(min_calls=0, min_time_s=0.0),
        first_run=False,
    )
    assert len(t.samples_cpu_ns) == len(t.samples_ns) == 4
    for wall, cpu in zip(t.samples_ns, t.samples_cpu_ns, strict=True):
        assert wall >= 22e6
        assert 0 < cpu < wall - 15e6
    summary = t.summary()
    assert summary["samples_cpu_ns"] == t.samples_cpu_ns and summary["cpu_clock"] == "time.process_time_ns"


def test_quantiles() -> None:
    assert quantiles_ns([5]) == (5.0, 5.0, 5.0)
    assert quantiles_ns([1, 2, 3, 4, 5]) == (2.0, 3.0, 4.0)
    assert quantiles_ns([4, 1, 3, 2]) == pytest.approx(tuple(np.percentile([1, 2, 3, 4], [25, 50, 75])))
    with pytest.raises(ValueError):
        quantiles_ns([])


def test_time_call_returns_result_and_elapsed() -> None:
    result, ns = time_call(lambda: (busy(0.005), "loaded")[1])
    assert result == "loaded" and 5e6 <= ns < 5e9


# -- threads and memory ------------------------------------------------------------------------


def test_threads_are_set_recorded_and_restored() -> None:
    before = torch.get_num_threads()
    seen = []
    target = 2 if before != 2 else 1
    t = time_session(
        lambda: seen.append(torch.get_num_threads()),
        threads=target,
        min_time_s=0.0,
        min_rounds=2,
        max_rounds=2,
        warmup=Warmup(min_calls=0, min_time_s=0.0),
    )
    assert set(seen) == {target}
    assert t.threads == target and t.torch_threads == target
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"), torch_threads(0):
        pass


def test_peak_memory_sees_native_allocations_in_the_window() -> None:
    size = 200 * 1024 * 1024

    def run() -> None:
        a = np.ones(
            size, dtype=np.uint8
        )  # native memory, touched: invisible to tracemalloc's view of Python objects
        del a

    t = time_session(
        run,
        threads=None,
        min_time_s=0.0,
        min_rounds=1,
        max_rounds=1,
        warmup=Warmup(min_calls=0, min_time_s=0.0),
    )
    assert t.memory is not None
    assert t.peak_rss_mb is not None and t.peak_rss_mb >= 200
    if t.memory.method.startswith("VmHWM"):
        # the peak was reset at the window's start, so the delta is this run's own allocation
        assert 180 <= t.memory.delta_mb < 600
        # and a quiet window right after reports no such peak
        quiet = PeakMemory().start().stop()
        assert quiet.delta_mb < 50
    else:
        pytest.skip(f"peak reset not available here ({t.memory.method}); only the upper bound was checked")


def test_peak_memory_stop_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="before start"):
        PeakMemory().stop()
