"""The benchmark document: pytest-benchmark's JSON (``--benchmark-json``), and the fields parbench
adds to each benchmark's ``extra_info``.

pytest-benchmark writes the document (so its own ``compare`` tooling reads it); parbench's bench
suite fills ``extra_info`` from :class:`BenchExtra` and every parbench reader (report, compare,
history ingestion) goes through :func:`read`.  Documents written before ``format_version``
existed read the same; entries whose ``extra_info`` lacks the case fields get them from the
test id (``test_latency[MODEL-VARIANT-SIZE]``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from parbench.errors import RecordError
from parbench.records._base import Record, describe, read_json_file, versioned
from parbench.records.ids import CaseKey, ModelName, VariantName
from parbench.records.instructions import InstructionCount

FORMAT_VERSION = 2
Clock = Literal["wall", "cpu"]
CLOCK_FIELDS: dict[str, str] = {"wall": "samples_ns", "cpu": "samples_cpu_ns"}
_HINT = "give the file written by pytest bench/ --benchmark-json=FILE"

Nanoseconds = list[int]


class BenchExtra(Record):
    """parbench's part of one benchmark entry (``extra_info``): one case timed in one process."""

    format_version: int = FORMAT_VERSION
    model: ModelName
    variant: VariantName
    size: int = Field(ge=1)
    source: Literal["host", "device"] = "host"
    run_index: int = 0  # which of --runs K processes; -1 for the parent's pooled entry
    runs: int | None = None  # pooled entries: how many runs were pooled
    executor: str | None = None
    threads: int | None = None  # torch intra-op threads in effect
    runtime_threads: int | None = None  # the runtime's own pool, when it has one
    load_ms: float | None = None
    first_run_ms: float | None = None
    peak_rss_mb: float | None = None
    peak_rss_delta_mb: float | None = None
    memory_method: str | None = None
    warmup_rounds: int = 0
    warmup_ns: Nanoseconds = Field(default_factory=list)
    samples_ns: Nanoseconds = Field(default_factory=list)  # every timed round, wall clock
    samples_cpu_ns: Nanoseconds = Field(default_factory=list)  # the same rounds' process CPU time
    clock: str | None = None
    cpu_clock: str | None = None
    artifact_bytes: int | None = None
    artifact_format: str | None = None
    shape_mode: str | None = None
    instructions: InstructionCount | None = None  # pytest bench/ --instructions
    cpu_affinity: list[int] | None = None  # the cores the timing process could run on

    @property
    def key(self) -> CaseKey:
        return CaseKey(self.model, self.variant, self.size)


class BenchEntry(Record):
    """One benchmark of the document (pytest-benchmark's fields that parbench reads)."""

    name: str = ""
    fullname: str = ""
    stats: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)
    extra_info: dict[str, Any] = Field(default_factory=dict)

    def parbench(self) -> BenchExtra | None:
        """parbench's fields, the case filled from the test id when absent; None for a benchmark
        that parbench did not write (no model/variant/size anywhere)."""
        extra = dict(self.extra_info)
        if not all(k in extra for k in ("model", "variant", "size")):
            key = CaseKey.parse(self.name) or CaseKey.parse(self.fullname)
            if key is None:
                return None
            extra = {"model": key.model, "variant": key.variant, "size": key.size, **extra}
        extra = versioned(
            extra, FORMAT_VERSION, "parbench extra_info", f"benchmark {self.name or self.fullname}"
        )
        try:
            return BenchExtra.model_validate(extra)
        except ValidationError as exc:
            raise RecordError(
                f"benchmark {self.name or self.fullname}: extra_info is not parbench's ({describe(exc)})"
            ) from None

    def samples(self, clock: Clock = "wall") -> list[float]:
        """Every timed round in nanoseconds: parbench's own samples, else pytest-benchmark's
        ``stats.data`` (seconds; wall clock only)."""
        extra = self.parbench()
        own = getattr(extra, CLOCK_FIELDS[clock]) if extra is not None else None
        if own:
            return [float(s) for s in own]
        if clock == "cpu":
            raise RecordError(
                f"benchmark {self.name}: no CPU-time samples (extra_info.samples_cpu_ns); "
                "compare it on the wall clock"
            )
        data = self.stats.get("data")
        if not data:
            raise RecordError(
                f"benchmark {self.name}: no raw samples (extra_info.samples_ns or stats.data); "
                "write it with pytest bench/ --benchmark-json=FILE"
            )
        return [float(s) * 1e9 for s in data]

    def warmup_rounds(self) -> int:
        extra = self.parbench()
        if extra is not None and "warmup_rounds" in self.extra_info:
            return extra.warmup_rounds
        return int(self.options.get("warmup_iterations") or 0) if self.options.get("warmup") else 0


class BenchDocument(Record):
    """A pytest-benchmark JSON document."""

    machine_info: dict[str, Any] = Field(default_factory=dict)
    commit_info: dict[str, Any] = Field(default_factory=dict)
    benchmarks: list[BenchEntry]
    datetime: str | None = None
    version: str | None = None
    parbench: dict[str, Any] = Field(default_factory=dict)  # e.g. {"runs": K} from the --runs parent

    def cases(self) -> Iterator[tuple[BenchEntry, BenchExtra]]:
        """The entries parbench wrote, with their parsed extra_info."""
        for entry in self.benchmarks:
            extra = entry.parbench()
            if extra is not None:
                yield entry, extra

    @property
    def commit(self) -> str | None:
        """The commit id, None outside a repository (pytest-benchmark writes "unversioned")."""
        cid = self.commit_info.get("id")
        return None if cid in (None, "", "unversioned") else str(cid)


def parse(doc: Any, origin: str = "benchmark JSON") -> BenchDocument:
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise RecordError(f"{origin} is not a pytest-benchmark JSON file (no 'benchmarks' list); {_HINT}")
    try:
        return BenchDocument.model_validate(doc)
    except ValidationError as exc:
        raise RecordError(
            f"{origin} is not a pytest-benchmark JSON file ({describe(exc)}); {_HINT}"
        ) from None


def read(path: Path | str) -> BenchDocument:
    """The one reader of benchmark files."""
    return parse(read_json_file(Path(path), "a pytest-benchmark JSON file", _HINT), str(path))


def looks_like(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("benchmarks"), list)
