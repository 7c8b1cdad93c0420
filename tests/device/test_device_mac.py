"""`parbench device run` (its plan, exact commands, and the executor), .xcresult exports read
by their manifest, the device table, and `parbench device check` of .pte files against the app's
ExecuTorch."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from parbench.cli import main
from parbench.cli.device import device_group
from parbench.device import mac
from parbench.device.mac import RunOptions, Step
from parbench.diagnose.pte_runtime import PTE_IDENTIFIER, pte_rows
from parbench.errors import DeviceError
from parbench.fixtures.build import build
from parbench.history.ingest import import_results, load_result_docs
from parbench.records import manifest as records_manifest
from parbench.records.manifest import ArtifactEntry, FixtureManifest, ModelEntry

RUNTIMES = mac.AppRuntimes(
    executorch="1.5.1",
    executorch_branch="swiftpm-1.5.1",
    libtorch_lite="2.1.0",
    podfile_libtorch_lite="2.1.0",
)
IOS = "device_runner/ios"
SIGN = ("-allowProvisioningUpdates", "-allowProvisioningDeviceRegistration")


def _steps(**kw: object) -> list[Step]:
    opts = RunOptions(**{"udid": "0000", "token": "T0K", "run_id": "R", **kw})  # type: ignore[arg-type]
    return mac.plan(opts, RUNTIMES)


def test_plan_usb_mode_both_bundles_exact_commands() -> None:
    steps = _steps()
    got = [(s.name, s.argv, s.cwd, dict(s.env), s.background, s.stops) for s in steps]
    test_env = {
        "TEST_RUNNER_PARBENCH_TOKEN": "T0K",
        "TEST_RUNNER_PARBENCH_ROUNDS": "20",
        "TEST_RUNNER_PARBENCH_USB_PORT": "8766",
    }
    want = [
        (
            "fixtures",
            (
                "parbench",
                "fixtures",
                "--tier",
                "smoke",
                "--out",
                "fixtures/device-smoke",
                "--artifacts",
                "lite,coreml_fp16,coreml_image,executorch_fp32",
            ),
            ".",
            {},
            False,
            (),
        ),
        (
            "check",
            ("parbench", "device", "check", "fixtures/device-smoke", "--app-executorch", "1.5.1"),
            ".",
            {},
            False,
            (),
        ),
        (
            "executorch package",
            (
                "git",
                "ls-remote",
                "--exit-code",
                "--heads",
                "https://github.com/pytorch/executorch",
                "swiftpm-1.5.1",
            ),
            ".",
            {},
            False,
            (),
        ),
        ("xcodegen", ("xcodegen", "generate"), IOS, {}, False, ()),
        ("pod install", ("pod", "install"), IOS, {}, False, ()),
        (
            "build lite",
            (
                "xcodebuild",
                "build-for-testing",
                "-workspace",
                "ParbenchDevice.xcworkspace",
                "-scheme",
                "ParbenchLite",
                "-destination",
                "id=0000",
                "-derivedDataPath",
                "build/lite",
                "-clonedSourcePackagesDirPath",
                "build/SourcePackages",
                *SIGN,
                "PARBENCH_BUNDLE_PREFIX=dev.parbench",
            ),
            IOS,
            {},
            False,
            (),
        ),
        (
            "build executorch",
            (
                "xcodebuild",
                "build-for-testing",
                "-workspace",
                "ParbenchDevice.xcworkspace",
                "-scheme",
                "ParbenchExecuTorch",
                "-destination",
                "id=0000",
                "-derivedDataPath",
                "build/executorch",
                "-clonedSourcePackagesDirPath",
                "build/SourcePackages",
                *SIGN,
                "PARBENCH_BUNDLE_PREFIX=dev.parbench",
            ),
            IOS,
            {},
            False,
            (),
        ),
        (
            "collector",
            (
                "parbench",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "8765",
                "--fixtures",
                "fixtures/device-smoke",
                "--store",
                "results.sqlite",
            ),
            ".",
            {"PARBENCH_COLLECTOR_TOKEN": "T0K"},
            True,
            (),
        ),
        (
            "relay",
            (
                "parbench",
                "device",
                "relay",
                "--udid",
                "0000",
                "--device-port",
                "8766",
                "--local-port",
                "8767",
                "--collector",
                "http://127.0.0.1:8765",
            ),
            ".",
            {},
            True,
            (),
        ),
        (
            "test lite",
            (
                "xcodebuild",
                "test-without-building",
                "-xctestrun",
                "build/lite/Build/Products/ParbenchLite_*.xctestrun",
                "-destination",
                "id=0000",
                "-resultBundlePath",
                "runs/R-lite.xcresult",
            ),
            IOS,
            {
                **test_env,
                "TEST_RUNNER_PARBENCH_RUN_ID": "R-lite",
                "TEST_RUNNER_PARBENCH_VARIANTS": "lite,coreml_fp16,coreml_image",
            },
            False,
            (),
        ),
        (
            "test executorch",
            (
                "xcodebuild",
                "test-without-building",
                "-xctestrun",
                "build/executorch/Build/Products/ParbenchExecuTorch_*.xctestrun",
                "-destination",
                "id=0000",
                "-resultBundlePath",
                "runs/R-executorch.xcresult",
            ),
            IOS,
            {
                **test_env,
                "TEST_RUNNER_PARBENCH_RUN_ID": "R-executorch",
                "TEST_RUNNER_PARBENCH_VARIANTS": "executorch_fp32",
            },
            False,
            (),
        ),
        (
            "import lite",
            ("parbench", "device", "import", f"{IOS}/runs/R-lite.xcresult", "--store", "results.sqlite"),
            ".",
            {},
            False,
            ("collector", "relay"),
        ),
        (
            "import executorch",
            (
                "parbench",
                "device",
                "import",
                f"{IOS}/runs/R-executorch.xcresult",
                "--store",
                "results.sqlite",
            ),
            ".",
            {},
            False,
            (),
        ),
        (
            "table",
            (
                "parbench",
                "device",
                "table",
                "--store",
                "results.sqlite",
                "--run-id",
                "R-lite",
                "--run-id",
                "R-executorch",
            ),
            ".",
            {},
            False,
            (),
        ),
    ]
    assert got == want
    assert steps[7].ready_url == "http://127.0.0.1:8765/api/v1/health"
    assert all(s.on_failure for s in steps)  # every step says what to do when it fails


def test_plan_network_mode_team_and_prefix() -> None:
    steps = {
        s.name: s for s in _steps(usb=False, mac_host="mac.local", team="ABCDE12345", port=9000, rounds=5)
    }
    assert "relay" not in steps
    assert steps["collector"].argv[2:6] == ("--host", "0.0.0.0", "--port", "9000")
    assert dict(steps["test lite"].env) == {
        "TEST_RUNNER_PARBENCH_TOKEN": "T0K",
        "TEST_RUNNER_PARBENCH_RUN_ID": "R-lite",
        "TEST_RUNNER_PARBENCH_VARIANTS": "lite,coreml_fp16,coreml_image",
        "TEST_RUNNER_PARBENCH_ROUNDS": "5",
        "TEST_RUNNER_PARBENCH_COLLECTOR": "http://mac.local:9000",
    }
    assert steps["build lite"].argv[-4:] == (
        *SIGN,
        "DEVELOPMENT_TEAM=ABCDE12345",
        "PARBENCH_BUNDLE_PREFIX=dev.parbench.abcde12345",
    )
    assert steps["import lite"].stops == ("collector",)
    custom = {s.name: s for s in _steps(team="X1", bundle_prefix="com.example.pb")}
    assert custom["build executorch"].argv[-1] == "PARBENCH_BUNDLE_PREFIX=com.example.pb"
    with pytest.raises(DeviceError, match="--mac-host"):
        _steps(usb=False)


def test_plan_forms_pick_the_bundles() -> None:
    lite_only = {s.name: s for s in _steps(forms=("lite",))}
    assert "build executorch" not in lite_only and "executorch package" not in lite_only
    assert lite_only["check"].argv == ("parbench", "device", "check", "fixtures/device-smoke")
    et_only = {s.name: s for s in _steps(forms=("executorch_fp32", "executorch_int8"))}
    assert "build lite" not in et_only
    assert et_only["check"].argv[-2:] == ("--app-executorch", "1.5.1")
    assert [s.argv[-1] for s in _steps(forms=("executorch_int8",)) if s.name == "table"] == ["R-executorch"]
    coreml_only = {s.name: s for s in _steps(forms=("coreml_fp16",))}
    assert "check" not in coreml_only  # nothing the runtimes could refuse
    assert coreml_only["test lite"].env["TEST_RUNNER_PARBENCH_VARIANTS"] == "coreml_fp16"
    with pytest.raises(DeviceError, match="none of them runs on the phone"):
        _steps(forms=("onnx",))


def test_plan_reads_the_app_runtimes_from_the_project() -> None:
    rt = mac.app_runtimes()
    assert rt.executorch_branch == f"swiftpm-{rt.executorch}"
    assert rt.libtorch_lite == rt.podfile_libtorch_lite
    steps = {s.name: s for s in mac.plan(RunOptions(udid="0000", token="T", run_id="R"))}
    assert steps["executorch package"].argv[-1] == rt.executorch_branch
    assert steps["check"].argv[-1] == rt.executorch


def test_dry_run_cli_prints_the_full_sequence() -> None:
    res = CliRunner().invoke(main, ["device", "run", "--udid", "0000", "--dry-run", "--tier", "smoke"])
    assert res.exit_code == 0, res.output
    header, *rest = res.output.splitlines()
    m = re.fullmatch(r"parbench device run: 14 steps, run id (ios-\d{8}T\d{6}Z), token (\S+), USB", header)
    assert m, header
    run_id, token = m.groups()
    expected = mac.render_plan(mac.plan(RunOptions(udid="0000", token=token, run_id=run_id)))
    assert "\n".join(rest) == expected
    # the lines a user copies, word for word
    commands = [line.strip() for line in rest if not line.startswith("[")]
    assert commands[5] == (
        "(cd device_runner/ios && xcodebuild build-for-testing -workspace ParbenchDevice.xcworkspace "
        "-scheme ParbenchLite -destination id=0000 -derivedDataPath build/lite "
        "-clonedSourcePackagesDirPath build/SourcePackages -allowProvisioningUpdates "
        "-allowProvisioningDeviceRegistration PARBENCH_BUNDLE_PREFIX=dev.parbench)"
    )
    assert commands[10] == (
        f"(cd device_runner/ios && TEST_RUNNER_PARBENCH_TOKEN={token} "
        f"TEST_RUNNER_PARBENCH_RUN_ID={run_id}-executorch "
        "TEST_RUNNER_PARBENCH_VARIANTS=executorch_fp32 TEST_RUNNER_PARBENCH_ROUNDS=20 "
        "TEST_RUNNER_PARBENCH_USB_PORT=8766 xcodebuild test-without-building -xctestrun "
        "'build/executorch/Build/Products/ParbenchExecuTorch_*.xctestrun' -destination id=0000 "
        f"-resultBundlePath runs/{run_id}-executorch.xcresult)"
    )
    assert commands[7] == (
        f"PARBENCH_COLLECTOR_TOKEN={token} parbench serve --host 127.0.0.1 --port 8765 "
        "--fixtures fixtures/device-smoke --store results.sqlite &"
    )
    # every printed command is one valid shell line
    for c in commands:
        shlex.split(c.rstrip(" &"))


def test_run_without_dry_run_refuses_off_macos() -> None:
    res = CliRunner().invoke(main, ["device", "run", "--udid", "0000", "--team", "X"])
    if sys.platform == "darwin":
        pytest.skip("this checks the message on other systems")
    assert res.exit_code != 0 and "needs macOS with Xcode" in res.output and "--dry-run" in res.output


# ---------------------------------------------------------------------------------------------
# the executor


def _py(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def test_execute_runs_steps_and_names_the_one_that_fails(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thing_42.bin").write_text("x")
    marker = tmp_path / "bg-alive"
    steps = [
        Step(
            "first", _py("import os; print('first ran with', os.environ['PB_X'])"), ".", {"PB_X": "1"}, "n/a"
        ),
        Step(
            "background",
            _py(f"import time, pathlib; pathlib.Path({str(marker)!r}).write_text('up'); time.sleep(60)"),
            ".",
            {},
            "n/a",
            background=True,
        ),
        Step(
            "glob",
            _py("import sys; print('got', sys.argv[1])") + ("out/thing_*.bin",),
            ".",
            {},
            "n/a",
            globs=(3,),
        ),
        Step(
            "tool fails",
            _py("import sys; print('line 1'); print('the tool says: no profiles'); sys.exit(3)"),
            "out",
            {},
            "pass --team",
        ),
        Step("never", _py("print('must not run')"), ".", {}, "n/a"),
    ]
    lines: list[str] = []
    with pytest.raises(mac.StepFailed) as err:
        mac.execute(steps, root=tmp_path, echo=lines.append, log_dir=tmp_path / "logs")
    msg = str(err.value)
    assert msg.startswith("step 4/5 'tool fails' failed (exit 3):")
    assert "the tool says: no profiles" in msg and msg.rstrip().endswith("--- what to do ---\npass --team")
    assert "first ran with 1" in lines
    assert "got out/thing_42.bin" in lines
    assert not any("must not run" in line for line in lines)
    assert marker.read_text() == "up"  # the background step ran ...
    procs = subprocess.run(["pgrep", "-f", str(marker)], capture_output=True, text=True)
    assert procs.stdout.strip() == ""  # ... and was stopped


def test_execute_goes_on_after_failing_tests_and_says_so_at_the_end(tmp_path: Path) -> None:
    steps = [
        Step(
            "test lite",
            _py("import sys; print('** TEST FAILED **'); sys.exit(65)"),
            ".",
            {},
            "see the table",
            keep_going=True,
        ),
        Step("import lite", _py("print('imported')"), ".", {}, "n/a"),
        Step("table", _py("print('the table')"), ".", {}, "n/a"),
    ]
    lines: list[str] = []
    with pytest.raises(DeviceError) as err:
        mac.execute(steps, root=tmp_path, echo=lines.append, log_dir=tmp_path)
    assert str(err.value) == (
        "the run went through, but step 1/3 'test lite' failed (exit 65) (their output is above)"
    )
    assert "imported" in lines and "the table" in lines
    assert any("** TEST FAILED **" in line for line in lines)
    steps[1] = Step("import lite", _py("import sys; sys.exit(2)"), ".", {}, "needs Xcode 16")
    with pytest.raises(mac.StepFailed) as err2:
        mac.execute(steps, root=tmp_path, echo=lambda _: None, log_dir=tmp_path)
    assert str(err2.value).endswith("needs Xcode 16\n(earlier: step 1/3 'test lite' failed (exit 65))")
    assert [s.keep_going for s in _steps()] == [s.name.startswith("test ") for s in _steps()]


def test_execute_reports_a_background_step_that_dies_and_missing_tools(tmp_path: Path) -> None:
    steps = [
        Step(
            "server",
            _py("import sys; print('port in use'); sys.exit(1)"),
            ".",
            {},
            "pass --port",
            background=True,
            ready_url="http://127.0.0.1:9/health",
        )
    ]
    with pytest.raises(
        mac.StepFailed, match=r"(?s)'server' failed \(it exited with 1\).*port in use.*pass --port"
    ):
        mac.execute(steps, root=tmp_path, echo=lambda _: None, log_dir=tmp_path)
    plan = _steps()
    missing = mac.missing_tools(plan, which=lambda t: None if t in ("xcodegen", "iproxy") else "/bin/" + t)
    assert missing == ["iproxy (brew install libimobiledevice)", "xcodegen (brew install xcodegen)"]
    with pytest.raises(DeviceError, match="matches 0 files"):
        mac.execute(
            [Step("g", ("ls", "nothing_*.x"), ".", {}, "n/a", globs=(1,))], root=tmp_path, echo=lambda _: None
        )


# ---------------------------------------------------------------------------------------------
# .xcresult exports


def _doc(run_id: str, case: str) -> dict:
    return {
        "run_id": run_id,
        "run": {
            "source": "device",
            "created_utc": "2026-11-23T12:00:00Z",
            "device": {"model": "iPhone15,2", "os": "iOS 17.5"},
            "runtime": {"name": "parbench-ios", "version": "0.1.0", "bundle": "lite"},
            "env": {"ios": "17.5"},
        },
        "results": [
            {
                "model": "m",
                "variant": "lite",
                "size": 224,
                "case": case,
                "executor": "lite_interpreter",
                "load_ms": 1.0,
                "first_run_ms": 2.0,
                "samples_ns": [1000000, 1100000],
                "threads": 1,
            }
        ],
    }


def _export(folder: Path, files: dict[str, bytes], manifest: list | dict | None) -> Path:
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    if manifest is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def _read(folder: Path) -> list[tuple[str, str, list[str]]]:
    """(file name, run id, cases) of each result document found in the folder, in order."""
    return [
        (Path(d.origin).name, d.run.run_id, [r.case for r in d.results]) for d in load_result_docs(folder)
    ]


def test_export_is_read_through_its_manifest_whatever_the_file_names(tmp_path: Path) -> None:
    uuid = "0A1B2C3D-0000-4000-8000-00000000000"
    files = {
        f"{uuid}1.json": json.dumps(_doc("ios-x-lite", "m/224/0")).encode(),
        f"{uuid}2": json.dumps(_doc("ios-x-lite", "m/224/1")).encode(),  # no extension
        f"{uuid}3.png": b"\x89PNG\r\n\x1a\n",
        f"{uuid}4.txt": b'{"not": "a result document"}',
        "unlisted.json": json.dumps(_doc("ios-other", "m/224/9")).encode(),
    }
    manifest = [
        {
            "testIdentifier": "PBDeviceTests/test_m__lite__224()",
            "attachments": [
                {
                    "exportedFileName": f"{uuid}1.json",
                    "suggestedHumanReadableName": "test_m__lite__224.json_0_0A1B2C3D.json",
                    "isAssociatedWithFailure": False,
                },
                {
                    "exportedFileName": f"{uuid}3.png",
                    "suggestedHumanReadableName": "Screenshot_0_0A1B.png",
                    "isAssociatedWithFailure": False,
                },
                {"exportedFileName": "../escape.json", "suggestedHumanReadableName": "x"},
            ],
        },
        {
            "testIdentifier": "PBDeviceTests/test_m__lite__320()",
            "attachments": [
                {
                    "exportedFileName": f"{uuid}2",
                    "suggestedHumanReadableName": "test_m__lite__320.json_0_0A1B2C3D.json",
                },
                {"exportedFileName": f"{uuid}4.txt", "suggestedHumanReadableName": "log.txt"},
            ],
        },
    ]
    (tmp_path / "escape.json").write_text(json.dumps(_doc("ios-escaped", "m/224/7")))
    folder = _export(tmp_path / "export", files, manifest)
    # the manifest's files in its order (whatever their extension), then the rest; never ../
    assert _read(folder) == [
        (f"{uuid}1.json", "ios-x-lite", ["m/224/0"]),
        (f"{uuid}2", "ios-x-lite", ["m/224/1"]),
        ("unlisted.json", "ios-other", ["m/224/9"]),
    ]
    reports = import_results(folder, tmp_path / "store.sqlite")
    assert [(r.run_id, r.stored) for r in reports] == [("ios-x-lite", 2), ("ios-other", 1)]
    out = CliRunner().invoke(
        device_group, ["table", "--store", str(tmp_path / "store.sqlite"), "--run-id", "ios-x-lite"]
    )
    assert out.exit_code == 0, out.output
    assert out.output.startswith("run ios-x-lite: iPhone15,2, iOS 17.5, bundle lite, 2 results, complete\n")
    assert "m-lite-224" in out.output and "1.050" in out.output  # median of 1.0 and 1.1 ms
    missing = CliRunner().invoke(
        device_group, ["table", "--store", str(tmp_path / "store.sqlite"), "--run-id", "nope"]
    )
    assert missing.exit_code == 1 and "run nope: not in" in missing.output
    assert "no results of nope in" in missing.output


def test_export_without_manifest_and_bad_exports(tmp_path: Path) -> None:
    # without a manifest.json, a folder is searched for .json files as before
    plain = _export(
        tmp_path / "plain", {"a.json": json.dumps(_doc("ios-run-r", "m/224/0")).encode(), "ABC": b"{}"}, None
    )
    assert _read(plain) == [("a.json", "ios-run-r", ["m/224/0"])]
    only_png = [
        {
            "testIdentifier": "t",
            "attachments": [{"exportedFileName": "A.png", "suggestedHumanReadableName": "s"}],
        }
    ]
    empty = _export(tmp_path / "empty", {"A.png": b"\x89PNG"}, only_png)
    with pytest.raises(
        DeviceError, match=r"no parbench result documents .*looked at 1 attachments, 1 listed"
    ):
        load_result_docs(empty)
    bad = _export(tmp_path / "bad", {}, {"attachments": []})
    with pytest.raises(DeviceError, match="not a list of tests.*xcresulttool export attachments"):
        load_result_docs(bad)
    broken = _export(tmp_path / "broken", {}, None)
    (broken / "manifest.json").write_text("[{")
    with pytest.raises(DeviceError, match="manifest.json is not JSON"):
        load_result_docs(broken)
    # a document in an export still has to be a valid result document
    wrong = _doc("ios-run-r", "m/224/0")
    wrong["results"][0]["samples_ns"] = []
    bad_doc = _export(tmp_path / "bad-doc", {"X": json.dumps(wrong).encode()}, [])
    with pytest.raises(DeviceError, match=r"X: results\[0\].*samples_ns"):
        load_result_docs(bad_doc)


# ---------------------------------------------------------------------------------------------
# .pte files against the app's ExecuTorch


@pytest.fixture(scope="module")
def pte_bytes() -> bytes:
    import torch
    from executorch.exir import to_edge

    class Tiny(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(x) * 2

    return to_edge(torch.export.export(Tiny(), (torch.randn(1, 4),))).to_executorch().buffer


def _pte_set(root: Path, data: bytes, generator: str | None, meta: dict | None = None) -> Path:
    (root / "artifacts").mkdir(parents=True)
    (root / "artifacts" / "a.pte").write_bytes(data)
    art = ArtifactEntry(
        path="artifacts/a.pte", format="pte", sha256="0" * 64, bytes=len(data), sizes=None, meta=meta or {}
    )
    model = ModelEntry(
        task="classification",
        spec_hash="x",
        example_size=224,
        inputs=[],
        outputs=["out"],
        artifacts={"executorch_fp32": [art]},
    )
    gen = {"parbench": "0.1.0", **({"executorch": generator} if generator else {})}
    records_manifest.write(root, FixtureManifest(generator=gen, models={"m": model}))
    return root


def test_pte_rows_against_the_app_runtime(tmp_path: Path, pte_bytes: bytes) -> None:
    # what this exporter writes is what the 1.x runtime reads
    assert pte_bytes[4:8] == PTE_IDENTIFIER
    ok = _pte_set(tmp_path / "ok", pte_bytes, "1.5.1+cpu")
    [row] = pte_rows(ok, "1.5.1")
    assert (row["status"], row["exporter"]) == ("ok", "1.5.1+cpu")
    [row] = pte_rows(ok, "1.4.1")
    assert row["status"] == "newer" and "newer than the app's 1.4.1" in row["reason"]
    assert "executorch==1.4.1" in row["reason"] and "swiftpm-1.5.1" in row["reason"]
    assert pte_rows(ok, "1.6")[0]["status"] == "ok"  # an older exporter is fine
    meta = _pte_set(tmp_path / "meta", pte_bytes, "1.5.1", {"executorch": "1.6.0"})
    assert pte_rows(meta, "1.5.1")[0]["status"] == "newer"  # the artifact's own record wins
    unknown = _pte_set(tmp_path / "unknown", pte_bytes, None)
    assert pte_rows(unknown, "1.5.1")[0]["status"] == "unknown"
    bad = _pte_set(tmp_path / "bad", pte_bytes[:4] + b"ET99" + pte_bytes[8:], "1.5.1")
    [row] = pte_rows(bad, "1.5.1")
    assert row["status"] == "failed" and "b'ET99'" in row["reason"]
    (ok / "artifacts" / "a.pte").unlink()
    assert "missing" in pte_rows(ok, "1.5.1")[0]["reason"]
    with pytest.raises(DeviceError, match="not a version"):
        pte_rows(unknown, "latest")


def test_device_check_covers_pte_files(tmp_path: Path, pte_bytes: bytes) -> None:
    newer = _pte_set(tmp_path / "newer", pte_bytes, "1.6.0")
    res = CliRunner().invoke(main, ["device", "check", str(newer), "--app-executorch", "1.5.1"])
    assert res.exit_code == 0, res.output  # a warning, not a failure
    assert (
        "WARNING    m-executorch_fp32 artifacts/a.pte: exporter 1.6.0, app 1.5.1 -- written by" in res.output
    )
    # without --app-executorch: the iOS project's own version
    res = CliRunner().invoke(main, ["device", "check", str(newer), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    assert rows["ptl"] == [] and [r["app_executorch"] for r in rows["pte"]] == [mac.app_runtimes().executorch]
    bad = _pte_set(tmp_path / "bad", b"\0\0\0\0XXXX" + pte_bytes[8:], "1.5.1")
    res = CliRunner().invoke(main, ["device", "check", str(bad), "--app-executorch", "1.5.1"])
    assert res.exit_code == 1 and "1 .pte artifact(s) will not load in ExecuTorch 1.5.1" in res.output
    res = CliRunner().invoke(main, ["device", "check", str(bad), "--app-executorch", "next"])
    assert res.exit_code == 1 and "'next' is not a version like 1.5.1" in res.output


def test_new_fixture_sets_record_the_exporter(tmp_path: Path) -> None:
    from importlib import metadata

    fs = build(tmp_path / "set", [], lambda spec: None)
    assert fs.manifest.generator["executorch"] == metadata.version("executorch")
    assert records_manifest.read(tmp_path / "set").generator["executorch"] == metadata.version("executorch")
