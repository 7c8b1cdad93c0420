"""`parbench serve`: the collector service for devices."""

from __future__ import annotations

import secrets
from pathlib import Path

import click

from parbench.collector.app import API_PREFIX, DEFAULT_MAX_BODY_MB, create_app
from parbench.errors import ParbenchError


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--store",
    "store_path",
    default="results.sqlite",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="SQLite results store (created if missing)",
)
@click.option(
    "--token",
    envvar="PARBENCH_COLLECTOR_TOKEN",
    help="bearer token devices must send (default: a random one, printed at start)",
)
@click.option(
    "--fixtures",
    "fixtures_dir",
    type=click.Path(file_okay=False, exists=True),
    help="fixture set folder to serve (its manifest.json); results are then checked against it",
)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="private folder (mode 0700, yours) for zips of folder artifacts "
    "[default: $XDG_CACHE_HOME/parbench/collector or ~/.cache/parbench/collector]",
)
@click.option(
    "--max-body-mb",
    default=DEFAULT_MAX_BODY_MB,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="largest request body accepted",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def serve_command(
    host: str,
    port: int,
    store_path: str,
    token: str | None,
    fixtures_dir: str | None,
    cache_dir: str | None,
    max_body_mb: int,
    log_level: str,
) -> None:
    """Run the collector that device runners talk to (API: docs/collector-api.md)."""
    import uvicorn

    if token is None:
        token = secrets.token_urlsafe(24)
    try:
        app = create_app(
            store_path, token, fixtures_dir, max_body_bytes=max_body_mb << 20, cache_dir=cache_dir
        )
    except (ParbenchError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"parbench collector: http://{shown}:{port}{API_PREFIX}  (store {Path(store_path).resolve()}"
        + (f", fixtures {Path(fixtures_dir).resolve()}" if fixtures_dir else ", no fixtures")
        + ")"
    )
    click.echo(f"token: {token}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo("note: plain HTTP; the token and results cross the network unencrypted", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
