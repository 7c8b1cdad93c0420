"""One case's latency: load a fresh session from the form's artifact (timed), time the first run,
warm up, then time calibrated rounds of ``session.run(inputs)`` (:mod:`parbench.run.timing`).

``measure`` returns a :class:`Measured` (the timing and the :class:`~parbench.records.bench.BenchExtra`
record for pytest-benchmark's ``extra_info``) or a :class:`NotMeasured` saying why (skip, known
failure, failure); the bench suite turns those into pytest outcomes.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from typing import Any, Literal

import torch

from parbench.backends import get_backend
from parbench.backends.base import Artifact
from parbench.errors import BackendUnavailable, ExportError
from parbench.records.bench import BenchExtra
from parbench.run.harness import Harness
from parbench.run.timing import PeakMemory, Timing, Warmup, time_call, time_session, torch_threads

REFERENCE_SKIP = (
    "{variant} would run on the {executor!r} executor here, not its deployment runtime: "
    "its latency would mean nothing (time it on a device)"
)


@dataclasses.dataclass(frozen=True)
class Settings:
    threads: int = 1
    min_time_s: float = 1.0
    min_rounds: int = 5
    max_rounds: int = 500
    warmup_time_s: float = 0.2
    run_index: int = 0


@dataclasses.dataclass
class NotMeasured:
    outcome: Literal["skip", "xfail", "fail"]
    reason: str


@dataclasses.dataclass
class Measured:
    timing: Timing
    extra: BenchExtra
    load_ns: int
    warmup_rounds: int


def is_reference(executor: str | None) -> bool:
    return "reference" in (executor or "").lower()


def artifact_bytes(artifact: Artifact) -> int:
    """Size of what ships: the file or folder; for in-memory forms (eager, eager int8), the size
    of the module's state dict as torch.save writes it."""
    if artifact.module is not None:
        buf = io.BytesIO()
        torch.save(artifact.module.state_dict(), buf)
        return buf.tell()
    return int(artifact.bytes)


def measure(
    h: Harness, model: str, variant: str, size: int, s: Settings, *, smoke_only: bool = False
) -> Measured | NotMeasured | None:
    """Time one case; ``smoke_only`` loads and runs once without timing (returns None)."""
    if reason := h.skip_reason(model, variant, size):
        return NotMeasured("skip", reason)
    backend = get_backend(variant, threads=s.threads)
    avail = backend.available()
    if not avail.can_run:
        return NotMeasured("skip", f"{variant} cannot run here: {avail.reason}")
    if is_reference(avail.executor):
        return NotMeasured("skip", REFERENCE_SKIP.format(variant=variant, executor=avail.executor))
    known = h.spec(model).known_failures.get(variant)
    try:
        artifact = h.artifact(model, variant, size)
    except ExportError as exc:
        if known:
            return NotMeasured("xfail", f"known failure ({known}): {exc}")
        return NotMeasured("fail", f"{variant} export of {model} failed, nothing to time: {exc}")
    inputs = h.inputs(model, size)

    with torch_threads(s.threads):  # around load too: some runtimes size their pools at load
        memory = PeakMemory().start()
        try:
            session, load_ns = time_call(lambda: backend.load(artifact))
        except BackendUnavailable as exc:
            return NotMeasured("skip", f"{variant} cannot run here: {exc}")
        except Exception as exc:
            if known:
                return NotMeasured(
                    "xfail", f"known failure ({known}): loading failed: {type(exc).__name__}: {exc}"
                )
            raise
        executor = str(getattr(session, "executor", ""))
        if is_reference(executor):
            return NotMeasured("skip", REFERENCE_SKIP.format(variant=variant, executor=executor))
        if smoke_only:
            session.run(inputs)
            return None
        try:
            timing = time_session(
                functools.partial(session.run, inputs),
                threads=s.threads,
                min_time_s=s.min_time_s,
                min_rounds=s.min_rounds,
                max_rounds=s.max_rounds,
                warmup=Warmup(min_calls=2, min_time_s=s.warmup_time_s),
                load_ns=load_ns,
                memory=memory,
            )
        except Exception as exc:
            if known:
                return NotMeasured("xfail", f"known failure ({known}): {type(exc).__name__}: {exc}")
            raise

    extra = BenchExtra(
        model=model,
        variant=variant,
        size=size,
        **timing.summary(),
        executor=executor,
        runtime_threads=getattr(session, "threads", None),
        artifact_bytes=artifact_bytes(artifact),
        artifact_format=artifact.format,
        shape_mode=artifact.meta.get("shape_mode"),
        run_index=s.run_index,
        source="host",
    )
    return Measured(timing, extra, load_ns, timing.warmup_rounds)


def pooled(entries: list[dict[str, Any]]) -> BenchExtra:
    """The parent's entry of ``--runs K``: every run's rounds pooled (for the terminal table)."""
    extras = [BenchExtra.model_validate(e["extra_info"]) for e in entries]
    first = extras[0]
    return first.model_copy(
        update={
            "run_index": -1,
            "runs": len(extras),
            "samples_ns": [ns for x in extras for ns in x.samples_ns],
            "samples_cpu_ns": [ns for x in extras for ns in x.samples_cpu_ns]
            if all(x.samples_cpu_ns for x in extras)
            else [],
        }
    )
