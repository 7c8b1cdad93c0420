"""A benchmark's history over nights: its series, change points, plot and HTML page."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

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


def plot_series(series: Series, path: Path) -> Path:
    """Latency over nights: every run as a dot, night medians as a line, change points marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=110)
    xs = np.arange(len(series.centers))
    for i, v in enumerate(series.run_values):
        ax.scatter(
            np.full(len(v), i),
            v,
            s=10,
            color="#8aa6c1",
            alpha=0.7,
            zorder=2,
            label="runs" if i == 0 else None,
        )
    ax.plot(xs, series.centers, color="#1f4e79", lw=1.6, marker="o", ms=3, zorder=3, label="night median")
    bounds = [0] + [c.index for c in series.change_points] + [len(xs)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        level = float(np.median(series.centers[a:b]))
        ax.hlines(level, a - 0.4, b - 0.6, colors="#999999", linestyles="dotted", zorder=1)
    for c in series.change_points:
        color = "#c0392b" if c.ratio > 1 else "#27ae60"
        ax.axvline(c.index - 0.5, color=color, ls="--", lw=1.2, zorder=1)
        ax.annotate(
            f"{(c.ratio - 1) * 100:+.1f}%{'' if c.confirmed else ' (new)'}",
            (c.index - 0.5, ax.get_ylim()[1]),
            xytext=(3, -12),
            textcoords="offset points",
            color=color,
            fontsize=8,
        )
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

    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>parbench history: {html.escape(model)}"
        "</title><style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}</style></head><body>",
        f"<h1>Latency history: {html.escape(model)}</h1>",
    ]
    for s, png in zip(series, pngs, strict=True):
        data = base64.b64encode(png.read_bytes()).decode()
        parts.append(f"<h2>{html.escape(s.variant)} · {html.escape(s.size)}</h2>")
        parts.append(
            f"<img alt='latency of {html.escape(s.variant)} at {html.escape(s.size)} over nights' "
            f"src='data:image/png;base64,{data}'>"
        )
        if s.change_points:
            parts.append(
                "<table><tr><th>first night</th><th>before ms</th><th>after ms</th><th>change</th>"
                "<th>p</th><th>nights since</th><th>status</th></tr>"
            )
            for c in s.change_points:
                parts.append(
                    f"<tr><td>{html.escape(c.label)}</td><td>{c.before:.3f}</td><td>{c.after:.3f}</td>"
                    f"<td>{(c.ratio - 1) * 100:+.1f}%</td><td>{c.p_value:.3f}</td>"
                    f"<td>{c.nights_after}</td><td>{'confirmed' if c.confirmed else 'new'}</td></tr>"
                )
            parts.append("</table>")
        else:
            parts.append(f"<p>No change point over {len(s.centers)} nights.</p>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path
