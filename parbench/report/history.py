"""A benchmark's history over nights: one value per night and the change points (plotted by
:mod:`parbench.report.plots`, shown by :mod:`parbench.report.html`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from parbench.regress.changepoints import ChangePoint, change_points
from parbench.regress.decide import (
    DEFAULT_CP_ALPHA,
    DEFAULT_FLOOR,
    DEFAULT_RUN_STAT,
    DEFAULT_SEED,
    run_statistic,
)
from parbench.regress.sides import Key, Run, _size_key, nights_of


@dataclasses.dataclass
class Series:
    model: str
    variant: str
    size: str
    nights: list[str]
    created: list[str]
    commits: list[str]
    run_values: list[list[float]]  # ms, per night
    centers: list[float]  # ms, median of the night's run values
    change_points: list[ChangePoint]


def history_series(
    runs: Mapping[Key, Sequence[Run]],
    *,
    run_stat: str = DEFAULT_RUN_STAT,
    floor: float = DEFAULT_FLOOR,
    alpha: float = DEFAULT_CP_ALPHA,
    permutations: int = 199,
    seed: int = DEFAULT_SEED,
    min_persist: int = 2,
) -> list[Series]:
    out = []
    for key in sorted(runs, key=lambda k: (k[0], k[1], _size_key(k[2]))):
        nights = nights_of(runs[key])
        vals = [[run_statistic(r.samples_ns, run_stat) / 1e6 for r in rs] for _, rs in nights]
        centers = [float(np.median(v)) for v in vals]
        labels = [_night_label(n, rs) for n, rs in nights]
        cps = change_points(
            centers,
            labels,
            floor=floor,
            alpha=alpha,
            permutations=permutations,
            seed=seed,
            min_persist=min_persist,
        )
        out.append(
            Series(
                *key,
                nights=[n for n, _ in nights],
                created=[rs[0].created for _, rs in nights],
                commits=[rs[0].commit for _, rs in nights],
                run_values=vals,
                centers=centers,
                change_points=cps,
            )
        )
    return out


def _night_label(night: str, runs: Sequence[Run]) -> str:
    day = runs[0].created[:10]
    commit = runs[0].commit[:8]
    return f"{day} {commit}".strip() if day else night
