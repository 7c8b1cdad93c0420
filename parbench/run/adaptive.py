"""``pytest bench/ --runs auto``: fresh-process runs added only to the cases whose median is not yet
known tightly enough, until a time budget is spent.

Each run (one fresh process) gives one number per case, the median of its timed rounds.  After
``min_runs`` runs, a case stays open while the distribution-free confidence interval of the median
of those numbers (order statistics, the binomial rule) is wider than ``target`` either side of it;
new runs time only the open cases.  Runs stop when every case is closed, a case reaches
``max_runs``, or the next run would not fit in what is left of the budget (estimated from the
longest run so far).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import binom

from parbench.errors import ConfigError

DEFAULT_MIN_RUNS = 3
DEFAULT_MAX_RUNS = 20
DEFAULT_TARGET = 0.01  # half-width of the median's CI, relative to the median
DEFAULT_CONFIDENCE = 0.95


def parse_runs(value: str | int) -> int | None:
    """``--runs K`` (K >= 1) or ``--runs auto`` (None)."""
    text = str(value).strip().lower()
    if text == "auto":
        return None
    try:
        k = int(text)
    except ValueError:
        raise ConfigError(f"--runs takes a number of runs (e.g. 5) or 'auto', got {value!r}") from None
    if k < 1:
        raise ConfigError(f"--runs must be >= 1 or 'auto', got {value!r}")
    return k


@dataclasses.dataclass(frozen=True)
class Plan:
    budget_s: float
    min_runs: int = DEFAULT_MIN_RUNS
    max_runs: int = DEFAULT_MAX_RUNS
    target: float = DEFAULT_TARGET
    confidence: float = DEFAULT_CONFIDENCE

    def __post_init__(self) -> None:
        if not self.budget_s > 0:
            raise ConfigError(f"--budget must be > 0 minutes, got {self.budget_s / 60:g}")
        if not 2 <= self.min_runs <= self.max_runs:
            raise ConfigError(
                f"need 2 <= --auto-min-runs <= --auto-max-runs, got {self.min_runs} and {self.max_runs}"
            )
        if not 0 < self.target < 1:
            raise ConfigError(f"--auto-target is a share of the median, e.g. 0.01; got {self.target}")


def median_ci(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float] | None:
    """The narrowest symmetric order-statistic interval holding the median with at least
    ``confidence``; None when there are too few values for any (fewer than 6 at 95%)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    best = None
    for k in range(n // 2, 0, -1):  # interval x[k-1] .. x[n-k], 1-based ranks k and n-k+1
        coverage = binom.cdf(n - k, n, 0.5) - binom.cdf(k - 1, n, 0.5)
        if coverage >= confidence:
            best = (float(x[k - 1]), float(x[n - k]))
            break
    return best


def relative_halfwidth(values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> float:
    """Half the median's CI over the median (inf when the CI does not exist yet)."""
    ci = median_ci(values, confidence)
    if ci is None:
        return math.inf
    return (ci[1] - ci[0]) / 2 / float(np.median(values))


def open_cases(per_run: Mapping[str, Sequence[float]], plan: Plan) -> list[str]:
    """The cases that need another run: fewer than ``min_runs``, or a CI wider than the target, and
    below ``max_runs``.  ``per_run`` maps a case to one number per run so far."""
    out = []
    for case, values in per_run.items():
        n = len(values)
        if n >= plan.max_runs:
            continue
        if n < plan.min_runs or relative_halfwidth(values, plan.confidence) > plan.target:
            out.append(case)
    return out


def fits(elapsed_s: float, run_times_s: Sequence[float], plan: Plan) -> bool:
    """Whether another run fits in the budget, judged by the longest run so far."""
    longest = max(run_times_s, default=0.0)
    return elapsed_s + longest <= plan.budget_s


def run_medians(entries: Sequence[Mapping]) -> list[float]:
    """One number per run: the median of each entry's ``extra_info.samples_ns``."""
    return [
        float(np.median(e["extra_info"]["samples_ns"])) for e in entries if e["extra_info"].get("samples_ns")
    ]
