"""Change points over a history: E-divisive (energy statistic, divisive bisection) with a permutation test, reporting the first night of each persistent shift."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from parbench.errors import RegressError
from parbench.regress.decide import DEFAULT_CP_ALPHA, DEFAULT_FLOOR, DEFAULT_SEED

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
    col_up = upper.sum(axis=0)  # sum_{i<j} d_ij for each j
    row_right = upper.sum(axis=1)  # sum_{j>i} d_ij for each i
    total = upper.sum()
    tau = np.arange(1, n)
    wl = np.cumsum(col_up)[tau - 1]  # pairs inside x[:tau]
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


def e_divisive(
    series: Sequence[float] | np.ndarray,
    *,
    alpha: float = DEFAULT_CP_ALPHA,
    permutations: int = 199,
    seed: int = DEFAULT_SEED,
    min_size: int = 1,
) -> list[tuple[int, float]]:
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
            q[len(seg) - min_size + 1 :] = -np.inf
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


def change_points(
    values: Sequence[float],
    labels: Sequence[str] | None = None,
    *,
    floor: float = DEFAULT_FLOOR,
    alpha: float = DEFAULT_CP_ALPHA,
    permutations: int = 199,
    seed: int = DEFAULT_SEED,
    min_persist: int = 2,
) -> list[ChangePoint]:
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
            before = float(np.median(lv[bounds[j] : i]))
            after = float(np.median(lv[i : bounds[j + 2]]))
            if abs(after - before) < math.log1p(floor):
                small.append(i)
        if not small:
            break
        kept = [i for i in kept if i not in small]
    out = []
    bounds = [0] + kept + [len(v)]
    for j, i in enumerate(kept):
        before = float(np.exp(np.median(lv[bounds[j] : i])))
        after = float(np.exp(np.median(lv[i : bounds[j + 2]])))
        n_after = bounds[j + 2] - i
        out.append(
            ChangePoint(
                index=i,
                p_value=pvals[i],
                before=before,
                after=after,
                ratio=after / before,
                nights_after=n_after,
                confirmed=n_after >= min_persist,
                label=labels[i] if labels is not None else str(i),
            )
        )
    return out
