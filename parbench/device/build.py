"""Building the device runner's C++ core (cmake + ninja) against the libtorch inside the torch wheel, and running its tests."""

from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from parbench.errors import DeviceBuildError

# ---------------------------------------------------------------------------------------------
# building the core

REPO_ROOT = Path(__file__).resolve().parents[2]
CORE_DIR = REPO_ROOT / "device_runner" / "core"
DEFAULT_BUILD_DIR = CORE_DIR / "build"
BINARY_NAME = "parbench-device-runner"
TEST_BINARY_NAME = "parbench-core-tests"
SYSTEM_PACKAGES = "cmake ninja-build g++ nlohmann-json3-dev libcurl4-openssl-dev libssl-dev"


def missing_build_tools() -> list[str]:
    """What this machine lacks to build the core (empty when it can try)."""
    missing = [tool for tool in ("cmake", "ninja") if shutil.which(tool) is None]
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        missing.append("a C++17 compiler (g++ or clang++)")
    if not CORE_DIR.joinpath("CMakeLists.txt").is_file():
        missing.append(f"the core sources ({CORE_DIR} is missing: parbench must run from its repository)")
    try:
        prefix = torch_cmake_prefix()
        if not Path(prefix, "Torch", "TorchConfig.cmake").is_file():
            missing.append(f"libtorch's CMake config (no Torch/TorchConfig.cmake under {prefix})")
    except ImportError:
        missing.append("torch (the wheel ships libtorch)")
    return missing


def torch_cmake_prefix() -> str:
    import torch

    return str(torch.utils.cmake_prefix_path)


def _build_jobs() -> str:
    return os.environ.get("PARBENCH_BUILD_JOBS") or str(min(os.cpu_count() or 2, 4))


def _run_tool(cmd: Sequence[str], what: str) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(out.strip().splitlines()[-40:])
        hint = ""
        for needle, pkg in (
            ("nlohmann_json", "nlohmann-json3-dev"),
            ("CURL", "libcurl4-openssl-dev"),
            ("OpenSSL", "libssl-dev"),
            ("Ninja", "ninja-build"),
        ):
            if (
                f"Could NOT find {needle}" in out
                or f"find_package({needle}" in out
                or f'Could not find a package configuration file provided by "{needle}"' in out
            ):
                hint = f"\ninstall the missing system package: apt-get install -y {pkg}  (all: {SYSTEM_PACKAGES})"
                break
        raise DeviceBuildError(f"{what} failed (exit {proc.returncode}):\n{tail}{hint}")
    return out


@dataclasses.dataclass
class BuildResult:
    binary: Path
    test_binary: Path
    build_dir: Path
    configured: bool  # cmake ran its configure step this time
    rebuilt: bool  # something was compiled or linked this time
    seconds: float


def build_core(build_dir: Path | str | None = None, *, reconfigure: bool = False) -> BuildResult:
    """Configure (once) and build the core with cmake + ninja; an up-to-date build is reused.

    Raises DeviceBuildError with the compiler's or cmake's own words, and the package to install.
    """
    missing = missing_build_tools()
    if missing:
        raise DeviceBuildError(
            "cannot build the device runner core: missing "
            + "; ".join(missing)
            + f" (Debian: apt-get install -y {SYSTEM_PACKAGES})"
        )
    build = Path(build_dir) if build_dir else DEFAULT_BUILD_DIR
    prefix = torch_cmake_prefix()
    start = time.perf_counter()
    build.mkdir(parents=True, exist_ok=True)
    # One build at a time in a folder (parallel test workers, two shells).
    with open(build / ".parbench-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cache = build / "CMakeCache.txt"
        configured = False
        if (
            reconfigure
            or not (build / "build.ninja").is_file()
            or prefix not in cache.read_text(errors="replace")
        ):
            _run_tool(
                [
                    "cmake",
                    "-G",
                    "Ninja",
                    "-S",
                    str(CORE_DIR),
                    "-B",
                    str(build),
                    "-DCMAKE_BUILD_TYPE=Release",
                    f"-DCMAKE_PREFIX_PATH={prefix}",
                ],
                "configuring the core (cmake)",
            )
            configured = True
        out = _run_tool(["cmake", "--build", str(build), "--", "-j", _build_jobs()], "building the core")
    binary, tests = build / BINARY_NAME, build / TEST_BINARY_NAME
    for path in (binary, tests):
        if not path.is_file():
            raise DeviceBuildError(f"the build finished but {path} is missing; rerun with reconfigure=True")
    return BuildResult(
        binary, tests, build, configured, "no work to do" not in out, time.perf_counter() - start
    )


def run_core_tests(build: BuildResult) -> subprocess.CompletedProcess[str]:
    """The core's C++ unit tests through ctest (one process per test group)."""
    return subprocess.run(
        ["ctest", "--test-dir", str(build.build_dir), "--output-on-failure"], capture_output=True, text=True
    )
