"""Proof of the instruction axis on real models: real extra work is caught, identical code is not.

    python experiments/proof_instructions.py [--models tiny_classifier,tiny_generator,mobilenet_v2]
        [--forms eager,onnx,...] [--processes 3] [--out reports/proof_instructions]

What it does:

1. Builds each model with real extra work in front of it: ``x + proj(relu(expand(x)))``, two 1x1
   convolutions through ``width`` channels at the input resolution (width 0 is the model alone).
   Every variant is a user model (a TOML config and a weights file under ``--out``) with the base
   model's own weights, so the harness exports, caches and loads it like any other model.
2. Calibrates the width per model: one valgrind process counts the eager form at widths 0, 1 and
   ``--calibration-width``; the extra instructions are fitted as ``a + b * width`` and each level's
   width is the one that adds that share (+1, +3, +5, +10%) of the model's own count.  Other forms
   get the same width: their measured increments are reported as they come out.
3. Counts every model x form x level in ``--processes`` separate valgrind processes
   (:func:`parbench.run.instructions.count_instructions`, the same code ``pytest bench/
   --instructions`` uses: one process per pass, 1 thread, collection toggled per case).
4. Judges every ordered pair of distinct processes (i, j) with
   :func:`parbench.regress.instructions.decide_instructions` (defaults: floor 1%, noise 0.1%):
   baseline = the 0% count of process i, candidate = the level's count of process j.  At 0% an
   alarm (``slower``) is a false alarm; at the other levels it is a detection.  Rates get Wilson
   95% intervals (``scipy.stats.binomtest``).

Prints the Markdown tables and saves the counts and verdicts as JSON under ``--out``;
``--counts FILE`` re-evaluates saved counts without counting again.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
LEVELS = (0.0, 0.01, 0.03, 0.05, 0.10)
DEFAULT_MODELS = ("tiny_classifier", "tiny_generator", "mobilenet_v2")
SIZES = {"mobilenet_v2": 256}  # others: their smallest size
_FACTORY = re.compile(r"extra__(?P<model>[A-Za-z0-9_]+?)__w(?P<width>\d+)")


# ---------------------------------------------------------------------------------------------
# the models with extra work (also imported by the counting child, through the TOML config)


def extra_work_model(base: Any, width: int, channels: int = 3) -> Any:
    from torch import nn

    class ExtraWork(nn.Module):
        """``base`` after ``x + proj(relu(expand(x)))``, 1x1 convolutions through ``width`` channels."""

        def __init__(self) -> None:
            super().__init__()
            self.base = base
            self.width = width
            if width:
                self.expand = nn.Conv2d(channels, width, 1)
                self.proj = nn.Conv2d(width, channels, 1)

        def forward(self, x: Any) -> Any:
            if self.width:
                x = x + self.proj(self.expand(x).relu())
            return self.base(x)

    return ExtraWork()


def seeded_extra_work(base: Any, width: int) -> Any:
    """:func:`extra_work_model` with seeded weights and a small residual (``proj`` scaled by 0.01,
    no bias), so the output stays close to the model's own."""
    import torch

    torch.manual_seed(width)
    wrapped = extra_work_model(base, width)
    if width:
        with torch.no_grad():
            wrapped.proj.weight.mul_(0.01)
            wrapped.proj.bias.zero_()
    return wrapped


def __getattr__(name: str) -> Callable[[], Any]:
    """Factories ``extra__<model>__w<width>`` for the TOML config (weights come from its file)."""
    m = _FACTORY.fullmatch(name)
    if m is None:
        raise AttributeError(name)

    def factory() -> Any:
        from parbench import zoo

        base = zoo.registry()[m["model"]].resolve_factory()()
        return extra_work_model(base, int(m["width"]))

    return factory


def variant_name(model: str, width: int) -> str:
    return f"{model}__w{width}"


def write_variants(models: Sequence[str], widths: dict[str, set[int]], out: Path, cache_dir: str) -> Path:
    """Weights files and a TOML config declaring every (model, width) as a user model."""
    import torch

    from parbench.run.harness import Harness

    h = Harness(None, cache_dir)
    (out / "weights").mkdir(parents=True, exist_ok=True)
    lines = []
    for model in models:
        spec = h.spec(model)
        size = SIZES.get(model, min(spec.sizes))
        base = h.module(model)
        for width in sorted(widths[model]):
            name = variant_name(model, width)
            weights = out / "weights" / f"{name}.pt"
            if not weights.exists():
                torch.save(seeded_extra_work(base, width).state_dict(), weights)
            lines += [
                f"[models.{name}]",
                f'factory = "proof_instructions:extra__{model}__w{width}"',
                f'task = "{spec.task}"',
                f"sizes = [{size}]",
                f"example_size = {size}",
                f"mean = {list(spec.mean)}",
                f"std = {list(spec.std)}",
                f'weights = "weights/{name}.pt"',
                "",
            ]
    config = out / "models.toml"
    config.write_text("\n".join(lines))
    return config


def count(
    cases: Sequence[tuple[str, str, int]],
    config: Path,
    cache_dir: str,
    workdir: Path,
    calls: int,
    log: Callable[[str], None],
) -> tuple[list[Any], float]:
    from parbench.run.instructions import CountSettings, HarnessSettings, count_instructions

    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
    t0 = time.monotonic()
    records = count_instructions(
        cases, HarnessSettings(str(config), cache_dir), CountSettings(calls=calls), workdir=workdir, log=log
    )
    return records, time.monotonic() - t0


# ---------------------------------------------------------------------------------------------
# evaluation


def wilson(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import binomtest

    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


@dataclasses.dataclass
class Cell:
    alarms: int = 0
    comparisons: int = 0
    other: int = 0  # verdicts other than slower/unchanged (faster, unknown)
    increments: list[float] = dataclasses.field(default_factory=list)

    def rate(self) -> str:
        if not self.comparisons:
            return "—"
        lo, hi = wilson(self.alarms, self.comparisons)
        return f"{self.alarms}/{self.comparisons} = {self.alarms / self.comparisons:.0%} [{lo:.0%}–{hi:.0%}]"


def evaluate(counts: dict[str, Any], floor: float, noise: float) -> dict[str, Any]:
    """counts["processes"]: one {"model|form|level": instructions per call} per process."""
    from parbench.regress.instructions import decide_instructions

    procs = counts["processes"]
    keys = sorted({k for p in procs for k in p})
    per_case: dict[tuple[str, str], dict[float, list[float | None]]] = defaultdict(dict)
    for key in keys:
        model, form, level = key.split("|")
        per_case[(model, form)][float(level)] = [p.get(key) for p in procs]
    by_form: dict[tuple[str, float], Cell] = defaultdict(Cell)
    by_level: dict[float, Cell] = defaultdict(Cell)
    details = []
    for (model, form), levels in sorted(per_case.items()):
        base = levels.get(0.0, [])
        for level, values in sorted(levels.items()):
            cell = Cell()
            for i, j in itertools.permutations(range(len(values)), 2):
                b, c = base[i], values[j]
                if b is None or c is None:
                    continue
                d = decide_instructions([b], [c], floor=floor, noise=noise)
                cell.comparisons += 1
                cell.alarms += d.verdict == "slower"
                cell.other += d.verdict not in ("slower", "unchanged")
            ok_b = [v for v in base if v]
            ok_c = [v for v in values if v]
            inc = statistics.median(ok_c) / statistics.median(ok_b) - 1 if ok_b and ok_c else None
            spread = max(ok_c) / min(ok_c) - 1 if ok_c else None
            details.append(
                {
                    "model": model,
                    "form": form,
                    "level": level,
                    "increment": inc,
                    "spread": spread,
                    "counts": values,
                    "alarms": cell.alarms,
                    "comparisons": cell.comparisons,
                    "other": cell.other,
                }
            )
            for agg in (by_form[(form, level)], by_level[level]):
                agg.alarms += cell.alarms
                agg.comparisons += cell.comparisons
                agg.other += cell.other
                if inc is not None:
                    agg.increments.append(inc)
    return {"details": details, "by_form": by_form, "by_level": by_level}


def tables(result: dict[str, Any], levels: Sequence[float]) -> str:
    out = [
        "Alarm rate (`slower`) per form, pooled over the models; at 0% a false alarm, above it a detection "
        "(ordered pairs of distinct processes; Wilson 95% interval); measured increments in brackets.",
        "",
        "| form | " + " | ".join(f"{lv:.0%}" for lv in levels) + " |",
        "|---|" + "---|" * len(levels),
    ]
    forms = sorted({f for f, _ in result["by_form"]})
    for form in forms:
        cells = []
        for lv in levels:
            c = result["by_form"].get((form, lv))
            if c is None or not c.comparisons:
                cells.append("—")
                continue
            inc = ", ".join(f"{x:+.2%}" for x in c.increments) if lv else ""
            cells.append(c.rate() + (f" ({inc})" if inc else ""))
        out.append(f"| {form} | " + " | ".join(cells) + " |")
    tot = [result["by_level"].get(lv, Cell()).rate() for lv in levels]
    out.append("| **all forms** | " + " | ".join(tot) + " |")
    out += [
        "",
        "Per model and form: measured increment over the 0% count (median over processes) and the "
        "largest relative spread between processes at that level.",
        "",
        "| model | form | 0% count (M instr/call) | spread at 0% | "
        + " | ".join(f"{lv:.0%}" for lv in levels[1:])
        + " |",
        "|---|---|---:|---:|" + "---:|" * (len(levels) - 1),
    ]
    rows: dict[tuple[str, str], dict[float, dict[str, Any]]] = defaultdict(dict)
    for d in result["details"]:
        rows[(d["model"], d["form"])][d["level"]] = d
    for (model, form), by in sorted(rows.items()):
        zero = by.get(0.0)
        if zero is None:
            continue
        vals = [v for v in zero["counts"] if v]
        base = f"{statistics.median(vals) / 1e6:,.3f}" if vals else "—"
        spread = f"{zero['spread']:.4%}" if zero["spread"] is not None else "—"
        cells = [
            f"{by[lv]['increment']:+.2%}" if lv in by and by[lv]["increment"] is not None else "—"
            for lv in levels[1:]
        ]
        out.append(f"| {model} | {form} | {base} | {spread} | " + " | ".join(cells) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# command line


@click.command()
@click.option(
    "--models", default=",".join(DEFAULT_MODELS), show_default=True, help="Comma-separated built-in models."
)
@click.option("--forms", default=None, help="Comma-separated host forms [default: all of them].")
@click.option(
    "--levels",
    default=",".join(f"{lv:g}" for lv in LEVELS),
    show_default=True,
    help="Added work as shares of the model's eager count (0 is the baseline).",
)
@click.option(
    "--processes",
    type=click.IntRange(2),
    default=3,
    show_default=True,
    help="Separate valgrind processes, each counting every case.",
)
@click.option("--calls", type=click.IntRange(1), default=1, show_default=True, help="Counted calls per case.")
@click.option("--calibration-width", type=click.IntRange(2), default=16, show_default=True)
@click.option("--widths", default=None, help="JSON {model: {level: width}} instead of calibrating.")
@click.option("--floor", type=float, default=None, help="Verdict floor [default: the compare default].")
@click.option("--noise", type=float, default=None, help="Noise bound [default: the compare default].")
@click.option("--cache", "cache_dir", default=".parbench-cache", show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports/proof_instructions"),
    show_default=True,
)
@click.option(
    "--counts",
    "counts_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Re-evaluate a saved counts.json instead of counting.",
)
def main(
    models: str,
    forms: str | None,
    levels: str,
    processes: int,
    calls: int,
    calibration_width: int,
    widths: str | None,
    floor: float | None,
    noise: float | None,
    cache_dir: str,
    out: Path,
    counts_file: Path | None,
) -> None:
    """Count real models with real extra work and print the alarm table."""
    sys.path.insert(0, str(REPO))
    from parbench.regress.instructions import DEFAULT_INSTR_FLOOR, DEFAULT_INSTR_NOISE
    from parbench.run.instructions import HOST_FORMS

    floor = DEFAULT_INSTR_FLOOR if floor is None else floor
    noise = DEFAULT_INSTR_NOISE if noise is None else noise
    level_list = sorted({0.0, *(float(x) for x in levels.split(",") if x.strip())})
    out.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        click.echo(f"[proof] {msg}", err=True)

    if counts_file is not None:
        counts = json.loads(counts_file.read_text())
    else:
        model_list = [m.strip() for m in models.split(",") if m.strip()]
        form_list = [f.strip() for f in forms.split(",")] if forms else list(HOST_FORMS)
        unknown = [f for f in form_list if f not in HOST_FORMS]
        if unknown:
            raise click.UsageError(
                f"unknown or non-host form(s) {unknown}; use some of {', '.join(HOST_FORMS)}"
            )
        plan = (
            json.loads(widths)
            if widths
            else calibrate(model_list, level_list, calibration_width, calls, cache_dir, out, log)
        )
        plan = {m: {float(k): int(v) for k, v in by.items()} for m, by in plan.items()}
        need = {m: {0, *plan[m].values()} for m in model_list}
        config = write_variants(model_list, need, out, cache_dir)
        from parbench import zoo

        reg = zoo.registry(config)
        cases, labels = [], {}
        for m in model_list:
            for lv in level_list:
                name = variant_name(m, 0 if lv == 0 else plan[m][lv])
                for f in form_list:
                    case = (name, f, min(reg[name].sizes))
                    if case not in labels:
                        cases.append(case)
                    labels.setdefault(case, []).append(f"{m}|{f}|{lv:g}")
        counts = {"widths": plan, "levels": level_list, "processes": [], "wall_s": [], "records": []}
        for p in range(processes):
            log(f"process {p + 1}/{processes}: {len(cases)} cases")
            records, wall = count(cases, config, cache_dir, out / f"process-{p}", calls, log)
            counts["wall_s"].append(round(wall, 1))
            values = {}
            for rec in records:
                for label in labels[(rec.model, rec.variant, rec.size)]:
                    values[label] = rec.count.per_call if rec.status == "counted" else None
                if rec.status != "counted":
                    log(
                        f"{rec.model}-{rec.variant}-{rec.size}: {rec.status}: {rec.count.message.splitlines()[0][:300]}"
                    )
            counts["processes"].append(values)
            counts["records"].append([r.to_json() for r in records])
            (out / "counts.json").write_text(json.dumps(counts, indent=1))
            log(f"process {p + 1} took {wall:.0f} s")
    result = evaluate(counts, floor, noise)
    text = (
        f"Floor {floor:.1%}, noise bound {noise:.2%}; {len(counts['processes'])} processes; widths "
        f"{json.dumps(counts['widths'])}; wall time per process {counts.get('wall_s')} s.\n\n"
        + tables(result, [float(x) for x in counts["levels"]])
    )
    click.echo(text)
    (out / "table.md").write_text(text + "\n")
    (out / "verdicts.json").write_text(json.dumps(result["details"], indent=1))


def calibrate(
    models: Sequence[str],
    levels: Sequence[float],
    width: int,
    calls: int,
    cache_dir: str,
    out: Path,
    log: Callable[[str], None],
) -> dict[str, dict[float, int]]:
    """Widths per model and level from eager counts at widths 0, 1 and ``width``."""
    config = write_variants(models, {m: {0, 1, width} for m in models}, out, cache_dir)
    from parbench import zoo

    reg = zoo.registry(config)
    cases = [
        (variant_name(m, w), "eager", min(reg[variant_name(m, w)].sizes))
        for m in models
        for w in (0, 1, width)
    ]
    log(f"calibrating widths on eager: {len(cases)} cases")
    records, wall = count(cases, config, cache_dir, out / "calibration", calls, log)
    got = {(r.model, r.variant): r.count.per_call for r in records if r.status == "counted"}
    plan: dict[str, dict[float, int]] = {}
    for m in models:
        c0, c1, cw = (got.get((variant_name(m, w), "eager")) for w in (0, 1, width))
        if not (c0 and c1 and cw):
            raise click.ClickException(f"calibration of {m} failed; see {out / 'calibration'}")
        slope = (cw - c1) / (width - 1)
        fixed = c1 - c0 - slope
        plan[m] = {lv: max(1, round((lv * c0 - fixed) / slope)) for lv in levels if lv > 0}
        log(
            f"{m}: {c0 / 1e6:,.2f} M instr/call; +{slope:,.0f} per channel, +{fixed:,.0f} fixed; widths {plan[m]}"
        )
    (out / "calibration.json").write_text(
        json.dumps(
            {"plan": plan, "counts": {f"{k[0]}|{k[1]}": v for k, v in got.items()}, "wall_s": wall}, indent=1
        )
    )
    return plan


if __name__ == "__main__":
    main()
