"""JSON Schemas of every record (``parbench schema --out docs/schemas/``).

Other programs read parbench's files with these: the C++ core's tests check the result JSON it
builds against ``device-results.schema.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from parbench.records.bench import BenchDocument, BenchExtra
from parbench.records.config import UserModelEntry
from parbench.records.device import CompleteIn, ResultIn, ResultsIn, RunIn
from parbench.records.manifest import FixtureManifest
from parbench.records.parity import ParityRecord

SCHEMAS: dict[str, type[BaseModel]] = {
    "parity-record": ParityRecord,
    "bench-document": BenchDocument,
    "bench-extra-info": BenchExtra,
    "device-run": RunIn,
    "device-result": ResultIn,
    "device-results": ResultsIn,
    "device-complete": CompleteIn,
    "fixture-manifest": FixtureManifest,
    "user-model": UserModelEntry,
}


def schema_of(name: str) -> dict:
    model = SCHEMAS[name]
    out = model.model_json_schema()
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["$id"] = f"https://parbench.dev/schemas/{name}.schema.json"
    return out


def write_schemas(out_dir: Path | str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in SCHEMAS:
        path = out_dir / f"{name}.schema.json"
        path.write_text(json.dumps(schema_of(name), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
