"""Regression decisions: did the candidate get slower (or less faithful) than the baseline?

The unit of replication is the **run**: one fresh process that warms up and then times R rounds.
Calls inside one run are not independent (the process's memory layout, frequency state and the
neighbours on the machine are shared by all of them), so a test on per-call samples sees
"significant" differences between two runs of identical code.  Here every run is reduced to one
number (its fastest round by default; ``--run-stat median`` and others on request), and the
decision is taken on those numbers:

* **estimate**: the candidate/baseline ratio is ``exp(HL)``, where HL is the Hodges-Lehmann shift
  of the log run statistics (median of all candidate-minus-baseline differences): a robust
  estimate of "how much slower", insensitive to one odd run (beyond 900 run pairs, e.g. a long
  pooled history, the difference of the medians, which is as robust and cheaper);
* **CI**: a percentile bootstrap of that estimate that resamples whole runs on each side (seeded,
  so the same inputs always give the same interval);
* **evidence**: the CI excludes 1 *and* a two-sided Mann-Whitney test on the log run statistics
  (exact for small samples) gives p < alpha (default 0.02: at most 1% false "slower" verdicts
  between identical builds, whatever the noise, since each direction gets alpha/2);
* **effect-size floor**: the estimate is beyond the floor (default 3%), so a real but tiny change
  is reported as unchanged, not as a regression.

Verdicts: ``slower`` / ``faster`` (evidence and floor), ``unchanged`` (the CI rules out a change
as large as the floor, or the change is real but below it), ``unknown`` (too few runs, or too
much run-to-run noise to tell; the verdict says how many more runs would settle it, computed from
the minimum the test needs and from the measured noise).

Histories (one point per night) go through an E-divisive change-point search with a permutation
test (energy statistic, divisive bisection) to report the first night of each persistent shift.

Parity metrics get the same treatment on a dB scale: cosine similarity as ``-10 log10(1 - cos)``,
SNR and PSNR as they are; a drop beyond the floor (default 1 dB) that is also beyond the
run-to-run noise is a regression.

Library code raises :class:`RegressError` with an actionable message; only the click commands at
the bottom print.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import click
import numpy as np
from scipy import stats as sps

DEFAULT_FLOOR = 0.03
DEFAULT_ALPHA = 0.02
DEFAULT_CP_ALPHA = 0.05
DEFAULT_RUNS = 7
DEFAULT_BOOTSTRAP = 2000
DEFAULT_SEED = 20240601
DEFAULT_PARITY_FLOOR_DB = 1.0
DEFAULT_STORE = Path(os.environ.get("PARBENCH_STORE", "reports/history.sqlite"))
MIN_RUNS = 3
RUN_STATS = ("median", "mean", "q25", "q10", "min")
# A run's fastest round: timing noise only ever adds time, and on a shared machine the minimum of a
# run moved 4% between processes where its median moved 17% (docs/regression.md, the proof).
DEFAULT_RUN_STAT = "min"
PARITY_METRICS = ("cosine", "psnr_db", "snr_db")
_DB_CAP = 200.0

Verdict = Literal["slower", "faster", "worse", "better", "unchanged", "unknown"]


class RegressError(ValueError):
    """Bad input for a regression decision; the message says what was wrong and what to do."""


# ---------------------------------------------------------------------------------------------
# the decision on one benchmark


@dataclasses.dataclass(frozen=True)
class Decision:
    """Verdict for one benchmark (or one parity metric).

    ``ratio``/``ci_low``/``ci_high`` are candidate/baseline ratios for latency; for parity they
    are differences in dB (candidate minus baseline, negative = worse).  ``need_baseline`` and
    ``need_candidate`` are the extra runs that would settle an ``unknown`` (0 otherwise).
    """

    verdict: Verdict
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    n_baseline: int
    n_candidate: int
    baseline: float | None
    candidate: float | None
    noise: float | None
    need_baseline: int = 0
    need_candidate: int = 0
    note: str = ""

    @property
    def need_runs(self) -> int:
        return max(self.need_baseline, self.need_candidate)

    def label(self) -> str:
        if self.verdict != "unknown" or (self.need_baseline == 0 and self.need_candidate == 0):
            return self.verdict
        nb, nc = self.need_baseline, self.need_candidate
        if nb == nc:
            more = f"{nb} more runs per side"
        elif nb == 0:
            more = f"{nc} more candidate runs"
        elif nc == 0:
            more = f"{nb} more baseline runs"
        else:
            more = f"{nb} more baseline and {nc} more candidate runs"
        return f"unknown — need {more}"

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["label"] = self.label()
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def run_statistic(samples: Sequence[float] | np.ndarray, stat: str = "median") -> float:
    """Reduce one run's per-call samples to one number."""
    a = np.asarray(samples, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise RegressError("a run has no samples; every run needs at least one timed round")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise RegressError("a run has non-positive or non-finite samples; timings must be > 0")
    if stat == "median":
        return float(np.median(a))
    if stat == "mean":
        return float(np.mean(a))
    if stat == "q25":
        return float(np.quantile(a, 0.25))
    if stat == "q10":
        return float(np.quantile(a, 0.10))
    if stat == "min":
        return float(np.min(a))
    raise RegressError(f"unknown run statistic {stat!r}; use one of {', '.join(RUN_STATS)}")


def mannwhitney_min_p(n1: int, n2: int) -> float:
    """Smallest two-sided p-value an exact Mann-Whitney test can give for these sizes."""
    if n1 < 1 or n2 < 1:
        return 1.0
    if n1 + n2 > 1000:
        return 0.0
    return min(1.0, 2.0 / math.comb(n1 + n2, min(n1, n2)))


_HL_MAX_PAIRS = 900


def _hl_shift(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Shift estimate, vectorised over leading axes: the Hodges-Lehmann estimate (median of all
    y_j - x_i) for up to 900 pairs, the difference of medians beyond (large pooled baselines)."""
    if x.shape[-1] * y.shape[-1] > _HL_MAX_PAIRS:
        return np.median(y, axis=-1) - np.median(x, axis=-1)
    d = (y[..., None, :] - x[..., :, None]).reshape(*np.broadcast_shapes(x.shape[:-1], y.shape[:-1]), -1)
    d.sort(axis=-1)  # a full sort of <= 900 values beats np.median's partition here
    n = d.shape[-1]
    return 0.5 * (d[..., (n - 1) // 2] + d[..., n // 2])


@functools.lru_cache(maxsize=256)
def _mw_null_cdf(n1: int, n2: int) -> np.ndarray:
    """Exact null CDF of U = #{(i, j): x_i < y_j} (no ties) for sizes n1 = len(x), n2 = len(y).

    c(m, n, u) counts orderings of m x's and n y's with U = u; the last element is either a y
    (it is above all m x's: adds m) or an x: c(m, n, u) = c(m, n-1, u-m) + c(m-1, n, u).
    """
    size = n1 * n2 + 1
    prev = [np.zeros(size) for _ in range(n2 + 1)]  # row m - 1, indexed by n
    for n in range(n2 + 1):
        prev[n][0] = 1.0  # m = 0: U = 0
    for m in range(1, n1 + 1):
        cur = [np.zeros(size) for _ in range(n2 + 1)]
        cur[0][0] = 1.0
        for n in range(1, n2 + 1):
            cur[n] = prev[n].copy()
            cur[n][m:] += cur[n - 1][: size - m]
        prev = cur
    counts = prev[n2]
    return np.cumsum(counts) / counts.sum()


def _mw_pvalue(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided Mann-Whitney p-value: exact for small untied samples, else scipy's."""
    z = np.concatenate([x, y])
    if np.ptp(z) == 0:
        return 1.0
    n1, n2 = len(x), len(y)
    if n1 + n2 <= 40 and len(np.unique(z)) == n1 + n2:
        u = int(np.searchsorted(np.sort(x), y).sum())  # pairs with x < y
        cdf = _mw_null_cdf(n1, n2)
        lower = cdf[u]
        upper = 1.0 - (cdf[u - 1] if u > 0 else 0.0)
        return float(min(1.0, 2.0 * min(lower, upper)))
    return float(sps.mannwhitneyu(y, x, alternative="two-sided").pvalue)


def _pooled_sd(x: np.ndarray, y: np.ndarray) -> float:
    dof = len(x) + len(y) - 2
    if dof <= 0:
        return math.nan
    ss = float(np.sum((x - x.mean()) ** 2) + np.sum((y - y.mean()) ** 2))
    return math.sqrt(ss / dof)


def _runs_needed(nb: int, nc: int, sd: float, width: float, z: float,
                 min_runs: int, alpha: float, cap: int = 1000) -> tuple[int, int]:
    """Fewest extra (baseline, candidate) runs so that (a) both sides reach ``min_runs`` and the
    Mann-Whitney test can reach p < alpha, and (b) the expected CI half-width
    ``z * sd * sqrt(1/nb + 1/nc)`` is at most half of ``width`` (then the CI cannot contain both
    "no change" and "a change as large as the floor")."""
    r = math.inf if not math.isfinite(sd) or sd <= 0 else (width / (2.0 * z * sd)) ** 2

    def rank(add: tuple[int, int]) -> tuple[int, int, int, int]:
        # fewest runs in total; among those, candidate-only first (the baseline may be history),
        # then the most balanced split, then more candidate runs
        return sum(add), int(add[0] > 0), abs((nb + add[0]) - (nc + add[1])), -add[1]

    best: tuple[int, int] | None = None
    for c in range(max(nc, min_runs), cap + 1):
        if r <= 1.0 / c:
            continue
        b = max(nb, min_runs, math.ceil(1.0 / (r - 1.0 / c) - 1e-9) if math.isfinite(r) else 0)
        if b > cap:
            continue
        while mannwhitney_min_p(b, c) >= alpha:
            b += 1
        cand = (b - nb, c - nc)
        if best is None or rank(cand) < rank(best):
            best = cand
        if b == max(nb, min_runs):
            break  # the baseline needs nothing more: more candidate runs only add to the total
    return best if best is not None else (cap, cap)


def _group_indices(groups: Sequence[str] | None, n: int) -> list[np.ndarray] | None:
    if groups is None:
        return None
    if len(groups) != n:
        raise RegressError(f"baseline_groups has {len(groups)} labels for {n} baseline runs")
    order: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        order.setdefault(str(g), []).append(i)
    if len(order) < 3:
        return None  # too few nights to estimate night-to-night spread: runs are the unit
    return [np.array(v) for v in order.values()]


def _night_bootstrap(x: np.ndarray, groups: list[np.ndarray], rng: np.random.Generator,
                     n_boot: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-level resample of a grouped baseline, plus a night effect for the candidate.

    Returns (B, n) resampled baseline values (nights drawn with replacement, then runs within
    each drawn night) and (B,) night effects: deviations of night medians from the median of
    night medians, drawn with replacement.
    """
    k = len(groups)
    sizes = np.array([len(g) for g in groups])
    n = int(sizes.sum())
    centers = np.array([np.median(x[g]) for g in groups])
    dev = centers - np.median(centers)
    picks = rng.integers(0, k, size=(n_boot, k))
    out = np.empty((n_boot, n))
    for b in range(n_boot):
        parts = [x[groups[j]][rng.integers(0, sizes[j], size=sizes[j])] for j in picks[b]]
        row = np.concatenate(parts)
        # the draw may change the total count; resample to a fixed width for vectorised HL
        out[b] = row[rng.integers(0, len(row), size=n)] if len(row) != n else row
    return out, dev[rng.integers(0, k, size=n_boot)]


def decide_shift(
    base: Sequence[float] | np.ndarray,
    cand: Sequence[float] | np.ndarray,
    floor: float,
    *,
    alpha: float = DEFAULT_ALPHA,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    min_runs: int = MIN_RUNS,
    baseline_groups: Sequence[str] | None = None,
) -> Decision:
    """Decide on values where a positive shift (candidate minus baseline) is WORSE.

    ``base``/``cand`` hold one value per run on an additive scale (log latency, or dB of error);
    ``floor`` is the smallest shift that counts, on the same scale.  Returned ratio/CI are shifts.

    ``baseline_groups`` labels each baseline run with its night (history baselines).  With three
    or more nights, nights become the top-level unit: the bootstrap resamples nights, then runs
    within them, and adds to the candidate a night effect drawn from the baseline's own
    night-to-night spread (the candidate is one night too); the evidence is that CI alone.
    """
    x = np.asarray(base, dtype=np.float64)
    y = np.asarray(cand, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 1:
        raise RegressError("per-run values must be one-dimensional")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise RegressError("per-run values must be finite numbers")
    if not floor > 0:
        raise RegressError(f"the effect-size floor must be > 0 (got {floor})")
    if not 0 < alpha < 1:
        raise RegressError(f"alpha must be between 0 and 1 (got {alpha})")
    if n_boot < 100:
        raise RegressError(f"use at least 100 bootstrap resamples (got {n_boot})")
    nb, nc = len(x), len(y)
    z = float(sps.norm.ppf(1 - alpha / 2))
    base_c = float(np.median(x)) if nb else None
    cand_c = float(np.median(y)) if nc else None
    sd = _pooled_sd(x, y) if nb and nc else math.nan
    # Zero spread on both sides (deterministic values, e.g. parity on a fixed input): there is no
    # noise to test against, so the difference is exact and only the floor decides.
    exact = sd == 0
    if nb < min_runs or nc < min_runs or (not exact and mannwhitney_min_p(nb, nc) >= alpha):
        need_b, need_c = _runs_needed(nb, nc, sd, floor, z, min_runs, alpha)
        est = float(_hl_shift(x, y)) if nb and nc else None
        return Decision("unknown", est, None, None, None, nb, nc, base_c, cand_c,
                        None if not math.isfinite(sd) else sd, need_b, need_c,
                        note=f"too few runs: {nb} baseline, {nc} candidate; a verdict needs at least {min_runs} "
                             f"per side and enough runs for the rank test to reach p < {alpha}")

    est = float(_hl_shift(x, y))
    rng = np.random.default_rng(seed)
    groups = _group_indices(baseline_groups, nb)
    by = y[rng.integers(0, nc, size=(n_boot, nc))]
    if groups is None:
        bx = x[rng.integers(0, nb, size=(n_boot, nb))]
        boot = _hl_shift(bx, by)
    else:
        bx, night_effect = _night_bootstrap(x, groups, rng, n_boot)
        boot = _hl_shift(bx, by) + night_effect
        sd = math.sqrt(sd**2 + float(np.var(night_effect)))
    lo, hi = (float(v) for v in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
    if groups is None:
        p = _mw_pvalue(x, y)
    else:
        p = float(min(1.0, 2 * min(np.mean(boot <= 0), np.mean(boot >= 0))))
    if exact:
        p = 0.0 if est != 0 else 1.0
    sig_worse = p < alpha and lo > 0 and est > 0
    sig_better = p < alpha and hi < 0 and est < 0
    common = dict(ratio=est, ci_low=lo, ci_high=hi, p_value=p, n_baseline=nb, n_candidate=nc,
                  baseline=base_c, candidate=cand_c, noise=sd)
    if sig_worse and est >= floor:
        return Decision("slower", **common)
    if sig_better and est <= -floor:
        return Decision("faster", **common)
    if sig_worse or sig_better:
        return Decision("unchanged", **common, note="a real change, smaller than the floor")
    if -floor < lo and hi < floor:
        return Decision("unchanged", **common)
    need_b, need_c = _runs_needed(nb, nc, sd, floor, z, min_runs, alpha)
    if need_b == 0 and need_c == 0:
        # the expected CI would be narrow enough, this one is not: ask for one more run each
        need_b = need_c = 1
    return Decision("unknown", **common, need_baseline=need_b, need_candidate=need_c,
                    note="run-to-run noise too large to rule out a change as large as the floor")


def decide_latency(
    baseline_runs: Sequence[float] | np.ndarray,
    candidate_runs: Sequence[float] | np.ndarray,
    *,
    floor: float = DEFAULT_FLOOR,
    alpha: float = DEFAULT_ALPHA,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    min_runs: int = MIN_RUNS,
    baseline_groups: Sequence[str] | None = None,
) -> Decision:
    """Latency verdict from one statistic per run (ms or ns, both sides in the same unit).

    Ratio and CI are candidate/baseline; ``baseline``/``candidate`` are the medians of the
    per-run values; ``noise`` is the pooled standard deviation of log run values (about the
    relative run-to-run spread).
    """
    x = np.asarray(baseline_runs, dtype=np.float64)
    y = np.asarray(candidate_runs, dtype=np.float64)
    if (x.size and np.any(~(x > 0))) or (y.size and np.any(~(y > 0))):
        raise RegressError("latencies must be positive numbers")
    if not floor > 0:
        raise RegressError(f"the effect-size floor must be > 0, e.g. 0.03 for 3% (got {floor})")
    d = decide_shift(np.log(x), np.log(y), math.log1p(floor), alpha=alpha, n_boot=n_boot, seed=seed,
                     min_runs=min_runs, baseline_groups=baseline_groups)

    def ex(v: float | None) -> float | None:
        return None if v is None else math.exp(v)

    return dataclasses.replace(d, ratio=ex(d.ratio), ci_low=ex(d.ci_low), ci_high=ex(d.ci_high),
                               baseline=ex(d.baseline), candidate=ex(d.candidate))


def decide(
    baseline: Sequence[Sequence[float]],
    candidate: Sequence[Sequence[float]],
    *,
    floor: float = DEFAULT_FLOOR,
    alpha: float = DEFAULT_ALPHA,
    run_stat: str = DEFAULT_RUN_STAT,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    min_runs: int = MIN_RUNS,
) -> Decision:
    """Latency verdict from raw samples: ``baseline``/``candidate`` are lists of runs, each run
    the list of its per-call timings (any unit, the same on both sides)."""
    xb = [run_statistic(r, run_stat) for r in baseline]
    xc = [run_statistic(r, run_stat) for r in candidate]
    return decide_latency(xb, xc, floor=floor, alpha=alpha, n_boot=n_boot, seed=seed, min_runs=min_runs)


def parity_db(metric: str, value: float) -> float:
    """Map a parity metric to dB where higher is better (cosine via its error 1 - cos)."""
    if value is None or not isinstance(value, int | float) or not math.isfinite(value):
        raise RegressError(f"parity metric {metric} has no finite value ({value!r})")
    if metric == "cosine":
        err = 1.0 - float(value)
        if err <= 10 ** (-_DB_CAP / 10):
            return _DB_CAP
        return min(_DB_CAP, -10.0 * math.log10(err))
    if metric in ("psnr_db", "snr_db"):
        return min(_DB_CAP, float(value))
    raise RegressError(f"no regression rule for parity metric {metric!r}; use one of {', '.join(PARITY_METRICS)}")


def decide_parity(
    metric: str,
    baseline_values: Sequence[float],
    candidate_values: Sequence[float],
    *,
    floor_db: float = DEFAULT_PARITY_FLOOR_DB,
    alpha: float = DEFAULT_ALPHA,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    min_runs: int = 1,
) -> Decision:
    """Parity verdict for one metric, one value per run.  One candidate run is enough when the
    values are deterministic (no spread at all on either side): the difference is then exact.  ``slower`` here means *less faithful*
    (a drop beyond ``floor_db`` and beyond the run-to-run noise); ratio/CI are the candidate
    minus baseline difference in dB (negative = worse); baseline/candidate are the raw medians."""
    xb = np.array([parity_db(metric, v) for v in baseline_values], dtype=np.float64)
    xc = np.array([parity_db(metric, v) for v in candidate_values], dtype=np.float64)
    d = decide_shift(-xb, -xc, floor_db, alpha=alpha, n_boot=n_boot, seed=seed, min_runs=min_runs)

    def neg(v: float | None) -> float | None:
        return None if v is None else -v

    verdict = {"slower": "worse", "faster": "better"}.get(d.verdict, d.verdict)
    return dataclasses.replace(
        d, verdict=verdict, ratio=neg(d.ratio), ci_low=neg(d.ci_high), ci_high=neg(d.ci_low),
        baseline=float(np.median(baseline_values)) if len(baseline_values) else None,
        candidate=float(np.median(candidate_values)) if len(candidate_values) else None)


# ---------------------------------------------------------------------------------------------
# change points over a history (E-divisive with a permutation test)


def energy_q(x: np.ndarray) -> np.ndarray:
    """Energy-distance statistic Q(tau) for every split of ``x`` into x[:tau] | x[tau:].

    Q = m*k/(m+k) * (2/(m*k) * sum|a-b| - mean within-left |a-a'| - mean within-right |b-b'|),
    with a within mean of 0 for a one-element side.  Entry 0 is -inf (no split).  O(n^2).
    """
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    q = np.full(n, -np.inf)
    if n < 2:
        return q
    d = np.abs(x[:, None] - x[None, :])
    upper = np.triu(d, 1)
    col_up = upper.sum(axis=0)           # sum_{i<j} d_ij for each j
    row_right = upper.sum(axis=1)        # sum_{j>i} d_ij for each i
    total = upper.sum()
    tau = np.arange(1, n)
    wl = np.cumsum(col_up)[tau - 1]      # pairs inside x[:tau]
    wr = np.cumsum(row_right[::-1])[::-1][tau]  # pairs inside x[tau:]
    cross = total - wl - wr
    m = tau.astype(np.float64)
    k = (n - tau).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        in_l = np.where(m > 1, wl / (m * (m - 1) / 2), 0.0)
        in_r = np.where(k > 1, wr / (k * (k - 1) / 2), 0.0)
        q[1:] = (m * k / (m + k)) * (2 * cross / (m * k) - in_l - in_r)
    return q


@dataclasses.dataclass(frozen=True)
class ChangePoint:
    """A shift in a history: ``index`` is the first point of the new level."""

    index: int
    p_value: float
    before: float
    after: float
    ratio: float
    nights_after: int
    confirmed: bool
    label: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def e_divisive(series: Sequence[float] | np.ndarray, *, alpha: float = DEFAULT_CP_ALPHA,
               permutations: int = 199, seed: int = DEFAULT_SEED,
               min_size: int = 1) -> list[tuple[int, float]]:
    """Divisive change-point search: split the window with the largest energy statistic, keep
    the split while a permutation test (values shuffled within each current window) gives
    p <= alpha.  Returns [(first index of new segment, p-value)] sorted by index."""
    x = np.asarray(series, dtype=np.float64)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise RegressError("a change-point series must be a 1-D list of finite numbers")
    if permutations < 19:
        raise RegressError("use at least 19 permutations (p-values below 0.05 need them)")
    rng = np.random.default_rng(seed)
    found: list[tuple[int, float]] = []

    def best_split(seg: np.ndarray) -> tuple[int, float]:
        q = energy_q(seg)
        if len(seg) < 2 * min_size:
            return -1, -np.inf
        q[:min_size] = -np.inf
        if min_size > 1:
            q[len(seg) - min_size + 1:] = -np.inf
        j = int(np.argmax(q))
        return j, float(q[j])

    while True:
        bounds = [0] + sorted(i for i, _ in found) + [len(x)]
        windows = list(zip(bounds[:-1], bounds[1:], strict=True))
        cands = [(a + j, qv, a, b) for a, b in windows for j, qv in [best_split(x[a:b])] if j > 0]
        if not cands:
            break
        idx, qv, _, _ = max(cands, key=lambda c: c[1])
        if not qv > 0:
            break
        hits = 0
        for _ in range(permutations):
            perm_best = -np.inf
            for a, b in windows:
                _, pq = best_split(rng.permutation(x[a:b]))
                perm_best = max(perm_best, pq)
            if perm_best >= qv:
                hits += 1
        p = (hits + 1) / (permutations + 1)
        if p > alpha:
            break
        found.append((idx, p))
    return sorted(found)


def change_points(values: Sequence[float], labels: Sequence[str] | None = None, *,
                  floor: float = DEFAULT_FLOOR, alpha: float = DEFAULT_CP_ALPHA,
                  permutations: int = 199, seed: int = DEFAULT_SEED,
                  min_persist: int = 2) -> list[ChangePoint]:
    """Persistent shifts in a history of positive values (one per night, e.g. night medians).

    E-divisive on log values finds candidate shifts; a shift is kept when the medians of the
    segments on either side differ by at least ``floor``; it is ``confirmed`` once the new level
    has held for ``min_persist`` nights (a single odd last night is reported, unconfirmed).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size and np.any(~(v > 0)):
        raise RegressError("history values must be positive latencies")
    if labels is not None and len(labels) != len(v):
        raise RegressError(f"{len(labels)} labels for {len(v)} history points")
    if len(v) < 3:
        return []
    lv = np.log(v)
    raw = e_divisive(lv, alpha=alpha, permutations=permutations, seed=seed)
    pvals = dict(raw)
    kept = [i for i, _ in raw]
    while True:  # drop shifts below the floor, then re-measure the neighbours' segments
        bounds = [0] + kept + [len(v)]
        small = []
        for j, i in enumerate(kept):
            before = float(np.median(lv[bounds[j]:i]))
            after = float(np.median(lv[i:bounds[j + 2]]))
            if abs(after - before) < math.log1p(floor):
                small.append(i)
        if not small:
            break
        kept = [i for i in kept if i not in small]
    out = []
    bounds = [0] + kept + [len(v)]
    for j, i in enumerate(kept):
        before = float(np.exp(np.median(lv[bounds[j]:i])))
        after = float(np.exp(np.median(lv[i:bounds[j + 2]])))
        n_after = bounds[j + 2] - i
        out.append(ChangePoint(index=i, p_value=pvals[i], before=before, after=after, ratio=after / before,
                               nights_after=n_after, confirmed=n_after >= min_persist,
                               label=labels[i] if labels is not None else str(i)))
    return out


# ---------------------------------------------------------------------------------------------
# inputs: pytest-benchmark JSON files, parity JSON lines, the history store

Key = tuple[str, str, str]  # (model, variant, size)
_NAME_RE = re.compile(r"\[(?P<model>[A-Za-z0-9_.]+)-(?P<variant>[a-z0-9_]+)-(?P<size>\d+)\]$")


@dataclasses.dataclass(frozen=True)
class Run:
    """One replication unit: one process's timed rounds for one benchmark."""

    key: Key
    samples_ns: np.ndarray
    origin: str
    night: str = ""
    created: str = ""
    commit: str = ""

    @property
    def digest(self) -> str:
        h = hashlib.sha256(repr(self.key).encode())
        h.update(np.asarray(self.samples_ns, dtype=np.float64).tobytes())
        return h.hexdigest()


def _expand(paths: Iterable[str | Path], suffixes: tuple[str, ...]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix in suffixes)
            if not found:
                raise RegressError(f"folder {p} holds no {'/'.join(suffixes)} files")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise RegressError(f"{p} does not exist; give pytest-benchmark JSON files "
                               "(pytest bench/ --benchmark-json=FILE) or a folder of them")
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise RegressError(f"cannot read {path}: {exc}") from exc
    except ValueError as exc:
        raise RegressError(f"{path} is not valid JSON ({exc}); give the file written by "
                           "pytest --benchmark-json=FILE") from exc


CLOCKS = {"wall": "samples_ns", "cpu": "samples_cpu_ns"}


def load_benchmark_runs(paths: Iterable[str | Path], clock: str = "wall") -> list[Run]:
    """Runs from pytest-benchmark JSON files.

    Each benchmark entry is one run: parbench's bench suite writes one entry per process with
    ``extra_info.run_index`` (``--runs K`` gives K entries per benchmark), and a file without
    run_index counts as one run per benchmark.  Samples come from ``extra_info.samples_ns``, or
    from ``stats.data`` (seconds) when absent.  Identical runs given twice count once.
    ``clock="cpu"`` reads ``extra_info.samples_cpu_ns`` (process CPU time of each round) instead.
    """
    if clock not in CLOCKS:
        raise RegressError(f"unknown clock {clock!r}; use one of {', '.join(CLOCKS)}")
    runs: list[Run] = []
    seen: set[str] = set()
    for path in _expand(paths, (".json",)):
        doc = _read_json(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
            raise RegressError(f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' list); "
                               "write one with pytest bench/ --benchmark-json=FILE")
        created = str(doc.get("datetime") or "")
        commit = str((doc.get("commit_info") or {}).get("id") or "")
        for i, bench in enumerate(doc["benchmarks"]):
            name = str(bench.get("name") or f"benchmarks[{i}]")
            extra = bench.get("extra_info") or {}
            m = _NAME_RE.search(name)
            try:
                key = (str(extra["model"]) if "model" in extra else m["model"],  # type: ignore[index]
                       str(extra["variant"]) if "variant" in extra else m["variant"],  # type: ignore[index]
                       str(extra["size"]) if "size" in extra else m["size"])  # type: ignore[index]
            except TypeError:
                raise RegressError(f"{path}: benchmark {name} has no extra_info model/variant/size and its "
                                   "name is not test_...[model-variant-size]; was it written by bench/?") from None
            samples = extra.get(CLOCKS[clock])
            if samples is None and clock == "cpu":
                raise RegressError(f"{path}: benchmark {name} has no extra_info.samples_cpu_ns (CPU time "
                                   "per round); compare it with --clock wall")
            if samples is None:
                data = (bench.get("stats") or {}).get("data")
                if not data:
                    raise RegressError(f"{path}: benchmark {name} has no raw samples (extra_info.samples_ns "
                                       "or stats.data); write it with pytest --benchmark-json=FILE")
                samples = [float(s) * 1e9 for s in data]
            arr = np.asarray(samples, dtype=np.float64)
            if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
                raise RegressError(f"{path}: benchmark {name} has empty or non-positive samples")
            run = Run(key=key, samples_ns=arr, origin=f"{path}#{extra.get('run_index', i)}",
                      night=str(path), created=created, commit=commit)
            if run.digest in seen:
                continue
            seen.add(run.digest)
            runs.append(run)
    return runs


def load_parity_runs(paths: Iterable[str | Path],
                     metrics: Sequence[str] = PARITY_METRICS) -> dict[tuple[Key, str], list[float]]:
    """Parity figures from JSON-lines files (one file = one run): per model x variant x size and
    metric, the worst value over the run's cases and outputs.  Cases that errored or were
    skipped carry no metrics and are left out."""
    out: dict[tuple[Key, str], list[float]] = defaultdict(list)
    for path in _expand(paths, (".jsonl",)):
        worst: dict[tuple[Key, str], float] = {}
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise RegressError(f"cannot read {path}: {exc}") from exc
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key = (str(rec["model"]), str(rec["variant"]), str(rec["size"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise RegressError(f"{path}:{n} is not a parity result line ({exc}); give the "
                                   "reports/parity/*.jsonl files pytest parity/ writes") from exc
            for outputs in (rec.get("metrics") or {}).values():
                for metric in metrics:
                    v = (outputs or {}).get(metric)
                    if v is None:
                        continue
                    db = parity_db(metric, v)
                    k = (key, metric)
                    if k not in worst or db < parity_db(metric, worst[k]):
                        worst[k] = float(v)
        for k, v in worst.items():
            out[k].append(v)
    return dict(out)


def group_runs(runs: Iterable[Run]) -> dict[Key, list[Run]]:
    out: dict[Key, list[Run]] = defaultdict(list)
    for r in runs:
        out[r.key].append(r)
    return dict(out)


def store_runs(store_path: str | Path, *, source: str = "host", model: str | None = None,
               variant: str | None = None, size: str | None = None, clock: str = "wall") -> dict[Key, list[Run]]:
    """Runs from the history store, each labelled with its night.

    A night is one stored run id when that run holds several runs of a benchmark (``--runs K``
    in one session); otherwise runs are grouped by their UTC day."""
    path = Path(store_path)
    if not path.exists():
        raise RegressError(f"history store {path} does not exist; create it by ingesting bench "
                           "results (Store(path).ingest_benchmark_json(FILE)) or pass --store PATH")
    if size is not None and not str(size).isdigit():
        raise RegressError(f"size must be a whole number of pixels, got {size!r}")
    from parbench.store import Store

    store = Store(path)
    try:
        df = store.results(model=model, variant=variant, size=int(size) if size else None, source=source)
    finally:
        store.close()
    if df.empty:
        return {}
    df = df[df["error"].isna()] if "error" in df.columns else df
    out: dict[Key, list[Run]] = defaultdict(list)
    for (m, v, s), g in df.groupby(["model", "variant", "size"], sort=False):
        g = g.sort_values("created_utc", kind="stable")
        per_id = g.groupby("run_id")["run_id"].transform("size")
        by_id = bool((per_id > 1).any())
        for _, row in g.iterrows():
            created = row["created_utc"]
            night = str(row["run_id"]) if by_id else created.strftime("%Y-%m-%d")
            if clock == "wall":
                raw = row["samples_ns"]
            else:  # extra_info keys the store has no column for are kept under "extra"
                raw = (row.get("extra") or {}).get(CLOCKS[clock])
                if raw is None:
                    raise RegressError(f"stored run {row['run_id']} of {m}-{v}-{s} has no CPU-time samples; "
                                       "use --clock wall")
            samples = np.asarray(raw, dtype=np.float64)
            if samples.size == 0:
                continue
            out[(str(m), str(v), str(s))].append(Run(
                key=(str(m), str(v), str(s)), samples_ns=samples, origin=f"{path}:{row['run_id']}",
                night=night, created=created.isoformat(), commit=str(row.get("commit") or "")))
    return dict(out)


def nights_of(runs: Sequence[Run]) -> list[tuple[str, list[Run]]]:
    """Runs grouped by night, oldest night first (by the night's first run)."""
    order: dict[str, list[Run]] = {}
    for r in sorted(runs, key=lambda r: r.created):
        order.setdefault(r.night, []).append(r)
    return list(order.items())


# ---------------------------------------------------------------------------------------------
# comparing two sides


@dataclasses.dataclass(frozen=True)
class Row:
    model: str
    variant: str
    size: str
    metric: str  # "latency" or a parity metric
    decision: Decision

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "variant": self.variant, "size": self.size, "metric": self.metric,
                **self.decision.as_dict()}


def compare_runs(baseline: Mapping[Key, Sequence[Run]], candidate: Mapping[Key, Sequence[Run]], *,
                 floor: float = DEFAULT_FLOOR, alpha: float = DEFAULT_ALPHA, run_stat: str = DEFAULT_RUN_STAT,
                 n_boot: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED, min_runs: int = MIN_RUNS,
                 by_night: bool = False) -> list[Row]:
    """One latency verdict per benchmark present on either side.  With ``by_night`` the baseline
    runs' nights become the top-level unit (see :func:`decide_shift`)."""
    rows = []
    for key in sorted(set(baseline) | set(candidate), key=lambda k: (k[0], k[1], _size_key(k[2]))):
        b = list(baseline.get(key, ()))
        c = list(candidate.get(key, ()))
        xb = [run_statistic(r.samples_ns, run_stat) / 1e6 for r in b]
        xc = [run_statistic(r.samples_ns, run_stat) / 1e6 for r in c]
        groups = [r.night for r in b] if by_night else None
        d = decide_latency(xb, xc, floor=floor, alpha=alpha, n_boot=n_boot, seed=seed, min_runs=min_runs,
                           baseline_groups=groups)
        if not b:
            d = dataclasses.replace(d, note="no baseline runs for this benchmark")
        elif not c:
            d = dataclasses.replace(d, note="no candidate runs for this benchmark")
        rows.append(Row(*key, "latency", d))
    return rows


def compare_parity(baseline: Mapping[tuple[Key, str], Sequence[float]],
                   candidate: Mapping[tuple[Key, str], Sequence[float]], *,
                   floor_db: float = DEFAULT_PARITY_FLOOR_DB, alpha: float = DEFAULT_ALPHA,
                   n_boot: int = DEFAULT_BOOTSTRAP, seed: int = DEFAULT_SEED) -> list[Row]:
    rows = []
    for key, metric in sorted(set(baseline) | set(candidate),
                              key=lambda km: (km[0][0], km[0][1], _size_key(km[0][2]), km[1])):
        d = decide_parity(metric, list(baseline.get((key, metric), ())), list(candidate.get((key, metric), ())),
                          floor_db=floor_db, alpha=alpha, n_boot=n_boot, seed=seed)
        rows.append(Row(*key, metric, d))
    return rows


def _size_key(size: str) -> tuple[int, str]:
    return (int(size), "") if size.isdigit() else (1 << 30, size)


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None or not math.isfinite(v) else format(v, spec)


def format_table(rows: Sequence[Row], alpha: float = DEFAULT_ALPHA) -> str:
    """The verdict table as GitHub Markdown."""
    conf = f"{(1 - alpha) * 100:g}% CI"
    lat = [r for r in rows if r.metric == "latency"]
    par = [r for r in rows if r.metric != "latency"]
    lines: list[str] = []
    if lat:
        lines += [f"| model | variant | size | baseline ms | candidate ms | ratio | {conf} | runs (b/c) | verdict |",
                  "|---|---|---|---:|---:|---:|---|---:|---|"]
        for r in lat:
            d = r.decision
            ci = f"{_fmt(d.ci_low, '.3f')}–{_fmt(d.ci_high, '.3f')}" if d.ci_low is not None else "—"
            lines.append(f"| {r.model} | {r.variant} | {r.size} | {_fmt(d.baseline, '.3f')} | "
                         f"{_fmt(d.candidate, '.3f')} | {_fmt(d.ratio, '.3f')} | {ci} | "
                         f"{d.n_baseline}/{d.n_candidate} | {d.label()} |")
    if par:
        if lines:
            lines.append("")
        lines += [f"| model | variant | size | metric | baseline | candidate | Δ dB | {conf} dB | runs (b/c) | verdict |",
                  "|---|---|---|---|---:|---:|---:|---|---:|---|"]
        for r in par:
            d = r.decision
            ci = f"{_fmt(d.ci_low, '+.2f')}–{_fmt(d.ci_high, '+.2f')}" if d.ci_low is not None else "—"
            spec = ".6f" if r.metric == "cosine" else ".2f"
            lines.append(f"| {r.model} | {r.variant} | {r.size} | {r.metric} | {_fmt(d.baseline, spec)} | "
                         f"{_fmt(d.candidate, spec)} | {_fmt(d.ratio, '+.2f')} | {ci} | "
                         f"{d.n_baseline}/{d.n_candidate} | {d.label()} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# history: change points and plots


@dataclasses.dataclass
class Series:
    model: str
    variant: str
    size: str
    nights: list[str]
    created: list[str]
    commits: list[str]
    run_values: list[list[float]]  # ms, per night
    centers: list[float]           # ms, median of the night's run values
    change_points: list[ChangePoint]


def history_series(runs: Mapping[Key, Sequence[Run]], *, run_stat: str = DEFAULT_RUN_STAT,
                   floor: float = DEFAULT_FLOOR, alpha: float = DEFAULT_CP_ALPHA,
                   permutations: int = 199, seed: int = DEFAULT_SEED,
                   min_persist: int = 2) -> list[Series]:
    out = []
    for key in sorted(runs, key=lambda k: (k[0], k[1], _size_key(k[2]))):
        nights = nights_of(runs[key])
        vals = [[run_statistic(r.samples_ns, run_stat) / 1e6 for r in rs] for _, rs in nights]
        centers = [float(np.median(v)) for v in vals]
        labels = [_night_label(n, rs) for n, rs in nights]
        cps = change_points(centers, labels, floor=floor, alpha=alpha, permutations=permutations,
                            seed=seed, min_persist=min_persist)
        out.append(Series(*key, nights=[n for n, _ in nights], created=[rs[0].created for _, rs in nights],
                          commits=[rs[0].commit for _, rs in nights], run_values=vals, centers=centers,
                          change_points=cps))
    return out


def _night_label(night: str, runs: Sequence[Run]) -> str:
    day = runs[0].created[:10]
    commit = runs[0].commit[:8]
    return f"{day} {commit}".strip() if day else night


def plot_series(series: Series, path: Path) -> Path:
    """Latency over nights: every run as a dot, night medians as a line, change points marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=110)
    xs = np.arange(len(series.centers))
    for i, v in enumerate(series.run_values):
        ax.scatter(np.full(len(v), i), v, s=10, color="#8aa6c1", alpha=0.7, zorder=2,
                   label="runs" if i == 0 else None)
    ax.plot(xs, series.centers, color="#1f4e79", lw=1.6, marker="o", ms=3, zorder=3, label="night median")
    bounds = [0] + [c.index for c in series.change_points] + [len(xs)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        level = float(np.median(series.centers[a:b]))
        ax.hlines(level, a - 0.4, b - 0.6, colors="#999999", linestyles="dotted", zorder=1)
    for c in series.change_points:
        color = "#c0392b" if c.ratio > 1 else "#27ae60"
        ax.axvline(c.index - 0.5, color=color, ls="--", lw=1.2, zorder=1)
        ax.annotate(f"{(c.ratio - 1) * 100:+.1f}%{'' if c.confirmed else ' (new)'}",
                    (c.index - 0.5, ax.get_ylim()[1]), xytext=(3, -12), textcoords="offset points",
                    color=color, fontsize=8)
    ticks = xs if len(xs) <= 16 else xs[:: max(1, len(xs) // 12)]
    labels = [(series.created[i][:10] or series.nights[i][:10]) for i in ticks]
    ax.set_xticks(ticks, labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("ms per call")
    ax.set_title(f"{series.model} · {series.variant} · {series.size}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_history_html(model: str, series: Sequence[Series], pngs: Sequence[Path], path: Path) -> Path:
    import html

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>parbench history: {html.escape(model)}"
             "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}</style></head><body>",
             f"<h1>Latency history: {html.escape(model)}</h1>"]
    for s, png in zip(series, pngs, strict=True):
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(s.variant)} · {html.escape(s.size)}</h2>")
        parts.append(f"<img alt='latency of {html.escape(s.variant)} at {html.escape(s.size)} over nights' "
                     f"src='data:image/png;base64,{data}'>")
        if s.change_points:
            parts.append("<table><tr><th>first night</th><th>before ms</th><th>after ms</th><th>change</th>"
                         "<th>p</th><th>nights since</th><th>status</th></tr>")
            for c in s.change_points:
                parts.append(f"<tr><td>{html.escape(c.label)}</td><td>{c.before:.3f}</td><td>{c.after:.3f}</td>"
                             f"<td>{(c.ratio - 1) * 100:+.1f}%</td><td>{c.p_value:.3f}</td>"
                             f"<td>{c.nights_after}</td><td>{'confirmed' if c.confirmed else 'new'}</td></tr>")
            parts.append("</table>")
        else:
            parts.append(f"<p>No change point over {len(s.centers)} nights.</p>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path


# ---------------------------------------------------------------------------------------------
# command line


class _MultiValueCandidate(click.Command):
    """Lets ``--candidate a.json b.json`` take every following non-option word."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        out: list[str] = []
        grab = False
        for a in args:
            if a == "--candidate":
                grab = True
                continue
            if a.startswith("--candidate="):
                out += ["--candidate", a.split("=", 1)[1]]
                grab = True
                continue
            if grab and not a.startswith("-"):
                out += ["--candidate", a]
                continue
            grab = False
            out.append(a)
        return super().parse_args(ctx, out)


def _split_kinds(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    bench, parity = [], []
    for p in paths:
        pp = Path(p)
        if pp.suffix == ".jsonl" or (pp.is_dir() and any(pp.glob("*.jsonl")) and not any(pp.glob("*.json"))):
            parity.append(p)
        else:
            bench.append(p)
    return bench, parity


def _filter(runs: Mapping[Key, Sequence[Run]], model: str | None, variant: str | None,
            size: str | None) -> dict[Key, list[Run]]:
    return {k: list(v) for k, v in runs.items()
            if (model is None or k[0] == model) and (variant is None or k[1] == variant)
            and (size is None or k[2] == str(size))}


@click.command("compare", cls=_MultiValueCandidate)
@click.argument("baseline", nargs=-1, type=click.Path(path_type=str))
@click.option("--candidate", "candidate", multiple=True, type=click.Path(path_type=str),
              help="Candidate bench JSON (or parity .jsonl) files or folders; several may follow.")
@click.option("--store", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=f"History store for a history baseline [default: {DEFAULT_STORE}].")
@click.option("--baseline-nights", type=click.IntRange(1), default=None,
              help="Pool the runs of the N most recent nights in the store as the baseline.")
@click.option("--candidate-nights", type=click.IntRange(1), default=None,
              help="Take the candidate from the store too: its M most recent nights (the baseline "
                   "nights are then the ones before them).")
@click.option("--source", default="host", show_default=True, help="Store source: host or device.")
@click.option("--model", default=None, help="Only this model.")
@click.option("--variant", default=None, help="Only this variant.")
@click.option("--size", default=None, help="Only this size.")
@click.option("--floor", type=click.FloatRange(0, min_open=True), default=DEFAULT_FLOOR, show_default=True,
              help="Smallest slowdown that counts as a regression (0.03 = 3%).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=DEFAULT_ALPHA,
              show_default=True, help="Significance level of the test and the CI (1 - confidence).")
@click.option("--parity-floor-db", type=click.FloatRange(0, min_open=True), default=DEFAULT_PARITY_FLOOR_DB,
              show_default=True, help="Smallest parity drop (dB) that counts as a regression.")
@click.option("--run-stat", type=click.Choice(RUN_STATS), default=DEFAULT_RUN_STAT, show_default=True,
              help="How one run's samples become one number.")
@click.option("--clock", type=click.Choice(sorted(CLOCKS)), default="wall", show_default=True,
              help="wall: samples_ns; cpu: samples_cpu_ns (process CPU time per round, steadier on a "
                   "shared machine) where the bench files carry it.")
@click.option("--min-runs", type=click.IntRange(2), default=MIN_RUNS, show_default=True,
              help="Fewest runs per side before any verdict but unknown.")
@click.option("--bootstrap", "n_boot", type=click.IntRange(100), default=DEFAULT_BOOTSTRAP, show_default=True,
              help="Bootstrap resamples for the CI.")
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True, help="Bootstrap seed.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the verdicts as JSON here.")
@click.option("--markdown", "md_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the verdict table as Markdown here.")
def compare_command(baseline: tuple[str, ...], candidate: tuple[str, ...], store: Path | None,
                    baseline_nights: int | None, candidate_nights: int | None, source: str,
                    model: str | None, variant: str | None, size: str | None, floor: float, alpha: float,
                    parity_floor_db: float, run_stat: str, clock: str, min_runs: int, n_boot: int, seed: int,
                    json_out: Path | None, md_out: Path | None) -> None:
    """Compare CANDIDATE runs with BASELINE runs; exit 1 on a confirmed regression.

    \b
    Each side is one or more pytest-benchmark JSON files (or folders of them; every benchmark
    entry is one run, i.e. one fresh process), or a query of the history store:
      parbench compare base.json new.json        (one file per side)
      parbench compare base/*.json --candidate new/*.json
      parbench compare --store reports/history.sqlite --baseline-nights 7 --candidate tonight.json
      parbench compare --store reports/history.sqlite --baseline-nights 7 --candidate-nights 1
    Parity JSON lines (reports/parity/*.jsonl, one file per run) are compared the same way.

    Exit status: 0 no regression (unchanged, faster, unknown), 1 a confirmed regression
    (slower, or parity worse), 2 bad input.
    """
    if not candidate and candidate_nights is None and baseline_nights is None and len(baseline) == 2:
        baseline, candidate = baseline[:1], baseline[1:]  # the short form: compare BASELINE CANDIDATE
    if store is not None and baseline_nights is None:
        raise click.UsageError("--store needs --baseline-nights N (how many recent nights make the baseline)")
    if baseline_nights is not None and baseline:
        raise click.UsageError("give the baseline either as files or as --baseline-nights, not both")
    if candidate_nights is not None and candidate:
        raise click.UsageError("give the candidate either as files (--candidate) or as --candidate-nights")
    if not baseline and baseline_nights is None:
        raise click.UsageError("no baseline: give BASELINE files or --store PATH --baseline-nights N")
    if not candidate and candidate_nights is None:
        raise click.UsageError("no candidate: give --candidate FILES (or --candidate-nights M with --store)")
    if candidate_nights is not None and baseline_nights is None:
        raise click.UsageError("--candidate-nights needs --baseline-nights too")
    try:
        rows: list[Row] = []
        cand_bench, cand_parity = _split_kinds(candidate)
        cand_runs = group_runs(load_benchmark_runs(cand_bench, clock)) if cand_bench else {}
        by_night = False
        if baseline_nights is not None:
            hist = store_runs(store or DEFAULT_STORE, source=source, model=model, variant=variant, size=size,
                              clock=clock)
            cand_digests = {r.digest for rs in cand_runs.values() for r in rs}
            base_runs: dict[Key, list[Run]] = {}
            hist_cand: dict[Key, list[Run]] = {}
            for key, rs in hist.items():
                nights = [(n, [r for r in g if r.digest not in cand_digests]) for n, g in nights_of(rs)]
                nights = [(n, g) for n, g in nights if g]
                if candidate_nights is not None:
                    hist_cand[key] = [r for _, g in nights[len(nights) - candidate_nights:] for r in g]
                    nights = nights[: max(0, len(nights) - candidate_nights)]
                base_runs[key] = [r for _, g in nights[-baseline_nights:] for r in g]
            if candidate_nights is not None:
                cand_runs = hist_cand
            if not any(base_runs.values()):
                raise RegressError(f"the store has no {source} runs before the candidate; nothing to compare with")
            by_night = True
        else:
            base_bench, base_parity = _split_kinds(baseline)
            base_runs = group_runs(load_benchmark_runs(base_bench, clock)) if base_bench else {}
            overlap = {r.digest for rs in base_runs.values() for r in rs} & \
                {r.digest for rs in cand_runs.values() for r in rs}
            if overlap:
                raise RegressError("the same run appears on both sides; give different files for "
                                   "baseline and candidate")
            if base_parity or cand_parity:
                rows += compare_parity(load_parity_runs(base_parity), load_parity_runs(cand_parity),
                                       floor_db=parity_floor_db, alpha=alpha, n_boot=n_boot, seed=seed)
        base_runs = _filter(base_runs, model, variant, size)
        cand_runs = _filter(cand_runs, model, variant, size)
        if base_runs or cand_runs:
            if not set(base_runs) & set(cand_runs):
                raise RegressError("baseline and candidate share no benchmark (model-variant-size); "
                                   "check that both sides ran the same suite")
            rows = compare_runs(base_runs, cand_runs, floor=floor, alpha=alpha, run_stat=run_stat,
                                n_boot=n_boot, seed=seed, min_runs=min_runs, by_night=by_night) + rows
    except RegressError as exc:
        raise click.UsageError(str(exc)) from exc
    if not rows:
        raise click.UsageError("nothing to compare: no benchmark or parity results in the inputs")
    table = format_table(rows, alpha)
    click.echo(table)
    bad = [r for r in rows if r.decision.verdict in ("slower", "worse")]
    unknown = [r for r in rows if r.decision.verdict == "unknown"]
    summary = (f"{len(rows)} compared: {len(bad)} regression(s), {len(unknown)} unknown; "
               f"floor {floor:.1%}, alpha {alpha}, run statistic {run_stat}, {clock} clock")
    click.echo("\n" + summary)
    if md_out is not None:
        md_out.parent.mkdir(parents=True, exist_ok=True)
        md_out.write_text(table + "\n\n" + summary + "\n")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({
            "settings": {"floor": floor, "alpha": alpha, "run_stat": run_stat, "clock": clock, "min_runs": min_runs,
                         "bootstrap": n_boot, "seed": seed, "parity_floor_db": parity_floor_db,
                         "baseline_nights": baseline_nights, "candidate_nights": candidate_nights},
            "regressions": len(bad), "rows": [r.as_dict() for r in rows]}, indent=2))
    if bad:
        raise SystemExit(1)


@click.command("history")
@click.argument("model")
@click.option("--variant", default=None, help="Only this variant.")
@click.option("--size", default=None, help="Only this size.")
@click.option("--store", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_STORE,
              show_default=True, help="History store (SQLite).")
@click.option("--source", default="host", show_default=True, help="Store source: host or device.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("reports/history"), show_default=True, help="Folder for PNG, HTML and JSON.")
@click.option("--run-stat", type=click.Choice(RUN_STATS), default=DEFAULT_RUN_STAT, show_default=True,
              help="How one run's samples become one number.")
@click.option("--clock", type=click.Choice(sorted(CLOCKS)), default="wall", show_default=True)
@click.option("--floor", type=click.FloatRange(0, min_open=True), default=DEFAULT_FLOOR, show_default=True,
              help="Smallest shift reported as a change point.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=DEFAULT_CP_ALPHA,
              show_default=True, help="Permutation-test level for a change point.")
@click.option("--permutations", type=click.IntRange(19), default=199, show_default=True)
@click.option("--min-persist", type=click.IntRange(1), default=2, show_default=True,
              help="Nights a new level must hold to be a confirmed change.")
def history_command(model: str, variant: str | None, size: str | None, store: Path, source: str,
                    out_dir: Path, run_stat: str, clock: str, floor: float, alpha: float, permutations: int,
                    min_persist: int) -> None:
    """Latency of MODEL over the nights in the history store, with its change points.

    Writes a PNG per variant x size, an HTML page embedding them and a JSON summary to --out,
    and lists every change point (first night of a persistent shift) here.
    """
    try:
        runs = store_runs(store, source=source, model=model, variant=variant, size=size, clock=clock)
        if not runs:
            raise RegressError(f"the store {store} has no {source} results for model {model!r}"
                               + (f" variant {variant!r}" if variant else "") + (f" size {size}" if size else ""))
        series = history_series(runs, run_stat=run_stat, floor=floor, alpha=alpha,
                                permutations=permutations, min_persist=min_persist)
    except RegressError as exc:
        raise click.UsageError(str(exc)) from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = [plot_series(s, out_dir / f"history_{s.model}_{s.variant}_{s.size}.png") for s in series]
    page = write_history_html(model, series, pngs, out_dir / f"history_{model}.html")
    summary = [{"model": s.model, "variant": s.variant, "size": s.size, "nights": s.nights,
                "centers_ms": s.centers, "change_points": [c.as_dict() for c in s.change_points]}
               for s in series]
    (out_dir / f"history_{model}.json").write_text(json.dumps(summary, indent=2))
    for s in series:
        head = f"{s.model}-{s.variant}-{s.size}: {len(s.centers)} nights, last {s.centers[-1]:.3f} ms"
        if not s.change_points:
            click.echo(f"{head}, no change point")
        for c in s.change_points:
            status = "confirmed" if c.confirmed else f"new, {c.nights_after} night"
            click.echo(f"{head}: change at {c.label}: {c.before:.3f} -> {c.after:.3f} ms "
                       f"({(c.ratio - 1) * 100:+.1f}%, p={c.p_value:.3f}, {status})")
    click.echo(f"wrote {page}")
