"""One case's parity: run a form's artifact on the fixture cases and compare it with eager fp32.

``check(harness, model, variant, size)`` returns the :class:`~parbench.records.parity.ParityRecord`
(every metric, the thresholds, the verdict and what the export decided) and, when a case failed,
that case, so that a caller that wants a localisation (the pytest plugin, ``parbench bisect``) can
ask :mod:`parbench.diagnose` where the form departs from eager.
"""

from __future__ import annotations

import dataclasses
import os
import traceback

from parbench import compare
from parbench._util.stages import collect, stage
from parbench.backends import get_backend
from parbench.backends.base import Artifact
from parbench.errors import BackendUnavailable, ConfigError, ExportError
from parbench.fixtures import Case
from parbench.records.parity import ParityRecord
from parbench.run.harness import Harness
from parbench.run.timing import torch_threads


@dataclasses.dataclass
class ParityOutcome:
    record: ParityRecord
    artifact: Artifact | None = None
    failed_case: Case | None = None  # the first case outside the policy


def parity_threads() -> int | None:
    """Torch intra-op threads for parity cases: ``PARBENCH_PARITY_THREADS`` (a count, or ``all`` for
    torch's default), 1 when unset.  Parity needs no speed from threads, and on a busy machine a
    second thread that waits for a core costs more than it gives (docs/performance.md)."""
    value = os.environ.get("PARBENCH_PARITY_THREADS", "1").strip().lower()
    if value == "all":
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"PARBENCH_PARITY_THREADS is {value!r}; give a thread count (1, 2, ...) or 'all'")
    return int(value)


def check(h: Harness, name: str, variant: str, size: int) -> ParityOutcome:
    """The case's parity; ``record.timing`` says where its wall time went (stage -> seconds)."""
    with collect() as timings, torch_threads(parity_threads()):
        outcome = _check(h, name, variant, size)
    outcome.record.timing = timings.rounded()
    outcome.record.timing_cpu = timings.rounded_cpu()
    return outcome


def _check(h: Harness, name: str, variant: str, size: int) -> ParityOutcome:
    spec, backend = h.spec(name), get_backend(variant)
    record = ParityRecord(
        model=name, variant=variant, size=size, task=spec.task, family=backend.family, verdict="error"
    )
    outcome = ParityOutcome(record)
    known = spec.known_failures.get(variant)
    known_note = f"\nknown failure: {known}" if known else ""
    if reason := h.skip_reason(name, variant, size):
        record.verdict, record.message = "skip", reason
        return outcome
    try:
        cached = h.cached_artifact(name, variant, size)
    except ExportError as exc:
        record.verdict = "xfail" if known else "error"
        record.message = f"{variant} export of {name} failed: {exc}{known_note}"
        return outcome
    art = outcome.artifact = cached.artifact
    record.cache = cached.status
    record.export = {
        "path": str(art.path),
        "format": art.format,
        "bytes": art.bytes,
        "sizes": art.sizes,
        "input_names": art.input_names,
        "output_names": art.output_names,
        **art.meta,
    }
    try:
        session = h.session(name, variant, size)
    except BackendUnavailable as exc:
        record.verdict, record.message = "skip", f"{exc} (artifact converted: {art.path})"
        return outcome
    except Exception as exc:
        record.verdict = "xfail" if known else "error"
        record.message = f"loading the {variant} artifact failed: {type(exc).__name__}: {exc}"
        return outcome
    record.executor = getattr(session, "executor", "")
    record.thresholds = compare.thresholds(backend.family, variant, spec.tolerances)
    comps, failed = [], None
    for case in h.cases(name, size):
        try:
            with stage("run"):
                out = session.run(case.inputs)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[-1][:500]
            record.verdict = "xfail" if known else "error"
            record.message = (
                f"{variant} could not run {case.id} ({size}px) with the artifact exported at "
                f"{art.sizes or spec.example_size}: {type(exc).__name__}: {first}"
            )
            if os.environ.get("PARBENCH_DEBUG"):
                record.message += "\n" + traceback.format_exc()
            return outcome
        with stage("compare"):
            comp = compare.compare(out, case.golden, spec.task, backend.family, variant, spec.tolerances)
        comps.append(comp)
        record.cases.append(case.id)
        if not comp.passed and failed is None:
            failed = (case, comp)
    record.metrics = compare.merge_case_metrics(comps)
    if failed is None:
        record.verdict = "pass"
        record.message = f"{len(comps)} case(s) within {backend.family} policy"
        if known:
            record.message += (
                f"; listed as a known failure ({known}) but passed: remove it from known_failures"
            )
        return outcome
    case, comp = failed
    outcome.failed_case = case
    record.verdict = "xfail" if known else "fail"
    where = f"artifact exported at {art.sizes[0] if art.sizes else spec.example_size}px"
    if art.meta.get("tracer_warnings"):
        where += "; the tracer warned: " + "; ".join(art.meta["tracer_warnings"][:2])
    record.message = (
        f"{name} as {variant} differs from eager at {size}px (case {case.id}; {where})\n"
        + comp.explain()
        + known_note
    )
    return outcome
