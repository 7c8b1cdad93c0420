"""experiments/parity_profile.py: the tables it makes from a kept run's records and cache entries."""

import importlib.util
import json
from pathlib import Path

from parbench.records import parity as parity_records

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "parity_profile.py"


def _profile():
    spec = importlib.util.spec_from_file_location("parity_profile", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kept_run(folder: Path) -> None:
    (folder / "reports").mkdir(parents=True)
    run = {"label": "cold", "exit_code": 0, "wall_seconds": 100.0, "load_before": [1.0, 1.0, 1.0],
           "load_during_mean": 2.0, "load_during_max": 3.0, "peak_rss_gb": 1.0,
           "children_cpu_seconds": 50.0, "cpus": 2}  # fmt: skip
    (folder / "run.json").write_text(json.dumps(run))
    for variant, size, timing, cpu in [
        ("executorch_fp32", 224, {"export": 60.0, "run": 1.0}, {"export": 30.0, "run": 0.5}),
        ("executorch_fp32", 320, {"artifact": 0.5, "run": 2.0}, {"artifact": 0.1, "run": 1.0}),
        ("onnx", 224, {"export": 5.0, "compare": 1.5}, {"export": 4.0, "compare": 1.0}),
    ]:
        record = parity_records.ParityRecord(
            model="m", variant=variant, size=size, verdict="pass", timing=timing, timing_cpu=cpu
        )
        parity_records.append(folder / "reports" / "run.jsonl", record)
    entries = [
        {"variant": "executorch_fp32", "model": "m", "export_seconds": 60.0,
         "stages": {"torch.export": 5.0, "lowering": 50.0}, "stages_cpu": {"torch.export": 4.0, "lowering": 25.0}},
        {"variant": "onnx", "model": "m", "export_seconds": 5.0, "stages": {"conversion": 4.0},
         "stages_cpu": {"conversion": 3.5}},
        {"variant": "onnx", "model": "m", "export_seconds": 1.0, "error": "one-for-all failed", "stages": {}},
    ]  # fmt: skip
    (folder / "entries.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))


def test_tables_sum_stages_over_cases_and_exports(tmp_path):
    _kept_run(tmp_path)
    text = "\n".join(_profile().tabulate(tmp_path))
    assert "3 cases: 3 pass; 2 artifacts exported, 1 failed export attempts" in text
    assert "| export | 1m05.0s | 93% | 34.0s |" in text  # 60 + 5 of the 70 s in cases
    assert "| run | 3.0s | 4% | 1.5s |" in text
    assert "| **cases total** | 1m10.0s |  | 36.6s |" in text
    assert "| outside cases (start-up, collection, summary) | 30.0s |  |  |" in text
    assert "| lowering | 50.0s | 76% | 25.0s |" in text  # of the 66 s in exports
    assert "| other (export) | 7.0s | 11% | 0.0s |" in text  # untimed: 5 s + 1 s + the failed attempt's 1 s
    assert "| onnx | 6 (1+1) | 6 |" in text  # one export and one failed attempt
    assert "| executorch_fp32 | 3.5 | 3.5 |" in text  # comparison time without exports


def test_verdict_diff_lists_only_changed_cases():
    diff = _profile().verdict_diff(
        {"a": "pass", "b": "fail", "c": "pass"}, {"a": "pass", "b": "pass", "d": "skip"}
    )
    assert diff == ["  b: pass -> fail", "  c: - -> pass", "  d: skip -> -"]
