"""Runs and results of the device runner and the host bench, as the collector API takes them and the
store keeps them (pydantic v2, with their bounds).

The collector validates request bodies with :class:`RunIn` / :class:`ResultsIn` (strict JSON); the
store validates what it is given with the same types (:class:`StoredRun`, :class:`ResultIn`), so a
run or result has one set of rules wherever it comes from (device post, ``parbench device import``,
bench ingestion).  The C++ core's tests check the result JSON it builds against the JSON Schema
generated from :class:`ResultsIn` (``parbench schema``).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from parbench.records.ids import ModelName, VariantName

COLLECTOR_PORT = 8765  # where `parbench serve` listens unless told otherwise
MAX_JSON_DEPTH = 16
MAX_SAMPLES_PER_REQUEST = 2_000_000

RUN_ID_PATTERN = r"^[A-Za-z0-9._-]{8,128}$"
RunId = Annotated[str, StringConstraints(pattern=RUN_ID_PATTERN)]
Millis = Annotated[float, Field(ge=0, lt=1e7, allow_inf_nan=False)]
Sample = Annotated[int, Field(gt=0, lt=10**13)]
ShortStr = Annotated[str, StringConstraints(min_length=1, max_length=200)]
ThermalState = Literal["nominal", "fair", "serious", "critical"]
ComputeUnits = Literal["cpuOnly", "cpuAndGPU", "cpuAndNeuralEngine", "all"]


def _printable(key: str) -> str:
    return key.encode("utf-8", "backslashreplace").decode()


def _check_str(value: str, where: str) -> None:
    """Text must be valid Unicode: a lone UTF-16 surrogate cannot be written as UTF-8, so a row
    holding one could be stored but never served back."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = value[exc.start : exc.end].encode("unicode_escape").decode()
        raise ValueError(
            f"{where or 'value'} holds {bad}, a lone UTF-16 surrogate: send valid Unicode text (UTF-8)"
        ) from None


def _check_text(value: Any, where: str) -> None:
    """Every string and key in `value` (typed fields included) is valid Unicode."""
    if isinstance(value, str):
        _check_str(value, where)
    elif isinstance(value, dict):
        for k, v in value.items():
            inner = f"{where}.{_printable(str(k))}"
            _check_str(str(k), inner)
            _check_text(v, inner)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_text(v, f"{where}[{i}]")


def _check_json(value: Any, where: str = "", depth: int = 0) -> None:
    """Free-form JSON must be finite (no NaN/Infinity), valid Unicode and not absurdly deep."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels at {where or 'top'}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where or 'value'} is {value}: only finite numbers are allowed")
    if isinstance(value, str):
        _check_str(value, where)
    elif isinstance(value, dict):
        for k, v in value.items():
            key = _printable(str(k))
            _check_str(str(k), f"{where}.{key}" if where else key)
            _check_json(v, f"{where}.{key}" if where else key, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, f"{where}[{i}]", depth + 1)


def _finite_json(value: Any) -> Any:
    _check_json(value)
    return value


# RFC 3339 with an upper-case T and Z; no offset means UTC (pytest-benchmark writes naive times).
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})?")


def _iso_datetime(value: str) -> str:
    problem = "must be an RFC 3339 date-time such as 2026-11-23T12:00:00Z or 2026-11-23T13:00:00.5+01:00"
    match = _RFC3339.fullmatch(value)
    if not match:
        raise ValueError(problem)
    try:
        datetime.fromisoformat(value[:19] + (match.group(2) or "").replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{problem} ({exc})") from None
    return value


FreeJson = Annotated[dict[str, Any], AfterValidator(_finite_json)]
IsoTime = Annotated[
    str,
    StringConstraints(min_length=10, max_length=40),
    AfterValidator(_iso_datetime),
    Field(json_schema_extra={"format": "date-time"}),
]
MetricValue = Annotated[float, Field(allow_inf_nan=False)] | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class DeviceInfo(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    model: ShortStr = Field(description="hardware model identifier, e.g. iPhone15,2")
    os: ShortStr = Field(description="e.g. iOS 18.1")
    name: Annotated[str, StringConstraints(max_length=200)] | None = None

    @model_validator(mode="after")
    def _extra_finite(self) -> DeviceInfo:
        _check_json(self.model_extra or {}, "device")
        return self


class RuntimeInfo(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9._-]+$", min_length=1, max_length=64)] = Field(
        description="libtorch-lite, executorch, coreml, libtorch, ..."
    )
    version: Annotated[str, StringConstraints(max_length=100)]

    @model_validator(mode="after")
    def _extra_finite(self) -> RuntimeInfo:
        _check_json(self.model_extra or {}, "runtime")
        return self


class RunIn(_Strict):
    source: Literal["device", "host"] = "device"
    created_utc: IsoTime
    machine: FreeJson = Field(default_factory=dict)
    device: DeviceInfo | None = None
    runtime: RuntimeInfo
    commit: Annotated[str, StringConstraints(max_length=100)] | None = None
    env: dict[
        Annotated[str, StringConstraints(max_length=200)], Annotated[str, StringConstraints(max_length=500)]
    ] = Field(default_factory=dict)
    fixture_set: FreeJson | None = None

    @model_validator(mode="after")
    def _valid_unicode(self) -> RunIn:
        for name in ("device", "runtime", "commit", "env", "created_utc"):
            value = getattr(self, name)
            _check_text(value.model_dump() if isinstance(value, BaseModel) else value, name)
        return self

    @model_validator(mode="after")
    def _device_runs_name_device(self) -> RunIn:
        if self.source == "device" and self.device is None:
            raise ValueError("a device run needs 'device': {'model': 'iPhone15,2', 'os': 'iOS 18.1'}")
        return self


class StoredRun(RunIn):
    """A run as the store takes it: the run's metadata plus its id (the URL path on the API)."""

    model_config = ConfigDict(extra="forbid", strict=False)
    run_id: RunId


class ResultIn(_Strict):
    model: ModelName
    variant: VariantName
    size: Annotated[int, Field(ge=16, le=8192)]
    case: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_./-]+$", min_length=1, max_length=200)] = (
        "all"
    )
    compute_units: ComputeUnits | None = None
    run_index: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    threads: Annotated[int, Field(ge=1, le=1024)] | None = None
    executor: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    load_ms: Millis | None = None
    compile_ms: Millis | None = None
    first_run_ms: Millis | None = None
    samples_ns: Annotated[list[Sample], Field(max_length=1_000_000)] = Field(default_factory=list)
    warmup_rounds: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    peak_memory_mb: Millis | None = None
    thermal_state_before: ThermalState | None = None
    thermal_state_after: ThermalState | None = None
    metrics: (
        dict[
            Annotated[str, StringConstraints(min_length=1, max_length=200)],
            dict[Annotated[str, StringConstraints(min_length=1, max_length=100)], MetricValue],
        ]
        | None
    ) = None
    xctest: FreeJson | None = None
    error: Annotated[str, StringConstraints(min_length=1, max_length=20_000)] | None = None
    extra: FreeJson | None = None

    @model_validator(mode="after")
    def _valid_unicode(self) -> ResultIn:
        for name in ("model", "variant", "case", "executor", "metrics", "error"):
            _check_text(getattr(self, name), name)
        return self

    @model_validator(mode="after")
    def _success_has_timings(self) -> ResultIn:
        if self.error is None:
            missing = [k for k in ("load_ms", "first_run_ms") if getattr(self, k) is None]
            if not self.samples_ns:
                missing.append("samples_ns (non-empty)")
            if missing:
                raise ValueError(
                    f"a result without 'error' needs {', '.join(missing)}; "
                    "a failed case sets 'error' to the failure message instead"
                )
        return self


# Field lists derived from the types (the store's columns and content hashes follow them).
RUN_FIELDS: tuple[str, ...] = tuple(RunIn.model_fields)
RESULT_FIELDS: tuple[str, ...] = tuple(ResultIn.model_fields)


class ResultsIn(_Strict):
    results: Annotated[list[ResultIn], Field(min_length=1, max_length=10_000)]

    @model_validator(mode="after")
    def _bounded_samples(self) -> ResultsIn:
        total = sum(len(r.samples_ns) for r in self.results)
        if total > MAX_SAMPLES_PER_REQUEST:
            raise ValueError(
                f"results hold {total} samples, at most {MAX_SAMPLES_PER_REQUEST} per request: "
                "post them in several requests"
            )
        return self


class CompleteIn(_Strict):
    status: Literal["complete", "failed"] = "complete"
    message: Annotated[str, StringConstraints(max_length=10_000)] | None = None
    expected_results: Annotated[int, Field(ge=0, le=100_000_000)] | None = None


class RunsQuery(BaseModel):
    """Query of GET /runs; unknown parameters are refused so that a typo does not go unnoticed."""

    model_config = ConfigDict(extra="forbid")
    source: Literal["device", "host"] | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    offset: Annotated[int, Field(ge=0, le=10**9)] = 0


class RunSummary(BaseModel):
    run_id: str
    source: str
    created_utc: str
    received_utc: str
    completed_utc: str | None
    status: Literal["open", "complete", "failed"]
    status_message: str | None
    n_results: int
    machine: dict[str, Any]
    device: dict[str, Any] | None
    runtime: dict[str, Any]
    commit: str | None
    env: dict[str, Any]
    fixture_set: dict[str, Any] | None


class ResultOut(BaseModel):
    model: str
    variant: str
    size: int
    case: str
    compute_units: str | None
    run_index: int
    threads: int | None
    executor: str | None
    load_ms: float | None
    compile_ms: float | None
    first_run_ms: float | None
    samples_ns: list[int]
    warmup_rounds: int
    peak_memory_mb: float | None
    thermal_state_before: str | None
    thermal_state_after: str | None
    metrics: dict[str, Any] | None
    xctest: dict[str, Any] | None
    error: str | None
    extra: dict[str, Any] | None
    received_utc: str
    n_samples: int
    median_ms: float | None
    mean_ms: float | None
    min_ms: float | None


class RunWithResults(BaseModel):
    run: RunSummary
    results: list[ResultOut]


class RunList(BaseModel):
    total: int
    runs: list[RunSummary]


class StoredCounts(BaseModel):
    stored: int
    duplicates: int


class Health(BaseModel):
    status: Literal["ok"]
    api_version: int
    parbench: str
    store_schema_version: int
    fixtures: bool
    server_time_utc: str
    limits: dict[str, int] | None = None


class ErrorOut(BaseModel):
    error: str
    reason: str
    errors: list[dict[str, Any]] | None = None
