"""Plots: latency against input size, one line per form (inline SVG)."""

from __future__ import annotations

import html
import io
import re

import numpy as np
import pandas as pd

from parbench.report.tables import ModelTable


def _svg_plot(t: ModelTable, summary: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = summary[(summary["model"] == t.model) & summary["median_ms"].notna()]
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=100)
    try:
        cmap = plt.get_cmap("tab10")
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
    finally:
        plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # drop the XML declaration and DOCTYPE
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    return svg.replace(
        "<svg ", f'<svg role="img" aria-label="{html.escape(t.model)} latency vs input size" ', 1
    )
