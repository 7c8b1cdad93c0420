"""An instruction count: what ``pytest bench/ --instructions`` writes under a benchmark's
``extra_info["instructions"]`` (and the history store keeps under the result's ``extra``).

A count is comparable with another only when both were made by the same valgrind exposing the same
CPU features (:attr:`InstructionCount.env`): the libraries pick their kernels from the CPU they see.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from parbench.records._base import Record

InstructionStatus = Literal["counted", "skipped", "error"]


class InstructionCount(Record):
    """One case counted (or not) in one valgrind process."""

    status: InstructionStatus
    message: str = ""  # why a case was skipped or failed
    per_call: float | None = Field(default=None, gt=0)  # instructions per counted call
    total: int | None = Field(default=None, ge=0)  # instructions of all counted calls
    set_aside: int = Field(default=0, ge=0)  # of total, left out of per_call (SET_ASIDE_FUNCTIONS)
    calls: int = Field(default=0, ge=0)
    warmup_calls: int = Field(default=0, ge=0)  # uncounted calls before them (first call included)
    threads: int | None = None  # torch intra-op threads in effect
    runtime_threads: int | None = None  # the session's own pool (ONNX Runtime, ExecuTorch)
    executor: str = ""
    valgrind: str = ""  # `valgrind --version`
    cpu_features: dict[str, Any] = Field(default_factory=dict)  # as torch saw them under valgrind
    process: str = ""  # id of the counting process; --runs entries of one case share it
    onednn: bool = True  # False: counted with torch's oneDNN kernels switched off
    wall_s: float | None = None  # load, uncounted and counted calls, under valgrind

    @model_validator(mode="after")
    def _counted_has_count(self) -> InstructionCount:
        if self.status == "counted" and (self.per_call is None or self.calls < 1):
            raise ValueError("a counted case needs per_call > 0 and calls >= 1")
        if self.status != "counted" and not self.message:
            raise ValueError(f"a {self.status} case needs a message saying why")
        return self

    @property
    def env(self) -> str:
        """What must be equal for two counts to be comparable: valgrind and the CPU features."""
        label = environment_label(self.valgrind, self.cpu_features)
        return label if self.onednn else f"{label}; oneDNN off"


def environment_label(valgrind: str, cpu_features: dict[str, Any]) -> str:
    feats = ",".join(sorted(k for k, v in cpu_features.items() if v is True))
    return f"{valgrind}; cpu {cpu_features.get('capability', '?')} [{feats}]"
