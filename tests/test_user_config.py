"""`pytest parity/ --parbench-config FILE` on models the zoo has never seen, as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "data" / "user_models.toml"


def _run(tmp_path, *extra):
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(ROOT / "parity"),
        "-p",
        "no:cacheprovider",
        "-q",
        "--parbench-config",
        str(CONFIG),
        "--parbench-cache",
        str(tmp_path / "cache"),
        "--parbench-reports",
        str(tmp_path / "reports"),
        *extra,
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_user_config_runs_and_reports_the_frozen_branch(tmp_path):
    proc = _run(tmp_path, "--variants", "eager,torchscript,lite")
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:]  # the frozen branch is a real failure
    rows = [
        json.loads(line)
        for f in (tmp_path / "reports").glob("*.jsonl")
        for line in f.read_text().splitlines()
    ]
    verdicts = {(r["model"], r["variant"], r["size"]): r["verdict"] for r in rows}
    assert len(verdicts) == 3 * 2 + 3 * 2 + 3 * 1  # shape_branch, image_and_mask: 2 sizes; two_heads: 1
    failed = {k for k, v in verdicts.items() if v != "pass"}
    assert failed == {("shape_branch", "torchscript", 400), ("shape_branch", "lite", 400)}
    assert "shape_branch-torchscript-400" in out and "tracer warned" in out
    # the failure is localised: the layer the frozen branch leaves out of the trace, in the record
    by_case = {(r["model"], r["variant"], r["size"]): r for r in rows}
    for variant in ("torchscript", "lite"):
        fd = by_case[("shape_branch", variant, 400)]["first_divergence"]
        assert (fd["status"], fd["layer"], fd["how"]) == ("found", "mix", "absent"), fd
    assert "first diverging layer (parbench bisect shape_branch --variant torchscript --size 400): mix" in out
    # the end-of-run table lists every model with numbers
    assert "image_and_mask:" in out and "two_heads:" in out and "FAIL" in out
    # a second identical run converts nothing and says so
    again = _run(tmp_path, "--variants", "eager,torchscript,lite", "-k", "not shape_branch")
    assert again.returncode == 0, again.stdout[-2000:]
    assert "0 exported" in again.stdout and "nothing converted" in again.stdout


def test_bad_config_is_a_usage_error_naming_model_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[models.oops]\ntask = 'classification'\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            str(ROOT / "parity"),
            "-q",
            "-p",
            "no:cacheprovider",
            "--parbench-config",
            str(bad),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 4  # pytest's usage error
    assert "model 'oops'" in proc.stderr and "missing key 'factory'" in proc.stderr, proc.stdout + proc.stderr
