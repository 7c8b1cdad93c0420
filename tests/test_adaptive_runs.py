"""``--runs auto``: the stopping rule (median CI, budget) and one real adaptive session."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom
from test_bench import run_bench

from parbench.errors import ConfigError
from parbench.run import adaptive
from parbench.run.adaptive import Plan, fits, median_ci, open_cases, parse_runs, relative_halfwidth


def test_parse_runs() -> None:
    assert parse_runs("3") == 3 and parse_runs(1) == 1
    assert parse_runs("AUTO") is None
    for bad in ("0", "-2", "lots"):
        with pytest.raises(ConfigError, match="--runs"):
            parse_runs(bad)


def test_median_ci_needs_six_runs_at_95_percent() -> None:
    assert median_ci([1, 2, 3, 4, 5]) is None  # the full range covers the median 93.75% of the time
    assert median_ci([5, 1, 4, 2, 6, 3]) == (1.0, 6.0)  # 96.9%
    assert relative_halfwidth([1, 2, 3, 4, 5]) == math.inf


@pytest.mark.parametrize("n", [6, 9, 15, 40])
def test_median_ci_coverage_is_at_least_the_confidence(n: int) -> None:
    rng = np.random.default_rng(n)
    lo, hi = median_ci(np.arange(1, n + 1))
    k = int(lo)  # ranks k .. n-k+1
    assert hi == n - k + 1
    coverage = binom.cdf(n - k, n, 0.5) - binom.cdf(k - 1, n, 0.5)
    assert coverage >= 0.95
    # and the next narrower interval would not be enough
    narrower = binom.cdf(n - k - 1, n, 0.5) - binom.cdf(k, n, 0.5)
    assert narrower < 0.95
    # empirically: a lognormal's median is inside in >= ~95% of 2000 draws
    inside = 0
    for _ in range(2000):
        x = rng.lognormal(0.0, 0.05, n)
        a, b = median_ci(x)
        inside += a <= 1.0 <= b
    assert inside / 2000 >= 0.93


def test_open_cases_follow_min_runs_target_and_max_runs() -> None:
    plan = Plan(budget_s=600, min_runs=3, max_runs=8, target=0.01)
    tight = [100.0, 100.1, 99.9, 100.2, 100.0, 99.8]
    loose = [100.0, 110.0, 90.0, 105.0, 95.0, 100.0]
    short = [100.0, 100.0]
    capped = loose + [100.0, 101.0]
    assert open_cases({"tight": tight, "loose": loose, "short": short, "capped": capped}, plan) == [
        "loose",
        "short",
    ]


def test_budget_counts_the_longest_run() -> None:
    plan = Plan(budget_s=100)
    assert fits(50, [20, 40], plan)
    assert not fits(61, [20, 40], plan)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget_s": 0}, "--budget"),
        ({"budget_s": 60, "min_runs": 1}, "--auto-min-runs"),
        ({"budget_s": 60, "min_runs": 5, "max_runs": 4}, "--auto-max-runs"),
        ({"budget_s": 60, "target": 0}, "--auto-target"),
    ],
)
def test_bad_plans_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Plan(**kwargs)


def test_run_medians_one_per_entry() -> None:
    entries = [{"extra_info": {"samples_ns": [3, 1, 2]}}, {"extra_info": {"samples_ns": [10, 30]}}]
    assert adaptive.run_medians(entries) == [2.0, 20.0]


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="the OS cannot pin a process to a core")
def test_runs_auto_adds_runs_until_max_and_records_pinning(tmp_path: Path) -> None:
    """A target no real timing meets: every case gets max runs; each run is pinned to one core."""
    out = tmp_path / "auto.json"
    proc = run_bench(
        [
            "-k",
            "tiny_classifier and eager and 224",
            "--runs",
            "auto",
            "--auto-min-runs",
            "2",
            "--auto-max-runs",
            "3",
            "--auto-target",
            "0.0000001",
            "--budget",
            "20",
            "--benchmark-json",
            str(out),
        ]
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    auto = doc["parbench"]["auto"]
    assert auto["runs"] == 3 and auto["open"] == []
    cpu = auto["pinned_cpu"]
    by_case: dict[str, list[int]] = {}
    for e in doc["benchmarks"]:
        by_case.setdefault(e["name"], []).append(e["extra_info"]["run_index"])
        assert e["extra_info"]["cpu_affinity"] == [cpu]
    assert by_case == {"test_latency[tiny_classifier-eager-224]": [0, 1, 2]}
    assert "after run 2: 1 of 1 case(s) open" in proc.stdout
