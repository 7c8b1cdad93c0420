"""HTML pages from the jinja2 templates in ``templates/`` (autoescaped): report.html, one
self-contained page (no network) with the tables, inline SVG plots and the parity heatmap; and
the history page of one model, its PNG plots embedded."""

from __future__ import annotations

import base64
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import pandas as pd
from markupsafe import Markup

from parbench.report.divergence import divergence_views
from parbench.report.markdown import CELL_LEGEND, _sources_lines
from parbench.report.plots import latency_svg
from parbench.report.tables import (
    VERDICT_COLORS,
    VERDICT_MEANING,
    ModelTable,
    Report,
    _variant_rank,
    parity_by_form,
)

if TYPE_CHECKING:
    from parbench.report.history import Series


@functools.cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("parbench.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _cell_title(form: str, column: str, r: dict[str, Any]) -> str:
    if r.get("median_ms") is not None and not pd.isna(r.get("median_ms")):
        return (
            f"{form} at {column}: median {r['median_ms']:.4g} ms, q1 {r['q1_ms']:.4g}, "
            f"q3 {r['q3_ms']:.4g}, {r['n_samples']} samples over {r['runs']} run(s)"
            + (f", executor {r['executor']}" if r.get("executor") else "")
        )
    return str(r["error"]) if r.get("error") else ""


def _table_view(t: ModelTable, summary: pd.DataFrame) -> dict[str, Any]:
    rows = []
    for form, row in t.display.iterrows():
        cells = []
        for c in t.display.columns:
            text = str(row[c])
            timed = (form, c) in t.cells
            main, _, rest = text.partition(" ") if timed else (text, "", "")
            cells.append(
                {
                    "cls": f"v-{t.verdicts.get(form, 'none')}" if c == "parity" else "",
                    "title": _cell_title(form, c, t.cells[(form, c)]) if timed else "",
                    "main": main,  # the median on top, its spread and speed-up below
                    "rest": rest,
                }
            )
        rows.append({"form": form, "cells": cells})
    svg = Markup(latency_svg(t, summary))  # matplotlib's own SVG: labels are escaped in it
    return {"model": t.model, "columns": list(t.display.columns), "rows": rows, "svg": svg}


def _heatmap_view(parity: pd.DataFrame) -> dict[str, Any]:
    pf = parity_by_form(parity)
    forms = sorted(pf["variant"].unique(), key=_variant_rank)
    models = sorted(pf["model"].unique())
    index = {(r["variant"], r["model"]): r for _, r in pf.iterrows()}
    rows = []
    for form in forms:
        cells = []
        for model in models:
            r = index.get((form, model))
            verdict = r["verdict"] if r is not None else "none"
            cells.append(
                {
                    "verdict": verdict,
                    "color": VERDICT_COLORS.get(verdict, VERDICT_COLORS["none"]),
                    "title": f"{model} / {form}: {r['per_size']}\n{r['detail']}"
                    if r is not None
                    else f"{model} / {form}: no result",
                    "text": r["short"] if r is not None else "–",
                }
            )
        rows.append({"form": form, "cells": cells})
    legend = [
        {"verdict": v, "color": VERDICT_COLORS[v], "meaning": VERDICT_MEANING[v]}
        for v in ("pass", "xfail", "fail", "error", "skip", "none")
    ]
    return {"models": models, "rows": rows, "legend": legend}


def write_html(rep: Report, path: Path) -> Path:
    template = _env().get_template("report.html.j2")
    page = template.render(
        sources=_sources_lines(rep),
        heatmap=_heatmap_view(rep.parity) if not rep.parity.empty else None,
        cell_legend=CELL_LEGEND,
        tables=[_table_view(t, rep.summary) for t in rep.tables],
        divergences=[{**v, "svg": Markup(v["svg"])} for v in divergence_views(rep.parity)],
        notes=rep.notes,
    )
    path.write_text(page, encoding="utf-8")
    return path


def write_history_html(model: str, series: Sequence[Series], pngs: Sequence[Path], path: Path) -> Path:
    views = [
        {
            "variant": s.variant,
            "size": s.size,
            "png": base64.b64encode(png.read_bytes()).decode(),
            "change_points": s.change_points,
            "centers": s.centers,
        }
        for s, png in zip(series, pngs, strict=True)
    ]
    template = _env().get_template("history.html.j2")
    page = template.render(model=model, series=views)
    path.write_text(page, encoding="utf-8")
    return path
