"""`parbench serve`: the collector service for devices."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import click
from click.core import ParameterSource

from parbench.cli import options
from parbench.collector.app import API_PREFIX, DEFAULT_MAX_BODY_MB, create_app
from parbench.collector.guard import check_token, is_loopback
from parbench.errors import ParbenchError
from parbench.records.device import COLLECTOR_PORT

KEEP_ALIVE_S = 5


def _raise_open_file_limit() -> int:
    """Raise the soft limit on open files to the hard one (macOS starts at 256); the soft limit."""
    try:
        import resource
    except ImportError:  # Windows
        return 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 10240)
    for target in (want, 10240):
        if soft >= target:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
            break
        except (ValueError, OSError):
            continue
    return soft


def _read_token_file(path: str) -> str:
    lines = Path(path).read_text(encoding="utf-8").strip().splitlines()
    if not lines or not lines[0].strip():
        raise click.BadParameter(
            f"{path} is empty: write the token on its first line", param_hint="--token-file"
        )
    return lines[0].strip()


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@options.port("--port", COLLECTOR_PORT, lowest=0)
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
    help="bearer token devices must send; prefer --token-file or the environment variable, since a "
    "command line is visible to every local user (default: a random one, printed at start)",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False),
    help="file whose first line is the bearer token",
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
    "--max-connections",
    default=256,
    show_default=True,
    type=click.IntRange(8, 100_000),
    help="open connections and requests served at once; over it, new requests get 503",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@click.pass_context
def serve_command(
    ctx: click.Context,
    host: str,
    port: int,
    store_path: str,
    token: str | None,
    token_file: str | None,
    fixtures_dir: str | None,
    cache_dir: str | None,
    max_body_mb: int,
    max_connections: int,
    log_level: str,
) -> None:
    """Run the collector that device runners talk to (API: docs/collector-api.md)."""
    import uvicorn

    source = ctx.get_parameter_source("token")
    if token_file is not None:
        if token is not None and source == ParameterSource.COMMANDLINE:
            raise click.UsageError("give the token with --token or --token-file, not both")
        token = _read_token_file(token_file)
        source = None
    generated = token is None
    if generated:
        token = secrets.token_urlsafe(24)
    try:
        check_token(token, host)
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
    if generated:
        click.echo(f"token: {token}")
    else:
        fingerprint = hashlib.sha256(token.encode()).hexdigest()[:12]
        click.echo(f"token: given ({len(token)} characters, sha256 {fingerprint}...)")
    if source == ParameterSource.COMMANDLINE:
        click.echo(
            "warning: a --token on the command line is visible to every local user (ps); "
            "use --token-file or PARBENCH_COLLECTOR_TOKEN",
            err=True,
        )
    if not is_loopback(host):
        click.echo(
            "note: plain HTTP; the token and results cross the network unencrypted "
            "(docs/collector.md: running the collector on a lab network)",
            err=True,
        )
    soft = _raise_open_file_limit()
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        limit_concurrency=max(8, min(max_connections, soft - 64)),
        timeout_keep_alive=KEEP_ALIVE_S,
    )
