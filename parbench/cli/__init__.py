"""`parbench ...` command line: the only place click is imported.

One module per command (or group), loaded lazily so `parbench --help` does not import torch.
Each entry maps a command name to "module:attribute" of a click command.  Any
:class:`~parbench.errors.ParbenchError` a command lets through becomes one clear message and exit
status 1, never a traceback.
"""

from __future__ import annotations

import importlib

import click

from parbench.errors import ParbenchError

COMMANDS: dict[str, str] = {
    "doctor": "parbench.cli.doctor:doctor",
    "fixtures": "parbench.cli.fixtures:fixtures",
    "report": "parbench.cli.report:report_command",
    "compare": "parbench.cli.regress:compare_command",
    "history": "parbench.cli.regress:history_command",
    "serve": "parbench.cli.serve:serve_command",
    "device": "parbench.cli.device:device_group",
    "bisect": "parbench.cli.bisect:bisect_command",
    "schema": "parbench.cli.schema:schema_command",
}


class LazyGroup(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ParbenchError as exc:
            raise click.ClickException(str(exc)) from exc

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
    int8, ONNX Runtime, ExecuTorch, Core ML, Core AI) at every input size."""


if __name__ == "__main__":
    main()
