"""What every record shares: a pydantic base, and JSON reading that fails with the file's name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from parbench.errors import RecordError


class Record(BaseModel):
    """A record type: unknown keys are kept (newer writers may add fields), values are validated."""

    model_config = ConfigDict(extra="allow")


def versioned(raw: Any, current: int, what: str, origin: str) -> Any:
    """A record's raw data with its ``format_version`` (1 when the writer predates the field);
    RecordError for a version newer than this parbench reads."""
    if isinstance(raw, dict):
        version = raw.get("format_version", 1)
        if not isinstance(version, int) or version > current:
            import parbench

            raise RecordError(
                f"{origin}: {what} of format_version {version!r}; this parbench "
                f"({parbench.__version__}) reads versions up to {current}: upgrade parbench"
            )
        if "format_version" not in raw:
            raw = {**raw, "format_version": 1}
    return raw


def describe(exc: ValidationError, limit: int = 4) -> str:
    """A ValidationError in one line per problem: ``field.path: message`` (the message alone for a
    rule over several fields)."""
    lines = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{where}: {msg}" if where else msg)
    more = len(exc.errors()) - limit
    return "; ".join(lines) + (f"; and {more} more" if more > 0 else "")


def read_json_file(path: Path, what: str, hint: str) -> Any:
    """Parsed JSON of ``path``; RecordError naming the file and what to give instead."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RecordError(f"cannot read {path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path} is not UTF-8 text, so not {what}; {hint}") from exc
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RecordError(f"{path} is not valid JSON ({exc}), so not {what}; {hint}") from exc
