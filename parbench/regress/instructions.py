"""Regression verdicts on instruction counts (``parbench compare --metric instructions``).

An instruction count has no run-to-run noise worth a test: the same case counted in two valgrind
processes agrees far inside the floor (docs/instructions.md gives the figures per form).  So the
verdict is exact, not statistical: the ratio of the candidate's count to the
baseline's (medians when a side has several counts, e.g. several history nights) is held against
two bounds:

* ``noise`` (default 0.5%): counts closer than this are equal, ``unchanged``;
* ``floor`` (default 1%): a ratio >= 1 + floor is ``slower``, <= 1 / (1 + floor) ``faster``;
  in between, ``unchanged`` with the note that it is a real change smaller than the floor.

Counts are comparable only when valgrind and the CPU features it exposed are the same on both
sides (another valgrind may emulate another CPU, and the libraries then take other code paths):
otherwise the verdict is ``unknown`` and says what differs.

Rows are :class:`parbench.regress.sides.Row` with metric ``"instructions"``; ``Decision.ratio`` is the
candidate/baseline ratio, ``ci_low``/``ci_high`` the smallest and largest ratio over all pairs of
counts (no confidence level: the range of what was counted), ``baseline``/``candidate`` the counts
in millions of instructions per call, and ``noise`` the largest relative spread within a side.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from parbench.errors import RecordError, RegressError
from parbench.records import bench
from parbench.records.instructions import InstructionCount
from parbench.regress.decide import Decision
from parbench.regress.sides import Key, Row, _expand, _size_key, only_keys, read_store_results

DEFAULT_INSTR_FLOOR = 0.01
DEFAULT_INSTR_NOISE = 0.005  # largest spread between processes measured: 0.27% (docs/instructions.md)
METRIC = "instructions"


@dataclasses.dataclass(frozen=True)
class Count:
    """One counted case: instructions per call, from one valgrind process."""

    key: Key
    instructions: float
    env: str  # valgrind version and CPU features (InstructionCount.env)
    process: str
    origin: str
    night: str = ""


def decide_instructions(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    floor: float = DEFAULT_INSTR_FLOOR,
    noise: float = DEFAULT_INSTR_NOISE,
    baseline_env: Iterable[str] = (),
    candidate_env: Iterable[str] = (),
) -> Decision:
    """Verdict from instruction counts per call (one value per counting process on each side)."""
    if not floor > 0:
        raise RegressError(f"the instruction floor must be > 0, e.g. 0.01 for 1% (got {floor})")
    if not 0 <= noise < floor:
        raise RegressError(f"the count noise bound must be >= 0 and below the floor ({floor}); got {noise}")
    b = [float(v) for v in baseline]
    c = [float(v) for v in candidate]
    if any(not (math.isfinite(v) and v > 0) for v in (*b, *c)):
        raise RegressError("instruction counts must be positive numbers")
    nb, nc = len(b), len(c)
    mb = statistics.median(b) if b else None
    mc = statistics.median(c) if c else None
    spread = max((max(s) / min(s) - 1 for s in (b, c) if s), default=None)
    common: dict[str, Any] = dict(
        p_value=None,
        n_baseline=nb,
        n_candidate=nc,
        baseline=None if mb is None else mb / 1e6,
        candidate=None if mc is None else mc / 1e6,
        noise=spread,
    )
    if mb is None or mc is None:
        side = "baseline" if mb is None else "candidate"
        return Decision("unknown", None, None, None, **common, note=f"no {side} count for this benchmark")
    envs_b, envs_c = set(baseline_env), set(candidate_env)
    if envs_b and envs_c and envs_b != envs_c:
        return Decision(
            "unknown",
            mc / mb,
            None,
            None,
            **common,
            note=f"counted in different setups, not comparable: baseline {sorted(envs_b)}, "
            f"candidate {sorted(envs_c)}; count both sides with the same valgrind on CPUs "
            "with the same features",
        )
    ratio = mc / mb
    lo, hi = min(c) / max(b), max(c) / min(b)
    if abs(ratio - 1) <= noise:
        return Decision("unchanged", ratio, lo, hi, **common)
    if ratio >= 1 + floor:
        return Decision("slower", ratio, lo, hi, **common)
    if ratio <= 1 / (1 + floor):
        return Decision("faster", ratio, lo, hi, **common)
    return Decision(
        "unchanged",
        ratio,
        lo,
        hi,
        **common,
        note=f"a real change ({ratio - 1:+.2%}), smaller than the floor ({floor:.1%})",
    )


# ---------------------------------------------------------------------------------------------
# inputs


def counts_from_benchmark_doc(doc: bench.BenchDocument, origin: str) -> list[Count]:
    """Counted cases of one benchmark document (``pytest bench/ --instructions``).  Every ``--runs``
    entry of a case carries the same count; it is kept once per counting process."""
    out: dict[tuple[Key, str], Count] = {}
    for i, (_entry, extra) in enumerate(doc.cases()):
        c: InstructionCount | None = extra.instructions
        if c is None or c.status != "counted" or c.per_call is None:
            continue
        key = (extra.model, extra.variant, str(extra.size))
        process = c.process or f"{origin}#{i}"
        out.setdefault((key, process), Count(key, float(c.per_call), c.env, process, origin, night=origin))
    return list(out.values())


def load_instruction_counts(paths: Iterable[str | Path]) -> dict[Key, list[Count]]:
    """Counts from pytest-benchmark JSON files (or folders of them), grouped by benchmark."""
    files = _expand(paths, (".json",))
    counts: dict[Key, list[Count]] = defaultdict(list)
    for path in files:
        try:
            doc = bench.read(path)
            found = counts_from_benchmark_doc(doc, str(path))
        except RecordError as exc:
            raise RegressError(str(exc)) from exc
        for cnt in found:
            counts[cnt.key].append(cnt)
    if not counts:
        raise RegressError(
            f"no instruction counts in {', '.join(map(str, files))}; count them with "
            "pytest bench/ --instructions --benchmark-json=FILE"
        )
    return dict(counts)


def store_instruction_counts(
    store_path: str | Path,
    *,
    source: str = "host",
    model: str | None = None,
    variant: str | None = None,
    size: str | None = None,
) -> dict[Key, list[Count]]:
    """Counts kept in the history store (``extra.instructions`` of ingested bench files), each
    labelled with its night (the stored run id), oldest first."""
    path = Path(store_path)
    df = read_store_results(
        path,
        "ingest bench results first "
        "(parbench.history.ingest.ingest_benchmark_json(Store(path), FILE)) or pass --store PATH",
        source=source,
        model=model,
        variant=variant,
        size=size,
    )
    out: dict[Key, dict[tuple[str, str], Count]] = defaultdict(dict)
    for _, row in df.iterrows():
        raw = (row.get("extra") or {}).get("instructions")
        if raw is None:
            continue
        run_id = str(row["run_id"])
        try:
            c = InstructionCount.model_validate(raw)
        except ValueError as exc:
            raise RegressError(f"stored run {run_id}: extra.instructions is not a count ({exc})") from None
        if c.status != "counted" or c.per_call is None:
            continue
        key = (str(row["model"]), str(row["variant"]), str(row["size"]))
        process = c.process or run_id
        out[key].setdefault(
            (run_id, process), Count(key, float(c.per_call), c.env, process, f"{path}:{run_id}", night=run_id)
        )
    return {k: list(v.values()) for k, v in out.items()}


def nights(counts: Sequence[Count]) -> list[str]:
    """The nights of these counts, oldest first (the store returns them in that order)."""
    return list(dict.fromkeys(c.night for c in counts))


# ---------------------------------------------------------------------------------------------
# comparing two sides


def compare_instructions(
    baseline: Mapping[Key, Sequence[Count]],
    candidate: Mapping[Key, Sequence[Count]],
    *,
    floor: float = DEFAULT_INSTR_FLOOR,
    noise: float = DEFAULT_INSTR_NOISE,
) -> list[Row]:
    """One verdict per benchmark counted on either side, sorted like the latency rows."""
    rows = []
    for key in sorted(set(baseline) | set(candidate), key=lambda k: (k[0], k[1], _size_key(k[2]))):
        b = list(baseline.get(key, ()))
        c = list(candidate.get(key, ()))
        d = decide_instructions(
            [x.instructions for x in b],
            [x.instructions for x in c],
            floor=floor,
            noise=noise,
            baseline_env=[x.env for x in b if x.env],
            candidate_env=[x.env for x in c if x.env],
        )
        rows.append(Row(*key, METRIC, d))
    return rows


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None or not math.isfinite(v) else format(v, spec)


def format_instruction_table(rows: Sequence[Row]) -> str:
    """The instruction verdicts as GitHub Markdown (counts in millions of instructions per call)."""
    lines = [
        "| model | variant | size | baseline M instr | candidate M instr | change | range | counts (b/c) | verdict |",
        "|---|---|---|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        d = r.decision
        change = "—" if d.ratio is None else f"{d.ratio - 1:+.3%}"
        rng = "—" if d.ci_low is None else f"{d.ci_low - 1:+.3%} … {d.ci_high - 1:+.3%}"  # type: ignore[operator]
        verdict = d.label() + (f" ({d.note})" if d.note and d.verdict != "slower" else "")
        lines.append(
            f"| {r.model} | {r.variant} | {r.size} | {_fmt(d.baseline, ',.3f')} | "
            f"{_fmt(d.candidate, ',.3f')} | {change} | {rng} | {d.n_baseline}/{d.n_candidate} | {verdict} |"
        )
    return "\n".join(lines)


def rows_json(rows: Sequence[Row], floor: float, noise: float) -> str:
    return json.dumps(
        {
            "settings": {"metric": METRIC, "floor": floor, "noise": noise},
            "regressions": sum(r.decision.verdict == "slower" for r in rows),
            "rows": [r.as_dict() for r in rows],
        },
        indent=2,
    )


# ---------------------------------------------------------------------------------------------
# command line (called by ``parbench compare --metric instructions``)


def compare_main(
    baseline: Sequence[str],
    candidate: Sequence[str],
    *,
    store: Path | None,
    baseline_nights: int | None,
    candidate_nights: int | None,
    source: str = "host",
    model: str | None = None,
    variant: str | None = None,
    size: str | None = None,
    floor: float = DEFAULT_INSTR_FLOOR,
    noise: float = DEFAULT_INSTR_NOISE,
    json_out: Path | None = None,
    md_out: Path | None = None,
    echo: Any = print,
) -> int:
    """Compare instruction counts of two sides (files, or nights of the history store); print the
    table; return the exit status (1 when a benchmark is slower)."""
    if baseline_nights is not None:
        if store is None:
            raise RegressError("--baseline-nights needs the history store: pass --store PATH")
        hist = store_instruction_counts(store, source=source, model=model, variant=variant, size=size)
        cand_counts = load_instruction_counts(candidate) if candidate else {}
        cand_ids = {c.process for cs in cand_counts.values() for c in cs}
        base_counts: dict[Key, list[Count]] = {}
        hist_cand: dict[Key, list[Count]] = {}
        for key, cs in hist.items():
            cs = [c for c in cs if c.process not in cand_ids]  # tonight's file, already ingested
            order = nights(cs)
            if candidate_nights is not None:
                tonight = set(order[len(order) - candidate_nights :])
                hist_cand[key] = [c for c in cs if c.night in tonight]
                order = order[: max(0, len(order) - candidate_nights)]
            keep = set(order[-baseline_nights:])
            base_counts[key] = [c for c in cs if c.night in keep]
        if candidate_nights is not None:
            cand_counts = hist_cand
        if not any(base_counts.values()):
            raise RegressError(f"the store has no {source} instruction counts before the candidate")
    else:
        base_counts = load_instruction_counts(baseline)
        cand_counts = load_instruction_counts(candidate)
        shared = {c.process for cs in base_counts.values() for c in cs} & {
            c.process for cs in cand_counts.values() for c in cs
        }
        if shared:
            raise RegressError(
                "the same counting process appears on both sides; give different files for "
                "baseline and candidate"
            )
    base_counts = only_keys(base_counts, model, variant, size)
    cand_counts = only_keys(cand_counts, model, variant, size)
    if not set(base_counts) & set(cand_counts):
        raise RegressError(
            "baseline and candidate share no counted benchmark (model-variant-size); count "
            "both with the same --instr-sizes"
        )
    rows = compare_instructions(base_counts, cand_counts, floor=floor, noise=noise)
    table = format_instruction_table(rows)
    bad = [r for r in rows if r.decision.verdict == "slower"]
    unknown = [r for r in rows if r.decision.verdict == "unknown"]
    summary = (
        f"{len(rows)} compared on instruction counts: {len(bad)} regression(s), {len(unknown)} unknown; "
        f"floor {floor:.1%}, noise bound {noise:.2%}"
    )
    echo(table)
    echo("\n" + summary)
    if md_out is not None:
        md_out.parent.mkdir(parents=True, exist_ok=True)
        md_out.write_text(table + "\n\n" + summary + "\n")
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(rows_json(rows, floor, noise))
    return 1 if bad else 0
