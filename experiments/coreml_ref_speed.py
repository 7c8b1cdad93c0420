"""Speed of the Core ML reference executor against eager PyTorch fp32 (same thread count).

For each zoo model it takes the Core ML packages that parity checks (``coreml_fp16``, ``coreml_fp32``;
exported once into parbench's artifact cache), runs them with ``parbench.coreml_ref.MLModel`` on the
model's first parity case at ``--size`` and prints milliseconds per run (median of timed rounds after
warm-up) next to eager fp32, the ratio, and the executor's cosine against eager.  Target: executor /
eager < 2.

\b
    python experiments/coreml_ref_speed.py [--size 256] [--threads 1] [--rounds 10]
        [--models mobilenet_v2,deeplabv3_mobilenet_v3,resnet50,small_vit,animegan]
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch

from parbench._util.console import quiet
from parbench.backends.base import flatten_outputs
from parbench.compare import generic_metrics
from parbench.coreml_ref import MLModel
from parbench.errors import ParbenchError
from parbench.run.harness import Harness
from parbench.run.timing import time_call, torch_threads

DEFAULT_MODELS = "mobilenet_v2,deeplabv3_mobilenet_v3,resnet50,small_vit,animegan"


def _time_interleaved(fns: dict[str, Callable[[], Any]], rounds: int, warmup: int = 2) -> dict[str, float]:
    """Median ms per call of each fn.  Rounds alternate between the fns, so load from other
    processes on a shared machine hits them alike; ``parbench.run.timing.time_session`` times one
    function for a stretch of time, so functions timed one after the other would see different load."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            samples[k].append(time_call(fn)[1] / 1e6)
    return {k: statistics.median(v) for k, v in samples.items()}


def _names(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    names = [x.strip() for x in value.split(",") if x.strip()]
    if not names:
        raise click.BadParameter("at least one name")
    if param.name == "precisions" and (bad := [p for p in names if p not in ("fp16", "fp32")]):
        raise click.BadParameter(f"fp16 and/or fp32, got {', '.join(bad)}")
    return names


@click.command(help=__doc__, context_settings={"max_content_width": 110})
@click.option("--models", default=DEFAULT_MODELS, show_default=True, callback=_names, help="zoo models")
@click.option(
    "--size", type=click.IntRange(min=1), default=256, show_default=True, help="one of the models' sizes"
)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--precisions", default="fp16,fp32", show_default=True, callback=_names)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=".parbench-cache",
    show_default=True,
    help="parbench's artifact cache (shared with pytest parity/)",
)
def main(
    models: list[str], size: int, threads: int, rounds: int, precisions: list[str], cache_dir: Path
) -> None:
    harness = Harness(cache_dir=cache_dir, log=lambda msg: click.echo(msg, err=True))
    with quiet():
        import coremltools  # noqa: F401  (imported here, not inside the first timed load)
    rows = []
    with torch_threads(threads) as in_effect:
        click.echo(f"threads={in_effect} size={size} rounds={rounds} cache={cache_dir}")
        for name in models:
            try:
                module = harness.module(name)
                inputs = harness.inputs(name, size)
                packages = {}
                for prec in precisions:
                    t0 = time.perf_counter()
                    art = harness.artifact(name, f"coreml_{prec}", size)
                    export_s = time.perf_counter() - t0
                    ml, load_ns = time_call(lambda art=art: MLModel(art.path))
                    packages[prec] = (ml, load_ns / 1e9, export_s, art.meta.get("cache"))
            except ParbenchError as exc:
                raise click.ClickException(str(exc)) from exc
            tensors = tuple(torch.from_numpy(v) for v in inputs.values())
            fns: dict[str, Callable[[], Any]] = {"eager": lambda m=module, t=tensors: m(*t)}
            for prec, (ml, *_) in packages.items():
                fns[prec] = lambda ml=ml, feed=inputs: ml.predict(feed)
            with torch.inference_mode():
                ms = _time_interleaved(fns, rounds)
                eager = flatten_outputs(module(*tensors))
            for prec, (ml, load_s, export_s, cache) in packages.items():
                out = ml.predict(inputs)
                cos = min(generic_metrics(out[k], eager[k].numpy())["cosine"] for k in eager)
                ratio = ms[prec] / ms["eager"]
                rows.append((name, prec, ms["eager"], ms[prec], ratio))
                click.echo(
                    f"{name:24s} {prec}  eager {ms['eager']:8.2f} ms  executor {ms[prec]:8.2f} ms  "
                    f"ratio {ratio:5.2f}  ({ml.n_ops} ops, load {load_s:.2f} s, "
                    f"export {export_s:.1f} s [cache {cache}], cosine vs eager {cos:.6f})"
                )
    click.echo()
    click.echo(
        f"| model | precision | eager fp32 ms | executor ms | ratio |  (size {size}, threads {threads})"
    )
    click.echo("|---|---|---:|---:|---:|")
    for name, prec, e, r, ratio in rows:
        click.echo(f"| {name} | {prec} | {e:.2f} | {r:.2f} | {ratio:.2f} |")
    worst = max(r[4] for r in rows)
    click.echo(f"\nworst ratio {worst:.2f} (target < 2.0): {'OK' if worst < 2.0 else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
