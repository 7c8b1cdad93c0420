"""Shared by the iOS compile-check tests: loading device_runner/ios/ci/check_bridge.py, and
skipping (or, with PARBENCH_REQUIRE_DEVICE_BUILD=1, failing) when the toolchain is missing."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
IOS = REPO / "device_runner" / "ios"
CORE = REPO / "device_runner" / "core"
CHECK_SCRIPT = IOS / "ci" / "check_bridge.py"
CLANG_BUILD_SCRIPT = CORE / "ci" / "build_and_test.sh"


def unavailable(reason: str) -> None:
    """Skip with the reason, or fail where CI promised the toolchain (PARBENCH_REQUIRE_DEVICE_BUILD)."""
    if os.environ.get("PARBENCH_REQUIRE_DEVICE_BUILD"):
        pytest.fail(reason + " (PARBENCH_REQUIRE_DEVICE_BUILD is set: scripts/setup.sh --dev installs it)")
    pytest.skip(reason)


def load_check_bridge() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_bridge", CHECK_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_bridge"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def require_objc_toolchain() -> None:
    missing = [t for t in ("clang", "clang++", "gnustep-config") if shutil.which(t) is None]
    if missing:
        unavailable(
            f"the Objective-C compile check needs {', '.join(missing)} "
            "(Debian: apt-get install -y clang libgnustep-base-dev libblocksruntime-dev)"
        )


def copy_sources(dst: Path) -> tuple[Path, Path]:
    """A private copy of device_runner/ios (without build output) and device_runner/core/{include,src}."""
    ios = dst / "ios"
    core = dst / "core"
    shutil.copytree(
        IOS, ios, ignore=shutil.ignore_patterns("build", "Pods", "*.xcodeproj", "*.xcworkspace", "ci")
    )
    for sub in ("include", "src"):
        shutil.copytree(CORE / sub, core / sub)
    return ios, core
