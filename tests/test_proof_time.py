"""experiments/proof_time.py: the simulated ``--runs auto`` sessions, the draws, the width fit and
the intervals (pure logic, nothing timed)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from parbench.run.adaptive import Plan, open_cases

SCRIPTS = Path(__file__).resolve().parents[1] / "experiments"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


proof_time = _load("proof_time")
proof_regression = _load("proof_regression")

BIG = Plan(budget_s=1e9)


def _stop_of_open_cases(values: list[float], plan: Plan) -> int:
    """The first run count at which the real plan has no open case."""
    for k in range(1, len(values) + 1):
        if not open_cases({"c": values[:k]}, plan):
            return k
    return len(values)


@pytest.mark.parametrize(
    "values, expect",
    [
        ([100.0] * 10, (6, "closed")),  # identical runs: the first n with a median CI (6 at 95%)
        ([100.0, 120.0] * 15, (20, "closed")),  # never tight: max_runs
        ([100.0, 120.0] * 5, (10, "pool")),  # the pool runs out first
    ],
)
def test_session_stops_where_open_cases_says(values: list[float], expect: tuple[int, str]) -> None:
    got = proof_time.simulate_session(values, [1.0] * len(values), BIG)
    assert got == expect
    if got[1] == "closed":
        assert got[0] == _stop_of_open_cases(values, BIG)


def test_session_stops_on_a_tight_median_after_min_runs() -> None:
    rng = np.random.default_rng(3)
    values = list(100 + rng.normal(0, 0.2, size=30))
    n, why = proof_time.simulate_session(values, [1.0] * 30, BIG)
    assert (n, why) == (_stop_of_open_cases(values, BIG), "closed")
    assert not open_cases({"c": values[:n]}, BIG) and open_cases({"c": values[: n - 1]}, BIG)


def test_session_stops_when_the_next_run_would_pass_the_budget() -> None:
    plan = Plan(budget_s=180)  # 3 minutes, 60 s runs: the third run ends at the budget
    assert proof_time.simulate_session([100.0, 120.0] * 10, [60.0] * 20, plan) == (3, "budget")
    # the longest run so far decides: one 100 s run makes the second the last
    assert proof_time.simulate_session([100.0, 120.0] * 10, [100.0] + [10.0] * 19, plan) == (1, "budget")


def test_zero_level_sides_are_disjoint_and_other_levels_draw_their_own_pool() -> None:
    rng = np.random.default_rng(0)
    noisy = 100 + rng.normal(0, 10, size=30)  # loose medians: sessions run long and use up the pool
    secs = np.ones(30)
    for _ in range(20):
        d = proof_time.draw_comparison(rng, noisy, secs, noisy, secs, True, BIG)
        assert not set(d.base.tolist()) & set(d.cand.tolist())
        assert d.why_base == d.why_cand == "pool" and len(d.base) == len(d.cand) == 15  # a half each
        assert len(set(d.base.tolist())) == len(d.base) and len(set(d.cand.tolist())) == len(d.cand)
        assert (len(d.base), d.why_base) == proof_time.simulate_session(noisy[d.base], secs[d.base], BIG)
        assert not set(d.fixed_base.tolist()) & set(d.fixed_cand.tolist())
    other = 100 + rng.normal(0, 3, size=12)
    seen = set()
    for _ in range(20):
        d = proof_time.draw_comparison(rng, noisy, secs, other, np.ones(12), False, BIG)
        assert d.cand.max() < 12 and len(d.cand) == len(set(d.cand.tolist()))
        seen.update(d.cand.tolist())
    assert len(seen) == 12


def test_fixed_runs_need_a_big_enough_pool() -> None:
    rng = np.random.default_rng(1)
    v = np.full(13, 100.0)
    d = proof_time.draw_comparison(rng, v, np.ones(13), v, np.ones(13), True, BIG)
    assert d.fixed_base is None  # 7 + 7 disjoint runs need 14


def test_wilson_matches_the_closed_form() -> None:
    for k, n in [(0, 100), (1, 500), (50, 100), (97, 100), (10, 10)]:
        assert proof_time.wilson(k, n) == pytest.approx(proof_regression.wilson(k, n), abs=1e-7)
    lo, hi = proof_time.wilson(0, 500)
    assert lo == 0 and 0.007 < hi < 0.008


def test_fit_widths_recovers_a_linear_cost() -> None:
    t0, a, b = 2_000_000.0, 5_000.0, 2_500.0
    medians = [{"0": t0, **{str(w): t0 + a + b * w for w in (40, 80, 140)}} for _ in range(3)]
    widths, fit = proof_time.fit_widths(medians, (0.0, 0.03, 0.1))
    assert fit["b_ns_per_channel"] == pytest.approx(b) and fit["a_ns"] == pytest.approx(a)
    assert widths == {"0.0": 0, "0.03": 22, "0.1": 78}
    flat = [{"0": t0, "40": t0 - 10, "80": t0 - 30}]
    with pytest.raises(Exception, match="no cost per channel"):
        proof_time.fit_widths(flat, (0.0, 0.03))
