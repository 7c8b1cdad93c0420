"""Command-line options that several parbench commands share, defined once."""

from __future__ import annotations

from pathlib import Path

import click

from parbench.records.bench import CLOCK_FIELDS
from parbench.regress.decide import DEFAULT_RUN_STAT, RUN_STATS

source = click.option("--source", default="host", show_default=True, help="Store source: host or device.")
device = click.option(
    "--device",
    default=None,
    help="With --source device: only this device (hardware model identifier, e.g. iPhone15,2).",
)
variant = click.option("--variant", default=None, help="Only this variant.")
size = click.option("--size", default=None, help="Only this size.")
run_stat = click.option(
    "--run-stat",
    type=click.Choice(RUN_STATS),
    default=DEFAULT_RUN_STAT,
    show_default=True,
    help="How one run's samples become one number.",
)
clock = click.option(
    "--clock",
    type=click.Choice(sorted(CLOCK_FIELDS)),
    default="wall",
    show_default=True,
    help="wall: samples_ns; cpu: samples_cpu_ns (process CPU time per round, steadier on a "
    "shared machine) where the bench files carry it.",
)


def store(help: str) -> click.decorators.FC:
    """``--store PATH`` (a SQLite history store), with a help text that says what it is for."""
    return click.option("--store", type=click.Path(dir_okay=False, path_type=Path), default=None, help=help)


def floor(default: float, help: str) -> click.decorators.FC:
    """``--floor``: the smallest relative shift that counts."""
    return click.option(
        "--floor", type=click.FloatRange(0, min_open=True), default=default, show_default=True, help=help
    )


def alpha(default: float, help: str) -> click.decorators.FC:
    """``--alpha``: a significance level in (0, 1)."""
    return click.option(
        "--alpha",
        type=click.FloatRange(0, 1, min_open=True, max_open=True),
        default=default,
        show_default=True,
        help=help,
    )


def port(flag: str, default: int, help: str | None = None, *, lowest: int = 1) -> click.decorators.FC:
    """A TCP port option (``--port``, ``--device-port`` ...) with its default shown; ``lowest=0``
    where 0 means "any free port"."""
    return click.option(
        flag, default=default, show_default=True, type=click.IntRange(lowest, 65535), help=help
    )
