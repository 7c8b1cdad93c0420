"""`parbench schema`: JSON Schemas of every record parbench writes or reads."""

from __future__ import annotations

from pathlib import Path

import click

from parbench.records.schema import write_schemas


@click.command("schema")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("docs/schemas"),
    show_default=True,
    help="folder for the *.schema.json files",
)
def schema_command(out_dir: Path) -> None:
    """Write the JSON Schema of every record (parity record, benchmark document and extra_info,
    device run and results, fixture manifest, user model entry)."""
    for path in write_schemas(out_dir):
        click.echo(f"wrote {path}")
