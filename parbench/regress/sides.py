"""The two sides of a comparison: runs from benchmark files, parity JSON lines or the history store, and the verdict per benchmark."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from parbench.errors import RecordError, RegressError
from parbench.records import bench, parity
from parbench.records.bench import CLOCK_FIELDS, Clock
from parbench.regress.decide import (
    DEFAULT_ALPHA,
    DEFAULT_BOOTSTRAP,
    DEFAULT_FLOOR,
    DEFAULT_PARITY_FLOOR_DB,
    DEFAULT_RUN_STAT,
    DEFAULT_SEED,
    MIN_RUNS,
    PARITY_METRICS,
    Decision,
    decide_latency,
    decide_parity,
    parity_db,
    run_statistic,
)

# ---------------------------------------------------------------------------------------------
# inputs: pytest-benchmark JSON files, parity JSON lines, the history store

Key = tuple[str, str, str]  # (model, variant, size)


@dataclasses.dataclass(frozen=True)
class Run:
    """One replication unit: one process's timed rounds for one benchmark."""

    key: Key
    samples_ns: np.ndarray
    origin: str
    night: str = ""
    created: str = ""
    commit: str = ""

    @property
    def digest(self) -> str:
        h = hashlib.sha256(repr(self.key).encode())
        h.update(np.asarray(self.samples_ns, dtype=np.float64).tobytes())
        return h.hexdigest()


def _expand(paths: Iterable[str | Path], suffixes: tuple[str, ...]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix in suffixes)
            if not found:
                raise RegressError(f"folder {p} holds no {'/'.join(suffixes)} files")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise RegressError(
                f"{p} does not exist; give pytest-benchmark JSON files "
                "(pytest bench/ --benchmark-json=FILE) or a folder of them"
            )
    return out


def load_benchmark_runs(paths: Iterable[str | Path], clock: Clock = "wall") -> list[Run]:
    """Runs from pytest-benchmark JSON files.

    Each benchmark entry is one run: parbench's bench suite writes one entry per process with
    ``extra_info.run_index`` (``--runs K`` gives K entries per benchmark), and a file without
    run_index counts as one run per benchmark.  Samples come from ``extra_info.samples_ns``, or
    from ``stats.data`` (seconds) when absent.  Identical runs given twice count once.
    ``clock="cpu"`` reads ``extra_info.samples_cpu_ns`` (process CPU time of each round) instead.
    """
    if clock not in CLOCK_FIELDS:
        raise RegressError(f"unknown clock {clock!r}; use one of {', '.join(CLOCK_FIELDS)}")
    runs: list[Run] = []
    seen: set[str] = set()
    for path in _expand(paths, (".json",)):
        try:
            doc = bench.read(path)
        except RecordError as exc:
            raise RegressError(str(exc)) from exc
        for i, entry in enumerate(doc.benchmarks):
            name = entry.name or f"benchmarks[{i}]"
            try:
                extra = entry.parbench()
                if extra is None:
                    raise RegressError(
                        f"{path}: benchmark {name} has no extra_info model/variant/size and its "
                        "name is not test_...[model-variant-size]; give files written by pytest bench/"
                    )
                arr = np.asarray(entry.samples(clock), dtype=np.float64)
            except RecordError as exc:
                raise RegressError(f"{path}: {exc}") from exc
            if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
                raise RegressError(f"{path}: benchmark {name} has empty or non-positive samples")
            run = Run(
                key=(extra.model, extra.variant, str(extra.size)),
                samples_ns=arr,
                origin=f"{path}#{entry.extra_info.get('run_index', i)}",
                night=str(path),
                created=doc.datetime or "",
                commit=doc.commit or "",
            )
            if run.digest in seen:
                continue
            seen.add(run.digest)
            runs.append(run)
    return runs


def load_parity_runs(
    paths: Iterable[str | Path], metrics: Sequence[str] = PARITY_METRICS
) -> dict[tuple[Key, str], list[float]]:
    """Parity figures from JSON-lines files (one file = one run): per model x variant x size and
    metric, the worst value over the run's cases and outputs.  Cases that errored or were
    skipped carry no metrics and are left out."""
    out: dict[tuple[Key, str], list[float]] = defaultdict(list)
    for path in _expand(paths, (".jsonl",)):
        try:
            records = parity.read([path])
        except RecordError as exc:
            raise RegressError(str(exc)) from exc
        values: dict[tuple[Key, str], list[float]] = defaultdict(list)
        for rec in records:
            key = (rec.model, rec.variant, str(rec.size))
            for outputs in rec.metrics.values():
                for metric in metrics:
                    if (v := outputs.get(metric)) is not None:
                        values[(key, metric)].append(v)
        for (key, metric), vs in values.items():
            out[(key, metric)].append(float(min(vs, key=lambda v, m=metric: parity_db(m, v))))
    return dict(out)


T = TypeVar("T")


def only_keys(
    by_key: Mapping[Key, Sequence[T]], model: str | None, variant: str | None, size: str | None
) -> dict[Key, list[T]]:
    """The entries of ``by_key`` of this model, variant and size (``None``: any)."""
    return {
        k: list(v)
        for k, v in by_key.items()
        if (model is None or k[0] == model)
        and (variant is None or k[1] == variant)
        and (size is None or k[2] == str(size))
    }


def group_runs(runs: Iterable[Run]) -> dict[Key, list[Run]]:
    out: dict[Key, list[Run]] = defaultdict(list)
    for r in runs:
        out[r.key].append(r)
    return dict(out)


def read_store_results(
    store_path: str | Path,
    how_to_fill: str,
    *,
    source: str,
    model: str | None = None,
    variant: str | None = None,
    size: str | None = None,
) -> pd.DataFrame:
    """The stored results of ``source`` that match the filters (:meth:`Store.results`).  A store
    that does not exist is an error that ends with ``how_to_fill`` (how results reach a store)."""
    path = Path(store_path)
    if not path.exists():
        raise RegressError(f"history store {path} does not exist; {how_to_fill}")
    if size is not None and not str(size).isdigit():
        raise RegressError(f"size must be a whole number of pixels, got {size!r}")
    from parbench.history.store import Store

    store = Store(path)
    try:
        return store.results(model=model, variant=variant, size=int(size) if size else None, source=source)
    finally:
        store.close()


def store_runs(
    store_path: str | Path,
    *,
    source: str = "host",
    model: str | None = None,
    variant: str | None = None,
    size: str | None = None,
    clock: Clock = "wall",
) -> dict[Key, list[Run]]:
    """Runs from the history store, each labelled with its night.

    A night is one stored run id when that run holds several runs of a benchmark (``--runs K``
    in one session); otherwise runs are grouped by their UTC day."""
    path = Path(store_path)
    df = read_store_results(
        path,
        "create it by ingesting bench results "
        "(parbench.history.ingest.ingest_benchmark_json(Store(path), FILE)) or pass --store PATH",
        source=source,
        model=model,
        variant=variant,
        size=size,
    )
    if df.empty:
        return {}
    df = df[df["error"].isna()] if "error" in df.columns else df
    out: dict[Key, list[Run]] = defaultdict(list)
    for (m, v, s), g in df.groupby(["model", "variant", "size"], sort=False):
        g = g.sort_values("created_utc", kind="stable")
        per_id = g.groupby("run_id")["run_id"].transform("size")
        by_id = bool((per_id > 1).any())
        for _, row in g.iterrows():
            created = row["created_utc"]
            night = str(row["run_id"]) if by_id else created.strftime("%Y-%m-%d")
            if clock == "wall":
                raw = row["samples_ns"]
            else:  # extra_info keys the store has no column for are kept under "extra"
                raw = (row.get("extra") or {}).get(CLOCK_FIELDS[clock])
                if raw is None:
                    raise RegressError(
                        f"stored run {row['run_id']} of {m}-{v}-{s} has no CPU-time samples; use --clock wall"
                    )
            samples = np.asarray(raw, dtype=np.float64)
            if samples.size == 0:
                continue
            out[(str(m), str(v), str(s))].append(
                Run(
                    key=(str(m), str(v), str(s)),
                    samples_ns=samples,
                    origin=f"{path}:{row['run_id']}",
                    night=night,
                    created=created.isoformat(),
                    commit=str(row.get("commit") or ""),
                )
            )
    return dict(out)


def nights_of(runs: Sequence[Run]) -> list[tuple[str, list[Run]]]:
    """Runs grouped by night, oldest night first (by the night's first run)."""
    order: dict[str, list[Run]] = {}
    for r in sorted(runs, key=lambda r: r.created):
        order.setdefault(r.night, []).append(r)
    return list(order.items())


# ---------------------------------------------------------------------------------------------
# comparing two sides


@dataclasses.dataclass(frozen=True)
class Row:
    model: str
    variant: str
    size: str
    metric: str  # "latency" or a parity metric
    decision: Decision
    device: str | None = None  # the hardware model of device results (part of the key)

    def as_dict(self) -> dict[str, Any]:
        return {
            **({"device": self.device} if self.device is not None else {}),
            "model": self.model,
            "variant": self.variant,
            "size": self.size,
            "metric": self.metric,
            **self.decision.as_dict(),
        }


def compare_runs(
    baseline: Mapping[Key, Sequence[Run]],
    candidate: Mapping[Key, Sequence[Run]],
    *,
    floor: float = DEFAULT_FLOOR,
    alpha: float = DEFAULT_ALPHA,
    run_stat: str = DEFAULT_RUN_STAT,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    min_runs: int = MIN_RUNS,
    by_night: bool = False,
) -> list[Row]:
    """One latency verdict per benchmark present on either side.  With ``by_night`` the baseline
    runs' nights become the top-level unit (see :func:`decide_shift`)."""
    rows = []
    for key in sorted(set(baseline) | set(candidate), key=lambda k: (k[0], k[1], _size_key(k[2]))):
        b = list(baseline.get(key, ()))
        c = list(candidate.get(key, ()))
        xb = [run_statistic(r.samples_ns, run_stat) / 1e6 for r in b]
        xc = [run_statistic(r.samples_ns, run_stat) / 1e6 for r in c]
        groups = [r.night for r in b] if by_night else None
        d = decide_latency(
            xb,
            xc,
            floor=floor,
            alpha=alpha,
            n_boot=n_boot,
            seed=seed,
            min_runs=min_runs,
            baseline_groups=groups,
        )
        if not b:
            d = dataclasses.replace(d, note="no baseline runs for this benchmark")
        elif not c:
            d = dataclasses.replace(d, note="no candidate runs for this benchmark")
        rows.append(Row(*key, "latency", d))
    return rows


def compare_parity(
    baseline: Mapping[tuple[Key, str], Sequence[float]],
    candidate: Mapping[tuple[Key, str], Sequence[float]],
    *,
    floor_db: float = DEFAULT_PARITY_FLOOR_DB,
    alpha: float = DEFAULT_ALPHA,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
) -> list[Row]:
    rows = []
    for key, metric in sorted(
        set(baseline) | set(candidate), key=lambda km: (km[0][0], km[0][1], _size_key(km[0][2]), km[1])
    ):
        d = decide_parity(
            metric,
            list(baseline.get((key, metric), ())),
            list(candidate.get((key, metric), ())),
            floor_db=floor_db,
            alpha=alpha,
            n_boot=n_boot,
            seed=seed,
        )
        rows.append(Row(*key, metric, d))
    return rows


def _size_key(size: str) -> tuple[int, str]:
    return (int(size), "") if size.isdigit() else (1 << 30, size)


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None or not math.isfinite(v) else format(v, spec)


def _markdown(rows: list[dict[str, str]], right: Sequence[str]) -> str:
    df = pd.DataFrame(rows)
    align = ["right" if c in right else "left" for c in df.columns]
    return df.to_markdown(index=False, colalign=align, disable_numparse=True)


def format_table(rows: Sequence[Row], alpha: float = DEFAULT_ALPHA) -> str:
    """The verdict table as GitHub Markdown."""
    conf = f"{(1 - alpha) * 100:g}% CI"
    tables = []
    lat = [
        {
            **({"device": r.device or "—"} if any(r.device is not None for r in rows) else {}),
            "model": r.model,
            "variant": r.variant,
            "size": r.size,
            "baseline ms": _fmt(d.baseline, ".3f"),
            "candidate ms": _fmt(d.candidate, ".3f"),
            "ratio": _fmt(d.ratio, ".3f"),
            conf: f"{_fmt(d.ci_low, '.3f')}–{_fmt(d.ci_high, '.3f')}" if d.ci_low is not None else "—",
            "runs (b/c)": f"{d.n_baseline}/{d.n_candidate}",
            "verdict": d.label(),
        }
        for r in rows
        if r.metric == "latency"
        for d in [r.decision]
    ]
    if lat:
        tables.append(_markdown(lat, ("baseline ms", "candidate ms", "ratio", "runs (b/c)")))
    par = [
        {
            "model": r.model,
            "variant": r.variant,
            "size": r.size,
            "metric": r.metric,
            "baseline": _fmt(d.baseline, spec),
            "candidate": _fmt(d.candidate, spec),
            "Δ dB": _fmt(d.ratio, "+.2f"),
            f"{conf} dB": f"{_fmt(d.ci_low, '+.2f')}–{_fmt(d.ci_high, '+.2f')}"
            if d.ci_low is not None
            else "—",
            "runs (b/c)": f"{d.n_baseline}/{d.n_candidate}",
            "verdict": d.label(),
        }
        for r in rows
        if r.metric != "latency"
        for d, spec in [(r.decision, ".6f" if r.metric == "cosine" else ".2f")]
    ]
    if par:
        tables.append(_markdown(par, ("baseline", "candidate", "Δ dB", "runs (b/c)")))
    return "\n\n".join(tables)
