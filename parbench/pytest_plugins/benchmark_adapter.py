"""The one place parbench reaches into pytest-benchmark's internals: handing it our own timed rounds.

pytest-benchmark times a callable itself; parbench times sessions with its own phases (load, first
run, warm-up, calibrated rounds), so the rounds are fed to the fixture's stats one by one.  This uses
``BenchmarkFixture._make_stats`` and ``_mode`` (pytest-benchmark 4 and 5; pyproject pins ``<6``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def record_samples(
    benchmark: Any,
    samples_ns: Sequence[int],
    extra_info: dict[str, Any],
    options: dict[str, Any] | None = None,
) -> None:
    """Give pytest-benchmark our own timed rounds, one stats entry per round, so its table, its
    JSON (stats and data) and `pytest-benchmark compare` describe exactly these samples."""
    make_stats = getattr(benchmark, "_make_stats", None)
    if make_stats is None:
        raise RuntimeError(
            "this pytest-benchmark has no BenchmarkFixture._make_stats; parbench's bench/ "
            "needs pytest-benchmark 4 or 5"
        )
    if getattr(benchmark, "_mode", None):
        raise RuntimeError(f"the benchmark fixture was already used ({benchmark._mode})")
    benchmark._mode = "parbench.run.timing.time_session"  # marks the fixture as used
    benchmark.extra_info.update(extra_info)
    stats = make_stats(1)
    if options:
        stats.options.update(options)
    for ns in samples_ns:
        stats.update(ns / 1e9)
