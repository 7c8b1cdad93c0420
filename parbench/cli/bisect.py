"""`parbench bisect`: where a form's outputs start to depart from eager, layer by layer."""

from __future__ import annotations

import click

from parbench.backends.registry import VARIANTS
from parbench.cli.coreai_bisect import VARIANTS as COREAI_VARIANTS
from parbench.cli.coreai_bisect import echo_localisation


@click.command("bisect")
@click.argument("model")
@click.option(
    "--variant",
    default="coreml_fp16",
    show_default=True,
    type=click.Choice([v for v in VARIANTS if v != "eager"]),
    help="Deployment form to compare with eager.",
)
@click.option(
    "--size", type=int, default=None, help="Input size in pixels (default: the model's example size)."
)
@click.option(
    "--case", "case_index", type=int, default=0, show_default=True, help="Fixture case at that size."
)
@click.option(
    "--threshold-snr",
    type=float,
    default=None,
    help="Flag layers below this SNR, dB (default: the family's).",
)
@click.option(
    "--threshold-cos", type=float, default=None, help="Flag layers below this cosine (default: the family's)."
)
@click.option(
    "--keep-fp32",
    "keep_fp32",
    multiple=True,
    metavar="MODULE",
    help="int8 forms: leave this module path (and its children) in fp32; repeatable. Exports with the "
    "option, then prints the verdict and the localisation that follow.",
)
@click.option("--rows", type=int, default=10, show_default=True, help="Flagged layers to list.")
@click.option("--table/--no-table", default=True, show_default=True, help="Print the per-layer table.")
@click.option(
    "--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Write the per-layer table here."
)
@click.option(
    "--node-data",
    "node_data_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the per-layer results as Model Explorer node data (JSON) here.",
)
@click.option(
    "--node-metric",
    type=click.Choice(["snr_db", "introduced_db", "cosine", "ch_snr_db"]),
    default="snr_db",
    show_default=True,
    help="Metric the node data carries.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="parbench TOML config with user models.",
)
@click.option("--cache-dir", default=".parbench-cache", show_default=True)
def bisect_command(
    model: str,
    variant: str,
    size: int | None,
    case_index: int,
    threshold_snr: float | None,
    threshold_cos: float | None,
    keep_fp32: tuple[str, ...],
    rows: int,
    table: bool,
    csv_path: str | None,
    node_data_path: str | None,
    node_metric: str,
    config_path: str | None,
    cache_dir: str,
) -> None:
    """Find the first layers where MODEL as a deployment form departs from eager PyTorch.

    Every form: the layer's nn.Module path is recovered from what the form keeps (TorchScript
    scopes, ONNX node scopes, nn_module_stack of torch.export/PT2E programs, Core ML value names),
    and its value is read from the form (tapped graph outputs, Numeric Suite loggers, ExecuTorch
    intermediate-output taps, the Core ML reference executor).  Prints the verdict of the case, the
    first layers over the family's per-layer limits, the error each layer introduces, and the
    per-layer table.
    """
    from parbench.diagnose.localise import bisect_case
    from parbench.errors import ConfigError, ParbenchError
    from parbench.run.harness import Harness

    thresholds = {k: v for k, v in (("snr_db", threshold_snr), ("cosine", threshold_cos)) if v is not None}
    if "snr_db" in thresholds:
        thresholds["ch_snr_db"] = thresholds["snr_db"]
    try:
        h = Harness(config_path=config_path, cache_dir=cache_dir, log=lambda m: click.echo(m, err=True))
        px = size or h.spec(model).example_size
        if variant in COREAI_VARIANTS:  # op by op on the Core AI runtime's intermediate logger
            art = h.artifact(model, variant, px)
            cases = h.cases(model, px)
            if not 0 <= case_index < len(cases):
                raise click.UsageError(f"--case {case_index}: {model} has {len(cases)} case(s) at {px}px")
            inputs = cases[case_index].inputs
            return echo_localisation(
                h.module(model),
                art,
                inputs,
                f"{model} {variant} {px}px, case {case_index}",
                30.0 if threshold_snr is None else threshold_snr,
                0.999 if threshold_cos is None else threshold_cos,
                rows,
                csv_path,
            )
        found = bisect_case(h, model, variant, px, case_index, keep_fp32=keep_fp32, thresholds=thresholds)
    except ConfigError as exc:  # unknown model, bad option or config entry
        raise click.UsageError(str(exc)) from exc
    except ParbenchError as exc:  # export failures, a form that cannot be localised, a bad case index
        raise click.ClickException(str(exc)) from exc
    rep = found.report
    click.echo(f"{model} {variant} {px}px, case {found.case}  ({found.artifact})")
    click.echo(found.verdict)
    click.echo(rep.render(rows))
    if table:
        click.echo(
            "per-layer table (introduced: SNR change against the layers feeding it, (inputs) when they are "
            "exact; << flagged):"
        )
        click.echo(rep.table_text())
    if found.fp16_text:
        click.echo(found.fp16_text)
    if csv_path:
        click.echo(f"per-layer table: {rep.to_csv(csv_path)}")
    if node_data_path:
        click.echo(
            f"Model Explorer node data ({node_metric}): {rep.write_node_data(node_data_path, node_metric)}"
        )
