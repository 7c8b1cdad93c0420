"""`parbench compare` and `parbench history`: regression verdicts between two sides, and a history with its change points."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import click

from parbench.cli import options
from parbench.errors import RegressError
from parbench.regress.decide import (
    DEFAULT_ALPHA,
    DEFAULT_BOOTSTRAP,
    DEFAULT_CP_ALPHA,
    DEFAULT_FLOOR,
    DEFAULT_PARITY_FLOOR_DB,
    DEFAULT_SEED,
    MIN_RUNS,
    LatencySettings,
)
from parbench.regress.sides import (
    Key,
    Row,
    Run,
    compare_parity,
    compare_runs,
    format_table,
    group_runs,
    load_benchmark_runs,
    load_parity_runs,
    nights_of,
    only_keys,
    store_runs,
)
from parbench.report.history import history_series
from parbench.report.html import write_history_html
from parbench.report.plots import plot_series

DEFAULT_STORE = Path("reports/history.sqlite")
_GLOB_CHARS = frozenset("*?[")


def _store_path(store: Path | None) -> Path:
    """The store named on the command line, else $PARBENCH_STORE, else reports/history.sqlite."""
    return store or Path(os.environ.get("PARBENCH_STORE") or DEFAULT_STORE)


def _expand_globs(values: Sequence[str]) -> list[str]:
    """Quoted glob patterns (``--candidate 'new/*.json'``) become the files they match."""
    out: list[str] = []
    for v in values:
        if _GLOB_CHARS.isdisjoint(v):
            out.append(v)
        elif found := sorted(glob.glob(v)):
            out += found
        else:
            raise click.UsageError(f"{v} matches no file")
    return out


def _split_kinds(paths: Sequence[str]) -> tuple[list[str], list[str]]:
    bench, parity = [], []
    for p in paths:
        pp = Path(p)
        if pp.suffix == ".jsonl" or (pp.is_dir() and any(pp.glob("*.jsonl")) and not any(pp.glob("*.json"))):
            parity.append(p)
        else:
            bench.append(p)
    return bench, parity


@click.command("compare")
@click.argument("files", nargs=-1, type=click.Path(path_type=str), metavar="[BASELINE CANDIDATE]")
@click.option(
    "--baseline",
    "baseline",
    multiple=True,
    type=click.Path(path_type=str),
    help="Baseline bench JSON (or parity .jsonl) file, folder or quoted glob; repeat for more.",
)
@click.option(
    "--candidate",
    "candidate",
    multiple=True,
    type=click.Path(path_type=str),
    help="Candidate bench JSON (or parity .jsonl) file, folder or quoted glob; repeat for more.",
)
@options.store(f"History store for a history baseline [default: $PARBENCH_STORE or {DEFAULT_STORE}].")
@click.option(
    "--baseline-nights",
    type=click.IntRange(1),
    default=None,
    help="Pool the runs of the N most recent nights in the store as the baseline.",
)
@click.option(
    "--candidate-nights",
    type=click.IntRange(1),
    default=None,
    help="Take the candidate from the store too: its M most recent nights (the baseline "
    "nights are then the ones before them).",
)
@options.source
@options.device
@click.option(
    "--candidate-within",
    type=click.FloatRange(0, min_open=True),
    default=None,
    metavar="HOURS",
    help="With --source device: leave out devices with no results in the last HOURS; none at all "
    "is not an error then but a note (exit 0).",
)
@click.option("--model", default=None, help="Only this model.")
@options.variant
@options.size
@options.floor(DEFAULT_FLOOR, "Smallest slowdown that counts as a regression (0.03 = 3%).")
@options.alpha(DEFAULT_ALPHA, "Significance level of the test and the CI (1 - confidence).")
@click.option(
    "--parity-floor-db",
    type=click.FloatRange(0, min_open=True),
    default=DEFAULT_PARITY_FLOOR_DB,
    show_default=True,
    help="Smallest parity drop (dB) that counts as a regression.",
)
@options.run_stat
@options.clock
@click.option(
    "--min-runs",
    type=click.IntRange(2),
    default=MIN_RUNS,
    show_default=True,
    help="Fewest runs per side before any verdict but unknown.",
)
@click.option(
    "--bootstrap",
    "n_boot",
    type=click.IntRange(100),
    default=DEFAULT_BOOTSTRAP,
    show_default=True,
    help="Bootstrap resamples for the CI.",
)
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True, help="Bootstrap seed.")
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the verdicts as JSON here.",
)
@click.option(
    "--markdown",
    "md_out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the verdict table as Markdown here.",
)
@click.option(
    "--metric",
    type=click.Choice(["time", "instructions"]),
    default="time",
    show_default=True,
    help="instructions: exact verdicts on the counts of pytest bench/ --instructions "
    "(floor 1% unless --floor is given).",
)
@click.option(
    "--instr-noise",
    type=click.FloatRange(0),
    default=None,
    help="Counts closer than this are equal, with --metric instructions [default: 0.005].",
)
def compare_command(
    files: tuple[str, ...],
    baseline: tuple[str, ...],
    candidate: tuple[str, ...],
    store: Path | None,
    baseline_nights: int | None,
    candidate_nights: int | None,
    source: str,
    device: str | None,
    candidate_within: float | None,
    model: str | None,
    variant: str | None,
    size: str | None,
    floor: float,
    alpha: float,
    parity_floor_db: float,
    run_stat: str,
    clock: str,
    min_runs: int,
    n_boot: int,
    seed: int,
    json_out: Path | None,
    md_out: Path | None,
    metric: str = "time",
    instr_noise: float | None = None,
) -> None:
    """Compare CANDIDATE runs with BASELINE runs; exit 1 on a confirmed regression.

    \b
    Each side is one or more pytest-benchmark JSON files (or folders of them; every benchmark
    entry is one run, i.e. one fresh process), or a query of the history store:
      parbench compare base.json new.json        (one file per side)
      parbench compare --baseline 'base/*.json' --candidate 'new/*.json'
      parbench compare --store reports/history.sqlite --baseline-nights 7 --candidate tonight.json
      parbench compare --store reports/history.sqlite --baseline-nights 7 --candidate-nights 1
    Parity JSON lines (reports/parity/*.jsonl, one file per run) are compared the same way.
    Device results (--source device) come from the store, each device against its own nights:
      parbench compare --source device --store S --baseline-nights 7 --candidate-nights 1
    With --metric instructions, the counts of pytest bench/ --instructions are compared exactly
    (docs/instructions.md).

    Exit status: 0 no regression (unchanged, faster, unknown), 1 a confirmed regression
    (slower, or parity worse), 2 bad input.
    """
    if files:
        options = baseline or candidate or baseline_nights is not None or candidate_nights is not None
        if len(files) == 1 and not options:
            raise click.UsageError(
                "no candidate: give BASELINE CANDIDATE, or --baseline FILE --candidate FILE"
            )
        if len(files) != 2 or options:
            raise click.UsageError(
                f"{len(files)} file(s) without --baseline/--candidate: give BASELINE CANDIDATE (one file "
                "each), or name every file with --baseline/--candidate (repeat the option, or quote a "
                "glob: --candidate 'new/*.json')"
            )
        baseline, candidate = files[:1], files[1:]
    baseline, candidate = tuple(_expand_globs(baseline)), tuple(_expand_globs(candidate))
    if store is not None and baseline_nights is None:
        raise click.UsageError("--store needs --baseline-nights N (how many recent nights make the baseline)")
    if baseline_nights is not None and baseline:
        raise click.UsageError("give the baseline either as files or as --baseline-nights, not both")
    if candidate_nights is not None and candidate:
        raise click.UsageError("give the candidate either as files (--candidate) or as --candidate-nights")
    if not baseline and baseline_nights is None:
        raise click.UsageError("no baseline: give --baseline FILES or --store PATH --baseline-nights N")
    if not candidate and candidate_nights is None:
        raise click.UsageError("no candidate: give --candidate FILES (or --candidate-nights M with --store)")
    if candidate_nights is not None and baseline_nights is None:
        raise click.UsageError("--candidate-nights needs --baseline-nights too")
    if source != "device" and (device is not None or candidate_within is not None):
        raise click.UsageError("--device and --candidate-within need --source device")
    if source == "device" and metric == "instructions":
        raise click.UsageError("device results are timings: compare them with --metric time")
    if metric == "instructions":
        _compare_instructions(
            baseline, candidate, store, baseline_nights, candidate_nights, source, model, variant, size,
            floor, instr_noise, json_out, md_out,
        )  # fmt: skip
    settings = LatencySettings(
        floor=floor, alpha=alpha, run_stat=run_stat, n_boot=n_boot, seed=seed, min_runs=min_runs
    )
    notes: list[str] = []
    try:
        rows: list[Row] = []
        if source == "device":
            rows, notes = _device_rows(
                store, baseline_nights, candidate_nights, candidate, clock, device, candidate_within,
                model, variant, size, settings,
            )  # fmt: skip
            candidate = ()  # the candidate nights are the store's
        cand_bench, cand_parity = _split_kinds(candidate)
        cand_runs = group_runs(load_benchmark_runs(cand_bench, clock)) if cand_bench else {}
        by_night = False
        if source == "device":
            base_runs: dict[Key, list[Run]] = {}
        elif baseline_nights is not None:
            hist = store_runs(
                _store_path(store), source=source, model=model, variant=variant, size=size, clock=clock
            )
            cand_digests = {r.digest for rs in cand_runs.values() for r in rs}
            base_runs = {}
            hist_cand: dict[Key, list[Run]] = {}
            for key, rs in hist.items():
                nights = [(n, [r for r in g if r.digest not in cand_digests]) for n, g in nights_of(rs)]
                nights = [(n, g) for n, g in nights if g]
                if candidate_nights is not None:
                    hist_cand[key] = [r for _, g in nights[len(nights) - candidate_nights :] for r in g]
                    nights = nights[: max(0, len(nights) - candidate_nights)]
                base_runs[key] = [r for _, g in nights[-baseline_nights:] for r in g]
            if candidate_nights is not None:
                cand_runs = hist_cand
            if not any(base_runs.values()):
                raise RegressError(
                    f"the store has no {source} runs before the candidate; nothing to compare with"
                )
            by_night = True
        else:
            base_bench, base_parity = _split_kinds(baseline)
            base_runs = group_runs(load_benchmark_runs(base_bench, clock)) if base_bench else {}
            overlap = {r.digest for rs in base_runs.values() for r in rs} & {
                r.digest for rs in cand_runs.values() for r in rs
            }
            if overlap:
                raise RegressError(
                    "the same run appears on both sides; give different files for baseline and candidate"
                )
            if base_parity or cand_parity:
                rows += compare_parity(
                    load_parity_runs(base_parity),
                    load_parity_runs(cand_parity),
                    floor_db=parity_floor_db,
                    alpha=alpha,
                    n_boot=n_boot,
                    seed=seed,
                )
        base_runs = only_keys(base_runs, model, variant, size)
        cand_runs = only_keys(cand_runs, model, variant, size)
        if base_runs or cand_runs:
            if not set(base_runs) & set(cand_runs):
                raise RegressError(
                    "baseline and candidate share no benchmark (model-variant-size); "
                    "check that both sides ran the same suite"
                )
            rows = compare_runs(base_runs, cand_runs, by_night=by_night, **settings) + rows
    except RegressError as exc:
        raise click.UsageError(str(exc)) from exc
    if not rows and notes:  # --candidate-within: nothing recent to judge
        text = "\n".join(["nothing compared:", *notes])
        click.echo(text)
        if md_out is not None:
            md_out.parent.mkdir(parents=True, exist_ok=True)
            md_out.write_text(text + "\n")
        return
    if not rows:
        raise click.UsageError("nothing to compare: no benchmark or parity results in the inputs")
    table = format_table(rows, alpha)
    if notes:
        table += "\n\n" + "\n".join(f"- {n}" for n in notes)
    click.echo(table)
    bad = [r for r in rows if r.decision.verdict in ("slower", "worse")]
    unknown = [r for r in rows if r.decision.verdict == "unknown"]
    summary = (
        f"{len(rows)} compared: {len(bad)} regression(s), {len(unknown)} unknown; "
        f"floor {floor:.1%}, alpha {alpha}, run statistic {run_stat}, {clock} clock"
    )
    click.echo("\n" + summary)
    if md_out is not None:
        md_out.parent.mkdir(parents=True, exist_ok=True)
        md_out.write_text(table + "\n\n" + summary + "\n")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(
            json.dumps(
                {
                    "settings": {
                        "floor": floor,
                        "alpha": alpha,
                        "run_stat": run_stat,
                        "clock": clock,
                        "min_runs": min_runs,
                        "bootstrap": n_boot,
                        "seed": seed,
                        "parity_floor_db": parity_floor_db,
                        "baseline_nights": baseline_nights,
                        "candidate_nights": candidate_nights,
                        "source": source,
                    },
                    "notes": notes,
                    "regressions": len(bad),
                    "rows": [r.as_dict() for r in rows],
                },
                indent=2,
            )
        )
    if bad:
        raise SystemExit(1)


def _device_rows(
    store: Path | None,
    baseline_nights: int | None,
    candidate_nights: int | None,
    candidate: Sequence[str],
    clock: str,
    device: str | None,
    candidate_within: float | None,
    model: str | None,
    variant: str | None,
    size: str | None,
    settings: LatencySettings,
) -> tuple[list[Row], list[str]]:
    """Device results from the store: each device's newest nights against its own earlier ones."""
    from parbench.regress.device import compare_device_nights

    if candidate or baseline_nights is None or candidate_nights is None:
        raise click.UsageError(
            "--source device compares nights of the store: give --baseline-nights N --candidate-nights M "
            "(device results reach the store through parbench serve or parbench device import)"
        )
    if clock != "wall":
        raise click.UsageError("device results carry wall-clock samples only; use --clock wall")
    result = compare_device_nights(
        _store_path(store),
        baseline_nights=baseline_nights,
        candidate_nights=candidate_nights,
        device=device,
        model=model,
        variant=variant,
        size=size,
        candidate_within=candidate_within,
        **settings,
    )
    return result.rows, result.notes


def _compare_instructions(
    baseline: Sequence[str],
    candidate: Sequence[str],
    store: Path | None,
    baseline_nights: int | None,
    candidate_nights: int | None,
    source: str,
    model: str | None,
    variant: str | None,
    size: str | None,
    floor: float,
    instr_noise: float | None,
    json_out: Path | None,
    md_out: Path | None,
) -> None:
    from parbench.regress import instructions as ri

    ctx = click.get_current_context()
    default_floor = ctx.get_parameter_source("floor") == click.core.ParameterSource.DEFAULT
    try:
        code = ri.compare_main(
            baseline,
            candidate,
            store=_store_path(store) if baseline_nights is not None else None,
            baseline_nights=baseline_nights,
            candidate_nights=candidate_nights,
            source=source,
            model=model,
            variant=variant,
            size=size,
            floor=ri.DEFAULT_INSTR_FLOOR if default_floor else floor,
            noise=ri.DEFAULT_INSTR_NOISE if instr_noise is None else instr_noise,
            json_out=json_out,
            md_out=md_out,
            echo=click.echo,
        )
    except RegressError as exc:
        raise click.UsageError(str(exc)) from exc
    raise SystemExit(code)


@click.command("history")
@click.argument("model")
@options.variant
@options.size
@options.store(f"History store (SQLite) [default: $PARBENCH_STORE or {DEFAULT_STORE}].")
@options.source
@options.device
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports/history"),
    show_default=True,
    help="Folder for PNG, HTML and JSON.",
)
@options.run_stat
@options.clock
@options.floor(DEFAULT_FLOOR, "Smallest shift reported as a change point.")
@options.alpha(DEFAULT_CP_ALPHA, "Permutation-test level for a change point.")
@click.option("--permutations", type=click.IntRange(19), default=199, show_default=True)
@click.option(
    "--min-persist",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="Nights a new level must hold to be a confirmed change.",
)
def history_command(
    model: str,
    variant: str | None,
    size: str | None,
    store: Path | None,
    source: str,
    device: str | None,
    out_dir: Path,
    run_stat: str,
    clock: str,
    floor: float,
    alpha: float,
    permutations: int,
    min_persist: int,
) -> None:
    """Latency of MODEL over the nights in the history store, with its change points.

    Writes a PNG per variant x size, an HTML page embedding them and a JSON summary to --out,
    and lists every change point (first night of a persistent shift) here.
    """
    store = _store_path(store)
    try:
        if source == "device":
            runs = _device_history(store, device, model, variant, size, clock)
        elif device is not None:
            raise RegressError("--device needs --source device")
        else:
            runs = store_runs(store, source=source, model=model, variant=variant, size=size, clock=clock)
        if not runs:
            raise RegressError(
                f"the store {store} has no {source} results for model {model!r}"
                + (f" variant {variant!r}" if variant else "")
                + (f" size {size}" if size else "")
            )
        series = history_series(
            runs,
            run_stat=run_stat,
            floor=floor,
            alpha=alpha,
            permutations=permutations,
            min_persist=min_persist,
        )
    except RegressError as exc:
        raise click.UsageError(str(exc)) from exc
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = [
        plot_series(s, out_dir / f"history_{s.model}_{s.variant.replace('/', '-')}_{s.size}.png")
        for s in series
    ]
    page = write_history_html(model, series, pngs, out_dir / f"history_{model}.html")
    summary = [
        {
            "model": s.model,
            "variant": s.variant,
            "size": s.size,
            "nights": s.nights,
            "centers_ms": s.centers,
            "change_points": [c.as_dict() for c in s.change_points],
        }
        for s in series
    ]
    (out_dir / f"history_{model}.json").write_text(json.dumps(summary, indent=2))
    for s in series:
        head = f"{s.model}-{s.variant}-{s.size}: {len(s.centers)} nights, last {s.centers[-1]:.3f} ms"
        if not s.change_points:
            click.echo(f"{head}, no change point")
        for c in s.change_points:
            status = "confirmed" if c.confirmed else f"new, {c.nights_after} night"
            click.echo(
                f"{head}: change at {c.label}: {c.before:.3f} -> {c.after:.3f} ms "
                f"({(c.ratio - 1) * 100:+.1f}%, p={c.p_value:.3f}, {status})"
            )
    click.echo(f"wrote {page}")


def _device_history(
    store: Path, device: str | None, model: str, variant: str | None, size: str | None, clock: str
) -> Mapping[Key, Sequence[Run]]:
    """One device's runs: a history never mixes devices."""
    from parbench.regress.device import device_store_runs

    if clock != "wall":
        raise RegressError("device results carry wall-clock samples only; use --clock wall")
    found = device_store_runs(store, model=model, variant=variant, size=size)
    if device is None and len(found) > 1:
        raise RegressError(
            f"the store {store} holds results of {model!r} from {len(found)} devices "
            f"({', '.join(sorted(found))}); choose one with --device: a history never mixes devices"
        )
    if device is not None and found and device not in found:
        raise RegressError(
            f"the store {store} holds no results of {model!r} on device {device!r}; "
            f"devices there: {', '.join(sorted(found))}"
        )
    return found.get(device, {}) if device is not None else next(iter(found.values()), {})
