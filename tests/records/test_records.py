"""The record contract: one name rule, one test-id parser, old files still readable, a newer
format refused with a clear message, and the JSON Schemas on disk equal to the code's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from parbench.cli.schema import schema_command
from parbench.errors import ConfigError, RecordError
from parbench.records import bench, parity
from parbench.records.ids import CaseKey, check_model_name, check_variant_name
from parbench.records.schema import SCHEMAS, schema_of

DATA = Path(__file__).resolve().parents[1] / "data"
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schemas"


@pytest.mark.parametrize(
    "text, key",
    [
        ("MyNet2-onnx-256", CaseKey("MyNet2", "onnx", 256)),
        ("test_latency[MyNet2-coreml_fp16-640]", CaseKey("MyNet2", "coreml_fp16", 640)),
        (
            "bench/test_latency.py::test_latency[mobilenet_v2-executorch_int8-300]",
            CaseKey("mobilenet_v2", "executorch_int8", 300),
        ),
        (
            "test_parity[deeplabv3_mobilenet_v3-quantized_int8-512]",
            CaseKey("deeplabv3_mobilenet_v3", "quantized_int8", 512),
        ),
        ("test_other", None),
    ],
)
def test_one_parser_for_test_ids(text, key):
    assert CaseKey.parse(text) == key
    if key is not None:
        assert CaseKey.parse(key.id) == key


@pytest.mark.parametrize("name", ["MyNet2", "mobilenet_v2", "Net.v3", "A"])
def test_model_names_allowed(name):
    assert check_model_name(name) == name


@pytest.mark.parametrize("name", ["my-net", "2net", "", "a b", "net[1]", "x" * 65])
def test_model_names_refused_with_the_rule(name):
    with pytest.raises(ConfigError, match="letters, digits"):
        check_model_name(name)


def test_variant_names_are_lower_case():
    assert check_variant_name("coreml_fp16") == "coreml_fp16"
    with pytest.raises(ConfigError, match="lower-case"):
        check_variant_name("CoreML")


def test_todays_parity_file_reads_as_format_1():
    records = parity.read([DATA / "parity-format1.jsonl"])
    assert len(records) == 9
    assert {r.format_version for r in records} == {1}
    first = records[0]
    assert first.key == CaseKey("tiny_classifier", "eager", 224)
    assert first.verdict == "pass" and first.metrics["output"]["cosine"] > 0.9999
    assert {r.verdict for r in records} == {"pass", "xfail"}


def test_parity_record_round_trips_through_its_writer(tmp_path):
    path = tmp_path / "run.jsonl"
    rec = parity.ParityRecord(
        model="MyNet2",
        variant="onnx",
        size=256,
        verdict="fail",
        metrics={"output": {"rel_l2": 0.5, "cosine": 0.7}},
    )
    parity.append(path, rec)
    parity.append(path, rec.model_copy(update={"verdict": "pass"}))
    back = parity.read([path])
    assert [r.verdict for r in back] == ["fail", "pass"]
    assert back[0].format_version == parity.FORMAT_VERSION
    assert back[0].worst("rel_l2", higher_is_better=False) == 0.5
    assert [r.verdict for r in parity.latest(back)] == ["pass"]


def test_newer_parity_format_is_refused(tmp_path):
    line = json.loads((DATA / "parity-format1.jsonl").read_text().splitlines()[0])
    line["format_version"] = parity.FORMAT_VERSION + 1
    path = tmp_path / "future.jsonl"
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(RecordError, match=r"future.jsonl:1.*format_version 3.*upgrade parbench"):
        parity.read([path])


def test_a_bad_parity_line_names_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"model": "m", "variant": "onnx", "size": 256}\n')
    with pytest.raises(RecordError, match=r"bad.jsonl:1 .*verdict"):
        parity.read([path])
    path.write_text("{not json\n")
    with pytest.raises(RecordError, match=r"bad.jsonl:1 .*not JSON"):
        parity.read([path])


def test_todays_benchmark_file_reads_as_format_1():
    doc = bench.read(DATA / "bench-format1.json")
    cases = list(doc.cases())
    assert len(cases) == 3
    entry, extra = cases[0]
    assert extra.format_version == 1
    assert extra.key == CaseKey.parse(entry.name)
    assert entry.samples("wall") == [float(s) for s in extra.samples_ns]
    assert len(entry.samples("cpu")) == len(extra.samples_cpu_ns) > 0


def test_benchmark_reader_refuses_other_json_with_a_hint(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"results": []}')
    with pytest.raises(RecordError, match="pytest-benchmark JSON.*--benchmark-json"):
        bench.read(path)


def test_schemas_on_disk_are_the_code_s(tmp_path):
    result = CliRunner().invoke(schema_command, ["--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in SCHEMAS:
        written = json.loads((tmp_path / f"{name}.schema.json").read_text())
        assert written == schema_of(name)
        committed = SCHEMA_DIR / f"{name}.schema.json"
        assert committed.is_file(), f"run `parbench schema --out docs/schemas` ({committed} is missing)"
        assert json.loads(committed.read_text()) == written, f"{committed} is stale: run `parbench schema`"
