"""Latency of every deployment form at every input size.

One pytest-benchmark entry per model x variant x size (``test_latency[model-variant-size]``), selected
with the same --models --variants --sizes --tier options as the parity suite.  Each case loads its
artifact into a fresh session (load timed), times the first run, warms up and times calibrated rounds
(:mod:`parbench.run.latency`); the raw rounds become pytest-benchmark's stats and
``extra_info["samples_ns"]``.
"""

import pytest

from parbench.run.latency import NotMeasured, measure


def test_latency(parbench_case, benchmark, parbench_harness, bench):
    if bench.parent:
        bench.merge_child_runs(benchmark)
        return
    c = parbench_case
    result = measure(
        parbench_harness, c.model, c.variant, c.size, bench.settings, smoke_only=benchmark.disabled
    )
    if isinstance(result, NotMeasured):
        if result.outcome == "skip":
            pytest.skip(result.reason)
        if result.outcome == "xfail":
            pytest.xfail(result.reason)
        pytest.fail(result.reason, pytrace=False)
    if result is None:  # --benchmark-disable: loaded and ran once
        return
    bench.record(benchmark, result)
