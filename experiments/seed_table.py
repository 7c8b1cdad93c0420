"""Latency of the AnimeGAN-style generator at 256, 300, 400 and 640 px in every form, and how
latency grows from 256 to 640 px (published phone CPU figures: 2 s at 256, 9 s at 640).

\b
    python experiments/seed_table.py [--threads 1] [--min-time 1.0] [--variants eager,onnx,...]
    python experiments/seed_table.py --from-json reports/bench/seed-animegan.json   # table only

It runs the bench suite (``pytest bench/ --models animegan --sizes 256,300,400,640``) in a
subprocess, writes its pytest-benchmark JSON (default ``reports/bench/seed-animegan-<UTC>.json``,
so ``parbench report`` picks it up too) and prints a Markdown table: one row per form, the
median ms (±IQR) per size, and the 640/256 ratio next to the pixel-count ratio (6.25).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click

from parbench._util.clock import file_stamp
from parbench.backends.registry import all_variants
from parbench.report.build import collect

ROOT = Path(__file__).resolve().parents[1]

PHONE_MS = {256: 2000.0, 640: 9000.0}  # published phone CPU figures for this kind of generator


def run_bench(
    model: str, sizes: list[int], threads: int, min_time: float, variants: str | None, out: Path
) -> int:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "bench/",
        "--models",
        model,
        "--sizes",
        ",".join(map(str, sizes)),
        "--threads",
        str(threads),
        "--bench-min-time",
        str(min_time),
        f"--benchmark-json={out}",
        "-p",
        "no:cacheprovider",
        "-q",
    ]
    if variants:
        cmd += ["--variants", variants]
    click.echo("running: " + " ".join(cmd[2:]))
    return subprocess.call(cmd, cwd=ROOT)


def table(json_path: Path, model: str, sizes: list[int]) -> str:
    rep = collect([json_path])
    s = rep.summary
    s = s[(s["model"] == model) & (s["kind"] == "host")]
    if s.empty:
        raise click.ClickException(f"{json_path} has no host results for model {model!r}")
    lo, hi = min(sizes), max(sizes)
    head = ["form", *(f"{n} px" for n in sizes), f"{hi}/{lo}", "executor"]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(sizes) + 1) + ["---"]) + "|",
    ]
    order = all_variants()
    forms = sorted(s["form"].unique(), key=lambda f: order.index(f) if f in order else 99)
    for form in forms:
        fr = s[s["form"] == form].set_index("size")
        cells = []
        for n in sizes:
            if n in fr.index:
                r = fr.loc[n]
                cells.append(f"{r['median_ms']:.1f} ±{r['iqr_ms']:.1f}")
            else:
                cells.append("–")
        ratio = (
            f"{fr.loc[hi, 'median_ms'] / fr.loc[lo, 'median_ms']:.2f}×"
            if lo in fr.index and hi in fr.index
            else "–"
        )
        lines.append("| " + " | ".join([form, *cells, ratio, str(fr["executor"].iloc[0])]) + " |")
    phone = [f"{PHONE_MS[n]:.0f}" if n in PHONE_MS else "–" for n in sizes]
    phone_ratio = f"{PHONE_MS[hi] / PHONE_MS[lo]:.2f}×" if lo in PHONE_MS and hi in PHONE_MS else "–"
    lines.append("| phone CPU (published) | " + " | ".join(phone) + f" | {phone_ratio} | – |")
    threads = sorted({int(t) for t in s["threads"].dropna()})
    note = (
        f"\nHost: median ms ±IQR per run of `session.run` ({', '.join(map(str, threads))} thread(s), "
        f"{int(s['n_samples'].min())}–{int(s['n_samples'].max())} rounds per cell). "
        f"Pixel count grows {(hi / lo) ** 2:.2f}× from {lo} to {hi} px."
    )
    return "\n".join(lines) + "\n" + note


def _sizes(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        sizes = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"comma-separated integers, e.g. 256,640; got {value!r}") from None
    if not sizes:
        raise click.BadParameter("at least one size")
    return sizes


@click.command(help=__doc__, context_settings={"max_content_width": 110})
@click.option("--model", default="animegan", show_default=True)
@click.option(
    "--sizes", default="256,300,400,640", show_default=True, callback=_sizes, help="comma-separated"
)
@click.option("--variants", default=None, help="comma-separated forms (default: all)")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--min-time",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="seconds of timed rounds per cell",
)
@click.option(
    "--from-json",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="only print the table of an earlier run",
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help="bench JSON to write"
)
def main(
    model: str,
    sizes: list[int],
    variants: str | None,
    threads: int,
    min_time: float,
    from_json: Path | None,
    out: Path | None,
) -> None:
    if from_json:
        path = from_json
    else:
        path = out or ROOT / "reports" / "bench" / f"seed-{model}-{file_stamp()}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        code = run_bench(model, sizes, threads, min_time, variants, path)
        if not path.exists():
            raise click.ClickException(f"the bench run wrote no results (pytest exit {code})")
    click.echo()
    click.echo(table(path, model, sizes))
    click.echo(f"\nresults: {path}")


if __name__ == "__main__":
    main()
