"""Localised parity failures in the report: for each case whose record carries a localisation
(``first_divergence``), the first diverging layer and a plot of SNR along the network."""

from __future__ import annotations

import html
import io
import re
from typing import Any

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from parbench.records.parity import FirstDivergence


def snr_svg(title: str, fd: FirstDivergence) -> str:
    """SNR against eager of every compared layer, in eager order, with the family's per-layer limit
    and the first flagged layer marked; an ``<svg>`` element to inline in HTML."""
    pts = [p for p in fd.profile if p.snr_db is not None]
    fig = Figure(figsize=(7.5, 3.2), dpi=100)
    ax = fig.subplots()
    xs = [p.order for p in pts]
    ys = [min(p.snr_db, 120.0) for p in pts]  # identical values cap at 200 dB: keep the scale readable
    ax.plot(xs, ys, color="#1f4e79", lw=1.4, marker="o", ms=2.5, label="SNR vs eager")
    bad = [(p.order, min(p.snr_db, 120.0)) for p in pts if p.flagged]
    if bad:
        ax.scatter(*zip(*bad, strict=True), color="#b0302c", s=12, zorder=3, label="flagged")
    limit = fd.thresholds.get("snr_db")
    if limit is not None:
        ax.axhline(limit, color="#b0302c", ls="--", lw=1, label=f"limit {limit:g} dB")
    first = next((p for p in pts if p.layer == fd.layer), None)
    if first is not None:
        ax.axvline(first.order, color="#9a6a00", ls=":", lw=1.2)
        ax.annotate(
            first.layer,
            (first.order, ax.get_ylim()[1]),
            xytext=(3, -12),
            textcoords="offset points",
            fontsize=8,
            color="#9a6a00",
        )
    ax.set_xlabel("layer (position in the eager forward)")
    ax.set_ylabel("SNR (dB)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper right", frameon=False)
    fig.tight_layout()
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": title}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    return svg.replace(
        "<svg ", f'<svg role="img" aria-label="{html.escape(title)}: SNR along the network" ', 1
    )


def summary(fd: FirstDivergence) -> str:
    if fd.status == "found":
        values = (
            f": SNR {fd.snr_db:.1f} dB, cosine {fd.cosine:.5f}" if fd.snr_db is not None and fd.cosine else ""
        )
        return f"first diverging layer {fd.layer} ({fd.kind}){values}"
    if fd.status == "none":
        return f"no layer over the per-layer limits ({fd.reason})"
    return f"not localised: {fd.reason}"


def divergence_views(parity: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per localised case (with its plot when it has an SNR profile), failures first."""
    if parity.empty or "first_divergence" not in parity:
        return []
    views = []
    for _, r in parity.iterrows():
        fd = r["first_divergence"]
        if fd is None or (isinstance(fd, float) and pd.isna(fd)):
            continue
        title = f"{r['model']} · {r['variant']} · {r['size']} px"
        views.append(
            {
                "title": title,
                "verdict": r["verdict"],
                "summary": summary(fd),
                "onset": fd.onset,
                "largest_drop": fd.largest_drop,
                "how": f"{fd.compared} of {fd.layers} layers compared; {fd.identity}; {fd.tool}"
                if fd.status != "not_run"
                else "",
                "svg": snr_svg(title, fd) if fd.profile else "",
            }
        )
    order = {"fail": 0, "error": 1, "xfail": 2}
    return sorted(views, key=lambda v: order.get(v["verdict"], 3))


def divergence_lines(parity: pd.DataFrame) -> list[str]:
    """The localised cases as a Markdown section (no plots); empty when there are none."""
    views = divergence_views(parity)
    if not views:
        return []
    out = ["## Where failing forms depart from eager", ""]
    for v in views:
        onset = f"; {v['onset']}" if v["onset"] else ""
        out.append(f"- {v['title']} ({v['verdict']}): {v['summary']}{onset}")
    return [*out, ""]
