"""The instruction-count runner: case selection, dump parsing, records, and a real count under valgrind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from pydantic import ValidationError

from parbench.errors import RecordError
from parbench.records.bench import BenchEntry
from parbench.records.instructions import InstructionCount
from parbench.run import instructions as ins
from parbench.run.instructions import (
    CountSettings,
    InstrCase,
    InstructionRecord,
    InstructionsError,
    parse_callgrind_functions,
    parse_callgrind_total,
    parse_instr_sizes,
    select_cases,
)

DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 13564
cmd:  python -m parbench.run.instructions
part: 2

desc: Trigger: Client Request

positions: line
events: {events}
summary: {summary}


fn=(1) main
0 5
totals: {summary}
"""


def test_instr_sizes_values() -> None:
    assert parse_instr_sizes(None) == "smallest"
    assert parse_instr_sizes("ALL") == "all"
    assert parse_instr_sizes("224, 256") == (224, 256)
    for bad in ("big", "224,x", "0", ","):
        with pytest.raises(InstructionsError, match="--instr-sizes"):
            parse_instr_sizes(bad)


def test_select_cases_smallest_per_model_host_forms_only() -> None:
    cases = [
        ("a", "eager", 320),
        ("a", "eager", 224),
        ("a", "onnx", 224),
        ("a", "coreml_fp16", 224),
        ("b", "eager", 512),
        ("b", "lite", 256),
    ]
    assert select_cases(cases) == [
        InstrCase("a", "eager", 224),
        InstrCase("a", "onnx", 224),
        InstrCase("b", "lite", 256),
    ]
    assert len(select_cases(cases, "all")) == 5
    assert select_cases(cases, (512, 320)) == [InstrCase("a", "eager", 320), InstrCase("b", "eager", 512)]


def test_parse_callgrind_total_reads_the_summary_in_event_order() -> None:
    assert parse_callgrind_total(DUMP.format(events="Ir", summary="777326")) == 777326
    assert parse_callgrind_total(DUMP.format(events="Ir Dr Dw", summary="10 20 30"), "Dw") == 30
    with pytest.raises(InstructionsError, match="not Ir"):
        parse_callgrind_total(DUMP.format(events="Dr", summary="5"))
    with pytest.raises(InstructionsError, match="no 'events:'"):
        parse_callgrind_total("summary: 5\n")


# the shape of a real dump (valgrind 3.19, --dump-line=no): names compressed to "(id)" after their
# first use, which may be a cfn= line; a call's cost on the line after its calls= line
SET_ASIDE_DUMP = """events: Ir
summary: 10000

fn=(1) at::native::qconv
0 500
cfn=(2) pytorch_qnnp_indirection_init_dwconv
calls=1 0
0 300
cfn=(3) pytorch_q8conv_ukernel_4x4c2__sse2
calls=4 0
0 8000

fn=(2)
0 300

fn=(4) pytorch_qnnp_indirection_init_conv3d
0 120
cfn=(5) memset
calls=1 0
0 30

fn=(5)
+2 30
"""


def test_set_aside_functions_are_their_own_blocks_and_calls_not_their_callers() -> None:
    # dwconv 300 (its block, not the caller's call line) + conv3d 120 and its call to memset 30
    assert parse_callgrind_functions(SET_ASIDE_DUMP, ins.SET_ASIDE_FUNCTIONS) == 450
    assert parse_callgrind_functions(SET_ASIDE_DUMP, ("pytorch_q8conv",)) == 0  # only called, no block
    assert parse_callgrind_functions(SET_ASIDE_DUMP, ("memset",)) == 30
    assert parse_callgrind_functions(SET_ASIDE_DUMP, ("at::native::qconv",)) == 8800


def _counted(**over: object) -> InstructionCount:
    fields = dict(
        status="counted",
        per_call=27e6,
        total=27_000_000,
        calls=1,
        warmup_calls=3,
        threads=1,
        runtime_threads=1,
        valgrind="valgrind-3.19.0",
        cpu_features={"capability": "AVX2", "avx2": True, "avx512": False},
        process="p",
    )
    return InstructionCount(**{**fields, **over})


def test_record_round_trip_and_environment_label() -> None:
    rec = InstructionRecord("m", "onnx", 224, _counted())
    back = InstructionRecord.from_json(json.loads(json.dumps(rec.to_json())))
    assert back == rec and back.case == InstrCase("m", "onnx", 224)
    assert rec.count.env == "valgrind-3.19.0; cpu AVX2 [avx2]"
    assert _counted(onednn=False).env == "valgrind-3.19.0; cpu AVX2 [avx2]; oneDNN off"


def test_count_record_validates() -> None:
    with pytest.raises(ValidationError, match="per_call > 0"):
        InstructionCount(status="counted", calls=1)
    with pytest.raises(ValidationError, match="greater than 0"):
        _counted(per_call=0)
    with pytest.raises(ValidationError, match="needs a message"):
        InstructionCount(status="skipped")
    with pytest.raises(ValidationError, match="status"):
        InstructionCount(status="maybe", message="x")


def test_bench_extra_info_validates_its_count() -> None:
    extra = {"model": "m", "variant": "eager", "size": 224, "samples_ns": [1000]}
    entry = BenchEntry(
        name="test_latency[m-eager-224]", extra_info={**extra, "instructions": {"status": "counted"}}
    )
    with pytest.raises(RecordError, match="instructions"):
        entry.parbench()
    good = BenchEntry(name="x", extra_info={**extra, "instructions": _counted().model_dump(mode="json")})
    assert good.parbench().instructions.per_call == 27e6


def test_count_settings_are_checked() -> None:
    with pytest.raises(InstructionsError, match="calls"):
        CountSettings(calls=0)
    with pytest.raises(InstructionsError, match="warmup"):
        CountSettings(warmup=-1)


def test_missing_valgrind_says_how_to_install_it() -> None:
    with pytest.raises(InstructionsError, match="apt-get install -y valgrind"):
        ins.valgrind_version("no-such-valgrind-here")


def test_duplicate_cases_are_rejected() -> None:
    with pytest.raises(InstructionsError, match="twice"):
        ins.count_instructions(
            [("m", "eager", 224), ("m", "eager", 224)],
            settings=CountSettings(valgrind="no-such-valgrind-here"),
        )


def test_child_refuses_to_run_outside_the_parent() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PARBENCH_INSTRUCTIONS_CHILD"}
    out = subprocess.run(
        [sys.executable, "-m", "parbench.run.instructions", "--child", "x", "--results", "y"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert out.returncode == 2 and "runs under valgrind" in out.stderr


def test_address_dependent_forms_get_a_valgrind_process_of_their_own(tmp_path, monkeypatch) -> None:
    """QNNPACK's count depends on where earlier cases left the heap: quantized_int8 cases are
    counted in a process of their own, after the others; a restart stays within its group."""
    calls: list[tuple[int, list[str]]] = []
    died_once: set[str] = set()

    def fake_child(cases, harness, settings, version, work, attempt, log):
        calls.append((attempt, [c.id for c in cases]))
        first = cases[0]
        if first.variant == "quantized_int8" and not died_once:  # the first such process dies
            died_once.add(first.id)
            return [], (first, "Segmentation fault")
        return [ins._record(c, "counted", per_call=1.0, total=1, calls=1) for c in cases], None

    monkeypatch.setattr(ins, "valgrind_version", lambda valgrind="valgrind": "valgrind-3.19.0")
    monkeypatch.setattr(ins, "_run_child", fake_child)
    cases = [
        ("tiny_classifier", "eager", 224),
        ("tiny_classifier", "quantized_int8", 224),
        ("tiny_classifier", "onnx", 224),
        ("tiny_generator", "quantized_int8", 256),
        ("tiny_generator", "lite", 256),
    ]
    recs = ins.count_instructions(cases, workdir=tmp_path, prepare_first=False)
    assert calls == [
        (0, ["tiny_classifier-eager-224", "tiny_classifier-onnx-224", "tiny_generator-lite-256"]),
        (1, ["tiny_classifier-quantized_int8-224", "tiny_generator-quantized_int8-256"]),
        (2, ["tiny_generator-quantized_int8-256"]),  # the restart after the crash, same group
    ]
    assert [(r.model, r.variant, r.size) for r in recs] == cases  # in the order given
    assert [r.status for r in recs] == ["counted", "error", "counted", "counted", "counted"]
    assert "Segmentation fault" in recs[1].count.message


def test_valgrind_command_collects_only_on_request(tmp_path) -> None:
    cmd = ins.valgrind_command(
        "valgrind",
        tmp_path / "cg.out",
        tmp_path / "vg.log",
        "python",
        tmp_path / "p.json",
        tmp_path / "r.jsonl",
    )
    assert cmd[:2] == ["valgrind", "--tool=callgrind"]
    assert "--collect-atstart=no" in cmd and "--instr-atstart=yes" in cmd
    assert cmd[cmd.index("python") + 1 : cmd.index("python") + 3] == ["-m", "parbench.run.instructions"]


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("valgrind") is None, reason="valgrind is not installed (apt-get install valgrind)"
)
@pytest.mark.skipif(
    os.environ.get("PARBENCH_VALGRIND_TESTS") != "1",
    reason="minutes under valgrind; set PARBENCH_VALGRIND_TESTS=1 (the nightly instructions job counts every night)",
)
def test_counts_a_real_model_under_valgrind(tmp_path) -> None:
    """One valgrind process counts a torch module through the harness; a form that does not run on
    this host is skipped with the reason (minutes: torch starts under valgrind)."""
    cache = tmp_path / "cache"
    config = tmp_path / "models.toml"
    config.write_text(
        '[models.identity]\nfactory = "torch.nn:Identity"\nsizes = [16]\n'
        'inputs = [{name = "x", shape = [1, 3, "size", "size"]}]\n'
    )
    recs = ins.count_instructions(
        [("identity", "eager", 16), ("identity", "coreml_fp16", 16)],
        ins.HarnessSettings(str(config), str(cache)),
        CountSettings(calls=2),
        workdir=tmp_path / "work",
    )
    eager, coreml = (r.count for r in recs)
    assert eager.status == "counted", eager.message
    assert eager.total > 1000 and eager.per_call == eager.total / 2
    assert eager.threads == 1 and eager.valgrind.startswith("valgrind-")
    assert eager.cpu_features.get("capability")
    assert coreml.status == "skipped" and "host" in coreml.message
