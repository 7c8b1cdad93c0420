"""`parbench fixtures`: build a fixture set for the device runner."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="fixture set folder (default fixtures/<tier>)",
)
@click.option("--tier", type=click.Choice(["smoke", "default", "full"]), default="smoke", show_default=True)
@click.option("--models", help="comma-separated model names (instead of the tier)")
@click.option("--sizes", help="comma-separated sizes (instead of each model's own)")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True), help="user model TOML")
@click.option(
    "--artifacts",
    default="torchscript,lite",
    show_default=True,
    help="forms whose artifacts go into the set for the device runner ('' for none)",
)
@click.option("--cases", default=2, show_default=True, help="cases (images) per size")
@click.option("--cache", "cache_dir", default=".parbench-cache", show_default=True)
@click.option(
    "--max-bytecode",
    type=int,
    default=None,
    help="check .ptl artifacts against a runtime that loads bytecode up to this version "
    "(LibTorch-Lite 2.1.0 loads 4..9; torch 2.13 writes 8); backport where possible",
)
def fixtures(
    out_dir: Path | None,
    tier: str,
    models: str | None,
    sizes: str | None,
    config_path: str | None,
    artifacts: str,
    cases: int,
    cache_dir: str,
    max_bytecode: int | None,
) -> None:
    """Build a fixture set: inputs from the photo matplotlib ships and seeded variations, golden
    eager-fp32 outputs at every size, and exported artifacts, described by manifest.json."""
    import dataclasses

    from tqdm import tqdm

    from parbench import zoo
    from parbench.backends import VARIANTS
    from parbench.errors import ExportError
    from parbench.fixtures.build import build as build_fixture_set
    from parbench.run.harness import Harness

    try:
        harness = Harness(config_path, cache_dir)
        specs = zoo.select(
            harness.registry,
            None if (models or config_path) and tier == "smoke" else tier,
            models.split(",") if models else None,
        )
        if sizes:
            specs = [dataclasses.replace(s, sizes=tuple(int(x) for x in sizes.split(","))) for s in specs]
            harness.registry.update({s.name: s for s in specs})
    except (zoo.ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    forms = [v for v in artifacts.split(",") if v]
    unknown = [v for v in forms if v not in VARIANTS or v == "eager"]
    if unknown:
        raise click.ClickException(
            f"--artifacts: unknown or non-exportable form(s) {unknown}; "
            f"choose from {', '.join(v for v in VARIANTS if v != 'eager')}"
        )
    out_dir = out_dir or Path("fixtures") / (tier if not models else "custom")
    fs = build_fixture_set(
        out_dir,
        specs,
        lambda s: harness.module(s.name),
        cases,
        progress=lambda msg: click.echo(msg, err=True),
    )
    problems = []
    jobs = [(s, v, size) for s in specs for v in forms for size in s.sizes]
    for spec, variant, size in tqdm(
        jobs, desc="artifacts", unit="artifact", file=sys.stderr, disable=not jobs
    ):
        try:
            art = harness.artifact(spec.name, variant, size)
        except ExportError as exc:
            problems.append(f"{spec.name} {variant} {size}px: {str(exc).splitlines()[0]}")
            continue
        existing = fs.model(spec.name).artifacts.get(variant, [])
        if art.sizes is None and any(e.sizes is None for e in existing):
            continue  # one file serves every size: copied once
        fs.add_artifact(
            spec.name,
            variant,
            art.path,
            art.format,
            art.sizes,
            dict(art.meta),
        )
    fs.save()
    if max_bytecode is not None:
        from parbench.diagnose.lite_bytecode import check_and_backport

        failed = []
        for row in check_and_backport(out_dir, max_bytecode):
            click.echo(
                f"bytecode check: {row['status']}: {row['path']}"
                + (f" ({row['reason']})" if row.get("reason") else "")
            )
            if row["status"] == "failed":
                failed.append(row["path"])
        if failed:
            raise click.ClickException(
                f"{len(failed)} artifact(s) will not load on a runtime limited to "
                f"bytecode {max_bytecode}: {', '.join(failed)}"
            )
    n_cases = sum(len(fs.model(m).cases) for m in fs.models())
    click.echo(
        f"fixture set {out_dir}: {len(fs.models())} model(s), {n_cases} cases, "
        f"{sum(len(v) for m in fs.models() for v in fs.model(m).artifacts.values())} artifact(s)"
    )
    for p in problems:
        click.echo(f"not exported: {p}", err=True)
