"""`parbench bisect`: where a form's outputs start to depart from eager."""

from __future__ import annotations

import click

from parbench.cli.coreai_bisect import VARIANTS as COREAI_VARIANTS
from parbench.cli.coreai_bisect import echo_localisation
from parbench.diagnose.bisect import bisect


@click.command("bisect")
@click.argument("model")
@click.option(
    "--variant",
    default="coreml_fp16",
    show_default=True,
    type=click.Choice(["coreml_fp16", "coreml_fp32", *COREAI_VARIANTS]),
    help="Core ML or Core AI form to compare with eager.",
)
@click.option(
    "--size", type=int, default=None, help="Input size in pixels (default: the model's example size)."
)
@click.option(
    "--threshold-snr", type=float, default=30.0, show_default=True, help="Flag ops below this SNR (dB)."
)
@click.option(
    "--threshold-cos", type=float, default=0.999, show_default=True, help="Flag ops below this cosine."
)
@click.option("--rows", type=int, default=10, show_default=True, help="Rows to show per comparison.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="parbench TOML config with user models.",
)
@click.option("--cache-dir", default=".parbench-cache", show_default=True)
@click.option(
    "--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Write the full table here."
)
def bisect_command(
    model: str,
    variant: str,
    size: int | None,
    threshold_snr: float,
    threshold_cos: float,
    rows: int,
    config_path: str | None,
    cache_dir: str,
    csv_path: str | None,
) -> None:
    """Find the first ops where MODEL's Core ML or Core AI program drifts from eager PyTorch.

    Runs the package on parbench's reference executor, compares every matched leaf module
    with the Core ML value that carries it, and the program at fp16 compute against fp32.
    """
    from parbench.run.harness import Harness
    from parbench.zoo import ConfigError

    try:
        h = Harness(config_path=config_path, cache_dir=cache_dir, log=lambda m: click.echo(m, err=True))
        spec = h.spec(model)
        px = size or spec.example_size
        art = h.artifact(model, variant, px)
        inputs = h.inputs(model, px)
        module = h.module(model)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    except Exception as exc:  # export failures and the like: say what failed
        raise click.ClickException(f"could not prepare {model} {variant} at {px}px: {exc}") from exc
    if art.format == "aimodel":
        title = f"{model} {variant} {px}px"
        return echo_localisation(module, art, inputs, title, threshold_snr, threshold_cos, rows, csv_path)
    source = {"torch.export": "export", "trace": "trace"}.get(str(art.meta.get("frontend")), "auto")
    # the package was converted from the module wrapped to return flat outputs
    from parbench.zoo.outputs import TorchOutputFlattening

    wrapped = TorchOutputFlattening(module).eval()
    result = bisect(
        wrapped,
        art.path,
        inputs,
        threshold_snr=threshold_snr,
        threshold_cos=threshold_cos,
        source=source,
        first=rows,
    )
    click.echo(f"{model} {variant} {px}px  ({art.path})")
    click.echo(result.render(rows))
    if csv_path:
        result.table.to_csv(csv_path, index=False)
        click.echo(f"full table: {csv_path}")
