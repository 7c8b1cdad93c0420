"""Device results in the history store, judged night against nights with the time verdict of
:mod:`parbench.regress.sides`, the device being part of every benchmark's key.

A device result (one posted row) is one case of one size, timed in one app process; the cases of a
size share that process, so a run (the unit of replication) is one stored run id and run index of a
model x form x size on one device, its samples being the samples of all its cases.  The device is
its hardware model identifier (``iPhone15,2``): runs of different hardware models are never pooled
nor compared; units of the same model (``device.name``) are pooled, and an OS version that differs
between the two sides is reported beside the verdict, not hidden.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Unpack

import numpy as np

from parbench.errors import RegressError
from parbench.regress.decide import LatencySettings
from parbench.regress.sides import Key, Row, Run, compare_runs, read_store_results


@dataclasses.dataclass(frozen=True)
class DeviceRun(Run):
    """A run on a device: which hardware model and OS timed it."""

    device: str = ""
    os: str = ""


DeviceRuns = dict[str, dict[Key, list[DeviceRun]]]  # device -> (model, form, size) -> runs


def form_of(variant: str, compute_units: str | None) -> str:
    """A deployment form as run on a device: Core ML's compute units are part of it."""
    return f"{variant}/{compute_units}" if compute_units else variant


def device_store_runs(
    store_path: str | Path,
    *,
    model: str | None = None,
    variant: str | None = None,
    size: str | None = None,
) -> DeviceRuns:
    """Device runs of the store, per device and benchmark, each labelled with its night (its UTC
    day; its run id when that run holds several run indexes of a benchmark).  Failed cases are
    left out.  ``variant`` matches a variant (``coreml_fp16``) or a form (``coreml_fp16/cpuOnly``)."""
    path = Path(store_path)
    df = read_store_results(
        path,
        "device results reach it through the collector "
        "(parbench serve --store PATH) or parbench device import ... --store PATH",
        source="device",
        model=model,
        size=size,
    )
    if df.empty:
        return {}
    nameless = sorted(set(df.loc[df["device_model"].isna() | (df["device_model"] == ""), "run_id"]))
    if nameless:
        raise RegressError(
            f"device run(s) {', '.join(nameless[:5])}{' ...' if len(nameless) > 5 else ''} in {path} name no "
            "device model, so their results could not be kept apart from other devices' results: store "
            "device runs with 'device': {'model': 'iPhone15,2', 'os': 'iOS 18.1'} (the collector refuses "
            "runs without it), or delete these runs"
        )
    df = df[df["error"].isna()]
    if variant is not None:
        forms = [
            form_of(v, cu if isinstance(cu, str) else None)
            for v, cu in zip(df["variant"], df["compute_units"], strict=True)
        ]
        df = df[(df["variant"] == variant) | (np.asarray(forms) == variant)]
    runs: dict[tuple[str, Key], list[DeviceRun]] = defaultdict(list)
    for (dev, m, v, cu, s), g in df.groupby(
        ["device_model", "model", "variant", "compute_units", "size"], sort=False, dropna=False
    ):
        key: Key = (str(m), form_of(str(v), cu if isinstance(cu, str) else None), str(s))
        per_id = g.groupby("run_id")["run_index"].nunique()
        by_id = bool((per_id > 1).any())
        for (run_id, run_index), r in g.groupby(["run_id", "run_index"], sort=False):
            r = r.sort_values("case", kind="stable")
            samples = np.concatenate([np.asarray(x, dtype=np.float64) for x in r["samples_ns"]])
            if samples.size == 0:
                continue
            created = r["created_utc"].iloc[0]
            runs[(str(dev), key)].append(
                DeviceRun(
                    key=key,
                    samples_ns=samples,
                    origin=f"{path}:{run_id}#{run_index}",
                    night=str(run_id) if by_id else created.strftime("%Y-%m-%d"),
                    created=created.isoformat(),
                    commit=_text(r["commit"].iloc[0]),
                    device=str(dev),
                    os=_text(r["device_os"].iloc[0]),
                )
            )
    out: DeviceRuns = defaultdict(dict)
    for (dev, key), rs in runs.items():
        out[dev][key] = rs
    return dict(out)


@dataclasses.dataclass
class DeviceComparison:
    rows: list[Row]
    notes: list[str]  # one line per device or benchmark that needs saying (skipped, OS changed)


def split_device_nights(
    runs: dict[Key, list[DeviceRun]], baseline_nights: int, candidate_nights: int
) -> tuple[dict[Key, list[DeviceRun]], dict[Key, list[DeviceRun]]]:
    """(baseline, candidate) of one device: the candidate is the device's newest
    ``candidate_nights`` nights (over all its benchmarks), the baseline the ``baseline_nights``
    nights before them.  A benchmark the device did not run in those nights has no runs there."""
    first: dict[str, str] = {}
    for r in sorted((r for rs in runs.values() for r in rs), key=lambda r: r.created):
        first.setdefault(r.night, r.created)
    order = list(first)
    cand_n = set(order[len(order) - candidate_nights :])
    base_n = set(order[: max(0, len(order) - candidate_nights)][-baseline_nights:])
    base = {k: [r for r in rs if r.night in base_n] for k, rs in runs.items()}
    cand = {k: [r for r in rs if r.night in cand_n] for k, rs in runs.items()}
    return {k: v for k, v in base.items() if v}, {k: v for k, v in cand.items() if v}


def compare_device_nights(
    store_path: str | Path,
    *,
    baseline_nights: int,
    candidate_nights: int,
    device: str | None = None,
    model: str | None = None,
    variant: str | None = None,
    size: str | None = None,
    candidate_within: float | None = None,
    now: datetime | None = None,
    **settings: Unpack[LatencySettings],
) -> DeviceComparison:
    """Each device's newest ``candidate_nights`` nights against its own ``baseline_nights``
    nights before them: one latency verdict per device x model x form x size (``settings`` as in
    :func:`compare_runs`).  A device with no earlier nights gets ``unknown`` rows: results of
    another device are never its baseline.

    ``candidate_within`` (hours): a device whose newest results are older than that is left out
    with a note, and a store without device results gives no rows and a note instead of an error
    (the nightly's "nothing was posted tonight").
    """
    if device is not None and not device.strip():
        raise RegressError("--device is empty; give a hardware model identifier such as iPhone15,2")
    what = " ".join(
        f"{k} {v}" for k, v in (("model", model), ("variant", variant), ("size", size)) if v is not None
    )
    found = device_store_runs(store_path, model=model, variant=variant, size=size)
    if device is not None and device in found:
        found = {device: found[device]}
    elif device is not None and found:
        raise RegressError(
            f"the store {store_path} holds no results of device {device!r}"
            f"{' for ' + what if what else ''}; devices there: {', '.join(sorted(found))}"
        )
    if not found:
        problem = (
            f"the store {store_path} holds no successful device results"
            f"{' of ' + device if device else ''}{' for ' + what if what else ''}; device runs reach it "
            "through the collector (parbench serve --store) or parbench device import"
        )
        if candidate_within is None:
            raise RegressError(problem)
        return DeviceComparison([], [problem])
    notes: list[str] = []
    if candidate_within is not None:
        limit = (now or datetime.now(UTC)) - timedelta(hours=candidate_within)
        for dev in sorted(found):
            newest = max(r.created for rs in found[dev].values() for r in rs)
            if datetime.fromisoformat(newest) < limit:
                notes.append(
                    f"{dev}: newest results {newest[:19]}Z, none in the last {candidate_within:g} h: not compared"
                )
                del found[dev]
    rows: list[Row] = []
    for dev in sorted(found):
        base, cand = split_device_nights(found[dev], baseline_nights, candidate_nights)
        if not base:
            notes.append(
                f"{dev}: no nights before its newest {candidate_nights}: nothing of this device to compare "
                "with yet (results of other devices are never compared with it)"
            )
        for row in compare_runs(base, cand, by_night=True, **settings):
            key = (row.model, row.variant, row.size)
            note = row.decision.note
            if key not in base:
                note = f"no baseline runs of this benchmark on {dev}"
            os_b, os_c = _oses(base.get(key, ())), _oses(cand.get(key, ()))
            if os_b and os_c and os_b != os_c:
                changed = f"OS changed: baseline {', '.join(os_b)}, candidate {', '.join(os_c)}"
                note = f"{note}; {changed}" if note else changed
                notes.append(f"{dev} {'-'.join(key)}: {changed}")
            decision = dataclasses.replace(row.decision, note=note)
            rows.append(dataclasses.replace(row, device=dev, decision=decision))
    return DeviceComparison(rows, notes)


def _oses(runs: Sequence[DeviceRun]) -> list[str]:
    return sorted({r.os for r in runs if r.os})


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
