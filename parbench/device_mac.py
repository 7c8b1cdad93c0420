"""The iPhone runner from the Mac side.

* :func:`plan` and :func:`execute`: ``parbench device run``, every step from the fixture set to
  the device latency table, for both test bundles (LibTorch-Lite + Core ML, ExecuTorch + Core
  ML). The plan is a pure function of the options, so ``--dry-run`` prints it anywhere.
* :class:`UsbRelay`: ``parbench device relay``, USB mode. The test process on the phone listens
  on its own loopback; iproxy (libimobiledevice) carries a connection from the Mac to it over
  usbmux, and the relay forwards each request that comes back through it to the collector.
  The protocol is described in ``device_runner/core/include/parbench/relay_transport.h``.
* :func:`result_docs_from_export`: result documents from ``xcresulttool export attachments``,
  found through its manifest.json whatever the exported files are called.
* :func:`pte_rows`: will the app's ExecuTorch runtime load the set's .pte files?
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parents[1]
IOS_DIR = REPO_ROOT / "device_runner" / "ios"
IOS_REL = Path("device_runner") / "ios"
WORKSPACE = "ParbenchDevice.xcworkspace"
EXECUTORCH_REPO = "https://github.com/pytorch/executorch"
RELAY_GREETING = b"PBRELAY1"
PTE_IDENTIFIER = b"ET12"  # the flatbuffer file identifier ExecuTorch 1.x programs carry (schema/program.fbs)
DEFAULT_FORMS = ("lite", "coreml_fp16", "coreml_image", "executorch_fp32")


class DeviceRunError(RuntimeError):
    """A device-run operation failed; the message says why and what to do."""


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
    import yaml

    spec = yaml.safe_load((ios_dir / "project.yml").read_text())
    branch = spec["packages"]["executorch"]["branch"]
    et = xcconfig_value(ios_dir / "Config" / "ExecuTorchTests.xcconfig", "PARBENCH_EXECUTORCH_VERSION")
    lite = xcconfig_value(ios_dir / "Config" / "LiteTests.xcconfig", "PARBENCH_LIBTORCH_LITE_VERSION")
    pod = re.search(r"pod\s+'LibTorch-Lite',\s*'([^']+)'", (ios_dir / "Podfile").read_text())
    if not et or not lite or not pod:
        raise DeviceRunError(
            f"cannot read the app's runtime versions from {ios_dir} (Config/*.xcconfig, Podfile)"
        )
    return AppRuntimes(et, branch, lite, pod.group(1))


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
    port: int = 8765  # the collector on the Mac
    device_port: int = 8766  # USB mode: where the test listens on the phone
    relay_port: int = 8767  # USB mode: iproxy's end on the Mac
    mac_host: str | None = None  # network mode: the Mac's name as the phone reaches it
    rounds: int = 20
    store: str = "results.sqlite"
    fixtures: str | None = None  # default fixtures/device-<tier>
    executorch_branch: str | None = None  # default: project.yml's
    app_executorch: str | None = None  # default: Config/ExecuTorchTests.xcconfig's


def default_bundle_prefix(team: str | None) -> str:
    """Bundle ids are unique across teams: a team's own prefix unless one is given."""
    return f"dev.parbench.{team.lower()}" if team else "dev.parbench"


def plan(opts: RunOptions, runtimes: AppRuntimes | None = None) -> list[Step]:
    """Every step of `parbench device run`, in order, for both test bundles."""
    runtimes = runtimes or app_runtimes()
    bundles = bundles_for(opts.forms)
    if not bundles:
        raise DeviceRunError(
            f"--forms {','.join(opts.forms)}: none of them runs on the phone; "
            "choose from lite, executorch_fp32, executorch_int8, coreml_fp16, coreml_fp32, "
            "coreml_image, coreml_image_exact"
        )
    if not opts.usb and not opts.mac_host:
        raise DeviceRunError("network mode needs the Mac's name as the phone sees it (--mac-host NAME.local)")
    fixtures = opts.fixtures or f"fixtures/device-{opts.tier}"
    branch = opts.executorch_branch or runtimes.executorch_branch
    app_et = opts.app_executorch or runtimes.executorch
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
    if "lite" in keys and "lite" in opts.forms:
        steps.append(
            Step(
                "check .ptl",
                ("parbench", "device", "check", fixtures),
                ".",
                {},
                f"a .ptl will not load in LibTorch-Lite {runtimes.libtorch_lite} (the row above says why); backport it "
                "(`parbench device check --runtime-bytecode N`) or drop the lite form",
            )
        )
    if "executorch" in keys:
        steps.append(
            Step(
                "check .pte",
                ("parbench", "device", "check-pte", fixtures, "--app-executorch", app_et),
                ".",
                {},
                f"the app links ExecuTorch {app_et}: export with `pip install executorch=={app_et}` or move project.yml "
                "and Config/ExecuTorchTests.xcconfig to the exporter's release",
            )
        )
        steps.append(
            Step(
                "executorch package",
                ("git", "ls-remote", "--exit-code", "--heads", EXECUTORCH_REPO, branch),
                ".",
                {},
                f"there is no branch {branch} of {EXECUTORCH_REPO}: list them with `git ls-remote --heads "
                f"{EXECUTORCH_REPO} 'swiftpm-*'` and pass --executorch-branch (a swiftpm-<version> of the same release)",
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
                "--token",
                opts.token,
            ),
            ".",
            {},
            f"port {opts.port} is taken? pass --port; the collector's log is above",
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


class StepFailed(DeviceRunError):
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
                raise DeviceRunError(
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
        raise DeviceRunError("missing tools: " + "; ".join(missing))
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
                    raise DeviceRunError(
                        f"the background step '{name}' stopped (exit {bg.returncode}) during "
                        f"'{step.name}'; its log {log} ends with:\n{_tail(log.read_text())}"
                    )
    finally:
        for proc, _log in running.values():
            _stop(proc)
    if failed:
        raise DeviceRunError(
            "the run went through, but "
            + "; ".join(_headline(f) for f in failed)
            + " (their output is above)"
        )


def _headline(err: StepFailed) -> str:
    return str(err).split(":", 1)[0]


def _tail(text: str, n: int = 40) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


# ---------------------------------------------------------------------------------------------
# USB relay


def _read_exact(sock: socket.socket, n: int, stop: threading.Event) -> bytes:
    """n bytes; EOFError when the peer closes, InterruptedError when `stop` is set."""
    buf = bytearray()
    while len(buf) < n:
        if stop.is_set():
            raise InterruptedError
        ready, _, _ = select.select([sock], [], [], 0.5)
        if not ready:
            continue
        chunk = sock.recv(min(n - len(buf), 1 << 16))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def read_frame(sock: socket.socket, stop: threading.Event) -> tuple[dict[str, Any], bytes]:
    (head_len,) = struct.unpack(">I", _read_exact(sock, 4, stop))
    if head_len == 0 or head_len > 1 << 20:
        raise ValueError(f"malformed frame: header of {head_len} bytes")
    head = json.loads(_read_exact(sock, head_len, stop))
    (body_len,) = struct.unpack(">Q", _read_exact(sock, 8, stop))
    return head, _read_exact(sock, body_len, stop)


def write_frame(sock: socket.socket, head: Mapping[str, Any], body: bytes) -> None:
    h = json.dumps(head).encode()
    sock.sendall(struct.pack(">I", len(h)) + h + struct.pack(">Q", len(body)) + body)


HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


class UsbRelay:
    """Dials the phone's listener (through `connect`, normally iproxy's local port) and relays
    each request frame it sends to the collector, answering with a response frame."""

    def __init__(
        self,
        collector: str,
        connect: Callable[[], socket.socket],
        *,
        log: Callable[[str], None] = print,
        timeout: float = 300,
    ):
        import httpx

        self.collector = collector.rstrip("/")
        self.connect = connect
        self.log = log
        self.client = httpx.Client(base_url=self.collector, timeout=timeout)
        self.exchanges = 0
        self.connections = 0

    def forward(self, head: Mapping[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        import httpx

        headers = [(k, v) for k, v in head.get("headers", []) if k.lower() not in HOP_HEADERS]
        try:
            r = self.client.request(head["method"], head["path"], headers=headers, content=body)
        except httpx.HTTPError as exc:
            return {
                "status": 0,
                "error": f"the relay could not reach the collector at {self.collector}: {exc}",
            }, b""
        out_headers = {k: v for k, v in r.headers.items() if k.lower() not in HOP_HEADERS}
        return {"status": r.status_code, "headers": out_headers}, r.content

    def serve(self, stop: threading.Event) -> None:
        """Until `stop`: connect, wait for the phone's greeting, relay, and dial again when it goes."""
        waiting_said = False
        while not stop.is_set():
            try:
                sock = self.connect()
            except OSError:
                stop.wait(0.5)
                continue
            try:
                greeting = _read_exact(sock, len(RELAY_GREETING), stop)
            except (EOFError, OSError):  # nothing listens on the phone yet: iproxy hung up
                sock.close()
                if not waiting_said:
                    self.log("relay: waiting for the test to listen on the phone")
                    waiting_said = True
                stop.wait(0.5)
                continue
            except InterruptedError:
                sock.close()
                break
            if greeting != RELAY_GREETING:
                self.log(
                    f"relay: the port answered {greeting!r}, not a parbench test; is --device-port right?"
                )
                sock.close()
                stop.wait(2)
                continue
            self.connections += 1
            waiting_said = False
            self.log("relay: the phone is connected")
            try:
                while not stop.is_set():
                    head, body = read_frame(sock, stop)
                    reply, data = self.forward(head, body)
                    write_frame(sock, reply, data)
                    self.exchanges += 1
            except (EOFError, OSError):
                self.log(f"relay: the phone closed the connection ({self.exchanges} requests relayed so far)")
            except InterruptedError:
                pass
            except ValueError as exc:
                self.log(f"relay: dropped a connection: {exc}")
            finally:
                sock.close()
        self.client.close()


def iproxy_command(udid: str, local_port: int, device_port: int, iproxy: str = "iproxy") -> list[str]:
    return [iproxy, f"{local_port}:{device_port}", "-u", udid]


@contextlib.contextmanager
def iproxy_running(
    cmd: Sequence[str], local_port: int, log: Callable[[str], None] = print, timeout: float = 10
) -> Iterator[subprocess.Popen[str]]:
    """Starts iproxy and waits until its local port accepts connections."""
    try:
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError as exc:
        raise DeviceRunError(
            f"{cmd[0]} not found: USB mode needs iproxy (brew install libimobiledevice)"
        ) from exc
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise DeviceRunError(
                    f"iproxy exited ({proc.returncode}): {out.strip() or 'no output'}; is the phone "
                    "on USB and trusting this Mac? (`xcrun xctrace list devices` lists it)"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", local_port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise DeviceRunError(f"iproxy did not open 127.0.0.1:{local_port} within {timeout:.0f} s")
            time.sleep(0.1)
        log(f"relay: {' '.join(cmd)} is up")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.poll() is None:
                proc.kill()


def run_relay(
    udid: str,
    device_port: int,
    local_port: int,
    collector: str,
    *,
    iproxy: str = "iproxy",
    stop: threading.Event | None = None,
    log: Callable[[str], None] = print,
) -> UsbRelay:
    """iproxy LOCAL:DEVICE plus the relay, until `stop` is set (or Ctrl-C)."""
    stop = stop or threading.Event()
    cmd = iproxy_command(udid, local_port, device_port, iproxy)
    with iproxy_running(cmd, local_port, log) as proc:
        relay = UsbRelay(
            collector, lambda: socket.create_connection(("127.0.0.1", local_port), timeout=5), log=log
        )
        worker = threading.Thread(target=relay.serve, args=(stop,), daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                if proc.poll() is not None:
                    stop.set()
                    worker.join(5)
                    raise DeviceRunError(
                        f"iproxy exited ({proc.returncode}) while relaying: was the phone unplugged?"
                    )
                worker.join(0.5)
        except KeyboardInterrupt:
            stop.set()
            worker.join(5)
    return relay


# ---------------------------------------------------------------------------------------------
# .xcresult attachments


def _attachment_entries(manifest: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(test identifier, attachment entry) from an export manifest (a list of tests)."""
    if not isinstance(manifest, list):
        raise DeviceRunError(
            "manifest.json of the export is not a list of tests; was it written by "
            "`xcrun xcresulttool export attachments` (Xcode 16 or newer)?"
        )
    for test in manifest:
        if not isinstance(test, dict):
            continue
        for att in test.get("attachments") or []:
            if isinstance(att, dict):
                yield str(test.get("testIdentifier", "")), att


def result_docs_from_export(folder: Path | str) -> list[dict[str, Any]]:
    """parbench result documents among the attachments exported from an .xcresult bundle.

    The exported files are named by UUID; manifest.json maps each to its test and to the name the
    test gave it (exportedFileName, suggestedHumanReadableName). The files it lists come first, in
    its order, then any other file of the folder; each is tried as JSON whatever its extension."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    listed: list[Path] = []
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise DeviceRunError(f"{manifest_path} is not JSON ({exc})") from exc
        for _test, att in _attachment_entries(manifest):
            name = att.get("exportedFileName")
            if isinstance(name, str) and name and Path(name).name == name and (folder / name).is_file():
                listed.append(folder / name)
    seen = set(listed) | {manifest_path}
    candidates = listed + [p for p in sorted(folder.rglob("*")) if p.is_file() and p not in seen]
    docs = []
    for path in candidates:
        try:
            doc = json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # screenshots, logs and other attachments
        if (
            isinstance(doc, dict)
            and isinstance(doc.get("run_id"), str)
            and isinstance(doc.get("run"), dict)
            and isinstance(doc.get("results"), list)
        ):
            docs.append(doc)
    if not docs:
        raise DeviceRunError(
            f"no parbench result documents among the {len(candidates)} attachments in {folder}"
            + (f" ({len(listed)} listed by its manifest.json)" if manifest_path.is_file() else "")
        )
    return docs


# ---------------------------------------------------------------------------------------------
# .pte files against the app's ExecuTorch


def _version(text: str) -> Any:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(text.split("+", 1)[0])
    except InvalidVersion:
        return None


def pte_rows(fixture_dir: Path | str, app_executorch: str) -> list[dict[str, Any]]:
    """One row per .pte artifact: status ok, newer (a warning: written by a newer ExecuTorch than
    the app links), unknown (the set does not say which ExecuTorch wrote it) or failed (missing
    file, or not a program this runtime reads)."""
    fixture_dir = Path(fixture_dir)
    manifest_path = fixture_dir / "manifest.json"
    if not manifest_path.is_file():
        raise DeviceRunError(f"{fixture_dir} has no manifest.json: build the set with `parbench fixtures`")
    manifest = json.loads(manifest_path.read_text())
    app = _version(app_executorch)
    if app is None:
        raise DeviceRunError(f"--app-executorch {app_executorch!r} is not a version like 1.5.1")
    set_exporter = (manifest.get("generator") or {}).get("executorch")
    rows = []
    for model, entry in sorted((manifest.get("models") or {}).items()):
        for variant, arts in sorted((entry.get("artifacts") or {}).items()):
            for art in arts:
                if art.get("format") != "pte":
                    continue
                exporter = (art.get("meta") or {}).get("executorch") or set_exporter
                row = {
                    "model": model,
                    "variant": variant,
                    "path": art["path"],
                    "exporter": exporter,
                    "app_executorch": app_executorch,
                    "status": "ok",
                    "reason": "",
                }
                rows.append(row)
                path = fixture_dir / art["path"]
                if not path.is_file():
                    row.update(status="failed", reason=f"{art['path']} is listed in the manifest but missing")
                    continue
                with path.open("rb") as f:
                    header = f.read(8)
                if header[4:8] != PTE_IDENTIFIER:
                    row.update(
                        status="failed",
                        reason=(
                            f"its program identifier is {header[4:8]!r}, not {PTE_IDENTIFIER!r}: ExecuTorch "
                            f"{app_executorch} refuses it; export it with executorch=={app_executorch}"
                        ),
                    )
                    continue
                written = _version(exporter) if isinstance(exporter, str) else None
                if written is None:
                    row.update(
                        status="unknown",
                        reason=(
                            "the fixture set does not record which ExecuTorch wrote it; rebuild it with this parbench "
                            "(its manifest then records generator.executorch)"
                        ),
                    )
                elif (written.major, written.minor, written.micro) > (app.major, app.minor, app.micro):
                    row.update(
                        status="newer",
                        reason=(
                            f"written by ExecuTorch {exporter}, newer than the app's {app_executorch}: a runtime is "
                            f"not promised to load programs from a newer exporter; export with "
                            f"executorch=={app_executorch}, or move the app to swiftpm-{written.base_version}"
                        ),
                    )
    return rows


# ---------------------------------------------------------------------------------------------
# the device latency table


def device_table(store_path: Path | str, run_ids: Sequence[str], out: IO[str] | None = None) -> int:
    """Prints each run's results (device, OS, bundle, then one row per result); returns how many."""
    from parbench.device import format_rows, summary_rows
    from parbench.store import Store

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
