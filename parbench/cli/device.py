"""`parbench device ...`: build the device runner's C++ core, replay fixtures against a collector, import iPhone results, check .ptl artifacts against the app's runtime."""

from __future__ import annotations

import json
from pathlib import Path

import click

from parbench.device.build import DEFAULT_BUILD_DIR, REPO_ROOT, build_core, run_core_tests
from parbench.device.replay import format_rows, run_replay, summary_rows, tier_models
from parbench.diagnose.lite_bytecode import DEFAULT_RUNTIME, RUNTIMES, check_and_backport
from parbench.errors import DeviceBuildError, DeviceError
from parbench.history.ingest import import_results

# ---------------------------------------------------------------------------------------------
# CLI


@click.group("device")
def device_group() -> None:
    """The device runner: build its C++ core, replay fixtures against a collector, import
    iPhone results, check .ptl artifacts against the app's runtime."""


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
@click.option("--collector", required=True, help="collector base URL, e.g. http://127.0.0.1:8765")
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


@device_group.command("import")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--store",
    "store_path",
    default="results.sqlite",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
)
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
@click.option("--json", "as_json", is_flag=True, help="print the report rows as JSON")
def check_command(
    fixtures_dir: Path, runtime: str, runtime_bytecode: int | None, no_backport: bool, as_json: bool
) -> None:
    """Will the phone load it? Checks every .ptl artifact's bytecode against the app's runtime
    and backports (and re-verifies) where needed."""
    try:
        rows = check_and_backport(fixtures_dir, runtime_bytecode, runtime=runtime, backport=not no_backport)
    except DeviceError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        for r in rows:
            bc = r.get("bytecode_version", "?")
            extra = f" (from bytecode {r['backported_from']})" if r["status"] == "backported" else ""
            click.echo(
                f"{r['status']:<10} {r['model']}-{r['variant']} {r['path']}: bytecode {bc}{extra}"
                + (f" -- {r['reason']}" if r["reason"] else "")
            )
        if not rows:
            click.echo("no .ptl artifacts in this fixture set")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        raise click.ClickException(
            f"{len(failed)} artifact(s) will not load in {runtime}"
            + (f" (bytecode <= {runtime_bytecode})" if runtime_bytecode else "")
        )
