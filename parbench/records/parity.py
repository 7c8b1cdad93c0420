"""The parity record: one case's verdict and metrics (``reports/parity/<run>[-<worker>].jsonl``).

One JSON line per model x variant x size, appended as the suite goes; with pytest-xdist each
worker writes ``<run>-gwN.jsonl``.  Lines written before ``format_version`` existed (version 1)
read as the same record.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from parbench._util.clock import utc_now
from parbench._util.versions import versions
from parbench.errors import RecordError
from parbench.records._base import Record, describe, versioned
from parbench.records.ids import CaseKey, ModelName, VariantName

FORMAT_VERSION = 2
Verdict = Literal["pass", "fail", "error", "skip", "xfail"]
VERDICTS: tuple[str, ...] = ("pass", "fail", "error", "skip", "xfail")
RUN_FILE_RE = re.compile(r"^(?P<run>\d{8}T\d{6}Z-[0-9a-f]+)(?:-(?P<worker>gw\d+))?\.jsonl$")


class LayerPoint(Record):
    """One compared layer of a localisation, in eager order (the SNR profile along the network)."""

    order: int = Field(ge=0)
    layer: str
    snr_db: float | None = None
    introduced_db: float | None = None  # SNR lost against the layers feeding it
    flagged: bool = False


class FirstDivergence(Record):
    """Where a failing form first departs from eager, layer by layer (``parbench.diagnose``).

    ``status``: ``found`` (``layer`` is the first flagged layer), ``none`` (every compared layer is
    within the family's per-layer limits: what fails is the task metric alone), or ``not_run`` (the
    localisation did not run or did not finish; ``reason`` says why and what to run instead)."""

    status: Literal["found", "none", "not_run"]
    reason: str = ""
    layer: str | None = None  # nn.Module path of the first flagged layer
    kind: str = ""  # its module class
    how: str = ""  # compared (SNR/cosine over the limit), absent (not in the form), shape
    fused_with: list[str] = Field(default_factory=list)  # layers the form computes in the same value
    snr_db: float | None = None
    cosine: float | None = None
    ch_snr_db: float | None = None  # median over channels of each channel's SNR
    introduced_db: float | None = None
    flagged: list[str] = Field(default_factory=list)  # the first few flagged layers, in order
    onset: str = ""  # one layer starts the damage, or it builds up over several
    largest_drop: str = ""  # the layer that introduces the most error, and how much
    thresholds: dict[str, float] = Field(default_factory=dict)
    layers: int = 0  # layers of the eager model
    compared: int = 0  # layers the form carries and were compared
    identity: str = ""  # how the form's values were tied to module paths
    tool: str = ""  # how the form's intermediate values were read
    case: str = ""  # the fixture case localised
    size: int | None = None
    seconds: float | None = None
    same_as: str = ""  # another case of this run whose localisation stands for this one
    profile: list[LayerPoint] = Field(default_factory=list)


class ParityRecord(Record):
    format_version: int = FORMAT_VERSION
    model: ModelName
    variant: VariantName
    size: int = Field(ge=1)
    task: str = ""
    family: str = ""
    verdict: Verdict
    message: str = ""
    executor: str = ""
    # per output name: metric -> value (the worst over the cases)
    metrics: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    thresholds: dict[str, float] = Field(default_factory=dict)
    cases: list[str] = Field(default_factory=list)
    # what the export decided: path, format, bytes, sizes, per_size_reason, export_seconds, ...
    export: dict[str, Any] = Field(default_factory=dict)
    cache: str = ""  # "hit", "exported" or "" (no artifact)
    # where the case's wall time went: stage (fixtures, artifact, export, load, run, compare, ...) -> s
    timing: dict[str, float] = Field(default_factory=dict)
    timing_cpu: dict[str, float] = Field(default_factory=dict)  # the same stages' process CPU seconds
    # the first layer or op where the form departs from eager, when localisation ran
    first_divergence: FirstDivergence | None = None
    versions: dict[str, str] = Field(default_factory=versions)
    timestamp: str = Field(default_factory=utc_now)

    @property
    def key(self) -> CaseKey:
        return CaseKey(self.model, self.variant, self.size)

    @property
    def id(self) -> str:
        return self.key.id

    def worst(self, metric: str, higher_is_better: bool) -> float | None:
        values = [m[metric] for m in self.metrics.values() if m.get(metric) is not None]
        if not values:
            return None
        return min(values) if higher_is_better else max(values)

    def to_line(self) -> str:
        return json.dumps(self.model_dump(mode="json"), default=str)


def append(path: Path, record: ParityRecord) -> None:
    """Append one record as a JSON line (the writer)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(record.to_line() + "\n")


def read(paths: Iterable[Path | str]) -> list[ParityRecord]:
    """Every record of these JSON-lines files, in order (the reader)."""
    out: list[ParityRecord] = []
    for path in map(Path, paths):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise RecordError(f"cannot read parity results {path}: {exc}") from exc
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                raw = versioned(json.loads(line), FORMAT_VERSION, "a parity record", f"{path}:{n}")
                out.append(ParityRecord.model_validate(raw))
            except ValueError as exc:
                if isinstance(exc, RecordError):
                    raise
                why = describe(exc) if isinstance(exc, ValidationError) else f"not JSON: {exc}"
                raise RecordError(
                    f"{path}:{n} is not a parity result line ({why}); give the "
                    "reports/parity/*.jsonl files that pytest parity/ writes"
                ) from None
    return out


def run_files(newest: Path) -> list[Path]:
    """All files of the parity run that wrote ``newest`` (one per pytest-xdist worker)."""
    m = RUN_FILE_RE.match(newest.name)
    if not m:
        return [newest]
    return sorted(
        p
        for p in newest.parent.glob(f"{m['run']}*.jsonl")
        if (q := RUN_FILE_RE.match(p.name)) and q["run"] == m["run"]
    )


def latest(records: Sequence[ParityRecord]) -> list[ParityRecord]:
    """One record per case: a later record for the same model x variant x size wins."""
    by_key: dict[CaseKey, ParityRecord] = {}
    for r in records:
        by_key.pop(r.key, None)
        by_key[r.key] = r
    return list(by_key.values())
