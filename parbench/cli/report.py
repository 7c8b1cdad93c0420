"""`parbench report`: latency and parity tables (Markdown, CSV, HTML with plots)."""

from __future__ import annotations

from pathlib import Path

import click

from parbench.cli import options
from parbench.errors import ReportError
from parbench.report.build import build_report
from parbench.report.tables import DEFAULT_REPORTS_DIR


@click.command("report")
@click.argument("results", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_REPORTS_DIR,
    show_default=True,
    help="Folder for latency.md, latency.csv and report.html.",
)
@options.store("History store (SQLite); its device results become their own columns.")
@click.option(
    "--reports-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_REPORTS_DIR,
    show_default=True,
    help="Where to look for the newest results when none are named.",
)
def report_command(results: tuple[Path, ...], out_dir: Path, store: Path | None, reports_dir: Path) -> None:
    """Latency and parity tables (Markdown, CSV, HTML with plots) from bench JSON and parity
    JSON lines. With no RESULTS: the newest reports/bench/*.json and reports/parity/*.jsonl."""
    try:
        outputs = build_report(results, out_dir, reports_dir=reports_dir, store=store)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from exc
    rep = outputs.report
    for p in rep.bench_files:
        click.echo(f"bench:  {p}")
    for p in rep.parity_files:
        click.echo(f"parity: {p}")
    for note in rep.notes:
        click.echo(f"note: {note}", err=True)
    n_forms = sum(len(t.display) for t in rep.tables)
    click.echo(f"{len(rep.tables)} model(s), {n_forms} form row(s)")
    for p in (outputs.markdown, outputs.csv, outputs.html):
        click.echo(f"wrote {p}")
