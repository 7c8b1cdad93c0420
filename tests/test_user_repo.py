"""parbench from any repository, and a model's identity.

A folder holding only a parbench.toml and the model's module runs the parity and latency suites
with `pytest --pyargs parbench.suites.parity` / `parbench.suites.latency` (nothing copied from
parbench); a model named with capitals and digits goes through parity -> report -> store -> compare
-> collector; editing a model's forward, or only its weights, between two runs tests the new model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from click.testing import CliRunner
from fastapi.testclient import TestClient

from parbench.cli.regress import compare_command
from parbench.cli.report import report_command
from parbench.collector.app import create_app
from parbench.history.ingest import ingest_benchmark_json
from parbench.history.store import Store
from parbench.records import bench, parity

MODULE = """
import torch
from torch import nn


class MyNet2(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return {forward}


def build():
    return MyNet2()
"""
FORWARD = "self.head(torch.relu(self.conv(x)))"
TOML = """[models.MyNet2]
factory = "mynets:build"
task = "generic"
sizes = [64, 96]
"""
QUICK = [
    "--bench-min-time",
    "0.02",
    "--bench-min-rounds",
    "3",
    "--bench-max-rounds",
    "5",
    "--bench-warmup-time",
    "0",
]


def user_repo(root: Path, forward: str = FORWARD, toml: str = TOML) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "mynets.py").write_text(MODULE.format(forward=forward))
    (root / "parbench.toml").write_text(toml)
    return root


def pytest_in(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONUNBUFFERED": "1"}
    if os.environ.get("PYTHONPATH"):  # a checkout under test: its parbench, not another
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )


def parity_records(root: Path) -> list[parity.ParityRecord]:
    return parity.read(sorted((root / "reports" / "parity").glob("*.jsonl")))


def test_a_repository_with_only_a_toml_runs_both_suites(tmp_path):
    root = user_repo(tmp_path / "repo")
    proc = pytest_in(root, "--pyargs", "parbench.suites.parity", "--variants", "eager,torchscript,onnx")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = parity_records(root)
    assert {(r.model, r.variant, r.size) for r in records} == {
        ("MyNet2", v, s) for v in ("eager", "torchscript", "onnx") for s in (64, 96)
    }
    assert {r.verdict for r in records} == {"pass"}
    assert "MyNet2:" in proc.stdout  # the end-of-run table

    outs = [root / "latency-0.json", root / "latency-1.json"]
    for out in outs:  # two runs: compare needs two sides
        proc = pytest_in(
            root,
            "--pyargs",
            "parbench.suites.latency",
            "--variants",
            "eager,torchscript",
            *QUICK,
            f"--benchmark-json={out}",
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = outs[0]
    doc = bench.read(out)
    assert sorted(extra.key.id for _, extra in doc.cases()) == sorted(
        f"MyNet2-{v}-{s}" for v in ("eager", "torchscript") for s in (64, 96)
    )

    # the same model through report, the store, compare and the collector
    result = CliRunner().invoke(
        report_command,
        [str(out), str(next((root / "reports" / "parity").glob("*.jsonl"))), "--out", str(root / "report")],
    )
    assert result.exit_code == 0, result.output
    assert "## MyNet2" in (root / "report" / "latency.md").read_text()
    store_path = root / "history.sqlite"
    with Store(store_path) as store:
        ingest_benchmark_json(store, out)
        assert set(store.results()["model"]) == {"MyNet2"}
    result = CliRunner().invoke(compare_command, [str(outs[0]), str(outs[1])])
    assert result.exit_code == 0, result.output
    assert "MyNet2" in result.output
    with TestClient(create_app(store_path, "a-token-of-enough-length-0123456789")) as client:
        auth = {"Authorization": "Bearer a-token-of-enough-length-0123456789"}
        run = {
            "source": "device",
            "created_utc": "2026-11-30T12:00:00Z",
            "device": {"model": "iPhone15,2", "os": "iOS 18.1"},
            "runtime": {"name": "libtorch-lite", "version": "2.1.0"},
        }
        assert client.put("/api/v1/runs/mynet2-run-0001", json=run, headers=auth).status_code in (200, 201)
        res = {
            "model": "MyNet2",
            "variant": "lite",
            "size": 64,
            "executor": "lite_interpreter",
            "load_ms": 3.0,
            "first_run_ms": 2.0,
            "samples_ns": [1_000_000, 1_100_000],
        }
        resp = client.post("/api/v1/runs/mynet2-run-0001/results", json={"results": [res]}, headers=auth)
        assert resp.status_code == 200, resp.text
        back = client.get("/api/v1/runs/mynet2-run-0001", headers=auth).json()
        assert [r["model"] for r in back["results"]] == ["MyNet2"]


def by_case(run_file: Path) -> dict[tuple[str, int], parity.ParityRecord]:
    return {(r.variant, r.size): r for r in parity.read([run_file])}


def test_editing_forward_between_runs_tests_the_new_model(tmp_path):
    root = user_repo(tmp_path / "repo")
    args = ["--pyargs", "parbench.suites.parity", "--variants", "eager,torchscript"]
    first = pytest_in(root, *args)
    assert first.returncode == 0, first.stdout[-3000:]
    # the same weights, a different forward: outputs change by far more than any tolerance
    user_repo(root, forward="torch.tanh(" + FORWARD + ") * 3.0 + 1.0")
    second = pytest_in(root, *args)
    assert second.returncode == 0, second.stdout[-3000:]
    runs = sorted((root / "reports" / "parity").glob("*.jsonl"))
    assert len(runs) == 2
    after = by_case(runs[1])
    # eager against the goldens passes only if the goldens are the new model's; TorchScript passes
    # only if its artifact was re-exported from the new model
    assert {r.verdict for r in after.values()} == {"pass"}
    # one artifact serves both sizes: exported again for the first, reused for the second
    assert [after[("torchscript", s)].cache for s in (64, 96)] == ["exported", "hit"]
    fixture_sets = sorted((root / ".parbench-cache" / "fixtures").glob("MyNet2-*[0-9]"))
    assert len(fixture_sets) == 2, fixture_sets  # goldens built again, under a new identity


def test_editing_only_the_weights_between_runs_tests_the_new_model(tmp_path):
    root = user_repo(tmp_path / "repo", toml=TOML + 'weights = "w.pt"\n')
    sys.path.insert(0, str(root))
    try:
        import mynets  # noqa: PLC0415 - the user's module, written above

        torch.manual_seed(0)
        torch.save(mynets.build().state_dict(), root / "w.pt")
        args = ["--pyargs", "parbench.suites.parity", "--variants", "eager,torchscript"]
        assert pytest_in(root, *args).returncode == 0
        torch.manual_seed(1)
        torch.save(mynets.build().state_dict(), root / "w.pt")
    finally:
        sys.path.remove(str(root))
        sys.modules.pop("mynets", None)
    second = pytest_in(root, *args)
    assert second.returncode == 0, second.stdout[-3000:]
    runs = sorted((root / "reports" / "parity").glob("*.jsonl"))
    after = by_case(runs[1])
    assert {r.verdict for r in after.values()} == {"pass"}
    # one artifact serves both sizes: exported again for the first, reused for the second
    assert [after[("torchscript", s)].cache for s in (64, 96)] == ["exported", "hit"]
    assert len(sorted((root / ".parbench-cache" / "fixtures").glob("MyNet2-*[0-9]"))) == 2


def test_a_config_in_the_repository_pyproject_is_found(tmp_path):
    root = tmp_path / "repo"
    user_repo(root)
    (root / "parbench.toml").unlink()
    (root / "pyproject.toml").write_text(
        "[project]\nname = 'x'\n\n" + TOML.replace("[models.", "[tool.parbench.models.")
    )
    proc = pytest_in(root, "--pyargs", "parbench.suites.parity", "--variants", "eager", "--collect-only")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "test_parity[MyNet2-eager-64]" in proc.stdout
