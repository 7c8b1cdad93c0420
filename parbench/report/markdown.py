"""latency.md: a table per model and the parity overview (DataFrame.to_markdown)."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from parbench.report.divergence import divergence_lines
from parbench.report.tables import Report, _variant_rank, parity_by_form


def _parity_matrix(parity: pd.DataFrame) -> pd.DataFrame:
    """form x model -> short verdict."""
    pf = parity_by_form(parity)
    forms = sorted(pf["variant"].unique(), key=_variant_rank)
    models = sorted(pf["model"].unique())
    m = pd.DataFrame("", index=pd.Index(forms, name="form"), columns=models)
    for _, r in pf.iterrows():
        m.loc[r["variant"], r["model"]] = r["short"]
    return m


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _md_cell(value: object) -> str:
    """A table cell: HTML-escaped (Markdown renders raw HTML), no control characters, no '|'."""
    text = html.escape(_CONTROL.sub(" ", str(value)), quote=False)
    return text.replace("|", "\\|")


def _md_table(df: pd.DataFrame, index_name: str, right: Sequence[str] = ()) -> str:
    """GitHub Markdown table of ``df`` and its index; ``right``: columns aligned right (numbers)."""
    cells = df.rename_axis(index_name).reset_index()
    align = ["right" if c in right else "left" for c in cells.columns]
    cells = cells.map(_md_cell).rename(columns=_md_cell)
    return cells.to_markdown(index=False, colalign=align, disable_numparse=True)


def _sources_lines(rep: Report) -> list[str]:
    lines = [f"Generated {rep.generated_utc}."]
    for m in rep.machines:
        info = m["machine_info"]
        cpu = (info.get("cpu") or {}).get("brand_raw") or info.get("processor") or "?"
        lines.append(
            f"Bench: {m['file']} ({m['datetime'] or '?'}; {cpu}; "
            f"{info.get('system', '')} {info.get('release', '')}; Python {info.get('python_version', '?')})."
        )
    for p in rep.parity_files:
        lines.append(f"Parity: {p}.")
    if rep.store is not None:
        lines.append(f"Device results: {rep.store}.")
    return lines


CELL_LEGEND = (
    "Cells: median ms ±IQR (q3−q1) of every timed round (runs pooled) · speed-up vs eager "
    "in the same column. Load ms: median over sizes; first run ms and artifact MB: range "
    "over sizes. Peak RSS MB: the process's peak resident memory while the case loaded and ran "
    "(in brackets its rise over the case's start), largest over sizes. Parity: worst verdict "
    "over sizes (@ the sizes that have it)."
)


def write_markdown(rep: Report, path: Path) -> Path:
    out = ["# parbench latency report", "", *[f"- {s}" for s in _sources_lines(rep)], "", CELL_LEGEND, ""]
    for t in rep.tables:
        right = [c for c in t.display.columns if c != "parity"]
        out += [f"## {t.model}", "", _md_table(t.display, "form", right), ""]
    if not rep.parity.empty:
        out += ["## Parity overview", "", _md_table(_parity_matrix(rep.parity), "form"), ""]
        out += divergence_lines(rep.parity)
    for n in rep.notes:
        out.append(f"> note: {n}")
    path.write_text("\n".join(out).rstrip() + "\n")
    return path
