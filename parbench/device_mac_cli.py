"""`parbench device run`, `relay`, `check-pte` and `table`: the Mac side of the iPhone runner
(parbench/device_mac.py), added to the `parbench device` group."""

from __future__ import annotations

import datetime as dt
import json
import platform
import secrets
import subprocess
import sys
from pathlib import Path

import click

from parbench import device_mac
from parbench.device import device_group

__all__ = ["device_group"]


def _mac_host() -> str | None:
    """The name the phone reaches this Mac by on the local network (<LocalHostName>.local)."""
    if platform.system() != "Darwin":
        return None
    proc = subprocess.run(["scutil", "--get", "LocalHostName"], capture_output=True, text=True)
    return f"{proc.stdout.strip()}.local" if proc.returncode == 0 and proc.stdout.strip() else None


@device_group.command("run")
@click.option(
    "--udid",
    required=True,
    help="the phone's UDID, as `xcrun xctrace list devices` shows it (or devicectl's JSON "
    "hardwareProperties.udid; not the CoreDevice identifier)",
)
@click.option(
    "--team", envvar="PARBENCH_TEAM", help="Apple development team id used to sign (env PARBENCH_TEAM)"
)
@click.option("--tier", type=click.Choice(["smoke", "default", "full"]), default="smoke", show_default=True)
@click.option(
    "--forms",
    default=",".join(device_mac.DEFAULT_FORMS),
    show_default=True,
    help="deployment forms to export and run on the phone (lite and coreml_* run in the LibTorch-Lite "
    "bundle, executorch_* in the ExecuTorch bundle)",
)
@click.option("--bundle-prefix", help="bundle id prefix your team can register (default dev.parbench.<team>)")
@click.option(
    "--network",
    "use_network",
    is_flag=True,
    help="reach the collector over the local network instead of USB (asks for Local Network access "
    "on the phone; the Mac's firewall must let python3 accept connections)",
)
@click.option(
    "--mac-host",
    help="network mode: the Mac's name or IP as the phone reaches it (default <LocalHostName>.local)",
)
@click.option("--port", default=8765, show_default=True, help="collector port on the Mac")
@click.option(
    "--device-port", default=8766, show_default=True, help="USB mode: port the test listens on, on the phone"
)
@click.option("--relay-port", default=8767, show_default=True, help="USB mode: iproxy's local port")
@click.option("--rounds", default=20, show_default=True, type=click.IntRange(1))
@click.option("--store", "store_path", default="results.sqlite", show_default=True)
@click.option("--fixtures", "fixtures_dir", help="fixture set folder (default fixtures/device-<tier>)")
@click.option(
    "--executorch-branch", help="swiftpm-<version> branch of the ExecuTorch package (default: project.yml's)"
)
@click.option("--token", help="collector token (default: a new random one)")
@click.option("--run-id", help="run id prefix; each bundle's run is <prefix>-lite / <prefix>-executorch")
@click.option("--dry-run", is_flag=True, help="print every command instead of running them (works on any OS)")
def run_command(
    udid: str,
    team: str | None,
    tier: str,
    forms: str,
    bundle_prefix: str | None,
    use_network: bool,
    mac_host: str | None,
    port: int,
    device_port: int,
    relay_port: int,
    rounds: int,
    store_path: str,
    fixtures_dir: str | None,
    executorch_branch: str | None,
    token: str | None,
    run_id: str | None,
    dry_run: bool,
) -> None:
    """Everything from fixtures to the device latency table, for both test bundles: build the
    fixture set, check it against the app's runtimes, generate the Xcode project and install the
    pods, build both bundles, start the collector (and the USB relay), run the tests on the phone,
    import the .xcresult bundles and print the results."""
    token = token or secrets.token_urlsafe(16)
    run_id = run_id or "ios-" + dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    opts = device_mac.RunOptions(
        udid=udid,
        token=token,
        run_id=run_id,
        team=team,
        tier=tier,
        forms=tuple(f for f in forms.split(",") if f),
        bundle_prefix=bundle_prefix,
        usb=not use_network,
        port=port,
        device_port=device_port,
        relay_port=relay_port,
        mac_host=mac_host or (_mac_host() if use_network else None),
        rounds=rounds,
        store=store_path,
        fixtures=fixtures_dir,
        executorch_branch=executorch_branch,
    )
    try:
        steps = device_mac.plan(opts)
    except device_mac.DeviceRunError as exc:
        raise click.ClickException(str(exc)) from exc
    mode = "USB" if opts.usb else f"network ({opts.mac_host}:{port})"
    click.echo(f"parbench device run: {len(steps)} steps, run id {run_id}, token {token}, {mode}")
    if dry_run:
        click.echo(device_mac.render_plan(steps))
        return
    if platform.system() != "Darwin":
        raise click.ClickException(
            "parbench device run needs macOS with Xcode; --dry-run prints the steps anywhere"
        )
    if not team:
        raise click.ClickException(
            "--team is needed to sign the app for a device: your team id is in Xcode > "
            "Settings > Accounts (or developer.apple.com > Membership)"
        )
    try:
        device_mac.execute(steps, echo=click.echo)
    except device_mac.DeviceRunError as exc:
        raise click.ClickException(str(exc)) from exc


@device_group.command("relay")
@click.option("--udid", required=True, help="the phone's UDID (xcrun xctrace list devices)")
@click.option(
    "--device-port", default=8766, show_default=True, help="the port the test listens on, on the phone"
)
@click.option("--local-port", default=8767, show_default=True, help="iproxy's port on this Mac")
@click.option("--collector", default="http://127.0.0.1:8765", show_default=True, help="collector base URL")
@click.option("--iproxy", default="iproxy", show_default=True, help="the iproxy program (libimobiledevice)")
def relay_command(udid: str, device_port: int, local_port: int, collector: str, iproxy: str) -> None:
    """USB mode: carry the phone's requests to the collector. Runs iproxy LOCAL:DEVICE, dials the
    test's listener on the phone through it, and forwards every request; Ctrl-C stops it."""
    try:
        relay = device_mac.run_relay(
            udid, device_port, local_port, collector, iproxy=iproxy, log=lambda m: click.echo(m, err=True)
        )
    except device_mac.DeviceRunError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"relay stopped: {relay.exchanges} requests relayed over {relay.connections} connection(s)")


@device_group.command("check-pte")
@click.argument("fixtures_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--app-executorch",
    help="the ExecuTorch release the app links (default: the project's, Config/ExecuTorchTests.xcconfig)",
)
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON")
def check_pte_command(fixtures_dir: Path, app_executorch: str | None, as_json: bool) -> None:
    """Will the app's ExecuTorch load the set's .pte files? Fails on a program it cannot read;
    warns when a .pte was written by a newer ExecuTorch than the app's."""
    try:
        version = app_executorch or device_mac.app_runtimes().executorch
        rows = device_mac.pte_rows(fixtures_dir, version)
    except device_mac.DeviceRunError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        for r in rows:
            label = {"newer": "WARNING", "unknown": "warning"}.get(r["status"], r["status"])
            click.echo(
                f"{label:<10} {r['model']}-{r['variant']} {r['path']}: exporter {r['exporter'] or '?'}, "
                f"app {r['app_executorch']}" + (f" -- {r['reason']}" if r["reason"] else ""),
                err=r["status"] != "ok",
            )
        if not rows:
            click.echo("no .pte artifacts in this fixture set")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        raise click.ClickException(f"{len(failed)} .pte artifact(s) will not load in ExecuTorch {version}")


@device_group.command("table")
@click.option(
    "--store",
    "store_path",
    default="results.sqlite",
    show_default=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option("--run-id", "run_ids", multiple=True, required=True, help="a run to show (repeatable)")
def table_command(store_path: Path, run_ids: tuple[str, ...]) -> None:
    """The device latency table: one row per result of each run (median, first run, load, cosine)."""
    n = device_mac.device_table(store_path, run_ids, sys.stdout)
    if n == 0:
        raise click.ClickException(f"no results of {', '.join(run_ids)} in {store_path}")
