"""Plots (matplotlib, Agg): latency against input size, one line per form (inline SVG for
report.html), and a benchmark's history over nights (PNG)."""

from __future__ import annotations

import html
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from parbench.report.tables import ModelTable

if TYPE_CHECKING:
    from parbench.report.history import Series


def latency_svg(t: ModelTable, summary: pd.DataFrame) -> str:
    """One model's median latency against input size, a line per form (device columns dashed),
    IQR as error bars; an ``<svg>`` element to inline in HTML."""
    # Labels are device names: never parse them as mathtext ('iPhone $\\x$' would fail the report).
    with matplotlib.rc_context({"text.parse_math": False}):
        return _latency_svg(t, summary)


def _latency_svg(t: ModelTable, summary: pd.DataFrame) -> str:
    sub = summary[(summary["model"] == t.model) & summary["median_ms"].notna()]
    fig = Figure(figsize=(7.5, 3.8), dpi=100)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["tab10"]
    forms = list(t.display.index)
    for i, form in enumerate(forms):
        fr = sub[sub["form"] == form]
        for kind, dev in fr[["kind", "device"]].drop_duplicates().itertuples(index=False):
            g = fr[(fr["kind"] == kind) & ((fr["device"] == dev) if kind == "device" else True)]
            g = g.sort_values("size")
            x = g["size"].to_numpy(dtype=float)
            y = g["median_ms"].to_numpy(dtype=float)
            lo = y - g["q1_ms"].to_numpy(dtype=float)
            hi = g["q3_ms"].to_numpy(dtype=float) - y
            label = form if kind == "host" else f"{form} · {dev}"
            ax.errorbar(
                x,
                y,
                yerr=[np.maximum(lo, 0), np.maximum(hi, 0)],
                label=label,
                color=cmap(i % 10),
                marker="o" if kind == "host" else "s",
                linestyle="-" if kind == "host" else "--",
                capsize=3,
                markersize=4,
                linewidth=1.5,
            )
    sizes = sorted(sub["size"].unique())
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlabel("input size (px)")
    ax.set_ylabel("median latency (ms)")
    y = sub["median_ms"].to_numpy(dtype=float)
    if y.size and y.min() > 0 and y.max() / y.min() > 20:
        ax.set_yscale("log")
    ax.set_title(f"{t.model}: latency vs input size (bars: IQR)", fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": t.model}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML declaration and DOCTYPE
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    return svg.replace(
        "<svg ", f'<svg role="img" aria-label="{html.escape(t.model)} latency vs input size" ', 1
    )


def plot_series(series: Series, path: Path) -> Path:
    """Latency over nights: every run as a dot, night medians as a line, change points marked."""
    fig = Figure(figsize=(9, 3.6), dpi=110)
    ax = fig.subplots()
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
    return path
