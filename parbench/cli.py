"""`parbench ...` command line.

Commands live next to the code they drive and are loaded lazily, so `parbench --help` does not
import torch.  Each entry maps a command name to "module:attribute" of a click command.
"""

from __future__ import annotations

import importlib

import click

COMMANDS: dict[str, str] = {
    "doctor": "parbench.commands:doctor",
    "fixtures": "parbench.commands:fixtures",
    "report": "parbench.report:report_command",
    "compare": "parbench.regress:compare_command",
    "history": "parbench.regress:history_command",
    "serve": "parbench.collector.app:serve_command",
    "device": "parbench.device_mac_cli:device_group",  # parbench.device's group plus the Mac commands
    "bisect": "parbench.coreml_ref.bisect:bisect_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="parbench")
def main() -> None:
    """Parity and latency of a PyTorch model's deployment forms (eager, TorchScript, lite,
    int8, ONNX Runtime, ExecuTorch, Core ML) at every input size."""


if __name__ == "__main__":
    main()
