"""The iPhone runner from the Mac side: ``parbench device run``.

:func:`plan` lists every step from the fixture set to the device latency table, for both test
bundles (LibTorch-Lite + Core ML, ExecuTorch + Core ML); it is a pure function of the options, so
``--dry-run`` prints it on any system. :func:`execute` runs it, naming the step that fails with the
tool's own last lines and what to do. :func:`app_runtimes` reads the runtimes the app links from
the project's own files (project.yml, Podfile, Config/*.xcconfig).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from parbench.device.build import REPO_ROOT
from parbench.device.replay import format_rows, summary_rows
from parbench.errors import DeviceError
from parbench.history.store import Store
from parbench.records.device import COLLECTOR_PORT

IOS_DIR = REPO_ROOT / "device_runner" / "ios"
IOS_REL = Path("device_runner") / "ios"
WORKSPACE = "ParbenchDevice.xcworkspace"
EXECUTORCH_REPO = "https://github.com/pytorch/executorch"
DEFAULT_FORMS = ("lite", "coreml_fp16", "coreml_image", "executorch_fp32")
DEVICE_PORT = 8766  # USB mode: where the test listens on the phone
RELAY_PORT = 8767  # USB mode: iproxy's end on the Mac


# ---------------------------------------------------------------------------------------------
# what the app links (read from the project's own files)


@dataclasses.dataclass(frozen=True)
class AppRuntimes:
    executorch: str  # Config/ExecuTorchTests.xcconfig PARBENCH_EXECUTORCH_VERSION
    executorch_branch: str  # project.yml packages.executorch.branch
    libtorch_lite: str  # Config/LiteTests.xcconfig PARBENCH_LIBTORCH_LITE_VERSION
    podfile_libtorch_lite: str  # the Podfile's pin


def xcconfig_value(path: Path, key: str) -> str | None:
    """The last unconditional assignment of `key` in an .xcconfig file (includes not followed)."""
    value = None
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*=\s*(.*?)\s*$")
    for line in path.read_text().splitlines():
        match = pattern.match(line.split("//", 1)[0])
        if match:
            value = match.group(1)
    return value


def app_runtimes(ios_dir: Path = IOS_DIR) -> AppRuntimes:
    """The runtimes the app links, from project.yml, the Podfile and Config/*.xcconfig."""
    import yaml

    files = {
        "spec": ios_dir / "project.yml",
        "et": ios_dir / "Config" / "ExecuTorchTests.xcconfig",
        "lite": ios_dir / "Config" / "LiteTests.xcconfig",
        "pods": ios_dir / "Podfile",
    }
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DeviceError(
            f"the iOS project is not where parbench looks ({', '.join(missing)} missing): run parbench from "
            "its repository (the device runner's sources are not part of the installed package)"
        )
    spec = yaml.safe_load(files["spec"].read_text()) or {}
    branch = ((spec.get("packages") or {}).get("executorch") or {}).get("branch")
    et = xcconfig_value(files["et"], "PARBENCH_EXECUTORCH_VERSION")
    lite = xcconfig_value(files["lite"], "PARBENCH_LIBTORCH_LITE_VERSION")
    pod = re.search(r"pod\s+'LibTorch-Lite',\s*'([^']+)'", files["pods"].read_text())
    if not (branch and et and lite and pod):
        raise DeviceError(
            f"cannot read the app's runtime versions from {ios_dir}: project.yml packages.executorch.branch, "
            "Config/ExecuTorchTests.xcconfig PARBENCH_EXECUTORCH_VERSION, Config/LiteTests.xcconfig "
            "PARBENCH_LIBTORCH_LITE_VERSION and the Podfile's LibTorch-Lite pin must each be set"
        )
    return AppRuntimes(et, str(branch), lite, pod.group(1))


# ---------------------------------------------------------------------------------------------
# the plan of `parbench device run`


@dataclasses.dataclass(frozen=True)
class Bundle:
    key: str  # lite | executorch
    scheme: str
    target: str
    variants: tuple[str, ...]  # the forms this bundle runs on the phone


def bundles_for(forms: Sequence[str]) -> list[Bundle]:
    """Core ML forms run in the LibTorch-Lite bundle (once, not in both); .pte forms in the other."""
    lite = tuple(f for f in forms if f == "lite" or f.startswith("coreml"))
    et = tuple(f for f in forms if f.startswith("executorch"))
    out = []
    if lite:
        out.append(Bundle("lite", "ParbenchLite", "ParbenchLiteTests", lite))
    if et:
        out.append(Bundle("executorch", "ParbenchExecuTorch", "ParbenchExecuTorchTests", et))
    return out


@dataclasses.dataclass(frozen=True)
class Step:
    name: str
    argv: tuple[str, ...]  # "parbench" runs this interpreter's parbench
    cwd: str  # relative to the repository
    env: Mapping[str, str]  # added to the environment
    on_failure: str  # what to do when it fails
    background: bool = False  # keeps running while the later steps run
    ready_url: str | None = None  # a background step is ready when this answers 200
    stops: tuple[str, ...] = ()  # background steps to stop before this one runs
    keep_going: bool = False  # a failure is reported at the end, after the later steps ran
    globs: tuple[int, ...] = ()  # argv positions holding a pattern that must match one file (at run time)

    def render(self) -> str:
        """The step as one shell command line."""
        words = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()] + [shlex.quote(a) for a in self.argv]
        line = " ".join(words)
        if self.cwd != ".":
            line = f"(cd {shlex.quote(self.cwd)} && {line})"
        return line + (" &" if self.background else "")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    udid: str
    token: str
    run_id: str
    team: str | None = None
    tier: str = "smoke"
    forms: tuple[str, ...] = DEFAULT_FORMS
    bundle_prefix: str | None = None
    usb: bool = True
    port: int = COLLECTOR_PORT  # the collector on the Mac
    device_port: int = DEVICE_PORT
    relay_port: int = RELAY_PORT
    mac_host: str | None = None  # network mode: the Mac's name as the phone reaches it
    rounds: int = 20
    store: str = "results.sqlite"
    fixtures: str | None = None  # default fixtures/device-<tier>


def default_bundle_prefix(team: str | None) -> str:
    """Bundle ids are unique across teams: a team's own prefix unless one is given."""
    return f"dev.parbench.{team.lower()}" if team else "dev.parbench"


def plan(opts: RunOptions, runtimes: AppRuntimes | None = None) -> list[Step]:
    """Every step of `parbench device run`, in order, for both test bundles."""
    runtimes = runtimes or app_runtimes()
    bundles = bundles_for(opts.forms)
    if not bundles:
        raise DeviceError(
            f"--forms {','.join(opts.forms)}: none of them runs on the phone; "
            "choose from lite, executorch_fp32, executorch_int8, coreml_fp16, coreml_fp32, "
            "coreml_image, coreml_image_exact"
        )
    if not opts.usb and not opts.mac_host:
        raise DeviceError("network mode needs the Mac's name as the phone sees it (--mac-host NAME.local)")
    fixtures = opts.fixtures or f"fixtures/device-{opts.tier}"
    prefix = opts.bundle_prefix or default_bundle_prefix(opts.team)
    keys = {b.key for b in bundles}
    ios = str(IOS_REL)
    steps: list[Step] = [
        Step(
            "fixtures",
            (
                "parbench",
                "fixtures",
                "--tier",
                opts.tier,
                "--out",
                fixtures,
                "--artifacts",
                ",".join(opts.forms),
            ),
            ".",
            {},
            "an export failed (its message is above); drop that form with --forms, or check the model "
            "with `parbench doctor`",
        ),
    ]
    if "lite" in opts.forms or "executorch" in keys:
        pte = ("--app-executorch", runtimes.executorch) if "executorch" in keys else ()
        steps.append(
            Step(
                "check",
                ("parbench", "device", "check", fixtures, *pte),
                ".",
                {},
                f"a row above names an artifact the app will not load: a .ptl beyond what LibTorch-Lite "
                f"{runtimes.libtorch_lite} reads (backport it with `parbench device check --runtime-bytecode N`, "
                f"or drop the lite form), or a .pte ExecuTorch {runtimes.executorch} cannot read (export it "
                f"with `pip install executorch=={runtimes.executorch}`)",
            )
        )
    if "executorch" in keys:
        branch = runtimes.executorch_branch
        steps.append(
            Step(
                "executorch package",
                ("git", "ls-remote", "--exit-code", "--heads", EXECUTORCH_REPO, branch),
                ".",
                {},
                f"project.yml pins ExecuTorch's {branch}, which {EXECUTORCH_REPO} does not have: list its "
                f"branches with `git ls-remote --heads {EXECUTORCH_REPO} 'swiftpm-*'`, then move project.yml "
                "(packages.executorch.branch), Config/ExecuTorchTests.xcconfig (PARBENCH_EXECUTORCH_VERSION) "
                "and the installed executorch to that release together",
            )
        )
    steps += [
        Step(
            "xcodegen",
            ("xcodegen", "generate"),
            ios,
            {},
            "install XcodeGen (brew install xcodegen); its message above names the bad key of project.yml",
        ),
        Step(
            "pod install",
            ("pod", "install"),
            ios,
            {},
            "install CocoaPods 1.16 or newer (brew install cocoapods); 'did not set the base configuration' "
            "warnings are expected (Config/*-Debug.xcconfig include the Pods files)",
        ),
    ]
    signing = ["-allowProvisioningUpdates", "-allowProvisioningDeviceRegistration"]
    if opts.team:
        signing.append(f"DEVELOPMENT_TEAM={opts.team}")
    for b in bundles:
        steps.append(
            Step(
                f"build {b.key}",
                (
                    "xcodebuild",
                    "build-for-testing",
                    "-workspace",
                    WORKSPACE,
                    "-scheme",
                    b.scheme,
                    "-destination",
                    f"id={opts.udid}",
                    "-derivedDataPath",
                    f"build/{b.key}",
                    "-clonedSourcePackagesDirPath",
                    "build/SourcePackages",
                    *signing,
                    f"PARBENCH_BUNDLE_PREFIX={prefix}",
                ),
                ios,
                {},
                "signing: pass --team (Xcode > Settings > Accounts shows it) and a bundle prefix your team can "
                "register (--bundle-prefix); 'requires minimum platform version 17.0': the phone or project.yml is "
                "below iOS 17; a compile error: run `python device_runner/ios/ci/check_bridge.py` for the same "
                "file on Linux",
            )
        )
    base = f"http://127.0.0.1:{opts.port}"
    steps.append(
        Step(
            "collector",
            (
                "parbench",
                "serve",
                "--host",
                "127.0.0.1" if opts.usb else "0.0.0.0",
                "--port",
                str(opts.port),
                "--fixtures",
                fixtures,
                "--store",
                opts.store,
            ),
            ".",
            {"PARBENCH_COLLECTOR_TOKEN": opts.token},  # not on the command line, where `ps` shows it
            f"port {opts.port} taken? pass --port; the last lines of the collector's log are above",
            background=True,
            ready_url=f"{base}/api/v1/health",
        )
    )
    background = ["collector"]
    if opts.usb:
        steps.append(
            Step(
                "relay",
                (
                    "parbench",
                    "device",
                    "relay",
                    "--udid",
                    opts.udid,
                    "--device-port",
                    str(opts.device_port),
                    "--local-port",
                    str(opts.relay_port),
                    "--collector",
                    base,
                ),
                ".",
                {},
                "USB mode needs iproxy (brew install libimobiledevice) and the phone on USB, unlocked and "
                "trusting this Mac; or run over the network with --network",
                background=True,
            )
        )
        background.append("relay")
    for b in bundles:
        env = {
            "TEST_RUNNER_PARBENCH_TOKEN": opts.token,
            "TEST_RUNNER_PARBENCH_RUN_ID": f"{opts.run_id}-{b.key}",
            "TEST_RUNNER_PARBENCH_VARIANTS": ",".join(b.variants),
            "TEST_RUNNER_PARBENCH_ROUNDS": str(opts.rounds),
        }
        if opts.usb:
            env["TEST_RUNNER_PARBENCH_USB_PORT"] = str(opts.device_port)
        else:
            env["TEST_RUNNER_PARBENCH_COLLECTOR"] = f"http://{opts.mac_host}:{opts.port}"
        steps.append(
            Step(
                f"test {b.key}",
                (
                    "xcodebuild",
                    "test-without-building",
                    "-xctestrun",
                    f"build/{b.key}/Build/Products/{b.scheme}_*.xctestrun",
                    "-destination",
                    f"id={opts.udid}",
                    "-resultBundlePath",
                    f"runs/{opts.run_id}-{b.key}.xcresult",
                ),
                ios,
                env,
                "a failing case fails its test (the table below has its error); nothing ran at all: unlock the "
                "phone, trust this Mac and turn on Developer Mode; a failing test_configuration says why the bundle "
                "could not start (USB mode: did the relay step's log show the phone?)",
                keep_going=True,
                globs=(3,),
            )
        )
    for i, b in enumerate(bundles):
        steps.append(
            Step(
                f"import {b.key}",
                (
                    "parbench",
                    "device",
                    "import",
                    f"{ios}/runs/{opts.run_id}-{b.key}.xcresult",
                    "--store",
                    opts.store,
                ),
                ".",
                {},
                "reading .xcresult attachments needs Xcode 16 or newer (xcrun xcresulttool export attachments)",
                stops=tuple(background) if i == 0 else (),
            )
        )
    steps.append(
        Step(
            "table",
            (
                "parbench",
                "device",
                "table",
                "--store",
                opts.store,
                *[a for b in bundles for a in ("--run-id", f"{opts.run_id}-{b.key}")],
            ),
            ".",
            {},
            "no results reached the store: see the test steps above",
        )
    )
    return steps


def render_plan(steps: Sequence[Step]) -> str:
    lines = []
    for i, s in enumerate(steps, 1):
        stops = f"  # stops {', '.join(s.stops)} first" if s.stops else ""
        lines.append(f"[{i}/{len(steps)}] {s.name}{stops}\n    {s.render()}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# running the plan

INSTALL_HINTS = {
    "xcodegen": "brew install xcodegen",
    "pod": "brew install cocoapods",
    "xcodebuild": "install Xcode 16 or newer and run `sudo xcode-select -s /Applications/Xcode.app`",
    "xcrun": "install Xcode 16 or newer",
    "git": "xcode-select --install",
    "iproxy": "brew install libimobiledevice",
}


class StepFailed(DeviceError):
    def __init__(self, index: int, total: int, step: Step, returncode: int | None, tail: str, why: str = ""):
        self.step = step
        self.returncode = returncode
        status = why or f"exit {returncode}"
        super().__init__(
            f"step {index}/{total} '{step.name}' failed ({status}): {step.render()}\n"
            f"--- its last output ---\n{tail.rstrip() or '(nothing)'}\n--- what to do ---\n{step.on_failure}"
        )


def missing_tools(steps: Sequence[Step], which: Callable[[str], str | None] = shutil.which) -> list[str]:
    needed = {s.argv[0] for s in steps if s.argv[0] != "parbench"}
    if any(s.argv[:3] == ("parbench", "device", "relay") for s in steps):
        needed.add("iproxy")
    if any(s.argv[:3] == ("parbench", "device", "import") and s.argv[3].endswith(".xcresult") for s in steps):
        needed.add("xcrun")  # xcresulttool
    return [f"{t} ({INSTALL_HINTS.get(t, 'install it')})" for t in sorted(needed) if which(t) is None]


def _argv_for(step: Step, root: Path) -> list[str]:
    argv = list(step.argv)
    if argv[0] == "parbench":
        argv[0:1] = [sys.executable, "-m", "parbench"]
    cwd = root / step.cwd
    out = []
    for i, a in enumerate(argv):
        if i in step.globs:
            hits = sorted(glob.glob(str(cwd / a)))
            if len(hits) != 1:
                raise DeviceError(
                    f"step '{step.name}': {a} matches {len(hits)} files in {cwd} (expected one; "
                    "did the build step run?)"
                )
            a = str(Path(hits[0]).relative_to(cwd))
        out.append(a)
    return out


def _wait_ready(
    step: Step, proc: subprocess.Popen[str], timeout: float = 60, alive_for: float = 2
) -> str | None:
    """None once the background step is ready (its URL answers 200, or it stayed up `alive_for`
    seconds when it has no URL), else why not."""
    import httpx

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            return f"it exited with {proc.returncode}"
        if step.ready_url is None:
            if time.monotonic() - start >= alive_for:
                return None
        else:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(step.ready_url, timeout=2).status_code == 200:
                    return None
        time.sleep(0.2)
    return f"not ready within {timeout:.0f} s"


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def execute(
    steps: Sequence[Step],
    *,
    root: Path = REPO_ROOT,
    echo: Callable[[str], None] = print,
    log_dir: Path | None = None,
) -> None:
    """Runs the plan; raises StepFailed naming the step, with its own last lines and what to do.
    Background steps (collector, relay) log to files in `log_dir` and are stopped at the end."""
    missing = missing_tools(steps)
    if missing:
        raise DeviceError("missing tools: " + "; ".join(missing))
    log_dir = log_dir or root / IOS_REL / "runs"
    log_dir.mkdir(parents=True, exist_ok=True)
    running: dict[str, tuple[subprocess.Popen[str], Path]] = {}
    failed: list[StepFailed] = []  # keep_going steps that failed
    total = len(steps)
    try:
        for i, step in enumerate(steps, 1):
            for name in step.stops:
                if name in running:
                    _stop(running.pop(name)[0])
            echo(f"==> [{i}/{total}] {step.name}: {step.render()}")
            argv = _argv_for(step, root)
            env = {**os.environ, **step.env}
            if step.background:
                log = log_dir / f"{step.name}.log"
                handle = log.open("w")
                proc = subprocess.Popen(
                    argv, cwd=root / step.cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, text=True
                )
                running[step.name] = (proc, log)
                why = _wait_ready(step, proc)
                if why:
                    raise StepFailed(i, total, step, proc.returncode, _tail(log.read_text()), why)
                echo(f"    running in the background (log: {log})")
                continue
            proc = subprocess.Popen(
                argv,
                cwd=root / step.cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            lines: list[str] = []
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                echo(line.rstrip("\n"))
                del lines[:-80]
            if proc.wait() != 0:
                err = StepFailed(i, total, step, proc.returncode, "".join(lines))
                if not step.keep_going:
                    if failed:
                        err.args = (f"{err}\n(earlier: {'; '.join(_headline(f) for f in failed)})",)
                    raise err
                failed.append(err)
                echo(f"{err}\n    (going on with the next steps)")
            for name, (bg, log) in list(running.items()):
                if bg.poll() is not None:
                    raise DeviceError(
                        f"the background step '{name}' stopped (exit {bg.returncode}) during "
                        f"'{step.name}'; its log {log} ends with:\n{_tail(log.read_text())}"
                    )
    finally:
        for proc, _log in running.values():
            _stop(proc)
    if failed:
        raise DeviceError(
            "the run went through, but "
            + "; ".join(_headline(f) for f in failed)
            + " (their output is above)"
        )


def _headline(err: StepFailed) -> str:
    return str(err).split(":", 1)[0]


def _tail(text: str, n: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


# ---------------------------------------------------------------------------------------------
# the device latency table


def device_table(store_path: Path | str, run_ids: Sequence[str], out: IO[str] | None = None) -> int:
    """Prints each run's results (device, OS, bundle, then one row per result); returns how many."""
    out = out or sys.stdout
    total = 0
    with Store(store_path) as store:
        for run_id in run_ids:
            run = store.get_run(run_id)
            if run is None:
                out.write(f"run {run_id}: not in {store_path}\n")
                continue
            results = store.run_results(run_id)
            total += len(results)
            device = run.get("device") or {}
            runtime = run.get("runtime") or {}
            out.write(
                f"run {run_id}: {device.get('model', '?')}, {device.get('os', '?')}, "
                f"bundle {runtime.get('bundle', '?')}, {len(results)} results, {run.get('status', '?')}\n"
            )
            if results:
                out.write(format_rows(summary_rows(results)) + "\n")
    return total
