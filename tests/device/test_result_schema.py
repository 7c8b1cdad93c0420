"""The C++ core's run and result JSON follow the same JSON Schemas as parbench's records
(docs/schemas/, written by `parbench schema` from parbench/records/device.py)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from parbench.device.build import BuildResult
from parbench.device.replay import run_replay

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_core_result_json_follows_the_records_schema(
    core_build: BuildResult, collector, tmp_path: Path
) -> None:
    outcome = run_replay(
        core_build.binary,
        token=collector.token,
        collector=collector.url,
        rounds=3,
        warmup=1,
        threads=1,
        cache_dir=tmp_path / "cache",
    )
    assert outcome.returncode == 0, outcome.stderr
    doc = outcome.doc
    assert doc is not None and doc["results"]
    run_errors = sorted(e.message for e in validator("device-run").iter_errors(doc["run"]))
    assert run_errors == [], run_errors
    results = validator("device-results")
    problems = sorted(e.message for e in results.iter_errors({"results": doc["results"]}))
    assert problems == [], problems
    # the schema has teeth: what the collector would refuse, it refuses too
    bad = dict(doc["results"][0], samples_ns=[0])
    assert list(results.iter_errors({"results": [bad]}))
    bad = dict(doc["results"][0], model="my-net")
    assert list(results.iter_errors({"results": [bad]}))
