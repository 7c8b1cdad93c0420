"""`parbench doctor` and `parbench fixtures`."""

from __future__ import annotations

import platform
import shutil

import click


@click.command()
@click.option("--ops", is_flag=True, help="also list every op the Core ML reference executor runs")
def doctor(ops: bool) -> None:
    """Which deployment forms can export and run on this machine, and why not."""
    import torch

    from parbench._util.versions import versions
    from parbench.backends import VARIANTS, all_variants, get_backend
    from parbench.zoo.torchvision_shim import torchvision_status

    click.echo(
        f"python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{torch.get_num_threads()} torch threads"
    )
    click.echo("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    click.echo(torchvision_status())
    click.echo(
        f"XNNPACK in torch: {bool(torch._C._is_xnnpack_enabled())}; quantized engines: "
        f"{', '.join(torch.backends.quantized.supported_engines)}"
    )
    click.echo("")
    click.echo(f"{'form':<20}{'export':<8}{'run':<6}{'executor':<16}note")
    for variant in all_variants():
        backend = get_backend(variant)
        a = backend.available()
        tiers = VARIANTS[variant].default_tiers  # opt-in forms: selected by default only in these tiers
        note = a.reason + (f" [selected by default only in tier {', '.join(tiers)}]" if tiers else "")
        click.echo(
            f"{variant:<20}{'yes' if a.can_export else 'no':<8}{'yes' if a.can_run else 'no':<6}"
            f"{a.executor:<16}{note}"
        )
    click.echo("")
    for tool, why in (
        ("cmake", "device runner core build"),
        ("chromium", "report browser test"),
        ("xcrun", "Core ML itself, .xcresult import"),
    ):
        click.echo(f"{tool:<10}{'found' if shutil.which(tool) else 'not found':<11}({why})")
    try:
        from parbench.coreml_ref import supported_ops
    except ImportError as exc:
        click.echo(f"Core ML reference executor: not importable ({exc})")
        return
    op_list = supported_ops()
    click.echo(
        f"Core ML reference executor: {len(op_list)} MIL ops supported"
        + (
            ":\n  " + "\n  ".join(click.wrap_text(", ".join(op_list), 96).splitlines())
            if ops
            else " (--ops lists them)"
        )
    )
