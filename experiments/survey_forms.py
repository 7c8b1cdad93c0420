"""Survey: export every converter-based form of zoo models, run them, compare with eager.

It prints and records real figures: export time, whether one artifact serves every size, and the
errors against eager (parbench's metrics) at each size.

\b
    python experiments/survey_forms.py --models mobilenet_v2 --sizes 256,400 [--forms onnx,coreml_fp16]

One JSON line per model x form goes to stdout and, with ``--out``, is appended to that file.  Core ML
packages run on the reference executor off macOS.  Slow (minutes per model on two cores).
"""

from __future__ import annotations

import json
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from parbench import zoo
from parbench._util.console import error_text
from parbench.backends import get_backend
from parbench.backends.base import ExportRequest, flatten_outputs
from parbench.compare import classification_metrics, generic_metrics
from parbench.errors import ExportError, NeedsPerSize, ParbenchError
from parbench.run.timing import time_call

# survey name -> (variant, options)
FORMS: dict[str, tuple[str, dict[str, Any]]] = {
    "onnx": ("onnx", {}),
    "quantized_int8": ("quantized_int8", {}),
    "executorch_fp32": ("executorch_fp32", {}),
    "executorch_int8": ("executorch_int8", {}),
    "coreml_fp16": ("coreml_fp16", {}),
    "coreml_fp16_export": ("coreml_fp16", {"frontend": "torch.export"}),
    "coreml_fp32": ("coreml_fp32", {}),
}


def metrics(a: np.ndarray, r: np.ndarray) -> dict[str, float]:
    out = generic_metrics(a, r)
    if r.ndim == 2 and r.shape[1] > 1:
        out.update(classification_metrics(a, r))
    return out


def survey(model: str, forms: list[str], sizes: list[int], tmp: Path) -> list[dict]:
    spec = zoo.registry()[model]
    module = zoo.load_model(spec)
    export_size = spec.example_size
    example = tuple(torch.from_numpy(v) for v in zoo.example_inputs(spec, export_size).values())
    cases = {s: zoo.example_inputs(spec, s) for s in sizes}
    with torch.no_grad():
        golden = {
            s: flatten_outputs(module(*[torch.from_numpy(v) for v in cases[s].values()])) for s in sizes
        }
    names = list(golden[sizes[0]])
    rows = []
    for form in forms:
        variant, options = FORMS[form]
        backend = get_backend(variant, **options)
        row: dict = {"model": model, "form": form, "sizes": sizes}

        def request(size: int, per_size: bool) -> ExportRequest:
            ex = (
                example
                if size == export_size
                else tuple(torch.from_numpy(v) for v in zoo.example_inputs(spec, size).values())
            )
            return ExportRequest(
                module=module,
                spec=spec,
                example_inputs=ex,
                export_size=size,
                sizes=sizes,
                per_size=per_size,
                calibration=zoo.calibration_inputs(spec, export_size),
                output_names=names,
            )

        artifacts = {}
        t0 = time.perf_counter()
        try:
            try:
                art = backend.export(request(export_size, False), tmp / f"{model}-{form}")
                artifacts = {s: art for s in sizes}
                row["mode"] = "one artifact"
            except NeedsPerSize as exc:
                row["needs_per_size"] = str(exc)[:600]
                row["mode"] = "per size"
                for s in sizes:
                    artifacts[s] = backend.export(request(s, True), tmp / f"{model}-{form}-{s}")
            row["export_s"] = round(time.perf_counter() - t0, 2)
            row["meta"] = {k: v for k, v in artifacts[sizes[0]].meta.items() if k not in ("inputs",)}
            row["bytes"] = artifacts[sizes[0]].bytes
            results = {}
            for s in sizes:
                session = backend.load(artifacts[s])
                out, run_ns = time_call(lambda session=session, s=s: session.run(cases[s]))
                results[s] = {
                    "run_s": round(run_ns / 1e9, 3),
                    "executor": session.executor,
                    **{k: metrics(out[k], golden[s][k].numpy()) for k in names},
                }
            row["results"] = results
            row["status"] = "ok"
        except ExportError as exc:
            row.update(
                status="export_error", error=str(exc)[:1500], export_s=round(time.perf_counter() - t0, 2)
            )
        except Exception as exc:  # a crash is a finding too; record it with its traceback
            row.update(status="crash", error=error_text(exc), trace=traceback.format_exc()[-2000:])
        rows.append(row)
        click.echo(json.dumps(row, default=str))
    return rows


def _names(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    names = [x.strip() for x in value.split(",") if x.strip()]
    if not names:
        raise click.BadParameter("at least one name")
    if param.name == "forms" and (unknown := [f for f in names if f not in FORMS]):
        raise click.BadParameter(f"unknown form(s) {', '.join(unknown)}; known: {', '.join(FORMS)}")
    return names


def _sizes(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        sizes = sorted({int(x) for x in value.split(",") if x.strip()})
    except ValueError:
        raise click.BadParameter(f"comma-separated integers, e.g. 256,400; got {value!r}") from None
    if not sizes or sizes[0] < 1:
        raise click.BadParameter(f"positive sizes, e.g. 256,400; got {value!r}")
    return sizes


@click.command(help=__doc__, context_settings={"max_content_width": 110})
@click.option("--models", default="mobilenet_v2", show_default=True, callback=_names, help="comma-separated")
@click.option("--forms", default=",".join(FORMS), show_default=True, callback=_names, help="comma-separated")
@click.option("--sizes", default="256,400", show_default=True, callback=_sizes, help="comma-separated")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="JSON lines appended here"
)
def main(models: list[str], forms: list[str], sizes: list[int], threads: int, out: Path | None) -> None:
    known = zoo.registry()
    if unknown := [m for m in models if m not in known]:
        raise click.BadParameter(
            f"unknown model(s) {', '.join(unknown)}; known: {', '.join(known)}", param_hint="'--models'"
        )
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            try:
                rows = survey(model, forms, sizes, Path(tmp))
            except ParbenchError as exc:
                raise click.ClickException(str(exc)) from exc
            if out:
                with open(out, "a") as f:
                    for r in rows:
                        f.write(json.dumps(r, default=str) + "\n")


if __name__ == "__main__":
    main()
