"""Proof of the time axis on a real model with real extra work, judged as the nightly judges it:
``--runs auto`` sessions on each side, then ``parbench compare --clock cpu``.

\b
    python experiments/proof_time.py [--workloads tiny_generator:32] [--runs-per-level 64]
        [--cpu 0] [--budget 45] [--out reports/proof_time] [--quick] [--samples FILE]

What it does:

1. Workload: a zoo model (``MODEL:SIZE``, eager, one torch thread, its zoo weights) with real
   extra work in front of it, ``x + proj(relu(expand(x)))`` through ``width`` channels
   (``proof_instructions.extra_work_model``; width 0 is the model alone).  The slowdown levels
   (0, +3, +5, +10%) are made only by the width, calibrated on time: fresh processes time widths
   0 and five probe widths in interleaved blocks, the extra CPU time is fitted as
   ``a + b * width``, and each level gets the width that adds its share of the model's time.
2. Collection: every run is a fresh process timed like one ``pytest bench/`` run
   (:func:`parbench.run.timing.time_session` with the bench defaults: 0.2 s warm-up, then
   1 s of rounds, 5..500 rounds; wall and process CPU time of every round), pinned to ``--cpu``,
   with the load average before and after.  Runs go round-robin over the levels (a fresh random
   order per round) so drift hits every level alike.  All raw samples are saved as JSON.
3. Evaluation: each comparison simulates two ``--runs auto`` sessions.  A side draws runs one at
   a time WITHOUT replacement from its level's pool (baseline from 0%, candidate from the level;
   at 0% each side from its own random half of the 0% pool, so the sides are disjoint) and
   stops exactly where the real plan stops (:func:`parbench.run.adaptive.open_cases` on the runs' wall medians, the default ``Plan``:
   3..20 runs, +-1% target; :func:`~parbench.run.adaptive.fits` with ``--budget`` minutes and
   each drawn run's own process time, or ``--pass-seconds`` for a whole nightly pass).  Then the
   nightly's rule decides: :func:`parbench.regress.decide.decide_latency` with the compare
   defaults, on the run statistic of the CPU clock (``--clock cpu``).  ``slower`` is an alarm.
   The same draw orders are also judged with a fixed 7 runs per side for contrast.

Comparisons are resampled from a finite pool of fresh-process runs, so they are not independent:
the table gives, per cell, how many distinct runs the comparisons used.

Prints a Markdown table and saves it (``proof_time.md``), the samples (``samples.json``) and the
results (``results.json``) under ``--out``; ``--samples FILE`` re-evaluates without timing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]

from proof_instructions import seeded_extra_work, wilson  # noqa: E402
from proof_regression import run_worker_process  # noqa: E402

LEVELS = (0.0, 0.03, 0.05, 0.10)
DEFAULT_WORKLOADS = ("tiny_generator:32",)  # the 2 ms class here; tiny_generator:128 is ~15 ms
PILOT_WIDTH = 256
PROBE_SHARES = (0.02, 0.05, 0.1, 0.15, 0.25)  # extra time the calibration probes aim at
FIXED_RUNS = 7


# ---------------------------------------------------------------------------------------------
# worker side: runs inside the fresh processes


def parse_workload(text: str) -> tuple[str, int]:
    model, sep, size = text.partition(":")
    if not sep or not model or not size.isdigit() or int(size) < 8:
        raise click.BadParameter(
            f"a workload is MODEL:SIZE with SIZE >= 8 pixels, e.g. tiny_generator:32; got {text!r}",
            param_hint="--workloads",
        )
    return model, int(size)


def _pin(cpu: int | None) -> list[int] | None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def _models(workload: str, widths: Sequence[int], cache_dir: str) -> tuple[dict[int, Any], Any]:
    import torch

    from parbench import zoo

    name, size = parse_workload(workload)
    base = zoo.load_model(zoo.registry()[name], cache_dir).eval()
    torch.manual_seed(0)
    x = torch.randn(1, 3, size, size)
    return {w: seeded_extra_work(base, w).eval() for w in widths}, x


def run_worker(job: dict[str, Any], out: Path) -> None:
    load_before = os.getloadavg()
    cpus = _pin(job.get("cpu"))
    import torch

    from parbench.run.latency import Settings
    from parbench.run.timing import Warmup, time_session

    torch.set_num_threads(1)
    result: dict[str, Any] = {"pid": os.getpid(), "cpus": cpus, "load_before": load_before}
    with torch.inference_mode():
        if job["mode"] == "calibrate":
            models, x = _models(job["workload"], job["widths"], job["cache"])
            for m in models.values():
                for _ in range(10):
                    m(x)
            cpu_ns: dict[int, list[int]] = {w: [] for w in models}
            for _ in range(job["blocks"]):  # interleaved, so drift hits every width alike
                for w, m in models.items():
                    for _ in range(job["calls"]):
                        c0 = time.process_time_ns()
                        m(x)
                        cpu_ns[w].append(time.process_time_ns() - c0)
            result["median_cpu_ns"] = {str(w): float(np.median(v)) for w, v in cpu_ns.items()}
        else:
            models, x = _models(job["workload"], [job["width"]], job["cache"])
            model = models[job["width"]]
            s = Settings()
            t = time_session(
                lambda: model(x),
                threads=1,
                min_time_s=s.min_time_s,
                min_rounds=s.min_rounds,
                max_rounds=s.max_rounds,
                warmup=Warmup(min_calls=2, min_time_s=s.warmup_time_s),
            )
            result["wall_ns"] = list(t.samples_ns)
            result["cpu_ns"] = list(t.samples_cpu_ns)
    result["load_after"] = os.getloadavg()
    out.write_text(json.dumps(result))


def _spawn(job: dict[str, Any], tmp: Path) -> dict[str, Any]:
    out = tmp / f"job_{time.monotonic_ns()}.json"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        json.dumps(job),
        "--worker-out",
        str(out),
    ]
    return run_worker_process(cmd, out)


# ---------------------------------------------------------------------------------------------
# collection


def fit_widths(
    medians: Sequence[dict[str, float]], levels: Sequence[float]
) -> tuple[dict[str, int], dict[str, float]]:
    """Widths per level from calibration processes: extra CPU time ``t(w) - t(0)`` fitted as
    ``a + b * w`` over every process's probe widths; level L gets ``(L * t(0) - a) / b``."""
    t0 = float(np.median([m["0"] for m in medians]))
    ws, extra = [], []
    for m in medians:
        for w, t in m.items():
            if w != "0":
                ws.append(int(w))
                extra.append(t - m["0"])
    b, a = np.polyfit(ws, extra, 1)
    if not b > 0:
        raise click.ClickException(
            f"the calibration found no cost per channel (slope {b:.3g} ns): the machine is too noisy; "
            "rerun it, or pass --widths"
        )
    widths = {str(lv): max(1, round((lv * t0 - a) / b)) if lv else 0 for lv in levels}
    return widths, {"t0_cpu_ns": t0, "a_ns": float(a), "b_ns_per_channel": float(b)}


def calibrate(
    workload: str, cpu: int | None, cache: str, tmp: Path, repeats: int, log: Any
) -> dict[str, Any]:
    job = {"mode": "calibrate", "workload": workload, "cpu": cpu, "cache": cache, "blocks": 16, "calls": 20}
    # the same extra work per image as PILOT_WIDTH channels at 32 px: wider intermediates at
    # larger sizes leave the caches and cost more per channel than the levels will
    side = parse_workload(workload)[1]
    pw = max(4, round(PILOT_WIDTH * 32 * 32 / (side * side)))
    pilot = _spawn({**job, "widths": [0, pw]}, tmp)["median_cpu_ns"]
    t0, slope = pilot["0"], max(1.0, (pilot[str(pw)] - pilot["0"]) / pw)
    probes = sorted({max(1, round(share * t0 / slope)) for share in PROBE_SHARES})
    log(f"{workload}: pilot {t0 / 1e6:.3f} ms CPU a call; probe widths {probes}")
    raw = [_spawn({**job, "widths": [0, *probes]}, tmp)["median_cpu_ns"] for _ in range(repeats)]
    widths, fit = fit_widths(raw, LEVELS)
    log(
        f"{workload}: {fit['b_ns_per_channel']:.1f} ns per channel, {fit['a_ns'] / 1e3:+.1f} us fixed; widths {widths}"
    )
    return {"pilot": pilot, "probes": probes, "raw": raw, "widths": widths, **fit}


def collect(
    workloads: Sequence[str],
    per_level: int,
    cpu: int | None,
    cache: str,
    raw_path: Path,
    repeats: int,
    widths: dict[str, dict[str, int]] | None,
    log: Any,
    seed: int = 0,
) -> dict[str, Any]:
    tmp = raw_path.parent / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    data: dict[str, Any] = {
        "levels": list(LEVELS),
        "workloads": list(workloads),
        "cpu": cpu,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "calibration": {},
        "runs": [],
    }
    for w in workloads:
        if widths and w in widths:
            data["calibration"][w] = {"widths": widths[w], "given": True}
        else:
            data["calibration"][w] = calibrate(w, cpu, cache, tmp, repeats, log)
    rng = np.random.default_rng(seed)
    for i in range(per_level):
        for w in workloads:
            for level in rng.permutation(LEVELS):
                width = int(data["calibration"][w]["widths"][str(float(level))])
                job = {"mode": "run", "workload": w, "width": width, "cpu": cpu, "cache": cache}
                res = _spawn(job, tmp)
                res.update(workload=w, level=float(level), width=width, round=i)
                data["runs"].append(res)
        data["collect_seconds"] = time.time() - t_start
        raw_path.write_text(json.dumps(data))
        log(f"round {i + 1}/{per_level} done, {time.time() - t_start:.0f} s")
    if not any(tmp.iterdir()):
        tmp.rmdir()
    return data


# ---------------------------------------------------------------------------------------------
# evaluation (pure: no timing)


def simulate_session(plan_values: Sequence[float], seconds: Sequence[float], plan: Any) -> tuple[int, str]:
    """How many of the runs (in draw order) a ``--runs auto`` session with one case uses, and why it
    stopped: ``closed`` (the case's median is tight, or it has max runs), ``budget`` (the next run
    would not fit), or ``pool`` (the pool ran out first)."""
    from parbench.run.adaptive import fits, open_cases

    if len(plan_values) != len(seconds):
        raise ValueError("one process time per run is needed")
    for k in range(1, len(plan_values) + 1):
        if not open_cases({"case": list(plan_values[:k])}, plan):
            return k, "closed"
        if not fits(float(sum(seconds[:k])), seconds[:k], plan):
            return k, "budget"
    return len(plan_values), "pool"


@dataclasses.dataclass(frozen=True)
class Draw:
    """One comparison: the pool indices each side's ``--runs auto`` session used (in draw order)
    and why it stopped, and the first ``FIXED_RUNS`` of the same draw orders (None when the pools
    are too small)."""

    base: np.ndarray
    cand: np.ndarray
    why_base: str
    why_cand: str
    fixed_base: np.ndarray | None
    fixed_cand: np.ndarray | None


def draw_comparison(
    rng: np.random.Generator,
    base_plan: np.ndarray,
    base_secs: np.ndarray,
    cand_plan: np.ndarray,
    cand_secs: np.ndarray,
    same_pool: bool,
    plan: Any,
    fixed: int = FIXED_RUNS,
) -> Draw:
    """Two sessions drawing runs without replacement, each from its own pool; from one pool
    (``same_pool``, 0% against 0%) each side from its own random half of it, so they are disjoint."""
    if same_pool:
        perm = rng.permutation(len(base_plan))
        bo, co = perm[: len(perm) // 2], perm[len(perm) // 2 :]
    else:
        bo, co = rng.permutation(len(base_plan)), rng.permutation(len(cand_plan))
    nb, why_b = simulate_session(base_plan[bo], base_secs[bo], plan) if len(bo) else (0, "pool")
    nc, why_c = simulate_session(cand_plan[co], cand_secs[co], plan) if len(co) else (0, "pool")
    fb = fc = None
    if fixed <= min(len(bo), len(co)):
        fb, fc = bo[:fixed], co[:fixed]
    return Draw(bo[:nb], co[:nc], why_b, why_c, fb, fc)


@dataclasses.dataclass
class Cell:
    alarms: int = 0
    unknown: int = 0
    comparisons: int = 0
    runs_base: list[int] = dataclasses.field(default_factory=list)
    runs_cand: list[int] = dataclasses.field(default_factory=list)
    stops: dict[str, int] = dataclasses.field(default_factory=dict)
    distinct_base: set[int] = dataclasses.field(default_factory=set)
    distinct_cand: set[int] = dataclasses.field(default_factory=set)

    def add(self, decision: Any, base: np.ndarray, cand: np.ndarray) -> None:
        self.comparisons += 1
        self.alarms += decision.verdict == "slower"
        self.unknown += decision.verdict == "unknown"
        self.runs_base.append(len(base))
        self.runs_cand.append(len(cand))
        self.distinct_base.update(int(i) for i in base)
        self.distinct_cand.update(int(i) for i in cand)

    def rate(self) -> str:
        if not self.comparisons:
            return "— (pool too small)"
        lo, hi = wilson(self.alarms, self.comparisons)
        return f"{self.alarms}/{self.comparisons} = {self.alarms / self.comparisons:.1%} [{lo:.1%}–{hi:.1%}]"

    def as_dict(self) -> dict[str, Any]:
        lo, hi = wilson(self.alarms, self.comparisons) if self.comparisons else (None, None)
        return {
            "alarms": self.alarms,
            "unknown": self.unknown,
            "comparisons": self.comparisons,
            "rate": self.alarms / self.comparisons if self.comparisons else None,
            "wilson_low": lo,
            "wilson_high": hi,
            "mean_runs_baseline": float(np.mean(self.runs_base)) if self.runs_base else None,
            "mean_runs_candidate": float(np.mean(self.runs_cand)) if self.runs_cand else None,
            "stops": self.stops,
            "distinct_runs_baseline": len(self.distinct_base),
            "distinct_runs_candidate": len(self.distinct_cand),
        }


def nightly_settings() -> dict[str, Any]:
    """What ``parbench compare`` uses when the nightly gives it only ``--clock cpu``."""
    from parbench.regress import decide as d

    return {
        "floor": d.DEFAULT_FLOOR,
        "alpha": d.DEFAULT_ALPHA,
        "run_stat": d.DEFAULT_RUN_STAT,
        "clock": "cpu",
    }


def evaluate(
    data: dict[str, Any],
    comparisons: int,
    budget_min: float,
    pass_seconds: float | None,
    seed: int = 1,
) -> dict[str, Any]:
    from parbench.regress.decide import decide_latency, run_statistic
    from parbench.run.adaptive import Plan, run_medians

    plan = Plan(budget_s=budget_min * 60)
    settings = nightly_settings()
    rule = {"floor": settings["floor"], "alpha": settings["alpha"]}
    out: dict[str, Any] = {
        "settings": settings,
        "plan": dataclasses.asdict(plan),
        "pass_seconds": pass_seconds,
    }
    out["workloads"] = {}
    for w in data["workloads"]:
        runs = {
            lv: [r for r in data["runs"] if r["workload"] == w and r["level"] == lv] for lv in data["levels"]
        }
        stat = {
            lv: np.array([run_statistic(r["cpu_ns"], settings["run_stat"]) for r in rs])
            for lv, rs in runs.items()
        }
        planned = {
            lv: np.array(run_medians([{"extra_info": {"samples_ns": r["wall_ns"]}} for r in rs]))
            for lv, rs in runs.items()
        }
        secs = {
            lv: np.array([pass_seconds or r["process_seconds"] for r in rs], dtype=np.float64)
            for lv, rs in runs.items()
        }
        base_stat = float(np.median(stat[0.0]))
        rows = []
        rng = np.random.default_rng(seed)
        for lv in data["levels"]:
            same = lv == 0.0
            auto, fixed = Cell(), Cell()
            n0, nl = len(runs[0.0]), len(runs[lv])
            for _ in range(comparisons if n0 and nl else 0):
                dr = draw_comparison(rng, planned[0.0], secs[0.0], planned[lv], secs[lv], same, plan)
                for why in (dr.why_base, dr.why_cand):
                    auto.stops[why] = auto.stops.get(why, 0) + 1
                if len(dr.base) and len(dr.cand):
                    auto.add(decide_latency(stat[0.0][dr.base], stat[lv][dr.cand], **rule), dr.base, dr.cand)
                if dr.fixed_base is not None:
                    d7 = decide_latency(stat[0.0][dr.fixed_base], stat[lv][dr.fixed_cand], **rule)
                    fixed.add(d7, dr.fixed_base, dr.fixed_cand)
            inc = float(np.median(stat[lv])) / base_stat - 1 if len(stat[lv]) else None
            inc_wall = (
                float(np.median(planned[lv])) / float(np.median(planned[0.0])) - 1
                if len(planned[lv])
                else None
            )
            rows.append(
                {
                    "level": lv,
                    "width": runs[lv][0]["width"] if runs[lv] else None,
                    "pool": nl,
                    "increment_cpu": inc,
                    "increment_wall_median": inc_wall,
                    "auto": auto.as_dict(),
                    "fixed": fixed.as_dict(),
                    "_cells": (auto, fixed),
                }
            )
        all_runs = [r for rs in runs.values() for r in rs]
        out["workloads"][w] = {
            "baseline_cpu_ms": base_stat / 1e6,
            "seconds_per_run": float(np.median([r["process_seconds"] for r in all_runs]))
            if all_runs
            else None,
            "load_max": max((max(r["load_before"][0], r["load_after"][0]) for r in all_runs), default=None),
            "rows": rows,
        }
    return out


def table(result: dict[str, Any], comparisons: int, quick: bool) -> str:
    s = result["settings"]
    p = result["plan"]
    per_run = result["pass_seconds"]
    lines = [
        f"{'QUICK SANITY RUN (small pools), not the proof. ' if quick else ''}"
        f"Alarm rate (`slower`) of `--runs auto` sessions on both sides, judged by `parbench compare --clock cpu` "
        f"(floor {s['floor']:.0%}, alpha {s['alpha']}, run statistic {s['run_stat']} of the CPU samples); "
        f"plan: {p['min_runs']}..{p['max_runs']} runs, ±{p['target']:.0%} target on the wall median, budget "
        f"{p['budget_s'] / 60:g} min per side with "
        + (
            f"{per_run:g} s per run (assumed pass time)."
            if per_run
            else "each drawn run's measured process time."
        )
        + f" {comparisons} comparisons per cell, resampled WITHOUT replacement within a comparison from a finite "
        "pool of fresh-process runs: comparisons share runs, so they are not independent (distinct runs used: "
        "baseline/candidate). At 0% an alarm is a false alarm, above it a detection. Wilson 95% intervals.",
        "",
    ]
    for w, res in result["workloads"].items():
        lines += [
            f"**{w}** (eager, 1 thread): {res['baseline_cpu_ms']:.3f} ms CPU a call at 0% (run statistic, median "
            f"over runs); {res['seconds_per_run']:.1f} s per fresh-process run; highest load average seen "
            f"{res['load_max']:.2f}.",
            "",
            "| level | width | measured increment (CPU; wall) | `--runs auto`: alarms | runs per side "
            "(base/cand) | sessions stopped | unknown | distinct runs | fixed 7 runs: alarms |",
            "|---|---:|---|---|---|---|---:|---|---|",
        ]
        for r in res["rows"]:
            auto, fixed = r["_cells"]
            a = r["auto"]
            runs = (
                f"{a['mean_runs_baseline']:.1f}/{a['mean_runs_candidate']:.1f}"
                if a["mean_runs_baseline"]
                else "—"
            )
            stops = ", ".join(f"{k} {v}" for k, v in sorted(a["stops"].items())) or "—"
            inc = (
                f"{r['increment_cpu']:+.2%}; {r['increment_wall_median']:+.2%}"
                if r["increment_cpu"] is not None
                else "—"
            )
            lines.append(
                f"| {r['level']:.0%} | {r['width']} | {inc} | {auto.rate()} | {runs} | {stops} | {a['unknown']} | "
                f"{a['distinct_runs_baseline']}/{a['distinct_runs_candidate']} of {r['pool']} | {fixed.rate()} |"
            )
        lines.append("")
    return "\n".join(lines)


def _jsonable(result: dict[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(result, default=lambda o: None))
    for w in out["workloads"].values():
        for r in w["rows"]:
            r.pop("_cells", None)
    return out


# ---------------------------------------------------------------------------------------------
# command line


@click.command()
@click.option(
    "--workloads", default=",".join(DEFAULT_WORKLOADS), show_default=True, help="MODEL:SIZE, comma-separated."
)
@click.option(
    "--runs-per-level", type=click.IntRange(2), default=64, show_default=True, help="Pool size per level."
)
@click.option(
    "--cpu",
    type=int,
    default=0,
    show_default=True,
    help="Core every timed process is pinned to (-1: unpinned).",
)
@click.option(
    "--budget",
    type=click.FloatRange(0, min_open=True),
    default=45.0,
    show_default=True,
    help="--runs auto budget per side, minutes (the nightly's BUDGET).",
)
@click.option(
    "--pass-seconds",
    type=click.FloatRange(0, min_open=True),
    default=None,
    help="Seconds one --runs auto run takes (a whole nightly pass) [default: each run's own process time].",
)
@click.option(
    "--comparisons", type=click.IntRange(1), default=500, show_default=True, help="Comparisons per cell."
)
@click.option(
    "--calibration-processes",
    type=click.IntRange(1),
    default=5,
    show_default=True,
    help="Fresh processes timing the probe widths for the width fit.",
)
@click.option("--widths", default=None, help='JSON {"MODEL:SIZE": {"0.03": W, ...}} instead of calibrating.')
@click.option("--cache", "cache_dir", default=".parbench-cache", show_default=True)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports/proof_time"),
    show_default=True,
)
@click.option(
    "--samples",
    "samples_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Re-evaluate a saved samples.json instead of timing.",
)
@click.option(
    "--quick",
    is_flag=True,
    help="Small pools (at most 12 runs per level, 2 calibration processes): a sanity run.",
)
@click.option("--worker", default=None, hidden=True)
@click.option("--worker-out", type=click.Path(path_type=Path), default=None, hidden=True)
def main(
    workloads: str,
    runs_per_level: int,
    cpu: int,
    budget: float,
    pass_seconds: float | None,
    comparisons: int,
    calibration_processes: int,
    widths: str | None,
    cache_dir: str,
    out: Path,
    samples_file: Path | None,
    quick: bool,
    worker: str | None,
    worker_out: Path | None,
) -> None:
    """Time a real model with real extra work in fresh processes and print the alarm table."""
    if worker is not None:
        run_worker(json.loads(worker), worker_out)
        return

    def log(msg: str) -> None:
        click.echo(f"[proof_time] {msg}", err=True)

    out.mkdir(parents=True, exist_ok=True)
    if samples_file is not None:
        data = json.loads(samples_file.read_text())
    else:
        names = [w.strip() for w in workloads.split(",") if w.strip()]
        for w in names:
            from parbench import zoo

            model, _ = parse_workload(w)
            if model not in zoo.registry():
                raise click.BadParameter(
                    f"unknown model {model!r}; known: {', '.join(zoo.registry())}", param_hint="--workloads"
                )
        pin = None if cpu < 0 else cpu
        if pin is not None and hasattr(os, "sched_getaffinity") and pin not in os.sched_getaffinity(0):
            raise click.BadParameter(
                f"this process may run on cores {sorted(os.sched_getaffinity(0))} only", param_hint="--cpu"
            )
        given = json.loads(widths) if widths else None
        if quick:
            runs_per_level, calibration_processes = min(runs_per_level, 12), 2
        log(f"{len(names)} workload(s) x {len(LEVELS)} levels x {runs_per_level} fresh-process runs")
        data = collect(
            names, runs_per_level, pin, cache_dir, out / "samples.json", calibration_processes, given, log
        )
        data["quick"] = quick
        (out / "samples.json").write_text(json.dumps(data))
    result = evaluate(data, comparisons, budget, pass_seconds)
    text = table(result, comparisons, bool(data.get("quick")))
    click.echo(text)
    (out / "proof_time.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(_jsonable(result), indent=1))
    log(f"saved {out / 'proof_time.md'}, {out / 'results.json'} and the samples")


if __name__ == "__main__":
    main()
