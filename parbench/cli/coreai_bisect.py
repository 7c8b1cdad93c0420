"""``parbench bisect`` for the Core AI forms: every op's value logged on the Core AI runtime,
compared with the eager op it was converted from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

VARIANTS = ["coreai_fp16", "coreai_fp32"]


def echo_localisation(
    module: nn.Module,
    art: Any,
    inputs: Mapping[str, np.ndarray],
    title: str,
    threshold_snr: float,
    threshold_cos: float,
    rows: int,
    csv_path: str | None,
) -> None:
    from parbench.diagnose.coreai_intermediates import localise

    try:
        found = localise(module, art, inputs, threshold_snr=threshold_snr, threshold_cos=threshold_cos)
    except Exception as exc:
        raise click.ClickException(f"could not localise {title}: {exc}") from exc
    click.echo(f"{title}  ({art.path})")
    click.echo(found.render(rows))
    if csv_path:
        found.table.to_csv(csv_path, index=False)
        click.echo(f"full table: {csv_path}")
