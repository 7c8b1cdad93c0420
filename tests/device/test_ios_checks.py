"""What CI here can check of the iPhone runner without a Mac: the C++ core built and unit-tested
with clang (Xcode's compiler, stricter than GCC in places), and every Objective-C/Objective-C++
file of device_runner/ios compiled against GNUstep Foundation and Apple-signature headers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

from support.ios_check import CHECK_SCRIPT, CLANG_BUILD_SCRIPT, CORE, IOS, require_objc_toolchain, unavailable

from parbench.device.build import missing_build_tools

CLANG_BUILD_DIR = CORE / "build-clang"


def test_core_builds_and_passes_its_tests_with_clang() -> None:
    if shutil.which("clang++") is None:
        unavailable("building the core with clang needs clang++ (Debian: apt-get install -y clang)")
    missing = missing_build_tools()
    if missing:
        unavailable("cannot build the device runner core: missing " + "; ".join(missing))
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["nice", "-n", "10", str(CLANG_BUILD_SCRIPT), "clang++", str(CLANG_BUILD_DIR)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "100% tests passed" in out, out[-2000:]
    compiler = re.search(
        r"^CMAKE_CXX_COMPILER:\w+=(.+)$", (CLANG_BUILD_DIR / "CMakeCache.txt").read_text(), re.M
    )
    assert compiler and compiler.group(1).endswith("clang++"), compiler
    # the runner binary (core + libtorch runners + CLI) was built by clang too
    version = subprocess.run(
        [str(CLANG_BUILD_DIR / "parbench-device-runner"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.returncode == 0 and "parbench-device-runner" in version.stdout


def test_bridge_compile_check_is_clean() -> None:
    require_objc_toolchain()
    proc = subprocess.run(
        ["nice", "-n", "10", sys.executable, str(CHECK_SCRIPT), "--json"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode in (0, 1), proc.stderr
    report = json.loads(proc.stdout)
    bad = [(o["name"], o["diagnostics"] or o["output"][-1500:]) for o in report["outcomes"] if not o["ok"]]
    assert not bad, bad
    names = [o["name"] for o in report["outcomes"]]
    # every Objective-C(++) file, the .mm files once per test bundle
    for path in sorted([*IOS.glob("App/*.m"), *IOS.glob("Tests/*.m")]):
        assert f"{path.parent.name}/{path.name}" in names
    et_headers = not any("stub branch only" in n for n in report["notes"])
    for path in sorted(IOS.glob("Bridge/*.mm")):
        compiled = [n for n in names if n.startswith(f"Bridge/{path.name} ")]
        if "PARBENCH_WITH_" not in path.read_text():  # nothing bundle-specific in it
            assert compiled == [f"Bridge/{path.name} [both bundles]"]
            continue
        assert any("lite bundle" in n for n in compiled), (path.name, compiled)
        if path.name != "PBExecuTorchRunner.mm" or et_headers:
            assert any("executorch bundle" in n for n in compiled), (path.name, compiled, report["notes"])
    # the core as Xcode compiles it for iOS (CommonCrypto, Mach branches), every source but the CLI
    for src in sorted(CORE.glob("src/*.cpp")):
        if src.name != "main.cpp":
            assert f"core/src/{src.name} [Apple branches]" in names
    assert proc.returncode == 0
