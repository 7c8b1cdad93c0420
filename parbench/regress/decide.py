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

Bad input raises :class:`RegressError` with an actionable message; nothing here prints.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal, TypedDict

import numpy as np
from scipy import stats as sps

from parbench.errors import RegressError

DEFAULT_FLOOR = 0.03
DEFAULT_ALPHA = 0.02
DEFAULT_CP_ALPHA = 0.05
DEFAULT_RUNS = 7
DEFAULT_BOOTSTRAP = 2000
DEFAULT_SEED = 20240601
DEFAULT_PARITY_FLOOR_DB = 1.0
MIN_RUNS = 3
RUN_STATS = ("median", "mean", "q25", "q10", "min")
# A run's fastest round: timing noise only ever adds time, so the minimum is where two processes
# running the same code agree best (figures: docs/regression.md, "The rule", step 1).
DEFAULT_RUN_STAT = "min"
PARITY_METRICS = ("cosine", "psnr_db", "snr_db")
_DB_CAP = 200.0

Verdict = Literal["slower", "faster", "worse", "better", "unchanged", "unknown"]


class LatencySettings(TypedDict, total=False):
    """How a latency verdict is reached: the keyword arguments of :func:`decide` (and of
    :func:`parbench.regress.sides.compare_runs`), held once by the code that passes them on."""

    floor: float
    alpha: float
    run_stat: str
    n_boot: int
    seed: int
    min_runs: int


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


def _mw_pvalue(x: np.ndarray, y: np.ndarray) -> float:
    """Two-sided Mann-Whitney p-value: exact for small untied samples, else scipy's default."""
    z = np.concatenate([x, y])
    if np.ptp(z) == 0:
        return 1.0
    exact = len(z) <= 40 and len(np.unique(z)) == len(z)
    return float(sps.mannwhitneyu(y, x, alternative="two-sided", method="exact" if exact else "auto").pvalue)


def _pooled_sd(x: np.ndarray, y: np.ndarray) -> float:
    dof = len(x) + len(y) - 2
    if dof <= 0:
        return math.nan
    ss = float(np.sum((x - x.mean()) ** 2) + np.sum((y - y.mean()) ** 2))
    return math.sqrt(ss / dof)


def _runs_needed(
    nb: int, nc: int, sd: float, width: float, z: float, min_runs: int, alpha: float, cap: int = 1000
) -> tuple[int, int]:
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


def _night_bootstrap(
    x: np.ndarray, groups: list[np.ndarray], rng: np.random.Generator, n_boot: int
) -> tuple[np.ndarray, np.ndarray]:
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
        return Decision(
            "unknown",
            est,
            None,
            None,
            None,
            nb,
            nc,
            base_c,
            cand_c,
            None if not math.isfinite(sd) else sd,
            need_b,
            need_c,
            note=f"too few runs: {nb} baseline, {nc} candidate; a verdict needs at least {min_runs} "
            f"per side and enough runs for the rank test to reach p < {alpha}",
        )

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
    common = dict(
        ratio=est,
        ci_low=lo,
        ci_high=hi,
        p_value=p,
        n_baseline=nb,
        n_candidate=nc,
        baseline=base_c,
        candidate=cand_c,
        noise=sd,
    )
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
    return Decision(
        "unknown",
        **common,
        need_baseline=need_b,
        need_candidate=need_c,
        note="run-to-run noise too large to rule out a change as large as the floor",
    )


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
    d = decide_shift(
        np.log(x),
        np.log(y),
        math.log1p(floor),
        alpha=alpha,
        n_boot=n_boot,
        seed=seed,
        min_runs=min_runs,
        baseline_groups=baseline_groups,
    )

    def ex(v: float | None) -> float | None:
        return None if v is None else math.exp(v)

    return dataclasses.replace(
        d,
        ratio=ex(d.ratio),
        ci_low=ex(d.ci_low),
        ci_high=ex(d.ci_high),
        baseline=ex(d.baseline),
        candidate=ex(d.candidate),
    )


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
    raise RegressError(
        f"no regression rule for parity metric {metric!r}; use one of {', '.join(PARITY_METRICS)}"
    )


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
        d,
        verdict=verdict,
        ratio=neg(d.ratio),
        ci_low=neg(d.ci_high),
        ci_high=neg(d.ci_low),
        baseline=float(np.median(baseline_values)) if len(baseline_values) else None,
        candidate=float(np.median(candidate_values)) if len(candidate_values) else None,
    )
