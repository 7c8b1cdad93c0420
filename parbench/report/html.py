"""report.html: one self-contained page (no network) with the tables, plots and the parity heatmap."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import pandas as pd

from parbench.report.markdown import CELL_LEGEND, _sources_lines
from parbench.report.plots import _svg_plot
from parbench.report.tables import (
    VERDICT_COLORS,
    VERDICT_MEANING,
    ModelTable,
    Report,
    _variant_rank,
    parity_by_form,
)


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _html_model_table(t: ModelTable) -> str:
    cols = list(t.display.columns)
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    rows = []
    for form, row in t.display.iterrows():
        tds = [f'<td class="form">{_e(form)}</td>']
        for c in cols:
            cls = ""
            title = ""
            if (form, c) in t.cells:
                r = t.cells[(form, c)]
                if r.get("median_ms") is not None and not pd.isna(r.get("median_ms")):
                    title = (
                        f"{form} at {c}: median {r['median_ms']:.4g} ms, q1 {r['q1_ms']:.4g}, "
                        f"q3 {r['q3_ms']:.4g}, {r['n_samples']} samples over {r['runs']} run(s)"
                        + (f", executor {r['executor']}" if r.get("executor") else "")
                    )
                elif r.get("error"):
                    title = str(r["error"])
            if c == "parity":
                cls = f' class="v-{_e(t.verdicts.get(form, "none"))}"'
            text = str(row[c])
            if (form, c) in t.cells and " " in text:  # median on top, spread and speed-up below
                main, rest = text.split(" ", 1)
                content = f'<span class="med">{_e(main)}</span><br><span class="spread">{_e(rest)}</span>'
            else:
                content = _e(text)
            title_attr = f' title="{_e(title)}"' if title else ""
            tds.append(f"<td{cls}{title_attr}>{content}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return (
        f'<table class="latency" data-model="{_e(t.model)}"><thead><tr><th class="form">form</th>{head}'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _html_heatmap(parity: pd.DataFrame) -> str:
    pf = parity_by_form(parity)
    forms = sorted(pf["variant"].unique(), key=_variant_rank)
    models = sorted(pf["model"].unique())
    index = {(r["variant"], r["model"]): r for _, r in pf.iterrows()}
    head = "".join(f"<th>{_e(m)}</th>" for m in models)
    rows = []
    for form in forms:
        tds = [f'<td class="form">{_e(form)}</td>']
        for model in models:
            r = index.get((form, model))
            verdict = r["verdict"] if r is not None else "none"
            color = VERDICT_COLORS.get(verdict, VERDICT_COLORS["none"])
            title = (
                f"{model} / {form}: {r['per_size']}\n{r['detail']}"
                if r is not None
                else f"{model} / {form}: no result"
            )
            tds.append(
                f'<td class="v-{_e(verdict)}" style="background:{color}" title="{_e(title)}">'
                f"{_e(r['short'] if r is not None else '–')}</td>"
            )
        rows.append("<tr>" + "".join(tds) + "</tr>")
    legend = "".join(
        f'<span class="swatch" style="background:{VERDICT_COLORS[v]}"></span>{_e(v)}: '
        f"{_e(VERDICT_MEANING[v])}"
        for v in ("pass", "xfail", "fail", "error", "skip", "none")
    )
    return (
        f'<table class="heat"><thead><tr><th class="form">form \\ model</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        f'<p class="legend">{legend}<br>Hover a cell for the verdict at each size and its metrics '
        "(worst output: cosine, max abs, relative L2, PSNR/SNR dB, top-1 agreement).</p>"
    )


def write_html(rep: Report, path: Path) -> Path:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>parbench report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>parbench: latency and parity</h1>",
        '<ul class="meta">' + "".join(f"<li>{_e(s)}</li>" for s in _sources_lines(rep)) + "</ul>",
    ]
    if not rep.parity.empty:
        parts += ['<h2 id="parity">Parity overview</h2>', _html_heatmap(rep.parity)]
    if rep.tables:
        parts.append(f'<p class="legend">{_e(CELL_LEGEND)}</p>')
    for t in rep.tables:
        parts += [
            f'<h2 id="model-{_e(t.model)}">{_e(t.model)}</h2>',
            f'<div class="scroll">{_html_model_table(t)}</div>',
            f'<div class="plot">{_svg_plot(t, rep.summary)}</div>',
        ]
    if rep.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in rep.notes) + "</ul>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts))
    return path


# -- HTML ---------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1200px;
color:#1d2430;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #dde1e6;
padding-bottom:4px}
.meta{color:#5b6470;font-size:12px;margin:0;padding-left:18px}
table{border-collapse:collapse;margin:8px 0 12px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d5d9de;padding:3px 7px;text-align:right;white-space:nowrap}
th{background:#f4f6f8;font-weight:600;white-space:normal;vertical-align:bottom}
.scroll{overflow-x:auto;max-width:100%}td.form,th.form{text-align:left}
td.v-pass{color:#1f7a3a}td.v-fail,td.v-error{color:#b0302c;font-weight:600}td.v-xfail{color:#9a6a00}
.legend{font-size:12px;color:#5b6470}
.heat td{width:90px;text-align:center;color:#fff;font-weight:600}.heat td.form{color:#1d2430;
text-align:left;font-weight:400}
.heat td.v-none{color:#8a9099;font-weight:400}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-1px;margin:0 4px 0 12px;
border:1px solid #c3c8cf}
.plot svg{max-width:100%;height:auto}
.notes{color:#8a4b00}
.med{font-weight:600}.spread{font-size:11px;color:#5b6470}
"""
