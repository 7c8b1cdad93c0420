"""The device runner's C++ core, built against the torch wheel's libtorch, replaying a fixture set
against a live collector; and the host-side `parbench device` commands."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support.device_helpers import MODELS, LiveCollector, copy_set

from parbench._util.hashing import sha256_path
from parbench.backends.base import flatten_outputs
from parbench.cli.device import device_group
from parbench.compare import output_metrics
from parbench.device.build import BuildResult, build_core
from parbench.device.replay import run_replay
from parbench.diagnose.lite_bytecode import check_and_backport
from parbench.errors import DeviceError
from parbench.fixtures import FixtureSet
from parbench.history.store import Store

ROUNDS, WARMUP = 6, 2


def expected_cases(variants: tuple[str, ...] = ("lite", "torchscript")) -> set[tuple[str, str, int, str]]:
    out = set()
    for name, (_task, _cls, _outs, per_size) in MODELS.items():
        for size, n in per_size.items():
            for i in range(n):
                out |= {(name, v, size, f"{name}/{size}/{i}") for v in variants}
    return out


def run_binary(binary: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout)


def test_core_unit_tests(core_build: BuildResult) -> None:
    res = CliRunner().invoke(device_group, ["build", "--test"])
    assert res.exit_code == 0, res.output
    assert "up to date" in res.output  # built once for the session already
    assert "100% tests passed" in res.output


def test_build_is_reused(core_build: BuildResult) -> None:
    again = build_core()
    assert not again.configured and not again.rebuilt
    assert again.seconds < 30


def test_replay_round_trip(
    core_build: BuildResult, tiny_set: Path, collector: LiveCollector, tmp_path: Path
) -> None:
    lines: list[str] = []
    outcome = run_replay(
        core_build.binary,
        token=collector.token,
        collector=collector.url,
        rounds=ROUNDS,
        warmup=WARMUP,
        threads=1,
        cache_dir=tmp_path / "cache",
        dump_outputs=tmp_path / "dump",
        on_line=lines.append,
    )
    assert outcome.returncode == 0, outcome.stderr
    print(f"replay round trip: {outcome.seconds:.2f} s for {len(outcome.results)} results")
    assert any("[10/10]" in line for line in lines)

    # Every case arrived, exactly once, without error.
    resp = httpx.get(
        f"{collector.url}/api/v1/runs/{outcome.run_id}",
        headers={"Authorization": f"Bearer {collector.token}"},
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["run"]["status"] == "complete"
    assert body["run"]["source"] == "device"
    assert body["run"]["runtime"] == {"name": "libtorch", "version": torch.__version__.split("+")[0]}
    stored = body["results"]
    assert {(r["model"], r["variant"], r["size"], r["case"]) for r in stored} == expected_cases()
    assert len(stored) == len(expected_cases())

    fs = FixtureSet.open(tiny_set)
    for r in stored:
        assert r["error"] is None, r["error"]
        assert r["executor"] == {"lite": "lite_interpreter", "torchscript": "libtorch_jit"}[r["variant"]]
        assert r["threads"] == 1 and r["warmup_rounds"] == WARMUP and r["compute_units"] is None
        # Timings: every timed round kept, all positive; load and first run timed apart.
        samples = r["samples_ns"]
        assert len(samples) == ROUNDS and all(s > 0 for s in samples)
        assert 0 < r["load_ms"] < 60_000
        assert 0 < r["first_run_ms"] < 60_000
        # a first run costs at least a good part of a warm run (it is usually far slower)
        assert r["first_run_ms"] * 1e6 >= 0.25 * min(samples)
        assert r["peak_memory_mb"] > 10  # libtorch alone is more than that

        # C++ metrics equal parbench.compare's on the same tensors (the runner's dumped outputs).
        model = fs.model(r["model"])
        case = next(c for c in model.cases if c.id == r["case"])
        result_in_doc = next(
            x for x in outcome.results if (x["variant"], x["case"]) == (r["variant"], r["case"])
        )
        dumped = result_in_doc["extra"]["dumped_outputs"]
        assert sorted(dumped) == sorted(model.outputs)  # JSON objects: key order is not kept
        for name, info in dumped.items():
            a = np.fromfile(info["path"], dtype=info["dtype"]).reshape(info["shape"])
            golden = fs.read_tensor(case.golden[name])
            want = output_metrics(a, golden, model.task)
            got = r["metrics"][name]
            assert set(got) == set(want), (name, sorted(got), sorted(want))
            for key, value in want.items():
                assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-12), (r["case"], name, key)
            assert want["max_abs"] > 0  # golden is float64-rounded: the comparison is not trivial
        if model.task == "classification":
            assert r["metrics"]["output_0"]["top1_agree"] == 1.0
        if model.task == "segmentation":
            assert r["metrics"]["out"]["pixel_accuracy"] == 1.0

    # The C++ runner's outputs are the Python lite interpreter's (same inputs, same kernels).
    from torch.jit.mobile import _load_for_lite_interpreter

    lite = _load_for_lite_interpreter(str(tiny_set / "artifacts/tiny_cls/lite.ptl"))
    case = fs.cases("tiny_cls", 24)[0]
    with torch.inference_mode():
        py_out = flatten_outputs(lite(torch.from_numpy(case.inputs["image"])))
    cpp = next(x for x in outcome.results if x["variant"] == "lite" and x["case"] == "tiny_cls/24/0")
    for name, t in py_out.items():
        info = cpp["extra"]["dumped_outputs"][name]
        np.testing.assert_allclose(
            np.fromfile(info["path"], dtype=np.float32).reshape(info["shape"]),
            t.numpy(),
            rtol=1e-6,
            atol=1e-7,
        )

    # A retry of the whole post (same run id, same content) stores nothing new.
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(outcome.doc))
    proc = run_binary(
        core_build.binary,
        "post",
        "--collector",
        collector.url,
        "--token",
        collector.token,
        "--results",
        str(saved),
    )
    assert proc.returncode == 0, proc.stderr
    again = httpx.get(
        f"{collector.url}/api/v1/runs/{outcome.run_id}",
        headers={"Authorization": f"Bearer {collector.token}"},
    ).json()
    assert len(again["results"]) == len(stored)

    # The second replay finds every fixture in its cache: no download.
    second = run_replay(
        core_build.binary,
        token=collector.token,
        collector=collector.url,
        rounds=1,
        warmup=0,
        variants=["lite"],
        sizes=[24],
        cache_dir=tmp_path / "cache",
    )
    assert second.returncode == 0, second.stderr
    assert len(second.results) == 2


def test_replay_cli(core_build: BuildResult, collector: LiveCollector, tmp_path: Path) -> None:
    out = tmp_path / "cli.json"
    res = CliRunner().invoke(
        device_group,
        [
            "replay",
            "--collector",
            collector.url,
            "--token",
            collector.token,
            "--variants",
            "lite",
            "--sizes",
            "16",
            "--models",
            "tiny_cls",
            "--rounds",
            "3",
            "--warmup",
            "0",
            "--binary",
            str(core_build.binary),
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "c"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "tiny_cls-lite-16" in res.output
    doc = json.loads(out.read_text())
    assert [r["case"] for r in doc["results"]] == ["tiny_cls/16/0", "tiny_cls/16/1"]
    with Store(collector.store_path) as store:
        assert len(store.run_results(doc["run_id"])) == 2
    # A tier whose models the collector does not serve is refused before anything runs.
    res = CliRunner().invoke(
        device_group,
        [
            "replay",
            "--collector",
            collector.url,
            "--token",
            collector.token,
            "--tier",
            "smoke",
            "--binary",
            str(core_build.binary),
        ],
    )
    assert res.exit_code != 0
    assert "serves none of the smoke tier's models" in res.output and "tiny_cls" in res.output


def test_wrong_token_and_dead_collector(
    core_build: BuildResult, collector: LiveCollector, tmp_path: Path
) -> None:
    proc = run_binary(
        core_build.binary, "--collector", collector.url, "--token", "wrong", "--cache-dir", str(tmp_path)
    )
    assert proc.returncode == 3
    assert "HTTP 401" in proc.stderr and "check the token" in proc.stderr
    # Nothing listens on a port we just closed: retries, then a clear message.
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    start = time.monotonic()
    proc = run_binary(
        core_build.binary, "--collector", f"http://127.0.0.1:{port}", "--token", "t", "--retries", "2"
    )
    assert proc.returncode == 3
    assert "is the collector running" in proc.stderr
    assert time.monotonic() - start < 20


def test_refuses_file_with_wrong_hash(core_build: BuildResult, tiny_set: Path, tmp_path: Path) -> None:
    bad = copy_set(tiny_set, tmp_path / "bad")
    rel = "tensors/tiny_seg/24-0.golden.out.bin"
    data = bytearray((bad / rel).read_bytes())
    data[0] ^= 0xFF
    (bad / rel).write_bytes(bytes(data))
    out = tmp_path / "offline.json"
    proc = run_binary(
        core_build.binary,
        "--fixtures-dir",
        str(bad),
        "--models",
        "tiny_seg",
        "--rounds",
        "2",
        "--out",
        str(out),
    )
    assert proc.returncode == 1, proc.stderr  # some cases failed
    results = json.loads(out.read_text())["results"]
    refused = [r for r in results if r["error"]]
    assert {r["case"] for r in refused} == {"tiny_seg/24/0"}
    for r in refused:
        assert f"refused {rel}: sha256 is" in r["error"]
        assert r["samples_ns"] == [] and r["load_ms"] is None
    assert all(r["error"] is None for r in results if r["case"] == "tiny_seg/16/0")
    assert f"refused {rel}" in proc.stderr
    proc = run_binary(core_build.binary, "verify", "--fixtures-dir", str(bad))
    assert proc.returncode == 1
    assert f"refused {rel}" in proc.stderr and "1 refused" in proc.stdout


def test_refuses_unknown_format_version(core_build: BuildResult, tiny_set: Path, tmp_path: Path) -> None:
    newer = copy_set(tiny_set, tmp_path / "v2")
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest["format_version"] = 2
    (newer / "manifest.json").write_text(json.dumps(manifest))
    proc = run_binary(core_build.binary, "--fixtures-dir", str(newer))
    assert proc.returncode == 2
    assert "format_version 2" in proc.stderr and "reads format_version 1" in proc.stderr


def test_folder_artifact_hash_matches_python(core_build: BuildResult, tiny_set: Path, tmp_path: Path) -> None:
    """A folder artifact (.mlpackage) is hashed the same way by the core and by parbench."""
    s = copy_set(tiny_set, tmp_path / "folder")
    pkg = s / "artifacts/tiny_cls/coreml_fp16.mlpackage"
    # names whose order differs between string sorting and path-component sorting
    for rel, text in (("Data/a.b", "1"), ("Data/a/b", "2"), ("Manifest.json", "{}"), ("Data/a-c", "3")):
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    manifest = json.loads((s / "manifest.json").read_text())
    manifest["models"]["tiny_cls"]["artifacts"]["coreml_fp16"] = [
        {
            "path": "artifacts/tiny_cls/coreml_fp16.mlpackage",
            "format": "mlpackage",
            "sha256": sha256_path(pkg),
            "bytes": 7,
            "sizes": None,
            "meta": {},
        }
    ]
    (s / "manifest.json").write_text(json.dumps(manifest))
    proc = run_binary(core_build.binary, "verify", "--fixtures-dir", str(s))
    assert proc.returncode == 0, proc.stderr
    # Linux has no Core ML runner: asking for the form says so, per case.
    out = tmp_path / "o.json"
    proc = run_binary(
        core_build.binary, "--fixtures-dir", str(s), "--variants", "coreml_fp16", "--out", str(out)
    )
    assert proc.returncode == 1
    errors = {r["error"] for r in json.loads(out.read_text())["results"]}
    assert errors == {"plan: no runner for format 'mlpackage' here (this runner has: pt, ptl)"}


def test_metrics_command_matches_compare(core_build: BuildResult, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    cases = [
        ("classification", (4, 12)),
        ("segmentation", (1, 5, 6, 7)),
        ("detection", (1, 30, 9)),
        ("image-to-image", (1, 3, 8, 8)),
        ("classification", (3, 1)),
    ]
    for task, shape in cases:
        r = rng.standard_normal(shape).astype(np.float32)
        a = (r + rng.standard_normal(shape).astype(np.float32) * 0.3).astype(np.float32)
        r.tofile(tmp_path / "r.bin")
        a.astype(np.float16).tofile(tmp_path / "a.bin")  # a float16 candidate against float32 golden
        proc = run_binary(
            core_build.binary,
            "metrics",
            "--candidate",
            str(tmp_path / "a.bin"),
            "--dtype",
            "float16",
            "--reference",
            str(tmp_path / "r.bin"),
            "--ref-dtype",
            "float32",
            "--shape",
            ",".join(map(str, shape)),
            "--task",
            task,
        )
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
        want = output_metrics(a.astype(np.float16), r, task)
        assert set(got) == set(want), task
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (task, key)


# ---------------------------------------------------------------------------------------------
# parbench device check: bytecode versions and backporting


def test_check_backports_to_bytecode_7(core_build: BuildResult, tiny_set: Path, tmp_path: Path) -> None:
    from torch.jit.mobile import _get_model_bytecode_version

    s = copy_set(tiny_set, tmp_path / "bp")
    assert _get_model_bytecode_version(str(s / "artifacts/tiny_cls/lite.ptl")) == 8
    res = CliRunner().invoke(device_group, ["check", str(s), "--runtime-bytecode", "7"])
    assert res.exit_code == 0, res.output
    assert res.output.count("backported") == 2
    manifest = json.loads((s / "manifest.json").read_text())
    for name in MODELS:
        art = manifest["models"][name]["artifacts"]["lite"][0]
        assert art["path"] == f"artifacts/{name}/lite.bc7.ptl"
        assert art["sha256"] == sha256_path(s / art["path"])
        assert art["meta"]["backported_from"]["bytecode_version"] == 8
        assert art["meta"]["backported_from"]["path"] == f"artifacts/{name}/lite.ptl"
        assert _get_model_bytecode_version(str(s / art["path"])) == 7
    # Checking again finds nothing to do.
    rows = check_and_backport(s, 7)
    assert {r["status"] for r in rows} == {"ok"}
    # The runner replays the backported files, with the same outputs as before.
    out = tmp_path / "bp.json"
    proc = run_binary(
        core_build.binary,
        "--fixtures-dir",
        str(s),
        "--variants",
        "lite",
        "--rounds",
        "1",
        "--warmup",
        "0",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(out.read_text())["results"]
    assert {r["extra"]["artifact"]["path"] for r in results} == {
        f"artifacts/{n}/lite.bc7.ptl" for n in MODELS
    }
    assert all(
        r["metrics"]["output_0" if r["model"] == "tiny_cls" else "out"]["cosine"] > 0.999999 for r in results
    )


def test_check_reports_what_cannot_be_done(tiny_set: Path, tmp_path: Path) -> None:
    # LibTorch-Lite 2.1.0 reads bytecode 4..9: torch 2.13's bytecode 8 loads as it is.
    rows = check_and_backport(tiny_set, None)
    assert {(r["status"], r["bytecode_version"]) for r in rows} == {("ok", 8)}
    assert all(r["max_bytecode"] == 9 for r in rows)
    s = copy_set(tiny_set, tmp_path / "nobp")
    before = (s / "manifest.json").read_text()
    res = CliRunner().invoke(device_group, ["check", str(s), "--runtime-bytecode", "7", "--no-backport"])
    assert res.exit_code != 0
    assert "bytecode 8 > 7" in res.output
    with pytest.raises(DeviceError, match="below the lowest version"):
        check_and_backport(s, 3)
    # A corrupt artifact is refused, not backported.
    (s / "artifacts/tiny_seg/lite.ptl").write_bytes(b"garbage")
    rows = check_and_backport(s, 7)
    seg = next(r for r in rows if r["model"] == "tiny_seg")
    assert seg["status"] == "failed" and "sha256 does not match" in seg["reason"]
    assert (s / "manifest.json").read_text() != before  # tiny_cls was still backported


# ---------------------------------------------------------------------------------------------
# parbench device import


def test_import_results(core_build: BuildResult, tiny_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    proc = run_binary(
        core_build.binary,
        "--fixtures-dir",
        str(tiny_set),
        "--variants",
        "lite",
        "--rounds",
        "2",
        "--warmup",
        "0",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    # As the XCTest target attaches them: one document per test, same run.
    attachments = tmp_path / "attachments"
    attachments.mkdir()
    for i, r in enumerate(doc["results"]):
        (attachments / f"result-{i}.json").write_text(json.dumps({**doc, "results": [r]}))
    (attachments / "manifest.json").write_text(json.dumps([{"testIdentifier": "x", "attachments": []}]))
    store_path = tmp_path / "s.sqlite"
    runner = CliRunner()
    res = runner.invoke(device_group, ["import", str(attachments), "--store", str(store_path)])
    assert res.exit_code == 0, res.output
    assert f"{len(doc['results'])} results stored" in res.output
    res = runner.invoke(device_group, ["import", str(out), "--store", str(store_path)])
    assert res.exit_code == 0, res.output
    assert f"0 results stored, {len(doc['results'])} already there" in res.output
    with Store(store_path) as store:
        run = store.get_run(doc["run_id"])
        assert run is not None and run["status"] == "complete"
        assert len(store.run_results(doc["run_id"])) == len(doc["results"])
    bundle = tmp_path / "Run.xcresult"
    bundle.mkdir()
    res = runner.invoke(device_group, ["import", str(bundle), "--store", str(store_path)])
    if platform.system() != "Darwin":
        assert res.exit_code != 0
        assert "needs xcrun" in res.output and "xcresulttool export attachments" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "other.json").write_text("{}")
    res = runner.invoke(device_group, ["import", str(empty), "--store", str(store_path)])
    assert res.exit_code != 0 and "no parbench result documents" in res.output
