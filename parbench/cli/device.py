"""`parbench device ...`: build the device runner's C++ core, replay fixtures against a collector,
import iPhone results, check artifacts against the app's runtimes, and on a Mac run the iPhone
runner end to end (`run`, with the USB `relay` and the results `table`)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from parbench.cli import options
from parbench.device import artifacts, mac
from parbench.device.build import DEFAULT_BUILD_DIR, REPO_ROOT, build_core, run_core_tests
from parbench.device.relay import run_relay
from parbench.device.replay import format_rows, run_replay, summary_rows, tier_models
from parbench.diagnose.lite_bytecode import DEFAULT_RUNTIME, RUNTIMES, check_and_backport
from parbench.diagnose.pte_runtime import pte_rows
from parbench.errors import DeviceBuildError, DeviceError, ParbenchError
from parbench.history.ingest import import_results
from parbench.records import manifest as records_manifest
from parbench.records.device import COLLECTOR_PORT

# ---------------------------------------------------------------------------------------------
# CLI


@click.group("device")
def device_group() -> None:
    """The device runner: build its C++ core, replay fixtures against a collector, import
    iPhone results, check artifacts against the app's runtimes, run the iPhone runner from a Mac."""


@device_group.command("build")
@click.option(
    "--build-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"build folder (default {DEFAULT_BUILD_DIR.relative_to(REPO_ROOT)})",
)
@click.option("--reconfigure", is_flag=True, help="run cmake's configure step again")
@click.option("--test", "run_tests", is_flag=True, help="also run the core's C++ unit tests (ctest)")
def build_command(build_dir: Path | None, reconfigure: bool, run_tests: bool) -> None:
    """Configure and build device_runner/core (cmake + ninja); an up-to-date build is reused."""
    try:
        res = build_core(build_dir, reconfigure=reconfigure)
    except DeviceBuildError as exc:
        raise click.ClickException(str(exc)) from exc
    state = "built" if res.rebuilt else "up to date"
    click.echo(f"{res.binary} ({state}, {res.seconds:.1f} s)")
    if run_tests:
        proc = run_core_tests(res)
        click.echo(proc.stdout.rstrip())
        if proc.returncode != 0:
            raise click.ClickException("the core's unit tests failed (output above)")


def _csv(value: str | None) -> list[str]:
    return [v for v in (value or "").split(",") if v]


@device_group.command("replay")
@click.option(
    "--collector", required=True, help=f"collector base URL, e.g. http://127.0.0.1:{COLLECTOR_PORT}"
)
@click.option("--token", envvar="PARBENCH_TOKEN", required=True, help="bearer token (env PARBENCH_TOKEN)")
@click.option(
    "--tier",
    type=click.Choice(["smoke", "default", "full"]),
    default=None,
    help="replay this tier's models (those the collector serves)",
)
@click.option("--models", help="comma-separated models (default: every model served)")
@click.option(
    "--variants", help="comma-separated forms (default: every form the runner can run: lite, torchscript)"
)
@click.option("--sizes", help="comma-separated sizes")
@click.option("--rounds", default=10, show_default=True, type=click.IntRange(1))
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(0))
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1))
@click.option("--run-id", help="reuse a run id (default: a new one)")
@click.option("--commit", envvar="PARBENCH_COMMIT", help="commit recorded with the run")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="also keep the results JSON here"
)
@click.option(
    "--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="where fixtures are downloaded"
)
@click.option(
    "--binary",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="use this runner binary instead of building the core",
)
def replay_command(
    collector: str,
    token: str,
    tier: str | None,
    models: str | None,
    variants: str | None,
    sizes: str | None,
    rounds: int,
    warmup: int,
    threads: int,
    run_id: str | None,
    commit: str | None,
    out: Path | None,
    cache_dir: Path | None,
    binary: Path | None,
) -> None:
    """Replay the collector's fixture set with the C++ core (LibTorch) and post the results."""
    model_list = _csv(models)
    if tier and not model_list:
        import httpx

        wanted = tier_models(tier)
        try:
            resp = httpx.get(
                collector.rstrip("/") + "/api/v1/fixtures/manifest",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            resp.raise_for_status()
            served = set(resp.json().get("models", {}))
        except (httpx.HTTPError, ValueError) as exc:
            raise click.ClickException(
                f"could not read the collector's manifest at {collector}: {exc}"
            ) from exc
        model_list = [m for m in wanted if m in served]
        if not model_list:
            raise click.ClickException(
                f"the collector serves none of the {tier} tier's models "
                f"({', '.join(wanted)}); it serves: {', '.join(sorted(served)) or 'none'}"
            )
    if binary is None:
        try:
            res = build_core()
        except DeviceBuildError as exc:
            raise click.ClickException(str(exc)) from exc
        if res.rebuilt:
            click.echo(f"built {res.binary} in {res.seconds:.1f} s", err=True)
        binary = res.binary
    try:
        size_list = [int(s) for s in _csv(sizes)]
    except ValueError as exc:
        raise click.BadParameter(f"sizes must be integers: {sizes}") from exc
    outcome = run_replay(
        binary,
        token=token,
        collector=collector,
        models=model_list,
        variants=_csv(variants),
        sizes=size_list,
        rounds=rounds,
        warmup=warmup,
        threads=threads,
        run_id=run_id,
        commit=commit,
        out=out,
        cache_dir=cache_dir,
        on_line=lambda line: click.echo(line, err=True),
    )
    if outcome.results:
        click.echo(format_rows(summary_rows(outcome.results)))
    click.echo(f"run {outcome.run_id or '?'}: {len(outcome.results)} results in {outcome.seconds:.1f} s")
    if outcome.returncode == 1:
        raise click.ClickException("some cases failed (their error is in the table and stored with the run)")
    if outcome.returncode != 0:
        meaning = {2: "bad usage or fixture set", 3: "the collector refused or could not be reached"}
        raise click.ClickException(
            f"the runner stopped: {meaning.get(outcome.returncode, 'crashed')} "
            f"(exit {outcome.returncode}); see its message above"
        )


def _store_option(must_exist: bool = False) -> Any:
    """``--store`` of the device commands: the results store, results.sqlite by default."""
    return click.option(
        "--store",
        "store_path",
        default="results.sqlite",
        show_default=True,
        type=click.Path(exists=must_exist, dir_okay=False, path_type=Path),
    )


@device_group.command("import")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@_store_option()
@click.option("--no-complete", is_flag=True, help="leave imported runs open")
def import_command(source: Path, store_path: Path, no_complete: bool) -> None:
    """Load device results into the store: SOURCE is an .xcresult bundle (macOS, needs xcrun),
    a folder of its exported attachments, or a runner results JSON file."""
    try:
        reports = import_results(source, store_path, complete=not no_complete)
    except DeviceError as exc:
        raise click.ClickException(str(exc)) from exc
    for r in reports:
        click.echo(
            f"run {r.run_id}: {'new' if r.created else 'known'}, {r.stored} results stored, "
            f"{r.duplicates} already there"
        )


@device_group.command("export")
@_store_option()
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="folder for the result documents (<run_id>.json)",
)
@click.option(
    "--since-hours",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="only runs created this recently",
)
@click.option("--run-id", "run_ids", multiple=True, help="only this run (repeatable)")
def export_command(
    store_path: Path, out_dir: Path, since_hours: float | None, run_ids: tuple[str, ...]
) -> None:
    """Write the store's complete device runs as result documents, the files `parbench device
    import` reads on another machine (the lab Mac uploads them; the nightly fetches them)."""
    try:
        written = artifacts.export_results(store_path, out_dir, since_hours=since_hours, run_ids=run_ids)
    except DeviceError as exc:
        raise click.ClickException(str(exc)) from exc
    for path in written:
        click.echo(f"wrote {path}")
    if not written:
        window = f" created in the last {since_hours:g} h" if since_hours is not None else ""
        raise click.ClickException(f"{store_path} holds no complete device run{window}: nothing to export")


@device_group.command("fetch")
@click.option(
    "--repo",
    default=lambda: os.environ.get("GITHUB_REPOSITORY", ""),
    show_default="$GITHUB_REPOSITORY",
    help="OWNER/NAME of the repository whose device workflow uploads the results",
)
@click.option("--artifact", default=artifacts.DEFAULT_ARTIFACT, show_default=True, help="artifact name")
@click.option(
    "--within",
    "within_hours",
    type=click.FloatRange(min=0, min_open=True),
    default=24,
    show_default=True,
    help="hours: artifacts created earlier are left",
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="folder for the downloaded zips (what `parbench device import` then reads)",
)
@click.option(
    "--api-url",
    default=lambda: os.environ.get("GITHUB_API_URL", artifacts.GITHUB_API),
    show_default="$GITHUB_API_URL or https://api.github.com",
)
def fetch_command(repo: str, artifact: str, within_hours: float, out_dir: Path, api_url: str) -> None:
    """Download the device workflow's result artifacts of the last hours (GitHub's REST API; token
    from GH_TOKEN or GITHUB_TOKEN). Without a repository (not on GitHub Actions, no --repo) there is
    nothing to fetch: a lab machine leaves result documents in the import folder itself."""
    if not repo:
        click.echo("no repository (--repo, or GITHUB_REPOSITORY on GitHub Actions): nothing fetched")
        return
    try:
        fetched = artifacts.fetch_artifacts(
            repo, artifacts.github_token(), out_dir, artifact, within_hours, api_url, echo=click.echo
        )
    except DeviceError as exc:
        raise click.ClickException(str(exc)) from exc
    documents = sum(f.documents for f in fetched)
    click.echo(f"fetched {len(fetched)} artifact(s), {documents} JSON file(s), into {out_dir}")


def _has_pte(fixtures_dir: Path) -> bool:
    manifest = records_manifest.read(fixtures_dir)
    return any(
        a.format == "pte" for m in manifest.models.values() for arts in m.artifacts.values() for a in arts
    )


def _print_ptl_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        bc = r.get("bytecode_version", "?")
        extra = f" (from bytecode {r['backported_from']})" if r["status"] == "backported" else ""
        click.echo(
            f"{r['status']:<10} {r['model']}-{r['variant']} {r['path']}: bytecode {bc}{extra}"
            + (f" -- {r['reason']}" if r["reason"] else "")
        )


def _print_pte_rows(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        label = {"newer": "WARNING", "unknown": "warning"}.get(r["status"], r["status"])
        click.echo(
            f"{label:<10} {r['model']}-{r['variant']} {r['path']}: exporter {r['exporter'] or '?'}, "
            f"app {r['app_executorch']}" + (f" -- {r['reason']}" if r["reason"] else "")
        )


@device_group.command("check")
@click.argument("fixtures_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--runtime",
    default=DEFAULT_RUNTIME,
    show_default=True,
    type=click.Choice(sorted(RUNTIMES)),
    help="the lite-interpreter runtime the app links",
)
@click.option(
    "--runtime-bytecode",
    type=click.IntRange(1),
    default=None,
    help="highest bytecode version the app's runtime loads (default: the runtime's own bound)",
)
@click.option("--no-backport", is_flag=True, help="only check; do not backport or change the manifest")
@click.option(
    "--app-executorch",
    help="the ExecuTorch release the app links (default: the iOS project's, Config/ExecuTorchTests.xcconfig)",
)
@click.option("--json", "as_json", is_flag=True, help='print the rows as JSON: {"ptl": [...], "pte": [...]}')
def check_command(
    fixtures_dir: Path,
    runtime: str,
    runtime_bytecode: int | None,
    no_backport: bool,
    app_executorch: str | None,
    as_json: bool,
) -> None:
    """Will the phone load it? Checks every .ptl artifact's bytecode against the app's LibTorch-Lite
    (backporting, and re-verifying, where needed), and every .pte against the app's ExecuTorch: a
    program it cannot read fails; one written by a newer ExecuTorch than the app's is a warning."""
    try:
        ptl = check_and_backport(fixtures_dir, runtime_bytecode, runtime=runtime, backport=not no_backport)
        pte: list[dict[str, Any]] = []
        if app_executorch or _has_pte(fixtures_dir):
            app_executorch = app_executorch or mac.app_runtimes().executorch
            pte = pte_rows(fixtures_dir, app_executorch)
    except ParbenchError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps({"ptl": ptl, "pte": pte}, indent=1))
    else:
        _print_ptl_rows(ptl)
        _print_pte_rows(pte)
        if not ptl and not pte:
            click.echo("no .ptl or .pte artifacts in this fixture set")
    problems = []
    if failed := [r for r in ptl if r["status"] == "failed"]:
        problems.append(
            f"{len(failed)} .ptl artifact(s) will not load in {runtime}"
            + (f" (bytecode <= {runtime_bytecode})" if runtime_bytecode else "")
        )
    if failed := [r for r in pte if r["status"] == "failed"]:
        problems.append(f"{len(failed)} .pte artifact(s) will not load in ExecuTorch {app_executorch}")
    if problems:
        raise click.ClickException("; ".join(problems))


# ---------------------------------------------------------------------------------------------
# the Mac side of the iPhone runner


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
    default=",".join(mac.DEFAULT_FORMS),
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
@options.port("--port", COLLECTOR_PORT, "collector port")
@options.port("--device-port", mac.DEVICE_PORT, "USB mode: port the test listens on, on the phone")
@options.port("--relay-port", mac.RELAY_PORT, "USB mode: iproxy's port")
@click.option("--rounds", default=20, show_default=True, type=click.IntRange(1))
@click.option("--store", "store_path", default="results.sqlite", show_default=True)
@click.option("--fixtures", "fixtures_dir", help="fixture set folder (default fixtures/device-<tier>)")
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
    opts = mac.RunOptions(
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
    )
    try:
        steps = mac.plan(opts)
    except ParbenchError as exc:
        raise click.ClickException(str(exc)) from exc
    mode = "USB" if opts.usb else f"network ({opts.mac_host}:{port})"
    click.echo(f"parbench device run: {len(steps)} steps, run id {run_id}, token {token}, {mode}")
    if dry_run:
        click.echo(mac.render_plan(steps))
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
        mac.execute(steps, echo=click.echo)
    except ParbenchError as exc:
        raise click.ClickException(str(exc)) from exc


@device_group.command("relay")
@click.option("--udid", required=True, help="the phone's UDID (xcrun xctrace list devices)")
@options.port("--device-port", mac.DEVICE_PORT, "the port the test listens on, on the phone")
@options.port("--local-port", mac.RELAY_PORT, "iproxy's port here")
@click.option(
    "--collector", default=f"http://127.0.0.1:{COLLECTOR_PORT}", show_default=True, help="collector base URL"
)
@click.option("--iproxy", default="iproxy", show_default=True, help="the iproxy program (libimobiledevice)")
def relay_command(udid: str, device_port: int, local_port: int, collector: str, iproxy: str) -> None:
    """USB mode: carry the phone's requests to the collector. Runs iproxy LOCAL:DEVICE, dials the
    test's listener on the phone through it, and forwards every request; Ctrl-C stops it."""
    try:
        relay = run_relay(
            udid, device_port, local_port, collector, iproxy=iproxy, log=lambda m: click.echo(m, err=True)
        )
    except ParbenchError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"relay stopped: {relay.exchanges} requests relayed over {relay.connections} connection(s)")


@device_group.command("table")
@_store_option(must_exist=True)
@click.option("--run-id", "run_ids", multiple=True, required=True, help="a run to show (repeatable)")
def table_command(store_path: Path, run_ids: tuple[str, ...]) -> None:
    """The device latency table: one row per result of each run (median, first run, load, cosine)."""
    try:
        shown = mac.device_table(store_path, run_ids, sys.stdout)
    except ParbenchError as exc:
        raise click.ClickException(str(exc)) from exc
    if shown == 0:
        raise click.ClickException(f"no results of {', '.join(run_ids)} in {store_path}")
