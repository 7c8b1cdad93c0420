"""Instruction-count verdicts: the exact rule, reading counts from bench JSON, and the table."""

from __future__ import annotations

import json

import pytest

from parbench.cli.regress import compare_command
from parbench.errors import RegressError
from parbench.records import bench
from parbench.records.instructions import InstructionCount
from parbench.regress.instructions import (
    DEFAULT_INSTR_FLOOR,
    DEFAULT_INSTR_NOISE,
    compare_instructions,
    counts_from_benchmark_doc,
    decide_instructions,
    format_instruction_table,
    load_instruction_counts,
    store_instruction_counts,
)
from parbench.run.instructions import InstructionRecord, merge_into_benchmark_json

ENV = "valgrind-3.19.0; cpu AVX2 [avx2]"
BASE = 150_000_000.0


def test_identical_counts_are_unchanged() -> None:
    d = decide_instructions([BASE, BASE + 40], [BASE + 10], baseline_env=[ENV], candidate_env=[ENV])
    assert d.verdict == "unchanged" and d.note == ""
    assert d.ratio == pytest.approx(1.0, abs=1e-6)
    assert d.n_baseline == 2 and d.n_candidate == 1
    assert d.baseline == pytest.approx((BASE + 20) / 1e6)  # median, in millions


@pytest.mark.parametrize(
    ("change", "verdict"),
    [(0.0101, "slower"), (0.03, "slower"), (0.10, "slower"), (-0.011, "faster"), (-0.03, "faster")],
)
def test_changes_beyond_the_floor(change: float, verdict: str) -> None:
    d = decide_instructions([BASE] * 3, [BASE * (1 + change)] * 3)
    assert d.verdict == verdict
    assert d.ratio == pytest.approx(1 + change)
    assert d.ci_low == pytest.approx(1 + change) and d.ci_high == pytest.approx(1 + change)


def test_faster_bound_is_the_inverse_of_the_floor() -> None:
    # 0.99 x is not 1% faster at a 1% floor: faster means at most 1 / 1.01 = 0.990099 x
    assert decide_instructions([BASE], [BASE * 0.9901]).verdict == "unchanged"
    assert decide_instructions([BASE], [BASE / (1 + DEFAULT_INSTR_FLOOR) * 0.9999]).verdict == "faster"


def test_real_change_below_the_floor_is_unchanged_with_a_note() -> None:
    d = decide_instructions([BASE], [BASE * 1.008])
    assert d.verdict == "unchanged"
    assert "+0.80%" in d.note and "smaller than the floor" in d.note


def test_noise_bound_separates_equal_from_small_change() -> None:
    just_inside = BASE * (1 + DEFAULT_INSTR_NOISE * 0.9)
    just_outside = BASE * (1 + DEFAULT_INSTR_NOISE * 1.1)
    assert decide_instructions([BASE], [just_inside]).note == ""
    assert "real change" in decide_instructions([BASE], [just_outside]).note


def test_floor_decides_not_the_spread() -> None:
    # a candidate 0.9% slower stays unchanged at the 1% floor and is slower at a 0.8% floor
    assert decide_instructions([BASE], [BASE * 1.009]).verdict == "unchanged"
    assert decide_instructions([BASE], [BASE * 1.009], floor=0.008).verdict == "slower"


def test_range_and_spread_over_all_counts() -> None:
    d = decide_instructions([100e6, 101e6], [104e6, 105e6])
    assert d.verdict == "slower"
    assert d.ci_low == pytest.approx(104 / 101) and d.ci_high == pytest.approx(105 / 100)
    assert d.noise == pytest.approx(0.01)  # the baseline's 1% disagreement


def test_different_setups_are_not_compared() -> None:
    other = "valgrind-3.22.0; cpu AVX2 [avx2]"
    d = decide_instructions([BASE], [BASE * 1.2], baseline_env=[ENV], candidate_env=[other])
    assert d.verdict == "unknown"
    assert "3.19.0" in d.note and "3.22.0" in d.note


def test_missing_side_is_unknown() -> None:
    assert decide_instructions([], [BASE]).verdict == "unknown"
    d = decide_instructions([BASE], [])
    assert d.verdict == "unknown" and "no candidate count" in d.note


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"floor": 0.0}, "floor must be > 0"),
        ({"noise": 0.02}, "below the floor"),
        ({"noise": -0.1}, "noise bound"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(RegressError, match=message):
        decide_instructions([BASE], [BASE], **kwargs)


def test_non_positive_counts_are_rejected() -> None:
    with pytest.raises(RegressError, match="positive"):
        decide_instructions([0.0], [BASE])


# ---------------------------------------------------------------------------------------------
# bench JSON in and out


def _doc(entries: list[tuple[str, str, int, int]]) -> dict:
    """A pytest-benchmark document: (model, variant, size, run_index) per entry, no counts yet."""
    return {
        "benchmarks": [
            {
                "name": f"test_latency[{m}-{v}-{s}]",
                "fullname": f"bench/test_latency.py::test_latency[{m}-{v}-{s}]",
                "extra_info": {
                    "model": m,
                    "variant": v,
                    "size": s,
                    "run_index": i,
                    "samples_ns": [1000, 1100],
                },
            }
            for m, v, s, i in entries
        ]
    }


def _record(
    model: str,
    variant: str,
    size: int,
    instructions: float | None,
    status: str = "counted",
    process: str = "p1",
) -> InstructionRecord:
    count = InstructionCount(
        status=status,
        message="" if status == "counted" else "why not",
        per_call=instructions,
        total=None if instructions is None else int(instructions * 3),
        calls=3,
        warmup_calls=3,
        threads=1,
        valgrind="valgrind-3.19.0",
        cpu_features={"capability": "AVX2", "avx2": True, "avx512": False},
        process=process,
    )
    return InstructionRecord(model, variant, size, count)


def test_merge_annotates_every_run_and_loader_keeps_one_count_per_process(tmp_path) -> None:
    doc = _doc(
        [("m", "eager", 224, 0), ("m", "eager", 224, 1), ("m", "onnx", 224, 0), ("m", "eager", 320, 0)]
    )
    n = merge_into_benchmark_json(
        doc, [_record("m", "eager", 224, 5e6), _record("m", "onnx", 224, None, status="skipped")]
    )
    assert n == 3
    eager = [b["extra_info"] for b in doc["benchmarks"] if b["extra_info"]["variant"] == "eager"]
    assert eager[0]["instructions"]["per_call"] == eager[1]["instructions"]["per_call"] == 5e6
    assert "instructions" not in eager[2]  # size 320 was not counted
    onnx = doc["benchmarks"][2]["extra_info"]["instructions"]
    assert onnx["status"] == "skipped" and onnx["per_call"] is None
    counts = counts_from_benchmark_doc(bench.parse(doc), "a.json")
    assert [(c.key, c.instructions, c.env) for c in counts] == [
        (("m", "eager", "224"), 5e6, "valgrind-3.19.0; cpu AVX2 [avx2]")
    ]


def test_compare_files_end_to_end(tmp_path) -> None:
    base, cand = (
        _doc([("m", "eager", 224, 0), ("m", "onnx", 224, 0)]),
        _doc([("m", "eager", 224, 0), ("m", "onnx", 224, 0)]),
    )
    merge_into_benchmark_json(base, [_record("m", "eager", 224, 5e6), _record("m", "onnx", 224, 2e6)])
    merge_into_benchmark_json(
        cand,
        [
            _record("m", "eager", 224, 5e6 * 1.03, process="p2"),
            _record("m", "onnx", 224, 2e6 + 7, process="p2"),
        ],
    )
    (tmp_path / "a.json").write_text(json.dumps(base))
    (tmp_path / "b.json").write_text(json.dumps(cand))
    rows = compare_instructions(
        load_instruction_counts([tmp_path / "a.json"]), load_instruction_counts([tmp_path / "b.json"])
    )
    assert [(r.variant, r.metric, r.decision.verdict) for r in rows] == [
        ("eager", "instructions", "slower"),
        ("onnx", "instructions", "unchanged"),
    ]
    table = format_instruction_table(rows)
    assert "| m | eager | 224 | 5.000 | 5.150 | +3.000% |" in table
    assert table.count("\n") == 3


def test_files_without_counts_say_how_to_make_them(tmp_path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(_doc([("m", "eager", 224, 0)])))
    with pytest.raises(RegressError, match="--instructions"):
        load_instruction_counts([tmp_path / "a.json"])


def test_bad_count_in_file_names_the_file_and_benchmark(tmp_path) -> None:
    doc = _doc([("m", "eager", 224, 0)])
    doc["benchmarks"][0]["extra_info"]["instructions"] = "many"
    (tmp_path / "a.json").write_text(json.dumps(doc))
    with pytest.raises(RegressError, match=r"test_latency\[m-eager-224\].*instructions"):
        load_instruction_counts([tmp_path / "a.json"])


# ---------------------------------------------------------------------------------------------
# parbench compare --metric instructions


def _write_side(path, eager: float, onnx: float, process: str) -> str:
    doc = _doc([("m", "eager", 224, 0), ("m", "eager", 224, 1), ("m", "onnx", 224, 0)])
    merge_into_benchmark_json(
        doc,
        [
            _record("m", "eager", 224, eager, process=process),
            _record("m", "onnx", 224, onnx, process=process),
        ],
    )
    path.write_text(json.dumps(doc))
    return str(path)


def test_cli_exit_status_follows_the_verdicts(tmp_path) -> None:
    from click.testing import CliRunner

    a = _write_side(tmp_path / "a.json", 5e6, 2e6, "p1")
    same = _write_side(tmp_path / "b.json", 5e6 + 3, 2e6 - 2, "p2")
    slower = _write_side(tmp_path / "c.json", 5e6 * 1.03, 2e6, "p3")
    runner = CliRunner()
    res = runner.invoke(
        compare_command, [a, same, "--metric", "instructions", "--json", str(tmp_path / "v.json")]
    )
    assert res.exit_code == 0, res.output
    assert "2 compared on instruction counts: 0 regression(s)" in res.output
    assert json.loads((tmp_path / "v.json").read_text())["settings"]["floor"] == DEFAULT_INSTR_FLOOR
    res = runner.invoke(compare_command, [a, slower, "--metric", "instructions"])
    assert res.exit_code == 1, res.output
    assert "| m | eager | 224 | 5.000 | 5.150 | +3.000% |" in res.output and "slower" in res.output
    # an explicit --floor replaces the 1% default: 3% is not beyond a 5% floor
    res = runner.invoke(compare_command, [a, slower, "--metric", "instructions", "--floor", "0.05"])
    assert res.exit_code == 0, res.output


def test_cli_bad_inputs_exit_2(tmp_path) -> None:
    from click.testing import CliRunner

    a = _write_side(tmp_path / "a.json", 5e6, 2e6, "p1")
    (tmp_path / "plain.json").write_text(json.dumps(_doc([("m", "eager", 224, 0)])))
    res = CliRunner().invoke(compare_command, [a, str(tmp_path / "plain.json"), "--metric", "instructions"])
    assert res.exit_code == 2 and "--instructions" in res.output
    res = CliRunner().invoke(compare_command, [a, a, "--metric", "instructions"])
    assert res.exit_code == 2 and "same counting process" in res.output


def test_history_store_keeps_counts_and_compares_nights(tmp_path) -> None:
    from click.testing import CliRunner

    from parbench.history.ingest import ingest_benchmark_json
    from parbench.history.store import Store

    db = tmp_path / "history.sqlite"
    with Store(db) as store:
        for night, factor in enumerate([1.0, 1.0002, 1.0, 1.03]):
            doc = _doc([("m", "eager", 224, 0)])
            doc["benchmarks"][0]["extra_info"].update(executor="torch", load_ms=1.0, first_run_ms=2.0)
            doc["datetime"] = f"2026-02-0{night + 1}T02:00:00+00:00"
            doc["machine_info"] = {"python_version": "3.11"}
            doc["commit_info"] = {"id": f"{night:02d}" * 20}
            merge_into_benchmark_json(doc, [_record("m", "eager", 224, 5e6 * factor, process=f"n{night}")])
            path = tmp_path / f"n{night}.json"
            path.write_text(json.dumps(doc))
            ingest_benchmark_json(store, path)
    counts = store_instruction_counts(db)
    assert [c.instructions for c in counts[("m", "eager", "224")]] == [5e6, 5e6 * 1.0002, 5e6, 5e6 * 1.03]
    args = [
        "--store",
        str(db),
        "--metric",
        "instructions",
        "--baseline-nights",
        "3",
        "--candidate-nights",
        "1",
    ]
    res = CliRunner().invoke(compare_command, args)
    assert res.exit_code == 1 and "slower" in res.output, res.output
    assert "3/1" in res.output  # three baseline nights, one candidate night
